//! DMA tables for vdevices, against the simulated platform IOMMU (`testing::SimIommu`): the
//! differential test (what the IOMMU does with a request equals what the engine's `translate`
//! says, through a vdevice's whole life, in every address-map / DMA-table format pair), the
//! bounds, the IOMMU calls the core makes, and the no-IOMMU path.

extern crate std;

use std::cell::RefCell;
use std::vec::Vec;

use tsm_abi::CallId::*;
use tsm_abi::addr::{GRANULE_SIZE, Iova, Pa};
use tsm_abi::event::NO_PASID;
use tsm_abi::features::{DmaFeatures, FeatureReg};
use tsm_abi::state::{DeviceOp, VdevState};
use tsm_abi::status::{Status, StatusCode::*};
use tsm_abi::viommu::ViommuType;
use tsm_platform::{AddressMapFormat, DmaDomain, DmaStream, DmaTableFormat, PhysMem};
use zerocopy::IntoBytes;

use super::devices::{PBDF, VBDF, World, device, drive, tdis, vdev_params, world_on};
use super::{SHARED_GPA, s, shared_tables};
use crate::dma_tables::{DMA_MAX_PAGES, MAX_DMA_TABLES};
use crate::granule::GranuleState;
use crate::objects::{Room, VdevObj};
use crate::testing::{Harness, IommuOp};
use crate::viommu::{self, Access, Request, Requester};

/// Every pair of address-map and DMA-table formats (QEMU pairs them as the first two).
const PAIRS: [(AddressMapFormat, DmaTableFormat); 4] = [
    (AddressMapFormat::ArmStage2, DmaTableFormat::ArmStage2),
    (
        AddressMapFormat::X86_64FourLevel,
        DmaTableFormat::VtdSecondLevel,
    ),
    (AddressMapFormat::ArmStage2, DmaTableFormat::VtdSecondLevel),
    (AddressMapFormat::X86_64FourLevel, DmaTableFormat::ArmStage2),
];

/// The second vdevice: under a VT-d vIOMMU (x86-64 stage 1).
const PBDF2: u16 = PBDF + 1;
const VBDF2: u16 = 9;
/// A host device on segment 0, and the vdevice's RID on segment 1 (a host device too).
const HOST: Requester = Requester {
    segment: 0,
    rid: 0x0300,
};
const TWIN: Requester = Requester {
    segment: 1,
    rid: PBDF,
};
const V1: Requester = Requester {
    segment: 0,
    rid: PBDF,
};
const V2: Requester = Requester {
    segment: 0,
    rid: PBDF2,
};

/// GPAs of the TVM: two private data pages (the second read-only), a shared page, a page
/// nothing maps, and the stage-1 tables of each vdevice (private).
const PRIV: u64 = 0x2000;
const PRIV_RO: u64 = 0x3000;
const SHARED: u64 = SHARED_GPA + 0x2000;
const UNMAPPED: u64 = 0x5000;
const S1_ARM: [u64; 4] = [0x6000, 0x7000, 0x8000, 0x9000];
const S1_X86: [u64; 4] = [0xA000, 0xB000, 0xC000, 0xD000];
/// Stage-1 IOVAs (level indices 0, 1, 2, 3..6): to PRIV, SHARED, UNMAPPED, PRIV_RO.
const S1_IOVA: u64 = (1 << 30) | (2 << 21) | (3 << 12);

fn stream(r: Requester) -> DmaStream {
    DmaStream {
        segment: r.segment,
        rid: r.rid,
    }
}

fn stage1_desc(x86: bool, table: bool, oa: u64, write: bool) -> u64 {
    match (x86, table) {
        (false, true) => oa | 0b11,
        (false, false) => oa | 0b11 | 1 << 10 | 1 << 6 | if write { 0 } else { 1 << 7 },
        (true, true) => oa | 0b111,
        (true, false) => oa | 0b101 | if write { 0b10 } else { 0 },
    }
}

