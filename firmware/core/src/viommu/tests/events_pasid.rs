//! The event queue and the PASID table: bounds, overflow accounting, layouts.

use zerocopy::{FromBytes, IntoBytes};

use super::*;

fn fault(i: u64, reason: FaultReason) -> Fault {
    Fault {
        vdev: Some(VDEV),
        reason,
        level: if i.is_multiple_of(2) {
            Some((i % 4) as u8)
        } else {
            None
        },
        iova: Iova(0x1000 * i + 0x12),
        gpa: if i.is_multiple_of(4) {
            None
        } else {
            Some(Gpa(0x4000_0000 + 8 * i))
        },
        pasid: if i.is_multiple_of(3) {
            Some(i as u32)
        } else {
            None
        },
        access: if i.is_multiple_of(2) {
            Access::Read
        } else {
            Access::Write
        },
        t_bit: i.is_multiple_of(5),
    }
}

#[test]
fn faults_come_out_in_order_with_every_field() {
    let mut q = EventQueue::new();
    for i in 0..10 {
        q.push(&fault(i, FaultReason::ALL[i as usize % FaultReason::COUNT]));
    }
    assert_eq!(q.pending(), 10);
    for i in 0..10 {
        let f = fault(i, FaultReason::ALL[i as usize % FaultReason::COUNT]);
        assert_eq!(
            q.pop(),
            Some(GuestFault {
                iova: f.iova,
                pasid: f.pasid,
                access: f.access,
                t_bit: f.t_bit,
                reason: f.reason,
                level: f.level,
                gpa: f.gpa,
            })
        );
    }
    assert_eq!(q.pop(), None);
}

#[test]
fn host_domain_records_keep_their_requester_through_overflow_and_wrap() {
    let mut q = HostDomainQueue::new();
    let who = |i: u64| Requester {
        segment: (i % 3) as u16,
        rid: 0x100 + i as u16,
    };
    let host_fault = |i| Fault {
        vdev: None,
        ..fault(i, FaultReason::HostDomain)
    };
    // Fill, overflow (dropped records keep no requester), drain half, refill past the ring's end.
    let n = EVENT_QUEUE_CAPACITY as u64;
    for i in 0..n + 5 {
        q.push(who(i), &host_fault(i));
    }
    let host = |i| {
        let f = host_fault(i);
        HostFault {
            reason: f.reason,
            access: f.access,
            t_bit: f.t_bit,
        }
    };
    for i in 0..n / 2 {
        assert_eq!(q.pop(), Some((host(i), who(i))));
    }
    for i in 100..100 + n / 2 {
        q.push(who(i), &host_fault(i));
    }
    let expected = (n / 2..n).chain(100..100 + n / 2);
    for i in expected {
        assert_eq!(q.pop(), Some((host(i), who(i))));
    }
    assert_eq!(q.pop(), None);
    let s = q.host_summary();
    assert_eq!(
        (u64::from(s.total), s.overflow, s.pending),
        (n + 5 + n / 2, 5, 0)
    );
}

