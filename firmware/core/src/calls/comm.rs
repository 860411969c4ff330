//! The TDISP requester over the one resumable model: a call that needs the device writes a
//! request into the host's COMMUNICATE buffer and returns `NeedsDeviceIo`; the host carries it to
//! the device and calls COMMUNICATE with the response, until the operation completes
//! (`Success`) or fails (`DeviceError`, the object goes to ERROR).
//!
//! | operation | started by | requests |
//! |---|---|---|
//! | CONNECT (PDEV) | PDEV_CONNECT | with SPDM: the SPDM connect and session ([`crate::spdm::requester`]); then GET_VERSION, GET_CAPABILITIES |
//! | KEY_UPDATE (PDEV) | PDEV_KEY_UPDATE | SPDM KEY_UPDATE × 2 |
//! | DISCONNECT (PDEV) | PDEV_DISCONNECT | SPDM END_SESSION |
//! | BIND (VDEV) | VDEV_BIND | LOCK_INTERFACE, GET_DEVICE_INTERFACE_REPORT × n |
//! | START (VDEV) | G_VDEV_ACCEPT | START_INTERFACE |
//! | STOP (VDEV) | VDEV_UNBIND, G_VDEV_STOP | STOP_INTERFACE |
//!
//! With `PdevFlags::SPDM` every TDISP message travels sealed in the PDEV's session
//! ([`super::session`]), and only a record that opens under the session's keys is taken as
//! the device's answer: a plaintext or altered answer ends the session and fails the operation.
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
use tsm_abi::guest::SPDM_DIGEST_SIZE;
use tsm_abi::params::VdevParams;
use tsm_abi::regs::CallResult;
use tsm_abi::state::{DeviceOp, PdevState, VdevState};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::{
    InterfaceId, InterfaceReport, LockFlags, LockInterfaceParams, Request, RequestCode, Response,
    TDISP_VERSION_1_0,
};
use zerocopy::{FromZeros, Immutable, IntoBytes};

use crate::calls::session;
use crate::dispatch::Reply;
use crate::dma_tables::t1_view;
use crate::granule::GranuleState;
use crate::objects::{
    GUEST_OP_PENDING, Guard, Handle, PdevHead, REPORT_CAPACITY, REPORT_OFFSET, Room, VdevBindHead,
    VdevHandle, VdevHead, VdevLinks, VdevObj, internal,
};
use crate::spdm::requester::{Evidence, MAX_RECORD, Outbound, Outcome, Requester, Step};
use crate::tsm::Tsm;
use crate::viommu;

/// Report bytes asked per GET_DEVICE_INTERFACE_REPORT (bounds the TSM's response buffer).
pub const REPORT_PORTION: usize = 1024;
/// The largest response the TSM takes: a full report portion with its headers.
const MAX_RESPONSE: usize = REPORT_PORTION + 32;
/// The largest request the TSM sends (START_INTERFACE: header + nonce).
const MAX_REQUEST: usize = 64;
// `send` builds a request in whole words.
const _: () = assert!(MAX_REQUEST.is_multiple_of(8) && size_of::<CommHeader>() == COMM_HEADER_SIZE);

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

/// A request as [`send`] builds it: the header, then the encoded message. In whole words, so
/// the body's zeroing is a few inline stores where a byte array of unknown alignment was a
/// `memset` call (86 instructions on aarch64, profiled), and the header is built in place, not
/// built aside and copied in.
#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct Outgoing {
    header: CommHeader,
    body: [u64; MAX_REQUEST / 8],
}

