//! Secondary CPUs: the TSM starts each at boot with the firmware's PSCI CPU_ON (SMC conduit,
//! from the device tree); each enters the TSM at EL2 on its own stack from the carve-out, turns
//! on the boot CPU's stage-1 and the host's stage-2, installs the vectors and the host traps,
//! and runs the image's secondary main, where it waits in the TSM until the host starts it with
//! its own PSCI CPU_ON, which the TSM answers (`tsm_core::psci`). The host never reaches the
//! firmware's PSCI: its SMCs and HVCs trap to EL2.
//!
//! *Why every CPU is brought into the TSM at boot* rather than the firmware's CPU_ON being
//! forwarded when the host asks: the TSM's per-CPU state (stage-1, vectors, traps) is ready
//! before the host runs, a CPU the host turns off comes back to the TSM rather than to the
//! firmware (so CPU_OFF needs no firmware call and the TSM never loses a CPU it must shoot
//! TLBs down on), and the host's CPU_ON is a store and an event, not a firmware round trip.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::exception;
use super::host::HostContext;
use super::sysreg::{isb, read_sysreg, write_sysreg};
use crate::platform::MemRange;

/// CPUs the TSM runs on at most (stacks are carved out for all of them).
pub const MAX_CPUS: usize = 4;
/// Stack of each secondary CPU: the run loop's deepest measured use (painted stacks,
/// docs/benchmarks.md) is about 91 KiB in debug builds (SPDM on CPU 0: 81 KiB over its idle
/// run loop, plus a secondary's own 10 KiB), so 128 KiB leaves 40 % spare.
pub const SECONDARY_STACK: u64 = 128 << 10;

/// PSCI 0.2+ CPU_ON, SMC64.
const PSCI_CPU_ON: u64 = tsm_abi::psci::CPU_ON_64 as u64;
/// MPIDR affinity fields (Aff3 in 39:32, Aff2..Aff0 in 23:0).
const MPIDR_AFF: u64 = 0xFF_00FF_FFFF;

/// What a secondary CPU needs from the boot CPU: its registers' values and the CPUs' stacks.
/// Written once by the boot CPU before any CPU_ON and cleaned to the point of coherency, since
/// a secondary reads it with its MMU (and caches) still off.
#[repr(C, align(64))]
pub(crate) struct Shared {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
    pub vtcr: u64,
    pub vttbr: u64,
    pub dram: MemRange,
    /// The SMMU's registers, which the host's accesses are checked against.
    pub smmu: Option<MemRange>,
    /// The host's BAR window, where a translation fault is a page a TVM holds.
    pub bars: Option<MemRange>,
    /// MPIDR affinity of each CPU index (index 0 = the boot CPU).
    pub mpidr: [u64; MAX_CPUS],
    /// Stack top of each CPU index (0 for the boot CPU, which has the boot stack).
    pub stack_top: [u64; MAX_CPUS],
    /// CPUs in `mpidr`.
    pub cpus: usize,
}

/// Logs each CPU's stack high-water mark (`crate::stack_use`): the boot CPU's and those of the
/// secondaries boot carved stacks for.
pub(crate) fn log_stack_use() {
    // SAFETY: loads only.
    let boot = unsafe { super::layout::boot_stack_words(u64::MAX) };
    defmt::info!(
        "stack high-water: CPU 0 used {=usize} of {=u64} bytes",
        crate::stack_use::high_water(boot),
        super::layout::boot_stack_size()
    );
    let Some(s) = SHARED.get() else { return };
    for (cpu, &top) in s.stack_top.iter().enumerate().filter(|&(_, &t)| t != 0) {
        let bottom = top - SECONDARY_STACK;
        // SAFETY: [bottom, top) is a secondary stack boot carved (TSM memory, identity-mapped,
        // 8 aligned); only loads are made through the slice, one word at a time.
        let words = unsafe {
            core::slice::from_raw_parts(
                bottom as *const core::sync::atomic::AtomicU64,
                (SECONDARY_STACK / 8) as usize,
            )
        };
        defmt::info!(
            "stack high-water: CPU {=usize} used {=usize} of {=u64} bytes",
            cpu,
            crate::stack_use::high_water(words),
            SECONDARY_STACK
        );
    }
}

/// Set once by the boot CPU (`publish`), read by secondaries and `start_secondary_cpus`.
static SHARED: spin::Once<Shared> = spin::Once::new();
/// Secondary CPUs that reached the image's secondary main.
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// Bit n: CPU index n runs the TSM (the boot CPU's is set when it publishes).
static ONLINE_MASK: AtomicU32 = AtomicU32::new(0);

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global __secondary_entry",
    // PSCI enters here at EL2, MMU off, with x0 = the context ID: this CPU's stack top.
    "__secondary_entry:",
    // The image's atomics are FEAT_LSE instructions (the boot CPU checked its own): a CPU
    // without them would take an undefined-instruction fault at its first lock, so it parks
    // here instead, never counted online; the boot CPU's bounded wait then reports it.
    "mrs x9, id_aa64isar0_el1",
    "ubfx x9, x9, #20, #4",
    "cmp x9, #2",
    "b.lo 1f",
    "mov x9, #0x33ff",
    "msr cptr_el2, x9",
    "isb",
    "mov sp, x0",
    "bl {secondary}",
    "1:",
    "wfe",
    "b 1b",
    secondary = sym boot_secondary,
);

unsafe extern "Rust" {
    /// The image's secondary main, defined by [`crate::aarch64_entry!`].
    safe fn __tsm_aarch64_secondary(cpu: u64, host: HostContext) -> !;
}

