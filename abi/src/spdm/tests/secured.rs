//! DSP0277 records, the AEAD nonce, and the key schedule's byte strings.

use crate::spdm::crypto::{self, Direction, HandshakeSecrets, RecordError};
use crate::spdm::secured::{self, RecordLayout};
use crate::spdm::signing::{self, Label, SigningContext};
use crate::spdm::*;
use std::vec;

#[test]
fn nonce_xors_the_little_endian_sequence_number_into_the_iv() {
    let iv = [0xF0; 12];
    assert_eq!(secured::nonce(&iv, 0), iv);
    let n = secured::nonce(&iv, 0x0102_0304_0506_0708);
    assert_eq!(
        n,
        [
            0xF8, 0xF7, 0xF6, 0xF5, 0xF4, 0xF3, 0xF2, 0xF1, 0xF0, 0xF0, 0xF0, 0xF0
        ]
    );
}

#[test]
fn record_framing() {
    // SessionID, Length = 2 + 3 + 16, ciphertext (5), MAC, then DOE padding to 32.
    let mut r = vec![0x78, 0x56, 0x34, 0x12, 21, 0];
    r.extend([0xCC; 5]);
    r.extend([0xDD; 16]);
    let l = RecordLayout::parse(&r).unwrap();
    assert_eq!(
        (l.session_id, l.ciphertext_len, l.len),
        (0x1234_5678, 5, 27)
    );
    // One zero byte pads it to a dword: DOE padding. A non-zero byte, or 5 bytes, is not.
    r.push(0);
    assert_eq!(RecordLayout::parse(&r).unwrap().len, 27);
    r[27] = 1;
    assert_eq!(
        RecordLayout::parse(&r).unwrap_err(),
        SpdmError::TrailingBytes
    );
    r[27] = 0;
    r.extend([0; 4]);
    assert_eq!(
        RecordLayout::parse(&r).unwrap_err(),
        SpdmError::TrailingBytes
    );
    // Length shorter than the MAC and the application data length.
    let short = [0, 0, 0, 0, 17, 0];
    assert_eq!(
        RecordLayout::parse(&short).unwrap_err(),
        SpdmError::InvalidField(Field::RecordLength)
    );
    assert_eq!(
        secured::app_data(&[3, 0, 1, 2, 3, 9, 9]),
        Ok(&[1u8, 2, 3][..])
    );
    assert!(secured::app_data(&[4, 0, 1, 2, 3]).is_err());
}

#[test]
fn bin_str_layout() {
    let mut out = [0u8; signing::MAX_BIN_STR];
    let n = signing::bin_str(&mut out, 48, Label::ReqHandshake, &[0xEE; 48]).unwrap();
    // Length (LE) ‖ "spdm1.2 " ‖ "req hs data" ‖ TH1.
    assert_eq!(n, 2 + 8 + 11 + 48);
    assert_eq!(&out[..21], b"\x30\x00spdm1.2 req hs data");
    assert_eq!(&out[21..n], &[0xEE; 48]);
    let n = signing::bin_str(&mut out, 12, Label::Iv, &[]).unwrap();
    assert_eq!(&out[..n], b"\x0c\x00spdm1.2 iv");
    let n = signing::bin_str(&mut out, 48, Label::TrafficUpdate, &[]).unwrap();
    assert_eq!(&out[..n], b"\x30\x00spdm1.2 traffic upd");
}

#[test]
fn signing_prefix_layout() {
    let mut out = [0u8; 200];
    let n = signing::signed_message(&mut out, SigningContext::KeyExchangeRsp, &[0xAA; 48]).unwrap();
    assert_eq!(n, 100 + 48);
    assert_eq!(&out[..64], b"dmtf-spdm-v1.2.*".repeat(4).as_slice());
    // 36 − 34 = 2 zero bytes, then the context, then the hash.
    assert_eq!(&out[64..66], &[0, 0]);
    assert_eq!(&out[66..100], b"responder-key_exchange_rsp signing");
    assert_eq!(&out[100..n], &[0xAA; 48]);
    let n = signing::signed_message(&mut out, SigningContext::Measurements, &[]).unwrap();
    assert_eq!(&out[64..70], &[0; 6]);
    assert_eq!(&out[70..n], b"responder-measurements signing");
}

