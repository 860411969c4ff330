//! The IOTLB and the table-translation cache: fixed capacity, no heap.
//!
//! * **IOTLB**: [`IOTLB_SETS`] × [`IOTLB_WAYS`] entries, set-associative, tagged by (vdevice,
//!   PASID, IOVA page), round-robin replacement within a set. An entry holds the result of a
//!   complete walk (stage-1 leaf permissions and level, final GPA, stage-2 mapping) *and the
//!   provenance of the walk*: the GPA and PA of every stage-1 table page it read. Permissions
//!   and the final check are re-applied on every hit, so a hit behaves exactly like a walk.
//! * **Table cache**: [`TABLE_CACHE_CAPACITY`] stage-2 translations of stage-1 *table* pages
//!   (TVM, GPA page) → mapping, fully associative, round robin. It turns the 4 stage-2 walks a
//!   two-stage miss needs for its table reads into cache hits when the tables were seen before.
//! * **Walk cache**: [`WALK_CACHE_CAPACITY`] stage-1 walk prefixes, tagged by (vdevice, PASID,
//!   2 MiB IOVA region): the level-3 table the levels above it led to (three, two or one, as
//!   the root's input size sets the start level), with the restrictions and table pages
//!   collected on the way. A miss in a known region reads one descriptor.
//!
//! Entries of every cache but the table cache are tagged by (vdevice, PASID), not by the root
//! they were walked from: a root and its input size change only by G_S1_ATTACH / G_S1_DETACH,
//! which drop that tag's entries after the new root is in place, so no walk made under one
//! configuration answers a request under another.
//!
//! Faults are never cached. Every invalidation drops every entry that *might* depend on what
//! changed, so a translation never outlives a mapping it came from:
//!
//! | event (core call) | API |
//! |---|---|
//! | unmap / permission change of TVM GPAs (private or shared) | [`Iotlb::invalidate_gpa`] |
//! | delegate / undelegate of a PA | [`Iotlb::invalidate_pa`] |
//! | vdevice unbind, stop, error, destroy | [`Iotlb::invalidate_vdev`] |
//! | stage-1 attach / detach (PASID or default root) | [`Iotlb::invalidate_pasid`] |
//! | guest IOTLB invalidation command (also drops walk prefixes of the regions it touches) | [`Iotlb::invalidate_guest`] |
//! | TVM destroy | [`Iotlb::invalidate_tvm`] |

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};

use super::stage1::Inherited;
use super::{Perms, S2Entry, TvmId, VdevId};

#[cfg(test)]
mod owner_filter_tests;
#[cfg(test)]
mod pa_filter_tests;

/// Sets of the IOTLB.
pub const IOTLB_SETS: usize = 64;
/// Ways per set.
pub const IOTLB_WAYS: usize = 4;
/// Entries of the IOTLB (256 pages: 1 MiB of DMA working set per TSM).
pub const IOTLB_CAPACITY: usize = IOTLB_SETS * IOTLB_WAYS;
/// Entries of the table-translation cache (16 table pages: the four levels of four walks).
pub const TABLE_CACHE_CAPACITY: usize = 16;
/// Entries of the stage-1 walk cache (16 level-3 tables: 32 MiB of IOVA space).
pub const WALK_CACHE_CAPACITY: usize = 16;
/// log2 of the IOVA region one level-3 table covers.
const REGION_SHIFT: u32 = 21;

const SET_BITS: u32 = IOTLB_SETS.trailing_zeros();
/// Bits of the PA filter: a few times the PAs a full IOTLB can name, so that a delegate or
/// undelegate of a granule no cached translation touched rarely has to look further.
const PA_FILTER_BITS: usize = 1024;
/// PASID tag of requests without PASID (PASIDs are 20 bits, so it cannot collide).
const NO_PASID: u32 = u32::MAX;

/// A stage-1 table page a walk read: its GPA and the PA stage 2 gave it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct TableRef {
    pub gpa: Gpa,
    pub pa: Pa,
}

/// The access-independent result of a complete walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Walked {
    /// Stage-1 leaf permissions and level (`None`: no stage 1).
    pub s1: Option<(Perms, u8)>,
    /// The final GPA page (the offset is the request's).
    pub gpa: Gpa,
    /// Stage-2 mapping of `gpa`'s page.
    pub s2: S2Entry,
    /// Table pages read, in the order read (from the start level down).
    pub tables: [TableRef; 4],
    /// How many of `tables` are used.
    pub ntables: u8,
}