struct Dma {
    w: World,
    vdev2: Pa,
    /// Granules of the machine the probes aim at as PAs (host devices).
    pas: RefCell<Vec<u64>>,
}

impl Dma {
    fn h(&self) -> &Harness {
        &self.w.h
    }

    /// Whether the engine lets `requester`'s requests carry the T bit now: it names a vdevice
    /// in RUN, accepted. The hardware path has no T bit; the table holds this view.
    fn t_bit(&self, requester: Requester) -> bool {
        let Some(vdev) = self.h().tsm.translator().vdev_of(requester) else {
            return false;
        };
        let mut room = Room::<VdevObj>::new();
        let v = crate::objects::read_decoded(self.h().sim, vdev, &mut room).unwrap();
        crate::dma_tables::t1_view(v)
    }

    fn iovas(&self) -> Vec<u64> {
        let mut out: Vec<u64> = [0x1000, PRIV, PRIV_RO, SHARED, UNMAPPED, 1 << 47]
            .into_iter()
            .chain((0..4).map(|i| S1_IOVA + i * GRANULE_SIZE))
            .chain(self.pas.borrow().iter().copied())
            .map(|a| a + 0x18)
            .collect();
        out.extend(S1_ARM.iter().chain(&S1_X86));
        out
    }

    /// Every probe, read and write, from every requester: the IOMMU's outcome equals the
    /// engine's (`translate`, which equals `translate_uncached`). With `exact` false only
    /// "the IOMMU allows nothing the engine refuses" (a vdevice with too few tables).
    fn agree(&self, label: &str, exact: bool) {
        let h = self.h();
        for requester in [V1, V2, HOST, TWIN] {
            let t_bit = self.t_bit(requester);
            for iova in self.iovas() {
                for write in [false, true] {
                    let req = Request {
                        requester,
                        pasid: None,
                        t_bit,
                        iova: Iova(iova),
                        access: if write { Access::Write } else { Access::Read },
                    };
                    let tr = h.tsm.translator();
                    let sw = viommu::translate(&tr, &mut h.tsm.iotlb.lock(), &req);
                    assert_eq!(sw, viommu::translate_uncached(&tr, &req), "{label}");
                    let hw = h.sim.dma(stream(requester), iova, write);
                    let ok = if exact {
                        hw == sw.ok()
                    } else {
                        hw.is_none() || hw == sw.ok()
                    };
                    assert!(
                        ok,
                        "{label}: {requester:x?} {iova:#x} write {write} T {t_bit}: IOMMU \
                         {hw:x?}, engine {sw:x?}"
                    );
                }
            }
        }
    }

    fn donate(&self, vdev: Pa, first: u64, n: u64) -> Vec<Pa> {
        (first..first + n)
            .map(|i| {
                let g = self.h().delegate(i);
                self.h().host(VDEV_DMA_TABLE, &[vdev.0, g.0]).unwrap();
                g
            })
            .collect()
    }

    fn map_private(&self, gpa: u64, granule: u64, flags: u64) -> Pa {
        let pa = self.h().delegate(granule);
        self.h()
            .host(MAP_PRIVATE, &[self.w.tvm.0, gpa, pa.0, u64::MAX, flags])
            .unwrap();
        pa
    }

    /// The guest writes descriptor `index` of its stage-1 table at `gpa`.
    fn put(&self, gpa: u64, index: u64, desc: u64) {
        let pa = self
            .h()
            .tsm
            .stage2_lookup(self.w.tvm, tsm_abi::addr::Gpa(gpa))
            .unwrap()
            .pa;
        self.h()
            .sim
            .write(Pa(pa.0 + 8 * index), &desc.to_le_bytes())
            .unwrap();
    }

