//! Guest calls, on behalf of the calling TVM only (its vdevices are found by vBDF in its own
//! table, so another TVM's vdevices do not exist for it), and the event queues.
//!
//! G_VDEV_ACCEPT and G_VDEV_STOP start a device operation the host must carry: their handler
//! returns `NeedsDeviceIo` with results (VDEV handle, [`DeviceOp`]); the VCPU_RUN path turns
//! that into a `DEVICE_REQUEST` exit and returns the operation's result to the guest when it
//! completes ([`Tsm::guest_op_result`]).

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::call::args;
#[cfg(feature = "dma-inject")]
use tsm_abi::event::DmaInjectFlags;
use tsm_abi::event::{HOST_DOMAIN_EVENTS, PasidArg};
use tsm_abi::guest::{AcceptEvidence, EvidenceFlags, S1Config, VdevInfo, vbdf_arg};
use tsm_abi::regs::CallResult;
use tsm_abi::state::{DeviceOp, VdevState};
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::log::{MAX_PAYLOAD, STREAM_GUEST};
use zerocopy::{FromZeros, IntoBytes};

use crate::addrmap::format::Entry;
use crate::addrmap::{Leaf, MapKind};
use crate::calls::comm::{read_report, vdev_t1_off};
use crate::calls::session;
use crate::dispatch::{GuestCaller, GuestNext, Reply};
use crate::dma_tables::t1_view;
use crate::granule::{GranuleState, Locked};
use crate::objects::{
    Child, GUEST_OP_PENDING, Guard, Room, TvmSlots, VdevHandle, VdevObj, internal,
};
use crate::private_mmio::locate;
use crate::tsm::Tsm;
#[cfg(feature = "dma-inject")]
use crate::viommu;
use crate::viommu::{PasidError, PasidScope, VdevId};
#[cfg(feature = "dma-inject")]
use crate::viommu_glue::record_fault;
use crate::viommu_glue::{guest_event, host_event, stage1_format};

const OK: Reply = Ok(CallResult::ok([0; 4]));

/// The caller's vdevice named by a vBDF argument (index 1): its slot among the TVM's first
/// `vdevs` vBDF slots, the ones in use ([`crate::objects::TvmObj::invariants`]), each read
/// alone.
fn own_vdev(o: &TvmSlots<'_, '_>, raw: u64) -> Result<Pa, Status> {
    let vbdf = vbdf_arg(raw).ok_or(Status::arg(StatusCode::InvalidArgument, 1))?;
    let n = usize::try_from(o.vdevs()).map_err(|_| internal())?;
    for i in 0..n {
        let s = o.vbdf(i)?;
        if s.used != 0 && s.vbdf == u32::from(vbdf) {
            return Ok(Pa(s.vdev));
        }
    }
    Err(Status::arg(StatusCode::BadHandle, 1))
}

/// Locks the caller's TVM `tvm` (its count of vBDF slots only, [`TvmSlots`]: the map's root
/// and width are the caller's, [`GuestCaller`]) and its vdevice named by argument 1 (TVM before
/// VDEV). A TVM granule that is not one is `Denied`, as before.
fn lock_own<'t, 'a>(
    t: &'t Tsm<'a>,
    tvm: Pa,
    raw: u64,
    rooms: &'t mut GuestVdevRooms,
) -> Result<GuestVdev<'t, 'a>, Status> {
    let tvm = t
        .lock_tvm_slots(tvm, 1)
        .map_err(|_| Status::new(StatusCode::Denied))?;
    let pa = own_vdev(&tvm, raw)?;
    let v = t
        .lock(VdevHandle::new(pa), 1, rooms.v.insert(Room::new()))
        .map_err(|_| internal())?;
    if v.links().tvm().pa() != tvm.granule().pa() {
        return Err(internal());
    }
    Ok(GuestVdev { tvm, v })
}

/// Room for the VDEV of [`GuestVdev`] (about 2 KiB to zero), made only once the vBDF names one
/// of the caller's vdevices: a refused lookup costs the TVM's lock and count only.
#[derive(Default)]
struct GuestVdevRooms {
    v: Option<Room<VdevObj>>,
}

