//! The VCPU_RUN protocol: how a host call becomes a guest run and how a guest trap becomes either
//! a resumed guest or the end of the host's VCPU_RUN. Arch-neutral: the run loop
//! ([`crate::run_loop`]) drives it the same way on both architectures, over the HAL's
//! `HostCpu` (`host`) and `GuestCpu` (`guest`) of `tsm_platform::run`.
//!
//! # Who calls what
//!
//! ```text
//! loop {
//!     host.run() traps with a call `regs`
//!     match tsm.host_call(&regs) {
//!         HostStep::Reply(r)   => host.complete_call(r); run the host again
//!         HostStep::Enter(e)   => resume = e.resume; loop {   // the host's VCPU_RUN is pending
//!             exit = guest.run_guest(e.context, e.root, resume):
//!                  the HAL switches to the guest (stage-2 root e.root, tag for that root),
//!                  loading/saving its registers in the context area at e.context; `resume`
//!                  says how to (re)start it; it returns when the guest traps (a HAL entry
//!                  error becomes a FAULT exit without an address)
//!             match tsm.guest_exit(e.vcpu, exit) {
//!                 GuestStep::Resume(r)  => resume = r; continue with the same guest
//!                 GuestStep::ToHost(r)  => host.complete_call(r) (it completes VCPU_RUN);
//!                                          run the host again
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! The run loop calls [`Tsm::host_call`] for *every* host call ([`Tsm::handle`] is the
//! flattened form for tests): the VCPU_RUN handler validates and claims the vCPU and says so
//! ([`HostNext::Run`](crate::dispatch::HostNext)), and `host_call` turns the claim into
//! [`HostStep::Enter`]. Guest traps go to [`Tsm::guest_exit`] with the vCPU the HAL was running,
//! never a register value the guest controls; that is how guest calls are told from host calls.
//!
//! # State, and where it lives
//!
//! Everything is in the VCPU's own granule (secure memory, no hidden heap):
//!
//! | bytes | holder | what |
//! |---|---|---|
//! | `0..` | core (`objects::VcpuObj`) | TVM, entry, arg0, index, exited |
//! | [`RUN_STATE_OFFSET`]`..` | core (this module) | running flag, started flag, the current VCPU_RUN's exit-record PA, what the next entry must deliver |
//! | [`CONTEXT_OFFSET`]`..+`[`CONTEXT_SIZE`] | HAL | the saved guest register frame (general, FP/SIMD and the EL1 / ring-3 state the guest may change); the core never interprets it |
//!
//! The core only touches its part under the VCPU granule's lock. The HAL touches the context
//! area without that lock, but only between a claim and the matching exit to the host: while a
//! vCPU runs, a second VCPU_RUN is refused (`ObjectState(1)`) and so is VCPU_DESTROY, so the
//! claiming CPU owns the area exclusively and the granule cannot change hands under it. The
//! context area is zero when the vCPU is created ([`Resume::Start`] then tells the HAL to build
//! the first frame).
//!
//! # Address-space tags (VMID / PCID)
//!
//! The core names a TVM's address space by its root table ([`GuestEntry::root`]); the tag the
//! CPU's TLB uses for it is the HAL's (it depends on the hardware's tag width and on TLB
//! maintenance): a bounded table root → tag, a tag given to a new root only after a broadcast
//! invalidation of everything tagged with it and only when no CPU runs the old one. The core's
//! `GuestMmu::invalidate_guest_*(root, ..)` calls reach the right tag that way; after
//! `invalidate_guest_all` on TVM destroy, a root granule reused by a later TVM carries nothing
//! cached.
//!
//! # Exits
//!
//! | guest trap | result |
//! |---|---|
//! | guest call, not G_EXIT, not needing device I/O | dispatched with `Origin::Guest`; the guest resumes with its result |
//! | G_EXIT(code) | `GUEST_EXIT(code)`; the vCPU never runs again |
//! | a call returning `NeedsDeviceIo` (G_VDEV_ACCEPT, G_VDEV_STOP) | `DEVICE_REQUEST(vdev, op)`; the next VCPU_RUN exits again at once while the operation is pending, else resumes the guest with the operation's result |
//! | a host call ID | `DENIED_CALL(fid)`; the guest gets `Denied` when it next runs |
//! | stage-2 / page fault, other exception, interrupt | `FAULT(syndrome, gpa)`; the guest retries the instruction when it next runs |
//!
//! VCPU_RUN itself returns `SUCCESS` with result 1 = the [`ExitReason`] once the record is
//! written; if the host made the record's granule unusable meanwhile (delegated it), it returns
//! `InvalidBuffer(2)` and the exit is lost (a fault or request simply recurs; GUEST_EXIT is
//! visible as `ObjectState(1)` on the next VCPU_RUN).

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::call::args;
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::state::TvmState;
use tsm_abi::status::{Status, StatusCode};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::dispatch::{GuestNext, HostNext};
use crate::granule::{GranuleState, Locked};
use crate::objects::{Room, TvmLink, VcpuHandle, VcpuObj, internal};
use crate::tsm::Tsm;

// The HAL takes and returns these as they are (`tsm_platform::run`), so they are defined there.
pub use tsm_platform::run::{GuestExit, Resume};

/// Where the core's run state starts in a VCPU granule (after `VcpuObj`).
pub const RUN_STATE_OFFSET: u64 = 1024;
/// Where the HAL's saved guest context starts in a VCPU granule.
pub const CONTEXT_OFFSET: u64 = 2048;
/// Bytes of the HAL's saved guest context.
pub const CONTEXT_SIZE: u64 = GRANULE_SIZE - CONTEXT_OFFSET;

const _: () = assert!(size_of::<VcpuObj>() as u64 <= RUN_STATE_OFFSET);
const _: () = assert!(RUN_STATE_OFFSET + size_of::<RunState>() as u64 <= CONTEXT_OFFSET);

/// `RunState::next`: what the next entry delivers.
const NEXT_CONTINUE: u32 = 0;
/// Complete the trapped call with `RunState::result`.
const NEXT_RETURN: u32 = 1;
/// The guest waits for the device operation on `RunState::vdev`.
const NEXT_DEVICE_WAIT: u32 = 2;

/// The core's per-vCPU run state (at [`RUN_STATE_OFFSET`] of the VCPU granule; zero at create).
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RunState {
    /// Non-zero between a VCPU_RUN's claim and its exit to the host.
    running: u32,
    /// Non-zero once the HAL built the first frame.
    started: u32,
    /// The host PA the current VCPU_RUN's exit record goes to.
    exit_record: u64,
    /// `NEXT_*`.
    next: u32,
    /// NEXT_DEVICE_WAIT: the `DeviceOp`.
    op: u32,
    /// NEXT_DEVICE_WAIT: the VDEV handle.
    vdev: u64,
    /// NEXT_DEVICE_WAIT: the ticket the vdevice gave this vCPU's operation.
    ticket: u64,
    /// NEXT_RETURN: status word.
    status: u64,
    /// NEXT_RETURN: result registers.
    out: [u64; 4],
}

fn load_run(t: &Tsm<'_>, g: &Locked<'_, '_>) -> Result<RunState, Status> {
    let mut r = RunState::new_zeroed();
    load_run_into(t, g, &mut r)?;
    Ok(r)
}

/// [`load_run`] into the caller's copy: every guest exit goes through [`Tsm::with_run`], and
/// returning the state by value cost three whole copies of it on aarch64.
fn load_run_into(t: &Tsm<'_>, g: &Locked<'_, '_>, r: &mut RunState) -> Result<(), Status> {
    t.platform
        .read(run_state_pa(g)?, r.as_mut_bytes())
        .map_err(|_| internal())
}

/// Where a VCPU granule (granule-aligned, so the offset stays inside it) keeps its run state.
fn run_state_pa(g: &Locked<'_, '_>) -> Result<Pa, Status> {
    g.pa().checked_add(RUN_STATE_OFFSET).ok_or_else(internal)
}

fn save_run(t: &Tsm<'_>, g: &Locked<'_, '_>, r: &RunState) -> Result<(), Status> {
    t.platform
        .write(run_state_pa(g)?, r.as_bytes())
        .map_err(|_| internal())
}

/// Switch from the host to a guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestEntry {
    /// The VCPU handle (what the HAL passes back to [`Tsm::guest_exit`]).
    pub vcpu: Pa,
    /// Its TVM.
    pub tvm: Pa,
    /// The TVM's address-map root (aarch64: VTTBR_EL2.BADDR; x86_64: CR3).
    pub root: Pa,
    /// The HAL's saved-context area: [`CONTEXT_SIZE`] bytes of the VCPU granule.
    pub context: Pa,
    /// How to (re)start it.
    pub resume: Resume,
}

