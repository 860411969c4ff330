//! DMA tables for vdevices: the single-stage table the platform IOMMU walks for a vdevice's
//! stream, composed by the TSM from the translation engine (docs/design.md, "DMA tables for
//! vdevices").
//!
//! For every IOVA page the engine would translate for the vdevice's requests without PASID,
//! the table maps the IOVA to the PA [`viommu::translate_uncached`] returns, readable, and
//! writable when the engine lets a write through; nothing else. QEMU's bus has no T bit, so the
//! table holds the T=0 view (requests translated with the T bit clear) until the TDI is RUN and
//! accepted, and the T=1 view while it is. The candidates are the pages of the guest's stage-1
//! table ([`viommu::stage1_pages`]), or of the TVM's map when its requests skip stage 1; each is
//! put to the engine, which decides. A refresh is bounded: at most [`DMA_MAX_PAGES`] candidates
//! translated and [`DMA_MAX_ENTRIES`] table entries read looking for them, and the tables fit
//! in the [`MAX_DMA_TABLES`] granules the host donated (VDEV_DMA_TABLE); a page past any bound
//! is left out, so its DMA faults.
//!
//! **When.** [`Tsm::dma_tvm_changed`] after a TVM's map gains or loses a page, for every vdevice
//! of the TVM; [`Tsm::dma_refresh`] after a vdevice's stage-1 root or its no-PASID translations
//! change (G_S1_ATTACH, G_S1_DETACH, G_S1_INVALIDATE) or it gains a table; and
//! [`Tsm::dma_view_changed`] after its view may have changed (RUN and accepted, or out of it).
//! Each refresh ends with [`Iommu::invalidate`] of the vdevice's tag, before the call returns.
//!
//! **How the hardware sees a refresh.** The IOMMU walks the tables while they change, so a
//! refresh rewrites them in place without ever giving a granule another role while the
//! hardware can reach it: a table keeps its granule across refreshes (its role, the level and
//! IOVA base it maps, is read back from the tree itself), a new one gets a granule no table
//! uses, which is all zero, and a table that goes away is unlinked first and zeroed only after
//! the invalidation. Every entry changes with one 8-byte store, from its old value to its new
//! one, so a walk during the refresh sees the old view, the new one or a mix, each of which the
//! vdevice may use until the call returns; unchanged mappings never fault on the way.
//!
//! **Locks.** A refresh holds [`Tsm::dma`] (after every granule lock, before the IOTLB) and
//! reads objects and tables as snapshots, like a translation; its caller holds the lock of the
//! vdevice's TVM or of its VDEV, which VDEV_DESTROY takes both of, so the vdevice and its
//! tables outlive the refresh. Refreshes of every vdevice are serialized: the last one to run
//! sees every change made before it.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::{DMA_MAX_TAG, DmaDomain, DmaStream, IommuError, PhysMem};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const _: () = assert!(size_of::<DmaTables>() == 136);
// VDEV_CREATE's zeroing empties the record, whose tag leads it (`Tsm::dma_stream_create`).
const RECORD_END: u64 = DMA_TABLES_OFFSET + size_of::<DmaTables>() as u64;
const _: () = assert!(
    core::mem::offset_of!(DmaTables, tag) == 0 && RECORD_END <= crate::objects::VDEV_ZEROED as u64
);

use crate::addrmap::format::{self, Entry, PteFormat};
use crate::addrmap::{self, AddressMap, ENTRIES, LEAF_LEVEL, Leaf, MapKind, table_span};
use crate::granule::GranuleState;
use crate::objects::{DMA_TABLES_OFFSET, Room, TvmObj, VdevHead, VdevObj, internal};
use crate::tsm::Tsm;
use crate::viommu::{
    self, Access, Context, Devices, HostMapping, Request, Requester, S2Entry, SecureMemory,
    Stage1Format, Stage1Root, Stage2, TvmId, VdevView,
};
use crate::viommu_glue::{MemRef, Translator, s2_entry, view_of};

