//! Memory calls: delegation, TVM lifecycle, translation tables, private and shared mappings.
//!
//! Every handler checks everything before it changes anything: locks are taken (in the order
//! of [`crate::granule`]), arguments and states are checked, and only then are objects saved
//! and granule transitions staged; the guards publish them on drop.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::call::args;
use tsm_abi::params::{MapFlags, NO_SOURCE, TvmParams};
use tsm_abi::regs::CallResult;
use tsm_abi::state::TvmState;
use tsm_abi::status::{ObjectKind, Status, StatusCode};
use tsm_platform::UnmapRefused;

use crate::addrmap::format::Entry;
use crate::addrmap::{self, LEAF_LEVEL, Leaf, MapKind, Perms, WalkError, table_span};
use crate::dispatch::Reply;
use crate::granule::GranuleState;
use crate::objects::{self, Handle, Room, TvmHandle, TvmHead, TvmObj, internal};
use crate::tsm::Tsm;

const OK: Reply = Ok(CallResult::ok([0; 4]));

/// GRANULE_DELEGATE: NS → DELEGATED; the host loses access before the call returns.
pub fn granule_delegate(t: &Tsm<'_>, a: args::GranuleDelegate) -> Reply {
    let pa = a.pa;
    // Only host memory can be delegated. The state machine also has owned → DELEGATED edges
    // (object destroy, unmap), so checking the edge alone would let the host "delegate" a
    // mapped private page or a live object and then undelegate it back into its own hands.
    let mut g = t
        .granules
        .lock_in(pa, GranuleState::Ns)
        .map_err(|e| e.status(1))?;
    if g.refcount() != 0 {
        // Mapped shared into a TVM: delegating it would put a secure granule in a TVM's
        // shared window.
        return Err(Status::arg(StatusCode::GranuleState, 1));
    }
    t.platform.unmap_from_host(pa).map_err(|e| match e {
        UnmapRefused::NoSplitTable => Status::arg(StatusCode::Capacity, 1),
        UnmapRefused::NotHostMemory => Status::arg(StatusCode::OutOfRange, 1),
    })?;
    t.viommu_pa_changed(pa);
    g.transition(GranuleState::Delegated)
        .map_err(|e| e.status(1))?;
    OK
}

/// GRANULE_UNDELEGATE: DELEGATED → NS, scrubbed before the host gets it back.
pub fn granule_undelegate(t: &Tsm<'_>, a: args::GranuleUndelegate) -> Reply {
    let pa = a.pa;
    let mut g = t.granules.lock(pa).map_err(|e| e.status(1))?;
    if g.state() != GranuleState::Delegated {
        return Err(Status::arg(StatusCode::GranuleState, 1));
    }
    t.scrub(pa)?;
    t.platform
        .map_to_host(pa)
        .map_err(|_| Status::arg(StatusCode::OutOfRange, 1))?;
    t.viommu_pa_changed(pa);
    g.transition(GranuleState::Ns).map_err(|e| e.status(1))?;
    OK
}

/// TVM_CREATE: a TVM object and its root table, from two delegated granules.
pub fn tvm_create(t: &Tsm<'_>, a: args::TvmCreate) -> Reply {
    let (tvm, root) = (a.tvm, a.root);
    let params: TvmParams = t.read_params(a.params, 2)?;
    params
        .validate()
        .map_err(|_| Status::arg(StatusCode::InvalidArgument, 2))?;
    if params.gpa_bits < addrmap::MIN_GPA_BITS || params.gpa_bits > t.max_gpa_bits() {
        return Err(Status::arg(StatusCode::InvalidArgument, 2));
    }
    let (mut gt, mut gr) = t.lock_pair((tvm, 1), (root, 3))?;
    gt.state()
        .check_transition(GranuleState::Tvm)
        .map_err(|e| e.status(1))?;
    gr.state()
        .check_transition(GranuleState::Table)
        .map_err(|e| e.status(3))?;
    t.scrub(root)?;
    let obj = TvmObj::new(root, params.gpa_bits, u64::from(params.max_vcpus));
    objects::save_new(t, &gt, &obj)?;
    gt.transition(GranuleState::Tvm).map_err(|e| e.status(1))?;
    gr.transition(GranuleState::Table)
        .map_err(|e| e.status(3))?;
    OK
}

