//! Where things are: the repository root, the cargo target dir, the pinned toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The defmt filter of the images unless the environment sets one.
pub const DEFMT_LOG: &str = "debug";

/// Paths and settings every command needs, resolved once at start.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    /// Absolute, so children started from the root see the same directory the user meant.
    pub target_dir: PathBuf,
    /// The `channel` of rust-toolchain.toml: rustup is asked about this toolchain explicitly,
    /// because `RUSTUP_AUTO_INSTALL=0` makes a missing piece a silent failure otherwise.
    pub toolchain: String,
}

impl Workspace {
    pub fn locate() -> Result<Self, String> {
        // xtask lives one level below the workspace root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let cwd = std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?;
        // Honour CARGO_TARGET_DIR like cargo does: relative to where the user ran the command.
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => cwd.join(dir),
            _ => root.join("target"),
        };
        let pin = root.join("rust-toolchain.toml");
        let text = std::fs::read_to_string(&pin)
            .map_err(|e| format!("cannot read {}: {e}", pin.display()))?;
        let toolchain = toolchain_channel(&text)
            .ok_or_else(|| format!("{} has no `channel = \"...\"` line", pin.display()))?
            .to_string();
        Ok(Self {
            root,
            target_dir,
            toolchain,
        })
    }

    /// Where xtask keeps what it makes: copied images and run logs.
    pub fn xtask_dir(&self) -> PathBuf {
        self.target_dir.join("xtask")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.xtask_dir().join("logs")
    }

    /// A cargo command run from the root, on the same target dir and toolchain as this xtask.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .stdin(std::process::Stdio::null());
        // defmt compiles in only `error` frames unless DEFMT_LOG says otherwise; the images'
        // logs are the test evidence, so keep everything down to `debug` unless the user chose.
        if std::env::var_os("DEFMT_LOG").is_none() {
            cmd.env("DEFMT_LOG", DEFMT_LOG);
        }
        cmd
    }
}

/// The `channel` value of a rust-toolchain.toml.
fn toolchain_channel(toml: &str) -> Option<&str> {
    toml.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "channel" {
            return None;
        }
        let value = value.trim();
        value.strip_prefix('"')?.strip_suffix('"')
    })
}

/// Renders a command the way a user would type it, for logs and error messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        s.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            s.push('\'');
            s.push_str(&arg.replace('\'', r"'\''"));
            s.push('\'');
        } else {
            s.push_str(&arg);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_channel() {
        let toml = "[toolchain]\nchannel = \"1.95.0\"\ncomponents = [\"rustfmt\"]\n";
        assert_eq!(toolchain_channel(toml), Some("1.95.0"));
        assert_eq!(
            toolchain_channel("[toolchain]\nprofile = \"minimal\"\n"),
            None
        );
    }

    #[test]
    fn quotes_arguments_that_need_it() {
        let mut cmd = Command::new("gdb-multiarch");
        cmd.args(["-q", "-ex", "target remote :1234"]);
        assert_eq!(show(&cmd), "gdb-multiarch -q -ex 'target remote :1234'");
    }
}
