//! The guest on x86_64: entered in ring 3 on the TVM's page tables (VA = GPA), `rdi` = `arg0`;
//! calls with `syscall`. The image is linked where it runs and its relocations are applied at
//! link time (build.rs), so `_start` only sets the stack and clears BSS.

/// The guest's call gate.
pub use tsm_abi::api::Syscall as Gate;

core::arch::global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + __stack_top]",
    "mov r12, rdi",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    "mov rdi, r12",
    "call {main}",
    "2:",
    "pause",
    "jmp 2b",
    ".popsection",
    main = sym entry,
);

extern "C" fn entry(arg0: u64) -> ! {
    crate::guest_main(arg0)
}

/// Guest log lines carry no time: ring 3 has no calibrated clock (the TSM's records around
/// them do).
pub fn now_us() -> u64 {
    0
}

/// The TSC, as the host's `bench` scenario reads it (ring 3 may: the TSM leaves CR4.TSD clear),
/// after an LFENCE so it is not read early.
pub fn counter() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC touch no memory; RDTSC only writes edx:eax.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}
