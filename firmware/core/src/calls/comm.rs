//! The TDISP requester over the one resumable model: a call that needs the device writes a
//! request into the host's COMMUNICATE buffer and returns `NeedsDeviceIo`; the host carries it to
//! the device and calls COMMUNICATE with the response, until the operation completes
//! (`Success`) or fails (`DeviceError`, the object goes to ERROR).
//!
//! | operation | started by | requests |
//! |---|---|---|
//! | CONNECT (PDEV) | PDEV_CONNECT | GET_VERSION, GET_CAPABILITIES |
//! | BIND (VDEV) | VDEV_BIND | LOCK_INTERFACE, GET_DEVICE_INTERFACE_REPORT × n |
//! | START (VDEV) | G_VDEV_ACCEPT | START_INTERFACE |
//! | STOP (VDEV) | VDEV_UNBIND, G_VDEV_STOP | STOP_INTERFACE |
//!
//! A host-started operation writes its first request at once; a guest-started one writes it on
//! the host's first COMMUNICATE (whose buffer then holds no response yet). Results of the
//! resumable calls: 1 = the pending [`DeviceOp`] (NONE once finished), 2 = the object's state.
//!
//! The response is copied out of the buffer once (header, then `response_len` payload bytes)
//! and decoded by the `tsm_abi::tdisp` codec; only a response that [`Response::answers`] the
//! outstanding request (same interface ID, matching code) is looked at further.