/// Writes `req` into the COMMUNICATE buffer at `comm` (granule-aligned, NS).
fn send(t: &Tsm<'_>, comm: Pa, object: Pa, sequence: u64, req: &Request<'_>) -> Result<(), Status> {
    if !comm.is_granule_aligned() {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    let mut out = Outgoing {
        header: CommHeader {
            op: CommOp::Exchange.raw(),
            protocol: CommProtocol::Tdisp.raw(),
            request_len: 0,
            response_len: 0,
            host_status: HostIoStatus::Response.raw(),
            reserved0: 0,
            object: object.0,
            sequence,
            reserved1: [0; 3],
        },
        body: [0; MAX_REQUEST / 8],
    };
    let len = req
        .encode(out.body.as_mut_bytes())
        .map_err(|_| internal())?;
    out.header.request_len = len as u32;
    // Only the header and the `len` bytes the encoder wrote go out.
    let total = COMM_HEADER_SIZE
        .checked_add(len)
        .and_then(|n| out.as_bytes().get(..n))
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
fn receive(t: &Tsm<'_>, comm: Pa, buf: &mut [u8]) -> Result<Answer, Status> {
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
fn pdev_interface(p: &PdevHead) -> Result<InterfaceId, Status> {
    InterfaceId::from_function_id(p.params.function_id(p.params.rid_base)).map_err(|_| internal())
}

/// The interface ID of a VDEV's TDI.
fn vdev_interface(v: &VdevHead) -> Result<InterfaceId, Status> {
    InterfaceId::from_function_id(v.params.function_id).map_err(|_| internal())
}

/// Steps of a PDEV connect.
mod pdev_step {
    /// TDISP GET_VERSION is out.
    pub const VERSION: u32 = 1;
    /// TDISP GET_CAPABILITIES is out.
    pub const CAPABILITIES: u32 = 2;
    /// The SPDM connect (GET_VERSION … FINISH) is under way.
    pub const SPDM: u32 = 3;
}

/// The request a PDEV's pending connect step sent.
fn pdev_request(p: &PdevHead) -> Result<Request<'static>, Status> {
    let interface_id = pdev_interface(p)?;
    Ok(match p.step {
        pdev_step::VERSION => Request::GetVersion { interface_id },
        _ => Request::GetCapabilities {
            interface_id,
            tsm_caps: 0,
        },
    })
}

/// Sends a TDISP request for `object` of PDEV `p`: sealed in the session with SPDM (the
/// requester is stored and the session claimed only once the request is out), else in the
/// clear.
fn send_via(
    t: &Tsm<'_>,
    p: &mut PdevHead,
    session: Option<&mut Requester>,
    comm: Pa,
    object: Pa,
    sequence: u64,
    req: &Request<'_>,
) -> Result<(), Status> {
    match session {
        Some(r) => {
            session::claim(p, object)?;
            session::send_tdisp(t, r, comm, object, sequence, req)
        }
        None => send(t, comm, object, sequence, req),
    }
}

/// PDEV_CONNECT: NEW → CONNECTING. With SPDM, SPDM GET_VERSION goes out first and the PDEV
/// takes the evidence granule; without, TDISP GET_VERSION.
pub fn pdev_connect(t: &Tsm<'_>, a: args::PdevConnect) -> Reply {
    let (pdev, comm, evidence) = (a.pdev, a.comm, a.evidence);
    let mut pdev_room = Room::new();
    let mut p = t.lock(Handle::<PdevHead>::new(pdev), 1, &mut pdev_room)?;
    if p.state != PdevState::New {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    if !session::uses_spdm(&p) {
        if evidence.0 != 0 {
            return Err(Status::arg(StatusCode::InvalidArgument, 3));
        }
        p.step = pdev_step::VERSION;
        p.seq = 1;
        send(t, comm, pdev, p.seq, &pdev_request(&p)?)?;
        p.state = PdevState::Connecting;
        p.op = DeviceOp::Connect;
        p.save()?;
        return Ok(progress(StatusCode::NeedsDeviceIo, p.op, p.state.raw()));
    }
    if evidence == pdev || evidence == comm {
        return Err(Status::arg(StatusCode::GranuleState, 3));
    }
    let mut ge = t.granules.lock(evidence).map_err(|e| e.status(3))?;
    ge.state()
        .check_transition(GranuleState::Evidence)
        .map_err(|e| e.status(3))?;
    let mut r = Requester::new();
    let mut out = [0u8; MAX_RECORD];
    let slot = u8::try_from(p.params.spdm_slot).map_err(|_| internal())?;
    let sent = r.start_connect(slot, &mut out).map_err(|_| internal())?;
    p.seq = 1;
    let first = out.get(..sent.len).ok_or_else(internal)?;
    session::write_comm(t, comm, pdev, p.seq, session::protocol(sent), first)?;
    session::store(t, &p, &r)?;
    p.evidence = evidence.0;
    p.session_owner = pdev.0;
    p.step = pdev_step::SPDM;
    p.state = PdevState::Connecting;
    p.op = DeviceOp::Connect;
    p.save()?;
    ge.transition(GranuleState::Evidence)
        .map_err(|_| internal())?;
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

/// The TDISP response the host brought back: the payload as it is in the clear, or opened
/// from a secured record in the session (`None`: the session failed, or no answer came).
fn tdisp_answer<'b>(
    t: &Tsm<'_>,
    got: Answer,
    payload: &mut [u8],
    session: Option<&mut Requester>,
    tdisp: &'b mut [u8; MAX_RESPONSE],
) -> Result<Option<&'b [u8]>, Status> {
    let Answer::Bytes(n) = got else {
        if let Some(r) = session {
            // The request is out and its answer will never come: the session cannot go on.
            r.abort();
        }
        return Ok(None);
    };
    let bytes = payload.get_mut(..n).ok_or_else(internal)?;
    match session {
        None => {
            let Some(dest) = tdisp.get_mut(..n) else {
                return Ok(None);
            };
            dest.copy_from_slice(bytes);
            Ok(Some(dest))
        }
        Some(r) => {
            Ok(session::open_tdisp(r, bytes, tdisp, t.platform)?.and_then(|len| tdisp.get(..len)))
        }
    }
}

fn pdev_continue(t: &Tsm<'_>, pdev: Pa, comm: Pa) -> Reply {
    let mut pdev_room = Room::new();
    let mut p = t.lock(Handle::<PdevHead>::new(pdev), 1, &mut pdev_room)?;
    match p.op {
        DeviceOp::Connect => {}
        DeviceOp::KeyUpdate | DeviceOp::Disconnect => {
            return session_op_continue(t, &mut p, comm);
        }
        _ => return Err(Status::arg(StatusCode::NoOperation, 1)),
    }
    let mut payload = [0u8; COMM_PAYLOAD_SIZE];
    let got = receive(t, comm, &mut payload)?;
    if p.step == pdev_step::SPDM {
        return spdm_connect_continue(t, &mut p, comm, got, &mut payload);
    }
    let mut session = if session::uses_spdm(&p) {
        Some(session::load(t, &p)?)
    } else {
        None
    };
    let req = pdev_request(&p)?;
    let mut tdisp = [0u8; MAX_RESPONSE];
    let bytes = tdisp_answer(t, got, &mut payload, session.as_mut(), &mut tdisp)?;
    let rsp = bytes.and_then(|b| answer(b, &req));
    let next = match (p.step, rsp) {
        (pdev_step::VERSION, Some(Response::Version { versions, .. }))
            if versions.contains(TDISP_VERSION_1_0) =>
        {
            p.tdisp_version = u32::from(TDISP_VERSION_1_0);
            Some(pdev_step::CAPABILITIES)
        }
        (pdev_step::CAPABILITIES, Some(Response::Capabilities { caps, .. }))
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
            match session.as_mut() {
                Some(r) => session::fail(t, &mut p, r)?,
                None => {
                    p.state = PdevState::Error;
                    p.op = DeviceOp::None;
                    p.step = 0;
                }
            }
            p.save()?;
            return Ok(progress(StatusCode::DeviceError, p.op, p.state.raw()));
        }
    };
    match next {
        Some(step) => {
            p.step = step;
            p.seq = p.seq.checked_add(1).ok_or_else(internal)?;
            let req = pdev_request(&p)?;
            let seq = p.seq;
            send_via(t, &mut p, session.as_mut(), comm, pdev, seq, &req)?;
        }
        None => {
            p.state = PdevState::Ready;
            p.op = DeviceOp::None;
            p.step = 0;
            p.session_owner = 0;
        }
    }
    if let Some(r) = &session {
        session::store(t, &p, r)?;
    }
    p.save()?;
    let status = if p.op == DeviceOp::None {
        StatusCode::Success
    } else {
        StatusCode::NeedsDeviceIo
    };
    Ok(progress(status, p.op, p.state.raw()))
}

/// One step of the SPDM connect: the device's answer goes to the requester, whose next
/// message goes out; once the session is up, TDISP GET_VERSION goes out inside it.
fn spdm_connect_continue(
    t: &Tsm<'_>,
    p: &mut Guard<'_, '_, PdevHead>,
    comm: Pa,
    got: Answer,
    payload: &mut [u8; COMM_PAYLOAD_SIZE],
) -> Reply {
    let pdev = p.pa();
    let mut r = session::load(t, p)?;
    let evidence = Pa(p.evidence);
    let mut ev = [0u8; GRANULE_SIZE as usize];
    session::read_evidence(t, evidence, &mut ev)?;
    let mut out = [0u8; MAX_RECORD];
    let step = match got {
        Answer::Bytes(n) => {
            let response = payload.get_mut(..n).ok_or_else(internal)?;
            let mut parts = session::evidence_parts(&mut ev);
            r.respond(response, &mut out, &mut parts, t.platform).ok()
        }
        Answer::Failed => None,
    };
    let seq = p.seq.checked_add(1).ok_or_else(internal)?;
    match step {
        Some(Step::Send(sent)) => {
            let message = out.get(..sent.len).ok_or_else(internal)?;
            session::write_comm(t, comm, pdev, seq, session::protocol(sent), message)?;
        }
        Some(Step::Done(Outcome::Connected)) => {
            p.step = pdev_step::VERSION;
            let req = pdev_request(p)?;
            session::send_tdisp(t, &mut r, comm, pdev, seq, &req)?;
        }
        Some(Step::Done(_)) => return Err(internal()),
        None => {
            session::fail(t, p, &mut r)?;
            p.save()?;
            return Ok(progress(StatusCode::DeviceError, p.op, p.state.raw()));
        }
    }
    session::write_evidence(t, evidence, &ev)?;
    session::store(t, p, &r)?;
    p.seq = seq;
    p.save()?;
    Ok(progress(StatusCode::NeedsDeviceIo, p.op, p.state.raw()))
}

/// The rest of a key update or disconnect.
fn session_op_continue(t: &Tsm<'_>, p: &mut Guard<'_, '_, PdevHead>, comm: Pa) -> Reply {
    let pdev = p.pa();
    let mut payload = [0u8; COMM_PAYLOAD_SIZE];
    let got = receive(t, comm, &mut payload)?;
    let mut r = session::load(t, p)?;
    let mut out = [0u8; MAX_RECORD];
    let mut none = Evidence {
        chain: &mut [],
        measurements: &mut [],
    };
    let step = match got {
        Answer::Bytes(n) => {
            let response = payload.get_mut(..n).ok_or_else(internal)?;
            r.respond(response, &mut out, &mut none, t.platform).ok()
        }
        Answer::Failed => None,
    };
    let seq = p.seq.checked_add(1).ok_or_else(internal)?;
    match (p.op, step) {
        (DeviceOp::KeyUpdate, Some(Step::Send(sent))) => {
            let message = out.get(..sent.len).ok_or_else(internal)?;
            session::write_comm(t, comm, pdev, seq, session::protocol(sent), message)?;
            p.seq = seq;
        }
        (DeviceOp::KeyUpdate, Some(Step::Done(Outcome::KeysUpdated))) => {
            p.op = DeviceOp::None;
            p.session_owner = 0;
        }
        (DeviceOp::Disconnect, Some(Step::Done(Outcome::Ended))) => {
            release_evidence(t, p)?;
            p.op = DeviceOp::None;
            p.state = PdevState::New;
            p.session_owner = 0;
        }
        (_, Some(_)) => return Err(internal()),
        (_, None) => {
            session::fail(t, p, &mut r)?;
            p.save()?;
            return Ok(progress(StatusCode::DeviceError, p.op, p.state.raw()));
        }
    }
    session::store(t, p, &r)?;
    p.save()?;
    let status = if p.op == DeviceOp::None {
        StatusCode::Success
    } else {
        StatusCode::NeedsDeviceIo
    };
    Ok(progress(status, p.op, p.state.raw()))
}

/// Scrubs the PDEV's evidence granule and gives it back (DELEGATED).
pub(crate) fn release_evidence(t: &Tsm<'_>, p: &mut PdevHead) -> Result<(), Status> {
    if p.evidence == 0 {
        return Ok(());
    }
    let mut g = t
        .granules
        .lock_in(Pa(p.evidence), GranuleState::Evidence)
        .map_err(|_| internal())?;
    t.scrub(g.pa())?;
    g.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    p.evidence = 0;
    Ok(())
}

/// A READY SPDM PDEV whose session is free, for a session operation.
fn lock_session_pdev<'t, 'a>(
    t: &'t Tsm<'a>,
    pdev: Pa,
    room: &'t mut Room<PdevHead>,
) -> Result<Guard<'t, 'a, PdevHead>, Status> {
    let p = t.lock(Handle::<PdevHead>::new(pdev), 1, room)?;
    if !session::uses_spdm(&p) {
        return Err(Status::arg(StatusCode::NotSupported, 1));
    }
    if p.state != PdevState::Ready || p.op != DeviceOp::None || p.session_owner != 0 {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    Ok(p)
}

/// PDEV_KEY_UPDATE: both directions' keys are replaced (KEY_UPDATE UpdateAllKeys, then
/// VerifyNewKey under the new keys).
pub fn pdev_key_update(t: &Tsm<'_>, a: args::PdevKeyUpdate) -> Reply {
    let mut pdev_room = Room::new();
    let mut p = lock_session_pdev(t, a.pdev, &mut pdev_room)?;
    let mut r = session::load(t, &p)?;
    let mut out = [0u8; MAX_RECORD];
    let sent = r
        .start_key_update(t.platform, &mut out)
        .map_err(|_| internal())?;
    send_session_first(t, a.comm, &mut p, &r, sent, &out, DeviceOp::KeyUpdate)
}

/// PDEV_DISCONNECT: END_SESSION, refused while a vdevice is bound; READY → NEW once the
/// device acknowledged.
pub fn pdev_disconnect(t: &Tsm<'_>, a: args::PdevDisconnect) -> Reply {
    let mut pdev_room = Room::new();
    let mut p = lock_session_pdev(t, a.pdev, &mut pdev_room)?;
    crate::calls::device::refuse_bound(t, &p)?;
    let mut r = session::load(t, &p)?;
    let mut out = [0u8; MAX_RECORD];
    let sent = r.start_end_session(&mut out).map_err(|_| internal())?;
    send_session_first(t, a.comm, &mut p, &r, sent, &out, DeviceOp::Disconnect)
}

/// The first request of session operation `op` (`sent`, its bytes at the start of `out`) into
/// the COMMUNICATE buffer; the requester's state kept and the PDEV's session taken by `op`
/// until the device answers.
fn send_session_first(
    t: &Tsm<'_>,
    comm: Pa,
    p: &mut Guard<'_, '_, PdevHead>,
    r: &Requester,
    sent: Outbound,
    out: &[u8],
    op: DeviceOp,
) -> Reply {
    let message = out.get(..sent.len).ok_or_else(internal)?;
    session::write_comm(t, comm, p.pa(), 1, session::protocol(sent), message)?;
    session::store(t, p, r)?;
    p.seq = 1;
    p.op = op;
    p.session_owner = p.pa().0;
    p.save()?;
    Ok(progress(StatusCode::NeedsDeviceIo, p.op, p.state.raw()))
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
// Out of line on x86_64, where its three callers' copies in the run loop cost `.text` ~850
// bytes once the HAL's VMCB accesses shrank (`vrun8`); x86_64's `.text` is at its budget.
#[cfg_attr(target_arch = "x86_64", inline(never))]
fn vdev_request(v: &VdevHead) -> Result<Request<'static>, Status> {
    let interface_id = vdev_interface(v)?;
    Ok(match (v.op, v.step) {
        (DeviceOp::Bind, step::REPORT) => Request::GetDeviceInterfaceReport {
            interface_id,
            offset: u16::try_from(v.report_len).map_err(|_| internal())?,
            length: u16::try_from(v.report_asked).map_err(|_| internal())?,
        },
        (DeviceOp::Bind, _) => lock_request(&v.params)?,
        (DeviceOp::Start, _) => Request::StartInterface {
            interface_id,
            nonce: v.start_nonce,
        },
        (DeviceOp::Stop, _) => Request::StopInterface { interface_id },
        (DeviceOp::None | DeviceOp::Connect | DeviceOp::KeyUpdate | DeviceOp::Disconnect, _) => {
            return Err(internal());
        }
    })
}

/// The LOCK_INTERFACE of a vdevice created with `params`, the first request of its bind.
fn lock_request(params: &VdevParams) -> Result<Request<'static>, Status> {
    Ok(Request::LockInterface {
        interface_id: InterfaceId::from_function_id(params.function_id).map_err(|_| internal())?,
        params: LockInterfaceParams {
            flags: LockFlags::from_bits_truncate(params.lock_flags),
            default_stream_id: params.default_stream_id,
            mmio_reporting_offset: params.mmio_reporting_offset,
            bind_p2p_address_mask: params.bind_p2p_address_mask,
        },
    })
}

/// The operation ended with `result`: if it was a guest's, its waiting call gets `result`.
fn guest_op_done(v: &mut VdevHead, result: StatusCode) {
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
pub(crate) fn vdev_t1_off(t: &Tsm<'_>, vdev: Pa, v: &mut VdevHead) -> Result<(), Status> {
    t.mmio_release_all(vdev)?;
    v.state = VdevState::Stopping;
    v.accepted = 0;
    t.iotlb.lock().invalidate_vdev(viommu::VdevId(vdev.0));
    Ok(())
}

/// VDEV_BIND: UNLOCKED → LOCKING under a READY PDEV; LOCK_INTERFACE goes out first. The accept
/// nonce for this bind is drawn now, before anything changes. Only the VDEV's bind head is
/// locked and copied: the earlier bind's results after it are zeroed in place at the save.
pub fn vdev_bind(t: &Tsm<'_>, a: args::VdevBind) -> Reply {
    let (vdev, comm) = (a.vdev, a.comm);
    let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
    let (mut p, mut v) = t.lock_with_parent(
        Handle::<VdevBindHead>::new(vdev),
        1,
        VdevLinks::pdev_head,
        (&mut pdev_room, &mut vdev_room),
    )?;
    if v.state != VdevState::Unlocked || p.state != PdevState::Ready || p.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let supported = LockFlags::from_bits_truncate(p.lock_flags_supported as u16);
    if !supported.contains(LockFlags::from_bits_truncate(v.params.lock_flags)) {
        return Err(Status::arg(StatusCode::NotSupported, 1));
    }
    // Drawn straight into the copy (which only `save_bind` below writes back), not into a frame
    // array that is zeroed and copied.
    t.platform
        .fill(&mut v.accept_nonce)
        .map_err(|_| Status::new(StatusCode::NotSupported))?;
    send_first(t, &mut p, &lock_request(&v.params)?, comm, vdev)?;
    v.op = DeviceOp::Bind;
    v.step = step::SENT;
    v.seq = 1;
    v.state = VdevState::Locking;
    v.tdisp_version = p.tdisp_version;
    v.report_asked = 0;
    v.accepted = 0;
    save_claimed(&p)?;
    v.save_bind()?;
    Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()))
}

