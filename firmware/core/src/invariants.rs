//! The invariant checker of ARCHITECTURE.md §2 (3–7) over the granule table, the objects and the
//! simulated platform's host-isolation record. The unit tests, the model-based test and fuzzers
//! call [`check`] after every step.

extern crate std;

use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;
use std::vec::Vec;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::state::VdevState;
use tsm_platform::PhysMem;
use zerocopy::IntoBytes;
use zerocopy::byteorder::{LittleEndian, U64};

use crate::addrmap::format::Entry;
use crate::addrmap::{ENTRIES, LEAF_LEVEL};
use crate::granule::GranuleState;
use crate::objects::{self, Object, PdevObj, Room, TvmObj, VcpuObj, VdevObj, ViommuObj};
use crate::testing::SimPlatform;
use crate::tsm::Tsm;

/// The object at `pa`, decoded as the core decodes it when it locks it: a state, operation or
/// vIOMMU type that is not one of its enum's values is a violation.
fn read<O: Object + Clone>(sim: &SimPlatform, pa: Pa) -> Result<O, String> {
    let mut room = Room::<O>::new();
    objects::read_decoded(sim, pa, &mut room)
        .map(|o| o.clone())
        .map_err(|_| format!("{} at {pa:x?} does not decode", core::any::type_name::<O>()))
}

