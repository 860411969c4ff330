//! Fixed layouts of TDISP 1.0 messages, byte for byte (PCIe Base 6.x §11.3, little-endian).
//!
//! These structs are only views: every field that carries meaning is checked by the decoders in
//! `request`, `response` and `report` before a value leaves the codec.

use core::mem::{offset_of, size_of};

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 16-byte header every TDISP message starts with.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    pub version: u8,
    pub message_type: u8,
    pub reserved: [u8; 2],
    /// `INTERFACE_ID.FUNCTION_ID`.
    pub function_id: U32,
    /// `INTERFACE_ID` bytes 4..12.
    pub interface_reserved: U64,
}

/// `GET_TDISP_CAPABILITIES` payload.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GetCapabilities {
    pub tsm_caps: U32,
}

/// `TDISP_CAPABILITIES` payload.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Capabilities {
    pub dsm_caps: U32,
    pub req_msgs_supported: [u8; 16],
    pub lock_interface_flags_supported: U16,
    pub reserved: [u8; 3],
    pub dev_addr_width: u8,
    pub num_req_this: u8,
    pub num_req_all: u8,
}

/// `LOCK_INTERFACE_REQUEST` payload.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LockInterface {
    pub flags: U16,
    pub default_stream_id: u8,
    pub reserved: u8,
    pub mmio_reporting_offset: U64,
    pub bind_p2p_address_mask: U64,
}

/// `GET_DEVICE_INTERFACE_REPORT` payload.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GetReport {
    pub offset: U16,
    pub length: U16,
}

/// `DEVICE_INTERFACE_REPORT` payload before the report bytes.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ReportPortion {
    pub portion_length: U16,
    pub remainder_length: U16,
}

/// One MMIO range, as in the interface report and in `SET_MMIO_ATTRIBUTE_REQUEST`.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub(crate) struct MmioRange {
    pub first_page: U64,
    pub number_of_pages: U32,
    pub range_attributes: U16,
    pub range_id: U16,
}

/// `TDISP_ERROR` payload before the extended error data.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Error {
    pub error_code: U32,
    pub error_data: U32,
}

/// Start of `VDM_REQUEST`/`VDM_RESPONSE` payloads and of vendor extended error data.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct VendorHeader {
    pub registry_id: u8,
    pub vendor_id_len: u8,
}

/// The fixed start of the TDI report (before the MMIO ranges).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ReportHeader {
    pub interface_info: U16,
    pub reserved: U16,
    pub msi_x_message_control: U16,
    pub lnr_control: U16,
    pub tph_control: U32,
    pub mmio_range_count: U32,
}

// The spec tables give these sizes and offsets; a layout slip would silently shift every field.
const _: () = {
    assert!(size_of::<Header>() == 16);
    assert!(offset_of!(Header, message_type) == 1);
    assert!(offset_of!(Header, function_id) == 4);
    assert!(offset_of!(Header, interface_reserved) == 8);
    assert!(size_of::<GetCapabilities>() == 4);
    assert!(size_of::<Capabilities>() == 28);
    assert!(offset_of!(Capabilities, req_msgs_supported) == 4);
    assert!(offset_of!(Capabilities, lock_interface_flags_supported) == 20);
    assert!(offset_of!(Capabilities, reserved) == 22);
    assert!(offset_of!(Capabilities, dev_addr_width) == 25);
    assert!(offset_of!(Capabilities, num_req_all) == 27);
    assert!(size_of::<LockInterface>() == 20);
    assert!(offset_of!(LockInterface, default_stream_id) == 2);
    assert!(offset_of!(LockInterface, mmio_reporting_offset) == 4);
    assert!(offset_of!(LockInterface, bind_p2p_address_mask) == 12);
    assert!(size_of::<GetReport>() == 4);
    assert!(size_of::<ReportPortion>() == 4);
    assert!(size_of::<MmioRange>() == 16);
    assert!(offset_of!(MmioRange, number_of_pages) == 8);
    assert!(offset_of!(MmioRange, range_attributes) == 12);
    assert!(offset_of!(MmioRange, range_id) == 14);
    assert!(size_of::<Error>() == 8);
    assert!(size_of::<VendorHeader>() == 2);
    assert!(size_of::<ReportHeader>() == 16);
    assert!(offset_of!(ReportHeader, msi_x_message_control) == 4);
    assert!(offset_of!(ReportHeader, tph_control) == 8);
    assert!(offset_of!(ReportHeader, mmio_range_count) == 12);
};