impl Walked {
    fn tables(&self) -> &[TableRef] {
        self.tables
            .get(..usize::from(self.ntables))
            .unwrap_or(&self.tables)
    }
}

/// A field of every cache entry whose only value is 0xFF. It has the most invalid values of any
/// field (255), so an empty slot (`None`) is written as a 0 in it and nothing else: an empty
/// [`Iotlb`] is all zero bytes, a static of it costs `.bss`, not 34 KiB of `.data`, and the
/// image needs no boot-time copy of it (docs/benchmarks.md, "Boot, memory and image").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Held {
    Yes = 0xFF,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    #[expect(
        dead_code,
        reason = "never read: it exists for the layout of an empty slot"
    )]
    held: Held,
    vdev: VdevId,
    tvm: TvmId,
    pasid: u32,
    iova_page: u64,
    walked: Walked,
}

/// Where the levels above level 3 of a stage-1 walk lead.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct WalkPrefix {
    /// GPA of the level-3 table.
    pub table: u64,
    /// Restrictions of the table descriptors above it.
    pub inh: Inherited,
    /// The table pages read above level 3, from the start level down.
    pub tables: [TableRef; 3],
    /// How many of `tables` are used (3 - the start level).
    pub ntables: u8,
}

impl WalkPrefix {
    pub(super) fn tables(&self) -> &[TableRef] {
        self.tables
            .get(..usize::from(self.ntables))
            .unwrap_or(&self.tables)
    }
}

#[derive(Clone, Copy, Debug)]
struct WalkEntry {
    #[expect(
        dead_code,
        reason = "never read: it exists for the layout of an empty slot"
    )]
    held: Held,
    vdev: VdevId,
    tvm: TvmId,
    pasid: u32,
    region: u64,
    prefix: WalkPrefix,
}

#[derive(Clone, Copy, Debug)]
struct TableEntry {
    #[expect(
        dead_code,
        reason = "never read: it exists for the layout of an empty slot"
    )]
    held: Held,
    tvm: TvmId,
    gpa: Gpa,
    s2: S2Entry,
}

/// A may-hold summary of granules: those cached translations depend on (final pages and stage-1
/// table pages, `Iotlb::pa_filter`), or the TVMs and vdevices they belong to (`Iotlb::owners`),
/// so that [`Iotlb::invalidate_pa`] (every delegate and undelegate), `invalidate_tvm` and
/// `invalidate_vdev` scan the caches only when an entry may name the granule. Every insert sets the bit of each PA
/// the new entry names, and bits are cleared only by recomputing them from the entries that
/// remain, so a clear bit proves no entry names the PA; a set bit may be stale (a replaced or
/// dropped entry, or another PA with the same bit) and only costs a scan.
#[derive(Clone, Copy, Debug)]
struct PaFilter([u64; PA_FILTER_BITS / 64]);

impl PaFilter {
    const fn new() -> Self {
        PaFilter([0; PA_FILTER_BITS / 64])
    }

    /// Word index and mask of `pa`'s granule: the low bits of its granule number, so granules
    /// less than `PA_FILTER_BITS` granules apart never share a bit. A multiplicative hash cost
    /// every (un)delegate 6 more instructions on aarch64 and 2 on x86_64 (its 64-bit constant
    /// and the multiply; branch `deleg9`) and spread no better: the names are granules, which a
    /// guest or host can place to collide under any public hash, and a collision only costs a
    /// scan, never a missed invalidation.
    fn bit(pa: Pa) -> (usize, u64) {
        let g = pa.0 >> GRANULE_SIZE.trailing_zeros();
        ((g / 64) as usize % (PA_FILTER_BITS / 64), 1 << (g % 64))
    }

    fn add(&mut self, pa: Pa) {
        let (w, m) = Self::bit(pa);
        if let Some(word) = self.0.get_mut(w) {
            *word |= m;
        }
    }

    fn may_hold(&self, pa: Pa) -> bool {
        let (w, m) = Self::bit(pa);
        // A word out of range cannot happen (`bit` stays below PA_FILTER_BITS); answering
        // "may hold" keeps even that case exact.
        self.0.get(w).is_none_or(|word| word & m != 0)
    }
}

/// Which PASIDs a guest invalidation covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PasidScope {
    /// Every PASID and the requests without PASID.
    All,
    /// One PASID (`None`: requests without PASID).
    One(Option<u32>),
}

