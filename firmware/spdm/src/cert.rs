//! SPDM certificate chains: the TSM's X.509 verifier (issue 14, point 2).
//!
//! A device proves its identity with a certificate chain in the SPDM format (DSP0274 1.2,
//! "Certificate chain format"): `Length` (u16, little-endian, the whole buffer), `Reserved`
//! (u16), `RootHash` (the digest of the root certificate's DER, in the negotiated hash
//! algorithm), then one or more DER X.509 v3 certificates, root first, each signed by the one
//! before it, the last the leaf, whose key signs the SPDM transcript and the measurements.
//!
//! [`verify_chain`] checks the chain's *structure and signatures* up to its root. It does not
//! decide whether the root is trustworthy: it reports the chain's SHA-384 digest (the value
//! GET_DIGESTS gives for the slot) for the guest to judge by its own policy, as Arm CCA's
//! device assignment model does. [`TrustAnchor`] lets a caller that does have a policy (a test,
//! the interoperability hook) pin the root or the whole chain.
//!
//! What it accepts (RFC 5280 profile, narrowed to what SPDM with ECDSA P-384 and SHA-384 needs):
//!
//! - **Algorithms**: every signature is ecdsa-with-SHA384 (RFC 5758 §3.2, parameters absent)
//!   and every key id-ecPublicKey on secp384r1 (RFC 5480 §2.1.1, §2.2; uncompressed or
//!   compressed point). Nothing else: the requester negotiates ECDSA P-384 with SHA-384 only,
//!   so a chain in any other algorithm could not serve the session anyway. `RootHash` is
//!   therefore 48 bytes.
//! - **Certificates**: X.509 v3 (RFC 5280 §4.1.2.1), `signature` inside the TBS equal to the
//!   outer `signatureAlgorithm` (§4.1.1.2), a non-empty issuer (§4.1.2.4), at most
//!   [`MAX_CERTS`] of them, at least two (a root and a leaf).
//! - **Chaining** (§6.1.3): each issuer name equals the previous certificate's subject, compared
//!   byte for byte (the conservative subset of §7.1's comparison: a CA that encodes its name the
//!   same way in both places, as every CA does, chains; the DER is what was signed). The root is
//!   self-issued and self-signed, and its SHA-384 equals `RootHash`.
//! - **CA constraints** (§6.1.4 (k)–(n), §4.2.1.9, §4.2.1.3): every certificate but the leaf has
//!   basicConstraints with cA TRUE, its pathLenConstraint holds (the root's included), and its
//!   keyUsage, if present, asserts keyCertSign. The leaf is not a CA, its keyUsage, if present,
//!   asserts digitalSignature (DSP0274's leaf requirements), and its extendedKeyUsage, if
//!   present, does not name the DMTF requester-authentication purpose without the responder one.
//! - **Extensions** (§4.2): none twice among those it processes; a *critical* extension it does
//!   not know fails the chain. It knows basicConstraints, keyUsage, extendedKeyUsage, and, as
//!   extensions whose content changes none of the checks above, subjectKeyIdentifier,
//!   authorityKeyIdentifier, subjectAltName and DMTF's id-spdm-cert-oids.
//! - **Validity is not checked.** The TSM has no trusted time: its clocks (the architected
//!   counter, the TSC) count from boot and the host sets the platform's wall clock, so "now"
//!   would be the host's choice and an expiry check would be the host's to pass or fail. The
//!   validity field is parsed (two UTCTime/GeneralizedTime values) and otherwise left to the
//!   guest, whose verifier can read the chain (and has, or has not, a time it trusts).
//! - **No revocation** (no CRL or OCSP in the TSM): also the guest's policy.
//!
//! Bounds: the buffer is at most [`MAX_CHAIN_LEN`] bytes (what SPDM 1.2's u16 `Length` can
//! say) and holds at most [`MAX_CERTS`] certificates, so the work is at most that many DER
//! walks and ECDSA verifications. The structure of the whole chain is checked before any
//! signature (cheap checks first: a malformed chain costs no elliptic-curve arithmetic). No
//! allocation, no panic, no `unsafe`: DER is read with `der`'s borrowed types and `spki`,
//! signatures are verified with RustCrypto's `p384`.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Header, Reader, SliceReader, Tag, TagMode, TagNumber, Tagged};
use p384::ecdsa::{DerSignature, Signature, VerifyingKey};
use sha2::{Digest, Sha384};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

