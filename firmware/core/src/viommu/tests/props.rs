//! Property tests: random worlds (two TVMs' maps, stage-1 tables of both formats in a small
//! pool of pages, including cyclic, out-of-TVM and malformed entries, random secure sets and
//! vdevice states, stage-1 roots of every input size) and random operation sequences
//! (translations, map/unmap, table writes, attach/detach with any configuration word, state
//! changes, delegate/undelegate, guest invalidations).
//!
//! After every translation: the IOTLB path equals the uncached walk, the uncached walk equals
//! what the reference model ([`crate::viommu_reference`], written from the architecture
//! documents, with the roots as this test attached them) says the guest must see, and
//! invariants 1 and 2 of ARCHITECTURE.md §2 hold, checked against the simulated world, not
//! against the engine. `PROPTEST_CASES` raises the case count (default 256, a few seconds).

use std::collections::BTreeMap;
use std::vec::Vec;

use tsm_abi::guest::S1Config;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;
use crate::viommu_reference::{Attached, expected, observed};

/// Physical pages of the world: `PA_BASE + i * 4K`; the last two have no memory behind them.
const POOL: u64 = 24;
const POOL_WITH_MEMORY: u64 = 22;
const PA_BASE: u64 = 0x8000_0000;
/// GPA pages a map may hold; descriptors also name pages up to `GPA_NAMES` (outside the TVM).
const GPAS: u64 = 32;
const GPA_NAMES: u64 = 40;
/// Descriptor slots filled in each table page: the IOVA universe uses indices below this.
const SLOTS: u64 = 4;
const TVMS: [TvmId; 2] = [TVM, TVM2];
const VDEVS: u16 = 3;
const HOST: u16 = 7;

fn pa(i: u64) -> Pa {
    Pa(PA_BASE + (i % POOL) * GRANULE_SIZE)
}

fn perms(p: u8) -> Perms {
    Perms {
        read: p & 1 != 0,
        write: p & 2 != 0,
    }
}

fn format(f: u8) -> Stage1Format {
    match f % 3 {
        0 => Stage1Format::None,
        1 => Stage1Format::ArmVmsav8_64_4k,
        _ => Stage1Format::X86_64FirstStage4Level,
    }
}

/// An attach: the root's page and the configuration word's low byte (as G_S1_ATTACH gets
/// it); `forced` stores the size even where the core would refuse it, as only a corrupted
/// VDEV object could hold it.
#[derive(Clone, Copy, Debug)]
struct RootSpec {
    root: u64,
    config: u8,
    forced: bool,
}

#[derive(Clone, Debug)]
struct VdevSpec {
    tvm: usize,
    format: u8,
    run: bool,
    accepted: bool,
    default_root: Option<RootSpec>,
    pasid_roots: Vec<(u32, RootSpec)>,
}

#[derive(Clone, Debug)]
struct World {
    /// Per TVM, per GPA page: (PA index, perms, private).
    maps: [Vec<Option<(u64, u8, bool)>>; 2],
    secure: Vec<bool>,
    /// Per pool page with memory, the descriptors of slots 0..SLOTS.
    descs: Vec<[u64; SLOTS as usize]>,
    vdevs: Vec<VdevSpec>,
    /// Pool pages the host domain does not map.
    host_unmapped: Vec<u64>,
}

#[derive(Clone, Debug)]
enum Op {
    /// A request; `reuse` replays an earlier one (so the IOTLB hits) when there is one.
    Translate {
        reuse: Option<usize>,
        rid: u16,
        pasid: Option<u32>,
        t_bit: bool,
        iova: u64,
        write: bool,
    },
    Unmap {
        tvm: usize,
        gpa: u64,
    },
    Map {
        tvm: usize,
        gpa: u64,
        pa: u64,
        perms: u8,
        private: bool,
    },
    WriteDesc {
        pa: u64,
        slot: u64,
        desc: u64,
    },
    SetState {
        vdev: u16,
        run: bool,
        accepted: bool,
    },
    Attach {
        vdev: u16,
        pasid: Option<u32>,
        root: RootSpec,
    },
    Detach {
        vdev: u16,
        pasid: Option<u32>,
    },
    SetSecure {
        pa: u64,
        secure: bool,
    },
    GuestInvalidate {
        vdev: u16,
        pasid: Option<Option<u32>>,
        iova: u64,
        len: u64,
    },
}

