//! The TSM image's layout, from the symbols `link/x86_64-tsm.ld` defines, and the part of the
//! carve-out boot sizes from DRAM: the core's granule descriptors, the page-table pool, the
//! VT-d tables and the SVM pages of the CPUs the MADT lists.
//!
//! The linker lays out the image and the static carve-out (boot tables, stacks); boot carves
//! the rest right after it, up to `__tsm_limit` (the host boot-parameters page), so the TSM's
//! memory stays one range that the core marks RESERVED and the host's nested table never maps.

use core::sync::atomic::{AtomicU16, AtomicU64};

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Pa};

use crate::platform::MemRange;

unsafe extern "C" {
    static __tsm_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __carveout_static_end: u8;
    static __tsm_limit: u8;
    static __stack_guard: u8;
    static __stack_top: u8;
    static __ap_stacks_start: u8;
    static __ap_stacks_end: u8;
}

/// Where the pieces of the TSM image are.
pub struct Layout {
    /// Image and static carve-out; boot extends it with [`carve`].
    pub image: MemRange,
    /// First byte the TSM's memory may not reach.
    pub limit: u64,
    /// End of the executable text.
    pub text_end: u64,
    /// End of the read-only data.
    pub rodata_end: u64,
    /// The unmapped page below the boot CPU's stack.
    pub stack_guard: u64,
    /// The boot CPU's stack top.
    pub stack_top: u64,
    /// The secondary CPUs' TSM stacks: each `ap_stack_stride` bytes, a guard page first.
    pub ap_stacks: MemRange,
    /// Bytes per secondary CPU stack, guard page included.
    pub ap_stack_stride: u64,
}

macro_rules! addr {
    ($sym:ident) => {
        core::ptr::addr_of!($sym) as u64
    };
}

/// Bytes per secondary CPU stack slot, guard page included (`__ap_stack_stride` in
/// `link/x86_64-tsm.ld` reserves the same).
pub const AP_STACK_STRIDE: u64 = 0x21000;

/// Reads the layout.
pub fn layout() -> Layout {
    let start = addr!(__tsm_start);
    Layout {
        image: MemRange {
            base: Pa(start),
            size: addr!(__carveout_static_end) - start,
        },
        limit: addr!(__tsm_limit),
        text_end: addr!(__text_end),
        rodata_end: addr!(__rodata_end),
        stack_guard: addr!(__stack_guard),
        stack_top: addr!(__stack_top),
        ap_stacks: MemRange {
            base: Pa(addr!(__ap_stacks_start)),
            size: addr!(__ap_stacks_end) - addr!(__ap_stacks_start),
        },
        ap_stack_stride: AP_STACK_STRIDE,
    }
}

impl Layout {
    /// CPU `cpu`'s TSM stack, as words (lowest first) below `below`, for `crate::stack_use`;
    /// empty for a CPU without one.
    ///
    /// # Safety
    /// The caller stores only to words nothing lives in (below that CPU's SP, with a margin for
    /// the frames of the store loop, or a stack no CPU runs on yet); loads are always sound (a
    /// word pushed meanwhile reads as used).
    pub unsafe fn stack_words(&self, cpu: usize, below: u64) -> &'static [AtomicU64] {
        let (bottom, top) = match cpu {
            0 => (self.stack_guard + GRANULE_SIZE, self.stack_top),
            n => {
                let top = self.ap_stacks.base.0 + n as u64 * self.ap_stack_stride;
                if top > self.ap_stacks.base.0 + self.ap_stacks.size {
                    return &[];
                }
                (top - self.ap_stack_stride + GRANULE_SIZE, top)
            }
        };
        let top = top.min(below & !7);
        // SAFETY: [bottom, top) is a TSM stack of the static carve-out (identity-mapped
        // read-write for ring 0, 8 aligned), between its guard page and its top; the caller's
        // stores keep off live data (contract above).
        unsafe {
            core::slice::from_raw_parts(
                bottom as *const AtomicU64,
                (top.saturating_sub(bottom) / 8) as usize,
            )
        }
    }

    /// CPU `cpu`'s TSM stack size in bytes (0 without one).
    pub fn stack_size(&self, cpu: usize) -> u64 {
        // SAFETY: no stores are made through the slice.
        (unsafe { self.stack_words(cpu, u64::MAX) }).len() as u64 * 8
    }

    /// Whether `pa` is a stack guard page (left unmapped).
    pub fn is_guard_page(&self, pa: u64) -> bool {
        pa == self.stack_guard
            || super::percpu::is_guard_page(pa)
            || (self.ap_stacks.contains(Pa(pa), 1)
                && (pa - self.ap_stacks.base.0).is_multiple_of(self.ap_stack_stride))
    }
}

