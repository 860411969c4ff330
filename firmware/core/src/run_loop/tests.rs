//! The run loop over a scripted HAL: the host's traps and the guest's exits come from lists,
//! and the test checks what the loop handed back to each.

extern crate std;

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::vec::Vec;

use tsm_abi::CallId;
use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_platform::run::{
    EntryError, GuestCpu, GuestExit, Handled, HostCpu, HostExit, HostTrap, Resume,
};
use tsm_platform::{AddressMapFormat, ExitCode};
use zerocopy::FromBytes;

use crate::run::CONTEXT_OFFSET;
use crate::testing::Harness;
use crate::tests::{build_tvm, harness};

const ENTRY: u64 = 0x20_0000;
const ARG0: u64 = 0xA5A5;
const CPU: u64 = 1;

fn regs(call: CallId, args: &[u64]) -> CallRegs {
    let mut r = CallRegs {
        fid: u64::from(call.fid()),
        args: [0; 6],
    };
    r.args[..args.len()].copy_from_slice(args);
    r
}

/// The host: its traps in order (a non-call trap carries the HAL's verdict on it); the results
/// its calls were completed with and the traps it was asked about, in order.
#[derive(Default)]
struct Host {
    traps: VecDeque<HostExit<HostTrap>>,
    results: Vec<CallResult>,
    judged: Vec<HostTrap>,
    /// A call is outstanding until it is completed: the loop must not run the host meanwhile.
    pending: bool,
    /// The (entry, argument) of each start, in order.
    starts: Vec<(u64, u64)>,
    /// Idle waits so far; the script ends (a panic) at [`IDLE_LIMIT`].
    idles: std::cell::Cell<u32>,
}

/// Idle waits after which a test's CPU stops waiting (no other CPU will start it).
const IDLE_LIMIT: u32 = 3;
/// What the scripted host panics with when it has idled [`IDLE_LIMIT`] times.
struct IdledOut;

impl HostCpu for Host {
    type Trap = HostTrap;

    fn run(&mut self) -> HostExit<HostTrap> {
        assert!(
            !self.pending,
            "the host ran again before its call completed"
        );
        let exit = self.traps.pop_front().expect("the host's script ended");
        self.pending = matches!(exit, HostExit::Call(_));
        exit
    }

    fn complete_call(&mut self, result: &CallResult) {
        assert!(self.pending, "a call completed that the host did not make");
        self.pending = false;
        self.results.push(*result);
    }

    fn handle_trap(&mut self, trap: HostTrap) -> HostTrap {
        self.judged.push(trap);
        trap
    }

    fn start(&mut self, entry: u64, arg: u64) {
        assert!(
            !self.pending,
            "the host was started with a call outstanding"
        );
        self.starts.push((entry, arg));
    }

    fn idle(&self) {
        self.idles.set(self.idles.get() + 1);
        if self.idles.get() == IDLE_LIMIT {
            std::panic::panic_any(IdledOut);
        }
    }
}

/// The vCPUs: each trap is the next exit from the list (an `Err` fails the entry); records how
/// each run was entered and each call completed in place, and what `on_leave` (run where a HAL
/// saves the vCPU, after the core ended the host's VCPU_RUN) said each time.
#[derive(Default)]
struct Guest<'a> {
    exits: RefCell<VecDeque<Result<GuestExit, EntryError>>>,
    entries: RefCell<Vec<(Pa, Pa, Resume)>>,
    resumed: RefCell<Vec<CallResult>>,
    on_leave: Option<Box<dyn Fn() -> bool + 'a>>,
    left: RefCell<Vec<bool>>,
}

