//! Each misbehaviour really emits the broken form (checked with the codec), alone and combined,
//! and clearing them restores the honest device.

use tsm_abi::tdisp::*;

use super::harness::*;
use crate::Misbehaviour;

fn lock_request(id: InterfaceId) -> Request<'static> {
    Request::LockInterface {
        interface_id: id,
        params: ALL_LOCK_FLAGS,
    }
}

#[test]
fn error_for_a_chosen_request() {
    let mut dev = device();
    dev.enable(Misbehaviour::ErrorFor {
        request: RequestCode::LockInterface,
        code: ErrorCode::InsufficientEntropy,
    });
    assert_eq!(
        error_of(&mut dev, &lock_request(TDI_A)),
        Some(ErrorCode::InsufficientEntropy)
    );
    // Refused without being processed; other requests are unaffected.
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigUnlocked);
    assert_eq!(
        error_of(
            &mut dev,
            &Request::GetVersion {
                interface_id: TDI_A
            }
        ),
        None
    );
    dev.clear_misbehaviour();
    lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
}

#[test]
fn wrong_response_type() {
    let mut dev = device();
    dev.enable(Misbehaviour::WrongResponseType);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let req = lock_request(TDI_A);
    let m = send(&mut dev, &req, &mut rsp);
    let answer = Response::decode(&rsp[..m]).unwrap();
    assert_eq!(answer.code(), ResponseCode::StopInterface);
    assert!(!answer.answers(&req));
    // The device did process the lock.
    assert_eq!(dev.tdi_state(TDI_A), Some(TdiState::ConfigLocked));
    let stop = Request::StopInterface {
        interface_id: TDI_A,
    };
    let m = send(&mut dev, &stop, &mut rsp);
    let answer = Response::decode(&rsp[..m]).unwrap();
    assert_eq!(answer.code(), ResponseCode::StartInterface);
    assert!(!answer.answers(&stop));
}

#[test]
fn truncated_response() {
    let mut dev = device();
    let mut honest = [0u8; 2 * MAX_MESSAGE_SIZE];
    let full = send(&mut device(), &lock_request(TDI_A), &mut honest);
    dev.enable(Misbehaviour::TruncatedResponse);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let m = send(&mut dev, &lock_request(TDI_A), &mut rsp);
    assert_eq!(m, full - 1);
    assert_eq!(&rsp[..m], &honest[..m], "same nonce, one byte short");
    assert_eq!(Response::decode(&rsp[..m]), Err(TdispError::Truncated));
}

#[test]
fn oversized_response() {
    let mut dev = device();
    dev.enable(Misbehaviour::OversizedResponse);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let m = send(
        &mut dev,
        &Request::GetDeviceInterfaceState {
            interface_id: TDI_B,
        },
        &mut rsp,
    );
    assert_eq!(m, MAX_MESSAGE_SIZE + 1);
    assert_eq!(Response::decode(&rsp[..m]), Err(TdispError::Oversized));
    let mut page = [0u8; MAX_MESSAGE_SIZE];
    let mut req = [0u8; 64];
    let n = Request::GetVersion {
        interface_id: TDI_B,
    }
    .encode(&mut req)
    .unwrap();
    assert_eq!(
        dev.respond(&req[..n], &mut page),
        Err(crate::ModelError::ResponseBufferTooSmall)
    );
}

#[test]
fn garbage_bytes() {
    let mut dev = device();
    dev.enable(Misbehaviour::Garbage);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let mut lengths = [0usize; 50];
    for slot in lengths.iter_mut() {
        let req = Request::GetDeviceInterfaceState {
            interface_id: TDI_C,
        };
        let m = send(&mut dev, &req, &mut rsp);
        assert!((1..=64).contains(&m));
        *slot = m;
        assert!(
            Response::decode(&rsp[..m]).map_or(true, |r| !r.answers(&req)),
            "garbage passed as an answer: {:?}",
            &rsp[..m]
        );
    }
    assert!(lengths.iter().any(|&l| l != lengths[0]), "lengths vary");
}

