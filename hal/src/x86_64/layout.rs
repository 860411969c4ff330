//! The TSM image's layout, from the symbols `link/x86_64-tsm.ld` defines, and the core's
//! granule descriptors, which live in the TSM's BSS (inside its range, never host-mapped).

use core::sync::atomic::AtomicU16;

use tsm_abi::addr::{GRANULE_SHIFT, Pa};

use crate::platform::MemRange;

unsafe extern "C" {
    static __tsm_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __tsm_end: u8;
    static __stack_guard: u8;
    static __trap_stack_guard: u8;
    static __trap_stack_top: u8;
    static __ist_stack_guard: u8;
    static __ist_stack_top: u8;
    static __pt_pool_start: u8;
    static __pt_pool_end: u8;
}

/// Where the pieces of the TSM image are.
pub struct Layout {
    /// Image and carve-out.
    pub tsm: MemRange,
    /// End of the executable text.
    pub text_end: u64,
    /// End of the read-only data.
    pub rodata_end: u64,
    /// Unmapped pages below each stack.
    pub guard_pages: [u64; 3],
    /// Top of the stack traps from ring 3 land on (TSS.RSP0).
    pub trap_stack_top: u64,
    /// Top of the stack of NMI, #DF and #MC (IST1).
    pub ist_stack_top: u64,
    /// The page-table pool.
    pub pt_pool: MemRange,
}

macro_rules! addr {
    ($sym:ident) => {
        core::ptr::addr_of!($sym) as u64
    };
}

/// Reads the layout.
pub fn layout() -> Layout {
    let start = addr!(__tsm_start);
    let pool = addr!(__pt_pool_start);
    Layout {
        tsm: MemRange {
            base: Pa(start),
            size: addr!(__tsm_end) - start,
        },
        text_end: addr!(__text_end),
        rodata_end: addr!(__rodata_end),
        guard_pages: [
            addr!(__stack_guard),
            addr!(__trap_stack_guard),
            addr!(__ist_stack_guard),
        ],
        trap_stack_top: addr!(__trap_stack_top),
        ist_stack_top: addr!(__ist_stack_top),
        pt_pool: MemRange {
            base: Pa(pool),
            size: addr!(__pt_pool_end) - pool,
        },
    }
}

/// The DRAM the carve-out is sized for: the page-table pool (`__pt_pool_pages`) and the
/// granule descriptors below both cover this much.
pub const MAX_DRAM: u64 = 1 << 30;

static GRANULE_DESCRIPTORS: [AtomicU16; (MAX_DRAM >> GRANULE_SHIFT) as usize] =
    [const { AtomicU16::new(0) }; (MAX_DRAM >> GRANULE_SHIFT) as usize];

/// The core's per-granule descriptors, one per granule of `dram_size` (all of them if DRAM is
/// larger than [`MAX_DRAM`]; the core then refuses to start).
pub fn granule_descriptors(dram_size: u64) -> &'static [AtomicU16] {
    let n = usize::try_from(dram_size >> GRANULE_SHIFT).unwrap_or(usize::MAX);
    GRANULE_DESCRIPTORS.get(..n).unwrap_or(&GRANULE_DESCRIPTORS)
}
