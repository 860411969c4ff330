//! Teardown in random orders: refused steps are retried, every step keeps the invariants, and
//! at the end every granule is back where it started.

extern crate std;

use std::vec::Vec;

use tsm_abi::CallId::{self, *};
use tsm_abi::addr::Pa;
use tsm_abi::params::NO_SOURCE;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::viommu::ViommuType;
use tsm_device_model::Device;
use zerocopy::IntoBytes;

use super::SHARED_GPA;
use super::devices::{PBDF, World, device, drive, tdis, vdev_params, world};

#[derive(Clone, Copy, Debug)]
enum Step {
    Call(CallId, [u64; 3]),
    /// A resumable call carried to the device.
    Driven(CallId, Pa),
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn populated(dev: &mut Device<'_>) -> (World, Vec<Step>, Vec<u64>) {
    let w = world(dev);
    let h = &w.h;
    // Before any of the world's granules were delegated: the starting point to return to.
    let shared = h.granule(30);
    super::shared_tables(h, w.tvm);
    h.host(MAP_SHARED, &[w.tvm.0, SHARED_GPA + 0x2000, shared.0, 1])
        .unwrap();
    let src = h.host_put(31, &[0x42; 64]);
    let content = h.delegate(32);
    h.host(MAP_PRIVATE, &[w.tvm.0, 0x3000, content.0, src.0, 1])
        .unwrap();
    let nop = h.delegate(33);
    h.host(
        VIOMMU_CREATE,
        &[w.tvm.0, nop.0, u64::from(ViommuType::TsmNoViommu.raw()), 0],
    )
    .unwrap();
    let p = h.host_put(24, vdev_params(PBDF + 1, 9).as_bytes());
    let vdev2 = h.delegate(34);
    h.host(VDEV_CREATE, &[vdev2.0, w.pdev.0, nop.0, p.0])
        .unwrap();
    // vdev 1 to RUN.
    w.bind(dev).unwrap();
    let info = w.info();
    w.accept(dev, &tsm_abi::guest::AcceptEvidence::from_info(&info))
        .unwrap();
    h.check();
    let steps = std::vec![
        Step::Driven(VDEV_UNBIND, w.vdev),
        Step::Call(VDEV_DESTROY, [w.vdev.0, 0, 0]),
        Step::Call(VDEV_DESTROY, [vdev2.0, 0, 0]),
        Step::Call(VIOMMU_DESTROY, [w.viommu.0, 0, 0]),
        Step::Call(VIOMMU_DESTROY, [nop.0, 0, 0]),
        Step::Call(PDEV_STOP, [w.pdev.0, 0, 0]),
        Step::Call(PDEV_DESTROY, [w.pdev.0, 0, 0]),
        Step::Call(VCPU_DESTROY, [w.vcpu.0, 0, 0]),
        Step::Call(UNMAP, [w.tvm.0, 0x1000, 0]),
        Step::Call(UNMAP, [w.tvm.0, SHARED_GPA + 0x2000, 0]),
        Step::Call(UNMAP, [w.tvm.0, 0x3000, 0]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, 0, 3]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, 0, 2]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, 0, 1]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, SHARED_GPA, 3]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, SHARED_GPA, 2]),
        Step::Call(TABLE_DESTROY, [w.tvm.0, SHARED_GPA, 1]),
        Step::Call(TVM_DESTROY, [w.tvm.0, 0, 0]),
    ];
    // Every granule the world delegated goes back with GRANULE_UNDELEGATE.
    let delegated = h
        .tsm
        .granules()
        .snapshot()
        .filter(|&(_, s, _)| {
            s != crate::granule::GranuleState::Ns && s != crate::granule::GranuleState::Reserved
        })
        .map(|(pa, _, _)| pa.0)
        .collect();
    let _ = NO_SOURCE;
    (w, steps, delegated)
}

/// Teardown orders tried; Miri interprets each one (minutes apiece), so it tries two.
const TEARDOWN_SEEDS: u64 = if cfg!(miri) { 2 } else { 24 };

#[test]
fn random_teardown_returns_every_granule() {
    for seed in 1..=TEARDOWN_SEEDS {
        let tdis = std::boxed::Box::leak(std::boxed::Box::new(tdis()));
        let start = super::harness(tsm_platform::AddressMapFormat::ArmStage2).ownership();
        let mut dev = device(tdis);
        let (w, steps, delegated) = populated(&mut dev);
        let mut todo: Vec<Step> = steps;
        todo.extend(
            delegated
                .iter()
                .map(|&pa| Step::Call(GRANULE_UNDELEGATE, [pa, 0, 0])),
        );
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut attempts = 0;
        while !todo.is_empty() {
            attempts += 1;
            assert!(
                attempts < 10_000,
                "seed {seed}: teardown stuck with {todo:?}"
            );
            let i = (xorshift(&mut rng) % todo.len() as u64) as usize;
            let step = todo[i];
            let before = w.h.snapshot();
            let r = match step {
                Step::Call(c, a) => w.h.host(c, &a),
                Step::Driven(c, obj) => {
                    let r = w.h.host(c, &[obj.0, w.comm.0]);
                    drive(&w.h, &mut dev, w.comm, obj, r)
                }
            };
            // Stopping a PDEV is optional: once it is destroyed, the step is moot.
            let moot = matches!(step, Step::Call(PDEV_STOP, _))
                && r == Err(Status::arg(StatusCode::BadHandle, 1));
            match r {
                _ if moot => {
                    todo.swap_remove(i);
                }
                Ok(_) => {
                    todo.swap_remove(i);
                }
                Err(s) => {
                    assert_ne!(s, Status::new(StatusCode::NeedsDeviceIo));
                    assert!(
                        w.h.snapshot() == before,
                        "seed {seed}: refused {step:?} ({s:?}) changed state"
                    );
                }
            }
            w.h.check();
        }
        assert_eq!(
            w.h.ownership(),
            start,
            "seed {seed}: granules not back where they started"
        );
    }
}