/// Sends `req`, the first request (sequence 1) of an operation of vdevice `vdev` of PDEV `p`:
/// sealed when the PDEV has a session, whose requester is then stored again.
fn send_first(
    t: &Tsm<'_>,
    p: &mut Guard<'_, '_, PdevHead>,
    req: &Request<'_>,
    comm: Pa,
    vdev: Pa,
) -> Result<(), Status> {
    // The requester is read only with SPDM: an `Option<Requester>` returned by value is moved
    // whole (2 KiB, at odd offsets) even when it is `None`, which was half of a VDEV_BIND
    // without SPDM.
    if session::uses_spdm(p) {
        let mut r = session::load(t, p)?;
        send_via(t, p, Some(&mut r), comm, vdev, 1, req)?;
        session::store(t, p, &r)
    } else {
        send_via(t, p, None, comm, vdev, 1, req)
    }
}

/// Writes back the PDEV after [`send_first`], which changed it only by claiming its session.
fn save_claimed(p: &Guard<'_, '_, PdevHead>) -> Result<(), Status> {
    if session::uses_spdm(p) {
        p.save()
    } else {
        Ok(())
    }
}

fn save_session(
    t: &Tsm<'_>,
    p: &Guard<'_, '_, PdevHead>,
    r: Option<&Requester>,
) -> Result<(), Status> {
    match r {
        Some(r) => session::store(t, p, r),
        None => Ok(()),
    }
}

