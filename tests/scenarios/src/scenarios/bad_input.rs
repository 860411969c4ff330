//! Scenario 3, bad input: host calls with stale and forged handles, objects in the wrong
//! state, misaligned and out-of-range addresses, buffers in secure memory, unknown and non-TSM
//! vIOMMU types, a duplicate vBDF, a pBDF outside the PDEV, calls of the wrong side and unknown
//! calls. Each gets its documented status (docs/abi.md §10), and the scenario goes on with the
//! same objects to a full lifecycle and teardown, which proves each refusal changed nothing
//! that matters.

use tsm_abi::CallId;
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::params::{MapFlags, PdevFlags, PdevParams, TvmParams};
use tsm_abi::status::{ObjectKind, Status, StatusCode::*};
use tsm_abi::version::AbiVersion;
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::{World, raw_call};
use crate::layout::{
    GPA_BITS, L3_GPA, RID_BASE, RID_COUNT, SCRATCH_GPA, SEGMENT, SHARED_GPA, VBDF_BASE,
};
use crate::{HostEnv, Outcome};

fn s(code: tsm_abi::StatusCode, index: u8) -> Status {
    Status::arg(code, index)
}

/// The next valid call works after a refusal.
fn alive<E: HostEnv>(env: &mut E) -> Outcome {
    let v = must!(
        host::version(env, AbiVersion { major: 1, minor: 0 }),
        "VERSION after a refusal"
    );
    ensure!(v.chosen.is_some(), "VERSION after a refusal");
    Ok(())
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    let mut n = 0u32;
    macro_rules! bad {
        ($call:expr, $status:expr, $what:literal) => {{
            refused!($call, $status, $what);
            alive(env)?;
            n += 1;
        }};
    }

    // Dispatcher: unknown call, wrong side, unused register.
    bad!(
        raw_call_fid(env, 0xC600_01EE),
        Status::new(NotSupported),
        "unknown call ID"
    );
    bad!(
        raw_call_fid(env, 0x1_C600_0100),
        Status::new(NotSupported),
        "call ID with bits 63:32 set"
    );
    bad!(
        raw_call(env, CallId::G_VDEV_INFO, &[u64::from(VBDF_BASE), 0]),
        Status::new(Denied),
        "guest call from the host"
    );
    bad!(
        raw_call(env, CallId::TVM_ACTIVATE, &[0, 0, 7]),
        s(InvalidArgument, 3),
        "non-zero unused register"
    );
    bad!(
        raw_call(env, CallId::FEATURES, &[99]),
        s(InvalidArgument, 1),
        "FEATURES index out of range"
    );

    // Granules.
    let ns = w.pool.ns(env)?;
    bad!(
        host::granule_delegate(env, Pa(ns.0 + 8)),
        s(Misaligned, 1),
        "DELEGATE misaligned"
    );
    bad!(
        host::granule_delegate(env, Pa(0xFFFF_FFFF_F000)),
        s(OutOfRange, 1),
        "DELEGATE outside DRAM"
    );
    bad!(
        host::granule_delegate(env, env.tsm_memory()),
        s(GranuleState, 1),
        "DELEGATE TSM memory"
    );
    bad!(
        host::granule_undelegate(env, ns),
        s(GranuleState, 1),
        "UNDELEGATE an NS granule"
    );
    let sec = w.pool.secure(env)?;
    bad!(
        host::granule_delegate(env, sec),
        s(GranuleState, 1),
        "DELEGATE twice"
    );

    // TVM_CREATE: parameters that are secure, misaligned, invalid; granules in the wrong state.
    let params = TvmParams {
        gpa_bits: GPA_BITS,
        max_vcpus: 1,
        ..TvmParams::new_zeroed()
    };
    let p = w.pool.ns(env)?;
    ensure!(env.write(p, params.as_bytes()), "write params");
    let (tvm, root) = (w.pool.secure(env)?, w.pool.secure(env)?);
    bad!(
        host::tvm_create(env, tvm, sec, root),
        s(InvalidBuffer, 2),
        "TvmParams in secure memory"
    );
    bad!(
        host::tvm_create(env, tvm, Pa(p.0 + 4), root),
        s(InvalidBuffer, 2),
        "TvmParams misaligned"
    );
    bad!(
        host::tvm_create(env, tvm, Pa(p.0 + GRANULE_SIZE - 8), root),
        s(InvalidBuffer, 2),
        "TvmParams across a granule"
    );
    bad!(
        host::tvm_create(env, ns, p, root),
        s(GranuleState, 1),
        "TVM granule not delegated"
    );
    bad!(
        host::tvm_create(env, tvm, p, tvm),
        s(GranuleState, 3),
        "TVM and root the same granule"
    );
    let badp = w.pool.ns(env)?;
    for wrong in [
        TvmParams { flags: 1, ..params },
        TvmParams {
            gpa_bits: 64,
            ..params
        },
        TvmParams {
            max_vcpus: 0,
            ..params
        },
        TvmParams {
            reserved0: [0, 1, 0],
            ..params
        },
    ] {
        ensure!(env.write(badp, wrong.as_bytes()), "write params");
        refused!(
            host::tvm_create(env, tvm, badp, root),
            s(InvalidArgument, 2),
            "invalid TvmParams"
        );
        alive(env)?;
        n += 1;
    }
    // Stale and forged handles: a free delegated granule, an NS granule, a misaligned one.
    bad!(
        host::tvm_activate(env, tvm),
        s(BadHandle, 1),
        "TVM_ACTIVATE on a free granule"
    );
    bad!(
        host::tvm_activate(env, ns),
        s(BadHandle, 1),
        "TVM_ACTIVATE on an NS granule"
    );
    bad!(
        host::tvm_activate(env, Pa(tvm.0 + 0x10)),
        s(Misaligned, 1),
        "TVM_ACTIVATE misaligned handle"
    );
    w.pool.undelegated(tvm);
    must!(host::granule_undelegate(env, tvm), "UNDELEGATE");
    must!(host::granule_undelegate(env, root), "UNDELEGATE");
    w.pool.undelegated(root);

    // A real TVM, then wrong tables and maps.
    let t = w.add_tvm(env, &[0])?;
    let tv = w.tvm(t)?.tvm;
    let g = w.pool.secure(env)?;
    bad!(
        host::table_create(env, tv, L3_GPA, 3, g),
        s(AlreadyMapped, 2),
        "TABLE_CREATE twice"
    );
    bad!(
        host::table_create(env, tv, Gpa(L3_GPA.0 + 0x1000), 3, g),
        s(Misaligned, 2),
        "TABLE_CREATE misaligned GPA"
    );
    bad!(
        host::table_create(env, tv, Gpa(0x4000_0000), 3, g),
        s(TableMissing, 2),
        "TABLE_CREATE without its parent"
    );
    bad!(
        host::table_create(env, tv, Gpa(1 << GPA_BITS), 1, g),
        s(OutOfRange, 2),
        "TABLE_CREATE past the TVM"
    );
    bad!(
        host::table_create(env, tv, L3_GPA, 4, g),
        s(InvalidArgument, 3),
        "TABLE_CREATE level 4"
    );
    bad!(
        host::table_create(env, tv, Gpa(0x4000_0000), 2, ns),
        s(GranuleState, 4),
        "TABLE_CREATE NS granule"
    );
    let rw = MapFlags::READ | MapFlags::WRITE;
    bad!(
        host::map_private(env, tv, SCRATCH_GPA, g, None, rw),
        s(AlreadyMapped, 2),
        "MAP_PRIVATE over a page"
    );
    let free_gpa = Gpa(SCRATCH_GPA.0 + 0x4_0000);
    bad!(
        host::map_private(env, tv, Gpa(free_gpa.0 + 8), g, None, rw),
        s(Misaligned, 2),
        "MAP_PRIVATE misaligned GPA"
    );
    bad!(
        host::map_private(env, tv, free_gpa, g, Some(Pa(ns.0 + 8)), rw),
        s(Misaligned, 4),
        "MAP_PRIVATE misaligned source"
    );
    bad!(
        host::map_private(env, tv, free_gpa, g, Some(sec), rw),
        s(InvalidBuffer, 4),
        "MAP_PRIVATE secure source"
    );
    bad!(
        host::map_private(env, tv, free_gpa, g, None, MapFlags::WRITE),
        s(InvalidArgument, 5),
        "MAP_PRIVATE without READ"
    );
    bad!(
        host::map_private(env, tv, free_gpa, ns, None, rw),
        s(GranuleState, 3),
        "MAP_PRIVATE NS granule"
    );
    bad!(
        host::map_private(env, tv, Gpa(0x4000_0000), g, None, rw),
        s(TableMissing, 2),
        "MAP_PRIVATE without a table"
    );
    bad!(
        host::map_shared(env, tv, SHARED_GPA, sec, rw),
        s(GranuleState, 3),
        "MAP_SHARED a secure granule"
    );
    // §5.2: a host page never goes to a private GPA, a secure one never to a shared GPA.
    bad!(
        host::map_shared(env, tv, free_gpa, ns, rw),
        s(OutOfRange, 2),
        "MAP_SHARED at a private GPA"
    );
    bad!(
        host::map_private(env, tv, SHARED_GPA, g, None, rw),
        s(OutOfRange, 2),
        "MAP_PRIVATE at a shared GPA"
    );
    bad!(
        host::unmap(env, tv, free_gpa),
        s(NotMapped, 2),
        "UNMAP nothing"
    );
    bad!(
        host::table_destroy(env, tv, L3_GPA, 3),
        s(InUse, ObjectKind::PrivatePage as u8),
        "TABLE_DESTROY a table with pages"
    );
    bad!(
        host::table_destroy(env, tv, crate::driver::table_gpa(2), 2),
        s(InUse, ObjectKind::Table as u8),
        "TABLE_DESTROY a table with a table"
    );
    // Granules that belong to the TVM are not the host's to delegate again.
    let private = w.tvm(t)?.page(SCRATCH_GPA).unwrap_or(Pa(0));
    bad!(
        host::granule_delegate(env, private),
        s(GranuleState, 1),
        "DELEGATE a private page"
    );
    bad!(
        host::granule_delegate(env, tv),
        s(GranuleState, 1),
        "DELEGATE a TVM object"
    );
    bad!(
        host::granule_delegate(env, w.tvm(t)?.tables[2]),
        s(GranuleState, 1),
        "DELEGATE a table"
    );
    // A shared page blocks its delegation.
    let shared = w.map_shared(env, t, SHARED_GPA)?;
    bad!(
        host::granule_delegate(env, shared),
        s(GranuleState, 1),
        "DELEGATE a shared page"
    );
    bad!(
        host::vcpu_create(env, tv, g, Gpa(1 << GPA_BITS), 0),
        s(OutOfRange, 3),
        "VCPU_CREATE entry past the TVM"
    );
    w.add_vcpu(env, t, 0)?;
    bad!(
        host::vcpu_create(env, tv, g, L3_GPA, 0),
        s(Capacity, 1),
        "VCPU_CREATE past max_vcpus"
    );

    // vIOMMU types: unknown, iommufd's own, flags.
    bad!(
        raw_call(env, CallId::VIOMMU_CREATE, &[tv.0, g.0, 0x1234_5678, 0]),
        s(ViommuTypeUnknown, 3),
        "unknown vIOMMU type"
    );
    for iommufd_type in 0..4u64 {
        refused!(
            raw_call(env, CallId::VIOMMU_CREATE, &[tv.0, g.0, iommufd_type, 0]),
            s(ViommuTypeNotTsm, 3),
            "non-TSM vIOMMU type"
        );
        alive(env)?;
        n += 1;
    }
    let ty = super::first_viommu_type(&w)?;
    bad!(
        raw_call(
            env,
            CallId::VIOMMU_CREATE,
            &[tv.0, g.0, u64::from(ty.raw()), 1]
        ),
        s(InvalidArgument, 4),
        "vIOMMU flags"
    );
    bad!(
        host::viommu_create(env, ns, g, ty),
        s(BadHandle, 1),
        "VIOMMU_CREATE on a forged TVM"
    );

    // PDEV parameters, then a real PDEV and wrong device calls.
    let pp = w.pool.ns(env)?;
    let good = PdevParams {
        segment: SEGMENT,
        rid_base: RID_BASE,
        rid_count: RID_COUNT,
        ..PdevParams::new_zeroed()
    };
    for (wrong, want) in [
        (
            PdevParams {
                flags: PdevFlags::SPDM.bits(),
                spdm_slot: 8,
                ..good
            },
            s(InvalidArgument, 2),
        ),
        (
            PdevParams {
                flags: PdevFlags::IDE.bits(),
                ..good
            },
            s(NotSupported, 2),
        ),
        (
            PdevParams {
                rid_count: 0,
                ..good
            },
            s(InvalidArgument, 2),
        ),
        (
            PdevParams {
                rid_base: 0xFFFF,
                rid_count: 2,
                ..good
            },
            s(InvalidArgument, 2),
        ),
        (
            PdevParams {
                interface_id_format: 9,
                ..good
            },
            s(InvalidArgument, 2),
        ),
    ] {
        ensure!(env.write(pp, wrong.as_bytes()), "write params");
        refused!(host::pdev_create(env, g, pp), want, "invalid PdevParams");
        alive(env)?;
        n += 1;
    }
    let pdev = w.connect_pdev(env)?;
    ensure!(
        env.write(
            pp,
            PdevParams {
                rid_base: RID_BASE + RID_COUNT - 1,
                rid_count: 4,
                ..good
            }
            .as_bytes()
        ),
        "write"
    );
    bad!(
        host::pdev_create(env, g, pp),
        s(BdfInUse, 2),
        "PDEV RID range overlapping another"
    );
    let comm = w.link.comm;
    bad!(
        host::pdev_connect(env, pdev, comm, Pa(0)),
        s(ObjectState, 1),
        "PDEV_CONNECT on a READY PDEV"
    );
    bad!(
        host::communicate(env, pdev, comm),
        s(NoOperation, 1),
        "COMMUNICATE with no operation"
    );
    bad!(
        host::op_cancel(env, pdev),
        s(NoOperation, 1),
        "OP_CANCEL with no operation"
    );

    let viommu = w.add_viommu(env, t, ty)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    let vdev = w.vdev(v)?.pa;
    let vp = w.pool.ns(env)?;
    let mut wrong = World::vdev_params(1);
    wrong.vbdf = VBDF_BASE;
    ensure!(env.write(vp, wrong.as_bytes()), "write");
    bad!(
        host::vdev_create(env, g, pdev, viommu, vp),
        s(BdfInUse, 4),
        "duplicate vBDF"
    );
    let mut wrong = World::vdev_params(1);
    wrong.pbdf = RID_BASE + 1;
    wrong.function_id = u32::from(wrong.pbdf);
    ensure!(env.write(vp, wrong.as_bytes()), "write");
    bad!(
        host::vdev_create(env, g, pdev, viommu, vp),
        s(BdfInUse, 4),
        "duplicate pBDF"
    );
    let mut wrong = World::vdev_params(1);
    wrong.pbdf = RID_BASE + RID_COUNT;
    wrong.function_id = u32::from(wrong.pbdf);
    ensure!(env.write(vp, wrong.as_bytes()), "write");
    bad!(
        host::vdev_create(env, g, pdev, viommu, vp),
        s(BdfOutOfRange, 4),
        "pBDF outside the PDEV"
    );
    ensure!(env.write(vp, World::vdev_params(1).as_bytes()), "write");
    bad!(
        host::vdev_create(env, g, viommu, viommu, vp),
        s(BadHandle, 2),
        "VDEV_CREATE with a vIOMMU for the PDEV"
    );
    bad!(
        host::vdev_create(env, g, pdev, viommu, sec),
        s(InvalidBuffer, 4),
        "VdevParams in secure memory"
    );
    bad!(
        host::vdev_unbind(env, vdev, comm),
        s(ObjectState, 1),
        "VDEV_UNBIND while UNLOCKED"
    );
    bad!(
        host::vdev_bind(env, vdev, sec),
        s(InvalidBuffer, 2),
        "COMMUNICATE buffer in secure memory"
    );
    bad!(
        host::vdev_bind(env, vdev, Pa(comm.0 + 64)),
        s(InvalidBuffer, 2),
        "COMMUNICATE buffer misaligned"
    );
    bad!(
        host::event_read(env, EventQueue::Vdev(vdev), sec),
        s(InvalidBuffer, 2),
        "event buffer in secure memory"
    );
    let vcpu = w.tvm(t)?.vcpus.first().copied().unwrap_or(Pa(0));
    let exit = w.exit;
    bad!(
        host::vcpu_run(env, vcpu, exit),
        s(ObjectState, 1),
        "VCPU_RUN before TVM_ACTIVATE"
    );
    w.activate(env, t)?;
    bad!(
        host::vcpu_create(env, tv, g, L3_GPA, 0),
        s(ObjectState, 1),
        "VCPU_CREATE after TVM_ACTIVATE"
    );
    bad!(
        host::map_private(env, tv, free_gpa, g, Some(ns), rw),
        s(ObjectState, 1),
        "MAP_PRIVATE with a source after TVM_ACTIVATE"
    );
    bad!(
        host::tvm_activate(env, tv),
        s(ObjectState, 1),
        "TVM_ACTIVATE twice"
    );
    bad!(
        host::vcpu_run(env, vcpu, sec),
        s(InvalidBuffer, 2),
        "exit record in secure memory"
    );
    bad!(
        host::vcpu_run(env, vcpu, Pa(exit.0 + 4)),
        s(InvalidBuffer, 2),
        "exit record misaligned"
    );
    bad!(
        host::vcpu_run(env, tv, exit),
        s(BadHandle, 1),
        "VCPU_RUN on a TVM handle"
    );
    must!(w.bind(env, v)?, "VDEV_BIND");
    bad!(
        host::vdev_bind(env, vdev, comm),
        s(ObjectState, 1),
        "VDEV_BIND twice"
    );
    bad!(
        host::vdev_destroy(env, vdev),
        s(ObjectState, 1),
        "VDEV_DESTROY while LOCKED"
    );
    bad!(
        host::pdev_stop(env, pdev),
        s(InUse, ObjectKind::Vdev as u8),
        "PDEV_STOP with a bound vdevice"
    );
    bad!(
        host::viommu_destroy(env, viommu),
        s(InUse, ObjectKind::Vdev as u8),
        "VIOMMU_DESTROY with a vdevice"
    );
    bad!(
        host::tvm_destroy(env, tv),
        s(InUse, ObjectKind::Vcpu as u8),
        "TVM_DESTROY with a vCPU"
    );
    bad!(
        host::pdev_destroy(env, pdev),
        s(InUse, ObjectKind::Vdev as u8),
        "PDEV_DESTROY with a vdevice"
    );

    // A stale handle: destroy a second vIOMMU, then use it.
    let gone = w.pool.secure(env)?;
    must!(host::viommu_create(env, tv, gone, ty), "VIOMMU_CREATE");
    must!(host::viommu_destroy(env, gone), "VIOMMU_DESTROY");
    bad!(
        host::viommu_destroy(env, gone),
        s(BadHandle, 1),
        "VIOMMU_DESTROY of a destroyed vIOMMU"
    );
    bad!(
        host::vdev_create(env, g, pdev, gone, vp),
        s(BadHandle, 3),
        "VDEV_CREATE under a destroyed vIOMMU"
    );

    must!(w.unbind(env, v)?, "VDEV_UNBIND");
    say!(
        "{=u32} hostile host calls refused with their documented status",
        n
    );
    w.finish(env)
}

/// A call with an arbitrary function ID (no typed wrapper can name one).
fn raw_call_fid<E: HostEnv>(env: &mut E, fid: u64) -> tsm_abi::api::Result<[u64; 4]> {
    let r = env.call(&tsm_abi::regs::CallRegs { fid, args: [0; 6] });
    match Status::from_raw(r.status) {
        Some(s) if s.is_success() => Ok(r.out),
        Some(s) => Err(tsm_abi::api::Error::Tsm(s)),
        None => Err(tsm_abi::api::Error::Malformed {
            call: CallId::VERSION,
            status: r.status,
        }),
    }
}
