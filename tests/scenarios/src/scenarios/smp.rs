//! Scenario 7, SMP: two or four CPUs issue calls at the same time on the same objects. CPU 0
//! binds and unbinds a vdevice through the device while all race to delegate, map, unmap and
//! undelegate the same granules in the same TVM and query the vdevice; the other CPUs also poke
//! the vdevice's pending operation with a malformed buffer. Every call must end in success or
//! in one of the refusals its race allows ([`Got`] names each, and each CPU counts them in a
//! [`Tally`]); afterwards everything is torn down and every granule is back in NS (the build
//! machine also runs the invariant checker). The four-CPU scenario (`smp4`, the host payload's
//! `smp4.rs`) adds vCPUs of one TVM run on every CPU and `edu` DMA at the contested granules.

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

/// Granules the CPUs fight over.
pub const RACE_GRANULES: usize = 8;
/// Where they are mapped (inside the level-3 table, clear of the other pages).
const RACE_GPA: u64 = L3_GPA.0 + 0x14_0000;
/// What a contested granule holds while it is a private page: MAP_PRIVATE copies it from an NS
/// source page, so a device that could read secure memory would find it.
pub const SECRET: u8 = 0x5E;

/// What the CPUs share.
#[derive(Clone, Copy, Debug)]
pub struct Shared {
    /// The TVM (NEW; tables present).
    pub tvm: Pa,
    /// The vdevice (UNLOCKED between CPU 0's bind/unbind rounds).
    pub vdev: Pa,
    /// NS granules at the start.
    pub granules: [Pa; RACE_GRANULES],
    /// The non-zero CPUs' COMMUNICATE buffer, with a reserved header field set.
    pub bad_comm: Pa,
    /// An NS page full of [`SECRET`], the source of every racing MAP_PRIVATE.
    pub secret: Pa,
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
        // Whatever a granule held before is no secret, but must not look like one.
        ensure!(
            env.write(*g, &[0; GRANULE_SIZE as usize]),
            "clear a contested granule"
        );
    }
    let bad_comm = w.pool.ns(env)?;
    let head = CommHeader {
        reserved0: 1,
        ..CommHeader::new_zeroed()
    };
    ensure!(env.write(bad_comm, head.as_bytes()), "write bad header");
    let secret = w.pool.ns(env)?;
    ensure!(
        env.write(secret, &[SECRET; GRANULE_SIZE as usize]),
        "write the secret page"
    );
    let shared = Shared {
        tvm: w.tvm(t)?.tvm,
        vdev: w.vdev(v)?.pa,
        granules,
        bad_comm,
        secret,
    };
    Ok((w, shared))
}

/// What one racing call got: a success, or a refusal the ABI documents for that race.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Got {
    Delegated,
    /// GRANULE_DELEGATE: `GranuleState(1)` (another CPU delegated it first, or it is mapped).
    DelegateLost,
    Mapped,
    /// MAP_PRIVATE: `GranuleState(3)` (the granule is NS or already mapped elsewhere).
    MapLostState,
    /// MAP_PRIVATE: `AlreadyMapped(2)` (another CPU mapped the GPA first).
    MapLostMapped,
    Unmapped,
    /// UNMAP: `NotMapped(2)`.
    UnmapLost,
    Undelegated,
    /// GRANULE_UNDELEGATE: `GranuleState(1)` (NS already, or mapped).
    UndelegateLost,
    /// VDEV_GET_STATE: never ERROR or RUN.
    StateRead,
    /// VDEV_BIND then VDEV_UNBIND driven to completion (CPU 0).
    BoundAndUnbound,
    /// COMMUNICATE with a malformed buffer: `NoOperation(1)` (no operation pending).
    CommNoOperation,
    /// COMMUNICATE with a malformed buffer: `InvalidBuffer(2)` (an operation was pending).
    CommInvalidBuffer,
    /// VCPU_RUN: the vCPU ran its guest calls and stopped at its host call (DENIED_CALL).
    VcpuRan,
    /// VCPU_RUN: `ObjectState(1)`, another CPU runs that vCPU.
    VcpuBusy,
    /// EVENT_READ of the host domain: an `edu` read of a secure granule, refused by the IOMMU.
    DmaFault,
    /// EVENT_READ of the host domain: empty.
    NoDmaFault,
}

impl Got {
    pub const ALL: [Got; 17] = [
        Got::Delegated,
        Got::DelegateLost,
        Got::Mapped,
        Got::MapLostState,
        Got::MapLostMapped,
        Got::Unmapped,
        Got::UnmapLost,
        Got::Undelegated,
        Got::UndelegateLost,
        Got::StateRead,
        Got::BoundAndUnbound,
        Got::CommNoOperation,
        Got::CommInvalidBuffer,
        Got::VcpuRan,
        Got::VcpuBusy,
        Got::DmaFault,
        Got::NoDmaFault,
    ];

