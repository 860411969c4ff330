//! The committed identities are the generator's output, and each identity's key is the one its
//! leaf certifies. (That the chains verify, or fail as they should, is tsm-core's test:
//! `spdm::cert::tests`.)

use super::generate::{self, Variant};
use super::{ALL, DEVICE, OTHER_DEVICE, malformed};

/// Where `needle` occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
// 3 to 6 ECDSA signatures per chain: minutes each under Miri, and no memory question the
// other tests here do not ask.
#[cfg_attr(miri, ignore)]
fn committed_chains_are_what_the_generator_makes() {
    for (identity, variant) in ALL.iter().zip(Variant::ALL) {
        assert_eq!(identity.variant, variant);
        assert!(
            generate::generate(variant).as_slice() == identity.chain,
            "identity/{}.bin is stale: run `cargo run -p tsm-device-model --example identity`",
            variant.file_stem()
        );
    }
}

#[test]
#[cfg_attr(miri, ignore)] // a P-384 scalar multiplication per key
fn each_leaf_certifies_its_signing_key() {
    for identity in [DEVICE, OTHER_DEVICE] {
        let point = identity.signing_key().verifying_key().to_sec1_point(false);
        let at = find(identity.chain, point.as_bytes()).expect("the leaf's key is in the chain");
        // The leaf is the last certificate, so its key is in the chain's last part.
        assert!(at > identity.chain.len() / 2, "{:?}", identity.variant);
    }
    let device = DEVICE.signing_key().verifying_key().to_sec1_point(false);
    assert!(find(OTHER_DEVICE.chain, device.as_bytes()).is_none());
}

#[test]
fn chains_have_the_spdm_header() {
    for identity in ALL {
        let c = identity.chain;
        assert!(c.len() > 52, "{:?}", identity.variant);
        assert_eq!(usize::from(u16::from_le_bytes([c[0], c[1]])), c.len());
        assert_eq!(&c[2..4], &[0, 0], "Reserved");
        assert_eq!(c[52], 0x30, "a certificate (SEQUENCE) follows RootHash");
    }
}

/// The size of the DER element at the start of `der` (short or two-byte long form).
fn element_len(der: &[u8]) -> usize {
    match der[1] {
        n @ 0..=0x7F => 2 + usize::from(n),
        0x81 => 3 + usize::from(der[2]),
        0x82 => 4 + usize::from(u16::from_be_bytes([der[2], der[3]])),
        n => panic!("length form {n:#x}"),
    }
}

#[test]
fn the_other_device_shares_the_vendor_and_differs_in_the_leaf() {
    // Same RootHash, same root and intermediate certificates: only the leaf differs.
    let root = element_len(&DEVICE.chain[52..]);
    let intermediate = element_len(&DEVICE.chain[52 + root..]);
    let root_and_intermediate = 52 + root + intermediate;
    assert_eq!(
        &DEVICE.chain[2..root_and_intermediate],
        &OTHER_DEVICE.chain[2..root_and_intermediate]
    );
    assert_ne!(DEVICE.chain, OTHER_DEVICE.chain);
    for m in malformed::ALL {
        assert_ne!(m.chain, DEVICE.chain, "{:?}", m.variant);
    }
}
