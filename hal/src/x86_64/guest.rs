//! TVM vCPUs as SVM guests (the HAL's [`GuestCpu`]): the TVM's map is the nested page table,
//! the vCPU's state lives in its context area between runs.
//!
//! The core's x86-64 map format is what AMD nested paging walks (every level has U, which the
//! nested walk requires; A and D preset), so the TVM's root goes into `N_CR3` as it is. Each CPU
//! runs vCPUs with one VMCB of its own (`svm::Vmcb::guest`), ASID [`TVM_ASID`], the TLB flushed
//! on every VMRUN (ASIDs do not tag TCG's TLB and it has no flush-by-ASID, so per-TVM ASIDs
//! would buy nothing here): a vCPU never sees another TVM's, or its own stale, translations. A
//! change to a TVM's map reaches a CPU running it by the shootdown NMI, which the guest's NMI
//! intercept turns into a #VMEXIT; the next VMRUN flushes.
//!
//! A guest call the core answers is completed in the VMCB and registers and the vCPU runs on:
//! its state is saved and the host's put back only when the core ends the run (an exit to the
//! host). Between runs the vCPU's general-purpose registers, the VMCB's state-save area
//! (`vmcb::SAVED_STATE`: segments, control registers, EFER, RIP, RSP, RAX, the `vmload` MSRs,
//! PAT) and its x87/SSE registers are kept in its context area, copied into this CPU's VMCB and
//! registers before VMRUN and back after. VMRUN does not switch the x87/SSE registers, so the
//! host's are saved in this CPU's area first and restored after: no TVM register reaches the
//! host, and the host's survive its VCPU_RUN. (Nothing beyond x87/SSE is guest state: XSAVE
//! and AVX are hidden and XSETBV refused, `intercept`.) The debug address registers DR0..DR3,
//! which VMRUN does not switch either, go the same way.
//!
//! A vCPU starts like every guest of the TSM (`intercept::enter_flat32`): 32-bit protected
//! mode, paging off, at its entry GPA, with edi = arg0's low half and esi = its high half (a
//! 32-bit entry cannot see the upper halves of the registers). Its exits are those of
//! `intercept`, and every exception is intercepted too: the core reports it as a FAULT exit
//! (vector in bits 7:0 of the syndrome, error code in 63:32) and the vCPU retries the
//! instruction when it next runs. A nested page fault is reported as vector 14 (#PF) with the
//! nested fault's error code and the GPA.
//!
//! Physical interrupts never reach a vCPU, and they preempt it: its VMCB sets V_INTR_MASKING,
//! so the vCPU's RFLAGS.IF masks only virtual interrupts and physical ones are governed by the
//! IF the TSM had at VMRUN (set, `svm::Vmcb::run`), and it intercepts INTR: a physical
//! interrupt (a Linux host's PIC) that arrives while the vCPU runs is a #VMEXIT, which the core
//! reports as an INTERRUPT exit. The interrupt stays pending (the TSM clears IF before it sets
//! GIF) until the host, whose VMCB sets neither, runs again with its IF and takes it.

use core::mem::offset_of;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::regs::CallResult;

use super::cpu;
use super::intercept::{self, Stop};
use super::percpu;
use super::platform::{UserAccess, X86Platform};
use super::smp;
use super::svm::{self, FxState, Gprs, MsrMap, Vmcb, exit, misc1, vmcb};
use crate::platform::run::{EntryError, GuestCpu, GuestExit, Handled, Resume};

/// The address-space tag of every TVM vCPU (the host's is 1).
const TVM_ASID: u32 = 2;
/// Every exception vector is intercepted.
const ALL_EXCEPTIONS: u32 = u32::MAX;

const SAVED: usize = vmcb::SAVED_STATE.end - vmcb::SAVED_STATE.start;
const _: () = assert!(offset_of!(Context, fpu).is_multiple_of(16));

/// A vCPU's context area between runs.
#[repr(C)]
struct Context {
    gprs: Gprs,
    state: [u8; SAVED],
    /// DR0..DR3 (DR6 and DR7 are in the state-save area).
    debug: [u64; 4],
    fpu: FxState,
}

/// The x87/SSE state a vCPU starts with: FNINIT's control word, MXCSR's reset value, every
/// register zero.
static INITIAL_FPU: FxState = {
    let mut image = [0u8; 512];
    image[0] = 0x7F;
    image[1] = 0x03;
    image[24] = 0x80;
    image[25] = 0x1F;
    FxState(image)
};

