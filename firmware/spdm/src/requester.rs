//! The SPDM 1.2 requester: a step machine that turns each device response into the next
//! request, so the host only ever carries opaque bytes (the resumable model of docs/abi.md
//! §6).
//!
//! | operation | requests, in order | ends with |
//! |---|---|---|
//! | [`Requester::start_connect`] | `GET_VERSION`, `GET_CAPABILITIES`, `NEGOTIATE_ALGORITHMS`, `GET_DIGESTS`, `GET_CERTIFICATE` × n, signed `GET_MEASUREMENTS`, `KEY_EXCHANGE`, then in the session `FINISH` | [`Outcome::Connected`]: chain verified, measurements verified and stored, session established |
//! | [`Requester::start_tdisp`] | `VENDOR_DEFINED_REQUEST` (PCI-SIG, TDISP) | [`Outcome::Tdisp`]: the device's TDISP response |
//! | [`Requester::start_key_update`] | `KEY_UPDATE` (UpdateAllKeys), `KEY_UPDATE` (VerifyNewKey) | [`Outcome::KeysUpdated`] |
//! | [`Requester::start_end_session`] | `END_SESSION` | [`Outcome::Ended`] |
//!
//! Each `start_*` writes the first request into the caller's buffer; [`Requester::respond`]
//! takes the device's answer and either writes the next request ([`Step::Send`]) or ends the
//! operation ([`Step::Done`]). A request is plain SPDM or, once `KEY_EXCHANGE_RSP` has been
//! verified, a DSP0277 secured message ([`Outbound::secured`]), which the host sends with the
//! DOE secured-SPDM data object type. Any failure ends the session: the state goes to FAILED
//! and every secret is erased; a new connect starts from nothing.
//!
//! **What is negotiated**: SPDM 1.2 only; ECDSA P-384 signatures, SHA-384, secp384r1 ECDHE,
//! AES-256-GCM, the SPDM key schedule, DMTF measurements (any measurement hash: the TSM keeps
//! the blocks, it does not recompute them), general opaque data (`OpaqueDataFmt1`), secured
//! messages DSP0277 1.0 or 1.1. Nothing else: a responder that selects anything else fails the
//! connect ([`Failure::Algorithms`]). No mutual authentication, no PSK, no chunking, no
//! handshake in the clear, no heartbeat.
//!
//! **What is verified**: the certificate chain of the slot (by [`super::cert::verify_chain`],
//! anchored to the slot's digest from `DIGESTS`); the `MEASUREMENTS` signature over L1 (VCA,
//! the request with the TSM's fresh nonce, the response up to its signature) with the leaf
//! key; the `KEY_EXCHANGE_RSP` signature over the transcript (VCA, the chain digest, the
//! exchange) and its `ResponderVerifyData`; every secured response's AEAD tag under the
//! expected key and sequence number (so a tampered, replayed, reordered or foreign record
//! fails).
//!
//! **State**: [`Requester`] is plain bytes ([`STATE_SIZE`]) that the caller keeps between
//! calls (in the PDEV's granules); the certificate chain and the measurement record go into
//! caller buffers ([`Evidence`]). The transcripts are kept as bytes (VCA, then the session's
//! messages) and hashed when needed, so no hash state needs saving between calls.

use super::ecc;
use p384::SecretKey;
use p384::ecdsa::{Signature, VerifyingKey};
use tsm_abi::spdm::crypto::{self, Digest, Direction, HandshakeSecrets, RecordError};
use tsm_abi::spdm::secured::RECORD_OVERHEAD;
use tsm_abi::spdm::signing::{self, SigningContext};
use tsm_abi::spdm::{
    AeadSuite, Algorithms, BaseAsymAlgo, BaseHashAlgo, CapFlags, Capabilities, DheGroup, ErrorCode,
    Expect, KeyExchange, KeyOperation, KeySchedule, MEASUREMENTS_ALL, MeasurementHashAlgo,
    MeasurementSpec, NONCE_SIZE, Negotiated, OtherParams, PROTOCOL_ID_TDISP, Request, Response,
    ResponseCode, SLOT_COUNT, SpdmError, VERSION_1_2, VendorDefined, opaque,
};
use tsm_platform::Entropy;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::cert::{self, CertError, TrustAnchor};

/// The largest SPDM message the requester sends or takes, announced as its `DataTransferSize`
/// and `MaxSPDMmsgSize`: as a secured record (DSP0277 adds [`RECORD_OVERHEAD`] bytes) with DOE
/// padding it still fits the COMMUNICATE payload (4032 bytes).
pub const MAX_MESSAGE: usize = 4000;
/// The largest record the requester writes or reads.
pub const MAX_RECORD: usize = MAX_MESSAGE + RECORD_OVERHEAD;
/// Chain bytes asked per `GET_CERTIFICATE` (libspdm-based responders serve at most 1024).
pub const CERT_PORTION: usize = 1024;
/// Bytes kept of the VCA transcript (`GET_VERSION` … `ALGORITHMS`). Ours are 4 + 20 + 48 bytes;
/// a responder's `VERSION` with 16 entries is 38, `CAPABILITIES` 20, `ALGORITHMS` at most 100
/// with one extended algorithm per table: about 230 in all.
pub const VCA_CAPACITY: usize = 512;
/// Bytes kept of the session transcript (`KEY_EXCHANGE` … `FINISH_RSP`): ours 154 + 52 bytes,
/// the responder's `KEY_EXCHANGE_RSP` 282 plus its opaque data, `FINISH_RSP` 4.
pub const TH_CAPACITY: usize = 1024;
/// `SessionPolicy` bit 0, `TerminationPolicy`: the device ends the session on a runtime firmware
/// or configuration change, so TDISP never continues under a changed device.
const TERMINATION_POLICY: u8 = 1;
/// The largest request: `KEY_EXCHANGE` with our opaque data (4 + 4 + 32 + 96 + 2 + 16). The
/// responder's `DataTransferSize` must take it (no chunking).
const LARGEST_REQUEST: u32 = 154;