/// GPA pages 0..4 hold the Arm tables of levels 0..3, 4..8 the x86-64 ones (mapped private,
/// identity to the pool, mostly). A descriptor mostly points at the next level's table of its
/// format or, at the last levels, at data pages 8..GPA_NAMES; sometimes at any table (cycles,
/// wrong format), and sometimes it is junk.
const ARM_TABLES: core::ops::Range<u64> = 0..4;
const X86_TABLES: core::ops::Range<u64> = 4..8;
const DATA: core::ops::Range<u64> = 8..GPA_NAMES;

fn junk() -> impl Strategy<Value = u64> {
    let near =
        (any::<u64>(), 0..GPA_NAMES).prop_map(|(r, k)| (r & 0xFFF0_0000_0000_0FFF) | k << 12);
    prop_oneof![2 => near, 1 => Just(0u64), 1 => any::<u64>()]
}

/// The next table of `base + level + 1`, or any table page.
fn next_table(base: u64, level: u64) -> impl Strategy<Value = u64> {
    prop_oneof![12 => Just(base + (level + 1).min(3)), 1 => 0..X86_TABLES.end]
}

fn arm_desc(level: u64) -> BoxedStrategy<u64> {
    let table = (
        next_table(ARM_TABLES.start, level),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(k, nw, nu)| k << 12 | 0b11 | u64::from(nw) << 62 | u64::from(nu) << 61);
    let leaf = (
        DATA,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.97),
        prop::bool::weighted(0.97),
    )
        .prop_map(move |(k, ro, af, user)| {
            let kind = if level == 3 { 0b11 } else { 0b01 };
            k << 12 | kind | u64::from(ro) << 7 | u64::from(af) << 10 | u64::from(user) << 6
        });
    match level {
        0 => prop_oneof![16 => table, 1 => leaf, 1 => junk()].boxed(),
        3 => prop_oneof![16 => leaf, 1 => table, 1 => junk()].boxed(),
        _ => prop_oneof![12 => table, 3 => leaf, 1 => junk()].boxed(),
    }
}

fn x86_desc(level: u64) -> BoxedStrategy<u64> {
    let flags = (
        prop::bool::weighted(0.97),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.97),
    )
        .prop_map(|(p, rw, us)| u64::from(p) | u64::from(rw) << 1 | u64::from(us) << 2);
    let table = (next_table(X86_TABLES.start, level), flags.clone()).prop_map(|(k, f)| k << 12 | f);
    let leaf =
        (DATA, flags).prop_map(move |(k, f)| k << 12 | f | if level == 3 { 0 } else { 1 << 7 });
    match level {
        0 => prop_oneof![16 => table, 1 => leaf, 1 => junk()].boxed(),
        3 => prop_oneof![16 => leaf, 1 => table, 1 => junk()].boxed(),
        _ => prop_oneof![12 => table, 3 => leaf, 1 => junk()].boxed(),
    }
}

/// The descriptor kinds of pool page `i`: its format's at its level, or junk for data pages.
fn page_descs(i: u64) -> BoxedStrategy<u64> {
    if ARM_TABLES.contains(&i) {
        arm_desc(i - ARM_TABLES.start)
    } else if X86_TABLES.contains(&i) {
        x86_desc(i - X86_TABLES.start)
    } else {
        junk().boxed()
    }
}

/// A page index below `end`, mostly a data page: changes to table pages end most walks, so
/// they are rarer (but happen).
fn mostly_data(end: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => X86_TABLES.end..end, 1 => 0..X86_TABLES.end]
}

fn iova() -> impl Strategy<Value = u64> {
    // Level indices, the upper two often 0 so that roots with a short input (levels 1..3 or
    // 2..3) find their entries too.
    let upper = || prop_oneof![1 => Just(0u64), 1 => 0..SLOTS];
    let structured = ((upper(), upper(), 0..SLOTS, 0..SLOTS), 0u64..0x1000)
        .prop_map(|((l0, l1, l2, l3), off)| l0 << 39 | l1 << 30 | l2 << 21 | l3 << 12 | off);
    // Identity (stage-2-only) and host-domain addresses in the pool, and anything at all.
    let flat = (0..GPA_NAMES, 0u64..0x1000).prop_map(|(k, off)| (k << 12) | off);
    let host = (0..POOL, 0u64..0x1000).prop_map(|(i, off)| pa(i).0 | off);
    // Either side of the end of an input size: its last page and the first IOVA past it.
    let edge = (24u32..=49, any::<bool>(), 0u64..0x1000).prop_map(|(b, past, off)| {
        if past {
            1 << b
        } else {
            (1 << b) - 0x1000 + off
        }
    });
    prop_oneof![6 => structured, 3 => flat, 1 => host, 1 => edge, 1 => any::<u64>()]
}