/// The TSM's IOTLB (one for all vdevices; the core keeps it behind a spin mutex).
#[derive(Debug)]
pub struct Iotlb {
    sets: [[Option<Entry>; IOTLB_WAYS]; IOTLB_SETS],
    victim: [u8; IOTLB_SETS],
    tables: [Option<TableEntry>; TABLE_CACHE_CAPACITY],
    table_victim: usize,
    walks: [Option<WalkEntry>; WALK_CACHE_CAPACITY],
    walk_victim: usize,
    /// The granules the entries above may name (see [`PaFilter`]).
    pa_filter: PaFilter,
    /// The TVMs and vdevices the entries above may belong to (their granules), by the same
    /// rule: [`Iotlb::invalidate_tvm`] (every TVM_DESTROY) and [`Iotlb::invalidate_vdev`]
    /// (every unbind, stop and VDEV_DESTROY) scan the 288 slots only when an entry may be
    /// theirs.
    owners: PaFilter,
    hits: u64,
    misses: u64,
}

impl Default for Iotlb {
    fn default() -> Self {
        Self::new()
    }
}

fn page(a: u64) -> u64 {
    a & !(GRANULE_SIZE - 1)
}

fn pasid_tag(pasid: Option<u32>) -> u32 {
    pasid.unwrap_or(NO_PASID)
}

fn set_index(vdev: VdevId, pasid: u32, iova_page: u64) -> usize {
    let h = (iova_page >> 12) ^ vdev.0.rotate_left(29) ^ (u64::from(pasid) << 40);
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SET_BITS)) as usize
}

/// Page range `[start, end)` of `[addr, addr + len)`, saturating at the top of the space.
fn page_range(addr: u64, len: u64) -> (u64, u64) {
    let end = addr.saturating_add(len);
    // Rounded up to a page; the last page of the space has no end below 2^64.
    let end = end
        .checked_add(GRANULE_SIZE - 1)
        .map_or(u64::MAX, |e| e & !(GRANULE_SIZE - 1));
    (page(addr), end)
}

