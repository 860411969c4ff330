//! The certificate chain a responder serves with `CERTIFICATE` (DSP0274 1.2,
//! "Certificate chain format"):
//!
//! ```text
//! Length (2, the whole chain) | Reserved (2) | RootHash (H) | Certificates (DER, root first)
//! ```
//!
//! `DIGESTS` carries the hash of these bytes, all of them; the session transcript carries it
//! too. This module only frames the chain: what the certificates say is the verifier's
//! business.

use super::cursor::{Reader, Writer};
use super::{Field, SpdmError};

/// Bytes before `RootHash`.
pub const CHAIN_HEADER_SIZE: usize = 4;

/// A framed certificate chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct CertChain<'a> {
    /// `RootHash`: the hash of the root certificate (the first one).
    pub root_hash: &'a [u8],
    /// The DER certificates, root first, leaf last.
    pub certificates: &'a [u8],
}

impl<'a> CertChain<'a> {
    /// Checks `Length` against the bytes and that at least one certificate follows the root
    /// hash (`hash_len` bytes, the negotiated hash).
    pub fn parse(chain: &'a [u8], hash_len: usize) -> Result<Self, SpdmError> {
        let mut r = Reader::new(chain);
        let length = usize::from(r.u16()?);
        r.u16()?;
        if length != chain.len() {
            return Err(SpdmError::Inconsistent(Field::ChainLength));
        }
        let root_hash = r.bytes(hash_len)?;
        let certificates = r.bytes(r.remaining())?;
        if certificates.is_empty() {
            return Err(SpdmError::InvalidField(Field::ChainCertificates));
        }
        Ok(Self {
            root_hash,
            certificates,
        })
    }

    /// The first certificate (the root), as its DER `SEQUENCE` TLV.
    pub fn root_certificate(&self) -> Result<&'a [u8], SpdmError> {
        let len = der_sequence_len(self.certificates)?;
        self.certificates
            .get(..len)
            .ok_or(SpdmError::InvalidField(Field::ChainCertificates))
    }

    /// Writes a chain of `certificates` with `root_hash` into `out`; returns its length.
    pub fn encode(
        out: &mut [u8],
        root_hash: &[u8],
        certificates: &[u8],
    ) -> Result<usize, SpdmError> {
        let len = CHAIN_HEADER_SIZE
            .checked_add(root_hash.len())
            .and_then(|n| n.checked_add(certificates.len()))
            .ok_or(SpdmError::BadLength)?;
        let mut w = Writer::new(out);
        w.len16(len)?;
        w.u16(0)?;
        w.bytes(root_hash)?;
        w.bytes(certificates)?;
        Ok(w.len())
    }
}

/// The length (tag and length octets included) of the DER `SEQUENCE` at the start of `der`:
/// definite length, short form or long form of at most 4 octets (ITU-T X.690 §8.1.3).
pub fn der_sequence_len(der: &[u8]) -> Result<usize, SpdmError> {
    let bad = SpdmError::InvalidField(Field::ChainCertificates);
    let mut r = Reader::new(der);
    if r.u8().map_err(|_| bad)? != 0x30 {
        return Err(bad);
    }
    let first = r.u8().map_err(|_| bad)?;
    let content = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7F);
        if octets == 0 || octets > 4 {
            return Err(bad);
        }
        // At most 4 octets: the value fits a u32.
        let value = r
            .bytes(octets)
            .map_err(|_| bad)?
            .iter()
            .fold(0u32, |acc, &b| acc.wrapping_shl(8) | u32::from(b));
        usize::try_from(value).map_err(|_| bad)?
    };
    let total = r.consumed().checked_add(content).ok_or(bad)?;
    if total > der.len() {
        return Err(bad);
    }
    Ok(total)
}