/// The object at `pa`, decoded and its own invariants checked ([`Object::invariants`]).
fn read_object<O: Object + Clone>(sim: &SimPlatform, pa: Pa) -> Result<O, String> {
    let o: O = read(sim, pa)?;
    o.invariants()
        .map_err(|e| format!("{} at {pa:x?}: {e}", core::any::type_name::<O>()))?;
    Ok(o)
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// Checks invariants 3–7 (7: every private page of a TVM lies in its private half, every
/// shared page in its shared half); `Err` names the first violation.
pub fn check(tsm: &Tsm<'_>, sim: &SimPlatform) -> Result<(), String> {
    let granules: Vec<(Pa, GranuleState, u16)> = tsm.granules().snapshot().collect();
    // The table lists granules by ascending address: a binary search finds one without a
    // map rebuilt (and dropped) on every check, which the fuzzers run after every call. Where
    // the granules are consecutive, the one at `pa` is at its offset from the first (two
    // comparisons instead of a search's six, each traced in the fuzzers' builds); the search
    // when that slot holds another.
    ensure!(
        granules.is_sorted_by_key(|g| g.0),
        "the granule table's snapshot is out of order"
    );
    let first = granules.first().map_or(0, |g| g.0.0);
    let state = |pa: u64| {
        let slot = pa
            .checked_sub(first)
            .and_then(|off| usize::try_from(off / GRANULE_SIZE).ok())
            .filter(|&i| granules.get(i).is_some_and(|g| g.0.0 == pa));
        slot.or_else(|| granules.binary_search_by_key(&pa, |g| g.0.0).ok())
            .map(|i| (granules[i].1, granules[i].2))
    };

    // Invariant 3: secure granules are unreachable for the host; NS ones stay reachable.
    // (Every granule in the table lies in simulated DRAM, so reachable = not unmapped.)
    // Sorted (the simulation keeps them in a set): a binary search, no tree built per check.
    let unmapped = sim.unmapped_granules();
    ensure!(
        unmapped.is_sorted(),
        "the simulation's unmapped granules are out of order"
    );
    let host_can_reach = |pa: Pa| unmapped.binary_search(&pa).is_err();
    for &(pa, s, _) in &granules {
        match s {
            GranuleState::Reserved => {}
            GranuleState::Ns => ensure!(
                host_can_reach(pa),
                "NS granule {pa:x?} unmapped from the host"
            ),
            _ => ensure!(
                !host_can_reach(pa),
                "secure granule {pa:x?} ({s:?}) reachable by the host"
            ),
        }
    }

    // Invariant 4: one owner per owned granule, refcounts match the references.
    // Owner = (what owns it, the owning TVM): formatted only when a violation is reported.
    let mut owner: BTreeMap<u64, (&str, u64)> = BTreeMap::new();
    let mut own = |pa: u64, who: (&'static str, u64)| -> Result<(), String> {
        if let Some(prev) = owner.insert(pa, who) {
            return Err(format!(
                "granule {pa:#x} owned by both {} of TVM {:#x} and {} of TVM {:#x}",
                prev.0, prev.1, who.0, who.1
            ));
        }
        Ok(())
    };
    let mut shared_refs: BTreeMap<u64, u16> = BTreeMap::new();
    // Private MMIO: (TVM, GPA) → device page, as the maps hold them and as the vdevices'
    // records name them; the two must be the same.
    let mut mmio_leaves: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut mmio_recorded: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut tags: BTreeSet<u16> = BTreeSet::new();
    let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
    let mut evidence_owner: BTreeMap<u64, u32> = BTreeMap::new();
    let fmt = tsm.address_map_format();
    for &(pa, s, rc) in &granules {
        match s {
            GranuleState::Tvm => {
                let o: TvmObj = read_object(sim, pa)?;
                ensure!(
                    state(o.root) == Some((GranuleState::Table, state(o.root).map_or(0, |x| x.1))),
                    "TVM {pa:x?} root not a table"
                );
                let (mut private, mut shared, mut tables) = (0u64, 0u64, 0u64);
                let shared_base = Gpa::shared_base(o.gpa_bits as u8).map_or(u64::MAX, |g| g.0);
                // (table, its level, the first GPA it maps)
                let mut stack = std::vec![(o.root, 0u8, 0u64)];
                while let Some((table, level, base)) = stack.pop() {
                    own(table, ("a table", pa.0))?;
                    ensure!(
                        state(table).map(|x| x.0) == Some(GranuleState::Table),
                        "table {table:#x} not TABLE"
                    );
                    let mut live = 0u16;
                    // One read of the whole table: the checker runs after every step of the
                    // model test and under Miri, where 512 separate reads dominate.
                    let mut entries = [U64::<LittleEndian>::ZERO; ENTRIES];
                    let _ = sim.read(Pa(table), entries.as_mut_bytes());
                    let entry_shift = 12 + 9 * (u32::from(LEAF_LEVEL) - u32::from(level));
                    for (i, raw) in nonzero_entries(&entries) {
                        let gpa = base + ((i as u64) << entry_shift);
                        match fmt.decode(raw, level) {
                            Entry::Invalid => continue,
                            Entry::Table(next) if level < LEAF_LEVEL => {
                                tables += 1;
                                stack.push((next.0, level + 1, gpa));
                            }
                            Entry::Page(leaf) if level == LEAF_LEVEL => match leaf.kind {
                                crate::addrmap::MapKind::Private => {
                                    ensure!(
                                        gpa < shared_base,
                                        "invariant 7: TVM {pa:x?} maps private page {:x?} at shared GPA {gpa:#x}",
                                        leaf.pa
                                    );
                                    private += 1;
                                    ensure!(
                                        state(leaf.pa.0).map(|x| x.0)
                                            == Some(GranuleState::Private),
                                        "private leaf {:x?} not PRIVATE",
                                        leaf.pa
                                    );
                                    own(leaf.pa.0, ("a private page", pa.0))?;
                                }
                                crate::addrmap::MapKind::Shared => {
                                    ensure!(
                                        gpa >= shared_base,
                                        "invariant 7: TVM {pa:x?} maps host page {:x?} at private GPA {gpa:#x}",
                                        leaf.pa
                                    );
                                    shared += 1;
                                    ensure!(
                                        state(leaf.pa.0).map(|x| x.0) == Some(GranuleState::Ns),
                                        "shared leaf {:x?} not NS",
                                        leaf.pa
                                    );
                                    *shared_refs.entry(leaf.pa.0).or_default() += 1;
                                }
                                crate::addrmap::MapKind::Mmio { .. } => {
                                    ensure!(
                                        gpa < shared_base,
                                        "invariant 7: TVM {pa:x?} maps device page {:x?} at shared GPA {gpa:#x}",
                                        leaf.pa
                                    );
                                    ensure!(
                                        !sim.host_has_mmio(leaf.pa),
                                        "device page {:x?} mapped in TVM {pa:x?} and the host's",
                                        leaf.pa
                                    );
                                    mmio_leaves.insert((pa.0, gpa), leaf.pa.0);
                                }
                            },
                            e => {
                                return Err(format!(
                                    "foreign entry {e:?} in table {table:#x} L{level}"
                                ));
                            }
                        }
                        live += 1;
                    }
                    ensure!(
                        state(table).map(|x| x.1) == Some(live),
                        "table {table:#x}: refcount != {live} live entries"
                    );
                }
                ensure!(
                    (o.private_pages, o.shared_pages, o.tables) == (private, shared, tables),
                    "TVM {pa:x?} counters {:?} != map {:?}",
                    (o.private_pages, o.shared_pages, o.tables),
                    (private, shared, tables)
                );
                ensure!(
                    u64::from(rc) == o.vcpus + o.viommus + o.vdevs,
                    "TVM {pa:x?} refcount {rc} != children"
                );
            }
            GranuleState::Vcpu => {
                let v: VcpuObj = read_object(sim, pa)?;
                ensure!(
                    state(v.tvm).map(|x| x.0) == Some(GranuleState::Tvm),
                    "vCPU {pa:x?} of no TVM"
                );
                *refs.entry(v.tvm).or_default() += 1;
                ensure!(rc == 0, "vCPU {pa:x?} referenced");
            }
            GranuleState::Viommu => {
                let v: ViommuObj = read_object(sim, pa)?;
                ensure!(
                    state(v.tvm).map(|x| x.0) == Some(GranuleState::Tvm),
                    "vIOMMU {pa:x?} of no TVM"
                );
                *refs.entry(v.tvm).or_default() += 1;
                ensure!(
                    u64::from(rc) == v.vdevs,
                    "vIOMMU {pa:x?} refcount {rc} != {} vdevs",
                    v.vdevs
                );
            }
            GranuleState::Pdev => {
                let p: PdevObj = read_object(sim, pa)?;
                let used = p.pbdfs.iter().filter(|s| s.used != 0).count() as u64;
                ensure!(
                    u64::from(rc) == p.vdevs && used == p.vdevs,
                    "PDEV {pa:x?} refcount {rc} / slots {used} / {}",
                    p.vdevs
                );
                ensure!(
                    tsm.pdev_ranges().iter().filter(|r| r.pdev == pa).count() == 1,
                    "PDEV {pa:x?} not registered once"
                );
                if p.evidence != 0 {
                    ensure!(
                        state(p.evidence).map(|x| x.0) == Some(GranuleState::Evidence),
                        "PDEV {pa:x?} names evidence {:x} that is not an evidence granule",
                        p.evidence
                    );
                    *evidence_owner.entry(p.evidence).or_default() += 1;
                }
            }
            GranuleState::Vdev => {
                let v: VdevObj = read_object(sim, pa)?;
                ensure!(rc == 0, "VDEV {pa:x?} referenced");
                ensure!(
                    state(v.tvm).map(|x| x.0) == Some(GranuleState::Tvm),
                    "VDEV {pa:x?} of no TVM"
                );
                ensure!(
                    state(v.pdev).map(|x| x.0) == Some(GranuleState::Pdev),
                    "VDEV {pa:x?} of no PDEV"
                );
                ensure!(
                    state(v.viommu).map(|x| x.0) == Some(GranuleState::Viommu),
                    "VDEV {pa:x?} of no vIOMMU"
                );
                // Invariant 6 (only TSM vIOMMU types carry vdevices) is the decode's: a
                // `ViommuType` is a TSM type.
                let io: ViommuObj = read(sim, Pa(v.viommu))?;
                ensure!(
                    io.tvm == v.tvm,
                    "VDEV {pa:x?} under a vIOMMU of another TVM"
                );
                ensure!(
                    (v.state == VdevState::Run) == (v.accepted != 0),
                    "VDEV {pa:x?}: RUN iff accepted"
                );
                let t: TvmObj = read(sim, Pa(v.tvm))?;
                ensure!(
                    t.vbdfs
                        .iter()
                        .filter(|s| s.used != 0
                            && s.vdev == pa.0
                            && s.vbdf == u32::from(v.params.vbdf))
                        .count()
                        == 1,
                    "VDEV {pa:x?} not in its TVM's vBDF table"
                );
                let p: PdevObj = read(sim, Pa(v.pdev))?;
                ensure!(
                    p.pbdfs
                        .iter()
                        .filter(|s| s.used != 0
                            && s.vdev == pa.0
                            && s.pbdf == u32::from(v.params.pbdf))
                        .count()
                        == 1,
                    "VDEV {pa:x?} not in its PDEV's pBDF table"
                );
                ensure!(
                    p.params.contains_rid(v.params.pbdf),
                    "VDEV {pa:x?} pBDF outside its PDEV {:x?} {:x?}",
                    v.params,
                    p.params
                );
                // With a platform IOMMU: a tag per vdevice, never two alike; its DMA-table
                // granules are its own. (Without one a VDEV granule has no DMA record.)
                if tsm.dma_table_format().is_some() {
                    let dma = tsm
                        .dma_record(pa)
                        .map_err(|_| format!("VDEV {pa:x?}: DMA record unreadable"))?;
                    dma.invariants().map_err(|e| format!("VDEV {pa:x?}: {e}"))?;
                    ensure!(
                        dma.tag != 0 && tags.insert(dma.tag),
                        "VDEV {pa:x?} tag {} missing or shared",
                        dma.tag
                    );
                    for table in dma.granules() {
                        ensure!(
                            state(table.0).map(|x| x.0) == Some(GranuleState::DmaTable),
                            "VDEV {pa:x?} DMA table {table:x?} not DMA_TABLE"
                        );
                        own(table.0, ("a DMA table", v.tvm))?;
                    }
                    dma_tree(tsm, sim, pa, &dma)?;
                }
                let m = tsm
                    .mmio_record(pa)
                    .map_err(|_| format!("VDEV {pa:x?}: MMIO record unreadable"))?;
                m.invariants().map_err(|e| format!("VDEV {pa:x?}: {e}"))?;
                ensure!(m.root == t.root, "VDEV {pa:x?}: MMIO record of another map");
                ensure!(
                    m.count == 0
                        || matches!(
                            v.state,
                            VdevState::Locked | VdevState::Starting | VdevState::Run
                        ),
                    "VDEV {pa:x?}: private MMIO mapped in {:?}",
                    v.state
                );
                for page in m.mapped() {
                    ensure!(
                        mmio_recorded.insert((v.tvm, page.gpa), page.pa).is_none(),
                        "GPA {:#x} of TVM {:#x} recorded by two vdevices",
                        page.gpa,
                        v.tvm
                    );
                }
                *refs.entry(v.tvm).or_default() += 1;
            }
            GranuleState::Delegated | GranuleState::DmaTable => {
                ensure!(rc == 0, "{s:?} granule {pa:x?} referenced")
            }
            GranuleState::Ns
            | GranuleState::Private
            | GranuleState::Table
            | GranuleState::Evidence
            | GranuleState::Reserved => {}
        }
    }
    ensure!(
        mmio_leaves == mmio_recorded,
        "private MMIO in the maps {mmio_leaves:x?} != the vdevices' records {mmio_recorded:x?}"
    );
    let pages: BTreeSet<u64> = mmio_leaves.values().copied().collect();
    ensure!(
        pages.len() == mmio_leaves.len(),
        "a device page mapped twice: {mmio_leaves:x?}"
    );
    for &(pa, s, rc) in &granules {
        match s {
            GranuleState::Tvm => {
                let n = refs.get(&pa.0).copied().unwrap_or(0);
                ensure!(
                    u64::from(rc) == n,
                    "TVM {pa:x?} refcount {rc} != {n} children found"
                );
            }
            GranuleState::Table | GranuleState::Private | GranuleState::DmaTable => {
                ensure!(
                    owner.contains_key(&pa.0),
                    "{s:?} granule {pa:x?} has no owner (leaked)"
                );
            }
            GranuleState::Evidence => {
                ensure!(
                    evidence_owner.get(&pa.0).copied() == Some(1),
                    "evidence granule {pa:x?} not held by exactly one PDEV"
                );
            }
            GranuleState::Ns => {
                let n = shared_refs.get(&pa.0).copied().unwrap_or(0);
                ensure!(
                    rc == n,
                    "NS granule {pa:x?} refcount {rc} != {n} shared mappings"
                );
            }
            _ => {}
        }
    }
    // Registered PDEVs are PDEV granules, and ranges do not overlap.
    let ranges = tsm.pdev_ranges();
    for (i, r) in ranges.iter().enumerate() {
        ensure!(
            state(r.pdev.0).map(|x| x.0) == Some(GranuleState::Pdev),
            "registry names {:x?}, not a PDEV",
            r.pdev
        );
        for o in ranges.iter().skip(i + 1) {
            ensure!(!r.overlaps(o), "PDEV ranges {r:?} and {o:?} overlap");
        }
    }
    Ok(())
}

/// A table's non-zero entries with their indices. Zero is invalid in both formats (a test in
/// `addrmap::format` says so), so it is skipped undecoded, which halves the model test's time
/// per step; eight entries at a time (one comparison of their OR: tables are mostly empty, and
/// the fuzzers' builds trace every comparison they execute).
fn nonzero_entries(
    entries: &[U64<LittleEndian>; ENTRIES],
) -> impl Iterator<Item = (usize, u64)> + '_ {
    entries
        .chunks_exact(8)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().fold(0, |any, e| any | e.get()) != 0)
        .flat_map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(move |(i, e)| (c * 8 + i, e.get()))
        })
        .filter(|&(_, raw)| raw != 0)
}

