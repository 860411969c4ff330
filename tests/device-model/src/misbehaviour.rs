//! Ways the model can be told to break the protocol, so the requester's defences can be tested.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::Rng;
use tsm_abi::tdisp::{ErrorCode, InterfaceId, MAX_MESSAGE_SIZE, RequestCode, Response};

/// One misbehaviour. Several can be enabled at once; each stays on until
/// [`Device::clear_misbehaviour`](crate::Device::clear_misbehaviour).
///
/// Except for `ErrorFor`, the device still processes the request honestly (state changes
/// happen): only the answer it sends back is broken, as when a response is corrupted in flight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Misbehaviour {
    /// Refuse `request` with TDISP_ERROR `code` without processing it.
    ErrorFor {
        /// The request to refuse.
        request: RequestCode,
        /// The error to send (for `VendorSpecific` the model adds no extended data, which
        /// makes a message the codec refuses).
        code: ErrorCode,
    },
    /// Answer with a well-formed response of another type.
    WrongResponseType,
    /// Drop the last byte of the response.
    TruncatedResponse,
    /// Pad the response with zeros to one byte past the message cap.
    OversizedResponse,
    /// Send 1..=64 random bytes instead of the response.
    Garbage,
    /// Serve portions after the first from a report with one more MMIO range.
    ReportChangesBetweenPortions,
    /// Put another TDI's interface ID in the response header.
    WrongInterfaceId,
    /// Put version 1.1 (0x11) in the response header.
    WrongVersion,
}

/// The enabled misbehaviours.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Knobs {
    pub error_for: Option<(RequestCode, ErrorCode)>,
    pub wrong_type: bool,
    pub truncated: bool,
    pub oversized: bool,
    pub garbage: bool,
    pub changing_report: bool,
    pub wrong_id: bool,
    pub wrong_version: bool,
}

impl Knobs {
    pub(crate) fn enable(&mut self, m: Misbehaviour) {
        match m {
            Misbehaviour::ErrorFor { request, code } => self.error_for = Some((request, code)),
            Misbehaviour::WrongResponseType => self.wrong_type = true,
            Misbehaviour::TruncatedResponse => self.truncated = true,
            Misbehaviour::OversizedResponse => self.oversized = true,
            Misbehaviour::Garbage => self.garbage = true,
            Misbehaviour::ReportChangesBetweenPortions => self.changing_report = true,
            Misbehaviour::WrongInterfaceId => self.wrong_id = true,
            Misbehaviour::WrongVersion => self.wrong_version = true,
        }
    }

    /// Swaps the honest answer for a well-formed one of another type.
    pub(crate) fn substitute<'b>(&self, honest: Response<'b>) -> Response<'b> {
        if !self.wrong_type {
            return honest;
        }
        let interface_id = honest.interface_id();
        match honest {
            Response::StopInterface { .. } => Response::StartInterface { interface_id },
            _ => Response::StopInterface { interface_id },
        }
    }

    /// Breaks the encoded response `out[..len]` at byte level; returns the new length.
    pub(crate) fn mangle(
        &self,
        out: &mut [u8],
        len: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<usize, crate::ModelError> {
        let mut len = len;
        if self.wrong_id
            && let Some(fid) = out
                .get_mut(4..8)
                .and_then(|b| <&mut [u8; 4]>::try_from(b).ok())
        {
            let other = InterfaceId::from_function_id(u32::from_le_bytes(*fid))
                .map(|id| InterfaceId::new(id.requester_id() ^ 1, id.segment()))
                .unwrap_or(InterfaceId::new(1, None));
            *fid = other.function_id().to_le_bytes();
        }
        if self.wrong_version
            && let Some(v) = out.first_mut()
        {
            *v = 0x11;
        }
        if self.garbage {
            let n = 1 + (rng.next_u32() % 64) as usize;
            let dest = out
                .get_mut(..n)
                .ok_or(crate::ModelError::ResponseBufferTooSmall)?;
            rng.fill_bytes(dest);
            len = n;
        }
        if self.truncated {
            len = len.saturating_sub(1);
        }
        if self.oversized {
            let end = MAX_MESSAGE_SIZE + 1;
            let pad = out
                .get_mut(len..end)
                .ok_or(crate::ModelError::ResponseBufferTooSmall)?;
            pad.fill(0);
            len = end;
        }
        Ok(len)
    }
}