/// Granules one vdevice's DMA table may hold (FEATURES `DMA`): a root and, for pages in one
/// 512 GiB and one 1 GiB region, up to 13 level-3 tables (26 MiB of IOVA space).
pub const MAX_DMA_TABLES: usize = 16;
/// IOVA pages one refresh translates at most (FEATURES `DMA`): 16 MiB of DMA per vdevice.
pub const DMA_MAX_PAGES: u32 = 4096;
/// Table entries one refresh reads at most looking for pages (the guest's stage-1 tables may
/// share subtrees, so what they reach is not bounded by their size).
pub const DMA_MAX_ENTRIES: u32 = 16384;

/// A vdevice's DMA table, recorded in its VDEV granule after the MMIO record
/// ([`DMA_TABLES_OFFSET`](crate::objects::DMA_TABLES_OFFSET)) rather than in [`VdevObj`], so the
/// calls that lock the VDEV do not copy it. Written only under the VDEV's lock (VDEV_CREATE sets
/// the tag, VDEV_DMA_TABLE appends granules, VDEV_DESTROY returns them); refreshes read it.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DmaTables {
    /// The IOMMU tag of the vdevice's stream (`1..=DMA_MAX_TAG`); 0 without a platform IOMMU.
    pub tag: u16,
    /// Granules in `tables`.
    pub count: u16,
    /// Zero.
    pub reserved: u32,
    /// The donated DMA_TABLE granules; the first is the root the stream is attached to.
    pub tables: [u64; MAX_DMA_TABLES],
}

impl DmaTables {
    /// The granules donated so far.
    pub fn granules(&self) -> impl Iterator<Item = Pa> + '_ {
        self.tables
            .iter()
            .take(usize::from(self.count))
            .map(|&p| Pa(p))
    }

    /// An empty record with `tag`.
    pub(crate) fn new(tag: u16) -> Self {
        DmaTables {
            tag,
            count: 0,
            reserved: 0,
            tables: [0; MAX_DMA_TABLES],
        }
    }

    /// What holds between calls.
    pub fn invariants(&self) -> Result<(), &'static str> {
        if usize::from(self.count) > MAX_DMA_TABLES || self.tag > DMA_MAX_TAG {
            return Err("DMA table count and tag in range");
        }
        if self.tag == 0 && self.count != 0 {
            return Err("DMA tables only with a tag");
        }
        Ok(())
    }
}

/// The IOMMU tags in use (bit *n*: tag *n*; tag 0 is the host domain's). Behind [`Tsm::dma`],
/// which every refresh holds.
pub(crate) struct DmaTags([u64; 4]);

impl DmaTags {
    pub(crate) const fn new() -> Self {
        DmaTags([0; 4])
    }

    fn bit(tag: u16) -> (usize, u64) {
        (usize::from(tag / 64), 1 << (tag % 64))
    }

    /// The lowest tag not in use.
    pub(crate) fn free(&self) -> Option<u16> {
        (1..=DMA_MAX_TAG).find(|&t| {
            let (w, m) = Self::bit(t);
            self.0.get(w).is_some_and(|x| x & m == 0)
        })
    }

    /// Marks `tag` in use or free.
    pub(crate) fn set(&mut self, tag: u16, used: bool) {
        let (w, m) = Self::bit(tag);
        if let Some(x) = self.0.get_mut(w) {
            if used {
                *x |= m;
            } else {
                *x &= !m;
            }
        }
    }
}

/// Whether a vdevice's requests may carry the T bit (its TDI is RUN and accepted): the view
/// its DMA table holds.
pub(crate) fn t1_view(v: &VdevHead) -> bool {
    v.state == VdevState::Run && v.accepted != 0
}

/// The stream of a vdevice: its PDEV's segment and its pBDF.
pub(crate) fn stream(r: Requester) -> DmaStream {
    DmaStream {
        segment: r.segment,
        rid: r.rid,
    }
}

