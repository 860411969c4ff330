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
    static __ap_stacks_start: u8;
    static __ap_stacks_end: u8;
    static __trampoline_start: u8;
    static __trampoline_end: u8;
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
    /// The unmapped page below the boot CPU's stack.
    pub stack_guard: u64,
    /// The secondary CPUs' TSM stacks: each `ap_stack_stride` bytes, a guard page first.
    pub ap_stacks: MemRange,
    /// Bytes per secondary CPU stack, guard page included.
    pub ap_stack_stride: u64,
    /// The trampoline text (`.text.trampoline`, page-aligned), aliased at `alias::TEXT`.
    pub trampoline_start: u64,
    /// Its end (page-aligned).
    pub trampoline_end: u64,
    /// The page-table pool.
    pub pt_pool: MemRange,
}

macro_rules! addr {
    ($sym:ident) => {
        core::ptr::addr_of!($sym) as u64
    };
}

/// Bytes per secondary CPU stack slot, guard page included (`__ap_stack_stride` in
/// `link/x86_64-tsm.ld` reserves the same).
pub const AP_STACK_STRIDE: u64 = 0x41000;

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
        stack_guard: addr!(__stack_guard),
        ap_stacks: MemRange {
            base: Pa(addr!(__ap_stacks_start)),
            size: addr!(__ap_stacks_end) - addr!(__ap_stacks_start),
        },
        ap_stack_stride: AP_STACK_STRIDE,
        trampoline_start: addr!(__trampoline_start),
        trampoline_end: addr!(__trampoline_end),
        pt_pool: MemRange {
            base: Pa(pool),
            size: addr!(__pt_pool_end) - pool,
        },
    }
}

impl Layout {
    /// Whether `pa` is a stack guard page (left unmapped).
    pub fn is_guard_page(&self, pa: u64) -> bool {
        pa == self.stack_guard
            || (self.ap_stacks.contains(Pa(pa), 1)
                && (pa - self.ap_stacks.base.0).is_multiple_of(self.ap_stack_stride))
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
