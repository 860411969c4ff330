//! The TSM's 4-level page tables (ring 0; TVM vCPUs run on their own maps) and the host's
//! nested page table (what the host, an SVM guest, reaches: `svm`), built alike.
//!
//! DRAM is identity-mapped in both: the host's memory in 2 MiB pages where a whole 2 MiB of host
//! memory allows, else 4 KiB pages. In the TSM's tables host memory has U=1 and the TSM's own
//! range U=0 with W^X in 4 KiB pages (text read-only executable, rodata read-only,
//! data/carve-out read-write no-execute, stack guard pages absent); U=1 is only there for SMAP:
//! SMEP stops ring 0 from executing host pages and SMAP from reading or writing them except
//! inside [`super::platform`]'s copies, which bracket the access with `stac`/`clac`, so a stray
//! TSM pointer into host memory faults instead of trusting it. The nested table maps the host's
//! memory present, writable and executable (U set at every level: nested paging treats the
//! walk as a user access) and nothing of the TSM's: no TSM page, no local APIC, no VT-d
//! registers; of MMIO only what `pci` gives the host. A host access to anything else is
//! a nested page fault (`host`).
//!
//! Taking a granule from the host removes it from the nested table only. The TSM's own tables
//! keep mapping it as they map all host memory (U=1, 2 MiB pages, never split after boot):
//! the TSM reaches a delegated granule only through [`super::platform`]'s copies and the
//! vCPU-context accesses of `guest`, all inside a `stac`/`clac` bracket, so a stray TSM pointer
//! into one faults as it does into any host page. In the nested table a granule inside a 2 MiB
//! page first gets that page split into a 4 KiB table with the same translations, from a pool
//! of `SPLIT_TABLES` tables (`crate::split_pool`): a table stays under its block while any granule of it is taken,
//! and one whose granules are all back is folded into a 2 MiB page again when the pool needs
//! it. With every pool table under a block that still holds a taken granule the take is
//! refused ([`PagingError::NoSplitTable`], GRANULE_DELEGATE's `Capacity`), nothing changed.
//!
//! Taking a page of a host memory BAR for a TVM's private MMIO ([`take_mmio`]) removes it from
//! the nested table (splitting a 2 MiB BAR page from the pool's reserve). Giving it back maps
//! it again uncached. Both do the same TLB work as taking a granule.
//!
//! Each table set comes from its part of a pool in the carve-out that boot sizes
//! ([`pool_pages`]): 1 PML4, 1 PDPT per 512 GiB, 1 PD per GiB of DRAM, a PT per 2 MiB block
//! that is not all host memory (the TSM's, DRAM's ends), the MMIO's, and the nested table's
//! split pool. Each table is zeroed when taken.
//!
//! Besides DRAM only MMIO is mapped, uncached and never executable: in the TSM's tables the
//! local APIC's page (supervisor, for starting the secondary CPUs and the shootdown NMIs), the
//! VT-d registers (supervisor), and in both the host's bus 0 PCI configuration space and the
//! memory BARs firmware assigned there (`pci` decides which, and which are read-only for the
//! host: those stay writable in the TSM's tables, which `config_write` writes through).

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_platform::MmioRefused;

use super::cpu;
use super::layout::Layout;
use super::pci::{Access, MAX_MMIO, Mmio};
use super::smp;
use crate::platform::MemRange;
use crate::split_pool::{Pick, SPLIT_TABLES, SplitPool};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Uncached: page-level write-through and cache-disable (MMIO).
const UNCACHED: u64 = (1 << 3) | (1 << 4);
/// In a PD entry: maps a 2 MiB page.
const LARGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// The flags a 2 MiB page hands down to the 4 KiB entries of its split.
const SPLIT_FLAGS: u64 = PRESENT | WRITABLE | USER | UNCACHED | NO_EXECUTE;
const ENTRIES: u64 = 512;
/// A host page: in the TSM's tables user-accessible (so SMAP keeps the TSM's stray pointers
/// off it); in the nested table present, writable and executable (nested entries need U).
const HOST_NESTED: u64 = PRESENT | WRITABLE | USER;
/// A page of a host memory BAR in the nested table (as [`build`] maps it; a 2 MiB page's split
/// hands the same flags down).
const HOST_BAR: u64 = PRESENT | WRITABLE | USER | UNCACHED | NO_EXECUTE;
/// Bytes one PD entry maps.
const LARGE_SIZE: u64 = 1 << 21;

/// Why a page-table operation was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum PagingError {
    /// The address is not granule-aligned.
    Misaligned,
    /// The address is outside DRAM.
    NotDram,
    /// The address is the TSM's own memory, which the host never gets.
    TsmMemory,
    /// The carve-out's table pool is too small for this DRAM size.
    PoolExhausted,
    /// Every split table is under a block that still holds a taken granule.
    NoSplitTable,
    /// The tables are not built yet.
    NotReady,
    /// The address is not in a region this module maps that way.
    Refused,
}

