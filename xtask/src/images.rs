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
    let mut cmd = ws.cargo();
    cmd.args(["build", "-p", "tsm-firmware"]);
    // The host payload does not depend on the variant: built with the normal image only.
    if variant == Variant::Normal {
        cmd.args(["-p", "tsm-host-payload"]);
    }
    for feature in variant.features() {
        cmd.args(["--features", &format!("tsm-firmware/{feature}")]);
    }
    cmd.args(["--target", arch.triple()]);
    if release {
        cmd.arg("--release");
    }
    eprintln!("$ {}", show(&cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    if !status.success() {
        return Err(format!(
            "building the {} images failed ({status})",
            arch.name()
        ));
    }

    let out = ws.target_dir.join(arch.triple()).join(profile(release));
    let keep = ws
        .xtask_dir()
        .join("images")
        .join(arch.triple())
        .join(profile(release));
    let tsm = keep.join(variant.dir_name()).join("tsm");
    copy(&out.join("tsm"), &tsm)?;
    let host = keep.join("tsm-host");
    if variant == Variant::Normal {
        copy(&out.join("tsm-host"), &host)?;
    } else if !host.exists() {
        return Err(format!(
            "{} missing: build the normal variant first",
            host.display()
        ));
    }
    Ok(Images { tsm, host })
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
