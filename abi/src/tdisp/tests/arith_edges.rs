//! The decoders' arithmetic at the edges of their input ranges (the crate denies unchecked
//! arithmetic; these pin that the checked forms give the same answers as the plain sums did).

use crate::features::DeviceLimits;
use crate::params::{InterfaceIdFormat, PdevParams};
use crate::tdisp::RequestCode;
use zerocopy::FromZeros;

#[test]
fn supported_bit_is_the_code_less_0x80() {
    for &code in RequestCode::ALL {
        assert_eq!(
            u32::from(code.supported_bit()),
            u32::from(code.to_wire()) - 0x80
        );
    }
    assert_eq!(RequestCode::GetVersion.supported_bit(), 1);
    assert_eq!(RequestCode::Vdm.supported_bit(), 0x0B);
}

fn pdev(rid_base: u16, rid_count: u16) -> PdevParams {
    PdevParams {
        rid_base,
        rid_count,
        interface_id_format: InterfaceIdFormat::Rid.raw(),
        ..PdevParams::new_zeroed()
    }
}

#[test]
fn rid_ranges_at_the_top_of_the_rid_space() {
    // rid_base + rid_count may be exactly 0x1_0000, not one more.
    assert!(pdev(0xFFFF, 1).validate().is_ok());
    assert!(pdev(0, 0xFFFF).validate().is_ok());
    assert!(pdev(0xFFFF, 2).validate().is_err());
    assert!(pdev(0xFFFF, 0xFFFF).validate().is_err());
    assert!(pdev(0x8000, 0x8000).validate().is_ok());
    assert!(pdev(0x8001, 0x8000).validate().is_err());

    let top = pdev(0xFFFF, 1);
    assert!(top.contains_rid(0xFFFF));
    assert!(!top.contains_rid(0xFFFE));
    assert!(!top.contains_rid(0));
    let all_but_last = pdev(0, 0xFFFF);
    assert!(all_but_last.contains_rid(0));
    assert!(all_but_last.contains_rid(0xFFFE));
    assert!(!all_but_last.contains_rid(0xFFFF));
    let mid = pdev(0x100, 8);
    assert!(!mid.contains_rid(0xFF));
    assert!(mid.contains_rid(0x100));
    assert!(mid.contains_rid(0x107));
    assert!(!mid.contains_rid(0x108));
    // An empty range (refused by validate) contains nothing.
    assert!(!pdev(0x100, 0).contains_rid(0x100));
}

#[test]
fn register_fields_take_every_bit() {
    let all = DeviceLimits::from_raw(u64::MAX);
    assert_eq!(
        (
            all.vdevs_per_tvm,
            all.vdevs_per_pdev,
            all.pdevs,
            all.viommus_per_tvm
        ),
        (u16::MAX, u16::MAX, u16::MAX, u16::MAX)
    );
    let raw = 0x0123_4567_89AB_CDEF;
    assert_eq!(DeviceLimits::from_raw(raw).to_raw(), raw);
}
