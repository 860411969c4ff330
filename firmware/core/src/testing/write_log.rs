//! Which granules of the simulated DRAM were written since a mark, and what they held then.
//!
//! A harness that checks "a refused call changed no byte of memory" used to copy all of DRAM
//! before every call and compare all of it after: two full passes per call, most of a fuzzer
//! execution's time. Every store to the simulated DRAM goes through [`PhysMem::write`]
//! (`zero` included: SimPlatform keeps the default, which writes), which tells the log before
//! it stores; the log keeps a granule's bytes as they were at the mark when the granule is
//! first written after it. A granule no write touched since the mark holds what it held then,
//! so comparing the written granules with their kept bytes answers the same question exactly,
//! at the cost of the granules a call actually writes, and no copy of DRAM is ever made (a
//! fresh machine per fuzz execution used to pay for a zeroed copy of all of it).
//!
//! [`PhysMem::write`]: tsm_platform::PhysMem::write

use super::std::vec;
use super::std::vec::Vec;

use tsm_abi::addr::GRANULE_SIZE;

const GRANULE: usize = GRANULE_SIZE as usize;

/// The granules written since the last mark, each with its bytes at the mark.
pub(super) struct WriteLog {
    /// `dirty[i]`: granule `i` is in `kept`.
    dirty: Vec<bool>,
    /// Granules written since the mark, in the order of their first write, with what they
    /// held at the mark.
    kept: Vec<(usize, Vec<u8>)>,
}

impl WriteLog {
    /// A log of a DRAM of `len` bytes whose mark is now.
    pub(super) fn new(len: usize) -> Self {
        WriteLog {
            dirty: vec![false; len.div_ceil(GRANULE)],
            kept: Vec::new(),
        }
    }

    /// Records that `len` bytes at byte offset `off` of `mem` are about to be written (called
    /// before the store, under the same lock): keeps each granule's bytes on its first write
    /// since the mark.
    pub(super) fn before_write(&mut self, mem: &[u8], off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let last = (off + len - 1) / GRANULE;
        for g in off / GRANULE..=last {
            if let Some(d) = self.dirty.get_mut(g)
                && !*d
            {
                *d = true;
                let range = g * GRANULE..((g + 1) * GRANULE).min(mem.len());
                self.kept.push((g, mem[range].to_vec()));
            }
        }
    }

    /// Moves the mark to now: nothing is written since.
    pub(super) fn mark(&mut self) {
        for (g, _) in self.kept.drain(..) {
            self.dirty[g] = false;
        }
    }

    /// Byte offsets of the granules whose contents in `mem` differ from the mark, in
    /// ascending order.
    pub(super) fn changed(&self, mem: &[u8]) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .kept
            .iter()
            .filter(|(g, at_mark)| mem[g * GRANULE..g * GRANULE + at_mark.len()] != at_mark[..])
            .map(|(g, _)| g * GRANULE)
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimPlatform;
    use tsm_abi::addr::Pa;
    use tsm_platform::{AddressMapFormat, PhysMem};

    #[test]
    fn every_store_to_the_simulated_dram_is_seen() {
        let base = 0x4000_0000;
        let g = GRANULE_SIZE;
        let sim = SimPlatform::new(Pa(base), 4, AddressMapFormat::ArmStage2);
        let fresh = SimPlatform::new(Pa(base), 4, AddressMapFormat::ArmStage2).with_write_log();
        fresh.write(Pa(base + 2 * g), &[1]).unwrap();
        assert_eq!(fresh.changed_since_mark(), [Pa(base + 2 * g)]);
        let used = SimPlatform::new(Pa(base), 4, AddressMapFormat::ArmStage2);
        used.write(Pa(base), &[1]).unwrap();
        let used = used.with_write_log();
        assert!(used.changed_since_mark().is_empty());
        sim.write(Pa(base + g), &[1]).unwrap();
        sim.mark_memory();
        assert!(sim.changed_since_mark().is_empty());
        // A scrub (PhysMem's default `zero`) and a host store.
        sim.zero(Pa(base + g), GRANULE).unwrap();
        sim.host_write(Pa(base + 3 * g + 8), &[2]).unwrap();
        assert_eq!(sim.changed_since_mark(), [Pa(base + g), Pa(base + 3 * g)]);
        sim.mark_memory();
        assert!(sim.changed_since_mark().is_empty());
    }

    fn write(log: &mut WriteLog, mem: &mut [u8], off: usize, data: &[u8]) {
        log.before_write(mem, off, data.len());
        mem[off..off + data.len()].copy_from_slice(data);
    }

    #[test]
    fn a_changed_byte_is_reported_by_its_granule() {
        let mut mem = vec![0u8; 4 * GRANULE];
        let mut log = WriteLog::new(mem.len());
        write(&mut log, &mut mem, 2 * GRANULE + 17, &[1]);
        assert_eq!(log.changed(&mem), [2 * GRANULE]);
    }

    #[test]
    fn a_write_that_leaves_the_bytes_as_they_were_is_no_change() {
        let mut mem = vec![7u8; 4 * GRANULE];
        let mut log = WriteLog::new(mem.len());
        write(&mut log, &mut mem, GRANULE, &[7; 64]);
        // Changed, then changed back.
        write(&mut log, &mut mem, 3 * GRANULE, &[9]);
        write(&mut log, &mut mem, 3 * GRANULE, &[7]);
        assert!(log.changed(&mem).is_empty());
    }

    #[test]
    fn a_write_across_a_granule_boundary_dirties_both() {
        let mut mem = vec![0u8; 4 * GRANULE];
        let mut log = WriteLog::new(mem.len());
        write(&mut log, &mut mem, 2 * GRANULE - 1, &[1, 1]);
        assert_eq!(log.changed(&mem), [GRANULE, 2 * GRANULE]);
    }

    #[test]
    fn a_mark_takes_in_what_was_written_before_it() {
        let mut mem = vec![0u8; 4 * GRANULE];
        let mut log = WriteLog::new(mem.len());
        write(&mut log, &mut mem, 0, &[1]);
        log.mark();
        assert!(log.changed(&mem).is_empty());
        // Back to the old contents: a change against the new mark.
        write(&mut log, &mut mem, 0, &[0]);
        assert_eq!(log.changed(&mem), [0]);
        // The copy of a granule written before the first mark and not since stays exact.
        write(&mut log, &mut mem, 3 * GRANULE, &[5]);
        log.mark();
        write(&mut log, &mut mem, 3 * GRANULE + 1, &[5]);
        assert_eq!(log.changed(&mem), [3 * GRANULE]);
        write(&mut log, &mut mem, 3 * GRANULE + 1, &[0]);
        assert!(log.changed(&mem).is_empty());
    }
}
