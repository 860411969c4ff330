//! The guest on x86_64: entered like every TVM vCPU (docs/design.md "Guests") in 32-bit
//! protected mode with paging off at its first byte, edi = the low half of `arg0` and esi = the
//! high half; calls with `vmmcall`. The image is linked where it runs and its relocations are
//! applied at link time (build.rs). `_start` zeroes BSS (which holds its page tables),
//! identity-maps the first GiB with a 1 GiB page, turns on PAE paging and long mode, loads its
//! GDT and jumps to 64-bit code, which sets the stack, maps the rest of the TVM's GPA space
//! (512 GiB: one PML4 entry, 1 GiB pages) and calls `guest_main`. It has no IDT: the TSM intercepts every exception of a TVM vCPU and reports it
//! to the host as a FAULT exit.

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
    ".pushsection .text.entry, \"ax\"",
    ".code32",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "mov ebp, edi", // arg0, kept through the mode switch
    "mov ebx, esi",
    "mov edi, offset __bss_start_abs",
    "mov ecx, offset __bss_end_abs",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",
    // PML4[0] -> PDPT; PDPT[0] -> the first GiB as a 1 GiB page (present, writable): where
    // this code runs; 64-bit code maps the other 511.
    "mov edi, offset __guest_pml4_abs",
    "mov eax, offset __guest_pdpt_abs",
    "or eax, 3",
    "mov [edi], eax",
    "mov dword ptr [__guest_pdpt_abs], 0x83",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov eax, offset __guest_pml4_abs",
    "mov cr3, eax",
    "mov ecx, 0xC0000080", // EFER
    "rdmsr",
    "or eax, 0x100", // LME
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
    // PDPT[i] -> i GiB for i in 1..512 (the entries were not present: nothing to flush).
    "lea rdi, [rip + __guest_pdpt]",
    "mov rax, 0x40000083",
    "mov ecx, 1",
    "2:",
    "mov [rdi + rcx * 8], rax",
    "add rax, 0x40000000",
    "inc ecx",
    "cmp ecx, 512",
    "jb 2b",
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