impl Iotlb {
    /// An empty IOTLB.
    pub const fn new() -> Self {
        Iotlb {
            sets: [[None; IOTLB_WAYS]; IOTLB_SETS],
            victim: [0; IOTLB_SETS],
            tables: [None; TABLE_CACHE_CAPACITY],
            table_victim: 0,
            walks: [None; WALK_CACHE_CAPACITY],
            walk_victim: 0,
            pa_filter: PaFilter::new(),
            owners: PaFilter::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// IOTLB hits since creation (wrapping).
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// IOTLB misses since creation (wrapping).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Valid IOTLB entries.
    pub fn len(&self) -> usize {
        self.sets.iter().flatten().filter(|e| e.is_some()).count()
    }

    /// Whether no IOTLB entry is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether no cache holds anything: no IOTLB entry, table translation or walk prefix.
    pub fn is_clear(&self) -> bool {
        self.is_empty()
            && self.tables.iter().all(Option::is_none)
            && self.walks.iter().all(Option::is_none)
    }

    pub(super) fn lookup(
        &mut self,
        vdev: VdevId,
        pasid: Option<u32>,
        iova: Iova,
    ) -> Option<Walked> {
        let (p, ip) = (pasid_tag(pasid), page(iova.0));
        let found = self.sets.get(set_index(vdev, p, ip)).and_then(|set| {
            set.iter()
                .flatten()
                .find(|e| e.vdev == vdev && e.pasid == p && e.iova_page == ip)
                .map(|e| e.walked)
        });
        if found.is_some() {
            self.hits = self.hits.wrapping_add(1);
        } else {
            self.misses = self.misses.wrapping_add(1);
        }
        found
    }

    pub(super) fn insert(
        &mut self,
        vdev: VdevId,
        tvm: TvmId,
        pasid: Option<u32>,
        iova: Iova,
        walked: Walked,
    ) {
        let (p, ip) = (pasid_tag(pasid), page(iova.0));
        let si = set_index(vdev, p, ip);
        let (Some(set), Some(victim)) = (self.sets.get_mut(si), self.victim.get_mut(si)) else {
            return;
        };
        let way = set
            .iter()
            .position(|e| e.is_some_and(|e| e.vdev == vdev && e.pasid == p && e.iova_page == ip))
            .or_else(|| set.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                let v = usize::from(*victim) % IOTLB_WAYS;
                // A round-robin cursor, meant to wrap (v < IOTLB_WAYS, so it never does).
                *victim = (v.wrapping_add(1) % IOTLB_WAYS) as u8;
                v
            });
        self.pa_filter.add(walked.s2.pa.granule_base());
        for t in walked.tables() {
            self.pa_filter.add(t.pa);
        }
        self.owners.add(Pa(vdev.0));
        self.owners.add(Pa(tvm.0));
        if let Some(slot) = set.get_mut(way) {
            *slot = Some(Entry {
                held: Held::Yes,
                vdev,
                tvm,
                pasid: p,
                iova_page: ip,
                walked,
            });
        }
    }

    pub(super) fn table_lookup(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        let g = gpa.granule_base();
        self.tables
            .iter()
            .flatten()
            .find(|t| t.tvm == tvm && t.gpa == g)
            .map(|t| t.s2)
    }

    pub(super) fn table_insert(&mut self, tvm: TvmId, gpa: Gpa, s2: S2Entry) {
        let i = self.table_victim % TABLE_CACHE_CAPACITY;
        // A round-robin cursor, meant to wrap.
        self.table_victim = i.wrapping_add(1) % TABLE_CACHE_CAPACITY;
        self.pa_filter.add(s2.pa.granule_base());
        self.owners.add(Pa(tvm.0));
        if let Some(slot) = self.tables.get_mut(i) {
            *slot = Some(TableEntry {
                held: Held::Yes,
                tvm,
                gpa: gpa.granule_base(),
                s2,
            });
        }
    }

    pub(super) fn walk_lookup(
        &self,
        vdev: VdevId,
        pasid: Option<u32>,
        iova: Iova,
    ) -> Option<WalkPrefix> {
        let (p, region) = (pasid_tag(pasid), iova.0 >> REGION_SHIFT);
        self.walks
            .iter()
            .flatten()
            .find(|w| w.vdev == vdev && w.pasid == p && w.region == region)
            .map(|w| w.prefix)
    }

    pub(super) fn walk_insert(
        &mut self,
        vdev: VdevId,
        tvm: TvmId,
        pasid: Option<u32>,
        iova: Iova,
        prefix: WalkPrefix,
    ) {
        let i = self.walk_victim % WALK_CACHE_CAPACITY;
        // A round-robin cursor, meant to wrap.
        self.walk_victim = i.wrapping_add(1) % WALK_CACHE_CAPACITY;
        for t in prefix.tables() {
            self.pa_filter.add(t.pa);
        }
        self.owners.add(Pa(vdev.0));
        self.owners.add(Pa(tvm.0));
        if let Some(slot) = self.walks.get_mut(i) {
            *slot = Some(WalkEntry {
                held: Held::Yes,
                vdev,
                tvm,
                pasid: pasid_tag(pasid),
                region: iova.0 >> REGION_SHIFT,
                prefix,
            });
        }
    }

    fn retain_walks(&mut self, mut keep: impl FnMut(&WalkEntry) -> bool) {
        for slot in self.walks.iter_mut() {
            if slot.as_ref().is_some_and(|e| !keep(e)) {
                *slot = None;
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        for slot in self.sets.iter_mut().flatten() {
            if slot.as_ref().is_some_and(|e| !keep(e)) {
                *slot = None;
            }
        }
    }

    fn retain_tables(&mut self, mut keep: impl FnMut(&TableEntry) -> bool) {
        for slot in self.tables.iter_mut() {
            if slot.as_ref().is_some_and(|e| !keep(e)) {
                *slot = None;
            }
        }
    }

    /// `tvm`'s map changed for `[gpa, gpa + len)` (unmap, or a permission change): drops every
    /// translation whose final page or any stage-1 table page came through those GPAs.
    pub fn invalidate_gpa(&mut self, tvm: TvmId, gpa: Gpa, len: u64) {
        if len == 0 {
            return;
        }
        let (start, end) = page_range(gpa.0, len);
        let hit = |g: Gpa| g.0 >= start && g.0 < end;
        self.retain(|e| {
            e.tvm != tvm || !(hit(e.walked.gpa) || e.walked.tables().iter().any(|t| hit(t.gpa)))
        });
        self.retain_tables(|t| t.tvm != tvm || !hit(t.gpa));
        self.retain_walks(|w| {
            w.tvm != tvm
                || !(hit(Gpa(w.prefix.table)) || w.prefix.tables().iter().any(|t| hit(t.gpa)))
        });
    }

    /// `pa`'s granule changed state (delegate, undelegate): drops every translation that
    /// reached it or read a stage-1 table in it.
    // Inline, the filter test only: every (un)delegate comes here, almost always to return at
    // once, and out of line the call's frame was half of its 22 instructions on aarch64
    // (profiled).
    #[inline(always)]
    pub fn invalidate_pa(&mut self, pa: Pa) {
        let p = pa.granule_base();
        if self.pa_filter.may_hold(p) {
            self.invalidate_pa_held(p);
        }
    }

    /// [`Iotlb::invalidate_pa`] of granule `p`, which the PA filter says an entry may name.
    #[inline(never)]
    fn invalidate_pa_held(&mut self, p: Pa) {
        self.retain(|e| {
            e.walked.s2.pa.granule_base() != p && e.walked.tables().iter().all(|t| t.pa != p)
        });
        self.retain_tables(|t| t.s2.pa.granule_base() != p);
        self.retain_walks(|w| w.prefix.tables().iter().all(|t| t.pa != p));
        self.rebuild_pa_filter();
    }

    /// Recomputes the PA filter from the entries left, dropping the bits of entries gone.
    fn rebuild_pa_filter(&mut self) {
        let mut f = PaFilter::new();
        for e in self.sets.iter().flatten().flatten() {
            f.add(e.walked.s2.pa.granule_base());
            for t in e.walked.tables() {
                f.add(t.pa);
            }
        }
        for t in self.tables.iter().flatten() {
            f.add(t.s2.pa.granule_base());
        }
        for w in self.walks.iter().flatten() {
            for t in w.prefix.tables() {
                f.add(t.pa);
            }
        }
        self.pa_filter = f;
    }

    /// Recomputes the owner filter from the entries left.
    fn rebuild_owners(&mut self) {
        let mut f = PaFilter::new();
        for e in self.sets.iter().flatten().flatten() {
            f.add(Pa(e.vdev.0));
            f.add(Pa(e.tvm.0));
        }
        for t in self.tables.iter().flatten() {
            f.add(Pa(t.tvm.0));
        }
        for w in self.walks.iter().flatten() {
            f.add(Pa(w.vdev.0));
            f.add(Pa(w.tvm.0));
        }
        self.owners = f;
    }

    /// Drops every translation of `vdev` (unbind, stop, error, destroy).
    pub fn invalidate_vdev(&mut self, vdev: VdevId) {
        if !self.owners.may_hold(Pa(vdev.0)) {
            return;
        }
        self.retain(|e| e.vdev != vdev);
        self.retain_walks(|w| w.vdev != vdev);
        self.rebuild_owners();
    }

    /// Drops every translation of `vdev` for `pasid` (`None`: requests without PASID): the
    /// stage-1 root of that PASID was attached, replaced or detached.
    // Out of line on x86_64, as `AcceptEvidence::matches` (`vrun8`): inlined into both of its
    // callers in the run loop, it cost `.text` ~400 bytes there.
    #[cfg_attr(target_arch = "x86_64", inline(never))]
    pub fn invalidate_pasid(&mut self, vdev: VdevId, pasid: Option<u32>) {
        let p = pasid_tag(pasid);
        self.retain(|e| e.vdev != vdev || e.pasid != p);
        self.retain_walks(|w| w.vdev != vdev || w.pasid != p);
    }

    /// The guest invalidated `[iova, iova + len)` of `vdev` for `scope` after changing its
    /// stage-1 tables. `len == u64::MAX` covers everything from `iova` up.
    pub fn invalidate_guest(&mut self, vdev: VdevId, scope: PasidScope, iova: Iova, len: u64) {
        if len == 0 {
            return;
        }
        let (start, end) = page_range(iova.0, len);
        let in_scope = |p: u32| match scope {
            PasidScope::All => true,
            PasidScope::One(one) => p == pasid_tag(one),
        };
        self.retain(|e| {
            e.vdev != vdev || !in_scope(e.pasid) || e.iova_page < start || e.iova_page >= end
        });
        // A prefix goes if its region overlaps the range: the guest may have changed a table
        // descriptor above the pages it names.
        self.retain_walks(|w| {
            let first = w.region << REGION_SHIFT;
            let last = first | ((1 << REGION_SHIFT) - 1);
            w.vdev != vdev || !in_scope(w.pasid) || last < start || first >= end
        });
    }

    /// Drops everything of `tvm` (TVM destroy).
    pub fn invalidate_tvm(&mut self, tvm: TvmId) {
        if !self.owners.may_hold(Pa(tvm.0)) {
            return;
        }
        self.retain(|e| e.tvm != tvm);
        self.retain_tables(|t| t.tvm != tvm);
        self.retain_walks(|w| w.tvm != tvm);
        self.rebuild_owners();
    }

    /// Drops everything.
    pub fn flush(&mut self) {
        self.retain(|_| false);
        self.retain_tables(|_| false);
        self.retain_walks(|_| false);
        self.pa_filter = PaFilter::new();
        self.owners = PaFilter::new();
    }
}
