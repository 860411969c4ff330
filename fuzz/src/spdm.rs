//! `spdm_decode`: the SPDM 1.2 codec on arbitrary bytes.
//!
//! Input: a selector byte (which response is expected, which negotiated sizes), then the
//! message. Checks: no decoder panics; a request or response that decodes re-encodes, and the
//! re-encoded bytes decode back equal (reserved fields are ignored on receipt, so the bytes
//! may differ there); the length decoding reports is the message's, with at most 3 bytes of
//! DOE padding after it; a measurement record's blocks re-read the same; opaque data,
//! certificate chain framing and the secured-record layout never panic and report lengths
//! inside the input.

use tsm_abi::spdm::{
    CertChain, Expect, Negotiated, Request, Response, ResponseCode, opaque, secured,
};

use crate::input::Input;

const EXPECTS: [Expect; 16] = [
    Expect::Plain(ResponseCode::Version),
    Expect::Plain(ResponseCode::Capabilities),
    Expect::Plain(ResponseCode::Algorithms),
    Expect::Plain(ResponseCode::Digests),
    Expect::Plain(ResponseCode::Certificate),
    Expect::Measurements { signed: true },
    Expect::Measurements { signed: false },
    Expect::KeyExchangeRsp { summary: true },
    Expect::KeyExchangeRsp { summary: false },
    Expect::Plain(ResponseCode::FinishRsp),
    Expect::Plain(ResponseCode::KeyUpdateAck),
    Expect::Plain(ResponseCode::EndSessionAck),
    Expect::Plain(ResponseCode::VendorDefined),
    Expect::Plain(ResponseCode::Error),
    Expect::Plain(ResponseCode::Measurements),
    Expect::Plain(ResponseCode::KeyExchangeRsp),
];

/// P-384 / SHA-384 with SHA-512 measurements (what the requester meets), the same in the
/// clear, and small sizes that let short inputs reach the variable fields.
const SIZES: [Negotiated; 4] = [
    Negotiated {
        hash: 48,
        signature: 96,
        exchange: 96,
        measurement_hash: 64,
        handshake_in_clear: false,
    },
    Negotiated {
        hash: 48,
        signature: 96,
        exchange: 96,
        measurement_hash: 48,
        handshake_in_clear: true,
    },
    Negotiated {
        hash: 2,
        signature: 3,
        exchange: 4,
        measurement_hash: 1,
        handshake_in_clear: false,
    },
    Negotiated::NONE,
];

/// Runs every check on `data`.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let message = input.rest();
    let expect = EXPECTS[usize::from(selector & 0x0F)];
    let n = SIZES[usize::from(selector >> 4) % SIZES.len()];
    request(message, &n);
    response(message, expect, &n);
    let _ = opaque::selected_version(message);
    if let Ok(versions) = opaque::supported_versions(message) {
        assert!(versions.count() <= message.len() / 2);
    }
    if let Ok(chain) = CertChain::parse(message, n.hash) {
        if let Ok(root) = chain.root_certificate() {
            assert!(root.len() <= chain.certificates.len());
        }
    }
    if let Ok(layout) = secured::RecordLayout::parse(message) {
        assert!(layout.len <= message.len() && message.len() - layout.len <= 3);
        assert_eq!(
            layout.len,
            secured::RECORD_HEADER_SIZE + layout.ciphertext_len + secured::MAC_SIZE
        );
    }
}

fn check_len(len: usize, message: &[u8]) {
    assert!(
        len <= message.len() && message.len() - len <= 3,
        "length {len} of {}",
        message.len()
    );
}

fn request(message: &[u8], n: &Negotiated) {
    let Ok((r, len)) = Request::decode(message, n) else {
        return;
    };
    check_len(len, message);
    let mut out = [0u8; 8192];
    match r.encode(&mut out, n) {
        Ok(m) => assert_eq!(Request::decode(&out[..m], n).map(|d| d.0), Ok(r)),
        // Extended algorithms are skipped on decode and never encoded.
        Err(_) => assert!(
            matches!(r, Request::NegotiateAlgorithms(a) if a.ext_asym_count + a.ext_hash_count > 0),
            "decoded {r:?} does not re-encode"
        ),
    }
}

