//! Proof that release images lack the test-only TEST_DMA_INJECT call (docs/design.md): the core
//! keeps a marker string in every image that has the handler; a release image must not contain
//! it, and the test build must (so the check can fail).

use std::path::Path;

use crate::arch::Arch;
use crate::images::{self, Images};
use crate::scenarios::Variant;
use crate::workspace::Workspace;

/// The bytes of `tsm_core::calls::guest::DMA_INJECT_MARKER`.
const MARKER: &[u8] = b"TSM: TEST_DMA_INJECT compiled in";

fn contains_marker(elf: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    Ok(bytes.windows(MARKER.len()).any(|w| w == MARKER))
}

/// Builds the release images of `arch` and checks them; `test_build` is the dma-inject image the
/// scenarios run. Ok(description) when the release image lacks the marker and the test build has it.
pub fn check(ws: &Workspace, arch: Arch, test_build: &Images) -> Result<String, String> {
    let release = images::build(ws, arch, true, Variant::Normal)?;
    if contains_marker(&release.tsm)? {
        return Err(format!(
            "{} contains TEST_DMA_INJECT",
            release.tsm.display()
        ));
    }
    if !contains_marker(&test_build.tsm)? {
        return Err(format!(
            "{} lacks the TEST_DMA_INJECT marker: the check could not tell",
            test_build.tsm.display()
        ));
    }
    Ok("absent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_only_where_it_is() {
        let dir = std::env::temp_dir().join(format!("xtask-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with = dir.join("with");
        let without = dir.join("without");
        let mut bytes = vec![0u8; 100];
        bytes.extend_from_slice(MARKER);
        std::fs::write(&with, &bytes).unwrap();
        std::fs::write(&without, &MARKER[1..]).unwrap();
        assert!(contains_marker(&with).unwrap());
        assert!(!contains_marker(&without).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
