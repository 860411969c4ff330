//! TEST_DMA_INJECT through the secure vIOMMU (feature `dma-inject`), and the event queues.

extern crate std;

use tsm_abi::CallId::*;
use tsm_abi::addr::Pa;
use tsm_abi::event::{
    DmaInjectFlags, EventFlags, EventReason, GuestEvent, HOST_DOMAIN_EVENTS, HostEvent, NO_PASID,
};
use tsm_abi::status::{Status, StatusCode::*};
use tsm_abi::viommu::ViommuType;
use tsm_platform::PhysMem;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::devices::{PBDF, VBDF, device, tdis, vdev_params, world};
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
        h.host(TEST_DMA_INJECT, &[0x0300, NO_PASID, shared.0 + 0x18, 0]),
        Ok([shared.0 + 0x18, 0, 0, 0])
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

/// Arm stage-1 descriptors: a table, and a read/write page for unprivileged (DMA) access.
fn arm_table(next: u64) -> u64 {
    next | 0b11
}

fn arm_page(oa: u64) -> u64 {
    oa | 0b11 | 1 << 10 | 1 << 6
}

#[test]
fn the_stage1_input_size_of_the_attach_is_the_one_the_walk_uses() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let h = &w.h;
    // Stage-1 tables in private pages at GPA 0x2000.. (the guest writes them), the data page
    // 1 MiB into the shared half (T=0 reaches it before any bind).
    let table = |i: u64| {
        let pa = h.delegate(60 + i);
        h.host(MAP_PRIVATE, &[w.tvm.0, 0x2000 * (i + 1), pa.0, u64::MAX, 3])
            .unwrap();
        pa
    };
    let put = |pa: Pa, index: u64, desc: u64| {
        h.sim
            .write(Pa(pa.0 + 8 * index), &desc.to_le_bytes())
            .unwrap();
    };
    let [l1, l2, l3, l0] = [table(0), table(1), table(2), table(3)];
    let [gl1, gl2, gl3, gl0] = [0x2000u64, 0x4000, 0x6000, 0x8000];
    let shared = h.granule(70);
    let data = SHARED_GPA + 0x10_0000;
    super::shared_tables(h, w.tvm);
    h.host(MAP_SHARED, &[w.tvm.0, data, shared.0, 3]).unwrap();
    // IOVA (i << 30) | 7 << 21 | 9 << 12 → the shared page, for level-1 index 3 and 5.
    put(l1, 3, arm_table(gl2));
    put(l1, 5, arm_table(gl2));
    put(l2, 7, arm_table(gl3));
    put(l3, 9, arm_page(data));
    put(l0, 0, arm_table(gl1));
    let iova = |i: u64| i << 30 | 7 << 21 | 9 << 12 | 0x10;
    let rid = u64::from(PBDF);
    let v = u64::from(VBDF);
    let dma = |iova| h.host(TEST_DMA_INJECT, &[rid, NO_PASID, iova, 0]);
    let ok = Ok([shared.0 + 0x10, 0, 0, 0]);
    let too_big = Err(s(DmaFault, EventReason::AddressSize.raw() as u8));
    // 39 bits: the root is a level-1 table.
    w.guest(G_S1_ATTACH, &[v, NO_PASID, gl1, 39]).unwrap();
    assert_eq!(dma(iova(5)), ok);
    assert_eq!(dma(iova(3)), ok);
    assert_eq!(dma(1 << 39), too_big);
    // 32 bits, same root: level 1 resolves two bits; the cached 39-bit walk of index 5 went
    // with the attach.
    w.guest(G_S1_ATTACH, &[v, NO_PASID, gl1, 32]).unwrap();
    assert_eq!(dma(iova(3)), ok);
    for bad in [iova(5), 1 << 40, 1 << 32] {
        assert_eq!(dma(bad), too_big, "{bad:#x}");
    }
    // 25 bits: the root is a level-2 table.
    w.guest(G_S1_ATTACH, &[v, NO_PASID, gl2, 25]).unwrap();
    assert_eq!(dma(iova(0)), ok);
    assert_eq!(dma(1 << 25), too_big);
    // 0 is 48 bits: a level-0 root.
    w.guest(G_S1_ATTACH, &[v, NO_PASID, gl0, 0]).unwrap();
    assert_eq!(dma(iova(5)), ok);
    assert_eq!(dma(1 << 48), too_big);
    h.check();
}

