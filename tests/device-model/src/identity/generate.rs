//! The generator of the device model's identities: P-384 keys derived from documented labels,
//! X.509 v3 certificates written as DER by a small writer, signed with ecdsa-with-SHA384
//! (RFC 6979 deterministic signatures), assembled into SPDM certificate chain buffers.
//!
//! Everything is a function of the labels below, so every run produces the same bytes:
//! [`generate`] is what `cargo run -p tsm-device-model --example identity` writes to
//! `tests/device-model/identity/`, and a test regenerates each chain and compares it with the
//! committed file. No key or certificate comes from anywhere else.
//!
//! **Keys.** The private scalar of the key labelled `L` is the first SHA-384 of
//! `"tsm-device-model identity v1\0" ‖ L ‖ [c]`, for `c` = 0, 1, …, that is a valid P-384
//! scalar (non-zero, below the group order; `c` = 0 in practice). The labels are
//! [`ROOT_KEY`], [`INTERMEDIATE_KEY`], [`DEVICE_KEY`] and [`OTHER_DEVICE_KEY`]. They are test
//! keys, public by construction: anyone can derive them, which is the point.
//!
//! **Certificates** ([`CertTemplate`] has the defaults per role, and tests change fields to
//! make a certificate that breaks one rule and nothing else):
//!
//! | | root CA | intermediate CA | device leaf |
//! |---|---|---|---|
//! | subject | O=TSM project, CN=TSM device model root CA | CN=… intermediate CA | CN=… device 0001 (0002 for the other device) |
//! | basicConstraints (critical) | cA | cA, pathLen 0 | not a CA |
//! | keyUsage (critical) | keyCertSign, cRLSign | keyCertSign, cRLSign | digitalSignature |
//! | extendedKeyUsage | — | — | id-DMTF-eku-responder-auth |
//! | other | SKI | SKI, AKI | SKI, AKI, id-spdm-cert-oids with id-DMTF-hardware-identity (DSP0274 1.3 DeviceCert model) |
//!
//! All are X.509 v3, ecdsa-with-SHA384 over P-384 keys, valid from 2025-01-01 to
//! 9999-12-31T23:59:59Z (RFC 5280 §4.1.2.5's "no well-defined expiration date"). Key
//! identifiers are RFC 7093 §2 method 1 (the leftmost 160 bits of the SHA-256 of the key).

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};

/// Label of the root CA's key.
pub const ROOT_KEY: &str = "root CA";
/// Label of the intermediate CA's key.
pub const INTERMEDIATE_KEY: &str = "intermediate CA";
/// Label of the device's leaf key ([`super::DEVICE`]).
pub const DEVICE_KEY: &str = "device 0001 leaf";
/// Label of the other device's leaf key ([`super::OTHER_DEVICE`]).
pub const OTHER_DEVICE_KEY: &str = "device 0002 leaf";

/// Prefix of every key derivation (versioned: changing it changes every identity).
const KEY_DOMAIN: &[u8] = b"tsm-device-model identity v1\0";

/// The P-384 key labelled `label` (module doc).
pub fn key(label: &str) -> SigningKey {
    SigningKey::from(secret(label).to_nonzero_scalar())
}

/// [`key`]'s secret scalar alone: no public point computed (a scalar multiplication, which a
/// responder that only signs through `spdm::ecc` need not pay, and Miri cannot afford).
pub fn secret(label: &str) -> p384::SecretKey {
    for counter in 0..=u8::MAX {
        let scalar = Sha384::new()
            .chain_update(KEY_DOMAIN)
            .chain_update(label.as_bytes())
            .chain_update([counter])
            .finalize();
        if let Ok(key) = p384::SecretKey::from_bytes(&scalar) {
            return key;
        }
    }
    unreachable!("256 SHA-384 outputs in a row outside the P-384 scalar range")
}

/// Object identifiers, as DER contents.
pub mod oid {
    use der::asn1::ObjectIdentifier as Oid;

    pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const PRIME256V1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const ORGANIZATION: Oid = Oid::new_unwrap("2.5.4.10");
    pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
    pub const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    pub const NAME_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.30");
    pub const DMTF_HARDWARE_IDENTITY: Oid = Oid::new_unwrap("1.3.6.1.4.1.412.274.2");
    pub const DMTF_EKU_RESPONDER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.4.1.412.274.3");
    pub const DMTF_EKU_REQUESTER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.4.1.412.274.4");
    pub const SPDM_CERT_OIDS: Oid = Oid::new_unwrap("1.3.6.1.4.1.412.274.6");
}

/// DER tags used here.
mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0C;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` primitive (AKI keyIdentifier, IMPLICIT).
    pub const CONTEXT_0: u8 = 0x80;
    /// `[0]`, `[3]` constructed (version, extensions: EXPLICIT).
    pub const CONTEXT_0_CONSTRUCTED: u8 = 0xA0;
    pub const CONTEXT_3_CONSTRUCTED: u8 = 0xA3;
}

/// A fixed-size DER output buffer (no allocation: the generator builds for the bare-metal
/// targets too). Overflowing it is a generator bug and panics.
#[derive(Clone)]
pub struct Der<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Der<N> {
    fn default() -> Self {
        Der {
            buf: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> core::fmt::Debug for Der<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Der({} bytes)", self.len)
    }
}

impl<const N: usize> Der<N> {
    /// The bytes written.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    /// Appends a primitive TLV.
    pub fn prim(&mut self, tag: u8, value: &[u8]) -> &mut Self {
        self.cons(tag, |w| {
            w.raw(value);
        })
    }

    /// Appends a TLV whose contents `f` writes (the length is fixed up afterwards).
    pub fn cons(&mut self, tag: u8, f: impl FnOnce(&mut Self)) -> &mut Self {
        const RESERVED: usize = 4; // tag, 0x82, two length bytes: contents below 64 KiB
        let start = self.len;
        self.len += RESERVED;
        f(self);
        let content = self.len - start - RESERVED;
        let mut header = [tag, 0, 0, 0];
        let header_len = match content {
            0..0x80 => {
                header[1] = content as u8;
                2
            }
            0x80..0x100 => {
                header[1] = 0x81;
                header[2] = content as u8;
                3
            }
            0x100..0x1_0000 => {
                header[1] = 0x82;
                header[2..4].copy_from_slice(&(content as u16).to_be_bytes());
                4
            }
            _ => panic!("DER contents of {content} bytes"),
        };
        self.buf
            .copy_within(start + RESERVED..self.len, start + header_len);
        self.buf[start..start + header_len].copy_from_slice(&header[..header_len]);
        self.len = start + header_len + content;
        self
    }

    fn oid(&mut self, oid: der::asn1::ObjectIdentifier) -> &mut Self {
        self.prim(tag::OID, oid.as_bytes())
    }

    /// A non-negative INTEGER from big-endian bytes (minimal encoding).
    fn uint(&mut self, be: &[u8]) -> &mut Self {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        let digits = &be[first..];
        self.cons(tag::INTEGER, |w| {
            if digits[0] & 0x80 != 0 {
                w.raw(&[0]);
            }
            w.raw(digits);
        })
    }

    /// A BIT STRING with no unused bits.
    fn bits(&mut self, bytes: &[u8]) -> &mut Self {
        self.cons(tag::BIT_STRING, |w| {
            w.raw(&[0]).raw(bytes);
        })
    }
}

/// A certificate's DER (every certificate here is well below this).
pub type CertDer = Der<1024>;
/// An SPDM certificate chain buffer.
pub type ChainBuf = Der<4096>;

/// `AlgorithmIdentifier` of ecdsa-with-SHA384, parameters absent (RFC 5758 §3.2).
pub fn ecdsa_with_sha384() -> Der<16> {
    let mut d = Der::default();
    d.cons(tag::SEQUENCE, |w| {
        w.oid(oid::ECDSA_WITH_SHA384);
    });
    d
}

/// `SubjectPublicKeyInfo` of a P-384 key (RFC 5480), uncompressed point.
pub fn p384_spki(key: &VerifyingKey) -> Der<128> {
    ec_spki(oid::SECP384R1, key.to_sec1_point(false).as_bytes())
}

/// `SubjectPublicKeyInfo` of an EC key on `curve` with the SEC1 point `point`.
pub fn ec_spki(curve: der::asn1::ObjectIdentifier, point: &[u8]) -> Der<128> {
    let mut d = Der::default();
    d.cons(tag::SEQUENCE, |w| {
        w.cons(tag::SEQUENCE, |w| {
            w.oid(oid::EC_PUBLIC_KEY).oid(curve);
        })
        .bits(point);
    });
    d
}

/// The base point of P-256 (SEC 2 §2.4.2), uncompressed: a valid P-256 public key (the one
/// whose private key is 1), for a certificate on the wrong curve.
pub const P256_GENERATOR: [u8; 65] = [
    0x04, // uncompressed
    0x6B, 0x17, 0xD1, 0xF2, 0xE1, 0x2C, 0x42, 0x47, 0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40, 0xF2,
    0x77, 0x03, 0x7D, 0x81, 0x2D, 0xEB, 0x33, 0xA0, 0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98, 0xC2,
    0x96, // x
    0x4F, 0xE3, 0x42, 0xE2, 0xFE, 0x1A, 0x7F, 0x9B, 0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E, 0x16,
    0x2B, 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, 0xCE, 0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF, 0x51,
    0xF5, // y
];

/// `Name` with O=TSM project and CN=`common_name` (UTF8String).
pub fn name(common_name: &str) -> Der<128> {
    let mut d = Der::default();
    d.cons(tag::SEQUENCE, |w| {
        for (attr, value) in [
            (oid::ORGANIZATION, "TSM project"),
            (oid::COMMON_NAME, common_name),
        ] {
            w.cons(tag::SET, |w| {
                w.cons(tag::SEQUENCE, |w| {
                    w.oid(attr).prim(tag::UTF8_STRING, value.as_bytes());
                });
            });
        }
    });
    d
}

/// RFC 7093 §2 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits.
pub fn key_identifier(spki_point: &[u8]) -> [u8; 20] {
    let h = Sha256::digest(spki_point);
    let mut id = [0u8; 20];
    id.copy_from_slice(&h[..20]);
    id
}

/// One extension: its OID, criticality and the DER of its value (inside the OCTET STRING).
#[derive(Clone, Copy, Debug)]
pub struct Extension<'a> {
    pub oid: der::asn1::ObjectIdentifier,
    pub critical: bool,
    pub value: &'a [u8],
}

/// What a certificate says; the defaults per role are in the module doc. Tests change a field
/// to break one rule.
#[derive(Clone, Copy, Debug)]
pub struct CertTemplate<'a> {
    /// `Version`: 2 for v3; `None` leaves the field out (v1).
    pub version: Option<u8>,
    pub serial: u8,
    /// The `signature` field inside the TBS and the outer `signatureAlgorithm` (the same
    /// unless `outer_algorithm` says otherwise), as `AlgorithmIdentifier` DER.
    pub algorithm: &'a [u8],
    pub outer_algorithm: Option<&'a [u8]>,
    pub issuer_cn: &'a str,
    pub subject_cn: &'a str,
    /// `SubjectPublicKeyInfo` DER.
    pub spki: &'a [u8],
    /// The issuer's key identifier, for the authorityKeyIdentifier (none for the root).
    pub authority_key_id: Option<[u8; 20]>,
    /// basicConstraints (always critical): `None` leaves it out, else (cA, pathLenConstraint).
    pub basic_constraints: Option<(bool, Option<u8>)>,
    /// keyUsage's first byte (bit 0 = digitalSignature = 0x80, keyCertSign = 0x04, cRLSign =
    /// 0x02), critical; `None` leaves it out.
    pub key_usage: Option<u8>,
    /// extendedKeyUsage purposes (non-critical); empty leaves it out.
    pub ext_key_usage: &'a [der::asn1::ObjectIdentifier],
    /// Add id-spdm-cert-oids with id-DMTF-hardware-identity (the DeviceCert model's leaf).
    pub hardware_identity: bool,
    /// One more extension, as given.
    pub extra: Option<Extension<'a>>,
}

/// Common names of the identities' certificates.
pub const ROOT_CN: &str = "TSM device model root CA";
pub const INTERMEDIATE_CN: &str = "TSM device model intermediate CA";
pub const DEVICE_CN: &str = "TSM device model device 0001";
pub const OTHER_DEVICE_CN: &str = "TSM device model device 0002";

/// keyUsage bits (first byte).
pub const KU_DIGITAL_SIGNATURE: u8 = 0x80;
pub const KU_KEY_CERT_SIGN: u8 = 0x04;
pub const KU_CRL_SIGN: u8 = 0x02;

impl<'a> CertTemplate<'a> {
    /// The root CA: self-issued.
    pub fn root(algorithm: &'a [u8], spki: &'a [u8]) -> Self {
        CertTemplate {
            version: Some(2),
            serial: 1,
            algorithm,
            outer_algorithm: None,
            issuer_cn: ROOT_CN,
            subject_cn: ROOT_CN,
            spki,
            authority_key_id: None,
            basic_constraints: Some((true, None)),
            key_usage: Some(KU_KEY_CERT_SIGN | KU_CRL_SIGN),
            ext_key_usage: &[],
            hardware_identity: false,
            extra: None,
        }
    }

    /// The intermediate CA, issued by the root.
    pub fn intermediate(algorithm: &'a [u8], spki: &'a [u8], root_key_id: [u8; 20]) -> Self {
        CertTemplate {
            serial: 2,
            issuer_cn: ROOT_CN,
            subject_cn: INTERMEDIATE_CN,
            authority_key_id: Some(root_key_id),
            basic_constraints: Some((true, Some(0))),
            ..Self::root(algorithm, spki)
        }
    }

    /// A device leaf, issued by the intermediate.
    pub fn leaf(
        algorithm: &'a [u8],
        spki: &'a [u8],
        serial: u8,
        subject_cn: &'a str,
        intermediate_key_id: [u8; 20],
    ) -> Self {
        CertTemplate {
            serial,
            issuer_cn: INTERMEDIATE_CN,
            subject_cn,
            authority_key_id: Some(intermediate_key_id),
            basic_constraints: Some((false, None)),
            key_usage: Some(KU_DIGITAL_SIGNATURE),
            ext_key_usage: &[oid::DMTF_EKU_RESPONDER_AUTH],
            hardware_identity: true,
            ..Self::root(algorithm, spki)
        }
    }

    /// The certificate, its TBS signed by `signer` (ecdsa-with-SHA384 whatever `algorithm`
    /// says: a template that names another algorithm makes a certificate that lies).
    pub fn issue(&self, signer: &SigningKey) -> CertDer {
        let mut tbs = CertDer::default();
        tbs.cons(tag::SEQUENCE, |w| self.write_tbs(w));
        let signature: Signature = signer.sign(tbs.as_slice());
        let signature = signature.to_der();
        let mut cert = CertDer::default();
        cert.cons(tag::SEQUENCE, |w| {
            w.raw(tbs.as_slice())
                .raw(self.outer_algorithm.unwrap_or(self.algorithm))
                .bits(signature.as_bytes());
        });
        cert
    }

    fn write_tbs(&self, w: &mut CertDer) {
        if let Some(v) = self.version {
            w.cons(tag::CONTEXT_0_CONSTRUCTED, |w| {
                w.uint(&[v]);
            });
        }
        w.uint(&[self.serial])
            .raw(self.algorithm)
            .raw(name(self.issuer_cn).as_slice())
            .cons(tag::SEQUENCE, |w| {
                w.prim(tag::UTC_TIME, b"250101000000Z")
                    .prim(tag::GENERALIZED_TIME, b"99991231235959Z");
            })
            .raw(name(self.subject_cn).as_slice())
            .raw(self.spki);
        w.cons(tag::CONTEXT_3_CONSTRUCTED, |w| {
            w.cons(tag::SEQUENCE, |w| self.write_extensions(w));
        });
    }

    fn write_extensions(&self, w: &mut CertDer) {
        let extension = |w: &mut CertDer, ext: Extension<'_>| {
            w.cons(tag::SEQUENCE, |w| {
                w.oid(ext.oid);
                if ext.critical {
                    w.prim(tag::BOOLEAN, &[0xFF]);
                }
                w.prim(tag::OCTET_STRING, ext.value);
            });
        };
        if let Some((ca, path_len)) = self.basic_constraints {
            let mut v = Der::<16>::default();
            v.cons(tag::SEQUENCE, |w| {
                if ca {
                    w.prim(tag::BOOLEAN, &[0xFF]);
                }
                if let Some(p) = path_len {
                    w.uint(&[p]);
                }
            });
            extension(
                w,
                Extension {
                    oid: oid::BASIC_CONSTRAINTS,
                    critical: true,
                    value: v.as_slice(),
                },
            );
        }
        if let Some(bits) = self.key_usage {
            // DER drops trailing zero bits (X.690 §11.2.2) and counts them as unused.
            let unused = bits.trailing_zeros().min(7) as u8;
            let mut v = Der::<8>::default();
            v.prim(tag::BIT_STRING, &[unused, bits]);
            extension(
                w,
                Extension {
                    oid: oid::KEY_USAGE,
                    critical: true,
                    value: v.as_slice(),
                },
            );
        }
        if !self.ext_key_usage.is_empty() {
            let mut v = Der::<128>::default();
            v.cons(tag::SEQUENCE, |w| {
                for &purpose in self.ext_key_usage {
                    w.oid(purpose);
                }
            });
            extension(
                w,
                Extension {
                    oid: oid::EXT_KEY_USAGE,
                    critical: false,
                    value: v.as_slice(),
                },
            );
        }
        let point = spki_point(self.spki);
        let mut ski = Der::<32>::default();
        ski.prim(tag::OCTET_STRING, &key_identifier(point));
        extension(
            w,
            Extension {
                oid: oid::SUBJECT_KEY_ID,
                critical: false,
                value: ski.as_slice(),
            },
        );
        if let Some(id) = self.authority_key_id {
            let mut v = Der::<32>::default();
            v.cons(tag::SEQUENCE, |w| {
                w.prim(tag::CONTEXT_0, &id);
            });
            extension(
                w,
                Extension {
                    oid: oid::AUTHORITY_KEY_ID,
                    critical: false,
                    value: v.as_slice(),
                },
            );
        }
        if self.hardware_identity {
            // id-spdm-cert-oids: SEQUENCE OF SEQUENCE { id OID, value OCTET STRING OPTIONAL }.
            let mut v = Der::<32>::default();
            v.cons(tag::SEQUENCE, |w| {
                w.cons(tag::SEQUENCE, |w| {
                    w.oid(oid::DMTF_HARDWARE_IDENTITY);
                });
            });
            extension(
                w,
                Extension {
                    oid: oid::SPDM_CERT_OIDS,
                    critical: false,
                    value: v.as_slice(),
                },
            );
        }
        if let Some(ext) = self.extra {
            extension(w, ext);
        }
    }
}

/// The point inside a `SubjectPublicKeyInfo` (the subjectPublicKey BIT STRING's bytes).
fn spki_point(spki: &[u8]) -> &[u8] {
    use der::Decode;
    spki::SubjectPublicKeyInfoRef::from_der(spki)
        .expect("a SubjectPublicKeyInfo this module wrote")
        .subject_public_key
        .raw_bytes()
}

/// The SPDM certificate chain buffer of `certs` (root first): `Length`, `Reserved`, `RootHash`
/// (SHA-384 of `certs[0]`), the certificates (DSP0274 "Certificate chain format").
pub fn spdm_chain(certs: &[&[u8]]) -> ChainBuf {
    let mut chain = ChainBuf::default();
    let total = 4 + 48 + certs.iter().map(|c| c.len()).sum::<usize>();
    let length = u16::try_from(total).expect("chain below 64 KiB");
    chain.raw(&length.to_le_bytes()).raw(&[0, 0]);
    chain.raw(&Sha384::digest(certs[0]));
    for c in certs {
        chain.raw(c);
    }
    chain
}

/// Every identity the device model ships, by file name (`identity/<name>.bin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The device: root, intermediate, leaf 0001.
    Device,
    /// Another device of the same vendor: the same root and intermediate, leaf 0002.
    OtherDevice,
    /// The device's leaf signed by the root's key (its issuer still names the intermediate).
    BadSignature,
    /// The device's leaf naming an issuer that is not the intermediate (signed by the
    /// intermediate's key, so only the names break the chain).
    BrokenChaining,
    /// The intermediate without cA (basicConstraints present, cA FALSE; keyUsage keyCertSign
    /// kept), issuing the device's leaf.
    NonCaIntermediate,
    /// The leaf's key on P-256 (signed correctly by the intermediate).
    WrongCurve,
    /// The device's chain with its leaf cut 16 bytes short (`Length` matches the cut buffer).
    Truncated,
    /// The device's chain with `RootHash` one bit off.
    BadRootHash,
}

