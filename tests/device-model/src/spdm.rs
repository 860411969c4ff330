//! An SPDM 1.2 responder in front of the TDISP device: what a device's DOE mailbox answers,
//! bytes in, bytes out, plain or as DSP0277 secured messages.
//!
//! It speaks exactly what the TSM's requester negotiates (SPDM 1.2; ECDSA P-384 with its
//! [`identity`](crate::identity) leaf key, SHA-384, secp384r1 ECDHE, AES-256-GCM; SHA-512
//! measurements, as DMTF's reference responder picks) and serves one certificate slot (0). In
//! a session it carries TDISP (`VENDOR_DEFINED_REQUEST`, PCI-SIG, protocol 1) to the wrapped
//! [`Device`], and handles `KEY_UPDATE` and `END_SESSION`. A record that does not decrypt is
//! answered with a plain `ERROR(DecryptError)` and ends the session (DSP0277).
//!
//! [`SpdmMisbehaviour`] knobs break it on purpose: signatures, records, or silence.

mod ecc;
#[cfg(feature = "p384-record")]
pub use ecc::{record as p384_record, table as p384_table};
mod knobs;
mod measurements;
mod session;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest as _, Sha384};
use tsm_abi::spdm::crypto::Digest;
use tsm_abi::spdm::signing::{self, SigningContext};
use tsm_abi::spdm::{
    AeadSuite, Algorithms, BaseAsymAlgo, BaseHashAlgo, CapFlags, Capabilities, DheGroup,
    DigestList, ErrorCode, ErrorResponse, MEASUREMENTS_COUNT, MeasurementHashAlgo,
    MeasurementRecord, MeasurementSpec, Measurements, Negotiated, OtherParams, Request,
    RequestCode, Response, SpdmError, VersionList,
};

use knobs::Knobs;
pub use knobs::SpdmMisbehaviour;
use session::Session;

use crate::Device;
use crate::identity::{DeviceIdentity, KeyedIdentity};

/// The largest message the responder sends (its `DataTransferSize`).
pub const MAX_MESSAGE: usize = 4096;
/// Largest chain portion one `CERTIFICATE` carries.
pub const MAX_PORTION: usize = 1024;
/// Bytes of VCA transcript the responder keeps.
const VCA_CAPACITY: usize = 512;

/// The versions it offers: 1.0, 1.1 and 1.2 (it speaks only 1.2 after `VERSION`).
const VERSIONS: [u8; 6] = [0x00, 0x10, 0x00, 0x11, 0x00, 0x12];

const CAPS: CapFlags = CapFlags::CERT_CAP
    .union(CapFlags::MEAS_CAP_SIG)
    .union(CapFlags::MEAS_FRESH_CAP)
    .union(CapFlags::ENCRYPT_CAP)
    .union(CapFlags::MAC_CAP)
    .union(CapFlags::KEY_EX_CAP)
    .union(CapFlags::KEY_UPD_CAP);

/// The sizes of its one cipher suite.
pub(crate) const NEGOTIATED: Negotiated = Negotiated {
    hash: 48,
    signature: 96,
    exchange: 96,
    measurement_hash: 64,
    handshake_in_clear: false,
};

/// Room for the device's whole measurement record.
pub const MEASUREMENT_RECORD_CAPACITY: usize = measurements::RECORD_CAPACITY;

/// The measurement record a `MEASUREMENTS` of all blocks carries (its length in `out`): what a
/// verifier reads back as the device's measurements (the model test predicts the evidence a
/// guest sees from it).
pub fn measurement_record(out: &mut [u8; MEASUREMENT_RECORD_CAPACITY]) -> usize {
    measurements::record(tsm_abi::spdm::MEASUREMENTS_ALL, out).map_or(0, |(_, len)| len)
}

/// What the responder did with a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reply {
    /// `len` bytes of response: a secured message if `secured`.
    Message {
        /// Bytes written.
        len: usize,
        /// A DSP0277 record (DOE secured-SPDM) rather than a plain message.
        secured: bool,
    },
    /// No answer (the host reports `NO_RESPONSE`).
    Silent,
}

/// Why the model produced nothing (a bug in the model or a buffer too small, never input).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpdmModelError {
    /// The codec refused the model's own message.
    Encode(SpdmError),
    /// The response buffer cannot hold the answer.
    ResponseBufferTooSmall,
}

