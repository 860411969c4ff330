//! vCPU calls. VCPU_RUN needs the HAL's guest entry (world switch), which the HAL issue wires;
//! until then it returns `NotSupported` after checking its arguments.

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::regs::CallResult;
use tsm_abi::state::TvmState;
use tsm_abi::status::{Status, StatusCode};

use crate::calls::memory::lock_tvm;
use crate::dispatch::{Args, Ctx, Outcome};
use crate::granule::GranuleState;
use crate::objects::{self, VcpuObj, internal};
use crate::tsm::Tsm;

/// VCPU_CREATE: a vCPU of a NEW TVM, in a delegated granule.
pub fn vcpu_create(t: &Tsm<'_>, _: Ctx, a: &Args) -> Outcome {
    let (vcpu, entry) = (Pa(a[1]), Gpa(a[2]));
    let (mut gt, mut o) = lock_tvm(t, Pa(a[0]), 1)?;
    if o.state != TvmState::New.raw() {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    if o.vcpus_created >= o.max_vcpus {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    if o.gpa_bits >= 64 || entry.0 >> o.gpa_bits != 0 {
        return Err(Status::arg(StatusCode::OutOfRange, 3));
    }
    if vcpu == gt.pa() {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    let mut gv = t.granules.lock(vcpu).map_err(|e| e.status(2))?;
    gv.state().check_transition(GranuleState::Vcpu).map_err(|e| e.status(2))?;
    gt.get().map_err(|_| Status::arg(StatusCode::Capacity, 1))?;
    let obj = VcpuObj { tvm: gt.pa().0, entry: entry.0, arg0: a[3], index: o.vcpus_created, exited: 0 };
    o.vcpus_created += 1;
    o.vcpus += 1;
    objects::save(t.platform, &gv, &obj)?;
    objects::save(t.platform, &gt, &o)?;
    gv.transition(GranuleState::Vcpu).map_err(|e| e.status(2))?;
    Ok(CallResult::ok([0; 4]))
}

/// VCPU_RUN: `NotSupported` until the HAL provides the world switch (the arguments are still
/// checked, so a host sees the same refusals it will see later).
pub fn vcpu_run(t: &Tsm<'_>, _: Ctx, a: &Args) -> Outcome {
    let gv = t.granules.lock_in(Pa(a[0]), GranuleState::Vcpu).map_err(|e| e.status(1))?;
    drop(gv);
    let _buf = t.lock_ns_buffer(Pa(a[1]), 64, 2)?;
    Err(Status::new(StatusCode::NotSupported))
}

/// VCPU_DESTROY: the vCPU's granule goes back to DELEGATED.
pub fn vcpu_destroy(t: &Tsm<'_>, _: Ctx, a: &Args) -> Outcome {
    let vcpu = Pa(a[0]);
    // Lock order is TVM before VCPU: learn the TVM, drop the vCPU, lock both in order and
    // check the vCPU is still the same one.
    let tvm = {
        let gv = t.granules.lock_in(vcpu, GranuleState::Vcpu).map_err(|e| e.status(1))?;
        objects::load::<VcpuObj>(t.platform, &gv)?.tvm
    };
    let (mut gt, mut o) = lock_tvm(t, Pa(tvm), 1).map_err(|_| Status::arg(StatusCode::BadHandle, 1))?;
    let mut gv = t.granules.lock_in(vcpu, GranuleState::Vcpu).map_err(|e| e.status(1))?;
    if objects::load::<VcpuObj>(t.platform, &gv)?.tvm != tvm {
        return Err(Status::arg(StatusCode::BadHandle, 1));
    }
    o.vcpus = o.vcpus.checked_sub(1).ok_or_else(internal)?;
    gt.put().map_err(|_| internal())?;
    objects::save(t.platform, &gt, &o)?;
    gv.transition(GranuleState::Delegated).map_err(|_| internal())?;
    Ok(CallResult::ok([0; 4]))
}
