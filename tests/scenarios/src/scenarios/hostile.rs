//! Scenario 5, hostile device: for each way the device model can break TDISP (an error for
//! LOCK or for the report, a wrong response type, a truncated, oversized or garbage message, a
//! report that changes between portions, a wrong interface ID or version), bind ends in
//! `DeviceError` with the vdevice in ERROR: no evidence, no accept, no T=1. A device that
//! refuses START (its nonce check failed) leaves the guest's accept with `DeviceError`, the
//! vdevice in ERROR, never RUN.

use tsm_abi::addr::Iova;
use tsm_abi::api::host;
use tsm_abi::event::{DmaInjectFlags, EventReason, PasidArg};
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::{ErrorCode, RequestCode};
use tsm_device_model::Misbehaviour;

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, SCRATCH_GPA, SEGMENT, Script, VBDF_BASE};
use crate::{HostEnv, Outcome};

const KNOBS: [Misbehaviour; 9] = [
    Misbehaviour::ErrorFor {
        request: RequestCode::LockInterface,
        code: ErrorCode::InvalidInterfaceState,
    },
    Misbehaviour::ErrorFor {
        request: RequestCode::GetDeviceInterfaceReport,
        code: ErrorCode::Unspecified,
    },
    Misbehaviour::WrongResponseType,
    Misbehaviour::TruncatedResponse,
    Misbehaviour::OversizedResponse,
    Misbehaviour::Garbage,
    Misbehaviour::ReportChangesBetweenPortions,
    Misbehaviour::WrongInterfaceId,
    Misbehaviour::WrongVersion,
];

/// T=1 DMA of vdevice `v` to private memory must fault.
fn no_t1<E: HostEnv>(w: &mut World, env: &mut E, v: usize) -> Outcome {
    if !w.dma_checks() {
        return Ok(());
    }
    let d = w.vdev(v)?;
    refused!(
        host::test_dma_inject(
            env,
            SEGMENT,
            d.pbdf,
            PasidArg::NoPasid,
            Iova(SCRATCH_GPA.0),
            DmaInjectFlags::T_BIT
        ),
        Status::arg(StatusCode::DmaFault, EventReason::T1NotAllowed.raw() as u8),
        "T=1 DMA of a vdevice that is not RUN"
    );
    Ok(())
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    let rounds = GuestArg {
        script: Script::HostileRounds,
        vbdf: VBDF_BASE,
        count: KNOBS.len() as u8,
    };
    let start = GuestArg {
        script: Script::StartFails,
        vbdf: VBDF_BASE + 1,
        count: 1,
    };
    let t = w.add_tvm(env, &[rounds.encode(), start.encode()])?;
    w.connect_pdev(env)?;
    let ty = super::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    let v2 = w.add_vdev(env, t, viommu, 1)?;
    w.activate(env, t)?;
    for (i, &knob) in KNOBS.iter().enumerate() {
        w.link.dev.enable(knob);
        let verdict = w.bind(env, v)?;
        ensure!(
            verdict.err().and_then(|e| e.status()) == Some(Status::new(StatusCode::DeviceError)),
            "bind with a hostile device did not end in DeviceError",
            i
        );
        ensure!(
            w.state(env, v)? == VdevState::Error,
            "hostile device: vdevice not in ERROR",
            i
        );
        no_t1(&mut w, env, v)?;
        // The guest sees ERROR with no evidence and cannot accept.
        w.run_expect(env, t, 0, Exit::Yielded)?;
        ensure!(
            w.state(env, v)? == VdevState::Error,
            "guest moved a vdevice out of ERROR",
            i
        );
        // Recover for the next knob: an honest device stops the interface.
        w.link.dev.clear_misbehaviour();
        must!(w.unbind(env, v)?, "VDEV_UNBIND from ERROR");
        ensure!(
            w.state(env, v)? == VdevState::Unlocked,
            "unbind from ERROR",
            i
        );
    }
    w.run_expect(env, t, 0, Exit::Exited(0))?;
    say!(
        "{=usize} hostile device behaviours: ERROR every time, never RUN, no T=1",
        KNOBS.len()
    );

    // A device that refuses START.
    must!(w.bind(env, v2)?, "VDEV_BIND");
    w.link.dev.enable(Misbehaviour::ErrorFor {
        request: RequestCode::StartInterface,
        code: ErrorCode::InvalidNonce,
    });
    w.run_expect(env, t, 1, Exit::Exited(0))?;
    ensure!(
        w.state(env, v2)? == VdevState::Error,
        "failed START: vdevice not in ERROR"
    );
    no_t1(&mut w, env, v2)?;
    say!("a device that refused START left the vdevice in ERROR");
    w.finish(env)
}