#[test]
fn report_changing_between_portions() {
    let mut honest_dev = device();
    lock(&mut honest_dev, TDI_A, ALL_LOCK_FLAGS);
    let mut honest = [0u8; 1024];
    let honest_len = fetch_report(&mut honest_dev, TDI_A, &mut honest).unwrap();

    let mut dev = device();
    lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    dev.enable(Misbehaviour::ReportChangesBetweenPortions);
    // The first portion is the honest one; the next ones come from a longer report.
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let first = Request::GetDeviceInterfaceReport {
        interface_id: TDI_A,
        offset: 0,
        length: 24,
    };
    let Response::DeviceInterfaceReport {
        portion,
        remainder_length,
        ..
    } = exchange(&mut dev, &first, &mut rsp)
    else {
        panic!("no portion")
    };
    assert_eq!(portion, &honest[..24]);
    assert_eq!(usize::from(remainder_length), honest_len - 24);
    let second = Request::GetDeviceInterfaceReport {
        interface_id: TDI_A,
        offset: 24,
        length: 24,
    };
    let Response::DeviceInterfaceReport {
        remainder_length, ..
    } = exchange(&mut dev, &second, &mut rsp)
    else {
        panic!("no portion")
    };
    assert_eq!(usize::from(remainder_length), honest_len + 16 - 48);

    // The requester's reassembly notices.
    let mut dev = device();
    lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    dev.enable(Misbehaviour::ReportChangesBetweenPortions);
    let mut buf = [0u8; 1024];
    assert_eq!(
        fetch_report(&mut dev, TDI_A, &mut buf),
        Err(TdispError::Inconsistent(Field::RemainderLength))
    );
}

#[test]
fn wrong_interface_id() {
    let mut dev = device();
    dev.enable(Misbehaviour::WrongInterfaceId);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    for id in [TDI_A, TDI_C] {
        let req = lock_request(id);
        let m = send(&mut dev, &req, &mut rsp);
        let answer = Response::decode(&rsp[..m]).unwrap();
        assert_eq!(answer.code(), ResponseCode::LockInterface);
        assert_ne!(answer.interface_id(), id);
        assert_eq!(answer.interface_id().segment(), id.segment());
        assert!(!answer.answers(&req));
    }
}

#[test]
fn wrong_version() {
    let mut dev = device();
    dev.enable(Misbehaviour::WrongVersion);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let m = send(
        &mut dev,
        &Request::GetVersion {
            interface_id: TDI_A,
        },
        &mut rsp,
    );
    assert_eq!(
        Response::decode(&rsp[..m]),
        Err(TdispError::VersionMismatch(0x11))
    );
}

#[test]
fn knobs_combine_and_clear() {
    let mut dev = device();
    dev.enable(Misbehaviour::WrongInterfaceId);
    dev.enable(Misbehaviour::WrongResponseType);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let req = lock_request(TDI_B);
    let m = send(&mut dev, &req, &mut rsp);
    let answer = Response::decode(&rsp[..m]).unwrap();
    assert_eq!(answer.code(), ResponseCode::StopInterface);
    assert_ne!(answer.interface_id(), TDI_B);

    // With the wrong type still on, the truncated answer is a 15-byte header: Truncated.
    dev.enable(Misbehaviour::TruncatedResponse);
    let m = send(
        &mut dev,
        &Request::GetVersion {
            interface_id: TDI_A,
        },
        &mut rsp,
    );
    assert_eq!(m, 15);
    assert_eq!(Response::decode(&rsp[..m]), Err(TdispError::Truncated));

    dev.clear_misbehaviour();
    dev.enable(Misbehaviour::WrongVersion);
    dev.enable(Misbehaviour::TruncatedResponse);
    let m = send(
        &mut dev,
        &Request::GetVersion {
            interface_id: TDI_A,
        },
        &mut rsp,
    );
    assert_eq!(rsp[0], 0x11);
    assert_eq!(
        Response::decode(&rsp[..m]),
        Err(TdispError::VersionMismatch(0x11))
    );

    dev.clear_misbehaviour();
    let Response::DeviceInterfaceState { state, .. } = exchange(
        &mut dev,
        &Request::GetDeviceInterfaceState {
            interface_id: TDI_B,
        },
        &mut rsp,
    ) else {
        panic!("not a state")
    };
    assert_eq!(
        state,
        TdiState::ConfigLocked,
        "the misbehaving lock was processed"
    );
}