/// Size of a SHA-384 digest: `RootHash` and the chain digest.
pub const HASH_LEN: usize = 48;
/// `Length`, `Reserved`, `RootHash`: the bytes before the first certificate.
pub const HEADER_LEN: usize = 4 + HASH_LEN;
/// The largest chain buffer: SPDM 1.2's `Length` is a u16 and counts the whole buffer.
pub const MAX_CHAIN_LEN: usize = 0xFFFF;
/// The most certificates a chain may hold (root and leaf included). Real chains have 2 to 5
/// (a vendor root, one or two intermediates, a device certificate, DICE alias certificates).
pub const MAX_CERTS: usize = 8;
/// Size of an uncompressed SEC1 P-384 point (`04 ‖ x ‖ y`).
pub const SEC1_LEN: usize = 97;

/// What the chain's root must be, besides self-signed with the hash the chain states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustAnchor {
    /// Any root: the TSM reports the chain's digest and the guest judges it (what the SPDM
    /// requester uses; the TSM holds no roots of its own).
    AnyRoot,
    /// Only the root whose certificate has this SHA-384 (a pinned vendor root).
    RootHash([u8; HASH_LEN]),
    /// Only the chain whose buffer has this SHA-384 (for instance the slot's digest from
    /// GET_DIGESTS, or a chain seen before).
    ChainDigest([u8; HASH_LEN]),
}

/// What a verified chain tells the requester and the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainInfo {
    /// The leaf certificate's key: what signs the SPDM transcript and the measurements.
    pub leaf_key: VerifyingKey,
    /// SHA-384 over the whole SPDM chain buffer (`Length` to the last certificate byte): the
    /// value GET_DIGESTS reports for the slot, and what the guest's policy judges.
    pub digest: [u8; HASH_LEN],
    /// SHA-384 of the root certificate (equal to the chain's `RootHash`).
    pub root_hash: [u8; HASH_LEN],
    /// Number of certificates, root and leaf included (2..=[`MAX_CERTS`]).
    pub certificates: u8,
}

impl ChainInfo {
    /// The leaf key as an uncompressed SEC1 point (`04 ‖ x ‖ y`), for storing in an object.
    pub fn leaf_key_sec1(&self) -> [u8; SEC1_LEN] {
        super::ecc::encode_point(self.leaf_key.as_affine())
    }
}

/// Why a chain was refused. `cert` is the certificate's index in the chain, 0 for the root.
/// The structure of every certificate is checked before any signature, so when a chain has
/// several faults the first structural one is reported, and a signature fault only when the
/// structure is sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CertError {
    /// The buffer is shorter than `Length ‖ Reserved ‖ RootHash`, or `Length` is not its size.
    Header,
    /// The buffer is longer than [`MAX_CHAIN_LEN`].
    TooLong,
    /// Fewer than two certificates (a root and a leaf).
    TooFewCertificates,
    /// More than [`MAX_CERTS`] certificates.
    TooManyCertificates,
    /// Not DER, truncated, trailing bytes, or a field of the wrong type or size (X.509 syntax,
    /// RFC 5280 §4.1), an empty issuer, or an extension present twice.
    Malformed { cert: u8 },
    /// Not an X.509 v3 certificate (RFC 5280 §4.1.2.1).
    Version { cert: u8 },
    /// A signature algorithm other than ecdsa-with-SHA384, or the TBS's `signature` differs
    /// from the outer `signatureAlgorithm` (RFC 5280 §4.1.1.2).
    SignatureAlgorithm { cert: u8 },
    /// A key other than id-ecPublicKey on secp384r1 (RFC 5480 §2.1.1).
    UnsupportedKey { cert: u8 },
    /// The key's bytes are not a point on P-384 (RFC 5480 §2.2).
    InvalidKey { cert: u8 },
    /// The issuer is not the previous certificate's subject; for the root, not its own
    /// subject (RFC 5280 §6.1.3 (a)(4)).
    IssuerMismatch { cert: u8 },
    /// A certificate that issues the next one is not a CA (basicConstraints cA TRUE, RFC 5280
    /// §6.1.4 (k)).
    NotCa { cert: u8 },
    /// A pathLenConstraint is exceeded (RFC 5280 §6.1.4 (l), (m)).
    PathLength { cert: u8 },
    /// keyUsage without keyCertSign on a CA (RFC 5280 §6.1.4 (n)), without digitalSignature
    /// on the leaf, or an extendedKeyUsage for SPDM requesters only on the leaf (DSP0274).
    KeyUsage { cert: u8 },
    /// The leaf is a CA (basicConstraints cA TRUE): DSP0274's leaf is an end entity.
    LeafIsCa { cert: u8 },
    /// A critical extension this verifier does not process (RFC 5280 §4.2).
    CriticalExtension { cert: u8 },
    /// `RootHash` is not the SHA-384 of the first certificate (DSP0274 "Certificate chain
    /// format").
    RootHash,
    /// [`TrustAnchor::RootHash`] given and the root is another one.
    UntrustedRoot,
    /// [`TrustAnchor::ChainDigest`] given and the chain is another one.
    DigestMismatch,
    /// A signature does not verify with the issuer's key (the root's with its own; RFC 5280
    /// §6.1.3 (a)(1)).
    BadSignature { cert: u8 },
}

