//! A requester is its PCI segment and its requester ID (issue 11): two PDEVs with the same RID
//! range on different segments are different devices, and the DMA of each resolves through
//! its own vdevice, its own TVM's vIOMMU and its own event queues, never the other's.
//!
//! Every test runs with the two tenants' segments both ways round, tenant A's PDEV registered
//! first, so that a lookup that matched the RID alone would find A's PDEV for B's requests.

extern crate std;

use std::vec::Vec;

use tsm_abi::CallId::{self, *};
use tsm_abi::addr::Pa;
use tsm_abi::event::{
    DmaInjectFlags, EventReason, GuestEvent, HOST_DOMAIN_EVENTS, HostEvent, NO_PASID,
};
use tsm_abi::guest::{AcceptEvidence, VdevInfo};
use tsm_abi::params::{NO_SOURCE, PdevParams};
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode::*};
use tsm_abi::viommu::ViommuType;
use tsm_device_model::Device;
use tsm_platform::{AddressMapFormat, PhysMem};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::devices::{PBDF, VBDF, device, drive, pdev_params, tdis, vdev_params};
use super::{build_tvm, harness, s};
use crate::Origin;
use crate::testing::Harness;

const T1: u64 = DmaInjectFlags::T_BIT.bits();
const W: u64 = DmaInjectFlags::WRITE.bits();
/// Private page of every tenant (also its guest's buffers).
const PRIVATE_GPA: u64 = 0x1000;
/// Shared page of every tenant: the first of the shared half.
const SHARED_GPA: u64 = super::SHARED_GPA;

fn fault(r: EventReason) -> Status {
    s(DmaFault, r.raw() as u8)
}

/// A TVM with a private and a shared page, a vCPU, and a vdevice (vBDF [`VBDF`]) of its own
/// PDEV on `segment`: RIDs 0x100..0x108, connected to a device model of its own.
struct Tenant {
    segment: u16,
    pbdf: u16,
    vdev: Pa,
    vcpu: Pa,
    comm: Pa,
    page: Pa,
    shared: Pa,
}

/// Builds a tenant in granules `first..first + 18`.
fn tenant(h: &Harness, dev: &mut Device<'_>, first: u64, segment: u16, pbdf: u16) -> Tenant {
    let t = build_tvm(h, first);
    let pp = h.host_put(
        first + 6,
        PdevParams {
            segment,
            ..pdev_params()
        }
        .as_bytes(),
    );
    let pdev = h.delegate(first + 7);
    h.host(PDEV_CREATE, &[pdev.0, pp.0]).unwrap();
    let comm = h.granule(first + 8);
    let r = h.host(PDEV_CONNECT, &[pdev.0, comm.0]);
    drive(h, dev, comm, pdev, r).unwrap();
    let viommu = h.delegate(first + 9);
    let ty = u64::from(ViommuType::TsmSmmuv3.raw());
    h.host(VIOMMU_CREATE, &[t.tvm.0, viommu.0, ty, 0]).unwrap();
    let vp = h.host_put(first + 10, vdev_params(pbdf, VBDF).as_bytes());
    let vdev = h.delegate(first + 11);
    h.host(VDEV_CREATE, &[vdev.0, pdev.0, viommu.0, vp.0])
        .unwrap();
    let vcpu = h.delegate(first + 12);
    h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, PRIVATE_GPA, 0])
        .unwrap();
    let page = h.delegate(first + 13);
    h.host(MAP_PRIVATE, &[t.tvm.0, PRIVATE_GPA, page.0, NO_SOURCE, 3])
        .unwrap();
    for (i, level) in (1..=3u64).enumerate() {
        let table = h.delegate(first + 15 + i as u64);
        h.host(TABLE_CREATE, &[t.tvm.0, SHARED_GPA, level, table.0])
            .unwrap();
    }
    let shared = h.granule(first + 14);
    h.host(MAP_SHARED, &[t.tvm.0, SHARED_GPA, shared.0, 3])
        .unwrap();
    Tenant {
        segment,
        pbdf,
        vdev,
        vcpu,
        comm,
        page,
        shared,
    }
}

impl Tenant {
    fn guest(&self, h: &Harness, call: CallId, args: &[u64]) -> Result<[u64; 4], Status> {
        h.call_as(Origin::Guest { vcpu: self.vcpu }, call, args)
            .map_err(|e| e.0)
    }

    /// A DMA request of this tenant's device.
    fn dma(&self, h: &Harness, iova: u64, flags: u64) -> Result<[u64; 4], Status> {
        inject(h, self.segment, self.pbdf, iova, flags)
    }