#[test]
fn overflow_is_counted_never_silent_and_the_ring_wraps() {
    let mut q = EventQueue::new();
    let n = EVENT_QUEUE_CAPACITY as u64 + 7;
    for i in 0..n {
        q.push(&fault(i, FaultReason::T0ToSecure));
    }
    let h = q.host_summary();
    assert_eq!(
        (h.pending, h.overflow, h.total),
        (EVENT_QUEUE_CAPACITY as u32, 7, n as u32)
    );
    assert_eq!(h.per_reason[FaultReason::T0ToSecure as usize - 1], n as u32);
    // The oldest are kept; after draining half, new ones wrap around the ring.
    for i in 0..16 {
        assert_eq!(
            q.pop().unwrap().iova,
            fault(i, FaultReason::T0ToSecure).iova
        );
    }
    for i in 100..116 {
        q.push(&fault(i, FaultReason::S2Translation));
    }
    assert_eq!(q.pending(), EVENT_QUEUE_CAPACITY as u32);
    assert_eq!(q.overflow(), 7);
    let mut got = std::vec::Vec::new();
    while let Some(f) = q.pop() {
        got.push(f.iova.0);
    }
    let want: std::vec::Vec<u64> = (16..EVENT_QUEUE_CAPACITY as u64)
        .chain(100..116)
        .map(|i| fault(i, FaultReason::T0ToSecure).iova.0)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_corrupted_queue_never_panics_and_counts_what_it_drops() {
    let mut q = EventQueue::new();
    q.push(&fault(1, FaultReason::S1Reserved));
    let mut bytes = std::vec::Vec::from(q.as_bytes());
    // head and len far out of range, a record with an unknown reason.
    bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut q = EventQueue::read_from_bytes(&bytes).unwrap();
    let mut popped = 0;
    while q.pop().is_some() {
        popped += 1;
    }
    assert!(popped <= 1);
    assert!(q.overflow() >= EVENT_QUEUE_CAPACITY as u32 - 1);
    q.push(&fault(2, FaultReason::S2Permission));
    assert_eq!(q.pop().map(|f| f.reason), Some(FaultReason::S2Permission));
}

/// The host's queue keeps what its sanitized record says, in order, counted like the guest's.
#[test]
fn host_queue_keeps_reason_access_and_t_bit_only() {
    let mut q = HostEventQueue::new();
    let n = EVENT_QUEUE_CAPACITY as u64 + 3;
    for i in 0..n {
        q.push(&fault(i, FaultReason::ALL[i as usize % FaultReason::COUNT]));
    }
    assert_eq!(
        (q.pending(), q.overflow()),
        (EVENT_QUEUE_CAPACITY as u32, 3)
    );
    for i in 0..EVENT_QUEUE_CAPACITY as u64 {
        let f = fault(i, FaultReason::ALL[i as usize % FaultReason::COUNT]);
        let want = HostFault {
            reason: f.reason,
            access: f.access,
            t_bit: f.t_bit,
        };
        assert_eq!(q.pop(), Some(want));
    }
    assert_eq!(q.pop(), None);
    assert_eq!(q.host_summary().total, n as u32);
}

/// A host record with a flag the TSM never sets, or an unknown reason, is dropped and counted.
#[test]
fn a_corrupted_host_record_is_dropped_and_counted() {
    let mut q = HostEventQueue::new();
    q.push(&fault(1, FaultReason::S2Permission));
    q.push(&fault(2, FaultReason::S2Permission));
    q.push(&fault(3, FaultReason::T0ToSecure));
    let mut bytes = std::vec::Vec::from(q.as_bytes());
    let records = core::mem::size_of::<HostEventQueue>() - 2 * EVENT_QUEUE_CAPACITY;
    bytes[records + 1] = 0x80;
    bytes[records + 2] = 0;
    let mut q = HostEventQueue::read_from_bytes(&bytes).unwrap();
    assert_eq!(q.pop().map(|f| f.reason), Some(FaultReason::T0ToSecure));
    assert_eq!(q.overflow(), 2);
}

#[test]
fn host_summary_holds_counts_only() {
    let mut q = EventQueue::new();
    q.push(&fault(3, FaultReason::T1NotAllowed));
    let h = q.host_summary();
    // The summary type has no address, PASID or level field; its values are the counts.
    assert_eq!(
        h,
        HostFaultSummary {
            pending: 1,
            overflow: 0,
            total: 1,
            per_reason: {
                let mut c = [0; FaultReason::COUNT];
                c[FaultReason::T1NotAllowed as usize - 1] = 1;
                c
            }
        }
    );
}

#[test]
fn layouts_are_fixed_for_embedding() {
    assert_eq!(core::mem::size_of::<EventRecord>(), 24);
    assert_eq!(
        core::mem::size_of::<EventQueue>(),
        (16 + 4 * FaultReason::COUNT).next_multiple_of(8) + 24 * EVENT_QUEUE_CAPACITY
    );
    assert_eq!(core::mem::size_of::<HostRecord>(), 2);
    assert_eq!(
        core::mem::size_of::<HostEventQueue>(),
        (16 + 4 * FaultReason::COUNT).next_multiple_of(8) + 2 * EVENT_QUEUE_CAPACITY
    );
    assert_eq!(
        core::mem::size_of::<PasidTable>(),
        16 * (PASID_CAPACITY + 1)
    );
    for (i, r) in FaultReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i + 1);
        assert_eq!(FaultReason::from_raw(*r as u8), Some(*r));
    }
    assert_eq!(FaultReason::from_raw(0), None);
}

#[test]
fn pasid_table_bounds_and_errors() {
    let mut t = PasidTable::new();
    assert_eq!(t.lookup(None), Stage1Root::Bypass);
    assert_eq!(t.lookup(Some(1)), Stage1Root::NotConfigured);
    assert_eq!(t.attach(None, Gpa(0x1001), 48), Err(PasidError::Misaligned));
    assert_eq!(
        t.attach(Some(PASID_MAX + 1), Gpa(0x1000), 48),
        Err(PasidError::PasidOutOfRange)
    );
    t.attach(None, Gpa(0x1000), 48).unwrap();
    assert_eq!(
        t.lookup(None),
        Stage1Root::Root {
            table: Gpa(0x1000),
            ia_bits: 48
        }
    );
    for p in 0..PASID_CAPACITY as u32 {
        t.attach(Some(p * 7), Gpa(0x2000 + u64::from(p) * 0x1000), 39)
            .unwrap();
    }
    assert_eq!(t.len(), PASID_CAPACITY);
    assert_eq!(
        t.attach(Some(PASID_MAX), Gpa(0x1000), 48),
        Err(PasidError::Full)
    );
    // Replacing an attached PASID needs no free slot.
    t.attach(Some(7), Gpa(0x9000), 25).unwrap();
    // With its own input size, kept beside the root.
    assert_eq!(
        t.lookup(Some(7)),
        Stage1Root::Root {
            table: Gpa(0x9000),
            ia_bits: 25
        }
    );
    assert_eq!(
        t.lookup(Some(14)),
        Stage1Root::Root {
            table: Gpa(0x4000),
            ia_bits: 39
        }
    );
    assert_eq!(t.detach(Some(7)), Ok(Gpa(0x9000)));
    assert_eq!(t.detach(Some(7)), Err(PasidError::NotAttached));
    assert_eq!(t.lookup(Some(7)), Stage1Root::NotConfigured);
    t.attach(Some(PASID_MAX), Gpa(0x1000), 48).unwrap();
    assert_eq!(t.detach(None), Ok(Gpa(0x1000)));
    assert_eq!(t.detach(None), Err(PasidError::NotAttached));
    assert_eq!(t.lookup(None), Stage1Root::Bypass);
    // Arbitrary bytes are a valid table: lookups never panic.
    let junk = [0xA5u8; core::mem::size_of::<PasidTable>()];
    let t = PasidTable::read_from_bytes(&junk).unwrap();
    assert_eq!(t.lookup(Some(0xA5A5_A5A5)), Stage1Root::NotConfigured);
    assert_eq!(
        t.lookup(None),
        Stage1Root::Root {
            table: Gpa(0xA5A5_A5A5_A5A5_A5A5),
            ia_bits: 0xA5
        }
    );
}