    /// Stage-1 tables at `tables` (mapped private) translating S1_IOVA.. to PRIV, SHARED,
    /// UNMAPPED and PRIV_RO (read-only).
    fn stage1(&self, x86: bool, tables: [u64; 4], first: u64) {
        for (i, gpa) in tables.iter().enumerate() {
            self.map_private(*gpa, first + i as u64, 3);
        }
        let d = |table, oa, write| stage1_desc(x86, table, oa, write);
        self.put(tables[0], 0, d(true, tables[1], true));
        self.put(tables[1], 1, d(true, tables[2], true));
        self.put(tables[2], 2, d(true, tables[3], true));
        for (i, (gpa, write)) in [
            (PRIV, true),
            (SHARED, true),
            (UNMAPPED, true),
            (PRIV_RO, false),
        ]
        .into_iter()
        .enumerate()
        {
            self.put(tables[3], 3 + i as u64, d(false, gpa, write));
        }
    }
}

/// The world of `devices::world` on a machine with an IOMMU: a TVM with a private page at
/// 0x1000, a connected PDEV, an SMMUv3 vIOMMU and a vdevice (PBDF), a vCPU; plus a VT-d vIOMMU
/// and a second vdevice (PBDF2), private pages at PRIV and PRIV_RO, a shared page at SHARED.
fn setup(
    map: AddressMapFormat,
    dma: DmaTableFormat,
    dev: &mut tsm_device_model::Device<'_>,
) -> Dma {
    let w = world_on(Harness::with_iommu(256, map, dma), dev);
    let h = &w.h;
    let vtd = h.delegate(30);
    h.host(
        VIOMMU_CREATE,
        &[w.tvm.0, vtd.0, u64::from(ViommuType::TsmVtd.raw()), 0],
    )
    .unwrap();
    let p = h.host_put(24, vdev_params(PBDF2, VBDF2).as_bytes());
    let vdev2 = h.delegate(31);
    h.host(VDEV_CREATE, &[vdev2.0, w.pdev.0, vtd.0, p.0])
        .unwrap();
    shared_tables(h, w.tvm);
    let shared = h.granule(32);
    h.host(MAP_SHARED, &[w.tvm.0, SHARED, shared.0, 3]).unwrap();
    let d = Dma {
        w,
        vdev2,
        pas: RefCell::new(Vec::new()),
    };
    let private = d.map_private(PRIV, 33, 3);
    d.map_private(PRIV_RO, 34, 1);
    let pas = std::vec![
        private.0,
        shared.0,
        d.w.page.0,
        d.h().delegate(35).0,
        d.h().granule(1).0,
        d.h().granule(200).0,
        0x1000_0000,
    ];
    d.pas.replace(pas);
    d
}

