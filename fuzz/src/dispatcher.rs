//! `dispatcher`: sequences of host and guest calls against the host-built core.
//!
//! The input is a program run on a fresh monitor over [`SimPlatform`] (64 granules, the first
//! four the TSM's own; Arm or x86-64 address maps, bit 0 of the first byte; no platform IOMMU,
//! or one walking Arm stage-2 or VT-d second-level DMA tables, bits 2:1 modulo 3). Steps:
//!
//! * a host call: a call ID from [`CallId::ALL`] (host side) or a raw function ID, with
//!   arguments drawn from interesting values (granules of the simulated DRAM — which after a
//!   few steps hold objects, tables, private pages — misaligned and out-of-DRAM addresses,
//!   buffers inside host granules, GPAs, levels, vBDFs/RIDs, PCI segments, vIOMMU types, raw
//!   words); the unused argument registers are zero unless the step asks for dirt;
//! * a guest call from a vCPU granule (or any granule), with the same argument kinds;
//! * a host store of a parameter block (TVM, PDEV, VDEV params), of raw bytes, or of the
//!   evidence a guest echoes to accept a device (copied from what G_VDEV_INFO wrote, into a
//!   PRIVATE granule: a guest's own page);
//! * a device round trip: the host carries the request in a COMMUNICATE buffer to the device
//!   model — TDISP in the clear to the TDISP device, SPDM and secured SPDM (a PDEV with
//!   `PdevFlags::SPDM`) to its SPDM responder — and calls COMMUNICATE with its answer (or with
//!   "no response"). The second byte of the input seeds the device models; its bits 7:5 pick
//!   one misbehaviour of the SPDM responder for the whole run ([`spdm_misbehaviour`]: 0 is
//!   honest, so connects, key updates, disconnects and the failures of each all happen under
//!   the same per-call checks).
//!
//! After every call: nothing panicked; the status is a defined status word; the core's
//! invariant checker ([`crate::invariants::check`], `tsm_core::invariants` compiled into this
//! crate: invariants 3–7 over the granule table, the objects, the address maps and the host's
//! mappings) passes; the TSM's own memory stays
//! RESERVED and unreachable for the host; a refused call changed nothing (granule states and
//! refcounts, every byte of DRAM, the host's mappings, the PDEV registry) unless its status is
//! one that reports a state change (`NeedsDeviceIo`, `DeviceError`, `Cancelled`, `DmaFault`);
//! a successful TEST_DMA_INJECT reached an NS page with T=0, or a private or NS page with T=1
//! (invariants 1 and 2 as seen from the granule table), and went where its requester — found
//! by (segment, RID) in the PDEV registry and the PDEV's pBDF table, the way docs/abi.md §8.2
//! says, not by the core's lookup — sends it: a host device's request reaches its IOVA; a
//! vdevice's T=1 request needs it RUN and accepted; without stage 1 a vdevice's request
//! reaches what its TVM maps at the IOVA. With a platform IOMMU, every vdevice's stream is
//! probed through it after every call: what the IOMMU lets through, the engine
//! (`translate_uncached`, with the T bit of the vdevice's view) lets through to the same page,
//! for a vdevice without stage 1; with one (whose tables a store may have changed since they
//! were last composed), invariants 1 and 2 hold for it.
//!
//! PDEVs are created on several segments with the same RID range ([`SEGMENTS`]), so the same
//! RID names different devices, or a vdevice and a host device.
//!
//! SYSTEM_OFF is never issued, from the call table or as a raw ID: it powers the platform off,
//! which [`SimPlatform`] models as a panic by design; nor is PSCI SYSTEM_OFF, for the same reason (PSCI SYSTEM_RESET is, and
//! must be refused with nothing changed). A raw ID
//! outside the TSM's owner from the host of an Arm machine is answered as PSCI / SMCCC
//! (docs/abi.md §2.1): its x0 is no TSM status word, and it must change no granule.

use core::cell::{Cell, RefCell};
use core::sync::atomic::AtomicU16;
use std::sync::OnceLock;

use tsm_abi::CallId;
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::call::Caller;
use tsm_abi::comm::CommProtocol;
use tsm_abi::comm::{COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommHeader, HostIoStatus};
use tsm_abi::event::{ALL_PASIDS, DmaInjectFlags, NO_PASID};
use tsm_abi::guest::{AcceptEvidence, VdevInfo};
use tsm_abi::params::{LockFlags, NO_SOURCE, PdevParams, TvmParams, VdevParams};
use tsm_abi::psci;
use tsm_abi::regs::CallRegs;
use tsm_abi::spdm::RequestCode as SpdmRequest;
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, MmioRange, RangeAttributes, ReportFields};
use tsm_abi::viommu::{Stage1Format, ViommuType};
use tsm_core::granule::GranuleState;
use tsm_core::objects::{PdevObj, VdevObj};
use tsm_core::testing::SimPlatform;
use tsm_core::viommu::{self, Access, Request, Requester, Stage1Root};
use tsm_core::{Origin, Tsm};
use tsm_device_model::identity::{DEVICE, KeyedIdentity};
use tsm_device_model::spdm::{Reply, SpdmDevice, SpdmMisbehaviour};
use tsm_device_model::{Device, DeviceConfig, TdiConfig};
use tsm_platform::{
    AddressMapFormat, DmaStream, DmaTableFormat, HostCpus, HostIsolation, MemRange, PhysMem,
};
use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::input::{Input, Writer};
use crate::invariants;

/// Granules of simulated DRAM.
pub const GRANULES: u64 = 64;
/// The TSM's own granules (the first ones).
pub const TSM_GRANULES: u64 = 4;
/// Base of the simulated DRAM.
pub const DRAM_BASE: u64 = 0x4000_0000;
const MAX_STEPS: usize = 48;
/// Requester IDs: PF0 of the device (the PDEV's DSM), two functions, one outside the device.
pub const RIDS: [u16; 4] = [0x0100, 0x0101, 0x0102, 0x0200];
/// vBDFs a TVM may give its vdevices.
pub const VBDFS: [u16; 3] = [0x0008, 0x0010, 0x0101];
/// PCI segments of PDEVs and requesters (0x100 is too wide for RID_SEGMENT interface IDs).
pub const SEGMENTS: [u16; 4] = [0, 1, 0x100, 0xFFFF];