/// Bytes of a vCPU context area [`GuestCpu::run_guest`] uses.
pub const GUEST_FRAME_SIZE: u64 = core::mem::size_of::<Context>() as u64;

const PAGE_FAULT: u64 = 14;
const PF_WRITE: u64 = 1 << 1;
/// The first exception #VMEXIT code (vector 0); vector v is this + v.
const EXIT_EXCEPTION_0: u64 = 0x40;
/// The syndrome's vector of an exit that is no exception (a triple fault); the exit code is in
/// bits 63:32.
const NO_VECTOR: u64 = 0xFF;

impl GuestCpu for X86Platform {
    /// Runs the vCPU on its TVM's map `root` as an SVM guest. The context area is TSM-owned
    /// memory (a delegated VCPU granule) that the core gives this CPU for the run.
    fn run_guest<T>(
        &self,
        context: Pa,
        root: Pa,
        resume: Resume,
        mut on_exit: impl FnMut(GuestExit) -> Handled<T>,
    ) -> Result<T, EntryError> {
        check_entry(self, context, root)?;
        let cpu = percpu::this_cpu();
        let mut v = Vmcb::guest(cpu).ok_or(EntryError::BadContext)?;
        // The other controls are [`init_cpu`]'s, which no run or #VMEXIT changes.
        v.set_nested_root(root.0);
        // A Linux host's PIC is live: with its IF, a TVM would take the host's interrupts
        // through its own IDT. Under the TSM's IF and intercepted, they end the run instead.
        // Written every run: the #VMEXIT leaves the last vCPU's V_TPR (its CR8) here.
        v.write32(vmcb::V_INTR, svm::V_INTR_MASKING);
        let host_fpu = v.host_fpu() as *mut u8;
        let ctx = context.0 as *mut Context;
        // Inside the context's granule (checked above): no add can wrap.
        let state = ctx.cast::<u8>().wrapping_add(offset_of!(Context, state));
        let fpu = ctx.cast::<u8>().wrapping_add(offset_of!(Context, fpu));
        // SAFETY: this CPU's host area is 16-aligned and 512 bytes (`svm`), the TSM runs with
        // CR0.EM/TS clear and CR4.OSFXSR set (`boot`).
        unsafe { cpu::fxsave(host_fpu) };
        let host_debug = cpu::debug_addresses();
        let mut gprs = match resume {
            Resume::Start { entry, arg0 } => start(&mut v, entry, arg0),
            Resume::Continue | Resume::Return(_) => {
                let _user = UserAccess::allow();
                // SAFETY: `context` is DRAM outside the TSM's image (checked), identity-mapped
                // read-write for ring 0 (U set, as all host memory: the bracket above lets the
                // accesses through SMAP), 16-aligned and inside one granule; the core gives this CPU the
                // vCPU's area exclusively between its claim (VCPU_RUN) and the exit to the
                // host. It does not overlap the VMCB (TSM memory).
                // The x87/SSE image is one FXSAVE wrote there on the last exit (the area is zero
                // only before the first run, which is a `Start`).
                // DR0..DR3 as above.
                unsafe {
                    v.load_state(state);
                    cpu::fxrstor(fpu);
                    cpu::set_debug_addresses((*ctx).debug);
                    (*ctx).gprs
                }
            }
        };
        if let Resume::Return(r) = resume {
            complete(&mut v, &mut gprs, &r);
        }
        smp::set_running_root(Some(root.0));
        // The vCPU's state stays in the VMCB and the CPU's x87/SSE and debug registers while
        // the core handles each exit (the TSM uses none of them: soft-float, DR7 clear), so a
        // call the core answers costs one #VMEXIT and one VMRUN, as a host call does.
        let (out, keep) = loop {
            let exit = match intercept::run(&mut v, &mut gprs, cpu, false) {
                Stop::Call(regs) => GuestExit::Call(regs),
                Stop::Exit(code) => exit_of(&v, code),
            };
            match on_exit(exit) {
                Handled::Reply(r) => complete(&mut v, &mut gprs, &r),
                Handled::Leave(t) => break (t, true),
                Handled::Finish(t) => break (t, false),
            }
        };
        smp::set_running_root(None);
        // A finished vCPU is never entered again: its state would never be loaded. The host's
        // debug addresses and x87/SSE image below replace the vCPU's either way (its general
        // registers and VMCB state never reach the host).
        if keep {
            let _user = UserAccess::allow();
            // SAFETY: as above; the context's image is 16-aligned (the area is, and
            // `Context`'s layout keeps `fpu` at a multiple of 16).
            unsafe {
                v.save_state(state);
                (*ctx).gprs = gprs;
                (*ctx).debug = cpu::debug_addresses();
                cpu::fxsave(fpu);
            }
        }
        // SAFETY: the host's own values, saved above into this CPU's area (TSM memory, no
        // user access); the TSM's DR7 is clear.
        unsafe {
            cpu::set_debug_addresses(host_debug);
            cpu::fxrstor(host_fpu);
        }
        Ok(out)
    }
}

