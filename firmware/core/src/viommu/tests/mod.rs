//! Tests of the secure vIOMMU over a simulated world: memory, stage-2 maps, a secure set and
//! vdevices, all owned by the test (independent of how the core stores its objects).

extern crate std;

mod core_map;
mod enumerate;
mod events_pasid;
mod input_size;
mod invalidation;
mod props;
mod reasons;

use std::boxed::Box;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_platform::{MemFault, PhysMem};

use super::*;

/// Physical memory made of the pages the test created; reads elsewhere fail. Counts reads.
#[derive(Default)]
pub struct SimMem {
    pages: BTreeMap<u64, Box<[u8; GRANULE_SIZE as usize]>>,
    pub reads: Cell<u64>,
}

impl SimMem {
    fn locate(&self, pa: Pa, len: usize) -> Result<(u64, usize), MemFault> {
        let off = pa.granule_offset() as usize;
        if off + len > GRANULE_SIZE as usize || !self.pages.contains_key(&pa.granule_base().0) {
            return Err(MemFault(pa));
        }
        Ok((pa.granule_base().0, off))
    }

    pub fn add_page(&mut self, pa: Pa) {
        self.pages
            .entry(pa.granule_base().0)
            .or_insert_with(|| Box::new([0; GRANULE_SIZE as usize]));
    }

