//! Device objects: PDEV_CREATE / STOP / DESTROY, VIOMMU_CREATE / DESTROY, VDEV_CREATE /
//! GET_STATE / DESTROY. The device-I/O calls are in [`super::comm`].
//!
//! Parents are locked before children (TVM → VIOMMU → PDEV → VDEV); a call that starts from a
//! child reads its links, locks the family in order and re-checks them
//! (`Tsm::lock_family`, `Tsm::lock_with_parent`).

use tsm_abi::addr::Pa;
use tsm_abi::call::args;
use tsm_abi::params::{PdevFlags, PdevParams, VdevParams};
use tsm_abi::regs::CallResult;
use tsm_abi::state::{DeviceOp, PdevState, VdevState};
use tsm_abi::status::{ObjectKind, Status, StatusCode};
use tsm_abi::viommu::{ViommuType, ViommuTypeError};

use crate::calls::comm::release_evidence;
use crate::calls::session;
use crate::calls::system::ACCEPTED_LOCK_FEATURES;
use crate::dispatch::Reply;
use crate::dma_tables::stream;
use crate::granule::GranuleState;
use crate::objects::{
    self, Child, Guard, Handle, MAX_VDEVS_PER_PDEV, MAX_VDEVS_PER_TVM, MAX_VIOMMUS_PER_TVM,
    PbdfSlot, PdevHandle, PdevHead, PdevObj, Room, TvmHandle, TvmLink, VbdfSlot, VdevFamily,
    VdevFamilyRooms, VdevHandle, VdevHeadStart, VdevLinks, ViommuHandle, ViommuObj, internal,
};
use crate::spdm::requester::Requester as SpdmRequester;
use crate::tsm::{PdevRange, Tsm};
use crate::viommu::{self, Requester};

const OK: Reply = Ok(CallResult::ok([0; 4]));

