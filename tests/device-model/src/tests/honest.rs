//! The honest device against the codec: lifecycle, state errors, report portions, P2P, MMIO
//! attributes, malformed requests, configuration checks.

use tsm_abi::tdisp::*;

use super::harness::*;
use crate::{ConfigError, Device, DeviceConfig, TdiConfig};

#[test]
fn version_and_capabilities() {
    let mut dev = device();
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    match exchange(
        &mut dev,
        &Request::GetVersion {
            interface_id: TDI_A,
        },
        &mut rsp,
    ) {
        Response::Version { versions, .. } => {
            assert!(versions.contains(TDISP_VERSION_1_0));
            assert_eq!(versions.entries(), &[0x10]);
        }
        other => panic!("{other:?}"),
    }
    let req = Request::GetCapabilities {
        interface_id: TDI_B,
        tsm_caps: 0,
    };
    match exchange(&mut dev, &req, &mut rsp) {
        Response::Capabilities { caps, .. } => {
            assert_eq!(caps, DeviceConfig::new(&TDIS, SEED).capabilities);
            assert!(
                caps.req_msgs_supported
                    .contains(RequestCode::StartInterface)
            );
            assert!(!caps.req_msgs_supported.contains(RequestCode::Vdm));
            assert_eq!(caps.lock_interface_flags_supported, LockFlags::all());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lock_report_start_stop_end_to_end() {
    let mut dev = device();
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigUnlocked);
    let nonce = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigLocked);

    let mut buf = [0u8; 1024];
    let len = fetch_report(&mut dev, TDI_A, &mut buf).unwrap();
    assert!(len > 24 * 3, "the report must take several portions");
    let report = InterfaceReport::parse(&buf[..len]).unwrap();
    assert_eq!(report.fields(), FIELDS_A);
    assert_eq!(report.device_specific_info(), DSI_A);
    let offset_pages = ALL_LOCK_FLAGS.mmio_reporting_offset / MMIO_PAGE_SIZE;
    assert!(report.mmio_ranges().eq(RANGES_A.iter().map(|r| MmioRange {
        first_page: r.first_page + offset_pages,
        ..*r
    })));

    let start = Request::StartInterface {
        interface_id: TDI_A,
        nonce,
    };
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    assert!(matches!(
        exchange(&mut dev, &start, &mut rsp),
        Response::StartInterface { .. }
    ));
    assert_eq!(state(&mut dev, TDI_A), TdiState::Run);
    // The report stays available in RUN; START used the nonce up.
    assert_eq!(fetch_report(&mut dev, TDI_A, &mut buf), Ok(len));
    assert_eq!(
        error_of(&mut dev, &start),
        Some(ErrorCode::InvalidInterfaceState)
    );

    let stop = Request::StopInterface {
        interface_id: TDI_A,
    };
    assert!(matches!(
        exchange(&mut dev, &stop, &mut rsp),
        Response::StopInterface { .. }
    ));
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigUnlocked);
    assert_eq!(
        error_of(&mut dev, &start),
        Some(ErrorCode::InvalidInterfaceState)
    );
    // STOP is valid in every state, including CONFIG_UNLOCKED.
    assert!(matches!(
        exchange(&mut dev, &stop, &mut rsp),
        Response::StopInterface { .. }
    ));
}

#[test]
fn wrong_nonce_moves_to_error_and_destroys_the_nonce() {
    let mut dev = device();
    let nonce = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    let mut wrong = nonce;
    wrong[31] ^= 1;
    let bad = Request::StartInterface {
        interface_id: TDI_A,
        nonce: wrong,
    };
    assert_eq!(error_of(&mut dev, &bad), Some(ErrorCode::InvalidNonce));
    assert_eq!(state(&mut dev, TDI_A), TdiState::Error);
    let good = Request::StartInterface {
        interface_id: TDI_A,
        nonce,
    };
    assert_eq!(
        error_of(&mut dev, &good),
        Some(ErrorCode::InvalidInterfaceState)
    );
    let mut buf = [0u8; 1024];
    assert_eq!(
        fetch_report(&mut dev, TDI_A, &mut buf),
        Err(TdispError::InvalidField(Field::ErrorCode))
    );
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    exchange(
        &mut dev,
        &Request::StopInterface {
            interface_id: TDI_A,
        },
        &mut rsp,
    );
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigUnlocked);
    let again = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    assert_ne!(again, nonce, "a new lock draws a new nonce");
}

