//! TVM vCPUs: their saved context and the world switch into them.
//!
//! A vCPU's context ([`GuestContext`]: the general frame of `host`, the FP/SIMD registers and
//! the EL1 state) lives
//! in the context area of its VCPU granule (`tsm_core::run::CONTEXT_OFFSET`), which the core
//! gives to the CPU that claimed the vCPU for the whole run. [`QemuVirt`]'s
//! [`GuestCpu::run_guest`] swaps the host's EL1 state and stage 2 for the vCPU's (its TVM's
//! map, tagged with the TVM's VMID), runs it through the same switch as the host until it traps
//! to EL2 and hands the decoded trap to the core. A call the core answers is completed in the
//! frame and the vCPU runs on: its stage 2 (VTTBR_EL2, VTCR_EL2), EL1 registers and FP/SIMD
//! registers (which the soft-float TSM never touches: `fp`) stay loaded until the core ends the
//! run; TLB maintenance of the host's stage 2, which names its VMID through VTTBR_EL2, puts the
//! host's there for itself (`stage2::as_host`). The vCPU runs at EL1 under the host's HCR_EL2 (SMC
//! trapped, interrupts to EL2, HCR_EL2.DC: its stage 1 is off and its accesses are Normal
//! write-back), so GPA = IPA.

use core::mem::{MaybeUninit, size_of};

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};

use super::el1::El1State;
use super::fp::FpRegs;
use super::host::{ExitKind, Frame, switch_to};
use super::platform::QemuVirt;
use super::stage2;
use super::syndrome::{self, AbortIss, Ec};
use super::sysreg::{read_sysreg, write_sysreg};
use crate::platform::run::{EntryError, GuestCpu, GuestExit, Handled, Resume};

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
    fp: FpRegs,
    el1: El1State,
}

/// Bytes of the context area a [`GuestContext`] needs (the image checks it against the core's
/// `CONTEXT_SIZE`).
pub const GUEST_CONTEXT_BYTES: usize = size_of::<GuestContext>();

impl GuestCpu for QemuVirt {
    /// The core hands the context area to this CPU for the run, which is what makes the
    /// exclusive reference below sound; the address is still range-checked here.
    fn run_guest<T>(
        &self,
        context: Pa,
        root: Pa,
        resume: Resume,
        mut on_exit: impl FnMut(GuestExit) -> Handled<T>,
    ) -> Result<T, EntryError> {
        let bytes = GUEST_CONTEXT_BYTES as u64;
        if !context.0.is_multiple_of(16)
            || context.granule_offset() + bytes > GRANULE_SIZE
            || self.check(context, GUEST_CONTEXT_BYTES).is_err()
        {
            return Err(EntryError::BadContext);
        }
        if !root.is_granule_aligned() || self.check(root, GRANULE_SIZE as usize).is_err() {
            return Err(EntryError::BadRoot);
        }
        // SAFETY: [context, context + size) is 16-byte aligned DRAM outside the TSM's memory,
        // identity-mapped, inside one granule (checked above): the claimed vCPU's context
        // area, which nothing else reads or writes during the run (see the doc comment). Every
        // bit pattern is a valid `GuestContext` (plain integers).
        let ctx = unsafe { &mut *(context.0 as *mut GuestContext) };
        let fresh = matches!(resume, Resume::Start { .. });
        apply(ctx, resume);
        let vmid = self.vmids.lock().acquire(root, stage2::invalidate_tvm_all);
        let Some(vmid) = vmid else {
            return Err(EntryError::NoTag);
        };
        let mut host_el1_slot = MaybeUninit::uninit();
        let host_el1 = El1State::save_into(&mut host_el1_slot);
        let host_mdcr = read_sysreg!("mdcr_el2");
        // The host's FP/SIMD registers, live since its last exit (the TSM never touches them).
        let mut host_fp_slot = MaybeUninit::uninit();
        let host_fp = FpRegs::save_into(&mut host_fp_slot);
        // Under a Linux host, which runs with its own HCR_EL2 and SVE untrapped, the vCPU gets
        // the controls it was designed for (super::boot::HCR_HOST): its interrupts exit to
        // EL2, DC on, SVE trapped (its state is not switched).
        let linux = super::linux::is_linux();
        // SAFETY: from here to the `leave_tvm` after the loop only the vCPU runs at EL1 on this
        // CPU, under its own EL1 state, FP/SIMD registers (the host's are saved above) and its
        // TVM's stage 2 (root is that TVM's root table, alive while the core keeps the vCPU
        // claimed); the MDCR_EL2 traps only add exits; under a Linux host, HCR_EL2 and
        // CPTR_EL2 become the controls vCPUs run under with the payload (interrupts to EL2, DC,
        // SVE trapped) and go back before the host runs.
        unsafe {
            load_el1_fp(ctx, fresh);
            write_sysreg!("mdcr_el2", host_mdcr | MDCR_GUEST_TRAPS);
            if linux {
                write_sysreg!("hcr_el2", super::boot::HCR_HOST);
                write_sysreg!("cptr_el2", super::boot::CPTR_TSM);
            }
        }
        // SAFETY: as above.
        let host_s2 = unsafe { stage2::enter_tvm(vmid, root) };
        let (out, keep) = loop {
            let kind = switch_to(&mut ctx.frame);
            // The vCPU's EL1 state and stage 2 stay loaded while the core handles the trap (the
            // TSM at EL2 uses neither), so a call answered in place costs no swap: the host's
            // stage-2 maintenance puts the host's VMID in VTTBR_EL2 for itself
            // (`stage2::as_host`); nothing else the core may do reads those registers.
            match on_exit(decode(kind, &mut ctx.frame)) {
                Handled::Reply(r) => ctx.frame.set_result(&r),
                Handled::Leave(t) => break (t, true),
                Handled::Finish(t) => break (t, false),
            }
        };
        // SAFETY: the vCPU is out (it trapped) and nothing runs at EL1 until the host's own EL1
        // state is back below.
        unsafe { stage2::leave_tvm(host_s2) };
        // A finished vCPU is never entered again: its EL1 and FP/SIMD images would never be
        // loaded. The host's loads below replace every one of those registers either way.
        if keep {
            ctx.el1.save();
            ctx.fp.save();
        }
        // SAFETY: the vCPU is out and its registers saved; the host's own state goes back
        // before the host runs on this CPU again.
        unsafe {
            write_sysreg!("mdcr_el2", host_mdcr);
            if linux {
                write_sysreg!("hcr_el2", super::boot::HCR_LINUX);
                write_sysreg!("cptr_el2", super::boot::CPTR_LINUX);
            }
            host_el1.load();
            host_fp.load();
        }
        super::sysreg::isb();
        self.vmids.lock().release(vmid);
        Ok(out)
    }
}

