//! The host's stage-2 translation: an identity map of DRAM minus the TSM's memory, plus the
//! PCIe windows of the host's devices as device memory.
//!
//! DRAM is mapped with 2 MiB blocks, so the tables cost a few pages whatever the DRAM size.
//! Taking a granule from the host needs a 4 KiB level-3 table under its block: the block is
//! *split* into one from a pool of `SPLIT_TABLES` tables (`crate::split_pool`) in the carve-out, which keeps its
//! table while any of its granules is taken. A block whose granules are all back stays split
//! (giving a granule back is one descriptor store) until the pool runs dry: then a take folds
//! such a block back into a 2 MiB block and reuses its table. When every pool table is under a
//! block that still holds a taken granule, the take is refused ([`Stage2Error::NoTables`],
//! GRANULE_DELEGATE's `Capacity`) and nothing changed. The blocks that hold the TSM's own memory
//! get level-3 tables at boot, for good.
//!
//! A split or fold changes a block into a table or back, which the architecture allows only as
//! break-before-make (ARM ARM D8.16): the level-2 entry is cleared, every CPU's TLBs and the
//! SMMU's forget the old translation, then the new entry goes in. A host CPU that touches the
//! block in between takes a stage-2 translation fault; [`host_maps`] tells the fault handler
//! that the access is to be retried (it waits for the split lock, then walks the tables). A
//! device's DMA to the block in that window is aborted by the SMMU (an event, the transfer
//! fails): a window of a few hundred instructions per split or fold, documented in design.md.
//! The only MMIO mapped is what [`HostStage2::map_devices`] adds at boot (for the payload, PCIe
//! configuration space and the BAR window; for a Linux host, all MMIO below DRAM but the TSM's
//! own devices, and the PCIe windows above 4 GiB); the TSM's own devices (its UART, the SMMU)
//! never are.
//!
//! **The CPU's input is 40 bits** (QEMU `virt` with `highmem=on` puts its 64-bit PCIe window at
//! 512 GiB, up to 1 TiB), walked from level 1 as with 39 bits: the level-1 table is two
//! concatenated 4 KiB tables (VTCR_EL2.T0SZ = 24, SL0 = 1; ARM ARM D8.2.6), so a walk costs no
//! extra level. Windows of whole GiBs are level-1 blocks (512 GiB of BARs cost no table).
//!
//! **The host's DMA domain** (docs/design.md "The platform IOMMU") is a second level-1 root
//! over the same level-2 and level-3 tables, with the DRAM entries only: the SMMU's host-domain
//! streams walk it, so the devices' view of memory is the CPU's view of DRAM by construction
//! (a granule taken from the host is gone for both with one descriptor store), and can never
//! include MMIO, which only the CPU root maps. Its input stays 39 bits, one table: DRAM lies
//! below 2^39 ([`HostStage2::build`] refuses more), and nothing else is ever in it.

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Gpa, Pa};

use spin::Mutex;
use tsm_platform::MmioRefused;

use super::mmu::{Table, pa_size_field};
use super::sysreg::{isb, read_sysreg, write_sysreg};
use super::vmid::Vmid;
use crate::platform::MemRange;
use crate::split_pool::{Pick, SPLIT_TABLES, SplitPool};

const ENTRIES: u64 = 512;
const L1_SHIFT: u32 = 30;
const L2_SHIFT: u32 = 21;
/// The CPU's input (IPA) bits: 40, walk starting at level 1 (VTCR_EL2.SL0 = 1) with
/// [`ROOT_TABLES`] concatenated tables.
const IPA_BITS: u64 = 40;
/// The tables of the CPU's level-1 root, contiguous and aligned to their size.
pub const ROOT_TABLES: usize = 1 << (IPA_BITS - 39);
/// The alignment of the CPU's root (the boot carve-out places [`table_count`]'s tables at it).
pub const ROOT_ALIGN: u64 = (ROOT_TABLES as u64) << GRANULE_SHIFT;
/// The DMA domain's input bits (its root is one table).
const DMA_IPA_BITS: u64 = 39;
/// The least VTCR_EL2.PS (ID_AA64MMFR0_EL1.PARange encoding) that holds [`IPA_BITS`]: 40 bits.
pub const MIN_PA_SIZE_FIELD: u64 = 0b010;
/// VTCR_EL2: T0SZ, SL0 = 1 (level 1), inner/outer WBWA walks, inner shareable, 4 KiB granule,
/// RES1 bit 31. PS is added from the CPU's PA size.
const VTCR_BASE: u64 =
    (64 - IPA_BITS) | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);
/// The host's VMID (TVMs get 1..=255, see `vmid`).
const HOST_VMID: u64 = 0;
/// VTCR_EL2 for TVM address maps (`AddressMapFormat::ArmStage2`): 48-bit IPA (T0SZ = 16),
/// walk starting at level 0 (SL0 = 2), otherwise as the host's.
const VTCR_TVM_BASE: u64 = 16 | (0b10 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);

