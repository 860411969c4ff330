//! Scenarios `mmio-private` and `story`: the guest drives its own device through private MMIO
//! (docs/abi.md §5.7), and that device's DMA reaches the guest's private memory only in RUN.
//! The vdevice is QEMU's `edu` itself (a PDEV on segment 0 whose one requester ID is edu's, as
//! in `dma-diff`): its DMA goes through the table the TSM composes for the vdevice (docs/design.md
//! "DMA tables for vdevices"), and the device model answers TDISP for it with a report that
//! names edu's BAR0, so the pages the TSM hands the TVM are a real device's registers.
//!
//! 1. the host reaches BAR0 (edu's identification register) before anything is bound;
//! 2. bound (LOCKED), the host maps BAR0's first pages with VDEV_MMIO_MAP; a vCPU that touches
//!    them before the guest validated them faults;
//! 3. the guest reads the report, checks it against the TSM's digest, validates each page as
//!    (range 0, page i) after a wrong name was refused; it programs edu's DMA to write into its
//!    own private page: the IOMMU refuses it (the T=0 view, before accept) and the guest's
//!    queue says why; it accepts, drives edu's registers (identification, liveness, a
//!    factorial) and has edu copy [`DMA_LEN`] bytes of its private memory into another private
//!    page (read, then write: both T=1), checks them, and scrubs edu's buffer;
//! 4. the host sees only its sanitized record of the refused write (none in the host domain),
//!    and its load from the private page the data landed in is blocked;
//! 5. after unbind the host reaches BAR0 again, and aims edu at the guest's private pages by
//!    their GPAs: the IOMMU refuses the write and the read (the T=0 view again); edu's buffer,
//!    pulled out through the TVM's shared page, holds none of the guest's data; the guest finds
//!    both refusals in its queue and its data intact;
//! 6. bound and mapped once more, the host probes BAR0: the TSM blocks and logs the access and
//!    the host goes on (docs/design.md "Traps from the host"); unbound, it reaches BAR0 again.
//!
//! `story` is the same with an authenticated device (PDEV_CONNECT over SPDM, TDISP sealed in
//! the session; the guest checks the chain and measurements before it accepts) and is what
//! `cargo xtask run` shows: each `story:` line is logged after the check of its step passed.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::event::{EventFlags, EventReason, HostEvent};
use tsm_abi::state::VdevState;
use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, MmioRange, RangeAttributes, ReportFields};
use tsm_abi::viommu::ViommuType;
use tsm_device_model::TdiConfig;
use tsm_device_model::identity::DEVICE;
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::{Exit, World};
use crate::layout::{
    GuestArg, MMIO_GPA, MMIO_PAGES, RID_BASE, SCRATCH_GPA, SHARED_GPA, Script, VBDF_BASE,
};
use crate::pci::{Direction, Edu};
use crate::{Fail, HostEnv, Outcome, Probe};

/// Bytes the guest has edu copy.
pub const DMA_LEN: u64 = 256;
/// Where in its second scratch page (private) the guest keeps the data edu reads, where edu
/// writes it, and the zeros that scrub edu's buffer afterwards.
pub const DMA_SRC_GPA: Gpa = Gpa(SCRATCH_GPA.0 + GRANULE_SIZE + 0x400);
/// See [`DMA_SRC_GPA`].
pub const DMA_DST_GPA: Gpa = Gpa(SCRATCH_GPA.0 + GRANULE_SIZE + 0x800);
/// See [`DMA_SRC_GPA`].
pub const DMA_ZERO_GPA: Gpa = Gpa(SCRATCH_GPA.0 + GRANULE_SIZE + 0xC00);
/// DMA-table granules the host gives the vdevice: a root, and per 2 MiB region with pages a
/// level-3 table under a level-2 and a level-1 one (the private half and the shared page: 6).
const DMA_TABLES: usize = 6;

/// The guest's data: bytes 0x40..=0x7F, so that neither zeros nor anything edu's buffer held
/// before matches it where it lies.
pub fn guest_data() -> [u8; DMA_LEN as usize] {
    core::array::from_fn(|i| 0x40 | ((i as u8).wrapping_mul(11) & 0x3F))
}