/// The fault of one certificate, before its index is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Malformed,
    Version,
    SignatureAlgorithm,
    UnsupportedKey,
    InvalidKey,
    CriticalExtension,
}

impl From<der::Error> for Fault {
    fn from(_: der::Error) -> Self {
        Fault::Malformed
    }
}

impl Fault {
    fn at(self, cert: u8) -> CertError {
        match self {
            Fault::Malformed => CertError::Malformed { cert },
            Fault::Version => CertError::Version { cert },
            Fault::SignatureAlgorithm => CertError::SignatureAlgorithm { cert },
            Fault::UnsupportedKey => CertError::UnsupportedKey { cert },
            Fault::InvalidKey => CertError::InvalidKey { cert },
            Fault::CriticalExtension => CertError::CriticalExtension { cert },
        }
    }
}

/// Object identifiers, compared by their DER contents.
mod oid {
    use der::asn1::ObjectIdentifier;

    /// ecdsa-with-SHA384 (RFC 5758 §3.2).
    pub const ECDSA_WITH_SHA384: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    /// id-ecPublicKey (RFC 5480 §2.1.1).
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// secp384r1 (RFC 5480 §2.1.1.1).
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// id-ce-subjectKeyIdentifier (RFC 5280 §4.2.1.2).
    pub const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
    /// id-ce-keyUsage (RFC 5280 §4.2.1.3).
    pub const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
    /// id-ce-subjectAltName (RFC 5280 §4.2.1.6).
    pub const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
    /// id-ce-basicConstraints (RFC 5280 §4.2.1.9).
    pub const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
    /// id-ce-authorityKeyIdentifier (RFC 5280 §4.2.1.1).
    pub const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
    /// id-ce-extKeyUsage (RFC 5280 §4.2.1.12).
    pub const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
    /// id-DMTF-eku-responder-auth (DSP0274).
    pub const DMTF_EKU_RESPONDER_AUTH: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.412.274.3");
    /// id-DMTF-eku-requester-auth (DSP0274).
    pub const DMTF_EKU_REQUESTER_AUTH: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.412.274.4");
    /// id-spdm-cert-oids (DSP0274 1.3: the hardware-identity OID and others).
    pub const SPDM_CERT_OIDS: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.412.274.6");
}

/// keyUsage bits (RFC 5280 §4.2.1.3), bit 0 first: the first two bytes of the BIT STRING.
const KU_DIGITAL_SIGNATURE: u16 = 0x8000;
const KU_KEY_CERT_SIGN: u16 = 0x0400;

/// The extensions this verifier processes, as bits, to refuse a second instance.
const EXT_BASIC_CONSTRAINTS: u8 = 1 << 0;
const EXT_KEY_USAGE: u8 = 1 << 1;
const EXT_EXT_KEY_USAGE: u8 = 1 << 2;
const EXT_SUBJECT_KEY_ID: u8 = 1 << 3;
const EXT_AUTHORITY_KEY_ID: u8 = 1 << 4;
const EXT_SUBJECT_ALT_NAME: u8 = 1 << 5;
const EXT_SPDM_CERT_OIDS: u8 = 1 << 6;

