//! `MemBounds` against the platforms' former range check, at every address near the ends of
//! DRAM and of the TSM and at the ends of the address space, for lengths from none to all.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::test_layouts::{edges, layouts, range};
use super::{MemBounds, MemRange};

/// The former check: `None` where it panicked (the TSM's end wrapping).
fn reference(dram: MemRange, tsm: MemRange, pa: u64, len: u64) -> Option<bool> {
    let tsm_end = tsm.base.0.checked_add(tsm.size);
    let Some(end) = pa.checked_add(len) else {
        return Some(false);
    };
    if !dram.contains(Pa(pa), len) {
        return Some(false);
    }
    Some(!(pa < tsm_end? && end > tsm.base.0))
}

#[test]
fn admits_what_the_former_check_admitted_at_every_edge() {
    const G: u64 = GRANULE_SIZE;
    let lens = [
        0,
        1,
        7,
        8,
        G - 1,
        G,
        G + 1,
        2 * G,
        0x2000_0000,
        u64::MAX - 1,
        u64::MAX,
    ];
    for (dram, tsm) in layouts() {
        let b = MemBounds::new(dram, tsm);
        for e in edges(dram, tsm) {
            for k in -3i64..=3 {
                for d in [0, 1, G - 1] {
                    let pa = e.wrapping_add_signed(k * G as i64).wrapping_add(d);
                    for len in lens.iter().chain(&[e.wrapping_sub(pa), pa.wrapping_sub(e)]) {
                        let Some(want) = reference(dram, tsm, pa, *len) else {
                            continue;
                        };
                        assert_eq!(
                            b.admits(Pa(pa), *len),
                            want,
                            "DRAM {dram:?}, TSM {tsm:?}, [{pa:#x} + {len:#x})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn refuses_everything_when_drams_end_wraps() {
    let b = MemBounds::new(
        range(u64::MAX - 0xFFF, 0x2000),
        range(u64::MAX - 0xFFF, 0x1000),
    );
    for pa in [0, 1, u64::MAX - 0xFFF, u64::MAX] {
        for len in [0, 1, 0x1000] {
            assert!(!b.admits(Pa(pa), len), "[{pa:#x} + {len:#x})");
        }
    }
}