/// Step selectors (the first byte of a step, modulo their count).
pub mod step {
    /// A host call.
    pub const HOST: u8 = 0;
    /// A guest call.
    pub const GUEST: u8 = 1;
    /// A host (or guest) store.
    pub const STORE: u8 = 2;
    /// A device round trip and COMMUNICATE.
    pub const DEVICE: u8 = 3;
    /// Number of step kinds.
    pub const COUNT: u8 = 4;
}

/// Argument kinds (a byte, modulo their count, before each argument).
pub mod arg {
    /// Zero.
    pub const ZERO: u8 = 0;
    /// A granule of DRAM (index byte).
    pub const GRANULE: u8 = 1;
    /// A granule plus a misaligning offset (index byte, offset byte).
    pub const MISALIGNED: u8 = 2;
    /// A granule plus an 8-aligned offset inside it (index byte, offset byte × 8).
    pub const BUFFER: u8 = 3;
    /// An address outside DRAM (selector byte).
    pub const OUTSIDE: u8 = 4;
    /// A small integer (byte).
    pub const SMALL: u8 = 5;
    /// A GPA: byte << 12, or byte << 21 (selector bit 0), in the shared half of a TVM of
    /// `32 + (selector >> 2) % 17` GPA bits when selector bit 1 is set (selector byte, byte).
    pub const GPA: u8 = 6;
    /// A requester ID or vBDF (selector byte).
    pub const BDF: u8 = 7;
    /// A vIOMMU type, a PASID sentinel, or NO_SOURCE (selector byte).
    pub const SPECIAL: u8 = 8;
    /// A raw word (8 bytes).
    pub const RAW: u8 = 9;
    /// A PCI segment from [`super::SEGMENTS`], or 0x1_0000, one too wide (selector byte).
    pub const SEGMENT: u8 = 10;
    /// Number of argument kinds.
    pub const COUNT: u8 = 11;
}

/// Store kinds (after the granule index and offset byte).
pub mod store {
    /// `TvmParams` (gpa_bits byte, max_vcpus byte).
    pub const TVM: u8 = 0;
    /// `PdevParams` (flags byte, format byte: bit 0 the interface-ID format, the rest picks
    /// the segment from [`super::SEGMENTS`]).
    pub const PDEV: u8 = 1;
    /// `VdevParams` (pBDF byte, vBDF byte, lock flags u16).
    pub const VDEV: u8 = 2;
    /// Raw bytes (length byte, bytes).
    pub const RAW: u8 = 3;
    /// The accept evidence echoing the `VdevInfo` at offset 0 of the granule, at 0x800.
    pub const EVIDENCE: u8 = 4;
    /// Number of store kinds.
    pub const COUNT: u8 = 5;
}

fn granule(i: u8) -> u64 {
    DRAM_BASE + u64::from(i) % GRANULES * GRANULE_SIZE
}

fn argument(input: &mut Input<'_>) -> u64 {
    match input.u8() % arg::COUNT {
        arg::ZERO => 0,
        arg::GRANULE => granule(input.u8()),
        arg::MISALIGNED => granule(input.u8()) + 1 + u64::from(input.u8()),
        arg::BUFFER => granule(input.u8()) + u64::from(input.u8()) * 8,
        arg::OUTSIDE => match input.u8() % 6 {
            0 => DRAM_BASE - GRANULE_SIZE,
            1 => DRAM_BASE + GRANULES * GRANULE_SIZE,
            2 => !(GRANULE_SIZE - 1),
            3 => 1 << 52,
            // A device page: one of the large report's ranges, in the simulated BAR window.
            4 => tsm_core::testing::BAR_WINDOW.base.0 + u64::from(input.u8() % 32) * 0x1_0000,
            _ => DRAM_BASE + GRANULES * GRANULE_SIZE - 8,
        },
        arg::SMALL => u64::from(input.u8()),
        arg::GPA => {
            let selector = input.u8();
            let shift = if selector & 1 != 0 { 21 } else { 12 };
            let shared = if selector & 2 != 0 {
                1u64 << (31 + (selector >> 2) % 17)
            } else {
                0
            };
            shared | u64::from(input.u8()) << shift
        }
        arg::BDF => {
            let all: Vec<u16> = RIDS.iter().chain(VBDFS.iter()).copied().collect();
            u64::from(*input.pick(&all).unwrap_or(&0))
        }
        arg::SEGMENT => SEGMENTS
            .get(usize::from(input.u8()) % (SEGMENTS.len() + 1))
            .map_or(0x1_0000, |&s| u64::from(s)),
        arg::SPECIAL => match input.u8() % 7 {
            0 => u64::from(ViommuType::TsmNoViommu.raw()),
            1 => u64::from(ViommuType::TsmSmmuv3.raw()),
            2 => u64::from(ViommuType::TsmVtd.raw()),
            3 => 1, // iommufd's plain ARM_SMMUV3: not a TSM type.
            4 => NO_PASID,
            5 => ALL_PASIDS,
            _ => NO_SOURCE,
        },
        _ => input.u64(),
    }
}

/// The calls a step of `side` picks from (SYSTEM_OFF excepted, see the module's
/// documentation), in [`CallId::ALL`]'s order; listed once per process.
fn calls_of(side: Caller) -> &'static [CallId] {
    static LISTS: OnceLock<[Vec<CallId>; 2]> = OnceLock::new();
    let [host, guest] = LISTS.get_or_init(|| {
        [Caller::Host, Caller::Guest].map(|side| {
            CallId::ALL
                .iter()
                .copied()
                .filter(|c| c.caller() == side && *c != CallId::SYSTEM_OFF)
                .collect()
        })
    });
    if side == Caller::Host { host } else { guest }
}

