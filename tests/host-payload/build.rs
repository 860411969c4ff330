//! Links the host payload with its arch's linker script (and defmt's), and relinks when it changes.
fn main() {
    // The guest payload image (a flat binary) xtask embeds: `env.rs` includes it when set.
    println!("cargo::rustc-check-cfg=cfg(guest_image)");
    println!("cargo:rerun-if-env-changed=TSM_GUEST_BIN");
    if std::env::var_os("TSM_GUEST_BIN").is_some() {
        println!("cargo:rustc-cfg=guest_image");
    }
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "none" {
        return;
    }
    // The manifest directory of this run, not of the build script's compilation (`env!`): a
    // target directory shared by two checkouts would otherwise link with the other's script.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let dir = std::path::Path::new(&manifest).join("../../link");
    let script = dir.join(format!("{arch}-host.ld"));
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg=-T{}", script.display());
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