struct Tables {
    /// The host's nested table (no TSM page, no local APIC; the host's pages present or
    /// absent) rather than the TSM's own.
    nested: bool,
    pml4: u64,
    pool_start: u64,
    pool_next: u64,
    pool_end: u64,
    dram: MemRange,
    tsm: MemRange,
    /// The host's memory BARs ([`Access::HostBar`]): the only MMIO a TVM may get.
    bars: [MemRange; MAX_MMIO],
    bar_count: usize,
    /// The nested table's pool of DRAM split tables (none in the TSM's tables).
    splits: Option<SplitPool>,
    /// The nested table's PD of DRAM's first GiB, the others following it page by page
    /// ([`build`] makes them so): a DRAM granule's PD entry is found without a walk
    /// ([`Self::dram_pd_entry`]). 0 in the TSM's tables.
    dram_pds: u64,
}

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
static TSM_PML4: AtomicU64 = AtomicU64::new(0);
/// The host's nested table (never locked together with `TABLES`).
static NESTED: Mutex<Option<Tables>> = Mutex::new(None);
static NESTED_PML4: AtomicU64 = AtomicU64::new(0);

/// The local APIC's MMIO page (xAPIC mode), mapped supervisor-only at its physical address.
pub const LAPIC_BASE: u64 = 0xFEE0_0000;

/// What a Linux host reads at the local APIC's address: a page of zeros (APIC ID 0), read-only.
/// The host has no local APIC, but Linux reads the boot CPU's APIC ID from the address the MP
/// table names before it looks at anything that says there is none, and a #GP there is fatal
/// to it; a write is still a nested page fault. The BIOS area and the HPET's page read as
/// this page too (`linux::BIOS_AREA`, `linux::HPET_PAGE`).
#[repr(C, align(4096))]
struct ZeroPage([u8; 4096]);
static ABSENT_APIC: ZeroPage = ZeroPage([0; 4096]);

/// Pointer to entry `index` of the table at physical address `table`.
fn entry(table: u64, index: u64) -> *mut u64 {
    (table + index * 8) as *mut u64
}

impl Tables {
    /// A pool page no table uses yet, zeroed unless the caller writes all of it.
    fn alloc(&mut self, zero: bool) -> Result<u64, PagingError> {
        if self.pool_next >= self.pool_end {
            return Err(PagingError::PoolExhausted);
        }
        let t = self.pool_next;
        self.pool_next += GRANULE_SIZE;
        if zero {
            // SAFETY: `t` is a page of the pool (carve-out, identity-mapped read-write for
            // ring 0, never for ring 3) that no table uses yet: the cursor only moves forward.
            unsafe { core::ptr::write_bytes(t as *mut u8, 0, GRANULE_SIZE as usize) };
        }
        Ok(t)
    }

    /// The entry for `va` in the table of level `shift` (21: its PD entry, 12: its PT entry),
    /// creating the tables above it on the way if `create` (reachable from ring 3 if `user`,
    /// otherwise supervisor-only). A 2 MiB page on the way to a PT entry is `Refused`.
    fn entry_at(
        &mut self,
        va: u64,
        shift: u32,
        create: bool,
        user: bool,
    ) -> Result<*mut u64, PagingError> {
        let mut table = self.pml4;
        for level in [39u32, 30, 21] {
            if level == shift {
                break;
            }
            let e = entry(table, (va >> level) & (ENTRIES - 1));
            // SAFETY: `table` is a page of the pool (zeroed when taken, identity-mapped
            // read-write for ring 0, never for ring 3) and `e` is inside it; the TABLES lock
            // serialises all edits.
            let value = unsafe { e.read_volatile() };
            table = if value & PRESENT != 0 {
                if level == 21 && value & LARGE != 0 {
                    return Err(PagingError::Refused);
                }
                if user && value & USER == 0 {
                    // A table first made for supervisor pages (the local APIC's, the VT-d
                    // registers') now also leads to user ones: U at this level lets the
                    // leaves decide.
                    // SAFETY: as above.
                    unsafe { e.write_volatile(value | USER) };
                }
                value & ADDR_MASK
            } else if create {
                let next = self.alloc(true)?;
                // Intermediate levels allow everything but U where the region is
                // supervisor-only; the leaf decides the rest (U, W and NX combine as the most
                // restrictive along the walk).
                let u = if user { USER } else { 0 };
                // SAFETY: as above.
                unsafe { e.write_volatile(next | PRESENT | WRITABLE | u) };
                next
            } else {
                return Err(PagingError::NotReady);
            };
        }
        Ok(entry(table, (va >> shift) & (ENTRIES - 1)))
    }