/// Forgets the device evidence a bind took from the PDEV.
fn clear_device_evidence(v: &mut VdevHead) {
    v.chain_len = 0;
    v.measurements_len = 0;
    v.evidence = 0;
    v.chain_digest = [0; SPDM_DIGEST_SIZE];
    v.measurements_digest = [0; SPDM_DIGEST_SIZE];
}

/// VDEV_UNBIND: LOCKED / RUN / ERROR → STOPPING (T=1 off first); STOP_INTERFACE goes out.
pub fn vdev_unbind(t: &Tsm<'_>, a: args::VdevUnbind) -> Reply {
    let (vdev, comm) = (a.vdev, a.comm);
    let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
    let (mut p, mut v) = lock_unbind(t, vdev, (&mut pdev_room, &mut vdev_room))?;
    if !matches!(
        v.state,
        VdevState::Locked | VdevState::Run | VdevState::Error
    ) || v.op != DeviceOp::None
    {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    if session::uses_spdm(&p) && p.state != PdevState::Ready {
        // The session failed: STOP_INTERFACE can never go out. The vdevice goes to ERROR at
        // once (T=1 off, its private MMIO back to the host), which VDEV_DESTROY takes; else a
        // vdevice bound when its session failed would hold its TVM, vIOMMU and PDEV for good
        // (found by the model test: REGRESSIONS). An ERROR vdevice has nothing to
        // stop: destroy it.
        if v.state == VdevState::Error {
            return Err(Status::arg(StatusCode::ObjectState, 1));
        }
        if !comm.is_granule_aligned() {
            return Err(Status::arg(StatusCode::InvalidBuffer, 2));
        }
        drop(t.lock_ns_buffer(comm, GRANULE_SIZE, 2)?);
        // The device-error path needs the whole object (its event queues).
        drop(v);
        drop(p);
        return unbind_without_session(t, vdev);
    }
    // The session is busy (a key update, or another object's request, is out): retry.
    if session::uses_spdm(&p) && p.op != DeviceOp::None {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let t1 = t1_view(&v);
    // The guards' copies are written back only by `save`: if the request cannot be sent,
    // both objects stay as they were.
    v.op = DeviceOp::Stop;
    v.step = step::SENT;
    v.seq = 1;
    send_first(t, &mut p, &vdev_request(&v)?, comm, vdev)?;
    vdev_t1_off(t, vdev, &mut v)?;
    save_claimed(&p)?;
    v.save()?;
    t.dma_view_changed(vdev, t1, &v);
    Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()))
}

