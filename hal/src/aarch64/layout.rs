//! Where the TSM's memory is: the image, then the carve-out (link/aarch64-tsm.ld).
//!
//! The carve-out starts with the boot stack (laid out by the linker) and goes on with what boot
//! sizes from the DRAM size: the translation tables and the core's granule descriptors. The
//! TSM's memory must end below `__tsm_limit`, the host boot-parameters page.

use core::sync::atomic::{AtomicU16, AtomicU64};

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::mmu::Table;
use crate::platform::MemRange;

unsafe extern "C" {
    /// First byte of the image.
    static __tsm_start: u8;
    /// First byte after the boot stack: where boot-sized parts go (granule-aligned).
    static __carveout_static_end: u8;
    /// First byte the TSM's memory may not reach.
    static __tsm_limit: u8;
    /// The unmapped page below the boot stack.
    static __boot_stack_guard: u8;
    /// The boot stack's top.
    static __boot_stack_top: u8;
}

/// The page below the boot stack, which stage-1 leaves unmapped.
pub fn boot_stack_guard() -> u64 {
    core::ptr::addr_of!(__boot_stack_guard) as u64
}

/// The boot CPU's stack, as words (lowest first), up to `below`, for [`crate::stack_use`].
///
/// # Safety
/// The caller stores only to words nothing lives in (below the boot CPU's SP, on the boot CPU,
/// with a margin for the frames of the store loop); loads are always sound (a word pushed
/// meanwhile reads as used).
pub unsafe fn boot_stack_words(below: u64) -> &'static [AtomicU64] {
    let bottom = boot_stack_guard() + GRANULE_SIZE;
    let top = (core::ptr::addr_of!(__boot_stack_top) as u64).min(below & !7);
    let words = top.saturating_sub(bottom) / 8;
    // SAFETY: [bottom, top) is the boot stack in the carve-out (identity-mapped read-write, 8
    // aligned), the TSM's alone; the caller's stores keep off live data (contract above).
    unsafe { core::slice::from_raw_parts(bottom as *const AtomicU64, words as usize) }
}

/// The boot stack's size in bytes.
pub fn boot_stack_size() -> u64 {
    core::ptr::addr_of!(__boot_stack_top) as u64 - (boot_stack_guard() + GRANULE_SIZE)
}

/// Bytes of `n` granule descriptors, rounded up to whole granules.
pub fn descriptor_bytes(n: u64) -> Option<u64> {
    n.checked_mul(core::mem::size_of::<AtomicU16>() as u64)?
        .checked_next_multiple_of(GRANULE_SIZE)
}

/// The most the TSM's memory may span: from the image's start to the limit.
pub fn tsm_most() -> MemRange {
    let start = core::ptr::addr_of!(__tsm_start) as u64;
    let limit = core::ptr::addr_of!(__tsm_limit) as u64;
    MemRange {
        base: Pa(start),
        size: limit - start,
    }
}

/// The TSM's memory once `bytes` (granule multiple) are carved out, if it fits below the
/// limit and inside `dram`.
pub fn tsm_range(bytes: u64, dram: &MemRange) -> Option<MemRange> {
    let start = core::ptr::addr_of!(__tsm_start) as u64;
    let dynamic = core::ptr::addr_of!(__carveout_static_end) as u64;
    let limit = core::ptr::addr_of!(__tsm_limit) as u64;
    let end = dynamic.checked_add(bytes)?;
    let range = MemRange {
        base: Pa(start),
        size: end.checked_sub(start)?,
    };
    (end <= limit && dram.contains(range.base, range.size)).then_some(range)
}

/// The part of the carve-out that boot hands out.
pub struct CarveOut {
    next: u64,
}

impl CarveOut {
    /// The boot-sized part of the carve-out, empty so far.
    ///
    /// # Safety
    /// Called once, on the boot CPU: everything it hands out is memory no one else uses.
    pub unsafe fn new() -> Self {
        CarveOut {
            next: core::ptr::addr_of!(__carveout_static_end) as u64,
        }
    }

    /// Takes `size` bytes (granule multiple), zeroed, inside `tsm` (a range [`tsm_range`]
    /// returned); their address.
    fn take_zeroed(&mut self, size: u64, tsm: &MemRange) -> Option<u64> {
        if !tsm.contains(Pa(self.next), size) || !size.is_multiple_of(GRANULE_SIZE) {
            return None;
        }
        let base = self.next;
        self.next += size;
        // SAFETY: [base, base + size) is carve-out memory inside the TSM's range (checked
        // above), handed out once (the cursor moved past it), identity-mapped.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, size as usize) };
        Some(base)
    }

    /// `n` zeroed translation tables.
    pub fn tables(&mut self, n: usize, tsm: &MemRange) -> Option<&'static [Table]> {
        let base = self.take_zeroed((n as u64).checked_mul(GRANULE_SIZE)?, tsm)?;
        // SAFETY: `take_zeroed` handed out these granule-aligned bytes for good; all-zero bytes
        // are valid `AtomicU64`s, and the tables are only ever changed through them.
        Some(unsafe { core::slice::from_raw_parts(base as *const Table, n) })
    }

    /// `n` zeroed translation tables (or queue pages) starting at a multiple of `align` bytes
    /// (a power of two, at least a granule): SMMU tables and queues must be aligned to their
    /// size. The granules skipped to get there stay in the TSM's memory, unused.
    pub fn aligned_tables(
        &mut self,
        n: usize,
        align: u64,
        tsm: &MemRange,
    ) -> Option<&'static [Table]> {
        self.next = self.next.checked_next_multiple_of(align)?;
        self.tables(n, tsm)
    }

    /// A stack of `size` bytes (granule multiple), painted for [`crate::stack_use`]; its top.
    pub fn stack(&mut self, size: u64, tsm: &MemRange) -> Option<u64> {
        if !tsm.contains(Pa(self.next), size) || !size.is_multiple_of(GRANULE_SIZE) {
            return None;
        }
        let base = self.next;
        self.next += size;
        // SAFETY: [base, base + size) is carve-out memory inside the TSM's range (checked
        // above), handed out once (the cursor moved past it), identity-mapped, 8 aligned.
        let words =
            unsafe { core::slice::from_raw_parts(base as *const AtomicU64, (size / 8) as usize) };
        crate::stack_use::paint(words);
        base.checked_add(size)
    }

    /// `n` zeroed granule descriptors for the core.
    pub fn descriptors(&mut self, n: usize, tsm: &MemRange) -> Option<&'static [AtomicU16]> {
        let base = self.take_zeroed(descriptor_bytes(n as u64)?, tsm)?;
        // SAFETY: as in `tables`: exclusive, aligned, zeroed bytes are valid `AtomicU16`s.
        Some(unsafe { core::slice::from_raw_parts(base as *const AtomicU16, n) })
    }
}
