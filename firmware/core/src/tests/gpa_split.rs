//! Issue 11.4 / invariant 7: the private and shared halves of a TVM's GPA space (docs/abi.md
//! §5.2). A GPA the guest uses as private never resolves to host memory, for the vCPU, the
//! vIOMMU or the TSM's own writes to the guest, whatever the host unmaps and maps.

extern crate std;

use tsm_abi::CallId::*;
use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::event::{DmaInjectFlags, EventReason, NO_PASID};
use tsm_abi::guest::AcceptEvidence;
use tsm_abi::params::NO_SOURCE;
use tsm_abi::status::StatusCode::*;

use super::devices::{PBDF, VBDF, device, tdis, world};
use super::{FORMATS, SHARED_GPA, build_tvm, harness, s, shared_tables};
use tsm_platform::PhysMem;

use crate::addrmap::MapKind;

#[test]
fn each_kind_of_page_maps_only_in_its_own_half() {
    for f in FORMATS {
        let h = harness(f);
        let t = build_tvm(&h, 10);
        shared_tables(&h, t.tvm);
        let ns = h.granule(30);
        let page = h.delegate(31);
        // Regression: the old code mapped a host page at a private GPA and a secure page at a
        // shared one.
        h.refused(MAP_SHARED, &[t.tvm.0, 0x5000, ns.0, 3], s(OutOfRange, 2));
        h.refused(
            MAP_SHARED,
            &[t.tvm.0, SHARED_GPA - 0x1000, ns.0, 3],
            s(OutOfRange, 2),
        );
        h.refused(
            MAP_PRIVATE,
            &[t.tvm.0, SHARED_GPA, page.0, NO_SOURCE, 3],
            s(OutOfRange, 2),
        );
        h.refused(
            MAP_PRIVATE,
            &[t.tvm.0, SHARED_GPA + 0x5000, page.0, NO_SOURCE, 3],
            s(OutOfRange, 2),
        );
        // Past the GPA space altogether: still OutOfRange, as before.
        h.refused(
            MAP_SHARED,
            &[t.tvm.0, 2 * SHARED_GPA, ns.0, 3],
            s(OutOfRange, 2),
        );
        h.host(MAP_SHARED, &[t.tvm.0, SHARED_GPA, ns.0, 3]).unwrap();
        h.host(MAP_PRIVATE, &[t.tvm.0, 0x5000, page.0, NO_SOURCE, 3])
            .unwrap();
        assert_eq!(
            h.tsm.stage2_lookup(t.tvm, Gpa(SHARED_GPA)).unwrap().kind,
            MapKind::Shared
        );
        assert_eq!(
            h.tsm.stage2_lookup(t.tvm, Gpa(0x5000)).unwrap().kind,
            MapKind::Private
        );
        h.check();
    }
}

/// The review's attack: the host unmaps an accepted TVM's private page and maps a host page at
/// the same GPA. It is refused, so the vCPU, the device's T=1 writes and the TSM's writes to
/// the guest find nothing there (a fault), never host memory; only a private page can come
/// back there.
#[test]
fn the_host_cannot_turn_a_private_gpa_into_host_memory() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let h = &w.h;
    w.bind(&mut dev).unwrap();
    let info = w.info();
    w.accept(&mut dev, &AcceptEvidence::from_info(&info))
        .unwrap();
    let rid = u64::from(PBDF);
    let t1w = (DmaInjectFlags::T_BIT | DmaInjectFlags::WRITE).bits();
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1010, t1w]),
        Ok([w.page.0 + 0x10, 0, 0, 0])
    );
    // The guest's private page at 0x1000 is taken away (allowed: the host may take memory).
    assert_eq!(h.host(UNMAP, &[w.tvm.0, 0x1000]).unwrap()[0], w.page.0);
    let host_page = h.granule(30);
    h.refused(
        MAP_SHARED,
        &[w.tvm.0, 0x1000, host_page.0, 3],
        s(OutOfRange, 2),
    );
    assert!(h.tsm.stage2_lookup(w.tvm, Gpa(0x1000)).is_err());
    // The device's T=1 write faults at stage 2; it lands nowhere.
    let s2 = s(DmaFault, EventReason::Stage2Translation.raw() as u8);
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1010, t1w]),
        Err(s2)
    );
    // The TSM writes nothing for the guest there (G_VDEV_INFO carries the accept nonce).
    assert_eq!(
        w.guest(G_VDEV_INFO, &[u64::from(VBDF), 0x1000])
            .map_err(|e| e.0),
        Err(s(InvalidBuffer, 2))
    );
    // Only a private page can be mapped there again: zero-filled, the TVM's own.
    let fresh = h.delegate(31);
    h.host(MAP_PRIVATE, &[w.tvm.0, 0x1000, fresh.0, NO_SOURCE, 3])
        .unwrap();
    let mut b = [0xFFu8; 16];
    h.sim.read(Pa(fresh.0), &mut b).unwrap();
    assert_eq!(b, [0; 16]);
    h.check();
}

#[test]
fn the_guest_learns_its_split_from_the_tsm() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    assert_eq!(w.guest(G_TVM_INFO, &[]), Ok([40, SHARED_GPA, 0, 0]));
    assert_eq!(
        w.guest(G_TVM_INFO, &[1]).map_err(|e| e.0),
        Err(s(InvalidArgument, 1))
    );
    w.h.refused(G_TVM_INFO, &[], tsm_abi::status::Status::new(Denied));
}
