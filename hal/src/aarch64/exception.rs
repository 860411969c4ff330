//! The EL2 exception vectors. Exceptions from EL1 are host (later guest) exits and go to the
//! world switch (`host`); any exception taken at EL2 is a TSM bug: it is reported with its
//! syndrome and ends the run as a failure.

use super::semihosting::exit;
use super::syndrome::{self, AbortIss};
use super::sysreg::read_sysreg;
use crate::fatal::{begin_dying, emit};
use crate::platform::ExitCode;
use crate::text::TextBuf;

/// Bytes the fatal path saves x0..x30 in (plus padding to keep SP 16-byte aligned).
const FATAL_FRAME: usize = 32 * 8;

core::arch::global_asm!(
    ".section .text.vectors, \"ax\"",
    // A fatal entry runs on its own stack, whatever SP was (a stack overflow, a fault while
    // dying): TPIDR_EL2 (the world switch's frame pointer, no longer needed) holds x0 while
    // SP_EL0 (unused by the TSM) keeps the old SP for the report.
    ".macro tsm_fatal_entry kind",
    ".balign 128",
    "msr tpidr_el2, x0",
    "mov x0, sp",
    "msr sp_el0, x0",
    "adrp x0, __fatal_stack_top",
    "add x0, x0, :lo12:__fatal_stack_top",
    "mov sp, x0",
    "mrs x0, tpidr_el2",
    "sub sp, sp, #{frame}",
    "stp x0, x1, [sp]",
    "mov x0, #\\kind",
    "b __el2_fatal",
    ".endm",
    ".balign 2048",
    ".global __el2_vectors",
    "__el2_vectors:",
    // Current EL with SP_EL0 (unused: the TSM runs on SP_EL2), then with SP_EL2.
    ".irp kind, 0, 1, 2, 3, 4, 5, 6, 7",
    "tsm_fatal_entry \\kind",
    ".endr",
    // Lower EL in AArch64: exits of the context __host_run entered.
    ".irp kind, 0, 1, 2, 3",
    ".balign 128",
    "stp x0, x1, [sp, #-16]!",
    "mov x1, #\\kind",
    "b __host_exit",
    ".endr",
    // Lower EL in AArch32: impossible with HCR_EL2.RW set; reported as a TSM fault.
    ".irp kind, 12, 13, 14, 15",
    "tsm_fatal_entry \\kind",
    ".endr",
    "__el2_fatal:",
    "stp x2, x3, [sp, #16]",
    "stp x4, x5, [sp, #32]",
    "stp x6, x7, [sp, #48]",
    "stp x8, x9, [sp, #64]",
    "stp x10, x11, [sp, #80]",
    "stp x12, x13, [sp, #96]",
    "stp x14, x15, [sp, #112]",
    "stp x16, x17, [sp, #128]",
    "stp x18, x19, [sp, #144]",
    "stp x20, x21, [sp, #160]",
    "stp x22, x23, [sp, #176]",
    "stp x24, x25, [sp, #192]",
    "stp x26, x27, [sp, #208]",
    "stp x28, x29, [sp, #224]",
    "str x30, [sp, #240]",
    "mov x1, sp",
    "mrs x2, sp_el0",
    "bl {handler}",
    "b .",
    frame = const FATAL_FRAME,
    handler = sym el2_exception,
);

/// Installs the vectors on this CPU.
pub fn install() {
    unsafe extern "C" {
        static __el2_vectors: u8;
    }
    // SAFETY: `__el2_vectors` is the 2 KiB-aligned table above; every entry either ends the
    // run or returns through the world switch, so taking any exception from here on is sound.
    unsafe {
        super::sysreg::write_sysreg!("vbar_el2", core::ptr::addr_of!(__el2_vectors) as u64);
    }
    super::sysreg::isb();
}

/// Names the vector group of a fatal exception.
fn origin(kind: u64) -> &'static str {
    match kind {
        0..=3 => "EL2 with SP_EL0",
        4..=7 => "EL2",
        _ => "AArch32 lower EL",
    }
}

fn vector_name(kind: u64) -> &'static str {
    match kind % 4 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    }
}

/// An exception taken at EL2: report it in plain text (no lock needed) and end the run as a
/// failure. `regs` holds x0..x30 at the exception, `sp` the stack pointer.
extern "C" fn el2_exception(kind: u64, regs: &[u64; 31], sp: u64) -> ! {
    begin_dying();
    let esr = read_sysreg!("esr_el2");
    let far = read_sysreg!("far_el2");
    let elr = read_sysreg!("elr_el2");
    let spsr = read_sysreg!("spsr_el2");
    let ec = syndrome::ec(esr);
    let mut line = TextBuf::new();
    line.push("tsm: fatal ")
        .push(vector_name(kind))
        .push(" exception at ")
        .push(origin(kind))
        .push(": EC ")
        .hex(ec.0.into())
        .push(" (")
        .push(ec.name())
        .push(")")
        .fields(
            &["ESR", "FAR", "ELR", "SPSR", "SP"],
            &[esr, far, elr, spsr, sp],
        );
    if ec.is_abort() {
        let iss = AbortIss::decode(esr);
        line.push("; ")
            .push(iss.fsc_name())
            .push(" level ")
            .dec(iss.level().into())
            .push(", write ")
            .push(if iss.write { "true" } else { "false" });
    }
    emit(&line);
    // Two lines: 31 registers at their widest do not fit one record.
    for (half, regs) in regs.chunks(16).enumerate() {
        let mut line = TextBuf::new();
        for (i, r) in regs.iter().enumerate() {
            line.push("x")
                .dec((half * 16 + i) as u64)
                .push("=")
                .hex(*r)
                .push(" ");
        }
        emit(&line);
    }
    exit(ExitCode::Failure)
}