/// Connection state: where negotiation is, and the VCA transcript.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Stage {
    Start,
    Versioned,
    Capable,
    Negotiated,
}

/// An SPDM responder wrapping a TDISP device.
#[derive(Debug)]
pub struct SpdmDevice<'c> {
    device: Device<'c>,
    identity: DeviceIdentity,
    key: p384::SecretKey,
    rng: ChaCha20Rng,
    stage: Stage,
    vca: [u8; VCA_CAPACITY],
    vca_len: usize,
    session: Option<Session>,
    knobs: Knobs,
}

impl<'c> SpdmDevice<'c> {
    /// A responder for `device` with `identity`'s chain in slot 0 and its leaf key; `seed` seeds
    /// its randomness (nonces, ECDHE keys, session IDs).
    pub fn new(device: Device<'c>, identity: DeviceIdentity, seed: [u8; 32]) -> Self {
        Self::with_keyed(device, &identity.keyed(), seed)
    }

    /// [`SpdmDevice::new`] with the identity's key derived once by the caller.
    pub fn with_keyed(device: Device<'c>, keyed: &KeyedIdentity, seed: [u8; 32]) -> Self {
        Self {
            device,
            key: keyed.key.clone(),
            identity: keyed.identity,
            rng: ChaCha20Rng::from_seed(seed),
            stage: Stage::Start,
            vca: [0; VCA_CAPACITY],
            vca_len: 0,
            session: None,
            knobs: Knobs::default(),
        }
    }

