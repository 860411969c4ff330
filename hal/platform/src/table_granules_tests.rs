//! `TableGranules` against the platforms' general range check over a whole granule, at every
//! granule near the ends of DRAM and of the TSM, and at the ends of the address space.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::run::EntryError;
use super::test_layouts::{edges, layouts, range};
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

/// The entry's rule, spelled out: a 16-aligned context of `bytes` inside one admitted granule,
/// a granule-aligned admitted root; the context is judged first.
fn entry_reference(
    dram: MemRange,
    tsm: MemRange,
    context: u64,
    bytes: u64,
    root: u64,
) -> Result<(), EntryError> {
    let g = context & !(GRANULE_SIZE - 1);
    let fits = context.is_multiple_of(16)
        && u128::from(context) + u128::from(bytes) <= u128::from(g) + u128::from(GRANULE_SIZE)
        && reference(dram, tsm, g);
    if !fits {
        return Err(EntryError::BadContext);
    }
    if !root.is_multiple_of(GRANULE_SIZE) || !reference(dram, tsm, root) {
        return Err(EntryError::BadRoot);
    }
    Ok(())
}

#[test]
fn check_entry_at_every_edge() {
    const G: u64 = GRANULE_SIZE;
    // QEMU virt's layout: DRAM at 1 GiB, the TSM at its start.
    let dram = range(0x4000_0000, 0x2000_0000);
    let tsm = range(0x4020_0000, 0x12_0000);
    let t = TableGranules::new(dram, tsm);
    let good = 0x4800_0000;
    // Around DRAM's and the TSM's ends and the top of the address space, at and beside 16-byte
    // steps and the granule's end.
    let edges = [
        dram.base.0,
        dram.base.0 + dram.size,
        tsm.base.0,
        tsm.base.0 + tsm.size,
        good,
        0,
        !(G - 1),
    ];
    let offsets = [0, 1, 8, 16, G - 0x400, G - 0x3F0, G - 16, G - 1];
    for bytes in [0, 16, 0x400, G - 16, G, G + 1, u64::MAX] {
        for e in edges {
            for k in -2i64..=2 {
                let g = e.wrapping_add_signed(k * G as i64);
                for off in offsets {
                    let c = g.wrapping_add(off);
                    for root in [good, good + 16, c, g] {
                        assert_eq!(
                            t.check_entry(Pa(c), bytes, Pa(root)),
                            entry_reference(dram, tsm, c, bytes, root),
                            "context {c:#x} of {bytes:#x} bytes, root {root:#x}"
                        );
                    }
                }
            }
        }
    }
    // The two errors apart: a good context with a bad root, a bad context with a good root.
    assert_eq!(t.check_entry(Pa(good), 0x400, Pa(good + G)), Ok(()));
    assert_eq!(
        t.check_entry(Pa(good), 0x400, Pa(tsm.base.0)),
        Err(EntryError::BadRoot)
    );
    assert_eq!(
        t.check_entry(Pa(good + G - 0x3F0), 0x400, Pa(good)),
        Err(EntryError::BadContext)
    );
    assert_eq!(
        t.check_entry(Pa(tsm.base.0 + 0x100), 0x400, Pa(good)),
        Err(EntryError::BadContext)
    );
}
