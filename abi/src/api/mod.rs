//! Caller-side wrappers: one typed function per call, over any [`Transport`].
//!
//! The split follows sbi-rs: the rest of the crate holds the shared definitions (IDs, codes,
//! structures) the TSM and its callers both compile against; this module is only for callers.
//! [`host`] holds the host calls, [`guest`] the guest calls. A wrapper puts every argument in
//! its register, issues the call, and decodes the status and the result registers; it never
//! touches the buffers it passes by address (the caller owns them).
//!
//! A host driver's bind loop, over any transport (here a stand-in that asks for one device round
//! trip, as a TSM would for LOCK_INTERFACE):
//!
//! ```
//! use tsm_abi::addr::Pa;
//! use tsm_abi::api::{host, OpProgress, Transport};
//! use tsm_abi::regs::{CallRegs, CallResult};
//! use tsm_abi::state::DeviceOp;
//! use tsm_abi::{Status, StatusCode};
//!
//! struct OneRoundTrip(bool);
//! impl Transport for OneRoundTrip {
//!     fn call(&mut self, _: &CallRegs) -> CallResult {
//!         let first = core::mem::replace(&mut self.0, false);
//!         if first {
//!             let s = Status::new(StatusCode::NeedsDeviceIo);
//!             CallResult { status: s.to_raw(), out: [DeviceOp::Bind.raw().into(), 2, 0, 0] }
//!         } else {
//!             CallResult::ok([0, 3, 0, 0])
//!         }
//!     }
//! }
//!
//! let (vdev, comm) = (Pa(0x4010_0000), Pa(0x4020_0000));
//! let mut tsm = OneRoundTrip(true);
//! let mut round_trips = 0;
//! let mut step = host::vdev_bind(&mut tsm, vdev, comm)?;
//! while let OpProgress::NeedsDeviceIo(op) = step {
//!     assert_eq!(op, DeviceOp::Bind);
//!     // Send the request in `comm` to the device's DOE mailbox, put the response back.
//!     round_trips += 1;
//!     step = host::communicate(&mut tsm, vdev, comm)?;
//! }
//! assert_eq!(round_trips, 1);
//! # Ok::<(), tsm_abi::api::Error>(())
//! ```
//!
//! The architectural transports (`Smc`, `Hvc` on aarch64, `Vmmcall` on x86_64) exist only
//! with the matching cargo feature; they hold the crate's only `unsafe` code.

pub mod guest;
pub mod host;
mod transport;

#[cfg(all(target_arch = "aarch64", feature = "transport-hvc"))]
pub use transport::Hvc;
#[cfg(all(target_arch = "aarch64", feature = "transport-smc"))]
pub use transport::Smc;
#[cfg(all(target_arch = "x86_64", feature = "transport-vmmcall"))]
pub use transport::Vmmcall;

use crate::call::{CallId, MAX_ARGS, MAX_RESULTS};
use crate::regs::{CallRegs, CallResult};
use crate::state::DeviceOp;
use crate::status::{Status, StatusCode};
use crate::version::AbiVersion;

/// Issues one TSM call: puts `regs` in the architectural registers, traps, and returns the
/// status and result registers.
pub trait Transport {
    /// Issues the call.
    fn call(&mut self, regs: &CallRegs) -> CallResult;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        (**self).call(regs)
    }
}

/// Why a wrapper failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Error {
    /// The TSM refused the call with this status.
    Tsm(Status),
    /// The TSM answered with a status word or a result value this ABI version does not define
    /// (the callee is not a TSM of this ABI, or a newer one that broke compatibility).
    Malformed {
        /// The call.
        call: CallId,
        /// The raw status word (0 when the status was SUCCESS but a result register held a
        /// value this ABI version does not define).
        status: u64,
    },
}

impl Error {
    /// The TSM's status, if it returned one.
    pub const fn status(self) -> Option<Status> {
        match self {
            Error::Tsm(s) => Some(s),
            Error::Malformed { .. } => None,
        }
    }

    /// The status code, if the TSM returned one.
    pub const fn code(self) -> Option<StatusCode> {
        match self {
            Error::Tsm(s) => Some(s.code),
            Error::Malformed { .. } => None,
        }
    }
}

/// Result of a wrapper.
pub type Result<T> = core::result::Result<T, Error>;

