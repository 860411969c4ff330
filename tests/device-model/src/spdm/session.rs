//! The responder's session: `KEY_EXCHANGE` (plain), then secured `FINISH`, TDISP,
//! `KEY_UPDATE` and `END_SESSION` (DSP0274 1.2 §"Session", DSP0277).

use p384::{PublicKey, SecretKey};
use sha2::{Digest as _, Sha384};
use tsm_abi::spdm::crypto::{self, Digest, Direction, HandshakeSecrets};
use tsm_abi::spdm::secured::{RECORD_OVERHEAD, RecordLayout};
use tsm_abi::spdm::signing::SigningContext;
use tsm_abi::spdm::{
    ErrorCode, ErrorResponse, KeyExchange, KeyExchangeRsp, KeyOperation, PROTOCOL_ID_TDISP,
    Request, Response, VendorDefined, opaque,
};

use super::{
    MAX_MESSAGE, NEGOTIATED, Reply, SpdmDevice, SpdmModelError, ecc, encode, encode_error,
};

/// Bytes of session transcript kept (`KEY_EXCHANGE` … `FINISH_RSP`).
const TH_CAPACITY: usize = 1024;
/// Room for the last record sent (for the replay knob); larger records are not kept.
const LAST_RECORD: usize = 512;

/// One session.
#[derive(Debug)]
pub(super) struct Session {
    id: u32,
    established: bool,
    req: Direction,
    rsp: Direction,
    handshake: Digest,
    th: [u8; TH_CAPACITY],
    th_len: usize,
    last_record: [u8; LAST_RECORD],
    last_len: usize,
}

impl Session {
    pub(super) fn established(&self) -> bool {
        self.established
    }

    fn append(&mut self, bytes: &[u8]) {
        let end = self.th_len.saturating_add(bytes.len());
        if let Some(dest) = self.th.get_mut(self.th_len..end) {
            dest.copy_from_slice(bytes);
            self.th_len = end;
        }
    }

    /// The transcript hash: VCA, Ct, the session's messages so far, `tail`.
    fn th_hash(&self, vca: &[u8], ct: &Digest, tail: &[u8]) -> Digest {
        Sha384::new()
            .chain_update(vca)
            .chain_update(ct)
            .chain_update(self.th.get(..self.th_len).unwrap_or_default())
            .chain_update(tail)
            .finalize()
            .into()
    }
}

/// `KEY_EXCHANGE_RSP`, signed, with `ResponderVerifyData`; the session starts handshaking.
pub(super) fn key_exchange(
    dev: &mut SpdmDevice<'_>,
    req_bytes: &[u8],
    k: &KeyExchange<'_>,
    out: &mut [u8],
) -> Result<Option<usize>, SpdmModelError> {
    let version = opaque::supported_versions(k.opaque)
        .ok()
        .and_then(|offered| {
            offered
                .filter(|v| opaque::SECURED_MESSAGE_VERSIONS.contains(v))
                .max_by_key(|v| v.0)
        });
    let mut sec1 = [0x04u8; 97];
    sec1[1..].copy_from_slice(k.exchange);
    let (Some(version), 0, 0, Ok(peer)) = (
        version,
        k.slot,
        k.summary_type,
        PublicKey::from_sec1_bytes(&sec1),
    ) else {
        return encode_error(out, ErrorCode::INVALID_REQUEST).map(Some);
    };
    let secret = loop {
        if let Ok(s) = SecretKey::from_slice(&dev.random::<48>()) {
            break s;
        }
    };
    let point = ecc::public_point(&secret);
    let mut rsp_session_id = 0u16;
    while rsp_session_id == 0 || rsp_session_id == u16::MAX {
        rsp_session_id = u16::from_le_bytes(dev.random());
    }
    let mut opaque_data = [0u8; 16];
    let opaque_len = opaque::encode_version_selection(&mut opaque_data, version)
        .map_err(SpdmModelError::Encode)?;
    let zeros = [0u8; 96];
    let len = encode(
        out,
        &Response::KeyExchangeRsp(KeyExchangeRsp {
            heartbeat_period: 0,
            rsp_session_id,
            mut_auth_requested: 0,
            req_slot_id: 0,
            random: dev.random(),
            exchange: point.get(1..).unwrap_or_default(),
            measurement_summary: None,
            opaque: opaque_data.get(..opaque_len).unwrap_or_default(),
            signature: &zeros,
            verify_data: Some(&zeros[..48]),
        }),
        &NEGOTIATED,
    )?;
    let ct = dev.chain_digest();
    let mut session = Session {
        id: u32::from(k.req_session_id) | u32::from(rsp_session_id) << 16,
        established: false,
        req: Direction::new(&[0; 48]),
        rsp: Direction::new(&[0; 48]),
        handshake: [0; 48],
        th: [0; TH_CAPACITY],
        th_len: 0,
        last_record: [0; LAST_RECORD],
        last_len: 0,
    };
    session.append(req_bytes);
    // Signature over the transcript up to it; TH1 through it; verify data over TH1.
    let sig_at = len - 96 - 48;
    let th_signed = session.th_hash(dev.vca(), &ct, out.get(..sig_at).unwrap_or_default());
    let mut sig = dev.sign(SigningContext::KeyExchangeRsp, &th_signed);
    if dev.knobs.bad_key_exchange_signature {
        sig[10] ^= 0x01;
    }
    out.get_mut(sig_at..sig_at + 96)
        .ok_or(SpdmModelError::ResponseBufferTooSmall)?
        .copy_from_slice(&sig);
    let th1 = session.th_hash(dev.vca(), &ct, out.get(..len - 48).unwrap_or_default());
    let shared = ecc::shared_secret(&secret, &peer);
    let hs = HandshakeSecrets::derive(&shared, &th1);
    let verify_data = crypto::hmac(&crypto::finished_key(&hs.response), &th1);
    out.get_mut(len - 48..len)
        .ok_or(SpdmModelError::ResponseBufferTooSmall)?
        .copy_from_slice(&verify_data);
    session.append(out.get(..len).unwrap_or_default());
    session.req = Direction::new(&hs.request);
    session.rsp = Direction::new(&hs.response);
    session.handshake = hs.handshake;
    dev.session = Some(session);
    Ok(Some(len))
}

