//! The guest on aarch64: entered at EL1 with the MMU off behind the TVM's stage 2, `x0` =
//! `arg0`; calls with `hvc #0`.

/// The guest's call gate.
pub use tsm_abi::api::Hvc as Gate;

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    // No FP/SIMD: the payload is built soft-float, as a guest kernel is (xtask's
    // `Arch::guest_triple`), so CPACR_EL1 stays as the TSM resets it.
    "adrp x9, __stack_top",
    "add x9, x9, :lo12:__stack_top",
    "mov sp, x9",
    // BSS is a few words (the console frame, written before it is read, is not in it:
    // console_log.rs), 16-byte aligned at both ends (the linker script): zeroed in pairs. Not
    // DC ZVA: with the MMU off, data accesses are Device memory, where it faults.
    "adrp x9, __bss_start",
    "add x9, x9, :lo12:__bss_start",
    "adrp x10, __bss_end",
    "add x10, x10, :lo12:__bss_end",
    "1:",
    "cmp x9, x10",
    "b.hs 2f",
    "stp xzr, xzr, [x9], #16",
    "b 1b",
    // x0 (arg0) is untouched so far.
    "2:",
    "bl {main}",
    "3:",
    "wfe",
    "b 3b",
    main = sym entry,
);

extern "C" fn entry(arg0: u64) -> ! {
    crate::guest_main(arg0)
}

/// Microseconds since the counter started (the virtual counter, as the host reads it).
pub fn now_us() -> u64 {
    let (count, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags));
    }
    if freq == 0 {
        0
    } else {
        (u128::from(count) * 1_000_000 / u128::from(freq)) as u64
    }
}

/// The virtual counter the host's `bench` scenario reads too (EL1 may: the TSM's CNTHCTL_EL2
/// traps neither counter, and CNTVOFF_EL2 is 0), after an ISB so it is not read early.
pub fn counter() -> u64 {
    let count: u64;
    // SAFETY: ISB and a read of the virtual counter touch no memory and have no side effects.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags));
    }
    count
}

/// `GuestEnv::break_entry_state` (tests/scenarios/src/env.rs): none here, the TSM sets every
/// register its ERET needs (x86_64's EFER.SVME has no counterpart).
pub fn break_entry_state() -> Option<bool> {
    None
}
