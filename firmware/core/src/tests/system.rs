//! The dispatcher rules, VERSION / FEATURES / CONSOLE_WRITE / SYSTEM_OFF, and the vCPU calls.

extern crate std;

use tsm_abi::CallId::{self, *};
use tsm_abi::call::MAX_ARGS;
use tsm_abi::features::{
    BuildFlags, DeviceLimits, FeatureReg, MemoryFeatures, ReportLimits, SecurityFeatures,
    ViommuTypes,
};
use tsm_abi::regs::CallRegs;
use tsm_abi::status::{Status, StatusCode::*};
use tsm_platform::{AddressMapFormat, ExitCode};

use super::*;

#[test]
fn unknown_ids_and_non_zero_unused_registers_are_refused() {
    // Outside the TSM's own owner, Arm's PSCI/SMCCC answers instead (tests/cpus.rs).
    let x86 = harness(AddressMapFormat::X86_64FourLevel);
    let h = harness(AddressMapFormat::ArmStage2);
    let unknown = [
        (&h, 0xC600_01FF),
        (&h, 0xC600_0300),
        (&h, 0x1_C600_0100),
        (&x86, 0),
        (&x86, u64::MAX),
        (&x86, 0x8400_0000),
    ];
    for (h, fid) in unknown {
        let r = h.tsm.handle(
            crate::Origin::Host,
            &CallRegs {
                fid,
                args: [0; MAX_ARGS],
            },
        );
        assert_eq!(
            Status::from_raw(r.status),
            Some(Status::new(NotSupported)),
            "{fid:#x}"
        );
        assert_eq!(r.out, [0; 4]);
    }
    for &c in CallId::ALL
        .iter()
        .filter(|c| c.caller() == tsm_abi::call::Caller::Host)
    {
        for i in c.arg_count()..MAX_ARGS {
            let mut args = [0u64; MAX_ARGS];
            args[i] = 1;
            h.refused(c, &args, s(InvalidArgument, i as u8 + 1));
        }
    }
}

#[test]
fn results_past_the_result_count_are_zero() {
    let h = harness(AddressMapFormat::ArmStage2);
    let r = h.host(VERSION, &[0x1_0000]).unwrap();
    assert_eq!(r, [0x1_0000, 0x1_0000, 0x1_0000, 0]);
    assert_eq!(
        h.host(VERSION, &[0x2_0000]),
        Err(Status::new(VersionMismatch))
    );
    let (st, out) = h
        .call_as(crate::Origin::Host, VERSION, &[1 << 32])
        .unwrap_err();
    assert_eq!(
        (st, out),
        (s(InvalidArgument, 1), [0, 0x1_0000, 0x1_0000, 0])
    );
    assert_eq!(h.host(GRANULE_DELEGATE, &[h.granule(9).0]), Ok([0; 4]));
}

#[test]
fn features_match_the_implementation() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    let f = |r: FeatureReg| h.host(FEATURES, &[u64::from(r.raw())]).unwrap()[0];
    assert_eq!(f(FeatureReg::ViommuTypes), ViommuTypes::all().bits());
    assert_eq!(
        f(FeatureReg::Security),
        (SecurityFeatures::SPDM_SESSION | SecurityFeatures::DEVICE_MEASUREMENTS).bits()
    );
    let d = DeviceLimits::from_raw(f(FeatureReg::DeviceLimits));
    assert_eq!(
        usize::from(d.vdevs_per_tvm),
        crate::objects::MAX_VDEVS_PER_TVM
    );
    let m = MemoryFeatures::from_raw(f(FeatureReg::Memory));
    assert_eq!(
        (m.granule_shift, m.min_gpa_bits, m.max_gpa_bits),
        (12, 32, 47)
    );
    let r = ReportLimits::from_raw(f(FeatureReg::ReportLimits));
    assert_eq!(u64::from(r.max_report_len), crate::objects::REPORT_CAPACITY);
    assert_eq!(r.max_message_len, 4032);
    let b = BuildFlags::from_bits_truncate(f(FeatureReg::Build));
    assert_eq!(
        b.contains(BuildFlags::TEST_DMA_INJECT),
        cfg!(feature = "dma-inject")
    );
    // No platform IOMMU here: no DMA tables (tests/dma_tables.rs has one).
    assert_eq!(f(FeatureReg::Dma), 0);
    h.refused(FEATURES, &[10], s(InvalidArgument, 1));
    if !cfg!(feature = "dma-inject") {
        h.refused(TEST_DMA_INJECT, &[0, 0, 0, 0], Status::new(NotSupported));
    }
}

