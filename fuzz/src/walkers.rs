//! `walkers`: the secure vIOMMU's stage-1/stage-2 walk over fuzzer-built table memory.
//!
//! The input is a program over a small world: two TVMs with stage-2 maps, a pool of physical
//! pages whose contents (the stage-1 tables) the fuzzer writes descriptor by descriptor, a set
//! of secure pages, up to three vdevices (format, RUN/accepted, PASID roots, each attached with
//! a configuration byte as G_S1_ATTACH takes it) and a host domain.
//! Steps change the world, invalidate, or translate a request through
//! [`tsm_core::viommu::translate`] (with the IOTLB) and
//! [`tsm_core::viommu::translate_uncached`].
//!
//! Checks after every translation:
//! * nothing panics;
//! * invariant 1: a T=0 request never reaches a secure page;
//! * invariant 2: a T=1 request succeeds only for a vdevice in RUN and accepted, and reaches a
//!   page its TVM maps (private and secure, or shared and non-secure);
//! * the uncached walk returns what the reference model
//!   ([`tsm_core::viommu_reference`], written from the Arm and x86 architecture documents and
//!   docs/abi.md §8) says the guest must see: the PA, or the fault's event reason, `S1_WALK`
//!   flag and GPA. The model walks the roots as this target attached them (root and input
//!   size), not the engine's PASID table;
//! * the IOTLB path returns exactly what the uncached walk returns, as long as every world
//!   change was followed by the invalidation the IOTLB documents for it. A step may skip the
//!   guest's invalidation after a stage-1 write (a hostile guest does that): from then on until
//!   the next full flush only the invariants are checked, on the cached results too.
//!
//! An attach decodes its configuration byte as the core does for the vdevice's format
//! (`S1Config::from_raw` with the engine's smallest size): a refused one changes nothing,
//! unless the step forces it, storing a size only a corrupted VDEV object could hold.

use std::collections::{BTreeMap, BTreeSet};

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_abi::guest::S1Config;
use tsm_core::viommu::{
    Access, Context, Devices, HostMapping, Iotlb, PASID_MAX, PasidScope, PasidTable, Perms,
    Request, Requester, S2Entry, SecureMemory, Stage1Format, Stage2, TvmId, VdevId, VdevView,
    translate, translate_uncached,
};
use tsm_core::viommu_reference::{Attached, expected, observed};
use tsm_platform::{MemFault, PhysMem};

use crate::input::{Input, Writer};

/// Physical pages backed by memory: `POOL + i * 4 KiB` for `i < POOL_PAGES`.
pub const POOL: u64 = 0x8000_0000;
/// Pages in the pool.
pub const POOL_PAGES: u64 = 8;
/// TVM GPAs the fuzzer maps: `GPA_BASE + j * 4 KiB` for `j < GPA_PAGES` (1 GiB aligned, so a
/// level-1 or level-2 block leaf can point at it).
pub const GPA_BASE: u64 = 0x4000_0000;
/// GPA pages the fuzzer chooses from.
pub const GPA_PAGES: u64 = 16;
/// The TVMs.
pub const TVMS: [TvmId; 2] = [TvmId(0x1000), TvmId(0x2000)];
/// Requester IDs of the vdevices (in creation order) and of a host device.
pub const RIDS: [u16; 4] = [0x0100, 0x0101, 0x0108, 0x0200];
const FORMATS: [Stage1Format; 3] = [
    Stage1Format::ArmVmsav8_64_4k,
    Stage1Format::X86_64FirstStage4Level,
    Stage1Format::None,
];
const MAX_STEPS: usize = 64;

/// Step selectors (the first byte of a step, modulo their count).
pub mod step {
    /// Map a GPA page in a TVM's stage 2.
    pub const MAP: u8 = 0;
    /// Unmap a GPA page.
    pub const UNMAP: u8 = 1;
    /// Write one stage-1 descriptor into a pool page.
    pub const WRITE: u8 = 2;
    /// Make a pool page secure or not.
    pub const SECURE: u8 = 3;
    /// Set a vdevice's RUN and accepted flags.
    pub const FLAGS: u8 = 4;
    /// Attach a stage-1 root for a PASID, with a configuration byte.
    pub const ATTACH: u8 = 5;
    /// Detach a stage-1 root.
    pub const DETACH: u8 = 6;
    /// Translate a request.
    pub const TRANSLATE: u8 = 7;
    /// An extra invalidation.
    pub const INVALIDATE: u8 = 8;
    /// Number of step kinds.
    pub const COUNT: u8 = 9;
}

