//! Scenario 4, acceptance: the guest cannot accept with forged or stale evidence (nonce,
//! digest, counter; evidence from before an unbind and rebind); the host cannot accept on the
//! guest's behalf (a guest call from the host is `Denied`); another TVM cannot see or accept
//! this TVM's vdevice. Only fresh evidence from the guest itself makes it RUN.

use tsm_abi::CallId;
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};

use crate::driver::{Exit, World, raw_call};
use crate::layout::{GuestArg, SCRATCH_GPA, Script, VBDF_BASE};
use crate::{HostEnv, Outcome};

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    let probe = GuestArg {
        script: Script::AcceptProbe,
        vbdf: VBDF_BASE,
        count: 1,
    };
    let other = GuestArg {
        script: Script::OtherTvm,
        vbdf: VBDF_BASE,
        count: 1,
    };
    let a = w.add_tvm(env, &[probe.encode()])?;
    let b = w.add_tvm(env, &[other.encode()])?;
    w.connect_pdev(env)?;
    let ty = super::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, a, ty)?;
    let v = w.add_vdev(env, a, viommu, 0)?;
    must!(w.bind(env, v)?, "VDEV_BIND");
    w.activate(env, a)?;
    w.activate(env, b)?;

    // The host tries to accept for the guest, with evidence in memory it owns.
    let ev = w.pool.ns(env)?;
    refused!(
        raw_call(env, CallId::G_VDEV_ACCEPT, &[u64::from(VBDF_BASE), ev.0]),
        Status::new(StatusCode::Denied),
        "G_VDEV_ACCEPT from the host"
    );
    refused!(
        raw_call(
            env,
            CallId::G_VDEV_ACCEPT,
            &[u64::from(VBDF_BASE), SCRATCH_GPA.0]
        ),
        Status::new(StatusCode::Denied),
        "G_VDEV_ACCEPT from the host with the guest's GPA"
    );
    ensure!(
        w.state(env, v)? == VdevState::Locked,
        "host accept changed the vdevice"
    );

    // Another TVM names the vdevice by its vBDF: it does not exist there.
    w.run_expect(env, b, 0, Exit::Exited(0))?;
    ensure!(
        w.state(env, v)? == VdevState::Locked,
        "another TVM changed the vdevice"
    );

    // The guest: forged evidence refused field by field, then yields.
    w.run_expect(env, a, 0, Exit::Yielded)?;
    ensure!(
        w.state(env, v)? == VdevState::Locked,
        "refused evidence changed the vdevice"
    );
    // Unbind and bind again: new nonce, new counter; the guest's saved evidence is stale.
    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    must!(w.bind(env, v)?, "VDEV_BIND again");
    w.run_expect(env, a, 0, Exit::Exited(0))?;
    ensure!(
        w.state(env, v)? == VdevState::Run,
        "fresh evidence did not reach RUN"
    );
    say!("acceptance: host and other TVM refused, stale evidence refused, fresh accepted");
    w.finish(env)
}