const VALID_TABLE: u64 = 0b11;
/// A level-3 page: valid, MemAttr = Normal inner/outer write-back (with HCR_EL2.DC the host's
/// own accesses are Normal WB too), S2AP = read/write, inner shareable, access flag set;
/// executable.
const HOST_PAGE: u64 = 0b11 | (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
/// A level-2 block of host DRAM: [`HOST_PAGE`]'s attributes with the block type.
const HOST_BLOCK: u64 = HOST_PAGE & !0b10;
/// Address bits of a level-2 block descriptor.
const BLOCK_ADDR: u64 = TABLE_ADDR & !((1 << L2_SHIFT) - 1);
/// Device memory for the host: MemAttr = Device-nGnRE (stronger than any attribute the host's
/// stage 1 gives, so its accesses stay uncached and unmerged), S2AP = read/write, access flag,
/// XN (no instruction fetch from a device). Add `0b01` for a level-2 block, `0b11` for a page.
const HOST_DEVICE: u64 = (0b0001 << 2) | (0b11 << 6) | (1 << 10) | (0b10 << 53);
const BLOCK: u64 = 0b01;
const PAGE: u64 = 0b11;
const TABLE_ADDR: u64 = 0x0000_FFFF_FFFF_F000;

/// Why a granule's host mapping was not changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage2Error {
    /// The address lies outside every GiB DRAM touches.
    OutOfRange,
    /// The granule is the TSM's own memory, which the host never gets.
    TsmMemory,
    /// Unmap of a granule the host does not have.
    NotMapped,
    /// Map of a granule the host already has.
    AlreadyMapped,
    /// The CPU's physical address size is below [`IPA_BITS`] (VTCR_EL2.PS could not hold it).
    SmallPaSize,
    /// A device window that is not page-aligned, lies above the IPA range, shares a GiB with
    /// DRAM (whose level-2 tables the DMA root shares) or overlaps a mapping already made.
    BadDeviceWindow,
    /// More tables needed than [`device_table_count`] reserved, or (taking a granule) every
    /// split table holds a block with a taken granule.
    NoTables,
}

/// The host-table lock and the split tables' bookkeeping: every change of a level-2 DRAM entry
/// is made under it, and a host fault handler waits on it for a split in progress to end.
static SPLITS: Mutex<SplitPool> = Mutex::new(SplitPool::new(0));

/// What else caches the host's DRAM translations (the SMMU's host domain): told to forget
/// inside each break-before-make and after each granule taken.
pub(crate) trait HostWalkers {
    /// Drops cached translations of the granule at `pa` (and of the block holding it) and
    /// waits until none is used any more.
    fn forget(&self, pa: Pa);
    /// Drops every cached translation of the host domain, and waits likewise.
    fn forget_all(&self);
}

/// The host's stage-2 tables.
pub struct HostStage2 {
    dram: MemRange,
    tsm: MemRange,
    /// The CPU's level-1 root ([`ROOT_TABLES`] concatenated tables): DRAM and the devices
    /// [`HostStage2::map_devices`] added.
    l1: &'static [Table],
    /// The host DMA domain's level-1 table: the DRAM entries of `l1`, nothing else.
    dma_l1: &'static Table,
    /// One level-2 table per GiB DRAM touches, in address order.
    l2: &'static [Table],
    /// The level-3 tables of the blocks that hold TSM memory, then the pool of split tables
    /// (one run of the carve-out, so a table's address says which it is).
    fixed: &'static [Table],
    split: &'static [Table; SPLIT_TABLES],
    /// VTCR_EL2 of a TVM's stage 2 ([`HostStage2::enter_tvm`]): from ID_AA64MMFR0_EL1 once
    /// here, not at every vCPU entry (~4 instructions); secondaries run with the boot CPU's
    /// VTCR_EL2 too (`smp::Shared`).
    tvm_vtcr: u64,
    /// The host's device mappings (set by [`HostStage2::map_devices`]) and what taking single
    /// BAR pages from the host needs; behind a lock so two takes never split one block twice.
    devices: Mutex<DeviceMaps>,
}

/// Spare level-3 tables for splitting 2 MiB device blocks when a single BAR page is taken from
/// the host (private MMIO): each split keeps its table for good (a page given back is put into
/// it again), so this bounds how many 2 MiB blocks of the BAR window can ever hold a TVM's
/// private MMIO.
pub const MMIO_SPLIT_TABLES: usize = 8;

/// The host's device mappings, as [`HostStage2::map_devices`] left them.
struct DeviceMaps {
    /// The window of the host's device BARs: the only MMIO a TVM may get.
    bars: Option<MemRange>,
    /// The tables `map_devices` placed (level 2 and 3), then the split tables, and how many of
    /// the latter are used.
    placed: &'static [Table],
    split: &'static [Table],
    split_used: usize,
}

