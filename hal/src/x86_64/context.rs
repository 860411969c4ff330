//! Running the host (later: TVM vCPUs) in ring 3 as a context switch.
//!
//! [`HostContext::run`] saves the TSM's callee-saved registers on its own stack, loads the
//! context's registers and `iretq`s to ring 3. The context comes back to Rust when it traps:
//!
//! - `syscall` enters at `LSTAR` (`syscall_entry`) with the host's `rsp` still loaded: `swapgs`
//!   reaches the per-CPU area, which points at the running context's register frame; every
//!   register is stored there, then the TSM stack saved by `run` is restored → [`Exit::Call`].
//! - an exception from ring 3 lands on `TSS.RSP0` (`exception_common`), same saving plus the
//!   vector, error code and CR2 → [`Exit::Fault`]. An exception from ring 0 is a TSM bug: it is
//!   reported with all registers and ends the run (see `trap`).
//!
//! GS: while the TSM runs, `GS_BASE` is the per-CPU area and `KERNEL_GS_BASE` the context's own
//! value; `swapgs` exchanges them on every ring change. CR4.FSGSBASE stays off, so ring 3 cannot
//! point GS at memory of its choosing. Interrupts stay disabled throughout (RFLAGS.IF = 0 in
//! both rings; ring 3 cannot set it with IOPL 0).

use core::cell::UnsafeCell;
use core::mem::offset_of;

use tsm_abi::regs::{CallRegs, CallResult};

use super::gdt::{USER_CS, USER_DS};

/// General-purpose registers and the interrupted instruction state of a ring-3 context.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// What the last exception recorded (valid after an [`Exit::Fault`]).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct TrapFrame {
    vector: u64,
    error_code: u64,
    cs: u64,
    cr2: u64,
}

/// A ring-3 execution context: what the host (or a vCPU) had in its registers when it last
/// trapped, and what it gets when it runs next.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct HostContext {
    regs: Regs,
    trap: TrapFrame,
}

/// A ring-3 exception.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fault {
    /// Exception vector (14 = #PF, 13 = #GP, 6 = #UD, ...).
    pub vector: u8,
    /// The error code the CPU pushed (0 for vectors without one).
    pub error_code: u64,
    /// CR2: the faulting address (meaningful for #PF only).
    pub cr2: u64,
    /// Code segment selector at the fault.
    pub cs: u64,
    /// All registers at the fault (`rip`, `rsp`, `rflags` included).
    pub regs: Regs,
}

/// Why the context stopped running.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Exit {
    /// `syscall`: a call per `abi/src/regs.rs`; answer with [`HostContext::set_result`].
    Call(CallRegs),
    /// Any exception raised in ring 3.
    Fault(Fault),
}

/// RFLAGS bits a ring-3 context may hold: arithmetic flags, TF, DF, AC, ID. IF, IOPL, NT, RF
/// and VM are never given to ring 3.
const USER_RFLAGS: u64 = 0x0024_0DD5;
/// RFLAGS bit 1 is always set.
const RFLAGS_FIXED: u64 = 1 << 1;

/// The host payload's entry: the first byte of its image (docs/design.md).
pub const HOST_ENTRY: u64 = 0x100_0000;

impl HostContext {
    /// A context that starts at `rip` with `args` in `rdi, rsi, rdx, rcx` (SysV argument order)
    /// and everything else zero; it sets up its own stack.
    pub fn new(rip: u64, args: [u64; 4]) -> Self {
        let regs = Regs {
            rip,
            rdi: args[0],
            rsi: args[1],
            rdx: args[2],
            rcx: args[3],
            rflags: RFLAGS_FIXED,
            ..Regs::default()
        };
        HostContext {
            regs,
            trap: TrapFrame::default(),
        }
    }

    /// The registers as of the last exit.
    pub fn regs(&self) -> &Regs {
        &self.regs
    }

    /// Writes a call's results into the registers the context sees when it runs next.
    pub fn set_result(&mut self, r: &CallResult) {
        self.regs.rax = r.status;
        self.regs.rdi = r.out[0];
        self.regs.rsi = r.out[1];
        self.regs.rdx = r.out[2];
        self.regs.r10 = r.out[3];
    }