    /// The PD entry for `va`, without creating anything (the per-call path of [`Self::set_user`]:
    /// a straight walk, no level bookkeeping).
    fn pd_entry(&self, va: u64) -> Result<*mut u64, PagingError> {
        let mut table = self.pml4;
        for shift in [39u32, 30] {
            // SAFETY: `table` is a page of the pool (see `entry_at`) and the entry is inside it;
            // we hold the lock.
            let value = unsafe { entry(table, (va >> shift) & (ENTRIES - 1)).read_volatile() };
            if value & PRESENT == 0 {
                return Err(PagingError::NotReady);
            }
            table = value & ADDR_MASK;
        }
        Ok(entry(table, (va >> 21) & (ENTRIES - 1)))
    }

    /// The PD entry for the DRAM address `pa` in the nested table, `NotDram` outside DRAM (and
    /// in the TSM's tables, which have no `dram_pds`); found from [`Self::dram_pds`] by
    /// arithmetic: a walk from the root read two more tables on every (un)delegate.
    fn dram_pd_entry(&self, pa: u64) -> Result<*mut u64, PagingError> {
        // The one range check of an (un)delegate here: the entry's address is computed, so the
        // HAL's own memory safety needs `pa` in DRAM whatever the caller checked. `pa - base`
        // below `size` is that (below `base` the difference wraps to above `size`; `base +
        // size` does not overflow: `pool_pages` refuses such a DRAM at boot).
        if self.dram_pds == 0 || pa.wrapping_sub(self.dram.base.0) >= self.dram.size {
            return Err(PagingError::NotDram);
        }
        // The first 2 MiB index of DRAM's first GiB, which `dram_pds` starts with; `pa` is in
        // DRAM, so its own index is not below it, and `build` made a PD entry for every 2 MiB
        // of DRAM from there: neither the difference nor the sum wraps (unchecked, two
        // branches fewer per (un)delegate).
        let first = (self.dram.base.0 >> 21) & !(ENTRIES - 1);
        Ok(self
            .dram_pds
            .wrapping_add((pa >> 21).wrapping_sub(first).wrapping_mul(8)) as *mut u64)
    }

    /// Whether the nested table maps the DRAM page of `pa` for the host now (a 2 MiB page or a
    /// present 4 KiB entry under it).
    fn host_maps(&self, pa: u64) -> bool {
        let Ok(pde) = self.pd_entry(pa) else {
            return false;
        };
        // SAFETY: `pde` is a PD entry inside a pool page (see `pd_entry`); the caller holds the
        // lock.
        let table = unsafe { pde.read_volatile() };
        if table & PRESENT == 0 || table & LARGE != 0 {
            return table & PRESENT != 0;
        }
        // SAFETY: an entry of the PT the present, non-large PD entry points at (a pool page).
        let leaf = unsafe { entry(table & ADDR_MASK, (pa >> 12) & (ENTRIES - 1)).read_volatile() };
        leaf & PRESENT != 0
    }

    /// The 4 KiB leaf entry for `va` (see [`Self::entry_at`]).
    fn leaf(&mut self, va: u64, create: bool, user: bool) -> Result<*mut u64, PagingError> {
        self.entry_at(va, 12, create, user)
    }

    /// Replaces the 2 MiB page at PD entry `pde` (value `large`) by a table of 4 KiB pages
    /// with the same translations and rights; the PD entry's new value.
    fn split(&mut self, pde: *mut u64, large: u64) -> Result<u64, PagingError> {
        // Not zeroed: the loop below writes all 512 entries before the table is live.
        let pt = self.alloc(false)?;
        let base = large & ADDR_MASK & !(LARGE_SIZE - 1);
        for i in 0..ENTRIES {
            // SAFETY: `pt` is a pool page no table uses (see `alloc`), `i` < 512.
            unsafe {
                entry(pt, i).write_volatile((base + i * GRANULE_SIZE) | (large & SPLIT_FLAGS))
            };
        }
        let table = pt | PRESENT | WRITABLE | USER;
        // SAFETY: `pde` is a PD entry inside a pool page (see `entry_at`); we hold the lock.
        // One aligned 8-byte store: a concurrent walk sees the 2 MiB page or the table, which
        // translate every address the same.
        unsafe { pde.write_volatile(table) };
        Ok(table)
    }

