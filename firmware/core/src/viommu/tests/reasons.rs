//! One test per fault reason (both stage-1 formats where the reason is format-specific), and
//! the successful paths.

use super::enc::*;
use super::*;

const ARM: Stage1Format = Stage1Format::ArmVmsav8_64_4k;
const X86: Stage1Format = Stage1Format::X86_64FirstStage4Level;
const FORMATS: [Stage1Format; 2] = [ARM, X86];
const IOVA: u64 = 0x0000_1234_5678_9000;
const DATA_GPA: u64 = 0x10_0000;

/// A vdevice of `fmt` with a default root mapping IOVA → DATA_GPA (private, read/write).
fn setup(fmt: Stage1Format) -> (Sim, Gpa, Pa) {
    let mut s = Sim::with_vdev(fmt);
    let root = s.new_root(None);
    let pa = s.map(TVM, Gpa(DATA_GPA), Perms::RW, true);
    s.s1_map(fmt, root, IOVA, DATA_GPA, 3, true);
    (s, root, pa)
}

/// GPA of the level-`level` descriptor for IOVA.
fn desc_gpa(s: &Sim, fmt: Stage1Format, root: Gpa, level: u8) -> Gpa {
    let _ = fmt;
    let mut table = root.0;
    for l in 0..level {
        table = s.read_gpa(TVM, Gpa(table | (stage1::index(Iova(IOVA), l) << 3)))
            & 0x0000_FFFF_FFFF_F000;
    }
    Gpa(table | (stage1::index(Iova(IOVA), level) << 3))
}

fn set_desc(s: &mut Sim, fmt: Stage1Format, root: Gpa, level: u8, v: u64) {
    let at = desc_gpa(s, fmt, root, level);
    s.write_gpa(TVM, at, v);
}

fn get_desc(s: &Sim, fmt: Stage1Format, root: Gpa, level: u8) -> u64 {
    s.read_gpa(TVM, desc_gpa(s, fmt, root, level))
}

fn fresh(s: &Sim, r: &Request) -> Result<Pa, Fault> {
    both(s, &mut Iotlb::new(), r)
}

#[test]
fn two_stage_page_translates_both_formats_and_keeps_the_offset() {
    for fmt in FORMATS {
        let (mut s, _, pa) = setup(fmt);
        s.set_run(true, true);
        for (t, acc) in [
            (false, Access::Read),
            (true, Access::Write),
            (true, Access::Read),
        ] {
            let r = fresh(&s, &req(t, IOVA | 0xABC, acc));
            if t {
                assert_eq!(r, Ok(Pa(pa.0 | 0xABC)), "{fmt:?}");
            } else {
                // T=0 to private (secure) memory is exactly what the final check refuses.
                assert_eq!(reason(r), (FaultReason::T0ToSecure, None), "{fmt:?}");
            }
        }
    }
}

#[test]
fn blocks_of_2m_and_1g_translate_with_their_offsets() {
    for fmt in FORMATS {
        for (level, size) in [(2u8, 1u64 << 21), (1, 1 << 30)] {
            let mut s = Sim::with_vdev(fmt);
            let root = s.new_root(None);
            let block_gpa = 4 * size;
            let iova = 7 * size;
            s.s1_map(fmt, root, iova, block_gpa, level, true);
            let off = size - 0x1008;
            let pa = s.map(TVM, Gpa(block_gpa + off), Perms::RW, false);
            assert_eq!(
                fresh(&s, &req(false, iova + off, Access::Write)),
                Ok(Pa(pa.0 | 0xFF8)),
                "{fmt:?} L{level}"
            );
        }
    }
}

