//! An honest device: the whole life of a session.

extern crate std;

use sha2::{Digest, Sha384};
use tsm_abi::spdm::{MeasurementRecord, ResponseCode};
use tsm_abi::tdisp;
use tsm_device_model::identity::{DEVICE, OTHER_DEVICE};

use super::harness::*;
use crate::requester::{Failure, Phase};

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn connect_certificate_measurements_session_tdisp_key_update_end() {
    let mut link = Link::device();
    assert_eq!(link.connect(), Ok(Done::Connected));
    assert_eq!(link.req.phase(), Phase::Established);
    assert!(link.dev.in_session());
    // GET_VERSION … ALGORITHMS, GET_DIGESTS, the chain in portions, MEASUREMENTS,
    // KEY_EXCHANGE in the clear; FINISH secured.
    let secured: std::vec::Vec<bool> = link.sent.iter().map(|(s, _)| *s).collect();
    assert_eq!(secured.iter().filter(|&&s| s).count(), 1);
    assert!(secured.last().copied().unwrap());

    // The chain as the device serves it, and the digest DIGESTS named.
    let chain = &link.chain[..link.req.chain_len()];
    assert_eq!(chain, DEVICE.chain);
    let digest: [u8; 48] = Sha384::digest(DEVICE.chain).into();
    assert_eq!(link.req.chain_digest(), &digest);

    // The measurement record: the device's five blocks, checked and hashed.
    let record = &link.measurements[..link.req.measurements_len()];
    let parsed = MeasurementRecord::parse(record, 5, 64).unwrap();
    let indices: std::vec::Vec<u8> = parsed.blocks().map(|b| b.index).collect();
    assert_eq!(indices, [1, 2, 3, 0xFD, 0xFE]);
    let m: [u8; 48] = Sha384::digest(record).into();
    assert_eq!(link.req.measurements_digest(), &m);

    // TDISP inside the session.
    let Done::Tdisp(rsp) = link.tdisp(&tdisp_get_version()).unwrap() else {
        panic!()
    };
    let tdisp::Response::Version { versions, .. } = tdisp::Response::decode(&rsp).unwrap() else {
        panic!("{rsp:02x?}")
    };
    assert!(versions.contains(tdisp::TDISP_VERSION_1_0));
    // The TDISP bytes travelled only inside records.
    let (secured, wire) = link.sent.last().unwrap();
    assert!(*secured);
    assert!(!wire.windows(4).any(|w| w == &tdisp_get_version()[..4]));

    // Key update, then TDISP again under the new keys.
    let session = link.req.session_id();
    assert_eq!(link.key_update(), Ok(Done::KeysUpdated));
    assert_eq!(link.req.session_id(), session);
    let mut caps = [0u8; 64];
    let n = tdisp::Request::GetCapabilities {
        interface_id: TDI,
        tsm_caps: 0,
    }
    .encode(&mut caps)
    .unwrap();
    let Done::Tdisp(rsp) = link.tdisp(&caps[..n]).unwrap() else {
        panic!()
    };
    assert!(matches!(
        tdisp::Response::decode(&rsp),
        Ok(tdisp::Response::Capabilities { .. })
    ));

    // Key updates chain: a second one works too.
    assert_eq!(link.key_update(), Ok(Done::KeysUpdated));
    assert!(matches!(
        link.tdisp(&tdisp_get_version()),
        Ok(Done::Tdisp(_))
    ));

    assert_eq!(link.end_session(), Ok(Done::Ended));
    assert_eq!(link.req.phase(), Phase::Idle);
    assert!(!link.dev.in_session());
    // Nothing to talk in any more.
    assert_eq!(
        link.tdisp(&tdisp_get_version()),
        Err(RelayError::Requester(Failure::WrongPhase(Phase::Idle)))
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn a_second_connect_makes_a_new_session() {
    let mut link = Link::device();
    link.connect().unwrap();
    let first = link.req.session_id();
    link.end_session().unwrap();
    link.connect().unwrap();
    assert_ne!(link.req.session_id(), first);
    assert!(matches!(
        link.tdisp(&tdisp_get_version()),
        Ok(Done::Tdisp(_))
    ));
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn another_device_shows_as_another_chain_digest() {
    // The same vendor root, another leaf: it connects, and the evidence tells it apart.
    let mut a = Link::new(DEVICE);
    let mut b = Link::new(OTHER_DEVICE);
    a.connect().unwrap();
    b.connect().unwrap();
    assert_ne!(a.req.chain_digest(), b.req.chain_digest());
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn messages_follow_dsp0274_and_dsp0277() {
    let mut link = Link::device();
    link.connect().unwrap();
    // Plain messages are SPDM 1.2 (GET_VERSION 1.0); the last one, FINISH, is a record of
    // this session.
    let (_, get_version) = &link.sent[0];
    assert_eq!(get_version, &[0x10, 0x84, 0, 0]);
    for (secured, m) in &link.sent[1..link.sent.len() - 1] {
        assert!(!secured);
        assert_eq!(m[0], 0x12);
    }
    let (_, finish) = link.sent.last().unwrap();
    assert_eq!(
        u32::from_le_bytes(finish[..4].try_into().unwrap()),
        link.req.session_id()
    );
    // Length covers ApplicationDataLength, FINISH (4 + 48) and the MAC.
    assert_eq!(u16::from_le_bytes([finish[4], finish[5]]), 2 + 52 + 16);
    // The responses decode as the answers expected (DIGESTS named slot 0).
    let (_, digests) = &link.received[3];
    assert_eq!(digests[1], ResponseCode::Digests as u8);
    assert_eq!(digests[3], 0b1);
}

/// One whole session — connect (chain, measurements, key exchange, FINISH), TDISP, a key
/// update, TDISP under the new keys, END_SESSION — that also runs under Miri: there the P-384
/// results come from the precomputed tables (`spdm::ecc::table` and the device model's), so
/// Miri checks the requester's and the responder's own code, the codec, the transcripts, the
/// key schedule and the records, with its overflow and UB checks. Natively the arithmetic
/// runs, and the test fails unless each table holds exactly the results this session
/// computed, so every entry Miri is answered from is checked against the real arithmetic on
/// every `cargo test` (`TSM_BLESS=1` rewrites them after a change to the session).
#[test]
fn a_whole_session_runs_under_miri() {
    use crate::ecc::{record as requester_record, table as requester_table};
    use tsm_device_model::spdm::{p384_record as responder_record, p384_table as responder_table};
    // Earlier tests on this thread recorded too.
    let _ = (requester_record::take(), responder_record::take());

    let mut link = Link::device();
    assert_eq!(link.connect(), Ok(Done::Connected));
    assert_eq!(
        link.req.chain_digest(),
        &<[u8; 48]>::from(Sha384::digest(DEVICE.chain))
    );
    assert!(matches!(
        link.tdisp(&tdisp_get_version()),
        Ok(Done::Tdisp(_))
    ));
    assert_eq!(link.key_update(), Ok(Done::KeysUpdated));
    assert!(matches!(
        link.tdisp(&tdisp_get_version()),
        Ok(Done::Tdisp(_))
    ));
    assert_eq!(link.end_session(), Ok(Done::Ended));
    assert_eq!(link.req.phase(), Phase::Idle);

    for (file, table, computed) in [
        (
            "src/spdm/ecc/table.txt",
            requester_table::TABLE,
            requester_record::take(),
        ),
        (
            "../../tests/device-model/src/spdm/ecc/table.txt",
            responder_table::TABLE,
            responder_record::take(),
        ),
    ] {
        let text: std::string::String = computed.iter().map(|l| l.clone() + "\n").collect();
        if !cfg!(miri) && std::env::var_os("TSM_BLESS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        assert!(!computed.is_empty());
        assert!(
            table == text,
            "{file} is not what this session computes: rerun with TSM_BLESS=1"
        );
    }
}
