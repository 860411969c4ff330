//! Links the guest payload with its arch's linker script (and defmt's).
fn main() {
    if tsm_link::link_image("guest").as_deref() == Some("x86_64") {
        // The target links a static PIE; the guest runs where it is linked (GPA 0x20_0000) and
        // has no loader, so the relocated values are written into the image itself.
        println!("cargo:rustc-link-arg=--apply-dynamic-relocs");
    }
}
