//! The VCPU_RUN protocol over the simulated platform: the test plays the HAL run loop and
//! feeds [`GuestExit`] values as a guest would trap.

extern crate std;

use tsm_abi::CallId;
use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};
use tsm_hal::platform::{AddressMapFormat, PhysMem};
use zerocopy::FromBytes;

use super::{CONTEXT_OFFSET, GuestExit, GuestStep, HostStep, Resume};
use crate::testing::Harness;
use crate::tests::{FORMATS, build_tvm, harness, s};

const ENTRY: u64 = 0x20_0000;
const ARG0: u64 = 0xA5A5;
/// NS granule for exit records.
const RECORD: u64 = 40;

struct Vm {
    h: Harness,
    tvm: Pa,
    root: Pa,
    vcpu: Pa,
    record: Pa,
}

/// A TVM with one vCPU, activated unless `active` is false.
fn vm(format: AddressMapFormat, active: bool) -> Vm {
    let h = harness(format);
    let t = build_tvm(&h, 10);
    let vcpu = h.delegate(20);
    h.host(CallId::VCPU_CREATE, &[t.tvm.0, vcpu.0, ENTRY, ARG0])
        .unwrap();
    if active {
        h.host(CallId::TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    }
    let record = h.granule(RECORD);
    Vm {
        h,
        tvm: t.tvm,
        root: t.root,
        vcpu,
        record,
    }
}

fn regs(call: CallId, args: &[u64]) -> CallRegs {
    let mut r = CallRegs {
        fid: u64::from(call.fid()),
        args: [0; 6],
    };
    r.args[..args.len()].copy_from_slice(args);
    r
}

impl Vm {
    fn run(&self) -> HostStep {
        self.h
            .tsm
            .host_call(&regs(CallId::VCPU_RUN, &[self.vcpu.0, self.record.0]))
    }

    fn trap(&self, exit: GuestExit) -> GuestStep {
        self.h.tsm.guest_exit(self.vcpu, exit)
    }

    fn call(&self, call: CallId, args: &[u64]) -> GuestStep {
        self.trap(GuestExit::Call(regs(call, args)))
    }

    fn record(&self) -> VcpuExit {
        let mut b = [0u8; 64];
        self.h.sim.host_read(self.record, &mut b).unwrap();
        VcpuExit::read_from_bytes(&b).unwrap()
    }

    fn enter(&self) -> Resume {
        match self.run() {
            HostStep::Enter(e) => {
                assert_eq!(
                    (e.vcpu, e.tvm, e.root, e.context),
                    (self.vcpu, self.tvm, self.root, Pa(self.vcpu.0 + CONTEXT_OFFSET))
                );
                e.resume
            }
            other => panic!("VCPU_RUN did not enter the guest: {other:?}"),
        }
    }
}

/// The host's VCPU_RUN result for an exit `reason`.
fn exited(reason: ExitReason) -> GuestStep {
    GuestStep::ToHost(CallResult::ok([u64::from(reason.raw()), 0, 0, 0]))
}

#[test]
fn first_run_starts_at_the_entry_and_g_exit_ends_the_vcpu() {
    for f in FORMATS {
        let m = vm(f, true);
        assert_eq!(
            m.enter(),
            Resume::Start {
                entry: Gpa(ENTRY),
                arg0: ARG0
            }
        );
        // A guest call that needs no host comes back to the guest.
        match m.call(CallId::G_VERSION, &[0x1_0000]) {
            GuestStep::Resume(Resume::Return(r)) => assert_eq!(r.status, 0),
            other => panic!("G_VERSION: {other:?}"),
        }
        assert_eq!(m.call(CallId::G_EXIT, &[7]), exited(ExitReason::GuestExit));
        let rec = m.record();
        assert_eq!(
            (rec.reason, rec.code, rec.flags),
            (ExitReason::GuestExit.raw(), 7, 0)
        );
        // Never again; the vCPU can be destroyed and the TVM torn down.
        m.h.refused(
            CallId::VCPU_RUN,
            &[m.vcpu.0, m.record.0],
            s(StatusCode::ObjectState, 1),
        );
        m.h.host(CallId::VCPU_DESTROY, &[m.vcpu.0]).unwrap();
        m.h.check();
    }
}

#[test]
fn run_is_refused_for_new_tvms_destroyed_vcpus_and_bad_records() {
    let m = vm(AddressMapFormat::ArmStage2, false);
    let run = |rec: u64| [m.vcpu.0, rec];
    m.h.refused(
        CallId::VCPU_RUN,
        &run(m.record.0),
        s(StatusCode::ObjectState, 1),
    );
    m.h.host(CallId::TVM_ACTIVATE, &[m.tvm.0]).unwrap();
    let bad = Status::arg(StatusCode::InvalidBuffer, 2);
    m.h.refused(CallId::VCPU_RUN, &run(m.record.0 + 4), bad);
    m.h.refused(CallId::VCPU_RUN, &run(m.record.0 + 4064), bad);
    m.h.refused(CallId::VCPU_RUN, &run(m.h.granule(1).0), bad);
    m.h.refused(CallId::VCPU_RUN, &run(m.h.granule(11).0), bad);
    m.h.refused(
        CallId::VCPU_RUN,
        &[m.tvm.0, m.record.0],
        s(StatusCode::BadHandle, 1),
    );
    m.h.host(CallId::VCPU_DESTROY, &[m.vcpu.0]).unwrap();
    m.h.refused(
        CallId::VCPU_RUN,
        &run(m.record.0),
        s(StatusCode::BadHandle, 1),
    );
}

#[test]
fn a_running_vcpu_cannot_be_run_again_or_destroyed() {
    let m = vm(AddressMapFormat::X86_64FourLevel, true);
    m.enter();
    m.h.refused(
        CallId::VCPU_RUN,
        &[m.vcpu.0, m.record.0],
        s(StatusCode::ObjectState, 1),
    );
    m.h.refused(
        CallId::VCPU_DESTROY,
        &[m.vcpu.0],
        s(StatusCode::ObjectState, 1),
    );
    // Once its run ended (a fault), both work again.
    let fault = GuestExit::Fault {
        syndrome: 0x9200_0047,
        gpa: Some(Gpa(0x1234_5678)),
        write: true,
    };
    assert_eq!(m.trap(fault), exited(ExitReason::Fault));
    assert_eq!(m.enter(), Resume::Continue);
    assert_eq!(m.trap(fault), exited(ExitReason::Fault));
    m.h.host(CallId::VCPU_DESTROY, &[m.vcpu.0]).unwrap();
}

#[test]
fn faults_report_the_page_not_the_offset() {
    let m = vm(AddressMapFormat::ArmStage2, true);
    m.enter();
    let step = m.trap(GuestExit::Fault {
        syndrome: 0x9200_0047,
        gpa: Some(Gpa(0x1234_5678)),
        write: true,
    });
    assert_eq!(step, exited(ExitReason::Fault));
    let rec = m.record();
    assert_eq!(rec.reason, ExitReason::Fault.raw());
    assert_eq!(
        rec.flags,
        (ExitFlags::GPA_VALID | ExitFlags::WRITE).bits()
    );
    assert_eq!((rec.gpa, rec.syndrome), (0x1234_5000, 0x9200_0047));
    // An exception with no address (an undefined instruction, an interrupt).
    assert_eq!(m.enter(), Resume::Continue);
    let step = m.trap(GuestExit::Fault {
        syndrome: 0x0200_0000,
        gpa: None,
        write: false,
    });
    assert_eq!(step, exited(ExitReason::Fault));
    let rec = m.record();
    assert_eq!((rec.flags, rec.gpa, rec.syndrome), (0, 0, 0x0200_0000));
}

#[test]
fn host_calls_from_the_guest_exit_as_denied_and_return_denied() {
    let m = vm(AddressMapFormat::ArmStage2, true);
    m.enter();
    let step = m.call(CallId::GRANULE_DELEGATE, &[m.h.granule(50).0]);
    assert_eq!(step, exited(ExitReason::DeniedCall));
    let rec = m.record();
    assert_eq!(
        (rec.reason, rec.fid),
        (
            ExitReason::DeniedCall.raw(),
            u64::from(CallId::GRANULE_DELEGATE.fid())
        )
    );
    // The granule was not touched; the guest learns `Denied` on its next run.
    assert!(m.h.sim.host_can_reach(m.h.granule(50)));
    assert_eq!(
        m.enter(),
        Resume::Return(CallResult::status(Status::new(StatusCode::Denied)))
    );
    // Unknown IDs are answered in the guest without an exit.
    match m.trap(GuestExit::Call(CallRegs {
        fid: 0xC600_02FF,
        args: [0; 6],
    })) {
        GuestStep::Resume(Resume::Return(r)) => {
            assert_eq!(r.status, Status::new(StatusCode::NotSupported).to_raw())
        }
        other => panic!("unknown call: {other:?}"),
    }
}

#[test]
fn guest_exits_of_a_vcpu_that_is_not_running_are_refused() {
    let m = vm(AddressMapFormat::ArmStage2, true);
    let step = m.call(CallId::G_EXIT, &[0]);
    assert!(matches!(step, GuestStep::ToHost(r) if r.status != 0));
    // Nothing happened: the vCPU still runs normally.
    assert!(matches!(m.enter(), Resume::Start { .. }));
}

#[test]
fn an_exit_record_the_host_delegated_meanwhile_is_not_written() {
    let m = vm(AddressMapFormat::ArmStage2, true);
    m.enter();
    m.h.delegate(RECORD);
    let step = m.call(CallId::G_EXIT, &[3]);
    assert_eq!(
        step,
        GuestStep::ToHost(CallResult::status(Status::arg(
            StatusCode::InvalidBuffer,
            2
        )))
    );
    let mut b = [0u8; 64];
    m.h.sim.read(m.record, &mut b).unwrap();
    assert_eq!(b, [0; 64], "nothing written into a secure granule");
    // The run ended and the exit stuck: G_EXIT is final.
    m.h.refused(
        CallId::VCPU_RUN,
        &[m.vcpu.0, m.h.granule(41).0],
        s(StatusCode::ObjectState, 1),
    );
}

#[test]
fn host_garbage_in_the_vcpu_granule_does_not_survive_create() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    let g = h.host_put(20, &[0xFF; 4096]);
    h.delegate(20);
    h.host(CallId::VCPU_CREATE, &[t.tvm.0, g.0, ENTRY, 0])
        .unwrap();
    h.host(CallId::TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    let step = h.tsm.host_call(&regs(
        CallId::VCPU_RUN,
        &[g.0, h.granule(RECORD).0],
    ));
    assert!(
        matches!(step, HostStep::Enter(e) if matches!(e.resume, Resume::Start { .. })),
        "{step:?}"
    );
    let mut ctx = std::vec![0u8; super::CONTEXT_SIZE as usize];
    h.sim.read(Pa(g.0 + CONTEXT_OFFSET), &mut ctx).unwrap();
    assert!(ctx.iter().all(|&b| b == 0));
}