/// Loads the vCPU's EL1 and FP/SIMD registers: their reset values for a `fresh` start (SCTLR_EL1
/// [`SCTLR_EL1_RESET`], CPACR_EL1 [`CPACR_FP`], all else zero), else its saved images. A fresh
/// start leaves the images alone (`apply`): the registers are saved into them when the run
/// ends, before any entry could load them; until then they hold what VCPU_CREATE's scrub left,
/// zeros, never another context's registers.
///
/// # Safety
/// As [`El1State::load`] and [`FpRegs::load`].
unsafe fn load_el1_fp(ctx: &GuestContext, fresh: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        if fresh {
            El1State::load_reset(SCTLR_EL1_RESET, CPACR_FP);
            FpRegs::load_zero();
        } else {
            ctx.el1.load();
            ctx.fp.load();
        }
    }
}

/// Prepares the context for the vCPU's next entry as `resume` says (a fresh vCPU's EL1 and
/// FP/SIMD registers: `load_el1_fp`).
fn apply(ctx: &mut GuestContext, resume: Resume) {
    match resume {
        Resume::Start { entry, arg0 } => ctx.frame.reset(entry.0, [arg0, 0, 0]),
        Resume::Continue => {}
        Resume::Return(r) => ctx.frame.set_result(&r),
    }
}

/// What a trap of the vCPU was: a call, a host interrupt, or a fault with the IPA of a stage-2
/// abort.
fn decode(kind: ExitKind, f: &mut Frame) -> GuestExit {
    match kind {
        // The host's (under a Linux host, its timer's): still pending at the GIC, taken by the
        // host once VCPU_RUN has returned to it (HCR_EL2 no longer routes it to EL2).
        ExitKind::Irq | ExitKind::Fiq => return GuestExit::Interrupt,
        ExitKind::SError => {
            return GuestExit::Fault {
                syndrome: f.esr,
                gpa: None,
                write: false,
            };
        }
        ExitKind::Sync => {}
    }
    if let Some(regs) = f.take_call() {
        return GuestExit::Call(regs);
    }
    let ec = syndrome::ec(f.esr);
    if ec == Ec::DABT_LOWER || ec == Ec::IABT_LOWER {
        let iss = AbortIss::decode(f.esr);
        // Address size, translation, access flag and permission faults: with the vCPU's stage
        // 1 off, these are stage-2 faults and HPFAR_EL2 holds the IPA.
        let stage2 = iss.fsc <= 0x0F;
        return GuestExit::Fault {
            syndrome: f.esr,
            gpa: stage2.then(|| Gpa(syndrome::fault_ipa(f.hpfar, f.far))),
            write: ec == Ec::DABT_LOWER && iss.write,
        };
    }
    GuestExit::Fault {
        syndrome: f.esr,
        gpa: None,
        write: false,
    }
}