impl Tsm<'_> {
    /// The DMA-table record of the VDEV granule at `vdev` (the caller holds it, or reads a
    /// snapshot for a refresh).
    pub fn dma_record(&self, vdev: Pa) -> Result<DmaTables, Status> {
        let mut d = DmaTables::new(0);
        let at = vdev.checked_add(DMA_TABLES_OFFSET).ok_or_else(internal)?;
        self.platform
            .read(at, d.as_mut_bytes())
            .map_err(|_| internal())?;
        Ok(d)
    }

    /// Writes the DMA-table record of the VDEV granule at `vdev`, which the caller holds.
    pub(crate) fn set_dma_record(&self, vdev: Pa, d: &DmaTables) -> Result<(), Status> {
        d.invariants().map_err(|_| internal())?;
        let at = vdev.checked_add(DMA_TABLES_OFFSET).ok_or_else(internal)?;
        self.platform
            .write(at, d.as_bytes())
            .map_err(|_| internal())
    }

    /// VDEV_CREATE (the caller holds the new VDEV's granule `vdev`): a tag for the vdevice,
    /// its stream out of the host domain (blocked until a table is donated), as the engine
    /// treats the requester as the vdevice's from now on, and its record. `init` writes the new
    /// object between the attach, which may still fail and must leave the granule as it was,
    /// and the record's tag: `init` zeroes the record's bytes
    /// ([`crate::objects::VDEV_ZEROED`] covers them), which are an empty record, so only the
    /// tag is written, not 136 bytes built in the frame. Without a platform IOMMU only `init`
    /// runs: the record stays empty (tag 0), and the calls that create and destroy vdevices pay
    /// nothing more. `Capacity(1)`: no tag left; `NotSupported(4)`: the IOMMU does not cover
    /// the pBDF's stream.
    pub(crate) fn dma_stream_create(
        &self,
        vdev: Pa,
        s: DmaStream,
        init: impl FnOnce() -> Result<(), Status>,
    ) -> Result<(), Status> {
        if self.iommu.is_none() {
            return init();
        }
        let mut tags = self.dma.lock();
        let tag = tags.free().ok_or(Status::arg(StatusCode::Capacity, 1))?;
        self.platform
            .attach(s, DmaDomain::Blocked)
            .map_err(|e| match e {
                IommuError::NoSuchStream => Status::arg(StatusCode::NotSupported, 4),
                IommuError::Absent | IommuError::BadDomain => internal(),
            })?;
        // Written after the attach, so a refused attach leaves the granule as it was; a write
        // that fails (a broken platform) gives the stream back.
        let written = init()
            .and_then(|()| vdev.checked_add(DMA_TABLES_OFFSET).ok_or_else(internal))
            .and_then(|at| {
                self.platform
                    .write(at, tag.as_bytes())
                    .map_err(|_| internal())
            });
        if let Err(e) = written {
            let _ = self.platform.attach(s, DmaDomain::Host);
            return Err(e);
        }
        tags.set(tag, true);
        Ok(())
    }

    /// VDEV_DESTROY of the VDEV at `vdev`: the stream back to the host domain, the tag's
    /// cached translations dropped and the tag free, then every table scrubbed and DELEGATED.
    /// The caller holds the vdevice's TVM and VDEV, so no refresh of it runs.
    pub(crate) fn dma_stream_destroy(&self, vdev: Pa, s: DmaStream) -> Result<(), Status> {
        if self.iommu.is_none() {
            return Ok(());
        }
        let d = &self.dma_record(vdev)?;
        // Every table is the vdevice's before anything changes.
        for pa in d.granules() {
            if !matches!(self.granules.peek(pa), Ok((GranuleState::DmaTable, _))) {
                return Err(internal());
            }
        }
        self.platform
            .attach(s, DmaDomain::Host)
            .map_err(|_| internal())?;
        {
            let mut tags = self.dma.lock();
            self.platform.invalidate(d.tag);
            tags.set(d.tag, false);
        }
        for pa in d.granules() {
            let mut g = self
                .granules
                .lock_in(pa, GranuleState::DmaTable)
                .map_err(|_| internal())?;
            self.scrub(pa)?;
            g.transition(GranuleState::Delegated)
                .map_err(|_| internal())?;
        }
        Ok(())
    }

    /// The map of TVM `o` gained or lost a page: every vdevice of it is refreshed. The caller
    /// holds the TVM.
    pub(crate) fn dma_tvm_changed(&self, o: &TvmObj) {
        if self.iommu.is_none() {
            return;
        }
        for slot in o.vbdfs.iter().filter(|s| s.used != 0) {
            self.dma_refresh(Pa(slot.vdev));
        }
    }

    /// `v` (the VDEV at `vdev`, just saved) left or entered RUN-and-accepted: the view its table
    /// holds changes. `before`: [`t1_view`] of the object as the call found it.
    pub(crate) fn dma_view_changed(&self, vdev: Pa, before: bool, v: &VdevHead) {
        if before != t1_view(v) {
            self.dma_refresh(vdev);
        }
    }

    /// Recomposes the DMA table of the vdevice at `vdev` from what the engine translates now,
    /// then invalidates its tag. The caller holds the vdevice's TVM or VDEV, and saved every
    /// change the refresh must see.
    pub(crate) fn dma_refresh(&self, vdev: Pa) {
        let Some(format) = self.iommu else {
            return;
        };
        let _serial = self.dma.lock();
        let (mut vdev_room, mut tvm_room) = (Room::new(), Room::new());
        let Some(v) = self.snapshot::<VdevObj>(vdev, &mut vdev_room) else {
            return;
        };
        let (Some(requester), Some(tvm)) = (
            self.requester_of(v),
            self.snapshot::<TvmObj>(Pa(v.tvm), &mut tvm_room),
        ) else {
            return;
        };
        let Ok(d) = self.dma_record(vdev) else {
            return;
        };
        let tag = d.tag;
        let fmt = format::for_dma(format);
        if tag == 0 || !Layout::new(self, fmt, &d).root_usable() {
            return;
        }
        let composer = Composer {
            tr: self.translator(),
            tsm: self,
            requester,
            view: view_of(vdev, v, None),
            tvm,
        };
        // A table that goes away keeps its granule until the invalidation, so a composition
        // that ran out of tables while some went away is run once more: then it has every
        // granule the new tree does not use, and maps all that fits in them.
        for _ in 0..2 {
            let mut layout = Layout::new(self, fmt, &d);
            self.compose(&composer, &mut layout, tag);
            let released = layout.release();
            if !(layout.short && released) {
                break;
            }
        }
    }

    /// One composition into `layout`: the tree read back, every candidate page translated and
    /// mapped, stale entries cleared, the tag invalidated.
    fn compose(&self, c: &Composer<'_, '_>, layout: &mut Layout<'_>, tag: u16) {
        if !layout.recover() {
            // Only a TSM bug leaves a tree it cannot read back: start again from nothing,
            // the root emptied and the hardware's copy dropped before anything is reused.
            layout.clear(self, tag);
        }
        let (requester, view) = (c.requester, c.view);
        let t_bit = view.tdi_run && view.accepted;
        let mut pages = DMA_MAX_PAGES;
        let mut entries = DMA_MAX_ENTRIES;
        let mut visit = |iova: Iova| {
            let Some(left) = pages.checked_sub(1) else {
                return false;
            };
            pages = left;
            let req = |access| Request {
                requester,
                pasid: None,
                t_bit,
                iova,
                access,
            };
            // The engine never lets a write through where it refuses a read (both stages'
            // write rights imply read), so a page is readable or not mapped.
            if let Ok(pa) = viommu::translate_uncached(c, &req(Access::Read)) {
                let write = viommu::translate_uncached(c, &req(Access::Write)).is_ok();
                layout.map_page(iova, pa, write);
            }
            true
        };
        match (view.format, view.stage1) {
            (Stage1Format::None, _) | (_, Stage1Root::Bypass) => {
                self.map_pages(Pa(c.tvm.root), &mut entries, &mut visit);
            }
            _ => viommu::stage1_pages(c, &view, &mut entries, &mut visit),
        }
        layout.finish();
        self.platform.invalidate(tag);
    }

    /// Calls `visit` with the GPA of every page the TVM map rooted at `root` maps, ascending,
    /// reading at most `budget` entries, until `visit` says stop: the IOVAs of a vdevice whose
    /// requests skip stage 1.
    fn map_pages(&self, root: Pa, budget: &mut u32, visit: &mut dyn FnMut(Iova) -> bool) {
        let mut stop = false;
        self.map_table(root, 0, 0, budget, visit, &mut stop);
    }

    fn map_table(
        &self,
        table: Pa,
        level: u8,
        base: u64,
        budget: &mut u32,
        visit: &mut dyn FnMut(Iova) -> bool,
        stop: &mut bool,
    ) {
        // A table is read whole: the budget is charged all its entries at once.
        let Some(left) = budget.checked_sub(ENTRIES as u32) else {
            *stop = true;
            return;
        };
        *budget = left;
        let span = entry_span(level);
        for_entries(self.platform, table, |idx, raw| {
            // idx < 512 and the spans below level 0 fit in 48 bits.
            let gpa = base | (idx as u64).saturating_mul(span);
            match self.fmt.decode(raw, level) {
                Entry::Table(next) if level < LEAF_LEVEL => {
                    self.map_table(next, level.saturating_add(1), gpa, budget, visit, stop);
                }
                Entry::Page(_) if level == LEAF_LEVEL => *stop = !visit(Iova(gpa)),
                _ => {}
            }
            !*stop
        });
    }
}

