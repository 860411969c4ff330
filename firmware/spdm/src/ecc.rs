//! The requester's P-384 operations: ECDSA verification (the chain's certificates, the
//! `MEASUREMENTS` and `KEY_EXCHANGE_RSP` signatures), the ephemeral key's public point and the
//! ECDH shared secret.
//!
//! They are in one place so that a build with feature `crypto-memo` (the dispatcher fuzzer's,
//! never a firmware image) can remember each result for the rest of the process. Each is a
//! deterministic function of the inputs the memo is keyed by, so a remembered result is the
//! one the computation would give and the fuzzer checks exactly what it checked without it:
//! ECDSA verification depends on the key, the message only through its SHA-384 (what
//! [`verify`] hashes and keys by; `Verifier::verify` is `verify_prehash` of that digest) and
//! the signature; the public point on the secret scalar; the shared secret on the scalar and
//! the peer's point. A fuzzer's connects repeat the same chain, keys and (with the simulated
//! platform's deterministic entropy) the same ephemeral scalars over and over, and each of
//! these costs about a million instructions.
//!
//! The arithmetic itself is crate tsm-spdm-ecc's, compiled for speed while this crate is
//! compiled for size.

use p384::ecdsa::{Signature, VerifyingKey};
use p384::{PublicKey, SecretKey};
use sha2::{Digest, Sha384};
pub use tsm_spdm_ecc::{POINT_LEN, SHARED_LEN, decode_point, encode_point};

/// Whether `sig` is `key`'s ECDSA-P384-SHA384 signature over `message`.
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
    let digest = Sha384::digest(message);
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(&encode_point(key.as_affine()));
        put(&digest);
        put(&sig.to_bytes());
    };
    cached(Op::Verify, inputs, || {
        [u8::from(tsm_spdm_ecc::verify_prehash(key, &digest, sig))]
    }) == [1]
}

/// `secret`'s public point, uncompressed SEC1 (always [`POINT_LEN`] bytes: a secret key's
/// point is never the identity, the one point with a shorter encoding).
pub fn public_point(secret: &SecretKey) -> [u8; POINT_LEN] {
    let inputs = |put: &mut dyn FnMut(&[u8])| put(&secret.to_bytes());
    cached(Op::PublicPoint, inputs, || {
        tsm_spdm_ecc::public_point(secret)
    })
}

/// The ECDH shared secret of `secret` and `peer` (the x coordinate of their product).
pub fn shared_secret(secret: &SecretKey, peer: &PublicKey) -> [u8; SHARED_LEN] {
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(&secret.to_bytes());
        put(&encode_point(peer.as_affine()));
    };
    cached(Op::SharedSecret, inputs, || {
        tsm_spdm_ecc::shared_secret(secret, peer)
    })
}

/// Which operation a result is of (part of the memo's key: the same bytes mean different
/// things to each).
#[derive(Clone, Copy)]
enum Op {
    Verify,
    PublicPoint,
    SharedSecret,
}

/// Every result: from Miri's precomputed table ([`table`], under Miri), else remembered
/// (`crypto-memo`) or computed; test builds record each for the table's check.
fn cached<const N: usize>(
    op: Op,
    inputs: impl Fn(&mut dyn FnMut(&[u8])),
    compute: impl FnOnce() -> [u8; N],
) -> [u8; N] {
    #[cfg(any(test, miri))]
    {
        let key = table::encode(op as u8, &inputs);
        let value =
            table::lookup::<N>(&key).unwrap_or_else(|| memo::cached(op as u8, &inputs, compute));
        #[cfg(test)]
        record::push(&key, &value);
        value
    }
    #[cfg(not(any(test, miri)))]
    memo::cached(op as u8, inputs, compute)
}

#[cfg(any(test, miri, feature = "crypto-memo"))]
mod key;
mod memo;
/// Miri's precomputed requester results, one `key value` line each, in hex ([`table`]).
#[cfg(any(test, miri))]
pub const TABLE: &str = include_str!("ecc/table.txt");
#[cfg(test)]
pub(crate) mod record;
#[cfg(any(test, miri))]
pub(crate) mod table;

#[cfg(test)]
mod tests;
