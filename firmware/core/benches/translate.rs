//! ns per translation of the secure vIOMMU, and table reads per miss.
//!
//! `cargo bench -p tsm-core --bench translate` (add `-- --quick` for a short run).
//!
//! The world is simulated but the work is real: stage-1 tables (Arm VMSAv8-64 and x86-64
//! 4-level) live in simulated memory, and stage 2 is a real 4-level table in the same memory,
//! so every stage-2 lookup costs 4 reads, as the core's address map will. Every read is counted.
//!
//! The floor of a 4+4-level nested walk without caching table translations is
//! 4 stage-1 reads + 4 × 4 stage-2 reads for their GPAs + 4 for the final GPA = 24 reads.
//! With the walk cache (level-3 table of a 2 MiB region) and the table cache (stage-2
//! translations of table pages) warm, a miss costs 1 stage-1 read + 4 for the final GPA = 5.

use std::cell::Cell;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_core::viommu::{
    Access, Context, Devices, HostMapping, Iotlb, PasidTable, Perms, Request, Requester, S2Entry,
    SecureMemory, Stage1Format, Stage2, TvmId, VdevId, VdevView, translate, translate_uncached,
};
use tsm_platform::{MemFault, PhysMem};

const TVM: TvmId = TvmId(1);
const ARM_RID: Requester = Requester { segment: 0, rid: 1 };
const X86_RID: Requester = Requester { segment: 0, rid: 2 };
const S2_RID: Requester = Requester { segment: 0, rid: 3 };
/// Pages each miss benchmark cycles through: far more than the IOTLB holds, so every
/// translation misses.
const PAGES: u64 = 4096;
const DATA_GPA: u64 = 0x1000_0000;
const IOVA_BASE: u64 = 0x0000_0080_0000_0000;
const ADDR: u64 = 0x0000_FFFF_FFFF_F000;

/// Simulated DRAM: the pages from [`DRAM_BASE`] in order, indexed by frame number, so a read
/// costs what the TSM's does (an address check and a load) and the figures are the walker's,
/// not a hash map's (each SipHash lookup of the map this replaced cost more than the walker's
/// own work per read).
#[derive(Default)]
struct Mem {
    pages: Vec<Box<[u8; 4096]>>,
    reads: Cell<u64>,
}

/// First PA of the simulated DRAM.
const DRAM_BASE: u64 = 0x8000_0000;

impl Mem {
    fn page(&self, pa: u64) -> Option<&[u8; 4096]> {
        let frame = usize::try_from(pa.checked_sub(DRAM_BASE)? >> 12).ok()?;
        self.pages.get(frame).map(|p| &**p)
    }

    fn get(&self, pa: u64) -> u64 {
        let p = self.page(pa).expect("a simulated page");
        let o = (pa & 0xFFF) as usize;
        u64::from_le_bytes(p[o..o + 8].try_into().unwrap())
    }

    fn set(&mut self, pa: u64, v: u64) {
        let frame = ((pa - DRAM_BASE) >> 12) as usize;
        if frame >= self.pages.len() {
            self.pages.resize_with(frame + 1, || Box::new([0; 4096]));
        }
        let o = (pa & 0xFFF) as usize;
        self.pages[frame][o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
}

impl PhysMem for Mem {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.reads.set(self.reads.get() + 1);
        let p = self.page(pa.0).ok_or(MemFault(pa))?;
        let o = pa.granule_offset() as usize;
        out.copy_from_slice(p.get(o..o + out.len()).ok_or(MemFault(pa))?);
        Ok(())
    }

    fn write(&self, pa: Pa, _: &[u8]) -> Result<(), MemFault> {
        Err(MemFault(pa))
    }
}

struct World {
    mem: Mem,
    /// Root of the TVM's stage-2 table (bit 0 valid, bit 1 writable, bit 2 private).
    s2_root: u64,
    /// Per frame of the simulated DRAM: whether it is secure (a TVM's private page).
    secure: Vec<bool>,
    next_pa: u64,
    next_table_gpa: u64,
    arm: PasidTable,
    x86: PasidTable,
}

impl World {
    fn alloc_pa(&mut self) -> u64 {
        let pa = self.next_pa;
        self.next_pa += GRANULE_SIZE;
        self.mem.set(pa, 0);
        pa
    }

