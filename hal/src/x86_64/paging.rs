//! The TSM's 4-level page tables, shared by the TSM (ring 0) and the host (ring 3).
//!
//! DRAM is identity-mapped: the host's memory with U=1 (read-write-execute for ring 3), in
//! 2 MiB pages where a whole 2 MiB of host memory allows, else 4 KiB pages; the TSM's own range
//! with U=0 and W^X in 4 KiB pages (text read-only executable, rodata read-only,
//! data/carve-out read-write no-execute, stack guard pages absent). Nothing else is mapped for
//! ring 3 but its devices' MMIO (below), so page 0 and everything else the host might probe
//! beyond DRAM, the VT-d registers included, fault.
//!
//! Taking a granule from the host clears its U bit instead of unmapping it: the TSM keeps
//! using it through the same identity map (objects live in delegated granules) while ring 3
//! faults on it. A granule inside a 2 MiB page first gets that page split into a 4 KiB table
//! with the same translations. SMEP stops ring 0 from executing host pages; SMAP stops ring 0
//! from reading or writing them except inside [`super::platform`]'s copies, which bracket the
//! access with `stac`/`clac`, so a stray TSM pointer into host memory faults instead of
//! trusting it.
//!
//! The tables come from a pool in the carve-out that boot sizes from DRAM ([`pool_pages`]):
//! 1 PML4, 1 PDPT per 512 GiB, 1 PD per GiB and 1 PT per 2 MiB of DRAM, plus the alias
//! region's and the MMIO's. Boot takes what the initial map needs; the rest stays
//! reserved for splits, so a split never runs out and later edits never fail for a DRAM
//! granule. Each table is zeroed when taken.
//!
//! The top 1 GiB (PML4 entry 511) is the supervisor-only *alias region* (see `alias`): the
//! trap trampoline and every CPU's descriptor tables and trap stacks, at the same virtual
//! addresses in these tables and in every TVM's (whose root gets the same PML4 entry 511, see
//! [`install_alias`]). Besides DRAM and the alias, only MMIO is mapped, uncached and never
//! executable: the local APIC's page (supervisor, for starting the secondary CPUs), the VT-d
//! registers (supervisor), and for the host bus 0's PCI configuration space and the memory
//! BARs firmware assigned there (`pci` decides which, and which are read-only).

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_platform::MmioRefused;

use super::alias::{self, ALIAS_PML4_INDEX};
use super::cpu;
use super::layout::Layout;
use super::pci::{Access, MAX_MMIO, Mmio};
use super::percpu::MAX_CPUS;
use super::smp;
use crate::platform::MemRange;

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
    /// The tables are not built yet.
    NotReady,
    /// The address is not in a region this module maps that way.
    Refused,
}

struct Tables {
    pml4: u64,
    /// PML4 entry 511 (the alias region), as TVM roots get it.
    alias_entry: u64,
    pool_start: u64,
    pool_next: u64,
    pool_end: u64,
    dram: MemRange,
    tsm: MemRange,
    /// The host's memory BARs ([`Access::HostBar`]): the only MMIO a TVM may get.
    bars: [MemRange; MAX_MMIO],
    bar_count: usize,
}

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
static TSM_PML4: AtomicU64 = AtomicU64::new(0);

