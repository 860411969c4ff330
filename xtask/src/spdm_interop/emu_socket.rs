//! The socket protocol of DMTF's SPDM emulator (spdm-emu), which its responder and requester
//! speak on TCP port 2323, with the PCI DOE transport (docs/design.md, "SPDM interoperability";
//! the framing is in the facts file, section "SPDM").
//!
//! ```text
//! frame:       Command (u32 BE) | Transport (u32 BE) | Size (u32 BE) | payload (Size bytes)
//! DOE object:  VendorID (u16 LE) = 0001h | Type (u8) | reserved (u8) | Length (u32 LE, dwords,
//!              header included, bits 17:0, 0 = 2^18) | message, zero-padded to a dword
//! ```
//!
//! Everything read from the peer is bounded and checked before it is used: the peer may be any
//! program listening on the port.

use std::io::{self, Read, Write};

/// A request or response carrying a transport message.
pub const COMMAND_NORMAL: u32 = 0x0001;
/// Asks the peer to go on (answered in kind).
pub const COMMAND_CONTINUE: u32 = 0xFFFD;
/// Ends the connection: the responder answers in kind, then stops.
pub const COMMAND_SHUTDOWN: u32 = 0xFFFE;
/// The answer to a command the peer does not know.
pub const COMMAND_UNKNOWN: u32 = 0xFFFF;
/// The emulator's hello exchange (answered in kind).
pub const COMMAND_TEST: u32 = 0xDEAD;
/// The transport of every frame this module writes: PCI DOE.
pub const TRANSPORT_PCI_DOE: u32 = 2;

/// Bytes of the frame header (command, transport, size).
const FRAME_HEADER_SIZE: usize = 12;
/// Bytes of the DOE header.
pub const DOE_HEADER_SIZE: usize = 8;
/// The PCI-SIG vendor ID of the DOE data objects SPDM uses.
const DOE_VENDOR_PCI_SIG: u16 = 0x0001;
/// A DOE object is at most 2^18 dwords: no frame larger than that is read, whatever its size
/// field says.
pub const MAX_PAYLOAD: usize = 4 << 18;
/// The DOE Length field's bits (bits 31:18 are reserved).
const DOE_LENGTH_MASK: u32 = (1 << 18) - 1;

/// The DOE data object types an SPDM exchange uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ObjectType {
    /// A plain SPDM message.
    Spdm = 1,
    /// A DSP0277 secured message.
    SecuredSpdm = 2,
}

impl ObjectType {
    /// The type a message travels as.
    pub fn of(secured: bool) -> Self {
        if secured {
            Self::SecuredSpdm
        } else {
            Self::Spdm
        }
    }
}

/// One frame of the socket protocol.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    /// The command.
    pub command: u32,
    /// The transport the peer says it speaks.
    pub transport: u32,
    /// The payload (a DOE object for [`COMMAND_NORMAL`]).
    pub payload: Vec<u8>,
}

/// Writes one frame. The header and payload go out in one write: spdm-emu peers read each
/// field separately, and a frame split over several segments costs a delayed ACK each.
pub fn write_frame(w: &mut impl Write, command: u32, payload: &[u8]) -> io::Result<()> {
    let size = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload too large"))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_SIZE + payload.len());
    frame.extend_from_slice(&command.to_be_bytes());
    frame.extend_from_slice(&TRANSPORT_PCI_DOE.to_be_bytes());
    frame.extend_from_slice(&size.to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` when the peer closed the connection before a new frame began.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, String> {
    let mut header = [0u8; FRAME_HEADER_SIZE];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(format!(
                    "connection closed after {got} bytes of a frame header"
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading a frame header: {e}")),
        }
    }
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (command, transport, size) = (word(0), word(4), word(8));
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= MAX_PAYLOAD)
        .ok_or_else(|| format!("frame announces {size} bytes (at most {MAX_PAYLOAD})"))?;
    let mut payload = vec![0u8; size];
    r.read_exact(&mut payload)
        .map_err(|e| format!("reading a {size}-byte frame payload: {e}"))?;
    Ok(Some(Frame {
        command,
        transport,
        payload,
    }))
}

/// Wraps an SPDM message in a DOE data object.
pub fn doe_wrap(kind: ObjectType, message: &[u8]) -> Result<Vec<u8>, String> {
    let dwords = (DOE_HEADER_SIZE + message.len()).div_ceil(4);
    let length = match u32::try_from(dwords) {
        Ok(n) if n < 1 << 18 => n,
        Ok(n) if n == 1 << 18 => 0,
        _ => {
            return Err(format!(
                "a {}-byte message does not fit a DOE object",
                message.len()
            ));
        }
    };
    let mut object = Vec::with_capacity(dwords * 4);
    object.extend_from_slice(&DOE_VENDOR_PCI_SIG.to_le_bytes());
    object.push(kind as u8);
    object.push(0);
    object.extend_from_slice(&length.to_le_bytes());
    object.extend_from_slice(message);
    object.resize(dwords * 4, 0);
    Ok(object)
}

/// Unwraps a DOE data object: its type and the message in it (with the object's zero padding,
/// at most 3 bytes, which the SPDM decoders accept).
pub fn doe_unwrap(object: &[u8]) -> Result<(ObjectType, &[u8]), String> {
    let Some((header, message)) = object.split_first_chunk::<DOE_HEADER_SIZE>() else {
        return Err(format!("{}-byte DOE object (header is 8)", object.len()));
    };
    let vendor = u16::from_le_bytes([header[0], header[1]]);
    if vendor != DOE_VENDOR_PCI_SIG {
        return Err(format!("DOE vendor ID {vendor:#06x}, not PCI-SIG"));
    }
    let kind = match header[2] {
        1 => ObjectType::Spdm,
        2 => ObjectType::SecuredSpdm,
        t => {
            return Err(format!(
                "DOE data object type {t} is not SPDM or secured SPDM"
            ));
        }
    };
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if header[3] != 0 || length & !DOE_LENGTH_MASK != 0 {
        return Err("reserved DOE header bits set".into());
    }
    let dwords = if length == 0 {
        1 << 18
    } else {
        length as usize
    };
    if dwords * 4 != object.len() {
        return Err(format!(
            "DOE Length says {} bytes, the object has {}",
            dwords * 4,
            object.len()
        ));
    }
    Ok((kind, message))
}
