//! Links the TSM image with its arch's linker script (and defmt's).
fn main() {
    tsm_link::link_image("tsm");
}