struct Pool {
    pages: BTreeMap<u64, Box<[u8; GRANULE_SIZE as usize]>>,
}

impl PhysMem for Pool {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        let off = usize::try_from(pa.granule_offset()).map_err(|_| MemFault(pa))?;
        let page = self.pages.get(&pa.granule_base().0).ok_or(MemFault(pa))?;
        let src = page
            .get(off..off.saturating_add(out.len()))
            .ok_or(MemFault(pa))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, pa: Pa, _data: &[u8]) -> Result<(), MemFault> {
        Err(MemFault(pa))
    }
}

struct Vdev {
    requester: Requester,
    id: VdevId,
    tvm: TvmId,
    format: Stage1Format,
    run: bool,
    accepted: bool,
    pasids: PasidTable,
}

struct World {
    pool: Pool,
    s2: BTreeMap<(TvmId, u64), S2Entry>,
    secure: BTreeSet<u64>,
    vdevs: Vec<Vdev>,
    host_unmapped: BTreeSet<u64>,
    /// The stage-1 roots as attached: what the reference model walks.
    roots: BTreeMap<(VdevId, Option<u32>), Attached>,
}

impl Devices for World {
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView> {
        self.vdevs
            .iter()
            .find(|v| v.requester == requester)
            .map(|v| VdevView {
                id: v.id,
                tvm: v.tvm,
                format: v.format,
                tdi_run: v.run,
                accepted: v.accepted,
                stage1: v.pasids.lookup(pasid),
            })
    }

    fn host_domain(&self, _requester: Requester, iova: Iova) -> Option<HostMapping> {
        let pa = Pa(iova.0);
        (!self.host_unmapped.contains(&pa.granule_base().0)).then_some(HostMapping {
            pa,
            perms: Perms::RW,
        })
    }
}

impl Stage2 for World {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        self.s2.get(&(tvm, gpa.granule_base().0)).copied()
    }
}

impl SecureMemory for World {
    fn is_secure(&self, pa: Pa) -> bool {
        self.secure.contains(&pa.granule_base().0)
    }
}

impl Context for World {
    type Mem = Pool;
    fn mem(&self) -> &Pool {
        &self.pool
    }
}

fn pool_page(i: u8) -> u64 {
    POOL + u64::from(i) % POOL_PAGES * GRANULE_SIZE
}

fn gpa_page(j: u8) -> u64 {
    GPA_BASE + u64::from(j) % GPA_PAGES * GRANULE_SIZE
}

/// A PA target: a pool page (kind 0..=5), the page after the pool (no memory behind it), or raw.
fn pa_target(input: &mut Input<'_>) -> u64 {
    match input.u8() % 8 {
        0..=5 => pool_page(input.u8()),
        6 => POOL + POOL_PAGES * GRANULE_SIZE,
        _ => input.u64() & !(GRANULE_SIZE - 1),
    }
}

fn perms(bits: u8) -> Perms {
    Perms {
        read: bits & 1 != 0,
        write: bits & 2 != 0,
    }
}

/// A descriptor: raw (kind 0) or a GPA page of the fuzzer's range with low and high attribute
/// bits (kind 1), so table and leaf descriptors chain into mapped memory.
fn descriptor(input: &mut Input<'_>) -> u64 {
    if input.u8().is_multiple_of(2) {
        input.u64()
    } else {
        let page = gpa_page(input.u8());
        page | u64::from(input.u16() & 0xFFF) | u64::from(input.u16()) << 48
    }
}

/// A table index: 0..=254 as is, 255 meaning the last entry (511).
fn index(byte: u8) -> u64 {
    if byte == u8::MAX {
        511
    } else {
        u64::from(byte)
    }
}

