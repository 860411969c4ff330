//! Scenario 7, SMP: two CPUs issue calls at the same time on the same objects for a bounded
//! number of iterations. CPU 0 binds and unbinds a vdevice through the device while both race
//! to delegate, map, unmap and undelegate the same granules in the same TVM and query the
//! vdevice; CPU 1 also pokes the vdevice's pending operation with a malformed buffer. Every
//! call must end in success or in one of the refusals its race allows; afterwards everything
//! is torn down and every granule is back in NS (the build machine also runs the invariant
//! checker).

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::{Error, host};
use tsm_abi::comm::CommHeader;
use tsm_abi::params::MapFlags;
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode::*};
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::World;
use crate::layout::L3_GPA;
use crate::link::Link;
use crate::{Fail, HostEnv, Outcome};

/// Granules both CPUs fight over.
pub const RACE_GRANULES: usize = 8;
/// Where they are mapped (inside the level-3 table, clear of the other pages).
const RACE_GPA: u64 = L3_GPA.0 + 0x14_0000;

/// What the CPUs share.
#[derive(Clone, Copy, Debug)]
pub struct Shared {
    /// The TVM (NEW; tables present).
    pub tvm: Pa,
    /// The vdevice (UNLOCKED between CPU 0's bind/unbind rounds).
    pub vdev: Pa,
    /// NS granules at the start.
    pub granules: [Pa; RACE_GRANULES],
    /// CPU 1's COMMUNICATE buffer, with a reserved header field set.
    pub bad_comm: Pa,
}

/// Builds the TVM, the PDEV, a vdevice and the contested granules.
pub fn setup<E: HostEnv>(env: &mut E) -> Outcome<(World, Shared)> {
    let mut w = World::new(env)?;
    let t = w.add_tvm(env, &[0])?;
    w.connect_pdev(env)?;
    let ty = super::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    let mut granules = [Pa(0); RACE_GRANULES];
    for g in &mut granules {
        *g = w.pool.ns(env)?;
    }
    let bad_comm = w.pool.ns(env)?;
    let head = CommHeader {
        reserved0: 1,
        ..CommHeader::new_zeroed()
    };
    ensure!(env.write(bad_comm, head.as_bytes()), "write bad header");
    let shared = Shared {
        tvm: w.tvm(t)?.tvm,
        vdev: w.vdev(v)?.pa,
        granules,
        bad_comm,
    };
    Ok((w, shared))
}

fn allowed<T>(r: tsm_abi::api::Result<T>, ok: &[Status], what: &'static str) -> Outcome<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(Error::Tsm(s)) if ok.contains(&s) => Ok(false),
        Err(e) => Err(Fail {
            what,
            line: line!(),
            got: crate::driver::raw_error(e),
        }),
    }
}

/// What one CPU got done.
#[derive(Clone, Copy, Default, Debug)]
pub struct Tally {
    /// Calls that succeeded.
    pub succeeded: u64,
    /// Calls refused with a status their race allows.
    pub lost_races: u64,
}

/// One CPU's share: `iterations` rounds of racing calls. CPU 0 passes the device link.
pub fn worker<E: HostEnv>(
    env: &mut E,
    cpu: usize,
    s: &Shared,
    mut link: Option<&mut Link>,
    iterations: u32,
) -> Outcome<Tally> {
    let st = Status::arg;
    let mut tally = Tally::default();
    let mut count = |won: bool| {
        if won {
            tally.succeeded += 1;
        } else {
            tally.lost_races += 1;
        }
    };
    for i in 0..iterations as usize {
        let k = (i * 3 + cpu) % RACE_GRANULES;
        let g = s
            .granules
            .get(k)
            .copied()
            .ok_or(Fail::new("granule", line!()))?;
        let gpa = Gpa(RACE_GPA + k as u64 * GRANULE_SIZE);
        // Each granule goes through delegate, map, unmap, undelegate on successive visits, with
        // the two CPUs a step apart.
        let won = match (i / RACE_GRANULES + cpu) % 4 {
            0 => allowed(
                host::granule_delegate(env, g),
                &[st(GranuleState, 1)],
                "racing DELEGATE",
            )?,
            1 => allowed(
                host::map_private(env, s.tvm, gpa, g, None, MapFlags::READ | MapFlags::WRITE),
                &[st(GranuleState, 3), st(AlreadyMapped, 2)],
                "racing MAP_PRIVATE",
            )?,
            2 => match host::unmap(env, s.tvm, gpa) {
                Ok(pa) => {
                    ensure!(pa == g, "UNMAP returned another granule", pa.0);
                    true
                }
                Err(e) => allowed::<()>(Err(e), &[st(NotMapped, 2)], "racing UNMAP")?,
            },
            _ => allowed(
                host::granule_undelegate(env, g),
                &[st(GranuleState, 1)],
                "racing UNDELEGATE",
            )?,
        };
        count(won);
        let (state, _) = must!(host::vdev_get_state(env, s.vdev), "racing VDEV_GET_STATE");
        ensure!(
            state != VdevState::Error && state != VdevState::Run,
            "vdevice state under the race",
            state.raw()
        );
        match link.as_deref_mut() {
            Some(link) if i % 8 == 0 => {
                let first = host::vdev_bind(env, s.vdev, link.comm);
                must!(link.drive(env, s.vdev, first)?, "racing VDEV_BIND");
                let first = host::vdev_unbind(env, s.vdev, link.comm);
                must!(link.drive(env, s.vdev, first)?, "racing VDEV_UNBIND");
                count(true);
            }
            Some(_) => {}
            None => count(allowed(
                host::communicate(env, s.vdev, s.bad_comm),
                &[st(NoOperation, 1), st(InvalidBuffer, 2)],
                "racing COMMUNICATE with a malformed buffer",
            )?),
        }
    }
    Ok(tally)
}

/// Puts the contested granules back in NS, then the usual teardown and checks.
pub fn finish<E: HostEnv>(env: &mut E, w: World, s: &Shared) -> Outcome {
    for (k, &g) in s.granules.iter().enumerate() {
        let gpa = Gpa(RACE_GPA + k as u64 * GRANULE_SIZE);
        allowed(
            host::unmap(env, s.tvm, gpa),
            &[Status::arg(NotMapped, 2)],
            "UNMAP after the race",
        )?;
        allowed(
            host::granule_undelegate(env, g),
            &[Status::arg(GranuleState, 1)],
            "UNDELEGATE after the race",
        )?;
    }
    w.finish(env)
}

/// On one CPU the scenario cannot run: it needs a second CPU issuing calls at the same time
/// ([`setup`], then [`worker`] on each CPU, then [`finish`]: the host payload's `smp.rs` and
/// the build machine's `s7_smp` do that).
pub fn run_single_cpu<E: HostEnv>(_env: &mut E) -> Outcome {
    Err(Fail::new(
        "SMP needs a second CPU issuing calls at the same time: run setup, worker on each CPU, finish",
        line!(),
    ))
}