/// A call of `side`: an ID from the table (selector below 0xF0) or a raw function ID.
fn call_regs(input: &mut Input<'_>, side: Caller) -> CallRegs {
    let selector = input.u8();
    let dirty = selector & 0x80 != 0;
    let calls = calls_of(side);
    let (fid, nargs) = match calls.get(usize::from(selector & 0x7F) % (calls.len() + 1)) {
        Some(c) => (u64::from(c.fid()), c.arg_count()),
        None => match input.u32() {
            // The raw ID of either SYSTEM_OFF (the module's documentation).
            raw if raw == psci::SYSTEM_OFF
                || CallId::try_from(u64::from(raw)).is_ok_and(|c| c == CallId::SYSTEM_OFF) =>
            {
                (u64::from(psci::PSCI_VERSION), 6)
            }
            raw => (u64::from(raw), 6),
        },
    };
    let mut regs = CallRegs { fid, args: [0; 6] };
    for (i, a) in regs.args.iter_mut().enumerate() {
        if i < nargs || (dirty && input.bool()) {
            *a = argument(input);
        }
    }
    regs
}

/// A fresh monitor over a leak-free simulated platform.
struct Machine<'m> {
    sim: &'m SimPlatform,
    tsm: Tsm<'m>,
    /// `TSM_FUZZ_TRACE` is set: print every call and its result (for triaging a crash input).
    trace: bool,
    /// The state as it is passed the isolation and invariant checks. They are a function of
    /// the [`Snapshot`] and DRAM alone, so a call that changed neither needs no second walk;
    /// every store outside a call clears it.
    checked: Cell<bool>,
    /// The [`Snapshot`] after the last call, the next call's "before": only calls change
    /// what it holds (the harness's own stores write memory alone).
    state: RefCell<Snapshot>,
}

/// Everything but memory contents a refused call must leave as it was.
///
/// Compared after every call, so kept in primitive words: `Vec<u64> == Vec<u64>` is one
/// `memcmp`, where a vector of tuples or of `Pa`s compares element by element, each
/// comparison a traced callback in the fuzz build (the largest part of a call's checks).
#[derive(PartialEq, Eq, Debug, Default)]
struct Snapshot {
    /// Per granule of the table, in its order: its address, then its state (bits 23:16) and
    /// refcount (bits 15:0).
    granules: Vec<u64>,
    unmapped: Vec<u64>,
    mmio_taken: Vec<u64>,
    pdevs: Vec<tsm_core::tsm::PdevRange>,
}

impl Snapshot {
    /// The granules: address, state, refcount.
    fn granules(&self) -> impl Iterator<Item = (Pa, GranuleState, u16)> + '_ {
        self.granules.chunks_exact(2).map(|g| {
            (
                Pa(g[0]),
                GRANULE_STATES[usize::from((g[1] >> 16) as u8)],
                g[1] as u16,
            )
        })
    }
}

/// Every granule state, at its `repr(u8)` value (the snapshot's words hold the value).
const GRANULE_STATES: [GranuleState; 12] = {
    use GranuleState::*;
    let all = [
        Ns, Delegated, Private, Tvm, Vcpu, Pdev, Viommu, Vdev, Table, Reserved, DmaTable, Evidence,
    ];
    let mut i = 0;
    while i < all.len() {
        assert!(all[i] as usize == i, "states in repr order");
        i += 1;
    }
    all
};

