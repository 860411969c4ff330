//! The run loop: what every CPU of the TSM does once boot hands it the host, the same on both
//! arches. The HAL supplies the machine ([`HostCpu`]: run the host until it traps, complete its
//! call, judge a trap that is not a call; [`GuestCpu`]: run a vCPU until it traps); the loop
//! hands every call to the core's VCPU_RUN protocol and never sees a register frame. The calls
//! it makes are those of [`crate::run`] ("Who calls what"); besides them:
//!
//! - a host trap that is not a call goes to [`HostCpu::handle_trap`]: which traps a host
//!   survives is the HAL's decision (docs/design.md, "Traps from the host"). After
//!   [`HostTrap::Survived`] the host runs again; after [`HostTrap::Fatal`] the run ends as a
//!   failure (the platform's power-off);
//! - a CPU other than the boot CPU starts waiting in the TSM ([`Start::Waiting`]), and a CPU
//!   whose host called HOST_CPU_STOP or PSCI CPU_OFF goes back to it: it idles
//!   ([`HostCpu::idle`]) until a start request names it ([`Tsm::take_cpu_start`]), then the
//!   HAL starts the host afresh at the request's entry ([`HostCpu::start`]);
//! - a vCPU the HAL cannot enter ([`GuestCpu::run_guest`] fails: a TSM bug) is logged and
//!   becomes a FAULT exit without an address, so the host's VCPU_RUN ends and the host may tear
//!   the vCPU down; on every arch.

use tsm_abi::addr::Pa;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_platform::ExitCode;
use tsm_platform::run::{GuestCpu, GuestExit, HostCpu, HostExit, HostTrap};

use crate::run::{GuestEntry, HostStep, Leaving};
use crate::tsm::Tsm;

/// A defmt log line in the firmware image (feature `defmt`); nothing on the build machine,
/// which has no defmt logger.
macro_rules! log {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::$level!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        {
            $( let _ = &$arg; )*
        }
    }};
}

/// How a CPU's run loop begins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Start {
    /// The boot CPU: the HAL made its host context at the host's boot entry.
    Host,
    /// Every other CPU: it waits in the TSM until the host starts it (`crate::cpus`).
    Waiting,
}

/// Runs CPU `cpu` for good: the host, handing each of its calls to the core, or waiting for
/// the host to start it.
pub fn run<H: HostCpu, G: GuestCpu>(
    tsm: &Tsm<'_>,
    cpu: u64,
    host: &mut H,
    guest: &G,
    start: Start,
) -> ! {
    if start == Start::Waiting {
        wait_for_start(tsm, cpu, host);
    }
    loop {
        match host.run() {
            // By reference, here and for the result: moving them out would copy the registers
            // and the result on every host call.
            HostExit::Call(ref regs) => {
                let next = host_call(tsm, cpu, guest, regs, |result| host.complete_call(result));
                if next == AfterCall::Off {
                    tsm.cpu_stopped(cpu);
                    log!(
                        info,
                        "CPU {=u64}: the host stopped it; waiting in the TSM",
                        cpu
                    );
                    wait_for_start(tsm, cpu, host);
                }
            }
            HostExit::Trap(trap) => match host.handle_trap(trap) {
                HostTrap::Survived => {}
                HostTrap::Fatal => tsm.platform.power_off(ExitCode::Failure),
            },
        }
    }
}

/// Waits in the TSM until a start request names CPU `cpu`, then has the HAL start the host
/// there.
fn wait_for_start<H: HostCpu>(tsm: &Tsm<'_>, cpu: u64, host: &mut H) {
    loop {
        if let Some((entry, arg)) = tsm.take_cpu_start(cpu) {
            log!(
                info,
                "CPU {=u64}: the host starts it at {=u64:#x}",
                cpu,
                entry
            );
            host.start(entry, arg);
            return;
        }
        host.idle();
    }
}

/// What the CPU does after a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AfterCall {
    /// The call completed: run the host.
    Host,
    /// The host stopped this CPU (the call does not complete).
    Off,
}