#[test]
fn the_iommu_does_what_the_engine_says_through_a_vdevice_life() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (map, dma) in PAIRS {
        let mut dev = device(tdis);
        let d = setup(map, dma, &mut dev);
        let (h, w) = (&d.w.h, &d.w);
        // Created: both streams left the host domain, blocked until a table comes.
        let ops = h.sim.iommu().unwrap().take_ops();
        assert_eq!(
            ops,
            [
                IommuOp::Attach(stream(V1), DmaDomain::Blocked),
                IommuOp::Attach(stream(V2), DmaDomain::Blocked)
            ]
        );
        d.agree("no table yet", false);
        assert_eq!(h.sim.dma(stream(V1), SHARED + 8, false), None);
        // Enough for every view: a root, and per 2 MiB region with pages a level-3 table
        // under a level-2 and a level-1 one (the shared half is another level-1 table).
        let t1 = d.donate(w.vdev, 40, 10);
        let t2 = d.donate(d.vdev2, 50, 10);
        let ops = h.sim.iommu().unwrap().take_ops();
        assert!(matches!(
            ops.first(),
            Some(IommuOp::Attach(s, DmaDomain::Table { root, tag: 1 })) if *s == stream(V1) && *root == t1[0]
        ));
        assert!(ops.contains(&IommuOp::Attach(
            stream(V2),
            DmaDomain::Table {
                root: t2[0],
                tag: 2
            }
        )));
        assert!(ops.iter().filter(|o| **o == IommuOp::Invalidate(1)).count() == 10);
        d.pas.borrow_mut().extend([t1[1].0, t2[0].0]);
        d.agree("UNLOCKED", true);
        assert!(h.sim.dma(stream(V1), SHARED + 8, true).is_some());
        // Bound: still the T=0 view.
        w.bind(&mut dev).unwrap();
        d.agree("LOCKED", true);
        // The guest accepts; START is not carried yet: still T=0.
        let info = w.info();
        h.sim
            .write(
                Pa(w.page.0 + 0x800),
                tsm_abi::guest::AcceptEvidence::from_info(&info).as_bytes(),
            )
            .unwrap();
        let r = w.guest(G_VDEV_ACCEPT, &[u64::from(VBDF), 0x1800]);
        assert_eq!(r.unwrap_err().0.code, NeedsDeviceIo);
        d.agree("STARTING", true);
        assert_eq!(h.sim.dma(stream(V1), PRIV, false), None);
        let r = h.host(COMMUNICATE, &[w.vdev.0, w.comm.0]);
        drive(h, &mut dev, w.comm, w.vdev, r).unwrap();
        assert_eq!(w.state().0, u64::from(VdevState::Run.raw()));
        // RUN and accepted: the T=1 view, private pages too, the read-only one read-only.
        d.agree("RUN", true);
        assert!(h.sim.dma(stream(V1), PRIV + 8, true).is_some());
        assert!(h.sim.dma(stream(V1), PRIV_RO, false).is_some());
        assert_eq!(h.sim.dma(stream(V1), PRIV_RO, true), None);
        // Unmap and remap (other pages), private and shared.
        for gpa in [PRIV, SHARED] {
            h.host(UNMAP, &[w.tvm.0, gpa]).unwrap();
            d.agree("after UNMAP", true);
        }
        d.map_private(PRIV, 36, 3);
        h.host(MAP_SHARED, &[w.tvm.0, SHARED, h.granule(37).0, 1])
            .unwrap();
        d.pas.borrow_mut().push(h.granule(37).0);
        d.agree("after remap", true);
        // Guest stage 1, both formats, attached, changed and invalidated, detached.
        d.stage1(false, S1_ARM, 60);
        d.stage1(true, S1_X86, 64);
        d.agree("stage-1 tables written, not attached", true);
        w.guest(G_S1_ATTACH, &[u64::from(VBDF), NO_PASID, S1_ARM[0], 0])
            .unwrap();
        w.guest(G_S1_ATTACH, &[u64::from(VBDF2), NO_PASID, S1_X86[0], 0])
            .unwrap();
        d.agree("stage 1 attached", true);
        assert!(h.sim.dma(stream(V1), S1_IOVA, true).is_some());
        d.put(S1_ARM[3], 5, stage1_desc(false, false, PRIV, true));
        w.guest(G_S1_INVALIDATE, &[u64::from(VBDF), NO_PASID, 0, 0])
            .unwrap();
        d.agree("stage 1 changed and invalidated", true);
        // A PASID's root is not the table's business: attaching one leaves it as it was.
        let before = h.sim.iommu().unwrap().take_ops();
        drop(before);
        w.guest(G_S1_ATTACH, &[u64::from(VBDF), 5, S1_ARM[0], 0])
            .unwrap();
        assert_eq!(h.sim.iommu().unwrap().take_ops(), []);
        w.guest(G_S1_DETACH, &[u64::from(VBDF2), NO_PASID]).unwrap();
        d.agree("stage 1 of the second vdevice detached", true);
        // The guest stops the device: T=1 goes before its call returns.
        let r = w.guest(G_VDEV_STOP, &[u64::from(VBDF)]);
        assert_eq!(r.unwrap_err().0.code, NeedsDeviceIo);
        d.agree("STOPPING", true);
        assert_eq!(h.sim.dma(stream(V1), S1_IOVA, false), None);
        let r = h.host(COMMUNICATE, &[w.vdev.0, w.comm.0]);
        drive(h, &mut dev, w.comm, w.vdev, r).unwrap();
        d.agree("UNLOCKED again", true);
        // Bound, accepted, then unbound by the host; then an operation cancelled: ERROR.
        w.bind(&mut dev).unwrap();
        let info = w.info();
        w.accept(&mut dev, &tsm_abi::guest::AcceptEvidence::from_info(&info))
            .unwrap();
        d.agree("RUN again", true);
        let r = h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]);
        assert_eq!(r.unwrap_err().code, NeedsDeviceIo);
        d.agree("unbound (STOPPING)", true);
        drive(h, &mut dev, w.comm, w.vdev, Err(Status::new(NeedsDeviceIo))).unwrap();
        w.bind(&mut dev).unwrap();
        let info = w.info();
        w.accept(&mut dev, &tsm_abi::guest::AcceptEvidence::from_info(&info))
            .unwrap();
        let r = h.host(VDEV_UNBIND, &[w.vdev.0, w.comm.0]);
        assert_eq!(r.unwrap_err().code, NeedsDeviceIo);
        h.host(OP_CANCEL, &[w.vdev.0]).unwrap();
        assert_eq!(
            w.state(),
            (
                u64::from(VdevState::Error.raw()),
                u64::from(DeviceOp::None.raw())
            )
        );
        d.agree("ERROR", true);
        h.check();
        // Destroyed: the stream is the host's again, the tables back to DELEGATED.
        h.sim.iommu().unwrap().take_ops();
        h.host(VDEV_DESTROY, &[w.vdev.0]).unwrap();
        assert_eq!(
            h.sim.iommu().unwrap().take_ops(),
            [
                IommuOp::Attach(stream(V1), DmaDomain::Host),
                IommuOp::Invalidate(1)
            ]
        );
        for t in &t1 {
            assert_eq!(
                h.tsm.granules().peek(*t).unwrap().0,
                GranuleState::Delegated
            );
        }
        d.agree("destroyed", true);
        h.check();
    }
}

