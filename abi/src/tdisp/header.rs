//! The 16-byte message header, shared by both directions.

use zerocopy::byteorder::little_endian::{U32, U64};

use super::codes::InterfaceId;
use super::cursor::{Reader, Writer};
use super::error::{Field, TdispError};
use super::{MAX_MESSAGE_SIZE, TDISP_VERSION_1_0, wire};

/// Checks the length cap and the header; returns the raw message type and the interface ID.
///
/// The check order is fixed (size, truncation, version, type, reserved fields) so that one
/// message always yields the same error.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    known_type: impl Fn(u8) -> bool,
) -> Result<(Reader<'a>, u8, InterfaceId), TdispError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(TdispError::Oversized);
    }
    let mut r = Reader::new(bytes);
    let h: &wire::Header = r.view()?;
    if h.version != TDISP_VERSION_1_0 {
        return Err(TdispError::VersionMismatch(h.version));
    }
    if !known_type(h.message_type) {
        return Err(TdispError::UnknownMessageType(h.message_type));
    }
    if h.reserved != [0; 2] {
        return Err(TdispError::ReservedNonZero(Field::HeaderReserved));
    }
    if h.interface_reserved.get() != 0 {
        return Err(TdispError::ReservedNonZero(Field::InterfaceIdReserved));
    }
    let interface_id = InterfaceId::from_function_id(h.function_id.get())?;
    Ok((r, h.message_type, interface_id))
}

pub(crate) fn encode(
    w: &mut Writer<'_>,
    message_type: u8,
    interface_id: InterfaceId,
) -> Result<(), TdispError> {
    w.put(&wire::Header {
        version: TDISP_VERSION_1_0,
        message_type,
        reserved: [0; 2],
        function_id: U32::new(interface_id.function_id()),
        interface_reserved: U64::new(0),
    })
}