    /// How the summary lines name it.
    pub fn name(self) -> &'static str {
        match self {
            Got::Delegated => "DELEGATE ok",
            Got::DelegateLost => "DELEGATE GranuleState(1)",
            Got::Mapped => "MAP_PRIVATE ok",
            Got::MapLostState => "MAP_PRIVATE GranuleState(3)",
            Got::MapLostMapped => "MAP_PRIVATE AlreadyMapped(2)",
            Got::Unmapped => "UNMAP ok",
            Got::UnmapLost => "UNMAP NotMapped(2)",
            Got::Undelegated => "UNDELEGATE ok",
            Got::UndelegateLost => "UNDELEGATE GranuleState(1)",
            Got::StateRead => "VDEV_GET_STATE ok",
            Got::BoundAndUnbound => "VDEV_BIND+UNBIND ok",
            Got::CommNoOperation => "COMMUNICATE(bad) NoOperation(1)",
            Got::CommInvalidBuffer => "COMMUNICATE(bad) InvalidBuffer(2)",
            Got::VcpuRan => "VCPU_RUN DENIED_CALL exit",
            Got::VcpuBusy => "VCPU_RUN ObjectState(1)",
            Got::DmaFault => "EVENT_READ T0_TO_SECURE read fault",
            Got::NoDmaFault => "EVENT_READ empty",
        }
    }

    /// TSM calls behind one count (a bind and an unbind are two calls and their COMMUNICATEs).
    fn calls(self) -> u64 {
        match self {
            Got::BoundAndUnbound => 2,
            _ => 1,
        }
    }

    fn won(self) -> bool {
        matches!(
            self,
            Got::Delegated
                | Got::Mapped
                | Got::Unmapped
                | Got::Undelegated
                | Got::StateRead
                | Got::BoundAndUnbound
                | Got::VcpuRan
        )
    }
}

/// What one CPU got, per [`Got`].
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Counts in [`Got::ALL`] order.
    pub counts: [u64; Got::ALL.len()],
}

impl Tally {
    pub fn add(&mut self, got: Got) {
        if let Some(c) = Got::ALL
            .iter()
            .position(|&g| g == got)
            .and_then(|i| self.counts.get_mut(i))
        {
            *c += 1;
        }
    }