/// Tables needed to map `dram` with the TSM in `tsm`: the CPU's level-1 root
/// ([`ROOT_TABLES`]) and the DMA domain's, one level-2 table per GiB DRAM touches, a level-3
/// table per 2 MiB block `tsm` touches, and the [`SPLIT_TABLES`] pool.
pub fn table_count(dram: &MemRange, tsm: &MemRange) -> Option<u64> {
    let end = dram.base.0.checked_add(dram.size)?;
    let first_gib = dram.base.0 >> L1_SHIFT;
    let l2 = end.div_ceil(1 << L1_SHIFT).checked_sub(first_gib)?;
    (ROOT_TABLES as u64 + 1)
        .checked_add(l2)?
        .checked_add(tsm_blocks(tsm)?)?
        .checked_add(SPLIT_TABLES as u64)
}

/// The 2 MiB blocks `tsm` touches.
fn tsm_blocks(tsm: &MemRange) -> Option<u64> {
    let last = tsm.base.0.checked_add(tsm.size)?.checked_sub(1)?;
    Some((last >> L2_SHIFT) - (tsm.base.0 >> L2_SHIFT) + 1)
}

/// Tables [`HostStage2::map_devices`] may need for `windows`, at most: a level-2 table for
/// each GiB an end that is not GiB aligned lies in (whole GiBs are level-1 blocks), and a
/// level-3 table for each end that is not 2 MiB aligned.
pub fn device_table_count(windows: &[MemRange]) -> Option<u64> {
    windows.iter().try_fold(0u64, |n, w| {
        let end = w.base.0.checked_add(w.size)?;
        let partial = |at: u64| u64::from(!at.is_multiple_of(1 << L1_SHIFT));
        let one_gib = w.base.0 >> L1_SHIFT == end.checked_sub(1)? >> L1_SHIFT;
        let l2 = if one_gib {
            1
        } else {
            partial(w.base.0) + partial(end)
        };
        n.checked_add(l2)?.checked_add(2)
    })
}

impl HostStage2 {
    /// Builds the host's map of `dram` in `tables` (`table_count(dram, tsm)` zeroed tables of
    /// the carve-out, the first at a multiple of [`ROOT_ALIGN`]) and installs it
    /// (VTTBR_EL2/VTCR_EL2). `dram` is 2 MiB aligned and lies below 2^39; `tsm` is inside it.
    /// Runs once, on the boot CPU, before any host code.
    pub(crate) fn build(
        dram: MemRange,
        tsm: MemRange,
        tables: &'static [Table],
    ) -> Result<Self, Stage2Error> {
        if pa_size_field() < MIN_PA_SIZE_FIELD {
            return Err(Stage2Error::SmallPaSize);
        }
        Self::build_tables(dram, tsm, tables).ok_or(Stage2Error::NoTables)
    }

    fn build_tables(dram: MemRange, tsm: MemRange, tables: &'static [Table]) -> Option<Self> {
        let (l1, rest) = tables.split_at_checked(ROOT_TABLES)?;
        let (dma_l1, rest) = rest.split_first()?;
        if !l1.first()?.addr().is_multiple_of(ROOT_ALIGN) {
            return None;
        }
        let first_gib = dram.base.0 >> L1_SHIFT;
        let end = dram.base.0.checked_add(dram.size)?;
        if end > 1 << DMA_IPA_BITS {
            return None;
        }
        let n_l2 = usize::try_from(end.div_ceil(1 << L1_SHIFT).checked_sub(first_gib)?).ok()?;
        let (l2, rest) = rest.split_at_checked(n_l2)?;
        let (fixed, split) = rest.split_at_checked(usize::try_from(tsm_blocks(&tsm)?).ok()?)?;
        let split: &'static [Table; SPLIT_TABLES] = split.try_into().ok()?;
        *SPLITS.lock() = SplitPool::new(split.first()?.addr());
        let mut next_fixed = fixed.iter();
        let mut block = dram.base.0;
        while block < end {
            let l2t = l2.get(((block >> L1_SHIFT) - first_gib) as usize)?;
            let slot = &l2t.0[((block >> L2_SHIFT) % ENTRIES) as usize];
            if tsm.base.0 < block + (1 << L2_SHIFT) && block < tsm.base.0 + tsm.size {
                let l3t = next_fixed.next()?;
                for (j, e) in l3t.0.iter().enumerate() {
                    let pa = block + ((j as u64) << GRANULE_SHIFT);
                    let tsm_owned = tsm.contains(Pa(pa), GRANULE_SIZE);
                    e.store(
                        if tsm_owned { 0 } else { pa | HOST_PAGE },
                        Ordering::Relaxed,
                    );
                }
                slot.store(l3t.addr() | VALID_TABLE, Ordering::Relaxed);
            } else {
                slot.store(block | HOST_BLOCK, Ordering::Relaxed);
            }
            block += 1 << L2_SHIFT;
        }
        for (i, l2t) in l2.iter().enumerate() {
            let gib = first_gib + i as u64;
            for slot in [root_entry(l1, gib)?, dma_l1.0.get(gib as usize)?] {
                slot.store(l2t.0.as_ptr() as u64 | VALID_TABLE, Ordering::Relaxed);
            }
        }
        let vtcr = VTCR_BASE | (pa_size_field() << 16);
        // SAFETY: the tables above are complete; VTTBR/VTCR only take effect for EL1/EL0
        // (HCR_EL2.VM), which no code uses yet. The barrier publishes the tables to the walker.
        unsafe {
            core::arch::asm!("dsb ish", options(nostack, preserves_flags));
            write_sysreg!("vtcr_el2", vtcr);
            write_sysreg!("vttbr_el2", (HOST_VMID << 48) | l1.first()?.addr());
        }
        isb();
        Some(HostStage2 {
            dram,
            tsm,
            l1,
            dma_l1,
            l2,
            fixed,
            split,
            tvm_vtcr: VTCR_TVM_BASE | (pa_size_field() << 16),
            devices: Mutex::new(DeviceMaps {
                bars: None,
                placed: &[],
                split: &[],
                split_used: 0,
            }),
        })
    }