#[test]
fn too_few_tables_fault_and_more_make_up_for_it() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (map, dma) in PAIRS {
        let mut dev = device(tdis);
        let d = setup(map, dma, &mut dev);
        let w = &d.w;
        d.donate(d.vdev2, 90, 10);
        // A root alone maps nothing; root, level 1 and level 2 still nothing.
        for n in 1..=3 {
            d.donate(w.vdev, 39 + n, 1);
            d.agree("short of tables", false);
            assert_eq!(d.h().sim.dma(stream(V1), SHARED, false), None, "{n}");
        }
        // A level-3 table too: enough for the T=0 view, the one shared page (at 512 GiB, a
        // level-1 table of its own). Two more for good measure.
        d.donate(w.vdev, 43, 1);
        d.agree("one level-3 table", true);
        d.donate(w.vdev, 44, 2);
        d.agree("more", true);
        // No more than MAX_DMA_TABLES.
        d.donate(w.vdev, 46, MAX_DMA_TABLES as u64 - 6);
        let g = d.h().delegate(70);
        d.h()
            .refused(VDEV_DMA_TABLE, &[w.vdev.0, g.0], s(Capacity, 1));
        // Not a delegated granule, not a VDEV, the VDEV itself.
        d.h()
            .refused(VDEV_DMA_TABLE, &[d.vdev2.0, w.page.0], s(GranuleState, 2));
        d.h()
            .refused(VDEV_DMA_TABLE, &[w.tvm.0, g.0], s(BadHandle, 1));
        d.h()
            .refused(VDEV_DMA_TABLE, &[d.vdev2.0, d.vdev2.0], s(GranuleState, 2));
        d.h()
            .refused(VDEV_DMA_TABLE, &[d.vdev2.0, g.0 + 8], s(Misaligned, 2));
        d.h().check();
    }
}

