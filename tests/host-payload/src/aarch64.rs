//! The host payload on aarch64: entered by the TSM at EL1 (MMU off, `HCR_EL2.DC` makes its
//! accesses cacheable), reaches the TSM with `smc #0` (abi/src/regs.rs).

use tsm_abi::regs::{CallRegs, CallResult};

/// The host boot-parameters page: the scenario number is its first word (docs/design.md).
const PARAMS_PAGE: usize = 0x40FF_F000;

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    // FP/SIMD untrapped at EL1: compiled Rust uses it.
    "mov x9, #(0b11 << 20)",
    "msr cpacr_el1, x9",
    "isb",
    "adrp x9, __stack_top",
    "add x9, x9, :lo12:__stack_top",
    "mov sp, x9",
    "adrp x9, __bss_start",
    "add x9, x9, :lo12:__bss_start",
    "adrp x10, __bss_end",
    "add x10, x10, :lo12:__bss_end",
    "1:",
    "cmp x9, x10",
    "b.hs 2f",
    "str xzr, [x9], #8",
    "b 1b",
    // x0..x2 (DRAM base, DRAM size, CPU index) are untouched so far.
    "2:",
    "bl {main}",
    "3:",
    "wfe",
    "b 3b",
    main = sym entry,
);

extern "C" fn entry(dram_base: u64, dram_size: u64, cpu: u64) -> ! {
    crate::host_main(dram_base, dram_size, cpu)
}

/// Issues one call through the gate. x5..x17 are preserved by the TSM (abi/src/regs.rs) but
/// the arguments go in x1..x6, so those are inputs and x0..x4 carry the results.
pub fn call(regs: &CallRegs) -> CallResult {
    let (status, r1, r2, r3, r4);
    // SAFETY: `smc #0` traps to the TSM, which writes x0..x4 and resumes after the smc; it
    // touches no memory of ours except buffers the call's arguments name, which the caller
    // owns for the call's duration (hence no `nomem`).
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") regs.fid => status,
            inout("x1") regs.args[0] => r1,
            inout("x2") regs.args[1] => r2,
            inout("x3") regs.args[2] => r3,
            inout("x4") regs.args[3] => r4,
            in("x5") regs.args[4],
            in("x6") regs.args[5],
            options(nostack)
        )
    };
    CallResult {
        status,
        out: [r1, r2, r3, r4],
    }
}

/// The scenario xtask chose for this run.
pub fn scenario_id() -> u32 {
    // SAFETY: the parameters page is host DRAM (mapped in the host's stage-2) that QEMU's loader
    // filled before boot; a volatile read because no Rust code ever writes it.
    unsafe { core::ptr::read_volatile(PARAMS_PAGE as *const u32) }
}

/// Microseconds since the counter started, from the virtual counter (offset 0 under the TSM).
pub fn now_us() -> u64 {
    let (count, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags));
    }
    let us = (u128::from(count) * 1_000_000)
        .checked_div(u128::from(freq))
        .unwrap_or(0);
    u64::try_from(us).unwrap_or(u64::MAX)
}
