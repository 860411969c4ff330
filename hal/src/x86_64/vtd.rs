//! The platform IOMMU on q35: Intel VT-d (VT-d 4.1), in legacy mode, driven by the TSM alone.
//!
//! Boot finds the remapping unit in the ACPI DMAR ([`unit`]: exactly one, on segment 0, whose
//! scope holds every function on bus 0, [`check_scope`]), maps its registers for the TSM only
//! (supervisor, uncached: `pci`, `paging`), and [`init`] keeps everything the unit reads in TSM memory, carved
//! at boot ([`pool_pages`]): the root table, bus 0's context table, and the **host domain**'s
//! second-level tables. It then points the unit at the root table, invalidates its caches and
//! turns translation on. From then on every requester on bus 0 has a context entry: the host
//! domain unless the core attached it elsewhere; requesters on other buses have no root entry,
//! so their DMA faults.
//!
//! **The host domain** is an identity map of the host's DRAM minus the TSM's memory, with read
//! and write, in 2 MiB pages (CAP.SLLPS; a unit without them is refused) but for the blocks
//! that hold TSM memory or DRAM's ends, which get 4 KiB leaves at boot. [`host_unmap`] clears
//! a granule's leaf and invalidates the IOTLB for it before it returns, [`host_map`] puts it
//! back. A granule inside a 2 MiB page first gets the page split into a 4 KiB table with the
//! same translations but its own, from a pool of `SPLIT_TABLES` tables (`crate::split_pool`:
//! held while any granule of the block is taken, folded back when the pool needs it), with a
//! domain-selective invalidation that drops the 2 MiB page from the IOTLB and the unit's
//! paging-structure caches; with every table held the take is refused
//! ([`VtdError::NoSplitTable`], GRANULE_DELEGATE's `Capacity`) and nothing changed.
//!
//! **Domain IDs**: tag 0 (the host domain) and the core's tags 1..=[`DMA_MAX_TAG`] map to
//! domain ID `tag`, or `tag + 1` when the unit reports caching mode (CAP.CM), which reserves
//! domain 0 for cached not-present entries.
//!
//! **Invalidation** is register-based (CCMD, IOTLB_REG), each command polled until the unit
//! clears its busy bit, with DMA drained (DR/DW) where the unit can; queued invalidation is left
//! off (it would only batch what one command does here). Caching mode (CM = 1: not-present
//! entries may be cached, so making one present needs an invalidation too) and write-buffer
//! flushing (RWBF: a not-present → present change with no invalidation needs a flush) follow
//! VT-d §6.1 and §6.8. A unit that does not snoop the CPU caches (ECAP.C = 0, as QEMU's) gets
//! every line the TSM wrote flushed (`clflush`) before it is told to look; for the tables the
//! core writes ([`DmaDomain::Table`]), [`attach`] and [`invalidate`] write back the whole
//! cache (`wbinvd`) instead, since the core does not say which lines changed.
//!
//! **Faults** stay in the unit's fault recording registers until [`drain_faults`] reads and
//! clears them (their interrupt is masked: the TSM runs with interrupts off). QEMU compresses
//! faults: one record per transfer, and none while a record of the same requester is pending.

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::acpi::Drhd;
use super::bootinfo::BootInfo;
use super::cpu;
use super::paging;
use crate::platform::{
    DMA_MAX_TAG, DmaDomain, DmaFault, DmaFaultKind, DmaStream, IommuError, MemRange,
};
use crate::split_pool::{Pick, SPLIT_TABLES, SplitPool};

/// Register offsets (VT-d §11.4).
const VER: u64 = 0x00;
const CAP: u64 = 0x08;
const ECAP: u64 = 0x10;
const GCMD: u64 = 0x18;
const GSTS: u64 = 0x1C;
const RTADDR: u64 = 0x20;
const CCMD: u64 = 0x28;
const FSTS: u64 = 0x34;
const FECTL: u64 = 0x38;
const PMEN: u64 = 0x64;
/// IOTLB registers, at ECAP.IRO × 16: the invalidate-address register, then IOTLB_REG.
const IVA: u64 = 0;
const IOTLB: u64 = 8;

/// CAP fields.
const CAP_RWBF: u64 = 1 << 4;
const CAP_CM: u64 = 1 << 7;
/// SAGAW bit 2: 48-bit, 4-level second-level tables.
const CAP_SAGAW_48: u64 = 1 << 10;
const CAP_PSI: u64 = 1 << 39;
/// SLLPS bit 0: 2 MiB second-level pages.
const CAP_SLLPS_2M: u64 = 1 << 34;
const CAP_DWD: u64 = 1 << 54;
const CAP_DRD: u64 = 1 << 55;
/// ECAP.C: the unit snoops the CPU caches when it reads its tables.
const ECAP_C: u64 = 1 << 0;

/// GCMD / GSTS bits.
const TE: u32 = 1 << 31;
const SRTP: u32 = 1 << 30;
const WBF: u32 = 1 << 27;
const QIE: u32 = 1 << 26;
/// GSTS bits a GCMD write must carry over (VT-d §11.4.4: all but the one-shot commands SRTP,
/// SFL, WBF and SIRTP).
const GCMD_PERSISTENT: u32 = 0x96FF_FFFF;

/// CCMD: invalidate, granularity (global, device) at 61, actual granularity at 59.
const CCMD_ICC: u64 = 1 << 63;
const CCMD_GLOBAL: u64 = 1 << 61;
const CCMD_DEVICE: u64 = 3 << 61;
/// IOTLB_REG: invalidate, granularity (global, domain, page) at 60, actual granularity at 57,
/// drain reads and writes, domain ID at 32.
const IOTLB_IVT: u64 = 1 << 63;
const IOTLB_GLOBAL: u64 = 1 << 60;
const IOTLB_DOMAIN: u64 = 2 << 60;
const IOTLB_PAGE: u64 = 3 << 60;
const IOTLB_DR: u64 = 1 << 49;
const IOTLB_DW: u64 = 1 << 48;

