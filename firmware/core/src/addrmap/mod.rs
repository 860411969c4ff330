//! TVM address maps: four-level translation tables (level 0 = root .. level 3 = 4 KiB pages)
//! in granules the host donated. One map per TVM is the single source of truth for the CPU (the
//! platform walks it as the TVM's stage 2 / nested page table) and for the secure vIOMMU's
//! stage 2 ([`crate::Tsm::stage2_lookup`]).
//!
//! The walker only reads and writes entries; granule states and the refcounts of table
//! granules (one per live entry) are kept by the calls in [`crate::calls::memory`], which hold
//! the TVM's lock for every change so a map has one writer at a time.

pub mod format;

use tsm_abi::addr::{GRANULE_SHIFT, Gpa, Pa};
use tsm_platform::{MemFault, PhysMem};

use format::{Entry, PteFormat};

/// Levels of every map: 0 (root) to [`LEAF_LEVEL`].
pub const LEAF_LEVEL: u8 = 3;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// The widest GPA space any map covers (four levels of 9 bits over a 4 KiB page).
pub const MAX_GPA_BITS: u8 = 48;
/// The narrowest GPA space a TVM may ask for.
pub const MIN_GPA_BITS: u8 = 32;

/// Access rights of a page (read is implied: every valid page is readable).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Perms {
    /// Writable.
    pub write: bool,
    /// Executable by the TVM's vCPUs (devices never execute).
    pub exec: bool,
}

/// Whose memory a page is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapKind {
    /// A TVM_PRIVATE granule.
    Private,
    /// An NS granule the host shares with the TVM.
    Shared,
    /// A page of a vdevice's MMIO, at a private GPA (VDEV_MMIO_MAP; docs/abi.md §5.7). Until
    /// the guest validates it (G_VDEV_MMIO_VALIDATE) the entry is recorded but not valid for
    /// the hardware, so the guest's accesses fault; once validated it is device memory
    /// (Arm Device-nGnRE, x86 UC). Never a DMA target: the vIOMMU treats it as unmapped.
    Mmio {
        /// The guest validated it.
        validated: bool,
    },
}

/// A mapped page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leaf {
    /// Its physical address.
    pub pa: Pa,
    /// Its rights.
    pub perms: Perms,
    /// Private or shared.
    pub kind: MapKind,
}

/// Why a walk stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalkError {
    /// No table at this level covers the GPA.
    TableMissing(u8),
    /// The level-3 entry is invalid.
    NotMapped,
    /// An entry at this level is valid but not in a form the TSM writes.
    Foreign(u8),
    /// A table could not be read (platform fault).
    Mem(MemFault),
}

/// Mask of a table index.
const INDEX_MASK: u64 = ENTRIES as u64 - 1;

/// Lowest GPA bit a table at `level` indexes: `GRANULE_SHIFT + 9 * (LEAF_LEVEL - level)`,
/// spelled out so no level can underflow it (levels past the leaf count as the leaf).
const fn level_shift(level: u8) -> u32 {
    const _: () = assert!(GRANULE_SHIFT == 12 && LEAF_LEVEL == 3 && ENTRIES == 512);
    match level {
        0 => 39,
        1 => 30,
        2 => 21,
        _ => 12,
    }
}

/// Index of `gpa`'s entry in a table at `level`.
pub const fn index(gpa: Gpa, level: u8) -> usize {
    ((gpa.0 >> level_shift(level)) & INDEX_MASK) as usize
}

/// Bytes of GPA space one table at `level` covers (level 0: the whole 48-bit space): what
/// its 512 entries, each covering `1 << level_shift(level)`, add up to.
pub const fn table_span(level: u8) -> u64 {
    (ENTRIES as u64) << level_shift(level)
}

/// The entry `raw` at `level`. An all-zero entry, what every unmapped slot holds, is invalid in
/// every format (a test checks it): a walk that ends at one, as every refused lookup of an
/// unmapped GPA does, needs no decoding.
#[inline(always)]
fn decode<F: PteFormat + ?Sized>(fmt: &F, raw: u64, level: u8) -> Entry {
    if raw == 0 {
        Entry::Invalid
    } else {
        fmt.decode(raw, level)
    }
}