/// The IOVA (or GPA) span of one entry of a table at `level` (its 512th part).
fn entry_span(level: u8) -> u64 {
    const _: () = assert!(ENTRIES == 1 << 9);
    table_span(level) >> 9
}

/// Reads the 512 entries of `table` in chunks and hands each non-zero one to `f` (index, raw)
/// until it returns `false` (an entry of 0 is invalid in every format here; tables are mostly
/// empty, and a chunk of zeros costs one comparison). `false` if it stopped early or the table
/// could not be read.
fn for_entries(mem: &dyn PhysMem, table: Pa, mut f: impl FnMut(usize, u64) -> bool) -> bool {
    const CHUNK: usize = 64;
    let mut buf = [0u8; CHUNK * 8];
    for first in (0..ENTRIES).step_by(CHUNK) {
        // first < 512: the chunk stays inside the table's granule.
        let at = Pa(table.0 | ((first as u64) << 3));
        if mem.read(at, &mut buf).is_err() {
            return false;
        }
        if buf == [0u8; CHUNK * 8] {
            continue;
        }
        for (k, d) in buf.chunks_exact(8).enumerate() {
            let raw = u64::from_le_bytes(d.try_into().unwrap_or([0; 8]));
            if raw != 0 && !f(first.saturating_add(k), raw) {
                return false;
            }
        }
    }
    true
}