/// FSTS bits: primary fault overflow, primary pending fault, then error bits of features the
/// TSM does not use (advanced fault log, queued invalidation), cleared and reported if seen.
const FSTS_PFO: u32 = 1 << 0;
const FSTS_PPF: u32 = 1 << 1;
const FSTS_OTHER_ERRORS: u32 = 0b1111_1100;
/// FECTL: fault event interrupt masked.
const FECTL_IM: u32 = 1 << 31;
/// PMEN: protected memory regions enabled / their status.
const PMEN_EPM: u32 = 1 << 31;
const PMEN_PRS: u32 = 1 << 0;
/// Fault record, high quadword: fault, type (1 = read), reason at 32, source ID at 0.
const FRCD_F: u64 = 1 << 63;
const FRCD_READ: u64 = 1 << 62;

/// Root and context entries (VT-d §9.1, §9.3): present, the table address, the context's
/// address width (2: 48 bits, 4 levels) and domain ID at 8 in the high quadword.
const ENTRY_P: u64 = 1;
const CONTEXT_AW_48: u64 = 2;
/// Second-level entries (VT-d §9.8): read, write, page size (a leaf above level 1).
const SL_R: u64 = 1 << 0;
const SL_W: u64 = 1 << 1;
const SL_PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const ENTRIES: u64 = 512;
const PAGE: u64 = 4096;
/// Bytes one level-1 table maps.
const LEAF_TABLE_SPAN: u64 = 1 << 21;

/// Polls of a busy bit before the unit counts as hung: microseconds on hardware, a few
/// seconds of TCG at worst.
const POLL_LIMIT: u32 = 1 << 22;
/// The register set the TSM maps, at most (DRHD size field; QEMU's is one page).
const MAX_REGISTER_PAGES: u64 = 16;

/// Why the VT-d unit cannot be used, or an operation on it failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum VtdError {
    /// The DMAR lists this many units, not one: with several, devices behind the others would
    /// not be gated.
    UnitCount(u32),
    /// The unit serves another PCI segment than 0.
    OtherSegment,
    /// A function on bus 0 (device << 3 | function) is outside the unit's scope: its DMA would
    /// not be translated.
    OutOfScope(u16),
    /// Its register set is misaligned, too large or overlaps RAM.
    BadRegisters(u64),
    /// It has no 48-bit (4-level) second-level tables (CAP.SAGAW).
    No48BitTables(u64),
    /// It has too few domain IDs for the host domain and every tag (CAP.ND).
    TooFewDomains(u64),
    /// Its IOTLB or fault registers lie outside the mapped register set.
    RegistersOutsideSet,
    /// The carve-out's VT-d pool is too small (a TSM bug: [`pool_pages`] sized it).
    PoolExhausted,
    /// The unit did not finish a command (the register named) in time.
    Timeout(u64),
    /// The unit refused an invalidation (actual granularity 0; the register named).
    Refused(u64),
    /// The granule is not host DRAM.
    NotHostDram,
    /// It has no 2 MiB second-level pages (CAP.SLLPS bit 0).
    No2MiBPages(u64),
    /// Every split table is under a block that still holds a taken granule.
    NoSplitTable,
}

/// The unit as the TSM drives it.
struct Vtd {
    /// Register base (identity-mapped, supervisor, uncached).
    regs: u64,
    cap: u64,
    ecap: u64,
    /// Offsets of the IOTLB registers and of the fault recording registers; their count.
    iotlb: u64,
    /// IVT and the drain bits the unit has (CAP.DRD, CAP.DWD): the constant part of every
    /// IOTLB command, made once rather than from CAP on every invalidation.
    iotlb_command: u64,
    fault_records: u64,
    fault_count: u64,
    /// Added to a tag to make its domain ID (1 with caching mode).
    did_base: u16,
    root: u64,
    /// Bus 0's context table.
    context: u64,
    /// The host domain's top-level table.
    host_root: u64,
    /// The host domain's first PD: the PDs of DRAM are consecutive pool pages, one per GiB
    /// from DRAM's first ([`Vtd::build_tables`]).
    host_pds: u64,
    /// The host domain's split tables.
    splits: SplitPool,
    /// Bytes `clflush` writes back (CPUID.1:EBX[15:8] × 8).
    line: u64,
    dram: MemRange,
    tsm: MemRange,
    pool_next: u64,
    pool_end: u64,
}

static VTD: Mutex<Option<Vtd>> = Mutex::new(None);
/// Set once translation is on, never cleared.
static PRESENT: AtomicBool = AtomicBool::new(false);

/// The remapping unit of `info`'s DMAR the TSM can own, `None` without a DMAR; an error for a
/// DMAR the TSM cannot make gate every device (boot then stops: DMA would go around it).
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn unit(info: &BootInfo) -> Result<Option<Drhd>, VtdError> {
    let Some(dmar) = info.dmar else {
        return Ok(None);
    };
    let Some(unit) = dmar.first.filter(|_| dmar.units == 1) else {
        return Err(VtdError::UnitCount(dmar.units));
    };
    if unit.segment != 0 {
        return Err(VtdError::OtherSegment);
    }
    let size = unit.register_pages * PAGE;
    let ram = info.memmap().iter().any(|e| {
        e.kind == super::bootinfo::E820_RAM
            && unit.base < e.base.saturating_add(e.size)
            && e.base < unit.base.saturating_add(size)
    });
    if !unit.base.is_multiple_of(PAGE)
        || unit.register_pages > MAX_REGISTER_PAGES
        || unit.base.checked_add(size).is_none_or(|end| end > 1 << 47)
        || ram
    {
        return Err(VtdError::BadRegisters(unit.base));
    }
    if dmar.reserved_regions > 0 {
        defmt::warn!(
            "VT-d: the DMAR lists {=u32} reserved memory regions (RMRR); the host domain does not map them, so DMA that firmware left running there faults",
            dmar.reserved_regions
        );
    }
    Ok(Some(unit))
}

/// Checks that `unit` serves every function boot found on bus 0 (`functions`, bit device << 3
/// | function): the unit lists all of its segment, or each of them in its device scope.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn check_scope(unit: &Drhd, functions: &[u64; 4]) -> Result<(), VtdError> {
    if unit.include_pci_all {
        return Ok(());
    }
    for (word, (found, served)) in functions.iter().zip(unit.bus0_scope).enumerate() {
        let outside = found & !served;
        if outside != 0 {
            let devfn = word * 64 + outside.trailing_zeros() as usize;
            return Err(VtdError::OutOfScope(devfn as u16));
        }
    }
    Ok(())
}

