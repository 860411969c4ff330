//! `Harness::watch`: the model test's "a refusal changed nothing" check rests on it saying
//! exactly what comparing two snapshots says.

use std::vec;
use tsm_abi::CallId::*;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_platform::PhysMem;

use super::*;

#[test]
fn a_watch_sees_what_a_snapshot_comparison_sees() {
    for f in FORMATS {
        let h = harness(f);
        let pa = h.host_put(10, &[0xAA; 64]);

        // Nothing happened.
        let w = h.watch();
        assert!(!h.changed_since(w));

        // Bytes rewritten with their old values are no change.
        let w = h.watch();
        h.sim.write(pa, &[0xAA; 64]).unwrap();
        assert!(!h.changed_since(w));

        // One byte, in the last byte of a granule; and a write across two granules.
        let last = Pa(pa.0 + GRANULE_SIZE - 1);
        for (at, len) in [(last, 1), (Pa(last.0 - 3), 8)] {
            let before = h.snapshot();
            let w = h.watch();
            h.sim.write(at, &vec![0x55; len]).unwrap();
            assert!(h.changed_since(w));
            assert!(h.snapshot() != before);
        }

        // A change then its undo within one watch is no change, as for snapshots.
        let w = h.watch();
        h.sim.write(pa, &[0x11; 64]).unwrap();
        h.sim.write(pa, &[0xAA; 64]).unwrap();
        assert!(!h.changed_since(w));

        // Granule states and the host's mappings without a memory write.
        let w = h.watch();
        h.host(GRANULE_DELEGATE, &[h.granule(11).0]).unwrap();
        assert!(h.changed_since(w));

        // A refused call.
        let w = h.watch();
        assert!(h.host(GRANULE_DELEGATE, &[h.granule(11).0]).is_err());
        assert!(!h.changed_since(w));
    }
}