    /// Runs the context in ring 3 until it traps.
    pub fn run(&mut self) -> Exit {
        self.regs.rflags = (self.regs.rflags & USER_RFLAGS) | RFLAGS_FIXED;
        // SAFETY: `host_enter` saves the callee-saved registers, records `self` in the per-CPU
        // area and returns only through `host_return`, with the same stack and those registers
        // restored, after the trap path filled `self` (which we hold exclusively). The per-CPU
        // area was set up by boot (`percpu_init`) before any context runs.
        let kind = unsafe { host_enter(self) };
        let r = &self.regs;
        if kind == EXIT_SYSCALL {
            Exit::Call(CallRegs {
                fid: r.rax,
                args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
            })
        } else {
            Exit::Fault(Fault {
                vector: self.trap.vector as u8,
                error_code: self.trap.error_code,
                cr2: self.trap.cr2,
                cs: self.trap.cs,
                regs: *r,
            })
        }
    }
}

const EXIT_SYSCALL: u64 = 0;
const EXIT_FAULT: u64 = 1;

/// The per-CPU area `GS_BASE` points at in ring 0.
#[repr(C)]
struct PerCpu {
    /// The ring-3 `rsp` during `syscall_entry`.
    scratch: u64,
    /// The running context.
    context: u64,
    /// The TSM's `rsp` inside `host_enter`.
    tsm_rsp: u64,
}

struct PerCpuCell(UnsafeCell<PerCpu>);
// SAFETY: one CPU runs for now and it is the only user of its own area (through GS); the SMP
// phase gives each CPU its own instance.
unsafe impl Sync for PerCpuCell {}

static PERCPU: PerCpuCell = PerCpuCell(UnsafeCell::new(PerCpu {
    scratch: 0,
    context: 0,
    tsm_rsp: 0,
}));

/// The address `GS_BASE` must hold on this CPU while the TSM runs.
pub fn percpu_base() -> u64 {
    PERCPU.0.get() as u64
}

/// The `syscall` entry point, for `LSTAR`.
pub fn syscall_entry_address() -> u64 {
    syscall_entry as *const () as u64
}

unsafe extern "C" {
    fn host_enter(ctx: *mut HostContext) -> u64;
    fn syscall_entry();
}

