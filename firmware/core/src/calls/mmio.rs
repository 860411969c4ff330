//! Host calls for private MMIO: VDEV_MMIO_MAP and VDEV_MMIO_UNMAP (docs/abi.md §5.7,
//! [`crate::private_mmio`]). The guest's side, G_VDEV_MMIO_VALIDATE, is in [`super::guest`].

use tsm_abi::addr::Pa;
use tsm_abi::call::args;
use tsm_abi::regs::CallResult;
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};

use crate::addrmap::MapKind;
use crate::calls::memory::{check_page_gpa, free_leaf_slot};
use crate::dispatch::Reply;
use crate::granule::GranuleState;
use crate::objects::{Handle, Room, VdevHead, VdevLinks, internal};
use crate::private_mmio::{MAX_MMIO_PAGES, MmioPage, locate, refused};
use crate::tsm::Tsm;

/// VDEV_MMIO_MAP: the page at host PA `pa`, inside a TEE range of the vdevice's interface
/// report, goes out of the host's address space and into the TVM at private `gpa`, unvalidated.
pub fn vdev_mmio_map(t: &Tsm<'_>, a: args::VdevMmioMap) -> Reply {
    let (vdev, gpa, pa) = (a.vdev, a.gpa, a.pa);
    let (mut tvm_room, mut vdev_room) = (Room::new(), Room::new());
    let (o, v) = t.lock_with_parent(
        Handle::<VdevHead>::new(vdev),
        1,
        VdevLinks::tvm,
        (&mut tvm_room, &mut vdev_room),
    )?;
    if !matches!(v.state, VdevState::Locked | VdevState::Run) {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    check_page_gpa(&o, gpa, MapKind::Private, 2)?;
    if !pa.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 3));
    }
    let mut m = t.mmio_record(vdev)?;
    if m.mapped().iter().any(|p| p.pa == pa.0) {
        return Err(Status::arg(StatusCode::AlreadyMapped, 3));
    }
    let offset = v.params.mmio_reporting_offset;
    if t.with_report(vdev, &v, |r| locate(r, offset, pa))?
        .is_none()
    {
        return Err(Status::arg(StatusCode::OutOfRange, 3));
    }
    let n = m.mapped().len();
    if n >= MAX_MMIO_PAGES {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    let table = free_leaf_slot(t, &o, gpa)?;
    let mut gl = t
        .granules
        .lock_in(table, GranuleState::Table)
        .map_err(|_| internal())?;
    // The last check, and the first change: the host loses the page (TLBs invalidated) before
    // the TVM can ever reach it.
    t.platform
        .take_mmio_from_host(pa)
        .map_err(|e| refused(e, 3))?;
    let page = MmioPage {
        gpa: gpa.0,
        pa: pa.0,
    };
    *m.pages.get_mut(n).ok_or_else(internal)? = page;
    m.count = m.count.checked_add(1).ok_or_else(internal)?;
    t.write_mmio_entry(Pa(o.root), table, page, false)?;
    t.set_mmio_record(vdev, &m)?;
    gl.get().map_err(|_| internal())?;
    Ok(CallResult::ok([0; 4]))
}

/// VDEV_MMIO_UNMAP: the vdevice's MMIO page at `gpa` leaves the TVM (every CPU's translation
/// dropped) and goes back to the host; returns its PA.
pub fn vdev_mmio_unmap(t: &Tsm<'_>, a: args::VdevMmioUnmap) -> Reply {
    let (vdev, gpa) = (a.vdev, a.gpa);
    if !gpa.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 2));
    }
    let mut vdev_room = Room::new();
    let _v = t.lock(Handle::<VdevHead>::new(vdev), 1, &mut vdev_room)?;
    let mut m = t.mmio_record(vdev)?;
    let i = Tsm::mmio_find(&m, gpa, 2)?;
    let pa = t.mmio_release(&mut m, i)?;
    t.set_mmio_record(vdev, &m)?;
    Ok(CallResult::ok([pa.0, 0, 0, 0]))
}
