//! GRANULE_*, TVM_*, TABLE_*, MAP_*, UNMAP.

use tsm_abi::CallId::*;
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::params::NO_SOURCE;
use tsm_abi::status::{ObjectKind, StatusCode::*};
use zerocopy::IntoBytes;

use super::*;
use crate::addrmap::{Leaf, MapKind, Perms};
use crate::granule::GranuleState;
use crate::testing::TlbOp;
use tsm_platform::PhysMem;

#[test]
fn delegate_unmaps_from_host_and_undelegate_scrubs_and_gives_back() {
    for f in FORMATS {
        let h = harness(f);
        let pa = h.host_put(10, &[0xAA; 64]);
        assert!(h.sim.host_can_reach(pa));
        h.host(GRANULE_DELEGATE, &[pa.0]).unwrap();
        assert_eq!(
            h.tsm.granules().peek(pa).unwrap().0,
            GranuleState::Delegated
        );
        assert!(!h.sim.host_can_reach(pa));
        assert!(h.sim.host_read(pa, &mut [0; 4]).is_err());
        h.host(GRANULE_UNDELEGATE, &[pa.0]).unwrap();
        assert!(h.sim.host_can_reach(pa));
        let mut back = [0xFFu8; 64];
        h.sim.host_read(pa, &mut back).unwrap();
        assert_eq!(back, [0; 64], "scrubbed");
    }
}

#[test]
fn delegate_and_undelegate_refusals() {
    let h = harness(AddressMapFormat::ArmStage2);
    let pa = h.granule(10);
    h.refused(GRANULE_DELEGATE, &[pa.0 + 8], s(Misaligned, 1));
    h.refused(GRANULE_DELEGATE, &[h.granule(256).0], s(OutOfRange, 1));
    h.refused(GRANULE_DELEGATE, &[0], s(OutOfRange, 1));
    h.refused(GRANULE_DELEGATE, &[!0xFFF], s(OutOfRange, 1));
    h.refused(GRANULE_DELEGATE, &[h.granule(0).0], s(GranuleState, 1));
    h.refused(GRANULE_DELEGATE, &[pa.0, 1], s(InvalidArgument, 2));
    h.delegate(10);
    h.refused(GRANULE_DELEGATE, &[pa.0], s(GranuleState, 1));
    h.refused(GRANULE_UNDELEGATE, &[h.granule(11).0], s(GranuleState, 1));
    h.refused(GRANULE_UNDELEGATE, &[h.granule(1).0], s(GranuleState, 1));
    h.refused(GRANULE_UNDELEGATE, &[pa.0 | 1], s(Misaligned, 1));
    // An object granule is not free.
    let t = build_tvm(&h, 20);
    h.refused(GRANULE_UNDELEGATE, &[t.tvm.0], s(GranuleState, 1));
    h.refused(GRANULE_UNDELEGATE, &[t.root.0], s(GranuleState, 1));
}

/// A HAL whose split tables are all in use refuses to take a granule of a block the host
/// still has whole: DELEGATE fails with `Capacity(1)` and nothing changed (the granule is NS
/// and the host's); once a granule of the split block is delegated, that block takes more.
#[test]
fn delegate_refused_for_capacity_leaves_the_granule_the_hosts() {
    // 3 blocks of 2 MiB: the TSM's granules hold the first one split.
    let h = Harness::new(3 * 512, AddressMapFormat::ArmStage2);
    h.sim.limit_split_blocks(2);
    let (first, second, third) = (h.granule(10), h.granule(512), h.granule(1024));
    h.host(GRANULE_DELEGATE, &[first.0]).unwrap();
    h.host(GRANULE_DELEGATE, &[second.0]).unwrap();
    h.refused(GRANULE_DELEGATE, &[third.0], s(Capacity, 1));
    assert_eq!(h.tsm.granules().peek(third).unwrap().0, GranuleState::Ns);
    assert!(h.sim.host_can_reach(third));
    h.host(GRANULE_DELEGATE, &[h.granule(513).0]).unwrap();
    // The second block is whole again once its granules are back: the third can have it.
    h.host(GRANULE_UNDELEGATE, &[second.0]).unwrap();
    h.host(GRANULE_UNDELEGATE, &[h.granule(513).0]).unwrap();
    h.host(GRANULE_DELEGATE, &[third.0]).unwrap();
    assert!(!h.sim.host_can_reach(third));
}

