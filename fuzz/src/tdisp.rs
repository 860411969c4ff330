//! `tdisp_decode`: the TDISP codec on arbitrary bytes.
//!
//! Checks, for every input: no decoder panics; a request, response or interface report that
//! decodes re-encodes to exactly the input bytes and decodes back equal (the codec is strict,
//! so decoding is injective); and a report reassembly fed an arbitrary sequence of portions
//! keeps its documented bookkeeping (asks only for what is missing and fits, never writes past
//! what it reported as received, and only hands out a report once complete).

use tsm_abi::tdisp::{
    InterfaceId, InterfaceReport, MAX_MESSAGE_SIZE, MAX_REPORT_PORTION, MmioRange,
    ReportReassembly, Request, Response,
};

use crate::input::Input;

/// Runs every check on `data`.
pub fn run(data: &[u8]) {
    let request = round_trip_request(data);
    round_trip_response(data, request.as_ref());
    round_trip_report(data);
    reassemble(&mut Input::new(data));
}

fn round_trip_request(data: &[u8]) -> Option<Request<'_>> {
    let r = Request::decode(data).ok()?;
    let mut out = [0u8; MAX_MESSAGE_SIZE];
    let n = r
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded {r:?} does not re-encode: {e:?}"));
    assert_eq!(&out[..n], data, "request {r:?} re-encodes differently");
    assert_eq!(Request::decode(&out[..n]), Ok(r));
    Some(r)
}

fn round_trip_response(data: &[u8], request: Option<&Request<'_>>) {
    let Ok(r) = Response::decode(data) else {
        return;
    };
    let mut out = [0u8; MAX_MESSAGE_SIZE];
    let n = r
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded {r:?} does not re-encode: {e:?}"));
    assert_eq!(&out[..n], data, "response {r:?} re-encodes differently");
    assert_eq!(Response::decode(&out[..n]), Ok(r));
    if let Some(q) = request {
        // The same bytes cannot be both a request and a response (distinct type codes), but
        // `answers` must cope with any pair.
        let _ = r.answers(q);
    }
}

fn round_trip_report(data: &[u8]) {
    let Ok(rep) = InterfaceReport::parse(data) else {
        return;
    };
    let ranges: Vec<MmioRange> = rep.mmio_ranges().collect();
    assert_eq!(ranges.len(), rep.mmio_range_count());
    let mut out = vec![0u8; data.len()];
    let n = InterfaceReport::encode(&rep.fields(), &ranges, rep.device_specific_info(), &mut out)
        .unwrap_or_else(|e| panic!("parsed report does not re-encode: {e:?}"));
    assert_eq!(&out[..n], data, "report re-encodes differently");
}

/// Input: buffer length (u16), function ID (u16), then steps: a byte selecting next_request,
/// accept (portion length u16, remainder u16, portion bytes) or report.
fn reassemble(input: &mut Input<'_>) {
    let buffer_len = usize::from(input.u16());
    let tdi = InterfaceId::new(input.u16(), None);
    let mut buffer = vec![0u8; buffer_len];
    let mut expected: Vec<u8> = Vec::new();
    let mut fetch = ReportReassembly::new();
    while !input.is_empty() {
        match input.u8() % 3 {
            0 => {
                let before = fetch;
                match fetch.next_request(tdi, buffer.len()) {
                    Ok(Some(Request::GetDeviceInterfaceReport {
                        interface_id,
                        offset,
                        length,
                    })) => {
                        assert_eq!(interface_id, tdi);
                        assert_eq!(usize::from(offset), fetch.received());
                        assert!(length > 0 && usize::from(length) <= MAX_REPORT_PORTION);
                        assert!(usize::from(offset) + usize::from(length) <= buffer.len());
                    }
                    Ok(Some(other)) => panic!("reassembly asked for {other:?}"),
                    Ok(None) => assert!(before.is_complete()),
                    Err(_) => assert_eq!(fetch.received(), before.received()),
                }
            }
            1 => {
                let len = usize::from(input.u16() % 600);
                let remainder = input.u16();
                let portion = input.bytes(len);
                let before = fetch.received();
                match fetch.accept(&mut buffer, portion, remainder) {
                    Ok(done) => {
                        assert_eq!(done, fetch.is_complete());
                        assert_eq!(fetch.received(), before + portion.len());
                        expected.extend_from_slice(portion);
                    }
                    Err(_) => assert_eq!(fetch.received(), before),
                }
                assert!(fetch.received() <= buffer.len());
                assert_eq!(
                    &buffer[..fetch.received()],
                    &expected[..],
                    "reassembled bytes differ"
                );
            }
            _ => {
                if fetch.report(&buffer).is_ok() {
                    assert!(fetch.is_complete());
                    assert_eq!(InterfaceReport::parse(&expected), fetch.report(&buffer));
                }
            }
        }
    }
}