/// One certificate's fields, borrowed from the chain.
#[derive(Debug, Clone, Copy)]
struct Cert<'a> {
    /// The whole certificate (what `RootHash` is the digest of, for the root).
    der: &'a [u8],
    /// `tbsCertificate`, header included: what the issuer signed.
    tbs: &'a [u8],
    /// The `Ecdsa-Sig-Value` DER inside `signatureValue`.
    signature: &'a [u8],
    /// The issuer and subject `Name`s, header included.
    issuer: &'a [u8],
    subject: &'a [u8],
    /// The SEC1 point of `subjectPublicKey`.
    key: &'a [u8],
    /// basicConstraints: cA, and pathLenConstraint (saturated at 255).
    ca: bool,
    path_len: Option<u8>,
    /// keyUsage's first 16 bits, if present.
    key_usage: Option<u16>,
    /// extendedKeyUsage, if present: whether it names DMTF's responder and requester purposes.
    eku: Option<Eku>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Eku {
    responder: bool,
    requester: bool,
}

impl Cert<'_> {
    fn self_issued(&self) -> bool {
        self.issuer == self.subject
    }
}

/// Checks an SPDM certificate chain buffer (module doc) and returns the leaf's key and the
/// chain's digest. `trust` adds a pinned root or chain; [`TrustAnchor::AnyRoot`] leaves the
/// judgement to whoever reads [`ChainInfo::digest`].
pub fn verify_chain(chain: &[u8], trust: &TrustAnchor) -> Result<ChainInfo, CertError> {
    if chain.len() > MAX_CHAIN_LEN {
        return Err(CertError::TooLong);
    }
    let (Some(&[l0, l1]), Some(stated_root_hash), Some(certs)) = (
        chain.get(..2).and_then(|b| <&[u8; 2]>::try_from(b).ok()),
        chain.get(4..HEADER_LEN),
        chain.get(HEADER_LEN..),
    ) else {
        return Err(CertError::Header);
    };
    if usize::from(u16::from_le_bytes([l0, l1])) != chain.len() {
        return Err(CertError::Header);
    }

    // Pass 1: the structure of every certificate and of the chain, no elliptic-curve work.
    let mut root_hash = [0u8; HASH_LEN];
    let mut prev: Option<Cert<'_>> = None;
    // Non-self-issued intermediate CAs that may still follow (RFC 5280 §6.1.4 (l), (m));
    // `None`: no constraint yet.
    let mut path_budget: Option<u8> = None;
    let mut count: u8 = 0;
    for item in Certificates::new(certs)? {
        let (index, cert) = item?;
        count = index.saturating_add(1);
        match prev {
            None => {
                if !cert.self_issued() {
                    return Err(CertError::IssuerMismatch { cert: index });
                }
                root_hash = Sha384::digest(cert.der).into();
                if root_hash.as_slice() != stated_root_hash {
                    return Err(CertError::RootHash);
                }
            }
            Some(issuer) => {
                if cert.issuer != issuer.subject {
                    return Err(CertError::IssuerMismatch { cert: index });
                }
                // `issuer` issues `cert`, so it is a CA (index - 1; index >= 1 here).
                let at = index.saturating_sub(1);
                check_ca(&issuer, at, &mut path_budget)?;
            }
        }
        prev = Some(cert);
    }
    let Some(leaf) = prev else {
        return Err(CertError::TooFewCertificates);
    };
    if count < 2 {
        return Err(CertError::TooFewCertificates);
    }
    let leaf_index = count.saturating_sub(1);
    check_leaf(&leaf, leaf_index)?;

    let digest: [u8; HASH_LEN] = Sha384::digest(chain).into();
    match trust {
        TrustAnchor::AnyRoot => {}
        TrustAnchor::RootHash(h) if *h == root_hash => {}
        TrustAnchor::RootHash(_) => return Err(CertError::UntrustedRoot),
        TrustAnchor::ChainDigest(d) if *d == digest => {}
        TrustAnchor::ChainDigest(_) => return Err(CertError::DigestMismatch),
    }

    // Pass 2: every signature, root (self-signed) first.
    let mut issuer_key: Option<VerifyingKey> = None;
    let mut leaf_key = None;
    for item in Certificates::new(certs)? {
        let (index, cert) = item?;
        let key = super::ecc::decode_point(cert.key)
            .map(VerifyingKey::from)
            .ok_or(CertError::InvalidKey { cert: index })?;
        let signer = issuer_key.unwrap_or(key);
        let signature = DerSignature::try_from(cert.signature)
            .map_err(|_| CertError::Malformed { cert: index })?;
        // DER that holds no valid (r, s) (zero, or not below the order) verifies nothing.
        let valid = Signature::try_from(signature)
            .is_ok_and(|signature| super::ecc::verify(&signer, cert.tbs, &signature));
        if !valid {
            return Err(CertError::BadSignature { cert: index });
        }
        issuer_key = Some(key);
        leaf_key = Some(key);
    }
    let Some(leaf_key) = leaf_key else {
        return Err(CertError::TooFewCertificates);
    };
    Ok(ChainInfo {
        leaf_key,
        digest,
        root_hash,
        certificates: count,
    })
}