/// The low byte of a G_S1_ATTACH configuration word: mostly a size some format has (48, the
/// only x86-64 one, or 0 for it), and sometimes anything.
fn config() -> impl Strategy<Value = u8> {
    prop_oneof![6 => 25u8..=48, 3 => Just(48u8), 2 => Just(0u8), 1 => any::<u8>()]
}

/// A root: a table page (made the right level of its format's tree by `root_for`, mostly) or
/// any GPA page.
fn root_spec() -> impl Strategy<Value = RootSpec> {
    (
        prop_oneof![9 => 0..X86_TABLES.end, 1 => 0..GPA_NAMES],
        config(),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(root, config, forced)| RootSpec {
            root,
            config,
            forced,
        })
}

fn pasid() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![6 => Just(None), 5 => (0u32..3).prop_map(Some), 1 => Just(Some(PASID_MAX + 1))]
}

fn world() -> impl Strategy<Value = World> {
    let entry = |g: u64| {
        let table = Just(Some((g, 3u8, true)));
        let any_entry = prop::option::weighted(
            0.85,
            (
                0..POOL,
                prop_oneof![3 => Just(3u8), 1 => 0u8..3],
                any::<bool>(),
            ),
        );
        if g < X86_TABLES.end {
            prop_oneof![30 => table, 1 => any_entry].boxed()
        } else {
            any_entry.boxed()
        }
    };
    let map = (0..GPAS).map(entry).collect::<Vec<_>>();
    let secure = (0..POOL)
        .map(|i| prop::bool::weighted(if i < X86_TABLES.end { 0.97 } else { 0.5 }))
        .collect::<Vec<_>>();
    let descs = (0..POOL_WITH_MEMORY)
        .map(|i| prop::array::uniform4(page_descs(i)))
        .collect::<Vec<_>>();
    let vdev = (
        0usize..2,
        0u8..3,
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.7),
        prop::option::weighted(0.8, root_spec()),
        prop::collection::vec((0u32..3, root_spec()), 0..3),
    )
        .prop_map(
            |(tvm, format, run, accepted, default_root, pasid_roots)| VdevSpec {
                tvm,
                format,
                run,
                accepted,
                default_root,
                pasid_roots,
            },
        );
    let host_unmapped = prop::collection::vec(0..POOL, 0..4);
    (
        map.clone(),
        map,
        secure,
        descs,
        prop::collection::vec(vdev, VDEVS as usize),
        host_unmapped,
    )
        .prop_map(|(m0, m1, secure, descs, vdevs, host_unmapped)| World {
            maps: [m0, m1],
            secure,
            descs,
            vdevs,
            host_unmapped,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (prop_oneof![4 => 0..VDEVS, 1 => Just(HOST)], pasid(), any::<bool>(), iova(), any::<bool>())
            .prop_flat_map(|(rid, pasid, t_bit, iova, write)| {
                (prop::option::weighted(0.6, any::<usize>()), Just((rid, pasid, t_bit, iova, write)))
            })
            .prop_map(|(reuse, (rid, pasid, t_bit, iova, write))| Op::Translate { reuse, rid, pasid, t_bit, iova, write }),
        2 => (0usize..2, mostly_data(GPAS)).prop_map(|(tvm, gpa)| Op::Unmap { tvm, gpa }),
        2 => (0usize..2, mostly_data(GPAS), 0..POOL, 0u8..4, any::<bool>())
            .prop_map(|(tvm, gpa, pa, perms, private)| Op::Map { tvm, gpa, pa, perms, private }),
        2 => (0..POOL_WITH_MEMORY, 0..SLOTS).prop_flat_map(|(pa, slot)| (Just(pa), Just(slot), page_descs(pa)))
            .prop_map(|(pa, slot, desc)| Op::WriteDesc { pa, slot, desc }),
        1 => (0..VDEVS, any::<bool>(), any::<bool>())
            .prop_map(|(vdev, run, accepted)| Op::SetState { vdev, run, accepted }),
        1 => (0..VDEVS, pasid(), root_spec()).prop_map(|(vdev, pasid, root)| Op::Attach { vdev, pasid, root }),
        1 => (0..VDEVS, pasid()).prop_map(|(vdev, pasid)| Op::Detach { vdev, pasid }),
        1 => (mostly_data(POOL), any::<bool>()).prop_map(|(pa, secure)| Op::SetSecure { pa, secure }),
        1 => (0..VDEVS, prop::option::of(pasid()), iova(), prop_oneof![Just(0x1000u64), Just(1 << 21), Just(u64::MAX)])
            .prop_map(|(vdev, pasid, iova, len)| Op::GuestInvalidate { vdev, pasid, iova, len }),
    ]
}

