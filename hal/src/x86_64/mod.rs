//! The x86_64 QEMU `q35` platform: PVH boot, long mode, COM1, the TSC, isa-debug-exit, the
//! TSM's page tables and the host's nested page table (`paging`), SVM (`svm`): the host and
//! TVM vCPUs as SVM guests behind the `vmmcall` gate (`intercept`, `host`, `guest`), per-CPU
//! descriptor tables and stacks (`percpu`), and the secondary CPUs with their TLB shootdown
//! (`smp`).
//!
//! What the firmware image uses (the core reaches the hardware only through [`X86Platform`]):
//! - [`x86_64_entry!`](crate::x86_64_entry) registers the firmware's
//!   `fn(&'static BootInfo, cpu: usize) -> !`;
//! - [`BootInfo`]: memory map, DRAM, the TSM range, the core's granule descriptors (carved
//!   after the image, sized from DRAM), TSC rate;
//! - [`X86Platform`] (every `crate::platform` trait the core's `Platform` needs, and the
//!   [`crate::platform::run::GuestCpu`] that runs a TVM vCPU, an SVM guest with its TVM's map as
//!   nested page table, until it traps),
//!   [`exit`], [`report_panic`] (the panic handler), [`selftest_fault`];
//! - [`HostContext`]: the [`crate::platform::run::HostCpu`] that runs the host (an SVM guest)
//!   until its next call or an exit the TSM does not complete itself;
//! - [`start_secondary_cpus`]: INIT-SIPI-SIPI; each CPU then enters the firmware's main.
//!
//! A Linux bzImage at the host entry is booted by its 32-bit protocol instead (`linux`).
//!
//! Boot also reads the ACPI tables (`acpi`: CPUs, the VT-d unit, PCI configuration space),
//! maps the host's PCI devices (`pci`) and takes over VT-d (`vtd`); a granule leaves and
//! re-enters the host's reach, CPU and DMA views together, only through [`X86Platform`]'s
//! `HostIsolation`.

mod acpi;
mod boot;
mod bootinfo;
mod config_write;
mod cpu;
mod gdt;
mod guest;
mod host;
mod intercept;
mod layout;
mod linux;
mod paging;
mod pci;
mod percpu;
mod platform;
mod serial;
mod smp;
mod svm;
mod trap;
mod tsc;
mod vtd;

pub use boot::{boot_main, end_of_boot, entry_us};
pub use bootinfo::{BootInfo, E820_RAM, MemMapEntry};
pub use guest::GUEST_FRAME_SIZE;
pub use host::{HOST_ENTRY, HostContext, HostFault};
pub use paging::pool_usage;
pub use platform::{X86Platform, exit};
pub use smp::start_secondary_cpus;

pub use crate::fatal::report_panic;
pub(crate) use cpu::halt_forever as halt;

/// Raw bytes to COM1 (the logger's sink).
pub fn console_write(bytes: &[u8]) {
    serial::write(bytes);
}

/// Microseconds since reset, from the calibrated TSC (0 before calibration).
pub fn now_us() -> u64 {
    tsc::now_us()
}

/// The host payload's initial context on CPU `cpu`: entry [`HOST_ENTRY`] in 32-bit protected
/// mode, with edi = DRAM base, esi = DRAM size, edx = CPU index, ecx = TSC ticks per
/// microsecond (`host`); a Linux host on the boot CPU: its kernel's entry by the 32-bit boot
/// protocol (`linux`); `None` if one of them does not fit in 32 bits (DRAM above 4 GiB) or
/// the CPU has no VMCB.
///
/// `#[inline]`, like `HostContext::new` and `new_linux`: compiled in tsm-hal-boot, for size
/// (the image calls it through that crate, once per CPU).
#[inline]
pub fn host_context(boot: &BootInfo, cpu: usize) -> Option<HostContext> {
    let word = |v: u64| u32::try_from(v).ok();
    if cpu == 0
        && let Some((entry, zero_page)) = linux::boot_state()
    {
        return HostContext::new_linux(word(entry)?, word(zero_page)?);
    }
    let end = boot.dram.base.0.checked_add(boot.dram.size)?;
    word(end)?;
    let args = [
        word(boot.dram.base.0)?,
        word(boot.dram.size)?,
        word(cpu as u64)?,
        word(boot.tsc_ticks_per_us)?,
    ];
    HostContext::new(cpu, word(HOST_ENTRY)?, args)
}

/// An address outside DRAM, hence never mapped: the `selftest-fault` target.
const SELFTEST_UNMAPPED: u64 = 0x7FFF_FFFF_F000;

/// Harness self-test: reads an unmapped address, so the TSM takes a #PF that the exception
/// path reports with its registers before ending the run as a failure. Never returns.
pub fn selftest_fault() -> ! {
    // SAFETY: the read faults (nothing is mapped there); the #PF handler reports and exits
    // without returning here, so no value is ever produced.
    unsafe {
        core::arch::asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) SELFTEST_UNMAPPED, tmp = out(reg) _,
                         options(nostack, readonly))
    };
    crate::fatal::fatal_text("self-test: the read did not fault")
}