/// PDEV_CREATE: a PDEV for a DSM and its requester-ID range (which no other PDEV may overlap).
pub fn pdev_create(t: &Tsm<'_>, a: args::PdevCreate) -> Reply {
    let pdev = a.pdev;
    let params: PdevParams = t.read_params(a.params, 2)?;
    params
        .validate()
        .map_err(|_| Status::arg(StatusCode::InvalidArgument, 2))?;
    if params.pdev_flags().contains(PdevFlags::IDE) {
        // IDE streams are not programmed yet (FEATURES SECURITY.IDE_STREAM = 0).
        return Err(Status::arg(StatusCode::NotSupported, 2));
    }
    let mut g = t.granules.lock(pdev).map_err(|e| e.status(1))?;
    g.state()
        .check_transition(GranuleState::Pdev)
        .map_err(|e| e.status(1))?;
    let range = PdevRange {
        pdev,
        segment: params.segment,
        rid_base: params.rid_base,
        rid_count: params.rid_count,
    };
    let mut reg = t.pdevs.lock();
    if reg.iter().any(|r| r.overlaps(&range)) {
        return Err(Status::arg(StatusCode::BdfInUse, 2));
    }
    if reg.is_full() {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    objects::save_new(t, &g, &PdevObj::new(params))?;
    reg.push(range)
        .map_err(|_| Status::arg(StatusCode::Capacity, 1))?;
    g.transition(GranuleState::Pdev).map_err(|e| e.status(1))?;
    OK
}

/// Whether a vdevice in `state` holds its TDI bound (a PDEV stop would silently unbind it).
pub(crate) fn is_bound(state: VdevState) -> bool {
    !matches!(state, VdevState::Unlocked | VdevState::Error)
}

/// Refuses (`InUse`, a VDEV) while a vdevice of the PDEV holds its TDI bound.
pub(crate) fn refuse_bound(t: &Tsm<'_>, p: &Guard<'_, '_, PdevHead>) -> Result<(), Status> {
    for i in 0..usize::try_from(p.vdevs).map_err(|_| internal())? {
        let slot = p.pbdf(i)?;
        let mut vdev_room = Room::new();
        let v = t
            .lock(VdevHandle::new(Pa(slot.vdev)), 1, &mut vdev_room)
            .map_err(|_| internal())?;
        if is_bound(v.state) {
            return Err(Status::arg(StatusCode::InUse, ObjectKind::Vdev as u8));
        }
    }
    Ok(())
}

/// PDEV_STOP: READY / ERROR / NEW → STOPPED, refused while a vdevice is bound or an operation
/// is pending. An SPDM session is abandoned, its keys erased (PDEV_DISCONNECT ends it with the
/// device first).
pub fn pdev_stop(t: &Tsm<'_>, a: args::PdevStop) -> Reply {
    let mut pdev_room = Room::new();
    let mut o = t.lock(Handle::<PdevHead>::new(a.pdev), 1, &mut pdev_room)?;
    if o.op != DeviceOp::None || o.state == PdevState::Stopped {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    refuse_bound(t, &o)?;
    if session::uses_spdm(&o) {
        session::store(t, &o, &SpdmRequester::new())?;
    }
    o.state = PdevState::Stopped;
    o.save()?;
    OK
}

/// PDEV_DESTROY: only with no vdevice and no pending operation; the evidence granule goes back
/// to DELEGATED, scrubbed, with the PDEV's.
pub fn pdev_destroy(t: &Tsm<'_>, a: args::PdevDestroy) -> Reply {
    let mut pdev_room = Room::new();
    let mut o = t.lock(PdevHandle::new(a.pdev), 1, &mut pdev_room)?;
    if o.vdevs != 0 || o.refcount() != 0 {
        return Err(Status::arg(StatusCode::InUse, ObjectKind::Vdev as u8));
    }
    if o.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    release_evidence(t, &mut o)?;
    let mut reg = t.pdevs.lock();
    reg.retain(|r| r.pdev != o.pa());
    o.destroy()?;
    OK
}

/// VIOMMU_CREATE: a typed secure vIOMMU for a TVM. Only TSM types are accepted (invariant 6).
pub fn viommu_create(t: &Tsm<'_>, a: args::ViommuCreate) -> Reply {
    let viommu = a.viommu;
    let vtype = ViommuType::try_from(a.vtype).map_err(|e| match e {
        ViommuTypeError::NotTsm(_) => Status::arg(StatusCode::ViommuTypeNotTsm, 3),
        ViommuTypeError::Unknown(_) => Status::arg(StatusCode::ViommuTypeUnknown, 3),
    })?;
    if !t.supports_viommu(vtype) {
        return Err(Status::arg(StatusCode::ViommuTypeNotTsm, 3));
    }
    if a.flags != 0 {
        return Err(Status::arg(StatusCode::InvalidArgument, 4));
    }
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    if o.viommus >= MAX_VIOMMUS_PER_TVM {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    if viommu == o.pa() {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    let mut gv = t.granules.lock(viommu).map_err(|e| e.status(2))?;
    gv.state()
        .check_transition(GranuleState::Viommu)
        .map_err(|e| e.status(2))?;
    if o.refcount() >= crate::granule::MAX_REFCOUNT {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    o.viommus = o
        .viommus
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 1))?;
    let obj = ViommuObj {
        tvm: o.pa().0,
        vtype,
        flags: 0,
        vdevs: 0,
    };
    objects::save_new(t, &gv, &obj)?;
    o.save()?;
    o.get().map_err(|_| Status::arg(StatusCode::Capacity, 1))?;
    gv.transition(GranuleState::Viommu)
        .map_err(|e| e.status(2))?;
    OK
}

/// VIOMMU_DESTROY: refused while vdevices use it.
pub fn viommu_destroy(t: &Tsm<'_>, a: args::ViommuDestroy) -> Reply {
    let viommu = a.viommu;
    let (mut tvm_room, mut viommu_room) = (Room::new(), Room::new());
    let (mut o, mut v) = t.lock_with_parent(
        ViommuHandle::new(viommu),
        1,
        TvmLink::tvm,
        (&mut tvm_room, &mut viommu_room),
    )?;
    if v.vdevs != 0 || v.refcount() != 0 {
        return Err(Status::arg(StatusCode::InUse, ObjectKind::Vdev as u8));
    }
    o.viommus = o.viommus.checked_sub(1).ok_or_else(internal)?;
    o.save()?;
    t.scrub(viommu)?;
    o.put().map_err(|_| internal())?;
    v.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    OK
}

/// VDEV_CREATE: the vPCI function `pBDF → vBDF` of the vIOMMU's TVM, in UNLOCKED.
pub fn vdev_create(t: &Tsm<'_>, a: args::VdevCreate) -> Reply {
    let (vdev, pdev, viommu) = (a.vdev, a.pdev, a.viommu);
    let params: VdevParams = t.read_params(a.params, 4)?;
    params
        .validate()
        .map_err(|_| Status::arg(StatusCode::InvalidArgument, 4))?;
    if !ACCEPTED_LOCK_FEATURES.lock_flags().contains(params.lock()) {
        return Err(Status::arg(StatusCode::InvalidArgument, 4));
    }
    // The vIOMMU names the TVM, which comes first in the lock order: the vIOMMU locked and
    // read once, its TVM tried under it (`lock_with_parent`), rather than its links read under
    // one lock and the vIOMMU locked and read again after the TVM. Only the TVM's head: of its
    // slot table only the slots in use (the first `vdevs`, none in a TVM without vdevices) are
    // read below, and one slot is written; the same for the PDEV's.
    let (mut tvm_room, mut viommu_room) = (Room::new(), Room::new());
    let (mut to, mut io) = t.lock_with_parent(
        ViommuHandle::new(viommu),
        3,
        TvmLink::tvm_head,
        (&mut tvm_room, &mut viommu_room),
    )?;
    let tvm = io.links().tvm();
    // Before locking the PDEV and VDEV: one naming a granule this call holds would wait for
    // itself.
    if pdev == tvm.pa() || pdev == io.pa() {
        return Err(Status::arg(StatusCode::BadHandle, 2));
    }
    if vdev == tvm.pa() || vdev == io.pa() || vdev == pdev {
        return Err(Status::arg(StatusCode::GranuleState, 1));
    }
    let mut pdev_room = Room::new();
    let mut po = t.lock(Handle::<PdevHead>::new(pdev), 2, &mut pdev_room)?;
    if po.state != PdevState::Ready {
        return Err(Status::arg(StatusCode::ObjectState, 2));
    }
    let mut gv = t.granules.lock(vdev).map_err(|e| e.status(1))?;
    gv.state()
        .check_transition(GranuleState::Vdev)
        .map_err(|e| e.status(1))?;
    if !po.params.contains_rid(params.pbdf) {
        return Err(Status::arg(StatusCode::BdfOutOfRange, 4));
    }
    if params.function_id != po.params.function_id(params.pbdf) {
        return Err(Status::arg(StatusCode::InvalidArgument, 4));
    }
    if io.vtype == ViommuType::TsmNoViommu && params.virt_id != 0 {
        return Err(Status::arg(StatusCode::InvalidArgument, 4));
    }
    // The next free slot of each table is the one after those in use.
    let pslot = usize::try_from(po.vdevs).map_err(|_| internal())?;
    let tslot = usize::try_from(to.vdevs).map_err(|_| internal())?;
    for i in 0..pslot {
        if po.pbdf(i)?.pbdf == u32::from(params.pbdf) {
            return Err(Status::arg(StatusCode::BdfInUse, 4));
        }
    }
    for i in 0..tslot {
        if to.vbdf(i)?.vbdf == u32::from(params.vbdf) {
            return Err(Status::arg(StatusCode::BdfInUse, 4));
        }
    }
    if pslot >= MAX_VDEVS_PER_PDEV {
        return Err(Status::arg(StatusCode::Capacity, 2));
    }
    if tslot >= MAX_VDEVS_PER_TVM {
        return Err(Status::arg(StatusCode::Capacity, 3));
    }
    let full = crate::granule::MAX_REFCOUNT;
    if to.refcount() >= full || io.refcount() >= full {
        return Err(Status::arg(StatusCode::Capacity, 3));
    }
    if po.refcount() >= full {
        return Err(Status::arg(StatusCode::Capacity, 2));
    }
    // From now on the engine treats the pBDF as the vdevice's: so does the platform IOMMU.
    let requester = Requester {
        segment: po.params.segment,
        rid: params.pbdf,
    };
    // Each count is bounded by its object's granule refcount (checked above); a full count is
    // refused like a full refcount.
    po.vdevs = po
        .vdevs
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 2))?;
    to.vdevs = to
        .vdevs
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 3))?;
    io.vdevs = io
        .vdevs
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 3))?;
    let links = VdevLinks::new(tvm, PdevHandle::new(pdev), io.handle());
    // Built in place: a delegated granule holds what the host put there, so the object and its
    // MMIO and DMA records are zeroed, then the head's non-zero start, the MMIO record's root
    // and (`dma_stream_create`) the DMA record's tag written.
    let start = VdevHeadStart::new(links, params, io.vtype, po.tdisp_version);
    t.dma_stream_create(vdev, stream(requester), || {
        objects::save_new_vdev(t, &gv, &start)?;
        t.init_mmio_record(vdev, Pa(to.root))
    })?;
    // The PDEV and the TVM changed only their count and the new slot: those words are stored
    // in place, not the heads written back whole. The vIOMMU is 24 bytes, one write either way.
    po.save_added_pbdf(&PbdfSlot {
        vdev: vdev.0,
        pbdf: u32::from(params.pbdf),
        used: 1,
    })?;
    io.save()?;
    to.save_added_vbdf(&VbdfSlot {
        vdev: vdev.0,
        vbdf: u32::from(params.vbdf),
        used: 1,
    })?;
    to.get().map_err(|_| Status::arg(StatusCode::Capacity, 3))?;
    io.get().map_err(|_| Status::arg(StatusCode::Capacity, 3))?;
    po.get().map_err(|_| Status::arg(StatusCode::Capacity, 2))?;
    gv.transition(GranuleState::Vdev).map_err(|e| e.status(1))?;
    OK
}

