//! Running TVM vCPUs in ring 3 as a context switch, through the trampoline (the host is an SVM
//! guest: `host`).
//!
//! [`X86Platform`] (the HAL's [`GuestCpu`]) calls `ring3_enter` (trampoline, alias address), which saves the TSM's callee-saved registers on
//! its own stack, records the context's register frame and CR3 in the per-CPU data (GS), builds
//! the `iretq` frame on the CPU's alias trap stack, loads the registers, switches CR3 to the vCPU's TVM root and `iretq`s to ring 3. The context comes back when it traps:
//!
//! - `syscall` enters at `LSTAR` (`syscall_entry`, alias address) with ring 3's `rsp` and CR3
//!   still loaded: `swapgs` reaches the per-CPU data (alias, mapped in every TVM's map too),
//!   CR3 goes back to the TSM's tables (if it was a TVM's), every register is stored in the
//!   context's frame (identity address, reachable now), then the TSM stack saved by
//!   `ring3_enter` is restored → a call.
//! - an exception from ring 3 lands on `TSS.RSP0` (the alias trap stack), same path plus the
//!   vector, error code and CR2 → a [`Fault`]. An exception from ring 0 is a TSM bug: the
//!   stub switches to the TSM's tables and hands over to `trap::kernel_trap_entry`.
//!
//! Without PCIDs every CR3 write flushes the CPU's non-global TLB entries (the TSM uses no
//! global pages), so no translation of one address space survives a switch to another: a
//! guest's entries are gone when the host or another TVM runs on that CPU. While a CPU runs a
//! guest, a change to that guest's map on another CPU reaches it by an NMI (`smp::shootdown`).
//!
//! GS: while the TSM runs, `GS_BASE` is the per-CPU data and `KERNEL_GS_BASE` the context's own
//! value; `swapgs` exchanges them on every ring change. CR4.FSGSBASE stays off, so ring 3 cannot
//! point GS at memory of its choosing. Interrupts stay disabled throughout (RFLAGS.IF = 0 in
//! both rings; ring 3 cannot set it with IOPL 0). CR0.EM is set and CR4.OSFXSR clear, so ring 3
//! has no x87/SSE state that could carry data from a guest to the host (`boot`).

use core::mem::offset_of;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::regs::{CallRegs, CallResult};

use super::gdt::{USER_CS, USER_DS};
use super::percpu::{NMI_ACKS_BELOW_IST_SP, PerCpu};
use super::platform::X86Platform;
use super::{alias, layout, paging, smp};
use crate::platform::run::{EntryError, GuestCpu, GuestExit, Resume};

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

/// What the last exception recorded (valid after an exception exit).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct TrapFrame {
    vector: u64,
    error_code: u64,
    cs: u64,
    cr2: u64,
}

/// A ring-3 register frame: what a context had in its registers when it last trapped, and
/// what it gets when it runs next. The trampoline reads and writes it by the offsets below.
#[repr(C)]
#[derive(Clone, Debug, Default)]
struct Frame {
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

/// RFLAGS bits a ring-3 context may hold: arithmetic flags, TF, DF, AC, ID. IF, IOPL, NT, RF
/// and VM are never given to ring 3.
const USER_RFLAGS: u64 = 0x0024_0DD5;
/// RFLAGS bit 1 is always set.
const RFLAGS_FIXED: u64 = 1 << 1;

impl Frame {
    fn set_result(&mut self, r: &CallResult) {
        self.regs.rax = r.status;
        self.regs.rdi = r.out[0];
        self.regs.rsi = r.out[1];
        self.regs.rdx = r.out[2];
        self.regs.r10 = r.out[3];
    }

    /// The call a `syscall` exit (`kind`) made, copied out once; `None` for an exception.
    fn call(&self, kind: u64) -> Option<CallRegs> {
        let r = &self.regs;
        (kind == EXIT_SYSCALL).then_some(CallRegs {
            fid: r.rax,
            args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
        })
    }

