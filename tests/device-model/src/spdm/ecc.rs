//! The responder's P-384 operations: signing, its ephemeral public point, ECDH.
//!
//! In one place so that a build with feature `crypto-memo` (the dispatcher fuzzer's: it builds
//! a fresh responder with the same identity key and a seeded generator every execution, so the
//! same signatures, points and shared secrets come back again and again, at about a million
//! instructions each) can remember each result for the rest of the process. Each is a
//! deterministic function of what it is keyed by: ECDSA signing (RFC 6979 nonces, no added
//! randomness; `Signer::sign` is `sign_prehash` of the message's SHA-384) of the key and the
//! digest, the public point of the scalar, the shared secret of the scalar and the peer's
//! point. So a remembered result is the computed one, and nothing that uses the model checks
//! less.

use p384::ecdsa::signature::hazmat::PrehashSigner;
use p384::ecdsa::{Signature, SigningKey};
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::{PublicKey, SecretKey};
use sha2::{Digest as _, Sha384};

/// `key`'s signature over `message`, as `r ‖ s` (all zero in the one case `sign_prehash`
/// refuses, a digest shorter than half the field, which a SHA-384 digest never is).
pub(super) fn sign(key: &SecretKey, message: &[u8]) -> [u8; 96] {
    let digest = Sha384::digest(message);
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(&key.to_bytes());
        put(&digest);
    };
    cached(Op::Sign, inputs, || {
        let key = SigningKey::from(key.to_nonzero_scalar());
        let sig: Result<Signature, _> = key.sign_prehash(&digest);
        sig.map_or([0; 96], |sig| sig.to_bytes().into())
    })
}

/// `secret`'s public point, uncompressed SEC1 (`04 ‖ x ‖ y`; a secret key's point is never
/// the identity, the one point with a shorter encoding).
pub(super) fn public_point(secret: &SecretKey) -> [u8; 97] {
    let inputs = |put: &mut dyn FnMut(&[u8])| put(&secret.to_bytes());
    cached(Op::PublicPoint, inputs, || {
        let point = secret.public_key().to_sec1_point(false);
        point.as_bytes().try_into().unwrap_or([0; 97])
    })
}

/// The ECDH shared secret (x coordinate) of `secret` and `peer`.
pub(super) fn shared_secret(secret: &SecretKey, peer: &PublicKey) -> [u8; 48] {
    let inputs = |put: &mut dyn FnMut(&[u8])| {
        put(&secret.to_bytes());
        put(peer.to_sec1_point(false).as_bytes());
    };
    cached(Op::SharedSecret, inputs, || {
        (*secret.diffie_hellman(peer).raw_secret_bytes()).into()
    })
}

/// Which operation a result is of (part of the memo's key: the same bytes mean different
/// things to each).
#[derive(Clone, Copy)]
enum Op {
    Sign,
    PublicPoint,
    SharedSecret,
}

/// Every result: from Miri's precomputed table ([`table`], under Miri), else remembered
/// (`crypto-memo`) or computed; with `p384-record`, recorded for the table's check.
fn cached<const N: usize>(
    op: Op,
    inputs: impl Fn(&mut dyn FnMut(&[u8])),
    compute: impl FnOnce() -> [u8; N],
) -> [u8; N] {
    #[cfg(any(miri, feature = "p384-record"))]
    {
        let key = table::encode(op as u8, &inputs);
        let value =
            table::lookup::<N>(&key).unwrap_or_else(|| memo::cached(op as u8, &inputs, compute));
        #[cfg(feature = "p384-record")]
        record::push(&key, &value);
        value
    }
    #[cfg(not(any(miri, feature = "p384-record")))]
    memo::cached(op as u8, inputs, compute)
}

// The memo, the key, Miri's table and the recorder are tsm-core's requester's, the same source
// (this crate cannot depend on tsm-core, whose tests depend on it); the table's data is the
// responder's own.
#[cfg(any(miri, feature = "p384-record", feature = "crypto-memo"))]
#[path = "../../../../firmware/spdm/src/ecc/key.rs"]
mod key;
#[path = "../../../../firmware/spdm/src/ecc/memo.rs"]
mod memo;
/// Miri's precomputed responder results, one `key value` line each, in hex ([`table`]).
#[cfg(any(miri, feature = "p384-record"))]
pub const TABLE: &str = include_str!("ecc/table.txt");
#[cfg(feature = "p384-record")]
#[path = "../../../../firmware/spdm/src/ecc/record.rs"]
pub mod record;
#[cfg(any(miri, feature = "p384-record"))]
#[path = "../../../../firmware/spdm/src/ecc/table.rs"]
pub mod table;

#[cfg(test)]
mod tests {
    use p384::ecdsa::signature::{Signer, Verifier};
    use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

    use super::*;

    #[test]
    fn sign_is_the_signers_signature_for_each_key_and_message() {
        let a = SecretKey::from_slice(&[3; 48]).unwrap();
        let b = SecretKey::from_slice(&[4; 48]).unwrap();
        for _ in 0..2 {
            for secret in [&a, &b] {
                let key = SigningKey::from(secret.to_nonzero_scalar());
                for message in [&b"one"[..], b"two"] {
                    let expected: Signature = key.sign(message);
                    let got = sign(secret, message);
                    assert_eq!(got, <[u8; 96]>::from(expected.to_bytes()));
                    let sig = Signature::from_slice(&got).unwrap();
                    assert!(VerifyingKey::from(&key).verify(message, &sig).is_ok());
                }
            }
        }
        assert_ne!(sign(&a, b"one"), sign(&b, b"one"));
        assert_ne!(sign(&a, b"one"), sign(&a, b"two"));
    }

    #[test]
    fn points_and_shared_secrets_are_p384s() {
        let a = SecretKey::from_slice(&[5; 48]).unwrap();
        let b = SecretKey::from_slice(&[6; 48]).unwrap();
        for _ in 0..2 {
            assert_eq!(
                &public_point(&a)[..],
                a.public_key().to_sec1_point(false).as_bytes()
            );
            let ab = shared_secret(&a, &b.public_key());
            assert_eq!(
                &ab[..],
                &a.diffie_hellman(&b.public_key()).raw_secret_bytes()[..]
            );
            assert_eq!(ab, shared_secret(&b, &a.public_key()));
            assert_ne!(ab, shared_secret(&a, &a.public_key()));
        }
    }
}
