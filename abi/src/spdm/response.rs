//! SPDM 1.2 responses (responder → requester).

use super::algo::{Algorithms, Side};
use super::codes::{KeyOperation, ResponseCode, VERSION_1_0, VERSION_1_2};
use super::cursor::{Reader, Writer};
use super::measurement::MeasurementRecord;
use super::request::read_header;
use super::types::{
    Capabilities, DigestList, ErrorResponse, KeyExchangeRsp, MAX_EXTENDED_ERROR_DATA,
    MAX_OPAQUE_DATA, Measurements, Negotiated, SLOT_COUNT, VendorDefined, VersionList,
};
use super::{ErrorCode, Field, SpdmError};

/// What a requester expects back: the response code of its request and, where the layout
/// depends on the request, what the request asked for. An `ERROR` may answer any of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Expect {
    /// A response whose layout the negotiated sizes fix alone.
    Plain(ResponseCode),
    /// `MEASUREMENTS`: a signature follows when the request asked for one.
    Measurements {
        /// The request set `Param1` bit 0.
        signed: bool,
    },
    /// `KEY_EXCHANGE_RSP`: a measurement summary hash follows `ExchangeData` when the request
    /// asked for one.
    KeyExchangeRsp {
        /// The request's `MeasurementSummaryHashType` was not 0.
        summary: bool,
    },
}

impl Expect {
    /// The response code expected.
    pub fn code(self) -> ResponseCode {
        match self {
            Self::Plain(c) => c,
            Self::Measurements { .. } => ResponseCode::Measurements,
            Self::KeyExchangeRsp { .. } => ResponseCode::KeyExchangeRsp,
        }
    }

    /// The `SPDMVersion` byte expected.
    fn version(self) -> u8 {
        if self.code() == ResponseCode::Version {
            VERSION_1_0
        } else {
            VERSION_1_2
        }
    }
}