/// Regression (found by the end-to-end bad-input scenario): DELEGATE accepted any granule with
/// an edge to DELEGATED, so the host could "delegate" a mapped private page or a live object,
/// undelegate it and read it while the TVM still used it.
#[test]
fn only_host_memory_can_be_delegated() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 20);
    let page = h.delegate(30);
    h.host(MAP_PRIVATE, &[t.tvm.0, 0x1000, page.0, NO_SOURCE, 3])
        .unwrap();
    for owned in [page, t.tvm, t.root, t.tables[0]] {
        h.refused(GRANULE_DELEGATE, &[owned.0], s(GranuleState, 1));
        h.refused(GRANULE_UNDELEGATE, &[owned.0], s(GranuleState, 1));
    }
}

#[test]
fn tvm_create_checks_params_and_granules() {
    let h = harness(AddressMapFormat::ArmStage2);
    let params = h.host_put(10, tvm_params(40, 1).as_bytes());
    let (tvm, root) = (h.delegate(11), h.delegate(12));
    let undelegated = h.granule(13);
    h.refused(
        TVM_CREATE,
        &[tvm.0, params.0 + 4, root.0],
        s(InvalidBuffer, 2),
    );
    h.refused(
        TVM_CREATE,
        &[tvm.0, params.0 + GRANULE_SIZE - 32, root.0],
        s(InvalidBuffer, 2),
    );
    h.refused(TVM_CREATE, &[tvm.0, root.0, root.0], s(InvalidBuffer, 2));
    h.refused(
        TVM_CREATE,
        &[tvm.0, h.granule(999).0, root.0],
        s(InvalidBuffer, 2),
    );
    for bad in [tvm_params(40, 0), tvm_params(31, 1), tvm_params(49, 1), {
        let mut p = tvm_params(40, 1);
        p.reserved1[3] = 1;
        p
    }] {
        let p = h.host_put(14, bad.as_bytes());
        h.refused(TVM_CREATE, &[tvm.0, p.0, root.0], s(InvalidArgument, 2));
    }
    h.refused(
        TVM_CREATE,
        &[undelegated.0, params.0, root.0],
        s(GranuleState, 1),
    );
    h.refused(
        TVM_CREATE,
        &[tvm.0, params.0, undelegated.0],
        s(GranuleState, 3),
    );
    h.refused(TVM_CREATE, &[tvm.0, params.0, tvm.0], s(GranuleState, 3));
    h.refused(TVM_CREATE, &[tvm.0 + 1, params.0, root.0], s(Misaligned, 1));
    h.refused(TVM_CREATE, &[tvm.0, params.0, 1 << 50], s(OutOfRange, 3));
    h.host(TVM_CREATE, &[tvm.0, params.0, root.0]).unwrap();
    assert_eq!(h.tsm.granules().peek(tvm).unwrap().0, GranuleState::Tvm);
    assert_eq!(h.tsm.granules().peek(root).unwrap().0, GranuleState::Table);
    h.refused(
        TVM_CREATE,
        &[tvm.0, params.0, h.delegate(15).0],
        s(GranuleState, 1),
    );
}

#[test]
fn x86_tvms_stay_in_the_lower_canonical_half() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let p = h.host_put(10, tvm_params(48, 1).as_bytes());
    h.refused(
        TVM_CREATE,
        &[h.delegate(11).0, p.0, h.delegate(12).0],
        s(InvalidArgument, 2),
    );
    let p = h.host_put(10, tvm_params(47, 1).as_bytes());
    h.host(TVM_CREATE, &[h.granule(11).0, p.0, h.granule(12).0])
        .unwrap();
}

