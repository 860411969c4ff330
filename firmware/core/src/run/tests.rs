//! The VCPU_RUN protocol over the simulated platform: the test plays the HAL run loop and
//! feeds [`GuestExit`] values as a guest would trap.

extern crate std;

use tsm_abi::CallId;
use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::{AddressMapFormat, PhysMem};
use zerocopy::{FromBytes, FromZeros};

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
                    (
                        self.vcpu,
                        self.tvm,
                        self.root,
                        Pa(self.vcpu.0 + CONTEXT_OFFSET)
                    )
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

/// Guest calls of an entered vCPU (the run loop's path, [`crate::tsm::Tsm::guest_exit_entered`])
/// take the TVM's root and GPA width from the claim: a buffer past the width is refused before
/// any lock, one in range but unmapped (under the level-3 table, or where no table is) by the
/// walk, a vBDF that is none or that the TVM does not have by its slots; each with its
/// documented status and nothing changed. A mapped buffer still works.
#[test]
fn entered_guest_calls_refuse_bad_buffers_and_vbdfs() {
    use tsm_platform::run::Handled;
    let invalid_buffer = s(StatusCode::InvalidBuffer, 1).to_raw();
    for f in FORMATS {
        let m = vm(f, true);
        let page = m.h.delegate(21);
        m.h.host(CallId::MAP_PRIVATE, &[m.tvm.0, 0x1000, page.0, u64::MAX, 3])
            .unwrap();
        let e = match m.run() {
            HostStep::Enter(e) => e,
            other => panic!("VCPU_RUN did not enter the guest: {other:?}"),
        };
        assert_eq!(e.gpa_bits, 40);
        let call = |c: CallId, args: &[u64]| {
            let before = m.h.snapshot();
            let r = match m
                .h
                .tsm
                .guest_exit_entered(&e, GuestExit::Call(regs(c, args)))
            {
                Handled::Reply(r) => r,
                other => panic!("{} {args:x?}: {other:?}", c.name()),
            };
            if r.status != 0 {
                assert!(
                    m.h.snapshot() == before,
                    "{} {args:x?} changed state",
                    c.name()
                );
            }
            m.h.check();
            r
        };
        for gpa in [1 << 40, u64::MAX - 7, 0x2000, 1 << 38, (1 << 39) + 0x1000] {
            assert_eq!(
                call(CallId::G_CONSOLE_WRITE, &[gpa, 8]).status,
                invalid_buffer,
                "{gpa:#x}"
            );
        }
        assert_eq!(call(CallId::G_CONSOLE_WRITE, &[0x1000, 8]).status, 0);
        assert_eq!(
            call(CallId::G_VDEV_INFO, &[1 << 16, 0x1000]).status,
            s(StatusCode::InvalidArgument, 1).to_raw()
        );
        assert_eq!(
            call(CallId::G_VDEV_INFO, &[1, 0x1000]).status,
            s(StatusCode::BadHandle, 1).to_raw()
        );
        let info = call(CallId::G_TVM_INFO, &[]);
        assert_eq!((info.status, info.out[0], info.out[1]), (0, 40, 1 << 39));
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
    assert_eq!(rec.flags, (ExitFlags::GPA_VALID | ExitFlags::WRITE).bits());
    assert_eq!((rec.gpa, rec.syndrome), (0x1234_5000, 0x9200_0047));
    // An exception with no address (an undefined instruction).
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
fn an_interrupt_exits_with_nothing_but_its_reason_and_the_vcpu_continues() {
    for f in FORMATS {
        let m = vm(f, true);
        m.enter();
        // A fault first, so the record holds fields the interrupt's must clear.
        let fault = GuestExit::Fault {
            syndrome: 0x9200_0047,
            gpa: Some(Gpa(0x1234_5678)),
            write: true,
        };
        assert_eq!(m.trap(fault), exited(ExitReason::Fault));
        assert_eq!(m.enter(), Resume::Continue);
        assert_eq!(m.trap(GuestExit::Interrupt), exited(ExitReason::Interrupt));
        let rec = m.record();
        assert_eq!(
            rec,
            VcpuExit {
                reason: ExitReason::Interrupt.raw(),
                ..VcpuExit::new_zeroed()
            }
        );
        // The run ended (the vCPU can be run again, not destroyed while it runs) and the next
        // one continues where the vCPU was, as often as the host is interrupted.
        for _ in 0..3 {
            assert_eq!(m.enter(), Resume::Continue);
            assert_eq!(m.trap(GuestExit::Interrupt), exited(ExitReason::Interrupt));
        }
        assert_eq!(m.enter(), Resume::Continue);
        assert_eq!(m.call(CallId::G_EXIT, &[0]), exited(ExitReason::GuestExit));
    }
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
    let step = h
        .tsm
        .host_call(&regs(CallId::VCPU_RUN, &[g.0, h.granule(RECORD).0]));
    assert!(
        matches!(step, HostStep::Enter(e) if matches!(e.resume, Resume::Start { .. })),
        "{step:?}"
    );
    let mut ctx = std::vec![0u8; super::CONTEXT_SIZE as usize];
    h.sim.read(Pa(g.0 + CONTEXT_OFFSET), &mut ctx).unwrap();
    assert!(ctx.iter().all(|&b| b == 0));
}

/// A guest call that needs the device: DEVICE_REQUEST, again while the host has not carried
/// the operation, then the guest gets the operation's result.
mod device_request {
    use std::vec::Vec;

    use tsm_abi::CallId::*;
    use tsm_abi::comm::{COMM_HEADER_SIZE, CommHeader, HostIoStatus};
    use tsm_abi::guest::{AcceptEvidence, VdevInfo};
    use tsm_abi::params::{LockFlags, PdevParams, VdevParams};
    use tsm_abi::state::DeviceOp;
    use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, MmioRange, RangeAttributes, ReportFields};
    use tsm_abi::viommu::ViommuType;
    use tsm_device_model::{Device, DeviceConfig, TdiConfig};
    use zerocopy::{FromZeros, IntoBytes};

    use super::*;

    pub(super) const RID_BASE: u16 = 0x0100;
    pub(super) const PBDF: u16 = 0x0101;
    pub(super) const VBDF: u16 = 0x0008;
    pub(super) const COMM: u64 = 22;
    static RANGES: [MmioRange; 1] = [MmioRange {
        first_page: 0x8_0000,
        number_of_pages: 1,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    }];

    pub(super) fn device() -> Device<'static> {
        let tdi = |rid| TdiConfig {
            interface_id: InterfaceId::new(rid, None),
            report: ReportFields {
                interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
                msi_x_message_control: 0,
                lnr_control: 0,
                tph_control: 0,
            },
            mmio_ranges: &RANGES,
            device_specific_info: &[],
        };
        let tdis: &'static [TdiConfig<'static>] =
            std::boxed::Box::leak(std::boxed::Box::new([tdi(RID_BASE), tdi(PBDF)]));
        Device::new(DeviceConfig::new(tdis, [7; 32])).unwrap()
    }

    /// Carries requests to `dev` until the operation on `obj` ends.
    pub(super) fn drive(
        h: &Harness,
        dev: &mut Device<'_>,
        obj: Pa,
        mut r: Result<[u64; 4], Status>,
    ) {
        let comm = h.granule(COMM);
        for _ in 0..64 {
            match r {
                Err(s) if s.code == StatusCode::NeedsDeviceIo => {}
                other => {
                    other.unwrap();
                    return;
                }
            }
            let mut head = CommHeader::new_zeroed();
            h.sim.host_read(comm, head.as_mut_bytes()).unwrap();
            let mut req = std::vec![0u8; head.request_len as usize];
            h.sim
                .host_read(Pa(comm.0 + COMM_HEADER_SIZE as u64), &mut req)
                .unwrap();
            let mut rsp: Vec<u8> = std::vec![0u8; 4032];
            let n = dev.respond(&req, &mut rsp).unwrap_or(0).min(4032);
            head.response_len = n as u32;
            head.host_status = HostIoStatus::Response.raw();
            h.sim.host_write(comm, head.as_bytes()).unwrap();
            h.sim
                .host_write(Pa(comm.0 + COMM_HEADER_SIZE as u64), &rsp[..n])
                .unwrap();
            r = h.host(COMMUNICATE, &[obj.0, comm.0]);
        }
        panic!("operation did not finish");
    }

    /// A PDEV over `dev` (granules 20, 21; COMMUNICATE buffer [`COMM`]), connected.
    pub(super) fn connected_pdev(h: &Harness, dev: &mut Device<'_>) -> (Pa, Pa) {
        let pp = PdevParams {
            rid_base: RID_BASE,
            rid_count: 8,
            ..PdevParams::new_zeroed()
        };
        let pp = h.host_put(20, pp.as_bytes());
        let pdev = h.delegate(21);
        h.host(PDEV_CREATE, &[pdev.0, pp.0]).unwrap();
        let comm = h.granule(COMM);
        let r = h.host(PDEV_CONNECT, &[pdev.0, comm.0]);
        drive(h, dev, pdev, r);
        (pdev, comm)
    }

    /// The vdevice of the tests: [`PBDF`] seen as [`VBDF`], locked without firmware updates.
    pub(super) fn vdev_params() -> VdevParams {
        VdevParams {
            pbdf: PBDF,
            vbdf: VBDF,
            function_id: u32::from(PBDF),
            lock_flags: LockFlags::NO_FW_UPDATE.bits(),
            ..VdevParams::new_zeroed()
        }
    }

    #[test]
    fn accept_exits_for_device_io_and_returns_its_result() {
        let mut dev = device();
        let h = harness(AddressMapFormat::ArmStage2);
        let t = build_tvm(&h, 10);
        let (pdev, comm) = connected_pdev(&h, &mut dev);
        let viommu = h.delegate(23);
        let vtype = u64::from(ViommuType::TsmSmmuv3.raw());
        h.host(VIOMMU_CREATE, &[t.tvm.0, viommu.0, vtype, 0])
            .unwrap();
        let vp = vdev_params();
        let vp = h.host_put(24, vp.as_bytes());
        let vdev = h.delegate(25);
        h.host(VDEV_CREATE, &[vdev.0, pdev.0, viommu.0, vp.0])
            .unwrap();
        let vcpu = h.delegate(26);
        h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, 0x1000, 0]).unwrap();
        let page = h.delegate(27);
        h.host(MAP_PRIVATE, &[t.tvm.0, 0x1000, page.0, u64::MAX, 3])
            .unwrap();
        h.host(TVM_ACTIVATE, &[t.tvm.0]).unwrap();
        let r = h.host(VDEV_BIND, &[vdev.0, comm.0]);
        drive(&h, &mut dev, vdev, r);

        let record = h.granule(RECORD);
        let m = Vm {
            h,
            tvm: t.tvm,
            root: t.root,
            vcpu,
            record,
        };
        assert!(matches!(m.enter(), Resume::Start { .. }));
        // The guest reads the evidence and echoes it.
        let vbdf = u64::from(VBDF);
        match m.call(G_VDEV_INFO, &[vbdf, 0x1000]) {
            GuestStep::Resume(Resume::Return(r)) => assert_eq!(r.status, 0),
            other => panic!("G_VDEV_INFO: {other:?}"),
        }
        let mut b = [0u8; 256];
        m.h.sim.read(page, &mut b).unwrap();
        let info = <VdevInfo as zerocopy::FromBytes>::read_from_bytes(&b).unwrap();
        let ev = AcceptEvidence::from_info(&info);
        m.h.sim.write(Pa(page.0 + 0x800), ev.as_bytes()).unwrap();
        let request = |rec: VcpuExit| {
            assert_eq!(
                (rec.reason, rec.vdev, rec.vdev_op),
                (
                    ExitReason::DeviceRequest.raw(),
                    vdev.0,
                    DeviceOp::Start.raw()
                )
            );
        };
        assert_eq!(
            m.call(G_VDEV_ACCEPT, &[vbdf, 0x1800]),
            exited(ExitReason::DeviceRequest)
        );
        request(m.record());
        // Run again before the host carried START: the same exit, the guest does not run.
        let again = CallResult::ok([u64::from(ExitReason::DeviceRequest.raw()), 0, 0, 0]);
        assert_eq!(m.run(), HostStep::Reply(again));
        request(m.record());
        // The host carries START; the guest's accept returns SUCCESS.
        let r = m.h.host(COMMUNICATE, &[vdev.0, comm.0]);
        drive(&m.h, &mut dev, vdev, r);
        assert_eq!(m.enter(), Resume::Return(CallResult::ok([0; 4])));
        m.h.check();
    }
}

