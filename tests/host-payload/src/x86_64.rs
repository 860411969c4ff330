//! The x86_64 side of the host payload: entry, the `syscall` gate, the boot parameters page and
//! the clock.
//!
//! The TSM enters `_start` (the first byte of the image, linked at 0x100_0000) in ring 3 with
//! rdi = DRAM base, rsi = DRAM size, rdx = CPU index and rcx = TSC ticks per microsecond (the
//! TSM calibrated the TSC; ring 3 may read it with `rdtsc` but has no timer to calibrate
//! against). `_start` sets up the stack in BSS, applies the image's static-PIE relocations,
//! zeroes BSS and calls `host_main`.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::regs::{CallRegs, CallResult};

/// The host boot parameters page; its first word is the scenario number (docs/design.md).
const HOST_PARAMS: usize = 0xFF_F000;

/// TSC ticks per microsecond, as the TSM passed them in rcx.
static TSC_TICKS_PER_US: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + __host_stack_top]",
    "mov r12, rdi",
    "mov r13, rsi",
    "mov r14, rdx",
    "mov r15, rcx",
    "lea rcx, [rip + __rela_start]",
    "lea rdx, [rip + __rela_end]",
    "lea r8, [rip + __host_start]",
    "lea r9, [rip + __bss_end]",
    "2:",
    "cmp rcx, rdx",
    "jae 3f",
    "cmp dword ptr [rcx + 8], 8", // R_X86_64_RELATIVE, the only kind a static PIE has
    "jne 4f",
    "mov rax, [rcx + 16]",
    "mov rdi, [rcx]",
    // defmt's `.defmt` (INFO, never loaded) gets relocations too: skip those outside the image.
    "cmp rdi, r8",
    "jb 5f",
    "cmp rdi, r9",
    "jae 5f",
    "mov [rdi], rax",
    "5:",
    "add rcx, 24",
    "jmp 2b",
    "3:",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    "mov [rip + {ticks}], r15",
    "mov rdi, r12",
    "mov rsi, r13",
    "mov rdx, r14",
    "call {main}",
    "4:",
    "ud2", // the TSM reports the #UD and ends the run
    ".popsection",
    ticks = sym TSC_TICKS_PER_US,
    main = sym host_entry,
);

extern "C" fn host_entry(dram_base: u64, dram_size: u64, cpu: u64) -> ! {
    crate::host_main(dram_base, dram_size, cpu)
}

/// Issues one call through `syscall` (abi/src/regs.rs): rax = function ID, arguments in rdi,
/// rsi, rdx, r10, r8, r9; results in rax (status), rdi, rsi, rdx, r10. `syscall` itself
/// clobbers rcx and r11.
pub fn call(regs: &CallRegs) -> CallResult {
    let [a1, a2, a3, a4, a5, a6] = regs.args;
    let (status, o1, o2, o3, o4): (u64, u64, u64, u64, u64);
    // SAFETY: the TSM preserves every register but rax, rcx, r11 and the result registers (all
    // declared as outputs). It may read and write the buffers a call names: the block is not
    // `nomem`/`readonly`, so the compiler assumes memory changed. `syscall` does not use the stack.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") regs.fid => status,
            inlateout("rdi") a1 => o1,
            inlateout("rsi") a2 => o2,
            inlateout("rdx") a3 => o3,
            inlateout("r10") a4 => o4,
            in("r8") a5,
            in("r9") a6,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        )
    };
    CallResult {
        status,
        out: [o1, o2, o3, o4],
    }
}

/// The scenario xtask chose, from the first word of the boot parameters page.
pub fn scenario_id() -> u32 {
    // SAFETY: the page lies in DRAM below the image, which the TSM maps for the host; QEMU's
    // loader wrote the word before boot and nothing writes it since.
    unsafe { core::ptr::read_volatile(HOST_PARAMS as *const u32) }
}

/// Microseconds since reset: the TSC divided by the rate the TSM passed at entry (0 if the TSM
/// could not calibrate).
pub fn now_us() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD is clear) and has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    tsc.checked_div(TSC_TICKS_PER_US.load(Ordering::Relaxed))
        .unwrap_or(0)
}