#[test]
fn tvm_lifecycle_and_destroy_refusals() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    h.refused(TVM_ACTIVATE, &[t.root.0], s(BadHandle, 1));
    h.refused(TVM_DESTROY, &[h.granule(50).0], s(BadHandle, 1));
    let page = h.delegate(30);
    h.host(MAP_PRIVATE, &[t.tvm.0, 0x1000, page.0, NO_SOURCE, 3])
        .unwrap();
    h.refused(
        TVM_DESTROY,
        &[t.tvm.0],
        s(InUse, ObjectKind::PrivatePage as u8),
    );
    h.host(UNMAP, &[t.tvm.0, 0x1000]).unwrap();
    h.refused(TVM_DESTROY, &[t.tvm.0], s(InUse, ObjectKind::Table as u8));
    let vcpu = h.delegate(31);
    h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, 0x1000, 0]).unwrap();
    h.refused(TVM_DESTROY, &[t.tvm.0], s(InUse, ObjectKind::Vcpu as u8));
    h.host(TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    h.refused(TVM_ACTIVATE, &[t.tvm.0], s(ObjectState, 1));
    h.host(VCPU_DESTROY, &[vcpu.0]).unwrap();
    for level in (1..=3u64).rev() {
        let r = h.host(TABLE_DESTROY, &[t.tvm.0, 0, level]).unwrap();
        assert_eq!(r[0], t.tables[level as usize - 1].0);
    }
    h.host(TVM_DESTROY, &[t.tvm.0]).unwrap();
    for pa in [
        t.tvm,
        t.root,
        t.tables[0],
        t.tables[1],
        t.tables[2],
        page,
        vcpu,
    ] {
        assert_eq!(
            h.tsm.granules().peek(pa).unwrap(),
            (GranuleState::Delegated, 0)
        );
    }
    assert!(h.sim.take_tlb_ops().contains(&TlbOp::All(t.root)));
}

#[test]
fn table_create_and_destroy_refusals() {
    let h = harness(AddressMapFormat::ArmStage2);
    let params = h.host_put(10, tvm_params(40, 1).as_bytes());
    let (tvm, root) = (h.delegate(11), h.delegate(12));
    h.host(TVM_CREATE, &[tvm.0, params.0, root.0]).unwrap();
    let (l1, l2) = (h.delegate(13), h.delegate(14));
    h.refused(TABLE_CREATE, &[tvm.0, 0, 0, l1.0], s(InvalidArgument, 3));
    h.refused(TABLE_CREATE, &[tvm.0, 0, 4, l1.0], s(InvalidArgument, 3));
    h.refused(TABLE_CREATE, &[tvm.0, 0x1000, 3, l1.0], s(Misaligned, 2));
    h.refused(TABLE_CREATE, &[tvm.0, 1 << 40, 1, l1.0], s(OutOfRange, 2));
    h.refused(TABLE_CREATE, &[tvm.0, 0, 2, l2.0], s(TableMissing, 1));
    h.refused(TABLE_CREATE, &[tvm.0, 0, 3, l2.0], s(TableMissing, 1));
    h.refused(
        TABLE_CREATE,
        &[tvm.0, 0, 1, h.granule(15).0],
        s(GranuleState, 4),
    );
    h.refused(TABLE_CREATE, &[tvm.0, 0, 1, tvm.0], s(GranuleState, 4));
    h.refused(TABLE_CREATE, &[tvm.0, 0, 1, root.0], s(GranuleState, 4));
    h.refused(TABLE_CREATE, &[root.0, 0, 1, l1.0], s(BadHandle, 1));
    h.host(TABLE_CREATE, &[tvm.0, 0, 1, l1.0]).unwrap();
    h.refused(TABLE_CREATE, &[tvm.0, 0, 1, l2.0], s(AlreadyMapped, 2));
    h.refused(TABLE_DESTROY, &[tvm.0, 0, 2], s(TableMissing, 2));
    h.refused(TABLE_DESTROY, &[tvm.0, 0, 3], s(TableMissing, 2));
    h.host(TABLE_CREATE, &[tvm.0, 0, 2, l2.0]).unwrap();
    h.refused(
        TABLE_DESTROY,
        &[tvm.0, 0, 1],
        s(InUse, ObjectKind::Table as u8),
    );
    h.refused(TABLE_DESTROY, &[tvm.0, 0, 0], s(InvalidArgument, 3));
    h.refused(TABLE_DESTROY, &[tvm.0, 1 << 30, 2], s(TableMissing, 2));
    assert_eq!(h.host(TABLE_DESTROY, &[tvm.0, 0, 2]).unwrap()[0], l2.0);
    assert_eq!(h.host(TABLE_DESTROY, &[tvm.0, 0, 1]).unwrap()[0], l1.0);
}

