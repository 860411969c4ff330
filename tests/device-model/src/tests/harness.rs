//! A three-TDI device and a requester-side exchange helper.

use tsm_abi::tdisp::*;

use crate::{Device, DeviceConfig, TdiConfig};

pub(super) const TDI_A: InterfaceId = InterfaceId::new(0x0100, Some(0));
pub(super) const TDI_B: InterfaceId = InterfaceId::new(0x0101, Some(0));
pub(super) const TDI_C: InterfaceId = InterfaceId::new(0x0102, None);
pub(super) const UNKNOWN: InterfaceId = InterfaceId::new(0x0200, Some(0));

pub(super) const RANGES_A: [MmioRange; 4] = [
    MmioRange {
        first_page: 0xF_0000,
        number_of_pages: 16,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    },
    MmioRange {
        first_page: 0xF_0010,
        number_of_pages: 1,
        attributes: RangeAttributes::MSIX_TABLE,
        range_id: 0,
    },
    MmioRange {
        first_page: 0xF_0011,
        number_of_pages: 1,
        attributes: RangeAttributes::MSIX_PBA,
        range_id: 0,
    },
    MmioRange {
        first_page: 0xF_1000,
        number_of_pages: 4,
        attributes: RangeAttributes::IS_MEM_ATTR_UPDATABLE,
        range_id: 2,
    },
];

pub(super) const DSI_A: &[u8] = b"model NIC: 8 queue pairs, RSS on, checksum offload on";

pub(super) const FIELDS_A: ReportFields = ReportFields {
    interface_info: InterfaceInfo::DMA_WITHOUT_PASID.union(InterfaceInfo::ATS_SUPPORTED),
    msi_x_message_control: 0x8003,
    lnr_control: 0,
    tph_control: 0x0000_0101,
};

pub(super) static TDIS: [TdiConfig<'static>; 3] = [
    TdiConfig {
        interface_id: TDI_A,
        report: FIELDS_A,
        mmio_ranges: &RANGES_A,
        device_specific_info: DSI_A,
    },
    TdiConfig {
        interface_id: TDI_B,
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITH_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: &[MmioRange {
            first_page: 0xE_0000,
            number_of_pages: 2,
            attributes: RangeAttributes::empty(),
            range_id: 1,
        }],
        device_specific_info: &[],
    },
    TdiConfig {
        interface_id: TDI_C,
        report: ReportFields {
            interface_info: InterfaceInfo::empty(),
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: &[],
        device_specific_info: b"c",
    },
];

pub(super) const SEED: [u8; 32] = [0x42; 32];

/// The test device; its report portions are small so reports take several round trips.
pub(super) fn device() -> Device<'static> {
    let mut config = DeviceConfig::new(&TDIS, SEED);
    config.max_report_portion = 24;
    Device::new(config).unwrap()
}

pub(super) const ALL_LOCK_FLAGS: LockInterfaceParams = LockInterfaceParams {
    flags: LockFlags::NO_FW_UPDATE
        .union(LockFlags::LOCK_MSIX)
        .union(LockFlags::BIND_P2P),
    default_stream_id: 1,
    mmio_reporting_offset: 0x10_0000_0000,
    bind_p2p_address_mask: 0x0000_FFFF_FFFF_F000,
};

/// Sends `req`, returns the raw answer length in `rsp` (panics only if the model fails to
/// produce bytes, which the honest tests never expect).
pub(super) fn send(device: &mut Device<'_>, req: &Request<'_>, rsp: &mut [u8]) -> usize {
    let mut bytes = [0u8; MAX_MESSAGE_SIZE];
    let n = req.encode(&mut bytes).unwrap();
    device.respond(&bytes[..n], rsp).unwrap()
}

/// Sends `req` and decodes the answer, checking it answers `req`.
pub(super) fn exchange<'r>(
    device: &mut Device<'_>,
    req: &Request<'_>,
    rsp: &'r mut [u8; 2 * MAX_MESSAGE_SIZE],
) -> Response<'r> {
    let m = send(device, req, rsp);
    let response = Response::decode(&rsp[..m]).unwrap();
    assert!(
        response.answers(req),
        "{response:?} does not answer {req:?}"
    );
    response
}

/// The error code of an answer, or `None` if it is not a TDISP_ERROR.
pub(super) fn error_of(device: &mut Device<'_>, req: &Request<'_>) -> Option<ErrorCode> {
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    match exchange(device, req, &mut rsp) {
        Response::Error { error, .. } => Some(error.code),
        _ => None,
    }
}

pub(super) fn lock(device: &mut Device<'_>, id: InterfaceId, params: LockInterfaceParams) -> Nonce {
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    match exchange(
        device,
        &Request::LockInterface {
            interface_id: id,
            params,
        },
        &mut rsp,
    ) {
        Response::LockInterface { nonce, .. } => nonce,
        other => panic!("lock refused: {other:?}"),
    }
}

pub(super) fn state(device: &mut Device<'_>, id: InterfaceId) -> TdiState {
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    match exchange(
        device,
        &Request::GetDeviceInterfaceState { interface_id: id },
        &mut rsp,
    ) {
        Response::DeviceInterfaceState { state, .. } => {
            assert_eq!(device.tdi_state(id), Some(state));
            state
        }
        other => panic!("{other:?}"),
    }
}

/// Fetches the whole report into `buf` with the codec's reassembly; returns its length or the
/// first error (codec check or TDISP_ERROR code as `InvalidField(ErrorCode)`).
pub(super) fn fetch_report(
    device: &mut Device<'_>,
    id: InterfaceId,
    buf: &mut [u8],
) -> Result<usize, TdispError> {
    let mut fetch = ReportReassembly::new();
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    while let Some(req) = fetch.next_request(id, buf.len())? {
        let m = send(device, &req, &mut rsp);
        match Response::decode(&rsp[..m])? {
            Response::DeviceInterfaceReport {
                interface_id,
                portion,
                remainder_length,
            } if interface_id == id => {
                fetch.accept(buf, portion, remainder_length)?;
            }
            _ => return Err(TdispError::InvalidField(Field::ErrorCode)),
        }
    }
    fetch.report(buf)?;
    Ok(fetch.received())
}