#[test]
fn pages_past_the_refresh_bound_fault() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let d = setup(
        AddressMapFormat::ArmStage2,
        DmaTableFormat::ArmStage2,
        &mut dev,
    );
    let w = &d.w;
    d.donate(w.vdev, 40, MAX_DMA_TABLES as u64);
    // Stage-1 2 MiB blocks over the first 2 MiB of GPA space: 512 candidate pages each. The
    // 9th block starts past DMA_MAX_PAGES candidates, so its pages fault though the engine
    // translates them.
    let blocks = DMA_MAX_PAGES as u64 / 512 + 1;
    for (i, gpa) in S1_ARM.iter().take(3).enumerate() {
        d.map_private(*gpa, 60 + i as u64, 3);
    }
    d.put(S1_ARM[0], 0, stage1_desc(false, true, S1_ARM[1], true));
    d.put(S1_ARM[1], 0, stage1_desc(false, true, S1_ARM[2], true));
    for b in 0..blocks {
        let block = 1 | 1 << 10 | 1 << 6;
        d.put(S1_ARM[2], b, block);
    }
    w.guest(G_S1_ATTACH, &[u64::from(VBDF), NO_PASID, S1_ARM[0], 0])
        .unwrap();
    let h = d.h();
    // T=0: the shared page is out of the first 2 MiB; use the private page at 0x1000 in RUN.
    w.bind(&mut dev).unwrap();
    let info = w.info();
    w.accept(&mut dev, &tsm_abi::guest::AcceptEvidence::from_info(&info))
        .unwrap();
    let first = h.sim.dma(stream(V1), 0x1000, true);
    assert_eq!(first, Some(w.page));
    let last = ((blocks - 1) << 21) + 0x1000;
    let req = Request {
        requester: V1,
        pasid: None,
        t_bit: true,
        iova: Iova(last),
        access: Access::Read,
    };
    assert_eq!(
        viommu::translate_uncached(&h.tsm.translator(), &req),
        Ok(w.page)
    );
    assert_eq!(h.sim.dma(stream(V1), last, false), None);
    // The block before it fits.
    assert_eq!(
        h.sim.dma(stream(V1), ((blocks - 2) << 21) + 0x1000, false),
        Some(w.page)
    );
}

#[test]
fn a_table_the_tsm_cannot_read_back_is_rebuilt_from_nothing() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (map, dma) in PAIRS {
        let mut dev = device(tdis);
        let d = setup(map, dma, &mut dev);
        let w = &d.w;
        d.donate(d.vdev2, 90, 10);
        let tables = d.donate(w.vdev, 40, 6);
        // A level-0 entry pointing at a granule that is not one of the vdevice's tables, and
        // garbage in the others.
        let h = d.h();
        h.sim
            .write(tables[0], &(h.granule(200).0 | 3).to_le_bytes())
            .unwrap();
        for t in &tables[1..] {
            h.sim.write(*t, &[0xA5; 64]).unwrap();
        }
        h.host(UNMAP, &[w.tvm.0, PRIV_RO]).unwrap();
        d.agree("rebuilt", true);
        h.check();
    }
}

#[test]
fn features_and_refusals_with_and_without_an_iommu() {
    let h = Harness::with_iommu(64, AddressMapFormat::ArmStage2, DmaTableFormat::ArmStage2);
    let f = DmaFeatures::from_raw(
        h.host(FEATURES, &[u64::from(FeatureReg::Dma.raw())])
            .unwrap()[0],
    );
    assert_eq!(
        f,
        DmaFeatures {
            tables_per_vdev: MAX_DMA_TABLES as u16,
            pages_per_vdev: DMA_MAX_PAGES,
            vdevs: tsm_platform::DMA_MAX_TAG,
        }
    );
    // Without one the call does not exist on this platform, whatever its arguments.
    let h = super::harness(AddressMapFormat::ArmStage2);
    let g = h.delegate(10);
    h.refused(VDEV_DMA_TABLE, &[g.0, g.0], Status::new(NotSupported));
}

