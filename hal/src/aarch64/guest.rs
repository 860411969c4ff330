//! TVM vCPUs: their saved context and the world switch into them.
//!
//! A vCPU's context ([`GuestContext`]: the general frame of `host`, the FP/SIMD registers and
//! the EL1 state) lives
//! in the context area of its VCPU granule (`tsm_core::run::CONTEXT_OFFSET`), which the core
//! gives to the CPU that claimed the vCPU for the whole run. [`QemuVirt`]'s
//! [`GuestCpu::run_guest`] swaps the host's EL1 state and stage 2 for the vCPU's (its TVM's
//! map, tagged with the TVM's VMID), runs it through the same switch as the host until it traps
//! to EL2 and hands the decoded trap to the core. A call the core answers is completed in the
//! frame and the vCPU runs on: its stage 2 (VTTBR_EL2, VTCR_EL2) and EL1 registers stay loaded
//! until the core ends the run, and so do its FP/SIMD registers once it has used them
//! ([`LazyFp`]: they are switched on the vCPU's first FP/SIMD access, as KVM does); TLB
//! maintenance of the host's stage 2, which names its VMID through VTTBR_EL2, puts the
//! host's there for itself (`stage2::as_host`). The vCPU runs at EL1 under the host's HCR_EL2 (SMC
//! trapped, interrupts to EL2, HCR_EL2.DC: its stage 1 is off and its accesses are Normal
//! write-back), so GPA = IPA.

use core::mem::{MaybeUninit, size_of};

use tsm_abi::addr::{Gpa, Pa};

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
/// CPACR_EL1 a vCPU starts with: FP/SIMD usable at EL1/EL0 (a guest that uses it need not
/// enable it; the TSM switches it lazily: [`LazyFp`]).
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
        self.tables
            .check_entry(context, GUEST_CONTEXT_BYTES as u64, root)?;
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
        // Under a Linux host, which runs with its own HCR_EL2 and SVE untrapped, the vCPU gets
        // the controls it was designed for (super::boot::HCR_HOST): its interrupts exit to
        // EL2, DC on, SVE trapped (its state is not switched).
        let linux = super::linux::is_linux();
        // The host's FP/SIMD registers stay loaded (the TSM never touches them) until the
        // vCPU's first FP/SIMD access of this run, which CPTR_EL2.TFP traps (`LazyFp`).
        // The slot apart from the flags: in one struct with them, LLVM zeroed all 529 bytes
        // with a `memset` (78 instructions) to store a flag.
        let mut host_fp_slot = MaybeUninit::uninit();
        let mut fp = LazyFp {
            host: &mut host_fp_slot,
            fresh,
        };
        // SAFETY: from here to the `leave_tvm` after the loop only the vCPU runs at EL1 on this
        // CPU, under its own EL1 state and its TVM's stage 2 (root is that TVM's root table,
        // alive while the core keeps the vCPU claimed), with every FP/SIMD access trapped
        // until its own FP/SIMD registers replace the host's (`LazyFp`; the ERET into it
        // synchronises the CPTR_EL2 write); the MDCR_EL2 traps only add exits; under a Linux
        // host, HCR_EL2 becomes the controls vCPUs run under with the payload (interrupts to
        // EL2, DC) and goes back before the host runs, as CPTR_EL2 does.
        unsafe {
            load_el1(ctx, fresh);
            write_sysreg!("mdcr_el2", host_mdcr | MDCR_GUEST_TRAPS);
            if linux {
                write_sysreg!("hcr_el2", super::boot::HCR_HOST);
            }
            write_sysreg!("cptr_el2", super::boot::CPTR_TSM | super::boot::CPTR_TFP);
        }
        // SAFETY: as above.
        let host_s2 = unsafe { self.stage2.enter_tvm(vmid, root) };
        let (out, keep) = loop {
            // The vCPU's EL1 state and stage 2 stay loaded while the core handles the trap (the
            // TSM at EL2 uses neither), so a call answered in place costs no swap: the host's
            // stage-2 maintenance puts the host's VMID in VTTBR_EL2 for itself
            // (`stage2::as_host`); nothing else the core may do reads those registers. The
            // same holds for whichever FP/SIMD registers are loaded (`copy::zero` keeps the
            // four it uses and lifts CPTR_EL2.TFP around itself).
            match on_exit(next_exit(&mut ctx.frame, &ctx.fp, &mut fp)) {
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
        }
        // SAFETY: the vCPU is out and its EL1 registers saved; the host's own state goes back
        // before the host runs on this CPU again: its FP/SIMD registers, if the vCPU's had
        // replaced them (with CPTR_EL2.TFP clear: the trap cleared it), else they are still
        // loaded, untouched by the vCPU, whose every FP/SIMD access trapped; CPTR_EL2 the
        // host's (FP/SIMD untrapped), synchronised by the ISB below.
        unsafe {
            fp.end(&mut ctx.fp, keep);
            write_sysreg!("mdcr_el2", host_mdcr);
            if linux {
                write_sysreg!("hcr_el2", super::boot::HCR_LINUX);
                write_sysreg!("cptr_el2", super::boot::CPTR_LINUX);
            } else {
                write_sysreg!("cptr_el2", super::boot::CPTR_TSM);
            }
            host_el1.load();
        }
        super::sysreg::isb();
        self.vmids.lock().release(vmid);
        Ok(out)
    }
}

