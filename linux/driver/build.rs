//! The static binary on x86_64: `x86_64-unknown-none` links a position-independent executable
//! by default, whose relocations a loader would apply; Linux loads a static program without
//! one, so link it at a fixed address instead (aarch64-unknown-none already does).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "none" && arch == "x86_64" {
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
