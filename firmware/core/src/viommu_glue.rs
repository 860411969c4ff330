//! The core's side of the secure vIOMMU: the stage-2 lookup, the [`viommu::Context`] the
//! translation engine runs against, the notifications it needs when mappings go away, and
//! the conversion of its faults into the ABI's event records.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_abi::event::{EventFlags, EventReason, GuestEvent, HostEvent};
use tsm_abi::state::VdevState;
use tsm_abi::viommu::Stage1Format as AbiFormat;
use tsm_platform::{DmaFault, DmaFaultKind, MemFault, PhysMem};
use zerocopy::FromZeros;

use crate::addrmap::{Leaf, MapKind, WalkError};
use crate::objects::{self, Object, PdevObj, Room, TvmHandle, TvmObj, VdevHandle, VdevObj};
use crate::tsm::{Platform, Tsm};
use crate::viommu::{
    self, Access, Fault, FaultReason, GuestFault, HostFault, HostMapping, Perms, Requester,
    S2Entry, Stage1Format, TvmId, VdevId, VdevView,
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
        let mut tvm_room = Room::new();
        let o = self
            .lock(TvmHandle::new(tvm), 1, &mut tvm_room)
            .map_err(|_| S2Miss::NoTvm)?;
        self.stage2_of(&o, gpa)
    }

    /// [`Tsm::stage2_lookup`] in a TVM object the caller holds (a guard's, or a snapshot).
    pub(crate) fn stage2_of(&self, o: &TvmObj, gpa: Gpa) -> Result<Leaf, S2Miss> {
        if o.gpa_bits >= 64 || gpa.0 >> o.gpa_bits != 0 {
            return Err(S2Miss::OutOfRange);
        }
        match self.map(Pa(o.root)).lookup(gpa.granule_base()) {
            // No peer-to-peer DMA (docs/abi.md §15): a vdevice's MMIO page is no DMA target,
            // for DMA it is as if nothing were mapped there.
            Ok(Leaf {
                kind: MapKind::Mmio { .. },
                ..
            }) => Err(S2Miss::NotMapped),
            r => r.map_err(miss),
        }
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

    /// Moves the DMA faults the platform IOMMU recorded into the event queues, where EVENT_READ
    /// and G_EVENT_READ find them (each calls this first, before taking any granule lock). A
    /// fault of a vdevice's stream (blocked or attached to its DMA table from VDEV_CREATE on)
    /// goes to that vdevice's queues, full for the guest and sanitized for the host, as the
    /// software engine's do ([`Tsm::vdevice_fault`]); any other stream is in the host domain and
    /// its fault goes to the host-domain queue with its requester (docs/design.md "The platform
    /// IOMMU", faults).
    pub(crate) fn drain_platform_faults(&self) {
        self.platform.drain_faults(&mut |f| {
            let requester = Requester {
                segment: f.stream.segment,
                rid: f.stream.rid,
            };
            if let Some(vdev) = self.translator().vdev_of(requester)
                && self.vdevice_fault(vdev, requester, &f)
            {
                return;
            }
            let fault = self.host_domain_fault(&f);
            self.host_domain_events.lock().push(requester, &fault);
        });
    }

    /// Queues the IOMMU's fault `f` of `requester` for the vdevice at `vdev`, under its lock.
    /// The record says what the engine says of the same request (no PASID, the T bit of the
    /// view the table holds) when the fault is read: its reason, level and GPA. The engine
    /// translating it means the table lacked the page (past its bounds, no table donated yet,
    /// or a change since the request): reported as the table's own refusal, stage 2 of the
    /// vdevice as the hardware walks it, with no GPA. False if `requester` is no longer that
    /// vdevice's (destroyed in between: its stream is back in the host domain).
    fn vdevice_fault(&self, vdev: Pa, requester: Requester, f: &DmaFault) -> bool {
        let mut room = Room::new();
        let Ok(mut v) = self.lock(VdevHandle::new(vdev), 1, &mut room) else {
            return false;
        };
        if self.requester_of(&v) != Some(requester) {
            return false;
        }
        let access = if f.write { Access::Write } else { Access::Read };
        let req = viommu::Request {
            requester,
            pasid: None,
            t_bit: crate::dma_tables::t1_view(&v),
            iova: Iova(f.iova),
            access,
        };
        let fault = match viommu::translate_uncached(&self.translator(), &req) {
            Err(fault) => fault,
            Ok(_) => Fault {
                vdev: Some(VdevId(vdev.0)),
                reason: match f.kind {
                    DmaFaultKind::Permission => FaultReason::S2Permission,
                    DmaFaultKind::AddressSize => FaultReason::S1InputRange,
                    DmaFaultKind::Translation | DmaFaultKind::Other => FaultReason::S2Translation,
                },
                level: None,
                gpa: None,
                iova: req.iova,
                pasid: None,
                access,
                t_bit: req.t_bit,
            },
        };
        v.events.push(&fault);
        v.host_events.push(&fault);
        // A save fails only on a platform memory fault (TSM memory): the fault is lost, as
        // with a full queue.
        let _ = v.save();
        true
    }

    /// A platform IOMMU fault in the host domain, as the core's fault. The host domain maps all
    /// of the host's DRAM, so a request that found no translation aimed at memory the host does
    /// not own: a secure granule (T0_TO_SECURE, what the software engine says of a host
    /// device's DMA there) or no DRAM at all (S2_TRANSLATION through [`FaultReason::HostDomain`],
    /// as is anything else the IOMMU refused). *Why any granule of DRAM, not only one secure
    /// now:* the fault is read after the request, and another CPU may have undelegated the
    /// granule in between (the `smp4` scenario caught that); the host domain maps every granule
    /// of DRAM read/write except while it is secure (or the TSM's), so a translation or
    /// permission refusal there was T=0 to secure memory. Permission too, because VT-d reports
    /// a missing entry as a refused read or write, and the HAL can tell the two apart only by
    /// walking the tables as they are when the fault is read.
    fn host_domain_fault(&self, f: &DmaFault) -> Fault {
        let in_dram = || self.granules.peek(Pa(f.iova).granule_base()).is_ok();
        let reason = match f.kind {
            DmaFaultKind::Translation | DmaFaultKind::Permission if in_dram() => {
                FaultReason::T0ToSecure
            }
            DmaFaultKind::Translation
            | DmaFaultKind::Permission
            | DmaFaultKind::AddressSize
            | DmaFaultKind::Other => FaultReason::HostDomain,
        };
        Fault {
            vdev: None,
            reason,
            level: None,
            gpa: None,
            iova: Iova(f.iova),
            pasid: None,
            access: if f.write { Access::Write } else { Access::Read },
            t_bit: false,
        }
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
    /// The object at `pa` as it is in memory now, read into `room`, if its granule holds an `O`
    /// and it decodes: a read without the granule's lock, for walks that must not take granule
    /// locks (a translation, a DMA table refresh), as an IOMMU reads its tables.
    pub(crate) fn snapshot<'r, O: Object>(&self, pa: Pa, room: &'r mut Room<O>) -> Option<&'r O> {
        if self.granules.peek(pa).ok()?.0 != O::STATE {
            return None;
        }
        objects::read_decoded(self.platform, pa, room)
            .ok()
            .map(|o| &*o)
    }
}

