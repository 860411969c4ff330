//! The core's side of the secure vIOMMU: the stage-2 lookup, the [`viommu::Context`] the
//! translation engine runs against, the notifications it needs when mappings go away, and
//! the conversion of its faults into the ABI's event records.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_abi::event::{EventFlags, EventReason, GuestEvent, HostEvent};
use tsm_abi::state::VdevState;
use tsm_abi::viommu::{Stage1Format as AbiFormat, ViommuType};
use tsm_platform::{MemFault, PhysMem};
use zerocopy::FromZeros;

use crate::addrmap::{Leaf, MapKind, WalkError};
use crate::objects::{PdevObj, TvmHandle, TvmObj, VdevObj};
use crate::tsm::{Platform, Tsm};
#[cfg(feature = "dma-inject")]
use crate::viommu::Fault;
use crate::viommu::{
    self, Access, FaultReason, GuestFault, HostMapping, Perms, Requester, S2Entry, Stage1Format,
    TvmId, VdevId, VdevView,
};

/// PASIDs per vdevice (FEATURES `QUEUE_LIMITS`).
pub const PASIDS_PER_VDEV: u32 = viommu::PASID_CAPACITY as u32;
/// Event-queue depth (FEATURES `QUEUE_LIMITS`).
pub const EVENT_QUEUE_DEPTH: u16 = viommu::EVENT_QUEUE_CAPACITY as u16;

/// Why a stage-2 lookup found nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum S2Miss {
    /// The handle names no TVM.
    NoTvm,
    /// The GPA is outside the TVM's GPA space.
    OutOfRange,
    /// No table covers the GPA at this level.
    TableMissing(u8),
    /// The leaf entry is invalid.
    NotMapped,
    /// The map holds an entry the TSM never writes, or could not be read.
    Corrupt,
}

fn miss(e: WalkError) -> S2Miss {
    match e {
        WalkError::TableMissing(l) => S2Miss::TableMissing(l),
        WalkError::NotMapped => S2Miss::NotMapped,
        WalkError::Foreign(_) | WalkError::Mem(_) => S2Miss::Corrupt,
    }
}

impl Tsm<'_> {
    /// Stage 2 of `tvm` at `gpa`: the page, its rights, private or shared. The same map the
    /// CPU uses; the TVM's lock is held for the walk, so no map change interleaves.
    pub fn stage2_lookup(&self, tvm: Pa, gpa: Gpa) -> Result<Leaf, S2Miss> {
        let mut tvm_obj = TvmObj::new_zeroed();
        let o = self
            .lock(TvmHandle::new(tvm), 1, &mut tvm_obj)
            .map_err(|_| S2Miss::NoTvm)?;
        self.stage2_of(&o, gpa)
    }

    /// [`Tsm::stage2_lookup`] in a TVM object the caller holds (a guard's, or a snapshot).
    pub(crate) fn stage2_of(&self, o: &TvmObj, gpa: Gpa) -> Result<Leaf, S2Miss> {
        if o.gpa_bits >= 64 || gpa.0 >> o.gpa_bits != 0 {
            return Err(S2Miss::OutOfRange);
        }
        self.map(Pa(o.root))
            .lookup(gpa.granule_base())
            .map_err(miss)
    }

    /// A page of `tvm` at `gpa` was unmapped: cached translations through it must go.
    pub(crate) fn viommu_unmapped(&self, tvm: Pa, gpa: Gpa) {
        self.iotlb
            .lock()
            .invalidate_gpa(TvmId(tvm.0), gpa, GRANULE_SIZE);
    }

    /// The requester of vdevice `v`: its PDEV's segment and its pBDF. `None` only if the PDEV
    /// registry lost the PDEV, which outlives its vdevices (PDEV_DESTROY waits for them).
    pub(crate) fn requester_of(&self, v: &VdevObj) -> Option<Requester> {
        let reg = self.pdevs.lock();
        let range = reg.iter().find(|r| r.pdev == Pa(v.pdev))?;
        Some(Requester {
            segment: range.segment,
            rid: v.params.pbdf,
        })
    }

    /// `pa` changed hands (delegate / undelegate): translations that reached it must go.
    pub(crate) fn viommu_pa_changed(&self, pa: Pa) {
        self.iotlb.lock().invalidate_pa(pa);
    }

    /// The translation engine's view of this monitor.
    pub fn translator(&self) -> Translator<'_, '_> {
        Translator {
            tsm: self,
            mem: MemRef(self.platform),
        }
    }
}