/// A secured request: opened, answered, and the answer sealed (knobs applied).
pub(super) fn respond(
    dev: &mut SpdmDevice<'_>,
    record: &[u8],
    out: &mut [u8],
) -> Result<Reply, SpdmModelError> {
    let mut buf = [0u8; MAX_MESSAGE + RECORD_OVERHEAD + 3];
    let Some(copy) = buf.get_mut(..record.len()) else {
        return plain_error(out, ErrorCode::REQUEST_TOO_LARGE);
    };
    copy.copy_from_slice(record);
    let Some(mut session) = dev.session.take() else {
        return plain_error(out, ErrorCode::SESSION_REQUIRED);
    };
    if RecordLayout::parse(copy).map(|l| l.session_id) != Ok(session.id) {
        dev.session = Some(session);
        return plain_error(out, ErrorCode::INVALID_REQUEST);
    }
    // A record that does not open ends the session (DSP0277 §"Error handling").
    let Ok(message) = session.req.open(session.id, copy) else {
        return plain_error(out, ErrorCode::DECRYPT_ERROR);
    };
    let mut answer = [0u8; MAX_MESSAGE];
    let (request, req_len) = match Request::decode(message, &NEGOTIATED) {
        Ok(ok) => ok,
        Err(_) => {
            let len = encode_error(&mut answer, ErrorCode::INVALID_REQUEST)?;
            return seal(dev, session, &answer[..len], out, true);
        }
    };
    if dev.stops_at(request.code()) {
        dev.session = Some(session);
        return Ok(Reply::Silent);
    }
    let req_bytes = message.get(..req_len).unwrap_or_default();
    let mut keep = true;
    let len = match (session.established, request) {
        (false, Request::Finish { verify_data }) => {
            let ct = dev.chain_digest();
            let th = session.th_hash(dev.vca(), &ct, req_bytes.get(..4).unwrap_or_default());
            let key = crypto::finished_key(session.req.secret());
            if !crypto::hmac_verify(&key, &th, verify_data) {
                let len = encode_error(&mut answer, ErrorCode::DECRYPT_ERROR)?;
                return seal(dev, session, &answer[..len], out, false);
            }
            session.append(req_bytes);
            let len = encode(
                &mut answer,
                &Response::FinishRsp { verify_data: None },
                &NEGOTIATED,
            )?;
            session.append(&answer[..len]);
            let th2 = session.th_hash(dev.vca(), &ct, &[]);
            // FINISH_RSP still travels under the handshake key; the data keys follow it.
            let reply = seal_with(dev, &mut session, &answer[..len], out)?;
            let (req_data, rsp_data) = crypto::data_secrets(&session.handshake, &th2);
            session.req = Direction::new(&req_data);
            session.rsp = Direction::new(&rsp_data);
            session.handshake = [0; 48];
            session.th_len = 0;
            session.established = true;
            dev.session = Some(session);
            return Ok(reply);
        }
        (true, Request::VendorDefined(v)) => match v.pci_protocol() {
            Some((PROTOCOL_ID_TDISP, tdisp)) => {
                let mut payload = [0u8; MAX_MESSAGE - 16];
                payload[0] = PROTOCOL_ID_TDISP;
                match dev.device.respond(tdisp, &mut payload[1..]) {
                    Ok(n) => encode(
                        &mut answer,
                        &Response::VendorDefined(VendorDefined::pci_sig(&payload[..1 + n])),
                        &NEGOTIATED,
                    )?,
                    Err(_) => encode_error(&mut answer, ErrorCode::UNSPECIFIED)?,
                }
            }
            _ => encode_error(&mut answer, ErrorCode::UNSUPPORTED_REQUEST)?,
        },
        (true, Request::KeyUpdate { operation, tag }) => {
            // The request came under the old request key; UpdateAllKeys also moves the
            // response key, so its ACK already travels under the new one.
            match operation {
                KeyOperation::UpdateKey => session.req.update(),
                KeyOperation::UpdateAllKeys => {
                    session.req.update();
                    session.rsp.update();
                }
                KeyOperation::VerifyNewKey => {}
            }
            encode(
                &mut answer,
                &Response::KeyUpdateAck { operation, tag },
                &NEGOTIATED,
            )?
        }
        (true, Request::EndSession { .. }) => {
            keep = false;
            encode(&mut answer, &Response::EndSessionAck, &NEGOTIATED)?
        }
        _ => encode_error(&mut answer, ErrorCode::UNEXPECTED_REQUEST)?,
    };
    seal(dev, session, &answer[..len], out, keep)
}

