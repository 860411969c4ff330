//! Every malformed form is refused with the right error: header fields, lengths off by one both
//! ways, each payload field out of range, each reserved field non-zero.

use super::samples::*;
use crate::tdisp::*;

fn decode_req_with(req: &Request<'_>, edit: impl FnOnce(&mut [u8])) -> Result<(), TdispError> {
    let (mut buf, len) = req_bytes(req);
    edit(&mut buf[..len]);
    Request::decode(&buf[..len]).map(|_| ())
}

fn decode_rsp_with(rsp: &Response<'_>, edit: impl FnOnce(&mut [u8])) -> Result<(), TdispError> {
    let (mut buf, len) = rsp_bytes(rsp);
    edit(&mut buf[..len]);
    Response::decode(&buf[..len]).map(|_| ())
}

/// Header checks, identical for both directions.
fn check_header(bytes: &[u8], decode: impl Fn(&[u8]) -> Result<(), TdispError>) {
    let mut b = [0u8; MAX_MESSAGE_SIZE];
    let len = bytes.len();
    for version in [0x00, 0x01, 0x11, 0x20, 0xFF] {
        b[..len].copy_from_slice(bytes);
        b[0] = version;
        assert_eq!(decode(&b[..len]), Err(TdispError::VersionMismatch(version)));
    }
    for i in 2..4 {
        b[..len].copy_from_slice(bytes);
        b[i] = 0x01;
        assert_eq!(
            decode(&b[..len]),
            Err(TdispError::ReservedNonZero(Field::HeaderReserved))
        );
    }
    for i in 8..16 {
        b[..len].copy_from_slice(bytes);
        b[i] = 0x80;
        assert_eq!(
            decode(&b[..len]),
            Err(TdispError::ReservedNonZero(Field::InterfaceIdReserved))
        );
    }
    for bit in 25..32 {
        b[..len].copy_from_slice(bytes);
        b[4..8].copy_from_slice(&(1u32 << bit).to_le_bytes());
        assert_eq!(
            decode(&b[..len]),
            Err(TdispError::ReservedNonZero(Field::FunctionId))
        );
    }
    // A segment number without segment-valid.
    b[..len].copy_from_slice(bytes);
    b[4..8].copy_from_slice(&0x0002_0118u32.to_le_bytes());
    assert_eq!(
        decode(&b[..len]),
        Err(TdispError::ReservedNonZero(Field::FunctionId))
    );
    // Oversized, whatever the content.
    let big = [0u8; MAX_MESSAGE_SIZE + 1];
    assert_eq!(decode(&big), Err(TdispError::Oversized));
    b[..len].copy_from_slice(bytes);
    assert_eq!(decode(&b[..len]), Ok(()));
}

#[test]
fn header_malformations_are_refused() {
    for req in requests() {
        let (buf, len) = req_bytes(&req);
        check_header(&buf[..len], |b| Request::decode(b).map(|_| ()));
    }
    for rsp in responses() {
        let (buf, len) = rsp_bytes(&rsp);
        check_header(&buf[..len], |b| Response::decode(b).map(|_| ()));
    }
}

#[test]
fn unknown_types_are_refused() {
    let (mut buf, len) = req_bytes(&requests()[0]);
    for t in 0..=u8::MAX {
        buf[1] = t;
        let known_req = RequestCode::from_wire(t).is_ok();
        let known_rsp = ResponseCode::from_wire(t).is_ok();
        if !known_req {
            assert_eq!(
                Request::decode(&buf[..len]),
                Err(TdispError::UnknownMessageType(t))
            );
        }
        if !known_rsp {
            assert_eq!(
                Response::decode(&buf[..len]),
                Err(TdispError::UnknownMessageType(t))
            );
        }
    }
    assert_eq!(RequestCode::ALL.len(), 11);
    assert_eq!(ResponseCode::ALL.len(), 12);
}

#[test]
fn request_lengths_off_by_one_are_refused() {
    for req in requests() {
        let (buf, len) = req_bytes(&req);
        let mut longer = [0u8; MAX_MESSAGE_SIZE];
        longer[..len].copy_from_slice(&buf[..len]);
        let plus = Request::decode(&longer[..len + 1]);
        let minus = Request::decode(&buf[..len - 1]);
        match req {
            // The vendor data runs to the end of the message: one byte more or less is other
            // vendor data, not a malformation.
            Request::Vdm { vendor, .. } => {
                assert!(
                    matches!(plus, Ok(Request::Vdm { vendor: v, .. }) if v.data.len() == vendor.data.len() + 1)
                );
                if vendor.data.is_empty() {
                    assert_eq!(minus, Err(TdispError::Truncated));
                } else {
                    assert!(minus.is_ok());
                }
            }
            _ => {
                assert_eq!(plus, Err(TdispError::TrailingBytes), "{req:?}");
                assert_eq!(minus, Err(TdispError::Truncated), "{req:?}");
            }
        }
    }
}

