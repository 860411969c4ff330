//! `TableGranules` against the platforms' general range check over a whole granule, at every
//! granule near the ends of DRAM and of the TSM, and at the ends of the address space.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

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

fn range(base: u64, size: u64) -> MemRange {
    MemRange {
        base: Pa(base),
        size,
    }
}

#[test]
fn admits_what_the_range_check_admits_at_every_edge() {
    const G: u64 = GRANULE_SIZE;
    let layouts = [
        // QEMU virt: 512 MiB at 1 GiB, the TSM at its start.
        (
            range(0x4000_0000, 0x2000_0000),
            range(0x4020_0000, 0x12_0000),
        ),
        // x86_64: DRAM from 0, the TSM inside it.
        (range(0, 0x2000_0000), range(0x20_0000, 0x22_0000)),
        // Ends not granule-aligned, the TSM straddling DRAM's start.
        (range(0x1_0800, 0x10_0100), range(0x0_F000, 0x2_0010)),
        // DRAM up to the top of the address space, the TSM at its end.
        (
            range(u64::MAX - 16 * G + 1, 16 * G),
            range(u64::MAX - 2 * G + 1, 2 * G),
        ),
        // DRAM past the top (overflow), under one granule, empty.
        (range(u64::MAX - G + 1, 2 * G), range(0, G)),
        (range(0x10_0000, G - 1), range(0, 0)),
        (range(0x10_0000, 0), range(0, 0)),
    ];
    for (dram, tsm) in layouts {
        let t = TableGranules::new(dram, tsm);
        let edges = [
            dram.base.0,
            dram.base.0.wrapping_add(dram.size),
            tsm.base.0,
            tsm.base.0.wrapping_add(tsm.size),
            0,
            u64::MAX,
        ];
        for e in edges {
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