    fn s2_map(&mut self, gpa: u64, pa: u64, private: bool) {
        let mut table = self.s2_root;
        for level in 0..3 {
            let at = table | ((gpa >> (39 - 9 * level)) & 0x1FF) << 3;
            let d = self.mem.get(at);
            table = if d & 1 == 0 {
                let t = self.alloc_pa();
                self.mem.set(at, t | 1);
                t
            } else {
                d & ADDR
            };
        }
        self.mem.set(
            table | ((gpa >> 12) & 0x1FF) << 3,
            pa | 0b11 | u64::from(private) << 2,
        );
        if private {
            let frame = ((pa - DRAM_BASE) >> 12) as usize;
            if frame >= self.secure.len() {
                self.secure.resize(frame + 1, false);
            }
            self.secure[frame] = true;
        }
    }

    fn gpa_pa(&self, gpa: u64) -> u64 {
        let mut table = self.s2_root;
        for level in 0..4 {
            table = self
                .mem
                .get(table | ((gpa >> (39 - 9 * level)) & 0x1FF) << 3)
                & ADDR;
        }
        table | (gpa & 0xFFF)
    }

    fn new_table(&mut self) -> u64 {
        let gpa = self.next_table_gpa;
        self.next_table_gpa += GRANULE_SIZE;
        let pa = self.alloc_pa();
        self.s2_map(gpa, pa, true);
        gpa
    }

    /// Maps `iova` → `gpa` in the stage-1 table at `root` (4 KiB page).
    fn s1_map(&mut self, x86: bool, root: u64, iova: u64, gpa: u64) {
        let table_bits = if x86 { 0b111 } else { 0b11 };
        let leaf_bits = if x86 { 0b111 } else { 0b11 | 1 << 10 | 1 << 6 };
        let mut table = root;
        for level in 0..3 {
            let at = self.gpa_pa(table | ((iova >> (39 - 9 * level)) & 0x1FF) << 3);
            let d = self.mem.get(at);
            table = if d & 1 == 0 {
                let t = self.new_table();
                self.mem.set(at, t | table_bits);
                t
            } else {
                d & ADDR
            };
        }
        let at = self.gpa_pa(table | ((iova >> 12) & 0x1FF) << 3);
        self.mem.set(at, gpa | leaf_bits);
    }

    fn new() -> World {
        let mut w = World {
            mem: Mem::default(),
            s2_root: 0,
            secure: Vec::new(),
            next_pa: DRAM_BASE,
            next_table_gpa: 0x4000_0000,
            arm: PasidTable::new(),
            x86: PasidTable::new(),
        };
        w.s2_root = w.alloc_pa();
        for i in 0..PAGES {
            let pa = w.alloc_pa();
            w.s2_map(DATA_GPA + i * GRANULE_SIZE, pa, true);
        }
        for x86 in [false, true] {
            let root = w.new_table();
            for i in 0..PAGES {
                w.s1_map(
                    x86,
                    root,
                    IOVA_BASE + i * GRANULE_SIZE,
                    DATA_GPA + i * GRANULE_SIZE,
                );
            }
            let t = if x86 { &mut w.x86 } else { &mut w.arm };
            t.attach(None, Gpa(root), 48).unwrap();
        }
        w
    }
}

impl Devices for World {
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView> {
        let (format, table) = match requester {
            ARM_RID => (Stage1Format::ArmVmsav8_64_4k, &self.arm),
            X86_RID => (Stage1Format::X86_64FirstStage4Level, &self.x86),
            S2_RID => (Stage1Format::None, &self.arm),
            _ => return None,
        };
        Some(VdevView {
            id: VdevId(u64::from(requester.rid)),
            tvm: TVM,
            format,
            tdi_run: true,
            accepted: true,
            stage1: table.lookup(pasid),
        })
    }

