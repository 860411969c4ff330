//! The IDT: one stub per exception vector (0..=31), in the trampoline (`context`). A trap from
//! ring 3 goes to the context switch; a trap from ring 0 is a TSM bug and comes here
//! (`kernel_trap_entry`) to be reported with every register, then the run ends as a failure.
//! Vectors 32..=255 are absent from the IDT, so a stray interrupt raises #GP and is reported
//! the same way.

use core::arch::asm;
use core::fmt::Write;

use super::cpu::cr2;
use super::gdt::{IST_CRITICAL, KERNEL_CS};
use crate::fatal::{begin_dying, emit};
use crate::platform::ExitCode;
use crate::text::TextBuf;

const VECTORS: usize = 32;
/// Each stub is 16-byte aligned, so stub `v` is at `exception_stubs + 16 * v`.
const STUB_STRIDE: u64 = 16;
const PAGE_FAULT: u64 = 14;

/// Registers of a ring-0 trap, as `kernel_trap_entry` pushes them under the CPU's frame.
#[repr(C)]
struct KernelFrame {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

core::arch::global_asm!(
    // Reached from the trampoline's `exception_common` (TSM tables loaded, the CPU's frame,
    // vector and error code on the stack) for a trap taken in ring 0.
    ".pushsection .text.kernel_trap, \"ax\"",
    ".balign 16",
    ".global kernel_trap_entry",
    "kernel_trap_entry:",
    "push r15",
    "push r14",
    "push r13",
    "push r12",
    "push r11",
    "push r10",
    "push r9",
    "push r8",
    "push rbp",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push rbx",
    "push rax",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {report}",
    "ud2",
    ".popsection",
    report = sym kernel_trap,
);

unsafe extern "C" {
    fn kernel_trap_entry();
}

/// The identity address of the ring-0 trap reporter (for the per-CPU data).
pub fn kernel_trap_entry_address() -> u64 {
    kernel_trap_entry as *const () as u64
}

/// An IDT for vectors 0..=31.
#[repr(C, align(16))]
pub struct Idt([[u64; 2]; VECTORS]);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills the IDT at `idt` (one interrupt gate per vector, to stub `v` at `stubs + 16 v`) and
/// loads it from `idt_va`.
///
/// # Safety
/// `idt` must be this CPU's own, writable, and mapped at `idt_va` for as long as it stays
/// loaded; `stubs` must be the address of the exception stubs as mapped while it is loaded.
pub unsafe fn load_idt(idt: *mut Idt, idt_va: u64, stubs: u64) {
    let mut table = [[0u64; 2]; VECTORS];
    for (v, gate) in table.iter_mut().enumerate() {
        let handler = stubs + STUB_STRIDE * v as u64;
        let ist = match v {
            2 | 8 | 18 => u64::from(IST_CRITICAL), // NMI, #DF, #MC: on their own stack
            _ => 0,
        };
        let low = (handler & 0xFFFF)
            | (u64::from(KERNEL_CS) << 16)
            | (ist << 32)
            | (0x8E << 40) // present, DPL 0, 64-bit interrupt gate
            | (((handler >> 16) & 0xFFFF) << 48);
        *gate = [low, handler >> 32];
    }
    let ptr = DescriptorPointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: idt_va,
    };
    // SAFETY: the caller gives this CPU's own IDT, mapped at `idt_va`; every entry points at a
    // stub of this image with the ring-0 code selector.
    unsafe {
        idt.write(Idt(table));
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

/// The architectural name of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "reserved",
    }
}

/// A trap taken by the TSM itself. The defmt logger may be the code that trapped (and hold its
/// lock), so the report goes out as plain-text records, which never wait.
extern "C" fn kernel_trap(f: &KernelFrame) -> ! {
    begin_dying();
    let cr2 = if f.vector == PAGE_FAULT { cr2() } else { 0 };
    let mut t = TextBuf::new();
    // A TextBuf write only truncates, it never fails.
    let _ = write!(
        t,
        "tsm: fatal exception {} {}: error {:#x} rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} ss {:#x} cr2 {:#x}",
        f.vector,
        vector_name(f.vector),
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        cr2
    );
    emit(&t);
    let mut t = TextBuf::new();
    let _ = write!(
        t,
        "rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x} r8 {:#x} r9 {:#x} \
         r10 {:#x} r11 {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15
    );
    emit(&t);
    super::exit(ExitCode::Failure)
}