/// The algorithms the TSM offers, and the only ones it accepts.
const OFFER: Algorithms = Algorithms {
    measurement_spec: MeasurementSpec::DMTF,
    other_params: OtherParams::OPAQUE_DATA_FMT1,
    measurement_hash: MeasurementHashAlgo::empty(),
    base_asym: BaseAsymAlgo::ECDSA_P384,
    base_hash: BaseHashAlgo::SHA_384,
    ext_asym_count: 0,
    ext_hash_count: 0,
    dhe: Some(DheGroup::SECP384R1),
    aead: Some(AeadSuite::AES_256_GCM),
    req_base_asym: Some(BaseAsymAlgo::ECDSA_P384),
    key_schedule: Some(KeySchedule::SPDM),
};

/// What the TSM asks of the responder.
const REQUIRED_CAPS: CapFlags = CapFlags::CERT_CAP
    .union(CapFlags::MEAS_CAP_SIG)
    .union(CapFlags::ENCRYPT_CAP)
    .union(CapFlags::MAC_CAP)
    .union(CapFlags::KEY_EX_CAP)
    .union(CapFlags::KEY_UPD_CAP);
/// What the TSM says of itself: secured messages, key exchange, key update; no certificates
/// of its own (no mutual authentication).
const OUR_CAPS: CapFlags = CapFlags::ENCRYPT_CAP
    .union(CapFlags::MAC_CAP)
    .union(CapFlags::KEY_EX_CAP)
    .union(CapFlags::KEY_UPD_CAP);

/// Where the requester is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Phase {
    /// No connection (initial, and after `END_SESSION`).
    Idle = 0,
    /// `GET_VERSION` is out.
    Version = 1,
    /// `GET_CAPABILITIES` is out.
    Capabilities = 2,
    /// `NEGOTIATE_ALGORITHMS` is out.
    Algorithms = 3,
    /// `GET_DIGESTS` is out.
    Digests = 4,
    /// A `GET_CERTIFICATE` is out.
    Certificate = 5,
    /// The signed `GET_MEASUREMENTS` is out.
    Measurements = 6,
    /// `KEY_EXCHANGE` is out.
    KeyExchange = 7,
    /// `FINISH` is out (handshake keys).
    Finish = 8,
    /// The session is established; no request is out.
    Established = 9,
    /// A TDISP request is out in the session.
    Tdisp = 10,
    /// `KEY_UPDATE` (UpdateAllKeys) is out.
    KeyUpdate = 11,
    /// `KEY_UPDATE` (VerifyNewKey) is out, under the new keys.
    VerifyNewKey = 12,
    /// `END_SESSION` is out.
    EndSession = 13,
    /// An operation failed; secrets are erased.
    Failed = 14,
}

impl Phase {
    const ALL: [Self; 15] = [
        Self::Idle,
        Self::Version,
        Self::Capabilities,
        Self::Algorithms,
        Self::Digests,
        Self::Certificate,
        Self::Measurements,
        Self::KeyExchange,
        Self::Finish,
        Self::Established,
        Self::Tdisp,
        Self::KeyUpdate,
        Self::VerifyNewKey,
        Self::EndSession,
        Self::Failed,
    ];

    fn from_raw(raw: u32) -> Self {
        // A raw value the requester did not write cannot be in its state; treat it as failed.
        Self::ALL
            .into_iter()
            .find(|&p| p as u32 == raw)
            .unwrap_or(Self::Failed)
    }
}

/// Why an operation failed. After any of them the requester is FAILED.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// The call does not fit the requester's phase (a caller bug, not the device's).
    WrongPhase(Phase),
    /// The response does not decode as the answer expected.
    Malformed(SpdmError),
    /// The device answered with `ERROR`.
    DeviceError(ErrorCode),
    /// The device does not speak SPDM 1.2.
    NoCommonVersion,
    /// The device lacks a capability the TSM needs (the flags missing).
    MissingCapabilities(CapFlags),
    /// The device cannot receive the TSM's largest request whole.
    ResponderBufferTooSmall,
    /// `ALGORITHMS` selected something the TSM did not offer, or not one of each.
    Algorithms,
    /// `DIGESTS` shows no chain in the slot asked for.
    EmptySlot,
    /// A `CERTIFICATE` portion breaks the protocol (wrong slot, longer than asked, a remainder
    /// that disagrees with earlier portions, an empty chain).
    CertificatePortion,
    /// The chain does not fit the caller's buffer.
    ChainTooLarge,
    /// The chain does not verify (or is not the one `DIGESTS` named).
    Certificate(CertError),
    /// The `MEASUREMENTS` signature does not verify with the leaf key (or names another slot).
    MeasurementSignature,
    /// The measurement record does not fit the caller's buffer.
    MeasurementsTooLarge,
    /// The `KEY_EXCHANGE_RSP` signature does not verify with the leaf key.
    KeyExchangeSignature,
    /// `ResponderVerifyData` is wrong.
    ResponderVerifyData,
    /// The device's ECDHE public value is not a point on secp384r1.
    InvalidExchangeData,
    /// The device asks for mutual authentication, which the TSM does not do.
    MutualAuthRequested,
    /// The device selected no secured-message version the TSM offered.
    SecuredMessageVersion,
    /// A secured response failed: tampered, replayed, reordered, from another session, or
    /// sequence numbers used up.
    Record(RecordError),
    /// A secured response decoded but is not the answer (wrong key-update tag, a vendor
    /// message of another protocol).
    UnexpectedResponse,
    /// A transcript outgrew its buffer.
    TranscriptFull,
    /// The platform gave no random bytes.
    Entropy,
    /// The TSM could not encode its own request (a bug).
    Encode(SpdmError),
}