/// The register set of `unit`, as the TSM maps it.
pub fn registers(unit: &Drhd) -> MemRange {
    MemRange {
        base: Pa(unit.base),
        size: unit.register_pages * PAGE,
    }
}

/// Pages the carve-out holds for VT-d over `dram`: the root table, bus 0's context table, the
/// host domain's top-level table, its tables for 2 MiB pages with a level-1 table for each block
/// `tsm` (the most the TSM's memory may span) and DRAM's ends touch, and its split tables.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn pool_pages(dram: &MemRange, tsm: &MemRange) -> Option<u64> {
    let end = dram.base.0.checked_add(dram.size)?;
    let tsm_end = tsm.base.0.checked_add(tsm.size)?;
    (end > dram.base.0 && tsm_end > tsm.base.0).then(|| {
        3 + paging::spans(dram.base.0, end, 39)
            + paging::spans(dram.base.0, end, 30)
            + paging::spans(tsm.base.0, tsm_end, 21)
            + 2
            + SPLIT_TABLES as u64
    })
}

/// What [`init`] reports for the banner.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct Summary {
    /// VER register (major.minor in bits 7:4 and 3:0).
    pub version: u32,
    /// CAP register (capabilities).
    pub cap: u64,
    /// ECAP register (extended capabilities).
    pub ecap: u64,
    /// Pool pages the tables took.
    pub pages: u64,
}

/// Builds the tables in `pool` (TSM memory, [`pool_pages`] pages, not zeroed), the host domain
/// over `dram` minus `tsm`, and turns on translation on `unit`, whose registers `paging` maps.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn init(
    unit: &Drhd,
    pool: MemRange,
    dram: MemRange,
    tsm: MemRange,
) -> Result<Summary, VtdError> {
    let regs = unit.base;
    let size = unit.register_pages * PAGE;
    let read64 = |off: u64| {
        // SAFETY: `regs..regs + size` is the unit's register set, which `paging` maps
        // supervisor-only and uncached at the same address; these are reads of its
        // capability registers, without side effects.
        unsafe { ((regs + off) as *const u64).read_volatile() }
    };
    let (cap, ecap) = (read64(CAP), read64(ECAP));
    // SAFETY: as above.
    let version = unsafe { ((regs + VER) as *const u32).read_volatile() };
    if cap & CAP_SAGAW_48 == 0 {
        return Err(VtdError::No48BitTables(cap));
    }
    if cap & CAP_SLLPS_2M == 0 {
        return Err(VtdError::No2MiBPages(cap));
    }
    let did_base = u16::from(cap & CAP_CM != 0);
    let domains = 1u64 << (4 + 2 * (cap & 0b111));
    if u64::from(DMA_MAX_TAG) + u64::from(did_base) >= domains {
        return Err(VtdError::TooFewDomains(cap));
    }
    let iotlb = ((ecap >> 8) & 0x3FF) * 16;
    let fault_records = ((cap >> 24) & 0x3FF) * 16;
    let fault_count = ((cap >> 40) & 0xFF) + 1;
    if iotlb + 16 > size
        || fault_records + 16 * fault_count > size
        || regs.checked_add(size).is_none()
    {
        return Err(VtdError::RegistersOutsideSet);
    }
    let iotlb_command = IOTLB_IVT
        | (if cap & CAP_DRD != 0 { IOTLB_DR } else { 0 })
        | (if cap & CAP_DWD != 0 { IOTLB_DW } else { 0 });
    let mut v = Vtd {
        regs,
        cap,
        ecap,
        iotlb,
        iotlb_command,
        fault_records,
        fault_count,
        did_base,
        root: 0,
        context: 0,
        host_root: 0,
        host_pds: 0,
        splits: SplitPool::new(0),
        line: u64::from((cpu::cpuid(1, 0)[1] >> 8) & 0xFF).max(1) * 8,
        dram,
        tsm,
        pool_next: pool.base.0,
        pool_end: pool.base.0 + pool.size,
    };
    v.build_tables()?;
    v.enable()?;
    // The tables from the pool's start, and the split tables at its end.
    let pages = (v.pool_next - pool.base.0) / PAGE + SPLIT_TABLES as u64;
    *VTD.lock() = Some(v);
    PRESENT.store(true, Ordering::Release);
    Ok(Summary {
        version,
        cap,
        ecap,
        pages,
    })
}

impl Vtd {
    // `regs + off` wraps never: `off` is inside the register set, and `init` refused a set
    // whose end overflows. Without the overflow check each access is one instruction shorter
    // (every (un)delegate makes three).
    fn read32(&self, off: u64) -> u32 {
        // SAFETY: `off` is one of the register offsets above, or inside the IOTLB / fault
        // recording sets `init` checked lie in the register set, which `paging` maps
        // supervisor-only and uncached at its own address; the TSM is its only user (under
        // the VTD lock, or before it is published).
        unsafe { (self.regs.wrapping_add(off) as *const u32).read_volatile() }
    }

    fn read64(&self, off: u64) -> u64 {
        // SAFETY: as in `read32`; the 64-bit registers are 8-byte aligned.
        unsafe { (self.regs.wrapping_add(off) as *const u64).read_volatile() }
    }

    fn write32(&self, off: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { (self.regs.wrapping_add(off) as *mut u32).write_volatile(value) };
    }

    fn write64(&self, off: u64, value: u64) {
        // SAFETY: as in `read64`.
        unsafe { (self.regs.wrapping_add(off) as *mut u64).write_volatile(value) };
    }

    /// Polls `done` until it holds; `Timeout(register)` if it never does.
    fn poll(&self, register: u64, done: impl Fn(&Self) -> bool) -> Result<(), VtdError> {
        for _ in 0..POLL_LIMIT {
            if done(self) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VtdError::Timeout(register))
    }

    /// Writes GCMD: the persistent state GSTS shows, changed by `change`, then waits until
    /// GSTS satisfies `done` (VT-d §11.4.4).
    fn global_command(
        &self,
        change: impl FnOnce(u32) -> u32,
        done: impl Fn(u32) -> bool,
    ) -> Result<(), VtdError> {
        self.write32(GCMD, change(self.read32(GSTS) & GCMD_PERSISTENT));
        self.poll(GSTS, |v| done(v.read32(GSTS)))
    }

