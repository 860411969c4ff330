//! `MemBounds` against the platforms' general range check (`MemRange::contains` with the TSM
//! range test beside it), at every length near the ends of DRAM and of the TSM, and at the
//! ends of the address space.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::{MemBounds, MemRange};

/// The platforms' check before `MemBounds`: `[pa, pa + len)` inside DRAM and not touching the
/// TSM, both ends recomputed with their overflow checks.
fn reference(dram: MemRange, tsm: MemRange, pa: u64, len: u64) -> bool {
    let Some(end) = pa.checked_add(len) else {
        return false;
    };
    let tsm_end = tsm.base.0.saturating_add(tsm.size);
    dram.contains(Pa(pa), len) && !(pa < tsm_end && end > tsm.base.0)
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
        // DRAM past the top (overflow), a TSM past the top, tiny and empty ranges.
        (range(u64::MAX - G + 1, 2 * G), range(0, G)),
        (range(0, 0x10_0000), range(u64::MAX - G, 2 * G)),
        (range(0x10_0000, 7), range(0, 0)),
        (range(0x10_0000, 0), range(0, 0)),
    ];
    let lens = [
        0,
        1,
        7,
        8,
        48,
        128,
        G - 1,
        G,
        G + 1,
        3 * G,
        u64::MAX / 2,
        u64::MAX,
    ];
    for (dram, tsm) in layouts {
        let b = MemBounds::new(dram, tsm);
        let edges = [
            dram.base.0,
            dram.base.0.wrapping_add(dram.size),
            tsm.base.0,
            tsm.base.0.wrapping_add(tsm.size),
            0,
            u64::MAX,
        ];
        for e in edges {
            for k in [-130i64, -9, -8, -1, 0, 1, 8, 9, 130] {
                let pa = e.wrapping_add_signed(k);
                for len in lens {
                    // Ranges that end at an edge, not only those that start there.
                    for start in [pa, pa.wrapping_sub(len)] {
                        assert_eq!(
                            b.admits(Pa(start), len),
                            reference(dram, tsm, start, len),
                            "DRAM {dram:?}, TSM {tsm:?}, [{start:#x}, +{len:#x})"
                        );
                    }
                }
            }
        }
    }
}