impl Translator<'_, '_> {
    fn snapshot<'r, O: Object>(&self, pa: Pa, room: &'r mut Room<O>) -> Option<&'r O> {
        self.tsm.snapshot(pa, room)
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
        let mut room = Room::new();
        let p: &PdevObj = self.snapshot(pdev, &mut room)?;
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
        format: stage1_format(v.viommu_type.stage1_format()),
        tdi_run: v.state == VdevState::Run,
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
        let mut room = Room::new();
        let v: &VdevObj = self.snapshot(vdev, &mut room)?;
        Some(view_of(vdev, v, pasid))
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
        let mut room = Room::new();
        let o: &TvmObj = self.snapshot(Pa(tvm.0), &mut room)?;
        self.tsm.stage2_of(o, gpa).ok().map(s2_entry)
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
pub fn host_event(f: &HostFault, vdev: u64, requester: Requester, sequence: u64) -> HostEvent {
    let (reason, _) = event_reason(f.reason);
    let mut flags = EventFlags::empty();
    flags.set(EventFlags::WRITE, f.access == Access::Write);
    flags.set(EventFlags::T_BIT, f.t_bit);
    HostEvent {
        vdev,
        reason: reason.raw(),
        flags: (flags & EventFlags::HOST_VISIBLE).bits(),
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
    let mut vdev_room = Room::new();
    if let Ok(mut v) = t.lock(
        crate::objects::VdevHandle::new(Pa(vdev.0)),
        1,
        &mut vdev_room,
    ) {
        v.events.push(fault);
        v.host_events.push(fault);
        let _ = v.save();
    }
}
