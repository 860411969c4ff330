//! Scenarios 22 and 23, an authenticated device (issue 14). `spdm`: the PDEV connects with
//! SPDM (chain, signed measurements, secure session), TDISP runs sealed in the session, the
//! guest reads and checks the chain and measurements, is refused with changed digests and
//! accepts to RUN; the host updates the session's keys, unbinds and disconnects (END_SESSION).
//! `spdm-mitm`: a host in the middle flips a record's byte, replays a record, presents another
//! device or a chain that does not verify, and a device's signature is bad: each ends as
//! `DeviceError` with the objects in ERROR, or as evidence the guest tells apart (another
//! device's chain: the guest does not accept) — never as a RUN the guest did not choose.

use tsm_abi::api::{self, host};
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_device_model::identity::{DEVICE, DeviceIdentity, OTHER_DEVICE, malformed};
use tsm_device_model::spdm::SpdmMisbehaviour;

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, Script, VBDF_BASE, exit_code};
use crate::link::Mitm;
use crate::{Fail, HostEnv, Outcome};

fn device_error() -> api::Result<()> {
    Err(api::Error::Tsm(Status::new(StatusCode::DeviceError)))
}

/// A world with one TVM running [`Script::Authenticated`] and a vdevice of it under a vIOMMU;
/// the PDEV connected with SPDM to a responder with `identity`. Returns the world and the
/// connect's verdict.
fn world<E: HostEnv>(env: &mut E, identity: DeviceIdentity) -> Outcome<(World, api::Result<()>)> {
    let mut w = World::new(env)?;
    let arg = GuestArg {
        script: Script::Authenticated,
        vbdf: VBDF_BASE,
        count: 1,
    };
    w.add_tvm(env, &[arg.encode()])?;
    let connected = w.connect_pdev_spdm(env, identity)?;
    Ok((w, connected))
}

/// Adds the vdevice of TVM 0 (function 0).
fn add_vdev<E: HostEnv>(w: &mut World, env: &mut E) -> Outcome<usize> {
    let ty = super::first_viommu_type(w)?;
    let viommu = w.add_viommu(env, 0, ty)?;
    w.add_vdev(env, 0, viommu, 0)
}

/// The honest run.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let (mut w, connected) = world(env, DEVICE)?;
    must!(connected, "PDEV_CONNECT (SPDM)");
    let pdev = w.pdev.ok_or(Fail::new("no PDEV", line!()))?;
    let v = add_vdev(&mut w, env)?;
    must!(w.bind(env, v)?, "VDEV_BIND in the session");
    w.activate(env, 0)?;
    w.run_expect(env, 0, 0, Exit::Exited(0))?;
    ensure!(
        w.state(env, v)? == VdevState::Run,
        "accepted vdevice not RUN"
    );
    let first = host::pdev_key_update(env, pdev, w.link.comm);
    must!(w.link.drive(env, pdev, first)?, "PDEV_KEY_UPDATE");
    refused!(
        host::pdev_disconnect(env, pdev, w.link.comm).map(|_| ()),
        Status::arg(StatusCode::InUse, tsm_abi::status::ObjectKind::Vdev as u8),
        "PDEV_DISCONNECT with a vdevice bound"
    );
    must!(w.unbind(env, v)?, "VDEV_UNBIND under the new keys");
    must!(w.bind(env, v)?, "VDEV_BIND again");
    must!(w.unbind(env, v)?, "VDEV_UNBIND again");
    let first = host::pdev_disconnect(env, pdev, w.link.comm);
    must!(w.link.drive(env, pdev, first)?, "PDEV_DISCONNECT");
    let in_session = w.link.spdm.as_ref().is_some_and(|s| s.in_session());
    ensure!(
        !in_session,
        "the device still has a session after END_SESSION"
    );
    say!("spdm: authenticated connect, bind and accept in the session, key update, end session");
    w.finish(env)
}

/// The hostile host in the middle. Each case builds and tears down its own world in a
/// function of its own: a debug build gives every local its own stack slot, and the host
/// payload's stack does not hold six worlds at once.
pub fn run_mitm<E: HostEnv>(env: &mut E) -> Outcome {
    flipped_record(env)?;
    replayed_record(env)?;
    reordered_record(env)?;
    another_device(env)?;
    for case in [
        BadConnect::Chain,
        BadConnect::Flipped,
        BadConnect::Signature,
    ] {
        bad_connect(env, case)?;
    }
    Ok(())
}

