//! Call dispatch: decode the call ID, check the caller and the unused argument registers, run the
//! handler.

use tsm_abi::call::{Caller, CallId};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::version::{self, AbiVersion};

/// Handles one call from `caller`.
pub fn handle(caller: Caller, regs: &CallRegs) -> CallResult {
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
    match call {
        CallId::VERSION | CallId::G_VERSION => version(regs.args[0]),
        _ => CallResult::status(Status::new(StatusCode::NotSupported)),
    }
}

/// VERSION: the caller names the version it wants; it gets it if it is in range, and always
/// learns the range.
fn version(requested: u64) -> CallResult {
    let range = [0, version::LOWEST.to_raw(), version::HIGHEST.to_raw(), 0];
    let Some(req) = AbiVersion::from_raw(requested) else {
        return CallResult { status: Status::arg(StatusCode::InvalidArgument, 1).to_raw(), out: range };
    };
    if req < version::LOWEST || req > version::HIGHEST {
        return CallResult { status: Status::new(StatusCode::VersionMismatch).to_raw(), out: range };
    }
    CallResult::ok([req.to_raw(), range[1], range[2], 0])
}