    pub fn write_u64(&mut self, pa: Pa, v: u64) {
        self.add_page(pa);
        let (base, off) = self.locate(pa, 8).unwrap();
        self.pages.get_mut(&base).unwrap()[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    pub fn read_u64(&self, pa: Pa) -> Option<u64> {
        let mut b = [0; 8];
        self.read(pa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

impl PhysMem for SimMem {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.reads.set(self.reads.get() + 1);
        let (base, off) = self.locate(pa, out.len())?;
        out.copy_from_slice(&self.pages[&base][off..off + out.len()]);
        Ok(())
    }

    fn write(&self, pa: Pa, _data: &[u8]) -> Result<(), MemFault> {
        // The vIOMMU never writes (no hardware A/D updates).
        Err(MemFault(pa))
    }
}

#[derive(Clone)]
pub struct SimVdev {
    pub id: VdevId,
    pub tvm: TvmId,
    pub format: Stage1Format,
    pub run: bool,
    pub accepted: bool,
    pub pasids: PasidTable,
}

/// The world one translation sees.
#[derive(Default)]
pub struct Sim {
    pub mem: SimMem,
    pub s2: BTreeMap<(TvmId, u64), S2Entry>,
    pub secure: BTreeSet<u64>,
    pub vdevs: BTreeMap<Requester, SimVdev>,
    /// Host domain: identity, read/write, except these pages.
    pub host_unmapped: BTreeSet<u64>,
    /// Stage-2 lookups made by the vIOMMU.
    pub s2_lookups: Cell<u64>,
    next_gpa: BTreeMap<TvmId, u64>,
    next_pa: u64,
}

impl Devices for Sim {
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView> {
        self.vdevs.get(&requester).map(|v| VdevView {
            id: v.id,
            tvm: v.tvm,
            format: v.format,
            tdi_run: v.run,
            accepted: v.accepted,
            stage1: v.pasids.lookup(pasid),
        })
    }

    fn host_domain(&self, _requester: Requester, iova: Iova) -> Option<HostMapping> {
        (!self.host_unmapped.contains(&(iova.0 & !0xFFF))).then_some(HostMapping {
            pa: Pa(iova.0),
            perms: Perms::RW,
        })
    }
}

impl Stage2 for Sim {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        self.s2_lookups.set(self.s2_lookups.get() + 1);
        self.s2.get(&(tvm, gpa.granule_base().0)).copied()
    }
}

impl SecureMemory for Sim {
    fn is_secure(&self, pa: Pa) -> bool {
        self.secure.contains(&pa.granule_base().0)
    }
}

impl Context for Sim {
    type Mem = SimMem;
    fn mem(&self) -> &SimMem {
        &self.mem
    }
}

pub const TVM: TvmId = TvmId(0x1000);
pub const TVM2: TvmId = TvmId(0x2000);
pub const VDEV: VdevId = VdevId(0xA000);
pub const RID: Requester = Requester {
    segment: 0,
    rid: 0x0100,
};
/// The vdevice's RID on another segment: a host device.
pub const HOST_RID: Requester = Requester {
    segment: 1,
    rid: 0x0100,
};

impl Sim {
    /// A world with one vdevice (RID 0x100) of `format` in TVM, not yet bound.
    pub fn with_vdev(format: Stage1Format) -> Sim {
        let mut s = Sim {
            next_pa: 0x8000_0000,
            ..Sim::default()
        };
        s.add_vdev(RID, VDEV, TVM, format);
        s
    }

    pub fn add_vdev(&mut self, requester: Requester, id: VdevId, tvm: TvmId, format: Stage1Format) {
        self.vdevs.insert(
            requester,
            SimVdev {
                id,
                tvm,
                format,
                run: false,
                accepted: false,
                pasids: PasidTable::new(),
            },
        );
    }

    pub fn vdev(&mut self, requester: Requester) -> &mut SimVdev {
        self.vdevs.get_mut(&requester).unwrap()
    }

    pub fn set_run(&mut self, run: bool, accepted: bool) {
        let v = self.vdev(RID);
        v.run = run;
        v.accepted = accepted;
    }

    /// Maps `gpa` in `tvm` to a fresh PA page (private = secure), with memory behind it.
    pub fn map(&mut self, tvm: TvmId, gpa: Gpa, perms: Perms, private: bool) -> Pa {
        let pa = Pa(self.next_pa);
        self.next_pa += GRANULE_SIZE;
        self.map_to(tvm, gpa, pa, perms, private);
        pa
    }

    pub fn map_to(&mut self, tvm: TvmId, gpa: Gpa, pa: Pa, perms: Perms, private: bool) {
        self.mem.add_page(pa);
        if private {
            self.secure.insert(pa.0);
        }
        self.s2
            .insert((tvm, gpa.granule_base().0), S2Entry { pa, perms, private });
    }

    /// A fresh private, read/write page of `tvm` for a stage-1 table (GPAs from 0x4000_0000).
    pub fn alloc_table(&mut self, tvm: TvmId) -> Gpa {
        let next = self.next_gpa.entry(tvm).or_insert(0x4000_0000);
        let gpa = Gpa(*next);
        *next += GRANULE_SIZE;
        self.map(tvm, gpa, Perms::RW, true);
        gpa
    }

    pub fn gpa_to_pa(&self, tvm: TvmId, gpa: Gpa) -> Pa {
        let e = self.s2[&(tvm, gpa.granule_base().0)];
        Pa(e.pa.0 | gpa.granule_offset())
    }

    pub fn write_gpa(&mut self, tvm: TvmId, gpa: Gpa, v: u64) {
        let pa = self.gpa_to_pa(tvm, gpa);
        self.mem.write_u64(pa, v);
    }

    pub fn read_gpa(&self, tvm: TvmId, gpa: Gpa) -> u64 {
        self.mem.read_u64(self.gpa_to_pa(tvm, gpa)).unwrap()
    }

    /// Maps `iova` → `leaf` in TVM's stage-1 table at `root`, creating tables as needed; the
    /// leaf is at `leaf_level` (3: page, 2/1: block).
    pub fn s1_map(
        &mut self,
        fmt: Stage1Format,
        root: Gpa,
        iova: u64,
        leaf: u64,
        leaf_level: u8,
        writable: bool,
    ) {
        self.s1_map_from(fmt, root, 0, iova, leaf, leaf_level, writable);
    }

    /// [`Sim::s1_map`] in a table tree whose root is a level-`start` table (a shorter input).
    #[allow(clippy::too_many_arguments)]
    pub fn s1_map_from(
        &mut self,
        fmt: Stage1Format,
        root: Gpa,
        start: u8,
        iova: u64,
        leaf: u64,
        leaf_level: u8,
        writable: bool,
    ) {
        let mut table = root.0;
        for level in start..leaf_level {
            let at = Gpa(table | (stage1::index(Iova(iova), level) << 3));
            let d = self.read_gpa(TVM, at);
            if d & 1 == 0 {
                let next = self.alloc_table(TVM);
                self.write_gpa(TVM, at, enc::table(fmt, next.0));
                table = next.0;
            } else {
                table = d & 0x0000_FFFF_FFFF_F000;
            }
        }
        let at = Gpa(table | (stage1::index(Iova(iova), leaf_level) << 3));
        self.write_gpa(TVM, at, enc::leaf(fmt, leaf_level, leaf, writable));
    }

    /// Attaches a fresh stage-1 root for `pasid` of the default vdevice (48-bit input).
    pub fn new_root(&mut self, pasid: Option<u32>) -> Gpa {
        self.new_sized_root(pasid, 48)
    }

    /// Attaches a fresh stage-1 root for `pasid` of the default vdevice, for `ia_bits` of input.
    pub fn new_sized_root(&mut self, pasid: Option<u32>, ia_bits: u8) -> Gpa {
        let root = self.alloc_table(TVM);
        self.vdev(RID).pasids.attach(pasid, root, ia_bits).unwrap();
        root
    }
}

/// Descriptor encoders for the two formats.
pub mod enc {
    use super::Stage1Format;

    pub const ARM_VALID: u64 = 1;
    pub const ARM_TABLE_OR_PAGE: u64 = 2;
    pub const ARM_AP_USER: u64 = 1 << 6;
    pub const ARM_AP_RO: u64 = 1 << 7;
    pub const ARM_AF: u64 = 1 << 10;
    pub const ARM_APTABLE_NO_WRITE: u64 = 1 << 62;
    pub const ARM_APTABLE_NO_USER: u64 = 1 << 61;
    pub const X86_P: u64 = 1;
    pub const X86_RW: u64 = 2;
    pub const X86_US: u64 = 4;
    pub const X86_PS: u64 = 1 << 7;

    pub fn table(fmt: Stage1Format, next: u64) -> u64 {
        match fmt {
            Stage1Format::X86_64FirstStage4Level => next | X86_P | X86_RW | X86_US,
            _ => next | ARM_VALID | ARM_TABLE_OR_PAGE,
        }
    }

    pub fn leaf(fmt: Stage1Format, level: u8, oa: u64, writable: bool) -> u64 {
        match fmt {
            Stage1Format::X86_64FirstStage4Level => {
                oa | X86_P
                    | X86_US
                    | if writable { X86_RW } else { 0 }
                    | if level < 3 { X86_PS } else { 0 }
            }
            _ => {
                let kind = if level == 3 {
                    ARM_VALID | ARM_TABLE_OR_PAGE
                } else {
                    ARM_VALID
                };
                oa | kind | ARM_AF | ARM_AP_USER | if writable { 0 } else { ARM_AP_RO }
            }
        }
    }
}

pub fn req(t_bit: bool, iova: u64, access: Access) -> Request {
    Request {
        requester: RID,
        pasid: None,
        t_bit,
        iova: Iova(iova),
        access,
    }
}

/// Translates through the IOTLB and checks it agrees with the uncached walk.
pub fn both(sim: &Sim, tlb: &mut Iotlb, r: &Request) -> Result<Pa, Fault> {
    let cached = translate(sim, tlb, r);
    assert_eq!(
        cached,
        translate_uncached(sim, r),
        "IOTLB and walk disagree for {r:?}"
    );
    cached
}

pub fn reason(r: Result<Pa, Fault>) -> (FaultReason, Option<u8>) {
    let f = r.expect_err("expected a fault");
    (f.reason, f.level)
}
