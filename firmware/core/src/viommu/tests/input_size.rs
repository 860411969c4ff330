//! The stage-1 input size the guest attaches a root with: where the Arm walk starts, which
//! IOVAs are in range, and that the caches keep walks of different sizes apart.

use super::*;

const ARM: Stage1Format = Stage1Format::ArmVmsav8_64_4k;
const X86: Stage1Format = Stage1Format::X86_64FirstStage4Level;
const DATA_GPA: u64 = 0x10_0000;

/// The Arm initial lookup level for an `ia_bits` input with the 4 KiB granule, from the
/// architecture's rule: the levels below the start one resolve 9 bits each above the 12-bit
/// page offset, and the start level resolves the 1 to 9 bits left.
fn arm_start(ia_bits: u8) -> u8 {
    3 - (ia_bits - 13) / 9
}

/// A vdevice with an Arm root of `ia_bits` (a level-`arm_start` table) mapping the page of
/// `iova` to a private page at DATA_GPA.
fn sized(ia_bits: u8, iova: u64) -> (Sim, Gpa, Pa) {
    let mut s = Sim::with_vdev(ARM);
    s.set_run(true, true);
    let root = s.new_sized_root(None, ia_bits);
    let pa = s.map(TVM, Gpa(DATA_GPA), Perms::RW, true);
    s.s1_map_from(ARM, root, arm_start(ia_bits), iova, DATA_GPA, 3, true);
    (s, root, pa)
}

/// Translates with a fresh IOTLB (checked against the uncached walk) and counts the stage-1
/// descriptors the uncached walk read.
fn go(s: &Sim, r: &Request) -> (Result<Pa, Fault>, u64) {
    let got = both(s, &mut Iotlb::new(), r);
    let before = s.mem.reads.get();
    translate_uncached(s, r).ok();
    (got, s.mem.reads.get() - before)
}

#[test]
fn a_39_bit_arm_table_is_walked_from_level_1() {
    // Level-1 index 5, level-2 index 7, level-3 index 9: below 2^39, level-0 index 0.
    let iova = (5 << 30) | (7 << 21) | (9 << 12);
    let (s, _, pa) = sized(39, iova);
    let (got, reads) = go(&s, &req(true, iova | 0x123, Access::Write));
    assert_eq!(got, Ok(Pa(pa.0 | 0x123)));
    assert_eq!(reads, 3, "three levels: 1, 2, 3");
    // A 1 GiB block in the level-1 root translates too (a block is reserved at level 0).
    let mut s = s;
    let root = match s.vdev(RID).pasids.lookup(None) {
        Stage1Root::Root { table, .. } => table,
        other => panic!("{other:?}"),
    };
    let block_pa = s.map(TVM, Gpa((4 << 30) + 0x5000), Perms::RW, false);
    s.s1_map_from(ARM, root, 1, 2 << 30, 4 << 30, 1, true);
    assert_eq!(
        go(&s, &req(false, (2 << 30) + 0x5008, Access::Read)).0,
        Ok(Pa(block_pa.0 | 8))
    );
}

#[test]
fn a_page_the_device_reaches_is_never_read_as_a_table() {
    // IOVA 0 of a 39-bit root: levels 1, 2, 3 at index 0. Read as a 48-bit walk, the level-3
    // page descriptor would be a level-2 table descriptor and the data page a level-3 table.
    let (mut s, _, pa) = sized(39, 0);
    // The data page's first word looks like a page descriptor naming another page.
    let other = s.map(TVM, Gpa(0x20_0000), Perms::RW, true);
    s.mem.write_u64(pa, enc::leaf(ARM, 3, 0x20_0000, true));
    let (got, reads) = go(&s, &req(true, 0x10, Access::Read));
    assert_eq!(got, Ok(Pa(pa.0 | 0x10)), "not {:?}", Pa(other.0 | 0x10));
    assert_eq!(reads, 3);
}

#[test]
fn a_32_bit_arm_input_faults_address_size_above_bit_31() {
    // Level 1 resolves bits 31:30: a four-entry top table.
    let iova = (3 << 30) | (1 << 21) | (2 << 12);
    let (s, _, pa) = sized(32, iova);
    assert_eq!(go(&s, &req(true, iova, Access::Read)).0, Ok(pa));
    for bad in [1u64 << 40, 1 << 32, (1 << 32) | iova, u64::MAX] {
        assert_eq!(
            reason(go(&s, &req(true, bad, Access::Read)).0),
            (FaultReason::S1InputRange, None),
            "{bad:#x}"
        );
    }
}

#[test]
fn a_25_bit_arm_input_starts_at_level_2() {
    // Level 2 resolves bits 24:21: a sixteen-entry top table.
    let iova = (15 << 21) | (4 << 12);
    let (s, _, pa) = sized(25, iova);
    let (got, reads) = go(&s, &req(true, iova | 8, Access::Read));
    assert_eq!(got, Ok(Pa(pa.0 | 8)));
    assert_eq!(reads, 2, "two levels: 2, 3");
    assert_eq!(
        reason(go(&s, &req(true, 1 << 25, Access::Read)).0),
        (FaultReason::S1InputRange, None)
    );
}

