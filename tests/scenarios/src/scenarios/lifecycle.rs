//! Scenario 1, lifecycle: delegate → TVM → a vIOMMU of each type FEATURES reports → PDEV
//! connect → a vdevice under each → bind (LOCKED) → the guest reads each report, checks its
//! digest and accepts (RUN) → T=1 DMA reaches private memory → unbind → teardown in the
//! enforced order → undelegate; every granule back to NS.

use tsm_abi::addr::Iova;
use tsm_abi::api::host;
use tsm_abi::event::{DmaInjectFlags, PasidArg};
use tsm_abi::state::VdevState;

use crate::driver::{Exit, World};
use crate::layout::{GuestArg, SCRATCH_GPA, SEGMENT, Script, VBDF_BASE};
use crate::{HostEnv, Outcome};

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    let mut types: heapless::Vec<_, 4> = heapless::Vec::new();
    for t in super::viommu_types(&w) {
        let _ = types.push(t);
    }
    ensure!(!types.is_empty(), "FEATURES reports no vIOMMU type");
    let arg = GuestArg {
        script: Script::Lifecycle,
        vbdf: VBDF_BASE,
        count: types.len() as u8,
    };
    let t = w.add_tvm(env, &[arg.encode()])?;
    w.connect_pdev(env)?;
    say!("PDEV connected");
    for (f, &ty) in types.iter().enumerate() {
        let viommu = w.add_viommu(env, t, ty)?;
        let v = w.add_vdev(env, t, viommu, f as u16)?;
        ensure!(
            w.state(env, v)? == VdevState::Unlocked,
            "new vdevice not UNLOCKED"
        );
        must!(w.bind(env, v)?, "VDEV_BIND");
        ensure!(
            w.state(env, v)? == VdevState::Locked,
            "bound vdevice not LOCKED"
        );
        say!("vIOMMU {=u32:#x}: vdevice bound, LOCKED", ty.raw());
    }
    w.activate(env, t)?;
    w.run_expect(env, t, 0, Exit::Exited(0))?;
    let private = w
        .tvm(t)?
        .page(SCRATCH_GPA)
        .ok_or(crate::Fail::new("scratch", line!()))?;
    for v in 0..w.vdevs.len() {
        let d = w.vdev(v)?;
        ensure!(
            w.state(env, v)? == VdevState::Run,
            "accepted vdevice not RUN"
        );
        if w.dma_checks() {
            let pa = must!(
                host::test_dma_inject(
                    env,
                    SEGMENT,
                    d.pbdf,
                    PasidArg::NoPasid,
                    Iova(SCRATCH_GPA.0 + 0x40),
                    DmaInjectFlags::T_BIT | DmaInjectFlags::WRITE
                ),
                "T=1 DMA to private memory in RUN"
            );
            ensure!(
                pa.0 == private.0 + 0x40,
                "T=1 DMA reached the wrong page",
                pa.0
            );
        }
        must!(w.unbind(env, v)?, "VDEV_UNBIND");
        ensure!(
            w.state(env, v)? == VdevState::Unlocked,
            "unbound vdevice not UNLOCKED"
        );
    }
    say!(
        "{=usize} vdevices accepted and unbound (T=1 DMA checked when the TSM has TEST_DMA_INJECT)",
        w.vdevs.len()
    );
    w.finish(env)
}
