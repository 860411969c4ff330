//! Private MMIO: VDEV_MMIO_MAP, VDEV_MMIO_UNMAP, G_VDEV_MMIO_VALIDATE, and the exits from
//! LOCKED/RUN that take the pages back (docs/abi.md §5.7).

use tsm_abi::CallId::*;
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::guest::AcceptEvidence;
use tsm_abi::state::VdevState;
use tsm_abi::status::{ObjectKind, StatusCode::*};
use tsm_abi::tdisp::{
    InterfaceId, InterfaceInfo, InterfaceReport, MmioRange, RangeAttributes, ReportFields,
};
use tsm_device_model::{Device, TdiConfig};
use tsm_platform::PhysMem;
use zerocopy::IntoBytes;

use super::devices::{PBDF, RID_BASE, VBDF, World, device, drive, world_on};
use super::*;
use crate::addrmap::format::Entry;
use crate::addrmap::{LEAF_LEVEL, MapKind};
use crate::private_mmio::{MAX_MMIO_PAGES, locate};
use crate::testing::{BAR_WINDOW, SIM_BASE, TlbOp};

/// The device's BAR: 20 pages, 4 MiB into the simulated BAR window.
const BAR: u64 = BAR_WINDOW.base.0 + 0x40_0000;
const BAR_PAGES: u32 = 20;
/// A second range, two pages, 64 KiB above the first.
const BAR2: u64 = BAR + 0x10_0000;

static RANGES: [MmioRange; 3] = [
    MmioRange {
        first_page: BAR >> 12,
        number_of_pages: BAR_PAGES,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    },
    MmioRange {
        first_page: BAR2 >> 12,
        number_of_pages: 2,
        attributes: RangeAttributes::empty(),
        range_id: 2,
    },
    // A device that reports DRAM as its MMIO: the platform refuses to give it to a TVM.
    MmioRange {
        first_page: (SIM_BASE >> 12) + 200,
        number_of_pages: 1,
        attributes: RangeAttributes::empty(),
        range_id: 3,
    },
];

fn tdis() -> &'static [TdiConfig<'static>] {
    let tdi = |rid| TdiConfig {
        interface_id: InterfaceId::new(rid, None),
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: &RANGES,
        device_specific_info: &[],
    };
    std::boxed::Box::leak(std::boxed::Box::new([tdi(RID_BASE), tdi(PBDF)]))
}

/// GPAs for MMIO: private, under the level-3 table [`build_tvm`] made for GPA 0.
const GPA: u64 = 0x10_0000;

/// A bound (LOCKED) vdevice whose report names [`RANGES`].
fn locked(format: tsm_platform::AddressMapFormat) -> (World, Device<'static>) {
    let mut dev = device(tdis());
    let w = world_on(harness(format), &mut dev);
    w.bind(&mut dev).unwrap();
    assert_eq!(w.state().0, u64::from(VdevState::Locked.raw()));
    (w, dev)
}

fn map(w: &World, gpa: u64, pa: u64) -> Result<[u64; 4], Status> {
    w.h.host(VDEV_MMIO_MAP, &[w.vdev.0, gpa, pa])
}

fn validate(w: &World, gpa: u64, range: u64, page: u64) -> Result<[u64; 4], Status> {
    w.guest(G_VDEV_MMIO_VALIDATE, &[u64::from(VBDF), gpa, range, page])
        .map_err(|e| e.0)
}

/// The TVM's map at `gpa`.
fn entry(w: &World, gpa: u64) -> Entry {
    let mut room = crate::objects::Room::new();
    let o: &crate::objects::TvmObj = w.h.tsm.snapshot(w.tvm, &mut room).unwrap();
    w.h.tsm
        .map(Pa(o.root))
        .entry(Gpa(gpa), LEAF_LEVEL)
        .unwrap()
        .1
}