impl Variant {
    pub const ALL: [Variant; 8] = [
        Variant::Device,
        Variant::OtherDevice,
        Variant::BadSignature,
        Variant::BrokenChaining,
        Variant::NonCaIntermediate,
        Variant::WrongCurve,
        Variant::Truncated,
        Variant::BadRootHash,
    ];

    /// The file name's stem under `tests/device-model/identity/`.
    pub fn file_stem(self) -> &'static str {
        match self {
            Variant::Device => "device",
            Variant::OtherDevice => "other_device",
            Variant::BadSignature => "bad_signature",
            Variant::BrokenChaining => "broken_chaining",
            Variant::NonCaIntermediate => "non_ca_intermediate",
            Variant::WrongCurve => "wrong_curve",
            Variant::Truncated => "truncated",
            Variant::BadRootHash => "bad_root_hash",
        }
    }
}

/// The keys and certificates the variants share.
pub struct Authority {
    pub root_key: SigningKey,
    pub intermediate_key: SigningKey,
    pub root: CertDer,
    pub intermediate: CertDer,
    pub intermediate_key_id: [u8; 20],
    pub root_key_id: [u8; 20],
}

impl core::fmt::Debug for Authority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Authority")
    }
}

impl Authority {
    /// The root and the intermediate of every identity here.
    pub fn new() -> Self {
        Self::with_intermediate(|t| t)
    }

