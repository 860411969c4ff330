//! Each invalidation trigger: the stale entry exists without it (so the test means something),
//! and is gone with it; unrelated entries survive (precision).

use super::*;

const ARM: Stage1Format = Stage1Format::ArmVmsav8_64_4k;
const X86: Stage1Format = Stage1Format::X86_64FirstStage4Level;
const IOVA: u64 = 0x0000_0040_0020_3000;
const GPA_A: u64 = 0x10_0000;
const GPA_B: u64 = 0x20_0000;
/// A second vdevice.
const OTHER: Requester = Requester {
    segment: 0,
    rid: 0x300,
};

/// Two IOVA pages in `fmt` (IOVA → GPA_A, IOVA+4K → GPA_B), both translated once (cached).
fn warm(fmt: Stage1Format) -> (Sim, Iotlb, Gpa, Pa, Pa) {
    let mut s = Sim::with_vdev(fmt);
    s.set_run(true, true);
    let root = s.new_root(None);
    let a = s.map(TVM, Gpa(GPA_A), Perms::RW, true);
    let b = s.map(TVM, Gpa(GPA_B), Perms::RW, true);
    s.s1_map(fmt, root, IOVA, GPA_A, 3, true);
    s.s1_map(fmt, root, IOVA + 0x1000, GPA_B, 3, true);
    let mut tlb = Iotlb::new();
    assert_eq!(both(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(a));
    assert_eq!(
        both(&s, &mut tlb, &req(true, IOVA + 0x1000, Access::Read)),
        Ok(b)
    );
    assert_eq!(tlb.len(), 2);
    (s, tlb, root, a, b)
}

/// Asserts `r` is served from the IOTLB (a hit).
fn hit(s: &Sim, tlb: &mut Iotlb, r: &Request) -> Result<Pa, Fault> {
    let h = tlb.hits();
    let got = translate(s, tlb, r);
    assert_eq!(tlb.hits(), h + 1, "expected an IOTLB hit for {r:?}");
    got
}

/// The level-`level` table page GPA of IOVA.
fn table_gpa(s: &Sim, root: Gpa, level: u8) -> Gpa {
    let mut table = root.0;
    for l in 0..level {
        table = s.read_gpa(TVM, Gpa(table | (stage1::index(Iova(IOVA), l) << 3)))
            & 0x0000_FFFF_FFFF_F000;
    }
    Gpa(table)
}

#[test]
fn unmap_of_the_final_gpa_drops_the_translation() {
    for fmt in [ARM, X86] {
        let (mut s, mut tlb, _, a, b) = warm(fmt);
        s.s2.remove(&(TVM, GPA_A));
        // Without the invalidation the IOTLB would still serve the unmapped page.
        let mut stale = Iotlb::new();
        assert_eq!(
            translate(&s, &mut stale, &req(true, IOVA, Access::Read))
                .unwrap_err()
                .reason,
            FaultReason::S2Translation
        );
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA, Access::Read)),
            Ok(a),
            "stale entry expected before invalidation"
        );
        tlb.invalidate_gpa(TVM, Gpa(GPA_A), 0x1000);
        assert_eq!(
            reason(both(&s, &mut tlb, &req(true, IOVA, Access::Read))),
            (FaultReason::S2Translation, None)
        );
        // The other page is untouched and still cached.
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA + 0x1000, Access::Read)),
            Ok(b)
        );
    }
}

#[test]
fn unmap_of_a_stage1_table_page_drops_every_translation_that_walked_it() {
    for fmt in [ARM, X86] {
        for level in 0..4u8 {
            let (mut s, mut tlb, root, a, _) = warm(fmt);
            let t = table_gpa(&s, root, level);
            let entry = s.s2.remove(&(TVM, t.0)).unwrap();
            assert_eq!(hit(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(a));
            tlb.invalidate_gpa(TVM, t, 0x1000);
            assert!(tlb.is_empty(), "both pages walked the level-{level} table");
            assert_eq!(
                reason(both(&s, &mut tlb, &req(true, IOVA, Access::Read))),
                (FaultReason::S1TableNotMapped, Some(level))
            );
            // Mapping the table back (the table cache must not have kept the old answer either).
            s.s2.insert((TVM, t.0), entry);
            assert_eq!(both(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(a));
        }
    }
}

#[test]
fn a_hit_keeps_the_offset_of_its_own_request() {
    for fmt in [ARM, X86] {
        let (s, mut tlb, _, a, _) = warm(fmt);
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA | 0x123, Access::Read)),
            Ok(Pa(a.0 | 0x123))
        );
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA | 0xFFF, Access::Write)),
            Ok(Pa(a.0 | 0xFFF))
        );
    }
}