use sha2::{Digest, Sha256};
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::call::args;
use tsm_abi::comm::{
    COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommHeader, CommOp, CommProtocol, HostIoStatus,
};
use tsm_abi::regs::CallResult;
use tsm_abi::state::{DeviceOp, PdevState, VdevState};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::{
    InterfaceId, InterfaceReport, LockFlags, LockInterfaceParams, Request, RequestCode, Response,
    TDISP_VERSION_1_0,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::dispatch::Reply;
use crate::dma_tables::t1_view;
use crate::granule::GranuleState;
use crate::objects::{
    GUEST_OP_PENDING, PdevHandle, PdevObj, REPORT_CAPACITY, REPORT_OFFSET, Room, VdevHandle,
    VdevLinks, VdevObj, internal,
};
use crate::tsm::Tsm;
use crate::viommu;

/// Report bytes asked per GET_DEVICE_INTERFACE_REPORT (bounds the TSM's response buffer).
pub const REPORT_PORTION: usize = 1024;
/// The largest response the TSM takes: a full report portion with its headers.
const MAX_RESPONSE: usize = REPORT_PORTION + 32;
/// The largest request the TSM sends (START_INTERFACE: header + nonce).
const MAX_REQUEST: usize = 64;

/// Requests every device must implement for the flows above.
const REQUIRED: [RequestCode; 4] = [
    RequestCode::LockInterface,
    RequestCode::GetDeviceInterfaceReport,
    RequestCode::StartInterface,
    RequestCode::StopInterface,
];

/// The result of a resumable call: the pending operation and the object's state (its wire
/// value).
fn progress(status: StatusCode, op: DeviceOp, state: u32) -> CallResult {
    CallResult {
        status: Status::new(status).to_raw(),
        out: [u64::from(op.raw()), u64::from(state), 0, 0],
    }
}

/// Writes `req` into the COMMUNICATE buffer at `comm` (granule-aligned, NS).
fn send(t: &Tsm<'_>, comm: Pa, object: Pa, sequence: u64, req: &Request<'_>) -> Result<(), Status> {
    if !comm.is_granule_aligned() {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let mut buf = [0u8; COMM_HEADER_SIZE + MAX_REQUEST];
    let (head, body) = buf.split_at_mut(COMM_HEADER_SIZE);
    let len = req.encode(body).map_err(|_| internal())?;
    let header = CommHeader {
        op: CommOp::Exchange.raw(),
        protocol: CommProtocol::Tdisp.raw(),
        request_len: len as u32,
        response_len: 0,
        host_status: HostIoStatus::Response.raw(),
        reserved0: 0,
        object: object.0,
        sequence,
        reserved1: [0; 3],
    };
    head.copy_from_slice(header.as_bytes());
    let total = COMM_HEADER_SIZE
        .checked_add(len)
        .and_then(|n| buf.get(..n))
        .ok_or_else(internal)?;
    t.write_ns(comm, total, 2)
}

/// What the host brought back.
enum Answer {
    /// The device's response bytes (`len` of `buf`).
    Bytes(usize),
    /// The host says the device did not answer, or the device sent more than was asked.
    Failed,
}

/// Copies the host's response out of the COMMUNICATE buffer, once.
fn receive(t: &Tsm<'_>, comm: Pa, buf: &mut [u8; MAX_RESPONSE]) -> Result<Answer, Status> {
    let bad = Status::arg(StatusCode::InvalidBuffer, 2);
    if !comm.is_granule_aligned() {
        return Err(bad);
    }
    let _g = t.lock_ns_buffer(comm, GRANULE_SIZE, 2)?;
    let mut header = CommHeader::new_zeroed();
    t.platform
        .read(comm, header.as_mut_bytes())
        .map_err(|_| bad)?;
    if header.reserved0 != 0 || header.reserved1 != [0; 3] {
        return Err(bad);
    }
    match HostIoStatus::from_raw(header.host_status.into()) {
        Some(HostIoStatus::NoResponse) => return Ok(Answer::Failed),
        Some(HostIoStatus::Response) => {}
        None => return Err(bad),
    }
    let len = header.response_len as usize;
    if len > COMM_PAYLOAD_SIZE {
        return Err(bad);
    }
    let Some(out) = buf.get_mut(..len) else {
        return Ok(Answer::Failed);
    };
    t.platform
        .read(comm.checked_add(COMM_HEADER_SIZE as u64).ok_or(bad)?, out)
        .map_err(|_| bad)?;
    Ok(Answer::Bytes(len))
}

/// The interface ID of a PDEV's DSM (its PF0).
fn pdev_interface(p: &PdevObj) -> Result<InterfaceId, Status> {
    InterfaceId::from_function_id(p.params.function_id(p.params.rid_base)).map_err(|_| internal())
}

/// The interface ID of a VDEV's TDI.
fn vdev_interface(v: &VdevObj) -> Result<InterfaceId, Status> {
    InterfaceId::from_function_id(v.params.function_id).map_err(|_| internal())
}

/// The request a PDEV's pending connect step sent.
fn pdev_request(p: &PdevObj) -> Result<Request<'static>, Status> {
    let interface_id = pdev_interface(p)?;
    Ok(match p.step {
        1 => Request::GetVersion { interface_id },
        _ => Request::GetCapabilities {
            interface_id,
            tsm_caps: 0,
        },
    })
}

/// PDEV_CONNECT: NEW → CONNECTING; GET_VERSION goes out first.
pub fn pdev_connect(t: &Tsm<'_>, a: args::PdevConnect) -> Reply {
    let (pdev, comm) = (a.pdev, a.comm);
    let mut pdev_room = Room::new();
    let mut p = t.lock(PdevHandle::new(pdev), 1, &mut pdev_room)?;
    if p.state != PdevState::New {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    p.step = 1;
    p.seq = 1;
    send(t, comm, pdev, p.seq, &pdev_request(&p)?)?;
    p.state = PdevState::Connecting;
    p.op = DeviceOp::Connect;
    p.save()?;
    Ok(progress(StatusCode::NeedsDeviceIo, p.op, p.state.raw()))
}

/// Decodes an answer to `req`: `None` when it is garbage, another message, another TDI, or
/// a TDISP_ERROR.
fn answer<'b>(bytes: &'b [u8], req: &Request<'_>) -> Option<Response<'b>> {
    let rsp = Response::decode(bytes).ok()?;
    if !rsp.answers(req) || matches!(rsp, Response::Error { .. }) {
        return None;
    }
    Some(rsp)
}

fn pdev_continue(t: &Tsm<'_>, pdev: Pa, comm: Pa) -> Reply {
    let mut pdev_room = Room::new();
    let mut p = t.lock(PdevHandle::new(pdev), 1, &mut pdev_room)?;
    if p.op != DeviceOp::Connect {
        return Err(Status::arg(StatusCode::NoOperation, 1));
    }
    let mut buf = [0u8; MAX_RESPONSE];
    let answer_len = receive(t, comm, &mut buf)?;
    let req = pdev_request(&p)?;
    let rsp = match answer_len {
        Answer::Bytes(n) => buf.get(..n).and_then(|b| answer(b, &req)),
        Answer::Failed => None,
    };
    let next = match (p.step, rsp) {
        (1, Some(Response::Version { versions, .. })) if versions.contains(TDISP_VERSION_1_0) => {
            p.tdisp_version = u32::from(TDISP_VERSION_1_0);
            Some(2)
        }
        (2, Some(Response::Capabilities { caps, .. }))
            if REQUIRED
                .iter()
                .all(|&r| caps.req_msgs_supported.contains(r)) =>
        {
            p.dsm_caps = caps.dsm_caps;
            p.lock_flags_supported = u32::from(caps.lock_interface_flags_supported.bits());
            p.req_msgs_supported = caps.req_msgs_supported.to_wire();
            None
        }
        _ => {
            p.state = PdevState::Error;
            p.op = DeviceOp::None;
            p.step = 0;
            p.save()?;
            return Ok(progress(StatusCode::DeviceError, p.op, p.state.raw()));
        }
    };
    match next {
        Some(step) => {
            p.step = step;
            p.seq = p.seq.checked_add(1).ok_or_else(internal)?;
            send(t, comm, pdev, p.seq, &pdev_request(&p)?)?;
        }
        None => {
            p.state = PdevState::Ready;
            p.op = DeviceOp::None;
            p.step = 0;
        }
    }
    p.save()?;
    let status = if p.op == DeviceOp::None {
        StatusCode::Success
    } else {
        StatusCode::NeedsDeviceIo
    };
    Ok(progress(status, p.op, p.state.raw()))
}

/// Steps of a VDEV operation.
mod step {
    /// A guest-started operation whose first request is not out yet.
    pub const NOT_SENT: u32 = 0;
    /// The operation's one request (LOCK, START or STOP) is out.
    pub const SENT: u32 = 1;
    /// BIND: a report portion is asked.
    pub const REPORT: u32 = 2;
}

/// The request a VDEV's pending operation step sends.
fn vdev_request(v: &VdevObj) -> Result<Request<'static>, Status> {
    let interface_id = vdev_interface(v)?;
    Ok(match (v.op, v.step) {
        (DeviceOp::Bind, step::REPORT) => Request::GetDeviceInterfaceReport {
            interface_id,
            offset: u16::try_from(v.report_len).map_err(|_| internal())?,
            length: u16::try_from(v.report_asked).map_err(|_| internal())?,
        },
        (DeviceOp::Bind, _) => Request::LockInterface {
            interface_id,
            params: LockInterfaceParams {
                flags: LockFlags::from_bits_truncate(v.params.lock_flags),
                default_stream_id: v.params.default_stream_id,
                mmio_reporting_offset: v.params.mmio_reporting_offset,
                bind_p2p_address_mask: v.params.bind_p2p_address_mask,
            },
        },
        (DeviceOp::Start, _) => Request::StartInterface {
            interface_id,
            nonce: v.start_nonce,
        },
        (DeviceOp::Stop, _) => Request::StopInterface { interface_id },
        (DeviceOp::None | DeviceOp::Connect, _) => return Err(internal()),
    })
}

/// The operation ended with `result`: if it was a guest's, its waiting call gets `result`.
fn guest_op_done(v: &mut VdevObj, result: StatusCode) {
    if v.guest_result == GUEST_OP_PENDING {
        v.guest_result = result as u32;
    }
}

/// Puts a vdevice in ERROR: T=1 off, cached translations gone, its private MMIO out of the TVM
/// and back to the host, no operation.
pub(crate) fn vdev_error(
    t: &Tsm<'_>,
    vdev: Pa,
    v: &mut VdevObj,
    result: StatusCode,
) -> Result<(), Status> {
    t.mmio_release_all(vdev)?;
    v.state = VdevState::Error;
    v.op = DeviceOp::None;
    v.step = 0;
    v.accepted = 0;
    guest_op_done(v, result);
    t.iotlb.lock().invalidate_vdev(viommu::VdevId(vdev.0));
    if result == StatusCode::DeviceError {
        // docs/abi.md §8.3: both sides learn of a device error from their event queues.
        let event = viommu::Fault {
            vdev: Some(viommu::VdevId(vdev.0)),
            reason: viommu::FaultReason::DeviceError,
            level: None,
            gpa: None,
            iova: tsm_abi::addr::Iova(0),
            pasid: None,
            access: viommu::Access::Read,
            t_bit: false,
        };
        v.events.push(&event);
        v.host_events.push(&event);
    }
    Ok(())
}

/// T=1 off and the private MMIO out of the TVM (back to the host) before anything else
/// happens to the TDI (unbind, stop).
pub(crate) fn vdev_t1_off(t: &Tsm<'_>, vdev: Pa, v: &mut VdevObj) -> Result<(), Status> {
    t.mmio_release_all(vdev)?;
    v.state = VdevState::Stopping;
    v.accepted = 0;
    t.iotlb.lock().invalidate_vdev(viommu::VdevId(vdev.0));
    Ok(())
}

/// VDEV_BIND: UNLOCKED → LOCKING under a READY PDEV; LOCK_INTERFACE goes out first. The accept
/// nonce for this bind is drawn now, before anything changes.
pub fn vdev_bind(t: &Tsm<'_>, a: args::VdevBind) -> Reply {
    let (vdev, comm) = (a.vdev, a.comm);
    let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
    let (p, mut v) = t.lock_with_parent(
        VdevHandle::new(vdev),
        1,
        VdevLinks::pdev,
        (&mut pdev_room, &mut vdev_room),
    )?;
    if v.state != VdevState::Unlocked || p.state != PdevState::Ready {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let supported = LockFlags::from_bits_truncate(p.lock_flags_supported as u16);
    if !supported.contains(LockFlags::from_bits_truncate(v.params.lock_flags)) {
        return Err(Status::arg(StatusCode::NotSupported, 1));
    }
    let mut nonce = [0u8; 32];
    t.platform
        .fill(&mut nonce)
        .map_err(|_| Status::new(StatusCode::NotSupported))?;
    v.op = DeviceOp::Bind;
    v.step = step::SENT;
    v.seq = 1;
    send(t, comm, vdev, v.seq, &vdev_request(&v)?)?;
    v.state = VdevState::Locking;
    v.tdisp_version = p.tdisp_version;
    v.accept_nonce = nonce;
    v.start_nonce = [0; 32];
    v.report_digest = [0; 32];
    v.report_len = 0;
    v.report_total = 0;
    v.report_asked = 0;
    v.accepted = 0;
    v.save()?;
    Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()))
}

