//! A private apt: the machine's own package sources (plus what a caller adds), with lists and
//! downloads in a folder of their own, so xtask can fetch Debian packages (QEMU from backports,
//! a foreign architecture's kernel) and unpack them with `dpkg-deb` without changing the
//! system's package state. The repository names no mirror: the sources are the machine's.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The apt sources of the machine (deb822 `.sources` and one-line `.list` files).
const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const APT_SOURCES_LIST: &str = "/etc/apt/sources.list";

/// One source file: its name and its text.
pub type SourceFile = (String, String);

/// A private apt state under one folder: `sources/`, `lists/`, `cache/archives/`.
pub struct PrivateApt {
    dir: PathBuf,
    /// Debian architectures besides the machine's own whose packages the lists hold.
    foreign: Vec<String>,
    /// The suite apt prefers (`-t`), if any.
    target: Option<String>,
}

impl PrivateApt {
    /// Sets up `dir` with the machine's sources and the files `extra` derives from them.
    pub fn new(
        dir: &Path,
        foreign: &[&str],
        target: Option<&str>,
        extra: impl FnOnce(&[SourceFile]) -> Result<Vec<SourceFile>, String>,
    ) -> Result<Self, String> {
        let apt = PrivateApt {
            dir: dir.to_path_buf(),
            foreign: foreign.iter().map(|a| a.to_string()).collect(),
            target: target.map(str::to_string),
        };
        for d in [
            apt.parts(),
            dir.join("lists/partial"),
            apt.archives().join("partial"),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let copied = machine_sources()?;
        let added = extra(&copied)?;
        for (name, text) in copied.iter().chain(&added) {
            let path = apt.parts().join(name);
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(apt)
    }

    fn parts(&self) -> PathBuf {
        self.dir.join("sources")
    }

    /// Where `download` and `install --download-only` put the `.deb` files.
    pub fn archives(&self) -> PathBuf {
        self.dir.join("cache/archives")
    }

    fn options(&self, cmd: &mut Command) {
        cmd.arg("-q")
            .arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(opt("Dir::Etc::SourceParts", &self.parts()))
            .arg("-o")
            .arg(opt("Dir::State::Lists", &self.dir.join("lists")))
            .arg("-o")
            .arg(opt("Dir::Cache", &self.dir.join("cache")))
            // Nothing here changes the system's package state: no dpkg lock is needed (and a
            // user without root could not take it).
            .arg("-o")
            .arg("Debug::NoLocking=1");
        if !self.foreign.is_empty() {
            // The list replaces the default (the native architecture), so name it too.
            cmd.arg("-o")
                .arg(format!("APT::Architectures::={}", native_arch()));
            for a in &self.foreign {
                cmd.arg("-o").arg(format!("APT::Architectures::={a}"));
            }
        }
        if crate::prereq::is_root() {
            // apt's download sandbox user cannot enter root's home; root downloads itself.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
    }

    /// `apt-get <args>` over this state, run in the archives folder (where `download` writes).
    pub fn get(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-get");
        self.options(&mut cmd);
        if let Some(t) = &self.target {
            cmd.args(["-t", t]);
        }
        cmd.args(args).current_dir(self.archives());
        cmd
    }

    /// `apt-cache <args>` over this state.
    pub fn cache(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-cache");
        self.options(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// The `.deb` files downloaded so far.
    pub fn debs(&self) -> Result<Vec<PathBuf>, String> {
        let archives = self.archives();
        let mut debs = std::fs::read_dir(&archives)
            .map_err(|e| format!("cannot list {}: {e}", archives.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect::<Vec<_>>();
        debs.sort();
        Ok(debs)
    }
}

/// The tools a private apt needs, or the one this machine lacks.
pub fn missing_tool() -> Option<&'static str> {
    ["apt-get", "apt-cache", "dpkg-deb"]
        .into_iter()
        .find(|t| crate::prereq::find_in_path(t).is_none())
}

/// `$XDG_CACHE_HOME/tsm-xtask/<name>`, else `~/.cache/tsm-xtask/<name>`: where unpacked
/// packages live, outside `target/` so `cargo clean` keeps them.
pub fn cache_folder(name: &str) -> Result<PathBuf, String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .ok_or("neither XDG_CACHE_HOME nor HOME is set: no cache folder for Debian packages")?;
    Ok(cache.join("tsm-xtask").join(name))
}

/// Debian's name for this machine's architecture.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// `Name=<path>` for an apt `-o` option.
fn opt(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// The machine's source files, as they are.
fn machine_sources() -> Result<Vec<SourceFile>, String> {
    let mut copied = Vec::new();
    if let Ok(text) = std::fs::read_to_string(APT_SOURCES_LIST) {
        copied.push(("system.list".to_string(), text));
    }
    if let Ok(dir) = std::fs::read_dir(APT_SOURCES_DIR) {
        for entry in dir.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                copied.push((name, text));
            }
        }
    }
    if copied.iter().all(|(_, t)| t.trim().is_empty()) {
        return Err(format!(
            "xtask fetches Debian packages through the machine's own apt sources, and \
             {APT_SOURCES_LIST} and {APT_SOURCES_DIR} have none"
        ));
    }
    Ok(copied)
}

/// Fills `folder` (a cache folder of [`cache_folder`]) with `fill`, which unpacks into a
/// `.partial-<pid>` sibling renamed into place once complete, so an interrupted fetch is never
/// taken for a finished one; `what` names the contents in errors.
pub fn fill_in_place(
    folder: &Path,
    what: &str,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let parent = folder
        .parent()
        .ok_or_else(|| format!("the {what} folder has no parent"))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let name = folder
        .file_name()
        .ok_or_else(|| format!("the {what} folder has no name"))?;
    let mut partial = name.to_os_string();
    partial.push(format!(".partial-{}", std::process::id()));
    let work = parent.join(partial);
    if let Err(e) = fill(&work) {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    if folder.exists() {
        std::fs::remove_dir_all(folder)
            .map_err(|e| format!("cannot remove the old {}: {e}", folder.display()))?;
    }
    std::fs::rename(&work, folder)
        .map_err(|e| format!("cannot move the {what} to {}: {e}", folder.display()))
}
