//! Private MMIO: pages of a locked vdevice's MMIO mapped into its TVM (docs/abi.md §5.7,
//! docs/design.md "Private MMIO").
//!
//! The host names a page by its host PA (VDEV_MMIO_MAP); the TSM maps it only if the interface
//! report it cached at bind has a TEE range holding it, and takes it out of the host's address
//! space first ([`tsm_platform::HostIsolation::take_mmio_from_host`]). The entry is written
//! *unvalidated* ([`MapKind::Mmio`]): the hardware sees nothing mapped until the guest names the
//! range and page it expects there (G_VDEV_MMIO_VALIDATE).
//!
//! **The record.** Which pages a vdevice has mapped is recorded in its VDEV granule right after
//! the object ([`MMIO_MAPS_OFFSET`]), not in [`VdevObj`](crate::objects::VdevObj), so calls
//! that lock the VDEV do not copy it. It holds the root of the TVM's map as well, so the exits from LOCKED and
//! RUN, which hold the VDEV but not the TVM, can find and clear the entries.
//!
//! **Locks.** The record and the entries it names change only under the VDEV's lock. Every
//! other writer of a TVM's map holds the TVM's lock and leaves a non-invalid entry alone (a
//! new mapping needs an invalid one; UNMAP refuses an MMIO entry), and a level-3 table holding
//! an MMIO entry counts it in its refcount, so TABLE_DESTROY cannot take it away: a vdevice can
//! clear its entries holding only its own lock and then the table's, which comes after the VDEV
//! in the lock order.

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Gpa, Pa};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::{InterfaceReport, RangeAttributes};
use tsm_platform::MmioRefused;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::addrmap::format::Entry;
use crate::addrmap::{self, LEAF_LEVEL, Leaf, MapKind, Perms};
use crate::granule::GranuleState;
use crate::objects::{MMIO_MAPS_OFFSET, REPORT_CAPACITY, VdevHead, internal};
use crate::tsm::Tsm;

/// Pages of MMIO one vdevice may have mapped at a time (FEATURES `QUEUE_LIMITS`): 64 KiB, what
/// the record at the end of the VDEV granule holds; a larger BAR is mapped in part.
pub const MAX_MMIO_PAGES: usize = 16;

const _: () = assert!(size_of::<MmioMaps>() == 16 + 16 * MAX_MMIO_PAGES);

/// One mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmioPage {
    /// Where the TVM sees it.
    pub gpa: u64,
    /// The device page (host PA).
    pub pa: u64,
}

/// A vdevice's private MMIO pages.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmioMaps {
    /// Root table of the TVM's map.
    pub root: u64,
    /// Pages in `pages`.
    pub count: u64,
    /// The pages, the first `count` in use, the rest zero.
    pub pages: [MmioPage; MAX_MMIO_PAGES],
}

impl MmioMaps {
    /// No pages, for a vdevice of the TVM whose map's root is `root`.
    pub(crate) fn new(root: Pa) -> Self {
        MmioMaps {
            root: root.0,
            count: 0,
            pages: [MmioPage { gpa: 0, pa: 0 }; MAX_MMIO_PAGES],
        }
    }

    /// The pages mapped.
    pub fn mapped(&self) -> &[MmioPage] {
        self.pages
            .get(..usize::try_from(self.count).unwrap_or(0))
            .unwrap_or(&[])
    }

    /// Where `gpa`'s page is in `pages`.
    fn find(&self, gpa: Gpa) -> Option<usize> {
        self.mapped().iter().position(|p| p.gpa == gpa.0)
    }

    /// What holds between calls.
    pub fn invariants(&self) -> Result<(), &'static str> {
        let n = usize::try_from(self.count).map_err(|_| "MMIO count in range")?;
        if n > MAX_MMIO_PAGES {
            return Err("MMIO count in range");
        }
        let (used, free) = self.pages.split_at(n);
        if free.iter().any(|p| p.gpa != 0 || p.pa != 0) {
            return Err("unused MMIO slots zero");
        }
        for (i, p) in used.iter().enumerate() {
            if !Pa(p.gpa).is_granule_aligned() || !Pa(p.pa).is_granule_aligned() {
                return Err("MMIO pages aligned");
            }
            if used
                .iter()
                .skip(i.saturating_add(1))
                .any(|q| q.gpa == p.gpa || q.pa == p.pa)
            {
                return Err("an MMIO page and a GPA mapped once");
            }
        }
        Ok(())
    }
}

