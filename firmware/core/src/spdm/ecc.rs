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

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::{PublicKey, SecretKey};
use sha2::{Digest, Sha384};

/// Size of an uncompressed SEC1 point (`04 ‖ x ‖ y`).
pub const POINT_LEN: usize = 97;
/// Size of the shared secret (the x coordinate).
pub const SHARED_LEN: usize = 48;

/// Whether `sig` is `key`'s ECDSA-P384-SHA384 signature over `message`.
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
    let digest = Sha384::digest(message);
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(key.to_sec1_point(false).as_bytes());
        put(&digest);
        put(&sig.to_bytes());
    };
    cached(Op::Verify, inputs, || {
        [u8::from(key.verify_prehash(&digest, sig).is_ok())]
    }) == [1]
}

/// `secret`'s public point, uncompressed SEC1 (always [`POINT_LEN`] bytes: a secret key's
/// point is never the identity, the one point with a shorter encoding).
pub fn public_point(secret: &SecretKey) -> [u8; POINT_LEN] {
    let inputs = |put: &mut dyn FnMut(&[u8])| put(&secret.to_bytes());
    cached(Op::PublicPoint, inputs, || {
        let point = secret.public_key().to_sec1_point(false);
        <[u8; POINT_LEN]>::try_from(point.as_bytes()).unwrap_or([0; POINT_LEN])
    })
}

/// The ECDH shared secret of `secret` and `peer` (the x coordinate of their product).
pub fn shared_secret(secret: &SecretKey, peer: &PublicKey) -> [u8; SHARED_LEN] {
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(&secret.to_bytes());
        put(peer.to_sec1_point(false).as_bytes());
    };
    cached(Op::SharedSecret, inputs, || {
        let shared = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
        <[u8; SHARED_LEN]>::from(*shared.raw_secret_bytes())
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
        let value = table::lookup::<N>(&key).unwrap_or_else(|| memo::cached(op, &inputs, compute));
        #[cfg(test)]
        table::record::push(&key, &value);
        value
    }
    #[cfg(not(any(test, miri)))]
    memo::cached(op, inputs, compute)
}

/// Without `crypto-memo`: every result computed, the inputs never encoded.
#[cfg(not(feature = "crypto-memo"))]
mod memo {
    use super::Op;

    pub fn cached<const N: usize>(
        _op: Op,
        _inputs: impl FnOnce(&mut dyn FnMut(&[u8])),
        compute: impl FnOnce() -> [u8; N],
    ) -> [u8; N] {
        compute()
    }
}

/// With `crypto-memo`: results remembered per process, keyed by the operation and every input
/// byte. Bounded: when full it starts again empty (a fuzzer may present any number of keys).
#[cfg(feature = "crypto-memo")]
mod memo {
    extern crate std;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::vec::Vec;

    use super::Op;

    const MAX_ENTRIES: usize = 1 << 16;

    static MEMO: LazyLock<Mutex<HashMap<Vec<u8>, Vec<u8>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    pub fn cached<const N: usize>(
        op: Op,
        inputs: impl FnOnce(&mut dyn FnMut(&[u8])),
        compute: impl FnOnce() -> [u8; N],
    ) -> [u8; N] {
        let mut key = Vec::with_capacity(256);
        key.push(op as u8);
        // Length-prefixed, so two splits of the same bytes are different keys.
        inputs(&mut |input| {
            key.extend_from_slice(&(input.len() as u64).to_le_bytes());
            key.extend_from_slice(input);
        });
        let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = memo
            .get(&key)
            .and_then(|v| <[u8; N]>::try_from(v.as_slice()).ok())
        {
            return hit;
        }
        let value = compute();
        if memo.len() >= MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(key, value.to_vec());
        value
    }
}

#[cfg(any(test, miri))]
pub(crate) mod table;

#[cfg(test)]
mod tests;