/// TVM_ACTIVATE: NEW → ACTIVE.
pub fn tvm_activate(t: &Tsm<'_>, a: args::TvmActivate) -> Reply {
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    if o.state != TvmState::New {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    o.state = TvmState::Active;
    o.save()?;
    OK
}

/// Why a TVM cannot be destroyed yet: the first kind of child it still has.
pub(crate) fn tvm_children(o: &TvmHead) -> Option<ObjectKind> {
    if o.vcpus != 0 {
        Some(ObjectKind::Vcpu)
    } else if o.vdevs != 0 {
        Some(ObjectKind::Vdev)
    } else if o.viommus != 0 {
        Some(ObjectKind::Viommu)
    } else if o.private_pages != 0 {
        Some(ObjectKind::PrivatePage)
    } else if o.tables != 0 || o.shared_pages != 0 {
        Some(ObjectKind::Table)
    } else {
        None
    }
}

/// TVM_DESTROY: only an empty TVM (no vCPU, vdevice, vIOMMU, page or table but the root).
pub fn tvm_destroy(t: &Tsm<'_>, a: args::TvmDestroy) -> Reply {
    let mut tvm_room = Room::new();
    let o = t.lock(Handle::<TvmHead>::new(a.tvm), 1, &mut tvm_room)?;
    if let Some(kind) = tvm_children(&o) {
        return Err(Status::arg(StatusCode::InUse, kind as u8));
    }
    let root = Pa(o.root);
    let mut gr = t
        .granules
        .lock_in(root, GranuleState::Table)
        .map_err(|_| internal())?;
    if gr.refcount() != 0 || o.refcount() != 0 {
        return Err(Status::arg(StatusCode::InUse, ObjectKind::Table as u8));
    }
    t.platform.invalidate_guest_all(root);
    t.iotlb
        .lock()
        .invalidate_tvm(crate::viommu::TvmId(o.pa().0));
    t.scrub(root)?;
    gr.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    o.destroy()?;
    OK
}

/// Checks a GPA argument against the TVM: aligned to `align`, inside its GPA space.
fn check_gpa(o: &TvmObj, gpa: Gpa, align: u64, arg: u8) -> Result<(), Status> {
    if !gpa.0.is_multiple_of(align) {
        return Err(Status::arg(StatusCode::Misaligned, arg));
    }
    if o.gpa_bits >= 64 || gpa.0 >> o.gpa_bits != 0 {
        return Err(Status::arg(StatusCode::OutOfRange, arg));
    }
    Ok(())
}

/// [`check_gpa`] for a page mapping, which must also lie in the half of the GPA space its kind
/// owns (§5.2): a private page below the shared base, a shared one at or above it. This is
/// what keeps a GPA the guest uses as private from ever resolving to host memory, whatever the
/// host unmaps and maps (invariant 7).
pub(crate) fn check_page_gpa(o: &TvmObj, gpa: Gpa, kind: MapKind, arg: u8) -> Result<(), Status> {
    check_gpa(o, gpa, GRANULE_SIZE, arg)?;
    let bits = u8::try_from(o.gpa_bits).map_err(|_| internal())?;
    if gpa.is_shared(bits) != (kind == MapKind::Shared) {
        return Err(Status::arg(StatusCode::OutOfRange, arg));
    }
    Ok(())
}

/// A table level argument: 1..=3 (the root, level 0, comes with the TVM).
fn check_level(raw: u64, arg: u8) -> Result<u8, Status> {
    match raw {
        1..=3 => Ok(raw as u8),
        _ => Err(Status::arg(StatusCode::InvalidArgument, arg)),
    }
}

/// Maps a walk failure to a status; `unmapped` is the status for a missing entry.
fn walk_status(e: WalkError, unmapped: Status) -> Status {
    match e {
        WalkError::TableMissing(l) => Status::arg(StatusCode::TableMissing, l),
        WalkError::NotMapped => unmapped,
        WalkError::Foreign(_) | WalkError::Mem(_) => internal(),
    }
}

/// TABLE_CREATE: link a delegated granule as the table at `level` covering `gpa`.
pub fn table_create(t: &Tsm<'_>, a: args::TableCreate) -> Reply {
    let (gpa, new) = (a.gpa, a.table);
    let level = check_level(a.level, 3)?;
    let parent_level = level
        .checked_sub(1)
        .ok_or(Status::arg(StatusCode::InvalidArgument, 3))?;
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    check_gpa(&o, gpa, table_span(level), 2)?;
    let map = t.map(Pa(o.root));
    let (parent, entry) = map
        .entry(gpa, parent_level)
        .map_err(|e| walk_status(e, internal()))?;
    if entry != Entry::Invalid {
        return Err(Status::arg(StatusCode::AlreadyMapped, 2));
    }
    if new.granule_base() == o.pa() || new.granule_base() == parent {
        return Err(Status::arg(StatusCode::GranuleState, 4));
    }
    let mut gp = t
        .granules
        .lock_in(parent, GranuleState::Table)
        .map_err(|_| internal())?;
    let mut gn = t.granules.lock(new).map_err(|e| e.status(4))?;
    gn.state()
        .check_transition(GranuleState::Table)
        .map_err(|e| e.status(4))?;
    o.tables = o
        .tables
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 1))?;
    // Guard changes (published when the guards drop) come after every fallible write.
    t.scrub(new)?;
    map.write_raw(
        parent,
        addrmap::index(gpa, parent_level),
        map.format().table(new),
    )
    .map_err(|_| internal())?;
    o.save()?;
    gp.get().map_err(|_| internal())?;
    gn.transition(GranuleState::Table)
        .map_err(|e| e.status(4))?;
    OK
}