    /// The host DMA domain's root: a level-1 table for a 39-bit input ([`DMA_IPA_BITS`]), walked
    /// from level 1 (the SMMU's host-domain STEs point at it).
    pub(crate) fn dma_root(&self) -> Pa {
        Pa(self.dma_l1.addr())
    }

    /// Maps `windows` (devices' MMIO, outside every GiB DRAM touches) for the host as device
    /// memory, identity, with 2 MiB blocks where they fit and pages elsewhere; level-2 and
    /// level-3 tables come from `tables` ([`device_table_count`] of them, zeroed). Boot only,
    /// before any host code runs; the DMA root never sees them.
    /// `bars` (one of `windows`) is where the host's devices' BARs live, whose pages a TVM may
    /// get as private MMIO; `split` ([`MMIO_SPLIT_TABLES`] zeroed tables) is for taking them.
    pub(crate) fn map_devices(
        &self,
        windows: &[MemRange],
        bars: Option<MemRange>,
        tables: &'static [Table],
        split: &'static [Table],
    ) -> Result<(), Stage2Error> {
        let mut pool = Pool { tables, used: 0 };
        for w in windows {
            self.map_device(*w, &mut pool)?;
        }
        *self.devices.lock() = DeviceMaps {
            bars,
            placed: tables.get(..pool.used).unwrap_or(&[]),
            split,
            split_used: 0,
        };
        // SAFETY: a barrier: the descriptors are visible to the walkers before the host runs.
        unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
        Ok(())
    }

