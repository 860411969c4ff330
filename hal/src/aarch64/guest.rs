//! TVM vCPUs: their saved context and the world switch into them.
//!
//! A vCPU's context ([`GuestContext`]: the general/FP frame of `host` plus the EL1 state) lives
//! in the context area of its VCPU granule (`tsm_core::run::CONTEXT_OFFSET`), which the core
//! gives to the CPU that claimed the vCPU for the whole run. [`QemuVirt::run_guest`] swaps the
//! host's EL1 state and stage 2 for the vCPU's (its TVM's map, tagged with the TVM's VMID),
//! runs it through the same switch as the host until it traps to EL2, swaps back and decodes
//! the trap. The vCPU runs at EL1 under the host's HCR_EL2 (SMC trapped, interrupts to EL2,
//! HCR_EL2.DC: its stage 1 is off and its accesses are Normal write-back), so GPA = IPA.

use core::mem::size_of;

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::regs::{CallRegs, CallResult};

use super::el1::El1State;
use super::host::{ExitKind, Frame, switch_to};
use super::platform::QemuVirt;
use super::stage2;
use super::syndrome::{self, AbortIss, Ec};
use super::sysreg::{read_sysreg, write_sysreg};

/// SCTLR_EL1 a vCPU starts with: RES1 bits only (MMU, caches, alignment checks off).
const SCTLR_EL1_RESET: u64 = 0x30D0_0800;
/// CPACR_EL1 a vCPU starts with: FP/SIMD usable at EL1/EL0 (compiled guest code uses it).
const CPACR_FP: u64 = 0b11 << 20;
/// MDCR_EL2 bits set while a vCPU runs: TPMCR, TPM (PMU registers), TDA, TDOSA, TDRA (debug
/// registers) trap to EL2. The PMU and the breakpoints are shared with the host and not
/// switched: a guest could otherwise raise PMU interrupts while the host runs or plant
/// breakpoints in the host.
const MDCR_GUEST_TRAPS: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11);

/// A vCPU's saved registers, as stored in its granule's context area.
#[repr(C, align(16))]
pub struct GuestContext {
    frame: Frame,
    el1: El1State,
}

/// Bytes of the context area a [`GuestContext`] needs (the image checks it against the core's
/// `CONTEXT_SIZE`).
pub const GUEST_CONTEXT_BYTES: usize = size_of::<GuestContext>();

/// How to (re)start the vCPU (the core's `Resume`).
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// A fresh frame: PC = `entry`, x0 = `arg0`, EL1h with DAIF masked, everything else reset.
    Fresh {
        /// Entry GPA.
        entry: u64,
        /// x0.
        arg0: u64,
    },
    /// Where it stopped.
    Continue,
    /// x0..x4 = the call's result, then where it stopped (past the call).
    Return(CallResult),
}

/// Why the vCPU stopped.
#[derive(Clone, Copy, Debug)]
pub enum GuestTrap {
    /// `hvc #0` or `smc #0`.
    Call(CallRegs),
    /// Anything else: an abort (`ipa` set when it is a stage-2 fault on a guest-physical
    /// address), another exception (ESR_EL2 in `syndrome`), or an interrupt (`syndrome` 0;
    /// ESR_EL2 for an SError).
    Fault {
        /// ESR_EL2, or 0 for IRQ/FIQ.
        syndrome: u64,
        /// The faulting IPA of a stage-2 abort.
        ipa: Option<u64>,
        /// A data abort on a write.
        write: bool,
    },
}

/// Why a vCPU could not be entered (a HAL/core mismatch, never guest or host input).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestError {
    /// The context area is not DRAM outside the TSM, is misaligned, or crosses a granule.
    BadContext,
    /// Every VMID is held by a running CPU.
    NoVmid,
}

