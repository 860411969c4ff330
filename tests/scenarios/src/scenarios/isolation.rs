//! Scenario 2, isolation: the host's loads and stores to a delegated granule, a TVM's private
//! page, a TVM object and the TSM's own memory are blocked and the data never reaches it; a
//! TVM cannot touch another TVM's memory or the host's unshared memory, nor name either in a
//! call; the host cannot map one TVM's private page into another.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::host;
use tsm_abi::params::MapFlags;
use tsm_abi::status::{Status, StatusCode};

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, OTHER_GPA, SCRATCH_GPA, Script, VBDF_BASE};
use crate::{Fail, HostEnv, Outcome, Probe};

/// What the host writes into the other TVM's page through MAP_PRIVATE; it must never read it
/// back from the page itself.
const SECRET: u8 = 0x5E;

fn blocked<E: HostEnv>(env: &mut E, pa: Pa) -> Outcome {
    for write in [false, true] {
        match env.probe(pa, write) {
            Probe::Blocked => {}
            Probe::Reached => {
                return Err(Fail {
                    what: "host reached secure memory",
                    line: line!(),
                    got: pa.0,
                });
            }
            Probe::Unsupported => {
                return Err(Fail {
                    what: "this environment cannot resume after an expected host fault (HAL: turn isolation probes into logged, skipped accesses)",
                    line: line!(),
                    got: pa.0,
                });
            }
        }
    }
    Ok(())
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    // TVM A: one vCPU names memory it does not own in calls, two touch it.
    let host_gpa = Gpa(w.pool.ns(env)?.0 & ((1 << crate::layout::GPA_BITS) - 1) & !0xFFF);
    let a = w.add_tvm(
        env,
        &[
            GuestArg {
                script: Script::IsoBuffers,
                vbdf: VBDF_BASE,
                count: 0,
            }
            .encode(),
            GuestArg::touch(OTHER_GPA),
            GuestArg::touch(host_gpa),
        ],
    )?;
    // TVM B holds a secret page at the GPA A will touch.
    let b = w.add_tvm(env, &[0])?;
    let secret = w.map_private(env, b, OTHER_GPA, Some(&[SECRET; GRANULE_SIZE as usize]))?;
    // The host cannot map B's private page into A, neither as shared nor as private.
    let tvm_a = w.tvm(a)?.tvm;
    refused!(
        host::map_shared(env, tvm_a, OTHER_GPA, secret, MapFlags::READ),
        Status::arg(StatusCode::GranuleState, 3),
        "MAP_SHARED of another TVM's private page"
    );
    refused!(
        host::map_private(env, tvm_a, OTHER_GPA, secret, None, MapFlags::READ),
        Status::arg(StatusCode::GranuleState, 3),
        "MAP_PRIVATE of another TVM's private page"
    );
    w.activate(env, a)?;

    // The guest's.
    w.run_expect(env, a, 0, Exit::Exited(0))?;
    w.run_expect(env, a, 1, Exit::Fault { gpa: OTHER_GPA.0 })?;
    w.run_expect(env, a, 2, Exit::Fault { gpa: host_gpa.0 })?;
    say!("guest accesses to another TVM's page and to host memory faulted");
    // The host's own accesses.
    let free = w.pool.secure(env)?;
    let private = w
        .tvm(a)?
        .page(SCRATCH_GPA)
        .ok_or(Fail::new("scratch", line!()))?;
    let tvm_b = w.tvm(b)?.tvm;
    for pa in [free, private, secret, tvm_b, env.tsm_memory()] {
        blocked(env, pa)?;
    }
    say!("host loads and stores to 5 kinds of secure memory were blocked");

    w.finish(env)
}