/// A vdevice's DMA table is a tree from its first granule, each table of it one of its granules
/// reached once, tables above level 3 and pages at level 3 only; every granule the tree does
/// not reach is all zero (a refresh gives a table a granule only while the hardware cannot
/// reach it, and relies on it being empty).
fn dma_tree(
    tsm: &Tsm<'_>,
    sim: &SimPlatform,
    vdev: Pa,
    d: &crate::dma_tables::DmaTables,
) -> Result<(), String> {
    let Some(format) = tsm.dma_table_format() else {
        return Ok(());
    };
    let fmt = crate::addrmap::format::for_dma(format);
    let tables: Vec<Pa> = d.granules().collect();
    let mut reached = BTreeSet::new();
    let mut stack: Vec<(Pa, u8)> = tables.first().map(|&r| (r, 0)).into_iter().collect();
    while let Some((table, level)) = stack.pop() {
        ensure!(
            reached.insert(table),
            "VDEV {vdev:x?}: DMA table {table:x?} reached twice"
        );
        let mut entries = [U64::<LittleEndian>::ZERO; ENTRIES];
        let _ = sim.read(table, entries.as_mut_bytes());
        for (_, raw) in nonzero_entries(&entries) {
            match fmt.decode(raw, level) {
                Entry::Invalid => {}
                Entry::Table(next) if level < LEAF_LEVEL => {
                    ensure!(
                        tables.contains(&next),
                        "VDEV {vdev:x?}: DMA table {table:x?} points at {next:x?}, not its own"
                    );
                    stack.push((next, level + 1));
                }
                Entry::Page(_) if level == LEAF_LEVEL => {}
                e => {
                    return Err(format!(
                        "VDEV {vdev:x?}: {e:?} at level {level} of {table:x?}"
                    ));
                }
            }
        }
    }
    for t in tables.iter().filter(|t| !reached.contains(*t)) {
        let mut b = std::vec![0u8; 4096];
        let _ = sim.read(*t, &mut b);
        ensure!(
            b.iter().all(|&x| x == 0),
            "VDEV {vdev:x?}: unused DMA table {t:x?} not empty"
        );
    }
    Ok(())
}