/// What boot carved for a DRAM size.
pub struct CarveOut {
    /// The TSM's whole memory: image, static carve-out and what follows.
    pub tsm: MemRange,
    /// The core's granule descriptors, one per DRAM granule, zeroed (what the core takes).
    pub descriptors: &'static [AtomicU16],
    /// The page-table pool (granule-aligned, not zeroed: `paging` zeroes each table it takes).
    pub pt_pool: MemRange,
    /// The VT-d tables' pool (granule-aligned, not zeroed; empty without VT-d).
    pub iommu_pool: MemRange,
    /// The CPUs' SVM pages (`svm::CPU_PAGES_BYTES` each, granule-aligned, zeroed).
    pub cpu_pages: MemRange,
}

/// Why the carve-out cannot hold what `dram` needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub struct CarveOutTooSmall {
    /// Bytes needed after the static carve-out.
    pub needed: u64,
    /// Bytes there are before the limit (or the end of DRAM).
    pub available: u64,
}

/// Carves one descriptor per granule of `dram`, `pool_pages` page tables, `iommu_pages` VT-d
/// tables and `cpu_pages_bytes` of SVM pages after the static carve-out.
///
/// # Safety
/// Called once, on the boot CPU, before anything else uses the memory after the static
/// carve-out: the descriptors are handed out as `'static` shared memory for good.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub unsafe fn carve(
    l: &Layout,
    dram: &MemRange,
    pool_pages: u64,
    iommu_pages: u64,
    cpu_pages_bytes: u64,
) -> Result<CarveOut, CarveOutTooSmall> {
    let start = l.image.base.0 + l.image.size;
    let end = l.limit.min(dram.base.0.saturating_add(dram.size));
    let available = end.saturating_sub(start);
    let granules = dram.size >> GRANULE_SHIFT;
    let sizes = granules
        .checked_mul(core::mem::size_of::<AtomicU16>() as u64)
        .and_then(|d| d.checked_next_multiple_of(GRANULE_SIZE))
        .zip(pool_pages.checked_mul(GRANULE_SIZE))
        .zip(iommu_pages.checked_mul(GRANULE_SIZE))
        .zip(cpu_pages_bytes.checked_next_multiple_of(GRANULE_SIZE));
    let too_small = |needed| CarveOutTooSmall { needed, available };
    let (((desc_bytes, pool_bytes), iommu_bytes), cpu_bytes) = sizes.ok_or(too_small(u64::MAX))?;
    let needed = desc_bytes
        .saturating_add(pool_bytes)
        .saturating_add(iommu_bytes)
        .saturating_add(cpu_bytes);
    let n = usize::try_from(granules).map_err(|_| too_small(needed))?;
    if needed > available || !dram.contains(l.image.base, l.image.size) {
        return Err(too_small(needed));
    }
    // SAFETY: [start, start + desc_bytes) lies between the static carve-out and the limit,
    // inside DRAM (checked above), identity-mapped, and used by nothing else (the caller's
    // contract): zeroing it (the core takes its descriptors zeroed) touches nothing else.
    unsafe { super::platform::zero(start as *mut u8, desc_bytes as usize) };
    // SAFETY: as above; it is 4 KiB-aligned, and every bit pattern is a valid `AtomicU16`.
    let descriptors = unsafe { core::slice::from_raw_parts(start as *const AtomicU16, n) };
    let cpu_pages = start + desc_bytes + pool_bytes + iommu_bytes;
    // SAFETY: as for the descriptors: after them and the pools, below `start + needed`.
    unsafe { super::platform::zero(cpu_pages as *mut u8, cpu_bytes as usize) };
    Ok(CarveOut {
        tsm: MemRange {
            base: l.image.base,
            size: start + needed - l.image.base.0,
        },
        descriptors,
        pt_pool: MemRange {
            base: Pa(start + desc_bytes),
            size: pool_bytes,
        },
        iommu_pool: MemRange {
            base: Pa(start + desc_bytes + pool_bytes),
            size: iommu_bytes,
        },
        cpu_pages: MemRange {
            base: Pa(cpu_pages),
            size: cpu_bytes,
        },
    })
}
