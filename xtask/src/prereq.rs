//! Checks what the commands need and installs what is missing. The check alone runs two
//! `rustup ... list --installed` queries (in parallel), a PATH lookup and looks at the pinned
//! QEMU's folder (`qemu_install`): tens of milliseconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::arch::Arch;
use crate::qemu_install;
use crate::workspace::{Workspace, show};

/// rustup components the commands use: rustfmt and clippy for `test`, llvm-tools for image
/// inspection (objdump, size).
const COMPONENTS: &[&str] = &["rustfmt", "clippy", "llvm-tools"];
const GDB: &str = "gdb-multiarch";

#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub gdb: bool,
}

/// Makes sure everything is present; `verbose` reports what was checked and how long it took.
pub fn ensure(ws: &Workspace, needs: Needs, verbose: bool) -> Result<(), String> {
    let start = Instant::now();
    let rustup = find_in_path("rustup").ok_or(
        "rustup is not installed: the toolchain is pinned in rust-toolchain.toml and installed \
         with rustup (https://rustup.rs), which this machine lacks",
    )?;
    let (targets, components) = std::thread::scope(|s| {
        let targets = s.spawn(|| list_installed(&rustup, &ws.toolchain, "target"));
        let components = list_installed(&rustup, &ws.toolchain, "component");
        (targets.join(), components)
    });
    let targets = targets.map_err(|_| "the rustup query thread panicked")??;
    let components = components?;

    let mut wanted_targets: Vec<&str> = Arch::ALL
        .iter()
        .flat_map(|a| [a.triple(), a.tsm_triple()])
        .collect();
    wanted_targets.sort_unstable();
    wanted_targets.dedup();
    let missing = missing_targets(&wanted_targets, &targets);
    if !missing.is_empty() {
        rustup_add(&rustup, &ws.toolchain, "target", &missing)?;
    }
    let missing = missing_components(COMPONENTS, &components);
    if !missing.is_empty() {
        rustup_add(&rustup, &ws.toolchain, "component", &missing)?;
    }

    let (qemu, qemu_version) = qemu_install::ensure()?;
    if needs.gdb && find_in_path(GDB).is_none() {
        apt_install(&[&[GDB]])?;
        if find_in_path(GDB).is_none() {
            return Err(format!("{GDB} is still not on PATH after installing it"));
        }
    }
    if verbose {
        eprintln!(
            "prerequisites present: toolchain {} with {} and {}, QEMU {qemu_version} ({}){} \
             (checked in {} ms)",
            ws.toolchain,
            wanted_targets.join(", "),
            COMPONENTS.join(", "),
            qemu.command(Arch::Aarch64).get_program().to_string_lossy(),
            if needs.gdb { ", gdb-multiarch" } else { "" },
            start.elapsed().as_millis()
        );
    }
    Ok(())
}

fn list_installed(rustup: &Path, toolchain: &str, what: &str) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(rustup);
    cmd.args([what, "list", "--installed", "--toolchain", toolchain]);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}\nIs the pinned toolchain installed? Run: rustup toolchain install {toolchain} --profile minimal",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect())
}

fn missing_targets<'a>(wanted: &[&'a str], installed: &[String]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|t| !installed.iter().any(|i| i == t))
        .collect()
}

/// rustup lists components with their host triple (`clippy-x86_64-unknown-linux-gnu`), and
/// some under an older `-preview` name.
fn missing_components<'a>(wanted: &[&'a str], installed: &[String]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|c| {
            let prefix = format!("{c}-");
            !installed.iter().any(|i| i == c || i.starts_with(&prefix))
        })
        .collect()
}

fn rustup_add(rustup: &Path, toolchain: &str, what: &str, items: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(rustup);
    cmd.args([what, "add", "--toolchain", toolchain])
        .args(items);
    eprintln!("installing missing rustup {what}s: {}", items.join(" "));
    run_install(&mut cmd)
}

/// Debian packages (gdb-multiarch; the amd64 module's compiler and `make`: `linux_module`):
/// `apt-get update` once, then each group in its own `apt-get install`.
pub(crate) fn apt_install(groups: &[&[&str]]) -> Result<(), String> {
    let install_line = |sudo: &str| {
        let mut line = format!("{sudo}apt-get update");
        for g in groups {
            line.push_str(&format!(
                " && {sudo}apt-get install -y --no-install-recommends {}",
                g.join(" ")
            ));
        }
        line
    };
    let missing = groups
        .iter()
        .flat_map(|g| g.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if find_in_path("apt-get").is_none() {
        return Err(format!(
            "missing Debian packages {missing}, and this machine has no apt-get. On Debian/Ubuntu \
             run: {}\nElsewhere install {missing} from your distribution.",
            install_line("sudo ")
        ));
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages {missing}; installing them needs root. Run:\n  {}",
            install_line("sudo ")
        ));
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    eprintln!("installing missing Debian packages: {missing}");
    run_install(&mut apt(&["update"]))?;
    for group in groups {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend_from_slice(group);
        run_install(&mut apt(&args))?;
    }
    Ok(())
}

pub(crate) fn run_install(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({status}); run it by hand to see why, then retry",
            show(cmd)
        ))
    }
}

/// Effective uid 0, from /proc (no libc binding needed on the Linux machines this runs on).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_missing_targets() {
        let installed = strings(&["aarch64-unknown-none", "x86_64-unknown-linux-gnu"]);
        let wanted = ["aarch64-unknown-none", "x86_64-unknown-none"];
        assert_eq!(
            missing_targets(&wanted, &installed),
            vec!["x86_64-unknown-none"]
        );
    }

    #[test]
    fn components_match_with_their_host_triple() {
        let installed = strings(&[
            "cargo-x86_64-unknown-linux-gnu",
            "clippy-x86_64-unknown-linux-gnu",
            "llvm-tools-preview-x86_64-unknown-linux-gnu",
            "rust-src",
        ]);
        assert_eq!(missing_components(COMPONENTS, &installed), vec!["rustfmt"]);
        assert_eq!(
            missing_components(&["rust-src"], &installed),
            Vec::<&str>::new()
        );
    }
}
