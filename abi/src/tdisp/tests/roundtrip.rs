//! Every message encodes and decodes back; layouts match the spec byte for byte; encode refuses
//! what decode would refuse.

use super::samples::*;
use crate::tdisp::*;

#[test]
fn every_request_round_trips() {
    for req in requests() {
        let (buf, len) = req_bytes(&req);
        let bytes = &buf[..len];
        assert_eq!(bytes[0], TDISP_VERSION_1_0);
        assert_eq!(bytes[1], req.code().to_wire());
        assert_eq!(Request::decode(bytes), Ok(req));
        assert_eq!(
            Response::decode(bytes),
            Err(TdispError::UnknownMessageType(bytes[1]))
        );
    }
}

#[test]
fn every_response_round_trips() {
    for rsp in responses() {
        let (buf, len) = rsp_bytes(&rsp);
        let bytes = &buf[..len];
        assert_eq!(bytes[0], TDISP_VERSION_1_0);
        assert_eq!(bytes[1], rsp.code().to_wire());
        assert_eq!(Response::decode(bytes), Ok(rsp));
        assert_eq!(
            Request::decode(bytes),
            Err(TdispError::UnknownMessageType(bytes[1]))
        );
    }
}

#[test]
fn every_code_is_covered_by_the_samples() {
    for code in RequestCode::ALL {
        assert!(requests().iter().any(|r| r.code() == *code), "{code:?}");
    }
    for code in ResponseCode::ALL {
        assert!(responses().iter().any(|r| r.code() == *code), "{code:?}");
    }
}