/// A request to send: `len` bytes at the start of the caller's buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Outbound {
    /// Bytes of the request.
    pub len: usize,
    /// A DSP0277 secured message (DOE secured-SPDM) rather than a plain SPDM message.
    pub secured: bool,
}

/// How an operation ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome<'r> {
    /// Connect: chain and measurements verified and stored, session established.
    Connected,
    /// The device's TDISP response (decrypted in place in the response buffer).
    Tdisp(&'r [u8]),
    /// Both directions' keys were updated and the new ones confirmed.
    KeysUpdated,
    /// The session ended; the requester is idle.
    Ended,
}

/// What [`Requester::respond`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step<'r> {
    /// The next request is in the buffer.
    Send(Outbound),
    /// The operation is over.
    Done(Outcome<'r>),
}

/// Where connect stores what the guest will judge: the certificate chain of the slot (an
/// SPDM chain buffer) and the measurement record. The same buffers must be passed to every
/// step of a connect.
#[derive(Debug)]
pub struct Evidence<'a> {
    /// At least the chain's length (up to 65535 bytes).
    pub chain: &'a mut [u8],
    /// At least the measurement record's length.
    pub measurements: &'a mut [u8],
}

/// The requester's state: plain bytes, so the caller can keep it in object memory between
/// calls. All-zero is IDLE.
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Requester {
    /// Request direction: handshake keys during `FINISH`, then data keys.
    req: Direction,
    /// Response direction.
    rsp: Direction,
    /// [`Phase`].
    phase: u32,
    /// Certificate slot.
    slot: u32,
    /// The responder's `CAPABILITIES` flags.
    rsp_flags: u32,
    /// Measurement hash size (0: raw bit streams only).
    measurement_hash_len: u32,
    /// Bytes in `vca`.
    vca_len: u32,
    /// Bytes in `th`.
    th_len: u32,
    /// Chain bytes received.
    chain_len: u32,
    /// Chain length announced (0 before the first portion).
    chain_total: u32,
    /// Length asked in the outstanding `GET_CERTIFICATE`.
    chain_asked: u32,
    /// Bytes of measurement record stored.
    measurements_len: u32,
    /// `ReqSessionID` until `KEY_EXCHANGE_RSP`, then the session ID (ReqSessionID in bits
    /// 15:0, RspSessionID in 31:16: DSP0277 "Session ID").
    session_id: u32,
    /// Tag of the outstanding `KEY_UPDATE`.
    tag: u32,
    /// The slot's chain digest: from `DIGESTS`, then checked by the verifier (Ct of the
    /// transcript).
    chain_digest: Digest,
    /// SHA-384 of the stored measurement record.
    measurements_digest: Digest,
    /// The leaf's key, uncompressed SEC1.
    leaf_key: [u8; cert::SEC1_LEN],
    reserved: [u8; 7],
    /// The nonce of the outstanding `GET_MEASUREMENTS`.
    nonce: [u8; NONCE_SIZE],
    /// The ephemeral ECDHE secret while `KEY_EXCHANGE` is out.
    ephemeral: [u8; 48],
    /// `handshake_secret` while `FINISH` is out.
    handshake: Digest,
    /// VCA: `GET_VERSION` … `ALGORITHMS`.
    vca: [u8; VCA_CAPACITY],
    /// The session's messages: `KEY_EXCHANGE`, `KEY_EXCHANGE_RSP`, `FINISH`, `FINISH_RSP`.
    th: [u8; TH_CAPACITY],
}

/// Bytes of requester state.
pub const STATE_SIZE: usize = size_of::<Requester>();

/// The sizes SPDM messages leave out, once `ALGORITHMS` fixed them.
fn negotiated(measurement_hash_len: u32) -> Negotiated {
    Negotiated {
        hash: crypto::HASH_SIZE,
        signature: 96,
        exchange: 96,
        measurement_hash: measurement_hash_len as usize,
        handshake_in_clear: false,
    }
}

/// Appends `bytes` to the first `*len` bytes of `buf`.
fn append(buf: &mut [u8], len: &mut u32, bytes: &[u8]) -> Result<(), Failure> {
    let start = *len as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Failure::TranscriptFull)?;
    buf.get_mut(start..end)
        .ok_or(Failure::TranscriptFull)?
        .copy_from_slice(bytes);
    *len = u32::try_from(end).map_err(|_| Failure::TranscriptFull)?;
    Ok(())
}

fn random<const N: usize>(rng: &dyn Entropy) -> Result<[u8; N], Failure> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| Failure::Entropy)?;
    Ok(out)
}