/// Issue 11.2: a guest operation's result reaches only the vCPU that started it, on the
/// incarnation of the vdevice it started it on.
mod guest_op_tickets {
    use tsm_abi::CallId::*;
    use tsm_abi::guest::{AcceptEvidence, VdevInfo};
    use tsm_abi::viommu::ViommuType;
    use zerocopy::IntoBytes;

    use super::device_request::{VBDF, connected_pdev, device, drive, vdev_params};
    use super::*;

    /// One TVM's side: its vIOMMU, vCPU and private page at GPA 0x1000.
    struct Side {
        viommu: Pa,
        vcpu: Pa,
        page: Pa,
        params: Pa,
        record: Pa,
    }

    /// A TVM built from granules `first..first + 10`, active, with one vCPU at its entry.
    fn side(h: &Harness, first: u64) -> Side {
        let t = build_tvm(h, first);
        let viommu = h.delegate(first + 6);
        let vtype = u64::from(ViommuType::TsmSmmuv3.raw());
        h.host(VIOMMU_CREATE, &[t.tvm.0, viommu.0, vtype, 0])
            .unwrap();
        let vcpu = h.delegate(first + 7);
        h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, 0x1000, 0]).unwrap();
        let page = h.delegate(first + 8);
        h.host(MAP_PRIVATE, &[t.tvm.0, 0x1000, page.0, u64::MAX, 3])
            .unwrap();
        h.host(TVM_ACTIVATE, &[t.tvm.0]).unwrap();
        let vp = vdev_params();
        Side {
            viommu,
            vcpu,
            page,
            params: h.host_put(first + 9, vp.as_bytes()),
            record: h.granule(first + 10),
        }
    }

    fn run(h: &Harness, s: &Side) -> HostStep {
        h.tsm
            .host_call(&regs(CallId::VCPU_RUN, &[s.vcpu.0, s.record.0]))
    }

    fn call(h: &Harness, s: &Side, call: CallId, args: &[u64]) -> GuestStep {
        h.tsm.guest_exit(s.vcpu, GuestExit::Call(regs(call, args)))
    }

    /// The vCPU of `s` starts, reads the evidence and calls G_VDEV_ACCEPT: it exits to the
    /// host with DEVICE_REQUEST and waits.
    fn accept_and_wait(h: &Harness, s: &Side) {
        assert!(matches!(run(h, s), HostStep::Enter(_)));
        let vbdf = u64::from(VBDF);
        assert!(matches!(
            call(h, s, G_VDEV_INFO, &[vbdf, 0x1000]),
            GuestStep::Resume(Resume::Return(r)) if r.status == 0
        ));
        let mut b = [0u8; 256];
        h.sim.read(s.page, &mut b).unwrap();
        let info = <VdevInfo as zerocopy::FromBytes>::read_from_bytes(&b).unwrap();
        let ev = AcceptEvidence::from_info(&info);
        h.sim.write(Pa(s.page.0 + 0x800), ev.as_bytes()).unwrap();
        assert_eq!(
            call(h, s, G_VDEV_ACCEPT, &[vbdf, 0x1800]),
            exited(ExitReason::DeviceRequest)
        );
    }

    /// What the waiting guest call of `s` returns when its vCPU runs again.
    fn result(h: &Harness, s: &Side) -> Resume {
        match run(h, s) {
            HostStep::Enter(e) => e.resume,
            other => panic!("the vCPU did not run: {other:?}"),
        }
    }

    /// TVM A waits in G_VDEV_ACCEPT; the host cancels, destroys the vdevice and re-creates
    /// its granule as TVM B's vdevice; B accepts. `b_first`: B's operation completes (and B
    /// collects its result) before A runs again.
    fn cancel_destroy_recreate(b_first: bool) {
        let mut dev = device();
        let h = harness(AddressMapFormat::ArmStage2);
        let a = side(&h, 40);
        let b = side(&h, 60);
        let (pdev, comm) = connected_pdev(&h, &mut dev);
        let vdev = h.delegate(25);
        for (s, next) in [(&a, Some(&b)), (&b, None)] {
            h.host(VDEV_CREATE, &[vdev.0, pdev.0, s.viommu.0, s.params.0])
                .unwrap();
            let r = h.host(VDEV_BIND, &[vdev.0, comm.0]);
            drive(&h, &mut dev, vdev, r);
            accept_and_wait(&h, s);
            if next.is_some() {
                // The host abandons A's START and reuses the granule.
                h.host(OP_CANCEL, &[vdev.0]).unwrap();
                let r = h.host(VDEV_UNBIND, &[vdev.0, comm.0]);
                drive(&h, &mut dev, vdev, r);
                h.host(VDEV_DESTROY, &[vdev.0]).unwrap();
            }
        }
        let r = h.host(COMMUNICATE, &[vdev.0, comm.0]);
        drive(&h, &mut dev, vdev, r);
        let cancelled = Resume::Return(CallResult::status(Status::new(StatusCode::Cancelled)));
        let success = Resume::Return(CallResult::ok([0; 4]));
        if b_first {
            assert_eq!(
                result(&h, &b),
                success,
                "B started the START that succeeded"
            );
            assert_eq!(result(&h, &a), cancelled, "A's operation was cancelled");
        } else {
            assert_eq!(result(&h, &a), cancelled, "A's operation was cancelled");
            assert_eq!(
                result(&h, &b),
                success,
                "B started the START that succeeded"
            );
        }
        let state = h.host(VDEV_GET_STATE, &[vdev.0]).unwrap()[0];
        assert_eq!(state, u64::from(tsm_abi::state::VdevState::Run.raw()));
        h.check();
    }

    #[test]
    fn a_cancelled_accept_never_takes_the_next_incarnations_result() {
        cancel_destroy_recreate(false);
        cancel_destroy_recreate(true);
    }
}
