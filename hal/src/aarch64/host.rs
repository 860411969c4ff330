//! The host's execution context and the world switch into it.
//!
//! [`HostContext`]'s [`HostCpu::run`] saves the TSM's callee-saved registers on its stack, loads
//! the host's registers from the frame and `eret`s to EL1; the next exception from EL1 lands in
//! the lower-EL vectors (`exception`), which store the host's registers back into the frame and
//! return from `run` with the vector that was taken. The same frame and switch carry TVM
//! vCPUs; what differs per context (EL1 system registers, stage-2, FP/SIMD registers) is
//! loaded around it. The FP/SIMD registers are not in the frame: the TSM never touches them
//! (a soft-float image, `fp`), so the switch leaves them to the context that runs.

use core::mem::offset_of;

use tsm_abi::regs::{CallRegs, CallResult};

use super::el1::El1State;
use super::fp::FpRegs;
use super::syndrome::{self, AbortIss, Ec};
use super::sysreg::isb;
use crate::platform::MemRange;
use crate::platform::run::{HostCpu, HostExit, HostTrap};

/// Where the host payload's image starts, and its entry point (docs/design.md).
pub const HOST_ENTRY: u64 = 0x4100_0000;
/// SPSR_EL2 for the first entry: EL1 with SP_EL1 (EL1h), D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0b0101 | (0xF << 6);
/// SCTLR_EL1 with only its RES1 bits (11, 20, 22, 23, 28, 29 in Armv8.0): MMU, alignment
/// checks, data and instruction caches off, as PSCI requires at a started CPU's entry.
const SCTLR_EL1_RESET: u64 = 0x30D0_0800;

/// The registers of a lower-EL context, as saved on its last exit.
#[repr(C, align(16))]
#[derive(Clone, Debug)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// Where it resumes (ELR_EL2).
    pub pc: u64,
    /// Its PSTATE (SPSR_EL2).
    pub pstate: u64,
    /// ESR_EL2 of the last exit.
    pub esr: u64,
    /// FAR_EL2 of the last exit that was not a call ([`Frame::read_fault_addresses`]).
    pub far: u64,
    /// HPFAR_EL2 of the last exit that was not a call ([`Frame::read_fault_addresses`]).
    pub hpfar: u64,
}

// The switch code addresses the frame with immediate offsets; pin them here.
const _: () = {
    assert!(size_of::<Frame>() == 288);
    assert!(offset_of!(Frame, x) == 0);
    assert!(offset_of!(Frame, pc) == 248);
    assert!(offset_of!(Frame, pstate) == 256);
    assert!(offset_of!(Frame, esr) == 264);
    assert!(offset_of!(Frame, far) == 272);
    assert!(offset_of!(Frame, hpfar) == 280);
};