    /// The level-3 descriptor of the BAR page at `pa`, splitting its 2 MiB block first if it
    /// is one. Every table on the way is one `map_devices` placed or a split table: a pointer
    /// is looked up among them, never followed blindly.
    fn bar_page(&self, d: &mut DeviceMaps, pa: Pa) -> Result<&'static AtomicU64, MmioRefused> {
        let bars = d.bars.ok_or(MmioRefused::NotDeviceMemory)?;
        if !pa.is_granule_aligned() || !bars.contains(pa, GRANULE_SIZE) {
            return Err(MmioRefused::NotDeviceMemory);
        }
        let find = |d: &DeviceMaps, entry: u64| {
            d.placed
                .iter()
                .chain(d.split.get(..d.split_used).unwrap_or(&[]))
                .find(|t| entry & 0b11 == VALID_TABLE && t.addr() == entry & TABLE_ADDR)
        };
        let l1e = root_entry(self.l1, pa.0 >> L1_SHIFT).ok_or(MmioRefused::NotDeviceMemory)?;
        let l2 = find(d, l1e.load(Ordering::Relaxed)).ok_or(MmioRefused::NotDeviceMemory)?;
        let l2e = &l2.0[((pa.0 >> L2_SHIFT) % ENTRIES) as usize];
        let block = l2e.load(Ordering::Relaxed);
        if block & 0b11 == BLOCK {
            let t = d.split.get(d.split_used).ok_or(MmioRefused::NoTables)?;
            let base = block & TABLE_ADDR & !((1 << L2_SHIFT) - 1);
            for (i, e) in t.0.iter().enumerate() {
                e.store(
                    (base + ((i as u64) << GRANULE_SHIFT)) | HOST_DEVICE | PAGE,
                    Ordering::Relaxed,
                );
            }
            // Break before make (ARM ARM D8.16): the block goes, every TLB forgets it, then the
            // table with the same translations comes. A host access in between takes a stage-2
            // abort; the host loses nothing it could not lose to a TVM anyway.
            l2e.store(0, Ordering::Relaxed);
            flush_host_ipa(Pa(base));
            l2e.store(t.addr() | VALID_TABLE, Ordering::Release);
            d.split_used += 1;
        }
        let l3 = find(d, l2e.load(Ordering::Relaxed)).ok_or(MmioRefused::NotDeviceMemory)?;
        Ok(&l3.0[((pa.0 >> GRANULE_SHIFT) % ENTRIES) as usize])
    }

    /// Takes the BAR page at `pa` from the host: when this returns, no CPU reaches it through
    /// a host translation.
    pub fn take_mmio(&self, pa: Pa) -> Result<(), MmioRefused> {
        let mut d = self.devices.lock();
        let e = self.bar_page(&mut d, pa)?;
        e.compare_exchange(
            pa.0 | HOST_DEVICE | PAGE,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .map_err(|_| MmioRefused::Taken)?;
        flush_host_ipa(pa);
        Ok(())
    }

    /// Gives a BAR page [`HostStage2::take_mmio`] took back to the host.
    pub fn give_mmio(&self, pa: Pa) -> Result<(), MmioRefused> {
        let mut d = self.devices.lock();
        let e = self.bar_page(&mut d, pa)?;
        e.compare_exchange(
            0,
            pa.0 | HOST_DEVICE | PAGE,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .map_err(|_| MmioRefused::NotTaken)?;
        // Invalid to valid needs no TLB invalidation, as in `map_to_host`: the Arm ARM lets no
        // TLB hold an entry that gives a Translation fault, and `take_mmio` invalidated the
        // page's old entry when it cleared it (the level-3 table above it stays). The TVM's
        // entry was cleared and invalidated, to completion, before the core gives the page
        // back (docs/design.md, private MMIO). Only the descriptor must reach the walkers.
        make_visible();
        Ok(())
    }

    fn map_device(&self, window: MemRange, pool: &mut Pool) -> Result<(), Stage2Error> {
        const MIB2: u64 = 1 << L2_SHIFT;
        let (base, size) = (window.base.0, window.size);
        let end = base.checked_add(size).ok_or(Stage2Error::BadDeviceWindow)?;
        let dram_end = self.dram.base.0 + self.dram.size;
        let dram_gibs = (self.dram.base.0 >> L1_SHIFT)..dram_end.div_ceil(1 << L1_SHIFT);
        if !base.is_multiple_of(GRANULE_SIZE) || !size.is_multiple_of(GRANULE_SIZE) || size == 0 {
            return Err(Stage2Error::BadDeviceWindow);
        }
        if end > 1 << IPA_BITS
            || ((base >> L1_SHIFT)..=((end - 1) >> L1_SHIFT)).any(|g| dram_gibs.contains(&g))
        {
            return Err(Stage2Error::BadDeviceWindow);
        }
        const GIB: u64 = 1 << L1_SHIFT;
        let mut at = base;
        while at < end {
            let gib = root_entry(self.l1, at >> L1_SHIFT).ok_or(Stage2Error::BadDeviceWindow)?;
            if at.is_multiple_of(GIB) && end - at >= GIB {
                place(gib, at | HOST_DEVICE | BLOCK)?;
                at += GIB;
                continue;
            }
            let l2 = pool.table_in(gib)?;
            let chunk = at - at % MIB2;
            let slot = &l2.0[((at >> L2_SHIFT) % ENTRIES) as usize];
            if at == chunk && end - at >= MIB2 {
                place(slot, at | HOST_DEVICE | BLOCK)?;
                at += MIB2;
                continue;
            }
            let l3 = pool.table_in(slot)?;
            let stop = end.min(chunk + MIB2);
            while at < stop {
                place(
                    &l3.0[((at >> GRANULE_SHIFT) % ENTRIES) as usize],
                    at | HOST_DEVICE | PAGE,
                )?;
                at += GRANULE_SIZE;
            }
        }
        Ok(())
    }

    /// The level-2 entry of the block holding `pa`, in the level-2 tables of the GiBs DRAM
    /// touches. It is not checked that `pa` is DRAM: boot fills only DRAM's entries (a device
    /// window never shares a GiB with DRAM, `map_devices`), so any other address finds an entry
    /// that maps nothing, which every caller refuses as not mapped. The core calls with a
    /// granule it has locked in its granule table, which is DRAM: that is the one range check
    /// of an (un)delegate (the HAL's own was ~10 of its ~100 instructions, profiled).
    fn l2_entry(&self, pa: Pa) -> Result<&AtomicU64, Stage2Error> {
        // Below DRAM's first GiB the difference wraps to far above the table count: `get`
        // bounds it either way.
        let gib = (pa.0 >> L1_SHIFT).wrapping_sub(self.dram.base.0 >> L1_SHIFT);
        let table = self.l2.get(gib as usize).ok_or(Stage2Error::OutOfRange)?;
        Ok(&table.0[((pa.0 >> L2_SHIFT) % ENTRIES) as usize])
    }

    /// The level-3 table a level-2 table entry points at, and its pool index if it is a split
    /// table (`None`: a fixed one). The address is looked up among ours, never followed blindly.
    fn l3_of(
        &self,
        pool: &SplitPool,
        entry: u64,
    ) -> Result<(&'static Table, Option<usize>), Stage2Error> {
        let addr = entry & TABLE_ADDR;
        if entry & 0b11 != VALID_TABLE {
            return Err(Stage2Error::NotMapped);
        }
        if let Some(i) = pool.index(addr) {
            return Ok((&self.split[i], Some(i)));
        }
        self.fixed
            .iter()
            .find(|t| t.addr() == addr)
            .map(|t| (t, None))
            .ok_or(Stage2Error::NotMapped)
    }

    /// Takes the granule at `pa` out of the host's address space (splitting its block first if
    /// it is one). When this returns, no CPU can reach it through a host translation any more,
    /// nor a device through `walkers`; on an error nothing changed.
    pub(crate) fn unmap_from_host(
        &self,
        pa: Pa,
        walkers: &dyn HostWalkers,
    ) -> Result<(), Stage2Error> {
        let pa = pa.granule_base();
        let l2e = self.l2_entry(pa)?;
        let mut s = SPLITS.lock();
        let current = l2e.load(Ordering::Relaxed);
        if current & 0b11 == BLOCK {
            return self.split_taking(&mut s, l2e, current, pa, walkers);
        }
        let (l3, pool) = self.l3_of(&s, current)?;
        l3.0[((pa.0 >> GRANULE_SHIFT) % ENTRIES) as usize]
            .compare_exchange(pa.0 | HOST_PAGE, 0, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Stage2Error::NotMapped)?;
        if let Some(i) = pool {
            s.count(i, true);
        }
        flush_host_ipa(pa);
        walkers.forget(pa);
        Ok(())
    }

    /// Replaces the block `l2e` (value `block`) by a pool table with the same translations but
    /// for `pa`'s, which it leaves out. Break before make: the entry is cleared, every cached
    /// translation of the block dropped (CPUs and `walkers`), then the table goes in, so no
    /// moment has both or reaches `pa` after the drop.
    // Out of line: once per 2 MiB block, and inlined its registers made every granule's
    // (un)delegate save and restore more of them.
    #[inline(never)]
    fn split_taking(
        &self,
        s: &mut SplitPool,
        l2e: &AtomicU64,
        block: u64,
        pa: Pa,
        walkers: &dyn HostWalkers,
    ) -> Result<(), Stage2Error> {
        let i = self.free_table(s, walkers)?;
        let t = self.split.get(i).ok_or(Stage2Error::NoTables)?;
        let base = block & BLOCK_ADDR;
        for (j, e) in t.0.iter().enumerate() {
            let at = base + ((j as u64) << GRANULE_SHIFT);
            e.store(
                if at == pa.0 { 0 } else { at | HOST_PAGE },
                Ordering::Relaxed,
            );
        }
        l2e.store(0, Ordering::Relaxed);
        flush_host_ipa(pa);
        walkers.forget(pa);
        l2e.store(t.addr() | VALID_TABLE, Ordering::Release);
        // The "make" visible to the walkers (CPUs and the SMMU) now rather than when the store
        // drains: until then host accesses to the block fault and host DMA aborts.
        make_visible();
        s.claim(i, base);
        Ok(())
    }

    /// A pool table no block uses: a free one, or one whose block holds no taken granule any
    /// more, which is folded back into a 2 MiB block first (break before make, as a split).
    fn free_table(
        &self,
        s: &mut SplitPool,
        walkers: &dyn HostWalkers,
    ) -> Result<usize, Stage2Error> {
        match s.pick().ok_or(Stage2Error::NoTables)? {
            Pick::Free(i) => Ok(i),
            Pick::Fold { index, block } => {
                let l2e = self.l2_entry(Pa(block))?;
                l2e.store(0, Ordering::Relaxed);
                flush_host_all();
                walkers.forget_all();
                l2e.store(block | HOST_BLOCK, Ordering::Release);
                make_visible();
                s.release(index);
                Ok(index)
            }
        }
    }

    /// Gives the granule at `pa` back to the host. The TSM's own memory is refused.
    pub fn map_to_host(&self, pa: Pa) -> Result<(), Stage2Error> {
        let pa = pa.granule_base();
        let l2e = self.l2_entry(pa)?;
        let mut s = SPLITS.lock();
        let current = l2e.load(Ordering::Relaxed);
        if current & 0b11 == BLOCK {
            return Err(Stage2Error::AlreadyMapped);
        }
        let (l3, pool) = self.l3_of(&s, current)?;
        // Only a fixed table can hold TSM memory: a split table's block was a host block, all
        // host DRAM (boot gave every block the TSM touches a fixed table, and fixed tables are
        // never split), so the test is off the path of every granule a split took.
        if pool.is_none() && self.tsm.contains(pa, GRANULE_SIZE) {
            return Err(Stage2Error::TsmMemory);
        }
        // Whatever the caller wrote into the granule (UNDELEGATE's scrub) is complete before
        // any walker can see the granule mapped.
        // SAFETY: a barrier only orders this CPU's memory accesses.
        unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
        l3.0[((pa.0 >> GRANULE_SHIFT) % ENTRIES) as usize]
            .compare_exchange(0, pa.0 | HOST_PAGE, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Stage2Error::AlreadyMapped)?;
        if let Some(i) = pool {
            s.count(i, false);
        }
        // Invalid to valid needs no TLB invalidation: the Arm ARM lets no TLB hold an entry
        // that gives a Translation fault, and `unmap_from_host` invalidated the old one when it
        // cleared the entry. Only the descriptor must reach the walkers; a host access that faulted in
        // between is retried (`host_maps`).
        make_visible();
        Ok(())
    }
}

/// Whether the host's stage 2 on this CPU (VTTBR_EL2, the host's while a host exit is handled)
/// maps `ipa` now, once no split or fold is in progress: a host stage-2 fault there raced one
/// and is retried.
pub(crate) fn host_maps(ipa: u64) -> bool {
    let _settled = SPLITS.lock();
    let mut table = read_sysreg!("vttbr_el2") & TABLE_ADDR;
    if ipa >> IPA_BITS != 0 {
        return false;
    }
    for shift in [L1_SHIFT, L2_SHIFT, GRANULE_SHIFT] {
        // The level-1 root is ROOT_TABLES concatenated tables, indexed by every bit above
        // bit 30 (bounded by the IPA_BITS check above).
        let index = if shift == L1_SHIFT {
            ipa >> shift
        } else {
            (ipa >> shift) % ENTRIES
        };
        // SAFETY: `table` is the host's level-1 root from VTTBR_EL2 (ROOT_TABLES contiguous
        // tables, which `index` stays inside as `ipa` is below 2^IPA_BITS) or a table one of
        // its entries points at: all are carve-out tables this module built (TSM memory,
        // identity-mapped, aligned), only ever changed by aligned 8-byte stores, so the read
        // sees a whole descriptor.
        let e = unsafe { (*((table + index * 8) as *const AtomicU64)).load(Ordering::Acquire) };
        let last = shift == GRANULE_SHIFT;
        match e & 0b11 {
            // A page, or a block above level 3.
            0b11 if last => return true,
            0b01 if !last => return true,
            0b11 => table = e & TABLE_ADDR,
            _ => return false,
        }
    }
    false
}

/// Drops every CPU's cached translations of `gpa` tagged with `vmid`.
pub fn invalidate_tvm_ipa(vmid: Vmid, gpa: Gpa) {
    with_vmid(vmid, || flush_ipa(Pa(gpa.0)));
}

/// Drops every CPU's cached translations tagged with `vmid`.
pub fn invalidate_tvm_all(vmid: Vmid) {
    with_vmid(vmid, flush_loaded_vmid);
}

/// Runs `f` with VTTBR_EL2 naming `vmid` (TLB maintenance by IPA or VMID uses the VMID in
/// VTTBR_EL2), then puts the previous value back. Only the VMID matters for maintenance, so
/// the table address stays 0.
fn with_vmid(vmid: Vmid, f: impl FnOnce()) {
    let before = read_sysreg!("vttbr_el2");
    // SAFETY: VTTBR_EL2 only governs EL1/EL0 translation; no EL1 code runs on this CPU until
    // the previous value is restored below, before returning.
    unsafe { write_sysreg!("vttbr_el2", u64::from(vmid.0) << 48) };
    isb();
    f();
    // SAFETY: restores the value read above.
    unsafe { write_sysreg!("vttbr_el2", before) };
    isb();
}

/// The host's stage-2 registers, saved while a TVM's are installed.
pub struct HostStage2Regs {
    vttbr: u64,
    vtcr: u64,
}

impl HostStage2 {
    /// Installs the TVM address map rooted at `root` (tagged `vmid`) as this CPU's stage 2.
    ///
    /// # Safety
    /// Until [`leave_tvm`], only the vCPU of that TVM runs at EL1/EL0 on this CPU; `root` is
    /// the TVM's root table (a TABLE granule the core keeps alive while the vCPU runs).
    pub unsafe fn enter_tvm(&self, vmid: Vmid, root: Pa) -> HostStage2Regs {
        let host = HostStage2Regs {
            vttbr: read_sysreg!("vttbr_el2"),
            vtcr: read_sysreg!("vtcr_el2"),
        };
        // SAFETY: per the contract, only the TVM's vCPU runs under these values; its VMID
        // keeps its cached translations apart from the host's and other TVMs'.
        unsafe {
            write_sysreg!("vtcr_el2", self.tvm_vtcr);
            write_sysreg!(
                "vttbr_el2",
                (u64::from(vmid.0) << 48) | (root.0 & 0x0000_FFFF_FFFF_F000)
            );
        }
        isb();
        host
    }
}

/// Puts the host's stage 2 back.
///
/// # Safety
/// The vCPU entered with [`HostStage2::enter_tvm`] no longer runs; the host runs next on this CPU.
pub unsafe fn leave_tvm(host: HostStage2Regs) {
    // SAFETY: the host's own values, read by `enter_tvm`.
    unsafe {
        write_sysreg!("vtcr_el2", host.vtcr);
        write_sysreg!("vttbr_el2", host.vttbr);
    }
    isb();
}

/// The level-1 entry of GiB `gib` in the CPU's concatenated root (`None` above [`IPA_BITS`]).
fn root_entry(root: &[Table], gib: u64) -> Option<&AtomicU64> {
    let gib = usize::try_from(gib).ok()?;
    root.get(gib / ENTRIES as usize)?
        .0
        .get(gib % ENTRIES as usize)
}

/// Writes a device descriptor into an empty slot (a used one is an overlap).
fn place(slot: &AtomicU64, descriptor: u64) -> Result<(), Stage2Error> {
    slot.compare_exchange(0, descriptor, Ordering::Relaxed, Ordering::Relaxed)
        .map(drop)
        .map_err(|_| Stage2Error::BadDeviceWindow)
}

/// The tables [`HostStage2::map_devices`] hands out.
struct Pool {
    tables: &'static [Table],
    used: usize,
}

impl Pool {
    /// The table `slot` points to, or a new one that it then points to. The tables a device
    /// window shares with an earlier one are this pool's (DRAM's are refused before), so the
    /// pointer is looked up here rather than trusted; a block in `slot` is an overlap.
    fn table_in(&mut self, slot: &AtomicU64) -> Result<&'static Table, Stage2Error> {
        let entry = slot.load(Ordering::Relaxed);
        if entry & 0b11 == VALID_TABLE {
            let placed = self.tables.get(..self.used).unwrap_or(&[]);
            return placed
                .iter()
                .find(|t| t.addr() == entry & TABLE_ADDR)
                .ok_or(Stage2Error::BadDeviceWindow);
        }
        if entry != 0 {
            return Err(Stage2Error::BadDeviceWindow);
        }
        let t = self.tables.get(self.used).ok_or(Stage2Error::NoTables)?;
        self.used += 1;
        slot.store(t.addr() | VALID_TABLE, Ordering::Relaxed);
        Ok(t)
    }
}