/// Records what secondaries need (boot CPU, after its MMU and the host's stage-2 are on) and
/// writes it back to the point of coherency, with the stacks.
pub(crate) fn publish(shared: Shared) {
    let s = SHARED.call_once(|| shared);
    ONLINE_MASK.fetch_or(1, Ordering::AcqRel);
    // The whole `Once`: its state word and the data, both read with caches off.
    clean_to_poc(
        core::ptr::addr_of!(SHARED) as u64,
        size_of::<spin::Once<Shared>>() as u64,
    );
    for &top in s.stack_top.iter().filter(|&&t| t != 0) {
        clean_to_poc(top - SECONDARY_STACK, SECONDARY_STACK);
    }
}

/// Cleans and invalidates `[base, base + len)` to the point of coherency, so a CPU reading it
/// with caches off sees what this one wrote, and no dirty line of it is written back later.
pub(crate) fn clean_to_poc(base: u64, len: u64) {
    let mut line = base & !63;
    while line < base + len {
        // SAFETY: cache maintenance by VA on memory the TSM's stage-1 maps changes no data.
        unsafe {
            core::arch::asm!("dc civac, {}", in(reg) line, options(nostack, preserves_flags))
        };
        line += 64;
    }
    // SAFETY: a barrier has no effect on memory or registers.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Starts every other CPU the device tree lists (up to [`MAX_CPUS`]) with PSCI CPU_ON and
/// waits (bounded) until each reached the image's secondary main. Returns the number of CPUs
/// running the TSM, this one included. Called once, by the boot CPU, once the monitor is
/// shared.
pub fn start_secondary_cpus() -> usize {
    let Some(s) = SHARED.get() else { return 1 };
    unsafe extern "C" {
        static __secondary_entry: u8;
    }
    let entry = core::ptr::addr_of!(__secondary_entry) as u64;
    let mut started = 0;
    for i in 1..s.cpus.min(MAX_CPUS) {
        let (Some(&mpidr), Some(&top)) = (s.mpidr.get(i), s.stack_top.get(i)) else {
            break;
        };
        let r = psci_cpu_on(mpidr, entry, top);
        if r == 0 {
            started += 1;
        } else {
            defmt::warn!(
                "PSCI CPU_ON of CPU {=usize} (MPIDR {=u64:#x}) failed: {=i64}",
                i,
                mpidr,
                r as i64
            );
        }
    }
    // QEMU starts a CPU at once; a bound keeps a broken CPU from hanging the boot CPU.
    let deadline = super::timer::now_us().saturating_add(1_000_000);
    while ONLINE.load(Ordering::Acquire) < started && super::timer::now_us() < deadline {
        core::hint::spin_loop();
    }
    1 + ONLINE.load(Ordering::Acquire)
}

/// The index of the CPU whose MPIDR affinity is `mpidr` (exactly: Aff3 in 39:32, Aff2..Aff0
/// in 23:0, nothing else), if it runs the TSM.
pub(crate) fn cpu_index(mpidr: u64) -> Option<usize> {
    let s = SHARED.get()?;
    let cpu = s.mpidr.iter().take(s.cpus).position(|&m| m == mpidr)?;
    (ONLINE_MASK.load(Ordering::Acquire) & (1 << cpu) != 0).then_some(cpu)
}

fn psci_cpu_on(mpidr: u64, entry: u64, context: u64) -> u64 {
    let r: u64;
    // SAFETY: with no EL3, QEMU implements PSCI for `smc` from EL2 (the DTB's /psci method);
    // CPU_ON only starts the named CPU at `entry` (the secondary entry above) with x0 =
    // `context`, its own stack, and returns a status in x0.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") PSCI_CPU_ON => r,
            inout("x1") mpidr => _,
            inout("x2") entry => _,
            inout("x3") context => _,
            options(nostack)
        )
    };
    r
}

extern "C" fn boot_secondary() -> ! {
    let Some(s) = SHARED.get() else {
        crate::fatal::fatal_text("secondary CPU started before the boot CPU published its state")
    };
    let mpidr = read_sysreg!("mpidr_el1") & MPIDR_AFF;
    let Some(cpu) = s.mpidr.iter().take(s.cpus).position(|&m| m == mpidr) else {
        crate::fatal::fatal_text("secondary CPU with an MPIDR the device tree does not list")
    };
    exception::install();
    // SAFETY: the boot CPU's stage-1 (same tables, already live there) maps this CPU's code,
    // data and stack to themselves, so execution continues once M is set; stale TLB entries
    // are dropped first. The host's stage-2 registers only govern EL1, which runs later.
    unsafe {
        write_sysreg!("mair_el2", s.mair);
        write_sysreg!("tcr_el2", s.tcr);
        write_sysreg!("ttbr0_el2", s.ttbr0);
        isb();
        core::arch::asm!("tlbi alle2", "dsb ish", options(nostack, preserves_flags));
        isb();
        write_sysreg!("sctlr_el2", s.sctlr);
        isb();
        write_sysreg!("vtcr_el2", s.vtcr);
        write_sysreg!("vttbr_el2", s.vttbr);
    }
    isb();
    super::boot::trap_host();
    ONLINE_MASK.fetch_or(1 << cpu, Ordering::AcqRel);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    __tsm_aarch64_secondary(
        cpu as u64,
        HostContext::new(&s.dram, s.smmu, s.bars, cpu as u64, [0; 3]),
    )
}
