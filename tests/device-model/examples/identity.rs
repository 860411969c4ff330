//! Writes every identity chain the generator makes to `tests/device-model/identity/<name>.bin`:
//! `cargo run -p tsm-device-model --example identity` (after changing the generator; the
//! crate's tests compare the committed files with the generator's output).

use std::path::Path;

use tsm_device_model::identity::generate::{Variant, generate};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("identity");
    std::fs::create_dir_all(&dir)?;
    for variant in Variant::ALL {
        let chain = generate(variant);
        let path = dir.join(format!("{}.bin", variant.file_stem()));
        std::fs::write(&path, chain.as_slice())?;
        println!("{} ({} bytes)", path.display(), chain.as_slice().len());
    }
    Ok(())
}