struct GuestVdev<'t, 'a> {
    tvm: TvmSlots<'t, 'a>,
    v: Guard<'t, 'a, VdevObj>,
}

/// A buffer `[gpa, gpa + len)` a guest named, checked against its TVM's GPA width and the
/// granule it starts in ([`in_range`]): all a buffer's checks that need no lock. Only
/// [`guest_buffer`] turns it into a PA, under the TVM's lock.
#[derive(Clone, Copy)]
struct GuestBuf {
    gpa: Gpa,
    /// The argument the refusal names.
    arg: u8,
}

/// Checks `[gpa, gpa + len)` lies inside one granule and under the caller's GPA width. The
/// width comes from the caller ([`GuestCaller::gpa_bits`], fixed at TVM_CREATE), so a GPA past
/// it is refused before any lock and without a walk of the map.
fn in_range(caller: GuestCaller, gpa: Gpa, len: u64, arg: u8) -> Result<GuestBuf, Status> {
    if len == 0
        || gpa
            .granule_offset()
            .checked_add(len)
            .is_none_or(|e| e > GRANULE_SIZE)
        || caller.gpa_bits >= 64
        || gpa.0 >> caller.gpa_bits != 0
    {
        return Err(Status::arg(StatusCode::InvalidBuffer, arg));
    }
    Ok(GuestBuf { gpa, arg })
}

/// The PA behind buffer `b` of the caller's TVM: inside one mapped page, writable if `write`,
/// private if `private_only`. `tvm` is the caller's TVM granule, locked, so the page cannot be
/// unmapped (or a shared page delegated) while the TSM uses it: every change of the map takes
/// that lock.
fn guest_buffer(
    t: &Tsm<'_>,
    tvm: &Locked<'_, '_>,
    caller: GuestCaller,
    b: GuestBuf,
    write: bool,
    private_only: bool,
) -> Result<Pa, Status> {
    buffer_pa(t, tvm, caller, b, write, private_only)
}

/// [`guest_buffer`], inline, for G_CONSOLE_WRITE: called out of line from the run loop (where
/// the handler is inlined), a refused unmapped GPA paid aarch64 the eight arguments' moves,
/// a frame of its own and the result through memory, ~35 instructions a call (measured). The
/// vdevice calls keep the call: their refusals come before their buffer.
#[inline(always)]
fn buffer_pa(
    t: &Tsm<'_>,
    tvm: &Locked<'_, '_>,
    caller: GuestCaller,
    b: GuestBuf,
    write: bool,
    private_only: bool,
) -> Result<Pa, Status> {
    let bad = Status::arg(StatusCode::InvalidBuffer, b.arg);
    if tvm.pa() != caller.tvm {
        return Err(internal());
    }
    let leaf = t
        .map(caller.root)
        .lookup(b.gpa.granule_base())
        .map_err(|_| bad)?;
    if (write && !leaf.perms.write) || (private_only && leaf.kind != MapKind::Private) {
        return Err(bad);
    }
    let expected = match leaf.kind {
        MapKind::Private => GranuleState::Private,
        MapKind::Shared => GranuleState::Ns,
        // Device registers are no buffer: the TSM never reads or writes MMIO for a guest.
        MapKind::Mmio { .. } => return Err(bad),
    };
    if t.granules.peek(leaf.pa).map_err(|_| bad)?.0 != expected {
        return Err(internal());
    }
    leaf.pa
        .checked_add(b.gpa.granule_offset())
        .ok_or_else(internal)
}