fn pair() -> (Direction, Direction) {
    let secret = crypto::hash(&[b"a data secret"]);
    (Direction::new(&secret), Direction::new(&secret))
}

#[test]
fn records_round_trip_and_count() {
    let (mut tx, mut rx) = pair();
    let mut rec = [0u8; 128];
    for i in 0..3u8 {
        let msg = [0x12, 0xE9, 1, i];
        let n = tx.seal(0xAABB_CCDD, &msg, &mut rec).unwrap();
        assert_eq!(n, secured::RECORD_OVERHEAD + 4);
        assert_ne!(&rec[8..12], &msg, "encrypted");
        assert_eq!(rx.open(0xAABB_CCDD, &mut rec[..n]).unwrap(), &msg);
    }
    assert_eq!((tx.sequence(), rx.sequence()), (3, 3));
}

#[test]
fn tampering_replay_reordering_and_other_sessions_fail() {
    let (mut tx, mut rx) = pair();
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    let na = tx.seal(7, b"first", &mut a).unwrap();
    let nb = tx.seal(7, b"second", &mut b).unwrap();
    // Reordered: the second record under the first sequence number.
    let mut r = b;
    assert_eq!(rx.open(7, &mut r[..nb]), Err(RecordError::Authentication));
    // Every single-bit flip of header, ciphertext or MAC.
    for i in 0..na {
        let mut r = a;
        r[i] ^= 0x01;
        assert!(rx.open(7, &mut r[..na]).is_err(), "flip at {i}");
    }
    // Another session's ID.
    let mut r = a;
    r[0] ^= 1;
    assert_eq!(rx.open(7, &mut r[..na]), Err(RecordError::WrongSession(6)));
    // Failures consumed nothing: the genuine records still open, in order.
    let mut r = a;
    assert_eq!(rx.open(7, &mut r[..na]).unwrap(), b"first");
    // Replayed.
    let mut r = a;
    assert_eq!(rx.open(7, &mut r[..na]), Err(RecordError::Authentication));
    assert_eq!(rx.open(7, &mut b[..nb]).unwrap(), b"second");
}

#[test]
fn key_update_resets_the_sequence_and_changes_the_key() {
    let (mut tx, mut rx) = pair();
    let mut rec = [0u8; 64];
    let n = tx.seal(1, b"x", &mut rec).unwrap();
    rx.open(1, &mut rec[..n]).unwrap();
    let old = tx.clone();
    tx.update();
    assert_eq!(tx.sequence(), 0);
    assert_ne!(tx.secret(), old.secret());
    let n = tx.seal(1, b"y", &mut rec).unwrap();
    // The peer still on the old key cannot open it; after its own update it can.
    let mut copy = rec;
    assert_eq!(rx.open(1, &mut copy[..n]), Err(RecordError::Authentication));
    rx.update();
    assert_eq!(rx.open(1, &mut rec[..n]).unwrap(), b"y");
}