    /// The exception the last exit recorded.
    fn fault(&self) -> Fault {
        Fault {
            vector: self.trap.vector as u8,
            error_code: self.trap.error_code,
            cr2: self.trap.cr2,
            cs: self.trap.cs,
            regs: self.regs,
        }
    }
}

/// Runs `frame` in ring 3 on the address space `cr3` until it traps; returns the exit kind.
///
/// # Safety
/// `frame` must be valid for writes, reachable at the same address under the TSM's tables and
/// used by nothing else until this returns; `cr3` must be the TSM's tables or a TVM root that
/// carries the alias region ([`paging::install_alias`]).
unsafe fn run_frame(frame: *mut Frame, cr3: u64) -> u64 {
    // SAFETY: the caller's guarantee; only the flags ring 3 may hold are kept.
    unsafe {
        let rflags = (*frame).regs.rflags;
        (*frame).regs.rflags = (rflags & USER_RFLAGS) | RFLAGS_FIXED;
    }
    let enter = alias::text(&layout::layout(), ring3_enter as *const () as u64);
    // SAFETY: `enter` is `ring3_enter` at its alias address, mapped executable for ring 0 in
    // the TSM's tables (the trampoline is position-independent); it is an `extern "C"
    // fn(*mut Frame, u64) -> u64`.
    let enter: unsafe extern "C" fn(*mut Frame, u64) -> u64 =
        unsafe { core::mem::transmute::<u64, _>(enter) };
    // SAFETY: `ring3_enter` saves the callee-saved registers, records `frame` and `cr3` in
    // the per-CPU data and returns only through `ring3_return`, with the same stack and those
    // registers restored and the TSM's tables loaded, after the trap path filled `frame`. The
    // per-CPU data was set up by boot (`percpu::load`) before any context runs.
    unsafe { enter(frame, cr3) }
}

/// Bytes of a guest context area [`GuestCpu::run_guest`] uses.
pub const GUEST_FRAME_SIZE: u64 = core::mem::size_of::<Frame>() as u64;

impl GuestCpu for X86Platform {
    /// Runs the vCPU in ring 3 on its TVM's map `root`. The context area is TSM-owned memory
    /// (a delegated VCPU granule) that the core gives this CPU for the run.
    fn run_guest(&self, context: Pa, root: Pa, resume: Resume) -> Result<GuestExit, EntryError> {
        let fits = context.0.is_multiple_of(16)
            && context.granule_offset() + GUEST_FRAME_SIZE <= GRANULE_SIZE
            && self.check(context, GUEST_FRAME_SIZE as usize).is_ok();
        if !fits {
            return Err(EntryError::BadContext);
        }
        paging::install_alias(root.0).map_err(|_| EntryError::BadRoot)?;
        let frame = context.0 as *mut Frame;
        // SAFETY: `context` is DRAM outside the TSM's image (checked), identity-mapped
        // read-write for ring 0 (a VCPU granule is delegated: U clear, no SMAP bracket needed),
        // 16-aligned and inside one granule; the core gives this CPU the vCPU's area
        // exclusively between its claim (VCPU_RUN) and the exit to the host.
        unsafe {
            match resume {
                Resume::Start { entry, arg0 } => frame.write(Frame {
                    regs: Regs {
                        rip: entry.0,
                        rdi: arg0,
                        rflags: RFLAGS_FIXED,
                        ..Regs::default()
                    },
                    trap: TrapFrame::default(),
                }),
                Resume::Continue => {}
                Resume::Return(r) => (*frame).set_result(&r),
            }
            smp::set_running_root(Some(root.0));
            let kind = run_frame(frame, root.0);
            smp::set_running_root(None);
            Ok(match (*frame).call(kind) {
                Some(regs) => GuestExit::Call(regs),
                None => (*frame).fault().guest_exit(),
            })
        }
    }
}

impl Fault {
    /// A guest's exception as the core sees it: the `VcpuExit` syndrome (vector in bits 7:0,
    /// error code in bits 63:32, docs/abi.md); for a #PF in the lower canonical half (where TVM
    /// addresses live; VA = GPA) the faulting address, and whether it was a write (error code
    /// bit 1).
    fn guest_exit(&self) -> GuestExit {
        let page_fault = u64::from(self.vector) == PAGE_FAULT;
        GuestExit::Fault {
            syndrome: u64::from(self.vector) | (self.error_code << 32),
            gpa: (page_fault && self.cr2 < LOWER_HALF_END).then_some(Gpa(self.cr2)),
            write: page_fault && self.error_code & PF_WRITE != 0,
        }
    }
}

const PAGE_FAULT: u64 = 14;
const PF_WRITE: u64 = 1 << 1;
const LOWER_HALF_END: u64 = 1 << 47;

const EXIT_SYSCALL: u64 = 0;
const EXIT_FAULT: u64 = 1;

/// The identity address of the `syscall` entry (`LSTAR` gets its alias address).
pub fn syscall_entry_address() -> u64 {
    syscall_entry as *const () as u64
}

/// The identity address of the exception stubs (the IDT gets their alias addresses).
pub fn exception_stubs_address() -> u64 {
    exception_stubs as *const () as u64
}

unsafe extern "C" {
    fn ring3_enter(frame: *mut Frame, cr3: u64) -> u64;
    fn syscall_entry();
    fn exception_stubs();
}

// The trampoline: position-independent (only RIP-relative references inside the section, GS
// for everything else), run at its alias address (`alias::TEXT`), which the TSM's tables and
// every TVM's map carry.
core::arch::global_asm!(
    ".pushsection .text.trampoline, \"ax\"",
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
    "jmp exception_common",
    ".endif",
    ".endr",
    "",
    // NMI, on this CPU's IST stack, in any ring and any state: a TLB shootdown (`smp`). Reload
    // CR3 (drops every non-global TLB entry of whatever tables are live), count it in this
    // CPU's per-CPU data (found from the IST stack, not GS, which may be ring 3's here), and
    // return to whatever was interrupted.
    "nmi_entry:",
    "push rax",
    "mov rax, cr3",
    "mov cr3, rax",
    "lock inc qword ptr [rsp - {nmi_acks_below}]",
    "pop rax",
    "iretq",
    "",
    // [rsp] vector, +8 error code, +16 rip, +24 cs, +32 rflags, +40 rsp, +48 ss.
    "exception_common:",
    "test byte ptr [rsp + 24], 3", // the CS the CPU saved: RPL 3 means ring 3 trapped
    "jnz 1f",
    // Ring 0: a TSM bug. GS is the per-CPU data already; report on the TSM's tables.
    "push rax",
    "mov rax, gs:[{pc_tsm_cr3}]",
    "mov cr3, rax",
    "pop rax",
    "jmp qword ptr gs:[{pc_kernel_trap}]",
    "1:",
    "swapgs",
    "push 2", // RFLAGS.AC (SMAP) and DF: an interrupt gate leaves ring 3's values
    "popfq",
    "push rax",
    "mov rax, gs:[{pc_tsm_cr3}]",
    "mov cr3, rax",
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
    "jmp 3f",
    "",
    // syscall from ring 3: rcx = return rip, r11 = rflags; SFMASK cleared IF, TF, DF, AC, NT.
    // rsp is ring 3's and CR3 possibly a TVM's: only GS (alias) is usable until CR3 is ours.
    ".balign 16",
    "syscall_entry:",
    "swapgs",
    "mov gs:[{pc_scratch}], rsp",
    "mov rsp, cr3",
    "cmp rsp, gs:[{pc_tsm_cr3}]",
    "je 2f",
    "mov rsp, gs:[{pc_tsm_cr3}]",
    "mov cr3, rsp",
    "2:",
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
    // Back to the TSM: rsp is the one ring3_enter saved, rax the exit kind.
    "3:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    "",
    // ring3_enter(frame = rdi, cr3 = rsi), called at its alias address on the TSM's tables.
    ".balign 16",
    "ring3_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov gs:[{pc_tsm_rsp}], rsp",
    "mov gs:[{pc_context}], rdi",
    "mov gs:[{pc_run_cr3}], rsi",
    // Null data selectors: what the last ring-3 context loaded there is not handed to the next
    // one (GS cannot be reloaded here: that would reset GS_BASE, which is the per-CPU data).
    "xor eax, eax",
    "mov ds, eax",
    "mov es, eax",
    "mov fs, eax",
    // The iretq frame goes on the alias trap stack: the TSM's stack is not in a TVM's map.
    "mov rsp, gs:[{pc_entry_stack}]",
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
    "push rax",
    "mov rax, cr3",
    "cmp rax, gs:[{pc_run_cr3}]",
    "je 4f",
    "mov rax, gs:[{pc_run_cr3}]",
    "mov cr3, rax",
    "4:",
    "pop rax",
    "swapgs",
    "iretq",
    ".popsection",
    nmi_acks_below = const NMI_ACKS_BELOW_IST_SP,
    pc_scratch = const offset_of!(PerCpu, scratch),
    pc_context = const offset_of!(PerCpu, context),
    pc_tsm_rsp = const offset_of!(PerCpu, tsm_rsp),
    pc_tsm_cr3 = const offset_of!(PerCpu, tsm_cr3),
    pc_run_cr3 = const offset_of!(PerCpu, run_cr3),
    pc_entry_stack = const offset_of!(PerCpu, entry_stack),
    pc_kernel_trap = const offset_of!(PerCpu, kernel_trap),
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    r_rax = const offset_of!(Frame, regs) + offset_of!(Regs, rax),
    r_rbx = const offset_of!(Frame, regs) + offset_of!(Regs, rbx),
    r_rcx = const offset_of!(Frame, regs) + offset_of!(Regs, rcx),
    r_rdx = const offset_of!(Frame, regs) + offset_of!(Regs, rdx),
    r_rsi = const offset_of!(Frame, regs) + offset_of!(Regs, rsi),
    r_rdi = const offset_of!(Frame, regs) + offset_of!(Regs, rdi),
    r_rbp = const offset_of!(Frame, regs) + offset_of!(Regs, rbp),
    r_r8 = const offset_of!(Frame, regs) + offset_of!(Regs, r8),
    r_r9 = const offset_of!(Frame, regs) + offset_of!(Regs, r9),
    r_r10 = const offset_of!(Frame, regs) + offset_of!(Regs, r10),
    r_r11 = const offset_of!(Frame, regs) + offset_of!(Regs, r11),
    r_r12 = const offset_of!(Frame, regs) + offset_of!(Regs, r12),
    r_r13 = const offset_of!(Frame, regs) + offset_of!(Regs, r13),
    r_r14 = const offset_of!(Frame, regs) + offset_of!(Regs, r14),
    r_r15 = const offset_of!(Frame, regs) + offset_of!(Regs, r15),
    r_rsp = const offset_of!(Frame, regs) + offset_of!(Regs, rsp),
    r_rip = const offset_of!(Frame, regs) + offset_of!(Regs, rip),
    r_rflags = const offset_of!(Frame, regs) + offset_of!(Regs, rflags),
    t_vector = const offset_of!(Frame, trap) + offset_of!(TrapFrame, vector),
    t_error = const offset_of!(Frame, trap) + offset_of!(TrapFrame, error_code),
    t_cs = const offset_of!(Frame, trap) + offset_of!(TrapFrame, cs),
    t_cr2 = const offset_of!(Frame, trap) + offset_of!(TrapFrame, cr2),
    exit_syscall = const EXIT_SYSCALL,
    exit_fault = const EXIT_FAULT,
);