core::arch::global_asm!(
    ".section .text.host_switch, \"ax\"",
    // u64 __host_run(Frame *frame): runs the context until its next exception to EL2.
    ".global __host_run",
    "__host_run:",
    // Only the general callee-saved registers: d8-d15 hold the context's own values, which
    // its exit must keep, and the TSM's soft-float code keeps nothing in them (`fp`).
    "stp x29, x30, [sp, #-16]!",
    "stp x27, x28, [sp, #-16]!",
    "stp x25, x26, [sp, #-16]!",
    "stp x23, x24, [sp, #-16]!",
    "stp x21, x22, [sp, #-16]!",
    "stp x19, x20, [sp, #-16]!",
    // The exit path finds the frame here.
    "msr tpidr_el2, x0",
    "ldp x1, x2, [x0, #248]",
    "msr elr_el2, x1",
    "msr spsr_el2, x2",
    "ldp x2, x3, [x0, #16]",
    "ldp x4, x5, [x0, #32]",
    "ldp x6, x7, [x0, #48]",
    "ldp x8, x9, [x0, #64]",
    "ldp x10, x11, [x0, #80]",
    "ldp x12, x13, [x0, #96]",
    "ldp x14, x15, [x0, #112]",
    "ldp x16, x17, [x0, #128]",
    "ldp x18, x19, [x0, #144]",
    "ldp x20, x21, [x0, #160]",
    "ldp x22, x23, [x0, #176]",
    "ldp x24, x25, [x0, #192]",
    "ldp x26, x27, [x0, #208]",
    "ldp x28, x29, [x0, #224]",
    "ldr x30, [x0, #240]",
    "ldp x0, x1, [x0]",
    "eret",
    // No speculation past the eret.
    "dsb nsh",
    "isb",
    // Reached from a lower-EL vector with the context's x0/x1 pushed on the EL2 stack and the
    // vector's kind in x1. Returns the kind from __host_run.
    ".global __host_exit",
    "__host_exit:",
    "mrs x0, tpidr_el2",
    "stp x2, x3, [x0, #16]",
    "stp x4, x5, [x0, #32]",
    "stp x6, x7, [x0, #48]",
    "stp x8, x9, [x0, #64]",
    "stp x10, x11, [x0, #80]",
    "stp x12, x13, [x0, #96]",
    "stp x14, x15, [x0, #112]",
    "stp x16, x17, [x0, #128]",
    "stp x18, x19, [x0, #144]",
    "stp x20, x21, [x0, #160]",
    "stp x22, x23, [x0, #176]",
    "stp x24, x25, [x0, #192]",
    "stp x26, x27, [x0, #208]",
    "stp x28, x29, [x0, #224]",
    "str x30, [x0, #240]",
    "ldp x2, x3, [sp], #16",
    "stp x2, x3, [x0]",
    "mrs x2, elr_el2",
    "mrs x3, spsr_el2",
    "stp x2, x3, [x0, #248]",
    // FAR_EL2 and HPFAR_EL2 only when the exit is not a call (`Frame::read_fault_addresses`).
    "mrs x2, esr_el2",
    "str x2, [x0, #264]",
    "mov x0, x1",
    "ldp x19, x20, [sp], #16",
    "ldp x21, x22, [sp], #16",
    "ldp x23, x24, [sp], #16",
    "ldp x25, x26, [sp], #16",
    "ldp x27, x28, [sp], #16",
    "ldp x29, x30, [sp], #16",
    "ret",
);

unsafe extern "C" {
    /// Runs the context in `frame` until its next exception to EL2; returns the vector's
    /// [`ExitKind`] number.
    fn __host_run(frame: *mut Frame) -> u64;
}

/// Which lower-EL vector an exit came through.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum ExitKind {
    /// A synchronous exception (a call, a trapped instruction, an abort).
    Sync,
    /// A physical IRQ (HCR_EL2.IMO routes them to EL2).
    Irq,
    /// A physical FIQ.
    Fiq,
    /// An SError.
    SError,
}

impl ExitKind {
    pub(crate) fn from_vector(v: u64) -> Self {
        match v {
            0 => ExitKind::Sync,
            1 => ExitKind::Irq,
            2 => ExitKind::Fiq,
            _ => ExitKind::SError,
        }
    }
}

/// An exit that is not a call: what the TSM reports about it.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// The vector taken.
    pub kind: ExitKind,
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2 (the faulting virtual address, for aborts).
    pub far: u64,
    /// HPFAR_EL2 (the faulting IPA's page, for stage-2 aborts).
    pub hpfar: u64,
    /// ELR_EL2: the instruction that trapped.
    pub elr: u64,
    /// SPSR_EL2: the context's PSTATE.
    pub spsr: u64,
}

impl Frame {
    /// A context's first frame: at `pc` in EL1h with D, A, I, F masked, x0..x2 = `args`,
    /// everything else zero.
    pub(crate) fn entry(pc: u64, args: [u64; 3]) -> Self {
        let mut x = [0; 31];
        x[..3].copy_from_slice(&args);
        Frame {
            x,
            pc,
            pstate: SPSR_EL1H_MASKED,
            esr: 0,
            far: 0,
            hpfar: 0,
        }
    }