/// A flipped bit in a secured TDISP record during the bind.
#[inline(never)]
fn flipped_record<E: HostEnv>(env: &mut E) -> Outcome {
    let (mut w, connected) = world(env, DEVICE)?;
    must!(connected, "PDEV_CONNECT (SPDM)");
    let v = add_vdev(&mut w, env)?;
    w.link.mitm = Mitm::Flip {
        at: w.link.round_trips,
    };
    ensure!(
        w.bind(env, v)? == device_error(),
        "tampered record not refused"
    );
    ensure!(w.state(env, v)? == VdevState::Error, "vdevice not in ERROR");
    w.link.mitm = Mitm::Honest;
    ensure!(
        w.bind(env, v)?.is_err(),
        "a bind went through after the session failed"
    );
    say!("spdm-mitm: a flipped record byte ends the session: DEVICE_ERROR");
    w.finish(env)
}

/// A replayed record: the second bind message answered with the first answer again.
#[inline(never)]
fn replayed_record<E: HostEnv>(env: &mut E) -> Outcome {
    let (mut w, connected) = world(env, DEVICE)?;
    must!(connected, "PDEV_CONNECT (SPDM)");
    let v = add_vdev(&mut w, env)?;
    w.link.mitm = Mitm::Replay {
        at: w.link.round_trips + 1,
    };
    ensure!(
        w.bind(env, v)? == device_error(),
        "replayed record not refused"
    );
    ensure!(w.state(env, v)? == VdevState::Error, "vdevice not in ERROR");
    say!("spdm-mitm: a replayed record: DEVICE_ERROR");
    w.finish(env)
}

/// The device's answers reordered (one sequence number skipped).
#[inline(never)]
fn reordered_record<E: HostEnv>(env: &mut E) -> Outcome {
    let (mut w, connected) = world(env, DEVICE)?;
    must!(connected, "PDEV_CONNECT (SPDM)");
    let v = add_vdev(&mut w, env)?;
    if let Some(s) = w.link.spdm.as_mut() {
        s.enable(SpdmMisbehaviour::SkipSequenceNumber);
    }
    ensure!(
        w.bind(env, v)? == device_error(),
        "out-of-order record not refused"
    );
    say!("spdm-mitm: an out-of-order record: DEVICE_ERROR");
    w.finish(env)
}

/// Another device in place of the expected one: the connect verifies (it is a real device),
/// the guest sees another chain digest and does not accept.
#[inline(never)]
fn another_device<E: HostEnv>(env: &mut E) -> Outcome {
    let (mut w, connected) = world(env, OTHER_DEVICE)?;
    must!(connected, "PDEV_CONNECT (SPDM) to another device");
    let v = add_vdev(&mut w, env)?;
    must!(w.bind(env, v)?, "VDEV_BIND");
    w.activate(env, 0)?;
    w.run_expect(env, 0, 0, Exit::Exited(exit_code::UNTRUSTED_DEVICE))?;
    ensure!(
        w.state(env, v)? == VdevState::Locked,
        "another device reached RUN"
    );
    say!("spdm-mitm: another device: the guest sees its chain and does not accept");
    w.finish(env)
}

/// A connect that must fail.
#[derive(Clone, Copy)]
enum BadConnect {
    /// A chain that does not verify.
    Chain,
    /// A flipped byte in MEASUREMENTS (inside the signed transcript).
    Flipped,
    /// A bad MEASUREMENTS signature.
    Signature,
}

#[inline(never)]
fn bad_connect<E: HostEnv>(env: &mut E, case: BadConnect) -> Outcome {
    let mut w = World::new(env)?;
    let (identity, what) = match case {
        BadConnect::Chain => (malformed::BROKEN_CHAINING, "a chain that does not verify"),
        BadConnect::Flipped => (DEVICE, "a flipped byte in MEASUREMENTS"),
        BadConnect::Signature => (DEVICE, "a bad MEASUREMENTS signature"),
    };
    w.link.use_spdm(identity)?;
    match case {
        // GET_VERSION, CAPABILITIES, ALGORITHMS, DIGESTS, CERTIFICATE × 2, MEASUREMENTS.
        BadConnect::Flipped => {
            w.link.mitm = Mitm::Flip {
                at: w.link.round_trips + 6,
            }
        }
        BadConnect::Signature => {
            if let Some(s) = w.link.spdm.as_mut() {
                s.enable(SpdmMisbehaviour::BadMeasurementSignature);
            }
        }
        BadConnect::Chain => {}
    }
    let connected = w.connect_pdev_spdm_on_link(env)?;
    ensure!(connected == device_error(), "bad connect not refused");
    let pdev = w.pdev.ok_or(Fail::new("no PDEV", line!()))?;
    // ERROR: no second connect.
    refused!(
        host::pdev_connect(env, pdev, w.link.comm, tsm_abi::addr::Pa(0)).map(|_| ()),
        Status::arg(StatusCode::ObjectState, 1),
        "PDEV_CONNECT after a failed connect"
    );
    say!("spdm-mitm: {=str}: DEVICE_ERROR, PDEV in ERROR", what);
    w.finish(env)
}