#[test]
fn no_viommu_and_no_root_are_stage2_only() {
    for fmt in [Stage1Format::None, ARM, X86] {
        let mut s = Sim::with_vdev(fmt);
        let pa = s.map(TVM, Gpa(0x5000), Perms::R, false);
        assert_eq!(
            fresh(&s, &req(false, 0x5010, Access::Read)),
            Ok(Pa(pa.0 | 0x10)),
            "{fmt:?}"
        );
    }
    // TSM_NO_VIOMMU ignores any root the core might still hold.
    let mut s = Sim::with_vdev(Stage1Format::None);
    s.new_root(None);
    let pa = s.map(TVM, Gpa(0x5000), Perms::R, false);
    assert_eq!(fresh(&s, &req(false, 0x5000, Access::Read)), Ok(pa));
}

#[test]
fn pasid_without_root_or_above_20_bits_faults_and_pasids_use_their_own_root() {
    let (mut s, _, pa) = setup(ARM);
    let mut r = req(false, IOVA, Access::Read);
    r.pasid = Some(5);
    assert_eq!(
        reason(fresh(&s, &r)),
        (FaultReason::PasidNotConfigured, None)
    );
    r.pasid = Some(PASID_MAX + 1);
    assert_eq!(
        reason(fresh(&s, &r)),
        (FaultReason::PasidNotConfigured, None)
    );
    // PASID 5 gets a root mapping IOVA to a shared page; the default root still maps private.
    let root5 = s.new_root(Some(5));
    let shared = s.map(TVM, Gpa(0x20_0000), Perms::RW, false);
    s.s1_map(ARM, root5, IOVA, 0x20_0000, 3, true);
    r.pasid = Some(5);
    assert_eq!(fresh(&s, &r), Ok(shared));
    s.set_run(true, true);
    assert_eq!(fresh(&s, &req(true, IOVA, Access::Read)), Ok(pa));
}

#[test]
fn iova_outside_the_input_range_faults() {
    for (fmt, iova) in [
        (ARM, 1u64 << 48),
        (ARM, 0xFFFF_8000_0000_0000),
        (X86, 1 << 47),
        (X86, 0x8000_0000_0000_0000),
    ] {
        let (s, _, _) = setup(fmt);
        assert_eq!(
            reason(fresh(&s, &req(false, iova, Access::Read))),
            (FaultReason::S1InputRange, None),
            "{fmt:?} {iova:#x}"
        );
    }
    // A canonical upper-half address is in range for x86-64 (and simply unmapped here).
    let (s, _, _) = setup(X86);
    assert_eq!(
        reason(fresh(&s, &req(false, 0xFFFF_8000_0000_0000, Access::Read))),
        (FaultReason::S1Translation, Some(0))
    );
}

#[test]
fn invalid_descriptors_fault_at_their_level() {
    for fmt in FORMATS {
        for level in 0..4u8 {
            let (mut s, root, _) = setup(fmt);
            let d = get_desc(&s, fmt, root, level);
            set_desc(&mut s, fmt, root, level, d & !1);
            assert_eq!(
                reason(fresh(&s, &req(false, IOVA, Access::Read))),
                (FaultReason::S1Translation, Some(level))
            );
        }
    }
}

#[test]
fn reserved_encodings_and_bits_fault() {
    // Arm: block at level 0; `0b01` at level 3.
    let (mut s, root, _) = setup(ARM);
    let d = get_desc(&s, ARM, root, 0);
    set_desc(&mut s, ARM, root, 0, d & !ARM_TABLE_OR_PAGE);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1Reserved, Some(0))
    );
    let (mut s, root, _) = setup(ARM);
    let d = get_desc(&s, ARM, root, 3);
    set_desc(&mut s, ARM, root, 3, d & !ARM_TABLE_OR_PAGE);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1Reserved, Some(3))
    );
    // x86-64: PS in a PML4E; address bits 51:48; reserved bits of 1 GiB and 2 MiB pages.
    let (mut s, root, _) = setup(X86);
    let d = get_desc(&s, X86, root, 0);
    set_desc(&mut s, X86, root, 0, d | X86_PS);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1Reserved, Some(0))
    );
    let (mut s, root, _) = setup(X86);
    let d = get_desc(&s, X86, root, 2);
    set_desc(&mut s, X86, root, 2, d | 1 << 50);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1Reserved, Some(2))
    );
    for (level, bad) in [(1u8, 1u64 << 20), (2, 1 << 13)] {
        let (mut s, root, _) = setup(X86);
        set_desc(&mut s, X86, root, level, enc::leaf(X86, level, bad, true));
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1Reserved, Some(level))
        );
        // The PAT bit (12) of a large page is not reserved.
        let (mut s, root, _) = setup(X86);
        set_desc(
            &mut s,
            X86,
            root,
            level,
            enc::leaf(X86, level, 1 << 12, true),
        );
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S2Translation, None)
        );
    }
}