/// G_CONSOLE_WRITE: one framed record from guest memory. The TVM's granule is locked for the
/// walk and the read, and nothing of the TVM object is read: the map's root is the caller's.
/// A concurrent TVM_DESTROY cannot free the TVM or its root under the call (it refuses a TVM
/// with vCPUs, and the caller's is running), and a concurrent UNMAP waits for the lock.
pub fn console_write(t: &Tsm<'_>, caller: GuestCaller, a: args::GConsoleWrite) -> Reply {
    let len = a.len;
    if len == 0 || len > MAX_PAYLOAD as u64 {
        return Err(Status::arg(StatusCode::InvalidArgument, 2));
    }
    let b = in_range(caller, a.buffer, len, 1)?;
    let tvm = t
        .granules
        .lock_in(caller.tvm, GranuleState::Tvm)
        .map_err(|_| Status::new(StatusCode::Denied))?;
    let pa = buffer_pa(t, &tvm, caller, b, false, false)?;
    let mut frame = [0u8; MAX_PAYLOAD];
    let frame = frame
        .get_mut(..len as usize)
        .ok_or(Status::arg(StatusCode::InvalidArgument, 2))?;
    t.platform.read(pa, frame).map_err(|_| internal())?;
    t.platform.relay(STREAM_GUEST, frame);
    OK
}

/// G_EXIT: the vCPU is done; VCPU_RUN reports the code to the host and never runs it again.
/// The vCPU is marked exited when its run ends (`run::Tsm::exit_to_host`), under the same lock
/// as the claim's release: one VCPU granule update per exit instead of two. (The handlers'
/// shape, for the dispatcher: G_EXIT itself needs neither the TSM nor the caller.)
pub fn exit(_: &Tsm<'_>, _: GuestCaller, a: args::GExit) -> Result<GuestNext, Status> {
    Ok(GuestNext::Exit { code: a.code })
}

/// G_TVM_INFO: the caller's GPA width and where its shared half starts (§5.2). From the TSM,
/// not the host: a guest told a wrong split would keep private data where the host can map it.
/// The width is the caller's ([`GuestCaller::gpa_bits`]): no lock.
pub fn tvm_info(_: &Tsm<'_>, caller: GuestCaller) -> Reply {
    let bits = caller.gpa_bits;
    let shared = Gpa::shared_base(bits).ok_or_else(internal)?;
    Ok(CallResult::ok([u64::from(bits), shared.0, 0, 0]))
}

/// Whether the vdevice holds a cached report the guest may read.
fn has_report(v: &VdevObj) -> bool {
    matches!(
        v.state,
        VdevState::Locked | VdevState::Starting | VdevState::Run
    )
}

/// G_VDEV_INFO: state, evidence and report length of one of the caller's vdevices.
pub fn vdev_info(t: &Tsm<'_>, caller: GuestCaller, a: args::GVdevInfo) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    let gpa = a.buffer;
    if !gpa.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let b = in_range(caller, gpa, size_of::<VdevInfo>() as u64, 2)?;
    let pa = guest_buffer(t, g.tvm.granule(), caller, b, true, false)?;
    let v = &g.v;
    let evidence = has_report(v);
    let info = VdevInfo {
        state: v.state.raw(),
        vbdf: v.params.vbdf,
        tdisp_version: v.tdisp_version as u8,
        report_len: if evidence { v.report_len } else { 0 },
        lock_flags: v.params.lock_flags,
        report_counter: v.report_counter,
        viommu_type: v.viommu_type.raw(),
        nonce: if evidence { v.accept_nonce } else { [0; 32] },
        report_digest: if evidence { v.report_digest } else { [0; 32] },
        ..VdevInfo::new_zeroed()
    };
    // Without a session (§15) the host relayed the TDISP messages in the clear and could have
    // written them; the guest is told so by the flag staying clear.
    let info = if evidence && v.evidence != 0 {
        VdevInfo {
            evidence_flags: EvidenceFlags::DEVICE_AUTHENTICATED.bits(),
            chain_len: v.chain_len,
            measurements_len: v.measurements_len,
            chain_digest: v.chain_digest,
            measurements_digest: v.measurements_digest,
            ..info
        }
    } else {
        info
    };
    t.platform
        .write(pa, info.as_bytes())
        .map_err(|_| internal())?;
    OK
}

/// What a portion read copies from.
#[derive(Clone, Copy)]
enum Source {
    /// The cached interface report (VDEV granule).
    Report,
    /// The device's certificate chain (the PDEV's evidence granule).
    Chain,
    /// The device's measurement record (the PDEV's evidence granule).
    Measurements,
}