/// Makes descriptor stores before it visible to every table walker (the CPUs' and the
/// SMMU's: its table walks are inner-shareable observers) before the CPU goes on.
fn make_visible() {
    // SAFETY: a barrier only orders this CPU's memory accesses.
    unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Drops every CPU's cached translations of the host's VMID, stage 2 and combined, and waits
/// until that is done.
fn flush_host_all() {
    as_host(flush_loaded_vmid);
}

/// Drops every CPU's cached translations, stage 2 and combined, of the VMID in VTTBR_EL2, and
/// waits until that is done.
fn flush_loaded_vmid() {
    // SAFETY: TLB maintenance and barriers only drop cached translations; the descriptor store
    // before it is made visible to the walkers first (dsb ishst).
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// [`flush_ipa`] of a host IPA, under the host's VMID.
fn flush_host_ipa(ipa: Pa) {
    as_host(|| flush_ipa(ipa));
}

/// Runs `f`, TLB maintenance of the host's stage 2, with the host's VMID in VTTBR_EL2, which
/// maintenance by IPA or VMID uses. It is there but while a guest call is answered in place:
/// the vCPU's stage 2 then stays loaded (`guest`), and maintenance under its VMID would leave
/// the host's stale translations of a granule it just lost. One `mrs` and a compare otherwise.
fn as_host(f: impl FnOnce()) {
    if read_sysreg!("vttbr_el2") >> 48 == HOST_VMID {
        f();
    } else {
        with_vmid(Vmid(HOST_VMID as u16), f);
    }
}

/// Drops every cached translation of `ipa` on every CPU of the inner-shareable domain: stage-2
/// entries by IPA, then the combined stage-1+2 entries (which are tagged by VA, so all of the
/// VMID's). Uses the VMID in VTTBR_EL2 (the host's, but in `with_vmid`).
fn flush_ipa(ipa: Pa) {
    // SAFETY: TLB maintenance and barriers only drop cached translations; the descriptor store
    // before it is made visible to the walkers first (dsb ishst).
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi ipas2e1is, {page}",
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            page = in(reg) ipa.0 >> GRANULE_SHIFT,
            options(nostack, preserves_flags)
        )
    };
}