/// VDEV_UNBIND: LOCKED / RUN / ERROR → STOPPING (T=1 off first); STOP_INTERFACE goes out.
pub fn vdev_unbind(t: &Tsm<'_>, a: args::VdevUnbind) -> Reply {
    let (vdev, comm) = (a.vdev, a.comm);
    let mut vdev_room = Room::new();
    let mut v = t.lock(VdevHandle::new(vdev), 1, &mut vdev_room)?;
    if !matches!(
        v.state,
        VdevState::Locked | VdevState::Run | VdevState::Error
    ) || v.op != DeviceOp::None
    {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let t1 = t1_view(&v);
    // The guard's copy is written back only by `save`: if the request cannot be sent, the
    // VDEV stays as it was.
    v.op = DeviceOp::Stop;
    v.step = step::SENT;
    v.seq = 1;
    send(t, comm, vdev, v.seq, &vdev_request(&v)?)?;
    vdev_t1_off(t, vdev, &mut v)?;
    v.save()?;
    t.dma_view_changed(vdev, t1, &v);
    Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()))
}

/// Reads the cached report of a VDEV granule into `out` (at most its length).
pub(crate) fn read_report(
    t: &Tsm<'_>,
    vdev: Pa,
    offset: u64,
    out: &mut [u8],
) -> Result<(), Status> {
    let at = REPORT_OFFSET
        .checked_add(offset)
        .and_then(|o| vdev.checked_add(o))
        .ok_or_else(internal)?;
    t.platform.read(at, out).map_err(|_| internal())
}