impl QemuVirt {
    /// Runs the vCPU whose context area starts at `context`, on the TVM map rooted at `root`,
    /// until it traps to EL2. The core hands the context area to this CPU for the run (it
    /// refuses a second VCPU_RUN and VCPU_DESTROY of a running vCPU), which is what makes the
    /// exclusive reference below sound; the address is still range-checked here.
    pub fn run_guest(&self, context: Pa, root: Pa, start: Start) -> Result<GuestTrap, GuestError> {
        let bytes = GUEST_CONTEXT_BYTES as u64;
        if !context.0.is_multiple_of(16)
            || context.granule_offset() + bytes > GRANULE_SIZE
            || self.check(context, GUEST_CONTEXT_BYTES).is_err()
            || !root.is_granule_aligned()
            || self.check(root, GRANULE_SIZE as usize).is_err()
        {
            return Err(GuestError::BadContext);
        }
        // SAFETY: [context, context + size) is 16-byte aligned DRAM outside the TSM's memory,
        // identity-mapped, inside one granule (checked above): the claimed vCPU's context
        // area, which nothing else reads or writes during the run (see the doc comment). Every
        // bit pattern is a valid `GuestContext` (plain integers).
        let ctx = unsafe { &mut *(context.0 as *mut GuestContext) };
        match start {
            Start::Fresh { entry, arg0 } => {
                ctx.frame = Frame::entry(entry, [arg0, 0, 0]);
                ctx.el1 = El1State {
                    sctlr: SCTLR_EL1_RESET,
                    cpacr: CPACR_FP,
                    ..El1State::default()
                };
            }
            Start::Continue => {}
            Start::Return(r) => ctx.frame.set_result(&r),
        }
        let vmid = self.vmids.lock().acquire(root, stage2::invalidate_tvm_all);
        let Some(vmid) = vmid else {
            return Err(GuestError::NoVmid);
        };
        let host_el1 = El1State::save();
        let host_mdcr = read_sysreg!("mdcr_el2");
        // SAFETY: from here to `leave_tvm` only the vCPU runs at EL1 on this CPU, under its
        // own EL1 state and its TVM's stage 2 (root is that TVM's root table, alive while the
        // core keeps the vCPU claimed); the MDCR_EL2 traps only add exits.
        let host_s2 = unsafe {
            ctx.el1.load();
            write_sysreg!("mdcr_el2", host_mdcr | MDCR_GUEST_TRAPS);
            stage2::enter_tvm(vmid, root)
        };
        let kind = switch_to(&mut ctx.frame);
        ctx.el1 = El1State::save();
        // SAFETY: the vCPU is out (it trapped); the host's own state goes back before the
        // host runs on this CPU again.
        unsafe {
            stage2::leave_tvm(host_s2);
            write_sysreg!("mdcr_el2", host_mdcr);
            host_el1.load();
        }
        super::sysreg::isb();
        self.vmids.lock().release(vmid);
        Ok(decode(kind, &mut ctx.frame))
    }
}

/// What a trap of the vCPU was.
fn decode(kind: ExitKind, f: &mut Frame) -> GuestTrap {
    if kind != ExitKind::Sync {
        let syndrome = if kind == ExitKind::SError { f.esr } else { 0 };
        return GuestTrap::Fault {
            syndrome,
            ipa: None,
            write: false,
        };
    }
    if let Some(regs) = f.take_call() {
        return GuestTrap::Call(regs);
    }
    let ec = syndrome::ec(f.esr);
    if ec == Ec::DABT_LOWER || ec == Ec::IABT_LOWER {
        let iss = AbortIss::decode(f.esr);
        // Address size, translation, access flag and permission faults: with the vCPU's stage
        // 1 off, these are stage-2 faults and HPFAR_EL2 holds the IPA.
        let stage2 = iss.fsc <= 0x0F;
        return GuestTrap::Fault {
            syndrome: f.esr,
            ipa: stage2.then(|| syndrome::fault_ipa(f.hpfar, f.far)),
            write: ec == Ec::DABT_LOWER && iss.write,
        };
    }
    GuestTrap::Fault {
        syndrome: f.esr,
        ipa: None,
        write: false,
    }
}