    /// Makes this frame [`Frame::entry`]'s, in place: x3..x30, ESR, FAR and HPFAR zeroed by
    /// paired stores. *Why not `*self = Frame::entry(..)`:* LLVM zeroes the 240 bytes with a
    /// `memset` call, 49 instructions on every VCPU_RUN that starts a vCPU (docs/benchmarks.md,
    /// `ventry5`); the stores are 17.
    pub(crate) fn reset(&mut self, pc: u64, args: [u64; 3]) {
        let p = core::ptr::from_mut(self);
        // SAFETY: `p` is this frame, exclusively borrowed, 16-aligned and 288 bytes; the stores
        // write zeros at offsets 24..248 (x3..x30) and 264..288 (esr, far, hpfar, pinned by the
        // assertions above), integer fields all, every one inside the frame; `stp` at the even
        // offsets 32..224 is 16-aligned.
        unsafe {
            core::arch::asm!(
                "str xzr, [{p}, #24]",
                "stp xzr, xzr, [{p}, #32]",
                "stp xzr, xzr, [{p}, #48]",
                "stp xzr, xzr, [{p}, #64]",
                "stp xzr, xzr, [{p}, #80]",
                "stp xzr, xzr, [{p}, #96]",
                "stp xzr, xzr, [{p}, #112]",
                "stp xzr, xzr, [{p}, #128]",
                "stp xzr, xzr, [{p}, #144]",
                "stp xzr, xzr, [{p}, #160]",
                "stp xzr, xzr, [{p}, #176]",
                "stp xzr, xzr, [{p}, #192]",
                "stp xzr, xzr, [{p}, #208]",
                "stp xzr, xzr, [{p}, #224]",
                "str xzr, [{p}, #240]",
                "str xzr, [{p}, #264]",
                "stp xzr, xzr, [{p}, #272]",
                p = in(reg) p,
                options(nostack, preserves_flags),
            );
        }
        self.x[0] = args[0];
        self.x[1] = args[1];
        self.x[2] = args[2];
        self.pc = pc;
        self.pstate = SPSR_EL1H_MASKED;
    }

    /// The call the last exit made (`smc #0` or `hvc #0`), copied out once; the saved PC then
    /// points past the call instruction. `None` for any other exit.
    pub(crate) fn take_call(&mut self) -> Option<CallRegs> {
        let ec = syndrome::ec(self.esr);
        if self.esr & 0xFFFF != 0 || (ec != Ec::SMC64 && ec != Ec::HVC64) {
            return None;
        }
        // A trapped SMC returns to itself; HVC already points past. The two classes differ only
        // in bit 0 (SMC64's is 1), so the step is that bit times 4, without a branch (three
        // instructions less on every SMC call).
        const { assert!(Ec::SMC64.0 == Ec::HVC64.0 | 1) };
        self.pc = self.pc.wrapping_add(u64::from(ec.0 & 1) * 4);
        // Element by element: a slice copy of the six registers compiled to a `memcpy` call
        // (24 instructions on every call, against six loads and stores).
        let x = &self.x;
        Some(CallRegs {
            fid: x[0],
            args: [x[1], x[2], x[3], x[4], x[5], x[6]],
        })
    }

    /// Copies FAR_EL2 and HPFAR_EL2 of the last exit into the frame, for an exit that is not a
    /// call (an abort's addresses). *Why not in the switch:* the two `mrs` and their store cost
    /// every call 3 instructions (host calls, guest calls, both world switches of a VCPU_RUN)
    /// for registers only aborts read. Read here they are still the exit's: the caller comes
    /// straight from [`switch_to`], and EL2 takes no exception in between (the TSM never unmasks
    /// interrupts at EL2, and a synchronous exception there ends the run).
    pub(crate) fn read_fault_addresses(&mut self) {
        self.far = super::sysreg::read_sysreg!("far_el2");
        self.hpfar = super::sysreg::read_sysreg!("hpfar_el2");
    }

    /// Writes a call's results into x0..x4; the context sees them when it resumes.
    pub(crate) fn set_result(&mut self, result: &CallResult) {
        self.x[0] = result.status;
        self.x[1..5].copy_from_slice(&result.out);
    }
}

/// Runs the lower-EL context in `frame` until its next exception to EL2. The caller has
/// installed the context's EL1 state and stage 2.
pub(crate) fn switch_to(frame: &mut Frame) -> ExitKind {
    // SAFETY: the frame is exclusively borrowed for the whole switch; the context runs at EL1
    // behind the stage 2 the caller installed, with HCR_EL2 trapping SMC and routing
    // interrupts to EL2, so it can only come back through the lower-EL vectors, which save its
    // registers into this frame and restore the TSM's callee-saved state from the stack.
    ExitKind::from_vector(unsafe { __host_run(frame) })
}

/// The host's execution context on one CPU.
pub struct HostContext {
    frame: Frame,
    /// The DRAM the host's stage-2 covers, but for what the TSM keeps from it.
    dram: MemRange,
    /// The registers of the device the TSM owns (the SMMU), which the host's stage 2 never
    /// maps: a host access there is blocked like one to secure memory.
    tsm_device: Option<MemRange>,
    /// The window of the host's device BARs, all mapped for the host but the pages a TVM holds
    /// as private MMIO (docs/abi.md §5.7): a translation fault there is one of those.
    bars: Option<MemRange>,
    cpu: u64,
}

