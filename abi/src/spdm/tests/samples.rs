//! Messages written byte by byte from DSP0274 1.2's tables, decoded and re-encoded.

use crate::spdm::*;
use std::{vec, vec::Vec};

/// P-384 / SHA-384 / secp384r1, SHA-512 measurements (what DMTF's responder picks).
pub const N: Negotiated = Negotiated {
    hash: 48,
    signature: 96,
    exchange: 96,
    measurement_hash: 64,
    handshake_in_clear: false,
};

pub fn get_version() -> Vec<u8> {
    vec![0x10, 0x84, 0, 0]
}

/// `VERSION` with 1.0, 1.1, 1.2 (Table "VERSION response": Reserved, count, entries).
pub fn version() -> Vec<u8> {
    vec![0x10, 0x04, 0, 0, 0, 3, 0x00, 0x10, 0x00, 0x11, 0x00, 0x12]
}

/// 1.2 `GET_CAPABILITIES` / `CAPABILITIES` body: Reserved, CTExponent 12, Reserved (2),
/// Flags, DataTransferSize 4000, MaxSPDMmsgSize 4000.
pub fn capabilities(code: u8, flags: u32) -> Vec<u8> {
    let mut m = vec![0x12, code, 0, 0, 0, 12, 0, 0];
    m.extend(flags.to_le_bytes());
    m.extend(4000u32.to_le_bytes());
    m.extend(4000u32.to_le_bytes());
    m
}

/// `NEGOTIATE_ALGORITHMS` offering P-384, SHA-384, DMTF measurements, OpaqueDataFmt1, and
/// the four structure tables (Table "NEGOTIATE_ALGORITHMS request message format").
pub fn negotiate_algorithms() -> Vec<u8> {
    let mut m = vec![0x12, 0xE3, 4, 0];
    m.extend(48u16.to_le_bytes()); // Length: 32 + 4 × 4
    m.extend([0x01, 0x02]); // MeasurementSpecification DMTF, OtherParamsSupport Fmt1
    m.extend(0x80u32.to_le_bytes()); // BaseAsymAlgo ECDSA P-384
    m.extend(0x02u32.to_le_bytes()); // BaseHashAlgo SHA-384
    m.extend([0; 12]);
    m.extend([0, 0, 0, 0]); // ExtAsymCount, ExtHashCount, Reserved
    m.extend([2, 0x20, 0x10, 0x00]); // DHE secp384r1
    m.extend([3, 0x20, 0x02, 0x00]); // AEAD AES-256-GCM
    m.extend([4, 0x20, 0x80, 0x00]); // ReqBaseAsymAlg ECDSA P-384
    m.extend([5, 0x20, 0x01, 0x00]); // KeySchedule SPDM
    m
}

/// The matching `ALGORITHMS`, SHA-512 measurements (Table "Successful ALGORITHMS response").
pub fn algorithms() -> Vec<u8> {
    let mut m = vec![0x12, 0x63, 4, 0];
    m.extend(52u16.to_le_bytes()); // Length: 36 + 4 × 4
    m.extend([0x01, 0x02]);
    m.extend(0x08u32.to_le_bytes()); // MeasurementHashAlgo SHA-512
    m.extend(0x80u32.to_le_bytes());
    m.extend(0x02u32.to_le_bytes());
    m.extend([0; 12]);
    m.extend([0, 0, 0, 0]);
    m.extend([2, 0x20, 0x10, 0x00]);
    m.extend([3, 0x20, 0x02, 0x00]);
    m.extend([4, 0x20, 0x80, 0x00]);
    m.extend([5, 0x20, 0x01, 0x00]);
    m
}

/// `DIGESTS` for slots 0 and 2.
pub fn digests() -> Vec<u8> {
    let mut m = vec![0x12, 0x01, 0, 0b101];
    m.extend([0xA0; 48]);
    m.extend([0xA2; 48]);
    m
}

pub fn get_certificate() -> Vec<u8> {
    vec![0x12, 0x82, 0, 0, 0x00, 0x04, 0x00, 0x04]
}