#[test]
fn key_schedule_separates_everything() {
    let th1 = crypto::hash(&[b"TH1"]);
    let th2 = crypto::hash(&[b"TH2"]);
    let hs = HandshakeSecrets::derive(&[7; 48], &th1);
    let (req_data, rsp_data) = crypto::data_secrets(&hs.handshake, &th2);
    let all = [
        hs.handshake,
        hs.request,
        hs.response,
        req_data,
        rsp_data,
        crypto::finished_key(&hs.request),
        crypto::finished_key(&hs.response),
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Deterministic, and bound to the transcript.
    assert_eq!(HandshakeSecrets::derive(&[7; 48], &th1).request, hs.request);
    assert_ne!(HandshakeSecrets::derive(&[7; 48], &th2).request, hs.request);
    let fk = crypto::finished_key(&hs.request);
    let vd = crypto::hmac(&fk, &th1);
    assert!(crypto::hmac_verify(&fk, &th1, &vd));
    assert!(!crypto::hmac_verify(&fk, &th2, &vd));
    assert!(!crypto::hmac_verify(&fk, &th1, &vd[..47]));
}

#[test]
fn hmac_is_rfc_2104_with_the_key_zero_padded() {
    // `crypto::hmac` pads its 48-byte key to the block itself: check it against the RFC 2104
    // construction H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)) written out here.
    use sha2::{Digest, Sha384};
    let key = crypto::hash(&[b"key"]);
    let data = crypto::hash(&[b"data"]);
    let mut ipad = [0x36u8; 128];
    let mut opad = [0x5Cu8; 128];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha384::new()
        .chain_update(ipad)
        .chain_update(data)
        .finalize();
    let outer: [u8; 48] = Sha384::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into();
    assert_eq!(crypto::hmac(&key, &data), outer);
}

#[test]
fn sequence_numbers_run_out_instead_of_wrapping() {
    let mut d = Direction::new(&[1; 48]);
    // Reach the last sequence number through the byte view: 2^64 seals are not a test.
    use zerocopy::IntoBytes;
    let bytes = d.as_mut_bytes();
    let at = bytes.len() - 8;
    bytes[at..].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut rec = [0u8; 64];
    assert_eq!(
        d.seal(1, b"z", &mut rec),
        Err(RecordError::SequenceExhausted)
    );
}

#[test]
fn key_schedule_is_rfc_5869_hkdf() {
    // The module's own one-block HKDF against the `hkdf` crate, for every secret, key and IV
    // the schedule derives.
    use hkdf::Hkdf;
    use sha2::Sha384;
    use zerocopy::IntoBytes;
    let expand = |prk: &[u8; 48], label: Label, context: &[u8], out: &mut [u8]| {
        let mut info = [0u8; signing::MAX_BIN_STR];
        let n = signing::bin_str(&mut info, out.len() as u16, label, context).unwrap();
        Hkdf::<Sha384>::from_prk(prk)
            .unwrap()
            .expand(&info[..n], out)
            .unwrap();
    };
    let digest = |prk: &[u8; 48], label: Label, context: &[u8]| {
        let mut out = [0u8; 48];
        expand(prk, label, context, &mut out);
        out
    };
    let extract = |salt: &[u8; 48], ikm: &[u8]| -> [u8; 48] {
        Hkdf::<Sha384>::extract(Some(salt), ikm).0.into()
    };
    let (th1, th2) = (crypto::hash(&[b"TH1"]), crypto::hash(&[b"TH2"]));
    for dhe in [[0u8; 48], [7; 48], crypto::hash(&[b"DHE"])] {
        let hs = HandshakeSecrets::derive(&dhe, &th1);
        let handshake = extract(&[0; 48], &dhe);
        assert_eq!(hs.handshake, handshake);
        assert_eq!(hs.request, digest(&handshake, Label::ReqHandshake, &th1));
        assert_eq!(hs.response, digest(&handshake, Label::RspHandshake, &th1));
        let salt = digest(&handshake, Label::Derived, &[]);
        let master = extract(&salt, &[0; 48]);
        let (req, rsp) = crypto::data_secrets(&hs.handshake, &th2);
        assert_eq!(req, digest(&master, Label::ReqData, &th2));
        assert_eq!(rsp, digest(&master, Label::RspData, &th2));
        assert_eq!(
            crypto::finished_key(&hs.request),
            digest(&hs.request, Label::Finished, &[])
        );
        for secret in [hs.request, rsp] {
            let mut d = Direction::new(&secret);
            let (mut key, mut iv) = ([0u8; 32], [0u8; 12]);
            expand(&secret, Label::Key, &[], &mut key);
            expand(&secret, Label::Iv, &[], &mut iv);
            assert_eq!(&d.as_bytes()[..48], &secret);
            assert_eq!(&d.as_bytes()[48..80], &key);
            assert_eq!(&d.as_bytes()[80..92], &iv);
            d.update();
            let next = digest(&secret, Label::TrafficUpdate, &[]);
            assert_eq!(d.secret(), &next);
            expand(&next, Label::Key, &[], &mut key);
            assert_eq!(&d.as_bytes()[48..80], &key);
        }
    }
}