/// The report is complete: check it parses, hash it, and finish the bind.
fn finish_bind(t: &Tsm<'_>, vdev: Pa, v: &mut VdevObj) -> Result<bool, Status> {
    let mut report = [0u8; REPORT_CAPACITY as usize];
    let bytes = report
        .get_mut(..v.report_len as usize)
        .ok_or_else(internal)?;
    read_report(t, vdev, 0, bytes)?;
    if InterfaceReport::parse(bytes).is_err() {
        return Ok(false);
    }
    v.report_digest = Sha256::digest(&*bytes).into();
    v.report_counter = v.report_counter.wrapping_add(1);
    v.state = VdevState::Locked;
    v.op = DeviceOp::None;
    v.step = 0;
    Ok(true)
}

/// Asks for the next report portion; `false` when the report would not fit the cache.
fn ask_portion(v: &mut VdevObj) -> bool {
    let room = REPORT_CAPACITY.saturating_sub(u64::from(v.report_len));
    let wanted = if v.report_total == 0 {
        u64::MAX
    } else {
        u64::from(v.report_total.saturating_sub(v.report_len))
    };
    let len = room.min(wanted).min(REPORT_PORTION as u64);
    if len == 0 {
        return false;
    }
    v.step = step::REPORT;
    v.report_asked = len as u32;
    true
}

