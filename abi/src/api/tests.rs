//! A recording transport, and the tests that every wrapper puts each argument in the right
//! register and decodes each result.

use std::vec::Vec;

use super::guest::*;
use super::host::*;
use super::{Error, OpProgress, QueueState, Transport, Versions};
use crate::addr::{Gpa, Iova, Pa};
use crate::call::{CallId, MAX_ARGS, MAX_RESULTS};
use crate::event::{
    ALL_PASIDS, DmaInjectFlags, EventReason, HOST_DOMAIN_EVENTS, NO_PASID, PasidArg,
};
use crate::exit::ExitReason;
use crate::features::{FeatureReg, ViommuTypes};
use crate::guest::S1Config;
use crate::params::{MapFlags, NO_SOURCE};
use crate::regs::{CallRegs, CallResult};
use crate::state::{DeviceOp, VdevState};
use crate::status::{Status, StatusCode};
use crate::version::AbiVersion;
use crate::viommu::ViommuType;

/// Records every call and answers with a programmed result.
struct Mock {
    seen: Vec<CallRegs>,
    reply: CallResult,
}

impl Mock {
    fn replying(status: Status, out: [u64; MAX_RESULTS]) -> Self {
        Mock {
            seen: Vec::new(),
            reply: CallResult {
                status: status.to_raw(),
                out,
            },
        }
    }
}

impl Transport for Mock {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        self.seen.push(*regs);
        self.reply
    }
}

/// Runs `f` against a mock answering `out` and checks it issued exactly one `call` with
/// exactly `args` (every other argument register zero, as the TSM requires).
fn check<R>(
    covered: &mut Vec<CallId>,
    call: CallId,
    args: &[u64],
    out: [u64; MAX_RESULTS],
    f: impl FnOnce(&mut Mock) -> R,
) -> R {
    assert_eq!(
        args.len(),
        call.arg_count(),
        "{}: argument count",
        call.name()
    );
    let mut m = Mock::replying(Status::SUCCESS, out);
    let r = f(&mut m);
    assert_eq!(m.seen.len(), 1, "{}: one call", call.name());
    let regs = m.seen[0];
    assert_eq!(
        regs.fid,
        u64::from(call.fid()),
        "{}: function ID",
        call.name()
    );
    let mut want = [0u64; MAX_ARGS];
    want[..args.len()].copy_from_slice(args);
    assert_eq!(regs.args, want, "{}: argument registers", call.name());
    covered.push(call);
    r
}

// Distinct values per register position, so a swapped pair shows.
const A: u64 = 0x1111_0000;
const B: u64 = 0x2222_0000;
const C: u64 = 0x3333_0000;
const D: u64 = 0x4444_0000;