/// `CERTIFICATE`: 5 bytes of slot 0's chain, 7 to come.
pub fn certificate() -> Vec<u8> {
    vec![0x12, 0x02, 0, 0, 5, 0, 7, 0, 1, 2, 3, 4, 5]
}

/// Signed `GET_MEASUREMENTS` of every block, nonce 0x5A…, slot 0.
pub fn get_measurements() -> Vec<u8> {
    let mut m = vec![0x12, 0xE0, 0x01, 0xFF];
    m.extend([0x5A; 32]);
    m.push(0);
    m
}

/// Two DMTF blocks: index 1 a SHA-512 digest of mutable firmware, index 0xFD a raw manifest.
pub fn measurement_record() -> Vec<u8> {
    let mut r = vec![1, 0x01];
    r.extend(67u16.to_le_bytes()); // MeasurementSize = 3 + 64
    r.push(0x01); // digest, mutable firmware
    r.extend(64u16.to_le_bytes());
    r.extend([0x11; 64]);
    r.extend([0xFD, 0x01]);
    r.extend(8u16.to_le_bytes());
    r.push(0x84); // raw bit stream, manifest
    r.extend(5u16.to_le_bytes());
    r.extend(b"hello");
    r
}

/// Signed `MEASUREMENTS` (Table "Successful MEASUREMENTS response").
pub fn measurements() -> Vec<u8> {
    let record = measurement_record();
    let mut m = vec![0x12, 0x60, 0, 0x20]; // slot 0, content not changed (10b)
    m.push(2);
    m.extend(&(record.len() as u32).to_le_bytes()[..3]);
    m.extend(&record);
    m.extend([0x77; 32]);
    m.extend(0u16.to_le_bytes());
    m.extend([0x5E; 96]);
    m
}

/// `KEY_EXCHANGE` with 8 bytes of opaque data.
pub fn key_exchange() -> Vec<u8> {
    let mut m = vec![0x12, 0xE4, 0, 0];
    m.extend(0xBEEFu16.to_le_bytes()); // ReqSessionID
    m.extend([1, 0]); // SessionPolicy, Reserved
    m.extend([0x42; 32]);
    m.extend([0x04; 96]);
    m.extend(8u16.to_le_bytes());
    m.extend([9; 8]);
    m
}

pub fn key_exchange_rsp() -> Vec<u8> {
    let mut m = vec![0x12, 0x64, 0, 0];
    m.extend(0xCAFEu16.to_le_bytes()); // RspSessionID
    m.extend([0, 0]); // MutAuthRequested, ReqSlotIDParam
    m.extend([0x24; 32]);
    m.extend([0x05; 96]);
    m.extend(4u16.to_le_bytes());
    m.extend([7; 4]);
    m.extend([0x5F; 96]);
    m.extend([0x3C; 48]);
    m
}

pub fn finish() -> Vec<u8> {
    let mut m = vec![0x12, 0xE5, 0, 0];
    m.extend([0x33; 48]);
    m
}

/// `VENDOR_DEFINED_REQUEST` carrying TDISP `GET_TDISP_VERSION` (PCI-SIG, vendor 0001h,
/// protocol 01h).
pub fn vendor_tdisp() -> Vec<u8> {
    let tdisp = [0x10, 0x81, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut m = vec![0x12, 0xFE, 0, 0];
    m.extend(3u16.to_le_bytes());
    m.push(2);
    m.extend(1u16.to_le_bytes());
    m.extend(17u16.to_le_bytes());
    m.push(1);
    m.extend(tdisp);
    m
}

fn roundtrip_request(bytes: &[u8]) -> Request<'_> {
    let (req, len) = Request::decode(bytes, &N).expect("decodes");
    assert_eq!(len, bytes.len());
    let mut out = [0u8; 4096];
    let n = req.encode(&mut out, &N).expect("re-encodes");
    assert_eq!(&out[..n], bytes, "{req:?}");
    req
}

fn roundtrip_response(bytes: &[u8], expect: Expect) -> Response<'_> {
    let (rsp, len) = Response::decode(bytes, expect, &N).expect("decodes");
    assert_eq!(len, bytes.len());
    let mut out = [0u8; 4096];
    let n = rsp.encode(&mut out, &N).expect("re-encodes");
    assert_eq!(&out[..n], bytes, "{rsp:?}");
    rsp
}