impl GuestCpu for Guest<'_> {
    fn run_guest<T>(
        &self,
        context: Pa,
        root: Pa,
        resume: Resume,
        mut on_exit: impl FnMut(GuestExit) -> Handled<T>,
    ) -> Result<T, EntryError> {
        self.entries.borrow_mut().push((context, root, resume));
        loop {
            let exit = self
                .exits
                .borrow_mut()
                .pop_front()
                .expect("the guest's script ended")?;
            match on_exit(exit) {
                Handled::Reply(r) => self.resumed.borrow_mut().push(r),
                Handled::Leave(t) | Handled::Finish(t) => {
                    if let Some(probe) = &self.on_leave {
                        self.left.borrow_mut().push(probe());
                    }
                    return Ok(t);
                }
            }
        }
    }
}

/// Runs the loop until the run ends; returns how it ended.
fn run(h: &Harness, host: &mut Host, guest: &Guest<'_>) -> ExitCode {
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        super::run(&h.tsm, CPU, host, guest, super::Start::Host)
    }))
    .expect_err("the loop returns only by powering off");
    *ended
        .downcast_ref::<ExitCode>()
        .expect("the run ended by powering off")
}

fn ok(out: [u64; 4]) -> CallResult {
    CallResult::ok(out)
}

fn exited(reason: ExitReason) -> CallResult {
    ok([u64::from(reason.raw()), 0, 0, 0])
}

/// An active TVM with one vCPU at [`ENTRY`]: its root table, the vCPU, an exit-record granule.
fn active_vcpu(h: &Harness) -> (Pa, Pa, Pa) {
    let t = build_tvm(h, 10);
    let vcpu = h.delegate(20);
    h.host(CallId::VCPU_CREATE, &[t.tvm.0, vcpu.0, ENTRY, ARG0])
        .unwrap();
    h.host(CallId::TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    (t.root, vcpu, h.granule(40))
}

#[test]
fn calls_guest_runs_and_entry_errors_go_through_the_core() {
    let h = harness(AddressMapFormat::ArmStage2);
    let (root, vcpu, record) = active_vcpu(&h);
    let vcpu_run = HostExit::Call(regs(CallId::VCPU_RUN, &[vcpu.0, record.0]));
    let fault_gpa = Gpa(0x1234_5000);

    let mut host = Host {
        traps: VecDeque::from([
            HostExit::Call(regs(CallId::VERSION, &[0x1_0000])),
            // A guest call is answered in the guest; the fault ends the host's VCPU_RUN.
            vcpu_run,
            // A trap the HAL lets the host survive.
            HostExit::Trap(HostTrap::Survived),
            // The HAL cannot enter the vCPU.
            vcpu_run,
            // The faulting access is retried, then the guest ends.
            vcpu_run,
            HostExit::Call(regs(CallId::SYSTEM_OFF, &[0])),
        ]),
        ..Host::default()
    };
    let guest = Guest {
        exits: RefCell::new(VecDeque::from([
            Ok(GuestExit::Call(regs(CallId::G_VERSION, &[0x1_0000]))),
            Ok(GuestExit::Fault {
                syndrome: 0x9200_0047,
                gpa: Some(fault_gpa),
                write: true,
            }),
            Err(EntryError::BadContext),
            Ok(GuestExit::Call(regs(CallId::G_EXIT, &[7]))),
        ])),
        ..Guest::default()
    };

    assert_eq!(run(&h, &mut host, &guest), ExitCode::Success);

    let version = h.host(CallId::VERSION, &[0x1_0000]).unwrap();
    let fault = exited(ExitReason::Fault);
    assert_eq!(
        host.results,
        [ok(version), fault, fault, exited(ExitReason::GuestExit)]
    );
    assert_eq!(host.judged, [HostTrap::Survived]);
    let g_version = h
        .call_as(
            crate::Origin::Guest { vcpu },
            CallId::G_VERSION,
            &[0x1_0000],
        )
        .unwrap();
    let (context, root) = (Pa(vcpu.0 + CONTEXT_OFFSET), root);
    assert_eq!(
        *guest.entries.borrow(),
        [
            (
                context,
                root,
                Resume::Start {
                    entry: Gpa(ENTRY),
                    arg0: ARG0
                }
            ),
            (context, root, Resume::Continue),
            (context, root, Resume::Continue),
        ]
    );
    // The answered guest call completed in the loaded guest: no second entry for it.
    assert_eq!(*guest.resumed.borrow(), [ok(g_version)]);
    // The last VCPU_RUN's record: GUEST_EXIT with the guest's code.
    let rec = read_record(&h, record);
    assert_eq!((rec.reason, rec.code), (ExitReason::GuestExit.raw(), 7));
}

/// The HAL saves a vCPU only after the core ended the host's VCPU_RUN: until then the vCPU must
/// stay claimed, or another CPU's VCPU_RUN would load its context before it is saved (found by
/// the four-CPU race on x86_64). Afterwards it can be run again.
#[test]
fn a_vcpu_stays_claimed_until_the_hal_has_left_it() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let (_, vcpu, record) = active_vcpu(&h);
    let vcpu_run = HostExit::Call(regs(CallId::VCPU_RUN, &[vcpu.0, record.0]));
    let mut host = Host {
        traps: VecDeque::from([
            vcpu_run,
            vcpu_run,
            HostExit::Call(regs(CallId::SYSTEM_OFF, &[0])),
        ]),
        ..Host::default()
    };
    let other_record = h.granule(41);
    let guest = Guest {
        exits: RefCell::new(VecDeque::from([
            // A host call: DENIED_CALL ends the host's VCPU_RUN.
            Ok(GuestExit::Call(regs(CallId::VERSION, &[0x1_0000]))),
            Ok(GuestExit::Call(regs(CallId::G_EXIT, &[3]))),
        ])),
        // Another CPU's VCPU_RUN of the same vCPU while this CPU's HAL still holds it.
        on_leave: Some(Box::new(|| {
            h.host(CallId::VCPU_RUN, &[vcpu.0, other_record.0])
                == Err(tsm_abi::Status::arg(tsm_abi::StatusCode::ObjectState, 1))
        })),
        ..Guest::default()
    };
    assert_eq!(run(&h, &mut host, &guest), ExitCode::Success);
    assert_eq!(*guest.left.borrow(), [true, true]);
    assert_eq!(
        host.results,
        [
            exited(ExitReason::DeniedCall),
            exited(ExitReason::GuestExit)
        ]
    );
}