    /// The TDISP device behind it.
    pub fn device(&self) -> &Device<'c> {
        &self.device
    }

    /// The TDISP device behind it, to change (knobs, errors).
    pub fn device_mut(&mut self) -> &mut Device<'c> {
        &mut self.device
    }

    /// Whether a session is established.
    pub fn in_session(&self) -> bool {
        self.session.as_ref().is_some_and(Session::established)
    }

    /// Turns a misbehaviour on (see [`SpdmMisbehaviour`]).
    pub fn enable(&mut self, m: SpdmMisbehaviour) {
        self.knobs.enable(m);
    }

    /// Back to honest answers (a device that stopped answering answers again).
    pub fn clear_misbehaviour(&mut self) {
        self.knobs = Knobs::default();
    }

    /// Answers one request (`secured`: it came as a DSP0277 record).
    pub fn respond(
        &mut self,
        request: &[u8],
        secured: bool,
        out: &mut [u8],
    ) -> Result<Reply, SpdmModelError> {
        if self.knobs.silent {
            return Ok(Reply::Silent);
        }
        if secured {
            return session::respond(self, request, out);
        }
        let mut scratch = [0u8; MAX_MESSAGE];
        let Some(len) = self.answer_plain(request, &mut scratch)? else {
            return Ok(Reply::Silent);
        };
        let message = scratch
            .get(..len)
            .ok_or(SpdmModelError::ResponseBufferTooSmall)?;
        out.get_mut(..len)
            .ok_or(SpdmModelError::ResponseBufferTooSmall)?
            .copy_from_slice(message);
        Ok(Reply::Message {
            len,
            secured: false,
        })
    }

    /// Stops answering when the knob says so for this request.
    fn stops_at(&mut self, code: RequestCode) -> bool {
        if self.knobs.stop_at == Some(code) {
            self.knobs.silent = true;
        }
        self.knobs.silent
    }

    fn negotiated(&self) -> Negotiated {
        if self.stage == Stage::Negotiated {
            NEGOTIATED
        } else {
            Negotiated::NONE
        }
    }

    fn record_vca(&mut self, bytes: &[u8]) {
        let end = self.vca_len.saturating_add(bytes.len());
        if let Some(dest) = self.vca.get_mut(self.vca_len..end) {
            dest.copy_from_slice(bytes);
            self.vca_len = end;
        }
    }

    fn vca(&self) -> &[u8] {
        self.vca.get(..self.vca_len).unwrap_or_default()
    }

    /// SHA-384 of the certificate chain (Ct, and the slot's `DIGESTS` entry).
    fn chain_digest(&self) -> Digest {
        Sha384::digest(self.identity.chain).into()
    }

    /// Signs an SPDM 1.2 signature over `transcript_hash`.
    fn sign(&self, context: SigningContext, transcript_hash: &Digest) -> [u8; 96] {
        let mut message = [0u8; signing::SIGNING_PREFIX_SIZE + 48];
        let n = signing::signed_message(&mut message, context, transcript_hash).unwrap_or(0);
        ecc::sign(&self.key, message.get(..n).unwrap_or_default())
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill_bytes(&mut out);
        out
    }

    /// A plain request's answer into `out`; `None` when silent.
    fn answer_plain(
        &mut self,
        request: &[u8],
        out: &mut [u8],
    ) -> Result<Option<usize>, SpdmModelError> {
        let n = self.negotiated();
        let (req, req_len) = match Request::decode(request, &n) {
            Ok(ok) => ok,
            Err(e) => return encode_error(out, refusal(e)).map(Some),
        };
        if self.stops_at(req.code()) {
            return Ok(None);
        }
        let req_bytes = request.get(..req_len).unwrap_or_default();
        let len = match req {
            Request::GetVersion => {
                // GET_VERSION resets the connection, sessions included (DSP0274, `GET_VERSION`).
                self.stage = Stage::Start;
                self.session = None;
                self.vca_len = 0;
                let len = encode(
                    out,
                    &Response::Version(VersionList::from_bytes(&VERSIONS)),
                    &n,
                )?;
                self.record_vca(req_bytes);
                self.record_vca(out.get(..len).unwrap_or_default());
                self.stage = Stage::Versioned;
                len
            }
            Request::GetCapabilities(_) if self.stage == Stage::Versioned => {
                let caps = Capabilities {
                    ct_exponent: 12,
                    flags: CAPS,
                    data_transfer_size: MAX_MESSAGE as u32,
                    max_message_size: MAX_MESSAGE as u32,
                };
                let len = encode(out, &Response::Capabilities(caps), &n)?;
                self.record_vca(req_bytes);
                self.record_vca(out.get(..len).unwrap_or_default());
                self.stage = Stage::Capable;
                len
            }
            Request::NegotiateAlgorithms(offer) if self.stage == Stage::Capable => {
                let len = encode(out, &Response::Algorithms(select(&offer)), &n)?;
                self.record_vca(req_bytes);
                self.record_vca(out.get(..len).unwrap_or_default());
                self.stage = Stage::Negotiated;
                len
            }
            Request::GetDigests if self.stage == Stage::Negotiated => {
                let digest = self.chain_digest();
                let digests = DigestList::new(1, &digest, 48);
                encode(out, &Response::Digests(digests), &n)?
            }
            Request::GetCertificate {
                slot,
                offset,
                length,
            } if self.stage == Stage::Negotiated => {
                let chain = self.identity.chain;
                let start = usize::from(offset);
                if slot != 0 || start >= chain.len() {
                    return encode_error(out, ErrorCode::INVALID_REQUEST).map(Some);
                }
                let len = usize::from(length)
                    .min(MAX_PORTION)
                    .min(chain.len() - start);
                let portion = chain.get(start..start + len).unwrap_or_default();
                let remainder = (chain.len() - start - len) as u16;
                encode(
                    out,
                    &Response::Certificate {
                        slot,
                        portion,
                        remainder,
                    },
                    &n,
                )?
            }
            Request::GetMeasurements {
                operation, signed, ..
            } if self.stage == Stage::Negotiated => {
                self.measurements(req_bytes, operation, signed, out)?
            }
            Request::KeyExchange(k) if self.stage == Stage::Negotiated => {
                return session::key_exchange(self, req_bytes, &k, out);
            }
            Request::GetCapabilities(_)
            | Request::NegotiateAlgorithms(_)
            | Request::GetDigests
            | Request::GetCertificate { .. }
            | Request::GetMeasurements { .. }
            | Request::KeyExchange(_) => encode_error(out, ErrorCode::UNEXPECTED_REQUEST)?,
            // Session-only requests outside a session.
            Request::Finish { .. }
            | Request::KeyUpdate { .. }
            | Request::EndSession { .. }
            | Request::VendorDefined(_) => encode_error(out, ErrorCode::SESSION_REQUIRED)?,
        };
        Ok(Some(len))
    }

    /// `MEASUREMENTS` for `operation`, signed over L1 (VCA, the request, the response up to the
    /// signature) when asked.
    fn measurements(
        &mut self,
        req_bytes: &[u8],
        operation: u8,
        signed: Option<([u8; 32], u8)>,
        out: &mut [u8],
    ) -> Result<usize, SpdmModelError> {
        let mut record = [0u8; measurements::RECORD_CAPACITY];
        let Some((count, record_len)) = measurements::record(operation, &mut record) else {
            return encode_error(out, ErrorCode::INVALID_REQUEST);
        };
        let Ok(parsed) = MeasurementRecord::parse(
            record.get(..record_len).unwrap_or_default(),
            count,
            NEGOTIATED.measurement_hash,
        ) else {
            return encode_error(out, ErrorCode::UNSPECIFIED);
        };
        let zero_sig = [0u8; 96];
        let m = Measurements {
            total_blocks: if operation == MEASUREMENTS_COUNT {
                measurements::BLOCKS
            } else {
                0
            },
            slot: signed.map_or(0, |(_, slot)| slot),
            content_changed: 0,
            record: parsed,
            nonce: self.random(),
            opaque: &[],
            signature: signed.map(|_| &zero_sig[..]),
        };
        let len = encode(out, &Response::Measurements(m), &NEGOTIATED)?;
        if signed.is_some() {
            let sig_at = len - 96;
            let l1: Digest = Sha384::new()
                .chain_update(self.vca())
                .chain_update(req_bytes)
                .chain_update(out.get(..sig_at).unwrap_or_default())
                .finalize()
                .into();
            let mut sig = self.sign(SigningContext::Measurements, &l1);
            if self.knobs.bad_measurement_signature {
                sig[10] ^= 0x01;
            }
            out.get_mut(sig_at..len)
                .ok_or(SpdmModelError::ResponseBufferTooSmall)?
                .copy_from_slice(&sig);
        }
        Ok(len)
    }
}