    /// Maps or unmaps the 4 KiB page of a host granule in the nested table (splitting its
    /// 2 MiB page first if it has one). The TLB work is the caller's: the guest's translations
    /// go on the next VMRUN of each CPU (`svm::nested_changed`).
    ///
    /// The core calls with a granule it has locked in its granule table in the state the call
    /// needs (aligned DRAM, never the TSM's: those are RESERVED), so alignment, DRAM and TSM
    /// memory are not checked again in full: `pa`'s granule is used (nothing else reaches a
    /// leaf), [`Self::dram_pd_entry`] keeps `pa` in DRAM for its own arithmetic, and TSM memory
    /// is refused where the table could hold it (the three checks were ~20 of this function's
    /// ~80 instructions on every (un)delegate, read off the disassembly).
    // Inline into its two callers: the call, its argument moves, the saved register and the
    // result's test cost GRANULE_DELEGATE 14 instructions (measured; `.text` +96 bytes).
    #[inline(always)]
    fn set_nested(&mut self, pa: Pa, mapped: bool) -> Result<(), PagingError> {
        let pa = pa.granule_base();
        let pde = self.dram_pd_entry(pa.0)?;
        // SAFETY: `pde` is a PD entry inside a pool page (see `dram_pd_entry`); we hold the
        // lock.
        let table = unsafe { pde.read_volatile() };
        if table & PRESENT == 0 {
            return Err(PagingError::NotReady);
        }
        if table & LARGE != 0 {
            return if mapped {
                Ok(())
            } else {
                self.split_taking(pde, table, pa)
            };
        }
        let split = self
            .splits
            .as_ref()
            .and_then(|sp| sp.index(table & ADDR_MASK));
        let new = if mapped {
            // Only a PT `build` made can hold TSM memory (absent there): a split table's block
            // was a 2 MiB host page, all host DRAM. Unmapping a TSM page changes nothing, so
            // only a map needs the test.
            if split.is_none() && self.tsm.contains(pa, GRANULE_SIZE) {
                return Err(PagingError::TsmMemory);
            }
            pa.0 | HOST_NESTED
        } else {
            0
        };
        let e = entry(table & ADDR_MASK, (pa.0 >> 12) & (ENTRIES - 1));
        // SAFETY: `e` is an entry of the PT that the present, non-large PD entry points at (a
        // pool page); we hold the lock.
        let was = unsafe { e.read_volatile() } & PRESENT != 0;
        // SAFETY: as above.
        unsafe { e.write_volatile(new) };
        if let Some(sp) = self.splits.as_mut()
            && let Some(i) = split
            && was != mapped
        {
            sp.count(i, !mapped);
        }
        Ok(())
    }

    /// Replaces the 2 MiB page at PD entry `pde` (value `large`) by a split table with the same
    /// translations but for `pa`'s, which it leaves out. One aligned 8-byte store: a walk sees
    /// the 2 MiB page or the table (the caller's TLB work then drops the 2 MiB page).
    // Out of line: once per 2 MiB block, and inlined its registers made every granule's
    // (un)delegate save and restore more of them.
    #[inline(never)]
    fn split_taking(&mut self, pde: *mut u64, large: u64, pa: Pa) -> Result<(), PagingError> {
        let i = self.free_split_table()?;
        let sp = self.splits.as_mut().ok_or(PagingError::NoSplitTable)?;
        let pt = sp.table(i);
        let base = large & ADDR_MASK & !(LARGE_SIZE - 1);
        for j in 0..ENTRIES {
            let at = base + j * GRANULE_SIZE;
            let value = if at == pa.0 {
                0
            } else {
                at | (large & SPLIT_FLAGS)
            };
            // SAFETY: `pt` is a split table no PD entry points at (`free_split_table`), `j` <
            // 512.
            unsafe { entry(pt, j).write_volatile(value) };
        }
        // SAFETY: `pde` is a PD entry inside a pool page (see `pd_entry`); we hold the lock.
        unsafe { pde.write_volatile(pt | PRESENT | WRITABLE | USER) };
        sp.claim(i, base);
        Ok(())
    }

    /// A split table no block uses: a free one, or one whose block holds no taken granule any
    /// more, folded back into a 2 MiB page first. Every CPU forgets the table before it is
    /// reused (a cached PD entry would otherwise lead a walk of the old block into it).
    fn free_split_table(&mut self) -> Result<usize, PagingError> {
        let sp = self.splits.as_ref().ok_or(PagingError::NoSplitTable)?;
        let (index, block) = match sp.pick().ok_or(PagingError::NoSplitTable)? {
            Pick::Free(i) => return Ok(i),
            Pick::Fold { index, block } => (index, block),
        };
        let pde = self.pd_entry(block)?;
        // SAFETY: `pde` is a PD entry inside a pool page (see `pd_entry`); we hold the lock.
        // The 2 MiB page translates every address of the block as the table did.
        unsafe { pde.write_volatile(block | HOST_NESTED | LARGE) };
        super::svm::nested_changed();
        smp::shootdown(None);
        if let Some(sp) = self.splits.as_mut() {
            sp.release(index);
        }
        Ok(index)
    }