fn pasid(input: &mut Input<'_>) -> Option<u32> {
    match input.u8() % 8 {
        0 | 1 => None,
        2..=4 => Some(u32::from(input.u8() % 4)),
        5 => Some(PASID_MAX),
        6 => Some(PASID_MAX + 1),
        _ => Some(input.u32()),
    }
}

/// An IOVA: raw, or four table indices and a page offset (level 0 first).
fn iova(input: &mut Input<'_>) -> u64 {
    if input.u8().is_multiple_of(4) {
        return input.u64();
    }
    let mut v = 0u64;
    for level in 0..4u32 {
        v |= index(input.u8()) << (39 - 9 * level);
    }
    v | u64::from(input.u16() & 0xFFF)
}

/// Runs the program in `data`.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut w = World {
        pool: Pool {
            pages: (0..POOL_PAGES)
                .map(|i| (POOL + i * GRANULE_SIZE, Box::new([0; 4096])))
                .collect(),
        },
        s2: BTreeMap::new(),
        secure: BTreeSet::new(),
        vdevs: Vec::new(),
        host_unmapped: BTreeSet::new(),
        roots: BTreeMap::new(),
    };
    let nvdevs = 1 + input.u8() % 3;
    for i in 0..nvdevs {
        let flags = input.u8();
        w.vdevs.push(Vdev {
            requester: Requester {
                segment: 0,
                rid: RIDS[usize::from(i)],
            },
            id: VdevId(0xA000 + u64::from(i)),
            tvm: TVMS[usize::from(flags & 1)],
            format: FORMATS[usize::from((flags >> 1) & 3) % FORMATS.len()],
            run: flags & 0x10 != 0,
            accepted: flags & 0x20 != 0,
            pasids: PasidTable::new(),
        });
    }
    let mut tlb = Iotlb::new();
    let mut coherent = true;
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % step::COUNT {
            step::MAP => {
                let tvm = TVMS[usize::from(input.u8() & 1)];
                let gpa = gpa_page(input.u8());
                let pa = Pa(pa_target(&mut input));
                let attrs = input.u8();
                w.s2.insert(
                    (tvm, gpa),
                    S2Entry {
                        pa,
                        perms: perms(attrs),
                        private: attrs & 4 != 0,
                    },
                );
                tlb.invalidate_gpa(tvm, Gpa(gpa), GRANULE_SIZE);
            }
            step::UNMAP => {
                let tvm = TVMS[usize::from(input.u8() & 1)];
                let gpa = gpa_page(input.u8());
                w.s2.remove(&(tvm, gpa));
                tlb.invalidate_gpa(tvm, Gpa(gpa), GRANULE_SIZE);
            }
            step::WRITE => {
                let page = pool_page(input.u8());
                let slot = usize::try_from(index(input.u8())).unwrap_or(0) * 8;
                let value = descriptor(&mut input);
                let skip_invalidation = input.u8() == 0xA5;
                if let Some(p) = w.pool.pages.get_mut(&page) {
                    p[slot..slot + 8].copy_from_slice(&value.to_le_bytes());
                }
                if skip_invalidation {
                    coherent = false;
                } else {
                    for v in &w.vdevs {
                        tlb.invalidate_guest(v.id, PasidScope::All, Iova(0), u64::MAX);
                    }
                }
            }
            step::SECURE => {
                let page = pa_target(&mut input);
                if input.bool() {
                    w.secure.insert(page);
                } else {
                    w.secure.remove(&page);
                }
                tlb.invalidate_pa(Pa(page));
            }
            step::FLAGS => {
                let Some(v) = w.vdevs.get_mut(usize::from(input.u8() % nvdevs)) else {
                    continue;
                };
                let flags = input.u8();
                let (run, accepted) = (flags & 1 != 0, flags & 2 != 0);
                // The core drops a vdevice's translations on unbind, stop and error only.
                if (v.run && !run) || (v.accepted && !accepted) {
                    tlb.invalidate_vdev(v.id);
                }
                v.run = run;
                v.accepted = accepted;
            }
            step::ATTACH => {
                let Some(v) = w.vdevs.get_mut(usize::from(input.u8() % nvdevs)) else {
                    continue;
                };
                let p = pasid(&mut input);
                let root = if input.u8().is_multiple_of(8) {
                    input.u64()
                } else {
                    gpa_page(input.u8())
                };
                let config = input.u8();
                let forced = input.u8() == 0xC5;
                let checked = v
                    .format
                    .min_ia_bits()
                    .and_then(|min| S1Config::from_raw(u64::from(config), min));
                let ia_bits = match checked {
                    Some(c) => c.ia_bits,
                    None if forced => config,
                    None => continue,
                };
                if v.pasids.attach(p, Gpa(root), ia_bits).is_ok() {
                    let table = Gpa(root);
                    w.roots.insert((v.id, p), Attached { table, ia_bits });
                    tlb.invalidate_pasid(v.id, p);
                }
            }
            step::DETACH => {
                let Some(v) = w.vdevs.get_mut(usize::from(input.u8() % nvdevs)) else {
                    continue;
                };
                let p = pasid(&mut input);
                if v.pasids.detach(p).is_ok() {
                    w.roots.remove(&(v.id, p));
                    tlb.invalidate_pasid(v.id, p);
                }
            }
            step::TRANSLATE => {
                let rid = if input.u8() % 8 == 7 {
                    input.u16()
                } else {
                    RIDS[usize::from(input.u8()) % RIDS.len()]
                };
                let req = Request {
                    requester: Requester { segment: 0, rid },
                    pasid: pasid(&mut input),
                    t_bit: input.bool(),
                    iova: Iova(iova(&mut input)),
                    access: if input.bool() {
                        Access::Write
                    } else {
                        Access::Read
                    },
                };
                let cached = translate(&w, &mut tlb, &req);
                let walked = translate_uncached(&w, &req);
                let model = expected(&w, |v, p| w.roots.get(&(v, p)).copied(), &req);
                assert_eq!(
                    observed(&walked),
                    model,
                    "walk and reference disagree for {req:?} (engine: {walked:?})"
                );
                if coherent {
                    assert_eq!(cached, walked, "IOTLB and walk disagree for {req:?}");
                }
                check(&w, &req, cached);
                check(&w, &req, walked);
            }
            _ => match input.u8() % 7 {
                0 => tlb.invalidate_gpa(
                    TVMS[usize::from(input.u8() & 1)],
                    Gpa(input.u64()),
                    input.u64(),
                ),
                1 => tlb.invalidate_pa(Pa(pa_target(&mut input))),
                2 => tlb.invalidate_vdev(VdevId(0xA000 + u64::from(input.u8() % 3))),
                3 => tlb.invalidate_pasid(
                    VdevId(0xA000 + u64::from(input.u8() % 3)),
                    pasid(&mut input),
                ),
                4 => {
                    let vdev = VdevId(0xA000 + u64::from(input.u8() % 3));
                    let scope = if input.bool() {
                        PasidScope::All
                    } else {
                        PasidScope::One(pasid(&mut input))
                    };
                    tlb.invalidate_guest(vdev, scope, Iova(iova(&mut input)), input.u64());
                }
                5 => tlb.invalidate_tvm(TVMS[usize::from(input.u8() & 1)]),
                _ => {
                    tlb.flush();
                    coherent = true;
                }
            },
        }
    }
}