#[test]
fn every_input_size_the_format_lacks_is_refused_and_changes_nothing() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let h = &w.h;
    // A second vdevice, under a VT-d vIOMMU (x86-64 stage 1), vBDF 9.
    let vtd = h.delegate(51);
    h.host(
        VIOMMU_CREATE,
        &[w.tvm.0, vtd.0, u64::from(ViommuType::TsmVtd.raw()), 0],
    )
    .unwrap();
    let p = h.host_put(24, vdev_params(PBDF + 1, 9).as_bytes());
    h.host(VDEV_CREATE, &[h.delegate(52).0, w.pdev.0, vtd.0, p.0])
        .unwrap();
    for (vbdf, sizes) in [(u64::from(VBDF), 25..=48u64), (9, 48..=48)] {
        for raw in (0..=0x1FFu64).chain([1 << 8 | 39, 1 << 63 | 48, u64::MAX]) {
            let args = [vbdf, NO_PASID, 0x2000, raw];
            if raw == 0 || sizes.contains(&raw) {
                w.guest(G_S1_ATTACH, &args).unwrap();
            } else {
                h.guest_refused(w.vcpu, G_S1_ATTACH, &args, s(InvalidArgument, 4));
            }
        }
    }
}

#[test]
fn the_guest_event_says_where_translation_stopped_and_the_host_event_does_not() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let w = world(&mut dev);
    let h = &w.h;
    let rid = u64::from(PBDF);
    let v = u64::from(VBDF);
    let dma = |iova| h.host(TEST_DMA_INJECT, &[rid, NO_PASID, iova, 0]);
    let s2 = Err(s(DmaFault, EventReason::Stage2Translation.raw() as u8));
    let s1 = Err(s(DmaFault, EventReason::Stage1Translation.raw() as u8));
    let next_event = || {
        w.guest(G_EVENT_READ, &[v, 0x1000]).unwrap();
        let mut b = [0u8; 64];
        h.sim.read(w.page, &mut b).unwrap();
        let e = GuestEvent::read_from_bytes(&b).unwrap();
        (e.reason, EventFlags::from_bits(e.flags).unwrap(), e.gpa)
    };
    let reason = |r: EventReason| r.raw();
    // No stage 1 yet: the IOVA is the GPA stage 2 did not map.
    assert_eq!(dma(0x18_0123), s2);
    assert_eq!(
        next_event(),
        (
            reason(EventReason::Stage2Translation),
            EventFlags::GPA_VALID,
            0x18_0123
        )
    );
    // A 39-bit Arm root (level 1) at GPA 0x2000: index 1 leads to a level-2 table at an
    // unmapped GPA, index 2 through mapped tables to an unmapped output GPA, index 3 is invalid.
    let table = |gpa: u64, granule: u64| {
        let pa = h.delegate(granule);
        h.host(MAP_PRIVATE, &[w.tvm.0, gpa, pa.0, u64::MAX, 3])
            .unwrap();
        pa
    };
    let put = |pa: Pa, index: u64, desc: u64| {
        h.sim
            .write(Pa(pa.0 + 8 * index), &desc.to_le_bytes())
            .unwrap();
    };
    let [l1, l2, l3] = [table(0x2000, 60), table(0x3000, 61), table(0x4000, 62)];
    put(l1, 1, arm_table(0x15_0000));
    put(l1, 2, arm_table(0x3000));
    put(l2, 0, arm_table(0x4000));
    put(l3, 4, arm_page(0x16_0000));
    w.guest(G_S1_ATTACH, &[v, NO_PASID, 0x2000, 39]).unwrap();
    // The level-2 table read: its descriptor's GPA, with S1_WALK.
    assert_eq!(dma(1 << 30 | 5 << 21), s2);
    assert_eq!(
        next_event(),
        (
            reason(EventReason::Stage2Translation),
            EventFlags::GPA_VALID | EventFlags::S1_WALK,
            0x15_0000 + 8 * 5
        )
    );
    // The stage-1 output: GPA 0x16_0000 with the IOVA's offset.
    assert_eq!(dma(2 << 30 | 4 << 12 | 0x88), s2);
    assert_eq!(
        next_event(),
        (
            reason(EventReason::Stage2Translation),
            EventFlags::GPA_VALID,
            0x16_0088
        )
    );
    // Stage 1 stopped before stage 2 saw an address: no GPA.
    assert_eq!(dma(3 << 30), s1);
    assert_eq!(
        next_event(),
        (
            reason(EventReason::Stage1Translation),
            EventFlags::empty(),
            0
        )
    );
    // The host's records of the same faults carry neither the GPA nor its flag: every byte
    // is the vdevice, reason, RID or sequence.
    let reasons = [
        EventReason::Stage2Translation,
        EventReason::Stage2Translation,
        EventReason::Stage2Translation,
        EventReason::Stage1Translation,
    ];
    for (seq, r) in (1..).zip(reasons) {
        h.host(EVENT_READ, &[w.vdev.0, w.comm.0]).unwrap();
        let mut hb = [0u8; 32];
        h.sim.host_read(w.comm, &mut hb).unwrap();
        let want = HostEvent {
            vdev: w.vdev.0,
            reason: r.raw(),
            rid: PBDF,
            sequence: seq,
            ..HostEvent::new_zeroed()
        };
        assert_eq!(HostEvent::read_from_bytes(&hb).unwrap(), want);
    }
    h.check();
}
