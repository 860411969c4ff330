//! Every truncation, trailing and padding bytes, and one malformation per check.

use super::samples::*;
use crate::spdm::*;
use std::{vec, vec::Vec};

fn requests() -> Vec<Vec<u8>> {
    vec![
        get_version(),
        capabilities(0xE1, 0),
        negotiate_algorithms(),
        vec![0x12, 0x81, 0, 0],
        get_certificate(),
        get_measurements(),
        key_exchange(),
        finish(),
        vec![0x12, 0xE9, 1, 0],
        vec![0x12, 0xEC, 1, 0],
        vendor_tdisp(),
    ]
}

fn responses() -> Vec<(Vec<u8>, Expect)> {
    use ResponseCode as C;
    vec![
        (version(), Expect::Plain(C::Version)),
        (capabilities(0x61, 0), Expect::Plain(C::Capabilities)),
        (algorithms(), Expect::Plain(C::Algorithms)),
        (digests(), Expect::Plain(C::Digests)),
        (certificate(), Expect::Plain(C::Certificate)),
        (measurements(), Expect::Measurements { signed: true }),
        (
            key_exchange_rsp(),
            Expect::KeyExchangeRsp { summary: false },
        ),
        (vec![0x12, 0x69, 1, 0], Expect::Plain(C::KeyUpdateAck)),
    ]
}

