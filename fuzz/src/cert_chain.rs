//! `cert_chain`: `tsm_core::spdm::cert::verify_chain` on arbitrary SPDM certificate chain
//! buffers.
//!
//! Input: one mode byte, then the chain buffer. Mode bit 0 rewrites the buffer's `Length` to its
//! size before verifying, so mutations of the certificates reach the DER and the signatures
//! instead of stopping at the header check; bit 1 also verifies with the chain pinned
//! (`TrustAnchor::ChainDigest`, `TrustAnchor::RootHash`).
//!
//! Checks: nothing panics; a chain that verifies states its own size in `Length`, its
//! `RootHash` is `ChainInfo::root_hash`, its digest is the SHA-384 of the whole buffer, it has
//! 2..=MAX_CERTS certificates, and pinning it by its digest or its root verifies it again with
//! the same result; a pin can only narrow: pinned to another digest it is refused.

use sha2::{Digest, Sha384};
use tsm_core::spdm::cert::{CertError, HASH_LEN, HEADER_LEN, MAX_CERTS, TrustAnchor, verify_chain};

use crate::input::Input;

/// Mode bits (the first input byte).
pub mod mode {
    /// Rewrite `Length` to the buffer's size.
    pub const FIX_LENGTH: u8 = 1 << 0;
    /// Verify again with the chain pinned.
    pub const PINNED: u8 = 1 << 1;
}

/// Runs every check on `data`.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let mut chain = input.rest().to_vec();
    if mode & mode::FIX_LENGTH != 0 && chain.len() >= 2 {
        if let Ok(len) = u16::try_from(chain.len()) {
            chain[..2].copy_from_slice(&len.to_le_bytes());
        }
    }
    let result = verify_chain(&chain, &TrustAnchor::AnyRoot);
    let Ok(info) = result else {
        return;
    };
    assert_eq!(
        usize::from(u16::from_le_bytes([chain[0], chain[1]])),
        chain.len()
    );
    assert_eq!(&chain[4..HEADER_LEN], &info.root_hash[..]);
    assert_eq!(info.digest.as_slice(), Sha384::digest(&chain).as_slice());
    assert!((2..=MAX_CERTS).contains(&usize::from(info.certificates)));
    assert_eq!(info.leaf_key_sec1()[0], 0x04);
    if mode & mode::PINNED != 0 {
        for trust in [
            TrustAnchor::ChainDigest(info.digest),
            TrustAnchor::RootHash(info.root_hash),
        ] {
            assert_eq!(verify_chain(&chain, &trust), Ok(info), "{trust:?}");
        }
        let mut other = info.digest;
        other[HASH_LEN - 1] ^= 1;
        assert_eq!(
            verify_chain(&chain, &TrustAnchor::ChainDigest(other)),
            Err(CertError::DigestMismatch)
        );
    }
}

/// Seeds: every identity of the device model (good and malformed) as it is, with `Length`
/// fixing on, and the device's chain pinned. Under Miri (the replay test) only the chains
/// refused before their signatures: one P-384 verification takes minutes interpreted, and the
/// verifier's DER walking, which Miri is there for, is the same; `spdm::cert`'s unit tests say
/// the same of theirs.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use tsm_device_model::identity::{ALL, DEVICE, generate::Variant};
    let reaches_signatures = |v: Variant| {
        matches!(
            v,
            Variant::Device | Variant::OtherDevice | Variant::BadSignature
        )
    };
    let mut out: Vec<(String, Vec<u8>)> = ALL
        .iter()
        .filter(|id| !(cfg!(miri) && reaches_signatures(id.variant)))
        .map(|id| {
            let mut bytes = vec![mode::FIX_LENGTH];
            bytes.extend_from_slice(id.chain);
            (id.variant.file_stem().to_string(), bytes)
        })
        .collect();
    if !cfg!(miri) {
        let mut pinned = vec![mode::FIX_LENGTH | mode::PINNED];
        pinned.extend_from_slice(DEVICE.chain);
        out.push(("device_pinned".into(), pinned));
    }
    out
}
