//! A PDEV's SPDM session as the device calls use it: where the requester's state and the
//! device's evidence live, and how a TDISP message goes out and comes back inside the session.
//!
//! The requester ([`Requester`], plain bytes) lives in the PDEV granule at
//! [`SESSION_OFFSET`], after the object, and is read and written only under the PDEV's lock.
//! The certificate chain and the measurement record live in the PDEV's EVIDENCE granule (chain
//! at 0, record at [`CHAIN_CAPACITY`]). The session carries one request at a time: the object
//! whose request is out is the PDEV's `session_owner`; any other object's operation waits
//! (`ObjectState`) until it is answered.
//!
//! A session that fails (a record that does not open, a plaintext answer, a device that stops
//! answering, a cancelled request whose answer is lost) is over for good: the requester erases
//! its keys and the PDEV goes to ERROR, since the sequence numbers of the two sides can no
//! longer agree.

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::comm::{COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommHeader, CommOp, CommProtocol};
use tsm_abi::state::PdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::Request;
use zerocopy::{FromZeros, IntoBytes};

use crate::granule::GranuleState;
use crate::objects::{
    CHAIN_CAPACITY, Guard, MEASUREMENTS_CAPACITY, Object, PdevHead, SESSION_OFFSET, internal,
};
use crate::spdm::requester::{Evidence, MAX_RECORD, Outbound, Outcome, Requester, Step};
use crate::tsm::Tsm;

/// The largest TDISP request the TSM sends (START_INTERFACE: header + nonce).
pub const MAX_TDISP_REQUEST: usize = 64;

/// Whether the PDEV talks to its device through an SPDM session.
pub fn uses_spdm(p: &PdevHead) -> bool {
    p.params
        .pdev_flags()
        .contains(tsm_abi::params::PdevFlags::SPDM)
}

/// The PDEV's requester, read from its granule (the PDEV's lock is held by `p`, which holds its
/// head or the whole object).
pub fn load<O: Object>(t: &Tsm<'_>, p: &Guard<'_, '_, O>) -> Result<Requester, Status> {
    const { assert!(matches!(O::STATE, GranuleState::Pdev)) };
    let mut r = Requester::new_zeroed();
    let at = p.pa().checked_add(SESSION_OFFSET).ok_or_else(internal)?;
    t.platform
        .read(at, r.as_mut_bytes())
        .map_err(|_| internal())?;
    Ok(r)
}

/// Writes the requester back into the PDEV's granule.
pub fn store<O: Object>(t: &Tsm<'_>, p: &Guard<'_, '_, O>, r: &Requester) -> Result<(), Status> {
    const { assert!(matches!(O::STATE, GranuleState::Pdev)) };
    let at = p.pa().checked_add(SESSION_OFFSET).ok_or_else(internal)?;
    t.platform.write(at, r.as_bytes()).map_err(|_| internal())
}

/// The session is over: keys erased, the PDEV in ERROR with nothing out.
pub fn fail(t: &Tsm<'_>, p: &mut Guard<'_, '_, PdevHead>, r: &mut Requester) -> Result<(), Status> {
    r.abort();
    store(t, p, r)?;
    p.state = PdevState::Error;
    p.op = tsm_abi::state::DeviceOp::None;
    p.step = 0;
    p.session_owner = 0;
    Ok(())
}