/// A host interrupt ends the host's VCPU_RUN with INTERRUPT and nothing else in the record;
/// the next VCPU_RUN continues the vCPU where it was.
#[test]
fn an_interrupt_ends_the_run_and_the_next_continues() {
    let h = harness(AddressMapFormat::ArmStage2);
    let (_, vcpu, record) = active_vcpu(&h);
    let vcpu_run = HostExit::Call(regs(CallId::VCPU_RUN, &[vcpu.0, record.0]));
    let mut host = Host {
        traps: VecDeque::from([
            vcpu_run,
            vcpu_run,
            HostExit::Call(regs(CallId::SYSTEM_OFF, &[0])),
        ]),
        ..Host::default()
    };
    let guest = Guest {
        exits: RefCell::new(VecDeque::from([
            Ok(GuestExit::Interrupt),
            Ok(GuestExit::Call(regs(CallId::G_EXIT, &[5]))),
        ])),
        ..Guest::default()
    };
    assert_eq!(run(&h, &mut host, &guest), ExitCode::Success);
    assert_eq!(
        host.results,
        [exited(ExitReason::Interrupt), exited(ExitReason::GuestExit)]
    );
    let resumes: Vec<Resume> = guest.entries.borrow().iter().map(|e| e.2).collect();
    assert!(matches!(
        resumes.as_slice(),
        [Resume::Start { .. }, Resume::Continue]
    ));
    let rec = read_record(&h, record);
    assert_eq!((rec.reason, rec.code), (ExitReason::GuestExit.raw(), 5));
}

