//! One valid value of every message (several for the variable ones), shared by the tests.

use crate::tdisp::*;

pub(super) const TDI: InterfaceId = InterfaceId::new(0x0118, Some(0x02));
pub(super) const TDI_NO_SEG: InterfaceId = InterfaceId::new(0xFFFF, None);

pub(super) const VERSIONS: &[u8] = &[0x10];
pub(super) const VERSIONS_MANY: &[u8] = &[0x10, 0x11, 0x20];
pub(super) const VENDOR_ID: &[u8] = &[0x86, 0x80];
pub(super) const VENDOR_DATA: &[u8] = &[1, 2, 3, 4, 5];
pub(super) const PORTION: &[u8] = &[0xAA; 40];

pub(super) fn nonce() -> Nonce {
    core::array::from_fn(|i| i as u8 ^ 0x5A)
}

pub(super) fn range() -> MmioRange {
    MmioRange {
        first_page: 0x1_0000,
        number_of_pages: 16,
        attributes: RangeAttributes::IS_NON_TEE_MEM,
        range_id: 2,
    }
}

pub(super) fn caps() -> Capabilities {
    Capabilities {
        dsm_caps: 0,
        req_msgs_supported: SupportedRequests::all(),
        lock_interface_flags_supported: LockFlags::all(),
        dev_addr_width: 52,
        num_req_this: 1,
        num_req_all: 4,
    }
}

pub(super) fn vendor() -> VendorData<'static> {
    VendorData {
        registry: Registry::PciSig,
        vendor_id: VENDOR_ID,
        data: VENDOR_DATA,
    }
}

pub(super) fn requests() -> [Request<'static>; 13] {
    [
        Request::GetVersion { interface_id: TDI },
        Request::GetCapabilities {
            interface_id: TDI,
            tsm_caps: 0,
        },
        Request::LockInterface {
            interface_id: TDI,
            params: LockInterfaceParams {
                flags: LockFlags::NO_FW_UPDATE | LockFlags::LOCK_MSIX,
                default_stream_id: 3,
                mmio_reporting_offset: 0xFFFF_FFF0_0000_0000,
                bind_p2p_address_mask: 0x0000_FFFF_FFFF_F000,
            },
        },
        Request::GetDeviceInterfaceReport {
            interface_id: TDI,
            offset: 0,
            length: 0xFFFF,
        },
        Request::GetDeviceInterfaceState { interface_id: TDI },
        Request::StartInterface {
            interface_id: TDI,
            nonce: nonce(),
        },
        Request::StopInterface {
            interface_id: TDI_NO_SEG,
        },
        Request::BindP2pStream {
            interface_id: TDI,
            stream_id: 7,
        },
        Request::UnbindP2pStream {
            interface_id: TDI,
            stream_id: 7,
        },
        Request::SetMmioAttribute {
            interface_id: TDI,
            range: range(),
        },
        Request::Vdm {
            interface_id: TDI,
            vendor: vendor(),
        },
        Request::Vdm {
            interface_id: TDI,
            vendor: VendorData {
                registry: Registry::Cxl,
                vendor_id: VENDOR_ID,
                data: &[],
            },
        },
        Request::GetDeviceInterfaceReport {
            interface_id: TDI,
            offset: 100,
            length: 1,
        },
    ]
}

pub(super) fn responses() -> [Response<'static>; 19] {
    [
        Response::Version {
            interface_id: TDI,
            versions: VersionList::new(VERSIONS).unwrap(),
        },
        Response::Version {
            interface_id: TDI,
            versions: VersionList::new(VERSIONS_MANY).unwrap(),
        },
        Response::Capabilities {
            interface_id: TDI,
            caps: caps(),
        },
        Response::LockInterface {
            interface_id: TDI,
            nonce: nonce(),
        },
        Response::DeviceInterfaceReport {
            interface_id: TDI,
            portion: PORTION,
            remainder_length: 17,
        },
        Response::DeviceInterfaceReport {
            interface_id: TDI,
            portion: &[],
            remainder_length: 0,
        },
        Response::DeviceInterfaceState {
            interface_id: TDI,
            state: TdiState::Run,
        },
        Response::StartInterface { interface_id: TDI },
        Response::StopInterface { interface_id: TDI },
        Response::BindP2pStream { interface_id: TDI },
        Response::UnbindP2pStream { interface_id: TDI },
        Response::SetMmioAttribute { interface_id: TDI },
        Response::Vdm {
            interface_id: TDI,
            vendor: vendor(),
        },
        Response::Error {
            interface_id: TDI,
            error: ErrorResponse::new(ErrorCode::InvalidNonce),
        },
        Response::Error {
            interface_id: TDI,
            error: ErrorResponse::new(ErrorCode::InvalidInterfaceState),
        },
        Response::Error {
            interface_id: TDI,
            error: ErrorResponse::unsupported(0x8B),
        },
        Response::Error {
            interface_id: TDI,
            error: ErrorResponse::vendor(vendor()),
        },
        Response::Error {
            interface_id: TDI,
            error: ErrorResponse::new(ErrorCode::InvalidDeviceConfiguration),
        },
        Response::Error {
            interface_id: TDI_NO_SEG,
            error: ErrorResponse::new(ErrorCode::Busy),
        },
    ]
}

/// Encodes into a fresh buffer.
pub(super) fn req_bytes(req: &Request<'_>) -> ([u8; MAX_MESSAGE_SIZE], usize) {
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let len = req.encode(&mut buf).unwrap();
    (buf, len)
}

/// Encodes into a fresh buffer.
pub(super) fn rsp_bytes(rsp: &Response<'_>) -> ([u8; MAX_MESSAGE_SIZE], usize) {
    let mut buf = [0u8; MAX_MESSAGE_SIZE];
    let len = rsp.encode(&mut buf).unwrap();
    (buf, len)
}