#[test]
fn version_exchange() {
    assert_eq!(roundtrip_request(&get_version()), Request::GetVersion);
    let bytes = version();
    let Response::Version(v) = roundtrip_response(&bytes, Expect::Plain(ResponseCode::Version))
    else {
        panic!()
    };
    assert_eq!(v.count(), 3);
    assert!(v.contains(VERSION_1_2) && !v.contains(0x13));
    assert_eq!(v.iter().last(), Some(VersionNumber(0x1200)));
}

#[test]
fn capabilities_exchange() {
    let flags = (CapFlags::CERT_CAP | CapFlags::MEAS_CAP_SIG | CapFlags::KEY_EX_CAP).bits();
    let Request::GetCapabilities(c) = roundtrip_request(&capabilities(0xE1, flags)) else {
        panic!()
    };
    assert_eq!(c.ct_exponent, 12);
    assert_eq!(c.data_transfer_size, 4000);
    let Response::Capabilities(c) = roundtrip_response(
        &capabilities(0x61, flags),
        Expect::Plain(ResponseCode::Capabilities),
    ) else {
        panic!()
    };
    assert!(c.flags.contains(CapFlags::MEAS_CAP_SIG));
}

#[test]
fn algorithm_negotiation() {
    let Request::NegotiateAlgorithms(a) = roundtrip_request(&negotiate_algorithms()) else {
        panic!()
    };
    assert_eq!(a.base_asym, BaseAsymAlgo::ECDSA_P384);
    assert_eq!(a.req_base_asym, Some(BaseAsymAlgo::ECDSA_P384));
    let Response::Algorithms(a) =
        roundtrip_response(&algorithms(), Expect::Plain(ResponseCode::Algorithms))
    else {
        panic!()
    };
    assert_eq!(a.measurement_hash, MeasurementHashAlgo::SHA_512);
    assert_eq!(a.dhe, Some(DheGroup::SECP384R1));
    assert_eq!(a.aead, Some(AeadSuite::AES_256_GCM));
    assert_eq!(a.key_schedule, Some(KeySchedule::SPDM));
    assert_eq!(a.other_params, OtherParams::OPAQUE_DATA_FMT1);
    let n = Negotiated::from_selection(
        a.base_asym,
        a.base_hash,
        a.dhe.unwrap(),
        a.measurement_hash,
        false,
    );
    assert_eq!(n, Some(N));
}

#[test]
fn certificates() {
    assert_eq!(roundtrip_request(&[0x12, 0x81, 0, 0]), Request::GetDigests);
    let bytes = digests();
    let Response::Digests(d) = roundtrip_response(&bytes, Expect::Plain(ResponseCode::Digests))
    else {
        panic!()
    };
    assert_eq!(d.digest(0), Some(&[0xA0; 48][..]));
    assert_eq!(d.digest(1), None);
    assert_eq!(d.digest(2), Some(&[0xA2; 48][..]));
    assert_eq!(d.digest(8), None);
    assert_eq!(
        roundtrip_request(&get_certificate()),
        Request::GetCertificate {
            slot: 0,
            offset: 0x400,
            length: 0x400
        }
    );
    assert_eq!(
        roundtrip_response(&certificate(), Expect::Plain(ResponseCode::Certificate)),
        Response::Certificate {
            slot: 0,
            portion: &[1, 2, 3, 4, 5],
            remainder: 7
        }
    );
}

#[test]
fn measurements_exchange() {
    let req_bytes = get_measurements();
    let req = roundtrip_request(&req_bytes);
    assert_eq!(
        req,
        Request::GetMeasurements {
            operation: MEASUREMENTS_ALL,
            raw_bit_stream: false,
            signed: Some(([0x5A; 32], 0)),
        }
    );
    let bytes = measurements();
    let Response::Measurements(m) = roundtrip_response(&bytes, req.expect()) else {
        panic!()
    };
    assert_eq!(m.content_changed, 2);
    assert_eq!(m.signature, Some(&[0x5E; 96][..]));
    let blocks: Vec<_> = m.record.blocks().collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0].index, blocks[0].raw, blocks[0].value_type),
        (1, false, 1)
    );
    assert_eq!(blocks[0].value, &[0x11; 64]);
    assert_eq!(
        (blocks[1].index, blocks[1].raw, blocks[1].value),
        (0xFD, true, &b"hello"[..])
    );
}