/// Invariants 1 and 2 for one result, against the world as it is now.
fn check(w: &World, req: &Request, result: Result<Pa, tsm_core::viommu::Fault>) {
    let vdev = w.vdevice(req.requester, req.pasid);
    let got = match result {
        Ok(pa) => pa,
        Err(f) => {
            assert_eq!(
                f.vdev,
                vdev.map(|v| v.id),
                "fault tagged with the wrong vdevice for {req:?}"
            );
            assert_eq!(
                (f.iova, f.pasid, f.access, f.t_bit),
                (req.iova, req.pasid, req.access, req.t_bit)
            );
            return;
        }
    };
    let secure = w.is_secure(got);
    if !req.t_bit {
        assert!(
            !secure,
            "invariant 1: T=0 reached secure {got:?} for {req:?}"
        );
        return;
    }
    let v = vdev.unwrap_or_else(|| {
        panic!("invariant 2: T=1 from a host device reached {got:?} for {req:?}")
    });
    assert!(
        v.tdi_run && v.accepted,
        "invariant 2: T=1 from a vdevice not RUN+accepted for {req:?}"
    );
    let own = w
        .s2
        .iter()
        .any(|(&(tvm, _), e)| tvm == v.tvm && e.pa == got.granule_base() && e.private == secure);
    assert!(
        own,
        "invariant 2: T=1 reached {got:?}, not its TVM's own memory, for {req:?}"
    );
}

