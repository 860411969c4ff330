//! `verify_chain` against the device model's identities (tests/device-model/src/identity) and
//! chains its generator makes with one rule broken each. Every refusal is checked for its
//! specific error, with the rule it enforces.
//!
//! Under Miri: the tests that reach signature verification or make certificates (P-384 scalar
//! multiplications, minutes each interpreted) are ignored; those whose chain fails its
//! structure run (the structure is checked before any signature, and is the DER walking Miri is
//! for). The fuzz replay (`fuzz/tests/replay.rs`) runs every identity under Miri too.

extern crate std;

use std::vec;
use std::vec::Vec;

use sha2::{Digest, Sha384};
use tsm_device_model::identity::generate::{
    self, Authority, CertTemplate, ChainBuf, DEVICE_CN, DEVICE_KEY, Extension, INTERMEDIATE_CN,
    key, oid, same,
};
use tsm_device_model::identity::{DEVICE, OTHER_DEVICE, malformed};

use super::*;

fn verify(chain: &[u8]) -> Result<ChainInfo, CertError> {
    verify_chain(chain, &TrustAnchor::AnyRoot)
}

/// `chain` with `Length` rewritten to its size.
fn with_length(mut chain: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(chain.len()).unwrap().to_le_bytes();
    chain[..2].copy_from_slice(&len);
    chain
}