fn mmio_at(w: &World, gpa: u64) -> Option<(u64, bool)> {
    match entry(w, gpa) {
        Entry::Page(l) => match l.kind {
            MapKind::Mmio { validated } => Some((l.pa.0, validated)),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn map_validate_unmap_and_every_refusal() {
    for format in FORMATS {
        let (w, _dev) = locked(format);
        let h = &w.h;
        // Host-side refusals, each changing nothing.
        h.refused(VDEV_MMIO_MAP, &[w.tvm.0, GPA, BAR], s(BadHandle, 1));
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, GPA + 8, BAR], s(Misaligned, 2));
        h.refused(
            VDEV_MMIO_MAP,
            &[w.vdev.0, SHARED_GPA, BAR],
            s(OutOfRange, 2),
        );
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, 1 << 40, BAR], s(OutOfRange, 2));
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, 0x1000, BAR], s(AlreadyMapped, 2));
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, 1 << 30, BAR], s(TableMissing, 2));
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, GPA, BAR + 8], s(Misaligned, 3));
        // Outside every range of the report, and a reported range the platform will not give.
        h.refused(
            VDEV_MMIO_MAP,
            &[w.vdev.0, GPA, BAR + u64::from(BAR_PAGES) * GRANULE_SIZE],
            s(OutOfRange, 3),
        );
        h.refused(
            VDEV_MMIO_MAP,
            &[w.vdev.0, GPA, BAR - GRANULE_SIZE],
            s(OutOfRange, 3),
        );
        h.refused(
            VDEV_MMIO_MAP,
            &[w.vdev.0, GPA, SIM_BASE + 200 * GRANULE_SIZE],
            s(OutOfRange, 3),
        );
        // Page 1 of range 0.
        let pa = BAR + GRANULE_SIZE;
        assert!(h.sim.host_has_mmio(Pa(pa)));
        map(&w, GPA, pa).unwrap();
        h.check();
        assert!(!h.sim.host_has_mmio(Pa(pa)), "the host lost the page");
        assert_eq!(mmio_at(&w, GPA), Some((pa, false)));
        // Unvalidated: not a DMA target, nor is it once validated.
        assert!(h.tsm.stage2_lookup(w.tvm, Gpa(GPA)).is_err());
        h.refused(
            VDEV_MMIO_MAP,
            &[w.vdev.0, GPA + GRANULE_SIZE, pa],
            s(AlreadyMapped, 3),
        );
        h.refused(VDEV_MMIO_MAP, &[w.vdev.0, GPA, BAR], s(AlreadyMapped, 2));
        // The host's memory calls leave it alone.
        h.refused(UNMAP, &[w.tvm.0, GPA], s(InUse, ObjectKind::Vdev as u8));
        h.refused(
            TABLE_DESTROY,
            &[w.tvm.0, 0, 3],
            s(InUse, ObjectKind::PrivatePage as u8),
        );
        // The guest names what it expects; every mismatch is refused and changes nothing.
        let vbdf = u64::from(VBDF);
        for (args, expected) in [
            ([vbdf + 1, GPA, 0, 1], s(BadHandle, 1)),
            ([vbdf, GPA + 4, 0, 1], s(Misaligned, 2)),
            ([vbdf, 0x1000, 0, 1], s(MmioMismatch, 2)),
            ([vbdf, GPA + GRANULE_SIZE, 0, 1], s(MmioMismatch, 2)),
            ([vbdf, GPA, 1, 1], s(MmioMismatch, 3)),
            ([vbdf, GPA, 0, 0], s(MmioMismatch, 4)),
            ([vbdf, GPA, 0, 2], s(MmioMismatch, 4)),
            ([vbdf, GPA, u64::MAX, u64::MAX], s(MmioMismatch, 3)),
        ] {
            h.guest_refused(w.vcpu, G_VDEV_MMIO_VALIDATE, &args, expected);
        }
        assert_eq!(mmio_at(&w, GPA), Some((pa, false)));
        validate(&w, GPA, 0, 1).unwrap();
        h.check();
        assert_eq!(mmio_at(&w, GPA), Some((pa, true)));
        assert!(h.tsm.stage2_lookup(w.tvm, Gpa(GPA)).is_err(), "no P2P DMA");
        h.guest_refused(
            w.vcpu,
            G_VDEV_MMIO_VALIDATE,
            &[vbdf, GPA, 0, 1],
            s(AlreadyMapped, 2),
        );
        // A guest buffer is never device memory.
        h.guest_refused(w.vcpu, G_VDEV_INFO, &[vbdf, GPA], s(InvalidBuffer, 2));
        // The second range, page 1.
        map(&w, GPA + GRANULE_SIZE, BAR2 + GRANULE_SIZE).unwrap();
        h.guest_refused(
            w.vcpu,
            G_VDEV_MMIO_VALIDATE,
            &[vbdf, GPA + GRANULE_SIZE, 0, 1],
            s(MmioMismatch, 3),
        );
        validate(&w, GPA + GRANULE_SIZE, 1, 1).unwrap();
        // Unmap: the TVM forgets it (TLB invalidated) before the host gets it back.
        h.refused(VDEV_MMIO_UNMAP, &[w.vdev.0, GPA + 1], s(Misaligned, 2));
        h.refused(VDEV_MMIO_UNMAP, &[w.vdev.0, 0x1000], s(NotMapped, 2));
        h.refused(VDEV_MMIO_UNMAP, &[w.tvm.0, GPA], s(BadHandle, 1));
        h.sim.take_tlb_ops();
        assert_eq!(h.host(VDEV_MMIO_UNMAP, &[w.vdev.0, GPA]).unwrap()[0], pa);
        h.check();
        assert!(h.sim.host_has_mmio(Pa(pa)));
        assert_eq!(entry(&w, GPA), Entry::Invalid);
        let mut room = crate::objects::Room::new();
        let o: &crate::objects::TvmObj = h.tsm.snapshot(w.tvm, &mut room).unwrap();
        assert!(
            h.sim
                .take_tlb_ops()
                .contains(&TlbOp::Page(Pa(o.root), Gpa(GPA)))
        );
        // The GPA is free for anything again.
        map(&w, GPA, BAR).unwrap();
        validate(&w, GPA, 0, 0).unwrap();
        h.check();
    }
}