    /// The 4 KiB entry of the host BAR page at `pa` in the nested table, its 2 MiB page split
    /// first if it has one (from the pool's reserve: [`pool_pages`] counts a table for every
    /// 2 MiB of every MMIO range). The TLB work is the caller's, as for [`Self::set_nested`].
    fn bar_leaf(&mut self, pa: Pa) -> Result<*mut u64, MmioRefused> {
        let in_bar = self
            .bars
            .get(..self.bar_count)
            .unwrap_or(&[])
            .iter()
            .any(|b| b.contains(pa, GRANULE_SIZE));
        if !self.nested || !pa.is_granule_aligned() || !in_bar {
            return Err(MmioRefused::NotDeviceMemory);
        }
        let pde = self
            .pd_entry(pa.0)
            .map_err(|_| MmioRefused::NotDeviceMemory)?;
        // SAFETY: `pde` is a PD entry inside a pool page (see `pd_entry`); we hold the lock.
        let mut table = unsafe { pde.read_volatile() };
        if table & PRESENT == 0 {
            return Err(MmioRefused::NotDeviceMemory);
        }
        if table & LARGE != 0 {
            table = self.split(pde, table).map_err(|_| MmioRefused::NoTables)?;
        }
        Ok(entry(table & ADDR_MASK, (pa.0 >> 12) & (ENTRIES - 1)))
    }

    /// Removes (`mapped` false) the host BAR page at `pa` from the nested table, or maps it
    /// back with the attributes [`build`] gave it (uncached, read-write, never executable).
    /// Every page of a host BAR is mapped at boot, so an absent one is one a TVM holds.
    fn set_bar_nested(&mut self, pa: Pa, mapped: bool) -> Result<(), MmioRefused> {
        let e = self.bar_leaf(pa)?;
        // SAFETY: `e` is an entry of the PT the present, non-large PD entry points at (a pool
        // page); we hold the lock.
        let v = unsafe { e.read_volatile() };
        match (v & PRESENT != 0, mapped) {
            (false, false) => return Err(MmioRefused::Taken),
            (true, true) => return Err(MmioRefused::NotTaken),
            _ => {}
        }
        // SAFETY: as above; one aligned 8-byte store.
        unsafe { e.write_volatile(if mapped { pa.0 | HOST_BAR } else { 0 }) };
        Ok(())
    }

    /// Maps `[start, end)` of DRAM with 4 KiB pages: the TSM's own with its rights, the rest
    /// for the host. The range lies in one 2 MiB block (the caller maps block by block), so its
    /// entries are consecutive in one page table: one walk for the block, not one per page (a
    /// walk per page was most of x86_64's boot: docs/benchmarks.md, "Boot, memory and image").
    fn map_small(&mut self, start: u64, end: u64, l: &Layout) -> Result<(), PagingError> {
        if end <= start || spans(start, end, 21) != 1 || !start.is_multiple_of(GRANULE_SIZE) {
            return Err(PagingError::Misaligned);
        }
        let first = self.leaf(start, true, true)?;
        let mut pa = start;
        while pa < end {
            let flags = if !self.tsm.contains(Pa(pa), GRANULE_SIZE) {
                HOST_NESTED
            } else if self.nested {
                0
            } else {
                tsm_flags(l, pa)
            };
            let index = ((pa - start) / GRANULE_SIZE) as usize;
            // SAFETY: `first` is `start`'s entry in a page table of the pool, and `pa` is in the
            // same 2 MiB block (checked above), so `first + index` is `pa`'s entry in that same
            // table; the lock is held and the tables are not live yet.
            unsafe {
                first
                    .add(index)
                    .write_volatile(if flags == 0 { 0 } else { pa | flags })
            };
            pa += GRANULE_SIZE;
        }
        Ok(())
    }
}

/// The leaf flags of a page of the TSM's own range.
fn tsm_flags(l: &Layout, pa: u64) -> u64 {
    if l.is_guard_page(pa) {
        0
    } else if pa < l.text_end {
        PRESENT
    } else if pa < l.rodata_end {
        PRESENT | NO_EXECUTE
    } else {
        PRESENT | WRITABLE | NO_EXECUTE
    }
}

/// How many naturally aligned `1 << shift`-byte blocks `[start, end)` touches (`end > start`):
/// the tables of the level below a table whose entries map blocks of that size.
pub(super) fn spans(start: u64, end: u64, shift: u32) -> u64 {
    ((end - 1) >> shift) - (start >> shift) + 1
}

/// Tables below the PML4 for `[start, end)`: PDPTs, PDs, PTs.
pub(super) fn tables_for(start: u64, end: u64) -> u64 {
    spans(start, end, 39) + spans(start, end, 30) + spans(start, end, 21)
}