#[test]
fn arm_output_address_above_48_bits_faults() {
    for level in 0..4u8 {
        let (mut s, root, _) = setup(ARM);
        let d = get_desc(&s, ARM, root, level);
        set_desc(&mut s, ARM, root, level, d | 1 << 48);
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1AddressSize, Some(level))
        );
    }
}

#[test]
fn arm_access_flag_clear_faults() {
    let (mut s, root, _) = setup(ARM);
    let d = get_desc(&s, ARM, root, 3);
    set_desc(&mut s, ARM, root, 3, d & !ARM_AF);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1AccessFlag, Some(3))
    );
}

#[test]
fn stage1_permissions_deny() {
    let w = req(false, IOVA, Access::Write);
    let r = req(false, IOVA, Access::Read);
    let s1p = |lvl| (FaultReason::S1Permission, Some(lvl));
    // Read-only leaf, both formats.
    for fmt in FORMATS {
        let (mut s, root, _) = setup(fmt);
        s.map_to(TVM, Gpa(DATA_GPA), Pa(0x7000_0000), Perms::RW, false);
        s.s1_map(fmt, root, IOVA, DATA_GPA, 3, false);
        assert_eq!(reason(fresh(&s, &w)), s1p(3), "{fmt:?}");
        assert_eq!(fresh(&s, &r), Ok(Pa(0x7000_0000)));
    }
    // Arm: privileged-only leaf (AP[1] = 0); APTable no-write / no-unprivileged at level 1.
    let (mut s, root, _) = setup(ARM);
    s.map_to(TVM, Gpa(DATA_GPA), Pa(0x7000_0000), Perms::RW, false);
    let d = get_desc(&s, ARM, root, 3);
    set_desc(&mut s, ARM, root, 3, d & !ARM_AP_USER);
    assert_eq!(reason(fresh(&s, &r)), s1p(3));
    set_desc(&mut s, ARM, root, 3, d);
    let t1 = get_desc(&s, ARM, root, 1);
    set_desc(&mut s, ARM, root, 1, t1 | ARM_APTABLE_NO_WRITE);
    assert_eq!(reason(fresh(&s, &w)), s1p(3));
    assert!(fresh(&s, &r).is_ok());
    set_desc(&mut s, ARM, root, 1, t1 | ARM_APTABLE_NO_USER);
    assert_eq!(reason(fresh(&s, &r)), s1p(3));
    // x86-64: R/W = 0 or U/S = 0 at an upper level.
    let (mut s, root, _) = setup(X86);
    s.map_to(TVM, Gpa(DATA_GPA), Pa(0x7000_0000), Perms::RW, false);
    let t2 = get_desc(&s, X86, root, 2);
    set_desc(&mut s, X86, root, 2, t2 & !X86_RW);
    assert_eq!(reason(fresh(&s, &w)), s1p(3));
    assert!(fresh(&s, &r).is_ok());
    set_desc(&mut s, X86, root, 2, t2 & !X86_US);
    assert_eq!(reason(fresh(&s, &r)), s1p(3));
}

