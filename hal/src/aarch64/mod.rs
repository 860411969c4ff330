//! The aarch64 QEMU `virt` platform: the TSM runs at EL2, the host at EL1 behind a TSM-owned
//! stage-2 (docs/design.md, "Memory layout on QEMU").
//!
//! - [`boot`]: the entry point, the boot sequence and the [`Boot`] hand-off to the image;
//! - [`host`]: the host's saved-register frame and the world switch ([`HostContext`], the
//!   [`crate::platform::run::HostCpu`] of each CPU);
//! - `fp`: the FP/SIMD registers, which the soft-float TSM leaves to the running context and
//!   only a vCPU's run swaps;
//! - [`guest`]: TVM vCPUs: their context in the VCPU granule, entry and trap decoding
//!   ([`QemuVirt`] as the [`crate::platform::run::GuestCpu`]), under per-TVM VMIDs;
//! - `linux`: a Linux Image as the host: detection, its device tree, its placement checks;
//! - [`stage2`]: the host's stage-2 translation (its DMA domain's root too) and the granule
//!   map/unmap the core builds on;
//! - `smmu`: the SMMUv3 the TSM owns: the host domain, [`crate::platform::Iommu`]'s streams,
//!   invalidations and faults;
//! - [`syndrome`]: decoding of ESR/HPFAR values for the fault log;
//! - [`platform`]: the [`crate::platform`] traits over this machine;
//! - `smp`: secondary CPUs (PSCI CPU_ON), each with its own stack and host context;
//! - [`exit`], [`report_panic`] (the panic handler), [`selftest_fault`]: as on x86_64.

mod copy;
mod el1;
mod exception;
mod fp;
mod layout;
mod linux;
mod memmap;
mod mmu;
mod pl011;
mod semihosting;
mod smmu;
mod smp;
mod sysreg;
mod timer;
mod vmid;

pub mod boot;
pub mod guest;
pub mod host;
pub mod platform;
pub mod stage2;
pub mod syndrome;

pub use boot::{Boot, end_of_boot};
pub use guest::GUEST_CONTEXT_BYTES;
pub use host::{ExitKind, Fault, HostContext};
pub use pl011::console_write;
pub use platform::QemuVirt;
pub use semihosting::exit;
pub(crate) use semihosting::halt;
pub use smp::start_secondary_cpus;
pub use stage2::{HostStage2, Stage2Error};
pub use timer::now_us;

pub use crate::fatal::report_panic;

/// Harness self-test: reads the first address the TSM's stage 1 cannot translate, so the TSM
/// takes a data abort that the exception path reports with its registers before ending the run
/// as a failure. Never returns.
pub fn selftest_fault() -> ! {
    // SAFETY: the read has no effect on memory; it traps to the EL2 exception vector, whose
    // handler logs and ends the run, so control never comes back here.
    unsafe { core::ptr::read_volatile(mmu::UNTRANSLATED as *const u64) };
    crate::fatal::fatal_text("self-test: the read did not fault")
}