#[test]
fn every_arm_input_size_walks_from_its_start_level_up_to_its_last_page() {
    for ia_bits in 25..=48u8 {
        let last = (1u64 << ia_bits) - 0x1000;
        let (s, _, pa) = sized(ia_bits, last);
        let (got, reads) = go(&s, &req(true, last | 0xFF8, Access::Read));
        assert_eq!(got, Ok(Pa(pa.0 | 0xFF8)), "{ia_bits} bits");
        assert_eq!(reads, u64::from(4 - arm_start(ia_bits)), "{ia_bits} bits");
        assert_eq!(
            reason(go(&s, &req(true, 1 << ia_bits, Access::Read)).0),
            (FaultReason::S1InputRange, None),
            "{ia_bits} bits"
        );
    }
}

#[test]
fn a_stored_size_the_format_lacks_faults_and_never_walks() {
    // Only a corrupted VDEV object holds these (G_S1_ATTACH refuses them).
    for (fmt, ia_bits) in [
        (ARM, 0),
        (ARM, 24),
        (ARM, 49),
        (ARM, 0xFF),
        (X86, 39),
        (X86, 0),
        (X86, 57),
    ] {
        let mut s = Sim::with_vdev(fmt);
        s.new_sized_root(None, ia_bits);
        let (got, reads) = go(&s, &req(false, 0x1000, Access::Read));
        assert_eq!(
            reason(got),
            (FaultReason::PasidNotConfigured, None),
            "{fmt:?} {ia_bits}"
        );
        assert_eq!(reads, 0);
    }
}

#[test]
fn the_walk_and_the_attach_bound_agree_on_every_size() {
    for fmt in [Stage1Format::None, ARM, X86] {
        let format = match fmt {
            ARM => Some(stage1::Format::Arm),
            X86 => Some(stage1::Format::X86),
            _ => None,
        };
        for ia_bits in 0..=u8::MAX {
            let attachable = fmt
                .min_ia_bits()
                .is_some_and(|min| (min..=48).contains(&ia_bits));
            let walks = format.is_some_and(|f| stage1::start_level(f, ia_bits).is_some());
            assert_eq!(attachable, walks, "{fmt:?} {ia_bits}");
        }
    }
}

#[test]
fn roots_of_different_sizes_share_tables_and_the_caches_keep_them_apart() {
    let mut s = Sim::with_vdev(ARM);
    s.set_run(true, true);
    let iova = (2 << 30) | (3 << 21) | (4 << 12);
    let a = s.map(TVM, Gpa(DATA_GPA), Perms::RW, true);
    // PASID 1: a 48-bit root whose entry 0 is the level-1 table PASID 2 uses as its 39-bit
    // root. Both reach `a` through the same level-1, -2 and -3 tables.
    let root48 = s.new_sized_root(Some(1), 48);
    s.s1_map(ARM, root48, iova, DATA_GPA, 3, true);
    let l1 = Gpa(s.read_gpa(TVM, root48) & 0x0000_FFFF_FFFF_F000);
    s.vdev(RID).pasids.attach(Some(2), l1, 39).unwrap();
    let mut tlb = Iotlb::new();
    let r = |pasid, iova| Request {
        pasid: Some(pasid),
        ..req(true, iova, Access::Read)
    };
    for _ in 0..2 {
        assert_eq!(both(&s, &mut tlb, &r(1, iova)), Ok(a));
        assert_eq!(both(&s, &mut tlb, &r(2, iova)), Ok(a));
        // Above 39 bits only the 48-bit root translates (here: nothing mapped there).
        assert_eq!(
            reason(both(&s, &mut tlb, &r(2, iova | 1 << 39))),
            (FaultReason::S1InputRange, None)
        );
        assert_eq!(
            reason(both(&s, &mut tlb, &r(1, iova | 1 << 39))),
            (FaultReason::S1Translation, Some(0))
        );
    }
    // Re-attaching PASID 2's root with 30 bits makes it a level-2 table: the cached 39-bit
    // walk goes with the attach, and the same table now means something else.
    s.vdev(RID).pasids.attach(Some(2), l1, 30).unwrap();
    tlb.invalidate_pasid(VDEV, Some(2));
    let b = s.map(TVM, Gpa(DATA_GPA + 0x1000), Perms::RW, true);
    // Level-2 index 6: not the entry PASID 1's walk reads as a level-1 one (2).
    let low = (6 << 21) | (5 << 12);
    s.s1_map_from(ARM, l1, 2, low, DATA_GPA + 0x1000, 3, true);
    assert_eq!(both(&s, &mut tlb, &r(2, low)), Ok(b));
    assert_eq!(
        reason(both(&s, &mut tlb, &r(2, iova))),
        (FaultReason::S1InputRange, None)
    );
    assert_eq!(both(&s, &mut tlb, &r(1, iova)), Ok(a));
}

#[test]
fn x86_takes_48_bit_canonical_input_only() {
    let mut s = Sim::with_vdev(X86);
    let root = s.new_sized_root(None, 48);
    let pa = s.map(TVM, Gpa(DATA_GPA), Perms::RW, false);
    let high = 0xFFFF_8000_0000_0000 | (3 << 30);
    s.s1_map(X86, root, high, DATA_GPA, 3, true);
    assert_eq!(
        go(&s, &req(false, high | 8, Access::Read)).0,
        Ok(Pa(pa.0 | 8))
    );
    assert_eq!(
        reason(go(&s, &req(false, 1 << 47, Access::Read)).0),
        (FaultReason::S1InputRange, None)
    );
}
