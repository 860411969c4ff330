//! The TSM ABI: everything a host driver or a guest needs to talk to the TSM.
//!
//! One crate, imported by the firmware (the callee) and by host drivers and guests (the callers):
//! - [`call`]: call IDs, their argument/result counts and which side may issue them;
//! - [`status`]: the status word every call returns (code + index);
//! - [`regs`]: the register convention on each architecture;
//! - [`addr`]: typed physical / guest-physical addresses and the granule size;
//! - [`version`]: ABI version negotiation;
//! - [`features`]: the FEATURES registers;
//! - [`viommu`]: secure vIOMMU types and stage-1 formats (and how they map to iommufd);
//! - [`params`]: TVM / PDEV / VDEV creation parameters and mapping flags;
//! - [`psci`]: the PSCI and SMCCC functions an aarch64 host reaches its CPUs with;
//! - [`state`]: object states and device operations;
//! - [`comm`]: the COMMUNICATE buffer of the resumable device operations;
//! - [`exit`]: the VCPU_RUN exit record;
//! - [`event`]: fault / event records and the DMA arguments;
//! - [`guest`]: guest-side structures (vdevice info, acceptance evidence, stage-1 config);
//! - [`layout`]: machine-readable layouts of all of the above (the C header is rendered from
//!   them);
//! - [`tdisp`]: the PCIe TDISP 1.0 codec;
//! - [`spdm`]: the SPDM 1.2 codec and DSP0277 secured-message framing (with the key schedule
//!   and record protection under feature `spdm-crypto`);
//! - [`api`]: caller-side wrappers, one typed function per call, over a [`api::Transport`].
//!
//! The specification, call by call, is `docs/abi.md`.
//!
//! `no_std`, no `alloc`, no `unsafe` (outside the opt-in arch transports).
#![no_std]
#![cfg_attr(
    not(any(
        feature = "transport-smc",
        feature = "transport-hvc",
        feature = "transport-vmmcall"
    )),
    forbid(unsafe_code)
)]
// With a transport feature, `api::transport` alone may opt back in.
#![cfg_attr(
    any(
        feature = "transport-smc",
        feature = "transport-hvc",
        feature = "transport-vmmcall"
    ),
    deny(unsafe_code)
)]
// The firmware decodes host structs and device messages with this crate: no
// unwrap/expect/panic, unchecked indexing or unchecked arithmetic outside test code, so no
// input can crash the TSM (release builds keep overflow checks and abort on panic).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

#[cfg(test)]
extern crate std;

pub mod layout;

pub mod addr;
pub mod api;
pub mod call;
pub mod comm;
pub mod event;
pub mod exit;
pub mod features;
pub mod guest;
pub mod params;
pub mod psci;
pub mod regs;
pub mod spdm;
pub mod state;
pub mod status;
pub mod tdisp;
pub mod version;
pub mod viommu;

pub use call::CallId;
pub use status::{Status, StatusCode};
