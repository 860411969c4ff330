//! The TSM ABI: everything a host driver or a guest needs to talk to the TSM.
//!
//! One crate, imported by the firmware (the callee) and by host drivers and guests (the callers):
//! - [`call`]: call IDs, their argument/result counts and which side may issue them;
//! - [`status`]: the status word every call returns (code + index);
//! - [`regs`]: the register convention on each architecture;
//! - [`addr`]: typed physical / guest-physical addresses and the granule size.
//!
//! `no_std`, no `alloc`, no `unsafe` (outside the opt-in arch transports).
#![no_std]
#![cfg_attr(
    not(any(
        feature = "transport-smc",
        feature = "transport-hvc",
        feature = "transport-syscall"
    )),
    forbid(unsafe_code)
)]

pub mod addr;
pub mod call;
pub mod regs;
pub mod status;
pub mod tdisp;
pub mod version;

pub use call::CallId;
pub use status::{Status, StatusCode};
