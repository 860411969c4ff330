//! Per-CPU state: each CPU's block holds its per-CPU data (what `GS_BASE` points at in ring 0),
//! GDT, TSS and IDT, and the two stacks a trap from ring 3 (TSS.RSP0) and NMI/#DF/#MC (IST1)
//! switch to, each above a guard page. The blocks live in the static carve-out and are used through
//! their alias addresses (`alias`), which every TVM's map carries too.
//!
//! A CPU's block is written only by that CPU ([`load`]) and by the trampoline running on it;
//! nothing else touches it once the CPU is up.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use super::alias;
use super::cpu;
use super::gdt::{self, Gdt, Tss};
use super::trap::{self, Idt};

/// CPUs the TSM runs on; further CPUs stay parked (see `smp`).
pub const MAX_CPUS: usize = 4;
/// Pages of each trap stack.
const STACK_PAGES: usize = 4;
/// Pages per CPU block: data, guard, trap stack, guard, IST stack.
pub const BLOCK_PAGES: usize = 3 + 2 * STACK_PAGES;
const PAGE: usize = 4096;
const TRAP_GUARD: usize = 1;
const IST_GUARD: usize = TRAP_GUARD + 1 + STACK_PAGES;

/// The part of the data page the trampoline reaches through GS (offsets fixed by `repr(C)`).
#[repr(C)]
pub struct PerCpu {
    /// The ring-3 `rsp` during `syscall_entry`.
    pub scratch: u64,
    /// The running context's register frame (identity address, reached after the CR3 switch).
    pub context: u64,
    /// The TSM's `rsp` inside `ring3_enter`.
    pub tsm_rsp: u64,
    /// The TSM's CR3.
    pub tsm_cr3: u64,
    /// The CR3 of the context being entered (the TSM's for the host, the TVM root for a guest).
    pub run_cr3: u64,
    /// Top of this CPU's trap stack (alias address): where `ring3_enter` builds its `iretq` frame.
    pub entry_stack: u64,
    /// The ring-0 trap reporter (`trap::kernel_trap_entry`, identity address).
    pub kernel_trap: u64,
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
pub fn blocks_reserved() -> bool {
    let start = core::ptr::addr_of!(__percpu_blocks) as u64;
    let end = core::ptr::addr_of!(__percpu_blocks_end) as u64;
    start.is_multiple_of(PAGE as u64) && end.checked_sub(start) == Some(BLOCKS_BYTES)
}

/// Whether page `p` of a block is a guard page (never mapped in the alias).
pub fn is_guard_page(p: u64) -> bool {
    p == TRAP_GUARD as u64 || p == IST_GUARD as u64
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

/// Which addresses the CPU tables are loaded with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum View {
    /// The identity addresses (boot, before the TSM's tables exist).
    Identity,
    /// The alias addresses (once the TSM's tables are live).
    Alias,
}

/// Fills CPU `cpu`'s GDT, TSS and IDT and loads them, its TSS's stacks and `GS_BASE`, as seen
/// through `view`. `tsm_cr3` is what traps switch back to; `stubs` the identity address of the
/// exception stubs. `cpu < MAX_CPUS`.
pub fn load(cpu: usize, view: View, tsm_cr3: u64, stubs: u64, l: &super::layout::Layout) {
    let pa = block_pa(cpu);
    let base = match view {
        View::Identity => pa,
        View::Alias => alias::cpu_block(cpu),
    };
    let stubs = match view {
        View::Identity => stubs,
        View::Alias => alias::text(l, stubs),
    };
    let data = pa as *mut DataPage;
    let trap_top = base + ((IST_GUARD) * PAGE) as u64;
    let ist_top = base + (BLOCK_PAGES * PAGE) as u64;
    // SAFETY: block `cpu` is this CPU's alone (module doc) and identity-mapped read-write for
    // ring 0 under both the boot tables and the TSM's; nothing reads it concurrently (the CPU
    // uses it only through the tables loaded below, after the writes).
    unsafe {
        (*data).percpu = PerCpu {
            scratch: 0,
            context: 0,
            tsm_rsp: 0,
            tsm_cr3,
            run_cr3: tsm_cr3,
            entry_stack: trap_top,
            kernel_trap: trap::kernel_trap_entry_address(),
            index: cpu as u64,
            nmi_acks: 0,
        };
        let va = |off: usize| base + off as u64;
        gdt::load(
            &raw mut (*data).gdt,
            va(offset_of!(DataPage, gdt)),
            &raw mut (*data).tss,
            va(offset_of!(DataPage, tss)),
            trap_top,
            ist_top,
        );
        trap::load_idt(&raw mut (*data).idt, va(offset_of!(DataPage, idt)), stubs);
        cpu::wrmsr(cpu::MSR_GS_BASE, va(offset_of!(DataPage, percpu)));
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, 0);
    }
}