/// The first `len` bytes of `buf`.
fn prefix(buf: &[u8], len: usize) -> Result<&[u8], Failure> {
    buf.get(..len)
        .ok_or(Failure::Malformed(SpdmError::Truncated))
}

/// Verifies an SPDM 1.2 signature (`context` prefix, then `transcript_hash`) by `key`.
fn verify(key: &[u8], context: SigningContext, transcript_hash: &Digest, sig: &[u8]) -> bool {
    let mut message = [0u8; signing::SIGNING_PREFIX_SIZE + crypto::HASH_SIZE];
    let Ok(n) = signing::signed_message(&mut message, context, transcript_hash) else {
        return false;
    };
    let (Ok(key), Ok(sig), Some(message)) = (
        ecc::decode_point(key).map(VerifyingKey::from).ok_or(()),
        Signature::from_slice(sig),
        message.get(..n),
    ) else {
        return false;
    };
    ecc::verify(&key, message, &sig)
}

impl Requester {
    /// An idle requester.
    pub fn new() -> Self {
        Self::new_zeroed()
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        Phase::from_raw(self.phase)
    }

    /// The session ID, once `KEY_EXCHANGE_RSP` was verified.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The verified chain's digest (what `DIGESTS` reports for the slot), after connect.
    pub fn chain_digest(&self) -> &Digest {
        &self.chain_digest
    }

    /// Bytes of chain in [`Evidence::chain`], after connect.
    pub fn chain_len(&self) -> usize {
        self.chain_len as usize
    }

    /// SHA-384 of the measurement record, after connect.
    pub fn measurements_digest(&self) -> &Digest {
        &self.measurements_digest
    }

    /// Bytes of measurement record in [`Evidence::measurements`], after connect.
    pub fn measurements_len(&self) -> usize {
        self.measurements_len as usize
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase as u32;
    }

    fn expect_phase(&self, phase: Phase) -> Result<(), Failure> {
        if self.phase() == phase {
            Ok(())
        } else {
            Err(Failure::WrongPhase(self.phase()))
        }
    }

    /// Ends whatever was going on: every secret and transcript is erased, the phase is FAILED.
    /// The caller calls it when the device did not answer or the operation was cancelled;
    /// [`respond`](Self::respond) calls it on every failure.
    pub fn abort(&mut self) {
        self.zero();
        self.set_phase(Phase::Failed);
    }

    fn zero(&mut self) {
        *self = Self::new_zeroed();
    }

    /// Starts a connect with the chain in `slot`: writes `GET_VERSION` into `out`.
    pub fn start_connect(&mut self, slot: u8, out: &mut [u8]) -> Result<Outbound, Failure> {
        if slot >= SLOT_COUNT {
            return Err(Failure::EmptySlot);
        }
        self.zero();
        self.slot = slot.into();
        self.set_phase(Phase::Version);
        self.send_vca(&Request::GetVersion, out, &Negotiated::NONE)
    }

    /// Sends a TDISP message inside the session.
    pub fn start_tdisp(&mut self, tdisp: &[u8], out: &mut [u8]) -> Result<Outbound, Failure> {
        self.expect_phase(Phase::Established)?;
        let mut payload = [0u8; MAX_MESSAGE];
        let len = tdisp
            .len()
            .checked_add(1)
            .ok_or(Failure::Encode(SpdmError::BadLength))?;
        let body = payload
            .get_mut(..len)
            .ok_or(Failure::Encode(SpdmError::BadLength))?;
        if let Some((first, rest)) = body.split_first_mut() {
            *first = PROTOCOL_ID_TDISP;
            rest.copy_from_slice(tdisp);
        }
        let request = Request::VendorDefined(VendorDefined::pci_sig(prefix(&payload, len)?));
        let sent = self.send_secured(&request, out)?;
        self.set_phase(Phase::Tdisp);
        Ok(sent)
    }

    /// Starts a key update of both directions.
    pub fn start_key_update(
        &mut self,
        rng: &dyn Entropy,
        out: &mut [u8],
    ) -> Result<Outbound, Failure> {
        self.expect_phase(Phase::Established)?;
        let [tag] = random::<1>(rng)?;
        let request = Request::KeyUpdate {
            operation: KeyOperation::UpdateAllKeys,
            tag,
        };
        let sent = self.send_secured(&request, out)?;
        self.tag = tag.into();
        self.set_phase(Phase::KeyUpdate);
        Ok(sent)
    }

    /// Starts ending the session.
    pub fn start_end_session(&mut self, out: &mut [u8]) -> Result<Outbound, Failure> {
        self.expect_phase(Phase::Established)?;
        let request = Request::EndSession {
            clear_negotiated_state: false,
        };
        let sent = self.send_secured(&request, out)?;
        self.set_phase(Phase::EndSession);
        Ok(sent)
    }

