//! Per-CPU state: each CPU's block holds its per-CPU data (what `GS_BASE` points at while the
//! TSM runs; a guest's GS is switched by `vmload`/`vmsave`), GDT, TSS and IDT, and the stack
//! NMI, #DF and #MC switch to (IST1), above a guard page. The blocks live in the static
//! carve-out, used through their identity addresses.
//!
//! A CPU's block is written only by that CPU ([`load`]) and by its NMI handler; nothing else
//! touches it once the CPU is up.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu;
use super::gdt::{self, Gdt, Tss};
use super::trap::{self, Idt};

/// CPUs the TSM runs on; further CPUs stay parked (see `smp`).
pub const MAX_CPUS: usize = 4;
/// Pages of the IST stack.
const STACK_PAGES: usize = 4;
/// Pages per CPU block: data, guard, IST stack.
pub const BLOCK_PAGES: usize = 2 + STACK_PAGES;
const PAGE: usize = 4096;
const IST_GUARD: usize = 1;

/// The part of the data page the TSM reaches through GS (offsets fixed by `repr(C)`).
#[repr(C)]
pub struct PerCpu {
    /// This CPU's index.
    pub index: u64,
    /// TLB shootdown NMIs this CPU has handled (`smp::shootdown` waits for it to move).
    pub nmi_acks: u64,
}

/// How far below the IST stack top the NMI handler finds `nmi_acks`, with its one push on top
/// of the CPU's five-word frame (the data page is the block's first page, the IST stack its
/// last).
pub const NMI_ACKS_BELOW_IST_SP: usize =
    BLOCK_PAGES * PAGE - 6 * 8 - offset_of!(DataPage, percpu) - offset_of!(PerCpu, nmi_acks);

#[repr(C, align(4096))]
struct DataPage {
    percpu: PerCpu,
    gdt: Gdt,
    tss: Tss,
    idt: Idt,
}

const _: () = assert!(size_of::<DataPage>() == PAGE);

unsafe extern "C" {
    /// The blocks, in the static carve-out (`link/x86_64-tsm.ld` reserves
    /// `__percpu_block_pages` pages for each of `__percpu_cpus` CPUs, zeroed with BSS at boot).
    static __percpu_blocks: u8;
    static __percpu_blocks_end: u8;
}

/// Bytes of the blocks of every CPU.
pub const BLOCKS_BYTES: u64 = (MAX_CPUS * BLOCK_PAGES * PAGE) as u64;

/// Whether the link script reserved [`BLOCKS_BYTES`] for the blocks (boot refuses to go on
/// otherwise).
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn blocks_reserved() -> bool {
    let start = core::ptr::addr_of!(__percpu_blocks) as u64;
    let end = core::ptr::addr_of!(__percpu_blocks_end) as u64;
    start.is_multiple_of(PAGE as u64) && end.checked_sub(start) == Some(BLOCKS_BYTES)
}

/// Whether `pa` is the guard page below a CPU's IST stack (left unmapped, so an overflow
/// faults instead of running into the data page).
pub fn is_guard_page(pa: u64) -> bool {
    let start = core::ptr::addr_of!(__percpu_blocks) as u64;
    pa.checked_sub(start)
        .filter(|&off| off < BLOCKS_BYTES)
        .is_some_and(|off| (off / PAGE as u64) % BLOCK_PAGES as u64 == IST_GUARD as u64)
}

/// The identity address of CPU `cpu`'s block (`cpu < MAX_CPUS`).
pub fn block_pa(cpu: usize) -> u64 {
    core::ptr::addr_of!(__percpu_blocks) as u64 + (cpu * BLOCK_PAGES * PAGE) as u64
}

/// The NMIs CPU `cpu` has acknowledged (`cpu < MAX_CPUS`).
pub fn nmi_acks(cpu: usize) -> u64 {
    let data = block_pa(cpu) as *mut DataPage;
    // SAFETY: the field is in CPU `cpu`'s data page (identity-mapped in the TSM's tables),
    // aligned, and only ever changed by that CPU's atomic `lock inc`.
    unsafe { AtomicU64::from_ptr(&raw mut (*data).percpu.nmi_acks).load(Ordering::Acquire) }
}

/// The index of the CPU running this (from its per-CPU data, through GS).
pub fn this_cpu() -> usize {
    let index: u64;
    // SAFETY: in ring 0 GS_BASE is this CPU's per-CPU data (set by `load` before anything
    // else runs); the read has no side effect.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) index, off = const offset_of!(PerCpu, index),
                         options(nostack, readonly, preserves_flags))
    };
    index as usize
}

/// Fills CPU `cpu`'s GDT, TSS and IDT and loads them, its IST stack and `GS_BASE`
/// (`cpu < MAX_CPUS`).
pub fn load(cpu: usize) {
    let pa = block_pa(cpu);
    let data = pa as *mut DataPage;
    let ist_top = pa + (BLOCK_PAGES * PAGE) as u64;
    // SAFETY: block `cpu` is this CPU's alone (module doc) and identity-mapped read-write for
    // ring 0 under both the boot tables and the TSM's; nothing reads it concurrently (the CPU
    // uses it only through the tables loaded below, after the writes).
    unsafe {
        (*data).percpu = PerCpu {
            index: cpu as u64,
            nmi_acks: 0,
        };
        gdt::load(&raw mut (*data).gdt, &raw mut (*data).tss, ist_top);
        trap::load_idt(&raw mut (*data).idt);
        cpu::wrmsr(cpu::MSR_GS_BASE, &raw mut (*data).percpu as u64);
    }
}
