//! `PhysMem::zero`'s and `PhysMem::write_words`' defaults (those of platforms without faster
//! ones, and of the core's simulated memory): exactly the range, in chunks, and a fault stops
//! it; each word where its offset says.

use core::cell::RefCell;

use tsm_abi::addr::Pa;

use super::{MemFault, PhysMem};

const BASE: u64 = 0x1000;
const SIZE: usize = 3 * 4096;

/// `SIZE` bytes at `BASE`, every byte 0xAA to start with.
struct Mem(RefCell<[u8; SIZE]>);

impl Mem {
    fn new() -> Self {
        Mem(RefCell::new([0xAA; SIZE]))
    }

    fn range(pa: Pa, len: usize) -> Result<core::ops::Range<usize>, MemFault> {
        let start =
            pa.0.checked_sub(BASE)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or(MemFault(pa))?;
        let end = start.checked_add(len).ok_or(MemFault(pa))?;
        if end > SIZE {
            return Err(MemFault(pa));
        }
        Ok(start..end)
    }
}

impl PhysMem for Mem {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        let r = Self::range(pa, out.len())?;
        out.copy_from_slice(&self.0.borrow()[r]);
        Ok(())
    }

    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        let r = Self::range(pa, data.len())?;
        self.0.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn zeroes_exactly_the_range() {
    let m = Mem::new();
    // Unaligned start, crossing several 512-byte chunks and a page, ragged end.
    let (off, len) = (100usize, 4096 + 700);
    m.zero(Pa(BASE + off as u64), len).unwrap();
    let mem = m.0.borrow();
    assert!(mem[..off].iter().all(|&b| b == 0xAA));
    assert!(mem[off..off + len].iter().all(|&b| b == 0));
    assert!(mem[off + len..].iter().all(|&b| b == 0xAA));
}

#[test]
fn a_whole_granule_and_nothing() {
    let m = Mem::new();
    m.zero(Pa(BASE + 4096), 4096).unwrap();
    m.zero(Pa(BASE), 0).unwrap();
    let mem = m.0.borrow();
    assert!(mem[..4096].iter().all(|&b| b == 0xAA));
    assert!(mem[4096..8192].iter().all(|&b| b == 0));
    assert!(mem[8192..].iter().all(|&b| b == 0xAA));
}

#[test]
fn a_fault_is_reported() {
    let m = Mem::new();
    // Runs past the end: the chunk that does not fit faults.
    assert!(m.zero(Pa(BASE + 8192), 8192).is_err());
    // Overflowing the address space faults instead of wrapping.
    assert!(m.zero(Pa(u64::MAX - 10), 4096).is_err());
}

/// Records the chunks written; every address is writable.
struct Chunks(RefCell<[(u64, usize); 4]>, core::cell::Cell<usize>);

impl PhysMem for Chunks {
    fn read(&self, _: Pa, _: &mut [u8]) -> Result<(), MemFault> {
        Ok(())
    }

    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        let i = self.1.get();
        self.0.borrow_mut()[i] = (pa.0, data.len());
        self.1.set(i + 1);
        Ok(())
    }
}

#[test]
fn a_range_ending_at_the_top_of_the_address_space() {
    let m = Chunks(RefCell::new([(0, 0); 4]), core::cell::Cell::new(0));
    m.zero(Pa(u64::MAX - 1023), 1024).unwrap();
    assert_eq!(m.1.get(), 2);
    assert_eq!(
        m.0.borrow()[..2],
        [(u64::MAX - 1023, 512), (u64::MAX - 511, 512)]
    );
}

/// `PhysMem::write_words`' default and `WordOff`: only aligned words inside a granule, each
/// stored at its offset in the granule named, nothing outside a granule that is not one.
mod words {
    use super::*;
    use crate::{WordOff, WordStore};

    #[test]
    fn word_offsets_are_aligned_words_of_a_granule() {
        assert_eq!(WordOff::at(0).map(WordOff::get), Some(0));
        assert_eq!(WordOff::at(4088).map(WordOff::get), Some(4088));
        assert_eq!(WordOff::of::<16>().get(), 16);
        for bad in [4, 7, 4092, 4096, 4104, usize::MAX, usize::MAX - 7] {
            assert_eq!(WordOff::at(bad), None, "{bad}");
        }
    }

    #[test]
    fn stores_each_word_in_the_granule_named() {
        let m = Mem::new();
        let words = [
            WordStore(WordOff::of::<0>(), 0x0807_0605_0403_0201u64),
            WordStore(WordOff::of::<4088>(), u64::MAX),
        ];
        m.write_words(Pa(BASE + 4096), &words).unwrap();
        let mem = m.0.borrow();
        assert_eq!(mem[4096..4104], 0x0807_0605_0403_0201u64.to_ne_bytes());
        assert!(mem[4104..8184].iter().all(|&b| b == 0xAA));
        assert_eq!(mem[8184..8192], [0xFF; 8]);
        assert!(mem[..4096].iter().all(|&b| b == 0xAA));
        assert!(mem[8192..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn a_granule_that_is_not_one_changes_nothing() {
        let m = Mem::new();
        let words = [WordStore(WordOff::of::<0>(), 0u64)];
        assert_eq!(
            m.write_words(Pa(BASE + 8), &words),
            Err(MemFault(Pa(BASE + 8)))
        );
        // Outside the memory: the first store faults.
        assert!(m.write_words(Pa(BASE + 3 * 4096), &words).is_err());
        assert!(m.0.borrow().iter().all(|&b| b == 0xAA));
    }

    /// `Mem` with its first granule's last word missing.
    struct Partial(Mem);

    impl Partial {
        fn held(pa: Pa, len: usize) -> Result<(), MemFault> {
            match pa.0.checked_add(len as u64) {
                Some(end) if pa.0 >= BASE + 4096 || end <= BASE + 4088 => Ok(()),
                _ => Err(MemFault(pa)),
            }
        }
    }

    impl PhysMem for Partial {
        fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
            Self::held(pa, out.len())?;
            self.0.read(pa, out)
        }

        fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
            Self::held(pa, data.len())?;
            self.0.write(pa, data)
        }
    }

    #[test]
    fn a_granule_held_in_part_faults_before_any_store() {
        let m = Partial(Mem::new());
        let words = [
            WordStore(WordOff::of::<0>(), 0u64),
            WordStore(WordOff::of::<4088>(), 0u64),
        ];
        assert_eq!(
            m.write_words(Pa(BASE), &words),
            Err(MemFault(Pa(BASE + 4088)))
        );
        assert!(m.0.0.borrow().iter().all(|&b| b == 0xAA));
    }
}