/// BAR0's first pages as report range 0 (fixed the first time, for the run).
static RANGES: spin::Once<[MmioRange; 1]> = spin::Once::new();
/// The modelled device's functions: PF0, and function 1 whose report names edu's BAR0.
static TDIS: spin::Once<[TdiConfig<'static>; 2]> = spin::Once::new();
/// edu as its own TDI: interface ID = its requester ID, report naming its BAR0.
static EDU_TDI: spin::Once<[TdiConfig<'static>; 1]> = spin::Once::new();

fn ranges(edu: &Edu) -> Outcome<&'static [MmioRange]> {
    let pages = u32::try_from(edu.bar0_size / GRANULE_SIZE)
        .map_err(|_| Fail::new("edu's BAR0 size", line!()))?;
    Ok(RANGES.call_once(|| {
        [MmioRange {
            first_page: edu.bar0.0 >> 12,
            number_of_pages: pages,
            attributes: RangeAttributes::empty(),
            range_id: 0,
        }]
    }))
}

fn tdi(rid: u16, ranges: &'static [MmioRange]) -> TdiConfig<'static> {
    TdiConfig {
        interface_id: InterfaceId::new(rid, None),
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: ranges,
        device_specific_info: &[],
    }
}

/// The modelled device's functions, function 1 reporting edu's BAR0 (the MMIO bench's device:
/// its DMA is not edu's).
pub fn tdis(edu: &Edu) -> Outcome<&'static [TdiConfig<'static>]> {
    let ranges = ranges(edu)?;
    Ok(TDIS.call_once(|| [tdi(RID_BASE, &[]), tdi(RID_BASE + 1, ranges)]))
}

/// edu as the one TDI of its PDEV.
fn edu_tdi(edu: &Edu) -> Outcome<&'static [TdiConfig<'static>]> {
    let ranges = ranges(edu)?;
    Ok(EDU_TDI.call_once(|| [tdi(edu.rid, ranges)]))
}

/// edu's identification register reads 0xRRrr00ed.
fn is_edu(id: u32) -> bool {
    id & 0xFFFF == 0x00ed
}

/// Scenario `mmio-private`: the device connected in the clear.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    flow(env, false)
}

/// Scenario `story`: the device authenticated over SPDM.
pub fn story<E: HostEnv>(env: &mut E) -> Outcome {
    flow(env, true)
}