    /// Makes the unit see what the TSM wrote to `[pa, pa + len)` of its tables: without
    /// ECAP.C it reads memory past the CPU caches, so the lines go back to memory first.
    fn flush(&self, pa: u64, len: u64) {
        if self.ecap & ECAP_C != 0 {
            return;
        }
        let mut at = pa & !(self.line - 1);
        while at < pa + len {
            cpu::clflush(at);
            at += self.line;
        }
        cpu::mfence();
    }

    /// [`Self::flush`] of one table entry: 8 aligned bytes never straddle a cache line (a
    /// line is at least 8 bytes), so one CLFLUSH does, without the line loop and its bounds
    /// (every (un)delegate flushes one entry).
    fn flush_entry(&self, pa: u64) {
        if self.ecap & ECAP_C == 0 {
            cpu::clflush(pa);
            cpu::mfence();
        }
    }

    /// Before the unit reads tables the core wrote (through ordinary cached stores, lines
    /// unknown): the whole cache back to memory on a non-snooping unit.
    fn flush_core_tables(&self) {
        if self.ecap & ECAP_C == 0 {
            cpu::wbinvd();
        }
    }

    /// After a not-present → present change that no invalidation follows (CM = 0): the
    /// unit's write buffers, if it has any that need flushing (CAP.RWBF).
    fn flush_write_buffer(&self) -> Result<(), VtdError> {
        if self.cap & CAP_RWBF == 0 {
            return Ok(());
        }
        // WBFS stays set while the flush runs.
        self.global_command(|keep| keep | WBF, |status| status & WBF == 0)
    }

    /// Context-cache invalidation: global, or of one source ID's entry tagged `did`; returns
    /// once the unit has done it.
    fn invalidate_context(&self, device: Option<(u16, u16)>) -> Result<(), VtdError> {
        let cmd = match device {
            None => CCMD_ICC | CCMD_GLOBAL,
            Some((sid, did)) => CCMD_ICC | CCMD_DEVICE | (u64::from(sid) << 16) | u64::from(did),
        };
        self.write64(CCMD, cmd);
        self.poll(CCMD, |v| v.read64(CCMD) & CCMD_ICC == 0)?;
        if (self.read64(CCMD) >> 59) & 0b11 == 0 {
            return Err(VtdError::Refused(CCMD));
        }
        Ok(())
    }

    /// IOTLB invalidation: global (`None`) or of domain `did`, in-flight DMA drained where the
    /// unit can. Returns once the unit has done it.
    fn invalidate_iotlb(&self, did: Option<u16>) -> Result<(), VtdError> {
        let cmd = match did {
            None => IOTLB_GLOBAL,
            Some(did) => IOTLB_DOMAIN | (u64::from(did) << 32),
        };
        // `init` checked the IOTLB registers' 16 bytes lie in the register set.
        let reg = self.iotlb.wrapping_add(IOTLB);
        self.write64(reg, self.iotlb_command | cmd);
        self.poll(reg, |v| v.read64(reg) & IOTLB_IVT == 0)?;
        if (self.read64(reg) >> 57) & 0b11 == 0 {
            return Err(VtdError::Refused(reg));
        }
        Ok(())
    }

    /// IOTLB invalidation of the 4 KiB page at `page` of domain `did` (domain-wide when the unit
    /// has no page-selective invalidation), in-flight DMA drained where the unit can; returns
    /// once the unit has done it. Every (un)delegate's, so apart from [`Self::invalidate_iotlb`]:
    /// the scope in registers (as that one's `Option` of a pair it went through memory), and
    /// the wait with no call (`poll`'s bound, the status kept), so that `set_host_leaf` keeps
    /// no more registers than its leaf change needs. The register is read once when the unit
    /// is done at the first look (QEMU's is, within the write): that read carries the actual
    /// granularity too. (The other invalidations kept `poll`: through this wait VDEV_CREATE's
    /// context change took 6 instructions more.)
    fn invalidate_iotlb_page(&self, did: u16, page: u64) -> Result<(), VtdError> {
        let scope = if self.cap & CAP_PSI != 0 {
            // Address mask 0 (one page), no invalidation hint.
            self.write64(self.iotlb.wrapping_add(IVA), page & !(PAGE - 1));
            IOTLB_PAGE
        } else {
            IOTLB_DOMAIN
        };
        let reg = self.iotlb.wrapping_add(IOTLB);
        self.write64(reg, self.iotlb_command | scope | (u64::from(did) << 32));
        let mut status = self.read64(reg);
        let mut polls = POLL_LIMIT;
        while status & IOTLB_IVT != 0 {
            polls = polls.checked_sub(1).ok_or(VtdError::Timeout(reg))?;
            core::hint::spin_loop();
            status = self.read64(reg);
        }
        if (status >> 57) & 0b11 == 0 {
            return Err(VtdError::Refused(reg));
        }
        Ok(())
    }

    /// A zeroed page of the pool.
    fn alloc(&mut self) -> Result<u64, VtdError> {
        if self.pool_next >= self.pool_end {
            return Err(VtdError::PoolExhausted);
        }
        let page = self.pool_next;
        self.pool_next += PAGE;
        // SAFETY: `page` is a pool page (carve-out, TSM memory, identity-mapped read-write
        // for ring 0 only) nothing uses yet: the cursor only moves forward.
        unsafe { core::ptr::write_bytes(page as *mut u8, 0, PAGE as usize) };
        Ok(page)
    }

    /// The host domain's entry for `pa` in its PDPT (`shift` 30) or PD (`shift` 21), with the
    /// tables above it created. Boot only ([`Vtd::build_tables`]).
    // Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
    #[inline]
    fn host_entry_creating(&mut self, pa: u64, shift: u32) -> Result<u64, VtdError> {
        let mut table = self.host_root;
        for above in [39u32, 30].into_iter().filter(|&above| above > shift) {
            let e = table + ((pa >> above) & (ENTRIES - 1)) * 8;
            // SAFETY: `table` is a zeroed page of the VT-d pool (TSM memory, identity-mapped
            // read-write for ring 0), `e` an entry in it; boot builds the tables before the
            // state is published.
            let value = unsafe { (e as *const u64).read_volatile() };
            table = if value & (SL_R | SL_W) != 0 {
                value & ADDR_MASK
            } else {
                let next = self.alloc()?;
                // SAFETY: as above.
                unsafe { (e as *mut u64).write_volatile(next | SL_R | SL_W) };
                next
            };
        }
        Ok(table + ((pa >> shift) & (ENTRIES - 1)) * 8)
    }