#[test]
fn session_messages() {
    let ke = key_exchange();
    let Request::KeyExchange(k) = roundtrip_request(&ke) else {
        panic!()
    };
    assert_eq!(
        (k.req_session_id, k.session_policy, k.opaque),
        (0xBEEF, 1, &[9u8; 8][..])
    );
    let ke_rsp = key_exchange_rsp();
    let Response::KeyExchangeRsp(k) =
        roundtrip_response(&ke_rsp, Expect::KeyExchangeRsp { summary: false })
    else {
        panic!()
    };
    assert_eq!(k.rsp_session_id, 0xCAFE);
    assert_eq!(k.verify_data, Some(&[0x3C; 48][..]));
    assert_eq!(k.signature_and_verify_len(), 96 + 48);
    assert_eq!(
        roundtrip_request(&finish()),
        Request::Finish {
            verify_data: &[0x33; 48]
        }
    );
    assert_eq!(
        roundtrip_response(&[0x12, 0x65, 0, 0], Expect::Plain(ResponseCode::FinishRsp)),
        Response::FinishRsp { verify_data: None }
    );
    assert_eq!(
        roundtrip_request(&[0x12, 0xE9, 2, 0x77]),
        Request::KeyUpdate {
            operation: KeyOperation::UpdateAllKeys,
            tag: 0x77
        }
    );
    assert_eq!(
        roundtrip_response(
            &[0x12, 0x69, 3, 0x78],
            Expect::Plain(ResponseCode::KeyUpdateAck)
        ),
        Response::KeyUpdateAck {
            operation: KeyOperation::VerifyNewKey,
            tag: 0x78
        }
    );
    assert_eq!(
        roundtrip_request(&[0x12, 0xEC, 0, 0]),
        Request::EndSession {
            clear_negotiated_state: false
        }
    );
    assert_eq!(
        roundtrip_response(
            &[0x12, 0x6C, 0, 0],
            Expect::Plain(ResponseCode::EndSessionAck)
        ),
        Response::EndSessionAck
    );
}

#[test]
fn handshake_in_the_clear_moves_the_verify_data() {
    let clear = Negotiated {
        handshake_in_clear: true,
        ..N
    };
    let mut m = key_exchange_rsp();
    m.truncate(m.len() - 48);
    let (Response::KeyExchangeRsp(k), _) =
        Response::decode(&m, Expect::KeyExchangeRsp { summary: false }, &clear).unwrap()
    else {
        panic!()
    };
    assert_eq!(k.verify_data, None);
    let mut f = vec![0x12, 0x65, 0, 0];
    f.extend([1; 48]);
    assert_eq!(
        Response::decode(&f, Expect::Plain(ResponseCode::FinishRsp), &clear)
            .unwrap()
            .0,
        Response::FinishRsp {
            verify_data: Some(&[1; 48])
        }
    );
}

#[test]
fn vendor_defined_carries_tdisp() {
    let bytes = vendor_tdisp();
    let Request::VendorDefined(v) = roundtrip_request(&bytes) else {
        panic!()
    };
    let (protocol, message) = v.pci_protocol().unwrap();
    assert_eq!(protocol, PROTOCOL_ID_TDISP);
    assert!(matches!(
        crate::tdisp::Request::decode(message),
        Ok(crate::tdisp::Request::GetVersion { .. })
    ));
    let payload = [PROTOCOL_ID_TDISP, 0xAB];
    assert_eq!(
        VendorDefined::pci_sig(&payload).pci_protocol(),
        Some((1, &[0xAB][..]))
    );
    let other = VendorDefined {
        standard_id: 4,
        vendor_id: &[1, 0],
        payload: &payload,
    };
    assert_eq!(other.pci_protocol(), None);
}

