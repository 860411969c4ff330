//! Arithmetic at the edges of the input ranges (the core denies unchecked arithmetic): calls
//! and helpers given values next to the integer limits answer with their documented status,
//! or the same result as before, and never overflow.

use core::sync::atomic::AtomicU16;
use std::boxed::Box;
use std::vec::Vec;

use tsm_abi::CallId::*;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::state::VdevState;
use tsm_abi::status::StatusCode::*;
use tsm_platform::AddressMapFormat;

use super::devices::{VBDF, device, tdis, world};
use super::*;
use crate::granule::{GranuleState, GranuleTable};
use crate::tsm::PdevRange;
use crate::viommu::Requester;

/// A granule table whose DRAM would run past the top of the 64-bit physical space: it is cut
/// at the last whole granule below 2^64, so `covers` (which computes the end of the table) and
/// the granule addresses cannot overflow. Before, `covers` panicked on any such table.
#[test]
fn a_granule_table_at_the_top_of_the_address_space_is_cut_not_overflowed() {
    let descs: Vec<AtomicU16> = (0..4).map(|_| AtomicU16::new(0)).collect();
    let base = Pa(u64::MAX - 3 * GRANULE_SIZE + 1); // 3 granules below 2^64
    let t = GranuleTable::new(base, &descs, Pa(0)..Pa(0));
    // The last granule, [2^64 - 4 KiB, 2^64), would make the end of the table 2^64.
    assert_eq!(t.len(), 2);
    assert!(t.covers(base, 2 * GRANULE_SIZE));
    assert!(!t.covers(base, 2 * GRANULE_SIZE + 1));
    assert!(!t.covers(Pa(u64::MAX - GRANULE_SIZE + 1), 1));
    assert!(!t.covers(Pa(u64::MAX), 1));
    assert_eq!(
        t.peek(Pa(base.0 + GRANULE_SIZE)).unwrap().0,
        GranuleState::Ns
    );
    assert!(t.peek(Pa(base.0 + 2 * GRANULE_SIZE)).is_err());
    let all: Vec<_> = t.snapshot().map(|(pa, ..)| pa).collect();
    assert_eq!(all, [base, Pa(base.0 + GRANULE_SIZE)]);

    // A table that fits keeps every descriptor.
    let t = GranuleTable::new(Pa(0x4000_0000), &descs, Pa(0)..Pa(0));
    assert_eq!(t.len(), 4);
    assert!(t.covers(Pa(0x4000_0000), 4 * GRANULE_SIZE));
}

#[test]
fn pdev_ranges_at_the_top_of_the_rid_space() {
    let r = |rid_base, rid_count| PdevRange {
        pdev: Pa(0),
        segment: 0,
        rid_base,
        rid_count,
    };
    let rq = |segment, rid| Requester { segment, rid };
    let top = r(0xFFFF, 1);
    assert!(top.contains(rq(0, 0xFFFF)));
    assert!(!top.contains(rq(0, 0xFFFE)));
    assert!(!top.contains(rq(1, 0xFFFF)));
    assert!(!r(0xFFFF, 0).contains(rq(0, 0xFFFF)));
    let all = r(0, 0xFFFF);
    assert!(all.contains(rq(0, 0)));
    assert!(all.contains(rq(0, 0xFFFE)));
    assert!(!all.contains(rq(0, 0xFFFF)));
    assert!(!all.overlaps(&top));
    assert!(!top.overlaps(&all));
    assert!(r(0xFFF0, 0x10).overlaps(&top));
    assert!(top.overlaps(&r(0xFFF0, 0x10)));
    assert!(!r(0xFFF0, 0xF).overlaps(&top));
    assert!(r(0x100, 8).overlaps(&r(0x107, 1)));
    assert!(!r(0x100, 8).overlaps(&r(0x108, 1)));
}

