//! A misbehaving device, and a host that tampers with what it relays: each ends as a clear
//! failure, with the requester FAILED and its secrets gone.

extern crate std;

use tsm_abi::spdm::crypto::RecordError;
use tsm_abi::spdm::{RequestCode, SpdmError};
use tsm_device_model::identity::malformed;
use tsm_device_model::spdm::SpdmMisbehaviour as M;

use super::harness::*;
use crate::cert::CertError;
use crate::requester::{Failure, Phase};

fn failed(link: &Link, result: Result<Done, RelayError>, expected: RelayError) {
    assert_eq!(result, Err(expected));
    assert_eq!(link.req.phase(), Phase::Failed);
    assert_eq!(link.req.session_id(), 0, "secrets erased");
}

fn connected() -> Link {
    let mut link = Link::device();
    link.connect().unwrap();
    link
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn bad_measurement_signature() {
    let mut link = Link::device();
    link.dev.enable(M::BadMeasurementSignature);
    let r = link.connect();
    failed(
        &link,
        r,
        RelayError::Requester(Failure::MeasurementSignature),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn bad_key_exchange_signature() {
    let mut link = Link::device();
    link.dev.enable(M::BadKeyExchangeSignature);
    let r = link.connect();
    failed(
        &link,
        r,
        RelayError::Requester(Failure::KeyExchangeSignature),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn a_chain_that_does_not_verify() {
    let mut link = Link::new(malformed::BAD_ROOT_HASH);
    let r = link.connect();
    failed(
        &link,
        r,
        RelayError::Requester(Failure::Certificate(CertError::RootHash)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn tampered_ciphertext() {
    // During the handshake: FINISH_RSP does not verify.
    let mut link = Link::device();
    link.dev.enable(M::TamperCiphertext);
    let r = link.connect();
    failed(
        &link,
        r,
        RelayError::Requester(Failure::Record(RecordError::Authentication)),
    );
    // In the session.
    let mut link = connected();
    link.dev.enable(M::TamperCiphertext);
    let r = link.tdisp(&tdisp_get_version());
    failed(
        &link,
        r,
        RelayError::Requester(Failure::Record(RecordError::Authentication)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn replayed_record() {
    let mut link = connected();
    link.tdisp(&tdisp_get_version()).unwrap();
    link.dev.enable(M::ReplayRecord);
    let r = link.tdisp(&tdisp_get_version());
    failed(
        &link,
        r,
        RelayError::Requester(Failure::Record(RecordError::Authentication)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn reordered_record() {
    let mut link = connected();
    link.dev.enable(M::SkipSequenceNumber);
    let r = link.tdisp(&tdisp_get_version());
    failed(
        &link,
        r,
        RelayError::Requester(Failure::Record(RecordError::Authentication)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn session_that_stops_half_way() {
    for code in [
        RequestCode::GetMeasurements,
        RequestCode::KeyExchange,
        RequestCode::Finish,
    ] {
        let mut link = Link::device();
        link.dev.enable(M::StopAt(code));
        let r = link.connect();
        failed(&link, r, RelayError::NoResponse);
        // Nothing continues on a dead connection.
        assert_eq!(
            link.tdisp(&tdisp_get_version()),
            Err(RelayError::Requester(Failure::WrongPhase(Phase::Failed)))
        );
    }
    for code in [
        RequestCode::KeyUpdate,
        RequestCode::VendorDefined,
        RequestCode::EndSession,
    ] {
        let mut link = connected();
        link.dev.enable(M::StopAt(code));
        let r = match code {
            RequestCode::KeyUpdate => link.key_update(),
            RequestCode::VendorDefined => link.tdisp(&tdisp_get_version()),
            _ => link.end_session(),
        };
        failed(&link, r, RelayError::NoResponse);
    }
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn a_failed_connection_can_start_over() {
    let mut link = Link::device();
    link.dev.enable(M::StopAt(RequestCode::Finish));
    assert!(link.connect().is_err());
    link.dev.clear_misbehaviour();
    assert_eq!(link.connect(), Ok(Done::Connected));
    assert!(matches!(
        link.tdisp(&tdisp_get_version()),
        Ok(Done::Tdisp(_))
    ));
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn host_flipping_any_response_byte_is_caught() {
    // Flip one bit of one byte of one response of a connect, for every response and a spread
    // of bytes: the connect fails, except where the flipped byte is a reserved field that
    // DSP0274 tells receivers to ignore in a message outside every signed transcript
    // (`DIGESTS` Param1, `CERTIFICATE` Param2), and then the evidence is the honest one. A
    // reserved byte inside VCA is caught: the device signed what it sent.
    use tsm_abi::spdm::ResponseCode as C;
    let mut honest = Link::device();
    honest.connect().unwrap();
    let responses: std::vec::Vec<std::vec::Vec<u8>> =
        honest.received.iter().map(|(_, b)| b.clone()).collect();
    for (at, response) in responses.iter().enumerate() {
        let len = response.len();
        let step = (len / 12).max(1);
        for byte in (0..len).step_by(step).chain([2, 3]) {
            let mut link = Link::device();
            let r = link.connect_with(&mut |i, m: &mut std::vec::Vec<u8>| {
                if i == at {
                    m[byte] ^= 0x01;
                }
            });
            let ignored = matches!(
                (response[1], byte),
                (c, 2) if c == C::Digests as u8
            ) || matches!((response[1], byte), (c, 3) if c == C::Certificate as u8);
            if ignored {
                assert_eq!(r, Ok(Done::Connected));
                assert_eq!(link.req.chain_digest(), honest.req.chain_digest());
                assert_eq!(
                    link.req.measurements_digest(),
                    honest.req.measurements_digest()
                );
            } else {
                assert!(
                    matches!(r, Err(RelayError::Requester(_))),
                    "response {at} byte {byte}: {r:?}"
                );
                assert_eq!(link.req.phase(), Phase::Failed);
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn host_replaying_a_record_of_an_earlier_session() {
    let mut link = connected();
    link.tdisp(&tdisp_get_version()).unwrap();
    let (_, old) = link.received.last().unwrap().clone();
    link.end_session().unwrap();
    link.connect().unwrap();
    // The host answers the new session's TDISP request with the old session's record.
    let mut out = [0u8; crate::requester::MAX_RECORD];
    link.req
        .start_tdisp(&tdisp_get_version(), &mut out)
        .unwrap();
    let mut replay = old.clone();
    let mut chain = [0u8; 16];
    let mut meas = [0u8; 16];
    let mut evidence = crate::requester::Evidence {
        chain: &mut chain,
        measurements: &mut meas,
    };
    let r = link
        .req
        .respond(&mut replay, &mut out, &mut evidence, &link.rng);
    assert!(matches!(
        r,
        Err(Failure::Record(
            RecordError::WrongSession(_) | RecordError::Authentication
        ))
    ));
    assert_eq!(link.req.phase(), Phase::Failed);
}

#[test]
#[cfg_attr(miri, ignore = "P-384 work takes minutes per operation under Miri")]
fn host_dropping_a_response_or_sending_garbage() {
    // The plain answer to GET_VERSION replaced by garbage, truncated, or padded past DOE's 3.
    for bad in [&[0xFFu8; 7][..], &[0x10, 0x04, 0, 0, 0][..]] {
        let mut link = Link::device();
        let r = link.connect_with(&mut |i, m: &mut std::vec::Vec<u8>| {
            if i == 0 {
                *m = bad.to_vec();
            }
        });
        assert!(
            matches!(r, Err(RelayError::Requester(Failure::Malformed(_)))),
            "{r:?}"
        );
    }
    let mut link = Link::device();
    let r = link.connect_with(&mut |i, m: &mut std::vec::Vec<u8>| {
        if i == 0 {
            m.extend([0; 4]);
        }
    });
    assert_eq!(
        r,
        Err(RelayError::Requester(Failure::Malformed(
            SpdmError::TrailingBytes
        )))
    );
}