#[test]
fn console_write_relays_ns_buffers_only() {
    let h = harness(AddressMapFormat::ArmStage2);
    let pa = h.host_put(10, b"\x01\x02frame");
    h.host(CONSOLE_WRITE, &[pa.0, 7]).unwrap();
    assert_eq!(
        h.sim.console(),
        std::vec![(tsm_platform::log::STREAM_HOST, b"\x01\x02frame".to_vec())]
    );
    h.refused(CONSOLE_WRITE, &[pa.0, 0], s(InvalidArgument, 2));
    h.refused(CONSOLE_WRITE, &[pa.0, 513], s(InvalidArgument, 2));
    h.refused(CONSOLE_WRITE, &[pa.0 + 4090, 8], s(InvalidBuffer, 1));
    h.refused(CONSOLE_WRITE, &[h.granule(1).0, 8], s(InvalidBuffer, 1));
    h.refused(CONSOLE_WRITE, &[h.delegate(11).0, 8], s(InvalidBuffer, 1));
    h.refused(CONSOLE_WRITE, &[u64::MAX - 3, 8], s(InvalidBuffer, 1));
}

#[test]
fn system_off_powers_off_with_the_code() {
    let h = harness(AddressMapFormat::ArmStage2);
    for (arg, code) in [(0, ExitCode::Success), (7, ExitCode::Failure)] {
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.host(SYSTEM_OFF, &[arg])));
        let payload = r.expect_err("SYSTEM_OFF does not return");
        assert_eq!(payload.downcast_ref::<ExitCode>(), Some(&code));
    }
}

#[test]
fn vcpu_create_and_destroy_refusals() {
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 10);
    let v = h.delegate(20);
    h.refused(VCPU_CREATE, &[t.root.0, v.0, 0, 0], s(BadHandle, 1));
    h.refused(VCPU_CREATE, &[t.tvm.0, v.0, 1 << 40, 0], s(OutOfRange, 3));
    h.refused(VCPU_CREATE, &[t.tvm.0, t.tvm.0, 0, 0], s(GranuleState, 2));
    h.refused(
        VCPU_CREATE,
        &[t.tvm.0, h.granule(21).0, 0, 0],
        s(GranuleState, 2),
    );
    h.refused(VCPU_CREATE, &[t.tvm.0, v.0 + 1, 0, 0], s(Misaligned, 2));
    h.host(VCPU_CREATE, &[t.tvm.0, v.0, 0x1000, 9]).unwrap();
    h.host(VCPU_CREATE, &[t.tvm.0, h.delegate(21).0, 0x1000, 9])
        .unwrap();
    h.refused(
        VCPU_CREATE,
        &[t.tvm.0, h.delegate(22).0, 0, 0],
        s(Capacity, 1),
    );
    h.refused(VCPU_DESTROY, &[t.tvm.0], s(BadHandle, 1));
    h.host(VCPU_DESTROY, &[h.granule(21).0]).unwrap();
    // Indices are not reused: max_vcpus counts over the TVM's life.
    h.refused(
        VCPU_CREATE,
        &[t.tvm.0, h.granule(21).0, 0, 0],
        s(Capacity, 1),
    );
    h.host(TVM_ACTIVATE, &[t.tvm.0]).unwrap();
    h.refused(
        VCPU_CREATE,
        &[t.tvm.0, h.granule(22).0, 0, 0],
        s(ObjectState, 1),
    );
    h.host(VCPU_DESTROY, &[v.0]).unwrap();
    h.refused(VCPU_DESTROY, &[v.0], s(BadHandle, 1));
}

#[test]
fn a_monitor_starts_only_over_an_empty_iotlb_and_consistent_sizes() {
    use core::sync::atomic::AtomicU16;
    use tsm_abi::addr::{GRANULE_SIZE, Pa};
    use tsm_platform::MemRange;

    use crate::testing::SimPlatform;
    use crate::tsm::InitError;
    use crate::viommu::Iotlb;

    let base = Pa(0x8000_0000);
    let sim = SimPlatform::new(base, 8, AddressMapFormat::ArmStage2);
    let descs: std::vec::Vec<AtomicU16> = (0..8).map(|_| AtomicU16::new(0)).collect();
    let tsm_mem = MemRange {
        base,
        size: GRANULE_SIZE,
    };
    let fresh = spin::Mutex::new(Iotlb::new());
    assert!(crate::Tsm::new(&sim, sim.dram(), tsm_mem, &descs, &fresh).is_ok());
    // Another monitor's cache (or one left over) would answer with translations this one never
    // made.
    let used = spin::Mutex::new(Iotlb::holding_one_translation());
    assert_eq!(
        crate::Tsm::new(&sim, sim.dram(), tsm_mem, &descs, &used).err(),
        Some(InitError::IotlbInUse)
    );
    assert_eq!(
        crate::Tsm::new(&sim, sim.dram(), tsm_mem, &descs[..7], &fresh).err(),
        Some(InitError::TooFewDescriptors { needed: 8 })
    );
    let odd = MemRange {
        base: Pa(base.0 + 8),
        size: GRANULE_SIZE,
    };
    assert_eq!(
        crate::Tsm::new(&sim, odd, tsm_mem, &descs, &fresh).err(),
        Some(InitError::Misaligned)
    );
}

#[test]
fn version_keeps_its_result_count_by_itself() {
    // The dispatcher hands VERSION's result back untrimmed (dispatch.rs, `Tsm::host`): nothing
    // past its three results may ever be set, whatever the host asks for.
    let count = VERSION.result_count();
    for req in [
        0,
        1,
        0xFFFF,
        0x1_0000,
        0x1_0001,
        0x2_0000,
        1 << 32,
        u64::MAX,
    ] {
        let r = crate::calls::system::version(req);
        assert!(r.out[count..].iter().all(|&o| o == 0), "{req:#x}");
    }
}