    /// Bind, the guest accepts, the host carries START: the vdevice is RUN.
    fn run(&self, h: &Harness, dev: &mut Device<'_>) {
        let r = h.host(VDEV_BIND, &[self.vdev.0, self.comm.0]);
        drive(h, dev, self.comm, self.vdev, r).unwrap();
        self.guest(h, G_VDEV_INFO, &[u64::from(VBDF), PRIVATE_GPA])
            .unwrap();
        let mut info = VdevInfo::new_zeroed();
        h.sim.read(self.page, info.as_mut_bytes()).unwrap();
        let ev = AcceptEvidence::from_info(&info);
        h.sim.write(Pa(self.page.0 + 0x800), ev.as_bytes()).unwrap();
        let r = self.guest(h, G_VDEV_ACCEPT, &[u64::from(VBDF), PRIVATE_GPA + 0x800]);
        assert_eq!(r.map_err(|s| s.code), Err(NeedsDeviceIo));
        let r = h.host(COMMUNICATE, &[self.vdev.0, self.comm.0]);
        drive(h, dev, self.comm, self.vdev, r).unwrap();
        let state = h.host(VDEV_GET_STATE, &[self.vdev.0]).unwrap()[0];
        assert_eq!(state, u64::from(VdevState::Run.raw()));
    }

    /// Pops every record of the guest queue: (reason, IOVA) of each.
    fn guest_events(&self, h: &Harness) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while self
            .guest(h, G_EVENT_READ, &[u64::from(VBDF), PRIVATE_GPA])
            .is_ok()
        {
            let mut b = [0u8; 64];
            h.sim.read(self.page, &mut b).unwrap();
            let ev = GuestEvent::read_from_bytes(&b).unwrap();
            assert_eq!(ev.vbdf, VBDF);
            out.push((ev.reason, ev.iova));
        }
        out
    }
}

/// TEST_DMA_INJECT of requester (`segment`, `rid`), without PASID.
fn inject(h: &Harness, segment: u16, rid: u16, iova: u64, flags: u64) -> Result<[u64; 4], Status> {
    h.host(
        TEST_DMA_INJECT,
        &[u64::from(rid), NO_PASID, iova, flags, u64::from(segment)],
    )
}

/// Pops every record of a host queue (`queue` a vdevice or [`HOST_DOMAIN_EVENTS`]), into the
/// NS granule `buf`.
fn host_events(h: &Harness, queue: u64, buf: Pa) -> Vec<HostEvent> {
    let mut out = Vec::new();
    while h.host(EVENT_READ, &[queue, buf.0]).is_ok() {
        let mut b = [0u8; 32];
        h.sim.host_read(buf, &mut b).unwrap();
        out.push(HostEvent::read_from_bytes(&b).unwrap());
    }
    out
}

/// Both ways round: (segment of tenant A, segment of tenant B).
const SEGMENT_PAIRS: [(u16, u16); 2] = [(0, 1), (1, 0)];

/// Granules of the two tenants, and a host buffer for event records.
const FIRST_A: u64 = 40;
const FIRST_B: u64 = 70;
const EVENT_BUF: u64 = 100;

#[test]
fn dma_of_a_vdevice_resolves_through_its_own_segment() {
    let tdis: &'static _ = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (seg_a, seg_b) in SEGMENT_PAIRS {
        let h = harness(AddressMapFormat::ArmStage2);
        let (mut dev_a, mut dev_b) = (device(tdis), device(tdis));
        let a = tenant(&h, &mut dev_a, FIRST_A, seg_a, PBDF);
        let b = tenant(&h, &mut dev_b, FIRST_B, seg_b, PBDF);
        a.run(&h, &mut dev_a);
        // B's UNLOCKED device: T=0 goes through B's vIOMMU, to B's shared page.
        assert_eq!(
            b.dma(&h, SHARED_GPA + 0x10, W),
            Ok([b.shared.0 + 0x10, 0, 0, 0]),
            "segments {seg_a}/{seg_b}"
        );
        // B's T=1 writes never reach A's private memory: B is not RUN.
        assert_eq!(
            b.dma(&h, PRIVATE_GPA + 8, T1 | W),
            Err(fault(EventReason::T1NotAllowed)),
            "segments {seg_a}/{seg_b}"
        );
        assert_eq!(
            a.dma(&h, PRIVATE_GPA + 8, T1 | W),
            Ok([a.page.0 + 8, 0, 0, 0])
        );
        // The fault is B's alone.
        assert_eq!(
            b.guest_events(&h),
            [(EventReason::T1NotAllowed.raw(), PRIVATE_GPA + 8)]
        );
        assert_eq!(a.guest_events(&h), []);
        let buf = h.granule(EVENT_BUF);
        assert_eq!(host_events(&h, a.vdev.0, buf).len(), 0);
        assert_eq!(host_events(&h, HOST_DOMAIN_EVENTS, buf).len(), 0);
        // Once B runs, its T=1 writes reach its own private page.
        b.run(&h, &mut dev_b);
        assert_eq!(
            b.dma(&h, PRIVATE_GPA + 8, T1 | W),
            Ok([b.page.0 + 8, 0, 0, 0])
        );
        h.check();
    }
}