/// Vdevice `i`'s requester (and [`HOST`]'s, a host device): one RID on several segments, so
/// the engine must tell requesters apart by segment.
fn requester(i: u16) -> Requester {
    Requester {
        segment: i,
        rid: 0x0100,
    }
}

fn vdev_id(i: u16) -> VdevId {
    VdevId(0xA000 + u64::from(i))
}

/// A root GPA: a table page becomes the table of the vdevice's format at the level an
/// `ia_bits` walk starts at, so most walks go down a table tree of the right format (the
/// others still start anywhere).
fn root_for(fmt: Stage1Format, k: u64, ia_bits: u8) -> Gpa {
    let k = match fmt {
        Stage1Format::X86_64FirstStage4Level if k < X86_TABLES.end => X86_TABLES.start,
        Stage1Format::ArmVmsav8_64_4k if k < X86_TABLES.end => {
            ARM_TABLES.start + arm_start(ia_bits).unwrap_or(0)
        }
        _ => k,
    };
    Gpa(k << 12)
}

/// The level an Arm walk of `ia_bits` starts at (9 bits a level above the page offset).
fn arm_start(ia_bits: u8) -> Option<u64> {
    (25..=48)
        .contains(&ia_bits)
        .then(|| 4 - u64::from(ia_bits - 12).div_ceil(9))
}

/// The stage-1 roots as attached (the reference model's view, kept apart from the engine's
/// PASID tables).
type Roots = BTreeMap<(VdevId, Option<u32>), Attached>;

/// G_S1_ATTACH as the core does it: the configuration is checked against the format (a
/// refused attach changes nothing), the root replaces the old one, that PASID's cached
/// translations go. `forced` skips the check.
fn attach(
    s: &mut Sim,
    roots: &mut Roots,
    tlb: Option<&mut Iotlb>,
    vdev: u16,
    pasid: Option<u32>,
    spec: RootSpec,
) {
    let v = s.vdev(requester(vdev));
    let ia_bits = match v
        .format
        .min_ia_bits()
        .and_then(|min| S1Config::from_raw(u64::from(spec.config), min))
    {
        Some(c) => c.ia_bits,
        None if spec.forced => spec.config,
        None => return,
    };
    let table = root_for(v.format, spec.root, ia_bits);
    if v.pasids.attach(pasid, table, ia_bits).is_ok() {
        roots.insert((v.id, pasid), Attached { table, ia_bits });
        if let Some(tlb) = tlb {
            tlb.invalidate_pasid(v.id, pasid);
        }
    }
}

fn build(w: &World) -> (Sim, Roots) {
    let mut s = Sim::default();
    let mut roots = Roots::new();
    for p in &w.host_unmapped {
        s.host_unmapped.insert(pa(*p).0);
    }
    for (t, map) in w.maps.iter().enumerate() {
        for (g, e) in map.iter().enumerate() {
            if let Some((p, pm, private)) = *e {
                s.s2.insert(
                    (TVMS[t], (g as u64) << 12),
                    S2Entry {
                        pa: pa(p),
                        perms: perms(pm),
                        private,
                    },
                );
            }
        }
    }
    for (i, sec) in w.secure.iter().enumerate() {
        if *sec {
            s.secure.insert(pa(i as u64).0);
        }
    }
    for (i, d) in w.descs.iter().enumerate() {
        let base = pa(i as u64);
        s.mem.add_page(base);
        for (slot, v) in d.iter().enumerate() {
            s.mem.write_u64(Pa(base.0 + 8 * slot as u64), *v);
        }
    }
    for (i, v) in w.vdevs.iter().enumerate() {
        let i = i as u16;
        s.add_vdev(requester(i), vdev_id(i), TVMS[v.tvm], format(v.format));
        let sv = s.vdev(requester(i));
        sv.run = v.run;
        sv.accepted = v.accepted;
        if let Some(r) = v.default_root {
            attach(&mut s, &mut roots, None, i, None, r);
        }
        for &(p, r) in &v.pasid_roots {
            attach(&mut s, &mut roots, None, i, Some(p), r);
        }
    }
    (s, roots)
}