/// VDEV_GET_STATE: state and pending operation.
pub fn vdev_get_state(t: &Tsm<'_>, a: args::VdevGetState) -> Reply {
    let mut vdev_room = Room::new();
    let v = t.lock(VdevHandle::new(a.vdev), 1, &mut vdev_room)?;
    Ok(CallResult::ok([
        u64::from(v.state.raw()),
        u64::from(v.op.raw()),
        0,
        0,
    ]))
}

/// VDEV_DESTROY: only an UNLOCKED or ERROR vdevice with no pending operation.
pub fn vdev_destroy(t: &Tsm<'_>, a: args::VdevDestroy) -> Reply {
    let vdev = a.vdev;
    let mut rooms = VdevFamilyRooms::default();
    let VdevFamily {
        tvm: mut to,
        viommu: mut io,
        pdev: mut po,
        vdev: mut v,
    } = t.lock_family(VdevHandle::new(vdev), 1, &mut rooms)?;
    if is_bound(v.state) || v.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    po.release_pbdf(vdev.0)?;
    to.release_vbdf(vdev.0)?;
    io.vdevs = io.vdevs.checked_sub(1).ok_or_else(internal)?;
    t.iotlb.lock().invalidate_vdev(viommu::VdevId(vdev.0));
    let requester = Requester {
        segment: po.params.segment,
        rid: v.params.pbdf,
    };
    t.dma_stream_destroy(vdev, stream(requester))?;
    po.save()?;
    io.save()?;
    to.save()?;
    t.scrub(vdev)?;
    to.put().map_err(|_| internal())?;
    io.put().map_err(|_| internal())?;
    po.put().map_err(|_| internal())?;
    v.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    OK
}

const _: () =
    assert!(MAX_VDEVS_PER_PDEV <= u16::MAX as usize && MAX_VDEVS_PER_TVM <= u16::MAX as usize);