/// Seeds: valid two-stage chains in both formats, translated with T=0 and T=1; the Arm chain
/// also with 39- and 25-bit roots (the chain's level-1 and level-2 tables).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, format_bits, config, root_page) in [
        ("arm", 0u8, 0u8, 0u8),
        ("x86", 1, 0, 0),
        ("nop", 2, 0, 0),
        ("arm39", 0, 39, 1),
        ("arm25", 0, 25, 2),
    ] {
        let mut s = Writer::default();
        // One vdevice of TVM 0, RUN and accepted.
        s.u8(0).u8(format_bits << 1 | 0x30);
        // Stage 2 of TVM 0: GPA pages 0..4 → pool pages 0..4 (private, RW), GPA page 4 → pool
        // page 4 (shared, RW); pool pages 0..4 secure.
        for j in 0..5u8 {
            s.u8(step::MAP)
                .u8(0)
                .u8(j)
                .u8(0)
                .u8(j)
                .u8(if j < 4 { 7 } else { 3 });
            if j < 4 {
                s.u8(step::SECURE).u8(0).u8(j).u8(1);
            }
        }
        // Stage-1 chain: L0[0] → GPA page 1, L1[0] → page 2, L2[0] → page 3, L3[0] → leaf at
        // GPA page 0 (private) and L3[1] → leaf at GPA page 4 (shared).
        let (table, leaf) = match format_bits {
            1 => (0x7u16, 0x7u16),
            _ => (0x3, 0x443),
        };
        for (page, next, attrs) in [(0u8, 1u8, table), (1, 2, table), (2, 3, table)] {
            s.u8(step::WRITE)
                .u8(page)
                .u8(0)
                .u8(1)
                .u8(next)
                .u16(attrs)
                .u16(0)
                .u8(0);
        }
        s.u8(step::WRITE)
            .u8(3)
            .u8(0)
            .u8(1)
            .u8(0)
            .u16(leaf)
            .u16(0)
            .u8(0);
        s.u8(step::WRITE)
            .u8(3)
            .u8(1)
            .u8(1)
            .u8(4)
            .u16(leaf)
            .u16(0)
            .u8(0);
        // Default stage-1 root: the GPA page of the table its input size starts at (page 0
        // for 48 bits); not forced.
        s.u8(step::ATTACH)
            .u8(0)
            .u8(0)
            .u8(1)
            .u8(root_page)
            .u8(config)
            .u8(0);
        for t in [0u8, 1] {
            for leaf_index in [0u8, 1] {
                // RID 0x100, no PASID, T bit, structured IOVA, read.
                s.u8(step::TRANSLATE).u8(0).u8(0).u8(0).u8(t).u8(1);
                s.u8(0).u8(0).u8(0).u8(leaf_index).u16(0x10).u8(0);
            }
        }
        // A host device reaching a secure page, then an unmap and the same request again.
        s.u8(step::TRANSLATE)
            .u8(0)
            .u8(3)
            .u8(0)
            .u8(0)
            .u8(0)
            .u64(POOL)
            .u8(1);
        s.u8(step::UNMAP).u8(0).u8(0);
        s.u8(step::TRANSLATE)
            .u8(0)
            .u8(0)
            .u8(0)
            .u8(1)
            .u8(1)
            .u8(0)
            .u8(0)
            .u8(0)
            .u8(0)
            .u16(0)
            .u8(1);
        out.push((format!("chain_{name}"), s.bytes.clone()));
    }
    out
}
