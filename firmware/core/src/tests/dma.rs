//! TEST_DMA_INJECT through the secure vIOMMU (feature `dma-inject`), and the event queues.

extern crate std;

use tsm_abi::CallId::*;
use tsm_abi::event::{
    DmaInjectFlags, EventReason, GuestEvent, HOST_DOMAIN_EVENTS, HostEvent, NO_PASID,
};
use tsm_abi::status::{Status, StatusCode::*};
use tsm_hal::platform::PhysMem;
use zerocopy::{FromBytes, IntoBytes};

use super::devices::{PBDF, VBDF, device, tdis, world};
use super::{SHARED_GPA, s};

const T1: u64 = DmaInjectFlags::T_BIT.bits();
const W: u64 = DmaInjectFlags::WRITE.bits();

#[test]
fn t0_never_reaches_secure_memory_and_t1_needs_run() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let h = &w.h;
    let shared = h.granule(30);
    super::shared_tables(h, w.tvm);
    h.host(MAP_SHARED, &[w.tvm.0, SHARED_GPA + 0x2000, shared.0, 3])
        .unwrap();
    let rid = u64::from(PBDF);
    // UNLOCKED: T=0 to shared memory works, to private memory faults, T=1 faults.
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, SHARED_GPA + 0x2010, W]),
        Ok([shared.0 + 0x10, 0, 0, 0])
    );
    let t0 = s(DmaFault, EventReason::T0ToSecure.raw() as u8);
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1000, 0]),
        Err(t0)
    );
    let t1 = s(DmaFault, EventReason::T1NotAllowed.raw() as u8);
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1000, T1]),
        Err(t1)
    );
    h.check();
    // RUN and accepted: T=1 reaches private memory; T=0 still does not.
    w.bind(&mut dev).unwrap();
    let info = w.info();
    w.accept(&mut dev, &tsm_abi::guest::AcceptEvidence::from_info(&info))
        .unwrap();
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1008, T1 | W]),
        Ok([w.page.0 + 8, 0, 0, 0])
    );
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, 0x1008, W]),
        Err(t0)
    );
    // A host device aiming at a secure granule by PA faults too.
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[0x0300, NO_PASID, w.page.0, 0]),
        Err(t0)
    );
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[0x0300, NO_PASID, shared.0, 0]),
        Ok([shared.0, 0, 0, 0])
    );
    // After UNMAP the translation is gone (IOTLB invalidated).
    h.host(UNMAP, &[w.tvm.0, SHARED_GPA + 0x2000]).unwrap();
    let s2 = s(DmaFault, EventReason::Stage2Translation.raw() as u8);
    assert_eq!(
        h.host(TEST_DMA_INJECT, &[rid, NO_PASID, SHARED_GPA + 0x2010, W]),
        Err(s2)
    );
    h.refused(
        TEST_DMA_INJECT,
        &[1 << 16, NO_PASID, 0, 0],
        s(InvalidArgument, 1),
    );
    h.refused(
        TEST_DMA_INJECT,
        &[rid, 1 << 20, 0, 0],
        s(InvalidArgument, 2),
    );
    h.refused(
        TEST_DMA_INJECT,
        &[rid, NO_PASID, 0, 4],
        s(InvalidArgument, 4),
    );
    // Events: the guest pops full records, the host sanitized ones.
    let g = w.guest(G_EVENT_READ, &[u64::from(VBDF), 0x1000]).unwrap();
    assert_eq!(g[0], 3, "three more pending");
    let mut b = [0u8; 64];
    h.sim.read(w.page, &mut b).unwrap();
    let ev = GuestEvent::read_from_bytes(&b).unwrap();
    assert_eq!(
        (ev.vbdf, ev.reason, ev.iova, ev.sequence),
        (VBDF, EventReason::T0ToSecure.raw(), 0x1000, 1)
    );
    let r = h.host(EVENT_READ, &[w.vdev.0, w.comm.0]).unwrap();
    assert_eq!(r[0], 3);
    let mut hb = [0u8; 32];
    h.sim.host_read(w.comm, &mut hb).unwrap();
    let he = HostEvent::read_from_bytes(&hb).unwrap();
    assert_eq!(
        (he.vdev, he.reason, he.rid, he.sequence),
        (w.vdev.0, EventReason::T0ToSecure.raw(), PBDF, 1)
    );
    assert_eq!(hb.as_bytes().len(), 32);
    let r = h.host(EVENT_READ, &[HOST_DOMAIN_EVENTS, w.comm.0]).unwrap();
    assert_eq!(r[0], 0);
    h.refused(
        EVENT_READ,
        &[HOST_DOMAIN_EVENTS, w.comm.0],
        Status::new(Empty),
    );
    h.check();
}