/// G_VDEV_REPORT: a portion of the cached interface report.
pub fn vdev_report(t: &Tsm<'_>, caller: GuestCaller, a: args::GVdevReport) -> Reply {
    read_portion(t, caller, a.vbdf, a.offset, a.buffer, a.len, Source::Report)
}

/// G_VDEV_CERT_CHAIN: a portion of the certificate chain the bind's session verified.
pub fn vdev_cert_chain(t: &Tsm<'_>, caller: GuestCaller, a: args::GVdevCertChain) -> Reply {
    read_portion(t, caller, a.vbdf, a.offset, a.buffer, a.len, Source::Chain)
}

/// G_VDEV_MEASUREMENTS: a portion of the signed measurement record the session verified.
pub fn vdev_measurements(t: &Tsm<'_>, caller: GuestCaller, a: args::GVdevMeasurements) -> Reply {
    read_portion(
        t,
        caller,
        a.vbdf,
        a.offset,
        a.buffer,
        a.len,
        Source::Measurements,
    )
}

/// Copies up to `len` bytes from `offset` of `source` into the guest's private buffer.
/// The chain and record are read from the PDEV's evidence granule under the VDEV's lock
/// alone: the evidence changes only in a connect, and a PDEV with a bound vdevice (which
/// `has_report` requires) is READY and cannot connect, disconnect or be destroyed.
fn read_portion(
    t: &Tsm<'_>,
    caller: GuestCaller,
    vbdf: u64,
    offset: u64,
    gpa: Gpa,
    len: u64,
    source: Source,
) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let g = lock_own(t, caller.tvm, vbdf, &mut rooms)?;
    if !has_report(&g.v) {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let total = match source {
        Source::Report => g.v.report_len,
        _ if g.v.evidence == 0 => return Err(Status::arg(StatusCode::ObjectState, 1)),
        Source::Chain => g.v.chain_len,
        Source::Measurements => g.v.measurements_len,
    };
    let left = u64::from(total)
        .checked_sub(offset)
        .ok_or(Status::arg(StatusCode::InvalidArgument, 2))?;
    if len == 0 {
        return Err(Status::arg(StatusCode::InvalidArgument, 4));
    }
    // The whole buffer the guest named, not only the bytes this call copies (§11), and to
    // private memory only: the host must not see or rewrite the evidence on its way to the
    // guest's check.
    let b = in_range(caller, gpa, len, 3)?;
    let pa = guest_buffer(t, g.tvm.granule(), caller, b, true, true)?;
    let n = len.min(left);
    if n == 0 {
        return Ok(CallResult::ok([0, 0, 0, 0]));
    }
    let mut chunk = [0u8; 256];
    // n <= left <= the source's capacity and in_range checked [pa, pa + n) lies in one
    // granule, so none of these can fail; they are checked rather than trusted.
    let mut done = 0u64;
    while let Some(rest) = n.checked_sub(done).filter(|&r| r != 0) {
        let k = rest.min(chunk.len() as u64);
        let c = chunk.get_mut(..k as usize).ok_or_else(internal)?;
        let from = offset.checked_add(done).ok_or_else(internal)?;
        match source {
            Source::Report => read_report(t, g.v.pa(), from, c)?,
            Source::Chain => session::read_evidence_part(t, Pa(g.v.evidence), false, from, c)?,
            Source::Measurements => {
                session::read_evidence_part(t, Pa(g.v.evidence), true, from, c)?
            }
        }
        let to = pa.checked_add(done).ok_or_else(internal)?;
        t.platform.write(to, c).map_err(|_| internal())?;
        done = done.checked_add(k).ok_or_else(internal)?;
    }
    let after = left.checked_sub(n).ok_or_else(internal)?;
    Ok(CallResult::ok([n, after, 0, 0]))
}