    /// The host domain's PD entry for `pa`, `NotHostDram` outside DRAM. Found without a walk:
    /// the PDs are consecutive from `host_pds` (a walk from the root read two more tables on
    /// every (un)delegate).
    fn host_pd_entry(&self, pa: u64) -> Result<u64, VtdError> {
        // The one range check of an (un)delegate here: the entry's address is computed, so the
        // HAL's own memory safety needs `pa` in DRAM whatever the caller checked. `pa - base`
        // below `size` is that (below `base` the difference wraps to above `size`; `base +
        // size` does not overflow: boot refuses such a DRAM in `pool_pages`).
        if pa.wrapping_sub(self.dram.base.0) >= self.dram.size {
            return Err(VtdError::NotHostDram);
        }
        // The first 2 MiB index of DRAM's first GiB, which `host_pds` starts with; `pa` is in
        // DRAM, so its own index is not below it, and boot made a PD entry for every 2 MiB of
        // DRAM from there: neither the difference nor the sum wraps (unchecked, two branches
        // fewer per (un)delegate).
        let first = (self.dram.base.0 >> 21) & !(ENTRIES - 1);
        Ok(self
            .host_pds
            .wrapping_add((pa >> 21).wrapping_sub(first).wrapping_mul(8)))
    }

    /// The root table with bus 0's context table, every context entry in the host domain, and
    /// the host domain's identity map of host DRAM; then the lines back to memory. The split
    /// tables are the last pages of the pool.
    // Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
    #[inline]
    fn build_tables(&mut self) -> Result<(), VtdError> {
        let first = self.pool_next;
        let splits = self
            .pool_end
            .checked_sub(SPLIT_TABLES as u64 * PAGE)
            .filter(|&l| l >= self.pool_next)
            .ok_or(VtdError::PoolExhausted)?;
        self.pool_end = splits;
        self.splits = SplitPool::new(splits);
        self.root = self.alloc()?;
        self.context = self.alloc()?;
        self.host_root = self.alloc()?;
        // SAFETY: `root` is a zeroed pool page; entry 0 (bus 0) is its first 16 bytes.
        unsafe { (self.root as *mut u64).write_volatile(self.context | ENTRY_P) };
        let (lo, hi) = self.context_value(self.host_root, 0);
        for devfn in 0..256 {
            let e = self.context + devfn * 16;
            // SAFETY: `context` is a zeroed pool page of 256 16-byte entries; `devfn` < 256.
            unsafe {
                ((e + 8) as *mut u64).write_volatile(hi);
                (e as *mut u64).write_volatile(lo);
            }
        }
        let (start, end) = (self.dram.base.0, self.dram.base.0 + self.dram.size);
        let (tsm_start, tsm_end) = (self.tsm.base.0, self.tsm.base.0 + self.tsm.size);
        // The PDPTs first, then the PDs in address order, so that the PDs are consecutive pool
        // pages (`host_pd_entry`).
        let mut at = start & !((1 << 39) - 1);
        while at < end {
            self.host_entry_creating(at, 30)?;
            at += 1 << 39;
        }
        self.host_pds = self.pool_next;
        let mut at = start & !((1 << 30) - 1);
        while at < end {
            self.host_entry_creating(at, 21)?;
            at += 1 << 30;
        }
        let mut region = start & !(LEAF_TABLE_SPAN - 1);
        while region < end {
            let pde = self.host_pd_entry(region.max(start))?;
            let region_end = region + LEAF_TABLE_SPAN;
            let all_host = region >= start
                && region_end <= end
                && (region_end <= tsm_start || region >= tsm_end);
            if all_host {
                // SAFETY: `pde` is an entry of a PD in the pool (see `host_pd_entry`).
                unsafe { (pde as *mut u64).write_volatile(region | SL_R | SL_W | SL_PS) };
                region = region_end;
                continue;
            }
            let table = self.alloc()?;
            for i in 0..ENTRIES {
                let pa = region + i * PAGE;
                let host = pa >= start && pa < end && (pa < tsm_start || pa >= tsm_end);
                let leaf = if host { pa | SL_R | SL_W } else { 0 };
                // SAFETY: `table` is a zeroed pool page, `i` < 512.
                unsafe { ((table + i * 8) as *mut u64).write_volatile(leaf) };
            }
            // SAFETY: as above.
            unsafe { (pde as *mut u64).write_volatile(table | SL_R | SL_W) };
            region = region_end;
        }
        self.flush(first, self.pool_next - first);
        Ok(())
    }

    /// A context entry (low, high quadwords) for second-level tables at `root` under `tag`.
    fn context_value(&self, root: u64, tag: u16) -> (u64, u64) {
        let did = u64::from(tag) + u64::from(self.did_base);
        (root | ENTRY_P, CONTEXT_AW_48 | (did << 8))
    }

    /// Points the unit at the root table, drops whatever it cached before, and turns
    /// translation on; fault interrupts stay masked (the TSM polls), stale records are logged.
    // Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
    #[inline]
    fn enable(&self) -> Result<(), VtdError> {
        if self.read32(GSTS) & TE != 0 {
            defmt::warn!("VT-d: firmware left translation on; the TSM's tables replace its own");
        }
        if self.read32(GSTS) & QIE != 0 {
            // Register-based invalidation is refused while queued invalidation is on.
            self.global_command(|keep| keep & !QIE, |status| status & QIE == 0)?;
        }
        self.write32(FECTL, FECTL_IM);
        self.drain(usize::MAX, &mut |f, reason| {
            defmt::warn!(
                "VT-d: a fault recorded before the TSM took over: requester {=u16:#06x} iova {=u64:#x} reason {=u8:#x}",
                f.stream.rid,
                f.iova,
                reason
            );
        });
        self.check_fault_status();
        self.write64(RTADDR, self.root);
        self.global_command(|keep| keep | SRTP, |status| status & SRTP != 0)?;
        self.invalidate_context(None)?;
        self.invalidate_iotlb(None)?;
        self.global_command(|keep| keep | TE, |status| status & TE != 0)?;
        if self.read32(PMEN) & PMEN_EPM != 0 {
            // Protected memory regions would block DMA the host domain allows; translation
            // now does the protecting.
            self.write32(PMEN, 0);
            self.poll(PMEN, |v| v.read32(PMEN) & PMEN_PRS == 0)?;
        }
        Ok(())
    }