fn flow<E: HostEnv>(env: &mut E, authenticated: bool) -> Outcome {
    let edu = Edu::probe(env)?;
    ensure!(is_edu(edu.id(env)?), "edu's identification register");
    ensure!(
        edu.bar0_size >= MMIO_PAGES * GRANULE_SIZE,
        "edu's BAR0 is smaller than the pages mapped",
        edu.bar0_size
    );
    let mut w = World::with_tdis(env, edu_tdi(&edu)?)?;
    let guest = GuestArg {
        script: if authenticated {
            Script::Story
        } else {
            Script::Mmio
        },
        vbdf: VBDF_BASE,
        count: 1,
    };
    let t = w.add_tvm(env, &[GuestArg::touch(MMIO_GPA), guest.encode()])?;
    let shared = w.map_shared(env, t, SHARED_GPA)?;
    // A vIOMMU the guest could give stage-1 tables; it gives none, so edu's addresses are
    // GPAs, translated by the TVM's map alone.
    let ty = super::viommu_types(&w)
        .find(|&t| t != ViommuType::TsmNoViommu)
        .ok_or(Fail::new(
            "FEATURES reports no vIOMMU type with a stage 1",
            line!(),
        ))?;
    let viommu = w.add_viommu(env, t, ty)?;
    say!(
        "story: host: created a TVM, its private memory made of granules the host delegated to the TSM, and a secure vIOMMU ({=str}) for it",
        ty.name()
    );
    if authenticated {
        w.link.use_spdm(DEVICE)?;
        must!(
            w.connect_pdev_spdm_at(env, 0, edu.rid, 1)?,
            "PDEV_CONNECT (SPDM)"
        );
        say!(
            "story: host: connected edu (RID {=u16:#x}) as a TDISP device over SPDM 1.2 through the host's relay: the TSM checked its certificate chain to the root and its signed measurements, and holds a secure session with it",
            edu.rid
        );
    } else {
        w.connect_pdev_at(env, 0, edu.rid, 1)?;
    }
    let params = super::edu_vdev_params(edu.rid);
    let v = w.add_vdev_with(env, t, viommu, params)?;
    let vdev = w.vdev(v)?.pa;
    for _ in 0..DMA_TABLES {
        let g = w.pool.secure(env)?;
        must!(host::vdev_dma_table(env, vdev, g), "VDEV_DMA_TABLE");
    }
    w.activate(env, t)?;
    say!(
        "story: host: created the vPCI function for edu under that vIOMMU: edu's DMA now goes only through a table the TSM composes from the TVM's map, in {=usize} granules the host donated",
        DMA_TABLES
    );
    must!(w.bind(env, v)?, "VDEV_BIND");
    ensure!(
        w.state(env, v)? == VdevState::Locked,
        "the vdevice is not LOCKED"
    );
    say!(
        "story: host: bound the TDI: CONFIG_LOCKED, its interface report (naming edu's BAR0) fetched and digested by the TSM{=str}",
        if authenticated {
            ", every TDISP message sealed in the session"
        } else {
            ""
        }
    );
    map(env, vdev, edu.bar0)?;
    say!(
        "mmio: {=u64} pages of edu's BAR0 {=u64:#x} mapped at GPA {=u64:#x}, unvalidated",
        MMIO_PAGES,
        edu.bar0.0,
        MMIO_GPA.0
    );
    w.run_expect(env, t, 0, Exit::Fault { gpa: MMIO_GPA.0 })?;
    say!("mmio: the guest's access before validation faulted");
    say!(
        "story: host: mapped edu's first register pages into the TVM as private MMIO, unvalidated: a guest access before the guest validated them faulted"
    );

    // The guest validates, is refused T=0 DMA into its private page, accepts, copies its data
    // with edu in RUN, and yields.
    w.run_expect(env, t, 1, Exit::Yielded)?;
    ensure!(w.state(env, v)? == VdevState::Run, "the vdevice is not RUN");
    let queue = EventQueue::Vdev(vdev);
    ensure!(
        pop(env, &w, EventQueue::HostDomain)?.is_none(),
        "edu's fault went to the host domain"
    );
    let ev = pop(env, &w, queue)?.ok_or(Fail::new(
        "no record of the IOMMU's refusal before accept",
        line!(),
    ))?;
    ensure!(
        ev.reason == EventReason::T0ToSecure.raw() && ev.flags == EventFlags::WRITE.bits(),
        "the host's record of the refusal before accept",
        u64::from(ev.reason) | u64::from(ev.flags) << 32
    );
    ensure!(
        pop(env, &w, queue)?.is_none(),
        "a fault of edu's DMA in RUN"
    );
    let dst = w
        .tvm(t)?
        .page(DMA_DST_GPA)
        .ok_or(Fail::new("the guest's scratch page", line!()))?;
    ensure!(
        env.probe(dst, false) == Probe::Blocked,
        "the host read the private page edu wrote",
        dst.0
    );
    say!(
        "story: host: all it saw of this is its sanitized record of the refused write (reason and direction, no address); its load from the private page the data landed in was blocked"
    );

    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    ensure!(
        is_edu(edu.id(env)?),
        "the host did not get BAR0 back at unbind"
    );
    say!("mmio: after unbind the host reaches edu's BAR0 again");
    say!(
        "story: host: unbound the TDI: the TSM took the private MMIO back from the TVM and gave it to the host, which reads edu's registers again"
    );
    // A host that aims edu at the guest's private pages, by their GPAs, now that it drives it.
    edu.dma(env, Direction::ToRam, DMA_DST_GPA.0, 0, DMA_LEN)?;
    one_refusal(env, &w, queue, true)?;
    edu.dma(env, Direction::ToDevice, DMA_SRC_GPA.0, 0, DMA_LEN)?;
    one_refusal(env, &w, queue, false)?;
    edu.dma(env, Direction::ToRam, SHARED_GPA.0, 0, DMA_LEN)?;
    ensure!(
        pop(env, &w, queue)?.is_none(),
        "edu's write to the TVM's shared page was refused"
    );
    let mut got = [0u8; DMA_LEN as usize];
    ensure!(env.read(shared, &mut got), "read the shared page");
    ensure!(
        got.iter().zip(guest_data()).all(|(a, b)| *a != b),
        "the guest's data reached the host through edu's buffer",
        shared.0
    );
    say!(
        "story: host: aimed edu at the guest's private pages: with T=1 gone at unbind, the real IOMMU refused the T=0 write and read into secure memory; edu's buffer, pulled out through the TVM's shared page, holds none of the guest's data"
    );
    w.run_expect(env, t, 1, Exit::Exited(0))?;

    must!(w.bind(env, v)?, "VDEV_BIND (again)");
    map(env, vdev, edu.bar0)?;
    say!(
        "mmio: the host loads from edu's BAR0 at {=u64:#x} while a TVM holds it",
        edu.bar0.0
    );
    ensure!(
        env.probe(edu.bar0, false) == Probe::Blocked,
        "the host reached a page of its device that a TVM holds",
        edu.bar0.0
    );
    say!("mmio: the host's load was blocked");
    must!(w.unbind(env, v)?, "VDEV_UNBIND (again)");
    ensure!(is_edu(edu.id(env)?), "BAR0 back to the host");
    say!(
        "story: host: bound and mapped again, its load from edu's registers while the TVM held them was blocked by the TSM and logged; unbound, they are the host's again"
    );
    let granules = w.pool.used();
    w.finish(env)?;
    say!(
        "story: host: teardown destroyed every object and returned all {=u64} granules the host had given, scrubbed, to the host",
        granules
    );
    Ok(())
}