/// G_VDEV_REPORT's offset and length are the guest's: any u64 is answered, never overflowed.
#[test]
fn vdev_report_offsets_and_lengths_at_the_u64_limits() {
    let tdis = Box::leak(Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let r = w.bind(&mut dev).unwrap();
    assert_eq!(r[..2], [0, u64::from(VdevState::Locked.raw())]);
    let total = u64::from(w.info().report_len);
    assert!(total > 1 && total <= GRANULE_SIZE);
    let vbdf = u64::from(VBDF);
    for offset in [total + 1, u64::MAX, u64::MAX - total, 1 << 63] {
        assert_eq!(
            w.guest(G_VDEV_REPORT, &[vbdf, offset, 0x1000, 1])
                .map_err(|e| e.0),
            Err(s(InvalidArgument, 2)),
            "offset {offset:#x}"
        );
    }
    // Lengths past the guest's page are refused whatever the report has left (§11: the
    // buffer is `[buffer, buffer + length)`), at the u64 limit too.
    for (offset, buffer, len) in [
        (total, 0x1000, u64::MAX),
        (0, 0x1000, u64::MAX),
        (0, 0x1000, GRANULE_SIZE + 1),
        (total - 1, 0x1FFF, u64::MAX),
        // Regression (issue 11.5): only one byte is left to copy, but the buffer named runs
        // past the page; the old code checked the copied byte alone.
        (total - 1, 0x1FFF, 2),
        (total, 0x1FFF, 2),
    ] {
        assert_eq!(
            w.guest(G_VDEV_REPORT, &[vbdf, offset, buffer, len])
                .map_err(|e| e.0),
            Err(s(InvalidBuffer, 3)),
            "offset {offset:#x} buffer {buffer:#x} length {len:#x}"
        );
    }
    assert_eq!(
        w.guest(G_VDEV_REPORT, &[vbdf, total, 0x1000, GRANULE_SIZE]),
        Ok([0, 0, 0, 0])
    );
    // The last byte into the last byte of the page.
    assert_eq!(
        w.guest(G_VDEV_REPORT, &[vbdf, total - 1, 0x1FFF, 1]),
        Ok([1, 0, 0, 0])
    );
    // The whole report with the largest length the page allows.
    assert_eq!(
        w.guest(G_VDEV_REPORT, &[vbdf, 0, 0x1000, GRANULE_SIZE]),
        Ok([total, 0, 0, 0])
    );
    assert_eq!(
        w.guest(G_VDEV_REPORT, &[vbdf, 1, 0x1000, total - 2]),
        Ok([total - 2, 1, 0, 0])
    );
    // A buffer that would run past the top of the guest's page is refused, not wrapped.
    assert_eq!(
        w.guest(G_VDEV_REPORT, &[vbdf, 0, 0x1FFF, 2])
            .map_err(|e| e.0),
        Err(s(InvalidBuffer, 3))
    );
}

/// TABLE_CREATE / TABLE_DESTROY levels: the parent level is `level - 1`, so level 0 (and every
/// value that is no level) is refused before any level arithmetic.
#[test]
fn table_levels_outside_1_to_3_are_refused() {
    for format in FORMATS {
        let h = harness(format);
        let t = build_tvm(&h, 10);
        let table = h.delegate(20);
        for level in [0, 4, 255, 256, u64::MAX] {
            h.refused(
                TABLE_CREATE,
                &[t.tvm.0, 0, level, table.0],
                s(InvalidArgument, 3),
            );
            h.refused(TABLE_DESTROY, &[t.tvm.0, 0, level], s(InvalidArgument, 3));
        }
    }
}

/// The 1-based index of a non-zero unused argument register is its position, up to the sixth.
#[test]
fn unused_argument_indices_count_from_one_to_six() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    for unused in 1..6 {
        let mut args = [t.tvm.0, 0, 0, 0, 0, 0];
        args[unused] = u64::MAX;
        h.refused(TVM_DESTROY, &args, s(InvalidArgument, unused as u8 + 1));
    }
}