/// Physical memory for stage-1 table reads.
pub struct MemRef<'a>(&'a dyn Platform);

impl PhysMem for MemRef<'_> {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.0.read(pa, out)
    }
    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        self.0.write(pa, data)
    }
    fn zero(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        self.0.zero(pa, len)
    }
}

/// [`viommu::Context`] over the monitor. A translation runs under the IOTLB lock, which is
/// the innermost lock everywhere else, so the callbacks take no granule lock: like an IOMMU
/// reading its tables, they read object snapshots (each checked against the granule's state)
/// and single 8-byte table entries.
pub struct Translator<'t, 'a> {
    tsm: &'t Tsm<'a>,
    mem: MemRef<'a>,
}

impl Tsm<'_> {
    /// The object at `pa` as it is in memory now, if its granule holds an `O`: a read without
    /// the granule's lock, for walks that must not take granule locks (a translation, a DMA
    /// table refresh), as an IOMMU reads its tables.
    pub(crate) fn snapshot<O: crate::objects::Object>(&self, pa: Pa) -> Option<O> {
        if self.granules.peek(pa).ok()?.0 != O::STATE {
            return None;
        }
        let mut o = O::new_zeroed();
        self.platform.read(pa, o.as_mut_bytes()).ok()?;
        Some(o)
    }
}

impl Translator<'_, '_> {
    fn snapshot<O: crate::objects::Object>(&self, pa: Pa) -> Option<O> {
        self.tsm.snapshot(pa)
    }

    /// The vdevice bound to `requester`, by the PDEV registry and that PDEV's pBDF table.
    pub fn vdev_of(&self, requester: Requester) -> Option<Pa> {
        let pdev = self
            .tsm
            .pdevs
            .lock()
            .iter()
            .find(|r| r.contains(requester))?
            .pdev;
        let p: PdevObj = self.snapshot(pdev)?;
        let slot = p
            .pbdfs
            .iter()
            .find(|s| s.used != 0 && s.pbdf == u32::from(requester.rid))?;
        Some(Pa(slot.vdev))
    }
}

/// The translation engine's name for an ABI stage-1 format.
pub(crate) fn stage1_format(f: AbiFormat) -> Stage1Format {
    match f {
        AbiFormat::ArmVmsav8_64_4k => Stage1Format::ArmVmsav8_64_4k,
        AbiFormat::X86_64FirstStage4Level => Stage1Format::X86_64FirstStage4Level,
        AbiFormat::None => Stage1Format::None,
    }
}

/// What the engine knows of vdevice `vdev` (its object `v`) for a request with `pasid`.
pub(crate) fn view_of(vdev: Pa, v: &VdevObj, pasid: Option<u32>) -> VdevView {
    VdevView {
        id: VdevId(vdev.0),
        tvm: TvmId(v.tvm),
        format: ViommuType::from_raw(u64::from(v.viommu_type))
            .map_or(Stage1Format::None, |t| stage1_format(t.stage1_format())),
        tdi_run: v.state == VdevState::Run.raw(),
        accepted: v.accepted != 0,
        stage1: v.pasids.lookup(pasid),
    }
}

/// Stage 2's answer for one mapped page: every page is readable by DMA.
pub(crate) fn s2_entry(leaf: Leaf) -> S2Entry {
    S2Entry {
        pa: leaf.pa,
        perms: Perms {
            read: true,
            write: leaf.perms.write,
        },
        private: leaf.kind == MapKind::Private,
    }
}

impl viommu::Devices for Translator<'_, '_> {
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView> {
        let vdev = self.vdev_of(requester)?;
        let v: VdevObj = self.snapshot(vdev)?;
        Some(view_of(vdev, &v, pasid))
    }

    /// Host devices are not translated by the TSM in this phase: the host domain is the
    /// identity over DRAM, so only the final check (T=0 to secure faults) applies.
    fn host_domain(&self, _requester: Requester, iova: Iova) -> Option<HostMapping> {
        self.tsm
            .granules
            .covers(Pa(iova.0), 1)
            .then_some(HostMapping {
                pa: Pa(iova.0),
                perms: Perms::RW,
            })
    }
}

