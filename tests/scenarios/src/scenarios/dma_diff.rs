//! Scenario `dma-diff`: the differential test of the platform IOMMU (issue 13, part 4). A table
//! of DMA requests is run twice, row by row: by QEMU's `edu` device through the IOMMU the TSM
//! programs, and by the software engine (TEST_DMA_INJECT, the same request put to
//! `viommu::translate`); the outcomes must be equal. Every row is logged as one line of a table,
//! and the scenario fails after the table if any row differs.
//!
//! **The requesters.** `edu` is one function on bus 0, so it plays both: a host device before
//! its vdevice exists and after VDEV_DESTROY, and the vdevice in between. The host names it as
//! a TDISP device would be named: a PDEV on segment 0 whose requester-ID range is `edu`'s own
//! requester ID (PF0, its DSM, and the TDI itself), and a vdevice with that pBDF. `edu` has no
//! DOE mailbox, so the device model answers TDISP for it (a TDI whose interface ID is `edu`'s
//! RID, [`crate::layout::BUS0_TDIS`]); its DMA is `edu`'s own. The vdevice is under the
//! platform's vIOMMU type with no stage-1 root, so an IOVA is a GPA, and the host donates
//! [`TABLES`] DMA-table granules, enough for every page of the TVM (docs/abi.md §8.4: with
//! fewer, the IOMMU refuses more than the engine, by design, and the rows would differ).
//!
//! **The T bit** is the vdevice's state (docs/design.md "DMA tables for vdevices"): the engine's
//! request carries T=1 exactly while the vdevice is RUN and accepted, the view its table holds.
//!
//! **Outcomes.** The device's: a fault record on the requester's queue (EVENT_READ drains the
//! IOMMU's records; exactly one per refused transfer, none on the other queue) with its reason,
//! or, for a write to host-readable memory, where the bytes landed (the target is zeroed before
//! and read after), or "allowed". The engine's: `DmaFault` with the reason (its own record is
//! then popped from the same queue), or the PA. Writes into secure memory that both allow (T=1
//! to the guest's private page in RUN) are checked by the guest, which finds the bytes there.
//! A fault's reason is the engine's word for the request in both columns (the core classifies
//! the IOMMU's record with the engine, docs/abi.md §8.3): what the device column proves is
//! whether the hardware let the request through, and where to.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_abi::api::Error;
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::event::{DmaInjectFlags, EventReason, HostEvent, PasidArg};
use tsm_abi::state::VdevState;
use tsm_abi::status::StatusCode;
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::{Exit, World, raw_error};
use crate::layout::{BUS0_TDIS, GuestArg, SCRATCH_GPA, SHARED_GPA, Script, VBDF_BASE};
use crate::link::Link;
use crate::pci::{Direction, Edu};
use crate::{Fail, HostEnv, Outcome};

/// Bytes per transfer.
const LEN: u64 = 64;
/// Where in `edu`'s buffer the written bytes come from, and where reads go (apart, so a read
/// never changes what the next write sends).
const WRITE_FROM: u64 = 0;
const READ_TO: u64 = 0x800;
/// DMA-table granules the host gives the vdevice: a root, and per 2 MiB region with pages a
/// level-3 table under a level-2 and a level-1 one (the private and the shared half: 6).
const TABLES: usize = 6;
/// The guest's private page the rows aim at (its second scratch page, which no script uses
/// here).
pub const PRIVATE_IOVA: u64 = SCRATCH_GPA.0 + GRANULE_SIZE + 0x100;
/// A GPA nothing maps.
const UNMAPPED_GPA: u64 = 0x50_0000;
/// A host-device address beyond DRAM on both machines, below every IOMMU's input size.
const BEYOND_DRAM: u64 = 1 << 40;

/// What `edu` writes: every byte different, none zero.
pub fn pattern() -> [u8; LEN as usize] {
    core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(0x21) | 0x01)
}

/// What happened to one request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    /// A write landed at this host-readable PA.
    Landed(u64),
    /// Let through (a read, or a write into memory the host cannot read).
    Allowed,
    /// Refused, with this event reason.
    Refused(u32),
    /// The device saw no fault, but the bytes are not where the host mapped the address.
    Lost,
}

impl Seen {
    fn words(self) -> (&'static str, u64) {
        match self {
            Seen::Landed(pa) => ("lands at", pa),
            Seen::Allowed => ("allowed", 0),
            Seen::Refused(r) => (
                EventReason::from_raw(u64::from(r)).map_or("refused, reason", |r| r.name()),
                u64::from(r),
            ),
            Seen::Lost => ("lost", 0),
        }
    }
}

/// Who issues the row's request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    /// `edu` in the host domain.
    Host,
    /// `edu` as the vdevice: its queue, and whether its requests carry T=1.
    Vdev { vdev: Pa, t1: bool },
}

/// One row: the target's name, the address `edu` uses, a write or a read, and the host-readable
/// PA the address means for the host (zeroed before a write and read after), if any.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    iova: u64,
    write: bool,
    ns: Option<Pa>,
}

