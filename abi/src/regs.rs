//! The register convention.
//!
//! | | aarch64 (SMCCC 1.2, SMC64) | x86_64 (`vmmcall`) |
//! |---|---|---|
//! | function ID | `x0` | `rax` |
//! | arguments 1..6 | `x1`..`x6` | `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9` |
//! | status | `x0` | `rax` |
//! | results 1..4 | `x1`..`x4` | `rdi`, `rsi`, `rdx`, `r10` |
//! | preserved | `x5`..`x30`, `sp` (callers may still treat `x5`..`x17` as clobbered, as SMCCC 1.2 allows) | all but `rax` and the result registers |
//!
//! On aarch64 the host issues calls with `smc #0` (trapped to EL2 by `HCR_EL2.TSC`) or `hvc #0`, a
//! guest with `hvc #0`; on x86_64 both, SVM guests of the TSM, with `vmmcall` (the TSM moves RIP
//! past it). The TSM tells host from guest by the context that trapped. Argument registers past a
//! call's [`crate::CallId::arg_count`] must be zero (reserved for extension); a non-zero one
//! fails with `InvalidArgument` and its index.

use crate::call::{MAX_ARGS, MAX_RESULTS};
use crate::status::Status;

/// A call as the TSM sees it, copied out of the trapped context once.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CallRegs {
    /// The function ID register.
    pub fid: u64,
    /// Argument registers 1..=6.
    pub args: [u64; MAX_ARGS],
}

/// What the TSM writes back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CallResult {
    /// The status word.
    pub status: u64,
    /// Result registers 1..=4 (zero past the call's result count).
    pub out: [u64; MAX_RESULTS],
}

impl CallResult {
    /// A result with no outputs.
    pub const fn status(s: Status) -> Self {
        CallResult {
            status: s.to_raw(),
            out: [0; MAX_RESULTS],
        }
    }
    /// A successful result with outputs.
    pub const fn ok(out: [u64; MAX_RESULTS]) -> Self {
        CallResult {
            status: Status::SUCCESS.to_raw(),
            out,
        }
    }
}