#[test]
fn every_truncation_is_refused() {
    for m in requests() {
        for cut in 0..m.len() {
            assert!(
                Request::decode(&m[..cut], &N).is_err(),
                "{m:02x?} cut at {cut}"
            );
        }
    }
    for (m, expect) in responses() {
        for cut in 0..m.len() {
            assert!(
                Response::decode(&m[..cut], expect, &N).is_err(),
                "{m:02x?} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused_but_doe_padding_is_not() {
    for mut m in requests() {
        let len = m.len();
        m.push(0xAA);
        assert_eq!(
            Request::decode(&m, &N).unwrap_err(),
            SpdmError::TrailingBytes
        );
        // Zero padding up to a dword boundary is the DOE transport's, not the message's.
        m.pop();
        m.resize(len.next_multiple_of(4), 0);
        assert_eq!(Request::decode(&m, &N).unwrap().1, len);
        // A whole padding dword, or padding that leaves the total unaligned, is not.
        m.extend([0; 4]);
        assert_eq!(
            Request::decode(&m, &N).unwrap_err(),
            SpdmError::TrailingBytes
        );
    }
    for (mut m, expect) in responses() {
        let len = m.len();
        m.resize(len.next_multiple_of(4), 0);
        assert_eq!(Response::decode(&m, expect, &N).unwrap().1, len);
        if m.len() > len {
            *m.last_mut().unwrap() = 1;
            assert_eq!(
                Response::decode(&m, expect, &N).unwrap_err(),
                SpdmError::TrailingBytes
            );
        }
    }
    // VERSION with 4 entries is 14 bytes: a DOE object pads it to 16.
    let mut v = vec![
        0x10, 0x04, 0, 0, 0, 4, 0, 0x10, 0, 0x11, 0, 0x12, 0, 0x13, 0, 0,
    ];
    assert_eq!(
        Response::decode(&v, Expect::Plain(ResponseCode::Version), &N)
            .unwrap()
            .1,
        14
    );
    v.truncate(15);
    assert!(Response::decode(&v, Expect::Plain(ResponseCode::Version), &N).is_err());
}

#[test]
fn versions_and_codes_must_match() {
    let mut m = capabilities(0xE1, 0);
    m[0] = 0x11;
    assert_eq!(
        Request::decode(&m, &N).unwrap_err(),
        SpdmError::VersionMismatch(0x11)
    );
    let mut m = get_version();
    m[0] = 0x12;
    assert_eq!(
        Request::decode(&m, &N).unwrap_err(),
        SpdmError::VersionMismatch(0x12)
    );
    assert_eq!(
        Request::decode(&[0x12, 0x83, 0, 0], &N).unwrap_err(),
        SpdmError::UnexpectedCode(0x83)
    );
    // A well-formed response of another type is not the answer.
    assert_eq!(
        Response::decode(&digests(), Expect::Plain(ResponseCode::Certificate), &N).unwrap_err(),
        SpdmError::UnexpectedCode(0x01)
    );
    // MEASUREMENTS and KEY_EXCHANGE_RSP need to know what the request asked.
    assert!(
        Response::decode(
            &measurements(),
            Expect::Plain(ResponseCode::Measurements),
            &N
        )
        .is_err()
    );
}

#[test]
fn reserved_fields_are_ignored() {
    let mut m = capabilities(0x61, 0);
    m[4] = 0xFF;
    m[6] = 0xFF;
    assert!(Response::decode(&m, Expect::Plain(ResponseCode::Capabilities), &N).is_ok());
    let mut m = algorithms();
    m[25] = 0xFF;
    assert!(Response::decode(&m, Expect::Plain(ResponseCode::Algorithms), &N).is_ok());
}

#[test]
fn field_checks() {
    use ResponseCode as C;
    fn rsp(m: &[u8], e: Expect) -> Result<Response<'_>, SpdmError> {
        Response::decode(m, e, &N).map(|r| r.0)
    }
    // VERSION without entries.
    assert_eq!(
        rsp(&[0x10, 0x04, 0, 0, 0, 0], Expect::Plain(C::Version)),
        Err(SpdmError::InvalidField(Field::VersionCount))
    );
    // MEAS_CAP = 11b, DataTransferSize below 42, above MaxSPDMmsgSize.
    assert_eq!(
        rsp(&capabilities(0x61, 0x18), Expect::Plain(C::Capabilities)),
        Err(SpdmError::InvalidField(Field::CapabilityFlags))
    );
    let mut m = capabilities(0x61, 0);
    m[12..16].copy_from_slice(&41u32.to_le_bytes());
    assert_eq!(
        rsp(&m, Expect::Plain(C::Capabilities)),
        Err(SpdmError::InvalidField(Field::DataTransferSize))
    );
    m[12..16].copy_from_slice(&4001u32.to_le_bytes());
    assert!(rsp(&m, Expect::Plain(C::Capabilities)).is_err());
    // ALGORITHMS: two hash selections, a wrong Length, tables out of order, an unknown
    // table, a fixed width other than 2.
    let mut m = algorithms();
    m[16] = 0x03;
    assert_eq!(
        rsp(&m, Expect::Plain(C::Algorithms)),
        Err(SpdmError::InvalidField(Field::Selection))
    );
    let mut m = algorithms();
    m[4] = 51;
    assert_eq!(
        rsp(&m, Expect::Plain(C::Algorithms)),
        Err(SpdmError::Inconsistent(Field::AlgorithmsLength))
    );
    let mut m = algorithms();
    m.swap(36, 40);
    assert_eq!(
        rsp(&m, Expect::Plain(C::Algorithms)),
        Err(SpdmError::InvalidField(Field::AlgStructType))
    );
    let mut m = algorithms();
    m[48] = 6;
    assert!(rsp(&m, Expect::Plain(C::Algorithms)).is_err());
    let mut m = algorithms();
    m[37] = 0x30;
    assert_eq!(
        rsp(&m, Expect::Plain(C::Algorithms)),
        Err(SpdmError::InvalidField(Field::AlgCount))
    );
    // DIGESTS without a slot; CERTIFICATE with an empty portion and a remainder.
    assert_eq!(
        rsp(&[0x12, 0x01, 0, 0], Expect::Plain(C::Digests)),
        Err(SpdmError::InvalidField(Field::SlotMask))
    );
    assert_eq!(
        rsp(
            &[0x12, 0x02, 0, 0, 0, 0, 1, 0],
            Expect::Plain(C::Certificate)
        ),
        Err(SpdmError::InvalidField(Field::PortionLength))
    );
    // KEY_UPDATE_ACK with an undefined operation.
    assert_eq!(
        rsp(&[0x12, 0x69, 4, 0], Expect::Plain(C::KeyUpdateAck)),
        Err(SpdmError::InvalidField(Field::KeyOperation))
    );
    // ERROR with more than 32 bytes of extended data.
    let mut e = vec![0x12, 0x7F, 5, 0];
    e.extend([0; 33]);
    assert_eq!(
        rsp(&e, Expect::Plain(C::Digests)),
        Err(SpdmError::InvalidField(Field::ExtendedErrorData))
    );
    // FINISH with a requester signature (mutual authentication) is not carried.
    let mut f = finish();
    f[2] = 1;
    assert_eq!(
        Request::decode(&f, &N).unwrap_err(),
        SpdmError::InvalidField(Field::FinishAttributes)
    );
}

#[test]
fn measurement_blocks_are_checked() {
    let digest_len = 64;
    let record = measurement_record();
    assert!(MeasurementRecord::parse(&record, 2, digest_len).is_ok());
    // Count off by one either way.
    assert_eq!(
        MeasurementRecord::parse(&record, 1, digest_len).unwrap_err(),
        SpdmError::Inconsistent(Field::NumberOfBlocks)
    );
    assert!(MeasurementRecord::parse(&record, 3, digest_len).is_err());
    // A digest of another size than the measurement hash.
    assert_eq!(
        MeasurementRecord::parse(&record, 2, 48).unwrap_err(),
        SpdmError::Inconsistent(Field::ValueSize)
    );
    // Index 0, index 0xFF, a repeated index.
    for (i, expected) in [
        (0u8, SpdmError::InvalidField(Field::BlockIndex)),
        (0xFF, SpdmError::InvalidField(Field::BlockIndex)),
        (0xFD, SpdmError::Inconsistent(Field::BlockIndex)),
    ] {
        let mut r = record.clone();
        r[0] = i;
        assert_eq!(
            MeasurementRecord::parse(&r, 2, digest_len).unwrap_err(),
            expected
        );
    }
    // Another measurement specification; a DMTF header disagreeing with MeasurementSize.
    let mut r = record.clone();
    r[1] = 2;
    assert_eq!(
        MeasurementRecord::parse(&r, 2, digest_len).unwrap_err(),
        SpdmError::InvalidField(Field::BlockSpecification)
    );
    let mut r = record.clone();
    r[2] = 68;
    assert!(MeasurementRecord::parse(&r, 2, digest_len).is_err());
    let mut r = record;
    r[5] = 63;
    assert_eq!(
        MeasurementRecord::parse(&r, 2, digest_len).unwrap_err(),
        SpdmError::Inconsistent(Field::BlockSize)
    );
}

#[test]
fn encode_refuses_wrong_lengths() {
    let mut out = [0u8; 512];
    let short = [0u8; 95];
    let k = Request::KeyExchange(KeyExchange {
        summary_type: 0,
        slot: 0,
        req_session_id: 1,
        session_policy: 0,
        random: [0; 32],
        exchange: &short,
        opaque: &[],
    });
    assert_eq!(k.encode(&mut out, &N), Err(SpdmError::BadLength));
    let f = Request::Finish {
        verify_data: &[0; 32],
    };
    assert_eq!(f.encode(&mut out, &N), Err(SpdmError::BadLength));
    let f = Request::Finish {
        verify_data: &[0; 48],
    };
    assert_eq!(f.encode(&mut out[..51], &N), Err(SpdmError::BufferTooSmall));
    // A slot past 7 is what decoding refuses.
    let c = Request::GetCertificate {
        slot: 8,
        offset: 0,
        length: 1,
    };
    assert!(c.encode(&mut out, &N).is_err());
}
