//! The SPDM responder's own rules, driven with the codec (the whole protocol against the TSM's
//! requester is tested in tsm-core).

use tsm_abi::spdm::{
    CapFlags, Capabilities, ErrorCode, Expect, Negotiated, Request, Response, ResponseCode,
    VendorDefined,
};

use super::harness::TDIS;
use crate::identity::DEVICE;
use crate::spdm::{Reply, SpdmDevice};
use crate::{Device, DeviceConfig};

fn device() -> SpdmDevice<'static> {
    SpdmDevice::new(
        Device::new(DeviceConfig::new(&TDIS, [3; 32])).unwrap(),
        DEVICE,
        [4; 32],
    )
}

/// Sends a plain request; returns the plain response bytes.
fn ask(dev: &mut SpdmDevice<'_>, request: &Request<'_>) -> ([u8; 4096], usize) {
    let mut req = [0u8; 256];
    let n = request.encode(&mut req, &Negotiated::NONE).unwrap();
    let mut rsp = [0u8; 4096];
    let Reply::Message { len, secured } = dev.respond(&req[..n], false, &mut rsp).unwrap() else {
        panic!("silent")
    };
    assert!(!secured);
    (rsp, len)
}

fn error_code(bytes: &[u8]) -> Option<ErrorCode> {
    match Response::decode(
        bytes,
        Expect::Plain(ResponseCode::Digests),
        &Negotiated::NONE,
    ) {
        Ok((Response::Error(e), _)) => Some(e.code),
        _ => None,
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the responder derives its P-384 key at creation: minutes under Miri"
)]
fn negotiation_comes_in_order() {
    let mut dev = device();
    // Before VERSION, capabilities are an unexpected request.
    let caps = Request::GetCapabilities(Capabilities {
        ct_exponent: 0,
        flags: CapFlags::KEY_EX_CAP | CapFlags::ENCRYPT_CAP | CapFlags::MAC_CAP,
        data_transfer_size: 4000,
        max_message_size: 4000,
    });
    let (rsp, len) = ask(&mut dev, &caps);
    assert_eq!(error_code(&rsp[..len]), Some(ErrorCode::UNEXPECTED_REQUEST));
    let (rsp, len) = ask(&mut dev, &Request::GetVersion);
    assert!(matches!(
        Response::decode(&rsp[..len], Expect::Plain(ResponseCode::Version), &Negotiated::NONE),
        Ok((Response::Version(v), _)) if v.contains(0x12)
    ));
    let (rsp, len) = ask(&mut dev, &caps);
    assert!(matches!(
        Response::decode(&rsp[..len], Expect::Plain(ResponseCode::Capabilities), &Negotiated::NONE),
        Ok((Response::Capabilities(c), _)) if c.flags.contains(CapFlags::MEAS_CAP_SIG)
    ));
    // Digests before ALGORITHMS: unexpected.
    let (rsp, len) = ask(&mut dev, &Request::GetDigests);
    assert_eq!(error_code(&rsp[..len]), Some(ErrorCode::UNEXPECTED_REQUEST));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the responder derives its P-384 key at creation: minutes under Miri"
)]
fn tdisp_needs_a_session() {
    let mut dev = device();
    ask(&mut dev, &Request::GetVersion);
    let payload = [1, 0x10, 0x81, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let (rsp, len) = ask(
        &mut dev,
        &Request::VendorDefined(VendorDefined::pci_sig(&payload)),
    );
    assert_eq!(error_code(&rsp[..len]), Some(ErrorCode::SESSION_REQUIRED));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the responder derives its P-384 key at creation: minutes under Miri"
)]
fn records_without_a_session_or_garbage_get_plain_errors() {
    let mut dev = device();
    let mut rsp = [0u8; 4096];
    let record = [
        1, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let Reply::Message { len, secured } = dev.respond(&record, true, &mut rsp).unwrap() else {
        panic!()
    };
    assert!(!secured);
    assert_eq!(error_code(&rsp[..len]), Some(ErrorCode::SESSION_REQUIRED));
    // Malformed plain requests.
    let Reply::Message { len, .. } = dev.respond(&[0x11, 0x84, 0, 0], false, &mut rsp).unwrap()
    else {
        panic!()
    };
    assert_eq!(error_code(&rsp[..len]), Some(ErrorCode::VERSION_MISMATCH));
    let Reply::Message { len, .. } = dev.respond(&[0x12, 0x83, 0, 0], false, &mut rsp).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        error_code(&rsp[..len]),
        Some(ErrorCode::UNSUPPORTED_REQUEST)
    );
}
