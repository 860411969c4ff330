//! The guest on x86_64: entered like every TVM vCPU (docs/design.md "Guests") in 32-bit
//! protected mode with paging off at its first byte, edi = the low half of `arg0` and esi = the
//! high half; calls with `vmmcall`. The image is linked where it runs and its relocations are
//! applied at link time (build.rs). Its page tables are data of the image, built by the
//! assembler: they identity-map the TVM's GPA space (512 GiB: one PML4 entry, 1 GiB pages), and
//! the host loads the image at the address it is linked at. `_start` turns on PAE paging and
//! long mode with them, loads its GDT and jumps to 64-bit code, which zeroes BSS, sets the stack
//! and calls `guest_main`. It has no IDT: the TSM intercepts every exception of a TVM vCPU and
//! reports it to the host as a FAULT exit.

/// The guest's call gate.
pub use tsm_abi::api::Vmmcall as Gate;

core::arch::global_asm!(
    ".pushsection .rodata.guest_gdt, \"a\"",
    ".balign 16",
    ".global __guest_gdt",
    "__guest_gdt:",
    ".quad 0",
    ".quad 0x00AF9A000000FFFF", // 0x08: ring-0 code, 64-bit
    ".quad 0x00CF92000000FFFF", // 0x10: ring-0 data
    ".global __guest_gdt_ptr",
    "__guest_gdt_ptr:",
    ".word 23",
    ".long __guest_gdt_abs",
    ".popsection",
    "",
    // Written by the CPU (accessed and dirty bits), so in .data, not .rodata.
    ".pushsection .data.guest_page_tables, \"aw\"",
    ".balign 4096",
    ".global __guest_pml4",
    "__guest_pml4:",
    ".quad __guest_pdpt_abs + 3", // present, writable
    ".fill 511, 8, 0",
    ".global __guest_pdpt",
    "__guest_pdpt:",
    // PDPT[i] -> i GiB as a 1 GiB page (present, writable, PS).
    ".set .Lguest_gib, 0",
    ".rept 512",
    ".quad (.Lguest_gib << 30) | 0x83",
    ".set .Lguest_gib, .Lguest_gib + 1",
    ".endr",
    ".popsection",
    "",
    ".pushsection .text.entry, \"ax\"",
    ".code32",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "mov ebp, edi", // arg0, kept through the mode switch
    "mov ebx, esi",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov eax, offset __guest_pml4_abs",
    "mov cr3, eax",
    // EFER |= LME. A vCPU reads and writes its EFER without an exit, SVME set (docs/design.md
    // "x86_64: the host and TVMs as SVM guests", Entry): cleared, the next call would #UD.
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000000", // PG
    "mov cr0, eax",
    "lgdt [__guest_gdt_ptr_abs]",
    // ljmp 0x08:_start64
    ".byte 0xEA",
    ".long __start64_abs",
    ".word 0x08",
    ".code64",
    ".global _start64",
    "_start64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "lea rsp, [rip + __stack_top]",
    // BSS is a few words (the console frame, written before it is read, is not in it:
    // console_log.rs), 16-byte aligned at both ends (the linker script).
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "shr ecx, 3",
    "xor eax, eax",
    "rep stosq",
    "mov edi, ebp",
    "mov ebx, ebx",
    "shl rbx, 32",
    "or rdi, rbx",
    "call {main}",
    "3:",
    "pause",
    "jmp 3b",
    ".popsection",
    main = sym entry,
);

extern "C" fn entry(arg0: u64) -> ! {
    crate::guest_main(arg0)
}

/// Guest log lines carry no time: the guest has no calibrated clock (the TSM's records around
/// them do).
pub fn now_us() -> u64 {
    0
}

/// The TSC, as the host's `bench` scenario reads it (the TSM does not intercept RDTSC), after
/// an LFENCE so it is not read early.
pub fn counter() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC touch no memory; RDTSC only writes edx:eax.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

const MSR_EFER: u32 = 0xC000_0080;
const EFER_SVME: u64 = 1 << 12;
/// An EFER bit no CPU defines.
const EFER_RESERVED_63: u64 = 1 << 63;

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR of an MSR this vCPU reads without an exit (EFER) writes only edx:eax.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// # Safety
/// `value` must be an EFER this program still runs under: every bit it relies on (LME, LMA,
/// NXE) unchanged.
unsafe fn wrmsr_efer(value: u64) {
    // SAFETY: the caller's contract; WRMSR touches no memory.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") MSR_EFER, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags));
    }
}

/// `GuestEnv::break_entry_state` (tests/scenarios/src/env.rs): a reserved EFER bit, then
/// EFER.SVME cleared.
pub fn break_entry_state() -> Option<bool> {
    let efer = rdmsr(MSR_EFER);
    // SAFETY: only a reserved bit and SVME change: long mode and NX stay as they are, and the
    // program uses no SVM instruction but the call gate, whose #UD is what the script wants.
    unsafe { wrmsr_efer(efer | EFER_RESERVED_63) };
    let dropped = rdmsr(MSR_EFER) & EFER_RESERVED_63 == 0;
    // SAFETY: as above.
    unsafe { wrmsr_efer(efer & !EFER_SVME) };
    Some(dropped)
}