#[test]
fn an_entry_error_is_a_fault_exit_without_an_address() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let (_, vcpu, record) = active_vcpu(&h);
    let mut host = Host {
        traps: VecDeque::from([
            HostExit::Call(regs(CallId::VCPU_RUN, &[vcpu.0, record.0])),
            HostExit::Call(regs(CallId::SYSTEM_OFF, &[0])),
        ]),
        ..Host::default()
    };
    let guest = Guest {
        exits: RefCell::new(VecDeque::from([Err(EntryError::NoTag)])),
        ..Guest::default()
    };
    assert_eq!(run(&h, &mut host, &guest), ExitCode::Success);
    assert_eq!(host.results, [exited(ExitReason::Fault)]);
    let rec = read_record(&h, record);
    assert_eq!(
        (rec.reason, rec.flags, rec.syndrome, rec.gpa),
        (ExitReason::Fault.raw(), ExitFlags::empty().bits(), 0, 0)
    );
    // The run ended: the vCPU can be run (and destroyed) again.
    h.host(CallId::VCPU_DESTROY, &[vcpu.0]).unwrap();
}

#[test]
fn a_fatal_host_trap_ends_the_run_as_a_failure() {
    let h = harness(AddressMapFormat::ArmStage2);
    let mut host = Host {
        traps: VecDeque::from([
            HostExit::Call(regs(CallId::VERSION, &[0x1_0000])),
            HostExit::Trap(HostTrap::Survived),
            HostExit::Trap(HostTrap::Fatal),
        ]),
        ..Host::default()
    };
    assert_eq!(run(&h, &mut host, &Guest::default()), ExitCode::Failure);
    let version = h.host(CallId::VERSION, &[0x1_0000]).unwrap();
    assert_eq!(host.results, [ok(version)]);
    assert_eq!(host.judged, [HostTrap::Survived, HostTrap::Fatal]);
}

/// Runs the loop of a CPU that starts waiting until it has idled out; returns the host.
fn run_waiting(h: &Harness, mut host: Host) -> Host {
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        super::run(
            &h.tsm,
            CPU,
            &mut host,
            &Guest::default(),
            super::Start::Waiting,
        )
    }))
    .expect_err("the loop returns only by powering off");
    assert!(
        ended.is::<IdledOut>(),
        "the CPU was meant to end up waiting"
    );
    host
}

#[test]
fn a_waiting_cpu_runs_no_host_until_it_is_started() {
    let h = harness(AddressMapFormat::ArmStage2);
    let host = run_waiting(&h, Host::default());
    assert!(host.starts.is_empty() && host.results.is_empty());
}

#[test]
fn a_started_cpu_runs_the_host_at_its_entry_until_the_host_stops_it() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let entry = h.granule(20).0;
    h.host(CallId::HOST_CPU_START, &[CPU, entry, 5]).unwrap();
    let host = Host {
        traps: VecDeque::from([
            HostExit::Call(regs(CallId::VERSION, &[0x1_0000])),
            HostExit::Call(regs(CallId::HOST_CPU_STOP, &[])),
        ]),
        ..Host::default()
    };
    let host = run_waiting(&h, host);
    assert_eq!(host.starts, [(entry, 5)]);
    // VERSION completed; HOST_CPU_STOP does not return.
    let version = h.host(CallId::VERSION, &[0x1_0000]).unwrap();
    assert_eq!(host.results, [ok(version)]);
    // Stopped: it may be started again.
    h.host(CallId::HOST_CPU_START, &[CPU, entry, 6]).unwrap();
    assert_eq!(h.tsm.take_cpu_start(CPU), Some((entry, 6)));
}

fn read_record(h: &Harness, record: Pa) -> VcpuExit {
    let mut b = [0u8; size_of::<VcpuExit>()];
    h.sim.host_read(record, &mut b).unwrap();
    VcpuExit::read_from_bytes(&b).unwrap()
}