const fn write(name: &'static str, iova: u64, ns: Option<Pa>) -> Target {
    Target {
        name,
        iova,
        write: true,
        ns,
    }
}

const fn read(name: &'static str, iova: u64) -> Target {
    Target {
        name,
        iova,
        write: false,
        ns: None,
    }
}

struct Diff {
    edu: Edu,
    event: Pa,
    rows: u32,
    mismatches: u32,
}

impl Diff {
    /// Runs `targets` as `who` in `phase`, logging each row.
    fn rows<E: HostEnv>(
        &mut self,
        env: &mut E,
        phase: &'static str,
        who: Who,
        targets: &[Target],
    ) -> Outcome {
        for t in targets {
            self.row(env, phase, who, t)?;
        }
        Ok(())
    }

    fn row<E: HostEnv>(
        &mut self,
        env: &mut E,
        phase: &'static str,
        who: Who,
        t: &Target,
    ) -> Outcome {
        let queue = match who {
            Who::Host => EventQueue::HostDomain,
            Who::Vdev { vdev, .. } => EventQueue::Vdev(vdev),
        };
        // The device.
        if let (true, Some(ns)) = (t.write, t.ns) {
            ensure!(env.write(ns, &[0u8; LEN as usize]), "zero the target", ns.0);
        }
        let (direction, offset) = if t.write {
            (Direction::ToRam, WRITE_FROM)
        } else {
            (Direction::ToDevice, READ_TO)
        };
        self.edu.dma(env, direction, t.iova, offset, LEN)?;
        let device = match self.pop(env, queue)? {
            Some(ev) => {
                ensure!(
                    (ev.flags & tsm_abi::event::EventFlags::WRITE.bits() != 0) == t.write,
                    "the fault's direction",
                    ev.flags
                );
                ensure!(
                    self.pop(env, queue)?.is_none(),
                    "two faults for one transfer"
                );
                Seen::Refused(ev.reason)
            }
            None => match (t.write, t.ns) {
                (true, Some(ns)) => {
                    let mut got = [0u8; LEN as usize];
                    ensure!(env.read(ns, &mut got), "read the target", ns.0);
                    if got == pattern() {
                        Seen::Landed(ns.0)
                    } else {
                        Seen::Lost
                    }
                }
                _ => Seen::Allowed,
            },
        };
        if let Who::Vdev { .. } = who {
            ensure!(
                self.pop(env, EventQueue::HostDomain)?.is_none(),
                "a vdevice's fault in the host-domain queue"
            );
        }
        // The engine.
        let mut flags = DmaInjectFlags::empty();
        flags.set(DmaInjectFlags::WRITE, t.write);
        let t1 = matches!(who, Who::Vdev { t1: true, .. });
        flags.set(DmaInjectFlags::T_BIT, t1);
        let engine = match host::test_dma_inject(
            env,
            0,
            self.edu.rid,
            PasidArg::NoPasid,
            Iova(t.iova),
            flags,
        ) {
            Ok(pa) => match (t.write, t.ns) {
                (true, Some(_)) => Seen::Landed(pa.0),
                _ => Seen::Allowed,
            },
            Err(Error::Tsm(s)) if s.code == StatusCode::DmaFault => {
                // Its own record, on the same queue.
                let ev = self.pop(env, queue)?;
                ensure!(
                    ev.is_some_and(|e| e.reason == u32::from(s.index)),
                    "the engine's fault was not queued",
                    s.index
                );
                Seen::Refused(u32::from(s.index))
            }
            Err(e) => {
                return Err(Fail {
                    what: "TEST_DMA_INJECT",
                    line: line!(),
                    got: raw_error(e),
                });
            }
        };
        let ok = device == engine;
        let (dw, dv) = device.words();
        let (ew, ev) = engine.words();
        say!(
            "dma-diff | {=str} | {=str} T={=u8} | {=str} {=str} {=u64:#x} | edu+IOMMU: {=str} {=u64:#x} | engine: {=str} {=u64:#x} | {=str}",
            phase,
            if matches!(who, Who::Host) {
                "host device"
            } else {
                "vdevice"
            },
            u8::from(t1),
            if t.write { "write" } else { "read" },
            t.name,
            t.iova,
            dw,
            dv,
            ew,
            ev,
            if ok { "same" } else { "DIFFERENT" }
        );
        self.rows += 1;
        self.mismatches += u32::from(!ok);
        Ok(())
    }