#[test]
fn error_answers_any_request() {
    let m = [0x12, 0x7F, 0x06, 0x00];
    let (rsp, _) = Response::decode(&m, Expect::KeyExchangeRsp { summary: false }, &N).unwrap();
    assert_eq!(
        rsp,
        Response::Error(ErrorResponse {
            code: ErrorCode::DECRYPT_ERROR,
            data: 0,
            extended: &[]
        })
    );
    // ResponseNotReady carries 4 bytes of extended data.
    let m = [0x12, 0x7F, 0x42, 0, 1, 0xE0, 7, 2];
    let (Response::Error(e), _) =
        Response::decode(&m, Expect::Plain(ResponseCode::Digests), &N).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (e.code, e.extended),
        (ErrorCode::RESPONSE_NOT_READY, &[1, 0xE0, 7, 2][..])
    );
    // To GET_VERSION, an ERROR is version 1.0 like the request.
    let m = [0x10, 0x7F, 0x41, 0];
    assert!(Response::decode(&m, Expect::Plain(ResponseCode::Version), &N).is_ok());
}

#[test]
fn certificate_chain_framing() {
    // Two fake DER SEQUENCEs: a short-form and a long-form length.
    let mut certs = vec![0x30, 0x03, 1, 2, 3];
    certs.extend([0x30, 0x81, 0x80]);
    certs.extend([0xEE; 0x80]);
    let mut chain = [0u8; 512];
    let len = CertChain::encode(&mut chain, &[0xAB; 48], &certs).unwrap();
    assert_eq!(len, 4 + 48 + certs.len());
    assert_eq!(&chain[..2], &(len as u16).to_le_bytes());
    let c = CertChain::parse(&chain[..len], 48).unwrap();
    assert_eq!(c.root_hash, &[0xAB; 48]);
    assert_eq!(c.certificates, &certs[..]);
    assert_eq!(c.root_certificate().unwrap(), &certs[..5]);
    assert_eq!(der_sequence_len(&certs[5..]), Ok(3 + 0x80));
    assert_eq!(
        CertChain::parse(&chain[..len - 1], 48),
        Err(SpdmError::Inconsistent(Field::ChainLength))
    );
    assert!(der_sequence_len(&[0x31, 0]).is_err());
    assert!(der_sequence_len(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
    assert!(der_sequence_len(&[0x30, 0x82, 0xFF, 0xFF]).is_err());
}

#[test]
fn opaque_data_negotiates_the_secured_message_version() {
    let mut buf = [0u8; 64];
    let n = opaque::encode_supported_versions(&mut buf, &opaque::SECURED_MESSAGE_VERSIONS).unwrap();
    // General header (4), element header (4: ID, VendorLen, DataLen), SM data (1 + 1 + 1 + 4),
    // padded to 4: 16 bytes, as libspdm-compatible peers expect for two versions.
    assert_eq!(n, 16);
    assert_eq!(
        &buf[..n],
        &[1, 0, 0, 0, 0, 0, 7, 0, 1, 1, 2, 0x00, 0x10, 0x00, 0x11, 0]
    );
    let offered: Vec<_> = opaque::supported_versions(&buf[..n]).unwrap().collect();
    assert_eq!(offered, opaque::SECURED_MESSAGE_VERSIONS);
    let n = opaque::encode_version_selection(&mut buf, VersionNumber(0x1100)).unwrap();
    assert_eq!(&buf[..n], &[1, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0x00, 0x11]);
    assert_eq!(
        opaque::selected_version(&buf[..n]),
        Ok(VersionNumber(0x1100))
    );
    // The selection is not the offer, and vice versa.
    assert!(opaque::supported_versions(&buf[..n]).is_err());
    // Non-zero padding, a missing element, trailing bytes.
    let mut bad = buf;
    bad[1] = 0xFF; // reserved: ignored
    assert!(opaque::selected_version(&bad[..n]).is_ok());
    assert!(opaque::selected_version(&[0, 0, 0, 0]).is_err());
    assert!(opaque::selected_version(&buf[..n + 4]).is_err());
}
