//! x86_64 only, part of the `boot` scenario: the host tries every way out of its SVM guest mode
//! the TSM must close (docs/design.md "x86_64: the host and TVMs as SVM guests") and checks each
//! is refused the documented way, the run going on: the SVM instructions and XSETBV raise #UD;
//! VM_HSAVE_PA, VM_CR, the x2APIC ICR (an INIT) and EFER.SVME raise #GP; EFER reads without
//! SVME; CPUID shows no SVM and no XSAVE; a string OUT raises #GP, a write to the exit port is
//! dropped (were it not, QEMU would end the run as a failure) and COM1 reads all-ones; the local
//! APIC's page is outside the host's nested table. Each attempt is one instruction of the
//! payload's exception table (`x86_64.rs`).

use crate::x86_64::{attempt, probe};

const UD: u8 = 6;
const GP: u8 = 13;

const MSR_EFER: u64 = 0xC000_0080;
const EFER_LMA: u64 = 1 << 10;
const EFER_SVME: u64 = 1 << 12;
const MSR_VM_CR: u64 = 0xC001_0114;
const MSR_VM_HSAVE_PA: u64 = 0xC001_0117;
const MSR_X2APIC_ICR: u64 = 0x830;
/// ICR: INIT, level assert, to every CPU but this one.
const ICR_INIT_ALL_BUT_SELF: u64 = (0b11 << 18) | (1 << 14) | (0b101 << 8);
/// Where the TSM's image starts: a host-save area there would let VMRUN write it.
const TSM_IMAGE: u64 = 0x20_0000;
/// isa-debug-exit: 0x11 ends the run as a failure.
const EXIT_PORT: u64 = 0xF4;
const EXIT_FAILURE: u64 = 0x11;
/// COM1's line status register: 0x60 (transmitter empty) on the real UART.
const COM1_LSR: u64 = 0x3FD;
const LAPIC_ID: u64 = 0xFEE0_0020;

unsafe extern "C" {
    fn esc_vmrun() -> u64;
    fn esc_vmload() -> u64;
    fn esc_vmsave() -> u64;
    fn esc_stgi() -> u64;
    fn esc_clgi() -> u64;
    fn esc_skinit() -> u64;
    fn esc_invlpga() -> u64;
    fn esc_xsetbv() -> u64;
    fn esc_rdmsr(msr: u64) -> u64;
    fn esc_wrmsr(msr: u64, value: u64) -> u64;
    fn esc_inb(port: u64) -> u64;
    fn esc_outb(port: u64, value: u64) -> u64;
    fn esc_outsb(port: u64, from: &u8) -> u64;
}

// Each attempt: one instruction at `1:`, listed in the exception table with `2:` (the `ret`) as
// its fixup; rax = 0 (the VMCB / save-area address an SVM instruction would use).
core::arch::global_asm!(
    ".pushsection .text.svm_escape, \"ax\"",
    ".macro attempt name, insn:vararg",
    ".global \\name",
    "\\name:",
    "xor eax, eax",
    "1:",
    "\\insn",
    "2:",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    ".endm",
    "attempt esc_vmrun, vmrun rax",
    "attempt esc_vmload, vmload rax",
    "attempt esc_vmsave, vmsave rax",
    "attempt esc_stgi, stgi",
    "attempt esc_clgi, clgi",
    "attempt esc_skinit, .byte 0x0F, 0x01, 0xDE",
    "attempt esc_invlpga, .byte 0x0F, 0x01, 0xDF",
    // xsetbv(XCR0 = x87 | SSE | AVX): ecx = 0, edx:eax = 7.
    ".global esc_xsetbv",
    "esc_xsetbv:",
    "xor ecx, ecx",
    "xor edx, edx",
    "mov eax, 7",
    "1:",
    "xsetbv",
    "2:",
    "xor eax, eax",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    // esc_rdmsr(msr = rdi) -> edx:eax (0 when refused).
    ".global esc_rdmsr",
    "esc_rdmsr:",
    "mov ecx, edi",
    "xor eax, eax",
    "xor edx, edx",
    "1:",
    "rdmsr",
    "2:",
    "shl rdx, 32",
    "or rax, rdx",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    // esc_wrmsr(msr = rdi, value = rsi).
    ".global esc_wrmsr",
    "esc_wrmsr:",
    "mov ecx, edi",
    "mov eax, esi",
    "mov rdx, rsi",
    "shr rdx, 32",
    "1:",
    "wrmsr",
    "2:",
    "xor eax, eax",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    // esc_inb(port = rdi) -> al.
    ".global esc_inb",
    "esc_inb:",
    "mov edx, edi",
    "xor eax, eax",
    "1:",
    "in al, dx",
    "2:",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    // esc_outb(port = rdi, value = rsi).
    ".global esc_outb",
    "esc_outb:",
    "mov edx, edi",
    "mov eax, esi",
    "1:",
    "out dx, al",
    "2:",
    "xor eax, eax",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    // esc_outsb(port = rdi, from = rsi): one byte.
    ".global esc_outsb",
    "esc_outsb:",
    "mov edx, edi",
    "1:",
    "outsb",
    "2:",
    "xor eax, eax",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 1b, 2b",
    ".popsection",
    ".popsection",
);