#[test]
fn a_stream_the_iommu_does_not_cover_makes_vdev_create_fail_and_change_nothing() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let d = setup(
        AddressMapFormat::ArmStage2,
        DmaTableFormat::ArmStage2,
        &mut dev,
    );
    let (h, w) = (d.h(), &d.w);
    h.sim.iommu().unwrap().set_max_segment(0);
    // A PDEV on segment 1 whose vdevice's stream the IOMMU does not know.
    let pp = h.host_put(
        80,
        tsm_abi::params::PdevParams {
            segment: 1,
            ..super::devices::pdev_params()
        }
        .as_bytes(),
    );
    let pdev = h.delegate(81);
    h.host(PDEV_CREATE, &[pdev.0, pp.0]).unwrap();
    let r = h.host(PDEV_CONNECT, &[pdev.0, w.comm.0]);
    let mut dev2 = device(tdis);
    drive(h, &mut dev2, w.comm, pdev, r).unwrap();
    let p = h.host_put(82, vdev_params(PBDF, 16).as_bytes());
    let vdev = h.delegate(83);
    h.refused(
        VDEV_CREATE,
        &[vdev.0, pdev.0, w.viommu.0, p.0],
        s(NotSupported, 4),
    );
}

#[test]
fn tags_are_handed_out_once_and_run_out() {
    let mut tags = crate::dma_tables::DmaTags::new();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(t) = tags.free() {
        assert!((1..=tsm_platform::DMA_MAX_TAG).contains(&t) && seen.insert(t));
        tags.set(t, true);
    }
    assert_eq!(seen.len(), usize::from(tsm_platform::DMA_MAX_TAG));
    tags.set(7, false);
    assert_eq!(tags.free(), Some(7));
}

#[test]
fn tables_freed_by_a_refresh_serve_the_pages_it_could_not_place() {
    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (map, dma) in PAIRS {
        let mut dev = device(tdis);
        let d = setup(map, dma, &mut dev);
        let w = &d.w;
        d.donate(d.vdev2, 90, 10);
        // Four tables: exactly the T=0 view's tree (root, level 1 of the shared half, its
        // level 2 and level 3).
        d.donate(w.vdev, 40, 4);
        d.agree("four tables, no stage 1", true);
        // A stage 1 that moves the shared page to IOVAs under another level-1 entry: none of
        // the three lower tables keeps its role, and all three are needed elsewhere.
        d.stage1(false, S1_ARM, 60);
        w.guest(G_S1_ATTACH, &[u64::from(VBDF), NO_PASID, S1_ARM[0], 0])
            .unwrap();
        d.agree("four tables, stage 1", true);
        assert!(
            d.h()
                .sim
                .dma(stream(V1), S1_IOVA + GRANULE_SIZE, true)
                .is_some()
        );
        d.h().check();
    }
}

