//! Writes every target's hand-made seeds to `corpus/<target>/seed_<name>`:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, _) in tsm_fuzz::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in tsm_fuzz::seeds(target) {
            std::fs::write(dir.join(format!("seed_{name}")), &bytes)?;
        }
    }
    Ok(())
}
