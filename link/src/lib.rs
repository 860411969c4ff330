//! What the build scripts of the three bare-metal images (the TSM, the host payload, the guest
//! payload) have in common: linking with the image's script from `link/` and defmt's, and
//! relinking when the script changes.

use std::path::{Path, PathBuf};

/// Links `image` (`tsm`, `host` or `guest`) with `link/<arch>-<image>.ld` and `defmt.x` when the
/// build is for a bare-metal target, and returns the target's arch for the caller's own link
/// arguments; `None` for a build on the build machine, which links nothing of this.
pub fn link_image(image: &str) -> Option<String> {
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "none" {
        return None;
    }
    let arch = var("CARGO_CFG_TARGET_ARCH");
    // The manifest directory of this run, not of this crate's compilation (`env!`): a target
    // directory shared by two checkouts would otherwise link with the other's script.
    let manifest = var("CARGO_MANIFEST_DIR");
    let Some(script) = find_script(Path::new(&manifest), &arch, image) else {
        panic!("no link/{arch}-{image}.ld in or above {manifest}");
    };
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg=-T{}", script.display());
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    Some(arch)
}

/// `link/<arch>-<image>.ld` of the nearest folder, from `from` up, that has it.
fn find_script(from: &Path, arch: &str, image: &str) -> Option<PathBuf> {
    from.ancestors()
        .map(|dir| dir.join("link").join(format!("{arch}-{image}.ld")))
        .find(|script| script.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_has_a_script_on_both_arches() {
        let image_dirs = [
            ("tsm", "firmware/image"),
            ("host", "tests/host-payload"),
            ("guest", "tests/guest-payload"),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for arch in ["aarch64", "x86_64"] {
            for (image, dir) in image_dirs {
                let script = find_script(&root.join(dir), arch, image);
                assert_eq!(
                    script.and_then(|s| s.canonicalize().ok()),
                    root.join("link")
                        .join(format!("{arch}-{image}.ld"))
                        .canonicalize()
                        .ok(),
                    "{arch} {image}"
                );
            }
        }
    }

    #[test]
    fn a_missing_script_is_not_found() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_eq!(
            find_script(&root.join("firmware/image"), "riscv64", "tsm"),
            None
        );
    }
}