#[test]
fn header_layout_matches_spec() {
    let (buf, len) = req_bytes(&Request::GetVersion {
        interface_id: InterfaceId::new(0x1234, Some(0x56)),
    });
    assert_eq!(
        &buf[..len],
        &[
            0x10, 0x81, 0, 0, 0x34, 0x12, 0x56, 0x01, 0, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    let id = InterfaceId::from_function_id(0x0156_1234).unwrap();
    assert_eq!(id.requester_id(), 0x1234);
    assert_eq!(id.segment(), Some(0x56));
    assert_eq!(InterfaceId::new(0xABCD, None).function_id(), 0xABCD);
    assert_eq!(InterfaceId::new(0xABCD, None).segment(), None);
}

#[test]
fn lock_request_layout_matches_spec() {
    let req = Request::LockInterface {
        interface_id: InterfaceId::new(0x0008, None),
        params: LockInterfaceParams {
            flags: LockFlags::NO_FW_UPDATE | LockFlags::ALL_REQUEST_REDIRECT,
            default_stream_id: 0x22,
            mmio_reporting_offset: 0x0102_0304_0506_0708,
            bind_p2p_address_mask: 0x1112_1314_1516_1718,
        },
    };
    let (buf, len) = req_bytes(&req);
    let mut want = [0u8; 36];
    want[..6].copy_from_slice(&[0x10, 0x83, 0, 0, 0x08, 0x00]);
    want[16..20].copy_from_slice(&[0x11, 0x00, 0x22, 0x00]);
    want[20..28].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    want[28..36].copy_from_slice(&[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
    assert_eq!(&buf[..len], &want);
}

#[test]
fn capabilities_layout_matches_spec() {
    let mut c = caps();
    c.req_msgs_supported = SupportedRequests::NONE
        .with(RequestCode::GetVersion)
        .with(RequestCode::Vdm);
    c.lock_interface_flags_supported = LockFlags::BIND_P2P;
    let (buf, len) = rsp_bytes(&Response::Capabilities {
        interface_id: InterfaceId::new(0, None),
        caps: c,
    });
    assert_eq!(len, 16 + 28);
    let p = &buf[16..len];
    assert_eq!(&p[0..4], &[0; 4]);
    // bit 1 = 0x81, bit 11 = 0x8B
    assert_eq!(&p[4..6], &[0x02, 0x08]);
    assert_eq!(&p[6..20], &[0; 14]);
    assert_eq!(&p[20..22], &[0x08, 0x00]);
    assert_eq!(&p[22..25], &[0; 3]);
    assert_eq!(&p[25..28], &[52, 1, 4]);
    assert!(c.req_msgs_supported.contains(RequestCode::Vdm));
    assert!(!c.req_msgs_supported.contains(RequestCode::BindP2pStream));
}

#[test]
fn report_portion_and_error_layouts_match_spec() {
    let (buf, len) = rsp_bytes(&Response::DeviceInterfaceReport {
        interface_id: TDI,
        portion: &[9, 8, 7],
        remainder_length: 0x0102,
    });
    assert_eq!(&buf[16..len], &[3, 0, 0x02, 0x01, 9, 8, 7]);

    let (buf, len) = rsp_bytes(&Response::Error {
        interface_id: TDI,
        error: ErrorResponse::vendor(vendor()),
    });
    // code 0xFF, data = 2 + 2 + 5, registry 0, id len 2, id, data
    assert_eq!(
        &buf[16..len],
        &[0xFF, 0, 0, 0, 9, 0, 0, 0, 0, 2, 0x86, 0x80, 1, 2, 3, 4, 5]
    );

    let (buf, len) = req_bytes(&Request::SetMmioAttribute {
        interface_id: TDI,
        range: range(),
    });
    assert_eq!(
        &buf[16..len],
        &[0, 0, 1, 0, 0, 0, 0, 0, 16, 0, 0, 0, 4, 0, 2, 0]
    );
}

#[test]
fn responses_answer_their_requests_only() {
    let lock = requests()[2];
    let ok = Response::LockInterface {
        interface_id: TDI,
        nonce: nonce(),
    };
    let err = Response::Error {
        interface_id: TDI,
        error: ErrorResponse::new(ErrorCode::Busy),
    };
    let other_tdi = Response::LockInterface {
        interface_id: TDI_NO_SEG,
        nonce: nonce(),
    };
    let wrong_type = Response::StartInterface { interface_id: TDI };
    assert!(ok.answers(&lock));
    assert!(err.answers(&lock));
    assert!(!other_tdi.answers(&lock));
    assert!(!wrong_type.answers(&lock));
    for code in RequestCode::ALL {
        assert_eq!(code.response().to_wire(), code.to_wire() - 0x80);
    }
}

#[test]
fn encode_refuses_small_buffers() {
    for req in requests() {
        let (_, len) = req_bytes(&req);
        let mut small = [0u8; MAX_MESSAGE_SIZE];
        assert_eq!(
            req.encode(&mut small[..len - 1]),
            Err(TdispError::BufferTooSmall)
        );
        assert_eq!(req.encode(&mut small[..len]), Ok(len));
    }
    for rsp in responses() {
        let (_, len) = rsp_bytes(&rsp);
        let mut small = [0u8; MAX_MESSAGE_SIZE];
        assert_eq!(
            rsp.encode(&mut small[..len - 1]),
            Err(TdispError::BufferTooSmall)
        );
    }
}

#[test]
fn encode_refuses_what_decode_refuses() {
    let mut buf = [0u8; MAX_MESSAGE_SIZE + 100];
    let cases: [(Result<usize, TdispError>, TdispError); 9] = [
        (
            Request::GetCapabilities {
                interface_id: TDI,
                tsm_caps: 1,
            }
            .encode(&mut buf),
            TdispError::ReservedNonZero(Field::TsmCaps),
        ),
        (
            Request::GetDeviceInterfaceReport {
                interface_id: TDI,
                offset: 0,
                length: 0,
            }
            .encode(&mut buf),
            TdispError::InvalidField(Field::ReportRequestLength),
        ),
        (
            Request::SetMmioAttribute {
                interface_id: TDI,
                range: MmioRange {
                    attributes: RangeAttributes::MSIX_TABLE,
                    ..range()
                },
            }
            .encode(&mut buf),
            TdispError::ReservedNonZero(Field::RangeAttributes),
        ),
        (
            Request::Vdm {
                interface_id: TDI,
                vendor: VendorData {
                    vendor_id: &[],
                    ..vendor()
                },
            }
            .encode(&mut buf),
            TdispError::InvalidField(Field::VendorIdLength),
        ),
        (
            Request::Vdm {
                interface_id: TDI,
                vendor: VendorData {
                    vendor_id: &[0; 256],
                    ..vendor()
                },
            }
            .encode(&mut buf),
            TdispError::InvalidField(Field::VendorIdLength),
        ),
        (
            Request::Vdm {
                interface_id: TDI,
                vendor: VendorData {
                    data: &[0; MAX_MESSAGE_SIZE],
                    ..vendor()
                },
            }
            .encode(&mut buf),
            TdispError::Oversized,
        ),
        (
            Response::Capabilities {
                interface_id: TDI,
                caps: Capabilities {
                    dev_addr_width: 0,
                    ..caps()
                },
            }
            .encode(&mut buf),
            TdispError::InvalidField(Field::DevAddrWidth),
        ),
        (
            Response::DeviceInterfaceReport {
                interface_id: TDI,
                portion: &[0; MAX_REPORT_PORTION + 1],
                remainder_length: 0,
            }
            .encode(&mut buf),
            TdispError::Oversized,
        ),
        (
            Response::Error {
                interface_id: TDI,
                error: ErrorResponse::new(ErrorCode::VendorSpecific),
            }
            .encode(&mut buf),
            TdispError::Truncated,
        ),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {i}");
    }
    // The largest portion fits exactly.
    let full = Response::DeviceInterfaceReport {
        interface_id: TDI,
        portion: &[0; MAX_REPORT_PORTION],
        remainder_length: 0,
    };
    assert_eq!(full.encode(&mut buf), Ok(MAX_MESSAGE_SIZE));
}