/// What to do after a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostStep {
    /// Complete the call with this result and run the host.
    Reply(CallResult),
    /// The host's VCPU_RUN stays pending: run this guest.
    Enter(GuestEntry),
}

/// What to do after a guest trap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestStep {
    /// Run the same guest again.
    Resume(Resume),
    /// Complete the host's VCPU_RUN with this result and run the host.
    ToHost(CallResult),
}

/// VCPU_RUN: validates and claims the vCPU; [`Tsm::host_call`] then enters it
/// ([`HostStep::Enter`]).
pub fn vcpu_run(t: &Tsm<'_>, a: args::VcpuRun) -> Result<HostNext, Status> {
    let (vcpu, record) = (a.vcpu, a.exit_record);
    // The record must be NS now (checked again when it is written). Checked before the other
    // locks: a record naming the TVM's or vCPU's own granule must fail, not wait for itself.
    if !record.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    drop(t.lock_ns_buffer(record, size_of::<VcpuExit>() as u64, 2)?);
    let (mut tvm_room, mut vcpu_room) = (Room::new(), Room::new());
    let (o, v) = t.lock_with_parent(
        VcpuHandle::new(vcpu),
        1,
        TvmLink::tvm,
        (&mut tvm_room, &mut vcpu_room),
    )?;
    let mut run = load_run(t, v.granule())?;
    if o.state != TvmState::Active || v.exited != 0 || run.running != 0 {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    run.running = 1;
    run.exit_record = record.0;
    save_run(t, v.granule(), &run)?;
    Ok(HostNext::Run { vcpu })
}

/// Whether the vCPU in the locked granule is running (VCPU_DESTROY refuses it then: the HAL
/// owns its context area until the run ends).
pub fn is_running(t: &Tsm<'_>, gv: &Locked<'_, '_>) -> Result<bool, Status> {
    Ok(load_run(t, gv)?.running != 0)
}

impl Tsm<'_> {
    /// Handles one host call for the run loop: every call goes through [`Tsm::host_dispatch`]; a
    /// successful VCPU_RUN becomes [`HostStep::Enter`] (or an immediate exit when the guest
    /// still waits for the host to carry a device operation).
    pub fn host_call(&self, regs: &CallRegs) -> HostStep {
        let vcpu = match self.host_dispatch(regs) {
            HostNext::Reply(r) => return HostStep::Reply(r),
            HostNext::Run { vcpu } => vcpu,
        };
        match self.enter(vcpu) {
            Ok(Entered::Guest(e)) => HostStep::Enter(e),
            Ok(Entered::Exit(exit)) => HostStep::Reply(self.to_host(vcpu, &exit)),
            Err(s) => {
                self.release(vcpu);
                HostStep::Reply(CallResult::status(s))
            }
        }
    }

    /// Handles one trap of the running vCPU `vcpu` (the HAL's, never a guest register).
    pub fn guest_exit(&self, vcpu: Pa, exit: GuestExit) -> GuestStep {
        match self.running(vcpu) {
            Ok(true) => {}
            // The HAL runs only vCPUs it claimed: anything else is a HAL bug; the host's call
            // fails rather than the TSM trusting the vCPU.
            Ok(false) | Err(_) => return GuestStep::ToHost(CallResult::status(internal())),
        }
        match exit {
            GuestExit::Fault {
                syndrome,
                gpa,
                write,
            } => {
                let mut flags = ExitFlags::empty();
                flags.set(ExitFlags::WRITE, write);
                flags.set(ExitFlags::GPA_VALID, gpa.is_some());
                let rec = VcpuExit {
                    reason: ExitReason::Fault.raw(),
                    flags: flags.bits(),
                    syndrome,
                    gpa: gpa.map_or(0, |g| g.granule_base().0),
                    ..VcpuExit::new_zeroed()
                };
                self.exit_with(vcpu, &rec, NEXT_CONTINUE, None)
            }
            GuestExit::Call(regs) => self.guest_call(vcpu, &regs),
        }
    }

    fn guest_call(&self, vcpu: Pa, regs: &CallRegs) -> GuestStep {
        match self.guest_dispatch(vcpu, regs) {
            GuestNext::Reply(r) => GuestStep::Resume(Resume::Return(r)),
            GuestNext::DeniedCall { fid } => {
                let rec = VcpuExit {
                    reason: ExitReason::DeniedCall.raw(),
                    fid,
                    ..VcpuExit::new_zeroed()
                };
                let denied = CallResult::status(Status::new(StatusCode::Denied));
                self.exit_with(vcpu, &rec, NEXT_RETURN, Some(denied))
            }
            GuestNext::Exit { code } => {
                let rec = VcpuExit {
                    reason: ExitReason::GuestExit.raw(),
                    code,
                    ..VcpuExit::new_zeroed()
                };
                self.exit_with(vcpu, &rec, NEXT_CONTINUE, None)
            }
            GuestNext::DeviceRequest { vdev, op, ticket } => {
                let rec = device_request(vdev.0, op.raw());
                let wait = CallResult::ok([0, 0, ticket, 0]);
                self.exit_with(vcpu, &rec, NEXT_DEVICE_WAIT, Some(wait))
            }
        }
    }

    /// Ends the host's VCPU_RUN with `rec`, leaving `next` for the next entry.
    fn exit_with(
        &self,
        vcpu: Pa,
        rec: &VcpuExit,
        next: u32,
        result: Option<CallResult>,
    ) -> GuestStep {
        let saved = self.with_run(vcpu, |run| {
            run.next = next;
            run.op = rec.vdev_op;
            run.vdev = rec.vdev;
            let r = result.unwrap_or(CallResult::ok([0; 4]));
            run.status = r.status;
            run.out = r.out;
            run.ticket = if next == NEXT_DEVICE_WAIT {
                r.out[2]
            } else {
                0
            };
            Ok(())
        });
        match saved {
            Ok(()) => GuestStep::ToHost(self.to_host(vcpu, rec)),
            Err(s) => GuestStep::ToHost(self.to_host_failed(vcpu, s)),
        }
    }

    /// Writes the exit record of the current VCPU_RUN, ends the run, and returns the
    /// VCPU_RUN result.
    fn to_host(&self, vcpu: Pa, rec: &VcpuExit) -> CallResult {
        // Written without the vCPU's lock: NS buffers come last in the lock order.
        let result = self
            .with_run(vcpu, |run| Ok(Pa(run.exit_record)))
            .and_then(|record| self.write_ns(record, rec.as_bytes(), 2))
            .map_or_else(CallResult::status, |()| {
                CallResult::ok([u64::from(rec.reason), 0, 0, 0])
            });
        self.release(vcpu);
        result
    }

    fn to_host_failed(&self, vcpu: Pa, s: Status) -> CallResult {
        self.release(vcpu);
        CallResult::status(s)
    }

    /// Ends the run (clears `running`); a no-op on a vCPU that is not running.
    fn release(&self, vcpu: Pa) {
        let _ = self.with_run(vcpu, |run| {
            run.running = 0;
            Ok(())
        });
    }

    fn running(&self, vcpu: Pa) -> Result<bool, Status> {
        self.with_run(vcpu, |run| Ok(run.running != 0))
    }

    /// Runs `f` on the vCPU's run state under its lock and saves it back.
    fn with_run<R>(
        &self,
        vcpu: Pa,
        f: impl FnOnce(&mut RunState) -> Result<R, Status>,
    ) -> Result<R, Status> {
        let gv = self
            .granules
            .lock_in(vcpu, GranuleState::Vcpu)
            .map_err(|_| internal())?;
        let mut run = RunState::new_zeroed();
        load_run_into(self, &gv, &mut run)?;
        let r = f(&mut run)?;
        save_run(self, &gv, &run)?;
        Ok(r)
    }

    /// The entry for a claimed vCPU, or the exit it takes at once.
    fn enter(&self, vcpu: Pa) -> Result<Entered, Status> {
        let (tvm, root) = {
            let tvm = self
                .links(VcpuHandle::new(vcpu), 1)
                .map_err(|_| internal())?
                .tvm();
            let mut tvm_room = Room::new();
            let o = self.lock(tvm, 1, &mut tvm_room).map_err(|_| internal())?;
            (tvm.pa(), Pa(o.root))
        };
        // The TVM is locked only to read its root; the vCPU's claim keeps both alive.
        let wait = {
            let gv = self
                .granules
                .lock_in(vcpu, GranuleState::Vcpu)
                .map_err(|_| internal())?;
            let run = load_run(self, &gv)?;
            (run.next == NEXT_DEVICE_WAIT).then_some((Pa(run.vdev), run.op, run.ticket))
        };
        // Checked without the vCPU's lock: the vdevice comes later in the lock order.
        let done = match wait {
            Some((vdev, op, ticket)) => match self.guest_op_result(vdev, ticket) {
                None => return Ok(Entered::Exit(device_request(vdev.0, op))),
                Some(s) => Some(CallResult::status(s)),
            },
            None => None,
        };
        let mut vcpu_room = Room::new();
        let v = self
            .lock(VcpuHandle::new(vcpu), 1, &mut vcpu_room)
            .map_err(|_| internal())?;
        let mut run = load_run(self, v.granule())?;
        let resume = if run.started == 0 {
            run.started = 1;
            Resume::Start {
                entry: Gpa(v.entry),
                arg0: v.arg0,
            }
        } else if let Some(r) = done {
            Resume::Return(r)
        } else if run.next == NEXT_RETURN {
            Resume::Return(CallResult {
                status: run.status,
                out: run.out,
            })
        } else {
            Resume::Continue
        };
        run.next = NEXT_CONTINUE;
        run.vdev = 0;
        run.op = 0;
        run.ticket = 0;
        let context = vcpu.checked_add(CONTEXT_OFFSET).ok_or_else(internal)?;
        save_run(self, v.granule(), &run)?;
        Ok(Entered::Guest(GuestEntry {
            vcpu,
            tvm,
            root,
            context,
            resume,
        }))
    }
}

enum Entered {
    Guest(GuestEntry),
    Exit(VcpuExit),
}

fn device_request(vdev: u64, op: u32) -> VcpuExit {
    VcpuExit {
        reason: ExitReason::DeviceRequest.raw(),
        vdev,
        vdev_op: op,
        ..VcpuExit::new_zeroed()
    }
}

#[cfg(test)]
mod tests;