/// The engine's view of one vdevice for a refresh: the [`Translator`] with the vdevice's view
/// and its TVM taken once, from the snapshots the refresh made (two object copies per refresh
/// instead of two per translation).
struct Composer<'t, 'a> {
    tr: Translator<'t, 'a>,
    tsm: &'t Tsm<'a>,
    requester: Requester,
    view: VdevView,
    tvm: &'t TvmObj,
}

impl Devices for Composer<'_, '_> {
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView> {
        if requester == self.requester && pasid.is_none() {
            return Some(self.view);
        }
        self.tr.vdevice(requester, pasid)
    }
    fn host_domain(&self, requester: Requester, iova: Iova) -> Option<HostMapping> {
        self.tr.host_domain(requester, iova)
    }
}

impl Stage2 for Composer<'_, '_> {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        if tvm == self.view.tvm {
            return self.tsm.stage2_of(self.tvm, gpa).ok().map(s2_entry);
        }
        self.tr.stage2(tvm, gpa)
    }
}

impl SecureMemory for Composer<'_, '_> {
    fn is_secure(&self, pa: Pa) -> bool {
        self.tr.is_secure(pa)
    }
}

impl<'a> Context for Composer<'_, 'a> {
    type Mem = MemRef<'a>;
    fn mem(&self) -> &MemRef<'a> {
        self.tr.mem()
    }
}

/// What a table of the DMA table maps: its level and the first IOVA it covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Role {
    level: u8,
    base: u64,
}

const ROOT: Role = Role { level: 0, base: 0 };

/// The granules of one vdevice's DMA table during a refresh: which table each held before
/// (`old`, read back from the tree) and holds now (`new`), and which entries of each the new
/// composition wrote (`used`).
struct Layout<'m> {
    mem: &'m dyn PhysMem,
    map: AddressMap<'m>,
    fmt: &'static dyn PteFormat,
    pa: [Pa; MAX_DMA_TABLES],
    usable: [bool; MAX_DMA_TABLES],
    old: [Option<Role>; MAX_DMA_TABLES],
    new: [Option<Role>; MAX_DMA_TABLES],
    used: [[u64; ENTRIES / 64]; MAX_DMA_TABLES],
    /// The last level-3 table used: (its IOVA base, its index), for runs of pages.
    last: Option<(u64, usize)>,
    /// A page was left out for want of a table.
    short: bool,
}

