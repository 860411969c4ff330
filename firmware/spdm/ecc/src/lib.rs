//! The P-384 arithmetic of the SPDM requester (tsm-spdm's `ecc`, which adds the memo and Miri's
//! table around it): ECDSA verification of a SHA-384 digest, an ephemeral key's public point
//! and the ECDH shared secret.
//!
//! A crate of its own so that the release profile compiles tsm-spdm for size and this for
//! speed: generic code takes the opt-level of the crate that instantiates it, and these three
//! functions instantiate the curve's point arithmetic, nearly all of PDEV_CONNECT's
//! instructions (docs/benchmarks.md, "Image `.text`: SPDM in its own crate").
#![no_std]
#![forbid(unsafe_code)]

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::{PublicKey, SecretKey};

/// Size of an uncompressed SEC1 point (`04 ‖ x ‖ y`).
pub const POINT_LEN: usize = 97;
/// Size of the shared secret (the x coordinate).
pub const SHARED_LEN: usize = 48;

/// Whether `sig` is `key`'s ECDSA-P384 signature over the SHA-384 digest `digest`.
pub fn verify_prehash(key: &VerifyingKey, digest: &[u8], sig: &Signature) -> bool {
    key.verify_prehash(digest, sig).is_ok()
}

/// `secret`'s public point, uncompressed SEC1 (always [`POINT_LEN`] bytes: a secret key's
/// point is never the identity, the one point with a shorter encoding).
pub fn public_point(secret: &SecretKey) -> [u8; POINT_LEN] {
    let point = secret.public_key().to_sec1_point(false);
    <[u8; POINT_LEN]>::try_from(point.as_bytes()).unwrap_or([0; POINT_LEN])
}

/// The ECDH shared secret of `secret` and `peer` (the x coordinate of their product).
pub fn shared_secret(secret: &SecretKey, peer: &PublicKey) -> [u8; SHARED_LEN] {
    let shared = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    <[u8; SHARED_LEN]>::from(*shared.raw_secret_bytes())
}
