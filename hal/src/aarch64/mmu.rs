//! The TSM's own (EL2 stage-1) translation: an identity map of the first GiB as device memory
//! (the `virt` MMIO window, the PL011 among it) and of DRAM as normal write-back memory, so
//! atomics, unaligned accesses and caches behave as the compiler expects.

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::Pa;

use super::sysreg::{isb, read_sysreg, write_sysreg};
use crate::platform::MemRange;

/// Entries per 4 KiB table.
const ENTRIES: usize = 512;
const L1_SHIFT: u32 = 30;
const L2_SHIFT: u32 = 21;
const GIB: u64 = 1 << L1_SHIFT;
const MIB2: u64 = 1 << L2_SHIFT;
const PAGE_SHIFT: u32 = 12;
const PAGE: u64 = 1 << PAGE_SHIFT;
/// Virtual address bits: 39 (T0SZ = 25) makes the walk start at level 1 with one table.
const VA_BITS: u64 = 39;
/// The first address past the translated range: [`enable`] refuses DRAM beyond it, so nothing
/// is ever mapped there (the harness self-test's fault target).
pub const UNTRANSLATED: u64 = 1 << VA_BITS;

/// A translation table, as the walker reads it; edited with single atomic stores.
#[repr(C, align(4096))]
pub struct Table(pub [AtomicU64; ENTRIES]);

impl Table {
    pub fn addr(&self) -> u64 {
        self.0.as_ptr() as u64
    }
}

/// Tables [`enable`] needs: the level-1 table, the level-3 table around the stack guard page,
/// and a level-2 table for each GiB DRAM covers only partly (at most two) or that holds the
/// guard page.
pub const TABLES: usize = 5;

/// Descriptor bits (VMSAv8-64, stage 1, EL2 regime).
const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE: u64 = 0b11;
/// MAIR_EL2 index 0: Device-nGnRnE; index 1: Normal, inner/outer write-back RW-allocate.
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const MAIR: u64 = 0xFF << 8;
/// AP[2:1] = 0b01: read/write (AP[1] is RES1 in the EL2 regime).
const AP_RW: u64 = 1 << 6;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// Execute-never (the EL2 regime has a single XN bit).
const XN: u64 = 1 << 54;
const DEVICE_BLOCK: u64 = VALID_BLOCK | ATTR_DEVICE | AP_RW | AF | XN;
const NORMAL_BLOCK: u64 = VALID_BLOCK | ATTR_NORMAL | AP_RW | SH_INNER | AF;
/// A level-3 page has the table bit pattern.
const NORMAL_PAGE: u64 = VALID_TABLE | ATTR_NORMAL | AP_RW | SH_INNER | AF;

/// TCR_EL2: T0SZ = 25, inner/outer WBWA walks, inner shareable, 4 KiB granule, RES1 bits 23/31.
const TCR_BASE: u64 =
    (64 - VA_BITS) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (1 << 31);
/// SCTLR_EL2: RES1 bits, M (MMU), C (data cache), I (instruction cache); A (alignment
/// checks) stays off.
const SCTLR_EL2: u64 = 0x30C5_0830 | (1 << 0) | (1 << 2) | (1 << 12);

/// Physical address size for TCR_EL2.PS / VTCR_EL2.PS: the CPU's, capped at 48 bits (52-bit
/// output needs the LPA2 descriptor format, which these tables do not use).
pub fn pa_size_field() -> u64 {
    (read_sysreg!("id_aa64mmfr0_el1") & 0xF).min(0b101)
}

/// Why stage-1 cannot map DRAM.
#[derive(Clone, Copy, Debug)]
pub struct MapError;

/// Builds the identity map for `dram` (2 MiB aligned, see `memmap`) in `tables` ([`TABLES`]
/// zeroed tables of the carve-out), leaving the 4 KiB page at `guard` unmapped (below the boot
/// stack: an overflow faults instead of running into the image), and turns the MMU on. Runs
/// once, on the boot CPU, with the MMU off.
pub fn enable(dram: &MemRange, tables: &'static [Table], guard: u64) -> Result<(), MapError> {
    let (l1, rest) = tables.split_first().ok_or(MapError)?;
    let (l3, l2s) = rest.split_first().ok_or(MapError)?;
    let mut l2s = l2s.iter();
    l1.0[0].store(DEVICE_BLOCK, Ordering::Relaxed);
    let (start, end) = (
        dram.base.0,
        dram.base.0.checked_add(dram.size).ok_or(MapError)?,
    );
    if start < GIB || end > UNTRANSLATED || !dram.contains(Pa(guard), PAGE) {
        return Err(MapError);
    }
    let mut gib = start - start % GIB;
    while gib < end {
        let slot = l1.0.get((gib >> L1_SHIFT) as usize).ok_or(MapError)?;
        let (lo, hi) = (start.max(gib), end.min(gib + GIB));
        if lo == gib && hi == gib + GIB && guard >> L1_SHIFT != gib >> L1_SHIFT {
            slot.store(gib | NORMAL_BLOCK, Ordering::Relaxed);
        } else {
            let l2 = l2s.next().ok_or(MapError)?;
            let mut block = lo;
            while block < hi {
                let entry = &l2.0[((block - gib) >> L2_SHIFT) as usize];
                if guard >> L2_SHIFT == block >> L2_SHIFT {
                    for (i, page) in l3.0.iter().enumerate() {
                        let pa = block + ((i as u64) << PAGE_SHIFT);
                        if pa != guard {
                            page.store(pa | NORMAL_PAGE, Ordering::Relaxed);
                        }
                    }
                    entry.store(l3.addr() | VALID_TABLE, Ordering::Relaxed);
                } else {
                    entry.store(block | NORMAL_BLOCK, Ordering::Relaxed);
                }
                block += MIB2;
            }
            slot.store(l2.addr() | VALID_TABLE, Ordering::Relaxed);
        }
        gib += GIB;
    }
    let tcr = TCR_BASE | (pa_size_field() << 16);
    // SAFETY: the tables map the TSM's code, data and stack (all in DRAM) to themselves and the
    // UART as device memory, so execution continues at the same addresses once M is set; the
    // barriers make the table stores visible to the walker first and drop stale translations.
    unsafe {
        core::arch::asm!("dsb ish", options(nostack, preserves_flags));
        write_sysreg!("mair_el2", MAIR);
        write_sysreg!("tcr_el2", tcr);
        write_sysreg!("ttbr0_el2", l1.addr());
        isb();
        core::arch::asm!("tlbi alle2", "dsb ish", options(nostack, preserves_flags));
        isb();
        write_sysreg!("sctlr_el2", SCTLR_EL2);
    }
    isb();
    Ok(())
}