impl HostContext {
    /// The host's first entry: at [`HOST_ENTRY`] in EL1h with x0..x2 = `args` (the bare-metal
    /// payload: DRAM base and size, 0; a Linux Image: its device tree, 0, 0). Only boot makes
    /// one, once the host's stage-2 and traps are in place.
    pub(crate) fn new(
        dram: &MemRange,
        tsm_device: Option<MemRange>,
        bars: Option<MemRange>,
        cpu: u64,
        args: [u64; 3],
    ) -> Self {
        HostContext {
            frame: Frame::entry(HOST_ENTRY, args),
            dram: *dram,
            tsm_device,
            bars,
            cpu,
        }
    }

    /// Turns the last exit into a blocked access if it was one: a data abort on a stage-2
    /// translation fault at an IPA inside DRAM (a granule the host's stage-2 does not map:
    /// the TSM's memory or a secure granule), inside the TSM's device (the SMMU's
    /// registers), or inside the BAR window (a page a TVM holds as private MMIO). The load or store did not happen; the host
    /// resumes after it with [`BLOCKED_FLAG_REG`] set to 1, which is how a host that probes on
    /// purpose learns it was blocked (docs/design.md, "aarch64 TVM contexts and SMP"). Returns
    /// the faulting IPA, or `None` (and changes nothing) for any other exit.
    fn skip_blocked_access(&mut self) -> Option<u64> {
        let f = &mut self.frame;
        let iss = AbortIss::decode(f.esr);
        let ipa = syndrome::fault_ipa(f.hpfar, f.far);
        let translation = (0x04..=0x07).contains(&iss.fsc);
        let at = tsm_abi::addr::Pa(ipa);
        let secure = self.dram.contains(at, 1)
            || self.tsm_device.is_some_and(|d| d.contains(at, 1))
            || self.bars.is_some_and(|b| b.contains(at, 1));
        if syndrome::ec(f.esr) != Ec::DABT_LOWER || !translation || iss.s1ptw || !secure {
            return None;
        }
        f.pc = f.pc.wrapping_add(4);
        f.x[BLOCKED_FLAG_REG] = 1;
        Some(ipa)
    }
}

/// ESR_ELx.EC of a data abort taken without a change of EL (from EL1 to EL1); the one from a
/// lower EL (EL0 to EL1) is this minus one, as for instruction aborts (0x21 / 0x20).
const EC_DABT_SAME: u64 = 0x25;
const EC_IABT_SAME: u64 = 0x21;
/// ESR_ELx: IL (a 32-bit instruction); ISS.FSC of a synchronous external abort not on a
/// translation table walk; ISS.WnR.
const ESR_IL: u64 = 1 << 25;
const FSC_SEA: u64 = 0x10;
const ISS_WNR: u64 = 1 << 6;
/// PSTATE bits set on an exception entry to EL1h: D, A, I, F masked, EL1 with SP_EL1.
const PSTATE_EL1H_MASKED: u64 = (0xF << 6) | 0b0101;
/// PSTATE.PAN, SCTLR_EL1.SPAN (clear: PAN is set on exception entry), PSTATE.SSBS and
/// SCTLR_EL1.DSSBS (its value on exception entry).
const PSTATE_PAN: u64 = 1 << 22;
const SCTLR_SPAN: u64 = 1 << 23;
const PSTATE_SSBS: u64 = 1 << 12;
const SCTLR_DSSBS: u64 = 1 << 44;
/// PSTATE bits an exception entry clears besides the mode and masks: BTYPE, SS, IL, UAO.
const PSTATE_CLEARED: u64 = (0b11 << 10) | (1 << 21) | (1 << 20) | (1 << 23);

