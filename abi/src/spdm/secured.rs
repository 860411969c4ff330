//! Secured messages on PCI DOE (DMTF DSP0277 1.x §"Secured message format", with the PCI DOE
//! transport's choices: no sequence number on the wire, the SPDM message as the application
//! data).
//!
//! ```text
//! record:     SessionID (4) | Length (2) | ciphertext (Length − 16) | MAC (16)
//! plaintext:  ApplicationDataLength (2) | application data | random padding
//! AAD:        SessionID | Length                 (the 6 bytes before the ciphertext)
//! nonce:      IV XOR sequence number             (little-endian u64 in bytes 0..8, DSP0277
//!                                                 with SPDM 1.2: the encoding before 1.4's
//!                                                 endianness negotiation)
//! ```
//!
//! Each direction of a session has its own key, IV and sequence number; the sequence number
//! starts at 0 for each new key (handshake keys, data keys, every key update) and counts
//! records. This module frames and unframes; sealing and opening are [`super::crypto`]'s.

use super::cursor::{Reader, Writer};
use super::{Field, SpdmError};

/// `SessionID` and `Length`: the record header, which is also the AEAD's additional data.
pub const RECORD_HEADER_SIZE: usize = 6;
/// The AEAD tag (AES-GCM and ChaCha20-Poly1305 both use 16 bytes).
pub const MAC_SIZE: usize = 16;
/// `ApplicationDataLength`, the first field of the plaintext.
pub const APP_LENGTH_SIZE: usize = 2;
/// Every byte a record adds around its application data (no random padding).
pub const RECORD_OVERHEAD: usize = RECORD_HEADER_SIZE + APP_LENGTH_SIZE + MAC_SIZE;
/// AES-GCM's 96-bit IV.
pub const IV_SIZE: usize = 12;

/// Where the parts of a record are, as offsets into the record's bytes (so a caller can
/// decrypt the ciphertext in place).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RecordLayout {
    /// `SessionID`.
    pub session_id: u32,
    /// Ciphertext bytes (from [`RECORD_HEADER_SIZE`]).
    pub ciphertext_len: usize,
    /// The record's length (header, ciphertext, MAC), without any DOE padding after it.
    pub len: usize,
}

impl RecordLayout {
    /// Frames a record: the 6-byte header is read, `Length` must cover at least the MAC and
    /// `ApplicationDataLength`, and at most 3 zero bytes of DOE padding may follow the record.
    pub fn parse(bytes: &[u8]) -> Result<Self, SpdmError> {
        let mut r = Reader::new(bytes);
        let session_id = r.u32()?;
        let length = usize::from(r.u16()?);
        let ciphertext_len = length
            .checked_sub(MAC_SIZE)
            .filter(|&n| n >= APP_LENGTH_SIZE)
            .ok_or(SpdmError::InvalidField(Field::RecordLength))?;
        r.bytes(length)?;
        let len = r.finish_doe()?;
        Ok(Self {
            session_id,
            ciphertext_len,
            len,
        })
    }

    /// The header bytes (the AEAD's additional data) of the record `bytes`.
    pub fn header<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        bytes.get(..RECORD_HEADER_SIZE)
    }

    /// Splits the record `bytes` into header, ciphertext and MAC.
    pub fn split_mut<'b>(&self, bytes: &'b mut [u8]) -> Option<(&'b [u8], &'b mut [u8], &'b [u8])> {
        let (header, rest) = bytes.split_at_mut_checked(RECORD_HEADER_SIZE)?;
        let (ciphertext, rest) = rest.split_at_mut_checked(self.ciphertext_len)?;
        let mac = rest.get(..MAC_SIZE)?;
        Some((header, ciphertext, mac))
    }
}

/// Writes the record header for `plaintext_len` bytes of plaintext (`ApplicationDataLength`,
/// application data, padding) into `out`.
pub fn encode_header(
    out: &mut [u8],
    session_id: u32,
    plaintext_len: usize,
) -> Result<(), SpdmError> {
    let mut w = Writer::new(out);
    w.u32(session_id)?;
    w.len16(
        plaintext_len
            .checked_add(MAC_SIZE)
            .ok_or(SpdmError::BadLength)?,
    )
}

/// Writes the plaintext for `app` (no random padding) into `out`; returns its length.
pub fn encode_plaintext(out: &mut [u8], app: &[u8]) -> Result<usize, SpdmError> {
    let mut w = Writer::new(out);
    w.len16(app.len())?;
    w.bytes(app)?;
    Ok(w.len())
}

/// The application data inside a decrypted plaintext (random padding after it is ignored, as
/// DSP0277 says it carries no meaning).
pub fn app_data(plaintext: &[u8]) -> Result<&[u8], SpdmError> {
    let mut r = Reader::new(plaintext);
    let len = usize::from(r.u16()?);
    r.bytes(len)
        .map_err(|_| SpdmError::Inconsistent(Field::AppDataLength))
}

/// The per-record nonce: `iv` with the sequence number XORed, little-endian, into its first
/// 8 bytes.
pub fn nonce(iv: &[u8; IV_SIZE], sequence: u64) -> [u8; IV_SIZE] {
    let mut n = *iv;
    for (byte, s) in n.iter_mut().zip(sequence.to_le_bytes()) {
        *byte ^= s;
    }
    n
}