/// The device's chain with the leaf made from its default template changed by `change`.
fn leaf_changed(change: impl FnOnce(CertTemplate<'_>) -> CertTemplate<'_>) -> ChainBuf {
    let ca = Authority::new();
    ca.chain(&ca.leaf(&key(DEVICE_KEY), 0x11, DEVICE_CN, None, change))
}

/// The device's chain with the intermediate made from its default template changed by
/// `change` (the leaf as usual, signed by the intermediate's key).
fn intermediate_changed(change: impl FnOnce(CertTemplate<'_>) -> CertTemplate<'_>) -> ChainBuf {
    let ca = Authority::with_intermediate(change);
    ca.chain(&ca.leaf(&key(DEVICE_KEY), 0x11, DEVICE_CN, None, same))
}

// --- The good chains -------------------------------------------------------------------------

/// DSP0274 "Certificate chain format": a root-first chain with RootHash = H(root) verifies; the
/// leaf's key is what the responder signs with; the digest is SHA-384 over the whole buffer
/// (what GET_DIGESTS reports for the slot).
#[test]
#[cfg_attr(miri, ignore)] // three ECDSA P-384 verifications
fn the_device_chain_verifies_and_yields_its_leaf_key_and_digest() {
    let info = verify(DEVICE.chain).unwrap();
    assert_eq!(&info.leaf_key, DEVICE.signing_key().verifying_key());
    assert_eq!(
        info.digest.as_slice(),
        Sha384::digest(DEVICE.chain).as_slice()
    );
    assert_eq!(info.root_hash.as_slice(), &DEVICE.chain[4..52]);
    assert_eq!(info.certificates, 3);
    let sec1 = info.leaf_key_sec1();
    assert_eq!(sec1[0], 0x04, "uncompressed");
    assert_eq!(
        &sec1[..],
        DEVICE
            .signing_key()
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
    );
}

/// The swap-the-device case: the same vendor's other device verifies too, with another key and
/// another digest (the same root), so only the digest tells the guest which device it is.
#[test]
#[cfg_attr(miri, ignore)] // ECDSA verifications
fn another_device_of_the_same_vendor_verifies_with_another_key_and_digest() {
    let device = verify(DEVICE.chain).unwrap();
    let other = verify(OTHER_DEVICE.chain).unwrap();
    assert_eq!(&other.leaf_key, OTHER_DEVICE.signing_key().verifying_key());
    assert_ne!(other.leaf_key, device.leaf_key);
    assert_ne!(other.digest, device.digest);
    assert_eq!(other.root_hash, device.root_hash);
    // A caller that pinned the device's chain (its GET_DIGESTS value) refuses the other one.
    assert_eq!(
        verify_chain(OTHER_DEVICE.chain, &TrustAnchor::ChainDigest(device.digest)),
        Err(CertError::DigestMismatch)
    );
    // Pinning the vendor's root does not tell them apart.
    assert!(verify_chain(OTHER_DEVICE.chain, &TrustAnchor::RootHash(device.root_hash)).is_ok());
}

#[test]
#[cfg_attr(miri, ignore)] // ECDSA verifications
fn trust_anchors_pin_the_root_or_the_chain() {
    let info = verify(DEVICE.chain).unwrap();
    let pinned = [
        TrustAnchor::RootHash(info.root_hash),
        TrustAnchor::ChainDigest(info.digest),
    ];
    for trust in pinned {
        assert_eq!(verify_chain(DEVICE.chain, &trust), Ok(info));
    }
    let mut other = info.root_hash;
    other[0] ^= 1;
    assert_eq!(
        verify_chain(DEVICE.chain, &TrustAnchor::RootHash(other)),
        Err(CertError::UntrustedRoot)
    );
    assert_eq!(
        verify_chain(DEVICE.chain, &TrustAnchor::ChainDigest(other)),
        Err(CertError::DigestMismatch)
    );
}

/// The trust checks come after the structure, before any signature: a pinned-out chain costs
/// no elliptic-curve work (runs under Miri).
#[test]
fn a_pinned_out_chain_is_refused_before_its_signatures() {
    assert_eq!(
        verify_chain(DEVICE.chain, &TrustAnchor::RootHash([0; HASH_LEN])),
        Err(CertError::UntrustedRoot)
    );
    // The bad signature is never looked at.
    assert_eq!(
        verify_chain(
            malformed::BAD_SIGNATURE.chain,
            &TrustAnchor::ChainDigest([0; HASH_LEN])
        ),
        Err(CertError::DigestMismatch)
    );
}

// --- The device model's malformed chains -----------------------------------------------------

/// RFC 5280 §6.1.3 (a)(1): the leaf's signature must verify with its issuer's key; this one is
/// the root's.
#[test]
#[cfg_attr(miri, ignore)] // ECDSA verifications
fn a_leaf_signed_by_another_key_fails_its_signature() {
    assert_eq!(
        verify(malformed::BAD_SIGNATURE.chain),
        Err(CertError::BadSignature { cert: 2 })
    );
}

/// RFC 5280 §6.1.3 (a)(4): the leaf's issuer must be the intermediate's subject.
#[test]
fn a_leaf_naming_another_issuer_breaks_the_chain() {
    assert_eq!(
        verify(malformed::BROKEN_CHAINING.chain),
        Err(CertError::IssuerMismatch { cert: 2 })
    );
}

/// RFC 5280 §6.1.4 (k), §4.2.1.9: a certificate that issues another must assert cA.
#[test]
fn a_non_ca_intermediate_cannot_issue_the_leaf() {
    assert_eq!(
        verify(malformed::NON_CA_INTERMEDIATE.chain),
        Err(CertError::NotCa { cert: 1 })
    );
}

/// RFC 5480 §2.1.1.1: only secp384r1 keys (the negotiated ECDSA P-384).
#[test]
fn a_leaf_key_on_p256_is_unsupported() {
    assert_eq!(
        verify(malformed::WRONG_CURVE.chain),
        Err(CertError::UnsupportedKey { cert: 2 })
    );
}

/// X.690 §8.1.1: a DER element must be whole; the truncated leaf is malformed.
#[test]
fn a_truncated_leaf_is_malformed() {
    assert_eq!(
        verify(malformed::TRUNCATED.chain),
        Err(CertError::Malformed { cert: 2 })
    );
}

/// DSP0274 "Certificate chain format": RootHash is the digest of the first certificate.
#[test]
fn a_root_hash_that_is_not_the_roots_digest_fails() {
    assert_eq!(
        verify(malformed::BAD_ROOT_HASH.chain),
        Err(CertError::RootHash)
    );
}

// --- The SPDM buffer -------------------------------------------------------------------------

/// DSP0274 "Certificate chain format": `Length` is the whole buffer; the header is 4 + H bytes.
#[test]
fn the_header_must_be_whole_and_length_exact() {
    assert_eq!(verify(&[]), Err(CertError::Header));
    assert_eq!(
        verify(&DEVICE.chain[..HEADER_LEN - 1]),
        Err(CertError::Header)
    );
    // Length one short, one long, and a buffer cut without fixing Length.
    for delta in [-1i32, 1] {
        let mut c = DEVICE.chain.to_vec();
        let len = u16::try_from(i32::try_from(c.len()).unwrap() + delta).unwrap();
        c[..2].copy_from_slice(&len.to_le_bytes());
        assert_eq!(verify(&c), Err(CertError::Header), "delta {delta}");
    }
    assert_eq!(
        verify(&DEVICE.chain[..DEVICE.chain.len() - 1]),
        Err(CertError::Header)
    );
    // A header and no certificate.
    let empty = with_length(DEVICE.chain[..HEADER_LEN].to_vec());
    assert_eq!(verify(&empty), Err(CertError::TooFewCertificates));
}

#[test]
fn a_buffer_over_the_bound_is_refused() {
    let big = vec![0u8; MAX_CHAIN_LEN + 1];
    assert_eq!(verify(&big), Err(CertError::TooLong));
}

/// Bytes after the leaf are not a certificate.
#[test]
fn trailing_bytes_after_the_leaf_are_malformed() {
    for tail in [&[0u8][..], &[0x30, 0x00], &[0x30, 0x03, 0x02, 0x01]] {
        let mut c = DEVICE.chain.to_vec();
        c.extend_from_slice(tail);
        assert_eq!(
            verify(&with_length(c)),
            Err(CertError::Malformed { cert: 3 }),
            "{tail:x?}"
        );
    }
}

/// A chain is at least a root and a leaf; the root alone is not a device's chain.
#[test]
fn a_root_alone_is_too_few_certificates() {
    let root_len = der_len(&DEVICE.chain[HEADER_LEN..]);
    let root_only = with_length(DEVICE.chain[..HEADER_LEN + root_len].to_vec());
    assert_eq!(verify(&root_only), Err(CertError::TooFewCertificates));
}

/// At most MAX_CERTS certificates: nine copies of the root chain by name (each self-issued and a
/// CA) but are one too many.
#[test]
fn more_than_max_certs_are_refused() {
    let root = &DEVICE.chain[HEADER_LEN..HEADER_LEN + der_len(&DEVICE.chain[HEADER_LEN..])];
    let mut c = DEVICE.chain[..HEADER_LEN].to_vec();
    for _ in 0..=MAX_CERTS {
        c.extend_from_slice(root);
    }
    assert_eq!(verify(&with_length(c)), Err(CertError::TooManyCertificates));
}

/// RFC 5280 §6.1.3 (a)(4) for the root: the first certificate must be self-issued (this chain
/// starts with the intermediate).
#[test]
fn a_chain_without_its_root_is_refused() {
    let root_len = der_len(&DEVICE.chain[HEADER_LEN..]);
    let mut c = DEVICE.chain[..HEADER_LEN].to_vec();
    c.extend_from_slice(&DEVICE.chain[HEADER_LEN + root_len..]);
    assert_eq!(
        verify(&with_length(c)),
        Err(CertError::IssuerMismatch { cert: 0 })
    );
}

/// The size of the DER element at the start of `der`.
fn der_len(der: &[u8]) -> usize {
    match der[1] {
        n @ 0..=0x7F => 2 + usize::from(n),
        0x81 => 3 + usize::from(der[2]),
        0x82 => 4 + usize::from(u16::from_be_bytes([der[2], der[3]])),
        n => panic!("length form {n:#x}"),
    }
}

/// No input panics: every prefix of the device's chain (with `Length` fixed) and a sample of
/// single-byte changes is refused or verified, never a crash (the fuzz target does the rest).
#[test]
fn cut_chains_are_refused_without_panicking() {
    let step = if cfg!(miri) { 61 } else { 1 };
    for len in (0..DEVICE.chain.len()).step_by(step) {
        let mut c = DEVICE.chain[..len].to_vec();
        if len >= 2 {
            c = with_length(c);
        }
        assert!(verify(&c).is_err(), "prefix of {len} bytes");
    }
}

#[test]
#[cfg_attr(miri, ignore)] // most changes reach the signatures
fn changed_bytes_never_verify() {
    for at in (2..DEVICE.chain.len()).step_by(23) {
        if (2..4).contains(&at) {
            continue; // Reserved: not checked, but covered by the digest
        }
        let mut c = DEVICE.chain.to_vec();
        c[at] ^= 0x41;
        assert!(verify(&c).is_err(), "byte {at} changed");
    }
}

// --- Rules, one at a time, with chains the generator makes ----------------------------------

/// DSP0274 leaf certificate requirements: the leaf is an end entity.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates (ECDSA signatures)
fn a_leaf_that_is_a_ca_is_refused() {
    let c = leaf_changed(|t| CertTemplate {
        basic_constraints: Some((true, None)),
        ..t
    });
    assert_eq!(verify(c.as_slice()), Err(CertError::LeafIsCa { cert: 2 }));
}

/// RFC 5280 §4.2.1.9: basicConstraints absent means not a CA; the leaf may omit it, an
/// intermediate may not.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates and verifies them
fn basic_constraints_absent_means_not_a_ca() {
    let leaf = leaf_changed(|t| CertTemplate {
        basic_constraints: None,
        key_usage: None,
        ext_key_usage: &[],
        ..t
    });
    assert!(verify(leaf.as_slice()).is_ok());
    let intermediate = intermediate_changed(|t| CertTemplate {
        basic_constraints: None,
        ..t
    });
    assert_eq!(
        verify(intermediate.as_slice()),
        Err(CertError::NotCa { cert: 1 })
    );
}

/// RFC 5280 §4.2.1.3, §6.1.4 (n): a CA's keyUsage must assert keyCertSign; DSP0274: the leaf's
/// must assert digitalSignature.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates
fn key_usage_must_fit_the_role() {
    let intermediate = intermediate_changed(|t| CertTemplate {
        key_usage: Some(generate::KU_DIGITAL_SIGNATURE | generate::KU_CRL_SIGN),
        ..t
    });
    assert_eq!(
        verify(intermediate.as_slice()),
        Err(CertError::KeyUsage { cert: 1 })
    );
    let leaf = leaf_changed(|t| CertTemplate {
        key_usage: Some(generate::KU_KEY_CERT_SIGN),
        ..t
    });
    assert_eq!(
        verify(leaf.as_slice()),
        Err(CertError::KeyUsage { cert: 2 })
    );
}

/// DSP0274: a leaf whose extendedKeyUsage names only SPDM requester authentication is not a
/// responder's; other purposes next to responder authentication are fine.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates and verifies them
fn a_requester_only_leaf_is_refused() {
    let requester = leaf_changed(|t| CertTemplate {
        ext_key_usage: &[oid::DMTF_EKU_REQUESTER_AUTH],
        ..t
    });
    assert_eq!(
        verify(requester.as_slice()),
        Err(CertError::KeyUsage { cert: 2 })
    );
    let both = leaf_changed(|t| CertTemplate {
        ext_key_usage: &[oid::DMTF_EKU_REQUESTER_AUTH, oid::DMTF_EKU_RESPONDER_AUTH],
        ..t
    });
    assert!(verify(both.as_slice()).is_ok());
}

/// RFC 5280 §4.2: an unrecognised critical extension fails the certificate; a non-critical
/// one is ignored.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates and verifies them
fn unknown_critical_extensions_fail_and_non_critical_ones_pass() {
    // nameConstraints with an empty permitted subtree list: a constraint this verifier does
    // not enforce, so it must not pretend to.
    const NAME_CONSTRAINTS: &[u8] = &[0x30, 0x02, 0xA0, 0x00];
    let ext = |critical| Extension {
        oid: oid::NAME_CONSTRAINTS,
        critical,
        value: NAME_CONSTRAINTS,
    };
    let critical = intermediate_changed(|t| CertTemplate {
        extra: Some(ext(true)),
        ..t
    });
    assert_eq!(
        verify(critical.as_slice()),
        Err(CertError::CriticalExtension { cert: 1 })
    );
    let non_critical = intermediate_changed(|t| CertTemplate {
        extra: Some(ext(false)),
        ..t
    });
    assert!(verify(non_critical.as_slice()).is_ok());
}

/// RFC 5280 §4.2: "A certificate MUST NOT include more than one instance of a particular
/// extension."
#[test]
#[cfg_attr(miri, ignore)] // makes certificates
fn a_repeated_extension_is_malformed() {
    const NOT_A_CA: &[u8] = &[0x30, 0x00];
    let c = leaf_changed(|t| CertTemplate {
        extra: Some(Extension {
            oid: oid::BASIC_CONSTRAINTS,
            critical: true,
            value: NOT_A_CA,
        }),
        ..t
    });
    assert_eq!(verify(c.as_slice()), Err(CertError::Malformed { cert: 2 }));
}

/// RFC 5280 §4.1.2.1: extensions need v3; a v1 certificate (no version field) is refused.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates
fn only_v3_certificates() {
    let v1 = leaf_changed(|t| CertTemplate { version: None, ..t });
    assert_eq!(verify(v1.as_slice()), Err(CertError::Version { cert: 2 }));
    let v2 = leaf_changed(|t| CertTemplate {
        version: Some(1),
        ..t
    });
    assert_eq!(verify(v2.as_slice()), Err(CertError::Version { cert: 2 }));
}

/// RFC 5758 §3.2: ecdsa-with-SHA384 only (the negotiated hash); RFC 5280 §4.1.1.2: the TBS's
/// `signature` must equal the outer `signatureAlgorithm`.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates
fn only_ecdsa_with_sha384_and_both_fields_agree() {
    // AlgorithmIdentifier { ecdsa-with-SHA256 }, and ecdsa-with-SHA384 with NULL parameters.
    const SHA256: &[u8] = &[
        0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02,
    ];
    const SHA384_NULL: &[u8] = &[
        0x30, 0x0C, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03, 0x05, 0x00,
    ];
    assert_eq!(
        generate::ecdsa_with_sha384().as_slice(),
        &[
            0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03
        ]
    );
    for alg in [SHA256, SHA384_NULL] {
        let c = leaf_changed(|t| CertTemplate {
            algorithm: alg,
            ..t
        });
        assert_eq!(
            verify(c.as_slice()),
            Err(CertError::SignatureAlgorithm { cert: 2 }),
            "{alg:x?}"
        );
    }
    let mismatch = leaf_changed(|t| CertTemplate {
        outer_algorithm: Some(SHA256),
        ..t
    });
    assert_eq!(
        verify(mismatch.as_slice()),
        Err(CertError::SignatureAlgorithm { cert: 2 })
    );
}

/// RFC 5480 §2.2: a compressed point is a valid key too.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates and verifies them
fn a_compressed_leaf_key_verifies() {
    let ca = Authority::new();
    let device = key(DEVICE_KEY);
    let point = device.verifying_key().to_sec1_point(true);
    let spki = generate::ec_spki(oid::SECP384R1, point.as_bytes());
    let alg = generate::ecdsa_with_sha384();
    let leaf = CertTemplate::leaf(
        alg.as_slice(),
        spki.as_slice(),
        0x11,
        DEVICE_CN,
        ca.intermediate_key_id,
    )
    .issue(&ca.intermediate_key);
    let info = verify(ca.chain(&leaf).as_slice()).unwrap();
    assert_eq!(&info.leaf_key, device.verifying_key());
}

/// RFC 5280 §6.1.4 (l), (m): the intermediate's pathLenConstraint 0 allows no further CA
/// below it.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates
fn path_length_constraints_hold() {
    let ca = Authority::new();
    let alg = generate::ecdsa_with_sha384();
    let second_key = key("second intermediate CA");
    let second_spki = generate::p384_spki(second_key.verifying_key());
    let second = CertTemplate {
        issuer_cn: INTERMEDIATE_CN,
        subject_cn: "TSM device model second intermediate CA",
        basic_constraints: Some((true, None)),
        ..CertTemplate::intermediate(
            alg.as_slice(),
            second_spki.as_slice(),
            ca.intermediate_key_id,
        )
    }
    .issue(&ca.intermediate_key);
    let leaf = CertTemplate {
        issuer_cn: "TSM device model second intermediate CA",
        ..CertTemplate::leaf(
            alg.as_slice(),
            generate::p384_spki(key(DEVICE_KEY).verifying_key()).as_slice(),
            0x11,
            DEVICE_CN,
            [0; 20],
        )
    }
    .issue(&second_key);
    let c = generate::spdm_chain(&[
        ca.root.as_slice(),
        ca.intermediate.as_slice(),
        second.as_slice(),
        leaf.as_slice(),
    ]);
    assert_eq!(verify(c.as_slice()), Err(CertError::PathLength { cert: 2 }));
}

/// RFC 5280 §6.1.3 (a)(1) for the root: its self-signature must verify.
#[test]
#[cfg_attr(miri, ignore)] // makes certificates and verifies them
fn a_root_that_does_not_sign_itself_is_refused() {
    let ca = Authority::new();
    let alg = generate::ecdsa_with_sha384();
    let root_spki = generate::p384_spki(ca.root_key.verifying_key());
    let forged_root =
        CertTemplate::root(alg.as_slice(), root_spki.as_slice()).issue(&ca.intermediate_key);
    let leaf = ca.leaf(&key(DEVICE_KEY), 0x11, DEVICE_CN, None, same);
    let c = generate::spdm_chain(&[
        forged_root.as_slice(),
        ca.intermediate.as_slice(),
        leaf.as_slice(),
    ]);
    assert_eq!(
        verify(c.as_slice()),
        Err(CertError::BadSignature { cert: 0 })
    );
}