/// G_VDEV_ACCEPT: the guest echoes the evidence of the current bind; START_INTERFACE follows.
pub fn vdev_accept(
    t: &Tsm<'_>,
    caller: GuestCaller,
    a: args::GVdevAccept,
) -> Result<GuestNext, Status> {
    let mut rooms = GuestVdevRooms::default();
    let mut g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    if g.v.state != VdevState::Locked || g.v.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let gpa = a.evidence;
    if !gpa.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let b = in_range(caller, gpa, size_of::<AcceptEvidence>() as u64, 2)?;
    let pa = guest_buffer(t, g.tvm.granule(), caller, b, false, false)?;
    let mut echo = AcceptEvidence::new_zeroed();
    t.platform
        .read(pa, echo.as_mut_bytes())
        .map_err(|_| internal())?;
    echo.validate()
        .map_err(|_| Status::arg(StatusCode::InvalidArgument, 2))?;
    let current = AcceptEvidence {
        nonce: g.v.accept_nonce,
        report_digest: g.v.report_digest,
        report_counter: g.v.report_counter,
        reserved: [0; 3],
        chain_digest: g.v.chain_digest,
        measurements_digest: g.v.measurements_digest,
    };
    echo.matches(&current)
        .map_err(|f| Status::arg(StatusCode::EvidenceMismatch, f as u8))?;
    g.v.state = VdevState::Starting;
    g.v.op = DeviceOp::Start;
    g.v.step = 0;
    g.v.guest_ticket = t.guest_ticket();
    g.v.guest_result = GUEST_OP_PENDING;
    g.v.save()?;
    Ok(GuestNext::DeviceRequest {
        vdev: g.v.pa(),
        op: DeviceOp::Start,
        ticket: g.v.guest_ticket,
    })
}

/// G_VDEV_STOP: T=1 off now; STOP_INTERFACE follows through the host.
pub fn vdev_stop(
    t: &Tsm<'_>,
    caller: GuestCaller,
    a: args::GVdevStop,
) -> Result<GuestNext, Status> {
    let mut rooms = GuestVdevRooms::default();
    let mut g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    if !matches!(g.v.state, VdevState::Run | VdevState::Locked) || g.v.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let pa = g.v.pa();
    let t1 = t1_view(&g.v);
    vdev_t1_off(t, pa, &mut g.v)?;
    g.v.op = DeviceOp::Stop;
    g.v.step = 0;
    g.v.guest_ticket = t.guest_ticket();
    g.v.guest_result = GUEST_OP_PENDING;
    g.v.save()?;
    t.dma_view_changed(pa, t1, &g.v);
    Ok(GuestNext::DeviceRequest {
        vdev: pa,
        op: DeviceOp::Stop,
        ticket: g.v.guest_ticket,
    })
}

/// G_VDEV_MMIO_VALIDATE: the unvalidated MMIO mapping at `gpa` is the page the guest names
/// (range `range_index` of the report, page `page_index` of the range): it becomes device
/// memory the guest can reach. Nothing changes on a mismatch.
pub fn vdev_mmio_validate(t: &Tsm<'_>, caller: GuestCaller, a: args::GVdevMmioValidate) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    if !matches!(g.v.state, VdevState::Locked | VdevState::Run) {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    if !a.gpa.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 2));
    }
    let vdev = g.v.pa();
    let m = t.mmio_record(vdev)?;
    let page = Tsm::mmio_find(&m, a.gpa, 2)
        .ok()
        .and_then(|i| m.mapped().get(i).copied())
        .ok_or(Status::arg(StatusCode::MmioMismatch, 2))?;
    let root = Pa(m.root);
    let (table, entry) = t
        .map(root)
        .entry(a.gpa, crate::addrmap::LEAF_LEVEL)
        .map_err(|_| internal())?;
    match entry {
        Entry::Page(Leaf {
            pa,
            kind: MapKind::Mmio { validated },
            ..
        }) if pa.0 == page.pa => {
            if validated {
                return Err(Status::arg(StatusCode::AlreadyMapped, 2));
            }
        }
        _ => return Err(internal()),
    }
    let offset = g.v.params.mmio_reporting_offset;
    let (range, index) = t
        .with_report(vdev, &g.v, |r| locate(r, offset, Pa(page.pa)))?
        .ok_or_else(internal)?;
    if a.range_index != range {
        return Err(Status::arg(StatusCode::MmioMismatch, 3));
    }
    if a.page_index != index {
        return Err(Status::arg(StatusCode::MmioMismatch, 4));
    }
    // From invalid to valid: no CPU can hold a translation of an invalid entry, so there is
    // nothing to invalidate.
    t.write_mmio_entry(root, table, page, true)?;
    OK
}

