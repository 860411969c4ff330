//! The PA filter that lets `invalidate_pa` skip the scan: a clear bit must prove that no cached
//! entry names the granule, through every cache and after every rebuild.

use tsm_abi::addr::{Gpa, Iova, Pa};

use super::{Iotlb, PaFilter, TableRef, WalkPrefix, Walked};
use crate::viommu::stage1::Inherited;
use crate::viommu::{Perms, S2Entry, TvmId, VdevId};

const VDEV: VdevId = VdevId(0x4000_1000);
const TVM: TvmId = TvmId(0x4000_2000);

fn s2(pa: u64) -> S2Entry {
    S2Entry {
        pa: Pa(pa),
        perms: Perms::RW,
        private: true,
    }
}

/// A walk that ended at `page` after reading the stage-1 tables in `tables`.
fn walked(page: u64, tables: &[u64]) -> Walked {
    let mut w = Walked {
        s1: Some((Perms::RW, 3)),
        gpa: Gpa(0x10_0000),
        s2: s2(page),
        tables: [TableRef::default(); 4],
        ntables: 0,
    };
    for (slot, &t) in w.tables.iter_mut().zip(tables) {
        *slot = TableRef {
            gpa: Gpa(t),
            pa: Pa(t),
        };
        w.ntables += 1;
    }
    w
}

/// `N` granules whose filter bits differ from each other's and from `0x8000_0000`'s (the
/// granule the tests use as one no entry names).
fn distinct_granules<const N: usize>() -> [u64; N] {
    let mut taken = heapless::Vec::<(usize, u64), 8>::new();
    taken.push(PaFilter::bit(Pa(0x8000_0000))).unwrap();
    let mut out = [0; N];
    let mut g = 0x8000_1000u64;
    for slot in out.iter_mut() {
        while taken.contains(&PaFilter::bit(Pa(g))) {
            g += 0x1000;
        }
        taken.push(PaFilter::bit(Pa(g))).unwrap();
        *slot = g;
    }
    out
}

#[test]
fn nearby_granules_have_their_own_bits_and_offsets_do_not_matter() {
    let base = 0x4000_0000u64;
    let mut seen = [0u64; super::PA_FILTER_BITS / 64];
    for i in 0..super::PA_FILTER_BITS as u64 {
        let (w, m) = PaFilter::bit(Pa(base + i * 0x1000));
        assert_eq!(m.count_ones(), 1);
        assert_eq!(seen[w] & m, 0, "granule {i} shares a bit");
        seen[w] |= m;
        // Any address inside the granule, and any address at all, stays in range.
        assert_eq!(PaFilter::bit(Pa(base + i * 0x1000 + 0xfff)), (w, m));
    }
    assert!(seen.iter().all(|&w| w == u64::MAX));
    let (w, _) = PaFilter::bit(Pa(u64::MAX));
    assert!(w < super::PA_FILTER_BITS / 64);
}

#[test]
fn an_empty_iotlb_holds_no_pa() {
    let tlb = Iotlb::new();
    for g in (0..64u64).map(|i| 0x4000_0000 + i * 0x1000) {
        assert!(!tlb.pa_filter.may_hold(Pa(g)));
    }
}

#[test]
fn every_pa_an_entry_names_is_in_the_filter() {
    let [page, t0, t1, table_page, w0] = distinct_granules();
    let mut tlb = Iotlb::new();
    tlb.insert(VDEV, TVM, None, Iova(0x1000), walked(page, &[t0, t1]));
    tlb.table_insert(TVM, Gpa(0x20_0000), s2(table_page));
    let prefix = WalkPrefix {
        table: 0x30_0000,
        inh: Inherited::NONE,
        tables: [
            TableRef {
                gpa: Gpa(w0),
                pa: Pa(w0),
            },
            TableRef::default(),
            TableRef::default(),
        ],
        ntables: 1,
    };
    tlb.walk_insert(VDEV, TVM, None, Iova(0x1000), prefix);
    // Offsets inside a granule name the granule.
    for pa in [page + 0x10, t0, t1, table_page + 0xFF8, w0] {
        assert!(tlb.pa_filter.may_hold(Pa(pa)), "{pa:#x} missing");
    }
    assert!(!tlb.pa_filter.may_hold(Pa(0x8000_0000)));
}

#[test]
fn invalidate_pa_drops_what_named_the_pa_and_keeps_the_filter_exact() {
    let [a, b, shared_table] = distinct_granules();
    let mut tlb = Iotlb::new();
    tlb.insert(VDEV, TVM, None, Iova(0x1000), walked(a, &[shared_table]));
    tlb.insert(VDEV, TVM, None, Iova(0x2000), walked(b, &[shared_table]));
    assert_eq!(tlb.len(), 2);
    // A granule no entry names: nothing goes.
    tlb.invalidate_pa(Pa(0x8000_0000));
    assert_eq!(tlb.len(), 2);
    // `a` goes with its entry; the rebuild drops `a`'s bit but keeps what `b`'s entry names.
    tlb.invalidate_pa(Pa(a));
    assert_eq!(tlb.len(), 1);
    assert!(!tlb.pa_filter.may_hold(Pa(a)));
    assert!(tlb.pa_filter.may_hold(Pa(b)));
    assert!(tlb.pa_filter.may_hold(Pa(shared_table)));
    // After the rebuild a change of the table both walks read still finds the survivor.
    tlb.invalidate_pa(Pa(shared_table));
    assert!(tlb.is_empty());
    assert!(!tlb.pa_filter.may_hold(Pa(b)));
}

#[test]
fn flush_clears_the_filter() {
    let mut tlb = Iotlb::new();
    tlb.insert(VDEV, TVM, None, Iova(0x1000), walked(0x8000_1000, &[]));
    tlb.flush();
    assert!(tlb.is_empty());
    assert!(!tlb.pa_filter.may_hold(Pa(0x8000_1000)));
}

impl Iotlb {
    /// An IOTLB holding one translation (for the monitor's start-up check).
    pub(crate) fn holding_one_translation() -> Iotlb {
        let mut tlb = Iotlb::new();
        tlb.insert(VDEV, TVM, None, Iova(0), walked(0x8000_1000, &[]));
        tlb
    }
}

#[test]
fn an_iotlb_is_clear_only_with_every_cache_empty() {
    assert!(Iotlb::new().is_clear());
    assert!(!Iotlb::holding_one_translation().is_clear());
    let mut tables = Iotlb::new();
    tables.table_insert(TVM, Gpa(0x1000), s2(0x8000_1000));
    assert!(tables.is_empty() && !tables.is_clear());
    let mut walks = Iotlb::new();
    walks.walk_insert(
        VDEV,
        TVM,
        None,
        Iova(0),
        WalkPrefix {
            table: 0x2000,
            inh: Inherited::NONE,
            tables: [TableRef::default(); 3],
            ntables: 0,
        },
    );
    assert!(walks.is_empty() && !walks.is_clear());
}
