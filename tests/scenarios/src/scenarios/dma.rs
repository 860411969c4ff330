//! Scenario 6, DMA rules (through TEST_DMA_INJECT): T=0 to private memory faults before bind,
//! while LOCKED, in RUN and after unbind; T=0 to shared memory works throughout; T=1 works only
//! in RUN and faults again once the guest stopped the vdevice; the host's fault records carry
//! no IOVA while the guest's carry it; a host device's DMA to a secure PA faults too, and so does
//! T=1 DMA of the vdevice's RID on another segment (another device: a host device).

use tsm_abi::addr::{Iova, Pa};
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::event::{DmaInjectFlags, EventReason, HostEvent, PasidArg};
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::{Exit, World};
use crate::layout::{
    GuestArg, HOST_RID, OTHER_SEGMENT, SCRATCH_GPA, SEGMENT, SHARED_GPA, Script, VBDF_BASE,
};
use crate::{Fail, HostEnv, Outcome};

/// The IOVA of the refused T=0 request to private memory (the guest looks for its record).
pub const T0_PRIVATE_IOVA: Iova = Iova(SCRATCH_GPA.0 + 0x10);

fn fault(reason: EventReason) -> Status {
    Status::arg(StatusCode::DmaFault, reason.raw() as u8)
}

struct Dma {
    rid: u16,
    private: Pa,
    shared: Pa,
}

impl Dma {
    /// T=0 private faults, T=0 shared reaches the shared page, T=1 as `t1` says.
    fn check<E: HostEnv>(&self, env: &mut E, t1_allowed: bool) -> Outcome {
        let none = PasidArg::NoPasid;
        refused!(
            host::test_dma_inject(
                env,
                SEGMENT,
                self.rid,
                none,
                T0_PRIVATE_IOVA,
                DmaInjectFlags::WRITE
            ),
            fault(EventReason::T0ToSecure),
            "T=0 DMA to private memory"
        );
        let pa = must!(
            host::test_dma_inject(
                env,
                SEGMENT,
                self.rid,
                none,
                Iova(SHARED_GPA.0 + 0x20),
                DmaInjectFlags::WRITE
            ),
            "T=0 DMA to shared memory"
        );
        ensure!(
            pa.0 == self.shared.0 + 0x20,
            "T=0 DMA reached the wrong page",
            pa.0
        );
        let t1 = host::test_dma_inject(
            env,
            SEGMENT,
            self.rid,
            none,
            Iova(SCRATCH_GPA.0 + 0x30),
            DmaInjectFlags::T_BIT,
        );
        if t1_allowed {
            let pa = must!(t1, "T=1 DMA to private memory in RUN");
            ensure!(
                pa.0 == self.private.0 + 0x30,
                "T=1 DMA reached the wrong page",
                pa.0
            );
        } else {
            refused!(t1, fault(EventReason::T1NotAllowed), "T=1 DMA outside RUN");
        }
        Ok(())
    }