/// Seeds: one valid request of each kind, the device model's answers to them, a report, and a
/// reassembly program fetching a report in three portions.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use tsm_abi::tdisp::{
        ErrorCode, ErrorResponse, InterfaceInfo, LockFlags, LockInterfaceParams, RangeAttributes,
        ReportFields, Response,
    };
    let tdi = InterfaceId::new(0x0118, Some(2));
    let requests = [
        Request::GetVersion { interface_id: tdi },
        Request::GetCapabilities {
            interface_id: tdi,
            tsm_caps: 0,
        },
        Request::LockInterface {
            interface_id: tdi,
            params: LockInterfaceParams {
                flags: LockFlags::NO_FW_UPDATE | LockFlags::LOCK_MSIX,
                default_stream_id: 3,
                mmio_reporting_offset: 0xFFFF_FFF0_0000_0000,
                bind_p2p_address_mask: 0x0000_FFFF_FFFF_F000,
            },
        },
        Request::GetDeviceInterfaceReport {
            interface_id: tdi,
            offset: 0,
            length: 0x40,
        },
        Request::GetDeviceInterfaceState { interface_id: tdi },
        Request::StartInterface {
            interface_id: tdi,
            nonce: [0x5A; 32],
        },
        Request::StopInterface { interface_id: tdi },
        Request::BindP2pStream {
            interface_id: tdi,
            stream_id: 7,
        },
        Request::SetMmioAttribute {
            interface_id: tdi,
            range: MmioRange {
                first_page: 0x1_0000,
                number_of_pages: 16,
                attributes: RangeAttributes::IS_NON_TEE_MEM,
                range_id: 2,
            },
        },
    ];
    let responses = [
        Response::LockInterface {
            interface_id: tdi,
            nonce: [7; 32],
        },
        Response::DeviceInterfaceReport {
            interface_id: tdi,
            portion: &[0xAA; 40],
            remainder_length: 17,
        },
        Response::StartInterface { interface_id: tdi },
        Response::Error {
            interface_id: tdi,
            error: ErrorResponse::new(ErrorCode::InvalidNonce),
        },
    ];
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    for (i, r) in requests.iter().enumerate() {
        let n = r
            .encode(&mut buf)
            .unwrap_or_else(|e| panic!("seed {r:?}: {e:?}"));
        out.push((format!("request_{i}_{:?}", r.code()), buf[..n].to_vec()));
    }
    for (i, r) in responses.iter().enumerate() {
        let n = r
            .encode(&mut buf)
            .unwrap_or_else(|e| panic!("seed {r:?}: {e:?}"));
        out.push((format!("response_{i}_{:?}", r.code()), buf[..n].to_vec()));
    }
    let fields = ReportFields {
        interface_info: InterfaceInfo::DMA_WITHOUT_PASID | InterfaceInfo::NO_UPDATE_AFTER_LOCK,
        msi_x_message_control: 0x8003,
        lnr_control: 0,
        tph_control: 0,
    };
    let ranges = [
        MmioRange {
            first_page: 0x10_0000,
            number_of_pages: 4,
            attributes: RangeAttributes::empty(),
            range_id: 0,
        },
        MmioRange {
            first_page: 0x10_0010,
            number_of_pages: 1,
            attributes: RangeAttributes::MSIX_TABLE,
            range_id: 1,
        },
    ];
    let n = InterfaceReport::encode(&fields, &ranges, &[0xD5; 8], &mut buf)
        .unwrap_or_else(|e| panic!("seed report: {e:?}"));
    let report = buf[..n].to_vec();
    out.push(("report_two_ranges".into(), report.clone()));
    // Reassembly: buffer 1024, TDI 0x0118; ask, take 20 bytes; ask, take 20; ask, take the rest.
    let mut w = crate::input::Writer::default();
    w.u16(1024).u16(0x0118);
    let mut at = 0;
    while at < report.len() {
        let len = (report.len() - at).min(20);
        let remainder = report.len() - at - len;
        w.u8(0)
            .u8(1)
            .u16(len as u16)
            .u16(remainder as u16)
            .raw(&report[at..at + len]);
        at += len;
    }
    w.u8(2);
    out.push(("reassembly_in_portions".into(), w.bytes));
    out
}