/// Loads the vCPU's EL1 registers: their reset values for a `fresh` start (SCTLR_EL1
/// [`SCTLR_EL1_RESET`], CPACR_EL1 [`CPACR_FP`], all else zero), else its saved image. A fresh
/// start leaves the image alone (`apply`): the registers are saved into it when the run ends,
/// before any entry could load it; until then it holds what VCPU_CREATE's scrub left, zeros,
/// never another context's registers (the FP/SIMD image likewise: [`LazyFp`]).
///
/// # Safety
/// As [`El1State::load`].
unsafe fn load_el1(ctx: &GuestContext, fresh: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        if fresh {
            El1State::load_reset(SCTLR_EL1_RESET, CPACR_FP);
        } else {
            ctx.el1.load();
        }
    }
}

/// Lazy FP/SIMD switching for one run (as KVM/arm64 does): a run enters the vCPU with
/// CPTR_EL2.TFP set and the host's q0..q31, FPSR and FPCR still in the registers; the vCPU's
/// first FP/SIMD access traps, [`LazyFp::load_guest`] saves the host's registers here, loads
/// the vCPU's and clears the trap; [`LazyFp::end`] puts the host's back if that happened. A
/// vCPU that never touches FP/SIMD in a run (a guest kernel built without it, as Linux is, on
/// a path of calls) costs no FP/SIMD save or load at all.
///
/// Why neither side sees the other's registers: every run writes CPTR_EL2 with TFP set before
/// its first entry (the ERET synchronises it), and TFP is cleared only in `load_guest`, after
/// the vCPU's own registers replaced the host's; so whenever the vCPU can execute an FP/SIMD
/// instruction, or read FPSR/FPCR, the registers hold its own values (zeros on its first run).
/// SVE stays trapped by CPTR_EL2.TZ throughout, as before: an SVE access traps as TZ's class
/// or, first, as TFP's, after which it traps as TZ's. At the run's end the host's registers
/// are loaded back before the host runs, or were never replaced: with TFP set the vCPU could
/// not write them. The TSM itself never uses the registers (`fp`) but in `copy::zero`, which
/// keeps the four it uses and lifts TFP only around itself.
///
/// Whether the vCPU's registers are loaded is CPTR_EL2.TFP itself ([`LazyFp::loaded`]), not a
/// flag: a flag kept in a register through the run loop cost every guest call 3 instructions
/// (LLVM duplicated the loop per flag value).
struct LazyFp<'a> {
    /// The host's registers, once [`LazyFp::loaded`].
    host: &'a mut MaybeUninit<FpRegs>,
    /// A fresh start: the vCPU's registers are zeros, not its image.
    fresh: bool,
}

