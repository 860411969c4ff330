//! Report contents that the tests and scenarios of several crates share.

use tsm_abi::tdisp::{MmioRange, RangeAttributes};

/// 32 one-page MMIO ranges, 16 pages apart from page 0x8_0000. With [`LARGE_REPORT_INFO`] they
/// make a 1032-byte interface report: over 1 KiB, so a requester whose device sends small
/// portions fetches it in two.
pub static LARGE_REPORT_RANGES: [MmioRange; 32] = {
    let mut r = [MmioRange {
        first_page: 0,
        number_of_pages: 1,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    }; 32];
    let mut i = 0;
    while i < r.len() {
        r[i].first_page = 0x8_0000 + 0x10 * i as u64;
        i += 1;
    }
    r
};

/// The device-specific info of the large report: 500 bytes.
pub static LARGE_REPORT_INFO: [u8; 500] = [0xD5; 500];