/// The responder's choice from the requester's offer: its one suite where offered, nothing
/// where not (the requester then fails the negotiation, as a real one would).
fn select(offer: &Algorithms) -> Algorithms {
    Algorithms {
        measurement_spec: if offer.measurement_spec.contains(MeasurementSpec::DMTF) {
            MeasurementSpec::DMTF
        } else {
            MeasurementSpec::empty()
        },
        other_params: if offer.other_params.contains(OtherParams::OPAQUE_DATA_FMT1) {
            OtherParams::OPAQUE_DATA_FMT1
        } else {
            OtherParams::empty()
        },
        measurement_hash: MeasurementHashAlgo::SHA_512,
        base_asym: if offer.base_asym.contains(BaseAsymAlgo::ECDSA_P384) {
            BaseAsymAlgo::ECDSA_P384
        } else {
            BaseAsymAlgo::empty()
        },
        base_hash: if offer.base_hash.contains(BaseHashAlgo::SHA_384) {
            BaseHashAlgo::SHA_384
        } else {
            BaseHashAlgo::empty()
        },
        ext_asym_count: 0,
        ext_hash_count: 0,
        dhe: offer.dhe.map(|d| d.intersection(DheGroup::SECP384R1)),
        aead: offer.aead.map(|a| a.intersection(AeadSuite::AES_256_GCM)),
        // No mutual authentication: no requester algorithm is selected.
        req_base_asym: offer.req_base_asym.map(|_| BaseAsymAlgo::empty()),
        key_schedule: offer
            .key_schedule
            .map(|k| k.intersection(tsm_abi::spdm::KeySchedule::SPDM)),
    }
}

/// The `ERROR` for a request the codec refused.
fn refusal(e: SpdmError) -> ErrorCode {
    match e {
        SpdmError::VersionMismatch(_) => ErrorCode::VERSION_MISMATCH,
        SpdmError::UnexpectedCode(_) => ErrorCode::UNSUPPORTED_REQUEST,
        _ => ErrorCode::INVALID_REQUEST,
    }
}

pub(crate) fn encode(
    out: &mut [u8],
    response: &Response<'_>,
    n: &Negotiated,
) -> Result<usize, SpdmModelError> {
    response.encode(out, n).map_err(|e| match e {
        SpdmError::BufferTooSmall => SpdmModelError::ResponseBufferTooSmall,
        other => SpdmModelError::Encode(other),
    })
}

pub(crate) fn encode_error(out: &mut [u8], code: ErrorCode) -> Result<usize, SpdmModelError> {
    encode(
        out,
        &Response::Error(ErrorResponse {
            code,
            data: 0,
            extended: &[],
        }),
        &Negotiated::NONE,
    )
}