    /// Clears (`present` false) or restores the host domain's leaf for the host granule at
    /// `pa` (splitting its 2 MiB page first), with the invalidation or flush the change needs,
    /// complete on return. On an error the domain maps what it mapped before.
    ///
    /// The core calls with a granule it has locked in its granule table in the state the call
    /// needs (aligned DRAM, never the TSM's: those are RESERVED), so alignment, DRAM and TSM
    /// memory are not checked again in full: `pa`'s granule is used (nothing else reaches a
    /// leaf), [`Self::host_pd_entry`] keeps `pa` in DRAM for its own arithmetic, and TSM memory
    /// is refused where the domain could hold it (the three checks were ~20 of this function's
    /// ~100 instructions on every (un)delegate, read off the disassembly).
    // Inline into `host_unmap` and `host_map`, each called once: out of line its result went
    // through the caller's stack and the call kept more registers, ~20 instructions of every
    // (un)delegate (measured; `.text` +320 bytes).
    #[inline(always)]
    fn set_host_leaf(&mut self, pa: Pa, present: bool) -> Result<(), VtdError> {
        let pa = pa.granule_base();
        let pde = self.host_pd_entry(pa.0)?;
        // SAFETY: `pde` is an entry of a PD of the host domain (VT-d pool, TSM memory); the
        // VTD lock is held.
        let table = unsafe { (pde as *const u64).read_volatile() };
        if table & SL_PS != 0 {
            return if present {
                Ok(())
            } else {
                self.split_taking(pde, table, pa)
            };
        }
        let split = self.splits.index(table & ADDR_MASK);
        let e = ((table & ADDR_MASK) + ((pa.0 >> 12) & (ENTRIES - 1)) * 8) as *mut u64;
        let new = if present {
            // Only a boot-made level-1 table can hold TSM memory (its leaves there are 0): a
            // split table's block was a 2 MiB host page, all host DRAM. Clearing a TSM leaf
            // changes nothing, so only a map needs the test.
            if split.is_none() && self.tsm.contains(pa, GRANULE_SIZE) {
                return Err(VtdError::NotHostDram);
            }
            pa.0 | SL_R | SL_W
        } else {
            0
        };
        // SAFETY: `e` is an entry of the level-1 table the PD entry points at (a pool page, or
        // a split table: TSM memory); the VTD lock is held.
        let old = unsafe { e.read_volatile() };
        if old == new {
            return Ok(());
        }
        // SAFETY: as above; one aligned 8-byte store, so the unit's walk sees the old or the
        // new leaf.
        unsafe { e.write_volatile(new) };
        self.flush_entry(e as u64);
        let done = if present && self.cap & CAP_CM == 0 {
            self.flush_write_buffer()
        } else {
            self.invalidate_iotlb_page(self.did_base, pa.0)
        };
        match done {
            Ok(()) => {
                if let Some(i) = split {
                    self.splits.count(i, !present);
                }
            }
            Err(_) => {
                // SAFETY: as above.
                unsafe { e.write_volatile(old) };
                self.flush_entry(e as u64);
            }
        }
        done
    }

    /// Replaces the 2 MiB page at PD entry `pde` (value `large`) by a split table with the same
    /// translations but for `pa`'s, which it leaves out: one aligned store (the unit's walk sees
    /// the page or the table), then a domain-selective invalidation that drops the page from the
    /// IOTLB and the paging-structure caches.
    // Out of line: once per 2 MiB block, and inlined its registers made every granule's
    // (un)delegate save and restore more of them.
    #[inline(never)]
    fn split_taking(&mut self, pde: u64, large: u64, pa: Pa) -> Result<(), VtdError> {
        let i = self.free_split_table()?;
        let table = self.splits.table(i);
        let base = large & ADDR_MASK & !(LEAF_TABLE_SPAN - 1);
        for j in 0..ENTRIES {
            let at = base + j * PAGE;
            let leaf = if at == pa.0 { 0 } else { at | SL_R | SL_W };
            // SAFETY: `table` is a split table no PD entry points at (`free_split_table`),
            // `j` < 512.
            unsafe { ((table + j * 8) as *mut u64).write_volatile(leaf) };
        }
        self.flush(table, PAGE);
        // SAFETY: `pde` is an entry of a PD of the host domain; the VTD lock is held.
        unsafe { (pde as *mut u64).write_volatile(table | SL_R | SL_W) };
        self.flush_entry(pde);
        if let Err(e) = self.invalidate_iotlb(Some(self.did_base)) {
            // SAFETY: as above: the 2 MiB page back.
            unsafe { (pde as *mut u64).write_volatile(large) };
            self.flush_entry(pde);
            // The unit may have cached the entry that pointed at the table.
            self.splits.retire(i);
            return Err(e);
        }
        self.splits.claim(i, base);
        Ok(())
    }

    /// A split table no block uses: a free one, or one whose block holds no taken granule any
    /// more, folded back into a 2 MiB page first, with the invalidation that makes the unit
    /// forget the table before it is reused.
    fn free_split_table(&mut self) -> Result<usize, VtdError> {
        let (index, block) = match self.splits.pick().ok_or(VtdError::NoSplitTable)? {
            Pick::Free(i) => return Ok(i),
            Pick::Fold { index, block } => (index, block),
        };
        let pde = self.host_pd_entry(block.max(self.dram.base.0))?;
        // SAFETY: `pde` is an entry of a PD of the host domain; the VTD lock is held. The 2 MiB
        // page translates every address of the block as the table did.
        unsafe { (pde as *mut u64).write_volatile(block | SL_R | SL_W | SL_PS) };
        self.flush_entry(pde);
        self.invalidate_iotlb(Some(self.did_base))?;
        self.splits.release(index);
        Ok(index)
    }