/// VERSION's raw-range fast path decides as the typed comparison does (docs/abi.md, VERSION):
/// chosen = the request when it is a supported version, else 0 with VERSION_MISMATCH, or
/// INVALID_ARGUMENT(1) when it is not a version at all; the range always.
#[test]
fn version_decides_as_the_typed_comparison() {
    use tsm_abi::version::{self, AbiVersion};
    let (lo, hi) = (version::LOWEST, version::HIGHEST);
    let mut reqs = std::vec![
        0,
        1,
        u64::from(u32::MAX),
        1 << 32,
        u64::MAX,
        (1 << 32) | lo.to_raw()
    ];
    for base in [lo.to_raw(), hi.to_raw()] {
        for d in 0..3u64 {
            reqs.extend([base.wrapping_sub(d), base.wrapping_add(d), base ^ (1 << 16)]);
        }
    }
    for req in reqs {
        let r = crate::calls::system::version(req);
        let want = match AbiVersion::from_raw(req) {
            None => (s(InvalidArgument, 1).to_raw(), 0),
            Some(v) if v < lo || v > hi => (Status::new(VersionMismatch).to_raw(), 0),
            Some(v) => (0, v.to_raw()),
        };
        assert_eq!((r.status, r.out[0]), want, "{req:#x}");
        assert_eq!(r.out[1..], [lo.to_raw(), hi.to_raw(), 0], "{req:#x}");
    }
}

/// `lock_with_parent`'s ordered path when the parent changes kind while it waits (the host
/// destroyed the object and reused the granule): it must refuse the parent as it locks it, not
/// hold it while waiting for the child. Here another CPU holds the child and then waits for the
/// parent, which is in order for the parent's new kind; holding the parent and waiting for the
/// child was a deadlock (review of 2026-12-07), which the other CPU's bounded wait reports.
#[test]
fn lock_with_parent_refuses_a_parent_that_changed_kind_while_it_waited() {
    use crate::granule::GranuleState;
    use crate::objects::{Handle, Room, TvmHead, TvmLink, VcpuHandle};
    let h = harness(AddressMapFormat::ArmStage2);
    let t = build_tvm(&h, 20);
    let vcpu = h.delegate(31);
    h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, 0x1000, 0]).unwrap();
    let mut held = h.tsm.granules.lock(t.tvm).unwrap();
    let go = std::sync::Barrier::new(2);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            go.wait();
            // The other thread finds the parent held and waits for it, the child dropped.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let child = h.tsm.granules.lock(vcpu).unwrap();
            while held.refcount() != 0 {
                held.put().unwrap();
            }
            held.transition(GranuleState::Delegated).unwrap();
            drop(held);
            // Time for the other thread to take the parent, then wait (bounded) for it while
            // holding the child.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let parent = loop {
                if let Some(g) = h.tsm.granules.try_lock(t.tvm).unwrap() {
                    break g;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "lock_with_parent holds the reused parent and waits for the child"
                );
                std::thread::yield_now();
            };
            drop((parent, child));
        });
        go.wait();
        let (mut tvm_room, mut vcpu_room) = (Room::new(), Room::new());
        let r = h.tsm.lock_with_parent(
            VcpuHandle::new(vcpu),
            1,
            |l: &TvmLink| Handle::<TvmHead>::new(l.tvm().pa()),
            (&mut tvm_room, &mut vcpu_room),
        );
        assert_eq!(r.err(), Some(s(BadHandle, 1)));
    });
}

/// `lock_with_parent` while another CPU holds the parent: the tried lock fails, the child is
/// dropped, and the ordered path waits for the parent and returns both, the same objects.
#[test]
fn lock_with_parent_waits_in_order_while_another_cpu_holds_the_parent() {
    use crate::objects::{Handle, Room, TvmHead, TvmLink, VcpuHandle};
    for format in FORMATS {
        let h = harness(format);
        let t = build_tvm(&h, 20);
        let vcpu = h.delegate(31);
        h.host(VCPU_CREATE, &[t.tvm.0, vcpu.0, 0x1000, 0]).unwrap();
        let held = h.tsm.granules.lock(t.tvm).unwrap();
        let go = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                // Long enough for the other thread to find the parent held.
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(held);
            });
            go.wait();
            let (mut tvm_room, mut vcpu_room) = (Room::new(), Room::new());
            let (p, c) = h
                .tsm
                .lock_with_parent(
                    VcpuHandle::new(vcpu),
                    1,
                    |l: &TvmLink| Handle::<TvmHead>::new(l.tvm().pa()),
                    (&mut tvm_room, &mut vcpu_room),
                )
                .unwrap();
            assert_eq!((p.pa(), c.pa()), (t.tvm, vcpu));
            assert_eq!(c.tvm, t.tvm.0);
        });
    }
}