#[test]
fn unmap_in_another_tvm_or_of_other_gpas_keeps_entries() {
    let (_s, mut tlb, _, _, _) = warm(ARM);
    tlb.invalidate_gpa(TVM2, Gpa(GPA_A), 0x1000);
    tlb.invalidate_gpa(TVM, Gpa(0x30_0000), 0x10_0000);
    tlb.invalidate_gpa(TVM, Gpa(GPA_A), 0);
    assert_eq!(tlb.len(), 2);
    // A range covering both final GPAs drops both.
    tlb.invalidate_gpa(TVM, Gpa(GPA_A + 0xFFF), GPA_B - GPA_A);
    assert!(tlb.is_empty());
}

#[test]
fn remap_to_another_page_is_seen_after_invalidation() {
    let (mut s, mut tlb, _, a, _) = warm(X86);
    let c = Pa(0x7700_0000);
    s.map_to(TVM, Gpa(GPA_A), c, Perms::RW, true);
    assert_eq!(hit(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(a));
    tlb.invalidate_gpa(TVM, Gpa(GPA_A), 0x1000);
    assert_eq!(both(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(c));
}

#[test]
fn delegate_and_undelegate_drop_by_pa() {
    // A shared page that becomes secure (the host delegates it without unmapping first).
    let mut s = Sim::with_vdev(Stage1Format::None);
    let pa = s.map(TVM, Gpa(0x3000), Perms::RW, false);
    let other = s.map(TVM, Gpa(0x4000), Perms::RW, false);
    let mut tlb = Iotlb::new();
    assert_eq!(
        both(&s, &mut tlb, &req(false, 0x3000, Access::Write)),
        Ok(pa)
    );
    assert_eq!(
        both(&s, &mut tlb, &req(false, 0x4000, Access::Write)),
        Ok(other)
    );
    s.secure.insert(pa.0);
    // Even the stale entry cannot carry T=0 to it: the final check runs on hits.
    assert_eq!(
        reason(hit(&s, &mut tlb, &req(false, 0x3000, Access::Write))),
        (FaultReason::T0ToSecure, None)
    );
    tlb.invalidate_pa(pa);
    assert_eq!(tlb.len(), 1);
    assert_eq!(
        reason(both(&s, &mut tlb, &req(false, 0x3000, Access::Write))),
        (FaultReason::T0ToSecure, None)
    );
    // A stage-1 table page whose PA changes state drops the translations that read it.
    let (mut s, mut tlb, root, _, _) = warm(ARM);
    let t = s.gpa_to_pa(TVM, table_gpa(&s, root, 3));
    s.secure.remove(&t.0);
    tlb.invalidate_pa(t);
    assert!(tlb.is_empty());
    assert_eq!(
        reason(both(&s, &mut tlb, &req(true, IOVA, Access::Read))),
        (FaultReason::S1TableShared, Some(3))
    );
}

#[test]
fn unbind_and_stop_drop_the_whole_vdevice_and_t1_stops_at_once() {
    let (mut s, mut tlb, _, _, _) = warm(ARM);
    s.add_vdev(OTHER, VdevId(0xB000), TVM, Stage1Format::None);
    let pa = s.map(TVM, Gpa(0x3000), Perms::RW, false);
    let r2 = Request {
        requester: OTHER,
        pasid: None,
        t_bit: false,
        iova: Iova(0x3000),
        access: Access::Read,
    };
    assert_eq!(both(&s, &mut tlb, &r2), Ok(pa));
    // Unbind: T=1 is refused on the very next request, before any invalidation.
    s.set_run(false, false);
    assert_eq!(
        reason(hit(&s, &mut tlb, &req(true, IOVA, Access::Read))),
        (FaultReason::T1NotAllowed, None)
    );
    tlb.invalidate_vdev(VDEV);
    assert_eq!(tlb.len(), 1);
    assert_eq!(hit(&s, &mut tlb, &r2), Ok(pa));
}

#[test]
fn stage1_attach_and_detach_drop_that_pasid_only() {
    for fmt in [ARM, X86] {
        let (mut s, mut tlb, _, a, _) = warm(fmt);
        // PASID 3 with its own root, cached.
        let root3 = s.new_root(Some(3));
        s.s1_map(fmt, root3, IOVA, GPA_B, 3, true);
        let mut r3 = req(true, IOVA, Access::Read);
        r3.pasid = Some(3);
        let b = s.gpa_to_pa(TVM, Gpa(GPA_B));
        assert_eq!(both(&s, &mut tlb, &r3), Ok(b));
        // Detach the default root: requests without PASID now bypass stage 1 (IOVA is a GPA).
        s.vdev(RID).pasids.detach(None).unwrap();
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA, Access::Read)),
            Ok(a),
            "stale before invalidation"
        );
        tlb.invalidate_pasid(VDEV, None);
        assert_eq!(
            reason(both(&s, &mut tlb, &req(true, IOVA, Access::Read))),
            (FaultReason::S2Translation, None)
        );
        assert_eq!(hit(&s, &mut tlb, &r3), Ok(b));
        // Re-attach PASID 3 to a root mapping IOVA → GPA_A.
        let root3b = s.new_root(Some(3));
        s.s1_map(fmt, root3b, IOVA, GPA_A, 3, true);
        tlb.invalidate_pasid(VDEV, Some(3));
        assert_eq!(both(&s, &mut tlb, &r3), Ok(a));
        // Detach PASID 3: its requests fault.
        s.vdev(RID).pasids.detach(Some(3)).unwrap();
        tlb.invalidate_pasid(VDEV, Some(3));
        assert_eq!(
            reason(both(&s, &mut tlb, &r3)),
            (FaultReason::PasidNotConfigured, None)
        );
    }
}