fn response(message: &[u8], expect: Expect, n: &Negotiated) {
    let Ok((r, len)) = Response::decode(message, expect, n) else {
        return;
    };
    check_len(len, message);
    if let Response::Measurements(m) = r {
        let blocks = m.record.blocks().count();
        assert_eq!(blocks, usize::from(m.record.count()));
    }
    let mut out = [0u8; 8192];
    match r.encode(&mut out, n) {
        Ok(m) => assert_eq!(
            Response::decode(&out[..m], r.expect(), n).map(|d| d.0),
            Ok(r)
        ),
        // Extended algorithms are skipped on decode and never encoded.
        Err(_) => assert!(
            matches!(r, Response::Algorithms(a) if a.ext_asym_count + a.ext_hash_count > 0),
            "decoded {r:?} does not re-encode"
        ),
    }
}

/// Seeds: a few messages made here, and (not under Miri, where recording a session's P-384
/// work would take hours) every message of a recorded connect and session.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = hand_made();
    if cfg!(miri) {
        return out;
    }
    let (sent, received) = crate::spdm_session::transcript();
    for (i, (secured, bytes)) in sent.iter().enumerate() {
        if !secured {
            out.push((format!("request_{i}"), [&[0x00][..], bytes].concat()));
        }
    }
    for (i, (secured, bytes)) in received.iter().enumerate() {
        // The selector of the response expected at each step of a connect.
        let selector: u8 = match bytes.get(1) {
            Some(0x04) => 0,
            Some(0x61) => 1,
            Some(0x63) => 2,
            Some(0x01) => 3,
            Some(0x02) => 4,
            Some(0x60) => 5,
            Some(0x64) => 8,
            _ => 0,
        };
        if !secured {
            out.push((format!("response_{i}"), [&[selector][..], bytes].concat()));
        } else {
            out.push((format!("record_{i}"), [&[0x00][..], bytes].concat()));
        }
    }
    out
}

/// `VERSION`, `CAPABILITIES`, `DIGESTS` and `ERROR` (selectors 0, 1, 3 and 3), and
/// `GET_VERSION`.
fn hand_made() -> Vec<(String, Vec<u8>)> {
    use tsm_abi::spdm::{
        CapFlags, Capabilities, DigestList, ErrorCode, ErrorResponse, VersionList,
    };
    let versions = [0x00, 0x10, 0x00, 0x12];
    let digest = [0xA5; 48];
    let messages: [(&str, u8, Response<'_>); 4] = [
        (
            "version",
            0,
            Response::Version(VersionList::from_bytes(&versions)),
        ),
        (
            "capabilities",
            1,
            Response::Capabilities(Capabilities {
                ct_exponent: 12,
                flags: CapFlags::CERT_CAP | CapFlags::MEAS_CAP_SIG | CapFlags::KEY_EX_CAP,
                data_transfer_size: 4096,
                max_message_size: 4096,
            }),
        ),
        (
            "digests",
            3,
            Response::Digests(DigestList::new(1, &digest, 48)),
        ),
        (
            "error",
            3,
            Response::Error(ErrorResponse {
                code: ErrorCode::BUSY,
                data: 0,
                extended: &[],
            }),
        ),
    ];
    let mut out = vec![("get_version".to_string(), vec![0x00, 0x10, 0x84, 0, 0])];
    for (name, selector, m) in messages {
        let mut buf = [0u8; 128];
        let n = m.encode(&mut buf, &SIZES[0]).expect("a valid message");
        out.push((
            format!("made_{name}"),
            [&[selector][..], &buf[..n]].concat(),
        ));
    }
    out
}
