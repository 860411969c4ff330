//! The operations give RustCrypto's results, again on a repeat (a memo hit with
//! `crypto-memo`), and a result for some inputs is never the result for others: each input is
//! changed in turn after the original was computed (and, with the memo, remembered).

use p384::SecretKey;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::elliptic_curve::sec1::ToSec1Point;

use super::{public_point, shared_secret, verify};

fn signing_key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 48]).unwrap()
}

#[test]
fn verify_agrees_with_the_verifier_for_every_changed_input() {
    let key = signing_key(7);
    let vk = VerifyingKey::from(&key);
    let message = b"transcript hash and context";
    let sig: Signature = key.sign(message);
    for _ in 0..2 {
        assert!(verify(&vk, message, &sig));
    }
    let mut other_message = *message;
    other_message[0] ^= 1;
    assert!(!verify(&vk, &other_message, &sig));
    let other_key = VerifyingKey::from(&signing_key(8));
    assert!(!verify(&other_key, message, &sig));
    let other_sig: Signature = key.sign(&other_message);
    assert!(!verify(&vk, message, &other_sig));
    // Each answer is the verifier's.
    for (k, m, s) in [
        (&vk, &message[..], &sig),
        (&vk, &other_message[..], &sig),
        (&other_key, &message[..], &sig),
        (&vk, &message[..], &other_sig),
        (&vk, &other_message[..], &other_sig),
    ] {
        assert_eq!(verify(k, m, s), k.verify(m, s).is_ok());
    }
}

#[test]
fn a_refused_signature_stays_refused_and_a_valid_one_valid() {
    let key = signing_key(9);
    let vk = VerifyingKey::from(&key);
    let sig: Signature = key.sign(b"m");
    assert!(!verify(&vk, b"n", &sig));
    assert!(verify(&vk, b"m", &sig));
    assert!(!verify(&vk, b"n", &sig));
}

#[test]
fn public_point_is_the_secret_keys_point() {
    for byte in [1u8, 2, 3, 2] {
        let secret = SecretKey::from_slice(&[byte; 48]).unwrap();
        let expected = secret.public_key().to_sec1_point(false);
        assert_eq!(public_point(&secret).as_slice(), expected.as_bytes());
    }
}

#[test]
fn shared_secret_is_symmetric_and_depends_on_both_keys() {
    let a = SecretKey::from_slice(&[4; 48]).unwrap();
    let b = SecretKey::from_slice(&[5; 48]).unwrap();
    let c = SecretKey::from_slice(&[6; 48]).unwrap();
    let ab = shared_secret(&a, &b.public_key());
    assert_eq!(ab, shared_secret(&b, &a.public_key()));
    assert_eq!(ab, shared_secret(&a, &b.public_key()));
    let expected = p384::ecdh::diffie_hellman(a.to_nonzero_scalar(), b.public_key().as_affine());
    assert_eq!(&ab[..], &expected.raw_secret_bytes()[..]);
    assert_ne!(ab, shared_secret(&a, &c.public_key()));
    assert_ne!(ab, shared_secret(&c, &b.public_key()));
}
