//! vCPU calls. VCPU_RUN's protocol (claim, entry, exits) is in [`crate::run`].

use tsm_abi::call::args;
use tsm_abi::regs::CallResult;
use tsm_abi::state::TvmState;
use tsm_abi::status::{Status, StatusCode};

use crate::dispatch::Reply;
use crate::granule::GranuleState;
use crate::objects::{self, Handle, Room, TvmHead, TvmLink, VcpuHandle, VcpuObj, internal};
use crate::tsm::Tsm;

/// VCPU_CREATE: a vCPU of a NEW TVM, in a delegated granule.
pub fn vcpu_create(t: &Tsm<'_>, a: args::VcpuCreate) -> Reply {
    let (vcpu, entry) = (a.vcpu, a.entry);
    let mut tvm_room = Room::new();
    let mut o = t.lock(Handle::<TvmHead>::new(a.tvm), 1, &mut tvm_room)?;
    if o.state != TvmState::New {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    if o.vcpus_created >= o.max_vcpus {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    if o.gpa_bits >= 64 || entry.0 >> o.gpa_bits != 0 {
        return Err(Status::arg(StatusCode::OutOfRange, 3));
    }
    if vcpu == o.pa() {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    let mut gv = t.granules.lock(vcpu).map_err(|e| e.status(2))?;
    gv.state()
        .check_transition(GranuleState::Vcpu)
        .map_err(|e| e.status(2))?;
    let cap = Status::arg(StatusCode::Capacity, 1);
    let index = o.vcpus_created;
    o.vcpus_created = index.checked_add(1).ok_or(cap)?;
    o.vcpus = o.vcpus.checked_add(1).ok_or(cap)?;
    o.get().map_err(|_| cap)?;
    // The run state and the HAL's context area (crate::run) must start zeroed, not with what
    // the host left in the granule before delegating it.
    t.scrub(vcpu)?;
    let obj = VcpuObj {
        tvm: o.pa().0,
        entry: entry.0,
        arg0: a.arg0,
        index,
        exited: 0,
        exit_code: 0,
    };
    objects::save_new(t, &gv, &obj)?;
    o.save()?;
    gv.transition(GranuleState::Vcpu).map_err(|e| e.status(2))?;
    Ok(CallResult::ok([0; 4]))
}

/// VCPU_DESTROY: the vCPU's granule goes back to DELEGATED.
pub fn vcpu_destroy(t: &Tsm<'_>, a: args::VcpuDestroy) -> Reply {
    let vcpu = a.vcpu;
    let (mut tvm_room, mut vcpu_room) = (Room::new(), Room::new());
    let (mut o, mut gv) = t.lock_with_parent(
        VcpuHandle::new(vcpu),
        1,
        |l: &TvmLink| Handle::<TvmHead>::new(l.tvm().pa()),
        (&mut tvm_room, &mut vcpu_room),
    )?;
    // A running vCPU's context area belongs to the CPU running it until its VCPU_RUN ends.
    if crate::run::is_running(t, gv.granule())? {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    // The granule holds the guest's saved registers: zero it before it can be reused.
    t.scrub(vcpu)?;
    o.vcpus = o.vcpus.checked_sub(1).ok_or_else(internal)?;
    o.put().map_err(|_| internal())?;
    o.save()?;
    gv.transition(GranuleState::Delegated)
        .map_err(|_| internal())?;
    Ok(CallResult::ok([0; 4]))
}