/// The smallest stage-1 input size the vdevice's format walks (NotSupported for
/// TSM_NO_VIOMMU, which has no stage 1). The walk's own bound, so that every size an attach
/// accepts is one the walk honours.
fn stage1_min_bits(v: &VdevObj) -> Result<u8, Status> {
    stage1_format(v.viommu_type.stage1_format())
        .min_ia_bits()
        .ok_or(Status::arg(StatusCode::NotSupported, 1))
}

/// A PASID argument that names one PASID or none (not ALL).
fn one_pasid(raw: u64, arg: u8) -> Result<Option<u32>, Status> {
    match PasidArg::from_raw(raw) {
        Some(PasidArg::NoPasid) => Ok(None),
        Some(PasidArg::Pasid(p)) => Ok(Some(p)),
        Some(PasidArg::All) | None => Err(Status::arg(StatusCode::InvalidArgument, arg)),
    }
}

/// G_S1_ATTACH: the stage-1 root of (vdevice, PASID); cached translations of that PASID go.
pub fn s1_attach(t: &Tsm<'_>, caller: GuestCaller, a: args::GS1Attach) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let mut g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    let pasid = one_pasid(a.pasid, 2)?;
    let root = a.root;
    let min = stage1_min_bits(&g.v)?;
    let config =
        S1Config::from_raw(a.config, min).ok_or(Status::arg(StatusCode::InvalidArgument, 4))?;
    if !root.is_granule_aligned() {
        return Err(Status::arg(StatusCode::Misaligned, 3));
    }
    if caller.gpa_bits >= 64 || root.0 >> caller.gpa_bits != 0 {
        return Err(Status::arg(StatusCode::OutOfRange, 3));
    }
    g.v.pasids
        .attach(pasid, root, config.ia_bits)
        .map_err(|e| match e {
            PasidError::Full => Status::arg(StatusCode::Capacity, 2),
            PasidError::Misaligned => Status::arg(StatusCode::Misaligned, 3),
            PasidError::PasidOutOfRange | PasidError::NotAttached => {
                Status::arg(StatusCode::InvalidArgument, 2)
            }
        })?;
    // Translations read the VDEV object without its lock: the new root must be in place
    // before the old one's walks go, or one could be cached again in between.
    g.v.save()?;
    t.iotlb.lock().invalidate_pasid(VdevId(g.v.pa().0), pasid);
    // The DMA table serves requests without PASID only.
    if pasid.is_none() {
        t.dma_refresh(g.v.pa());
    }
    OK
}

/// G_S1_DETACH: removes the stage-1 root of (vdevice, PASID).
pub fn s1_detach(t: &Tsm<'_>, caller: GuestCaller, a: args::GS1Detach) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let mut g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    let pasid = one_pasid(a.pasid, 2)?;
    stage1_min_bits(&g.v)?;
    g.v.pasids
        .detach(pasid)
        .map_err(|_| Status::arg(StatusCode::NotMapped, 2))?;
    // As in G_S1_ATTACH: the object first, then the cached walks of the old root.
    g.v.save()?;
    t.iotlb.lock().invalidate_pasid(VdevId(g.v.pa().0), pasid);
    if pasid.is_none() {
        t.dma_refresh(g.v.pa());
    }
    OK
}