#[test]
fn tables_outside_the_tvm_fault() {
    for fmt in FORMATS {
        // Root GPA not mapped at all.
        let mut s = Sim::with_vdev(fmt);
        s.vdev(RID)
            .pasids
            .attach(None, Gpa(0x9999_0000), 48)
            .unwrap();
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1TableNotMapped, Some(0))
        );
        // A level-1 table pointer naming a GPA outside the TVM (here: another TVM's table).
        let (mut s, root, _) = setup(fmt);
        let other = s.alloc_table(TVM2);
        set_desc(&mut s, fmt, root, 0, enc::table(fmt, other.0 + 0x100_0000));
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1TableNotMapped, Some(1))
        );
        // A table page mapped without read permission.
        let (mut s, root, _) = setup(fmt);
        let g = desc_gpa(&s, fmt, root, 2).granule_base();
        s.s2.get_mut(&(TVM, g.0)).unwrap().perms = Perms::NONE;
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1TableNotMapped, Some(2))
        );
    }
}

#[test]
fn tables_in_shared_memory_fault() {
    for fmt in FORMATS {
        let (mut s, root, _) = setup(fmt);
        let g = desc_gpa(&s, fmt, root, 3).granule_base();
        let e = s.s2.get_mut(&(TVM, g.0)).unwrap();
        e.private = false;
        let pa = e.pa;
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1TableShared, Some(3))
        );
        // Private in the map but not secure in the granule table: refused all the same.
        s.s2.get_mut(&(TVM, g.0)).unwrap().private = true;
        s.secure.remove(&pa.0);
        assert_eq!(
            reason(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1TableShared, Some(3))
        );
    }
}

#[test]
fn unreadable_table_memory_faults() {
    let (mut s, root, _) = setup(ARM);
    let g = desc_gpa(&s, ARM, root, 1).granule_base();
    s.s2.get_mut(&(TVM, g.0)).unwrap().pa = Pa(0xDEAD_0000);
    s.secure.insert(0xDEAD_0000);
    assert_eq!(
        reason(fresh(&s, &req(false, IOVA, Access::Read))),
        (FaultReason::S1TableRead, Some(1))
    );
}

#[test]
fn stage2_translation_and_permission_faults() {
    for fmt in [Stage1Format::None, ARM, X86] {
        let (mut s, _, _) = if fmt == Stage1Format::None {
            (Sim::with_vdev(fmt), Gpa(0), Pa(0))
        } else {
            setup(fmt)
        };
        let (iova, gpa) = if fmt == Stage1Format::None {
            (DATA_GPA, DATA_GPA)
        } else {
            (IOVA, DATA_GPA)
        };
        s.s2.remove(&(TVM, gpa));
        assert_eq!(
            reason(fresh(&s, &req(false, iova, Access::Read))),
            (FaultReason::S2Translation, None)
        );
        s.map_to(TVM, Gpa(gpa), Pa(0x7000_0000), Perms::R, false);
        assert_eq!(
            reason(fresh(&s, &req(false, iova, Access::Write))),
            (FaultReason::S2Permission, None)
        );
        assert_eq!(
            fresh(&s, &req(false, iova, Access::Read)),
            Ok(Pa(0x7000_0000))
        );
    }
}

#[test]
fn host_devices_use_the_host_domain_and_the_final_check() {
    let mut s = Sim::with_vdev(ARM);
    let host = |t, iova| Request {
        requester: HOST_RID,
        pasid: None,
        t_bit: t,
        iova: Iova(iova),
        access: Access::Write,
    };
    assert_eq!(fresh(&s, &host(false, 0x1234_5000)), Ok(Pa(0x1234_5000)));
    s.host_unmapped.insert(0x1234_5000);
    let f = fresh(&s, &host(false, 0x1234_5008)).unwrap_err();
    assert_eq!((f.reason, f.vdev), (FaultReason::HostDomain, None));
    // The host's own map reaching secure memory (say the TSM's carve-out) is refused.
    s.secure.insert(0x6000_0000);
    assert_eq!(
        reason(fresh(&s, &host(false, 0x6000_0010))),
        (FaultReason::T0ToSecure, None)
    );
    // A host device never gets T=1, whatever the address.
    assert_eq!(
        reason(fresh(&s, &host(true, 0x5000))),
        (FaultReason::T1NotAllowed, None)
    );
}

