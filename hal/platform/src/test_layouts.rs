//! DRAM and TSM layouts the range-check tests (`MemBounds`, `TableGranules`) are run against,
//! and the addresses near their ends where an off-by-one or a wrap would show.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::MemRange;

pub(crate) fn range(base: u64, size: u64) -> MemRange {
    MemRange {
        base: Pa(base),
        size,
    }
}

/// (DRAM, TSM) pairs: both QEMU machines' and every edge case of the two rules.
pub(crate) fn layouts() -> [(MemRange, MemRange); 10] {
    const G: u64 = GRANULE_SIZE;
    [
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
        // DRAM the whole address space but its last byte, the TSM empty.
        (range(0, u64::MAX), range(0x1000, 0)),
        // DRAM past the top (overflow), under one granule, one byte, empty.
        (range(u64::MAX - G + 1, 2 * G), range(0, G)),
        (range(0x10_0000, G - 1), range(0, 0)),
        (range(1, 0), range(0, 0)),
        (range(0x10_0000, 1), range(0x10_0000, 0)),
        (range(0x10_0000, 0), range(0, 0)),
    ]
}

/// DRAM's and the TSM's ends (wrapping where they overflow) and the address space's.
pub(crate) fn edges(dram: MemRange, tsm: MemRange) -> [u64; 6] {
    [
        dram.base.0,
        dram.base.0.wrapping_add(dram.size),
        tsm.base.0,
        tsm.base.0.wrapping_add(tsm.size),
        0,
        u64::MAX,
    ]
}