#[test]
fn guest_invalidation_is_precise_by_range_and_pasid() {
    for fmt in [ARM, X86] {
        let (mut s, mut tlb, root, a, b) = warm(fmt);
        // The guest repoints IOVA at GPA_B and invalidates only that page.
        s.s1_map(fmt, root, IOVA, GPA_B, 3, true);
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA, Access::Read)),
            Ok(a),
            "stale before invalidation"
        );
        // Wrong PASID scope or a disjoint range: no effect.
        tlb.invalidate_guest(VDEV, PasidScope::One(Some(1)), Iova(IOVA), 0x1000);
        tlb.invalidate_guest(VDEV, PasidScope::All, Iova(IOVA + 0x2000), 0x1000);
        tlb.invalidate_guest(VdevId(0xB000), PasidScope::All, Iova(IOVA), 0x1000);
        assert_eq!(tlb.len(), 2);
        tlb.invalidate_guest(VDEV, PasidScope::One(None), Iova(IOVA + 0x800), 1);
        assert_eq!(tlb.len(), 1);
        assert_eq!(both(&s, &mut tlb, &req(true, IOVA, Access::Read)), Ok(b));
        assert_eq!(
            hit(&s, &mut tlb, &req(true, IOVA + 0x1000, Access::Read)),
            Ok(b)
        );
        // Everything from an address up.
        tlb.invalidate_guest(VDEV, PasidScope::All, Iova(0), u64::MAX);
        assert!(tlb.is_empty());
    }
}

/// Found by the walkers fuzzer: a guest range ending inside the last page of the IOVA space
/// overflowed while its end was rounded up, which panics the TSM (release builds check
/// overflow). Ranges touching the top must cover it and leave the rest alone.
#[test]
fn guest_ranges_ending_in_the_last_page_do_not_overflow() {
    let (_, mut tlb, _, _, _) = warm(ARM);
    for (iova, len) in [
        (u64::MAX - 0x1FFF, 0x1000),
        (u64::MAX - 0xFFF, 1),
        (u64::MAX - 0xFFF, u64::MAX),
        (u64::MAX, u64::MAX),
    ] {
        tlb.invalidate_guest(VDEV, PasidScope::All, Iova(iova), len);
        assert_eq!(tlb.len(), 2, "{iova:#x}+{len:#x} reached the low pages");
    }
}

#[test]
fn tvm_destroy_and_flush_drop_everything_of_their_scope() {
    let (mut s, mut tlb, _, _, _) = warm(ARM);
    s.add_vdev(OTHER, VdevId(0xB000), TVM2, Stage1Format::None);
    s.map(TVM2, Gpa(0x3000), Perms::RW, false);
    let r2 = Request {
        requester: OTHER,
        pasid: None,
        t_bit: false,
        iova: Iova(0x3000),
        access: Access::Read,
    };
    assert!(both(&s, &mut tlb, &r2).is_ok());
    tlb.invalidate_tvm(TVM);
    assert_eq!(tlb.len(), 1);
    tlb.flush();
    assert!(tlb.is_empty());
}

