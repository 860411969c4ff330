//! Builds the TSM image and the host payload, and keeps a copy of each variant so a later
//! build of another variant (same output path) cannot change an image under a run.

use std::path::PathBuf;

use crate::arch::Arch;
use crate::scenarios::Variant;
use crate::workspace::{Workspace, show};

/// The two ELFs of one run.
#[derive(Clone, Debug)]
pub struct Images {
    pub tsm: PathBuf,
    pub host: PathBuf,
}

pub fn profile(release: bool) -> &'static str {
    if release { "release" } else { "debug" }
}

/// `cargo build` of the images for `arch`; returns the copies for `variant`.
pub fn build(
    ws: &Workspace,
    arch: Arch,
    release: bool,
    variant: Variant,
) -> Result<Images, String> {
    // The TSM image and the host payload in one build where they share a target; on aarch64
    // the image's target is the soft-float one (`Arch::tsm_triple`), so two.
    let mut cmd = ws.cargo();
    cmd.args(["build", "-p", "tsm-firmware"]);
    for feature in variant.features() {
        cmd.args(["--features", &format!("tsm-firmware/{feature}")]);
    }
    cmd.args(["--target", arch.tsm_triple()]);
    // The host payload does not depend on the variant: built with the normal image only. It
    // embeds the guest payload, built first (docs/design.md "Guests").
    let mut guest_elf = None;
    let mut payload = None;
    if variant == Variant::Normal {
        let (bin, elf) = build_guest(ws, arch)?;
        guest_elf = Some(elf);
        if arch.tsm_triple() == arch.triple() {
            cmd.args(["-p", "tsm-host-payload"]);
            cmd.env("TSM_GUEST_BIN", bin);
        } else {
            let mut host = ws.cargo();
            host.args(["build", "-p", "tsm-host-payload", "--target", arch.triple()]);
            host.env("TSM_GUEST_BIN", bin);
            payload = Some(host);
        }
    }
    for c in core::iter::once(&mut cmd).chain(payload.as_mut()) {
        if release {
            c.arg("--release");
        }
        run_shown(c, &format!("building the {} images", arch.name()))?;
    }

    let tsm_out = ws.target_dir.join(arch.tsm_triple()).join(profile(release));
    let out = ws.target_dir.join(arch.triple()).join(profile(release));
    let keep = ws
        .xtask_dir()
        .join("images")
        .join(arch.triple())
        .join(profile(release));
    let tsm = keep.join(variant.dir_name()).join("tsm");
    copy(&tsm_out.join("tsm"), &tsm)?;
    let host = keep.join("tsm-host");
    if variant == Variant::Normal {
        copy(&out.join("tsm-host"), &host)?;
    }
    // Next to the host payload, for the guest's defmt table (log stream 2).
    if let Some(elf) = guest_elf {
        copy(&elf, &keep.join("tsm-guest"))?;
    } else if !host.exists() {
        return Err(format!(
            "{} missing: build the normal variant first",
            host.display()
        ));
    }
    Ok(Images { tsm, host })
}

/// Builds the guest payload for `arch` (release: it must fit the pages the host maps for it)
/// and turns it into the flat binary the host payload embeds; returns (binary, ELF).
pub(crate) fn build_guest(ws: &Workspace, arch: Arch) -> Result<(PathBuf, PathBuf), String> {
    let mut cmd = ws.cargo();
    cmd.args([
        "build",
        "-p",
        "tsm-guest-payload",
        "--release",
        "--target",
        arch.guest_triple(),
    ]);
    run_shown(
        &mut cmd,
        &format!("building the {} guest payload", arch.name()),
    )?;
    let elf = ws
        .target_dir
        .join(arch.guest_triple())
        .join("release")
        .join("tsm-guest");
    let bin = ws
        .xtask_dir()
        .join("images")
        .join(arch.triple())
        .join("tsm-guest.bin");
    if let Some(dir) = bin.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut objcopy = std::process::Command::new(llvm_tool(ws, "objcopy")?);
    objcopy.arg("-O").arg("binary").arg(&elf).arg(&bin);
    eprintln!("$ {}", show(&objcopy));
    let status = objcopy
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&objcopy)))?;
    if !status.success() {
        return Err(format!(
            "llvm-objcopy of {} failed ({status})",
            elf.display()
        ));
    }
    Ok((bin, elf))
}

/// rustup's `llvm-<tool>` (component llvm-tools) of the pinned toolchain.
pub fn llvm_tool(ws: &Workspace, tool: &str) -> Result<PathBuf, String> {
    let rustc = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("rustc")
            .args(args)
            .current_dir(&ws.root)
            .output()
            .map_err(|e| format!("cannot run rustc: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let sysroot = rustc(&["--print", "sysroot"])?;
    let host = rustc(&["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or("rustc -vV names no host")?;
    let path = PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin")
        .join(format!("llvm-{tool}"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} missing: `rustup component add llvm-tools` (cargo xtask setup)",
            path.display()
        ))
    }
}

/// Runs `cmd`, echoing it first; `what` names it in the error.
fn run_shown(cmd: &mut std::process::Command, what: &str) -> Result<(), String> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn copy(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}