/// The checks on a certificate that issues the next one (RFC 5280 §6.1.4 (k)–(n)); the root's
/// pathLenConstraint counts too.
fn check_ca(cert: &Cert<'_>, index: u8, path_budget: &mut Option<u8>) -> Result<(), CertError> {
    if !cert.ca {
        return Err(CertError::NotCa { cert: index });
    }
    if cert.key_usage.is_some_and(|ku| ku & KU_KEY_CERT_SIGN == 0) {
        return Err(CertError::KeyUsage { cert: index });
    }
    if index > 0 && !cert.self_issued() {
        match *path_budget {
            Some(0) => return Err(CertError::PathLength { cert: index }),
            Some(n) => *path_budget = Some(n.saturating_sub(1)),
            None => {}
        }
    }
    if let Some(p) = cert.path_len
        && path_budget.is_none_or(|n| p < n)
    {
        *path_budget = Some(p);
    }
    Ok(())
}

/// The leaf's checks (DSP0274's leaf certificate requirements).
fn check_leaf(cert: &Cert<'_>, index: u8) -> Result<(), CertError> {
    if cert.ca {
        return Err(CertError::LeafIsCa { cert: index });
    }
    if cert
        .key_usage
        .is_some_and(|ku| ku & KU_DIGITAL_SIGNATURE == 0)
    {
        return Err(CertError::KeyUsage { cert: index });
    }
    if cert.eku.is_some_and(|e| e.requester && !e.responder) {
        return Err(CertError::KeyUsage { cert: index });
    }
    Ok(())
}

/// The certificates of a chain's `Certificates` field, parsed one by one with their index; at
/// most [`MAX_CERTS`], then [`CertError::TooManyCertificates`]. Ends after the first error.
struct Certificates<'a> {
    /// `None` once finished or failed.
    reader: Option<SliceReader<'a>>,
    index: u8,
}

impl<'a> Certificates<'a> {
    fn new(certs: &'a [u8]) -> Result<Self, CertError> {
        // The reader refuses only inputs of 256 MiB or more, far above MAX_CHAIN_LEN.
        let reader = SliceReader::new(certs).map_err(|_| CertError::TooLong)?;
        Ok(Certificates {
            reader: Some(reader),
            index: 0,
        })
    }
}