/// VDEV_UNBIND's lock: vdevice `vdev`'s head and its PDEV ([`Tsm::lock_with_parent`]).
// Out of line, as this instance was while VDEV_BIND shared it: with one caller it was inlined
// into `run_loop::run` and changed the code every host call runs there (x86_64's floor and
// VERSION; docs/benchmarks.md, `vbind6`).
#[inline(never)]
fn lock_unbind<'t, 'a>(
    t: &'t Tsm<'a>,
    vdev: Pa,
    rooms: (&'t mut Room<PdevHead>, &'t mut Room<VdevHead>),
) -> Result<(Guard<'t, 'a, PdevHead>, Guard<'t, 'a, VdevHead>), Status> {
    t.lock_with_parent(
        Handle::<VdevHead>::new(vdev),
        1,
        VdevLinks::pdev_head,
        rooms,
    )
}

/// VDEV_UNBIND of a LOCKED or RUN vdevice whose PDEV's session failed: ERROR at once.
fn unbind_without_session(t: &Tsm<'_>, vdev: Pa) -> Reply {
    let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
    let (p, mut v) = t.lock_with_parent(
        VdevHandle::new(vdev),
        1,
        VdevLinks::pdev_head,
        (&mut pdev_room, &mut vdev_room),
    )?;
    // Checked again under this lock: another CPU may have moved either object meanwhile.
    if !matches!(v.state, VdevState::Locked | VdevState::Run)
        || v.op != DeviceOp::None
        || !session::uses_spdm(&p)
        || p.state == PdevState::Ready
    {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let t1 = t1_view(&v);
    vdev_error(t, vdev, &mut v, StatusCode::DeviceError)?;
    v.save()?;
    t.dma_view_changed(vdev, t1, &v);
    Ok(progress(StatusCode::DeviceError, v.op, v.state.raw()))
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

/// The report is complete: check it parses, hash it, take the device evidence of the session
/// it came through, and finish the bind.
fn finish_bind(
    t: &Tsm<'_>,
    vdev: Pa,
    v: &mut VdevObj,
    p: &PdevHead,
    session: Option<&Requester>,
) -> Result<bool, Status> {
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
    if let Some(r) = session {
        v.evidence = p.evidence;
        v.chain_len = u32::try_from(r.chain_len()).map_err(|_| internal())?;
        v.measurements_len = u32::try_from(r.measurements_len()).map_err(|_| internal())?;
        v.chain_digest = *r.chain_digest();
        v.measurements_digest = *r.measurements_digest();
    }
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
    let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
    let (mut p, mut v) = t.lock_with_parent(
        VdevHandle::new(vdev),
        1,
        VdevLinks::pdev_head,
        (&mut pdev_room, &mut vdev_room),
    )?;
    if v.op == DeviceOp::None {
        return Err(Status::arg(StatusCode::NoOperation, 1));
    }
    let t1 = t1_view(&v);
    // Filled in place, not returned in an `Option` (see `send_first`).
    let mut session = None;
    if session::uses_spdm(&p) {
        session = Some(session::load(t, &p)?);
    }
    let req = vdev_request(&v)?;
    if v.step == step::NOT_SENT {
        if session.is_some() && (p.state != PdevState::Ready || p.op != DeviceOp::None) {
            // The session failed (or is being ended) before the guest's request went out.
            vdev_error(t, vdev, &mut v, StatusCode::DeviceError)?;
            v.save()?;
            return Ok(progress(StatusCode::DeviceError, v.op, v.state.raw()));
        }
        v.step = step::SENT;
        v.seq = 1;
        send_via(t, &mut p, session.as_mut(), comm, vdev, v.seq, &req)?;
        save_session(t, &p, session.as_ref())?;
        p.save()?;
        v.save()?;
        return Ok(progress(StatusCode::NeedsDeviceIo, v.op, v.state.raw()));
    }
    let mut payload = [0u8; COMM_PAYLOAD_SIZE];
    let got = receive(t, comm, &mut payload)?;
    // In a session, this vdevice's request is out only while it owns the session; anything
    // else means the session failed meanwhile and the answer can never be opened.
    let owns = p.session_owner == vdev.0;
    let mut tdisp = [0u8; MAX_RESPONSE];
    let bytes = match session.as_mut() {
        Some(_) if !owns => None,
        s => tdisp_answer(t, got, &mut payload, s, &mut tdisp)?,
    };
    let rsp = bytes.and_then(|b| answer(b, &req));
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
                    finish_bind(t, vdev, &mut v, &p, session.as_ref())?
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
            clear_device_evidence(&mut v);
            guest_op_done(&mut v, StatusCode::Success);
            true
        }
        _ => false,
    };
    if !ok {
        if let Some(r) = session.as_mut().filter(|_| owns) {
            // A TDISP answer that opened but breaks the protocol ends the session too: the
            // TSM no longer trusts where the device is.
            session::fail(t, &mut p, r)?;
            p.save()?;
        }
        vdev_error(t, vdev, &mut v, StatusCode::DeviceError)?;
        v.save()?;
        t.dma_view_changed(vdev, t1, &v);
        return Ok(progress(StatusCode::DeviceError, v.op, v.state.raw()));
    }
    if v.op != DeviceOp::None {
        v.seq = v.seq.checked_add(1).ok_or_else(internal)?;
        let seq = v.seq;
        send_via(
            t,
            &mut p,
            session.as_mut(),
            comm,
            vdev,
            seq,
            &vdev_request(&v)?,
        )?;
    } else if session.is_some() {
        p.session_owner = 0;
    }
    save_session(t, &p, session.as_ref())?;
    p.save()?;
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

/// OP_CANCEL: a PDEV's connect goes back to NEW (its session and evidence gone), a PDEV's
/// key update or disconnect ends the session (ERROR); a VDEV goes to ERROR (a guest waiting on
/// it gets `Cancelled`), and if its request was out in the session, the session ends too (its
/// answer is lost, so the sequence numbers can no longer agree).
pub fn op_cancel(t: &Tsm<'_>, a: args::OpCancel) -> Reply {
    let obj = a.object;
    match t.granules.peek(obj).map_err(|e| e.status(1))?.0 {
        GranuleState::Pdev => {
            let mut pdev_room = Room::new();
            let mut p = t.lock(Handle::<PdevHead>::new(obj), 1, &mut pdev_room)?;
            match p.op {
                DeviceOp::None => return Err(Status::arg(StatusCode::NoOperation, 1)),
                DeviceOp::Connect => {
                    if session::uses_spdm(&p) {
                        session::store(t, &p, &Requester::new())?;
                        release_evidence(t, &mut p)?;
                        p.session_owner = 0;
                    }
                    p.op = DeviceOp::None;
                    p.state = PdevState::New;
                    p.step = 0;
                }
                _ => {
                    let mut r = session::load(t, &p)?;
                    session::fail(t, &mut p, &mut r)?;
                }
            }
            p.save()?;
        }
        GranuleState::Vdev => {
            let (mut pdev_room, mut vdev_room) = (Room::new(), Room::new());
            let (mut p, mut v) = t.lock_with_parent(
                VdevHandle::new(obj),
                1,
                VdevLinks::pdev_head,
                (&mut pdev_room, &mut vdev_room),
            )?;
            if v.op == DeviceOp::None {
                return Err(Status::arg(StatusCode::NoOperation, 1));
            }
            let t1 = t1_view(&v);
            if p.session_owner == obj.0 {
                let mut r = session::load(t, &p)?;
                session::fail(t, &mut p, &mut r)?;
                p.save()?;
            }
            vdev_error(t, obj, &mut v, StatusCode::Cancelled)?;
            v.save()?;
            t.dma_view_changed(obj, t1, &v);
        }
        _ => return Err(Status::arg(StatusCode::BadHandle, 1)),
    }
    Ok(CallResult::ok([0; 4]))
}