/// `TableGranules::check_entry` for this vCPU's frame: ~36 instructions where two `check`s
/// were ~45. Out of line: inlined, LLVM hoisted the bounds out of the run loop into its frame
/// and the guest call paid +3 for the spills (`vrun8`).
#[inline(never)]
fn check_entry(p: &X86Platform, context: Pa, root: Pa) -> Result<(), EntryError> {
    p.tables.check_entry(context, GUEST_FRAME_SIZE, root)
}

/// Writes CPU `cpu`'s TVM VMCB's controls ([`GuestCpu::run_guest`] adds each run's nested
/// root): every exception and the module doc's exits intercepted, a TVM's MSR map, ASID
/// [`TVM_ASID`]. Once per CPU at boot, after `svm::enable`: no run and no #VMEXIT changes
/// them (a VMRUN reads them, the exit writes only its exit fields, V_INTR and the state).
pub fn init_cpu(cpu: usize) {
    if let Some(mut v) = Vmcb::guest(cpu) {
        v.set_controls(
            intercept::INTERCEPTS_MISC1 | misc1::INTR,
            intercept::INTERCEPTS_MISC2,
            ALL_EXCEPTIONS,
            MsrMap::Tvm,
            TVM_ASID,
            0,
        );
    }
}

/// A fresh vCPU at `entry` (module doc): the VMCB's state, the x87/SSE and debug registers
/// reset; returns its general registers.
fn start(v: &mut Vmcb, entry: Gpa, arg0: u64) -> Gprs {
    intercept::enter_flat32(v, entry.0);
    // SAFETY: a valid, 16-aligned image; the TSM runs with CR0.EM/TS clear and CR4.OSFXSR set
    // (`boot`). The TSM's DR7 is clear (VMRUN's exit restores it so), so no address loaded here
    // breaks in it.
    unsafe {
        cpu::fxrstor(INITIAL_FPU.0.as_ptr());
        cpu::set_debug_addresses([0; 4]);
    }
    Gprs {
        rdi: arg0 & 0xFFFF_FFFF,
        rsi: arg0 >> 32,
        ..Gprs::default()
    }
}

/// Completes the call the vCPU trapped on with result `r`.
fn complete(v: &mut Vmcb, gprs: &mut Gprs, r: &CallResult) {
    v.write64(vmcb::RAX, r.status);
    gprs.rdi = r.out[0];
    gprs.rsi = r.out[1];
    gprs.rdx = r.out[2];
    gprs.r10 = r.out[3];
}

/// A vCPU exit that is no call, as the core sees it (module doc).
fn exit_of(v: &Vmcb, code: u64) -> GuestExit {
    let info1 = v.read64(vmcb::EXIT_INFO1);
    let error = (info1 & 0xFFFF_FFFF) << 32;
    match code {
        exit::INTR => GuestExit::Interrupt,
        exit::NPF => GuestExit::Fault {
            syndrome: PAGE_FAULT | error,
            gpa: Some(Gpa(v.read64(vmcb::EXIT_INFO2) & !(GRANULE_SIZE - 1))),
            write: info1 & PF_WRITE != 0,
        },
        EXIT_EXCEPTION_0..0x60 => {
            let vector = code - EXIT_EXCEPTION_0;
            GuestExit::Fault {
                syndrome: vector | error,
                gpa: None,
                write: vector == PAGE_FAULT && info1 & PF_WRITE != 0,
            }
        }
        _ => GuestExit::Fault {
            syndrome: NO_VECTOR | ((code & 0xFFFF_FFFF) << 32),
            gpa: None,
            write: false,
        },
    }
}