/// What the hardware refused of a vdevice's stream reaches that vdevice's queues, full for the
/// guest and sanitized for the host, with the reason the engine gives the same request; a host
/// device's fault stays on the host-domain queue; a page the table lacks while the engine
/// would translate it (no table donated yet) is the table's refusal, with no GPA.
#[test]
fn faults_of_a_vdevice_stream_reach_its_queues() {
    use tsm_abi::event::{EventFlags, EventReason, GuestEvent, HOST_DOMAIN_EVENTS, HostEvent};
    use zerocopy::FromBytes;

    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    for (map, dma) in PAIRS {
        let mut dev = device(tdis);
        let d = setup(map, dma, &mut dev);
        let (h, w) = (&d.w.h, &d.w);
        d.donate(w.vdev, 40, 10);
        let secure = h.delegate(70);
        let buf = h.granule(71);
        // T=0 view: a private page is secure memory, UNMAPPED is not in the TVM's map; the
        // second vdevice has no table yet (blocked); the host device writes a delegated page.
        assert_eq!(h.sim.device_dma(stream(V1), PRIV + 0x18, true), None);
        assert_eq!(h.sim.device_dma(stream(V1), UNMAPPED, false), None);
        assert_eq!(h.sim.device_dma(stream(V2), SHARED + 8, false), None);
        assert_eq!(h.sim.device_dma(stream(HOST), secure.0, true), None);
        assert!(h.sim.device_dma(stream(V1), SHARED + 8, true).is_some());

        let host = |queue: u64| -> Option<HostEvent> {
            h.host(EVENT_READ, &[queue, buf.0]).ok()?;
            let mut b = [0u8; 32];
            h.sim.host_read(buf, &mut b).unwrap();
            Some(HostEvent::read_from_bytes(&b).unwrap())
        };
        let e = host(HOST_DOMAIN_EVENTS).unwrap();
        assert_eq!(
            (e.vdev, e.rid, e.reason, e.flags),
            (
                0,
                HOST.rid,
                EventReason::T0ToSecure.raw(),
                EventFlags::WRITE.bits()
            )
        );
        assert!(host(HOST_DOMAIN_EVENTS).is_none(), "only the host device's");
        for (reason, flags) in [
            (EventReason::T0ToSecure, EventFlags::WRITE.bits()),
            (EventReason::Stage2Translation, 0),
        ] {
            let e = host(w.vdev.0).unwrap();
            assert_eq!(
                (e.vdev, e.segment, e.rid, e.reason, e.flags),
                (w.vdev.0, 0, PBDF, reason.raw(), flags)
            );
        }
        assert!(host(w.vdev.0).is_none());
        let e = host(d.vdev2.0).unwrap();
        assert_eq!(
            (e.rid, e.reason),
            (PBDF2, EventReason::Stage2Translation.raw())
        );
        // The guest's records carry what the host's may not: the IOVA and the GPA.
        let guest = || -> GuestEvent {
            w.guest(G_EVENT_READ, &[u64::from(VBDF), 0x1000]).unwrap();
            let mut b = [0u8; 64];
            h.sim.read(w.page, &mut b).unwrap();
            GuestEvent::read_from_bytes(&b).unwrap()
        };
        let g = guest();
        assert_eq!(
            (g.vbdf, g.reason, g.iova, g.gpa),
            (
                VBDF,
                EventReason::T0ToSecure.raw(),
                PRIV + 0x18,
                PRIV + 0x18
            )
        );
        assert_ne!(g.flags & EventFlags::GPA_VALID.bits(), 0);
        let g = guest();
        assert_eq!(
            (g.reason, g.iova, g.gpa),
            (EventReason::Stage2Translation.raw(), UNMAPPED, UNMAPPED)
        );
        h.guest_refused(
            w.vcpu,
            G_EVENT_READ,
            &[u64::from(VBDF), 0x1000],
            Status::new(Empty),
        );
        h.check();
    }
}

/// A fault the IOMMU recorded for a vdevice's stream but drained after VDEV_DESTROY gave the
/// stream back to the host domain is the host domain's: the vdevice's queues went with it.
#[test]
fn a_fault_drained_after_its_vdevice_went_away_is_the_host_domains() {
    use tsm_abi::event::{EventReason, HOST_DOMAIN_EVENTS, HostEvent};
    use zerocopy::FromBytes;

    let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
    let mut dev = device(tdis);
    let (map, dma) = PAIRS[0];
    let d = setup(map, dma, &mut dev);
    let (h, w) = (&d.w.h, &d.w);
    d.donate(w.vdev, 40, 10);
    let buf = h.granule(71);
    assert_eq!(h.sim.device_dma(stream(V1), PRIV + 0x18, true), None);
    h.host(VDEV_DESTROY, &[w.vdev.0]).unwrap();
    h.host(EVENT_READ, &[HOST_DOMAIN_EVENTS, buf.0]).unwrap();
    let mut b = [0u8; 32];
    h.sim.host_read(buf, &mut b).unwrap();
    let e = HostEvent::read_from_bytes(&b).unwrap();
    // The host domain's word for the IOVA: a host device's request to that address, which
    // (as a PA) is not DRAM here.
    assert_eq!(
        (e.vdev, e.rid, e.reason),
        (0, PBDF, EventReason::Stage2Translation.raw())
    );
    h.refused(EVENT_READ, &[HOST_DOMAIN_EVENTS, buf.0], Status::new(Empty));
    h.check();
}