impl<'a> Iterator for Certificates<'a> {
    type Item = Result<(u8, Cert<'a>), CertError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.index;
        let reader = self.reader.as_mut()?;
        if reader.is_finished() {
            self.reader = None;
            return None;
        }
        if usize::from(index) >= MAX_CERTS {
            self.reader = None;
            return Some(Err(CertError::TooManyCertificates));
        }
        self.index = index.saturating_add(1);
        let parsed = reader
            .tlv_bytes()
            .map_err(Fault::from)
            .and_then(parse_certificate);
        if parsed.is_err() {
            // Nothing after a malformed certificate can be found.
            self.reader = None;
        }
        Some(parsed.map(|c| (index, c)).map_err(|f| f.at(index)))
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`
/// (RFC 5280 §4.1).
fn parse_certificate(der: &[u8]) -> Result<Cert<'_>, Fault> {
    let mut r = SliceReader::new(der)?;
    let (tbs, outer_alg, signature) = r.sequence(|r| {
        let tbs = r.tlv_bytes()?;
        let alg = r.tlv_bytes()?;
        let sig = BitStringRef::decode(r)?;
        Ok::<_, Fault>((tbs, alg, sig))
    })?;
    r.finish()?;
    let signature = signature.as_bytes().ok_or(Fault::Malformed)?;
    let mut cert = parse_tbs(tbs, outer_alg)?;
    cert.der = der;
    cert.signature = signature;
    Ok(cert)
}

/// `TBSCertificate` (RFC 5280 §4.1.2), its `signature` checked against `outer_alg`.
fn parse_tbs<'a>(tbs: &'a [u8], outer_alg: &'a [u8]) -> Result<Cert<'a>, Fault> {
    let mut r = SliceReader::new(tbs)?;
    let cert = r.sequence(|r| {
        // version [0] EXPLICIT Version DEFAULT v1: v3 (2) is required, for the extensions.
        let version: Option<u8> = r.context_specific(TagNumber(0), TagMode::Explicit)?;
        if version != Some(2) {
            return Err(Fault::Version);
        }
        let serial = AnyRef::decode(r)?;
        if serial.tag() != Tag::Integer {
            return Err(Fault::Malformed);
        }
        let inner_alg = r.tlv_bytes()?;
        check_signature_algorithm(outer_alg)?;
        if inner_alg != outer_alg {
            return Err(Fault::SignatureAlgorithm);
        }
        let issuer = name(r)?;
        if issuer.len() <= 2 {
            // An empty SEQUENCE: RFC 5280 §4.1.2.4 requires a non-empty issuer.
            return Err(Fault::Malformed);
        }
        // Validity: two times, parsed and not checked (module doc: no trusted time).
        r.sequence(|r| {
            for _ in 0..2 {
                let t = AnyRef::decode(r)?;
                if t.tag() != Tag::UtcTime && t.tag() != Tag::GeneralizedTime {
                    return Err(Fault::Malformed);
                }
            }
            Ok(())
        })?;
        let subject = name(r)?;
        let key = subject_public_key(r)?;
        let mut cert = Cert {
            der: &[],
            tbs,
            signature: &[],
            issuer,
            subject,
            key,
            ca: false,
            path_len: None,
            key_usage: None,
            eku: None,
        };
        // issuerUniqueID [1], subjectUniqueID [2] (RFC 5280 §4.1.2.8): skipped.
        for n in [1, 2] {
            if peek_context(r, n)? {
                r.tlv_bytes()?;
            }
        }
        // extensions [3] EXPLICIT Extensions.
        if peek_context(r, 3)? {
            let header = Header::decode(r)?;
            r.read_nested(header.length(), |r| extensions(r, &mut cert))?;
        }
        Ok(cert)
    })?;
    r.finish()?;
    Ok(cert)
}

/// Whether the next field is context-specific `[n]` (false at the end of the input).
fn peek_context<'a>(r: &SliceReader<'a>, n: u32) -> Result<bool, Fault> {
    if r.is_finished() {
        return Ok(false);
    }
    Ok(matches!(Tag::peek(r)?, Tag::ContextSpecific { number, .. } if number == TagNumber(n)))
}

/// A `Name` (an RDNSequence), header included.
fn name<'a>(r: &mut SliceReader<'a>) -> Result<&'a [u8], Fault> {
    if Tag::peek(r)? != Tag::Sequence {
        return Err(Fault::Malformed);
    }
    Ok(r.tlv_bytes()?)
}

/// `signatureAlgorithm`: ecdsa-with-SHA384 with its parameters absent (RFC 5758 §3.2).
fn check_signature_algorithm(alg: &[u8]) -> Result<(), Fault> {
    let alg = AlgorithmIdentifierRef::from_der(alg)?;
    if alg.oid != oid::ECDSA_WITH_SHA384 || alg.parameters.is_some() {
        return Err(Fault::SignatureAlgorithm);
    }
    Ok(())
}

/// `subjectPublicKeyInfo`: id-ecPublicKey, namedCurve secp384r1 (RFC 5480 §2.1.1), the point's
/// bytes (checked to be on the curve in pass 2, with the signatures).
fn subject_public_key<'a>(r: &mut SliceReader<'a>) -> Result<&'a [u8], Fault> {
    let spki = SubjectPublicKeyInfoRef::decode(r)?;
    let curve = spki
        .algorithm
        .parameters
        .map(|p| p.decode_as::<ObjectIdentifier>());
    if spki.algorithm.oid != oid::EC_PUBLIC_KEY
        || !matches!(curve, Some(Ok(c)) if c == oid::SECP384R1)
    {
        return Err(Fault::UnsupportedKey);
    }
    let point = spki.subject_public_key.as_bytes().ok_or(Fault::Malformed)?;
    // Uncompressed (04 ‖ x ‖ y) or compressed (02/03 ‖ x): RFC 5480 §2.2.
    if point.len() != SEC1_LEN && point.len() != 1 + HASH_LEN {
        return Err(Fault::InvalidKey);
    }
    Ok(point)
}

/// `Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension` (RFC 5280 §4.1.2.9, §4.2).
fn extensions(r: &mut SliceReader<'_>, cert: &mut Cert<'_>) -> Result<(), Fault> {
    r.sequence(|r| {
        if r.is_finished() {
            return Err(Fault::Malformed);
        }
        let mut seen = 0u8;
        while !r.is_finished() {
            r.sequence(|r| extension(r, cert, &mut seen))?;
        }
        Ok(())
    })
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
fn extension(r: &mut SliceReader<'_>, cert: &mut Cert<'_>, seen: &mut u8) -> Result<(), Fault> {
    let id = object_identifier(r)?;
    let critical = if Tag::peek(r)? == Tag::Boolean {
        bool::decode(r)?
    } else {
        false
    };
    let value = <&OctetStringRef>::decode(r)?.as_bytes();
    let bit = if id == oid::BASIC_CONSTRAINTS.as_bytes() {
        (cert.ca, cert.path_len) = basic_constraints(value)?;
        EXT_BASIC_CONSTRAINTS
    } else if id == oid::KEY_USAGE.as_bytes() {
        cert.key_usage = Some(key_usage(value)?);
        EXT_KEY_USAGE
    } else if id == oid::EXT_KEY_USAGE.as_bytes() {
        cert.eku = Some(ext_key_usage(value)?);
        EXT_EXT_KEY_USAGE
    } else if id == oid::SUBJECT_KEY_ID.as_bytes() {
        EXT_SUBJECT_KEY_ID
    } else if id == oid::AUTHORITY_KEY_ID.as_bytes() {
        EXT_AUTHORITY_KEY_ID
    } else if id == oid::SUBJECT_ALT_NAME.as_bytes() {
        EXT_SUBJECT_ALT_NAME
    } else if id == oid::SPDM_CERT_OIDS.as_bytes() {
        EXT_SPDM_CERT_OIDS
    } else if critical {
        return Err(Fault::CriticalExtension);
    } else {
        0
    };
    if *seen & bit != 0 {
        return Err(Fault::Malformed);
    }
    *seen |= bit;
    Ok(())
}

/// An OBJECT IDENTIFIER's contents, compared as bytes with the constants' (any length: an
/// identifier this verifier does not know needs no decoding).
fn object_identifier<'a>(r: &mut SliceReader<'a>) -> Result<&'a [u8], Fault> {
    let id = AnyRef::decode(r)?;
    if id.tag() != Tag::ObjectIdentifier {
        return Err(Fault::Malformed);
    }
    Ok(id.value())
}

/// `BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER
/// (0..MAX) OPTIONAL }` (RFC 5280 §4.2.1.9).
fn basic_constraints(value: &[u8]) -> Result<(bool, Option<u8>), Fault> {
    let mut r = SliceReader::new(value)?;
    let out = r.sequence(|r| {
        let ca = if !r.is_finished() && Tag::peek(r)? == Tag::Boolean {
            bool::decode(r)?
        } else {
            false
        };
        let path_len = if r.is_finished() {
            None
        } else {
            Some(u8::try_from(u32::decode(r)?).unwrap_or(u8::MAX))
        };
        Ok::<_, Fault>((ca, path_len))
    })?;
    r.finish()?;
    Ok(out)
}

/// `KeyUsage ::= BIT STRING` (RFC 5280 §4.2.1.3): its first 16 bits.
fn key_usage(value: &[u8]) -> Result<u16, Fault> {
    let bits = BitStringRef::from_der(value)?;
    let raw = bits.raw_bytes();
    let first = raw.first().copied().unwrap_or(0);
    let second = raw.get(1).copied().unwrap_or(0);
    Ok(u16::from_be_bytes([first, second]))
}

/// `ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId` (RFC 5280 §4.2.1.12).
fn ext_key_usage(value: &[u8]) -> Result<Eku, Fault> {
    let mut r = SliceReader::new(value)?;
    let eku = r.sequence(|r| {
        let mut eku = Eku::default();
        if r.is_finished() {
            return Err(Fault::Malformed);
        }
        while !r.is_finished() {
            let v = object_identifier(r)?;
            eku.responder |= v == oid::DMTF_EKU_RESPONDER_AUTH.as_bytes();
            eku.requester |= v == oid::DMTF_EKU_REQUESTER_AUTH.as_bytes();
        }
        Ok(eku)
    })?;
    r.finish()?;
    Ok(eku)
}

#[cfg(test)]
mod tests;