    /// How often `got` came back.
    pub fn count(&self, got: Got) -> u64 {
        Got::ALL
            .iter()
            .position(|&g| g == got)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// TSM calls issued (the device round trips of a bind and unbind not counted).
    pub fn calls(&self) -> u64 {
        Got::ALL.iter().map(|&g| self.count(g) * g.calls()).sum()
    }

    /// Calls that succeeded (the contested-granule calls that won their race among them).
    pub fn succeeded(&self) -> u64 {
        Got::ALL
            .iter()
            .filter(|g| g.won())
            .map(|&g| self.count(g))
            .sum()
    }

    /// Calls refused with a status their race allows.
    pub fn lost_races(&self) -> u64 {
        Got::ALL
            .iter()
            .filter(|g| !g.won())
            .map(|&g| self.count(g))
            .sum()
    }
}

/// `won` if the call succeeded (a failure if success is not allowed: `None`), the [`Got`]
/// paired with its status if that status is one of `lost`, otherwise a failure naming the
/// status.
pub fn judge<T>(
    r: tsm_abi::api::Result<T>,
    won: Option<Got>,
    lost: &[(Status, Got)],
    what: &'static str,
) -> Outcome<(Got, Option<T>)> {
    match r {
        Ok(v) => match won {
            Some(won) => Ok((won, Some(v))),
            None => Err(Fail {
                what,
                line: line!(),
                got: 0,
            }),
        },
        Err(Error::Tsm(s)) => match lost.iter().find(|(l, _)| *l == s) {
            Some(&(_, got)) => Ok((got, None)),
            None => Err(Fail {
                what,
                line: line!(),
                got: crate::driver::raw_error(Error::Tsm(s)),
            }),
        },
        Err(e) => Err(Fail {
            what,
            line: line!(),
            got: crate::driver::raw_error(e),
        }),
    }
}

/// Round `i` of CPU `cpu`: one contested-granule call, a VDEV_GET_STATE, and (CPU 0, with the
/// device link, every 8th round) a bind and unbind or (the others) a malformed COMMUNICATE.
pub fn step<E: HostEnv>(
    env: &mut E,
    cpu: usize,
    s: &Shared,
    link: Option<&mut Link>,
    i: usize,
    tally: &mut Tally,
) -> Outcome {
    let st = Status::arg;
    let k = (i * 3 + cpu) % RACE_GRANULES;
    let g = s
        .granules
        .get(k)
        .copied()
        .ok_or(Fail::new("granule", line!()))?;
    let gpa = Gpa(RACE_GPA + k as u64 * GRANULE_SIZE);
    // Each granule goes through delegate, map, unmap, undelegate on successive visits, with
    // the CPUs a step apart.
    let got = match (i / RACE_GRANULES + cpu) % 4 {
        0 => {
            judge(
                host::granule_delegate(env, g),
                Some(Got::Delegated),
                &[(st(GranuleState, 1), Got::DelegateLost)],
                "racing DELEGATE",
            )?
            .0
        }
        1 => {
            let rw = MapFlags::READ | MapFlags::WRITE;
            judge(
                host::map_private(env, s.tvm, gpa, g, Some(s.secret), rw),
                Some(Got::Mapped),
                &[
                    (st(GranuleState, 3), Got::MapLostState),
                    (st(AlreadyMapped, 2), Got::MapLostMapped),
                ],
                "racing MAP_PRIVATE",
            )?
            .0
        }
        2 => {
            let (got, pa) = judge(
                host::unmap(env, s.tvm, gpa),
                Some(Got::Unmapped),
                &[(st(NotMapped, 2), Got::UnmapLost)],
                "racing UNMAP",
            )?;
            if let Some(pa) = pa {
                ensure!(pa == g, "UNMAP returned another granule", pa.0);
            }
            got
        }
        _ => {
            judge(
                host::granule_undelegate(env, g),
                Some(Got::Undelegated),
                &[(st(GranuleState, 1), Got::UndelegateLost)],
                "racing UNDELEGATE",
            )?
            .0
        }
    };
    tally.add(got);
    let (state, _) = must!(host::vdev_get_state(env, s.vdev), "racing VDEV_GET_STATE");
    ensure!(
        state != VdevState::Error && state != VdevState::Run,
        "vdevice state under the race",
        state.raw()
    );
    tally.add(Got::StateRead);
    match link {
        Some(link) if i.is_multiple_of(8) => {
            let first = host::vdev_bind(env, s.vdev, link.comm);
            must!(link.drive(env, s.vdev, first)?, "racing VDEV_BIND");
            let first = host::vdev_unbind(env, s.vdev, link.comm);
            must!(link.drive(env, s.vdev, first)?, "racing VDEV_UNBIND");
            tally.add(Got::BoundAndUnbound);
        }
        Some(_) => {}
        None => {
            let (got, _) = judge(
                host::communicate(env, s.vdev, s.bad_comm),
                None,
                &[
                    (st(NoOperation, 1), Got::CommNoOperation),
                    (st(InvalidBuffer, 2), Got::CommInvalidBuffer),
                ],
                "racing COMMUNICATE with a malformed buffer",
            )?;
            tally.add(got);
        }
    }
    Ok(())
}

/// One CPU's share: `iterations` rounds of [`step`]. CPU 0 passes the device link.
pub fn worker<E: HostEnv>(
    env: &mut E,
    cpu: usize,
    s: &Shared,
    mut link: Option<&mut Link>,
    iterations: u32,
) -> Outcome<Tally> {
    let mut tally = Tally::default();
    for i in 0..iterations as usize {
        step(env, cpu, s, link.as_deref_mut(), i, &mut tally)?;
    }
    Ok(tally)
}

/// Puts the contested granules back in NS, then the usual teardown and checks.
pub fn finish<E: HostEnv>(env: &mut E, w: World, s: &Shared) -> Outcome {
    let st = Status::arg;
    for (k, &g) in s.granules.iter().enumerate() {
        let gpa = Gpa(RACE_GPA + k as u64 * GRANULE_SIZE);
        judge(
            host::unmap(env, s.tvm, gpa),
            Some(Got::Unmapped),
            &[(st(NotMapped, 2), Got::UnmapLost)],
            "UNMAP after the race",
        )?;
        judge(
            host::granule_undelegate(env, g),
            Some(Got::Undelegated),
            &[(st(GranuleState, 1), Got::UndelegateLost)],
            "UNDELEGATE after the race",
        )?;
    }
    w.finish(env)
}

/// On one CPU the scenario cannot run: it needs a second CPU issuing calls at the same time
/// ([`setup`], then [`worker`] on each CPU, then [`finish`]: the host payload's `smp.rs` and
/// `smp4.rs` and the build machine's `s7_smp` do that).
pub fn run_single_cpu<E: HostEnv>(_env: &mut E) -> Outcome {
    Err(Fail::new(
        "SMP needs a second CPU issuing calls at the same time: run setup, worker on each CPU, finish",
        line!(),
    ))
}