fn cpuid(leaf: u32) -> [u32; 4] {
    let (a, c, d): (u32, u32, u32);
    let b: u64;
    // SAFETY: CPUID only writes the four output registers (rbx is saved around it: LLVM
    // reserves it).
    unsafe {
        core::arch::asm!(
            "mov {b:r}, rbx",
            "cpuid",
            "xchg {b:r}, rbx",
            b = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") 0 => c,
            out("edx") d,
            options(nomem, nostack, preserves_flags),
        )
    };
    [a, b as u32, c, d]
}

// The attempts, each behind the exception table. SAFETY (of each `unsafe` call below): every
// `esc_*` is one instruction the TSM intercepts inside a function of the C ABI that touches no
// memory (but `esc_outsb`, which reads the one byte it is given); a fault resumes at the
// function's end. Had the TSM let one through, it acts on CPU state no Rust object lives in,
// and the checks fail the run.

fn run(f: unsafe extern "C" fn() -> u64) -> (Option<u8>, u64) {
    // SAFETY: `f` is one of the `esc_*` functions without arguments (comment above).
    attempt(|| unsafe { f() })
}

fn rdmsr(msr: u64) -> (Option<u8>, u64) {
    // SAFETY: see above.
    attempt(|| unsafe { esc_rdmsr(msr) })
}

pub(crate) fn wrmsr(msr: u64, value: u64) -> (Option<u8>, u64) {
    // SAFETY: see above.
    attempt(|| unsafe { esc_wrmsr(msr, value) })
}

fn inb(port: u64) -> (Option<u8>, u64) {
    // SAFETY: see above.
    attempt(|| unsafe { esc_inb(port) })
}

fn outb(port: u64, value: u64) -> (Option<u8>, u64) {
    // SAFETY: see above.
    attempt(|| unsafe { esc_outb(port, value) })
}

fn outsb(port: u64, byte: &u8) -> (Option<u8>, u64) {
    // SAFETY: see above; `byte` is readable.
    attempt(|| unsafe { esc_outsb(port, byte) })
}

/// Checks one attempt: `name` must have taken `want` (`None`: gone through).
fn expect(name: &str, got: (Option<u8>, u64), want: Option<u8>) -> bool {
    let ok = got.0 == want;
    if ok {
        defmt::info!(
            "svm escape: {=str} -> vector {=?} (value {=u64:#x}), as it must",
            name,
            got.0,
            got.1
        );
    } else {
        defmt::error!(
            "svm escape: {=str} -> vector {=?} (value {=u64:#x}), expected {=?}",
            name,
            got.0,
            got.1,
            want
        );
    }
    ok
}

/// Runs every attempt; true when each was refused the documented way.
pub fn all_refused() -> bool {
    let svm: [(&str, unsafe extern "C" fn() -> u64); 8] = [
        ("VMRUN", esc_vmrun),
        ("VMLOAD", esc_vmload),
        ("VMSAVE", esc_vmsave),
        ("STGI", esc_stgi),
        ("CLGI", esc_clgi),
        ("SKINIT", esc_skinit),
        ("INVLPGA", esc_invlpga),
        ("XSETBV", esc_xsetbv),
    ];
    let mut ok = true;
    for (name, f) in svm {
        ok &= expect(name, run(f), Some(UD));
    }
    let msrs = [
        ("RDMSR VM_HSAVE_PA", MSR_VM_HSAVE_PA, None),
        ("WRMSR VM_HSAVE_PA", MSR_VM_HSAVE_PA, Some(TSM_IMAGE)),
        ("RDMSR VM_CR", MSR_VM_CR, None),
        ("WRMSR VM_CR", MSR_VM_CR, Some(0)),
        (
            "WRMSR x2APIC ICR (INIT)",
            MSR_X2APIC_ICR,
            Some(ICR_INIT_ALL_BUT_SELF),
        ),
    ];
    for (name, msr, write) in msrs {
        let got = match write {
            Some(v) => wrmsr(msr, v),
            None => rdmsr(msr),
        };
        ok &= expect(name, got, Some(GP));
    }
    let efer = rdmsr(MSR_EFER);
    ok &= expect("RDMSR EFER", efer, None);
    if efer.1 & EFER_SVME != 0 || efer.1 & EFER_LMA == 0 {
        defmt::error!(
            "svm escape: EFER reads {=u64:#x}: SVME shown or LMA missing",
            efer.1
        );
        ok = false;
    }
    ok &= expect(
        "WRMSR EFER.SVME",
        wrmsr(MSR_EFER, efer.1 | EFER_SVME),
        Some(GP),
    );
    let svm_bit = cpuid(0x8000_0001)[2] & (1 << 2);
    let svm_leaf = cpuid(0x8000_000A);
    let xsave = cpuid(1)[2] & (1 << 26);
    defmt::info!(
        "svm escape: CPUID SVM {=u32}, leaf 8000_000Ah {}, XSAVE {=u32}",
        svm_bit,
        svm_leaf,
        xsave
    );
    ok &= svm_bit == 0 && svm_leaf == [0; 4] && xsave == 0;
    ok &= expect("OUTSB to COM1", outsb(COM1_LSR - 5, &0x55), Some(GP));
    ok &= expect("OUT to the exit port", outb(EXIT_PORT, EXIT_FAILURE), None);
    let lsr = inb(COM1_LSR);
    ok &= expect("IN from COM1", lsr, None) && lsr.1 == 0xFF;
    let (blocked, id) = probe(LAPIC_ID, false, 0);
    defmt::info!(
        "svm escape: local APIC read blocked {=bool}, value {=u64:#x}",
        blocked,
        id
    );
    ok && blocked
}