impl Machine<'_> {
    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        s.granules.reserve(2 * GRANULES as usize);
        for (pa, state, rc) in self.tsm.granules().snapshot() {
            s.granules
                .extend([pa.0, u64::from(state as u8) << 16 | u64::from(rc)]);
        }
        s.unmapped = self
            .sim
            .unmapped_granules()
            .into_iter()
            .map(|p| p.0)
            .collect();
        s.mmio_taken = self.sim.taken_mmio().into_iter().map(|p| p.0).collect();
        s.pdevs = self.tsm.pdev_ranges().into_iter().collect();
        s
    }

    /// The first granule whose contents differ from what it held when the current call was
    /// issued: every byte of DRAM is compared, the simulated platform's write log says which
    /// granules can differ ([`SimPlatform::changed_since_mark`]).
    fn changed_granule(&self) -> Option<Pa> {
        self.sim.changed_since_mark().first().copied()
    }

    fn granules_in(&self, state: GranuleState) -> Vec<Pa> {
        self.tsm
            .granules()
            .snapshot()
            .filter(|g| g.1 == state)
            .map(|g| g.0)
            .collect()
    }

    /// The vCPU granules (from the state after the last call).
    fn vcpus(&self) -> Vec<Pa> {
        self.state
            .borrow()
            .granules()
            .filter(|g| g.1 == GranuleState::Vcpu)
            .map(|g| g.0)
            .collect()
    }

    /// Issues one call and checks everything that must hold after it.
    fn call(&self, origin: Origin, regs: &CallRegs) {
        let before = self.state.take();
        self.sim.mark_memory();
        if self.trace {
            // Printed before the call, so a call that hangs is the last line.
            let name = CallId::try_from(regs.fid).map_or("(raw)", |c| c.name());
            eprintln!("{origin:x?} {name} {:x?}", regs.args);
        }
        let r = self.tsm.handle(origin, regs);
        if origin == Origin::Host && self.sim.has_psci() && psci::owner(regs.fid & 0xFFFF_FFFF) != 6
        {
            let after = self.snapshot();
            assert!(
                after == before && self.changed_granule().is_none(),
                "PSCI / SMCCC call {regs:x?} changed granule state or memory"
            );
            self.state.replace(after);
            return;
        }
        let status = Status::from_raw(r.status)
            .unwrap_or_else(|| panic!("undefined status word {:#x} for {regs:x?}", r.status));
        if self.trace {
            eprintln!("  -> {status:?} {:x?}", r.out);
        }
        let after = self.snapshot();
        let changed = self.changed_granule();
        let same_state = after == before;
        let unchanged = same_state && changed.is_none();
        let reports_change = matches!(
            status.code,
            StatusCode::NeedsDeviceIo
                | StatusCode::DeviceError
                | StatusCode::Cancelled
                | StatusCode::DmaFault
        );
        if !status.is_success() && !reports_change {
            assert!(
                same_state,
                "{regs:x?} from {origin:?} refused with {status:?} but changed state"
            );
            assert!(
                changed.is_none(),
                "{regs:x?} from {origin:?} refused with {status:?} but wrote {changed:x?}"
            );
        }
        if !(unchanged && self.checked.get()) {
            self.check_isolation(&after);
            if let Err(violation) = invariants::check(&self.tsm, self.sim) {
                panic!("after {regs:x?} from {origin:?} ({status:?}): {violation}");
            }
            self.checked.set(true);
        }
        if status.is_success() && regs.fid == u64::from(CallId::TEST_DMA_INJECT.fid()) {
            self.check_dma(regs, Pa(r.out[0]));
        }
        if status.is_success() || reports_change {
            self.check_iommu();
        }
        self.state.replace(after);
    }

    /// Each vdevice's stream through the platform IOMMU (see the module's documentation), at
    /// the GPAs the seeds map and at DRAM pages by their PA.
    fn check_iommu(&self) {
        if self.sim.iommu().is_none() {
            return;
        }
        let tr = self.tsm.translator();
        let iovas = [0x1000, 0x2000, (1 << 39) + 0x2000, 0x20_0000, 1 << 30]
            .into_iter()
            .chain([16, 17, 40].map(|i| granule(i)));
        for pa in self.granules_in(GranuleState::Vdev) {
            let v: VdevObj = self.object(pa);
            let Some(range) = self
                .tsm
                .pdev_ranges()
                .into_iter()
                .find(|r| r.pdev == Pa(v.pdev))
            else {
                panic!("vdevice {pa:?} of no registered PDEV");
            };
            let requester = Requester {
                segment: range.segment,
                rid: v.params.pbdf,
            };
            let stream = DmaStream {
                segment: requester.segment,
                rid: requester.rid,
            };
            let t_bit = v.state == VdevState::Run && v.accepted != 0;
            let stage1 = v.viommu_type.stage1_format() != Stage1Format::None
                && v.pasids.lookup(None) != Stage1Root::Bypass;
            for iova in iovas.clone() {
                for write in [false, true] {
                    let Some(hw) = self.sim.dma(stream, iova + 8, write) else {
                        continue;
                    };
                    let state = self.tsm.granules().peek(hw.granule_base()).map(|s| s.0);
                    if stage1 {
                        let ok = if t_bit {
                            matches!(state, Ok(GranuleState::Private | GranuleState::Ns))
                        } else {
                            state == Ok(GranuleState::Ns)
                        };
                        assert!(
                            ok,
                            "the IOMMU let {stream:x?} (T view {t_bit}) reach {hw:?} in {state:?}"
                        );
                        continue;
                    }
                    let req = Request {
                        requester,
                        pasid: None,
                        t_bit,
                        iova: tsm_abi::addr::Iova(iova + 8),
                        access: if write { Access::Write } else { Access::Read },
                    };
                    let sw = viommu::translate_uncached(&tr, &req);
                    assert_eq!(
                        sw,
                        Ok(hw),
                        "the IOMMU let {stream:x?} {iova:#x} (write {write}) through where the engine does not"
                    );
                }
            }
        }
    }

    /// Invariant 3 and the TSM's own memory.
    fn check_isolation(&self, s: &Snapshot) {
        // Both lists are sorted by address: one merge pass pairs each granule with its
        // record in the simulated MMU (`unmapped`).
        let mut unmapped = s.unmapped.iter().peekable();
        for (pa, state, _) in s.granules() {
            let own = pa.0 < DRAM_BASE + TSM_GRANULES * GRANULE_SIZE;
            assert_eq!(
                own,
                state == GranuleState::Reserved,
                "granule {pa:?} is {state:?}"
            );
            assert_eq!(
                unmapped.next_if_eq(&&pa.0).is_none(),
                state == GranuleState::Ns,
                "invariant 3: host reachability of {pa:?} disagrees with its state {state:?}"
            );
        }
        let stray: Vec<_> = unmapped.collect();
        assert!(
            stray.is_empty(),
            "unmapped for the host, not DRAM: {stray:x?}"
        );
    }

    /// Invariants 1 and 2 from the granule table: where an injected DMA was let through to;
    /// and that it went the way its requester sends it.
    fn check_dma(&self, regs: &CallRegs, pa: Pa) {
        let flags = DmaInjectFlags::from_bits_truncate(regs.args[3]);
        let t1 = flags.contains(DmaInjectFlags::T_BIT);
        let state = self.tsm.granules().peek(pa.granule_base()).map(|s| s.0);
        if t1 {
            assert!(
                matches!(state, Ok(GranuleState::Private | GranuleState::Ns)),
                "invariant 2: T=1 DMA {regs:x?} reached {pa:?} in {state:?}"
            );
        } else {
            assert!(
                !matches!(state, Ok(s) if s.is_secure()),
                "invariant 1: T=0 DMA {regs:x?} reached secure {pa:?} ({state:?})"
            );
        }
        // The call succeeded, so requester ID and segment are 16 bits each.
        let (segment, rid) = (regs.args[4] as u16, regs.args[0] as u16);
        let iova = regs.args[2];
        let Some(v) = self.vdevice_of(segment, rid) else {
            assert_eq!(
                pa.0, iova,
                "a host device's DMA {regs:x?} is the identity, but reached {pa:?}"
            );
            return;
        };
        if t1 {
            assert!(
                v.state == VdevState::Run && v.accepted != 0,
                "invariant 2: T=1 DMA {regs:x?} of a vdevice in state {:?} (accepted {})",
                v.state,
                v.accepted
            );
        }
        // Without stage 1 the IOVA is the GPA: the request reaches what the vdevice's TVM maps
        // there, nothing else.
        let pasid = match regs.args[1] {
            NO_PASID => None,
            p => u32::try_from(p).ok(),
        };
        let stage1 = v.viommu_type.stage1_format() != Stage1Format::None;
        if !stage1 || v.pasids.lookup(pasid) == Stage1Root::Bypass {
            let leaf = self.tsm.stage2_lookup(Pa(v.tvm), Gpa(iova));
            assert!(
                leaf.is_ok_and(|l| l.pa == pa.granule_base()),
                "DMA {regs:x?} of a vdevice of TVM {:#x} reached {pa:?}, not what it maps at \
                 {iova:#x}",
                v.tvm
            );
        }
    }

    /// The vdevice requester (`segment`, `rid`) names, found from the PDEV registry and the
    /// PDEV's pBDF table as docs/abi.md §8.2 says (not with the core's lookup).
    fn vdevice_of(&self, segment: u16, rid: u16) -> Option<VdevObj> {
        let range = self.tsm.pdev_ranges().into_iter().find(|r| {
            let rid = u32::from(rid);
            r.segment == segment
                && rid >= u32::from(r.rid_base)
                && rid < u32::from(r.rid_base) + u32::from(r.rid_count)
        })?;
        let p: PdevObj = self.object(range.pdev);
        let slot = p
            .pbdfs
            .iter()
            .find(|s| s.used != 0 && s.pbdf == u32::from(rid))?;
        Some(self.object(Pa(slot.vdev)))
    }

    /// The core's object at `pa`, decoded as the core decodes it: one that does not decode is
    /// a TSM bug, so a finding.
    fn object<O: TryFromBytes + KnownLayout + Immutable>(&self, pa: Pa) -> O {
        let mut bytes = vec![0u8; size_of::<O>()];
        self.sim
            .read(pa, &mut bytes)
            .expect("objects lie in simulated DRAM");
        O::try_read_from_bytes(&bytes).expect("the core's objects decode")
    }

    fn store(&self, input: &mut Input<'_>) {
        let pa = Pa(granule(input.u8()) + u64::from(input.u8() % 63) * 64);
        let bytes: Vec<u8> = match input.u8() % store::COUNT {
            store::TVM => TvmParams {
                gpa_bits: 32 + input.u8() % 17,
                max_vcpus: 1 + u32::from(input.u8() % 4),
                ..TvmParams::new_zeroed()
            }
            .as_bytes()
            .to_vec(),
            store::PDEV => {
                let flags = u64::from(input.u8() & 3);
                let format = input.u8();
                PdevParams {
                    flags,
                    segment: SEGMENTS[usize::from(format >> 1) % SEGMENTS.len()],
                    rid_base: RIDS[0],
                    rid_count: 8,
                    interface_id_format: u32::from(format & 1),
                    ..PdevParams::new_zeroed()
                }
                .as_bytes()
                .to_vec()
            }
            store::VDEV => {
                let pbdf = RIDS[usize::from(input.u8()) % RIDS.len()];
                VdevParams {
                    pbdf,
                    vbdf: VBDFS[usize::from(input.u8()) % VBDFS.len()],
                    function_id: u32::from(pbdf),
                    lock_flags: input.u16() & LockFlags::all().bits(),
                    ..VdevParams::new_zeroed()
                }
                .as_bytes()
                .to_vec()
            }
            store::RAW => {
                let len = usize::from(input.u8());
                input.bytes(len).to_vec()
            }
            _ => {
                // The guest echoes what G_VDEV_INFO wrote into its own (private) page. Only
                // into a PRIVATE granule: a guest writes nothing else in the clear here (its
                // shared pages are the host's, stored above), and a store into a table or an
                // object would be the harness corrupting the TSM's memory, not a guest.
                let page = pa.granule_base();
                let private = self
                    .state
                    .borrow()
                    .granules()
                    .any(|g| g.0 == page && g.1 == GranuleState::Private);
                if !private {
                    return;
                }
                let mut info = VdevInfo::new_zeroed();
                if self.sim.read(page, info.as_mut_bytes()).is_err() {
                    return;
                }
                let ev = AcceptEvidence {
                    nonce: info.nonce,
                    report_digest: info.report_digest,
                    report_counter: info.report_counter,
                    ..AcceptEvidence::new_zeroed()
                };
                self.checked.set(false);
                let _ = self.sim.write(Pa(page.0 + 0x800), ev.as_bytes());
                return;
            }
        };
        // A host store faults on a granule the host cannot reach; that is the MMU at work.
        self.checked.set(false);
        let _ = self.sim.host_write(pa, &bytes);
    }

    /// Carries the request in the COMMUNICATE buffer to the device and continues the operation.
    fn device_round_trip(&self, input: &mut Input<'_>, devices: &mut Devices<'_>) {
        let comm = Pa(granule(input.u8()));
        let answer = input.u8();
        let mut head = CommHeader::new_zeroed();
        if self.sim.host_read(comm, head.as_mut_bytes()).is_err() {
            return;
        }
        let len = usize::try_from(head.request_len)
            .unwrap_or(usize::MAX)
            .min(COMM_PAYLOAD_SIZE);
        let mut req = vec![0u8; len];
        let payload = Pa(comm.0 + COMM_HEADER_SIZE as u64);
        if self.sim.host_read(payload, &mut req).is_err() {
            return;
        }
        let mut rsp = vec![0u8; COMM_PAYLOAD_SIZE];
        let spdm = CommProtocol::from_raw(head.protocol.into())
            .filter(|p| matches!(p, CommProtocol::Spdm | CommProtocol::SecuredSpdm));
        let (n, silent) = match spdm {
            Some(p) => match devices
                .spdm
                .respond(&req, p == CommProtocol::SecuredSpdm, &mut rsp)
            {
                Ok(Reply::Message { len, .. }) => (len, false),
                _ => (0, true),
            },
            None => (devices.tdisp.respond(&req, &mut rsp).unwrap_or(0), false),
        };
        head.response_len = u32::try_from(n).unwrap_or(u32::MAX);
        head.host_status = if answer & 1 == 0 && !silent {
            HostIoStatus::Response.raw()
        } else {
            HostIoStatus::NoResponse.raw()
        };
        self.checked.set(false);
        if self.sim.host_write(comm, head.as_bytes()).is_err()
            || self
                .sim
                .host_write(payload, rsp.get(..n).unwrap_or(&[]))
                .is_err()
        {
            return;
        }
        let regs = CallRegs {
            fid: u64::from(CallId::COMMUNICATE.fid()),
            args: [head.object, comm.0, 0, 0, 0, 0],
        };
        self.call(Origin::Host, &regs);
    }
}