/// The local APIC's MMIO page (xAPIC mode), mapped supervisor-only at its physical address.
pub const LAPIC_BASE: u64 = 0xFEE0_0000;

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

    /// The 4 KiB leaf entry for `va` (see [`Self::entry_at`]).
    fn leaf(&mut self, va: u64, create: bool, user: bool) -> Result<*mut u64, PagingError> {
        self.entry_at(va, 12, create, user)
    }

    fn check_host_granule(&self, pa: Pa) -> Result<(), PagingError> {
        if !pa.is_granule_aligned() {
            return Err(PagingError::Misaligned);
        }
        if !self.dram.contains(pa, GRANULE_SIZE) {
            return Err(PagingError::NotDram);
        }
        if self.tsm.contains(pa, GRANULE_SIZE) {
            return Err(PagingError::TsmMemory);
        }
        Ok(())
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

    /// Sets or clears U on the 4 KiB page of a host granule (splitting its 2 MiB page first if
    /// it has one), then drops its TLB entries.
    fn set_user(&mut self, pa: Pa, user: bool) -> Result<(), PagingError> {
        self.check_host_granule(pa)?;
        let pde = self.pd_entry(pa.0)?;
        // SAFETY: `pde` is a PD entry inside a pool page (see `pd_entry`); we hold the lock.
        let mut table = unsafe { pde.read_volatile() };
        if table & PRESENT == 0 {
            return Err(PagingError::NotReady);
        }
        let split = table & LARGE != 0;
        if split {
            if (table & USER != 0) == user {
                return Ok(());
            }
            table = self.split(pde, table)?;
        }
        let e = entry(table & ADDR_MASK, (pa.0 >> 12) & (ENTRIES - 1));
        // SAFETY: `e` is an entry of the PT that the present, non-large PD entry points at (a
        // pool page); we hold the lock.
        unsafe {
            let v = e.read_volatile();
            e.write_volatile(if user { v | USER } else { v & !USER });
        }
        if split {
            // The 2 MiB entry may be cached as such: drop everything.
            cpu::flush_tlb();
        } else {
            cpu::invlpg(pa.0);
        }
        // The host runs on these tables on every CPU: a stale entry elsewhere would keep a
        // delegated granule reachable (or fault on one just given back).
        smp::shootdown(None);
        Ok(())
    }

    /// The 4 KiB entry of the host BAR page at `pa`, its 2 MiB page split first if it has one
    /// (the pool counts a table for every 2 MiB of every MMIO range, see [`pool_pages`]).
    fn bar_leaf(&mut self, pa: Pa) -> Result<*mut u64, MmioRefused> {
        let in_bar = self
            .bars
            .get(..self.bar_count)
            .unwrap_or(&[])
            .iter()
            .any(|b| b.contains(pa, GRANULE_SIZE));
        if !pa.is_granule_aligned() || !in_bar {
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
            // The 2 MiB entry may be cached as such.
            cpu::flush_tlb();
        }
        Ok(entry(table & ADDR_MASK, (pa.0 >> 12) & (ENTRIES - 1)))
    }

    /// Clears (`user` false) or sets U on the host BAR page at `pa`, then drops its TLB entries
    /// on every CPU. The TSM keeps its supervisor mapping and never uses it.
    fn set_bar_user(&mut self, pa: Pa, user: bool) -> Result<(), MmioRefused> {
        let e = self.bar_leaf(pa)?;
        // SAFETY: `e` is an entry of the PT the present, non-large PD entry points at (a pool
        // page); we hold the lock.
        let v = unsafe { e.read_volatile() };
        if v & PRESENT == 0 {
            return Err(MmioRefused::NotDeviceMemory);
        }
        match (v & USER != 0, user) {
            (false, false) => return Err(MmioRefused::Taken),
            (true, true) => return Err(MmioRefused::NotTaken),
            _ => {}
        }
        // SAFETY: as above.
        unsafe { e.write_volatile(if user { v | USER } else { v & !USER }) };
        cpu::invlpg(pa.0);
        smp::shootdown(None);
        Ok(())
    }

    /// Maps `[start, end)` of DRAM with 4 KiB pages: the TSM's own with its rights, the rest
    /// for the host.
    fn map_small(&mut self, start: u64, end: u64, l: &Layout) -> Result<(), PagingError> {
        let mut pa = start;
        while pa < end {
            let flags = if self.tsm.contains(Pa(pa), GRANULE_SIZE) {
                tsm_flags(l, pa)
            } else {
                PRESENT | WRITABLE | USER
            };
            let e = self.leaf(pa, true, true)?;
            // SAFETY: `e` is a leaf entry inside a pool page; the lock is held and the tables
            // are not live yet.
            unsafe { e.write_volatile(if flags == 0 { 0 } else { pa | flags }) };
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
fn spans(start: u64, end: u64, shift: u32) -> u64 {
    ((end - 1) >> shift) - (start >> shift) + 1
}

/// Tables below the PML4 for `[start, end)`: PDPTs, PDs, PTs.
pub(super) fn tables_for(start: u64, end: u64) -> u64 {
    spans(start, end, 39) + spans(start, end, 30) + spans(start, end, 21)
}

/// The pool, in pages, that maps `dram` with 4 KiB pages everywhere (what boot and every later
/// split can take), plus the PML4, the alias region, the local APIC and `mmio` (a table shared
/// by two of them is counted twice); `None` if `dram` is empty or wraps.
pub fn pool_pages(dram: &MemRange, mmio: &[Mmio]) -> Option<u64> {
    let end = dram.base.0.checked_add(dram.size)?;
    if end <= dram.base.0 {
        return None;
    }
    let mmio_tables = mmio
        .iter()
        .map(|m| tables_for(m.base, m.base + m.size))
        .sum::<u64>();
    Some(
        1 + tables_for(dram.base.0, end)
            + tables_for(alias::TEXT, alias::cpu_block(MAX_CPUS))
            + tables_for(LAPIC_BASE, LAPIC_BASE + GRANULE_SIZE)
            + mmio_tables,
    )
}

/// Builds the tables for `dram` from `pool` (pages [`pool_pages`] counted), the TSM's range
/// `tsm` in it supervisor-only, and `mmio` (uncached, never executable), and switches to them.
pub fn init(
    dram: MemRange,
    tsm: MemRange,
    pool: MemRange,
    l: &Layout,
    mmio: &[Mmio],
) -> Result<(), PagingError> {
    let mut guard = TABLES.lock();
    let mut t = Tables {
        pml4: 0,
        alias_entry: 0,
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
    let tsm_end = tsm.base.0 + tsm.size;
    let mut pa = dram.base.0;
    while pa < end {
        let next = (pa | (LARGE_SIZE - 1)).saturating_add(1).min(end);
        let whole = pa.is_multiple_of(LARGE_SIZE) && next - pa == LARGE_SIZE;
        if whole && (next <= tsm.base.0 || pa >= tsm_end) {
            let pde = t.entry_at(pa, 21, true, true)?;
            // SAFETY: `pde` is a PD entry inside a pool page; the lock is held and the tables
            // are not live yet.
            unsafe { pde.write_volatile(pa | PRESENT | WRITABLE | USER | LARGE) };
        } else {
            t.map_small(pa, next, l)?;
        }
        pa = next;
    }
    for page in alias::pages(l) {
        let e = t.leaf(page.va, true, false)?;
        let flags = match page.kind {
            alias::Kind::Text => PRESENT,
            alias::Kind::Data => PRESENT | WRITABLE | NO_EXECUTE,
        };
        // SAFETY: as above; the alias pages are supervisor-only (no U at any level).
        unsafe { e.write_volatile(page.pa | flags) };
    }
    let lapic = t.leaf(LAPIC_BASE, true, false)?;
    // SAFETY: as above; the local APIC page is supervisor-only, uncached, never executed.
    unsafe { lapic.write_volatile(LAPIC_BASE | PRESENT | WRITABLE | UNCACHED | NO_EXECUTE) };
    for m in mmio {
        let (user, flags) = match m.access {
            Access::Tsm => (false, WRITABLE),
            Access::HostReadWrite | Access::HostBar => (true, USER | WRITABLE),
            Access::HostReadOnly => (true, USER),
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
            // (for the host's) the VT-d registers, so no page the TSM keeps gets a user leaf.
            unsafe { e.write_volatile(pa | PRESENT | UNCACHED | NO_EXECUTE | flags | page) };
            pa += size;
        }
    }
    // SAFETY: entry 511 of the PML4 (a pool page) was created by the alias loop above.
    t.alias_entry = unsafe { entry(t.pml4, ALIAS_PML4_INDEX).read_volatile() };
    // SAFETY: the new tables identity-map the whole TSM image, stacks (bar guard pages) and
    // carve-out at the same addresses, so the code, stack and data in use stay reachable.
    // CR0.WP makes ring 0 honour read-only pages.
    unsafe {
        cpu::set_cr3(t.pml4);
        cpu::set_cr0(cpu::cr0() | cpu::CR0_WP);
    }
    TSM_PML4.store(t.pml4, Ordering::Release);
    *guard = Some(t);
    Ok(())
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

/// Gives a TVM's root table the alias region (PML4 entry 511, supervisor-only), so that a
/// trap from the TVM reaches the trampoline. The core writes only entries below 256 (TVM
/// addresses stay in the lower canonical half); the root is a TSM-owned TABLE granule in
/// DRAM, `root` granule-aligned (the caller passes the core's root).
pub fn install_alias(root: u64) -> Result<(), PagingError> {
    let guard = TABLES.lock();
    let t = guard.as_ref().ok_or(PagingError::NotReady)?;
    if !root.is_multiple_of(GRANULE_SIZE) {
        return Err(PagingError::Misaligned);
    }
    if !t.dram.contains(Pa(root), GRANULE_SIZE) || t.tsm.contains(Pa(root), GRANULE_SIZE) {
        return Err(PagingError::Refused);
    }
    let e = entry(root, ALIAS_PML4_INDEX);
    // SAFETY: `root` is a DRAM granule outside the TSM's range, identity-mapped read-write for
    // ring 0 (a TABLE granule is delegated: U clear, so no SMAP bracket is needed); one
    // aligned 8-byte store, so a concurrent walker sees the old or the new entry.
    unsafe {
        if e.read_volatile() != t.alias_entry {
            e.write_volatile(t.alias_entry);
        }
    }
    Ok(())
}

/// Takes a granule away from the host: ring 3 faults on it from the moment this returns (this
/// CPU's TLB entry is dropped, every other CPU's through a shootdown).
pub fn unmap_from_host(pa: Pa) -> Result<(), PagingError> {
    TABLES
        .lock()
        .as_mut()
        .ok_or(PagingError::NotReady)?
        .set_user(pa, false)
}

/// Gives a granule back to the host.
pub fn map_to_host(pa: Pa) -> Result<(), PagingError> {
    TABLES
        .lock()
        .as_mut()
        .ok_or(PagingError::NotReady)?
        .set_user(pa, true)
}

/// Takes a page of a host BAR away from the host (ring 3 faults on it from the moment this
/// returns, on every CPU), for a TVM's private MMIO.
pub fn take_mmio(pa: Pa) -> Result<(), MmioRefused> {
    TABLES
        .lock()
        .as_mut()
        .ok_or(MmioRefused::NotDeviceMemory)?
        .set_bar_user(pa, false)
}

/// Gives a BAR page [`take_mmio`] took back to the host.
pub fn give_mmio(pa: Pa) -> Result<(), MmioRefused> {
    TABLES
        .lock()
        .as_mut()
        .ok_or(MmioRefused::NotDeviceMemory)?
        .set_bar_user(pa, true)
}

/// Table pages in use and the pool's capacity, in pages (for the banner).
pub fn pool_usage() -> (u64, u64) {
    TABLES.lock().as_ref().map_or((0, 0), |t| {
        (
            (t.pool_next - t.pool_start) / GRANULE_SIZE,
            (t.pool_end - t.pool_start) / GRANULE_SIZE,
        )
    })
}
