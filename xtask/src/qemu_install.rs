//! The pinned QEMU: 10.0 from Debian's bookworm-backports suite, unpacked into a cache folder
//! of its own, never installed into the system (README, "Two commands").
//!
//! *Why 10.0*: QEMU 7.2's SMMUv3 has stage 1 only; the TSM's host domain and the vdevices'
//! tables are stage-2 (and nested) translations, which QEMU's SMMU emulates from 10.0 on
//! (docs/design.md "The platform IOMMU"). *Why unpacked*: installing a backports QEMU would
//! replace the machine's own (and need root); a private apt configuration and `dpkg -x` leave
//! the system as it was. The source is the machine's own apt configuration, with the
//! `bookworm-backports` suite added to each source of `bookworm`, so the repository names no
//! mirror.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::{PrivateApt, SourceFile};
use crate::arch::Arch;
use crate::workspace::show;

/// The QEMU release the scenarios are written against (major.minor). Debian's mirrors keep only
/// the newest build of a suite, so the patch level is whatever bookworm-backports has; it is
/// printed by `cargo xtask setup` and at the top of every run's log.
pub const PIN: &str = "10.0";
/// Where QEMU 10.0 is packaged for the Debian release these machines run.
const SUITE: &str = "bookworm-backports";
/// The suite whose sources also carry [`SUITE`].
const BASE_SUITE: &str = "bookworm";
/// The packages unpacked: both system emulators, their shared parts and modules, and the x86
/// firmware (SeaBIOS, the iPXE option ROMs of q35's default NIC). Fetched by name, whether or
/// not the machine has some version of them installed: the unpacked QEMU reads its data from
/// here only (`-L`).
const PACKAGES: &[&str] = &[
    "qemu-system-arm",
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
];
/// The file that records a finished install: the version both binaries reported.
const STAMP: &str = "version";

/// An unpacked QEMU in the cache folder.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// What `dpkg -x` unpacked into (it holds `usr/bin`, `usr/lib`, `usr/share`).
    root: PathBuf,
}

impl Qemu {
    /// The pinned QEMU's folder: `$XDG_CACHE_HOME/tsm-xtask/qemu-<PIN>`, else
    /// `~/.cache/tsm-xtask/qemu-<PIN>`; outside `target/`, so `cargo clean` keeps it.
    pub fn locate() -> Result<Self, String> {
        Ok(Qemu {
            root: crate::apt::cache_folder(&format!("qemu-{PIN}"))?,
        })
    }

    fn binary(&self, arch: Arch) -> PathBuf {
        self.root.join("usr/bin").join(arch.qemu())
    }

    /// The exact version the install recorded (`10.0.2 (Debian 1:10.0.2+ds-…)`), `None` when
    /// it is not installed (or an install did not finish).
    pub fn version(&self) -> Option<String> {
        let v = std::fs::read_to_string(self.root.join(STAMP)).ok()?;
        let installed = Arch::ALL.iter().all(|&a| self.binary(a).is_file());
        installed.then(|| v.trim().to_string())
    }

    /// QEMU for `arch`, ready for the machine's arguments: its modules and libraries from the
    /// unpacked folder (without `QEMU_MODULE_DIR` it would load a system QEMU's modules and
    /// fail), and on x86_64 its firmware (`-L`: QEMU searches these before its built-in path).
    pub fn command(&self, arch: Arch) -> Command {
        let mut cmd = Command::new(self.binary(arch));
        let lib = self.root.join("usr/lib").join(multiarch());
        cmd.env("QEMU_MODULE_DIR", lib.join("qemu"));
        // Libraries the machine lacked were unpacked too (some Debian 12 packages still put
        // theirs under /lib).
        let libs = [lib, self.root.join("lib").join(multiarch())];
        if let Ok(path) = std::env::join_paths(libs) {
            cmd.env("LD_LIBRARY_PATH", path);
        }
        if arch == Arch::X86_64 {
            for dir in ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"] {
                cmd.arg("-L").arg(self.root.join(dir));
            }
        }
        cmd
    }
}

