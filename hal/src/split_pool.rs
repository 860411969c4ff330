//! Which of a pool of split tables is under which block of host DRAM, and how many of that
//! block's granules are taken from the host.
//!
//! Each host table (aarch64's stage 2, x86_64's nested table and VT-d host domain) maps DRAM in
//! 2 MiB blocks and splits a block into a 4 KiB table only to take a granule of it. The tables
//! come from a pool of [`SPLIT_TABLES`] pages sized at boot, so the memory the TSM spends on
//! host tables does not grow with DRAM. A table stays under its block while any granule of it is
//! taken; one whose granules are all back is only reclaimed (the block folded back) when the
//! pool has no free table, so a host that takes and gives back granules of one block does not
//! pay a split and a fold each time.

/// Split tables per host table: at most this many 2 MiB blocks (128 MiB of DRAM, however
/// scattered) hold granules taken from the host at once.
pub const SPLIT_TABLES: usize = 64;

/// The pool's bookkeeping: tables `base`, `base + 4 KiB`, … (the pages themselves are the
/// arch's).
pub(crate) struct SplitPool {
    base: u64,
    /// Bit `i`: table `i` is under a block.
    in_use: u64,
    /// The PA of the block table `i` splits.
    block: [u64; SPLIT_TABLES],
    /// Granules of that block taken from the host.
    taken: [u16; SPLIT_TABLES],
}

/// Which table a split can use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pick {
    /// Table `i` is free.
    Free(usize),
    /// Table `i` is under `block`, none of whose granules is taken: fold the block back into a
    /// 2 MiB mapping (and make every walker forget the table), then [`SplitPool::release`] it.
    Fold { index: usize, block: u64 },
}

const GRANULE: u64 = 4096;

impl SplitPool {
    /// A pool of [`SPLIT_TABLES`] tables from `base`, all free.
    pub(crate) const fn new(base: u64) -> Self {
        SplitPool {
            base,
            in_use: 0,
            block: [0; SPLIT_TABLES],
            taken: [0; SPLIT_TABLES],
        }
    }

    /// The index of the pool table at `table`, if it is one.
    // One test: an offset from `base` that is a whole number of tables below `SPLIT_TABLES`
    // has no bit outside `POOL_OFFSET`, and an address below `base` wraps to one with high bits
    // set. The index is masked as well as tested, so the caller's use of it needs no bounds
    // check (every (un)delegate looks its table up here).
    #[inline]
    pub(crate) fn index(&self, table: u64) -> Option<usize> {
        const { assert!(SPLIT_TABLES.is_power_of_two()) };
        const POOL_OFFSET: u64 = (SPLIT_TABLES as u64 - 1) * GRANULE;
        let off = table.wrapping_sub(self.base);
        (off & !POOL_OFFSET == 0).then_some((off / GRANULE) as usize & (SPLIT_TABLES - 1))
    }

    /// The address of table `i` (x86_64's HAL holds its tables by address; aarch64's by slice).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn table(&self, i: usize) -> u64 {
        self.base + i as u64 * GRANULE
    }

    /// A table for a new split, `None` when every table is under a block with a taken granule.
    pub(crate) fn pick(&self) -> Option<Pick> {
        if self.in_use != u64::MAX {
            return Some(Pick::Free((!self.in_use).trailing_zeros() as usize));
        }
        let index = self.taken.iter().position(|&n| n == 0)?;
        Some(Pick::Fold {
            index,
            block: self.block[index],
        })
    }

    /// Table `i` no longer splits a block.
    pub(crate) fn release(&mut self, i: usize) {
        self.in_use &= !(1 << i);
    }

    /// Table `i` now splits `block`, one granule of which is taken.
    pub(crate) fn claim(&mut self, i: usize, block: u64) {
        if let (Some(b), Some(n)) = (self.block.get_mut(i), self.taken.get_mut(i)) {
            self.in_use |= 1 << i;
            *b = block;
            *n = 1;
        }
    }

    /// Table `i` is never used again: a walker may still hold a way through it that no
    /// completed invalidation removed (an x86_64 split whose IOTLB invalidation failed), so
    /// reusing it for another block could translate this block's addresses into that one.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn retire(&mut self, i: usize) {
        if let Some(n) = self.taken.get_mut(i) {
            self.in_use |= 1 << i;
            *n = u16::MAX;
        }
    }

    /// A granule of table `i`'s block was taken (`true`) or given back.
    pub(crate) fn count(&mut self, i: usize, taken: bool) {
        if let Some(n) = self.taken.get_mut(i) {
            *n = if taken {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// Tables under a block (x86_64 reports it at boot).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn used(&self) -> u64 {
        u64::from(self.in_use.count_ones())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4080_0000;

    #[test]
    fn tables_are_found_by_address_only_inside_the_pool() {
        let p = SplitPool::new(BASE);
        assert_eq!(p.index(BASE), Some(0));
        assert_eq!(p.index(p.table(63)), Some(63));
        assert_eq!(p.index(p.table(64)), None);
        assert_eq!(p.index(BASE + 8), None);
        assert_eq!(p.index(BASE - GRANULE), None);
    }

    #[test]
    fn a_retired_table_is_never_picked_again() {
        let mut p = SplitPool::new(BASE);
        p.retire(0);
        assert_eq!(p.pick(), Some(Pick::Free(1)));
        for i in 1..SPLIT_TABLES {
            p.claim(i, 0x1_0000_0000 + (i as u64) * 0x20_0000);
            p.count(i, false);
        }
        // Every other table's block has nothing taken: those fold; the retired one never does.
        assert_eq!(
            p.pick(),
            Some(Pick::Fold {
                index: 1,
                block: 0x1_0020_0000
            })
        );
        assert_eq!(p.used(), SPLIT_TABLES as u64);
    }

    #[test]
    fn free_tables_first_then_folds_of_blocks_with_nothing_taken_then_none() {
        let mut p = SplitPool::new(BASE);
        for i in 0..SPLIT_TABLES {
            let Some(Pick::Free(t)) = p.pick() else {
                panic!("table {i} not free")
            };
            assert_eq!(t, i);
            p.claim(t, 0x1_0000_0000 + (i as u64) * 0x20_0000);
        }
        assert_eq!(p.used(), SPLIT_TABLES as u64);
        assert_eq!(p.pick(), None, "every block holds a taken granule");
        p.count(5, true);
        p.count(5, false);
        assert_eq!(
            p.pick(),
            None,
            "block 5 still holds the granule its split took"
        );
        p.count(5, false);
        assert_eq!(
            p.pick(),
            Some(Pick::Fold {
                index: 5,
                block: 0x1_0000_0000 + 5 * 0x20_0000
            })
        );
        p.release(5);
        assert_eq!(p.pick(), Some(Pick::Free(5)));
        p.claim(5, 0x2_0000_0000);
        assert_eq!(p.pick(), None, "a new claim counts its granule");
    }
}