/// What the runs covered, to show the generator reaches the interesting cases.
#[derive(Default, Debug)]
struct Coverage {
    t0_ok: u64,
    t1_ok: u64,
    two_stage_ok: u64,
    reasons: [u64; FaultReason::COUNT],
    hits: u64,
    /// Successful two-stage Arm translations by the level the walk started at.
    arm_ok_from_level: [u64; 3],
}

/// Invariants 1 and 2 for one successful translation, from the world's point of view.
fn check_invariants(s: &Sim, r: &Request, got: Pa) -> Result<(), TestCaseError> {
    let secure = s.secure.contains(&got.granule_base().0);
    if !r.t_bit {
        prop_assert!(!secure, "invariant 1: T=0 reached secure {got:?} for {r:?}");
        return Ok(());
    }
    let v = s.vdevs.get(&r.requester);
    prop_assert!(
        v.is_some_and(|v| v.run && v.accepted),
        "invariant 2: T=1 from a non-RUN/accepted requester {r:?}"
    );
    let tvm = v.map(|v| v.tvm);
    let own = s
        .s2
        .iter()
        .any(|((t, _), e)| Some(*t) == tvm && e.pa == got.granule_base() && e.private == secure);
    prop_assert!(
        own,
        "invariant 2: T=1 reached {got:?}, not its TVM's own memory, for {r:?}"
    );
    Ok(())
}

