//! The end-to-end scenarios of the HAL issue, written once and run in two places:
//!
//! - on the build machine (`cargo test -p tsm-scenarios`): the host routines call the monitor
//!   core directly, over its simulated platform, and a simulated vCPU runs the guest script
//!   in-process (`tests/sim`);
//! - on QEMU: the host payload runs a scenario with the architectural call gate, and the guest
//!   payload runs the guest script inside a TVM.
//!
//! | module | holds |
//! |---|---|
//! | [`env`] | what a scenario needs from where it runs: the call gate and memory, host and guest side |
//! | [`layout`] | the guest's address map, the device's functions, guest-script arguments |
//! | [`pool`] | the host memory a scenario donates and gets back |
//! | [`link`] | the device link: TDISP messages between the COMMUNICATE buffer and the device model |
//! | [`driver`] | the host driver: build a TVM with devices, run vCPUs, tear down, check |
//! | [`guest`] | the guest scripts, selected by the vCPU's `arg0` |
//! | [`scenarios`] | the seven scenarios |
//! | [`console_log`] | the payloads' defmt logger, which hands each frame to the TSM's debug console |
#![no_std]

#[macro_use]
mod macros;

pub mod console_log;
pub mod driver;
pub mod env;
pub mod guest;
pub mod layout;
pub mod link;
pub mod pool;
pub mod scenarios;

pub use env::{GuestEnv, GuestFault, HostEnv, Probe};

/// Why a scenario failed: the check, where it is, and the value that broke it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fail {
    /// What was checked.
    pub what: &'static str,
    /// Source line of the check.
    pub line: u32,
    /// The offending value (a raw status word, a state, an address; 0 when there is none).
    pub got: u64,
}

/// A scenario step's result.
pub type Outcome<T = ()> = Result<T, Fail>;

/// Scenario numbers (the host payload's ids for xtask; docs/design.md "Host boot parameters").
pub mod id {
    /// Lifecycle: every object through its life and back, every granule back to NS.
    pub const LIFECYCLE: u32 = 10;
    /// Isolation: the host cannot reach secure memory, a TVM cannot reach another's.
    pub const ISOLATION: u32 = 11;
    /// Bad input: every host call refuses hostile arguments with its documented status.
    pub const BAD_INPUT: u32 = 12;
    /// Acceptance: only the guest, with fresh evidence, can accept its device.
    pub const ACCEPTANCE: u32 = 13;
    /// Hostile device: every protocol violation ends in ERROR, never in RUN.
    pub const HOSTILE_DEVICE: u32 = 14;
    /// DMA rules through TEST_DMA_INJECT.
    pub const DMA_RULES: u32 = 15;
    /// SMP: calls from two CPUs at once on the same objects.
    pub const SMP: u32 = 16;
    /// Isolation, host part: the host loads from a delegated granule.
    pub const ISOLATION_DELEGATED: u32 = 17;
    /// Isolation, host part: the host stores to a TVM's private page.
    pub const ISOLATION_PRIVATE: u32 = 18;
    /// Isolation, host part: the host loads from the TSM's memory.
    pub const ISOLATION_TSM: u32 = 19;
}

use scenarios::isolation::{self, HostTarget};

/// Runs host scenario `id` (one CPU; the SMP scenario needs [`scenarios::smp`] on each CPU).
pub fn run<E: HostEnv>(env: &mut E, id: u32) -> Outcome {
    match id {
        id::LIFECYCLE => scenarios::lifecycle::run(env),
        id::ISOLATION => scenarios::isolation::run(env),
        id::BAD_INPUT => scenarios::bad_input::run(env),
        id::ACCEPTANCE => scenarios::acceptance::run(env),
        id::HOSTILE_DEVICE => scenarios::hostile::run(env),
        id::DMA_RULES => scenarios::dma::run(env),
        id::SMP => scenarios::smp::run_single_cpu(env),
        id::ISOLATION_DELEGATED => isolation::host_access(env, HostTarget::Delegated),
        id::ISOLATION_PRIVATE => isolation::host_access(env, HostTarget::Private),
        id::ISOLATION_TSM => isolation::host_access(env, HostTarget::Tsm),
        other => Err(Fail {
            what: "unknown scenario id",
            line: line!(),
            got: u64::from(other),
        }),
    }
}