/// The pool, in pages, for two table sets (the TSM's and the host's nested table), each mapping
/// `dram` in 2 MiB pages but for the blocks `tsm` (the most the TSM's memory may span) and
/// DRAM's ends touch, plus the PML4, the local APIC and `mmio` (a table shared by two of them is
/// counted twice), and the nested table's `SPLIT_TABLES`; `None` if `dram` is empty or wraps.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn pool_pages(dram: &MemRange, tsm: &MemRange, mmio: &[Mmio]) -> Option<u64> {
    let end = dram.base.0.checked_add(dram.size)?;
    let tsm_end = tsm.base.0.checked_add(tsm.size)?;
    if end <= dram.base.0 || tsm_end <= tsm.base.0 {
        return None;
    }
    let mmio_tables = mmio
        .iter()
        .map(|m| tables_for(m.base, m.base + m.size))
        .sum::<u64>();
    let dram_tables = spans(dram.base.0, end, 39)
        + spans(dram.base.0, end, 30)
        + spans(tsm.base.0, tsm_end, 21)
        + 2;
    Some(
        2 * (1 + dram_tables + tables_for(LAPIC_BASE, LAPIC_BASE + GRANULE_SIZE) + mmio_tables)
            + SPLIT_TABLES as u64,
    )
}

/// Builds the TSM's tables and the host's nested table for `dram`, each from its half of `pool`
/// ([`pool_pages`] pages) after the nested table's split tables at its end, with the TSM's
/// range `tsm` supervisor-only in the first and absent from the second, and `mmio` (uncached,
/// never executable; in the nested table only what `pci` gives the host), and switches to the
/// TSM's tables.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn init(
    dram: MemRange,
    tsm: MemRange,
    pool: MemRange,
    l: &Layout,
    mmio: &[Mmio],
) -> Result<(), PagingError> {
    let split_bytes = SPLIT_TABLES as u64 * GRANULE_SIZE;
    let half = (pool
        .size
        .checked_sub(split_bytes)
        .ok_or(PagingError::PoolExhausted)?
        / 2)
        & !(GRANULE_SIZE - 1);
    let nested_pool = MemRange {
        base: Pa(pool.base.0 + half),
        size: half,
    };
    let mut guard = TABLES.lock();
    let t = build(false, dram, tsm, MemRange { size: half, ..pool }, l, mmio)?;
    let mut n = build(true, dram, tsm, nested_pool, l, mmio)?;
    n.splits = Some(SplitPool::new(pool.base.0 + 2 * half));
    // SAFETY: the new tables identity-map the whole TSM image, stacks (bar guard pages) and
    // carve-out at the same addresses, so the code, stack and data in use stay reachable.
    // CR0.WP makes ring 0 honour read-only pages.
    unsafe {
        cpu::set_cr3(t.pml4);
        cpu::set_cr0(cpu::cr0() | cpu::CR0_WP);
    }
    TSM_PML4.store(t.pml4, Ordering::Release);
    NESTED_PML4.store(n.pml4, Ordering::Release);
    *guard = Some(t);
    *NESTED.lock() = Some(n);
    Ok(())
}

