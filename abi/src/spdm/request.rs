//! SPDM 1.2 requests (requester → responder).

use super::algo::{Algorithms, MAX_NEGOTIATE_ALGORITHMS, Side};
use super::codes::{KeyOperation, RequestCode};
use super::cursor::{Reader, Writer};
use super::types::{
    Capabilities, KeyExchange, MAX_OPAQUE_DATA, NONCE_SIZE, Negotiated, SLOT_COUNT, VendorDefined,
};
use super::{Expect, Field, SpdmError};

/// An SPDM 1.2 request, decoded and checked. Borrowed data points into the decoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Request<'a> {
    /// `GET_VERSION` (always `SPDMVersion` 1.0).
    GetVersion,
    /// `GET_CAPABILITIES`.
    GetCapabilities(Capabilities),
    /// `NEGOTIATE_ALGORITHMS`: what the requester supports.
    NegotiateAlgorithms(Algorithms),
    /// `GET_DIGESTS`.
    GetDigests,
    /// `GET_CERTIFICATE`: `length` bytes of slot `slot`'s chain from `offset`.
    GetCertificate {
        /// `Param1` bits 3:0.
        slot: u8,
        /// `Offset`.
        offset: u16,
        /// `Length`.
        length: u16,
    },
    /// `GET_MEASUREMENTS`.
    GetMeasurements {
        /// `Param2`: 0 = the count only, 1..=0xFE one index, 0xFF all.
        operation: u8,
        /// `Param1` bit 1 (1.2): raw bit streams wanted where the device has them.
        raw_bit_stream: bool,
        /// `Param1` bit 0 with `Nonce` and `SlotIDParam`: a signed response, by slot's key,
        /// over a transcript that includes this nonce.
        signed: Option<([u8; NONCE_SIZE], u8)>,
    },
    /// `KEY_EXCHANGE`.
    KeyExchange(KeyExchange<'a>),
    /// `FINISH` without a requester signature (this codec does not carry mutual
    /// authentication).
    Finish {
        /// `RequesterVerifyData` (`H` bytes).
        verify_data: &'a [u8],
    },
    /// `KEY_UPDATE`.
    KeyUpdate {
        /// `Param1`.
        operation: KeyOperation,
        /// `Param2`: echoed by the ACK.
        tag: u8,
    },
    /// `END_SESSION`.
    EndSession {
        /// `Param1` bit 0: the responder clears the negotiated state (VCA) too.
        clear_negotiated_state: bool,
    },
    /// `VENDOR_DEFINED_REQUEST`.
    VendorDefined(VendorDefined<'a>),
}

/// Reads the 4-byte header: checks version and code, returns `Param1`, `Param2`.
pub(crate) fn read_header(
    r: &mut Reader<'_>,
    version: u8,
    code: u8,
) -> Result<(u8, u8), SpdmError> {
    let v = r.u8()?;
    let c = r.u8()?;
    if c != code {
        return Err(SpdmError::UnexpectedCode(c));
    }
    if v != version {
        return Err(SpdmError::VersionMismatch(v));
    }
    Ok((r.u8()?, r.u8()?))
}

impl<'a> Request<'a> {
    /// The request code.
    pub fn code(&self) -> RequestCode {
        match self {
            Self::GetVersion => RequestCode::GetVersion,
            Self::GetCapabilities(_) => RequestCode::GetCapabilities,
            Self::NegotiateAlgorithms(_) => RequestCode::NegotiateAlgorithms,
            Self::GetDigests => RequestCode::GetDigests,
            Self::GetCertificate { .. } => RequestCode::GetCertificate,
            Self::GetMeasurements { .. } => RequestCode::GetMeasurements,
            Self::KeyExchange(_) => RequestCode::KeyExchange,
            Self::Finish { .. } => RequestCode::Finish,
            Self::KeyUpdate { .. } => RequestCode::KeyUpdate,
            Self::EndSession { .. } => RequestCode::EndSession,
            Self::VendorDefined(_) => RequestCode::VendorDefined,
        }
    }

    /// What answers this request.
    pub fn expect(&self) -> Expect {
        match self {
            Self::GetMeasurements { signed, .. } => Expect::Measurements {
                signed: signed.is_some(),
            },
            Self::KeyExchange(k) => Expect::KeyExchangeRsp {
                summary: k.summary_type != 0,
            },
            other => Expect::Plain(other.code().response()),
        }
    }

    /// Decodes one request. `n` gives the sizes of the fields the message does not carry
    /// (`KEY_EXCHANGE`'s `ExchangeData`, `FINISH`'s verify data); up to 3 zero bytes of DOE
    /// padding may follow the message. Returns the request and the message's length.
    pub fn decode(bytes: &'a [u8], n: &Negotiated) -> Result<(Self, usize), SpdmError> {
        let mut r = Reader::new(bytes);
        let mut peek = Reader::new(bytes);
        peek.u8()?;
        let raw = peek.u8()?;
        let code = RequestCode::from_raw(raw).ok_or(SpdmError::UnexpectedCode(raw))?;
        let (p1, p2) = read_header(&mut r, code.version(), raw)?;
        let request = match code {
            RequestCode::GetVersion => Self::GetVersion,
            RequestCode::GetCapabilities => Self::GetCapabilities(Capabilities::decode(&mut r)?),
            RequestCode::NegotiateAlgorithms => {
                let (algs, length) = Algorithms::decode(&mut r, p1, Side::Request)?;
                if length != r.consumed() || length > MAX_NEGOTIATE_ALGORITHMS {
                    return Err(SpdmError::Inconsistent(Field::AlgorithmsLength));
                }
                Self::NegotiateAlgorithms(algs)
            }
            RequestCode::GetDigests => Self::GetDigests,
            RequestCode::GetCertificate => {
                let slot = p1 & 0xF;
                if slot >= SLOT_COUNT {
                    return Err(SpdmError::InvalidField(Field::SlotId));
                }
                Self::GetCertificate {
                    slot,
                    offset: r.u16()?,
                    length: r.u16()?,
                }
            }
            RequestCode::GetMeasurements => {
                let signed = if p1 & 1 != 0 {
                    let nonce = r.array()?;
                    let slot = r.u8()? & 0xF;
                    if slot >= SLOT_COUNT {
                        return Err(SpdmError::InvalidField(Field::SlotId));
                    }
                    Some((nonce, slot))
                } else {
                    None
                };
                Self::GetMeasurements {
                    operation: p2,
                    raw_bit_stream: p1 & 2 != 0,
                    signed,
                }
            }
            RequestCode::KeyExchange => {
                if !matches!(p1, 0 | 1 | 0xFF) {
                    return Err(SpdmError::InvalidField(Field::MeasurementOperation));
                }
                if p2 >= SLOT_COUNT && p2 != 0xFF {
                    return Err(SpdmError::InvalidField(Field::SlotId));
                }
                let req_session_id = r.u16()?;
                let session_policy = r.u8()?;
                r.u8()?;
                let random = r.array()?;
                let exchange = r.bytes(n.exchange)?;
                let opaque_len = usize::from(r.u16()?);
                if opaque_len > MAX_OPAQUE_DATA {
                    return Err(SpdmError::InvalidField(Field::OpaqueLength));
                }
                Self::KeyExchange(KeyExchange {
                    summary_type: p1,
                    slot: p2,
                    req_session_id,
                    session_policy,
                    random,
                    exchange,
                    opaque: r.bytes(opaque_len)?,
                })
            }
            RequestCode::Finish => {
                // Bit 0 says a signature follows (mutual authentication), which this codec
                // does not carry; without it, `Param2` (the requester's slot) is reserved.
                if p1 & 1 != 0 {
                    return Err(SpdmError::InvalidField(Field::FinishAttributes));
                }
                Self::Finish {
                    verify_data: r.bytes(n.hash)?,
                }
            }
            RequestCode::KeyUpdate => Self::KeyUpdate {
                operation: KeyOperation::from_raw(p1)
                    .ok_or(SpdmError::InvalidField(Field::KeyOperation))?,
                tag: p2,
            },
            RequestCode::EndSession => Self::EndSession {
                clear_negotiated_state: p1 & 1 != 0,
            },
            RequestCode::VendorDefined => Self::VendorDefined(VendorDefined::decode(&mut r)?),
        };
        Ok((request, r.finish_doe()?))
    }

    /// Encodes the request into `out`; returns its length. Refuses variable fields whose
    /// length is not the negotiated one (`BadLength`) and whatever decoding would refuse.
    ///
    /// `#[inline]`: only the TSM's SPDM requester encodes requests, so the image compiles this in
    /// tsm-spdm at its opt-level "z" (Cargo.toml) rather than in tsm-abi at 2.
    #[inline]
    pub fn encode(&self, out: &mut [u8], n: &Negotiated) -> Result<usize, SpdmError> {
        let code = self.code();
        let (p1, p2) = match *self {
            Self::NegotiateAlgorithms(a) => (a.table_count(), 0),
            Self::GetCertificate { slot, .. } => (slot, 0),
            Self::GetMeasurements {
                operation,
                raw_bit_stream,
                signed,
            } => (
                u8::from(signed.is_some()) | u8::from(raw_bit_stream) << 1,
                operation,
            ),
            Self::KeyExchange(k) => (k.summary_type, k.slot),
            Self::KeyUpdate { operation, tag } => (operation as u8, tag),
            Self::EndSession {
                clear_negotiated_state,
            } => (u8::from(clear_negotiated_state), 0),
            _ => (0, 0),
        };
        let mut w = Writer::new(out);
        w.u8(code.version())?;
        w.u8(code as u8)?;
        w.u8(p1)?;
        w.u8(p2)?;
        match self {
            Self::GetVersion
            | Self::GetDigests
            | Self::KeyUpdate { .. }
            | Self::EndSession { .. } => {}
            Self::GetCapabilities(c) => c.encode(&mut w)?,
            Self::NegotiateAlgorithms(a) => a.encode(&mut w, Side::Request)?,
            Self::GetCertificate { offset, length, .. } => {
                w.u16(*offset)?;
                w.u16(*length)?;
            }
            Self::GetMeasurements { signed, .. } => {
                if let Some((nonce, slot)) = signed {
                    w.bytes(nonce)?;
                    w.u8(*slot)?;
                }
            }
            Self::KeyExchange(k) => {
                if k.exchange.len() != n.exchange {
                    return Err(SpdmError::BadLength);
                }
                w.u16(k.req_session_id)?;
                w.u8(k.session_policy)?;
                w.u8(0)?;
                w.bytes(&k.random)?;
                w.bytes(k.exchange)?;
                w.len16(k.opaque.len())?;
                w.bytes(k.opaque)?;
            }
            Self::Finish { verify_data } => {
                if verify_data.len() != n.hash {
                    return Err(SpdmError::BadLength);
                }
                w.bytes(verify_data)?;
            }
            Self::VendorDefined(v) => v.encode(&mut w)?,
        }
        let len = w.len();
        let written = out.get(..len).ok_or(SpdmError::BufferTooSmall)?;
        // What decoding refuses is never sent: decode the output and compare.
        let (back, _) = Request::decode(written, n)?;
        if back != *self {
            return Err(SpdmError::BadLength);
        }
        Ok(len)
    }
}