#[test]
fn requests_in_the_wrong_state_are_refused() {
    let mut dev = device();
    let nonce = [0u8; NONCE_SIZE];
    let cases = [
        Request::StartInterface {
            interface_id: TDI_A,
            nonce,
        },
        Request::GetDeviceInterfaceReport {
            interface_id: TDI_A,
            offset: 0,
            length: 100,
        },
        Request::BindP2pStream {
            interface_id: TDI_A,
            stream_id: 5,
        },
        Request::UnbindP2pStream {
            interface_id: TDI_A,
            stream_id: 5,
        },
        Request::SetMmioAttribute {
            interface_id: TDI_A,
            range: MmioRange {
                attributes: RangeAttributes::empty(),
                ..RANGES_A[3]
            },
        },
    ];
    for req in cases {
        assert_eq!(
            error_of(&mut dev, &req),
            Some(ErrorCode::InvalidInterfaceState),
            "{req:?}"
        );
    }
    lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    let relock = Request::LockInterface {
        interface_id: TDI_A,
        params: ALL_LOCK_FLAGS,
    };
    assert_eq!(
        error_of(&mut dev, &relock),
        Some(ErrorCode::InvalidInterfaceState)
    );
    // P2P and MMIO attributes need RUN, not just CONFIG_LOCKED.
    for req in &cases[2..] {
        assert_eq!(
            error_of(&mut dev, req),
            Some(ErrorCode::InvalidInterfaceState),
            "{req:?}"
        );
    }
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigLocked);
}

#[test]
fn tdis_are_independent() {
    let mut dev = device();
    let a = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    let b = lock(&mut dev, TDI_B, ALL_LOCK_FLAGS);
    assert_ne!(a, b);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    exchange(
        &mut dev,
        &Request::StartInterface {
            interface_id: TDI_B,
            nonce: b,
        },
        &mut rsp,
    );
    assert_eq!(state(&mut dev, TDI_A), TdiState::ConfigLocked);
    assert_eq!(state(&mut dev, TDI_B), TdiState::Run);
    assert_eq!(state(&mut dev, TDI_C), TdiState::ConfigUnlocked);
    // Another TDI's nonce is a wrong nonce.
    let cross = Request::StartInterface {
        interface_id: TDI_A,
        nonce: b,
    };
    assert_eq!(error_of(&mut dev, &cross), Some(ErrorCode::InvalidNonce));
    assert_eq!(state(&mut dev, TDI_B), TdiState::Run);
    assert_eq!(dev.tdi_state(UNKNOWN), None);
    for req in [
        Request::GetDeviceInterfaceState {
            interface_id: UNKNOWN,
        },
        Request::LockInterface {
            interface_id: UNKNOWN,
            params: ALL_LOCK_FLAGS,
        },
    ] {
        assert_eq!(error_of(&mut dev, &req), Some(ErrorCode::InvalidInterface));
    }
}

#[test]
fn nonces_are_reproducible_per_seed() {
    let mut one = device();
    let mut two = device();
    assert_eq!(
        lock(&mut one, TDI_C, ALL_LOCK_FLAGS),
        lock(&mut two, TDI_C, ALL_LOCK_FLAGS)
    );
    let mut other = Device::new(DeviceConfig::new(&TDIS, [7; 32])).unwrap();
    assert_ne!(
        lock(&mut one, TDI_A, ALL_LOCK_FLAGS),
        lock(&mut other, TDI_A, ALL_LOCK_FLAGS)
    );
}

#[test]
fn report_follows_lock_parameters_and_offset_rules() {
    let mut dev = device();
    // Without LOCK_MSIX the MSI-X table and PBA ranges and the MSI-X/TPH controls are hidden;
    // a negative reporting offset moves the ranges down.
    let params = LockInterfaceParams {
        flags: LockFlags::empty(),
        default_stream_id: 0,
        mmio_reporting_offset: (-0x1000_0000i64) as u64,
        bind_p2p_address_mask: 0,
    };
    lock(&mut dev, TDI_A, params);
    let mut buf = [0u8; 1024];
    let len = fetch_report(&mut dev, TDI_A, &mut buf).unwrap();
    let report = InterfaceReport::parse(&buf[..len]).unwrap();
    assert_eq!(report.fields().msi_x_message_control, 0);
    assert_eq!(report.fields().tph_control, 0);
    let firsts: [u64; 2] = [
        RANGES_A[0].first_page - 0x1_0000,
        RANGES_A[3].first_page - 0x1_0000,
    ];
    assert!(report.mmio_ranges().map(|r| r.first_page).eq(firsts));

    // Portions must continue where the last one ended.
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let first = Request::GetDeviceInterfaceReport {
        interface_id: TDI_A,
        offset: 0,
        length: 10,
    };
    match exchange(&mut dev, &first, &mut rsp) {
        Response::DeviceInterfaceReport {
            portion,
            remainder_length,
            ..
        } => {
            assert_eq!(portion.len(), 10);
            assert_eq!(usize::from(remainder_length), len - 10);
        }
        other => panic!("{other:?}"),
    }
    let skip = Request::GetDeviceInterfaceReport {
        interface_id: TDI_A,
        offset: 11,
        length: 10,
    };
    assert_eq!(error_of(&mut dev, &skip), Some(ErrorCode::InvalidRequest));
    let beyond = Request::GetDeviceInterfaceReport {
        interface_id: TDI_A,
        offset: len as u16,
        length: 10,
    };
    assert_eq!(error_of(&mut dev, &beyond), Some(ErrorCode::InvalidRequest));

    // A misaligned or wrapping offset is refused and leaves the TDI unlocked.
    for offset in [0x800, (-(0xF_0000i64 << 12) - 0x1000) as u64] {
        let req = Request::LockInterface {
            interface_id: TDI_B,
            params: LockInterfaceParams {
                mmio_reporting_offset: offset,
                ..params
            },
        };
        assert_eq!(
            error_of(&mut dev, &req),
            Some(ErrorCode::InvalidRequest),
            "{offset:#x}"
        );
        assert_eq!(state(&mut dev, TDI_B), TdiState::ConfigUnlocked);
    }
}