    /// The same root, and an intermediate from its default template changed by `change`.
    pub fn with_intermediate(change: impl FnOnce(CertTemplate<'_>) -> CertTemplate<'_>) -> Self {
        let alg = ecdsa_with_sha384();
        let root_key = key(ROOT_KEY);
        let intermediate_key = key(INTERMEDIATE_KEY);
        let root_spki = p384_spki(root_key.verifying_key());
        let intermediate_spki = p384_spki(intermediate_key.verifying_key());
        let root_key_id = key_identifier(spki_point(root_spki.as_slice()));
        let intermediate_key_id = key_identifier(spki_point(intermediate_spki.as_slice()));
        let root = CertTemplate::root(alg.as_slice(), root_spki.as_slice()).issue(&root_key);
        let intermediate = change(CertTemplate::intermediate(
            alg.as_slice(),
            intermediate_spki.as_slice(),
            root_key_id,
        ))
        .issue(&root_key);
        Authority {
            root_key,
            intermediate_key,
            root,
            intermediate,
            intermediate_key_id,
            root_key_id,
        }
    }

    /// A leaf from the default template for `leaf_key` changed by `change`, signed by `signer`
    /// (the intermediate's key unless a test says otherwise).
    pub fn leaf(
        &self,
        leaf_key: &SigningKey,
        serial: u8,
        subject_cn: &str,
        signer: Option<&SigningKey>,
        change: impl FnOnce(CertTemplate<'_>) -> CertTemplate<'_>,
    ) -> CertDer {
        let alg = ecdsa_with_sha384();
        let spki = p384_spki(leaf_key.verifying_key());
        let template = CertTemplate::leaf(
            alg.as_slice(),
            spki.as_slice(),
            serial,
            subject_cn,
            self.intermediate_key_id,
        );
        change(template).issue(signer.unwrap_or(&self.intermediate_key))
    }

    /// The SPDM chain root → intermediate → `leaf`.
    pub fn chain(&self, leaf: &CertDer) -> ChainBuf {
        spdm_chain(&[
            self.root.as_slice(),
            self.intermediate.as_slice(),
            leaf.as_slice(),
        ])
    }
}

impl Default for Authority {
    fn default() -> Self {
        Self::new()
    }
}

/// A template unchanged.
pub fn same(t: CertTemplate<'_>) -> CertTemplate<'_> {
    t
}

/// The chain buffer of `variant`, exactly the committed `identity/<stem>.bin`.
pub fn generate(variant: Variant) -> ChainBuf {
    let ca = Authority::new();
    let device = key(DEVICE_KEY);
    match variant {
        Variant::Device => ca.chain(&ca.leaf(&device, 0x11, DEVICE_CN, None, same)),
        Variant::OtherDevice => {
            let other = key(OTHER_DEVICE_KEY);
            ca.chain(&ca.leaf(&other, 0x12, OTHER_DEVICE_CN, None, same))
        }
        Variant::BadSignature => {
            ca.chain(&ca.leaf(&device, 0x11, DEVICE_CN, Some(&ca.root_key), same))
        }
        Variant::BrokenChaining => {
            ca.chain(&ca.leaf(&device, 0x11, DEVICE_CN, None, |t| CertTemplate {
                issuer_cn: "TSM device model unknown CA",
                ..t
            }))
        }
        Variant::NonCaIntermediate => {
            let ca = Authority::with_intermediate(|t| CertTemplate {
                basic_constraints: Some((false, None)),
                ..t
            });
            ca.chain(&ca.leaf(&device, 0x11, DEVICE_CN, None, same))
        }
        Variant::WrongCurve => {
            let alg = ecdsa_with_sha384();
            let spki = ec_spki(oid::PRIME256V1, &P256_GENERATOR);
            let leaf = CertTemplate::leaf(
                alg.as_slice(),
                spki.as_slice(),
                0x11,
                DEVICE_CN,
                ca.intermediate_key_id,
            )
            .issue(&ca.intermediate_key);
            ca.chain(&leaf)
        }
        Variant::Truncated => {
            let full = generate(Variant::Device);
            let cut = &full.as_slice()[..full.as_slice().len() - 16];
            let mut chain = ChainBuf::default();
            chain.raw(&(cut.len() as u16).to_le_bytes()).raw(&cut[2..]);
            chain
        }
        Variant::BadRootHash => {
            let mut chain = generate(Variant::Device);
            chain.buf[4 + 47] ^= 0x01;
            chain
        }
    }
}
