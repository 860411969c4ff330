//! Links the host payload with its arch's linker script (and defmt's).
fn main() {
    // The guest payload image (a flat binary) xtask embeds: `env.rs` includes it when set.
    println!("cargo::rustc-check-cfg=cfg(guest_image)");
    println!("cargo:rerun-if-env-changed=TSM_GUEST_BIN");
    if std::env::var_os("TSM_GUEST_BIN").is_some() {
        println!("cargo:rustc-cfg=guest_image");
    }
    tsm_link::link_image("host");
}