#[test]
fn p2p_streams_and_mmio_attributes_in_run() {
    let mut dev = device();
    let nonce = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    exchange(
        &mut dev,
        &Request::StartInterface {
            interface_id: TDI_A,
            nonce,
        },
        &mut rsp,
    );

    let bind = Request::BindP2pStream {
        interface_id: TDI_A,
        stream_id: 5,
    };
    let unbind = Request::UnbindP2pStream {
        interface_id: TDI_A,
        stream_id: 5,
    };
    assert_eq!(error_of(&mut dev, &unbind), Some(ErrorCode::InvalidRequest));
    assert_eq!(error_of(&mut dev, &bind), None);
    assert_eq!(error_of(&mut dev, &bind), Some(ErrorCode::InvalidRequest));
    assert_eq!(error_of(&mut dev, &unbind), None);
    let default = Request::BindP2pStream {
        interface_id: TDI_A,
        stream_id: 1,
    };
    assert_eq!(
        error_of(&mut dev, &default),
        Some(ErrorCode::InvalidRequest)
    );

    // Mark the updatable range non-TEE; the report shows it.
    let offset_pages = ALL_LOCK_FLAGS.mmio_reporting_offset / MMIO_PAGE_SIZE;
    let reported = MmioRange {
        first_page: RANGES_A[3].first_page + offset_pages,
        ..RANGES_A[3]
    };
    let set = Request::SetMmioAttribute {
        interface_id: TDI_A,
        range: MmioRange {
            attributes: RangeAttributes::IS_NON_TEE_MEM,
            ..reported
        },
    };
    assert_eq!(error_of(&mut dev, &set), None);
    let mut buf = [0u8; 1024];
    let len = fetch_report(&mut dev, TDI_A, &mut buf).unwrap();
    let report = InterfaceReport::parse(&buf[..len]).unwrap();
    let last = report.mmio_ranges().last().unwrap();
    assert!(last.attributes.contains(RangeAttributes::IS_NON_TEE_MEM));
    let clear = Request::SetMmioAttribute {
        interface_id: TDI_A,
        range: MmioRange {
            attributes: RangeAttributes::empty(),
            ..reported
        },
    };
    assert_eq!(error_of(&mut dev, &clear), None);
    // A range that is not updatable, or not reported as such.
    let fixed = Request::SetMmioAttribute {
        interface_id: TDI_A,
        range: MmioRange {
            first_page: RANGES_A[0].first_page + offset_pages,
            attributes: RangeAttributes::empty(),
            ..RANGES_A[0]
        },
    };
    assert_eq!(error_of(&mut dev, &fixed), Some(ErrorCode::InvalidRequest));

    // Without BIND_P2P at lock, binding is refused.
    let nonce = lock(
        &mut dev,
        TDI_B,
        LockInterfaceParams {
            flags: LockFlags::empty(),
            ..ALL_LOCK_FLAGS
        },
    );
    exchange(
        &mut dev,
        &Request::StartInterface {
            interface_id: TDI_B,
            nonce,
        },
        &mut rsp,
    );
    let bind_b = Request::BindP2pStream {
        interface_id: TDI_B,
        stream_id: 5,
    };
    assert_eq!(error_of(&mut dev, &bind_b), Some(ErrorCode::InvalidRequest));
}

