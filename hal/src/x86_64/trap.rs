//! The TSM's IDT: one stub per exception vector (0..=31). Nothing but the TSM runs under this
//! IDT (the host and TVM vCPUs are SVM guests with their own), so an exception is a TSM bug and
//! comes to `kernel_trap_entry`, to be reported with every register before the run ends as a
//! failure; except the NMI, which is a TLB shootdown (`smp`). Vectors 32..=255 are absent from
//! the IDT, so a stray interrupt raises #GP and is reported the same way.

use core::arch::asm;

use super::cpu::cr2;
use super::gdt::{IST_CRITICAL, KERNEL_CS};
use super::percpu::NMI_ACKS_BELOW_IST_SP;
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
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, r8..r15 ([`GPR_NAMES`]).
    gprs: [u64; 15],
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// The names of [`KernelFrame::gprs`], in order.
const GPR_NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

core::arch::global_asm!(
    ".pushsection .text.kernel_trap, \"ax\"",
    ".balign 16",
    "exception_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    ".if \\v == 2",
    "jmp nmi_entry",
    ".else",
    // Vectors 8, 10-14, 17, 21, 29, 30 push an error code; the others get a 0.
    ".if (\\v == 8) || ((\\v >= 10) && (\\v <= 14)) || (\\v == 17) || (\\v == 21) || (\\v == 29) || (\\v == 30)",
    ".else",
    "push 0",
    ".endif",
    "push \\v",
    "jmp kernel_trap_entry",
    ".endif",
    ".endr",
    "",
    // NMI, on this CPU's IST stack: a TLB shootdown (`smp`), taken in the TSM (a guest's NMI
    // is intercepted and reaches here once the #VMEXIT has set GIF again). Reload CR3 (drops
    // every non-global TLB entry of the TSM's tables; guests' translations go on their next
    // VMRUN), count it in this CPU's per-CPU data (found from the IST stack), and return.
    "nmi_entry:",
    "push rax",
    "mov rax, cr3",
    "mov cr3, rax",
    "lock inc qword ptr [rsp - {nmi_acks_below}]",
    "pop rax",
    "iretq",
    "",
    // The CPU's frame, vector and error code on the stack.
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
    nmi_acks_below = const NMI_ACKS_BELOW_IST_SP,
);

unsafe extern "C" {
    fn exception_stubs();
}

/// The address of the exception stubs (stub `v` at `+ 16 v`).
pub fn exception_stubs_address() -> u64 {
    exception_stubs as *const () as u64
}

/// An IDT for vectors 0..=31.
#[repr(C, align(16))]
pub struct Idt([[u64; 2]; VECTORS]);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills the IDT at `idt` (one interrupt gate per vector, to stub `v` at
/// [`exception_stubs_address`] `+ 16 v`) and loads it.
///
/// # Safety
/// `idt` must be this CPU's own, writable, and stay mapped (identity) while it is loaded.
pub unsafe fn load_idt(idt: *mut Idt) {
    let stubs = exception_stubs_address();
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
        base: idt as u64,
    };
    // SAFETY: the caller gives this CPU's own IDT; every entry points at a stub of this image
    // with the ring-0 code selector.
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
    t.push("tsm: fatal exception ")
        .dec(f.vector)
        .push(" ")
        .push(vector_name(f.vector))
        .push(":")
        .fields(
            &["error", "rip", "cs", "rflags", "rsp", "ss", "cr2"],
            &[f.error_code, f.rip, f.cs, f.rflags, f.rsp, f.ss, cr2],
        );
    emit(&t);
    let mut t = TextBuf::new();
    t.push("registers:").fields(&GPR_NAMES, &f.gprs);
    emit(&t);
    super::exit(ExitCode::Failure)
}