impl<'m> Layout<'m> {
    fn new(t: &'m Tsm<'_>, fmt: &'static dyn PteFormat, d: &DmaTables) -> Self {
        let mut pa = [Pa(0); MAX_DMA_TABLES];
        let mut usable = [false; MAX_DMA_TABLES];
        // A granule is written only if it is a DMA table: a table donated while this refresh
        // runs may still be DELEGATED (its donor refreshes again once it is not).
        for ((p, u), g) in pa.iter_mut().zip(usable.iter_mut()).zip(d.granules()) {
            *p = g;
            *u = matches!(t.granules.peek(g), Ok((GranuleState::DmaTable, _)));
        }
        let mut new = [None; MAX_DMA_TABLES];
        if let Some(r) = new.first_mut() {
            *r = Some(ROOT);
        }
        Layout {
            mem: t.platform,
            map: AddressMap::new(t.platform, fmt, pa.first().copied().unwrap_or(Pa(0))),
            fmt,
            pa,
            usable,
            old: [None; MAX_DMA_TABLES],
            new,
            used: [[0; ENTRIES / 64]; MAX_DMA_TABLES],
            last: None,
            short: false,
        }
    }

    fn root_usable(&self) -> bool {
        self.usable.first().copied().unwrap_or(false)
    }

    /// Reads the tables' roles back from the tree the last refresh left, level by level from
    /// the root. `false` when the tree is not one a refresh writes (a pointer to a granule that
    /// is not one of the vdevice's tables, or to one twice, or an entry of another kind above
    /// level 3).
    fn recover(&mut self) -> bool {
        self.old = [None; MAX_DMA_TABLES];
        if let Some(r) = self.old.first_mut() {
            *r = Some(ROOT);
        }
        for level in 0..LEAF_LEVEL {
            let span = entry_span(level);
            for j in 0..MAX_DMA_TABLES {
                let Some(Some(parent)) = self.old.get(j).copied() else {
                    continue;
                };
                if parent.level != level {
                    continue;
                }
                let (mem, fmt, table) = (self.mem, self.fmt, self.pa.get(j).copied());
                let Some(table) = table else {
                    return false;
                };
                let mut ok = true;
                let read = for_entries(mem, table, |idx, raw| {
                    ok = match fmt.decode(raw, level) {
                        // (Not handed out: 0 is invalid in both formats.)
                        Entry::Invalid => true,
                        Entry::Table(next) => {
                            let base = parent.base | (idx as u64).saturating_mul(span);
                            self.adopt_old(
                                next,
                                Role {
                                    level: level.saturating_add(1),
                                    base,
                                },
                            )
                        }
                        Entry::Page(_) | Entry::Foreign => false,
                    };
                    ok
                });
                if !read || !ok {
                    return false;
                }
            }
        }
        true
    }

    /// Records that the tree's table at `pa` has `role`; `false` if `pa` is not a free table
    /// granule of the vdevice.
    fn adopt_old(&mut self, pa: Pa, role: Role) -> bool {
        let found = self
            .pa
            .iter()
            .zip(self.usable.iter())
            .zip(self.old.iter_mut())
            .find(|((p, u), o)| **p == pa && **u && o.is_none());
        match found {
            Some((_, o)) => {
                *o = Some(role);
                true
            }
            None => false,
        }
    }

    /// Empties the tree: the root first, so the hardware reaches nothing once `tag` is
    /// invalidated, then every other table.
    fn clear(&mut self, t: &Tsm<'_>, tag: u16) {
        let zero = |p: Pa| {
            let _ = t.platform.zero(p, GRANULE_SIZE as usize);
        };
        zero(self.map_root());
        t.platform.invalidate(tag);
        for (p, _) in self.pa.iter().zip(self.usable).skip(1).filter(|x| x.1) {
            zero(*p);
        }
        self.old = [None; MAX_DMA_TABLES];
        if let Some(r) = self.old.first_mut() {
            *r = Some(ROOT);
        }
    }

    fn map_root(&self) -> Pa {
        self.pa.first().copied().unwrap_or(Pa(0))
    }