#[test]
fn map_private_copies_the_source_once_and_maps_it() {
    for f in FORMATS {
        let h = harness(f);
        let t = build_tvm(&h, 10);
        let src = h.host_put(20, &[0x5A; GRANULE_SIZE as usize]);
        let page = h.delegate(21);
        h.host(MAP_PRIVATE, &[t.tvm.0, 0x3000, page.0, src.0, 7])
            .unwrap();
        let mut got = [0u8; 16];
        h.sim.read(page, &mut got).unwrap();
        assert_eq!(got, [0x5A; 16]);
        assert_eq!(
            h.tsm.granules().peek(page).unwrap().0,
            GranuleState::Private
        );
        assert_eq!(
            h.tsm.stage2_lookup(t.tvm, Gpa(0x3123)),
            Ok(Leaf {
                pa: page,
                perms: Perms {
                    write: true,
                    exec: true
                },
                kind: MapKind::Private
            })
        );
        assert_eq!(
            h.tsm.granules().peek(t.tables[2]).unwrap().1,
            1,
            "one live entry"
        );
        // Zero-filled.
        h.sim.write(h.granule(22), &[0x77; 64]).unwrap();
        let z = h.delegate(22);
        h.host(MAP_PRIVATE, &[t.tvm.0, 0x4000, z.0, NO_SOURCE, 1])
            .unwrap();
        let mut got = [0xFFu8; 64];
        h.sim.read(z, &mut got).unwrap();
        assert_eq!(got, [0; 64]);
        assert_eq!(
            h.tsm.stage2_lookup(t.tvm, Gpa(0x4000)).map(|l| l.perms),
            Ok(Perms {
                write: false,
                exec: false
            })
        );
    }
}

#[test]
fn map_private_refusals() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    let src = h.host_put(20, &[1; 8]);
    let page = h.delegate(21);
    let ns = h.granule(22);
    let m = |gpa: u64, pg: Pa, src: u64, flags: u64| [t.tvm.0, gpa, pg.0, src, flags];
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, NO_SOURCE, 0),
        s(InvalidArgument, 5),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, NO_SOURCE, 8 | 1),
        s(InvalidArgument, 5),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1008, page, NO_SOURCE, 1),
        s(Misaligned, 2),
    );
    h.refused(
        MAP_PRIVATE,
        &m(1 << 40, page, NO_SOURCE, 1),
        s(OutOfRange, 2),
    );
    h.refused(
        MAP_PRIVATE,
        &m(1 << 30, page, NO_SOURCE, 1),
        s(TableMissing, 2),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, ns, NO_SOURCE, 1),
        s(GranuleState, 3),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, t.tables[2], NO_SOURCE, 1),
        s(GranuleState, 3),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, t.tvm, NO_SOURCE, 1),
        s(GranuleState, 3),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, src.0 + 8, 1),
        s(Misaligned, 4),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, page.0, 1),
        s(InvalidBuffer, 4),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, t.root.0, 1),
        s(InvalidBuffer, 4),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, 1 << 44, 1),
        s(InvalidBuffer, 4),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, page, h.granule(0).0, 1),
        s(InvalidBuffer, 4),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, Pa(page.0 + 8), h.granule(40).0, 1),
        s(Misaligned, 3),
    );
    h.refused(
        MAP_PRIVATE,
        &[t.root.0, 0x1000, page.0, NO_SOURCE, 1],
        s(BadHandle, 1),
    );
    h.host(MAP_PRIVATE, &m(0x1000, page, NO_SOURCE, 1)).unwrap();
    h.refused(
        MAP_PRIVATE,
        &m(0x1000, h.delegate(23), NO_SOURCE, 1),
        s(AlreadyMapped, 2),
    );
    h.refused(
        MAP_PRIVATE,
        &m(0x2000, page, NO_SOURCE, 1),
        s(GranuleState, 3),
    );
    h.host(TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    h.refused(
        MAP_PRIVATE,
        &m(0x2000, h.granule(23), src.0, 1),
        s(ObjectState, 1),
    );
    h.host(MAP_PRIVATE, &m(0x2000, h.granule(23), NO_SOURCE, 3))
        .unwrap();
}

