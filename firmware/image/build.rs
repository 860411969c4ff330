//! Links the TSM image with its arch's linker script (and defmt's), and relinks when it changes.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "none" {
        return;
    }
    // The manifest directory of this run, not of the build script's compilation (`env!`): a
    // target directory shared by two checkouts would otherwise link with the other's script.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let dir = std::path::Path::new(&manifest).join("../../link");
    let script = dir.join(format!("{arch}-tsm.ld"));
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg=-T{}", script.display());
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