#[test]
fn the_cache_is_bounded_and_keeps_working_past_capacity() {
    let mut s = Sim::with_vdev(Stage1Format::None);
    let n = (IOTLB_CAPACITY * 2) as u64;
    for i in 0..n {
        s.map(TVM, Gpa(i << 12), Perms::RW, false);
    }
    let mut tlb = Iotlb::new();
    for i in 0..n {
        assert!(both(&s, &mut tlb, &req(false, i << 12, Access::Read)).is_ok());
    }
    assert!(tlb.len() <= IOTLB_CAPACITY);
    assert!(
        tlb.len() > IOTLB_CAPACITY / 2,
        "sets should fill: {}",
        tlb.len()
    );
    for i in 0..n {
        assert_eq!(
            both(&s, &mut tlb, &req(false, i << 12, Access::Read)),
            Ok(s.gpa_to_pa(TVM, Gpa(i << 12)))
        );
    }
}

#[test]
fn walk_and_table_caches_cut_a_miss_to_one_read_and_one_stage2_lookup() {
    let (mut s, mut tlb, root, _, _) = warm(ARM);
    s.s1_map(ARM, root, IOVA + 0x2000, GPA_A, 3, true);
    let (reads, lookups) = (s.mem.reads.get(), s.s2_lookups.get());
    assert!(translate(&s, &mut tlb, &req(true, IOVA + 0x2000, Access::Read)).is_ok());
    // The walk prefix of this 2 MiB region is known: one level-3 descriptor read (its table
    // page's stage-2 translation is cached too), and only the final GPA needs stage 2.
    assert_eq!(
        (s.mem.reads.get() - reads, s.s2_lookups.get() - lookups),
        (1, 1)
    );
    let (reads, lookups) = (s.mem.reads.get(), s.s2_lookups.get());
    assert!(translate_uncached(&s, &req(true, IOVA + 0x2000, Access::Read)).is_ok());
    assert_eq!(
        (s.mem.reads.get() - reads, s.s2_lookups.get() - lookups),
        (4, 5)
    );
    // A hit reads nothing and looks nothing up.
    let (reads, lookups) = (s.mem.reads.get(), s.s2_lookups.get());
    assert!(translate(&s, &mut tlb, &req(true, IOVA + 0x2000, Access::Read)).is_ok());
    assert_eq!(
        (s.mem.reads.get() - reads, s.s2_lookups.get() - lookups),
        (0, 0)
    );
}

#[test]
fn a_guest_invalidation_drops_the_walk_prefix_of_its_region() {
    for fmt in [ARM, X86] {
        let (mut s, mut tlb, root, _, b) = warm(fmt);
        // The guest repoints the level-2 entry at a new level-3 table that maps IOVA + 8K.
        let new_l3 = s.alloc_table(TVM);
        let l2 = table_gpa(&s, root, 2);
        s.write_gpa(
            TVM,
            Gpa(l2.0 | (stage1::index(Iova(IOVA), 2) << 3)),
            enc::table(fmt, new_l3.0),
        );
        s.write_gpa(
            TVM,
            Gpa(new_l3.0 | (stage1::index(Iova(IOVA + 0x2000), 3) << 3)),
            enc::leaf(fmt, 3, GPA_B, true),
        );
        let r = req(true, IOVA + 0x2000, Access::Read);
        // Never translated, so not in the IOTLB; the stale prefix still leads to the old table.
        assert_eq!(
            reason(translate(&s, &mut tlb, &r)),
            (FaultReason::S1Translation, Some(3))
        );
        assert_eq!(translate_uncached(&s, &r), Ok(b));
        // Invalidating another region keeps the prefix; any page of its own region drops it.
        tlb.invalidate_guest(
            VDEV,
            PasidScope::One(None),
            Iova((IOVA | 0x1F_FFFF) + 1),
            0x1000,
        );
        assert_eq!(
            reason(translate(&s, &mut tlb, &r)),
            (FaultReason::S1Translation, Some(3))
        );
        tlb.invalidate_guest(VDEV, PasidScope::One(None), Iova(IOVA | 0x1F_F000), 0x1000);
        assert_eq!(both(&s, &mut tlb, &r), Ok(b));
    }
}