/// Progress of a resumable device operation (PDEV_CONNECT, VDEV_BIND, VDEV_UNBIND,
/// COMMUNICATE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpProgress {
    /// The operation finished; the object is in its new state.
    Done,
    /// The TSM wrote a device request into the COMMUNICATE buffer for this operation: carry it
    /// to the device, put the response in the buffer, and call COMMUNICATE.
    NeedsDeviceIo(DeviceOp),
}

/// What VERSION / G_VERSION report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Versions {
    /// The version granted, `None` when the requested one is outside `lowest..=highest`
    /// (status `VersionMismatch`).
    pub chosen: Option<AbiVersion>,
    /// The lowest version the TSM implements.
    pub lowest: AbiVersion,
    /// The highest version the TSM implements.
    pub highest: AbiVersion,
}

/// State of a queue after a pop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct QueueState {
    /// Records still queued.
    pub left: u64,
    /// Records dropped because the queue was full, since the queue was created.
    pub overflows: u64,
}

/// Issues `call` with `args` (the rest zero) and returns the raw result.
fn raw<T: Transport + ?Sized>(t: &mut T, call: CallId, args: &[u64]) -> CallResult {
    let mut regs = CallRegs {
        fid: u64::from(call.fid()),
        args: [0; MAX_ARGS],
    };
    for (slot, a) in regs.args.iter_mut().zip(args) {
        *slot = *a;
    }
    t.call(&regs)
}

/// Decodes the status word of `r`.
fn status_of(call: CallId, r: &CallResult) -> Result<Status> {
    Status::from_raw(r.status).ok_or(Error::Malformed {
        call,
        status: r.status,
    })
}

/// Issues `call` and returns its result registers on success.
fn invoke<T: Transport + ?Sized>(
    t: &mut T,
    call: CallId,
    args: &[u64],
) -> Result<[u64; MAX_RESULTS]> {
    let r = raw(t, call, args);
    let s = status_of(call, &r)?;
    if s.is_success() {
        Ok(r.out)
    } else {
        Err(Error::Tsm(s))
    }
}

/// A call with no results.
fn invoke0<T: Transport + ?Sized>(t: &mut T, call: CallId, args: &[u64]) -> Result<()> {
    invoke(t, call, args).map(|_| ())
}

/// VERSION and G_VERSION: `VersionMismatch` still reports the range.
fn negotiate<T: Transport + ?Sized>(
    t: &mut T,
    call: CallId,
    requested: AbiVersion,
) -> Result<Versions> {
    let r = raw(t, call, &[requested.to_raw()]);
    let s = status_of(call, &r)?;
    let malformed = Error::Malformed {
        call,
        status: r.status,
    };
    let lowest = AbiVersion::from_raw(r.out[1]).ok_or(malformed)?;
    let highest = AbiVersion::from_raw(r.out[2]).ok_or(malformed)?;
    let chosen = match s.code {
        StatusCode::Success => Some(AbiVersion::from_raw(r.out[0]).ok_or(malformed)?),
        StatusCode::VersionMismatch => None,
        _ => return Err(Error::Tsm(s)),
    };
    Ok(Versions {
        chosen,
        lowest,
        highest,
    })
}

/// The calls that start or continue a device operation: `NeedsDeviceIo` is progress, not
/// failure; result 1 names the operation still pending.
fn device_op<T: Transport + ?Sized>(t: &mut T, call: CallId, args: &[u64]) -> Result<OpProgress> {
    let r = raw(t, call, args);
    let s = status_of(call, &r)?;
    let malformed = Error::Malformed {
        call,
        status: r.status,
    };
    match s.code {
        StatusCode::Success => Ok(OpProgress::Done),
        StatusCode::NeedsDeviceIo => match DeviceOp::from_raw(r.out[0]) {
            Some(DeviceOp::None) | None => Err(malformed),
            Some(op) => Ok(OpProgress::NeedsDeviceIo(op)),
        },
        _ => Err(Error::Tsm(s)),
    }
}

/// The queue reads: `Empty` is `None`.
fn queue_pop<T: Transport + ?Sized>(
    t: &mut T,
    call: CallId,
    args: &[u64],
) -> Result<Option<QueueState>> {
    match invoke(t, call, args) {
        Ok(out) => Ok(Some(QueueState {
            left: out[0],
            overflows: out[1],
        })),
        Err(Error::Tsm(s)) if s.code == StatusCode::Empty => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