    /// The granule that holds the table of `role` in the new tree: the one that held it before,
    /// else a free one (all zero, unreachable). `None` when none is left.
    fn place(&mut self, role: Role) -> Option<usize> {
        if let Some(j) = self.new.iter().position(|r| *r == Some(role)) {
            return Some(j);
        }
        let j = self
            .old
            .iter()
            .zip(self.new.iter())
            .position(|(o, n)| *o == Some(role) && n.is_none())
            .or_else(|| {
                (0..MAX_DMA_TABLES).find(|&j| {
                    self.usable.get(j) == Some(&true)
                        && self.old.get(j) == Some(&None)
                        && self.new.get(j) == Some(&None)
                })
            })?;
        *self.new.get_mut(j)? = Some(role);
        Some(j)
    }

    /// Marks entry `idx` of table `j` as written by this refresh; `false` if it already was.
    fn mark(&mut self, j: usize, idx: usize) -> bool {
        let Some(w) = self.used.get_mut(j).and_then(|u| u.get_mut(idx / 64)) else {
            return false;
        };
        let m = 1u64 << (idx % 64);
        let fresh = *w & m == 0;
        *w |= m;
        fresh
    }

    fn used(&self, j: usize, idx: usize) -> bool {
        self.used
            .get(j)
            .and_then(|u| u.get(idx / 64))
            .is_some_and(|w| w & (1u64 << (idx % 64)) != 0)
    }

    /// The level-3 table for `iova`, linked into its parents (created as needed).
    fn leaf_table(&mut self, iova: Iova) -> Option<usize> {
        let region = iova.0 & !table_span(LEAF_LEVEL).saturating_sub(1);
        if let Some((base, j)) = self.last
            && base == region
        {
            return Some(j);
        }
        let mut parent = 0usize;
        for level in 1..=LEAF_LEVEL {
            let base = iova.0 & !table_span(level).saturating_sub(1);
            let j = self.place(Role { level, base })?;
            let idx = addrmap::index(Gpa(iova.0), level.saturating_sub(1));
            if self.mark(parent, idx) {
                let (table, next) = (self.pa.get(parent)?, self.pa.get(j)?);
                let _ = self.map.write_raw(*table, idx, self.fmt.table(*next));
            }
            parent = j;
        }
        self.last = Some((region, parent));
        Some(parent)
    }

    /// Maps the page of `iova` to the page of `pa`, readable, writable if `write`. A page that
    /// finds no table left is not mapped (its DMA faults).
    fn map_page(&mut self, iova: Iova, pa: Pa, write: bool) {
        let Some(j) = self.leaf_table(iova) else {
            self.short = true;
            return;
        };
        let idx = addrmap::index(Gpa(iova.0), LEAF_LEVEL);
        self.mark(j, idx);
        let leaf = Leaf {
            pa: pa.granule_base(),
            perms: addrmap::Perms { write, exec: false },
            kind: MapKind::Private,
        };
        if let Some(&table) = self.pa.get(j) {
            let _ = self.map.write_raw(table, idx, self.fmt.page(leaf));
        }
    }

    /// Clears every entry of the new tree that this refresh did not write: stale pages, and
    /// the links to tables that go away.
    fn finish(&mut self) {
        for j in 0..MAX_DMA_TABLES {
            if !matches!(self.new.get(j), Some(Some(_))) {
                continue;
            }
            let Some(&table) = self.pa.get(j) else {
                continue;
            };
            let mut stale = [0u64; ENTRIES / 64];
            for_entries(self.mem, table, |idx, raw| {
                if raw != 0
                    && !self.used(j, idx)
                    && let Some(w) = stale.get_mut(idx / 64)
                {
                    *w |= 1u64 << (idx % 64);
                }
                true
            });
            for idx in 0..ENTRIES {
                if stale
                    .get(idx / 64)
                    .is_some_and(|w| w & (1u64 << (idx % 64)) != 0)
                {
                    let _ = self.map.write_raw(table, idx, 0);
                }
            }
        }
    }

    /// Zeroes the tables the new tree does not use (unlinked by [`Layout::finish`] and out of
    /// the hardware's TLB since the invalidation), so they are free for the next composition.
    /// Whether there were any.
    fn release(&self) -> bool {
        let mut any = false;
        for ((p, o), n) in self.pa.iter().zip(self.old.iter()).zip(self.new.iter()) {
            if o.is_some() && n.is_none() {
                let _ = self.mem.zero(*p, GRANULE_SIZE as usize);
                any = true;
            }
        }
        any
    }
}