const RANGES: [MmioRange; 2] = [
    MmioRange {
        first_page: 0x8_0000,
        number_of_pages: 4,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    },
    MmioRange {
        first_page: 0x8_0010,
        number_of_pages: 1,
        attributes: RangeAttributes::IS_NON_TEE_MEM,
        range_id: 1,
    },
];

fn tdis() -> [TdiConfig<'static>; 3] {
    let tdi = |rid| TdiConfig {
        interface_id: InterfaceId::new(rid, None),
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID | InterfaceInfo::DMA_WITH_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: &RANGES,
        device_specific_info: &[0xD5; 16],
    };
    [tdi(RIDS[0]), tdi(RIDS[1]), tdi(RIDS[2])]
}

/// The device models behind the COMMUNICATE buffer: TDISP in the clear, and an SPDM responder
/// (with its own TDISP device behind it) for PDEVs with `PdevFlags::SPDM`.
struct Devices<'c> {
    tdisp: Device<'c>,
    spdm: SpdmDevice<'c>,
}

/// The SPDM responder's misbehaviour for a run, from bits 7:5 of the device byte.
fn spdm_misbehaviour(device_byte: u8) -> Option<SpdmMisbehaviour> {
    match device_byte >> 5 {
        1 => Some(SpdmMisbehaviour::BadMeasurementSignature),
        2 => Some(SpdmMisbehaviour::BadKeyExchangeSignature),
        3 => Some(SpdmMisbehaviour::TamperCiphertext),
        4 => Some(SpdmMisbehaviour::ReplayRecord),
        5 => Some(SpdmMisbehaviour::SkipSequenceNumber),
        6 => Some(SpdmMisbehaviour::StopAt(SpdmRequest::KeyUpdate)),
        7 => Some(SpdmMisbehaviour::StopAt(SpdmRequest::GetMeasurements)),
        _ => None,
    }
}