/// Debian's multiarch directory for this machine's libraries.
fn multiarch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    }
}

/// Makes sure the pinned QEMU is unpacked; returns it and its exact version. A present install
/// costs two file checks; a missing one is fetched and unpacked (about 25 MB, a minute).
pub fn ensure() -> Result<(Qemu, String), String> {
    let qemu = Qemu::locate()?;
    if let Some(v) = qemu.version() {
        return Ok((qemu, v));
    }
    if let Some(tool) = crate::apt::missing_tool() {
        return Err(format!(
            "QEMU {PIN} is needed (its SMMUv3 emulates stage 2) and xtask installs it from \
             Debian's {SUITE} suite with apt-get and dpkg-deb, but this machine has no {tool}. \
             Unpack qemu-system-arm and qemu-system-x86 {PIN}.x into {} (usr/bin, usr/lib, \
             usr/share as in the Debian packages) and write their version into {}",
            qemu.root.display(),
            qemu.root.join(STAMP).display()
        ));
    }
    eprintln!(
        "installing QEMU {PIN} from Debian {SUITE} into {} (the system is left as it is)",
        qemu.root.display()
    );
    let parent = qemu.root.parent().ok_or("the QEMU folder has no parent")?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // Unpacked beside the final folder and renamed into place once it works, so an interrupted
    // install is never taken for a finished one, and two xtasks installing at once do not mix.
    let work = parent.join(format!("qemu-{PIN}.partial-{}", std::process::id()));
    let result = install_into(&work);
    let version = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    match std::fs::rename(&work, &qemu.root) {
        Ok(()) => {}
        // Another xtask finished first: keep its install.
        Err(_) if qemu.version().is_some() => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(format!(
                "cannot move the unpacked QEMU to {}: {e}",
                qemu.root.display()
            ));
        }
    }
    eprintln!("QEMU {version} ready in {}", qemu.root.display());
    Ok((qemu, version))
}