#[test]
fn device_side_errors_move_locked_tdis_to_error() {
    let mut dev = device();
    assert!(
        !dev.trigger_error(TDI_A),
        "an unlocked TDI has nothing to lose"
    );
    let nonce = lock(&mut dev, TDI_A, ALL_LOCK_FLAGS);
    assert!(dev.trigger_error(TDI_A));
    assert_eq!(state(&mut dev, TDI_A), TdiState::Error);
    let start = Request::StartInterface {
        interface_id: TDI_A,
        nonce,
    };
    assert_eq!(
        error_of(&mut dev, &start),
        Some(ErrorCode::InvalidInterfaceState)
    );
    assert!(!dev.trigger_error(UNKNOWN));
}

#[test]
fn malformed_requests_get_the_spec_errors() {
    let mut dev = device();
    let mut req = [0u8; 64];
    let mut rsp = [0u8; 2 * MAX_MESSAGE_SIZE];
    let n = Request::LockInterface {
        interface_id: TDI_A,
        params: ALL_LOCK_FLAGS,
    }
    .encode(&mut req)
    .unwrap();
    let mut check = |bytes: &[u8], want: ErrorResponse<'_>, id: InterfaceId| {
        let m = dev.respond(bytes, &mut rsp).unwrap();
        assert_eq!(
            Response::decode(&rsp[..m]),
            Ok(Response::Error {
                interface_id: id,
                error: want
            })
        );
    };
    let mut bad = req;
    bad[0] = 0x20;
    check(
        &bad[..n],
        ErrorResponse::new(ErrorCode::VersionMismatch),
        TDI_A,
    );
    bad = req;
    bad[1] = 0x8C;
    check(&bad[..n], ErrorResponse::unsupported(0x8C), TDI_A);
    check(
        &req[..n - 1],
        ErrorResponse::new(ErrorCode::InvalidRequest),
        TDI_A,
    );
    bad = req;
    bad[16] = 0x20; // reserved lock flag
    check(
        &bad[..n],
        ErrorResponse::new(ErrorCode::InvalidRequest),
        TDI_A,
    );
    check(
        &req[..5],
        ErrorResponse::new(ErrorCode::InvalidRequest),
        InterfaceId::new(0, None),
    );
    let vdm = Request::Vdm {
        interface_id: TDI_B,
        vendor: VendorData {
            registry: Registry::PciSig,
            vendor_id: &[0x86, 0x80],
            data: &[1],
        },
    };
    let n = vdm.encode(&mut req).unwrap();
    check(&req[..n], ErrorResponse::unsupported(0x8B), TDI_B);
    assert_eq!(dev.tdi_state(TDI_A), Some(TdiState::ConfigUnlocked));

    let mut tiny = [0u8; 8];
    assert_eq!(
        dev.respond(&req[..n], &mut tiny),
        Err(crate::ModelError::ResponseBufferTooSmall)
    );
}

#[test]
fn configurations_are_checked() {
    let dup = [TDIS[0], TDIS[0]];
    assert_eq!(
        Device::new(DeviceConfig::new(&dup, SEED)).err(),
        Some(ConfigError::DuplicateInterface)
    );
    let many = [TDIS[0]; crate::MAX_TDIS + 1];
    assert_eq!(
        Device::new(DeviceConfig::new(&many, SEED)).err(),
        Some(ConfigError::TooManyTdis)
    );
    let overlapping = [TdiConfig {
        mmio_ranges: &[RANGES_A[0], RANGES_A[0]],
        ..TDIS[0]
    }];
    assert_eq!(
        Device::new(DeviceConfig::new(&overlapping, SEED)).err(),
        Some(ConfigError::Report(TdispError::Inconsistent(
            Field::RangeOverlap
        )))
    );
    let mut vdm = DeviceConfig::new(&TDIS, SEED);
    vdm.capabilities.req_msgs_supported = SupportedRequests::all();
    assert_eq!(Device::new(vdm).err(), Some(ConfigError::VdmNotModelled));
    let mut versions = DeviceConfig::new(&TDIS, SEED);
    versions.versions = &[0x11];
    assert_eq!(Device::new(versions).err(), Some(ConfigError::Versions));
    let mut portion = DeviceConfig::new(&TDIS, SEED);
    portion.max_report_portion = 0;
    assert_eq!(Device::new(portion).err(), Some(ConfigError::PortionSize));
    let mut caps = DeviceConfig::new(&TDIS, SEED);
    caps.capabilities.num_req_this = 2;
    assert_eq!(
        Device::new(caps).err(),
        Some(ConfigError::Capabilities(TdispError::Inconsistent(
            Field::NumReq
        )))
    );
}