/// G_S1_INVALIDATE: the guest changed its stage-1 tables; cached translations of the range go.
pub fn s1_invalidate(t: &Tsm<'_>, caller: GuestCaller, a: args::GS1Invalidate) -> Reply {
    let mut rooms = GuestVdevRooms::default();
    let g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    let scope = match PasidArg::from_raw(a.pasid) {
        Some(PasidArg::All) => PasidScope::All,
        Some(PasidArg::NoPasid) => PasidScope::One(None),
        Some(PasidArg::Pasid(p)) => PasidScope::One(Some(p)),
        None => return Err(Status::arg(StatusCode::InvalidArgument, 2)),
    };
    let len = if a.size == 0 { u64::MAX } else { a.size };
    t.iotlb
        .lock()
        .invalidate_guest(VdevId(g.v.pa().0), scope, a.iova, len);
    // The whole table is composed again (the range only narrows what the IOTLB drops).
    if matches!(scope, PasidScope::All | PasidScope::One(None)) {
        t.dma_refresh(g.v.pa());
    }
    OK
}

/// G_EVENT_READ: pops one full fault record of the caller's vdevice.
pub fn event_read_guest(t: &Tsm<'_>, caller: GuestCaller, a: args::GEventRead) -> Reply {
    // The hardware's faults join the queues before any is read (and before any lock).
    t.drain_platform_faults();
    let mut rooms = GuestVdevRooms::default();
    let mut g = lock_own(t, caller.tvm, a.vbdf, &mut rooms)?;
    let gpa = a.buffer;
    if !gpa.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let b = in_range(
        caller,
        gpa,
        size_of::<tsm_abi::event::GuestEvent>() as u64,
        2,
    )?;
    let pa = guest_buffer(t, g.tvm.granule(), caller, b, true, false)?;
    let sequence = u64::from(g.v.events.host_summary().total)
        .saturating_sub(u64::from(g.v.events.pending()))
        .saturating_add(1);
    let mut q = g.v.events.clone();
    let f = q.pop().ok_or(Status::new(StatusCode::Empty))?;
    let rec = guest_event(&f, &g.v, sequence);
    t.platform
        .write(pa, rec.as_bytes())
        .map_err(|_| internal())?;
    g.v.events = q;
    g.v.save()?;
    Ok(CallResult::ok([
        u64::from(g.v.events.pending()),
        u64::from(g.v.events.overflow()),
        0,
        0,
    ]))
}

/// EVENT_READ: pops one sanitized fault record of a vdevice (or of the host domain) into an NS
/// buffer.
pub fn event_read(t: &Tsm<'_>, a: args::EventRead) -> Reply {
    let buf = a.buffer;
    if !buf.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let size = size_of::<tsm_abi::event::HostEvent>() as u64;
    // The hardware's faults join the queues before any is read (and before any lock).
    t.drain_platform_faults();
    if a.queue == HOST_DOMAIN_EVENTS {
        let _b = t.lock_ns_buffer(buf, size, 2)?;
        let mut q = t.host_domain_events.lock();
        let summary = q.host_summary();
        let sequence = u64::from(summary.total)
            .saturating_sub(u64::from(summary.pending))
            .saturating_add(1);
        let mut next = q.clone();
        let (f, requester) = next.pop().ok_or(Status::new(StatusCode::Empty))?;
        let rec = host_event(&f, 0, requester, sequence);
        t.platform
            .write(buf, rec.as_bytes())
            .map_err(|_| Status::arg(StatusCode::InvalidBuffer, 2))?;
        *q = next;
        let left = q.host_summary();
        return Ok(CallResult::ok([
            u64::from(left.pending),
            u64::from(left.overflow),
            0,
            0,
        ]));
    }
    let mut vdev_room = Room::new();
    let mut v = t.lock(VdevHandle::new(Pa(a.queue)), 1, &mut vdev_room)?;
    let _b = t.lock_ns_buffer(buf, size, 2)?;
    let sequence = u64::from(v.host_events.host_summary().total)
        .saturating_sub(u64::from(v.host_events.pending()))
        .saturating_add(1);
    let requester = t.requester_of(&v).ok_or_else(internal)?;
    let mut q = v.host_events.clone();
    let f = q.pop().ok_or(Status::new(StatusCode::Empty))?;
    let rec = host_event(&f, v.pa().0, requester, sequence);
    t.platform
        .write(buf, rec.as_bytes())
        .map_err(|_| Status::arg(StatusCode::InvalidBuffer, 2))?;
    v.host_events = q;
    v.save()?;
    Ok(CallResult::ok([
        u64::from(v.host_events.pending()),
        u64::from(v.host_events.overflow()),
        0,
        0,
    ]))
}