#[test]
fn response_lengths_off_by_one_are_refused() {
    for rsp in responses() {
        let (buf, len) = rsp_bytes(&rsp);
        let mut longer = [0u8; MAX_MESSAGE_SIZE];
        longer[..len].copy_from_slice(&buf[..len]);
        let plus = Response::decode(&longer[..len + 1]);
        let minus = Response::decode(&buf[..len - 1]);
        match rsp {
            Response::Vdm { .. } => {
                assert!(plus.is_ok());
                assert!(minus.is_ok());
            }
            Response::DeviceInterfaceReport { portion, .. } => {
                assert_eq!(plus, Err(TdispError::Inconsistent(Field::PortionLength)));
                if portion.is_empty() {
                    assert_eq!(minus, Err(TdispError::Truncated));
                } else {
                    assert_eq!(minus, Err(TdispError::Inconsistent(Field::PortionLength)));
                }
            }
            Response::Error { error, .. } if error.code == ErrorCode::VendorSpecific => {
                assert_eq!(plus, Err(TdispError::Inconsistent(Field::ErrorData)));
                assert_eq!(minus, Err(TdispError::Inconsistent(Field::ErrorData)));
            }
            _ => {
                assert_eq!(plus, Err(TdispError::TrailingBytes), "{rsp:?}");
                assert_eq!(minus, Err(TdispError::Truncated), "{rsp:?}");
            }
        }
    }
}