/// An SPDM 1.2 response, decoded and checked. Borrowed data points into the decoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Response<'a> {
    /// `VERSION` (always `SPDMVersion` 1.0).
    Version(VersionList<'a>),
    /// `CAPABILITIES`.
    Capabilities(Capabilities),
    /// `ALGORITHMS`: at most one algorithm of each kind selected.
    Algorithms(Algorithms),
    /// `DIGESTS`.
    Digests(DigestList<'a>),
    /// `CERTIFICATE`: one portion of a chain.
    Certificate {
        /// `Param1` bits 3:0.
        slot: u8,
        /// The chain bytes of this portion (`PortionLength` of them).
        portion: &'a [u8],
        /// `RemainderLength`: chain bytes after this portion.
        remainder: u16,
    },
    /// `MEASUREMENTS`.
    Measurements(Measurements<'a>),
    /// `KEY_EXCHANGE_RSP`.
    KeyExchangeRsp(KeyExchangeRsp<'a>),
    /// `FINISH_RSP`.
    FinishRsp {
        /// `ResponderVerifyData`, only when the handshake is in the clear.
        verify_data: Option<&'a [u8]>,
    },
    /// `KEY_UPDATE_ACK`.
    KeyUpdateAck {
        /// `Param1`: the operation acknowledged.
        operation: KeyOperation,
        /// `Param2`: the request's tag.
        tag: u8,
    },
    /// `END_SESSION_ACK`.
    EndSessionAck,
    /// `VENDOR_DEFINED_RESPONSE`.
    VendorDefined(VendorDefined<'a>),
    /// `ERROR`.
    Error(ErrorResponse<'a>),
}

impl<'a> Response<'a> {
    /// The response code.
    pub fn code(&self) -> ResponseCode {
        match self {
            Self::Version(_) => ResponseCode::Version,
            Self::Capabilities(_) => ResponseCode::Capabilities,
            Self::Algorithms(_) => ResponseCode::Algorithms,
            Self::Digests(_) => ResponseCode::Digests,
            Self::Certificate { .. } => ResponseCode::Certificate,
            Self::Measurements(_) => ResponseCode::Measurements,
            Self::KeyExchangeRsp(_) => ResponseCode::KeyExchangeRsp,
            Self::FinishRsp { .. } => ResponseCode::FinishRsp,
            Self::KeyUpdateAck { .. } => ResponseCode::KeyUpdateAck,
            Self::EndSessionAck => ResponseCode::EndSessionAck,
            Self::VendorDefined(_) => ResponseCode::VendorDefined,
            Self::Error(_) => ResponseCode::Error,
        }
    }

    /// What a requester would expect to decode this response (for an `ERROR`: a plain
    /// `ERROR`; its version is then 1.2).
    pub fn expect(&self) -> Expect {
        match self {
            Self::Measurements(m) => Expect::Measurements {
                signed: m.signature.is_some(),
            },
            Self::KeyExchangeRsp(k) => Expect::KeyExchangeRsp {
                summary: k.measurement_summary.is_some(),
            },
            other => Expect::Plain(other.code()),
        }
    }

    /// Decodes the answer to a request that expects `expect`: that response, or an `ERROR`,
    /// in the request's version. `n` gives the sizes the message does not carry; up to 3 zero
    /// bytes of DOE padding may follow the message. Returns the response and the message's
    /// length (what a transcript takes).
    pub fn decode(
        bytes: &'a [u8],
        expect: Expect,
        n: &Negotiated,
    ) -> Result<(Self, usize), SpdmError> {
        let mut r = Reader::new(bytes);
        let mut peek = Reader::new(bytes);
        peek.u8()?;
        let raw = peek.u8()?;
        let code = if raw == ResponseCode::Error as u8 {
            ResponseCode::Error
        } else {
            expect.code()
        };
        let (p1, p2) = read_header(&mut r, expect.version(), code as u8)?;
        let response = match (code, expect) {
            (ResponseCode::Error, _) => {
                let extended = r.bytes(r.remaining())?;
                // DOE padding cannot be told from extended data: an `ERROR` takes the bytes
                // it came with, up to the limit.
                if extended.len() > MAX_EXTENDED_ERROR_DATA {
                    return Err(SpdmError::InvalidField(Field::ExtendedErrorData));
                }
                Self::Error(ErrorResponse {
                    code: ErrorCode(p1),
                    data: p2,
                    extended,
                })
            }
            (ResponseCode::Version, _) => {
                r.u8()?;
                let count = r.u8()?;
                if count == 0 {
                    return Err(SpdmError::InvalidField(Field::VersionCount));
                }
                Self::Version(VersionList::from_bytes(
                    r.bytes(usize::from(count).saturating_mul(2))?,
                ))
            }
            (ResponseCode::Capabilities, _) => Self::Capabilities(Capabilities::decode(&mut r)?),
            (ResponseCode::Algorithms, _) => {
                let (algs, length) = Algorithms::decode(&mut r, p1, Side::Response)?;
                if length != r.consumed() {
                    return Err(SpdmError::Inconsistent(Field::AlgorithmsLength));
                }
                Self::Algorithms(algs)
            }
            (ResponseCode::Digests, _) => {
                if p2 == 0 {
                    return Err(SpdmError::InvalidField(Field::SlotMask));
                }
                let count = usize::try_from(p2.count_ones()).map_err(|_| SpdmError::Truncated)?;
                Self::Digests(DigestList {
                    slot_mask: p2,
                    bytes: r.bytes(count.saturating_mul(n.hash))?,
                    hash: n.hash,
                })
            }
            (ResponseCode::Certificate, _) => {
                let slot = p1 & 0xF;
                if slot >= SLOT_COUNT {
                    return Err(SpdmError::InvalidField(Field::SlotId));
                }
                let portion_len = r.u16()?;
                let remainder = r.u16()?;
                if portion_len == 0 && remainder != 0 {
                    return Err(SpdmError::InvalidField(Field::PortionLength));
                }
                Self::Certificate {
                    slot,
                    portion: r.bytes(portion_len.into())?,
                    remainder,
                }
            }
            (ResponseCode::Measurements, Expect::Measurements { signed }) => {
                let count = r.u8()?;
                let record_len = usize::try_from(r.u24()?).map_err(|_| SpdmError::Truncated)?;
                let record =
                    MeasurementRecord::parse(r.bytes(record_len)?, count, n.measurement_hash)?;
                let nonce = r.array()?;
                let opaque_len = usize::from(r.u16()?);
                if opaque_len > MAX_OPAQUE_DATA {
                    return Err(SpdmError::InvalidField(Field::OpaqueLength));
                }
                let opaque = r.bytes(opaque_len)?;
                let signature = if signed {
                    Some(r.bytes(n.signature)?)
                } else {
                    None
                };
                Self::Measurements(Measurements {
                    total_blocks: p1,
                    slot: p2 & 0xF,
                    content_changed: (p2 >> 4) & 0x3,
                    record,
                    nonce,
                    opaque,
                    signature,
                })
            }
            (ResponseCode::KeyExchangeRsp, Expect::KeyExchangeRsp { summary }) => {
                let rsp_session_id = r.u16()?;
                let mut_auth_requested = r.u8()?;
                let req_slot_id = r.u8()?;
                let random = r.array()?;
                let exchange = r.bytes(n.exchange)?;
                let measurement_summary = if summary {
                    Some(r.bytes(n.hash)?)
                } else {
                    None
                };
                let opaque_len = usize::from(r.u16()?);
                if opaque_len > MAX_OPAQUE_DATA {
                    return Err(SpdmError::InvalidField(Field::OpaqueLength));
                }
                let opaque = r.bytes(opaque_len)?;
                let signature = r.bytes(n.signature)?;
                let verify_data = if n.handshake_in_clear {
                    None
                } else {
                    Some(r.bytes(n.hash)?)
                };
                Self::KeyExchangeRsp(KeyExchangeRsp {
                    heartbeat_period: p1,
                    rsp_session_id,
                    mut_auth_requested,
                    req_slot_id,
                    random,
                    exchange,
                    measurement_summary,
                    opaque,
                    signature,
                    verify_data,
                })
            }
            (ResponseCode::FinishRsp, _) => Self::FinishRsp {
                verify_data: if n.handshake_in_clear {
                    Some(r.bytes(n.hash)?)
                } else {
                    None
                },
            },
            (ResponseCode::KeyUpdateAck, _) => Self::KeyUpdateAck {
                operation: KeyOperation::from_raw(p1)
                    .ok_or(SpdmError::InvalidField(Field::KeyOperation))?,
                tag: p2,
            },
            (ResponseCode::EndSessionAck, _) => Self::EndSessionAck,
            (ResponseCode::VendorDefined, _) => Self::VendorDefined(VendorDefined::decode(&mut r)?),
            // `Expect::Plain` of a code whose layout depends on the request.
            (ResponseCode::Measurements | ResponseCode::KeyExchangeRsp, _) => {
                return Err(SpdmError::UnexpectedCode(raw));
            }
        };
        let len = r.finish_doe()?;
        Ok((response, len))
    }

    /// Encodes the response into `out`; returns its length. Refuses variable fields whose
    /// length is not the negotiated one (`BadLength`) and whatever decoding would refuse.
    pub fn encode(&self, out: &mut [u8], n: &Negotiated) -> Result<usize, SpdmError> {
        let expect = self.expect();
        let (p1, p2) = match *self {
            Self::Algorithms(a) => (a.table_count(), 0),
            Self::Digests(d) => (0, d.slot_mask),
            Self::Certificate { slot, .. } => (slot, 0),
            Self::Measurements(m) => (m.total_blocks, m.slot | m.content_changed << 4),
            Self::KeyExchangeRsp(k) => (k.heartbeat_period, 0),
            Self::KeyUpdateAck { operation, tag } => (operation as u8, tag),
            Self::Error(e) => (e.code.0, e.data),
            _ => (0, 0),
        };
        let mut w = Writer::new(out);
        w.u8(expect.version())?;
        w.u8(self.code() as u8)?;
        w.u8(p1)?;
        w.u8(p2)?;
        match self {
            Self::EndSessionAck | Self::KeyUpdateAck { .. } => {}
            Self::Version(v) => {
                w.u8(0)?;
                w.u8(u8::try_from(v.count()).map_err(|_| SpdmError::BadLength)?)?;
                w.bytes(v.bytes)?;
            }
            Self::Capabilities(c) => c.encode(&mut w)?,
            Self::Algorithms(a) => a.encode(&mut w, Side::Response)?,
            Self::Digests(d) => w.bytes(d.bytes)?,
            Self::Certificate {
                portion, remainder, ..
            } => {
                w.len16(portion.len())?;
                w.u16(*remainder)?;
                w.bytes(portion)?;
            }
            Self::Measurements(m) => {
                w.u8(m.record.count())?;
                w.u24(m.record.bytes().len())?;
                w.bytes(m.record.bytes())?;
                w.bytes(&m.nonce)?;
                w.len16(m.opaque.len())?;
                w.bytes(m.opaque)?;
                if let Some(s) = m.signature {
                    w.bytes(s)?;
                }
            }
            Self::KeyExchangeRsp(k) => {
                w.u16(k.rsp_session_id)?;
                w.u8(k.mut_auth_requested)?;
                w.u8(k.req_slot_id)?;
                w.bytes(&k.random)?;
                w.bytes(k.exchange)?;
                if let Some(s) = k.measurement_summary {
                    w.bytes(s)?;
                }
                w.len16(k.opaque.len())?;
                w.bytes(k.opaque)?;
                w.bytes(k.signature)?;
                if let Some(v) = k.verify_data {
                    w.bytes(v)?;
                }
            }
            Self::FinishRsp { verify_data } => {
                if let Some(v) = verify_data {
                    w.bytes(v)?;
                }
            }
            Self::VendorDefined(v) => v.encode(&mut w)?,
            Self::Error(e) => w.bytes(e.extended)?,
        }
        let len = w.len();
        let written = out.get(..len).ok_or(SpdmError::BufferTooSmall)?;
        // What decoding refuses is never sent, and no field may have another length than the
        // negotiated one: decode the output and compare.
        let (back, _) = Response::decode(written, expect, n)?;
        if back != *self {
            return Err(SpdmError::BadLength);
        }
        Ok(len)
    }
}