fn run(w: &World, ops: &[Op], cov: &mut Coverage) -> Result<(), TestCaseError> {
    let (mut s, mut roots) = build(w);
    let mut tlb = Iotlb::new();
    let mut seen: Vec<Request> = Vec::new();
    for op in ops {
        match *op {
            Op::Translate {
                reuse,
                rid,
                pasid,
                t_bit,
                iova,
                write,
            } => {
                let access = if write { Access::Write } else { Access::Read };
                let fresh = Request {
                    requester: requester(rid),
                    pasid,
                    t_bit,
                    iova: Iova(iova),
                    access,
                };
                let r = match reuse {
                    Some(i) if !seen.is_empty() => seen[i % seen.len()],
                    _ => fresh,
                };
                seen.push(r);
                let (requester, pasid, t_bit) = (r.requester, r.pasid, r.t_bit);
                let hits = tlb.hits();
                let cached = translate(&s, &mut tlb, &r);
                let walked = translate_uncached(&s, &r);
                prop_assert_eq!(cached, walked, "IOTLB differs from the walk for {:?}", r);
                let model = expected(&s, |v, p| roots.get(&(v, p)).copied(), &r);
                prop_assert_eq!(
                    observed(&walked),
                    model,
                    "the walk differs from the reference for {:?} (engine: {:?})",
                    r,
                    walked
                );
                cov.hits += tlb.hits() - hits;
                match cached {
                    Ok(p) => {
                        check_invariants(&s, &r, p)?;
                        if t_bit {
                            cov.t1_ok += 1;
                        } else {
                            cov.t0_ok += 1;
                        }
                        let v = s.vdevs.get(&requester);
                        if v.is_some_and(|v| {
                            v.format != Stage1Format::None
                                && v.pasids.lookup(pasid) != Stage1Root::Bypass
                        }) {
                            cov.two_stage_ok += 1;
                        }
                        if let Some(v) = v.filter(|v| v.format == Stage1Format::ArmVmsav8_64_4k)
                            && let Some(start) =
                                roots.get(&(v.id, pasid)).and_then(|a| arm_start(a.ia_bits))
                        {
                            cov.arm_ok_from_level[start as usize] += 1;
                        }
                    }
                    Err(f) => cov.reasons[f.reason as usize - 1] += 1,
                }
            }
            Op::Unmap { tvm, gpa } => {
                s.s2.remove(&(TVMS[tvm], gpa << 12));
                tlb.invalidate_gpa(TVMS[tvm], Gpa(gpa << 12), GRANULE_SIZE);
            }
            Op::Map {
                tvm,
                gpa,
                pa: p,
                perms: pm,
                private,
            } => {
                let old = s.s2.insert(
                    (TVMS[tvm], gpa << 12),
                    S2Entry {
                        pa: pa(p),
                        perms: perms(pm),
                        private,
                    },
                );
                // Replacing a mapping is an unmap first, as far as the IOTLB is concerned.
                if old.is_some() {
                    tlb.invalidate_gpa(TVMS[tvm], Gpa(gpa << 12), GRANULE_SIZE);
                }
            }
            Op::WriteDesc { pa: p, slot, desc } => {
                s.mem.write_u64(Pa(pa(p).0 + 8 * slot), desc);
                // The guests invalidate after editing their tables.
                for v in 0..VDEVS {
                    tlb.invalidate_guest(vdev_id(v), PasidScope::All, Iova(0), u64::MAX);
                }
            }
            Op::SetState {
                vdev,
                run,
                accepted,
            } => {
                let v = s.vdev(requester(vdev));
                v.run = run;
                v.accepted = accepted;
                if !run {
                    tlb.invalidate_vdev(vdev_id(vdev));
                }
            }
            Op::Attach { vdev, pasid, root } => {
                attach(&mut s, &mut roots, Some(&mut tlb), vdev, pasid, root);
            }
            Op::Detach { vdev, pasid } => {
                if s.vdev(requester(vdev)).pasids.detach(pasid).is_ok() {
                    roots.remove(&(vdev_id(vdev), pasid));
                    tlb.invalidate_pasid(vdev_id(vdev), pasid);
                }
            }
            Op::SetSecure { pa: p, secure } => {
                if secure {
                    s.secure.insert(pa(p).0);
                } else {
                    s.secure.remove(&pa(p).0);
                }
                tlb.invalidate_pa(pa(p));
            }
            Op::GuestInvalidate {
                vdev,
                pasid,
                iova,
                len,
            } => {
                let scope = pasid.map_or(PasidScope::All, PasidScope::One);
                tlb.invalidate_guest(vdev_id(vdev), scope, Iova(iova), len);
            }
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = (World, Vec<Op>)> {
    (world(), prop::collection::vec(op(), 1..120))
}

proptest! {
    // Failures are not persisted to a regressions file (it would land outside this module);
    // a failing case is printed, minimized, and belongs in a unit test.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold_and_the_iotlb_equals_the_walk((w, ops) in case()) {
        run(&w, &ops, &mut Coverage::default())?;
    }
}

/// The generator is not vacuous: over a fixed-seed sample, successful T=0 and T=1 and
/// two-stage translations happen (Arm ones from every start level), the IOTLB hits, and
/// (almost) every fault reason is produced.
#[test]
fn the_random_worlds_reach_every_outcome() {
    let mut runner = TestRunner::deterministic();
    let mut cov = Coverage::default();
    let strategy = case();
    for _ in 0..256 {
        let (w, ops) = strategy.new_tree(&mut runner).unwrap().current();
        run(&w, &ops, &mut cov).unwrap();
    }
    std::eprintln!("coverage over 256 cases: {cov:?}");
    assert!(
        cov.t0_ok > 0 && cov.t1_ok > 0 && cov.two_stage_ok > 0 && cov.hits > 0,
        "{cov:?}"
    );
    assert!(cov.arm_ok_from_level.iter().all(|&n| n > 0), "{cov:?}");
    let missing: Vec<FaultReason> = FaultReason::ALL
        .iter()
        .copied()
        .filter(|r| cov.reasons[*r as usize - 1] == 0)
        .collect();
    // S1TableRead needs a table in one of the two memory-less pages, reachable but rare.
    // DeviceError is not a translation outcome (the core queues it when a TDI breaks).
    assert!(
        missing
            .iter()
            .all(|r| matches!(r, FaultReason::S1TableRead | FaultReason::DeviceError)),
        "never produced: {missing:?}; {cov:?}"
    );
}