#[test]
fn request_fields_out_of_range_are_refused() {
    let reqs = requests();
    let [
        _,
        get_caps,
        lock,
        get_report,
        _,
        _,
        _,
        _,
        _,
        set_mmio,
        vdm,
        ..,
    ] = reqs;
    for bit in 0..32 {
        assert_eq!(
            decode_req_with(&get_caps, |b| b[16..20]
                .copy_from_slice(&(1u32 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::TsmCaps))
        );
    }
    for bit in 5..16 {
        assert_eq!(
            decode_req_with(&lock, |b| b[16..18]
                .copy_from_slice(&(1u16 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::LockFlags))
        );
    }
    assert_eq!(
        decode_req_with(&lock, |b| b[19] = 1),
        Err(TdispError::ReservedNonZero(Field::LockReserved))
    );
    assert_eq!(
        decode_req_with(&get_report, |b| b[18..20].copy_from_slice(&[0, 0])),
        Err(TdispError::InvalidField(Field::ReportRequestLength))
    );
    // SET_MMIO_ATTRIBUTE: only IS_NON_TEE_MEM (bit 2) may be set.
    for bit in (0..16).filter(|&b| b != 2) {
        assert_eq!(
            decode_req_with(&set_mmio, |b| b[28..30]
                .copy_from_slice(&(1u16 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::RangeAttributes))
        );
    }
    assert_eq!(
        decode_req_with(&set_mmio, |b| b[24..28].copy_from_slice(&[0; 4])),
        Err(TdispError::InvalidField(Field::RangePages))
    );
    // End page past 2^52 (byte addresses past 2^64), and u64 wrap-around.
    assert_eq!(
        decode_req_with(&set_mmio, |b| b[16..24]
            .copy_from_slice(&((1u64 << 52) - 15).to_le_bytes())),
        Err(TdispError::Inconsistent(Field::RangeOverflow))
    );
    assert_eq!(
        decode_req_with(&set_mmio, |b| b[16..24]
            .copy_from_slice(&((1u64 << 52) - 16).to_le_bytes())),
        Ok(())
    );
    assert_eq!(
        decode_req_with(&set_mmio, |b| b[16..24]
            .copy_from_slice(&u64::MAX.to_le_bytes())),
        Err(TdispError::Inconsistent(Field::RangeOverflow))
    );
    for registry in 2..=u8::MAX {
        assert_eq!(
            decode_req_with(&vdm, |b| b[16] = registry),
            Err(TdispError::InvalidField(Field::RegistryId))
        );
    }
    assert_eq!(
        decode_req_with(&vdm, |b| b[17] = 0),
        Err(TdispError::InvalidField(Field::VendorIdLength))
    );
    // A vendor ID length past the end of the message.
    assert_eq!(
        decode_req_with(&vdm, |b| b[17] = 8),
        Err(TdispError::Truncated)
    );
}

#[test]
fn response_fields_out_of_range_are_refused() {
    let rsps = responses();
    let [
        version,
        _,
        caps_rsp,
        _,
        _,
        _,
        state,
        _,
        _,
        _,
        _,
        _,
        _,
        nonce_err,
        _,
        unsupported,
        vendor_err,
        ..,
    ] = rsps;
    assert_eq!(
        decode_rsp_with(&version, |b| b[16] = 0),
        Err(TdispError::InvalidField(Field::VersionCount))
    );
    assert_eq!(
        decode_rsp_with(&version, |b| b[16] = 2),
        Err(TdispError::Truncated)
    );

    // Capabilities: payload starts at 16.
    for bit in 0..32 {
        assert_eq!(
            decode_rsp_with(&caps_rsp, |b| b[16..20]
                .copy_from_slice(&(1u32 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::DsmCaps))
        );
    }
    // REQ_MSGS_SUPPORTED: bit 0 (code 0x80) and bits 12..128 (codes 0x8C..) are reserved.
    for bit in (0..128).filter(|b| !(1..=11).contains(b)) {
        assert_eq!(
            decode_rsp_with(&caps_rsp, |b| b[20 + bit / 8] |= 1 << (bit % 8)),
            Err(TdispError::ReservedNonZero(Field::ReqMsgsSupported)),
            "bit {bit}"
        );
    }
    for bit in 5..16 {
        assert_eq!(
            decode_rsp_with(&caps_rsp, |b| b[36..38]
                .copy_from_slice(&(1u16 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::LockFlagsSupported))
        );
    }
    for i in 38..41 {
        assert_eq!(
            decode_rsp_with(&caps_rsp, |b| b[i] = 1),
            Err(TdispError::ReservedNonZero(Field::CapabilitiesReserved))
        );
    }
    for width in [0, 65, 0xFF] {
        assert_eq!(
            decode_rsp_with(&caps_rsp, |b| b[41] = width),
            Err(TdispError::InvalidField(Field::DevAddrWidth))
        );
    }
    assert_eq!(decode_rsp_with(&caps_rsp, |b| b[41] = 64), Ok(()));
    // No bound stated (0), for this TDI or for all: what libspdm's TDISP sample sends.
    assert_eq!(decode_rsp_with(&caps_rsp, |b| b[42] = 0), Ok(()));
    assert_eq!(
        decode_rsp_with(&caps_rsp, |b| {
            b[42] = 0;
            b[43] = 0;
        }),
        Ok(())
    );
    assert_eq!(decode_rsp_with(&caps_rsp, |b| b[43] = 0), Ok(()));
    assert_eq!(
        decode_rsp_with(&caps_rsp, |b| b[42] = 5),
        Err(TdispError::Inconsistent(Field::NumReq))
    );
    assert_eq!(decode_rsp_with(&caps_rsp, |b| b[42] = 4), Ok(()));

    for s in 4..=u8::MAX {
        assert_eq!(
            decode_rsp_with(&state, |b| b[16] = s),
            Err(TdispError::InvalidField(Field::TdiState))
        );
    }

    // TDISP_ERROR codes: everything outside the table is refused.
    for code in [0u32, 2, 6, 8, 0x40, 0x42, 0xFE, 0x100, 0x105, 0xFFFF_FFFF] {
        assert_eq!(
            decode_rsp_with(&nonce_err, |b| b[16..20]
                .copy_from_slice(&code.to_le_bytes())),
            Err(TdispError::InvalidField(Field::ErrorCode))
        );
    }
    assert_eq!(
        decode_rsp_with(&nonce_err, |b| b[20] = 1),
        Err(TdispError::ReservedNonZero(Field::ErrorData))
    );
    assert_eq!(
        decode_rsp_with(&unsupported, |b| b[21] = 1),
        Err(TdispError::InvalidField(Field::ErrorData))
    );
    assert_eq!(
        decode_rsp_with(&vendor_err, |b| b[20] += 1),
        Err(TdispError::Inconsistent(Field::ErrorData))
    );
    assert_eq!(
        decode_rsp_with(&vendor_err, |b| b[24] = 2),
        Err(TdispError::InvalidField(Field::RegistryId))
    );
    assert_eq!(
        decode_rsp_with(&vendor_err, |b| b[25] = 0),
        Err(TdispError::InvalidField(Field::VendorIdLength))
    );
    // Extended error data on a code that has none.
    let (buf, len) = rsp_bytes(&nonce_err);
    let mut longer = [0u8; 64];
    longer[..len].copy_from_slice(&buf[..len]);
    longer[len..len + 4].copy_from_slice(&[0, 2, 0x86, 0x80]);
    assert_eq!(
        Response::decode(&longer[..len + 4]),
        Err(TdispError::TrailingBytes)
    );
}

#[test]
fn interface_id_checks() {
    assert!(InterfaceId::from_function_id(0x01FF_FFFF).is_ok());
    assert!(InterfaceId::from_function_id(0x0000_FFFF).is_ok());
    assert_eq!(
        InterfaceId::from_function_id(0x0200_0000),
        Err(TdispError::ReservedNonZero(Field::FunctionId))
    );
    assert_eq!(
        InterfaceId::from_function_id(0x0001_0000),
        Err(TdispError::ReservedNonZero(Field::FunctionId))
    );
}