/// The device's identity with its key: derived once per process, not per run (a P-384 scalar
/// multiplication, a quarter of a run's time when every run derived it).
static DEVICE_KEYED: OnceLock<KeyedIdentity> = OnceLock::new();

/// Runs the program in `data`.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let machine = input.u8();
    let format = if machine & 1 != 0 {
        AddressMapFormat::X86_64FourLevel
    } else {
        AddressMapFormat::ArmStage2
    };
    let base = Pa(DRAM_BASE);
    let sim = match (machine >> 1) % 3 {
        0 => SimPlatform::new(base, GRANULES as usize, format),
        1 => SimPlatform::with_iommu(base, GRANULES as usize, format, DmaTableFormat::ArmStage2),
        _ => SimPlatform::with_iommu(
            base,
            GRANULES as usize,
            format,
            DmaTableFormat::VtdSecondLevel,
        ),
    }
    .with_write_log();
    let descs: Vec<AtomicU16> = (0..GRANULES).map(|_| AtomicU16::new(0)).collect();
    let tsm_mem = MemRange {
        base: Pa(DRAM_BASE),
        size: TSM_GRANULES * GRANULE_SIZE,
    };
    for g in 0..TSM_GRANULES {
        sim.unmap_from_host(Pa(DRAM_BASE + g * GRANULE_SIZE))
            .expect("TSM granules are DRAM");
    }
    let iotlb = spin::Mutex::new(tsm_core::viommu::Iotlb::new());
    let tsm = Tsm::new(&sim, sim.dram(), tsm_mem, &descs, &iotlb)
        .expect("the machine's sizes are consistent");
    let m = Machine {
        sim: &sim,
        tsm,
        trace: std::env::var_os("TSM_FUZZ_TRACE").is_some(),
        checked: Cell::new(false),
        state: RefCell::default(),
    };
    m.state.replace(m.snapshot());
    let tdis = tdis();
    let device_byte = input.u8();
    let device = |seed| Device::new(DeviceConfig::new(&tdis, seed)).expect("valid device config");
    let mut spdm = SpdmDevice::with_keyed(
        device([device_byte; 32]),
        DEVICE_KEYED.get_or_init(|| DEVICE.keyed()),
        [!device_byte; 32],
    );
    if let Some(m) = spdm_misbehaviour(device_byte) {
        spdm.enable(m);
    }
    let mut devices = Devices {
        tdisp: device([device_byte; 32]),
        spdm,
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % step::COUNT {
            step::HOST => {
                let regs = call_regs(&mut input, Caller::Host);
                m.call(Origin::Host, &regs);
            }
            step::GUEST => {
                let vcpus = m.vcpus();
                let vcpu = match input.pick(&vcpus) {
                    Some(&v) if input.u8() != 0xFF => v,
                    _ => Pa(granule(input.u8())),
                };
                let regs = call_regs(&mut input, Caller::Guest);
                m.call(Origin::Guest { vcpu }, &regs);
            }
            step::STORE => m.store(&mut input),
            _ => m.device_round_trip(&mut input, &mut devices),
        }
    }
}

/// Host-call step: `call` with `args` given as argument-kind encodings.
fn host(w: &mut Writer, call: CallId, args: &[&[u8]]) {
    let index = calls_of(Caller::Host)
        .iter()
        .position(|c| *c == call)
        .expect("a host call");
    w.u8(step::HOST).u8(index as u8);
    for a in args {
        w.raw(a);
    }
}

fn guest(w: &mut Writer, call: CallId, args: &[&[u8]]) {
    let index = calls_of(Caller::Guest)
        .iter()
        .position(|c| *c == call)
        .expect("a guest call");
    // The first vCPU granule, then the call.
    w.u8(step::GUEST).u8(0).u8(0).u8(index as u8);
    for a in args {
        w.raw(a);
    }
}

/// GPA arguments in the shared half of a 40-bit TVM: its first page and its third.
const SHARED_GPA_0: [u8; 3] = [arg::GPA, 2 | (8 << 2), 0];
const SHARED_GPA_2: [u8; 3] = [arg::GPA, 2 | (8 << 2), 2];

fn g(i: u8) -> [u8; 2] {
    [arg::GRANULE, i]
}

