//! `device_model`: the TDISP device model fed arbitrary request sequences.
//!
//! Steps send raw bytes or well-formed requests (for configured and unknown TDIs, replaying the
//! last lock nonce or a wrong one), toggle misbehaviours and trigger TDI errors. Checks: nothing
//! panics; an answer fits the buffer; while the model is honest every answer decodes, answers
//! the request it was given when that request decoded, and the TDI state follows the response
//! (LOCK → CONFIG_LOCKED, START → RUN, STOP → CONFIG_UNLOCKED).

use tsm_abi::tdisp::{
    ErrorCode, InterfaceId, InterfaceInfo, LockFlags, LockInterfaceParams, MAX_MESSAGE_SIZE,
    MmioRange, Nonce, RangeAttributes, ReportFields, Request, RequestCode, Response, TdiState,
};
use tsm_device_model::{Device, DeviceConfig, Misbehaviour, TdiConfig};

use crate::input::{Input, Writer};

const TDI_A: InterfaceId = InterfaceId::new(0x0100, None);
const TDI_B: InterfaceId = InterfaceId::new(0x0101, Some(2));
const UNKNOWN: InterfaceId = InterfaceId::new(0x0200, None);
const MAX_STEPS: usize = 64;

/// Step selectors (the first byte of a step, modulo their count).
pub mod step {
    /// Raw request bytes.
    pub const RAW: u8 = 0;
    /// A well-formed request.
    pub const REQUEST: u8 = 1;
    /// Enable a misbehaviour.
    pub const MISBEHAVE: u8 = 2;
    /// Back to honest.
    pub const HONEST: u8 = 3;
    /// A TDI error (BAR rewrite, FLR...).
    pub const ERROR: u8 = 4;
    /// Number of step kinds.
    pub const COUNT: u8 = 5;
}

const RANGES: [MmioRange; 2] = [
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

fn interface(input: &mut Input<'_>) -> InterfaceId {
    match input.u8() % 4 {
        0 | 1 => TDI_A,
        2 => TDI_B,
        _ => UNKNOWN,
    }
}

fn request<'n>(input: &mut Input<'_>, nonce: &'n Nonce, other: &'n Nonce) -> Request<'n> {
    let interface_id = interface(input);
    let codes = RequestCode::ALL;
    match codes
        .get(usize::from(input.u8()) % codes.len())
        .copied()
        .unwrap_or(RequestCode::GetVersion)
    {
        RequestCode::GetVersion => Request::GetVersion { interface_id },
        RequestCode::GetCapabilities => Request::GetCapabilities {
            interface_id,
            tsm_caps: 0,
        },
        RequestCode::LockInterface => Request::LockInterface {
            interface_id,
            params: LockInterfaceParams {
                flags: LockFlags::from_bits_truncate(input.u16()),
                default_stream_id: input.u8(),
                mmio_reporting_offset: u64::from(input.u32()) << 12,
                bind_p2p_address_mask: 0,
            },
        },
        RequestCode::GetDeviceInterfaceReport => Request::GetDeviceInterfaceReport {
            interface_id,
            offset: input.u16() % 256,
            length: input.u16(),
        },
        RequestCode::GetDeviceInterfaceState => Request::GetDeviceInterfaceState { interface_id },
        RequestCode::StartInterface => Request::StartInterface {
            interface_id,
            nonce: if input.bool() { *other } else { *nonce },
        },
        RequestCode::StopInterface => Request::StopInterface { interface_id },
        RequestCode::BindP2pStream => Request::BindP2pStream {
            interface_id,
            stream_id: input.u8(),
        },
        RequestCode::UnbindP2pStream => Request::UnbindP2pStream {
            interface_id,
            stream_id: input.u8(),
        },
        RequestCode::SetMmioAttribute => Request::SetMmioAttribute {
            interface_id,
            range: MmioRange {
                first_page: 0x10_0000,
                number_of_pages: 1,
                attributes: RangeAttributes::from_bits_truncate(input.u16())
                    & RangeAttributes::SETTABLE,
                range_id: 0,
            },
        },
        RequestCode::Vdm => Request::GetVersion { interface_id },
    }
}

fn misbehaviour(input: &mut Input<'_>) -> Misbehaviour {
    match input.u8() % 8 {
        0 => Misbehaviour::ErrorFor {
            request: RequestCode::ALL[usize::from(input.u8()) % RequestCode::ALL.len()],
            code: ErrorCode::ALL[usize::from(input.u8()) % ErrorCode::ALL.len()],
        },
        1 => Misbehaviour::WrongResponseType,
        2 => Misbehaviour::TruncatedResponse,
        3 => Misbehaviour::OversizedResponse,
        4 => Misbehaviour::Garbage,
        5 => Misbehaviour::ReportChangesBetweenPortions,
        6 => Misbehaviour::WrongInterfaceId,
        _ => Misbehaviour::WrongVersion,
    }
}

