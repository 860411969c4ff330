//! Call dispatch: decode the call ID, check the caller and the unused argument registers, run the
//! handler.

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::call::{CallId, Caller};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::version::{self, AbiVersion};
use tsm_hal::log::{MAX_PAYLOAD, STREAM_HOST};
use tsm_hal::platform::{Console, ExitCode, MemRange, PhysMem, PowerOff};

/// Everything the core needs from the platform.
pub trait Platform: PhysMem + Console + PowerOff {}
impl<T: PhysMem + Console + PowerOff> Platform for T {}

/// The monitor.
pub struct Tsm<P: Platform> {
    platform: P,
    /// DRAM the host owns at boot.
    dram: MemRange,
    /// The TSM's own memory (image + carve-out), never host-accessible.
    tsm: MemRange,
}

impl<P: Platform> Tsm<P> {
    /// A monitor over `dram`, of which `tsm` is the TSM's own.
    pub fn new(platform: P, dram: MemRange, tsm: MemRange) -> Self {
        Tsm {
            platform,
            dram,
            tsm,
        }
    }

    /// Handles one call from `caller`.
    pub fn handle(&self, caller: Caller, regs: &CallRegs) -> CallResult {
        let Ok(call) = CallId::try_from(regs.fid) else {
            return CallResult::status(Status::new(StatusCode::NotSupported));
        };
        if call.caller() != caller {
            return CallResult::status(Status::new(StatusCode::Denied));
        }
        for (i, &a) in regs.args.iter().enumerate().skip(call.arg_count()) {
            if a != 0 {
                return CallResult::status(Status::arg(StatusCode::InvalidArgument, i as u8 + 1));
            }
        }
        let a = &regs.args;
        match call {
            CallId::VERSION | CallId::G_VERSION => version(a[0]),
            CallId::CONSOLE_WRITE => self.console_write(Pa(a[0]), a[1]),
            CallId::SYSTEM_OFF => self.platform.power_off(if a[0] == 0 {
                ExitCode::Success
            } else {
                ExitCode::Failure
            }),
            _ => CallResult::status(Status::new(StatusCode::NotSupported)),
        }
    }

    /// CONSOLE_WRITE: the frame must lie in one granule of host memory.
    fn console_write(&self, buf: Pa, len: u64) -> CallResult {
        if len == 0 || len > MAX_PAYLOAD as u64 {
            return CallResult::status(Status::arg(StatusCode::InvalidArgument, 2));
        }
        if buf.granule_offset() + len > GRANULE_SIZE {
            return CallResult::status(Status::arg(StatusCode::InvalidBuffer, 1));
        }
        if !self.dram.contains(buf, len) || self.tsm.contains(buf.granule_base(), GRANULE_SIZE) {
            return CallResult::status(Status::arg(StatusCode::InvalidBuffer, 1));
        }
        let mut frame = [0u8; MAX_PAYLOAD];
        let frame = &mut frame[..len as usize];
        if self.platform.read(buf, frame).is_err() {
            return CallResult::status(Status::arg(StatusCode::InvalidBuffer, 1));
        }
        self.platform.relay(STREAM_HOST, frame);
        CallResult::ok([0; 4])
    }
}

/// VERSION: the caller names the version it wants; it gets it if it is in range, and always
/// learns the range.
fn version(requested: u64) -> CallResult {
    let range = [0, version::LOWEST.to_raw(), version::HIGHEST.to_raw(), 0];
    let Some(req) = AbiVersion::from_raw(requested) else {
        return CallResult {
            status: Status::arg(StatusCode::InvalidArgument, 1).to_raw(),
            out: range,
        };
    };
    if req < version::LOWEST || req > version::HIGHEST {
        return CallResult {
            status: Status::new(StatusCode::VersionMismatch).to_raw(),
            out: range,
        };
    }
    CallResult::ok([req.to_raw(), range[1], range[2], 0])
}