/// Takes one report portion; `Ok(false)` when it breaks the protocol.
fn take_portion(
    t: &Tsm<'_>,
    vdev: Pa,
    v: &mut VdevObj,
    portion: &[u8],
    remainder: u16,
) -> Result<bool, Status> {
    let received = u64::from(v.report_len);
    let len = portion.len() as u64;
    if len > u64::from(v.report_asked) || (len == 0 && remainder != 0) {
        return Ok(false);
    }
    // The device picks `remainder`; a sum that overflows is as wrong as one over capacity.
    let Some(filled) = received.checked_add(len) else {
        return Ok(false);
    };
    let Some(total) = filled.checked_add(u64::from(remainder)) else {
        return Ok(false);
    };
    if (v.report_total != 0 && total != u64::from(v.report_total))
        || total > REPORT_CAPACITY
        || total == 0
    {
        return Ok(false);
    }
    let at = REPORT_OFFSET
        .checked_add(received)
        .and_then(|o| vdev.checked_add(o))
        .ok_or_else(internal)?;
    t.platform.write(at, portion).map_err(|_| internal())?;
    v.report_len = filled as u32;
    v.report_total = total as u32;
    Ok(true)
}

fn vdev_continue(t: &Tsm<'_>, vdev: Pa, comm: Pa) -> Reply {
    let mut vdev_room = Room::new();
    let mut v = t.lock(VdevHandle::new(vdev), 1, &mut vdev_room)?;
    if v.op == DeviceOp::None {
        return Err(Status::arg(StatusCode::NoOperation, 1));
    }
    let t1 = t1_view(&v);
    let req = vdev_request(&v)?;
    if v.step == step::NOT_SENT {
        v.step = step::SENT;
        v.seq = 1;
        send(t, comm, vdev, v.seq, &req)?;
        v.save()?;
        return Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()));
    }
    let mut buf = [0u8; MAX_RESPONSE];
    let got = receive(t, comm, &mut buf)?;
    let rsp = match got {
        Answer::Bytes(n) => buf.get(..n).and_then(|b| answer(b, &req)),
        Answer::Failed => None,
    };
    let ok = match (v.op, rsp) {
        (DeviceOp::Bind, Some(Response::LockInterface { nonce, .. })) if v.step == step::SENT => {
            v.start_nonce = nonce;
            ask_portion(&mut v)
        }
        (
            DeviceOp::Bind,
            Some(Response::DeviceInterfaceReport {
                portion,
                remainder_length,
                ..
            }),
        ) if v.step == step::REPORT => {
            take_portion(t, vdev, &mut v, portion, remainder_length)?
                && if v.report_len == v.report_total {
                    finish_bind(t, vdev, &mut v)?
                } else {
                    ask_portion(&mut v)
                }
        }
        (DeviceOp::Start, Some(Response::StartInterface { .. })) => {
            v.state = VdevState::Run;
            v.accepted = 1;
            v.op = DeviceOp::None;
            v.step = 0;
            guest_op_done(&mut v, StatusCode::Success);
            true
        }
        (DeviceOp::Stop, Some(Response::StopInterface { .. })) => {
            v.state = VdevState::Unlocked;
            v.op = DeviceOp::None;
            v.step = 0;
            v.accept_nonce = [0; 32];
            v.start_nonce = [0; 32];
            v.report_digest = [0; 32];
            v.report_len = 0;
            v.report_total = 0;
            guest_op_done(&mut v, StatusCode::Success);
            true
        }
        _ => false,
    };
    if !ok {
        vdev_error(t, vdev, &mut v, StatusCode::DeviceError)?;
        v.save()?;
        t.dma_view_changed(vdev, t1, &v);
        return Ok(progress(StatusCode::DeviceError, v.op, v.state.raw()));
    }
    if v.op != DeviceOp::None {
        v.seq = v.seq.checked_add(1).ok_or_else(internal)?;
        send(t, comm, vdev, v.seq, &vdev_request(&v)?)?;
    }
    v.save()?;
    t.dma_view_changed(vdev, t1, &v);
    let status = if v.op == DeviceOp::None {
        StatusCode::Success
    } else {
        StatusCode::NeedsDeviceIo
    };
    Ok(progress(status, v.op, v.state.raw()))
}

