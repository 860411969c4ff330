//! The TDI report parser, encoder and reassembly.

use super::samples::*;
use crate::tdisp::*;

const DSI: &[u8] = b"queue-pairs=8";

fn ranges() -> [MmioRange; 3] {
    [
        MmioRange {
            first_page: 0x8_0000,
            number_of_pages: 4,
            attributes: RangeAttributes::empty(),
            range_id: 0,
        },
        MmioRange {
            first_page: 0x8_0004,
            number_of_pages: 1,
            attributes: RangeAttributes::MSIX_TABLE,
            range_id: 0,
        },
        MmioRange {
            first_page: 0x9_0000,
            number_of_pages: 2,
            attributes: RangeAttributes::IS_NON_TEE_MEM | RangeAttributes::IS_MEM_ATTR_UPDATABLE,
            range_id: 2,
        },
    ]
}

fn fields() -> ReportFields {
    ReportFields {
        interface_info: InterfaceInfo::DMA_WITHOUT_PASID | InterfaceInfo::ATS_SUPPORTED,
        msi_x_message_control: 0x8007,
        lnr_control: 0,
        tph_control: 0x0000_0100,
    }
}

fn report_bytes() -> ([u8; 256], usize) {
    let mut buf = [0u8; 256];
    let len = InterfaceReport::encode(&fields(), &ranges(), DSI, &mut buf).unwrap();
    (buf, len)
}

fn parse_with(edit: impl FnOnce(&mut [u8])) -> Result<(), TdispError> {
    let (mut buf, len) = report_bytes();
    edit(&mut buf[..len]);
    InterfaceReport::parse(&buf[..len]).map(|_| ())
}