/// One host call, with the guest run a VCPU_RUN starts; `complete` gets what completes the
/// call.
pub fn host_call<G: GuestCpu>(
    tsm: &Tsm<'_>,
    cpu: u64,
    guest: &G,
    regs: &CallRegs,
    complete: impl FnOnce(&CallResult),
) -> AfterCall {
    // By value: matched by reference, the step lives in one stack slot whose address
    // `run_vcpu` takes, so every reply went there and back (ten loads and stores per call).
    match tsm.host_call(regs) {
        HostStep::Reply(result) => {
            log_call(cpu, regs, &result);
            complete(&result);
        }
        HostStep::Enter(e) => {
            let result = run_vcpu(tsm, guest, &e);
            log_call(cpu, regs, &result);
            complete(&result);
        }
        HostStep::Off => return AfterCall::Off,
    }
    AfterCall::Host
}

// Inline: the loop is instantiated in the image, and an out-of-line call (compiled in tsm-core)
// would keep its arguments in memory for nothing where the log level leaves it empty.
#[inline]
fn log_call(cpu: u64, regs: &CallRegs, result: &CallResult) {
    log!(
        debug,
        "CPU {=u64} host call {=u64:#x}({=u64:#x}, {=u64:#x}, {=u64:#x}) -> {=u64:#x} [{=u64:#x}, {=u64:#x}, {=u64:#x}, {=u64:#x}]",
        cpu,
        regs.fid,
        regs.args[0],
        regs.args[1],
        regs.args[2],
        result.status,
        result.out[0],
        result.out[1],
        result.out[2],
        result.out[3]
    );
}

/// Runs a claimed vCPU until the core ends the host's VCPU_RUN; returns the call's result.
/// Every trap goes to the core while the vCPU stays loaded in the HAL: a guest call the core
/// answers ([`Handled::Reply`](tsm_platform::run::Handled)) is completed in place, without a world switch, after the
/// same dispatch as any other trap; `e` is the claim, so the vCPU's running flag is not read
/// again per trap ([`Tsm::guest_exit_entered`]).
///
/// Out of line on aarch64 only: in its own frame the guest loop no longer spills around
/// `run_loop::run`'s (every host handler is inlined there), which saves aarch64's guest call
/// 13, its refused guest call 11 and VCPU_RUN 30 (and 1 to 17 on the host calls). On x86_64
/// the HAL's entry set-up then leaves `run`'s frame and costs more than the loop saves:
/// VCPU_RUN +39, the refused guest call +27, also with that set-up as one out-of-line HAL
/// function (docs/benchmarks.md, `gcall6`, `gcall7`).
#[cfg_attr(target_arch = "aarch64", inline(never))]
fn run_vcpu<G: GuestCpu>(tsm: &Tsm<'_>, guest: &G, e: &GuestEntry) -> CallResult {
    let on_exit = |exit: GuestExit| {
        log_exit(e.vcpu, &exit);
        tsm.guest_exit_entered(e, exit)
    };
    let leaving = match guest.run_guest(e.context, e.root, e.resume, on_exit) {
        Ok(leaving) => leaving,
        Err(err) => {
            log!(
                error,
                "vCPU {=u64:#x} cannot be entered (context {=u64:#x}, root {=u64:#x}): {=str}",
                e.vcpu.0,
                e.context.0,
                e.root.0,
                err.name()
            );
            Leaving::Fault {
                syndrome: 0,
                gpa: None,
                write: false,
            }
        }
    };
    // The HAL has saved the vCPU (or never loaded it): another CPU may claim it now.
    tsm.leave(e, &leaving)
}

// Inline, as `log_call`.
#[inline]
fn log_exit(vcpu: Pa, exit: &GuestExit) {
    match *exit {
        GuestExit::Call(regs) => log!(
            debug,
            "vCPU {=u64:#x} call {=u64:#x}({=u64:#x}, {=u64:#x})",
            vcpu.0,
            regs.fid,
            regs.args[0],
            regs.args[1]
        ),
        GuestExit::Fault {
            syndrome,
            gpa,
            write,
        } => log!(
            debug,
            "vCPU {=u64:#x} fault: syndrome {=u64:#x}, GPA valid {=bool} {=u64:#x}, write {=bool}",
            vcpu.0,
            syndrome,
            gpa.is_some(),
            gpa.map_or(0, |g| g.0),
            write
        ),
        GuestExit::Interrupt => log!(debug, "vCPU {=u64:#x} interrupted", vcpu.0),
    }
}

#[cfg(test)]
mod tests;
