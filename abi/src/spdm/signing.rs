//! The byte strings SPDM 1.2's cryptography is computed over: the signed message of a
//! signature (DSP0274 1.2 §"Signature generation": a 100-byte prefix naming version and
//! purpose, then the transcript hash) and the HKDF info strings of the key schedule
//! (§"Key schedule": `bin_str`).

use super::SpdmError;
use super::cursor::Writer;

/// DSP0274 1.2 `spdm_prefix`, 4 × "dmtf-spdm-v1.2.*".
const PREFIX: &[u8; 16] = b"dmtf-spdm-v1.2.*";
/// `spdm_context` and its zero padding fill this many bytes after the prefix.
const CONTEXT_FIELD: usize = 36;
/// `combined_spdm_prefix`: 4 × 16 bytes of prefix, then the padded context.
pub const SIGNING_PREFIX_SIZE: usize = 64 + CONTEXT_FIELD;

/// What a signature is for: its `spdm_context` string (DSP0274 1.2 Table "SPDM signing
/// context").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum SigningContext {
    /// A responder's `MEASUREMENTS` signature.
    Measurements,
    /// A responder's `KEY_EXCHANGE_RSP` signature.
    KeyExchangeRsp,
}

impl SigningContext {
    fn text(self) -> &'static [u8] {
        match self {
            Self::Measurements => b"responder-measurements signing",
            Self::KeyExchangeRsp => b"responder-key_exchange_rsp signing",
        }
    }
}

/// The message a 1.2 signature signs: `combined_spdm_prefix` ‖ `hash`, where
/// `combined_spdm_prefix` = `spdm_prefix` ‖ zero padding ‖ `spdm_context` (the padding first,
/// so the context ends the 100 bytes). An ECDSA signer hashes this message with the negotiated
/// hash, as for any message. Returns the length written into `out`.
pub fn signed_message(
    out: &mut [u8],
    context: SigningContext,
    hash: &[u8],
) -> Result<usize, SpdmError> {
    let text = context.text();
    let mut w = Writer::new(out);
    for _ in 0..4 {
        w.bytes(PREFIX)?;
    }
    w.zeros(CONTEXT_FIELD.saturating_sub(text.len()))?;
    w.bytes(text)?;
    w.bytes(hash)?;
    Ok(w.len())
}

/// Key schedule labels (DSP0274 1.2 Table "bin_str labels").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Label {
    /// `bin_str0`: salt for the master secret.
    Derived,
    /// `bin_str1`: requester handshake secret (context TH1).
    ReqHandshake,
    /// `bin_str2`: responder handshake secret (context TH1).
    RspHandshake,
    /// `bin_str3`: requester data secret (context TH2).
    ReqData,
    /// `bin_str4`: responder data secret (context TH2).
    RspData,
    /// `bin_str5`: an AEAD key.
    Key,
    /// `bin_str6`: an AEAD IV.
    Iv,
    /// `bin_str7`: a finished key.
    Finished,
    /// `bin_str8`: the export master secret (context TH2).
    ExportMaster,
    /// `bin_str9`: the next data secret of a key update.
    TrafficUpdate,
}

impl Label {
    fn text(self) -> &'static [u8] {
        match self {
            Self::Derived => b"derived",
            Self::ReqHandshake => b"req hs data",
            Self::RspHandshake => b"rsp hs data",
            Self::ReqData => b"req app data",
            Self::RspData => b"rsp app data",
            Self::Key => b"key",
            Self::Iv => b"iv",
            Self::Finished => b"finished",
            Self::ExportMaster => b"exp master",
            Self::TrafficUpdate => b"traffic upd",
        }
    }
}

/// The longest `bin_str`: length, "spdm1.2 ", the longest label, a 64-byte transcript hash.
pub const MAX_BIN_STR: usize = 2 + 8 + 12 + 64;

/// `bin_str` = `Length` (u16, little-endian: the bytes HKDF-Expand is asked for) ‖ "spdm1.2 "
/// ‖ label ‖ context (a transcript hash, or nothing). Returns the length written into `out`.
pub fn bin_str(
    out: &mut [u8; MAX_BIN_STR],
    length: u16,
    label: Label,
    context: &[u8],
) -> Result<usize, SpdmError> {
    let mut w = Writer::new(out);
    w.u16(length)?;
    w.bytes(b"spdm1.2 ")?;
    w.bytes(label.text())?;
    w.bytes(context)?;
    Ok(w.len())
}
