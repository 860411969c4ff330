//! [`stage1_pages`]: every IOVA page the engine translates is enumerated, in ascending order,
//! within the budget, and nothing behind a table the engine would not read.

use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const ARM: Stage1Format = Stage1Format::ArmVmsav8_64_4k;
const X86: Stage1Format = Stage1Format::X86_64FirstStage4Level;

fn view(s: &Sim) -> VdevView {
    s.vdevice(RID, None).unwrap()
}

/// The pages enumerated with `budget` descriptors, and the budget left.
fn pages(s: &Sim, budget: u32) -> (Vec<u64>, u32) {
    let mut out = Vec::new();
    let mut left = budget;
    stage1_pages(s, &view(s), &mut left, &mut |iova| {
        out.push(iova.0);
        true
    });
    (out, left)
}

#[test]
fn pages_and_blocks_come_in_ascending_order_in_both_formats() {
    for fmt in [ARM, X86] {
        let mut s = Sim::with_vdev(fmt);
        s.set_run(true, true);
        let root = s.new_root(None);
        let data = s.map(TVM, Gpa(0x10_0000), Perms::RW, true);
        // Mapped out of order: a page high up, a 2 MiB block, a page low down.
        s.s1_map(fmt, root, (5 << 39) | (3 << 12), 0x10_0000, 3, true);
        s.s1_map(fmt, root, 1 << 30, 0x20_0000, 2, false);
        s.s1_map(fmt, root, 7 << 12, 0x10_0000, 3, true);
        let (got, _) = pages(&s, 100_000);
        let mut want = std::vec![7 << 12];
        want.extend((0..512).map(|i| (1 << 30) + (i << 12)));
        want.push((5 << 39) | (3 << 12));
        assert_eq!(got, want, "{fmt:?}");
        // Each page mapped to the data page translates; the engine decides the rest.
        let r = translate_uncached(&s, &req(true, 7 << 12, Access::Write));
        assert_eq!(r, Ok(data), "{fmt:?}");
    }
}

#[test]
fn the_budget_bounds_the_descriptors_read_and_visit_can_stop_the_walk() {
    let mut s = Sim::with_vdev(ARM);
    let root = s.new_root(None);
    s.map(TVM, Gpa(0x10_0000), Perms::RW, true);
    s.s1_map(ARM, root, 0x3000, 0x10_0000, 3, true);
    // Root, level 1, level 2 and level 3 up to index 3: 1 + 1 + 1 + 4 descriptors.
    let (got, left) = pages(&s, 7);
    assert_eq!((got, left), (std::vec![0x3000], 0));
    let (got, _) = pages(&s, 6);
    assert!(got.is_empty());
    let mut n = 0;
    let mut budget = u32::MAX;
    s.s1_map(ARM, root, 1 << 30, 0x20_0000, 2, true);
    stage1_pages(&s, &view(&s), &mut budget, &mut |_| {
        n += 1;
        n < 10
    });
    assert_eq!(n, 10, "stops when told");
}

#[test]
fn tables_the_engine_would_not_read_are_not_followed() {
    let mut s = Sim::with_vdev(ARM);
    let root = s.new_root(None);
    s.s1_map(ARM, root, 0x3000, 0x10_0000, 3, true);
    // The level-1 table moves to a shared page: the engine faults S1TableShared under it.
    let l1 = s.read_gpa(TVM, root) & 0x0000_FFFF_FFFF_F000;
    let e = s.s2[&(TVM, l1)];
    s.s2.insert(
        (TVM, l1),
        S2Entry {
            private: false,
            ..e
        },
    );
    assert!(pages(&s, 100_000).0.is_empty());
    // No stage 1 at all: nothing (the caller enumerates the TVM's map).
    let s = Sim::with_vdev(Stage1Format::None);
    assert!(pages(&s, 100_000).0.is_empty());
}

#[test]
fn inputs_shorter_than_48_bits_and_the_upper_canonical_half() {
    // A 32-bit Arm root is a level-1 table with four entries: index 4 is outside the input.
    let mut s = Sim::with_vdev(ARM);
    let root = s.new_sized_root(None, 32);
    s.s1_map_from(ARM, root, 1, 3 << 30, 0x10_0000, 3, true);
    s.write_gpa(TVM, Gpa(root.0 + 4 * 8), enc::leaf(ARM, 1, 0, true));
    assert_eq!(pages(&s, 100_000).0, std::vec![3 << 30]);
    // x86-64: a PML4 entry in the upper half maps IOVAs above 2^48, which no DMA table holds.
    let mut s = Sim::with_vdev(X86);
    let root = s.new_root(None);
    s.s1_map(X86, root, 0x5000, 0x10_0000, 3, true);
    s.write_gpa(TVM, Gpa(root.0 + 300 * 8), s.read_gpa(TVM, root));
    assert_eq!(pages(&s, 100_000).0, std::vec![0x5000]);
}

proptest! {
    /// Whatever the guest's table holds, every IOVA the engine translates (sampled from the
    /// mapped ones and at random) is enumerated.
    #[test]
    fn every_iova_the_engine_translates_is_enumerated(
        x86 in any::<bool>(),
        maps in prop::collection::vec((0u64..1 << 36, 2u8..=3, any::<bool>()), 1..12),
        junk in prop::collection::vec((0usize..6, 0u64..512, any::<u64>()), 0..8),
        probes in prop::collection::vec(0u64..1 << 36, 0..32),
    ) {
        let fmt = if x86 { X86 } else { ARM };
        let mut s = Sim::with_vdev(fmt);
        s.set_run(true, true);
        let root = s.new_root(None);
        s.map(TVM, Gpa(0x10_0000), Perms::RW, true);
        let mut iovas = Vec::new();
        for (iova, level, write) in maps {
            let iova = iova << 12;
            // Pages and 2 MiB blocks (a 1 GiB block is 262,144 pages to list).
            s.s1_map(fmt, root, iova, 0x10_0000, level, write);
            iovas.push(iova);
        }
        // Random words over the tables the walk reads (the engine decides what they mean).
        let tables: Vec<u64> = s.s2.iter().filter(|(k, e)| k.0 == TVM && e.private && k.1 >= 0x4000_0000).map(|(k, _)| k.1).collect();
        for (t, i, w) in junk {
            if let Some(&g) = tables.get(t) {
                s.write_gpa(TVM, Gpa(g + i * 8), w);
            }
        }
        let (got, _) = pages(&s, u32::MAX);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
        for iova in iovas.into_iter().chain(probes.into_iter().map(|p| p << 12)) {
            if translate_uncached(&s, &req(true, iova, Access::Read)).is_ok() {
                prop_assert!(got.binary_search(&iova).is_ok(), "{iova:#x} missing");
            }
        }
    }
}