    /// The vdevice's RID on [`OTHER_SEGMENT`] is a host device: T=1 faults into the host-domain
    /// queue, whose record names that requester, and T=0 is the identity, not the vdevice's
    /// vIOMMU. Both aim at host memory by PA (the host domain refuses what is not DRAM before
    /// the T bit is looked at, and DRAM starts at 0 only on x86_64).
    fn other_segment<E: HostEnv>(&self, env: &mut E, event: Pa) -> Outcome {
        refused!(
            host::test_dma_inject(
                env,
                OTHER_SEGMENT,
                self.rid,
                PasidArg::NoPasid,
                Iova(self.shared.0 + 0x30),
                DmaInjectFlags::T_BIT | DmaInjectFlags::WRITE
            ),
            fault(EventReason::T1NotAllowed),
            "T=1 DMA of the vdevice's RID on another segment"
        );
        let pa = must!(
            host::test_dma_inject(
                env,
                OTHER_SEGMENT,
                self.rid,
                PasidArg::NoPasid,
                Iova(self.shared.0 + 0x28),
                DmaInjectFlags::WRITE
            ),
            "T=0 DMA of a host device on another segment"
        );
        ensure!(pa.0 == self.shared.0 + 0x28, "host device translated", pa.0);
        let left = must!(
            host::event_read(env, EventQueue::HostDomain, event),
            "EVENT_READ host domain"
        );
        let mut ev = HostEvent::new_zeroed();
        ensure!(env.read(event, ev.as_mut_bytes()), "read event");
        ensure!(
            left.is_some()
                && ev.vdev == 0
                && ev.segment == OTHER_SEGMENT
                && ev.rid == self.rid
                && ev.reason == EventReason::T1NotAllowed.raw(),
            "host-domain record names another requester",
            ev.segment
        );
        Ok(())
    }
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    w.require_dma_inject()?;
    let arg = GuestArg {
        script: Script::DmaAccept,
        vbdf: VBDF_BASE,
        count: 1,
    };
    let t = w.add_tvm(env, &[arg.encode()])?;
    let shared = w.map_shared(env, t, SHARED_GPA)?;
    w.connect_pdev(env)?;
    let ty = super::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    w.activate(env, t)?;
    let private = w
        .tvm(t)?
        .page(SCRATCH_GPA)
        .ok_or(Fail::new("scratch", line!()))?;
    let d = Dma {
        rid: w.vdev(v)?.pbdf,
        private,
        shared,
    };

    d.check(env, false)?;
    say!("UNLOCKED: T=0 private faults, T=0 shared works, T=1 faults");
    must!(w.bind(env, v)?, "VDEV_BIND");
    d.check(env, false)?;
    say!("LOCKED: the same");
    // The guest accepts and yields in RUN.
    w.run_expect(env, t, 0, Exit::Yielded)?;
    ensure!(w.state(env, v)? == VdevState::Run, "not RUN after accept");
    d.check(env, true)?;
    d.other_segment(env, w.event)?;
    say!("RUN: T=1 reaches private memory, T=0 private still faults; not from another segment");
    // The guest stops the vdevice (STOP carried by the host) and checks its fault records.
    w.run_expect(env, t, 0, Exit::Exited(0))?;
    ensure!(
        w.state(env, v)? == VdevState::Unlocked,
        "not UNLOCKED after the guest's stop"
    );
    d.check(env, false)?;
    // Bind and unbind by the host: T=1 still off.
    must!(w.bind(env, v)?, "VDEV_BIND again");
    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    d.check(env, false)?;
    say!("after stop and unbind: T=1 faults again");

    // The host's records: sanitized (vdevice, reason, RID; no IOVA field exists to leak).
    let mut seen = 0u32;
    for _ in 0..64 {
        match must!(
            host::event_read(env, EventQueue::Vdev(w.vdev(v)?.pa), w.event),
            "EVENT_READ"
        ) {
            None => break,
            Some(_) => {
                let mut ev = HostEvent::new_zeroed();
                ensure!(env.read(w.event, ev.as_mut_bytes()), "read event");
                ensure!(
                    ev.vdev == w.vdev(v)?.pa.0 && ev.segment == SEGMENT && ev.rid == d.rid,
                    "event names another device",
                    ev.vdev
                );
                seen += 1;
            }
        }
    }
    ensure!(seen >= 4, "host saw too few fault records", seen);
    // A host device (no vdevice) aiming at a secure PA, and at its own memory.
    refused!(
        host::test_dma_inject(
            env,
            SEGMENT,
            HOST_RID,
            PasidArg::NoPasid,
            Iova(private.0),
            DmaInjectFlags::empty()
        ),
        fault(EventReason::T0ToSecure),
        "host-device DMA to a secure PA"
    );
    let pa = must!(
        host::test_dma_inject(
            env,
            SEGMENT,
            HOST_RID,
            PasidArg::NoPasid,
            Iova(shared.0),
            DmaInjectFlags::empty()
        ),
        "host-device DMA to host memory"
    );
    ensure!(pa == shared, "host-device DMA translated", pa.0);
    let host_domain = must!(
        host::event_read(env, EventQueue::HostDomain, w.event),
        "EVENT_READ host domain"
    );
    ensure!(host_domain.is_some(), "host-domain fault not queued");
    w.finish(env)
}