core::arch::global_asm!(
    ".pushsection .text.host_switch, \"ax\"",
    ".balign 16",
    ".global host_enter",
    "host_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov gs:[{pc_tsm_rsp}], rsp",
    "mov gs:[{pc_context}], rdi",
    "push {user_ds}",
    "push qword ptr [rdi + {r_rsp}]",
    "push qword ptr [rdi + {r_rflags}]",
    "push {user_cs}",
    "push qword ptr [rdi + {r_rip}]",
    "mov rax, [rdi + {r_rax}]",
    "mov rbx, [rdi + {r_rbx}]",
    "mov rcx, [rdi + {r_rcx}]",
    "mov rdx, [rdi + {r_rdx}]",
    "mov rsi, [rdi + {r_rsi}]",
    "mov rbp, [rdi + {r_rbp}]",
    "mov r8, [rdi + {r_r8}]",
    "mov r9, [rdi + {r_r9}]",
    "mov r10, [rdi + {r_r10}]",
    "mov r11, [rdi + {r_r11}]",
    "mov r12, [rdi + {r_r12}]",
    "mov r13, [rdi + {r_r13}]",
    "mov r14, [rdi + {r_r14}]",
    "mov r15, [rdi + {r_r15}]",
    "mov rdi, [rdi + {r_rdi}]",
    "swapgs",
    "iretq",
    "",
    // Back to the TSM: rsp is the one host_enter saved, rax the exit kind.
    "host_return:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    "",
    // syscall from ring 3: rcx = return rip, r11 = rflags; SFMASK cleared IF, TF, DF, AC, NT.
    ".balign 16",
    ".global syscall_entry",
    "syscall_entry:",
    "swapgs",
    "mov gs:[{pc_scratch}], rsp",
    "mov rsp, gs:[{pc_context}]",
    "mov [rsp + {r_rax}], rax",
    "mov [rsp + {r_rbx}], rbx",
    "mov [rsp + {r_rcx}], rcx",
    "mov [rsp + {r_rdx}], rdx",
    "mov [rsp + {r_rsi}], rsi",
    "mov [rsp + {r_rdi}], rdi",
    "mov [rsp + {r_rbp}], rbp",
    "mov [rsp + {r_r8}], r8",
    "mov [rsp + {r_r9}], r9",
    "mov [rsp + {r_r10}], r10",
    "mov [rsp + {r_r11}], r11",
    "mov [rsp + {r_r12}], r12",
    "mov [rsp + {r_r13}], r13",
    "mov [rsp + {r_r14}], r14",
    "mov [rsp + {r_r15}], r15",
    "mov [rsp + {r_rip}], rcx",
    "mov [rsp + {r_rflags}], r11",
    "mov rax, gs:[{pc_scratch}]",
    "mov [rsp + {r_rsp}], rax",
    "mov rsp, gs:[{pc_tsm_rsp}]",
    "mov eax, {exit_syscall}",
    "jmp host_return",
    "",
    // Exception from ring 3, reached from `exception_common` on the TSS.RSP0 stack:
    // [rsp] vector, +8 error code, +16 rip, +24 cs, +32 rflags, +40 rsp, +48 ss.
    ".global ring3_exception",
    "ring3_exception:",
    "swapgs",
    "push 2", // RFLAGS.AC (SMAP) and DF: a trap gate leaves ring 3's values
    "popfq",
    "push rax",
    "mov rax, gs:[{pc_context}]",
    "pop qword ptr [rax + {r_rax}]",
    "mov [rax + {r_rbx}], rbx",
    "mov [rax + {r_rcx}], rcx",
    "mov [rax + {r_rdx}], rdx",
    "mov [rax + {r_rsi}], rsi",
    "mov [rax + {r_rdi}], rdi",
    "mov [rax + {r_rbp}], rbp",
    "mov [rax + {r_r8}], r8",
    "mov [rax + {r_r9}], r9",
    "mov [rax + {r_r10}], r10",
    "mov [rax + {r_r11}], r11",
    "mov [rax + {r_r12}], r12",
    "mov [rax + {r_r13}], r13",
    "mov [rax + {r_r14}], r14",
    "mov [rax + {r_r15}], r15",
    "mov rbx, [rsp]",
    "mov [rax + {t_vector}], rbx",
    "mov rbx, [rsp + 8]",
    "mov [rax + {t_error}], rbx",
    "mov rbx, [rsp + 16]",
    "mov [rax + {r_rip}], rbx",
    "mov rbx, [rsp + 24]",
    "mov [rax + {t_cs}], rbx",
    "mov rbx, [rsp + 32]",
    "mov [rax + {r_rflags}], rbx",
    "mov rbx, [rsp + 40]",
    "mov [rax + {r_rsp}], rbx",
    "mov rbx, cr2",
    "mov [rax + {t_cr2}], rbx",
    "mov rsp, gs:[{pc_tsm_rsp}]",
    "mov eax, {exit_fault}",
    "jmp host_return",
    ".popsection",
    pc_scratch = const offset_of!(PerCpu, scratch),
    pc_context = const offset_of!(PerCpu, context),
    pc_tsm_rsp = const offset_of!(PerCpu, tsm_rsp),
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    r_rax = const offset_of!(HostContext, regs) + offset_of!(Regs, rax),
    r_rbx = const offset_of!(HostContext, regs) + offset_of!(Regs, rbx),
    r_rcx = const offset_of!(HostContext, regs) + offset_of!(Regs, rcx),
    r_rdx = const offset_of!(HostContext, regs) + offset_of!(Regs, rdx),
    r_rsi = const offset_of!(HostContext, regs) + offset_of!(Regs, rsi),
    r_rdi = const offset_of!(HostContext, regs) + offset_of!(Regs, rdi),
    r_rbp = const offset_of!(HostContext, regs) + offset_of!(Regs, rbp),
    r_r8 = const offset_of!(HostContext, regs) + offset_of!(Regs, r8),
    r_r9 = const offset_of!(HostContext, regs) + offset_of!(Regs, r9),
    r_r10 = const offset_of!(HostContext, regs) + offset_of!(Regs, r10),
    r_r11 = const offset_of!(HostContext, regs) + offset_of!(Regs, r11),
    r_r12 = const offset_of!(HostContext, regs) + offset_of!(Regs, r12),
    r_r13 = const offset_of!(HostContext, regs) + offset_of!(Regs, r13),
    r_r14 = const offset_of!(HostContext, regs) + offset_of!(Regs, r14),
    r_r15 = const offset_of!(HostContext, regs) + offset_of!(Regs, r15),
    r_rsp = const offset_of!(HostContext, regs) + offset_of!(Regs, rsp),
    r_rip = const offset_of!(HostContext, regs) + offset_of!(Regs, rip),
    r_rflags = const offset_of!(HostContext, regs) + offset_of!(Regs, rflags),
    t_vector = const offset_of!(HostContext, trap) + offset_of!(TrapFrame, vector),
    t_error = const offset_of!(HostContext, trap) + offset_of!(TrapFrame, error_code),
    t_cs = const offset_of!(HostContext, trap) + offset_of!(TrapFrame, cs),
    t_cr2 = const offset_of!(HostContext, trap) + offset_of!(TrapFrame, cr2),
    exit_syscall = const EXIT_SYSCALL,
    exit_fault = const EXIT_FAULT,
);
