//! What a CPU's run loop (`tsm_core::run_loop`) needs from the HAL: run the host until it
//! traps, run a TVM vCPU until it traps, and the values that cross between the loop, the core's
//! VCPU_RUN protocol (`tsm_core::run`) and the HAL. `tsm-hal`'s arch modules implement the
//! traits; the loop itself is written once, over these, and never sees a register frame.
//!
//! [`Resume`] and [`GuestExit`] are the core's VCPU_RUN types (`tsm_core::run` re-exports
//! them). They live here because the HALs take and return them as they are: the HALs depend on
//! this crate, not on the core.

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::regs::{CallRegs, CallResult};

/// How the HAL (re)starts a guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resume {
    /// First entry: the HAL builds a fresh frame in the (zeroed) context area: every register
    /// 0 but the PC = `entry` and the first argument register = `arg0`, in the guest's initial
    /// mode (docs/design.md, "Guests").
    Start {
        /// Entry GPA (VCPU_CREATE argument 3).
        entry: Gpa,
        /// First argument register (VCPU_CREATE argument 4).
        arg0: u64,
    },
    /// Continue at the saved PC (after a fault: the faulting instruction is retried).
    Continue,
    /// Complete the call the guest trapped on: the status and result registers get these
    /// values, then continue after the call instruction.
    Return(CallResult),
}

/// Why a guest stopped running (filled by the HAL from the trapped context).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestExit {
    /// A call (aarch64: `hvc #0` or `smc #0`; x86_64: `vmmcall`), registers copied once.
    Call(CallRegs),
    /// A physical interrupt for the host stopped the guest (aarch64: an IRQ or FIQ taken to
    /// EL2; x86_64: an INTR #VMEXIT). The interrupt itself stays pending for the host; the
    /// guest continues at its saved PC when resumed.
    Interrupt,
    /// Anything else: a stage-2 / page fault, another exception (aarch64: an SError too).
    Fault {
        /// aarch64: ESR_EL2; x86_64: vector in 7:0, error code in 63:32.
        syndrome: u64,
        /// The faulting GPA when the fault is on a guest-physical address the TVM's map does
        /// not (or not so) map. Reported granule-aligned.
        gpa: Option<Gpa>,
        /// The access was a write.
        write: bool,
    },
}

/// Why a vCPU could not be entered. Never guest or host input: the core handed the HAL a
/// context or root it cannot use, which is a TSM bug; the loop turns it into a FAULT exit
/// without an address, so the host may tear the vCPU down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryError {
    /// The context area is not a suitably aligned DRAM range outside the TSM, inside one
    /// granule.
    BadContext,
    /// The root is not a DRAM granule the HAL can run a TVM's map from.
    BadRoot,
    /// Every address-space tag is held by a running CPU (aarch64: VMIDs).
    NoTag,
}

impl EntryError {
    /// The variant's name, for the log (this crate has no defmt).
    pub fn name(self) -> &'static str {
        match self {
            EntryError::BadContext => "BadContext",
            EntryError::BadRoot => "BadRoot",
            EntryError::NoTag => "NoTag",
        }
    }
}

/// Why the host stopped running.
#[derive(Clone, Copy, Debug)]
pub enum HostExit<T> {
    /// A call (aarch64: `smc #0` or `hvc #0`; x86_64: `vmmcall`), registers copied once.
    /// Complete it with [`HostCpu::complete_call`] before the host runs again.
    Call(CallRegs),
    /// Anything else, for [`HostCpu::handle_trap`].
    Trap(T),
}

/// What a host trap that is not a call means for the run, as the HAL decides it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostTrap {
    /// A blocked access the host survives: the instruction did not happen, and the host
    /// resumes after it (aarch64) or in its handler of the exception the HAL injected (x86_64:
    /// #GP); docs/design.md, "Traps from the host".
    Survived,
    /// The host cannot go on: the run ends as a failure.
    Fatal,
}

/// The host's context on one CPU.
pub trait HostCpu {
    /// A trap that is not a call, as the HAL recorded it.
    type Trap;

    /// Runs the host until it traps to the TSM.
    fn run(&mut self) -> HostExit<Self::Trap>;

    /// Writes a call's result into the host's result registers; it sees them when it runs
    /// next.
    fn complete_call(&mut self, result: &CallResult);

    /// Logs a trap that is not a call, with what the HAL knows of it, and decides whether the
    /// host survives it (then the HAL has already moved the host past it).
    fn handle_trap(&mut self, trap: Self::Trap) -> HostTrap;

    /// Makes the next [`HostCpu::run`] start the host afresh on this CPU, at `entry` with `arg`
    /// in the arch's entry state for a started CPU (docs/abi.md, HOST_CPU_START; PSCI CPU_ON).
    fn start(&mut self, entry: u64, arg: u64);

    /// Waits a little while this CPU has no host to run: until an event (aarch64 `wfe`, which
    /// [`crate::HostCpus::wake_cpus`] sends) or a short pause.
    fn idle(&self);
}

/// What the core made of one trap of a running vCPU ([`GuestCpu::run_guest`]'s `on_exit`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Handled<T> {
    /// Complete the call the vCPU trapped on with this result (as [`Resume::Return`]) and run
    /// it on. Its state stays loaded on the CPU: a guest call answered this way costs no world
    /// switch. *Why only a result:* nothing else resumes a trapped vCPU in place, and a
    /// [`Resume`] here made every HAL's loop carry a fresh start's set-up on the guest-call
    /// path, in the registers and frame of every guest call.
    Reply(CallResult),
    /// Stop running it: the HAL saves its state in the context area, puts the host's back and
    /// returns `T`.
    Leave(T),
    /// Stop running it for good (G_EXIT: the core marks it exited, and no VCPU_RUN enters it
    /// again): as [`Handled::Leave`], but the HAL need not save its state, which nothing will
    /// load. The host's state still replaces every register the vCPU had, as after `Leave`.
    Finish(T),
}

/// Running TVM vCPUs on the calling CPU.
pub trait GuestCpu {
    /// Runs the vCPU whose saved context is the area at `context` (`CONTEXT_SIZE` bytes of its
    /// VCPU granule, zero when the vCPU was created) on the TVM map rooted at `root` until the
    /// core lets it go. `resume` says what to do with the context first. Every trap goes to
    /// `on_exit` (the core's whole judgement of it: the call's dispatch, the exit record),
    /// with the vCPU's registers still loaded; the vCPU runs on after
    /// [`Handled::Reply`] and the run ends with [`Handled::Leave`]'s or [`Handled::Finish`]'s
    /// value. `on_exit` must
    /// not need the host's EL1 / guest state on the CPU: it runs with the vCPU's, and with the
    /// TSM's own translation (the HAL keeps the host's stage-2 tag current where TLB
    /// maintenance by address depends on it). The core gives the calling CPU the context area
    /// for the whole run: it refuses a second VCPU_RUN and VCPU_DESTROY of a running vCPU.
    fn run_guest<T>(
        &self,
        context: Pa,
        root: Pa,
        resume: Resume,
        on_exit: impl FnMut(GuestExit) -> Handled<T>,
    ) -> Result<T, EntryError>;
}