/// Maps BAR0's first [`MMIO_PAGES`] pages at [`MMIO_GPA`].
fn map<E: HostEnv>(env: &mut E, vdev: Pa, bar0: Pa) -> Outcome {
    for i in 0..MMIO_PAGES {
        let (gpa, pa) = (
            Gpa(MMIO_GPA.0 + i * GRANULE_SIZE),
            Pa(bar0.0 + i * GRANULE_SIZE),
        );
        must!(host::vdev_mmio_map(env, vdev, gpa, pa), "VDEV_MMIO_MAP");
    }
    Ok(())
}

/// Pops one record of `queue`, if it has one.
fn pop<E: HostEnv>(env: &mut E, w: &World, queue: EventQueue) -> Outcome<Option<HostEvent>> {
    let left = must!(host::event_read(env, queue, w.event), "EVENT_READ");
    if left.is_none() {
        return Ok(None);
    }
    let mut ev = HostEvent::new_zeroed();
    ensure!(env.read(w.event, ev.as_mut_bytes()), "read the event");
    Ok(Some(ev))
}

/// `queue` holds exactly one record: a T=0 refusal into secure memory, a write or a read; the
/// host domain none.
fn one_refusal<E: HostEnv>(env: &mut E, w: &World, queue: EventQueue, write: bool) -> Outcome {
    let ev = pop(env, w, queue)?.ok_or(Fail::new(
        "edu reached the guest's private page after unbind",
        line!(),
    ))?;
    ensure!(
        ev.reason == EventReason::T0ToSecure.raw(),
        "the refusal's reason",
        ev.reason
    );
    ensure!(
        (ev.flags & EventFlags::WRITE.bits() != 0) == write,
        "the refusal's direction",
        ev.flags
    );
    ensure!(
        pop(env, w, queue)?.is_none(),
        "more than one fault for one transfer"
    );
    ensure!(
        pop(env, w, EventQueue::HostDomain)?.is_none(),
        "a vdevice's fault in the host-domain queue"
    );
    Ok(())
}