impl HostContext {
    /// For a Linux host: turns a stage-2 abort (a data or instruction abort the host's stage 2
    /// caused at an address it does not map: TSM memory, a delegated granule, a TSM device, a
    /// hole) into a synchronous external abort taken to EL1, as real hardware reports an
    /// access the bus refuses. The kernel's vector sees ESR_EL1, FAR_EL1, ELR_EL1 (the
    /// faulting instruction, never skipped) and SPSR_EL1 as for its own exception; it kills a
    /// user process with SIGBUS, or oopses in the kernel. Returns the IPA, or `None` (and
    /// changes nothing) for any other exit.
    fn inject_external_abort(&mut self) -> Option<u64> {
        let f = &mut self.frame;
        let ec = syndrome::ec(f.esr);
        let data = ec == Ec::DABT_LOWER;
        if !data && ec != Ec::IABT_LOWER {
            return None;
        }
        let iss = AbortIss::decode(f.esr);
        // Stage-2 faults only (translation, access flag, permission, address size): a stage-1
        // fault never reaches EL2.
        if iss.fsc > 0x0F {
            return None;
        }
        let ipa = syndrome::fault_ipa(f.hpfar, f.far);
        let from_el1 = f.pstate & 0b1100 == 0b0100;
        let same = if data { EC_DABT_SAME } else { EC_IABT_SAME };
        let ec1 = if from_el1 { same } else { same - 1 };
        let wnr = if data && iss.write { ISS_WNR } else { 0 };
        let esr = (ec1 << 26) | ESR_IL | wnr | FSC_SEA;
        // The kernel's vectors: current EL with SP_ELx (0x200) or SP_EL0 (0x000), or a lower
        // EL in AArch64 (0x400); synchronous is the first of each group.
        let offset = match f.pstate & 0b1111 {
            0b0101 => 0x200,
            0b0100 => 0x000,
            _ => 0x400,
        };
        let sctlr = super::sysreg::read_sysreg!("sctlr_el1");
        let vbar = super::sysreg::read_sysreg!("vbar_el1");
        let mut pstate = (f.pstate & !(PSTATE_CLEARED | PSTATE_SSBS | 0x3CF)) | PSTATE_EL1H_MASKED;
        if sctlr & SCTLR_SPAN == 0 {
            pstate |= PSTATE_PAN;
        }
        if sctlr & SCTLR_DSSBS != 0 {
            pstate |= PSTATE_SSBS;
        }
        // SAFETY: the host's EL1 registers are live on this CPU (it just trapped; no vCPU ran
        // since), and these four are what the architecture writes on an exception entry to
        // EL1, which this emulates; the host resumes at its own vector.
        unsafe {
            super::sysreg::write_sysreg!("esr_el1", esr);
            super::sysreg::write_sysreg!("far_el1", f.far);
            super::sysreg::write_sysreg!("elr_el1", f.pc);
            super::sysreg::write_sysreg!("spsr_el1", f.pstate);
        }
        f.pc = vbar.wrapping_add(offset);
        f.pstate = pstate;
        Some(ipa)
    }

    /// Whether `f` is a stage-2 translation fault in DRAM (a load, a store, an instruction
    /// fetch or its stage-1 walk) that a split or fold of the host's stage 2 on another CPU
    /// caused: the access came between break and make, and the tables map the IPA again. The
    /// host then retries it (its PC is left alone).
    fn raced_a_split(&self, f: &Fault) -> bool {
        let ec = syndrome::ec(f.esr);
        if f.kind != ExitKind::Sync || (ec != Ec::DABT_LOWER && ec != Ec::IABT_LOWER) {
            return false;
        }
        let translation = (0x04..=0x07).contains(&AbortIss::decode(f.esr).fsc);
        let ipa = syndrome::fault_ipa(f.hpfar, f.far);
        translation
            && self.dram.contains(tsm_abi::addr::Pa(ipa), 1)
            && super::stage2::host_maps(ipa)
    }
}

impl HostCpu for HostContext {
    type Trap = Fault;

    fn run(&mut self) -> HostExit<Fault> {
        let kind = switch_to(&mut self.frame);
        let f = &mut self.frame;
        if kind == ExitKind::Sync
            && let Some(regs) = f.take_call()
        {
            return HostExit::Call(regs);
        }
        f.read_fault_addresses();
        HostExit::Trap(Fault {
            kind,
            esr: f.esr,
            far: f.far,
            hpfar: f.hpfar,
            elr: f.pc,
            spsr: f.pstate,
        })
    }

    fn complete_call(&mut self, result: &CallResult) {
        self.frame.set_result(result);
    }