/// Fetches and unpacks QEMU into `work`; the version both binaries report.
fn install_into(work: &Path) -> Result<String, String> {
    let apt_dir = work.join("apt");
    let apt = PrivateApt::new(&apt_dir, &[], Some(SUITE), backports_sources)?;
    run(&mut apt.get(&["update"]))?;
    // The named packages, wherever a version of them is installed already ...
    let mut download = vec!["download"];
    download.extend_from_slice(PACKAGES);
    run(&mut apt.get(&download))?;
    // ... and whatever libraries they need that this machine lacks (nothing on a machine with
    // Debian's own QEMU; a few on a fresh one).
    let mut closure = vec![
        "install",
        "--download-only",
        "--no-install-recommends",
        "-y",
    ];
    closure.extend_from_slice(PACKAGES);
    run(&mut apt.get(&closure))?;

    let root = work.to_path_buf();
    for deb in &apt.debs()? {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(&root);
        run(&mut cmd)?;
    }
    std::fs::remove_dir_all(&apt_dir)
        .map_err(|e| format!("cannot remove {}: {e}", apt_dir.display()))?;

    let qemu = Qemu { root };
    let mut versions = Vec::new();
    for arch in Arch::ALL {
        let mut cmd = qemu.command(arch);
        cmd.arg("--version");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| {
            format!(
                "`{}` did not report a version ({}): {}{}",
                show(&cmd),
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if !is_pinned(version) {
            return Err(format!(
                "Debian {SUITE} now has QEMU {version}, not {PIN}.x, which the scenarios are \
                 written against: update `PIN` in xtask/src/qemu_install.rs and check the \
                 scenarios on it"
            ));
        }
        versions.push(version.to_string());
    }
    let version = versions.first().cloned().unwrap_or_default();
    if versions.iter().any(|v| *v != version) {
        return Err(format!(
            "the two QEMU binaries report different versions: {}",
            versions.join(", ")
        ));
    }
    let stamp = work.join(STAMP);
    std::fs::write(&stamp, format!("{version}\n"))
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(version)
}

/// [`SUITE`] beside every source of [`BASE_SUITE`] among the machine's (the libraries QEMU
/// needs come from the machine's own suites).
fn backports_sources(copied: &[SourceFile]) -> Result<Vec<SourceFile>, String> {
    let (mut stanzas, mut lines) = (String::new(), String::new());
    for (name, text) in copied {
        if name.ends_with(".sources") {
            stanzas.push_str(&backports_stanzas(text));
        } else {
            lines.push_str(&backports_lines(text));
        }
    }
    if stanzas.is_empty() && lines.is_empty() {
        return Err(format!(
            "QEMU {PIN} comes from Debian's {SUITE} suite, which xtask adds beside a source of \
             {BASE_SUITE}; the machine's apt sources have none (is this Debian 12?)"
        ));
    }
    Ok(vec![
        ("backports.sources".to_string(), stanzas),
        ("backports.list".to_string(), lines),
    ])
}

/// Each deb822 stanza of binary packages from [`BASE_SUITE`] again, with [`SUITE`] as its only
/// suite (every other field, a multi-line inline key included, as it is).
fn backports_stanzas(text: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        let words = |name: &str| field(name).unwrap_or("").split_whitespace();
        if !words("Types").any(|t| t == "deb")
            || !words("Suites").any(|s| s == BASE_SUITE)
            || field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let mut in_suites = false;
        for line in stanza.lines() {
            let continuation = line.starts_with([' ', '\t']);
            if continuation && in_suites {
                continue;
            }
            in_suites = !continuation
                && line
                    .split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("Suites"));
            if in_suites {
                out.push_str(&format!("Suites: {SUITE}\n"));
            } else if line.starts_with("Types:") {
                // deb-src entries are not needed.
                out.push_str("Types: deb\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

/// For each one-line `deb` entry of [`BASE_SUITE`]: the same entry with [`SUITE`].
fn backports_lines(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        // `deb [options] uri suite components...`: the options are one bracketed group.
        let start = match words.iter().position(|w| w.ends_with(']')) {
            Some(end) if words.get(1).is_some_and(|w| w.starts_with('[')) => end + 1,
            _ => 1,
        };
        if words.get(start + 1) == Some(&BASE_SUITE) {
            let mut entry = words.clone();
            entry[start + 1] = SUITE;
            out.push_str(&entry.join(" "));
            out.push('\n');
        }
    }
    out
}

/// `10.0.2 (Debian 1:10.0.2+ds-…)` from QEMU's `--version` output.
fn parse_version(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("QEMU emulator version "))
        .map(str::trim)
}

/// Whether `version` is the pinned major.minor.
fn is_pinned(version: &str) -> bool {
    version
        .strip_prefix(PIN)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(' ') || rest.is_empty())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    crate::prereq::run_install(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_beside_every_bookworm_source() {
        let sources = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
                       Suites: bookworm bookworm-updates\nComponents: main\n\
                       Signed-By: /usr/share/keyrings/k.gpg\n\n\
                       Types: deb\nURIs: http://mirror.example/debian-security\n\
                       Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            backports_stanzas(sources),
            "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
             Suites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/k.gpg\n\n"
        );
        let list = "deb http://m.example/debian bookworm main contrib\n\
                    deb [arch=amd64] http://m.example/debian bookworm main\n\
                    deb-src http://m.example/debian bookworm main\n\
                    deb http://m.example/debian bookworm-updates main\n";
        assert_eq!(
            backports_lines(list),
            "deb http://m.example/debian bookworm-backports main contrib\n\
             deb [arch=amd64] http://m.example/debian bookworm-backports main\n"
        );
    }

    #[test]
    fn version_is_checked_against_the_pin() {
        let out = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                   Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
        let v = parse_version(out);
        assert_eq!(v, Some("10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"));
        assert!(v.is_some_and(is_pinned));
        assert!(!is_pinned("10.1.0"));
        assert!(!is_pinned("10.00"));
        assert!(!is_pinned("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"));
    }
}