/// Seals `message` under the session's response key into `out`, applying the record knobs,
/// and keeps the session if `keep`.
fn seal(
    dev: &mut SpdmDevice<'_>,
    mut session: Session,
    message: &[u8],
    out: &mut [u8],
    keep: bool,
) -> Result<Reply, SpdmModelError> {
    let reply = seal_with(dev, &mut session, message, out)?;
    if keep {
        dev.session = Some(session);
    }
    Ok(reply)
}

fn seal_with(
    dev: &mut SpdmDevice<'_>,
    session: &mut Session,
    message: &[u8],
    out: &mut [u8],
) -> Result<Reply, SpdmModelError> {
    if dev.knobs.skip_sequence {
        let mut dropped = [0u8; MAX_MESSAGE + RECORD_OVERHEAD];
        let _ = session.rsp.seal(session.id, message, &mut dropped);
    }
    let mut len = session
        .rsp
        .seal(session.id, message, out)
        .map_err(|_| SpdmModelError::ResponseBufferTooSmall)?;
    if dev.knobs.tamper
        && let Some(b) = out.get_mut(8)
    {
        *b ^= 0x01;
    }
    let sent = out.get(..len).unwrap_or_default();
    if dev.knobs.replay && session.last_len > 0 {
        let old = session
            .last_record
            .get(..session.last_len)
            .unwrap_or_default();
        out.get_mut(..old.len())
            .ok_or(SpdmModelError::ResponseBufferTooSmall)?
            .copy_from_slice(old);
        len = old.len();
    } else if let Some(keep) = session.last_record.get_mut(..sent.len()) {
        keep.copy_from_slice(sent);
        session.last_len = sent.len();
    }
    Ok(Reply::Message { len, secured: true })
}

/// A plain `ERROR` (for a record that cannot be authenticated, so cannot be answered in the
/// session).
fn plain_error(out: &mut [u8], code: ErrorCode) -> Result<Reply, SpdmModelError> {
    let len = encode(
        out,
        &Response::Error(ErrorResponse {
            code,
            data: 0,
            extended: &[],
        }),
        &tsm_abi::spdm::Negotiated::NONE,
    )?;
    Ok(Reply::Message {
        len,
        secured: false,
    })
}
