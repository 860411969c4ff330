//! Scenario `mmio-private`: the guest drives its own device through private MMIO (docs/abi.md
//! §5.7). The modelled device's function reports QEMU's `edu` BAR0 as its MMIO range, so the
//! pages the TSM hands the TVM are a real device's registers:
//!
//! 1. the host reaches BAR0 (edu's identification register) before anything is bound;
//! 2. bound (LOCKED), the host maps BAR0's first pages with VDEV_MMIO_MAP; a vCPU that touches
//!    them before the guest validated them faults;
//! 3. the guest reads the report, checks it against the TSM's digest, validates each page as
//!    (range 0, page i) after a wrong name was refused, accepts, and drives edu itself:
//!    identification, liveness (reads back the inverse), a factorial;
//! 4. after unbind the host reaches BAR0 again;
//! 5. bound and mapped once more, the host probes BAR0: the TSM blocks and logs the access and
//!    the host goes on (docs/design.md "Traps from the host"); unbound, it reaches BAR0 again.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::host;
use tsm_abi::state::VdevState;
use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, MmioRange, RangeAttributes, ReportFields};
use tsm_abi::viommu::ViommuType;
use tsm_device_model::TdiConfig;

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, MMIO_GPA, MMIO_PAGES, RID_BASE, Script, VBDF_BASE};
use crate::pci::Edu;
use crate::{Fail, HostEnv, Outcome, Probe};

/// The device's functions: PF0, and function 1 whose report names edu's BAR0 (built once, when
/// BAR0's place is known, and `'static` from then on as the device model needs).
static RANGES: spin::Once<[MmioRange; 1]> = spin::Once::new();
static TDIS: spin::Once<[TdiConfig<'static>; 2]> = spin::Once::new();

/// The device's functions for `edu` (the first call fixes BAR0's place for the run).
pub fn tdis(edu: &Edu) -> Outcome<&'static [TdiConfig<'static>]> {
    let pages = u32::try_from(edu.bar0_size / GRANULE_SIZE)
        .map_err(|_| Fail::new("edu's BAR0 size", line!()))?;
    let ranges = RANGES.call_once(|| {
        [MmioRange {
            first_page: edu.bar0.0 >> 12,
            number_of_pages: pages,
            attributes: RangeAttributes::empty(),
            range_id: 0,
        }]
    });
    let tdi = |rid, ranges: &'static [MmioRange]| TdiConfig {
        interface_id: InterfaceId::new(rid, None),
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        mmio_ranges: ranges,
        device_specific_info: &[],
    };
    Ok(TDIS.call_once(|| [tdi(RID_BASE, &[]), tdi(RID_BASE + 1, ranges)]))
}

/// edu's identification register reads 0xRRrr00ed.
fn is_edu(id: u32) -> bool {
    id & 0xFFFF == 0x00ed
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let edu = Edu::probe(env)?;
    ensure!(is_edu(edu.id(env)?), "edu's identification register");
    ensure!(
        edu.bar0_size >= MMIO_PAGES * GRANULE_SIZE,
        "edu's BAR0 is smaller than the pages mapped",
        edu.bar0_size
    );
    let mut w = World::with_tdis(env, tdis(&edu)?)?;
    let guest = GuestArg {
        script: Script::Mmio,
        vbdf: VBDF_BASE,
        count: 1,
    };
    let t = w.add_tvm(env, &[GuestArg::touch(MMIO_GPA), guest.encode()])?;
    w.activate(env, t)?;
    w.connect_pdev(env)?;
    let viommu = w.add_viommu(env, t, ViommuType::TsmNoViommu)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    let vdev = w.vdev(v)?.pa;
    must!(w.bind(env, v)?, "VDEV_BIND");
    map(env, vdev, edu.bar0)?;
    say!(
        "mmio: {=u64} pages of edu's BAR0 {=u64:#x} mapped at GPA {=u64:#x}, unvalidated",
        MMIO_PAGES,
        edu.bar0.0,
        MMIO_GPA.0
    );
    w.run_expect(env, t, 0, Exit::Fault { gpa: MMIO_GPA.0 })?;
    say!("mmio: the guest's access before validation faulted");
    w.run_expect(env, t, 1, Exit::Exited(0))?;
    ensure!(w.state(env, v)? == VdevState::Run, "the vdevice is not RUN");
    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    ensure!(
        is_edu(edu.id(env)?),
        "the host did not get BAR0 back at unbind"
    );
    say!("mmio: after unbind the host reaches edu's BAR0 again");
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
    w.finish(env)
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