/// TABLE_DESTROY: unlink an empty table; it goes back to DELEGATED and its PA is returned.
pub fn table_destroy(t: &Tsm<'_>, a: args::TableDestroy) -> Reply {
    let gpa = a.gpa;
    let level = check_level(a.level, 3)?;
    let parent_level = level
        .checked_sub(1)
        .ok_or(Status::arg(StatusCode::InvalidArgument, 3))?;
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    check_gpa(&o, gpa, table_span(level), 2)?;
    let map = t.map(Pa(o.root));
    let (parent, entry) = map
        .entry(gpa, parent_level)
        .map_err(|e| walk_status(e, internal()))?;
    let Entry::Table(child) = entry else {
        return Err(Status::arg(StatusCode::TableMissing, level));
    };
    let mut gp = t
        .granules
        .lock_in(parent, GranuleState::Table)
        .map_err(|_| internal())?;
    let mut gc = t
        .granules
        .lock_in(child, GranuleState::Table)
        .map_err(|_| internal())?;
    if gc.refcount() != 0 {
        let kind = if level == LEAF_LEVEL {
            ObjectKind::PrivatePage
        } else {
            ObjectKind::Table
        };
        return Err(Status::arg(StatusCode::InUse, kind as u8));
    }
    o.tables = o.tables.checked_sub(1).ok_or_else(internal)?;
    map.write_raw(parent, addrmap::index(gpa, parent_level), 0)
        .map_err(|_| internal())?;
    t.platform.invalidate_guest_all(Pa(o.root));
    t.iotlb
        .lock()
        .invalidate_gpa(crate::viommu::TvmId(o.pa().0), gpa, table_span(level));
    t.scrub(child)?;
    o.save()?;
    gp.put().map_err(|_| internal())?;
    gc.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    Ok(CallResult::ok([child.0, 0, 0, 0]))
}

/// The level-3 table and entry for a page mapping at `gpa`; the entry must be invalid.
pub(crate) fn free_leaf_slot(t: &Tsm<'_>, o: &TvmObj, gpa: Gpa) -> Result<Pa, Status> {
    let (table, entry) = t
        .map(Pa(o.root))
        .entry(gpa, LEAF_LEVEL)
        .map_err(|e| walk_status(e, internal()))?;
    if entry != Entry::Invalid {
        return Err(Status::arg(StatusCode::AlreadyMapped, 2));
    }
    Ok(table)
}

fn perms(flags: MapFlags) -> Perms {
    Perms {
        write: flags.contains(MapFlags::WRITE),
        exec: flags.contains(MapFlags::EXEC),
    }
}

