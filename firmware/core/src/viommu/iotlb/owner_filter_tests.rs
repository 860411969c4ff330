//! The owner filter that lets `invalidate_tvm` and `invalidate_vdev` skip the scan: a clear bit
//! must prove that no cached entry belongs to the TVM or vdevice, through every cache and
//! after every rebuild.

use tsm_abi::addr::{Gpa, Iova, Pa};

use super::{Iotlb, PaFilter, TableRef, WalkPrefix, Walked};
use crate::viommu::stage1::Inherited;
use crate::viommu::{Perms, S2Entry, TvmId, VdevId};

fn s2(pa: u64) -> S2Entry {
    S2Entry {
        pa: Pa(pa),
        perms: Perms::RW,
        private: true,
    }
}

fn walked(page: u64) -> Walked {
    Walked {
        s1: None,
        gpa: Gpa(0x10_0000),
        s2: s2(page),
        tables: [TableRef::default(); 4],
        ntables: 0,
    }
}

fn prefix() -> WalkPrefix {
    WalkPrefix {
        table: 0x30_0000,
        inh: Inherited::NONE,
        tables: [TableRef::default(); 3],
        ntables: 0,
    }
}

/// `N` granules with distinct owner-filter bits.
fn distinct<const N: usize>() -> [u64; N] {
    let mut taken = heapless::Vec::<(usize, u64), 8>::new();
    let mut out = [0; N];
    let mut g = 0x9000_0000u64;
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
fn every_owner_of_every_cache_is_in_the_filter() {
    let [tvm_a, vdev_a, tvm_b, vdev_b, tvm_c, other] = distinct();
    let mut tlb = Iotlb::new();
    tlb.insert(
        VdevId(vdev_a),
        TvmId(tvm_a),
        None,
        Iova(0x1000),
        walked(0x8000_0000),
    );
    tlb.table_insert(TvmId(tvm_c), Gpa(0x20_0000), s2(0x8000_1000));
    tlb.walk_insert(VdevId(vdev_b), TvmId(tvm_b), None, Iova(0x1000), prefix());
    for o in [tvm_a, vdev_a, tvm_b, vdev_b, tvm_c] {
        assert!(tlb.owners.may_hold(Pa(o)), "{o:#x} missing");
    }
    assert!(!tlb.owners.may_hold(Pa(other)));
}

#[test]
fn invalidate_tvm_drops_its_entries_and_keeps_the_others_findable() {
    let [tvm_a, vdev_a, tvm_b, vdev_b, unknown] = distinct();
    let mut tlb = Iotlb::new();
    tlb.insert(
        VdevId(vdev_a),
        TvmId(tvm_a),
        None,
        Iova(0x1000),
        walked(0x8000_0000),
    );
    tlb.table_insert(TvmId(tvm_a), Gpa(0x20_0000), s2(0x8000_1000));
    tlb.insert(
        VdevId(vdev_b),
        TvmId(tvm_b),
        None,
        Iova(0x1000),
        walked(0x8000_2000),
    );
    tlb.table_insert(TvmId(tvm_b), Gpa(0x20_0000), s2(0x8000_3000));
    tlb.walk_insert(VdevId(vdev_b), TvmId(tvm_b), None, Iova(0x1000), prefix());
    // A TVM no entry belongs to: nothing goes.
    tlb.invalidate_tvm(TvmId(unknown));
    assert_eq!(tlb.len(), 2);
    tlb.invalidate_tvm(TvmId(tvm_a));
    assert_eq!(tlb.len(), 1);
    assert!(tlb.table_lookup(TvmId(tvm_a), Gpa(0x20_0000)).is_none());
    assert!(!tlb.owners.may_hold(Pa(tvm_a)) && !tlb.owners.may_hold(Pa(vdev_a)));
    // The rebuild kept B's bits: its destroy still finds every cache's entry.
    tlb.invalidate_tvm(TvmId(tvm_b));
    assert!(tlb.is_empty());
    assert!(tlb.table_lookup(TvmId(tvm_b), Gpa(0x20_0000)).is_none());
    assert!(
        tlb.walk_lookup(VdevId(vdev_b), None, Iova(0x1000))
            .is_none()
    );
    assert!(!tlb.owners.may_hold(Pa(tvm_b)));
}

#[test]
fn invalidate_vdev_drops_its_entries_and_keeps_the_others_findable() {
    let [tvm, vdev_a, vdev_b] = distinct();
    let mut tlb = Iotlb::new();
    tlb.insert(
        VdevId(vdev_a),
        TvmId(tvm),
        None,
        Iova(0x1000),
        walked(0x8000_0000),
    );
    tlb.walk_insert(VdevId(vdev_a), TvmId(tvm), None, Iova(0x1000), prefix());
    tlb.insert(
        VdevId(vdev_b),
        TvmId(tvm),
        None,
        Iova(0x1000),
        walked(0x8000_2000),
    );
    tlb.walk_insert(VdevId(vdev_b), TvmId(tvm), None, Iova(0x1000), prefix());
    tlb.invalidate_vdev(VdevId(vdev_a));
    assert!(tlb.lookup(VdevId(vdev_a), None, Iova(0x1000)).is_none());
    assert!(
        tlb.walk_lookup(VdevId(vdev_a), None, Iova(0x1000))
            .is_none()
    );
    assert!(tlb.owners.may_hold(Pa(tvm)));
    assert!(tlb.lookup(VdevId(vdev_b), None, Iova(0x1000)).is_some());
    tlb.invalidate_vdev(VdevId(vdev_b));
    assert!(tlb.is_empty());
    assert!(
        tlb.walk_lookup(VdevId(vdev_b), None, Iova(0x1000))
            .is_none()
    );
}

#[test]
fn flush_clears_the_owner_filter() {
    let mut tlb = Iotlb::new();
    tlb.insert(
        VdevId(0x9000_1000),
        TvmId(0x9000_2000),
        None,
        Iova(0x1000),
        walked(0x8000_1000),
    );
    tlb.flush();
    assert!(!tlb.owners.may_hold(Pa(0x9000_2000)));
}