    /// Takes the device's answer to the outstanding request (`response`, which secured
    /// responses are decrypted in place in) and writes the next request into `out`, or ends
    /// the operation. On failure the requester is FAILED and its secrets erased.
    pub fn respond<'r>(
        &mut self,
        response: &'r mut [u8],
        out: &mut [u8],
        evidence: &mut Evidence<'_>,
        rng: &dyn Entropy,
    ) -> Result<Step<'r>, Failure> {
        let phase = self.phase();
        let step = match phase {
            Phase::Version => self.on_version(response, out),
            Phase::Capabilities => self.on_capabilities(response, out),
            Phase::Algorithms => self.on_algorithms(response, out),
            Phase::Digests => self.on_digests(response, out, evidence),
            Phase::Certificate => self.on_certificate(response, out, evidence, rng),
            Phase::Measurements => self.on_measurements(response, out, evidence, rng),
            Phase::KeyExchange => self.on_key_exchange(response, out),
            Phase::Finish => self.on_finish(response),
            Phase::Tdisp => self.on_tdisp(response),
            Phase::KeyUpdate => self.on_key_update(response, out, rng),
            Phase::VerifyNewKey => self.on_verify_new_key(response),
            Phase::EndSession => self.on_end_session(response),
            Phase::Idle | Phase::Established | Phase::Failed => Err(Failure::WrongPhase(phase)),
        };
        if step.is_err() && !matches!(step, Err(Failure::WrongPhase(_))) {
            self.abort();
        }
        step
    }

    /// Encodes a plain request into `out` and appends it to VCA.
    fn send_vca(
        &mut self,
        request: &Request<'_>,
        out: &mut [u8],
        n: &Negotiated,
    ) -> Result<Outbound, Failure> {
        let len = request.encode(out, n).map_err(Failure::Encode)?;
        append(&mut self.vca, &mut self.vca_len, prefix(out, len)?)?;
        Ok(Outbound {
            len,
            secured: false,
        })
    }

    fn send_plain(
        request: &Request<'_>,
        out: &mut [u8],
        n: &Negotiated,
    ) -> Result<Outbound, Failure> {
        let len = request.encode(out, n).map_err(Failure::Encode)?;
        Ok(Outbound {
            len,
            secured: false,
        })
    }

    /// Encodes a request and seals it under the current request keys into `out`.
    fn send_secured(&mut self, request: &Request<'_>, out: &mut [u8]) -> Result<Outbound, Failure> {
        let mut plain = [0u8; MAX_MESSAGE];
        let n = negotiated(self.measurement_hash_len);
        let len = request.encode(&mut plain, &n).map_err(Failure::Encode)?;
        self.seal(prefix(&plain, len)?, out)
    }

    fn seal(&mut self, message: &[u8], out: &mut [u8]) -> Result<Outbound, Failure> {
        let len = self
            .req
            .seal(self.session_id, message, out)
            .map_err(Failure::Record)?;
        Ok(Outbound { len, secured: true })
    }

    /// Decodes a plain response; an `ERROR` becomes [`Failure::DeviceError`].
    fn decode<'b>(
        bytes: &'b [u8],
        expect: Expect,
        n: &Negotiated,
    ) -> Result<(Response<'b>, usize), Failure> {
        match Response::decode(bytes, expect, n).map_err(Failure::Malformed)? {
            (Response::Error(e), _) => Err(Failure::DeviceError(e.code)),
            ok => Ok(ok),
        }
    }

    /// Opens a secured response under `keys` and decodes it; returns the response and the
    /// message's bytes (for a transcript).
    fn open<'b>(
        &self,
        keys: &mut Direction,
        record: &'b mut [u8],
        expect: Expect,
    ) -> Result<(Response<'b>, &'b [u8]), Failure> {
        let message = keys
            .open(self.session_id, record)
            .map_err(Failure::Record)?;
        let (response, len) =
            Self::decode(message, expect, &negotiated(self.measurement_hash_len))?;
        Ok((response, prefix(message, len)?))
    }

    fn on_version(&mut self, rsp: &[u8], out: &mut [u8]) -> Result<Step<'static>, Failure> {
        let (r, len) = Self::decode(rsp, Expect::Plain(ResponseCode::Version), &Negotiated::NONE)?;
        let Response::Version(versions) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        if !versions.contains(VERSION_1_2) {
            return Err(Failure::NoCommonVersion);
        }
        append(&mut self.vca, &mut self.vca_len, prefix(rsp, len)?)?;
        let request = Request::GetCapabilities(Capabilities {
            ct_exponent: 0,
            flags: OUR_CAPS,
            data_transfer_size: MAX_MESSAGE as u32,
            max_message_size: MAX_MESSAGE as u32,
        });
        self.set_phase(Phase::Capabilities);
        Ok(Step::Send(self.send_vca(
            &request,
            out,
            &Negotiated::NONE,
        )?))
    }

    fn on_capabilities(&mut self, rsp: &[u8], out: &mut [u8]) -> Result<Step<'static>, Failure> {
        let (r, len) = Self::decode(
            rsp,
            Expect::Plain(ResponseCode::Capabilities),
            &Negotiated::NONE,
        )?;
        let Response::Capabilities(caps) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let missing = REQUIRED_CAPS.difference(caps.flags);
        if !missing.is_empty() {
            return Err(Failure::MissingCapabilities(missing));
        }
        if caps.data_transfer_size < LARGEST_REQUEST {
            return Err(Failure::ResponderBufferTooSmall);
        }
        self.rsp_flags = caps.flags.bits();
        append(&mut self.vca, &mut self.vca_len, prefix(rsp, len)?)?;
        self.set_phase(Phase::Algorithms);
        Ok(Step::Send(self.send_vca(
            &Request::NegotiateAlgorithms(OFFER),
            out,
            &Negotiated::NONE,
        )?))
    }

    fn on_algorithms(&mut self, rsp: &[u8], out: &mut [u8]) -> Result<Step<'static>, Failure> {
        let (r, len) = Self::decode(
            rsp,
            Expect::Plain(ResponseCode::Algorithms),
            &Negotiated::NONE,
        )?;
        let Response::Algorithms(a) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let chosen = a.measurement_spec == MeasurementSpec::DMTF
            && a.other_params.bits() & 0x0F == OtherParams::OPAQUE_DATA_FMT1.bits()
            && a.base_asym == OFFER.base_asym
            && a.base_hash == OFFER.base_hash
            && a.ext_asym_count == 0
            && a.ext_hash_count == 0
            && a.dhe == OFFER.dhe
            && a.aead == OFFER.aead
            && a.key_schedule == OFFER.key_schedule;
        let measurement_hash_len = a.measurement_hash.digest_len();
        let Some(measurement_hash_len) = measurement_hash_len.filter(|_| chosen) else {
            return Err(Failure::Algorithms);
        };
        self.measurement_hash_len =
            u32::try_from(measurement_hash_len).map_err(|_| Failure::Algorithms)?;
        append(&mut self.vca, &mut self.vca_len, prefix(rsp, len)?)?;
        self.set_phase(Phase::Digests);
        Ok(Step::Send(Self::send_plain(
            &Request::GetDigests,
            out,
            &negotiated(self.measurement_hash_len),
        )?))
    }

    fn on_digests(
        &mut self,
        rsp: &[u8],
        out: &mut [u8],
        evidence: &mut Evidence<'_>,
    ) -> Result<Step<'static>, Failure> {
        let n = negotiated(self.measurement_hash_len);
        let (r, _) = Self::decode(rsp, Expect::Plain(ResponseCode::Digests), &n)?;
        let Response::Digests(d) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let digest = d.digest(self.slot as u8).ok_or(Failure::EmptySlot)?;
        self.chain_digest = Digest::try_from(digest).map_err(|_| Failure::EmptySlot)?;
        self.set_phase(Phase::Certificate);
        self.ask_portion(out, evidence)
    }

    /// Asks for the next chain portion.
    fn ask_portion(
        &mut self,
        out: &mut [u8],
        evidence: &Evidence<'_>,
    ) -> Result<Step<'static>, Failure> {
        let room = evidence.chain.len().saturating_sub(self.chain_len as usize);
        let wanted = if self.chain_total == 0 {
            usize::MAX
        } else {
            (self.chain_total.saturating_sub(self.chain_len)) as usize
        };
        let len = room.min(wanted).min(CERT_PORTION);
        if len == 0 {
            return Err(Failure::ChainTooLarge);
        }
        let request = Request::GetCertificate {
            slot: self.slot as u8,
            offset: u16::try_from(self.chain_len).map_err(|_| Failure::ChainTooLarge)?,
            length: u16::try_from(len).map_err(|_| Failure::ChainTooLarge)?,
        };
        self.chain_asked = len as u32;
        Ok(Step::Send(Self::send_plain(
            &request,
            out,
            &negotiated(self.measurement_hash_len),
        )?))
    }

    fn on_certificate(
        &mut self,
        rsp: &[u8],
        out: &mut [u8],
        evidence: &mut Evidence<'_>,
        rng: &dyn Entropy,
    ) -> Result<Step<'static>, Failure> {
        let n = negotiated(self.measurement_hash_len);
        let (r, _) = Self::decode(rsp, Expect::Plain(ResponseCode::Certificate), &n)?;
        let Response::Certificate {
            slot,
            portion,
            remainder,
        } = r
        else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let received = self.chain_len as usize;
        let filled = received
            .checked_add(portion.len())
            .ok_or(Failure::CertificatePortion)?;
        let total = filled
            .checked_add(remainder.into())
            .ok_or(Failure::CertificatePortion)?;
        if u32::from(slot) != self.slot
            || portion.len() > self.chain_asked as usize
            || total == 0
            || (self.chain_total != 0 && total != self.chain_total as usize)
            || (portion.is_empty() && remainder != 0)
        {
            return Err(Failure::CertificatePortion);
        }
        evidence
            .chain
            .get_mut(received..filled)
            .ok_or(Failure::ChainTooLarge)?
            .copy_from_slice(portion);
        if total > evidence.chain.len() {
            return Err(Failure::ChainTooLarge);
        }
        self.chain_len = filled as u32;
        self.chain_total = total as u32;
        if filled < total {
            return self.ask_portion(out, evidence);
        }
        let chain = evidence.chain.get(..filled).ok_or(Failure::ChainTooLarge)?;
        let info = cert::verify_chain(chain, &TrustAnchor::ChainDigest(self.chain_digest))
            .map_err(Failure::Certificate)?;
        self.leaf_key = info.leaf_key_sec1();
        self.chain_digest = info.digest;
        self.nonce = random(rng)?;
        self.set_phase(Phase::Measurements);
        Ok(Step::Send(Self::send_plain(
            &self.measurements_request(),
            out,
            &n,
        )?))
    }

    fn measurements_request(&self) -> Request<'static> {
        Request::GetMeasurements {
            operation: MEASUREMENTS_ALL,
            raw_bit_stream: false,
            signed: Some((self.nonce, self.slot as u8)),
        }
    }

    fn on_measurements(
        &mut self,
        rsp: &[u8],
        out: &mut [u8],
        evidence: &mut Evidence<'_>,
        rng: &dyn Entropy,
    ) -> Result<Step<'static>, Failure> {
        let n = negotiated(self.measurement_hash_len);
        let request = self.measurements_request();
        let (r, len) = Self::decode(rsp, request.expect(), &n)?;
        let Response::Measurements(m) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let Some(signature) = m.signature else {
            return Err(Failure::MeasurementSignature);
        };
        // L1 (DSP0274 1.2 §"Measurement signature"): VCA, then the request and the response
        // up to its signature.
        let mut req_bytes = [0u8; 64];
        let req_len = request
            .encode(&mut req_bytes, &n)
            .map_err(Failure::Encode)?;
        let signed = prefix(rsp, len.saturating_sub(signature.len()))?;
        let l1 = crypto::hash(&[
            prefix(&self.vca, self.vca_len as usize)?,
            prefix(&req_bytes, req_len)?,
            signed,
        ]);
        if u32::from(m.slot) != self.slot
            || !verify(&self.leaf_key, SigningContext::Measurements, &l1, signature)
        {
            return Err(Failure::MeasurementSignature);
        }
        let record = m.record.bytes();
        evidence
            .measurements
            .get_mut(..record.len())
            .ok_or(Failure::MeasurementsTooLarge)?
            .copy_from_slice(record);
        self.measurements_len = record.len() as u32;
        self.measurements_digest = crypto::hash(&[record]);
        self.nonce = [0; NONCE_SIZE];
        self.send_key_exchange(out, rng)
    }

    fn send_key_exchange(
        &mut self,
        out: &mut [u8],
        rng: &dyn Entropy,
    ) -> Result<Step<'static>, Failure> {
        // A secret scalar from 48 random bytes; the few values ≥ n (or 0) are drawn again.
        let mut secret = None;
        for _ in 0..4 {
            if let Ok(key) = SecretKey::from_slice(&random::<48>(rng)?) {
                secret = Some(key);
                break;
            }
        }
        let secret = secret.ok_or(Failure::Entropy)?;
        let point = ecc::public_point(&secret);
        // Uncompressed SEC1 is 04 ‖ X ‖ Y; ExchangeData is X ‖ Y.
        let exchange = point.get(1..).ok_or(Failure::Entropy)?;
        let mut req_session_id = 0u16;
        while req_session_id == 0 || req_session_id == u16::MAX {
            req_session_id = u16::from_le_bytes(random(rng)?);
        }
        let mut opaque_data = [0u8; 32];
        let opaque_len =
            opaque::encode_supported_versions(&mut opaque_data, &opaque::SECURED_MESSAGE_VERSIONS)
                .map_err(Failure::Encode)?;
        let request = Request::KeyExchange(KeyExchange {
            summary_type: 0,
            slot: self.slot as u8,
            req_session_id,
            session_policy: TERMINATION_POLICY,
            random: random(rng)?,
            exchange,
            opaque: prefix(&opaque_data, opaque_len)?,
        });
        let sent = Self::send_plain(&request, out, &negotiated(self.measurement_hash_len))?;
        self.th_len = 0;
        append(&mut self.th, &mut self.th_len, prefix(out, sent.len)?)?;
        self.ephemeral = secret.to_bytes().into();
        self.session_id = req_session_id.into();
        self.set_phase(Phase::KeyExchange);
        Ok(Step::Send(sent))
    }

    /// The transcript hash over VCA, Ct (the chain digest), the session messages so far, and
    /// `tail`.
    fn th_hash(&self, tail: &[u8]) -> Result<Digest, Failure> {
        Ok(crypto::hash(&[
            prefix(&self.vca, self.vca_len as usize)?,
            &self.chain_digest,
            prefix(&self.th, self.th_len as usize)?,
            tail,
        ]))
    }

    fn on_key_exchange(&mut self, rsp: &[u8], out: &mut [u8]) -> Result<Step<'static>, Failure> {
        let n = negotiated(self.measurement_hash_len);
        let (r, len) = Self::decode(rsp, Expect::KeyExchangeRsp { summary: false }, &n)?;
        let Response::KeyExchangeRsp(k) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        if k.mut_auth_requested != 0 {
            return Err(Failure::MutualAuthRequested);
        }
        let version =
            opaque::selected_version(k.opaque).map_err(|_| Failure::SecuredMessageVersion)?;
        if !opaque::SECURED_MESSAGE_VERSIONS.contains(&version) {
            return Err(Failure::SecuredMessageVersion);
        }
        let verify_data = k.verify_data.ok_or(Failure::ResponderVerifyData)?;
        // The signature covers the transcript up to it; TH1 runs through it.
        let signed_end = len
            .checked_sub(k.signature_and_verify_len())
            .ok_or(Failure::KeyExchangeSignature)?;
        let th_signed = self.th_hash(prefix(rsp, signed_end)?)?;
        if !verify(
            &self.leaf_key,
            SigningContext::KeyExchangeRsp,
            &th_signed,
            k.signature,
        ) {
            return Err(Failure::KeyExchangeSignature);
        }
        let mut sec1 = [0u8; cert::SEC1_LEN];
        if let Some((tag, xy)) = sec1.split_first_mut() {
            *tag = 0x04;
            xy.get_mut(..k.exchange.len())
                .ok_or(Failure::InvalidExchangeData)?
                .copy_from_slice(k.exchange);
        }
        let peer = ecc::decode_point(&sec1).ok_or(Failure::InvalidExchangeData)?;
        // The TSM's own secret, stored by `send_key_exchange`: it always decodes.
        let secret = SecretKey::from_slice(&self.ephemeral).map_err(|_| Failure::Entropy)?;
        let shared = ecc::shared_secret(&secret, &peer);
        let th1 = self.th_hash(prefix(rsp, len.saturating_sub(verify_data.len()))?)?;
        let hs = HandshakeSecrets::derive(&shared, &th1);
        if !crypto::hmac_verify(&crypto::finished_key(&hs.response), &th1, verify_data) {
            return Err(Failure::ResponderVerifyData);
        }
        append(&mut self.th, &mut self.th_len, prefix(rsp, len)?)?;
        self.ephemeral = [0; 48];
        self.session_id |= u32::from(k.rsp_session_id) << 16;
        self.req = Direction::new(&hs.request);
        self.rsp = Direction::new(&hs.response);
        self.handshake = hs.handshake;
        // FINISH: RequesterVerifyData is the HMAC of the transcript through FINISH's header.
        let header = [VERSION_1_2, tsm_abi::spdm::RequestCode::Finish as u8, 0, 0];
        let th = self.th_hash(&header)?;
        let verify_data = crypto::hmac(&crypto::finished_key(self.req.secret()), &th);
        let mut finish = [0u8; 64];
        let finish_len = Request::Finish {
            verify_data: &verify_data,
        }
        .encode(&mut finish, &n)
        .map_err(Failure::Encode)?;
        let finish = prefix(&finish, finish_len)?;
        append(&mut self.th, &mut self.th_len, finish)?;
        let sent = self.seal(finish, out)?;
        self.set_phase(Phase::Finish);
        Ok(Step::Send(sent))
    }

    fn on_finish(&mut self, record: &mut [u8]) -> Result<Step<'static>, Failure> {
        let mut keys = self.rsp.clone();
        let (r, message) = self.open(&mut keys, record, Expect::Plain(ResponseCode::FinishRsp))?;
        let Response::FinishRsp { .. } = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let th2 = self.th_hash(message)?;
        let (req_data, rsp_data) = crypto::data_secrets(&self.handshake, &th2);
        self.req = Direction::new(&req_data);
        self.rsp = Direction::new(&rsp_data);
        self.handshake = [0; crypto::HASH_SIZE];
        self.th = [0; TH_CAPACITY];
        self.th_len = 0;
        self.set_phase(Phase::Established);
        Ok(Step::Done(Outcome::Connected))
    }

    fn on_tdisp<'r>(&mut self, record: &'r mut [u8]) -> Result<Step<'r>, Failure> {
        let mut keys = self.rsp.clone();
        let (r, _) = self.open(
            &mut keys,
            record,
            Expect::Plain(ResponseCode::VendorDefined),
        )?;
        let Response::VendorDefined(v) = r else {
            return Err(Failure::Malformed(
                SpdmError::UnexpectedCode(r.code() as u8),
            ));
        };
        let Some((PROTOCOL_ID_TDISP, message)) = v.pci_protocol() else {
            return Err(Failure::UnexpectedResponse);
        };
        self.rsp = keys;
        self.set_phase(Phase::Established);
        Ok(Step::Done(Outcome::Tdisp(message)))
    }

    fn on_key_update(
        &mut self,
        record: &mut [u8],
        out: &mut [u8],
        rng: &dyn Entropy,
    ) -> Result<Step<'static>, Failure> {
        // UpdateAllKeys: the responder updates both directions and acknowledges under its new
        // key; the requester's new key takes over once the ACK verified.
        let mut keys = self.rsp.clone();
        keys.update();
        let (r, _) = self.open(&mut keys, record, Expect::Plain(ResponseCode::KeyUpdateAck))?;
        // A pattern, not `!=`: comparing with a built `Response` kept the derived `eq` over
        // every variant (1.2 KiB of `.text`) in the image.
        let expected_tag = self.tag as u8;
        if !matches!(r, Response::KeyUpdateAck {
            operation: KeyOperation::UpdateAllKeys,
            tag,
        } if tag == expected_tag)
        {
            return Err(Failure::UnexpectedResponse);
        }
        self.rsp = keys;
        self.req.update();
        let [tag] = random::<1>(rng)?;
        let sent = self.send_secured(
            &Request::KeyUpdate {
                operation: KeyOperation::VerifyNewKey,
                tag,
            },
            out,
        )?;
        self.tag = tag.into();
        self.set_phase(Phase::VerifyNewKey);
        Ok(Step::Send(sent))
    }

    fn on_verify_new_key(&mut self, record: &mut [u8]) -> Result<Step<'static>, Failure> {
        let mut keys = self.rsp.clone();
        let (r, _) = self.open(&mut keys, record, Expect::Plain(ResponseCode::KeyUpdateAck))?;
        let expected_tag = self.tag as u8;
        if !matches!(r, Response::KeyUpdateAck {
            operation: KeyOperation::VerifyNewKey,
            tag,
        } if tag == expected_tag)
        {
            return Err(Failure::UnexpectedResponse);
        }
        self.rsp = keys;
        self.tag = 0;
        self.set_phase(Phase::Established);
        Ok(Step::Done(Outcome::KeysUpdated))
    }

    fn on_end_session(&mut self, record: &mut [u8]) -> Result<Step<'static>, Failure> {
        let mut keys = self.rsp.clone();
        let (r, _) = self.open(
            &mut keys,
            record,
            Expect::Plain(ResponseCode::EndSessionAck),
        )?;
        if !matches!(r, Response::EndSessionAck) {
            return Err(Failure::UnexpectedResponse);
        }
        self.zero();
        Ok(Step::Done(Outcome::Ended))
    }
}

impl Default for Requester {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Requester {
    // Secrets stay out of logs: only the phase and the session ID.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Requester")
            .field("phase", &self.phase())
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}