/// Copies one granule from an NS page into a secure one, each source byte read once.
fn copy_granule(t: &Tsm<'_>, src: Pa, dst: Pa) -> Result<(), Status> {
    let mut chunk = [0u8; 512];
    for off in (0..GRANULE_SIZE).step_by(chunk.len()) {
        let from = src
            .checked_add(off)
            .ok_or(Status::arg(StatusCode::InvalidBuffer, 4))?;
        t.platform
            .read(from, &mut chunk)
            .map_err(|_| Status::arg(StatusCode::InvalidBuffer, 4))?;
        let to = dst.checked_add(off).ok_or_else(internal)?;
        t.platform.write(to, &chunk).map_err(|_| internal())?;
    }
    Ok(())
}

/// MAP_PRIVATE: a delegated granule becomes the TVM's private page at `gpa`, zeroed or filled
/// from an NS source page (only while the TVM is NEW: content is measured-in before
/// activation).
pub fn map_private(t: &Tsm<'_>, a: args::MapPrivate) -> Reply {
    let (gpa, page, src) = (a.gpa, a.page, a.source);
    let flags = MapFlags::from_arg(a.flags).ok_or(Status::arg(StatusCode::InvalidArgument, 5))?;
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    check_page_gpa(&o, gpa, MapKind::Private, 2)?;
    // Address arguments are checked first, the source's usability when it is locked.
    if !page.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 3));
    }
    let src = if src == NO_SOURCE {
        None
    } else {
        if o.state != TvmState::New {
            return Err(Status::arg(StatusCode::ObjectState, 1));
        }
        if !Pa(src).is_granule_aligned() {
            return Err(Status::arg(StatusCode::Misaligned, 4));
        }
        Some(Pa(src))
    };
    let table = free_leaf_slot(t, &o, gpa)?;
    if page.granule_base() == o.pa() || page.granule_base() == table {
        return Err(Status::arg(StatusCode::GranuleState, 3));
    }
    if src.is_some_and(|s| s == o.pa() || s == table || s == page.granule_base()) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 4));
    }
    let mut gl = t
        .granules
        .lock_in(table, GranuleState::Table)
        .map_err(|_| internal())?;
    // Data granules last, in ascending order.
    let (mut gpg, _gsrc) = match src {
        Some(s) => {
            // Whatever makes the source unusable (outside DRAM, the TSM's own memory) is
            // InvalidBuffer(4), the one status MAP_PRIVATE documents for it.
            let (gpg, gs) = t.lock_pair((page, 3), (s, 4)).map_err(|e| {
                if e.index == 4 {
                    Status::arg(StatusCode::InvalidBuffer, 4)
                } else {
                    e
                }
            })?;
            if gs.state() != GranuleState::Ns {
                return Err(Status::arg(StatusCode::InvalidBuffer, 4));
            }
            (gpg, Some(gs))
        }
        None => (t.granules.lock(page).map_err(|e| e.status(3))?, None),
    };
    gpg.state()
        .check_transition(GranuleState::Private)
        .map_err(|e| e.status(3))?;
    o.private_pages = o
        .private_pages
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 1))?;
    match src {
        Some(s) => copy_granule(t, s, page)?,
        None => t.scrub(page)?,
    }
    write_leaf(t, &o, table, gpa, page, perms(flags), MapKind::Private)?;
    o.save()?;
    t.dma_tvm_changed(&o);
    gl.get().map_err(|_| internal())?;
    gpg.transition(GranuleState::Private)
        .map_err(|e| e.status(3))?;
    OK
}

/// Writes the leaf entry for `gpa` (in the level-3 `table` its map walk found) pointing at `pa`.
fn write_leaf(
    t: &Tsm<'_>,
    o: &TvmObj,
    table: Pa,
    gpa: Gpa,
    pa: Pa,
    perms: Perms,
    kind: MapKind,
) -> Result<(), Status> {
    let map = t.map(Pa(o.root));
    let entry = map.format().page(Leaf { pa, perms, kind });
    map.write_raw(table, addrmap::index(gpa, LEAF_LEVEL), entry)
        .map_err(|_| internal())
}