impl viommu::Stage2 for Translator<'_, '_> {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        let o: TvmObj = self.snapshot(Pa(tvm.0))?;
        self.tsm.stage2_of(&o, gpa).ok().map(s2_entry)
    }
}

impl viommu::SecureMemory for Translator<'_, '_> {
    fn is_secure(&self, pa: Pa) -> bool {
        match self.tsm.granules.peek(pa.granule_base()) {
            Ok((state, _)) => state.is_secure(),
            // Outside tracked DRAM: MMIO or nothing, never a secure granule.
            Err(_) => false,
        }
    }
}

impl<'a> viommu::Context for Translator<'_, 'a> {
    type Mem = MemRef<'a>;
    fn mem(&self) -> &MemRef<'a> {
        &self.mem
    }
}

/// The ABI reason of a fault, and whether it happened on a stage-1 table read.
pub fn event_reason(r: FaultReason) -> (EventReason, bool) {
    use FaultReason::*;
    match r {
        PasidNotConfigured => (EventReason::PasidNotAttached, false),
        S1InputRange => (EventReason::AddressSize, false),
        S1Translation | S1Reserved | S1AddressSize | S1AccessFlag => {
            (EventReason::Stage1Translation, false)
        }
        S1Permission => (EventReason::Stage1Permission, false),
        S1TableNotMapped | S1TableRead => (EventReason::Stage2Translation, true),
        S1TableShared => (EventReason::Stage2Permission, true),
        S2Translation | HostDomain => (EventReason::Stage2Translation, false),
        S2Permission => (EventReason::Stage2Permission, false),
        T0ToSecure => (EventReason::T0ToSecure, false),
        T1NotAllowed | T1NotTvmMemory => (EventReason::T1NotAllowed, false),
        DeviceError => (EventReason::DeviceError, false),
    }
}

/// The flags of `f`'s full record.
fn flags(f: &GuestFault, walk: bool) -> EventFlags {
    let mut flags = EventFlags::empty();
    flags.set(EventFlags::WRITE, f.access == Access::Write);
    flags.set(EventFlags::T_BIT, f.t_bit);
    flags.set(EventFlags::PASID_VALID, f.pasid.is_some());
    flags.set(EventFlags::S1_WALK, walk);
    flags.set(EventFlags::GPA_VALID, f.gpa.is_some());
    flags
}

/// The full record for the owning guest.
pub fn guest_event(f: &GuestFault, v: &VdevObj, sequence: u64) -> GuestEvent {
    let (reason, walk) = event_reason(f.reason);
    GuestEvent {
        vbdf: v.params.vbdf,
        reason: reason.raw(),
        flags: flags(f, walk).bits(),
        pasid: f.pasid.unwrap_or(0),
        iova: f.iova.0,
        virt_id: v.params.virt_id,
        sequence,
        gpa: f.gpa.map_or(0, |g| g.0),
        ..GuestEvent::new_zeroed()
    }
}

/// The sanitized record for the host: no address, no PASID.
pub fn host_event(f: &GuestFault, vdev: u64, requester: Requester, sequence: u64) -> HostEvent {
    let (reason, _) = event_reason(f.reason);
    HostEvent {
        vdev,
        reason: reason.raw(),
        flags: (flags(f, false) & EventFlags::HOST_VISIBLE).bits(),
        rid: requester.rid,
        segment: requester.segment,
        sequence,
        ..HostEvent::new_zeroed()
    }
}

/// Queues a fault of `requester` for its vdevice (guest and host queues) or for the host
/// domain.
#[cfg(feature = "dma-inject")]
pub(crate) fn record_fault(t: &Tsm<'_>, requester: Requester, fault: &Fault) {
    let Some(vdev) = fault.vdev else {
        t.host_domain_events.lock().push(requester, fault);
        return;
    };
    let mut vdev_obj = VdevObj::new_zeroed();
    if let Ok(mut v) = t.lock(
        crate::objects::VdevHandle::new(Pa(vdev.0)),
        1,
        &mut vdev_obj,
    ) {
        v.events.push(fault);
        v.host_events.push(fault);
        let _ = v.save();
    }
}