#[test]
fn t0_to_secure_memory_faults_on_every_path() {
    // Stage 2 only, stage 1 of both formats: T=0 to a private page, in every vdevice state.
    for fmt in [Stage1Format::None, ARM, X86] {
        for (run, acc) in [(false, false), (true, false), (true, true)] {
            let mut s = Sim::with_vdev(fmt);
            s.set_run(run, acc);
            let iova = if fmt == Stage1Format::None {
                DATA_GPA
            } else {
                let root = s.new_root(None);
                s.s1_map(fmt, root, IOVA, DATA_GPA, 3, true);
                IOVA
            };
            s.map(TVM, Gpa(DATA_GPA), Perms::RW, true);
            let f = fresh(&s, &req(false, iova, Access::Read)).unwrap_err();
            assert_eq!(
                (f.reason, f.vdev, f.t_bit),
                (FaultReason::T0ToSecure, Some(VDEV), false)
            );
        }
    }
}

#[test]
fn t1_needs_run_and_accept() {
    for (run, acc) in [(false, false), (false, true), (true, false)] {
        let (mut s, _, _) = setup(ARM);
        s.set_run(run, acc);
        assert_eq!(
            reason(fresh(&s, &req(true, IOVA, Access::Read))),
            (FaultReason::T1NotAllowed, None)
        );
    }
    // Shared memory is the TVM's too: T=1 may reach it once RUN and accepted.
    let mut s = Sim::with_vdev(Stage1Format::None);
    let pa = s.map(TVM, Gpa(0x3000), Perms::RW, false);
    assert_eq!(
        reason(fresh(&s, &req(true, 0x3000, Access::Write))),
        (FaultReason::T1NotAllowed, None)
    );
    s.set_run(true, true);
    assert_eq!(fresh(&s, &req(true, 0x3000, Access::Write)), Ok(pa));
}

#[test]
fn t1_to_a_page_that_is_not_the_tvms_own_faults() {
    let mut s = Sim::with_vdev(Stage1Format::None);
    s.set_run(true, true);
    // Shared mapping of a secure page (say another TVM's private page).
    s.map_to(TVM, Gpa(0x3000), Pa(0x7000_0000), Perms::RW, false);
    s.secure.insert(0x7000_0000);
    assert_eq!(
        reason(fresh(&s, &req(true, 0x3000, Access::Read))),
        (FaultReason::T1NotTvmMemory, None)
    );
    // Private mapping of a non-secure page.
    s.s2.insert(
        (TVM, 0x4000),
        S2Entry {
            pa: Pa(0x7100_0000),
            perms: Perms::RW,
            private: true,
        },
    );
    assert_eq!(
        reason(fresh(&s, &req(true, 0x4000, Access::Read))),
        (FaultReason::T1NotTvmMemory, None)
    );
}

#[test]
fn faults_carry_the_request() {
    let (s, _, _) = setup(X86);
    let r = Request {
        requester: RID,
        pasid: Some(9),
        t_bit: true,
        iova: Iova(0xFFFF_0000),
        access: Access::Write,
    };
    let f = fresh(&s, &r).unwrap_err();
    assert_eq!(
        f,
        Fault {
            vdev: Some(VDEV),
            reason: FaultReason::PasidNotConfigured,
            level: None,
            gpa: None,
            iova: Iova(0xFFFF_0000),
            pasid: Some(9),
            access: Access::Write,
            t_bit: true
        }
    );
}