/// Seeds: a TVM with tables, private and shared pages and a vCPU; a PDEV connected and a
/// vdevice bound, accepted and used for DMA through the device model; a PDEV with the same RIDs
/// on another segment, whose RID is a host device; and a teardown.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, x86) in [("arm", 0u8), ("x86", 1)] {
        let mut w = Writer::default();
        w.u8(x86).u8(7);
        // TVM params in granule 10, TVM in 11, root table in 12, tables for GPA 0 in 13..16.
        w.u8(step::STORE).u8(10).u8(0).u8(store::TVM).u8(8).u8(1);
        for i in 11..=16 {
            host(&mut w, CallId::GRANULE_DELEGATE, &[&g(i)]);
        }
        host(&mut w, CallId::TVM_CREATE, &[&g(11), &g(10), &g(12)]);
        for (level, table) in [(1u8, 13u8), (2, 14), (3, 15)] {
            host(
                &mut w,
                CallId::TABLE_CREATE,
                &[&g(11), &[arg::ZERO], &[arg::SMALL, level], &g(table)],
            );
        }
        // Tables for the first 2 MiB of the shared half (the TVM has 40 GPA bits: 1 << 39)
        // in granules 40..43.
        for (level, table) in [(1u8, 40u8), (2, 41), (3, 42)] {
            host(&mut w, CallId::GRANULE_DELEGATE, &[&g(table)]);
            host(
                &mut w,
                CallId::TABLE_CREATE,
                &[&g(11), &SHARED_GPA_0, &[arg::SMALL, level], &g(table)],
            );
        }
        // Private page at GPA 0x1000 (granule 16), shared page at (1 << 39) + 0x2000 (granule 17).
        host(
            &mut w,
            CallId::MAP_PRIVATE,
            &[
                &g(11),
                &[arg::GPA, 0, 1],
                &g(16),
                &[arg::SPECIAL, 6],
                &[arg::SMALL, 3],
            ],
        );
        host(
            &mut w,
            CallId::MAP_SHARED,
            &[&g(11), &SHARED_GPA_2, &g(17), &[arg::SMALL, 3]],
        );
        // vCPU in granule 18.
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(18)]);
        host(
            &mut w,
            CallId::VCPU_CREATE,
            &[&g(11), &g(18), &[arg::GPA, 0, 1], &[arg::ZERO]],
        );
        // PDEV: params in 20, object in 21, comm buffer 22; connect through the device model.
        w.u8(step::STORE).u8(20).u8(0).u8(store::PDEV).u8(0).u8(0);
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(21)]);
        host(&mut w, CallId::PDEV_CREATE, &[&g(21), &g(20)]);
        host(
            &mut w,
            CallId::PDEV_CONNECT,
            &[&g(21), &g(22), &[arg::ZERO]],
        );
        for _ in 0..2 {
            w.u8(step::DEVICE).u8(22).u8(0);
        }
        // vIOMMU (SMMUv3 type) in 23, VDEV params in 24 (pBDF 0x101 → vBDF 0x0008), VDEV in 25.
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(23)]);
        host(
            &mut w,
            CallId::VIOMMU_CREATE,
            &[&g(11), &g(23), &[arg::SPECIAL, 1], &[arg::ZERO]],
        );
        w.u8(step::STORE)
            .u8(24)
            .u8(0)
            .u8(store::VDEV)
            .u8(1)
            .u8(0)
            .u16(LockFlags::NO_FW_UPDATE.bits());
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(25)]);
        host(
            &mut w,
            CallId::VDEV_CREATE,
            &[&g(25), &g(21), &g(23), &g(24)],
        );
        // Bind: LOCK + report; the guest reads the info, echoes the evidence, and accepts.
        host(&mut w, CallId::VDEV_BIND, &[&g(25), &g(22)]);
        for _ in 0..2 {
            w.u8(step::DEVICE).u8(22).u8(0);
        }
        guest(
            &mut w,
            CallId::G_VDEV_INFO,
            &[&[arg::BDF, 4], &[arg::GPA, 0, 1]],
        );
        w.u8(step::STORE).u8(16).u8(0).u8(store::EVIDENCE);
        let evidence_gpa = [arg::RAW, 0, 0x18, 0, 0, 0, 0, 0, 0];
        guest(
            &mut w,
            CallId::G_VDEV_ACCEPT,
            &[&[arg::BDF, 4], &evidence_gpa],
        );
        host(&mut w, CallId::COMMUNICATE, &[&g(25), &g(22)]);
        w.u8(step::DEVICE).u8(22).u8(0);
        // DMA: T=1 and T=0 to the private page and the shared page from the vdevice's RID.
        for (gpa, flags) in [
            ([arg::GPA, 0, 1], 1u8),
            ([arg::GPA, 0, 1], 0),
            (SHARED_GPA_2, 1),
            (SHARED_GPA_2, 2),
        ] {
            host(
                &mut w,
                CallId::TEST_DMA_INJECT,
                &[
                    &[arg::BDF, 1],
                    &[arg::SPECIAL, 4],
                    &gpa,
                    &[arg::SMALL, flags],
                    &[arg::ZERO],
                ],
            );
        }
        // A second PDEV with the same RIDs on segment 1 (params in 26, object in 27): RID 0x101
        // there is another device, with no vdevice: a host device. The vdevice's GPAs are not
        // its memory (T=1 to 0x1000, T=0 to the shared page's GPA fault); host memory by its
        // PA is.
        w.u8(step::STORE)
            .u8(26)
            .u8(0)
            .u8(store::PDEV)
            .u8(0)
            .u8(1 << 1);
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(27)]);
        host(&mut w, CallId::PDEV_CREATE, &[&g(27), &g(26)]);
        let targets: [(&[u8], u8); 3] = [(&[arg::GPA, 0, 1], 1), (&SHARED_GPA_2, 2), (&g(17), 2)];
        for (target, flags) in targets {
            host(
                &mut w,
                CallId::TEST_DMA_INJECT,
                &[
                    &[arg::BDF, 1],
                    &[arg::SPECIAL, 4],
                    target,
                    &[arg::SMALL, flags],
                    &[arg::SEGMENT, 1],
                ],
            );
        }
        guest(&mut w, CallId::G_VDEV_STOP, &[&[arg::BDF, 4]]);
        host(&mut w, CallId::COMMUNICATE, &[&g(25), &g(22)]);
        w.u8(step::DEVICE).u8(22).u8(0);
        // Teardown.
        host(&mut w, CallId::PDEV_DESTROY, &[&g(27)]);
        host(&mut w, CallId::VDEV_DESTROY, &[&g(25)]);
        host(&mut w, CallId::UNMAP, &[&g(11), &[arg::GPA, 0, 1]]);
        host(&mut w, CallId::VCPU_DESTROY, &[&g(18)]);
        out.push((format!("tvm_device_{name}"), w.bytes));
    }
    // On a machine with a platform IOMMU (Arm stage-2 tables under Arm maps, VT-d under x86-64):
    // a vdevice gets a four-granule DMA table, is bound and accepted (its private page then
    // in its table), and the page is unmapped again.
    for (name, machine) in [("arm", 1u8 << 1), ("x86", 1 | 2 << 1)] {
        let mut w = Writer::default();
        w.u8(machine).u8(7);
        w.u8(step::STORE).u8(10).u8(0).u8(store::TVM).u8(8).u8(1);
        for i in 11..=16 {
            host(&mut w, CallId::GRANULE_DELEGATE, &[&g(i)]);
        }
        host(&mut w, CallId::TVM_CREATE, &[&g(11), &g(10), &g(12)]);
        for (level, table) in [(1u8, 13u8), (2, 14), (3, 15)] {
            host(
                &mut w,
                CallId::TABLE_CREATE,
                &[&g(11), &[arg::ZERO], &[arg::SMALL, level], &g(table)],
            );
        }
        let page = [arg::GPA, 0, 1];
        host(
            &mut w,
            CallId::MAP_PRIVATE,
            &[&g(11), &page, &g(16), &[arg::SPECIAL, 6], &[arg::SMALL, 3]],
        );
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(18)]);
        host(
            &mut w,
            CallId::VCPU_CREATE,
            &[&g(11), &g(18), &page, &[arg::ZERO]],
        );
        w.u8(step::STORE).u8(20).u8(0).u8(store::PDEV).u8(0).u8(0);
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(21)]);
        host(&mut w, CallId::PDEV_CREATE, &[&g(21), &g(20)]);
        host(
            &mut w,
            CallId::PDEV_CONNECT,
            &[&g(21), &g(22), &[arg::ZERO]],
        );
        for _ in 0..2 {
            w.u8(step::DEVICE).u8(22).u8(0);
        }
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(23)]);
        host(
            &mut w,
            CallId::VIOMMU_CREATE,
            &[&g(11), &g(23), &[arg::SPECIAL, 1], &[arg::ZERO]],
        );
        w.u8(step::STORE)
            .u8(24)
            .u8(0)
            .u8(store::VDEV)
            .u8(1)
            .u8(0)
            .u16(LockFlags::NO_FW_UPDATE.bits());
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(25)]);
        host(
            &mut w,
            CallId::VDEV_CREATE,
            &[&g(25), &g(21), &g(23), &g(24)],
        );
        for table in 30..34 {
            host(&mut w, CallId::GRANULE_DELEGATE, &[&g(table)]);
            host(&mut w, CallId::VDEV_DMA_TABLE, &[&g(25), &g(table)]);
        }
        host(&mut w, CallId::VDEV_BIND, &[&g(25), &g(22)]);
        for _ in 0..2 {
            w.u8(step::DEVICE).u8(22).u8(0);
        }
        guest(&mut w, CallId::G_VDEV_INFO, &[&[arg::BDF, 4], &page]);
        w.u8(step::STORE).u8(16).u8(0).u8(store::EVIDENCE);
        let evidence_gpa = [arg::RAW, 0, 0x18, 0, 0, 0, 0, 0, 0];
        guest(
            &mut w,
            CallId::G_VDEV_ACCEPT,
            &[&[arg::BDF, 4], &evidence_gpa],
        );
        host(&mut w, CallId::COMMUNICATE, &[&g(25), &g(22)]);
        w.u8(step::DEVICE).u8(22).u8(0);
        // Private MMIO: a page of the report's range 1 at GPA 0x2000, validated, then unmapped
        // by the host (RUN keeps it until then).
        let mmio_gpa = [arg::GPA, 0, 2];
        let device_page = [arg::OUTSIDE, 4, 1];
        host(
            &mut w,
            CallId::VDEV_MMIO_MAP,
            &[&g(25), &mmio_gpa, &device_page],
        );
        guest(
            &mut w,
            CallId::G_VDEV_MMIO_VALIDATE,
            &[&[arg::BDF, 4], &mmio_gpa, &[arg::SMALL, 1], &[arg::ZERO]],
        );
        host(&mut w, CallId::VDEV_MMIO_UNMAP, &[&g(25), &mmio_gpa]);
        host(&mut w, CallId::UNMAP, &[&g(11), &page]);
        out.push((format!("dma_tables_{name}"), w.bytes));
    }
    // An SPDM PDEV (params in 20, object in 21, comm buffer 22, evidence granule 19): connect
    // (the SPDM connect, then TDISP version and capabilities in the session), key update,
    // disconnect, connect again, stop and destroy; with an honest responder, one whose
    // ciphertext is tampered with (the connect fails at FINISH), and one that stops answering
    // at KEY_UPDATE (the session fails half-way: the PDEV goes to ERROR).
    for (name, machine, device) in [
        ("honest_arm", 0u8, 7u8),
        ("honest_x86", 1, 7),
        ("tampered", 0, 3 << 5 | 7),
        ("stops_at_key_update", 1, 6 << 5 | 7),
    ] {
        let mut w = Writer::default();
        w.u8(machine).u8(device);
        w.u8(step::STORE).u8(20).u8(0).u8(store::PDEV).u8(1).u8(0);
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(21)]);
        host(&mut w, CallId::GRANULE_DELEGATE, &[&g(19)]);
        host(&mut w, CallId::PDEV_CREATE, &[&g(21), &g(20)]);
        let connect = |w: &mut Writer| {
            host(w, CallId::PDEV_CONNECT, &[&g(21), &g(22), &g(19)]);
            // VERSION … FINISH (the chain in two portions), TDISP version and capabilities.
            for _ in 0..11 {
                w.u8(step::DEVICE).u8(22).u8(0);
            }
        };
        connect(&mut w);
        host(&mut w, CallId::PDEV_KEY_UPDATE, &[&g(21), &g(22)]);
        for _ in 0..2 {
            w.u8(step::DEVICE).u8(22).u8(0);
        }
        host(&mut w, CallId::PDEV_DISCONNECT, &[&g(21), &g(22)]);
        w.u8(step::DEVICE).u8(22).u8(0);
        connect(&mut w);
        host(&mut w, CallId::PDEV_STOP, &[&g(21)]);
        host(&mut w, CallId::PDEV_DESTROY, &[&g(21)]);
        out.push((format!("spdm_session_{name}"), w.bytes));
    }
    out
}