    /// Points bus 0's `devfn` at `new` (second-level root, tag), or at nothing, following VT-d
    /// §6.5.3.3: a present entry is cleared and its caches invalidated first, then the new one
    /// written and made visible (invalidated under caching mode, else the write buffer).
    fn set_context(&self, devfn: u16, new: Option<(u64, u16)>) -> Result<(), VtdError> {
        let e = self.context + u64::from(devfn) * 16;
        let sid = devfn;
        // SAFETY: `context` is bus 0's context table (VT-d pool, TSM memory, 256 entries of
        // 16 bytes), `devfn` < 256; the VTD lock is held.
        let (old_lo, old_hi) = unsafe {
            (
                (e as *const u64).read_volatile(),
                ((e + 8) as *const u64).read_volatile(),
            )
        };
        let wanted = new.map(|(root, tag)| self.context_value(root, tag));
        if old_lo & ENTRY_P != 0 {
            if wanted == Some((old_lo, old_hi)) {
                return Ok(());
            }
            let old_did = ((old_hi >> 8) & 0xFFFF) as u16;
            // SAFETY: as above.
            unsafe { (e as *mut u64).write_volatile(0) };
            self.flush(e, 16);
            self.invalidate_context(Some((sid, old_did)))?;
            self.invalidate_iotlb(Some(old_did))?;
        }
        let Some((lo, hi)) = wanted else {
            return Ok(());
        };
        // SAFETY: as above; the entry is not present, so the unit uses neither half until the
        // low quadword (with P) is written after the high one.
        unsafe {
            ((e + 8) as *mut u64).write_volatile(hi);
            (e as *mut u64).write_volatile(lo);
        }
        self.flush(e, 16);
        if self.cap & CAP_CM != 0 {
            // Caching mode caches not-present entries under domain 0.
            self.invalidate_context(Some((sid, 0)))?;
            self.invalidate_iotlb(Some(((hi >> 8) & 0xFFFF) as u16))
        } else {
            self.flush_write_buffer()
        }
    }

    /// Whether another requester's context entry uses `tag`'s domain ID with tables other than
    /// `root` (one domain ID must name one set of tables, or the IOTLB mixes them up).
    fn tag_taken(&self, devfn: u16, root: u64, tag: u16) -> bool {
        let (lo, hi) = self.context_value(root, tag);
        (0..256u64).filter(|&d| d != u64::from(devfn)).any(|d| {
            let e = self.context + d * 16;
            // SAFETY: as in `set_context`.
            let (l, h) = unsafe {
                (
                    (e as *const u64).read_volatile(),
                    ((e + 8) as *const u64).read_volatile(),
                )
            };
            l & ENTRY_P != 0 && (h >> 8) & 0xFFFF == (hi >> 8) & 0xFFFF && l != lo
        })
    }

    /// Reads an entry of a second-level table at `pa` (DRAM only: the host domain's in TSM
    /// memory, the core's in granules it owns), `None` outside DRAM.
    fn read_table(&self, pa: u64) -> Option<u64> {
        if !self.dram.contains(Pa(pa), 8) || !pa.is_multiple_of(8) {
            return None;
        }
        let mut value = 0u64;
        // SAFETY: `pa` is 8 aligned bytes of DRAM, which the TSM's tables identity-map for
        // ring 0; `copy` allows a host page too (SMAP), in case the core has given the table
        // back by now. A plain read of memory the TSM does not write here.
        unsafe { super::platform::copy((&raw mut value).cast::<u8>(), pa as *const u8, 8) };
        Some(value)
    }

    /// Why a read or write (VT-d reasons 5 and 6) was refused: the second-level tables have no
    /// present bit, so an address with no mapping and a mapping without the right give the
    /// same reason. The walk of the requester's tables tells them apart (as they are now:
    /// the core may have changed them since the fault).
    fn classify(&self, sid: u16, iova: u64) -> DmaFaultKind {
        if sid >> 8 != 0 {
            return DmaFaultKind::Translation;
        }
        let e = self.context + u64::from(sid) * 16;
        // SAFETY: as in `set_context` (`sid` < 256).
        let lo = unsafe { (e as *const u64).read_volatile() };
        if lo & ENTRY_P == 0 {
            return DmaFaultKind::Translation;
        }
        let mut table = lo & ADDR_MASK;
        for level in (0..4u32).rev() {
            let index = (iova >> (12 + 9 * level)) & (ENTRIES - 1);
            let Some(entry) = self.read_table(table + index * 8) else {
                return DmaFaultKind::Other;
            };
            if entry & (SL_R | SL_W) == 0 {
                return DmaFaultKind::Translation;
            }
            if level == 0 || ((level == 1 || level == 2) && entry & SL_PS != 0) {
                break;
            }
            table = entry & ADDR_MASK;
        }
        DmaFaultKind::Permission
    }

    /// Reads and clears up to `limit` pending fault records (from the index the unit gives),
    /// handing each to `sink` with its raw reason; true if records are left.
    fn drain(&self, limit: usize, sink: &mut dyn FnMut(DmaFault, u8)) -> bool {
        let status = self.read32(FSTS);
        if status & FSTS_PPF == 0 {
            return false;
        }
        let first = u64::from((status >> 8) & 0xFF);
        let mut taken = 0;
        for i in 0..self.fault_count {
            let record = self.fault_records + ((first + i) % self.fault_count) * 16;
            let high = self.read64(record + 8);
            if high & FRCD_F == 0 {
                continue;
            }
            if taken == limit {
                return true;
            }
            taken += 1;
            let low = self.read64(record);
            // F is write-1-to-clear; the record's other bits are read-only.
            self.write64(record + 8, FRCD_F);
            let reason = ((high >> 32) & 0xFF) as u8;
            let sid = (high & 0xFFFF) as u16;
            let iova = low & !(PAGE - 1);
            let kind = match reason {
                1 | 2 => DmaFaultKind::Translation,
                4 => DmaFaultKind::AddressSize,
                5 | 6 => self.classify(sid, iova),
                _ => DmaFaultKind::Other,
            };
            let fault = DmaFault {
                stream: DmaStream {
                    segment: 0,
                    rid: sid,
                },
                iova,
                write: high & FRCD_READ == 0,
                kind,
            };
            sink(fault, reason);
        }
        false
    }