#[test]
fn the_record_is_bounded() {
    let (w, _dev) = locked(tsm_platform::AddressMapFormat::ArmStage2);
    for i in 0..MAX_MMIO_PAGES as u64 {
        map(&w, GPA + i * GRANULE_SIZE, BAR + i * GRANULE_SIZE).unwrap();
    }
    w.h.check();
    let next = MAX_MMIO_PAGES as u64;
    w.h.refused(
        VDEV_MMIO_MAP,
        &[
            w.vdev.0,
            GPA + next * GRANULE_SIZE,
            BAR + next * GRANULE_SIZE,
        ],
        s(Capacity, 1),
    );
    // The host unbinds: every page comes back at once, before the device answered STOP.
    w.h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]).unwrap_err();
    w.h.check();
    for i in 0..next {
        assert!(w.h.sim.host_has_mmio(Pa(BAR + i * GRANULE_SIZE)));
        assert_eq!(entry(&w, GPA + i * GRANULE_SIZE), Entry::Invalid);
    }
}

#[test]
fn every_exit_from_locked_and_run_takes_the_pages_back() {
    for format in FORMATS {
        let (w, mut dev) = locked(format);
        let vbdf = u64::from(VBDF);
        // Not while UNLOCKED or STOPPING: only LOCKED and RUN have a report to check against.
        map(&w, GPA, BAR).unwrap();
        validate(&w, GPA, 0, 0).unwrap();
        // Accept: STARTING, then RUN; the mapping stays.
        let info = w.info();
        w.accept(&mut dev, &AcceptEvidence::from_info(&info))
            .unwrap();
        assert_eq!(w.state().0, u64::from(VdevState::Run.raw()));
        assert_eq!(mmio_at(&w, GPA), Some((BAR, true)));
        // RUN allows more.
        map(&w, GPA + GRANULE_SIZE, BAR + GRANULE_SIZE).unwrap();
        w.h.check();
        // The guest stops the device: gone before its call returns to the host.
        let (st, _) = w.guest(G_VDEV_STOP, &[vbdf]).unwrap_err();
        assert_eq!(st.code, NeedsDeviceIo);
        w.h.check();
        assert_eq!(entry(&w, GPA), Entry::Invalid);
        assert!(w.h.sim.host_has_mmio(Pa(BAR)));
        assert!(w.h.sim.host_has_mmio(Pa(BAR + GRANULE_SIZE)));
        w.h.refused(VDEV_MMIO_MAP, &[w.vdev.0, GPA, BAR], s(ObjectState, 1));
        w.h.guest_refused(
            w.vcpu,
            G_VDEV_MMIO_VALIDATE,
            &[vbdf, GPA, 0, 0],
            s(ObjectState, 1),
        );
        let r = w.h.host(COMMUNICATE, &[w.vdev.0, w.comm.0]);
        drive(&w.h, &mut dev, w.comm, w.vdev, r).unwrap();
        w.h.refused(VDEV_MMIO_MAP, &[w.vdev.0, GPA, BAR], s(ObjectState, 1));
        // Bind again, map, and cancel the next operation: ERROR takes them too.
        w.bind(&mut dev).unwrap();
        map(&w, GPA, BAR).unwrap();
        w.h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]).unwrap_err();
        assert!(w.h.sim.host_has_mmio(Pa(BAR)));
        w.h.host(OP_CANCEL, &[w.vdev.0]).unwrap();
        w.h.check();
        let r = w.h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]);
        drive(&w.h, &mut dev, w.comm, w.vdev, r).unwrap();
        w.bind(&mut dev).unwrap();
        map(&w, GPA, BAR).unwrap();
        // Accepted, STARTING (START not carried yet): still mapped; the host cancels: ERROR,
        // and the page is the host's again.
        let ev = AcceptEvidence::from_info(&w.info());
        w.h.sim.write(Pa(w.page.0 + 0x800), ev.as_bytes()).unwrap();
        let (st, _) = w.guest(G_VDEV_ACCEPT, &[vbdf, 0x1800]).unwrap_err();
        assert_eq!(st.code, NeedsDeviceIo);
        assert_eq!(w.state().0, u64::from(VdevState::Starting.raw()));
        assert_eq!(mmio_at(&w, GPA), Some((BAR, false)));
        w.h.check();
        w.h.host(OP_CANCEL, &[w.vdev.0]).unwrap();
        w.h.check();
        assert!(w.h.sim.host_has_mmio(Pa(BAR)));
        assert_eq!(entry(&w, GPA), Entry::Invalid);
        // Teardown works as before.
        let r = w.h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]);
        drive(&w.h, &mut dev, w.comm, w.vdev, r).unwrap();
        w.h.host(VDEV_DESTROY, &[w.vdev.0]).unwrap();
        w.h.check();
    }
}