/// [`PteFormat::walk`]: from `root` down to the table at `level` (at most [`LEAF_LEVEL`]),
/// then that table's entry for `gpa`. Every table is read through
/// [`PhysMem::read_entry`], which refuses a table outside the memory the TSM may read.
///
/// The table levels run in a loop of their own, the entry at `level` is read after it: inside
/// the loop a level is below the leaf, so the format's decode (inlined) folds to its table test,
/// and the loop carries only the table and the index's shift (a four-level walk of an unmapped
/// GPA cost ~41 instructions per level with the leaf's decode and the level's bookkeeping in
/// the loop, docs/benchmarks.md).
// Inline: into [`PteFormat::walk`] and [`PteFormat::lookup`], the second with a constant level.
#[inline(always)]
fn walk<F: PteFormat + ?Sized>(
    fmt: &F,
    mem: &dyn PhysMem,
    root: Pa,
    gpa: Gpa,
    level: u8,
) -> Result<(Pa, Entry), WalkError> {
    let level = level.min(LEAF_LEVEL);
    let mut table = root;
    for l in 0..level {
        let raw = mem
            .read_entry(table, index(gpa, l))
            .map_err(WalkError::Mem)?;
        table = match decode(fmt, raw, l) {
            Entry::Table(next) => next,
            // l < level <= LEAF_LEVEL: the next level exists and the sum is exact.
            Entry::Invalid => return Err(WalkError::TableMissing(l.saturating_add(1))),
            Entry::Page(_) | Entry::Foreign => return Err(WalkError::Foreign(l)),
        };
    }
    let raw = mem
        .read_entry(table, index(gpa, level))
        .map_err(WalkError::Mem)?;
    Ok((table, decode(fmt, raw, level)))
}

/// [`PteFormat::lookup`]: the walk to [`LEAF_LEVEL`], its leaf entry a page or the reason not.
fn lookup<F: PteFormat + ?Sized>(
    fmt: &F,
    mem: &dyn PhysMem,
    root: Pa,
    gpa: Gpa,
) -> Result<Leaf, WalkError> {
    match walk(fmt, mem, root, gpa, LEAF_LEVEL)?.1 {
        Entry::Page(leaf) => Ok(leaf),
        Entry::Invalid => Err(WalkError::NotMapped),
        Entry::Table(_) | Entry::Foreign => Err(WalkError::Foreign(LEAF_LEVEL)),
    }
}

/// One TVM's map, seen through the platform's memory.
pub struct AddressMap<'a> {
    mem: &'a dyn PhysMem,
    fmt: &'a dyn PteFormat,
    root: Pa,
}

impl<'a> AddressMap<'a> {
    /// The map whose root table is `root`.
    pub fn new(mem: &'a dyn PhysMem, fmt: &'a dyn PteFormat, root: Pa) -> Self {
        AddressMap { mem, fmt, root }
    }

    /// The entry format.
    pub fn format(&self) -> &'a dyn PteFormat {
        self.fmt
    }

    /// Reads the raw entry `idx` (taken modulo [`ENTRIES`]) of `table`.
    pub fn read_raw(&self, table: Pa, idx: usize) -> Result<u64, MemFault> {
        self.mem.read_entry(table, idx)
    }

    /// Writes the raw entry `idx` (taken modulo [`ENTRIES`]) of `table` (one 8-byte store, so
    /// a concurrent walker sees the old entry or the new one).
    pub fn write_raw(&self, table: Pa, idx: usize, raw: u64) -> Result<(), MemFault> {
        let offset = ((idx % ENTRIES) as u64) << 3;
        let pa = table.checked_add(offset).ok_or(MemFault(table))?;
        self.mem.write(pa, &raw.to_le_bytes())
    }

    /// The decoded entry for `gpa` at `level` (at most [`LEAF_LEVEL`]), with the table
    /// holding it.
    pub fn entry(&self, gpa: Gpa, level: u8) -> Result<(Pa, Entry), WalkError> {
        self.fmt.walk(self.mem, self.root, gpa, level)
    }

    /// The page mapped at `gpa`.
    pub fn lookup(&self, gpa: Gpa) -> Result<Leaf, WalkError> {
        self.fmt.lookup(self.mem, self.root, gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_spans_follow_the_four_level_layout() {
        let gpa = Gpa(0x0000_8040_2010_0000 | 0xABC);
        // 48-bit GPA: bits 47:39, 38:30, 29:21, 20:12.
        assert_eq!(index(gpa, 0), ((gpa.0 >> 39) & 511) as usize);
        assert_eq!(index(gpa, 1), ((gpa.0 >> 30) & 511) as usize);
        assert_eq!(index(gpa, 2), ((gpa.0 >> 21) & 511) as usize);
        assert_eq!(index(gpa, 3), ((gpa.0 >> 12) & 511) as usize);
        assert_eq!(table_span(0), 1 << 48);
        assert_eq!(table_span(1), 1 << 39);
        assert_eq!(table_span(2), 1 << 30);
        assert_eq!(table_span(3), 1 << 21);
    }
}