impl LazyFp<'_> {
    /// Whether the vCPU's registers are loaded: CPTR_EL2.TFP is clear. The run sets TFP before
    /// its first entry and only `load_guest` clears it, after saving the host's registers into
    /// `host` (`copy::zero` puts back the CPTR_EL2 it found), so within a run a clear TFP means
    /// `host` is initialised.
    fn loaded() -> bool {
        read_sysreg!("cptr_el2") & super::boot::CPTR_TFP == 0
    }

    /// On the vCPU's first FP/SIMD access of the run: the host's registers saved, the vCPU's
    /// loaded (zeros for a fresh start, else `image`), CPTR_EL2.TFP cleared.
    ///
    /// # Safety
    /// Only while the vCPU is out of its run loop's switch, with TFP set and the host's
    /// registers loaded (not [`LazyFp::loaded`]).
    unsafe fn load_guest(&mut self, image: &FpRegs) {
        // SAFETY: clears only TFP (the vCPUs' controls otherwise); the ISB makes the FP/SIMD
        // instructions below run untrapped at EL2. Then the caller's contract: the registers
        // are the host's, saved before the vCPU's replace them, and TFP stays clear only while
        // the vCPU's are loaded.
        unsafe {
            write_sysreg!("cptr_el2", super::boot::CPTR_TSM);
            super::sysreg::isb();
            FpRegs::save_into(self.host);
            if self.fresh {
                FpRegs::load_zero();
            } else {
                image.load();
            }
        }
    }

    /// At the run's end, the vCPU out: if its registers were loaded, saved into `image` when
    /// it runs again (`keep`) and the host's put back.
    ///
    /// # Safety
    /// Only once per run, after the vCPU's last exit.
    unsafe fn end(&mut self, image: &mut FpRegs, keep: bool) {
        if !Self::loaded() {
            return;
        }
        if keep {
            image.save();
        }
        // SAFETY: `load_guest` initialised the slot (TFP is clear: `loaded`); the vCPU is out,
        // so the registers are the host's again before anything runs at EL1.
        unsafe { self.host.assume_init_ref().load() };
    }
}

/// Prepares the context for the vCPU's next entry as `resume` says (a fresh vCPU's EL1 and
/// FP/SIMD registers: `load_el1`, [`LazyFp`]).
fn apply(ctx: &mut GuestContext, resume: Resume) {
    match resume {
        Resume::Start { entry, arg0 } => ctx.frame.reset(entry.0, [arg0, 0, 0]),
        Resume::Continue => {}
        Resume::Return(r) => ctx.frame.set_result(&r),
    }
}

/// Runs the vCPU until a trap the core must see: a call, a host interrupt, or a fault with the
/// IPA of a stage-2 abort. Its first FP/SIMD access of the run is not one: [`LazyFp`] loads its
/// registers (`image`) and it runs on, retrying the access. The test comes after the call's, so
/// a call costs nothing more.
fn next_exit(f: &mut Frame, image: &FpRegs, fp: &mut LazyFp<'_>) -> GuestExit {
    loop {
        match switch_to(f) {
            // The host's (under a Linux host, its timer's): still pending at the GIC, taken by
            // the host once VCPU_RUN has returned to it (HCR_EL2 no longer routes it to EL2).
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
        f.read_fault_addresses();
        let ec = syndrome::ec(f.esr);
        if ec == Ec::FP_ACCESS && !LazyFp::loaded() {
            // SAFETY: the vCPU is out, and TFP set means the host's registers are loaded
            // (`LazyFp::loaded`).
            unsafe { fp.load_guest(image) };
            continue;
        }
        return fault(ec, f);
    }
}

/// A synchronous trap of the vCPU that is neither a call nor its first FP/SIMD access.
fn fault(ec: Ec, f: &Frame) -> GuestExit {
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