/// One table set (see [`init`]): the TSM's (`nested` false) or the host's nested table.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
fn build(
    nested: bool,
    dram: MemRange,
    tsm: MemRange,
    pool: MemRange,
    l: &Layout,
    mmio: &[Mmio],
) -> Result<Tables, PagingError> {
    let mut t = Tables {
        nested,
        pml4: 0,
        pool_start: pool.base.0,
        pool_next: pool.base.0,
        pool_end: pool.base.0 + pool.size,
        dram,
        tsm,
        bars: [MemRange {
            base: Pa(0),
            size: 0,
        }; MAX_MMIO],
        bar_count: 0,
        splits: None,
        dram_pds: 0,
    };
    for m in mmio.iter().filter(|m| m.access == Access::HostBar) {
        if let Some(slot) = t.bars.get_mut(t.bar_count) {
            *slot = MemRange {
                base: Pa(m.base),
                size: m.size,
            };
            t.bar_count += 1;
        }
    }
    t.pml4 = t.alloc(true)?;
    let end = dram.base.0 + dram.size;
    if nested {
        t.dram_pds = dram_pds(&mut t, dram.base.0, end)?;
    }
    let tsm_end = tsm.base.0 + tsm.size;
    let mut pa = dram.base.0;
    while pa < end {
        let next = (pa | (LARGE_SIZE - 1)).saturating_add(1).min(end);
        let whole = pa.is_multiple_of(LARGE_SIZE) && next - pa == LARGE_SIZE;
        if whole && (next <= tsm.base.0 || pa >= tsm_end) {
            let pde = t.entry_at(pa, 21, true, true)?;
            // SAFETY: `pde` is a PD entry inside a pool page; the tables are not live yet.
            unsafe { pde.write_volatile(pa | HOST_NESTED | LARGE) };
        } else {
            t.map_small(pa, next, l)?;
        }
        pa = next;
    }
    if !nested {
        let lapic = t.leaf(LAPIC_BASE, true, false)?;
        // SAFETY: as above; the local APIC page is supervisor-only, uncached, never executed.
        unsafe { lapic.write_volatile(LAPIC_BASE | PRESENT | WRITABLE | UNCACHED | NO_EXECUTE) };
    } else if super::linux::is_linux() {
        let lapic = t.leaf(LAPIC_BASE, true, true)?;
        let zeros = core::ptr::addr_of!(ABSENT_APIC) as u64;
        // SAFETY: as above; the host reads a page of zeros of the TSM's read-only data at the
        // local APIC's address (`ABSENT_APIC`) and cannot write it.
        unsafe { lapic.write_volatile(zeros | PRESENT | USER | NO_EXECUTE) };
        let bios = super::linux::BIOS_AREA.0..super::linux::BIOS_AREA.1;
        for pa in bios
            .step_by(GRANULE_SIZE as usize)
            .chain([super::linux::HPET_PAGE])
        {
            let e = t.leaf(pa, true, true)?;
            // SAFETY: as for the local APIC page: the same page of zeros, read-only.
            unsafe { e.write_volatile(zeros | PRESENT | USER | NO_EXECUTE) };
        }
    }
    for m in mmio {
        const DEVICE: u64 = UNCACHED | NO_EXECUTE;
        let (user, flags) = match m.access {
            Access::Tsm | Access::HostMemory if nested == (m.access == Access::Tsm) => continue,
            Access::Tsm => (false, WRITABLE | DEVICE),
            Access::HostReadWrite | Access::HostBar => (true, USER | WRITABLE | DEVICE),
            // Read-only for the host; the TSM writes what it lets through (`config_write`).
            Access::HostReadOnly if nested => (true, USER | DEVICE),
            Access::HostReadOnly => (true, USER | WRITABLE | DEVICE),
            Access::HostMemory => (true, USER | WRITABLE),
        };
        let end = m.base + m.size;
        let mut pa = m.base;
        while pa < end {
            // A whole aligned 2 MiB of the range (a large BAR) takes one PD entry.
            let large = pa.is_multiple_of(LARGE_SIZE) && end - pa >= LARGE_SIZE;
            let (e, size, page) = if large {
                (t.entry_at(pa, 21, true, user)?, LARGE_SIZE, LARGE)
            } else {
                (t.leaf(pa, true, user)?, GRANULE_SIZE, 0)
            };
            // SAFETY: as above; `pci` keeps every range outside DRAM, the local APIC page and
            // (for the host's) the VT-d registers, and `linux` gives the host only firmware
            // memory outside DRAM and the TSM's start page, so no page the TSM keeps gets a
            // user leaf.
            unsafe { e.write_volatile(pa | PRESENT | flags | page) };
            pa += size;
        }
    }
    Ok(t)
}

/// Makes the PDs of every GiB of `[base, end)` (DRAM) in `t`, the PDPTs above them first, so
/// that the PDs are consecutive pool pages in address order; returns the first one's address.
fn dram_pds(t: &mut Tables, base: u64, end: u64) -> Result<u64, PagingError> {
    const GIB: u64 = 1 << 30;
    let (first, last) = (base >> 30, (end - 1) >> 30);
    for gib in (first..=last).filter(|g| *g == first || g.is_multiple_of(ENTRIES)) {
        t.entry_at(gib * GIB, 30, true, true)?;
    }
    let mut pds = 0;
    for gib in first..=last {
        // Entry 0 of the GiB's PD, which this allocates (its PDPT exists): the PD's address.
        let pd = t.entry_at(gib * GIB, 21, true, true)? as u64;
        if gib == first {
            pds = pd;
        } else if pd != pds + (gib - first) * GRANULE_SIZE {
            // Not one after the other after all: `dram_pd_entry` would find wrong entries.
            return Err(PagingError::Refused);
        }
    }
    Ok(pds)
}

/// The host's nested table root (0 before [`init`]).
pub fn nested_root() -> u64 {
    NESTED_PML4.load(Ordering::Acquire)
}

/// The TSM's PML4 (0 before [`init`]): what every CPU's CR3 holds while the TSM or the host
/// runs.
pub fn tsm_pml4() -> u64 {
    TSM_PML4.load(Ordering::Acquire)
}

/// Switches a secondary CPU from the boot tables to the TSM's (built by the boot CPU).
pub fn activate() -> Result<(), PagingError> {
    let pml4 = tsm_pml4();
    if pml4 == 0 {
        return Err(PagingError::NotReady);
    }
    // SAFETY: the TSM's tables map the TSM image, its stacks and carve-out at the same
    // (identity) addresses as the boot tables this CPU runs on, so the running code, stack and
    // data stay reachable; CR0.WP as on the boot CPU.
    unsafe {
        cpu::set_cr3(pml4);
        cpu::set_cr0(cpu::cr0() | cpu::CR0_WP);
    }
    Ok(())
}

