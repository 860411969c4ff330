//! Scenario 2, isolation, in two parts.
//!
//! - [`run`]: a TVM cannot touch another TVM's memory or the host's unshared memory (each access
//!   faults and exits to the host, which carries on), nor name them in a call; the host cannot
//!   map one TVM's private page into another. A vCPU that makes its own state one the CPU will
//!   not enter (x86_64: EFER.SVME cleared, its own to write) stops only itself: FAULT exits, on
//!   that run and the next, and the TVM's other vCPUs and the host go on.
//! - [`host_access`]: the host loads from a delegated granule, stores to a TVM's private page,
//!   loads from the TSM's own memory or from the platform IOMMU's registers, one access per run,
//!   so that each run's log shows the TSM blocking that access (docs/design.md "Traps from the
//!   host"): on aarch64 it skips the access, on x86_64 it injects #GP(0), and the host goes on
//!   to its teardown either way. The data never reaches the host; xtask's rows check the TSM's
//!   log line with the address.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::host;
use tsm_abi::exit::VcpuExit;
use tsm_abi::params::MapFlags;
use tsm_abi::status::{Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, OTHER_GPA, SHARED_GPA, Script, VBDF_BASE};
use crate::{Fail, HostEnv, Outcome, Probe};

/// What the host writes into the other TVM's page through MAP_PRIVATE; it must never read it
/// back from the page itself.
const SECRET: u8 = 0x5E;

/// Runs the guest part and the call-level checks.
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
            GuestArg {
                script: Script::BreakEntry,
                vbdf: 0,
                count: 0,
            }
            .encode(),
        ],
    )?;
    // TVM B holds a secret page at the GPA A will touch.
    let b = w.add_tvm(env, &[0])?;
    let secret = w.map_private(env, b, OTHER_GPA, Some(&[SECRET; GRANULE_SIZE as usize]))?;
    // The host cannot map B's private page into A, neither as shared nor as private; and
    // nothing but a private page goes to a private GPA (§5.2).
    let tvm_a = w.tvm(a)?.tvm;
    refused!(
        host::map_shared(env, tvm_a, SHARED_GPA, secret, MapFlags::READ),
        Status::arg(StatusCode::GranuleState, 3),
        "MAP_SHARED of another TVM's private page"
    );
    let host_page = w.pool.ns(env)?;
    refused!(
        host::map_shared(env, tvm_a, OTHER_GPA, host_page, MapFlags::READ),
        Status::arg(StatusCode::OutOfRange, 2),
        "MAP_SHARED of a host page at a private GPA"
    );
    refused!(
        host::map_private(env, tvm_a, OTHER_GPA, secret, None, MapFlags::READ),
        Status::arg(StatusCode::GranuleState, 3),
        "MAP_PRIVATE of another TVM's private page"
    );
    w.activate(env, a)?;

    // First, so the runs below show the TVM's other vCPUs unaffected.
    broken_entry(&mut w, env, a, 3)?;
    w.run_expect(env, a, 0, Exit::Exited(0))?;
    w.run_expect(env, a, 1, Exit::Fault { gpa: OTHER_GPA.0 })?;
    w.run_expect(env, a, 2, Exit::Fault { gpa: host_gpa.0 })?;
    say!("guest accesses to another TVM's page and to host memory faulted");
    w.finish(env)
}

/// vCPU `i` of TVM `t` runs [`Script::BreakEntry`]. On SVM (docs/design.md "x86_64: the host
/// and TVMs as SVM guests"): its call after clearing EFER.SVME is a #UD, a FAULT exit with
/// vector 6, and its next run VMRUN's refusal, vector 0xFF with VMEXIT_INVALID's code.
fn broken_entry<E: HostEnv>(w: &mut World, env: &mut E, t: usize, i: usize) -> Outcome {
    if !env.svm_guests() {
        return w.run_expect(env, t, i, Exit::Exited(0));
    }
    const UD: u64 = 6;
    const VMEXIT_INVALID: u64 = 0xFF | (0xFFFF_FFFF << 32);
    for want in [UD, VMEXIT_INVALID] {
        w.run_expect(env, t, i, Exit::Fault { gpa: 0 })?;
        let mut rec = VcpuExit::new_zeroed();
        ensure!(env.read(w.exit, rec.as_mut_bytes()), "read exit record");
        ensure!(
            rec.syndrome == want,
            "syndrome of a vCPU that cleared EFER.SVME",
            rec.syndrome
        );
    }
    say!("a vCPU that cleared its EFER.SVME faulted, and faults again at its next run");
    Ok(())
}

/// Secure memory the host touches in [`host_access`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostTarget {
    /// A load from a delegated granule no object uses yet.
    Delegated,
    /// A store to a TVM's private page that holds data.
    Private,
    /// A load from the TSM's own memory.
    Tsm,
    /// A load from the platform IOMMU's registers (the TSM's device: SMMU, VT-d).
    Iommu,
}

/// The pool granule the `Delegated` and `Private` runs touch: the first one the scenario takes
/// after [`World::new`]'s three buffers. xtask's rows name its address (pool base + 3 granules,
/// docs/design.md "Traps from the host"); the run fails if the granule is another.
pub const TARGET_INDEX: u64 = 3;

/// One host access to secure memory: it must be blocked, and the host goes on.
pub fn host_access<E: HostEnv>(env: &mut E, target: HostTarget) -> Outcome {
    let mut w = World::new(env)?;
    let (pa, write, what) = match target {
        HostTarget::Delegated => (w.pool.secure(env)?, false, "a delegated granule"),
        HostTarget::Private => {
            let page = w.pool.secure(env)?;
            let t = w.add_tvm(env, &[])?;
            w.map_private_granule(
                env,
                t,
                OTHER_GPA,
                page,
                Some(&[SECRET; GRANULE_SIZE as usize]),
            )?;
            (page, true, "a TVM's private page")
        }
        HostTarget::Tsm => (env.tsm_memory(), false, "the TSM's memory"),
        HostTarget::Iommu => {
            let devices = env
                .devices()
                .ok_or(Fail::new("this environment has no IOMMU", line!()))?;
            (devices.iommu, false, "the IOMMU's registers")
        }
    };
    if matches!(target, HostTarget::Delegated | HostTarget::Private) {
        ensure!(
            pa == w.pool.granule(TARGET_INDEX),
            "the touched granule is not the one xtask's row names",
            pa.0
        );
    }
    let verb = if write { "stores to" } else { "loads from" };
    say!(
        "isolation: the host {=str} {=str} at {=u64:#x}; the TSM must block it",
        verb,
        what,
        pa.0
    );
    blocked(env, pa, write)?;
    say!(
        "isolation: the TSM blocked the host's access at {=u64:#x}",
        pa.0
    );
    w.finish(env)
}

fn blocked<E: HostEnv>(env: &mut E, pa: Pa, write: bool) -> Outcome {
    match env.probe(pa, write) {
        Probe::Blocked => Ok(()),
        Probe::Reached => Err(Fail {
            what: "host reached secure memory",
            line: line!(),
            got: pa.0,
        }),
        Probe::Unavailable => Err(Fail {
            what: "this host cannot make the access the probe needs",
            line: line!(),
            got: pa.0,
        }),
    }
}