#[test]
fn report_round_trips_and_matches_layout() {
    let (buf, len) = report_bytes();
    assert_eq!(len, 16 + 3 * 16 + 4 + DSI.len());
    assert_eq!(
        &buf[..16],
        &[0x0A, 0, 0, 0, 0x07, 0x80, 0, 0, 0, 1, 0, 0, 3, 0, 0, 0]
    );
    // Second range: first page, pages, attributes (MSIX_TABLE), range id.
    assert_eq!(
        &buf[32..48],
        &[4, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    );
    assert_eq!(&buf[64..68], &(DSI.len() as u32).to_le_bytes());
    let report = InterfaceReport::parse(&buf[..len]).unwrap();
    assert_eq!(report.fields(), fields());
    assert_eq!(report.mmio_range_count(), 3);
    assert_eq!(report.mmio_ranges().len(), 3);
    assert!(report.mmio_ranges().eq(ranges()));
    assert_eq!(report.device_specific_info(), DSI);

    let mut buf = [0u8; 32];
    let len = InterfaceReport::encode(&fields(), &[], &[], &mut buf).unwrap();
    assert_eq!(len, 20);
    let empty = InterfaceReport::parse(&buf[..len]).unwrap();
    assert_eq!(empty.mmio_ranges().next(), None);
}

#[test]
fn report_malformations_are_refused() {
    assert_eq!(
        parse_with(|b| b[0..2].copy_from_slice(&0x20u16.to_le_bytes())),
        Err(TdispError::ReservedNonZero(Field::InterfaceInfo))
    );
    assert_eq!(
        parse_with(|b| b[3] = 1),
        Err(TdispError::ReservedNonZero(Field::ReportReserved))
    );
    for count in [2u32, 4, 5, 0xFFFF_FFFF, 0x1000_0000] {
        assert_eq!(
            parse_with(|b| b[12..16].copy_from_slice(&count.to_le_bytes())),
            Err(if count == 2 {
                TdispError::Inconsistent(Field::DeviceSpecificInfoLength)
            } else {
                TdispError::Inconsistent(Field::MmioRangeCount)
            }),
            "count {count}"
        );
    }
    let info_at = 16 + 3 * 16;
    for info_len in [DSI.len() as u32 - 1, DSI.len() as u32 + 1, u32::MAX] {
        assert_eq!(
            parse_with(|b| b[info_at..info_at + 4].copy_from_slice(&info_len.to_le_bytes())),
            Err(TdispError::Inconsistent(Field::DeviceSpecificInfoLength))
        );
    }
    for bit in 4..16 {
        assert_eq!(
            parse_with(|b| b[28..30].copy_from_slice(&(1u16 << bit).to_le_bytes())),
            Err(TdispError::ReservedNonZero(Field::RangeAttributes))
        );
    }
    assert_eq!(
        parse_with(|b| b[24..28].copy_from_slice(&[0; 4])),
        Err(TdispError::InvalidField(Field::RangePages))
    );
    assert_eq!(
        parse_with(|b| b[16..24].copy_from_slice(&(u64::MAX - 1).to_le_bytes())),
        Err(TdispError::Inconsistent(Field::RangeOverflow))
    );
    // Grow the first range by one page: it now overlaps the second.
    assert_eq!(
        parse_with(|b| b[24] = 5),
        Err(TdispError::Inconsistent(Field::RangeOverlap))
    );
    // Overlap between the first and last ranges, not neighbours.
    assert_eq!(
        parse_with(|b| b[48..56].copy_from_slice(&0x8_0003u64.to_le_bytes())),
        Err(TdispError::Inconsistent(Field::RangeOverlap))
    );
    let (buf, len) = report_bytes();
    let mut longer = [0u8; 300];
    longer[..len].copy_from_slice(&buf[..len]);
    assert_eq!(
        InterfaceReport::parse(&longer[..len + 1]),
        Err(TdispError::Inconsistent(Field::DeviceSpecificInfoLength))
    );
    for n in 0..len {
        assert!(
            InterfaceReport::parse(&buf[..n]).is_err(),
            "truncated to {n}"
        );
    }
    let big = [0u8; MAX_REPORT_SIZE + 1];
    assert_eq!(InterfaceReport::parse(&big), Err(TdispError::Oversized));
    let mut out = [0u8; 16];
    assert_eq!(
        InterfaceReport::encode(&fields(), &ranges(), DSI, &mut out),
        Err(TdispError::BufferTooSmall)
    );
    let mut out = [0u8; 128];
    assert_eq!(
        InterfaceReport::encode(&fields(), &[ranges()[0], ranges()[0]], &[], &mut out),
        Err(TdispError::Inconsistent(Field::RangeOverlap))
    );
}

/// Serves `report` in portions of at most `device_max` bytes, as a responder would.
fn portion(report: &[u8], offset: u16, length: u16, device_max: usize) -> (&[u8], u16) {
    let start = usize::from(offset);
    let end = (start + usize::from(length).min(device_max)).min(report.len());
    (&report[start..end], (report.len() - end) as u16)
}

#[test]
fn reassembly_fetches_in_portions() {
    let (report, len) = report_bytes();
    let report = &report[..len];
    for (buffer_len, device_max) in [(len, 7), (len, 1), (4096, 4096), (len + 3, 16)] {
        let mut buf = [0u8; 4096];
        let buf = &mut buf[..buffer_len];
        let mut fetch = ReportReassembly::new();
        let mut rounds = 0;
        while let Some(req) = fetch.next_request(TDI, buf.len()).unwrap() {
            let Request::GetDeviceInterfaceReport {
                interface_id,
                offset,
                length,
            } = req
            else {
                panic!("{req:?}")
            };
            assert_eq!(interface_id, TDI);
            assert_eq!(usize::from(offset), fetch.received());
            let (part, remainder) = portion(report, offset, length, device_max);
            let done = fetch.accept(buf, part, remainder).unwrap();
            assert_eq!(done, remainder == 0);
            rounds += 1;
        }
        assert_eq!(rounds, len.div_ceil(device_max));
        let parsed = fetch.report(buf).unwrap();
        assert!(parsed.mmio_ranges().eq(ranges()));
    }
}

#[test]
fn reassembly_refuses_bad_portions() {
    let (report, len) = report_bytes();
    let report = &report[..len];
    let mut buf = [0u8; 256];

    // A portion longer than asked.
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 10).unwrap();
    assert_eq!(
        fetch.accept(&mut buf, &report[..11], (len - 11) as u16),
        Err(TdispError::Inconsistent(Field::PortionLength))
    );

    // A report whose total length changes between portions.
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 256).unwrap();
    assert_eq!(
        fetch.accept(&mut buf, &report[..8], (len - 8) as u16),
        Ok(false)
    );
    fetch.next_request(TDI, 256).unwrap();
    assert_eq!(
        fetch.accept(&mut buf, &report[8..16], (len - 16 + 16) as u16),
        Err(TdispError::Inconsistent(Field::RemainderLength))
    );

    // No progress.
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 256).unwrap();
    assert_eq!(
        fetch.accept(&mut buf, &[], 5),
        Err(TdispError::Inconsistent(Field::PortionLength))
    );

    // An answer without a question.
    let mut fetch = ReportReassembly::new();
    assert_eq!(
        fetch.accept(&mut buf, &report[..4], 0),
        Err(TdispError::Inconsistent(Field::PortionOffset))
    );

    // More than the buffer holds, or than any report may be.
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 16).unwrap();
    assert_eq!(
        fetch.accept(&mut buf[..16], &report[..16], 100),
        Err(TdispError::BufferTooSmall)
    );
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 256).unwrap();
    fetch.accept(&mut buf, &report[..16], 0xFFFF).unwrap_err();
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 256).unwrap();
    assert_eq!(
        fetch.accept(&mut buf, &report[..16], 0xFFFF - 15),
        Err(TdispError::Oversized)
    );

    // A buffer with no room left.
    let mut fetch = ReportReassembly::new();
    assert_eq!(fetch.next_request(TDI, 0), Err(TdispError::BufferTooSmall));

    // Not complete yet.
    let mut fetch = ReportReassembly::new();
    fetch.next_request(TDI, 256).unwrap();
    fetch
        .accept(&mut buf, &report[..8], (len - 8) as u16)
        .unwrap();
    assert_eq!(fetch.report(&buf).map(|_| ()), Err(TdispError::Truncated));
}

#[test]
fn largest_report_parses() {
    const N: usize = (MAX_REPORT_SIZE - 20) / 16;
    let mut ranges = [ranges()[0]; N];
    for (i, r) in ranges.iter_mut().enumerate() {
        *r = MmioRange {
            first_page: 2 * i as u64,
            number_of_pages: 1,
            ..*r
        };
    }
    let mut buf = [0u8; MAX_REPORT_SIZE];
    let len = InterfaceReport::encode(&fields(), &ranges, &[], &mut buf).unwrap();
    assert_eq!(len, 20 + 16 * N);
    let report = InterfaceReport::parse(&buf[..len]).unwrap();
    assert_eq!(report.mmio_range_count(), N);
    // The last range touching the first one is caught across the whole table.
    buf[len - 4 - 16..len - 4 - 8].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        InterfaceReport::parse(&buf[..len]),
        Err(TdispError::Inconsistent(Field::RangeOverlap))
    );
}