#[test]
fn shared_pages_cannot_be_delegated_while_mapped() {
    for f in FORMATS {
        let h = harness(f);
        let t = build_tvm(&h, 10);
        shared_tables(&h, t.tvm);
        let (at, next) = (SHARED_GPA + 0x5000, SHARED_GPA + 0x6000);
        let ns = h.granule(30);
        h.refused(MAP_SHARED, &[t.tvm.0, at, ns.0, 0], s(InvalidArgument, 4));
        h.refused(MAP_SHARED, &[t.tvm.0, at, ns.0 + 1, 1], s(Misaligned, 3));
        h.refused(MAP_SHARED, &[t.tvm.0, at, t.root.0, 1], s(GranuleState, 3));
        h.refused(MAP_SHARED, &[t.tvm.0, at, t.tvm.0, 1], s(GranuleState, 3));
        h.refused(
            MAP_SHARED,
            &[t.tvm.0, at, h.delegate(31).0, 1],
            s(GranuleState, 3),
        );
        h.refused(
            MAP_SHARED,
            &[t.tvm.0, at, h.granule(4096).0, 1],
            s(OutOfRange, 3),
        );
        h.host(MAP_SHARED, &[t.tvm.0, at, ns.0, 3]).unwrap();
        h.host(MAP_SHARED, &[t.tvm.0, next, ns.0, 1]).unwrap();
        h.refused(MAP_SHARED, &[t.tvm.0, next, ns.0, 1], s(AlreadyMapped, 2));
        assert_eq!(h.tsm.granules().peek(ns).unwrap(), (GranuleState::Ns, 2));
        assert_eq!(
            h.tsm.stage2_lookup(t.tvm, Gpa(at)).unwrap().kind,
            MapKind::Shared
        );
        h.refused(GRANULE_DELEGATE, &[ns.0], s(GranuleState, 1));
        assert_eq!(h.host(UNMAP, &[t.tvm.0, at]).unwrap()[0], ns.0);
        h.refused(GRANULE_DELEGATE, &[ns.0], s(GranuleState, 1));
        h.host(UNMAP, &[t.tvm.0, next]).unwrap();
        h.host(GRANULE_DELEGATE, &[ns.0]).unwrap();
        assert!(
            h.sim
                .take_tlb_ops()
                .contains(&TlbOp::Page(t.root, Gpa(next)))
        );
    }
}

#[test]
fn unmap_scrubs_private_pages_and_refuses_what_is_not_mapped() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    let src = h.host_put(20, &[0x11; GRANULE_SIZE as usize]);
    let page = h.delegate(21);
    h.host(MAP_PRIVATE, &[t.tvm.0, 0x1000, page.0, src.0, 1])
        .unwrap();
    h.refused(UNMAP, &[t.tvm.0, 0x2000], s(NotMapped, 2));
    h.refused(UNMAP, &[t.tvm.0, 1 << 30], s(NotMapped, 2));
    h.refused(UNMAP, &[t.tvm.0, 0x1001], s(Misaligned, 2));
    h.refused(UNMAP, &[t.tvm.0, 1 << 41], s(OutOfRange, 2));
    h.refused(UNMAP, &[page.0, 0x1000], s(BadHandle, 1));
    h.sim.take_tlb_ops();
    assert_eq!(h.host(UNMAP, &[t.tvm.0, 0x1000]).unwrap()[0], page.0);
    assert_eq!(
        h.sim.take_tlb_ops(),
        std::vec![TlbOp::Page(t.root, Gpa(0x1000))]
    );
    assert_eq!(
        h.tsm.granules().peek(page).unwrap(),
        (GranuleState::Delegated, 0)
    );
    let mut b = [0xFFu8; 32];
    h.sim.read(page, &mut b).unwrap();
    assert_eq!(b, [0; 32]);
    assert_eq!(h.tsm.granules().peek(t.tables[2]).unwrap().1, 0);
}