#[test]
fn a_vdevice_on_another_segment_is_never_taken_for_a_host_device() {
    let tdis: &'static _ = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (seg_a, seg_b) in SEGMENT_PAIRS {
        let h = harness(AddressMapFormat::ArmStage2);
        let (mut dev_a, mut dev_b) = (device(tdis), device(tdis));
        // A's PDEV has no vdevice at B's pBDF.
        let a = tenant(&h, &mut dev_a, FIRST_A, seg_a, PBDF);
        let b = tenant(&h, &mut dev_b, FIRST_B, seg_b, PBDF + 1);
        // A host device would reach B's shared page by its PA (identity); B's UNLOCKED device
        // goes through B's vIOMMU, where that PA is no GPA the TVM maps.
        assert_eq!(
            b.dma(&h, b.shared.0, 0),
            Err(fault(EventReason::Stage2Translation)),
            "segments {seg_a}/{seg_b}"
        );
        assert_eq!(
            b.guest_events(&h),
            [(EventReason::Stage2Translation.raw(), b.shared.0)]
        );
        let buf = h.granule(EVENT_BUF);
        assert_eq!(host_events(&h, HOST_DOMAIN_EVENTS, buf).len(), 0);
        assert_eq!(a.guest_events(&h), []);
        h.check();
    }
}

#[test]
fn a_requester_on_a_segment_without_a_pdev_is_a_host_device() {
    let tdis: &'static _ = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (seg_a, other) in [(1, 0), (0, 1), (0, 0xFFFF)] {
        let h = harness(AddressMapFormat::ArmStage2);
        let mut dev = device(tdis);
        let a = tenant(&h, &mut dev, FIRST_A, seg_a, PBDF);
        a.run(&h, &mut dev);
        // The host domain: identity to host memory, never secure memory, never T=1.
        assert_eq!(
            inject(&h, other, PBDF, a.shared.0 + 0x10, W),
            Ok([a.shared.0 + 0x10, 0, 0, 0]),
            "segments {seg_a}/{other}"
        );
        assert_eq!(
            inject(&h, other, PBDF, a.page.0, W),
            Err(fault(EventReason::T0ToSecure))
        );
        assert_eq!(
            inject(&h, other, PBDF, a.page.0, T1 | W),
            Err(fault(EventReason::T1NotAllowed))
        );
        // Its faults are the host domain's, not the vdevice's at the same RID.
        assert_eq!(a.guest_events(&h), []);
        let buf = h.granule(EVENT_BUF);
        assert_eq!(host_events(&h, a.vdev.0, buf).len(), 0);
        assert_eq!(host_events(&h, HOST_DOMAIN_EVENTS, buf).len(), 2);
        h.check();
    }
}

#[test]
fn host_event_records_name_the_requesters_segment() {
    let tdis: &'static _ = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let mut dev = device(tdis);
    let a = tenant(&h, &mut dev, FIRST_A, 0x2A, PBDF);
    assert_eq!(
        a.dma(&h, PRIVATE_GPA, T1),
        Err(fault(EventReason::T1NotAllowed))
    );
    assert_eq!(
        inject(&h, 0xFFFF, 0x02FF, a.page.0, 0),
        Err(fault(EventReason::T0ToSecure))
    );
    let buf = h.granule(EVENT_BUF);
    let [ev] = host_events(&h, a.vdev.0, buf)[..] else {
        panic!("one record for the vdevice");
    };
    assert_eq!(
        (ev.vdev, ev.segment, ev.rid, ev.reason),
        (a.vdev.0, 0x2A, PBDF, EventReason::T1NotAllowed.raw())
    );
    let [ev] = host_events(&h, HOST_DOMAIN_EVENTS, buf)[..] else {
        panic!("one record for the host domain");
    };
    assert_eq!(
        (ev.vdev, ev.segment, ev.rid, ev.reason),
        (0, 0xFFFF, 0x02FF, EventReason::T0ToSecure.raw())
    );
    // A segment is 16 bits.
    h.refused(
        TEST_DMA_INJECT,
        &[u64::from(PBDF), NO_PASID, 0, 0, 1 << 16],
        s(InvalidArgument, 5),
    );
}