/// Claims the session for `owner`'s next request: `ObjectState` (argument 1) while another
/// object's request is out.
pub fn claim(p: &mut PdevHead, owner: Pa) -> Result<(), Status> {
    if p.session_owner != 0 && p.session_owner != owner.0 {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    p.session_owner = owner.0;
    Ok(())
}

/// Writes `len` bytes of `out` into the COMMUNICATE buffer with the header that tells the host
/// how to carry them.
pub fn write_comm(
    t: &Tsm<'_>,
    comm: Pa,
    object: Pa,
    sequence: u64,
    protocol: CommProtocol,
    message: &[u8],
) -> Result<(), Status> {
    if !comm.is_granule_aligned() {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    if message.len() > COMM_PAYLOAD_SIZE {
        return Err(internal());
    }
    let header = CommHeader {
        op: CommOp::Exchange.raw(),
        protocol: protocol.raw(),
        request_len: message.len() as u32,
        response_len: 0,
        host_status: tsm_abi::comm::HostIoStatus::Response.raw(),
        reserved0: 0,
        object: object.0,
        sequence,
        reserved1: [0; 3],
    };
    // Header and payload under one lock of the buffer granule.
    let _g = t.lock_ns_buffer(comm, GRANULE_SIZE, 2)?;
    let bad = Status::arg(StatusCode::InvalidBuffer, 2);
    t.platform.write(comm, header.as_bytes()).map_err(|_| bad)?;
    let payload = comm.checked_add(COMM_HEADER_SIZE as u64).ok_or(bad)?;
    t.platform.write(payload, message).map_err(|_| bad)
}

/// The protocol a requester's message travels as.
pub fn protocol(o: Outbound) -> CommProtocol {
    if o.secured {
        CommProtocol::SecuredSpdm
    } else {
        CommProtocol::Spdm
    }
}

/// Seals the TDISP request `req` in the session and writes the record into the COMMUNICATE
/// buffer. The caller stores `r` (and the PDEV's `session_owner`) only once this succeeded.
pub fn send_tdisp(
    t: &Tsm<'_>,
    r: &mut Requester,
    comm: Pa,
    object: Pa,
    sequence: u64,
    req: &Request<'_>,
) -> Result<(), Status> {
    let mut tdisp = [0u8; MAX_TDISP_REQUEST];
    let len = req.encode(&mut tdisp).map_err(|_| internal())?;
    let mut out = [0u8; MAX_RECORD];
    // The session is ESTABLISHED whenever the PDEV is READY with no owner (a failed session
    // put it in ERROR): a refusal here is the TSM's bug.
    let sent = r
        .start_tdisp(tdisp.get(..len).ok_or_else(internal)?, &mut out)
        .map_err(|_| internal())?;
    let record = out.get(..sent.len).ok_or_else(internal)?;
    write_comm(t, comm, object, sequence, protocol(sent), record)
}

/// Opens the device's answer to a TDISP request in the session. `Ok(Some(n))`: the TDISP
/// response is the first `n` bytes of `tdisp`; `Ok(None)`: the session failed (the caller
/// ends it with [`fail`]).
pub fn open_tdisp(
    r: &mut Requester,
    record: &mut [u8],
    tdisp: &mut [u8],
    rng: &dyn tsm_platform::Entropy,
) -> Result<Option<usize>, Status> {
    let mut out = [0u8; MAX_RECORD];
    let mut no_evidence = Evidence {
        chain: &mut [],
        measurements: &mut [],
    };
    match r.respond(record, &mut out, &mut no_evidence, rng) {
        Ok(Step::Done(Outcome::Tdisp(message))) => {
            let dest = tdisp.get_mut(..message.len());
            match dest {
                Some(d) => {
                    d.copy_from_slice(message);
                    Ok(Some(message.len()))
                }
                // Longer than any TDISP response the TSM takes: the device broke the
                // protocol, and the session goes with it.
                None => Ok(None),
            }
        }
        Ok(_) => Err(internal()),
        Err(_) => Ok(None),
    }
}

/// The evidence granule's chain and record, read into `buf` for a connect step.
pub fn read_evidence(
    t: &Tsm<'_>,
    evidence: Pa,
    buf: &mut [u8; GRANULE_SIZE as usize],
) -> Result<(), Status> {
    check_evidence(t, evidence)?;
    t.platform.read(evidence, buf).map_err(|_| internal())
}

/// Writes a connect step's evidence back.
pub fn write_evidence(
    t: &Tsm<'_>,
    evidence: Pa,
    buf: &[u8; GRANULE_SIZE as usize],
) -> Result<(), Status> {
    check_evidence(t, evidence)?;
    t.platform.write(evidence, buf).map_err(|_| internal())
}

fn check_evidence(t: &Tsm<'_>, evidence: Pa) -> Result<(), Status> {
    match t.granules.peek(evidence) {
        Ok((GranuleState::Evidence, _)) => Ok(()),
        _ => Err(internal()),
    }
}

/// Splits an evidence buffer into the requester's chain and record buffers.
pub fn evidence_parts(buf: &mut [u8; GRANULE_SIZE as usize]) -> Evidence<'_> {
    let (chain, measurements) = buf.split_at_mut(CHAIN_CAPACITY);
    debug_assert_eq!(measurements.len(), MEASUREMENTS_CAPACITY);
    Evidence {
        chain,
        measurements,
    }
}

/// Reads `out.len()` bytes at `offset` of the chain (`measurements` false) or record of the
/// evidence granule `evidence`.
pub fn read_evidence_part(
    t: &Tsm<'_>,
    evidence: Pa,
    measurements: bool,
    offset: u64,
    out: &mut [u8],
) -> Result<(), Status> {
    check_evidence(t, evidence)?;
    let base = if measurements {
        CHAIN_CAPACITY as u64
    } else {
        0
    };
    let at = base
        .checked_add(offset)
        .and_then(|o| evidence.checked_add(o))
        .ok_or_else(internal)?;
    t.platform.read(at, out).map_err(|_| internal())
}