    /// PSCI CPU_ON's entry state: EL1h at `entry`, D, A, I, F masked, x0 = `arg` (the context
    /// ID), every other register 0, and the EL1 system registers as after reset: SCTLR_EL1
    /// with the MMU and caches off, the timers off, no vector base. Nothing is left of the
    /// host session that ran on this CPU before a CPU_OFF, in its TLB or its FP/SIMD
    /// registers either.
    fn start(&mut self, entry: u64, arg: u64) {
        self.frame.reset(entry, [arg, 0, 0]);
        // SAFETY: this CPU runs no EL1 code until `run` erets to this host context, whose
        // state this is (a CPU that waits in the TSM runs no guest either, so VTTBR_EL2 holds
        // the host's VMID: the TLBI drops this CPU's stage-1 entries of the host only).
        unsafe {
            El1State::load_reset(SCTLR_EL1_RESET, 0);
            FpRegs::load_zero();
            core::arch::asm!("tlbi vmalle1", "dsb nsh", options(nostack, preserves_flags));
        }
        isb();
    }

    fn idle(&self) {
        // SAFETY: `wfe` waits for an event (a start request's `sev`, an interrupt) and changes
        // no state; spurious wake-ups only make the caller look again.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }

    /// A blocked host load or store is logged and skipped; anything else is reported with its
    /// decoded syndrome and the host's registers, and ends the run.
    fn handle_trap(&mut self, fault: Fault) -> HostTrap {
        if self.raced_a_split(&fault) {
            return HostTrap::Survived;
        }
        if super::linux::is_linux()
            && let Some(ipa) = self.inject_external_abort()
        {
            defmt::warn!(
                "CPU {=u64}: Linux host access to IPA {=u64:#x} (not the host's) blocked: synchronous external abort injected at ELR {=u64:#x}, VA {=u64:#x}",
                self.cpu,
                ipa,
                fault.elr,
                fault.far
            );
            return HostTrap::Survived;
        }
        if let Some(ipa) = self.skip_blocked_access() {
            defmt::warn!(
                "CPU {=u64}: host {=str} of IPA {=u64:#x} (not the host's) blocked and skipped, ELR {=u64:#x}",
                self.cpu,
                if AbortIss::decode(fault.esr).write {
                    "write"
                } else {
                    "read"
                },
                ipa,
                fault.elr
            );
            return HostTrap::Survived;
        }
        report_fault(&fault, &self.frame.x);
        HostTrap::Fatal
    }
}

/// The host register a blocked access sets to 1 (x17, IP1: a scratch register the probing
/// code declares clobbered).
pub const BLOCKED_FLAG_REG: usize = 17;

/// Logs a host exit that is not a call: the syndrome decoded, then the host's registers.
fn report_fault(f: &Fault, x: &[u64; 31]) {
    let ec = syndrome::ec(f.esr);
    defmt::error!(
        "host fault ({=?}): EC {=u8:#x} ({=str}), ESR {=u64:#x}, FAR {=u64:#x}, HPFAR {=u64:#x}, ELR {=u64:#x}, SPSR {=u64:#x}",
        f.kind,
        ec.0,
        ec.name(),
        f.esr,
        f.far,
        f.hpfar,
        f.elr,
        f.spsr
    );
    if ec.is_abort() {
        let iss = AbortIss::decode(f.esr);
        defmt::error!(
            "  {=str} at level {=u8} (FSC {=u8:#x}), {=str}, IPA {=u64:#x}, on stage-1 walk {=bool}, ISV {=bool} (size {=u8}, register x{=u8})",
            iss.fsc_name(),
            iss.level(),
            iss.fsc,
            if iss.write { "write" } else { "read" },
            syndrome::fault_ipa(f.hpfar, f.far),
            iss.s1ptw,
            iss.isv,
            1u8 << iss.sas,
            iss.srt
        );
    } else if ec == Ec::SMC64 || ec == Ec::HVC64 {
        defmt::error!("  call with a non-zero immediate {=u64:#x}", f.esr & 0xFFFF);
    }
    defmt::error!("  x0..x7   {:#x}", first::<8>(x, 0));
    defmt::error!("  x8..x15  {:#x}", first::<8>(x, 8));
    defmt::error!("  x16..x23 {:#x}", first::<8>(x, 16));
    defmt::error!("  x24..x30 {:#x}", first::<7>(x, 24));
}

/// `N` registers from `start`.
fn first<const N: usize>(x: &[u64; 31], start: usize) -> [u64; N] {
    core::array::from_fn(|i| x.get(start + i).copied().unwrap_or(0))
}