/// Runs the program in `data`.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let tdis = [
        TdiConfig {
            interface_id: TDI_A,
            report: ReportFields {
                interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
                msi_x_message_control: 0x8003,
                lnr_control: 0,
                tph_control: 0,
            },
            mmio_ranges: &RANGES,
            device_specific_info: &[0xD5; 24],
        },
        TdiConfig {
            interface_id: TDI_B,
            report: ReportFields {
                interface_info: InterfaceInfo::DMA_WITH_PASID,
                msi_x_message_control: 0,
                lnr_control: 0,
                tph_control: 0,
            },
            mmio_ranges: &[],
            device_specific_info: &[],
        },
    ];
    let mut config = DeviceConfig::new(&tdis, [input.u8(); 32]);
    config.max_report_portion = 1 + input.u16() % 4029;
    let Ok(mut device) = Device::new(config) else {
        panic!("the fuzzer's device configuration is valid");
    };
    let mut honest = true;
    let mut nonce: Nonce = [0; 32];
    let wrong: Nonce = [0x5A; 32];
    let mut rsp = vec![0u8; MAX_MESSAGE_SIZE + 1];
    let mut req = [0u8; MAX_MESSAGE_SIZE];
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % step::COUNT {
            step::RAW => {
                let len = usize::from(input.u16() % 700);
                let bytes = input.bytes(len);
                let room = if input.bool() {
                    rsp.len()
                } else {
                    usize::from(input.u8())
                };
                exchange(&mut device, bytes, &mut rsp[..room], honest, &mut nonce);
            }
            step::REQUEST => {
                let r = request(&mut input, &nonce, &wrong);
                let Ok(n) = r.encode(&mut req) else { continue };
                let bytes = req[..n].to_vec();
                exchange(&mut device, &bytes, &mut rsp, honest, &mut nonce);
            }
            step::MISBEHAVE => {
                device.enable(misbehaviour(&mut input));
                honest = false;
            }
            step::HONEST => {
                device.clear_misbehaviour();
                honest = true;
            }
            _ => {
                let tdi = interface(&mut input);
                let before = device.tdi_state(tdi);
                let failed = device.trigger_error(tdi);
                assert_eq!(
                    failed,
                    matches!(before, Some(TdiState::ConfigLocked | TdiState::Run))
                );
                if failed {
                    assert_eq!(device.tdi_state(tdi), Some(TdiState::Error));
                }
            }
        }
    }
}

fn exchange(
    device: &mut Device<'_>,
    request: &[u8],
    rsp: &mut [u8],
    honest: bool,
    nonce: &mut Nonce,
) {
    let Ok(n) = device.respond(request, rsp) else {
        return;
    };
    assert!(
        n <= rsp.len(),
        "answer of {n} bytes overruns a {}-byte buffer",
        rsp.len()
    );
    if !honest {
        return;
    }
    let answer = Response::decode(&rsp[..n])
        .unwrap_or_else(|e| panic!("honest model sent undecodable bytes: {e:?}"));
    let Ok(asked) = Request::decode(request) else {
        return;
    };
    assert!(
        answer.answers(&asked),
        "{answer:?} does not answer {asked:?}"
    );
    let tdi = asked.interface_id();
    match answer {
        Response::LockInterface { nonce: n, .. } => {
            *nonce = n;
            assert_eq!(device.tdi_state(tdi), Some(TdiState::ConfigLocked));
        }
        Response::StartInterface { .. } => assert_eq!(device.tdi_state(tdi), Some(TdiState::Run)),
        Response::StopInterface { .. } => {
            assert_eq!(device.tdi_state(tdi), Some(TdiState::ConfigUnlocked))
        }
        _ => {}
    }
}

/// Seeds: the honest lock → report → start → stop life of TDI A, and a misbehaving run.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut honest = Writer::default();
    honest.u8(1).u16(4028);
    // GET_VERSION, GET_CAPABILITIES (TDI A).
    honest.u8(step::REQUEST).u8(0).u8(0);
    honest.u8(step::REQUEST).u8(0).u8(1);
    // LOCK_INTERFACE with LOCK_MSIX, stream 0, offset 0.
    honest
        .u8(step::REQUEST)
        .u8(0)
        .u8(2)
        .u16(LockFlags::LOCK_MSIX.bits())
        .u8(0)
        .u32(0);
    // GET_DEVICE_INTERFACE_REPORT offset 0 length 0xFFFF, then GET_STATE.
    honest.u8(step::REQUEST).u8(0).u8(3).u16(0).u16(0xFFFF);
    honest.u8(step::REQUEST).u8(0).u8(4);
    // START with the lock nonce, STOP.
    honest.u8(step::REQUEST).u8(0).u8(5).u8(0);
    honest.u8(step::REQUEST).u8(0).u8(6);
    let mut rogue = Writer::default();
    rogue.u8(2).u16(7);
    rogue.u8(step::REQUEST).u8(2).u8(2).u16(0).u8(1).u32(0x10);
    rogue.u8(step::MISBEHAVE).u8(5);
    rogue.u8(step::REQUEST).u8(2).u8(3).u16(0).u16(8);
    rogue.u8(step::REQUEST).u8(2).u8(3).u16(8).u16(8);
    rogue.u8(step::HONEST);
    rogue.u8(step::REQUEST).u8(2).u8(5).u8(1);
    rogue.u8(step::ERROR).u8(0);
    rogue.u8(step::RAW).u16(3).raw(&[0x10, 0x81, 0]).u8(1);
    vec![
        ("honest_life".into(), honest.bytes),
        ("misbehaving".into(), rogue.bytes),
    ]
}