/// TEST_DMA_INJECT (feature `dma-inject`, test builds only): one DMA request through the secure
/// vIOMMU, as if the device at (segment, RID) issued it. Returns the PA, or `DmaFault` with the
/// event reason (the fault is queued like a real one).
#[cfg(feature = "dma-inject")]
pub fn test_dma_inject(t: &Tsm<'_>, a: args::TestDmaInject) -> Reply {
    // Keeps the marker in every image that has this handler, so xtask can prove a release
    // image does not (`cargo xtask test`, check "no DMA injection in release images").
    core::hint::black_box(&DMA_INJECT_MARKER);
    let rid = u16::try_from(a.rid).map_err(|_| Status::arg(StatusCode::InvalidArgument, 1))?;
    let pasid = one_pasid(a.pasid, 2)?;
    let flags =
        DmaInjectFlags::from_bits(a.flags).ok_or(Status::arg(StatusCode::InvalidArgument, 4))?;
    let segment =
        u16::try_from(a.segment).map_err(|_| Status::arg(StatusCode::InvalidArgument, 5))?;
    let req = viommu::Request {
        requester: viommu::Requester { segment, rid },
        pasid,
        t_bit: flags.contains(DmaInjectFlags::T_BIT),
        iova: a.iova,
        access: if flags.contains(DmaInjectFlags::WRITE) {
            viommu::Access::Write
        } else {
            viommu::Access::Read
        },
    };
    let result = {
        let mut iotlb = t.iotlb.lock();
        viommu::translate(&t.translator(), &mut iotlb, &req)
    };
    match result {
        Ok(pa) => Ok(CallResult::ok([pa.0, 0, 0, 0])),
        Err(fault) => {
            record_fault(t, req.requester, &fault);
            let (reason, _) = crate::viommu_glue::event_reason(fault.reason);
            Ok(CallResult::status(Status::arg(
                StatusCode::DmaFault,
                reason.raw() as u8,
            )))
        }
    }
}

/// Bytes that exist in an image exactly when TEST_DMA_INJECT is compiled in.
#[cfg(feature = "dma-inject")]
pub static DMA_INJECT_MARKER: [u8; 32] = *b"TSM: TEST_DMA_INJECT compiled in";

/// TEST_DMA_INJECT does not exist in this build.
#[cfg(not(feature = "dma-inject"))]
pub fn test_dma_inject(_: &Tsm<'_>, _: args::TestDmaInject) -> Reply {
    Err(Status::new(StatusCode::NotSupported))
}

impl Tsm<'_> {
    /// What the guest call waiting on `vdev`'s device operation under `ticket` returns: `None`
    /// while the operation is pending; `Cancelled` when the vdevice no longer holds that
    /// ticket (it was destroyed, re-created, or another operation replaced this one), so a
    /// result never reaches a vCPU that did not start the operation, and a vCPU never waits
    /// forever. For the VCPU_RUN path: on re-entry after a `DEVICE_REQUEST` exit it completes
    /// the guest's G_VDEV_ACCEPT / G_VDEV_STOP with this.
    pub fn guest_op_result(&self, vdev: Pa, ticket: u64) -> Option<Status> {
        let cancelled = Some(Status::new(StatusCode::Cancelled));
        let mut vdev_room = Room::new();
        let Ok(mut v) = self.lock(VdevHandle::new(vdev), 1, &mut vdev_room) else {
            return cancelled;
        };
        if ticket == 0 || v.guest_ticket != ticket {
            return cancelled;
        }
        if v.guest_result == GUEST_OP_PENDING {
            return None;
        }
        v.guest_ticket = 0;
        if v.save().is_err() {
            return cancelled;
        }
        let code = u8::try_from(v.guest_result)
            .ok()
            .and_then(|c| StatusCode::try_from(c).ok());
        Some(code.map_or(Status::new(StatusCode::DeviceError), Status::new))
    }
}