#[test]
fn locate_undoes_the_reporting_offset_and_skips_non_tee_ranges() {
    let ranges = [
        MmioRange {
            first_page: 0x10_0100,
            number_of_pages: 4,
            attributes: RangeAttributes::empty(),
            range_id: 0,
        },
        MmioRange {
            first_page: 0x10_0200,
            number_of_pages: 2,
            attributes: RangeAttributes::IS_NON_TEE_MEM,
            range_id: 1,
        },
        MmioRange {
            first_page: 0x10_0300,
            number_of_pages: 2,
            attributes: RangeAttributes::empty(),
            range_id: 7,
        },
    ];
    let mut buf = [0u8; 512];
    let n = InterfaceReport::encode(
        &ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        &ranges,
        &[],
        &mut buf,
    )
    .unwrap();
    let report = InterfaceReport::parse(&buf[..n]).unwrap();
    // The device added 0x1_0000_0000 to what it reported: the host pages are that much lower.
    let offset = 0x1_0000_0000u64;
    let host = |frame: u64| Pa((frame << 12) - offset);
    assert_eq!(locate(&report, offset, host(0x10_0100)), Some((0, 0)));
    assert_eq!(locate(&report, offset, host(0x10_0103)), Some((0, 3)));
    assert_eq!(locate(&report, offset, host(0x10_0104)), None);
    assert_eq!(locate(&report, offset, host(0x10_0200)), None, "non-TEE");
    assert_eq!(locate(&report, offset, host(0x10_0301)), Some((2, 1)));
    // A negative offset (two's complement) and one that is not page-aligned.
    let neg = offset.wrapping_neg();
    assert_eq!(
        locate(&report, neg, Pa((0x10_0101 << 12) + offset)),
        Some((0, 1))
    );
    assert_eq!(locate(&report, 0x800, Pa(0x10_0100 << 12)), None);
    assert_eq!(locate(&report, 0, Pa(0x10_0102 << 12)), Some((0, 2)));
}
