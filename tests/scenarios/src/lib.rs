//! The end-to-end scenarios of the HAL issue, written once and run in two places:
//!
//! - on the build machine (`cargo test -p tsm-scenarios`): the host routines call the monitor
//!   core directly, over its simulated platform, and a simulated vCPU runs the guest script
//!   in-process (`tests/sim`);
//! - on QEMU: the host payload runs a scenario with the architectural call gate, and the guest
//!   payload runs the guest script inside a TVM.
//!
//! `dma-hw`, `dma-diff`, `isolation-iommu`, `mmio-private` and `story` need real devices (QEMU's
//! `edu` and the platform IOMMU) and run on QEMU only.
//!
//! | module | holds |
//! |---|---|
//! | [`env`] | what a scenario needs from where it runs: the call gate and memory, host and guest side |
//! | [`layout`] | the guest's address map, the device's functions, guest-script arguments |
//! | [`pool`] | the host memory a scenario donates and gets back |
//! | [`link`] | the device link: TDISP messages between the COMMUNICATE buffer and the device model |
//! | [`pci`] | the host's driver of QEMU's `edu` device: PCI configuration, BAR0, DMA (which a guest runs too) |
//! | [`driver`] | the host driver: build a TVM with devices, run vCPUs, tear down, check |
//! | [`guest`] | the guest scripts, selected by the vCPU's `arg0` |
//! | [`scenarios`] | the scenarios |
//! | [`console_log`] | the payloads' defmt logger, which hands each frame to the TSM's debug console |
//! | [`narrate`] | the same log lines as text, for the Linux driver (feature `narrate`) |
#![no_std]

#[macro_use]
mod macros;

pub mod console_log;
pub mod driver;
pub mod env;
pub mod guest;
pub mod layout;
pub mod link;
#[cfg(any(feature = "narrate", test))]
pub mod narrate;
pub mod pci;
pub mod pool;
pub mod scenarios;

pub use env::{GuestEnv, GuestFault, HostDevices, HostEnv, Probe};

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

/// Scenario numbers: what xtask writes into the host's boot-parameters page (docs/design.md
/// "Host boot parameters") and the host payload runs. The one table of them: the host payload
/// and xtask both take theirs from here. [`run`] runs the end-to-end ones (10 and up but
/// [`id::BENCH`]); the host payload runs the others itself.
pub mod id {
    /// Declares each number and [`ALL`], so the list cannot miss one.
    macro_rules! ids {
        ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
            $($(#[$doc])* pub const $name: u32 = $value;)*
            /// Every scenario number, with its name.
            pub const ALL: &[(&str, u32)] = &[$((stringify!($name), $name)),*];
        };
    }

    ids! {
        /// Boot smoke test: the host negotiates the ABI version through the gate.
        BOOT = 0;
        /// Harness self-test: the host reports failure.
        SELFTEST_FAIL = 1;
        /// Harness self-test: the host never ends the run.
        SELFTEST_HANG = 2;
        /// One TVM vCPU end to end: a guest call, a host call refused as a DENIED_CALL exit,
        /// G_EXIT, faults on memory the TVM does not map.
        VCPU_SMOKE = 3;
        /// Lifecycle: every object through its life and back, every granule back to NS.
        LIFECYCLE = 10;
        /// Isolation: the host cannot reach secure memory, a TVM cannot reach another's.
        ISOLATION = 11;
        /// Bad input: every host call refuses hostile arguments with its documented status.
        BAD_INPUT = 12;
        /// Acceptance: only the guest, with fresh evidence, can accept its device.
        ACCEPTANCE = 13;
        /// Hostile device: every protocol violation ends in ERROR, never in RUN.
        HOSTILE_DEVICE = 14;
        /// DMA rules through TEST_DMA_INJECT.
        DMA_RULES = 15;
        /// SMP: calls from two CPUs at once on the same objects.
        SMP = 16;
        /// Isolation, host part: the host loads from a delegated granule.
        ISOLATION_DELEGATED = 17;
        /// Isolation, host part: the host stores to a TVM's private page.
        ISOLATION_PRIVATE = 18;
        /// Isolation, host part: the host loads from the TSM's memory.
        ISOLATION_TSM = 19;
        /// A real device's DMA through the platform IOMMU the TSM owns (QEMU's `edu`).
        DMA_HW = 20;
        /// Isolation, host part: the host loads from the platform IOMMU's registers.
        ISOLATION_IOMMU = 21;
        /// The differential test: `edu` through the platform IOMMU against the engine, row by
        /// row, as a host device and as a vdevice.
        DMA_DIFF = 22;
        /// An authenticated device: SPDM connect, TDISP in the session, the guest checks the
        /// chain and measurements and accepts; key update; end session.
        SPDM = 23;
        /// A host in the middle of the SPDM session: tampered, replayed, reordered records,
        /// another device, a bad chain, a bad signature.
        SPDM_MITM = 24;
        /// Private MMIO: the guest validates edu's BAR0 pages against the report and drives
        /// edu itself; the host loses BAR0 while the vdevice is bound (QEMU only).
        MMIO_PRIVATE = 25;
        /// The story `cargo xtask run` tells: `mmio-private` with an authenticated device
        /// (SPDM), narrated step by step (QEMU only).
        STORY = 26;
        /// SMP on four CPUs: the `smp` race plus vCPUs of one TVM run on every CPU and `edu`
        /// DMA at the contested granules, for a number of calls per CPU xtask chooses.
        SMP4 = 27;
        /// Benchmark, run by `cargo xtask bench` only (docs/benchmarks.md), not by `cargo xtask
        /// test`.
        BENCH = 30;
    }
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
        id::SMP | id::SMP4 => scenarios::smp::run_single_cpu(env),
        id::ISOLATION_DELEGATED => isolation::host_access(env, HostTarget::Delegated),
        id::ISOLATION_PRIVATE => isolation::host_access(env, HostTarget::Private),
        id::ISOLATION_TSM => isolation::host_access(env, HostTarget::Tsm),
        id::DMA_HW => scenarios::dma_hw::run(env),
        id::ISOLATION_IOMMU => isolation::host_access(env, HostTarget::Iommu),
        id::DMA_DIFF => scenarios::dma_diff::run(env),
        id::SPDM => scenarios::spdm::run(env),
        id::SPDM_MITM => scenarios::spdm::run_mitm(env),
        id::MMIO_PRIVATE => scenarios::mmio::run(env),
        id::STORY => scenarios::mmio::story(env),
        other => Err(Fail {
            what: "unknown scenario id",
            line: line!(),
            got: u64::from(other),
        }),
    }
}