    /// Pops one record of `queue`, if it has one.
    fn pop<E: HostEnv>(&self, env: &mut E, queue: EventQueue) -> Outcome<Option<HostEvent>> {
        let left = must!(host::event_read(env, queue, self.event), "EVENT_READ");
        if left.is_none() {
            return Ok(None);
        }
        let mut ev = HostEvent::new_zeroed();
        ensure!(env.read(self.event, ev.as_mut_bytes()), "read the event");
        Ok(Some(ev))
    }
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    w.require_dma_inject()?;
    let edu = Edu::probe(env)?;
    let tdi = BUS0_TDIS
        .get(usize::from(edu.rid)..)
        .and_then(|t| t.get(..1))
        .ok_or(Fail::new("edu is not on bus 0", line!()))?;
    w.link = Link::with_tdis(w.link.comm, tdi)?;
    let arg = GuestArg {
        script: Script::DmaDiff,
        vbdf: VBDF_BASE,
        count: 1,
    };
    let t = w.add_tvm(env, &[arg.encode()])?;
    let shared = w.map_shared(env, t, SHARED_GPA)?;
    let private = w
        .tvm(t)?
        .page(Gpa(PRIVATE_IOVA))
        .ok_or(Fail::new("scratch page", line!()))?;
    let delegated = w.pool.secure(env)?;
    let tsm = env.tsm_memory();
    let host_page = w.pool.ns(env)?;
    let src = w.pool.ns(env)?;
    ensure!(env.write(src, &pattern()), "write the pattern");
    edu.dma(env, Direction::ToDevice, src.0, WRITE_FROM, LEN)?;
    let mut d = Diff {
        edu,
        event: w.event,
        rows: 0,
        mismatches: 0,
    };
    let host_rows = |shared: Pa| {
        [
            write(
                "host page",
                host_page.0 + 0x40,
                Some(Pa(host_page.0 + 0x40)),
            ),
            write(
                "TVM shared page",
                shared.0 + 0x40,
                Some(Pa(shared.0 + 0x40)),
            ),
            write("TVM private page", private.0, None),
            read("TVM private page", private.0),
            write("delegated granule", delegated.0, None),
            write("TSM memory", tsm.0, None),
            write("beyond DRAM", BEYOND_DRAM, None),
        ]
    };
    let vdev_rows = |shared: Pa| {
        [
            write("shared GPA", SHARED_GPA.0 + 0x40, Some(Pa(shared.0 + 0x40))),
            write("private GPA", PRIVATE_IOVA, None),
            read("private GPA", PRIVATE_IOVA),
            read("shared GPA", SHARED_GPA.0 + 0x80),
            write("delegated PA as IOVA", delegated.0, None),
            write("TSM PA as IOVA", tsm.0, None),
            write("unmapped GPA", UNMAPPED_GPA, None),
        ]
    };

    d.rows(env, "no vdevice", Who::Host, &host_rows(shared))?;

    // edu becomes the vdevice: its stream leaves the host domain for its DMA table.
    w.connect_pdev_at(env, 0, edu.rid, 1)?;
    let ty = super::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    let params = super::edu_vdev_params(edu.rid);
    let v = w.add_vdev_with(env, t, viommu, params)?;
    let vdev = w.vdev(v)?.pa;
    for _ in 0..TABLES {
        let g = w.pool.secure(env)?;
        must!(host::vdev_dma_table(env, vdev, g), "VDEV_DMA_TABLE");
    }
    w.activate(env, t)?;
    let t0 = Who::Vdev { vdev, t1: false };
    let t1 = Who::Vdev { vdev, t1: true };
    d.rows(env, "UNLOCKED", t0, &vdev_rows(shared))?;
    must!(w.bind(env, v)?, "VDEV_BIND");
    d.rows(env, "LOCKED", t0, &vdev_rows(shared))?;
    // The guest accepts and yields in RUN.
    w.run_expect(env, t, 0, Exit::Yielded)?;
    ensure!(w.state(env, v)? == VdevState::Run, "not RUN after accept");
    d.rows(env, "RUN", t1, &vdev_rows(shared))?;
    // Unmap and remap the shared page, in RUN.
    let tvm = w.tvm(t)?.tvm;
    let back = must!(host::unmap(env, tvm, SHARED_GPA), "UNMAP");
    ensure!(back == shared, "UNMAP returned another page", back.0);
    if let Some(tv) = w.tvms.get_mut(t) {
        tv.mapped.retain(|(g, _)| *g != SHARED_GPA);
    }
    d.rows(
        env,
        "RUN, shared page unmapped",
        t1,
        &[write(
            "shared GPA",
            SHARED_GPA.0 + 0x40,
            Some(Pa(shared.0 + 0x40)),
        )],
    )?;
    let shared2 = w.map_shared(env, t, SHARED_GPA)?;
    d.rows(
        env,
        "RUN, another page mapped there",
        t1,
        &[write(
            "shared GPA",
            SHARED_GPA.0 + 0x40,
            Some(Pa(shared2.0 + 0x40)),
        )],
    )?;
    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    d.rows(env, "after unbind", t0, &vdev_rows(shared2))?;
    // The guest finds its first full record and, in its private page, what edu wrote in RUN.
    w.run_expect(env, t, 0, Exit::Exited(0))?;
    // Destroyed: edu is a host device again.
    must!(host::vdev_destroy(env, vdev), "VDEV_DESTROY");
    let _ = w.vdevs.pop();
    d.rows(env, "vdevice destroyed", Who::Host, &host_rows(shared2))?;

    say!(
        "dma-diff: {=u32} rows, {=u32} different",
        d.rows,
        d.mismatches
    );
    ensure!(
        d.mismatches == 0,
        "edu through the IOMMU and the engine disagree (rows marked DIFFERENT)",
        d.mismatches
    );
    w.finish(env)
}
