//! The device's SPDM identity: certificate chains the project makes itself ([`generate`]),
//! committed as `tests/device-model/identity/<name>.bin` (SPDM chain buffers, DSP0274
//! "Certificate chain format" with a SHA-384 `RootHash`), and the leaf keys that sign for them.
//!
//! - [`DEVICE`]: the device. Root CA → intermediate CA → leaf "device 0001".
//! - [`OTHER_DEVICE`]: another device of the same vendor (same root and intermediate, leaf
//!   "device 0002", its own key), for the swap-the-device scenarios: a guest policy that pins
//!   only the vendor's root accepts both, so what tells them apart is the chain digest bound
//!   into the evidence.
//! - [`malformed`]: chains that must not verify, one rule broken in each.
//!
//! Regenerate after changing the generator: `cargo run -p tsm-device-model --example identity`
//! (the test `identity::tests::committed_chains_are_what_the_generator_makes` fails until then).
//! To read a certificate with other tools: `tail -c +53 identity/device.bin | openssl x509
//! -inform der -text` shows the root (the first certificate after the 52-byte header).

pub mod generate;

use p384::ecdsa::SigningKey;

/// One identity: the chain a device serves in slot 0 and the key its leaf certifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The generator's variant (and the file's name).
    pub variant: generate::Variant,
    /// The SPDM certificate chain buffer: `Length`, `Reserved`, `RootHash`, certificates.
    pub chain: &'static [u8],
    /// Label of the leaf key ([`generate::key`]).
    leaf_key: &'static str,
}

impl DeviceIdentity {
    /// The leaf's private key: what the responder signs CHALLENGE_AUTH, MEASUREMENTS and
    /// KEY_EXCHANGE_RSP with. For a malformed chain, the key of the leaf it was made from
    /// (the device's), so only the chain is wrong.
    pub fn signing_key(&self) -> SigningKey {
        generate::key(self.leaf_key)
    }

    /// This identity with its leaf key's secret scalar derived (a SHA-384 or two; the
    /// public point is never needed to sign through `spdm::ecc`), which a harness that builds
    /// a responder per run (the dispatcher fuzzer) does once.
    pub fn keyed(self) -> KeyedIdentity {
        KeyedIdentity {
            identity: self,
            key: generate::secret(self.leaf_key),
        }
    }
}

/// A [`DeviceIdentity`] and its leaf key ([`DeviceIdentity::keyed`]).
#[derive(Clone, Debug)]
pub struct KeyedIdentity {
    pub(crate) identity: DeviceIdentity,
    pub(crate) key: p384::SecretKey,
}

macro_rules! chain_file {
    ($stem:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/identity/",
            $stem,
            ".bin"
        ))
    };
}

/// The device (root → intermediate → leaf "device 0001").
pub const DEVICE: DeviceIdentity = DeviceIdentity {
    variant: generate::Variant::Device,
    chain: chain_file!("device"),
    leaf_key: generate::DEVICE_KEY,
};

/// Another device of the same vendor (root → intermediate → leaf "device 0002").
pub const OTHER_DEVICE: DeviceIdentity = DeviceIdentity {
    variant: generate::Variant::OtherDevice,
    chain: chain_file!("other_device"),
    leaf_key: generate::OTHER_DEVICE_KEY,
};

/// Chains that must not verify, each the device's chain with one rule broken (the generator's
/// [`generate::Variant`] docs say how). The leaf key is the device's.
pub mod malformed {
    use super::{DeviceIdentity, generate::DEVICE_KEY, generate::Variant};

    /// The leaf's signature is the root's, not its issuer's (RFC 5280 §6.1.3 (a)(1)).
    pub const BAD_SIGNATURE: DeviceIdentity = DeviceIdentity {
        variant: Variant::BadSignature,
        chain: chain_file!("bad_signature"),
        leaf_key: DEVICE_KEY,
    };
    /// The leaf's issuer is not the intermediate's subject (RFC 5280 §6.1.3 (a)(4)).
    pub const BROKEN_CHAINING: DeviceIdentity = DeviceIdentity {
        variant: Variant::BrokenChaining,
        chain: chain_file!("broken_chaining"),
        leaf_key: DEVICE_KEY,
    };
    /// The intermediate is not a CA (RFC 5280 §4.2.1.9, §6.1.4 (k)).
    pub const NON_CA_INTERMEDIATE: DeviceIdentity = DeviceIdentity {
        variant: Variant::NonCaIntermediate,
        chain: chain_file!("non_ca_intermediate"),
        leaf_key: DEVICE_KEY,
    };
    /// The leaf's key is on P-256, not P-384 (RFC 5480 §2.1.1.1).
    pub const WRONG_CURVE: DeviceIdentity = DeviceIdentity {
        variant: Variant::WrongCurve,
        chain: chain_file!("wrong_curve"),
        leaf_key: DEVICE_KEY,
    };
    /// The leaf's DER ends 16 bytes early.
    pub const TRUNCATED: DeviceIdentity = DeviceIdentity {
        variant: Variant::Truncated,
        chain: chain_file!("truncated"),
        leaf_key: DEVICE_KEY,
    };
    /// `RootHash` is not the root certificate's digest (DSP0274 "Certificate chain format").
    pub const BAD_ROOT_HASH: DeviceIdentity = DeviceIdentity {
        variant: Variant::BadRootHash,
        chain: chain_file!("bad_root_hash"),
        leaf_key: DEVICE_KEY,
    };

    /// Every malformed chain.
    pub const ALL: [DeviceIdentity; 6] = [
        BAD_SIGNATURE,
        BROKEN_CHAINING,
        NON_CA_INTERMEDIATE,
        WRONG_CURVE,
        TRUNCATED,
        BAD_ROOT_HASH,
    ];
}

/// Every identity the device model ships, good and malformed, in [`generate::Variant::ALL`]'s
/// order.
pub const ALL: [DeviceIdentity; 8] = [
    DEVICE,
    OTHER_DEVICE,
    malformed::BAD_SIGNATURE,
    malformed::BROKEN_CHAINING,
    malformed::NON_CA_INTERMEDIATE,
    malformed::WRONG_CURVE,
    malformed::TRUNCATED,
    malformed::BAD_ROOT_HASH,
];

#[cfg(test)]
mod tests;
