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
use p384::elliptic_curve::point::{AffineCoordinates, DecompressPoint};
use p384::elliptic_curve::subtle::Choice;
use p384::{AffinePoint, FieldBytes, PublicKey, SecretKey};

/// Size of an uncompressed SEC1 point (`04 ‖ x ‖ y`).
pub const POINT_LEN: usize = 97;
/// Size of the shared secret (the x coordinate).
pub const SHARED_LEN: usize = 48;
/// Size of a coordinate.
const COORD_LEN: usize = 48;
/// The SEC1 tags of an uncompressed point and of a compressed one with y even, odd.
const UNCOMPRESSED: u8 = 0x04;
const COMPRESSED_EVEN: u8 = 0x02;
const COMPRESSED_ODD: u8 = 0x03;

// The SEC1 encoding is written and read here, not through sec1's `EncodedPoint`: its accessors
// `expect` on the tag byte, and that keeps sec1's and der's error `Debug` code, with the
// `core::fmt` machinery under it, in the firmware image (~6 KiB of x86_64's `.text`; the
// panic handler never formats, but the linker cannot know).

/// `point` as an uncompressed SEC1 point (`04 ‖ x ‖ y`). The identity has no such encoding:
/// callers hold public keys, which never are.
pub fn encode_point(point: &AffinePoint) -> [u8; POINT_LEN] {
    let mut out = [0u8; POINT_LEN];
    let bytes = [UNCOMPRESSED].into_iter().chain(point.x()).chain(point.y());
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b;
    }
    out
}

/// The public key a SEC1 point encodes: uncompressed (`04 ‖ x ‖ y`) or compressed (`02 ‖ x`,
/// `03 ‖ x`, y even or odd), its coordinates field elements, on the curve. The checks of
/// `PublicKey::from_sec1_bytes`, whose other forms (the identity, sec1's "compact" `05 ‖ x`)
/// are no public key, or no SEC1 encoding, anyway.
#[inline]
pub fn decode_point(bytes: &[u8]) -> Option<PublicKey> {
    let (&tag, coords) = bytes.split_first()?;
    let (x, y) = coords.split_at_checked(COORD_LEN)?;
    let x = FieldBytes::try_from(x).ok()?;
    let point = match (tag, y.len()) {
        (UNCOMPRESSED, COORD_LEN) => {
            let y = FieldBytes::try_from(y).ok()?;
            AffinePoint::from_coordinates(&x, &y)
        }
        (COMPRESSED_EVEN | COMPRESSED_ODD, 0) => AffinePoint::decompress(&x, Choice::from(tag & 1)),
        _ => return None,
    };
    PublicKey::from_affine(Option::<AffinePoint>::from(point)?).ok()
}

/// Whether `sig` is `key`'s ECDSA-P384 signature over the SHA-384 digest `digest`.
pub fn verify_prehash(key: &VerifyingKey, digest: &[u8], sig: &Signature) -> bool {
    key.verify_prehash(digest, sig).is_ok()
}

/// `secret`'s public point, uncompressed SEC1 (always [`POINT_LEN`] bytes: a secret key's
/// point is never the identity, the one point with a shorter encoding).
pub fn public_point(secret: &SecretKey) -> [u8; POINT_LEN] {
    encode_point(secret.public_key().as_affine())
}

/// The ECDH shared secret of `secret` and `peer` (the x coordinate of their product).
pub fn shared_secret(secret: &SecretKey, peer: &PublicKey) -> [u8; SHARED_LEN] {
    let shared = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    <[u8; SHARED_LEN]>::from(*shared.raw_secret_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (PublicKey, [u8; POINT_LEN]) {
        let secret = SecretKey::from_slice(&[7; 48]).unwrap();
        (secret.public_key(), public_point(&secret))
    }

    #[test]
    fn an_uncompressed_point_decodes_to_its_key() {
        let (public, point) = key();
        assert_eq!(point[0], UNCOMPRESSED);
        assert_eq!(decode_point(&point), Some(public));
    }

    #[test]
    fn a_compressed_point_decodes_to_the_same_key() {
        let (public, point) = key();
        let mut compressed = [0u8; 1 + COORD_LEN];
        compressed[0] = COMPRESSED_EVEN | (point[POINT_LEN - 1] & 1);
        compressed[1..].copy_from_slice(&point[1..=COORD_LEN]);
        assert_eq!(decode_point(&compressed), Some(public));
        // The other y is the negated point: a valid key, not this one.
        compressed[0] ^= 1;
        assert_ne!(decode_point(&compressed), Some(public));
    }

    #[test]
    fn other_forms_lengths_and_points_off_the_curve_are_refused() {
        let (_, point) = key();
        assert_eq!(decode_point(&[]), None);
        assert_eq!(decode_point(&point[..POINT_LEN - 1]), None);
        assert_eq!(decode_point(&point[..1 + COORD_LEN]), None);
        for tag in [0x00, 0x01, 0x05, 0x06] {
            let mut p = point;
            p[0] = tag;
            assert_eq!(decode_point(&p), None, "tag {tag:#x}");
        }
        let mut off = point;
        off[POINT_LEN - 1] ^= 1;
        assert_eq!(decode_point(&off), None);
        // x = 2^384 - 1, above the field prime: no field element.
        let mut big = point;
        big[1..=COORD_LEN].fill(0xFF);
        assert_eq!(decode_point(&big), None);
    }
}