/// Takes a granule away from the host: out of its nested table, and supervisor-only in the
/// TSM's (SMAP then lets the TSM's own accesses to it through). From the moment this returns no
/// CPU reaches it from the host: each CPU flushes its TLB before its next VMRUN
/// (`svm::nested_changed`), and one running the host now leaves it for the shootdown NMI.
pub fn unmap_from_host(pa: Pa) -> Result<(), PagingError> {
    let mut nested = NESTED.lock();
    let n = nested.as_mut().ok_or(PagingError::NotReady)?;
    n.set_nested(pa, false)?;
    super::svm::nested_changed();
    // Every CPU may run the host: a stale translation elsewhere would keep a delegated granule
    // reachable.
    smp::shootdown(None);
    Ok(())
}

/// Gives a granule back to the host. No CPU's TLB needs flushing: the leaf goes from not
/// present to present (or the granule's 2 MiB page still maps it), and x86 TLBs never cache a
/// translation whose entry is not present (Intel SDM, "Details of TLB Use"; AMD's nested
/// paging likewise); the PD entry above it is unchanged, so no paging-structure cache
/// holds anything stale either. x86 makes ordinary stores visible in program order, so the
/// scrub before it (UNDELEGATE's `movdqa` stores, not non-temporal ones) is visible first.
pub fn map_to_host(pa: Pa) -> Result<(), PagingError> {
    let mut nested = NESTED.lock();
    let n = nested.as_mut().ok_or(PagingError::NotReady)?;
    n.set_nested(pa, true)
}

/// Takes a page of a host BAR away from the host, for a TVM's private MMIO: out of the host's
/// nested table. From the moment this returns no CPU reaches it from the host (the same TLB
/// work as [`unmap_from_host`]); a host access to it is a nested page fault (`host`).
pub fn take_mmio(pa: Pa) -> Result<(), MmioRefused> {
    set_bar(pa, false)
}

/// Gives a BAR page [`take_mmio`] took back to the host.
pub fn give_mmio(pa: Pa) -> Result<(), MmioRefused> {
    set_bar(pa, true)
}

fn set_bar(pa: Pa, host: bool) -> Result<(), MmioRefused> {
    let mut nested = NESTED.lock();
    let n = nested.as_mut().ok_or(MmioRefused::NotDeviceMemory)?;
    n.set_bar_nested(pa, host)?;
    super::svm::nested_changed();
    // As in `set_host`: every CPU may run the host.
    smp::shootdown(None);
    Ok(())
}

/// Copies the host memory at `pa` into `out` if all of it lies in one page of DRAM outside the
/// TSM that the host's nested table maps now, and says whether it did: how the TSM reads a
/// host's page tables and instruction bytes (`config_write`). The nested table's lock is held
/// across the check and the copy, so a granule being delegated on another CPU is either still
/// the host's or not read at all.
pub fn read_host(pa: u64, out: &mut [u8]) -> bool {
    let nested = NESTED.lock();
    let Some(n) = nested.as_ref() else {
        return false;
    };
    let len = out.len() as u64;
    let Some(last) = pa.checked_add(len).and_then(|end| end.checked_sub(1)) else {
        return false;
    };
    let tsm_end = n.tsm.base.0 + n.tsm.size;
    if len == 0
        || pa >> 12 != last >> 12
        || !n.dram.contains(Pa(pa), len)
        || (pa < tsm_end && last >= n.tsm.base.0)
        || !n.host_maps(pa)
    {
        return false;
    }
    // SAFETY: `[pa, pa + len)` is host DRAM outside the TSM (checked), which the TSM's tables
    // identity-map (U=1: `copy` brackets it with stac/clac); `out` is the TSM's own buffer of
    // `len` bytes, which does not overlap host memory.
    unsafe { super::platform::copy(out.as_mut_ptr(), pa as *const u8, out.len()) };
    true
}

/// Table pages in use and the pool's capacity, in pages, both table sets together (for the
/// banner).
pub fn pool_usage() -> (u64, u64) {
    let usage = |t: &Tables| {
        let (used, split) = t
            .splits
            .as_ref()
            .map_or((0, 0), |sp| (sp.used(), SPLIT_TABLES as u64));
        (
            (t.pool_next - t.pool_start) / GRANULE_SIZE + used,
            (t.pool_end - t.pool_start) / GRANULE_SIZE + split,
        )
    };
    let (a, b) = TABLES.lock().as_ref().map_or((0, 0), usage);
    let (c, d) = NESTED.lock().as_ref().map_or((0, 0), usage);
    (a + c, b + d)
}