/// COMMUNICATE: continue the pending operation of a PDEV or VDEV with the device's response.
pub fn communicate(t: &Tsm<'_>, a: args::Communicate) -> Reply {
    let (obj, comm) = (a.object, a.comm);
    match t.granules.peek(obj).map_err(|e| e.status(1))?.0 {
        GranuleState::Pdev => pdev_continue(t, obj, comm),
        GranuleState::Vdev => vdev_continue(t, obj, comm),
        _ => Err(Status::arg(StatusCode::BadHandle, 1)),
    }
}

/// OP_CANCEL: a PDEV goes back to NEW; a VDEV goes to ERROR (a guest waiting on it gets
/// `Cancelled`).
pub fn op_cancel(t: &Tsm<'_>, a: args::OpCancel) -> Reply {
    let obj = a.object;
    match t.granules.peek(obj).map_err(|e| e.status(1))?.0 {
        GranuleState::Pdev => {
            let mut pdev_room = Room::new();
            let mut p = t.lock(PdevHandle::new(obj), 1, &mut pdev_room)?;
            if p.op == DeviceOp::None {
                return Err(Status::arg(StatusCode::NoOperation, 1));
            }
            p.op = DeviceOp::None;
            p.state = PdevState::New;
            p.step = 0;
            p.save()?;
        }
        GranuleState::Vdev => {
            let mut vdev_room = Room::new();
            let mut v = t.lock(VdevHandle::new(obj), 1, &mut vdev_room)?;
            if v.op == DeviceOp::None {
                return Err(Status::arg(StatusCode::NoOperation, 1));
            }
            let t1 = t1_view(&v);
            vdev_error(t, obj, &mut v, StatusCode::Cancelled)?;
            v.save()?;
            t.dma_view_changed(obj, t1, &v);
        }
        _ => return Err(Status::arg(StatusCode::BadHandle, 1)),
    }
    Ok(CallResult::ok([0; 4]))
}