    /// Reports and clears the fault status's overflow and error bits (write-1-to-clear; PPF
    /// follows the records).
    fn check_fault_status(&self) {
        let status = self.read32(FSTS);
        if status & FSTS_PFO != 0 {
            defmt::warn!("VT-d: fault records overflowed; faults since the last drain were lost");
        }
        if status & FSTS_OTHER_ERRORS != 0 {
            defmt::error!(
                "VT-d: fault status {=u32:#x} reports errors of features the TSM does not use",
                status
            );
        }
        let clear = status & (FSTS_PFO | FSTS_OTHER_ERRORS);
        if clear != 0 {
            self.write32(FSTS, clear);
        }
    }
}

/// Whether VT-d gates DMA (translation on).
pub fn present() -> bool {
    PRESENT.load(Ordering::Acquire)
}

/// Takes the host granule at `pa` out of the host domain; devices can no longer reach it when
/// this returns (IOTLB invalidated, in-flight DMA drained). Nothing to do without VT-d.
pub fn host_unmap(pa: Pa) -> Result<(), VtdError> {
    VTD.lock()
        .as_mut()
        .map_or(Ok(()), |v| v.set_host_leaf(pa, false))
}

/// Puts the host granule at `pa` back into the host domain.
pub fn host_map(pa: Pa) -> Result<(), VtdError> {
    VTD.lock()
        .as_mut()
        .map_or(Ok(()), |v| v.set_host_leaf(pa, true))
}

/// Points `stream` at `domain` (`Iommu::attach`). Only bus 0 of segment 0 has a context table
/// (q35's root bus: where `edu` and every default device sit); a requester elsewhere has no
/// root entry, so the unit faults all its DMA whatever the domain — what
/// [`DmaDomain::Blocked`] does and never more than the others allow — and its attach is
/// accepted with nothing written (docs/design.md "The platform IOMMU", streams).
pub fn attach(stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError> {
    let guard = VTD.lock();
    let v = guard.as_ref().ok_or(IommuError::Absent)?;
    if let DmaDomain::Table { root, tag } = domain {
        let in_dram = v.dram.contains(root, GRANULE_SIZE) && !v.tsm.contains(root, 1);
        if tag == 0 || tag > DMA_MAX_TAG || !root.is_granule_aligned() || !in_dram {
            return Err(IommuError::BadDomain);
        }
    }
    if stream.segment != 0 || stream.rid >> 8 != 0 {
        return Ok(());
    }
    let devfn = stream.rid;
    let new = match domain {
        DmaDomain::Host => Some((v.host_root, 0)),
        DmaDomain::Blocked => None,
        DmaDomain::Table { root, tag } => {
            if v.tag_taken(devfn, root.0, tag) {
                return Err(IommuError::BadDomain);
            }
            v.flush_core_tables();
            Some((root.0, tag))
        }
    };
    v.set_context(devfn, new).map_err(|e| {
        defmt::error!(
            "VT-d: pointing requester {=u16:#06x} at a new domain failed: {}; its DMA stays blocked",
            stream.rid,
            e
        );
        // The unit stopped answering: for this stream the TSM no longer drives an IOMMU.
        IommuError::Absent
    })
}

/// Drops every cached translation of `tag`'s domain (`Iommu::invalidate`).
pub fn invalidate(tag: u16) {
    let guard = VTD.lock();
    let Some(v) = guard.as_ref() else {
        return;
    };
    if tag > DMA_MAX_TAG {
        defmt::error!("VT-d: invalidation of tag {=u16}, above the largest", tag);
        return;
    }
    v.flush_core_tables();
    if let Err(e) = v.invalidate_iotlb(Some(tag + v.did_base)) {
        defmt::error!("VT-d: IOTLB invalidation of tag {=u16} failed: {}", tag, e);
    }
}

/// Hands every recorded fault to `sink` (`Iommu::drain_faults`), logging each. The records are
/// read under the lock in batches and handed over outside it, so `sink` may use the platform.
pub fn drain_faults(sink: &mut dyn FnMut(DmaFault)) {
    const BATCH: usize = 8;
    loop {
        let mut batch = [None; BATCH];
        let mut n = 0;
        let more = {
            let guard = VTD.lock();
            let Some(v) = guard.as_ref() else {
                return;
            };
            let more = v.drain(BATCH, &mut |f, reason| {
                log_fault(&f, reason);
                if let Some(slot) = batch.get_mut(n) {
                    *slot = Some(f);
                    n += 1;
                }
            });
            if !more {
                v.check_fault_status();
            }
            more
        };
        for f in batch.iter().flatten() {
            sink(*f);
        }
        if !more {
            return;
        }
    }
}

/// The VT-d name of fault reason `reason` (VT-d §7.1.3, legacy mode).
fn reason_name(reason: u8) -> &'static str {
    match reason {
        1 => "root entry not present",
        2 => "context entry not present",
        3 => "context entry invalid",
        4 => "address above the domain's width",
        5 => "write not allowed",
        6 => "read not allowed",
        7 => "second-level entry unreadable",
        8 => "root table unreadable",
        9 => "context table unreadable",
        0xA => "root entry reserved bits",
        0xB => "context entry reserved bits",
        0xC => "second-level entry reserved bits",
        0xD => "translation type blocked",
        _ => "other",
    }
}

fn log_fault(f: &DmaFault, reason: u8) {
    let (bus, dev, func) = (
        f.stream.rid >> 8,
        (f.stream.rid >> 3) & 0x1F,
        f.stream.rid & 7,
    );
    let access = if f.write { "write" } else { "read" };
    match f.kind {
        DmaFaultKind::Translation | DmaFaultKind::Permission | DmaFaultKind::AddressSize => {
            defmt::info!(
                "VT-d: DMA {=str} by {=u16:02x}:{=u16:02x}.{=u16} at {=u64:#x} blocked: {=str}",
                access,
                bus,
                dev,
                func,
                f.iova,
                reason_name(reason)
            )
        }
        DmaFaultKind::Other => defmt::error!(
            "VT-d: DMA {=str} by {=u16:02x}:{=u16:02x}.{=u16} at {=u64:#x} failed on the TSM's configuration: reason {=u8:#x} ({=str})",
            access,
            bus,
            dev,
            func,
            f.iova,
            reason,
            reason_name(reason)
        ),
    }
}