/// Where the host page `pa` lies in the ranges of `report`, as the device reported them for a
/// lock with `offset` (LOCK_INTERFACE `mmio_reporting_offset`, which the device added to every
/// address): (range index in report order, page index in the range). Only TEE ranges count:
/// a range marked non-TEE is the host's to map shared.
pub fn locate(report: &InterfaceReport<'_>, offset: u64, pa: Pa) -> Option<(u64, u64)> {
    // Two's complement: adding the offset modulo 2^64 is what the device did.
    let reported = pa.0.wrapping_add(offset);
    if !reported.is_multiple_of(GRANULE_SIZE) {
        return None;
    }
    let frame = reported >> GRANULE_SHIFT;
    report
        .mmio_ranges()
        .enumerate()
        .find(|(_, r)| {
            !r.attributes.contains(RangeAttributes::IS_NON_TEE_MEM)
                && r.first_page <= frame
                && frame < r.end_page()
        })
        .and_then(|(i, r)| Some((u64::try_from(i).ok()?, frame.checked_sub(r.first_page)?)))
}

impl Tsm<'_> {
    /// The MMIO record of the VDEV granule at `vdev`, which the caller holds.
    pub fn mmio_record(&self, vdev: Pa) -> Result<MmioMaps, Status> {
        let mut m = MmioMaps::new(Pa(0));
        let at = vdev.checked_add(MMIO_MAPS_OFFSET).ok_or_else(internal)?;
        self.platform
            .read(at, m.as_mut_bytes())
            .map_err(|_| internal())?;
        Ok(m)
    }

    /// Writes the MMIO record of the VDEV granule at `vdev`, which the caller holds.
    pub(crate) fn set_mmio_record(&self, vdev: Pa, m: &MmioMaps) -> Result<(), Status> {
        // As for objects (`objects::write`): a violation is a TSM bug, never the result of host
        // or guest input (the calls check every page before they change the record), so debug
        // builds stop on one at every write and release images skip the scans (~100
        // instructions on VDEV_CREATE's empty record).
        debug_assert!(m.invariants().is_ok(), "{:?}", m.invariants());
        let at = vdev.checked_add(MMIO_MAPS_OFFSET).ok_or_else(internal)?;
        self.platform
            .write(at, m.as_bytes())
            .map_err(|_| internal())
    }

    /// The empty record of a new vdevice of the TVM whose map's root is `root`, in the VDEV
    /// granule at `vdev`, which the caller holds and whose record bytes it zeroed
    /// ([`crate::objects::VDEV_ZEROED`] covers them): zero bytes are an empty record, so only the
    /// root is written, not 272 bytes built in the frame.
    pub(crate) fn init_mmio_record(&self, vdev: Pa, root: Pa) -> Result<(), Status> {
        const _: () = assert!(
            core::mem::offset_of!(MmioMaps, root) == 0
                && matches!(
                    (MMIO_MAPS_OFFSET as usize).checked_add(size_of::<MmioMaps>()),
                    Some(end) if end <= crate::objects::VDEV_ZEROED
                )
        );
        let at = vdev.checked_add(MMIO_MAPS_OFFSET).ok_or_else(internal)?;
        self.platform
            .write(at, root.0.as_bytes())
            .map_err(|_| internal())
    }

    /// Runs `f` on the vdevice's cached interface report (the caller holds the VDEV, which has
    /// one: LOCKED or RUN). It parsed when the bind finished, so a failure now is a TSM bug.
    pub(crate) fn with_report<R>(
        &self,
        vdev: Pa,
        v: &VdevHead,
        f: impl FnOnce(&InterfaceReport<'_>) -> R,
    ) -> Result<R, Status> {
        let mut buf = [0u8; REPORT_CAPACITY as usize];
        let bytes = buf
            .get_mut(..usize::try_from(v.report_len).map_err(|_| internal())?)
            .ok_or_else(internal)?;
        crate::calls::comm::read_report(self, vdev, 0, bytes)?;
        let report = InterfaceReport::parse(bytes).map_err(|_| internal())?;
        Ok(f(&report))
    }

    /// Writes the MMIO entry for `page` (its level-3 table is `table`): unvalidated or
    /// validated.
    pub(crate) fn write_mmio_entry(
        &self,
        root: Pa,
        table: Pa,
        page: MmioPage,
        validated: bool,
    ) -> Result<(), Status> {
        let map = self.map(root);
        let leaf = Leaf {
            pa: Pa(page.pa),
            perms: Perms {
                write: true,
                exec: false,
            },
            kind: MapKind::Mmio { validated },
        };
        map.write_raw(
            table,
            addrmap::index(Gpa(page.gpa), LEAF_LEVEL),
            map.format().page(leaf),
        )
        .map_err(|_| internal())
    }

    /// Removes mapped page `i` of record `m` (VDEV at `vdev`, held by the caller) from the TVM,
    /// drops every CPU's translation of it, and gives it back to the host; the record is
    /// updated in `m` only (the caller writes it).
    pub(crate) fn mmio_release(&self, m: &mut MmioMaps, i: usize) -> Result<Pa, Status> {
        let n = m.mapped().len();
        let page = *m.pages.get(i).filter(|_| i < n).ok_or_else(internal)?;
        let (root, gpa) = (Pa(m.root), Gpa(page.gpa));
        let (table, entry) = self
            .map(root)
            .entry(gpa, LEAF_LEVEL)
            .map_err(|_| internal())?;
        match entry {
            Entry::Page(Leaf {
                pa,
                kind: MapKind::Mmio { .. },
                ..
            }) if pa.0 == page.pa => {}
            _ => return Err(internal()),
        }
        let mut gl = self
            .granules
            .lock_in(table, GranuleState::Table)
            .map_err(|_| internal())?;
        self.map(root)
            .write_raw(table, addrmap::index(gpa, LEAF_LEVEL), 0)
            .map_err(|_| internal())?;
        self.platform.invalidate_guest_page(root, gpa);
        gl.put().map_err(|_| internal())?;
        // Only now that no CPU of the TVM can reach the page does the host get it back.
        self.platform
            .give_mmio_to_host(Pa(page.pa))
            .map_err(|_| internal())?;
        let last = n.checked_sub(1).ok_or_else(internal)?;
        m.pages.swap(i, last);
        if let Some(p) = m.pages.get_mut(last) {
            *p = MmioPage { gpa: 0, pa: 0 };
        }
        m.count = m.count.checked_sub(1).ok_or_else(internal)?;
        Ok(Pa(page.pa))
    }

    /// Every private MMIO page of the VDEV at `vdev` (held by the caller) out of its TVM and
    /// back to the host: what every exit from LOCKED and RUN does before its call returns.
    pub(crate) fn mmio_release_all(&self, vdev: Pa) -> Result<(), Status> {
        let mut m = self.mmio_record(vdev)?;
        if m.count == 0 {
            return Ok(());
        }
        while !m.mapped().is_empty() {
            self.mmio_release(&mut m, 0)?;
        }
        self.set_mmio_record(vdev, &m)
    }

    /// The index of `gpa`'s page in `m`, `NotMapped(arg)` if the vdevice has none there.
    pub(crate) fn mmio_find(m: &MmioMaps, gpa: Gpa, arg: u8) -> Result<usize, Status> {
        m.find(gpa).ok_or(Status::arg(StatusCode::NotMapped, arg))
    }
}

/// The status for a page the platform would not take from the host (argument `arg`).
pub(crate) fn refused(e: MmioRefused, arg: u8) -> Status {
    match e {
        MmioRefused::NotDeviceMemory => Status::arg(StatusCode::OutOfRange, arg),
        MmioRefused::Taken => Status::arg(StatusCode::AlreadyMapped, arg),
        MmioRefused::NoTables => Status::arg(StatusCode::Capacity, arg),
        MmioRefused::NotTaken => internal(),
    }
}