#[test]
fn cyclic_tables_terminate() {
    for fmt in FORMATS {
        let mut s = Sim::with_vdev(fmt);
        let root = s.new_root(None);
        // Every entry of the root points back at the root: four levels of the same table.
        for i in 0..512u64 {
            s.write_gpa(TVM, Gpa(root.0 + 8 * i), enc::table(fmt, root.0));
        }
        let got = reason(fresh(&s, &req(false, IOVA, Access::Read)));
        // At level 3 the walk stops whatever the entry says: Arm reads `11` as a page without
        // its Access flag; x86-64 reads it as a PTE whose output (the root table itself) is
        // private memory, which T=0 may not reach.
        let want = match fmt {
            ARM => (FaultReason::S1AccessFlag, Some(3)),
            _ => (FaultReason::T0ToSecure, None),
        };
        assert_eq!(got, want, "{fmt:?}");
    }
}

#[test]
fn faults_say_where_translation_stopped() {
    let stopped = |r: Result<Pa, Fault>| {
        let f = r.expect_err("expected a fault");
        (f.reason, f.gpa)
    };
    for fmt in FORMATS {
        // A table read: the descriptor's GPA, at any level.
        for level in 0..4u8 {
            let (mut s, root, _) = setup(fmt);
            let at = desc_gpa(&s, fmt, root, level);
            s.s2.remove(&(TVM, at.granule_base().0));
            assert_eq!(
                stopped(fresh(&s, &req(false, IOVA | 0x18, Access::Read))),
                (FaultReason::S1TableNotMapped, Some(at)),
                "{fmt:?} L{level}"
            );
        }
        // The final GPA, with the IOVA's offset: unmapped, read-only, or stage 1 read-only.
        let (mut s, root, _) = setup(fmt);
        let data = Some(Gpa(DATA_GPA | 0x18));
        s.s2.remove(&(TVM, DATA_GPA));
        let w = req(false, IOVA | 0x18, Access::Write);
        assert_eq!(stopped(fresh(&s, &w)), (FaultReason::S2Translation, data));
        s.map_to(TVM, Gpa(DATA_GPA), Pa(0x7000_0000), Perms::R, false);
        assert_eq!(stopped(fresh(&s, &w)), (FaultReason::S2Permission, data));
        s.s1_map(fmt, root, IOVA, DATA_GPA, 3, false);
        assert_eq!(stopped(fresh(&s, &w)), (FaultReason::S1Permission, data));
        // The final check: the GPA of the page T=0 may not reach.
        let (s, _, _) = setup(fmt);
        assert_eq!(
            stopped(fresh(&s, &req(false, IOVA | 0x18, Access::Read))),
            (FaultReason::T0ToSecure, data)
        );
        // Nothing reached stage 2: no GPA.
        let (mut s, root, _) = setup(fmt);
        let d = get_desc(&s, fmt, root, 2);
        set_desc(&mut s, fmt, root, 2, d & !1);
        assert_eq!(
            stopped(fresh(&s, &req(false, IOVA, Access::Read))),
            (FaultReason::S1Translation, None)
        );
        assert_eq!(
            stopped(fresh(&s, &req(false, 1 << 63, Access::Read))),
            (FaultReason::S1InputRange, None)
        );
    }
    // Without a stage 1 the GPA is the IOVA.
    let s = Sim::with_vdev(Stage1Format::None);
    assert_eq!(
        stopped(fresh(&s, &req(false, 0x5018, Access::Read))),
        (FaultReason::S2Translation, Some(Gpa(0x5018)))
    );
    let mut r = req(false, 0x5018, Access::Read);
    r.pasid = Some(PASID_MAX + 1);
    assert_eq!(
        stopped(fresh(&s, &r)),
        (FaultReason::PasidNotConfigured, None)
    );
    // A host device's fault has no GPA: the host's domain is not a TVM's.
    let mut s = Sim::with_vdev(ARM);
    s.host_unmapped.insert(0x5000);
    let mut r = req(false, 0x5018, Access::Read);
    r.requester = HOST_RID;
    assert_eq!(stopped(fresh(&s, &r)), (FaultReason::HostDomain, None));
}