    fn host_domain(&self, _: Requester, iova: Iova) -> Option<HostMapping> {
        Some(HostMapping {
            pa: Pa(iova.0),
            perms: Perms::RW,
        })
    }
}

impl Stage2 for World {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        if tvm != TVM {
            return None;
        }
        let mut table = self.s2_root;
        for level in 0..4 {
            let mut b = [0; 8];
            self.mem
                .read(
                    Pa(table | ((gpa.0 >> (39 - 9 * level)) & 0x1FF) << 3),
                    &mut b,
                )
                .ok()?;
            let d = u64::from_le_bytes(b);
            if d & 1 == 0 {
                return None;
            }
            table = d & ADDR;
            if level == 3 {
                return Some(S2Entry {
                    pa: Pa(table),
                    perms: Perms {
                        read: true,
                        write: d & 2 != 0,
                    },
                    private: d & 4 != 0,
                });
            }
        }
        None
    }
}

impl SecureMemory for World {
    fn is_secure(&self, pa: Pa) -> bool {
        pa.0.checked_sub(DRAM_BASE)
            .and_then(|o| usize::try_from(o >> 12).ok())
            .and_then(|frame| self.secure.get(frame).copied())
            .unwrap_or(false)
    }
}

impl Context for World {
    type Mem = Mem;
    fn mem(&self) -> &Mem {
        &self.mem
    }
}

fn req(requester: Requester, iova: u64) -> Request {
    Request {
        requester,
        pasid: None,
        t_bit: true,
        iova: Iova(iova),
        access: Access::Write,
    }
}

/// Reads one translation costs.
fn reads(w: &World, f: impl FnOnce() -> bool) -> u64 {
    let before = w.mem.reads.get();
    assert!(f(), "translation failed");
    w.mem.reads.get() - before
}

fn report_reads(w: &World) {
    let mut tlb = Iotlb::new();
    let ok = |r: Result<Pa, _>| r.is_ok();
    println!("table reads per translation (stage 2 = a 4-level table, 4 reads per lookup):");
    for (name, rid, base) in [
        ("stage-2-only", S2_RID, DATA_GPA),
        ("two-stage Arm", ARM_RID, IOVA_BASE),
        ("two-stage x86", X86_RID, IOVA_BASE),
    ] {
        let cold = reads(w, || ok(translate(w, &mut tlb, &req(rid, base))));
        let hit = reads(w, || ok(translate(w, &mut tlb, &req(rid, base))));
        let warm = reads(w, || {
            ok(translate(w, &mut tlb, &req(rid, base + 7 * GRANULE_SIZE)))
        });
        let uncached = reads(w, || {
            ok(translate_uncached(w, &req(rid, base + 9 * GRANULE_SIZE)))
        });
        println!(
            "  {name:14}: IOTLB hit {hit}, miss with walk and table caches cold {cold} / warm {warm}, no cache at all {uncached}"
        );
    }
}

fn bench(c: &mut Criterion) {
    let w = World::new();
    report_reads(&w);

    let mut tlb = Iotlb::new();
    let hit = req(ARM_RID, IOVA_BASE);
    assert!(translate(&w, &mut tlb, &hit).is_ok());
    c.bench_function("iotlb hit (two-stage Arm entry)", |b| {
        b.iter(|| translate(black_box(&w), &mut tlb, black_box(&hit)))
    });

    for (name, rid, base) in [
        ("miss, stage 2 only", S2_RID, DATA_GPA),
        (
            "miss, two-stage Arm, walk and table caches warm",
            ARM_RID,
            IOVA_BASE,
        ),
        (
            "miss, two-stage x86, walk and table caches warm",
            X86_RID,
            IOVA_BASE,
        ),
    ] {
        let mut tlb = Iotlb::new();
        let mut i = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                // Cycling through PAGES pages (16 × the IOTLB) makes every lookup a miss.
                i = (i + 1) % PAGES;
                translate(black_box(&w), &mut tlb, &req(rid, base + i * GRANULE_SIZE))
            })
        });
    }

    let mut i = 0u64;
    c.bench_function("miss, two-stage Arm, no cache (24-read floor)", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES;
            translate_uncached(black_box(&w), &req(ARM_RID, IOVA_BASE + i * GRANULE_SIZE))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