#[test]
fn every_host_and_guest_wrapper_fills_the_right_registers() {
    let mut cov = Vec::new();
    let c = &mut cov;
    let v1 = AbiVersion { major: 1, minor: 0 };
    let r = check(
        c,
        CallId::VERSION,
        &[0x1_0000],
        [0x1_0000, 0x1_0000, 0x1_0002, 0],
        |m| version(m, v1),
    );
    assert_eq!(
        r,
        Ok(Versions {
            chosen: Some(v1),
            lowest: v1,
            highest: AbiVersion { major: 1, minor: 2 }
        })
    );
    let r = check(c, CallId::FEATURES, &[5], [0xABC, 0, 0, 0], |m| {
        features(m, FeatureReg::Tdisp)
    });
    assert_eq!(r, Ok(0xABC));
    check(c, CallId::CONSOLE_WRITE, &[A, 17], [0; 4], |m| {
        console_write(m, Pa(A), 17)
    })
    .unwrap();
    check(c, CallId::SYSTEM_OFF, &[3], [0; 4], |m| system_off(m, 3)).unwrap();
    check(c, CallId::HOST_CPU_START, &[1, A, 7], [0; 4], |m| {
        host_cpu_start(m, 1, Pa(A), 7)
    })
    .unwrap();
    check(c, CallId::HOST_CPU_STOP, &[], [0; 4], host_cpu_stop).unwrap();
    check(c, CallId::GRANULE_DELEGATE, &[A], [0; 4], |m| {
        granule_delegate(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::GRANULE_UNDELEGATE, &[A], [0; 4], |m| {
        granule_undelegate(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::TVM_CREATE, &[A, B, C], [0; 4], |m| {
        tvm_create(m, Pa(A), Pa(B), Pa(C))
    })
    .unwrap();
    check(c, CallId::TVM_ACTIVATE, &[A], [0; 4], |m| {
        tvm_activate(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::TVM_DESTROY, &[A], [0; 4], |m| {
        tvm_destroy(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::TABLE_CREATE, &[A, B, 2, D], [0; 4], |m| {
        table_create(m, Pa(A), Gpa(B), 2, Pa(D))
    })
    .unwrap();
    let r = check(c, CallId::TABLE_DESTROY, &[A, B, 3], [D, 0, 0, 0], |m| {
        table_destroy(m, Pa(A), Gpa(B), 3)
    });
    assert_eq!(r, Ok(Pa(D)));
    let rw = (MapFlags::READ | MapFlags::WRITE).bits();
    check(c, CallId::MAP_PRIVATE, &[A, B, C, D, rw], [0; 4], |m| {
        map_private(
            m,
            Pa(A),
            Gpa(B),
            Pa(C),
            Some(Pa(D)),
            MapFlags::READ | MapFlags::WRITE,
        )
    })
    .unwrap();
    check(
        c,
        CallId::MAP_PRIVATE,
        &[A, B, C, NO_SOURCE, 1],
        [0; 4],
        |m| map_private(m, Pa(A), Gpa(B), Pa(C), None, MapFlags::READ),
    )
    .unwrap();
    check(c, CallId::MAP_SHARED, &[A, B, C, rw], [0; 4], |m| {
        map_shared(m, Pa(A), Gpa(B), Pa(C), MapFlags::READ | MapFlags::WRITE)
    })
    .unwrap();
    let r = check(c, CallId::UNMAP, &[A, B], [C, 0, 0, 0], |m| {
        unmap(m, Pa(A), Gpa(B))
    });
    assert_eq!(r, Ok(Pa(C)));
    check(c, CallId::VCPU_CREATE, &[A, B, C, D], [0; 4], |m| {
        vcpu_create(m, Pa(A), Pa(B), Gpa(C), D)
    })
    .unwrap();
    let r = check(c, CallId::VCPU_RUN, &[A, B], [2, 0, 0, 0], |m| {
        vcpu_run(m, Pa(A), Pa(B))
    });
    assert_eq!(r, Ok(ExitReason::DeviceRequest));
    check(c, CallId::VCPU_DESTROY, &[A], [0; 4], |m| {
        vcpu_destroy(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::PDEV_CREATE, &[A, B], [0; 4], |m| {
        pdev_create(m, Pa(A), Pa(B))
    })
    .unwrap();
    let r = check(c, CallId::PDEV_CONNECT, &[A, B, C], [0; 4], |m| {
        pdev_connect(m, Pa(A), Pa(B), Pa(C))
    });
    assert_eq!(r, Ok(OpProgress::Done));
    let r = check(c, CallId::PDEV_DISCONNECT, &[A, B], [0; 4], |m| {
        pdev_disconnect(m, Pa(A), Pa(B))
    });
    assert_eq!(r, Ok(OpProgress::Done));
    let r = check(c, CallId::PDEV_KEY_UPDATE, &[A, B], [0; 4], |m| {
        pdev_key_update(m, Pa(A), Pa(B))
    });
    assert_eq!(r, Ok(OpProgress::Done));
    check(c, CallId::PDEV_STOP, &[A], [0; 4], |m| pdev_stop(m, Pa(A))).unwrap();
    check(c, CallId::PDEV_DESTROY, &[A], [0; 4], |m| {
        pdev_destroy(m, Pa(A))
    })
    .unwrap();
    check(
        c,
        CallId::VIOMMU_CREATE,
        &[A, B, 0x5453_0001, 0],
        [0; 4],
        |m| viommu_create(m, Pa(A), Pa(B), ViommuType::TsmSmmuv3),
    )
    .unwrap();
    check(c, CallId::VIOMMU_DESTROY, &[A], [0; 4], |m| {
        viommu_destroy(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::VDEV_CREATE, &[A, B, C, D], [0; 4], |m| {
        vdev_create(m, Pa(A), Pa(B), Pa(C), Pa(D))
    })
    .unwrap();
    check(c, CallId::VDEV_BIND, &[A, B], [0; 4], |m| {
        vdev_bind(m, Pa(A), Pa(B))
    })
    .unwrap();
    check(c, CallId::VDEV_UNBIND, &[A, B], [0; 4], |m| {
        vdev_unbind(m, Pa(A), Pa(B))
    })
    .unwrap();
    let r = check(c, CallId::VDEV_GET_STATE, &[A], [3, 0, 0, 0], |m| {
        vdev_get_state(m, Pa(A))
    });
    assert_eq!(r, Ok((VdevState::Locked, DeviceOp::None)));
    check(c, CallId::VDEV_DESTROY, &[A], [0; 4], |m| {
        vdev_destroy(m, Pa(A))
    })
    .unwrap();
    check(c, CallId::VDEV_DMA_TABLE, &[A, B], [0; 4], |m| {
        vdev_dma_table(m, Pa(A), Pa(B))
    })
    .unwrap();
    check(c, CallId::VDEV_MMIO_MAP, &[A, C, B], [0; 4], |m| {
        vdev_mmio_map(m, Pa(A), Gpa(C), Pa(B))
    })
    .unwrap();
    let r = check(c, CallId::VDEV_MMIO_UNMAP, &[A, C], [B, 0, 0, 0], |m| {
        vdev_mmio_unmap(m, Pa(A), Gpa(C))
    });
    assert_eq!(r, Ok(Pa(B)));
    check(c, CallId::COMMUNICATE, &[A, B], [0; 4], |m| {
        communicate(m, Pa(A), Pa(B))
    })
    .unwrap();
    check(c, CallId::OP_CANCEL, &[A], [0; 4], |m| op_cancel(m, Pa(A))).unwrap();
    let r = check(c, CallId::EVENT_READ, &[A, B], [4, 1, 0, 0], |m| {
        event_read(m, EventQueue::Vdev(Pa(A)), Pa(B))
    });
    assert_eq!(
        r,
        Ok(Some(QueueState {
            left: 4,
            overflows: 1
        }))
    );
    check(
        c,
        CallId::EVENT_READ,
        &[HOST_DOMAIN_EVENTS, B],
        [0; 4],
        |m| event_read(m, EventQueue::HostDomain, Pa(B)),
    )
    .unwrap();
    let t1w = (DmaInjectFlags::T_BIT | DmaInjectFlags::WRITE).bits();
    let r = check(
        c,
        CallId::TEST_DMA_INJECT,
        &[0x0101, 5, C, t1w, 0x0203],
        [D, 0, 0, 0],
        |m| {
            test_dma_inject(
                m,
                0x0203,
                0x0101,
                PasidArg::Pasid(5),
                Iova(C),
                DmaInjectFlags::T_BIT | DmaInjectFlags::WRITE,
            )
        },
    );
    assert_eq!(r, Ok(Pa(D)));
    check(
        c,
        CallId::TEST_DMA_INJECT,
        &[0x0101, NO_PASID, C, 0, 0],
        [D, 0, 0, 0],
        |m| {
            test_dma_inject(
                m,
                0,
                0x0101,
                PasidArg::NoPasid,
                Iova(C),
                DmaInjectFlags::empty(),
            )
        },
    )
    .unwrap();

    // ---- guest ----
    let r = check(
        c,
        CallId::G_VERSION,
        &[0x1_0000],
        [0x1_0000, 0x1_0000, 0x1_0000, 0],
        |m| g_version(m, v1),
    );
    assert_eq!(r.map(|v| v.chosen), Ok(Some(v1)));
    check(c, CallId::G_CONSOLE_WRITE, &[A, 9], [0; 4], |m| {
        g_console_write(m, Gpa(A), 9)
    })
    .unwrap();
    check(c, CallId::G_EXIT, &[7], [0; 4], |m| g_exit(m, 7)).unwrap();
    let r = check(c, CallId::G_TVM_INFO, &[], [39, 1 << 38, 0, 0], |m| {
        g_tvm_info(m)
    });
    assert_eq!(
        r,
        Ok(TvmInfo {
            gpa_bits: 39,
            shared_base: Gpa(1 << 38)
        })
    );
    check(c, CallId::G_VDEV_INFO, &[8, B], [0; 4], |m| {
        g_vdev_info(m, 8, Gpa(B))
    })
    .unwrap();
    let r = check(
        c,
        CallId::G_VDEV_REPORT,
        &[8, 64, C, 128],
        [128, 32, 0, 0],
        |m| g_vdev_report(m, 8, 64, Gpa(C), 128),
    );
    assert_eq!(
        r,
        Ok(ReportChunk {
            copied: 128,
            remaining: 32
        })
    );
    for (id, f) in [
        (
            CallId::G_VDEV_CERT_CHAIN,
            g_vdev_cert_chain::<Mock> as fn(&mut Mock, u16, u64, Gpa, u64) -> _,
        ),
        (CallId::G_VDEV_MEASUREMENTS, g_vdev_measurements::<Mock>),
    ] {
        let r = check(c, id, &[8, 64, C, 128], [128, 32, 0, 0], |m| {
            f(m, 8, 64, Gpa(C), 128)
        });
        assert_eq!(
            r,
            Ok(ReportChunk {
                copied: 128,
                remaining: 32
            })
        );
    }
    check(c, CallId::G_VDEV_ACCEPT, &[8, B], [0; 4], |m| {
        g_vdev_accept(m, 8, Gpa(B))
    })
    .unwrap();
    check(c, CallId::G_VDEV_STOP, &[8], [0; 4], |m| g_vdev_stop(m, 8)).unwrap();
    check(
        c,
        CallId::G_VDEV_MMIO_VALIDATE,
        &[8, C, 1, 2],
        [0; 4],
        |m| g_vdev_mmio_validate(m, 8, Gpa(C), 1, 2),
    )
    .unwrap();
    check(c, CallId::G_S1_ATTACH, &[8, 3, C, 39], [0; 4], |m| {
        g_s1_attach(m, 8, PasidArg::Pasid(3), Gpa(C), S1Config { ia_bits: 39 })
    })
    .unwrap();
    check(c, CallId::G_S1_DETACH, &[8, NO_PASID], [0; 4], |m| {
        g_s1_detach(m, 8, PasidArg::NoPasid)
    })
    .unwrap();
    check(
        c,
        CallId::G_S1_INVALIDATE,
        &[8, ALL_PASIDS, C, 0x2000],
        [0; 4],
        |m| g_s1_invalidate(m, 8, PasidArg::All, Iova(C), 0x2000),
    )
    .unwrap();
    let r = check(c, CallId::G_EVENT_READ, &[8, B], [0, 0, 0, 0], |m| {
        g_event_read(m, 8, Gpa(B))
    });
    assert_eq!(
        r,
        Ok(Some(QueueState {
            left: 0,
            overflows: 0
        }))
    );

    for call in CallId::ALL {
        assert!(cov.contains(call), "{} has no wrapper test", call.name());
    }
}

#[test]
fn failures_and_progress_decode() {
    // A refusal carries code and index.
    let mut m = Mock::replying(Status::arg(StatusCode::GranuleState, 1), [0; 4]);
    assert_eq!(
        granule_delegate(&mut m, Pa(A)),
        Err(Error::Tsm(Status::arg(StatusCode::GranuleState, 1)))
    );
    // NEEDS_DEVICE_IO is progress, with the pending operation.
    let mut m = Mock::replying(Status::new(StatusCode::NeedsDeviceIo), [2, 0, 0, 0]);
    assert_eq!(
        vdev_bind(&mut m, Pa(A), Pa(B)),
        Ok(OpProgress::NeedsDeviceIo(DeviceOp::Bind))
    );
    // ... but not without a real pending operation.
    let mut m = Mock::replying(Status::new(StatusCode::NeedsDeviceIo), [0, 0, 0, 0]);
    assert!(matches!(
        communicate(&mut m, Pa(A), Pa(B)),
        Err(Error::Malformed {
            call: CallId::COMMUNICATE,
            ..
        })
    ));
    // VERSION_MISMATCH still reports the range.
    let hi = AbiVersion { major: 1, minor: 3 };
    let mut m = Mock::replying(
        Status::new(StatusCode::VersionMismatch),
        [0, 0x1_0000, 0x1_0003, 0],
    );
    let v = version(&mut m, AbiVersion { major: 2, minor: 0 }).unwrap();
    assert_eq!(v.chosen, None);
    assert_eq!(v.highest, hi);
    // An empty queue is `None`, other refusals stay errors.
    let mut m = Mock::replying(Status::new(StatusCode::Empty), [0; 4]);
    assert_eq!(g_event_read(&mut m, 8, Gpa(B)), Ok(None));
    let mut m = Mock::replying(Status::arg(StatusCode::Denied, 0), [0; 4]);
    assert_eq!(
        g_event_read(&mut m, 8, Gpa(B)).map_err(Error::code),
        Err(Some(StatusCode::Denied))
    );
    // A DMA fault names its reason in the index.
    let mut m = Mock::replying(
        Status::arg(StatusCode::DmaFault, EventReason::T0ToSecure.raw() as u8),
        [0; 4],
    );
    let e = test_dma_inject(
        &mut m,
        0,
        1,
        PasidArg::NoPasid,
        Iova(0),
        DmaInjectFlags::empty(),
    )
    .unwrap_err();
    assert_eq!(e.status().map(|s| s.index), Some(1));
    // Words no TSM returns are reported as malformed, never trusted.
    let mut m = Mock {
        seen: Vec::new(),
        reply: CallResult {
            status: 1 << 20,
            out: [0; 4],
        },
    };
    assert!(matches!(
        tvm_activate(&mut m, Pa(A)),
        Err(Error::Malformed { .. })
    ));
    let mut m = Mock::replying(Status::SUCCESS, [99, 0, 0, 0]);
    assert!(matches!(
        vcpu_run(&mut m, Pa(A), Pa(B)),
        Err(Error::Malformed { .. })
    ));
    let mut m = Mock::replying(Status::SUCCESS, [3, 9, 0, 0]);
    assert!(matches!(
        vdev_get_state(&mut m, Pa(A)),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn read_features_reads_every_register_in_order() {
    let mut m = Mock::replying(
        Status::SUCCESS,
        [ViommuTypes::all().bits() | 1 << 40, 0, 0, 0],
    );
    let f = read_features(&mut m).unwrap();
    assert_eq!(f.viommu_types, ViommuTypes::all(), "undefined bits dropped");
    let idx: Vec<u64> = m.seen.iter().map(|r| r.args[0]).collect();
    let want: Vec<u64> = FeatureReg::ALL.iter().map(|r| u64::from(r.raw())).collect();
    assert_eq!(idx, want);
    assert!(
        m.seen
            .iter()
            .all(|r| r.fid == u64::from(CallId::FEATURES.fid()))
    );
}