/// MAP_SHARED: an NS granule becomes a shared page of the TVM at `gpa`. The granule's refcount
/// counts its shared mappings, so it cannot be delegated while mapped.
pub fn map_shared(t: &Tsm<'_>, a: args::MapShared) -> Reply {
    let (gpa, ns) = (a.gpa, a.page);
    let flags = MapFlags::from_arg(a.flags).ok_or(Status::arg(StatusCode::InvalidArgument, 4))?;
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    check_page_gpa(&o, gpa, MapKind::Shared, 2)?;
    if !ns.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 3));
    }
    let table = free_leaf_slot(t, &o, gpa)?;
    if ns == o.pa() || ns == table {
        return Err(Status::arg(StatusCode::GranuleState, 3));
    }
    let mut gl = t
        .granules
        .lock_in(table, GranuleState::Table)
        .map_err(|_| internal())?;
    let mut gn = t.granules.lock(ns).map_err(|e| e.status(3))?;
    if gn.state() != GranuleState::Ns {
        return Err(Status::arg(StatusCode::GranuleState, 3));
    }
    o.shared_pages = o
        .shared_pages
        .checked_add(1)
        .ok_or(Status::arg(StatusCode::Capacity, 1))?;
    if gn.refcount() >= crate::granule::MAX_REFCOUNT {
        return Err(Status::arg(StatusCode::Capacity, 3));
    }
    write_leaf(t, &o, table, gpa, ns, perms(flags), MapKind::Shared)?;
    o.save()?;
    t.dma_tvm_changed(&o);
    gn.get().map_err(|e| e.status(3))?;
    gl.get().map_err(|_| internal())?;
    OK
}

/// UNMAP: removes the page at `gpa`; the CPUs and the vIOMMU forget it before a private page is
/// scrubbed and goes back to DELEGATED. Returns the page's PA.
pub fn unmap(t: &Tsm<'_>, a: args::Unmap) -> Reply {
    let gpa = a.gpa;
    let mut tvm_room = Room::new();
    let mut o = t.lock(TvmHandle::new(a.tvm), 1, &mut tvm_room)?;
    check_gpa(&o, gpa, GRANULE_SIZE, 2)?;
    let map = t.map(Pa(o.root));
    let not_mapped = Status::arg(StatusCode::NotMapped, 2);
    let (table, entry) = map.entry(gpa, LEAF_LEVEL).map_err(|e| match e {
        WalkError::TableMissing(_) => not_mapped,
        e => walk_status(e, not_mapped),
    })?;
    let leaf = match entry {
        // A vdevice's MMIO page leaves with VDEV_MMIO_UNMAP or the vdevice's exit from
        // LOCKED/RUN, which give the page back to the host and update the vdevice's record.
        Entry::Page(Leaf {
            kind: MapKind::Mmio { .. },
            ..
        }) => return Err(Status::arg(StatusCode::InUse, ObjectKind::Vdev as u8)),
        Entry::Page(leaf) => leaf,
        Entry::Invalid => return Err(not_mapped),
        Entry::Table(_) | Entry::Foreign => return Err(internal()),
    };
    let mut gl = t
        .granules
        .lock_in(table, GranuleState::Table)
        .map_err(|_| internal())?;
    let expected = match leaf.kind {
        MapKind::Private => GranuleState::Private,
        MapKind::Shared => GranuleState::Ns,
        MapKind::Mmio { .. } => return Err(internal()),
    };
    let mut gpg = t
        .granules
        .lock_in(leaf.pa, expected)
        .map_err(|_| internal())?;
    match leaf.kind {
        MapKind::Private => {
            o.private_pages = o.private_pages.checked_sub(1).ok_or_else(internal)?
        }
        MapKind::Shared => o.shared_pages = o.shared_pages.checked_sub(1).ok_or_else(internal)?,
        MapKind::Mmio { .. } => return Err(internal()),
    }
    map.write_raw(table, addrmap::index(gpa, LEAF_LEVEL), 0)
        .map_err(|_| internal())?;
    t.platform.invalidate_guest_page(Pa(o.root), gpa);
    t.viommu_unmapped(o.pa(), gpa);
    // The DMA tables forget the page too before it is scrubbed and reused.
    t.dma_tvm_changed(&o);
    if leaf.kind == MapKind::Private {
        t.scrub(leaf.pa)?;
    }
    o.save()?;
    gl.put().map_err(|_| internal())?;
    match leaf.kind {
        MapKind::Private => gpg
            .transition(GranuleState::Delegated)
            .map_err(|_| internal())?,
        MapKind::Shared => gpg.put().map_err(|_| internal())?,
        MapKind::Mmio { .. } => return Err(internal()),
    }
    Ok(CallResult::ok([leaf.pa.0, 0, 0, 0]))
}
