//! `TableGranules` against the platforms' general range check over a whole granule, at every
//! granule near the ends of DRAM and of the TSM, and at the ends of the address space.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::test_layouts::{edges, layouts};
use super::{MemRange, TableGranules};

/// The platforms' `check(g, GRANULE_SIZE)`: `[g, g + GRANULE_SIZE)` inside DRAM and not
/// touching the TSM.
fn reference(dram: MemRange, tsm: MemRange, g: u64) -> bool {
    let Some(end) = g.checked_add(GRANULE_SIZE) else {
        return false;
    };
    let tsm_end = tsm.base.0.saturating_add(tsm.size);
    dram.contains(Pa(g), GRANULE_SIZE) && !(g < tsm_end && end > tsm.base.0)
}

#[test]
fn admits_what_the_range_check_admits_at_every_edge() {
    const G: u64 = GRANULE_SIZE;
    for (dram, tsm) in layouts() {
        let t = TableGranules::new(dram, tsm);
        for e in edges(dram, tsm) {
            for k in -3i64..=3 {
                let g = e.wrapping_add_signed(k * G as i64) & !(G - 1);
                assert_eq!(
                    t.admits(Pa(g)),
                    reference(dram, tsm, g),
                    "DRAM {dram:?}, TSM {tsm:?}, granule {g:#x}"
                );
            }
        }
    }
}
