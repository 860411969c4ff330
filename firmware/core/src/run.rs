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
//!         HostStep::Enter(e)   => {   // the host's VCPU_RUN is pending
//!             guest.run_guest(e.context, e.root, e.resume, on_exit):
//!                  the HAL switches to the guest (stage-2 root e.root, tag for that root),
//!                  loading its registers from the context area at e.context; `resume` says
//!                  how to (re)start it; on every trap it calls
//!                  on_exit(exit) = tsm.guest_exit_entered(&e, exit):
//!                      Handled::Reply(r)        the HAL completes the call in the loaded
//!                                               guest and runs it on (no world switch)
//!                      Handled::Leave(leaving)  the HAL saves the guest in the context area
//!                                               and switches back
//!                      Handled::Finish(leaving) (G_EXIT) as Leave, but the guest is not saved:
//!                                               it never runs again
//!             Ok(leaving) => tsm.leave(&e, &leaving): the exit recorded, the claim released
//!             Err(_) (a HAL entry error) => tsm.leave(&e, FAULT without an address)
//!             host.complete_call(that result) (it completes VCPU_RUN); run the host again
//!         }
//!     }
//! }
//! ```
//!
//! The run loop calls [`Tsm::host_call`] for *every* host call ([`Tsm::handle`] is the
//! flattened form for tests): the VCPU_RUN handler validates and claims the vCPU and works out
//! its entry under the locks it checked it under ([`Claim`], in
//! [`HostNext::Run`](crate::dispatch::HostNext)), and `host_call` turns the claim into
//! [`HostStep::Enter`] (after fetching the result of a device operation the guest waits on).
//! An exit to the host updates the run state once: what the next entry delivers, and the
//! release of the claim. Guest traps go to [`Tsm::guest_exit`] with the vCPU the HAL was running,
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
//! | [`CONTEXT_OFFSET`]`..+`[`CONTEXT_SIZE`] | HAL | the saved guest register frame (general, FP/SIMD and the EL1 / SVM-guest state the guest may change); the core never interprets it |
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
//! | stage-2 / page fault, other exception | `FAULT(syndrome, gpa)`; the guest retries the instruction when it next runs |
//! | a physical interrupt for the host | `INTERRUPT`, no other field; the guest continues where it was when it next runs |
//!
//! VCPU_RUN itself returns `SUCCESS` with result 1 = the [`ExitReason`] once the record is
//! written; if the host made the record's granule unusable meanwhile (delegated it), it returns
//! `InvalidBuffer(2)` and the exit is lost (a fault or request simply recurs, an interrupt is
//! the host's to take anyway; GUEST_EXIT is visible as `ObjectState(1)` on the next
//! VCPU_RUN).

use core::mem::offset_of;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::call::args;
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::state::{DeviceOp, TvmState};
use tsm_abi::status::{Status, StatusCode};
use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::dispatch::{GuestCaller, GuestNext, HostNext};
use crate::granule::{GranuleState, Locked};
use crate::objects::{
    self, Child, Guard, Handle, Object, Room, Stored, TvmView, VcpuObj, internal,
};
use crate::tsm::Tsm;

// The HAL takes and returns these as they are (`tsm_platform::run`), so they are defined there.
pub use tsm_platform::run::{GuestExit, Handled, Resume};

/// Where the core's run state starts in a VCPU granule: right after `VcpuObj`, so that
/// VCPU_RUN and the exit read and write the two in one copy each ([`VcpuRun`]).
pub const RUN_STATE_OFFSET: u64 = size_of::<VcpuObj>() as u64;
/// Where the HAL's saved guest context starts in a VCPU granule.
pub const CONTEXT_OFFSET: u64 = 2048;
/// Bytes of the HAL's saved guest context.
pub const CONTEXT_SIZE: u64 = GRANULE_SIZE - CONTEXT_OFFSET;

const _: () = assert!(offset_of!(VcpuRun, run) as u64 == RUN_STATE_OFFSET);
const _: () = assert!(RUN_STATE_OFFSET + size_of::<RunState>() as u64 <= CONTEXT_OFFSET);

/// `RunState::next`: what the next entry delivers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(u32)]
enum Next {
    /// Run the guest on. Zero: a new vCPU's run state is its scrubbed granule.
    Continue = 0,
    /// Complete the trapped call with `RunState::status` and `out`.
    Return = 1,
    /// The guest waits for the device operation on `RunState::vdev`.
    DeviceWait = 2,
}

/// The core's per-vCPU run state (at [`RUN_STATE_OFFSET`] of the VCPU granule; zero at create),
/// decoded like an object whenever it is read. Laid out so that what an exit to the host
/// changes (`running` .. `out`, with `started`) follows `VcpuObj::exited` and `exit_code` in one
/// run of bytes ([`Released`]); `exit_record` comes last.
#[derive(Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RunState {
    /// Non-zero between a VCPU_RUN's claim and its exit to the host.
    running: u32,
    /// What the next entry delivers.
    next: Next,
    /// `Next::DeviceWait`: the operation.
    op: DeviceOp,
    /// Non-zero once the HAL built the first frame. Between `op` and `vdev`: `set_next`'s
    /// stores then form two short runs, which LLVM keeps as stores; one 64-byte run of them
    /// became a `memset` call (61 instructions on aarch64's VCPU_RUN).
    started: u32,
    /// `Next::DeviceWait`: the VDEV handle.
    vdev: u64,
    /// `Next::DeviceWait`: the ticket the vdevice gave this vCPU's operation.
    ticket: u64,
    /// `Next::Return`: status word.
    status: u64,
    /// `Next::Return`: result registers.
    out: [u64; 4],
    /// The host PA the current VCPU_RUN's exit record goes to.
    exit_record: u64,
}

impl Stored for RunState {
    type Words = [u64; size_of::<RunState>() / 8];
}

/// A VCPU granule's object and run state, which lie next to each other: what VCPU_RUN checks
/// and claims, and what the exit releases (and G_EXIT marks), in one locked read and one write.
#[derive(TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct VcpuRun {
    obj: VcpuObj,
    run: RunState,
}

impl Stored for VcpuRun {
    type Words = [u64; size_of::<VcpuRun>() / 8];
}

impl Object for VcpuRun {
    const STATE: GranuleState = GranuleState::Vcpu;
}

const _: () = assert!(size_of::<RunState>().is_multiple_of(8));

/// A device operation a guest's call waits on (G_VDEV_ACCEPT, G_VDEV_STOP): its result
/// completes the call ([`Tsm::guest_op_result`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeviceWait {
    /// The VDEV handle.
    pub vdev: Pa,
    /// START or STOP.
    pub op: DeviceOp,
    /// The ticket the vdevice gave the operation.
    pub ticket: u64,
}

/// An exit to the host a trap decided ([`Tsm::guest_exit_entered`]): what [`Tsm::leave`]
/// records once the HAL has saved the vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Leaving {
    /// A stage-2 / page fault or another exception: `FAULT`; the guest retries.
    Fault {
        /// The HAL's syndrome.
        syndrome: u64,
        /// The faulting GPA, when the HAL knows it.
        gpa: Option<Gpa>,
        /// A write access.
        write: bool,
    },
    /// A physical interrupt for the host: `INTERRUPT`; the guest continues.
    Interrupt,
    /// A host call ID from the guest: `DENIED_CALL(fid)`; the guest gets `Denied`.
    DeniedCall {
        /// The call ID.
        fid: u64,
    },
    /// G_EXIT: `GUEST_EXIT(code)`; the vCPU never runs again.
    Exit {
        /// G_EXIT's argument.
        code: u64,
    },
    /// A guest call waiting on a device operation: `DEVICE_REQUEST(vdev, op)`.
    DeviceRequest(DeviceWait),
}

impl Leaving {
    /// The exit record, and what the vCPU's next entry delivers.
    fn record(&self) -> (VcpuExit, After) {
        match *self {
            Leaving::Fault {
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
                (rec, After::Continue)
            }
            Leaving::Interrupt => {
                let rec = VcpuExit {
                    reason: ExitReason::Interrupt.raw(),
                    ..VcpuExit::new_zeroed()
                };
                (rec, After::Continue)
            }
            Leaving::DeniedCall { fid } => {
                let rec = VcpuExit {
                    reason: ExitReason::DeniedCall.raw(),
                    fid,
                    ..VcpuExit::new_zeroed()
                };
                let denied = CallResult::status(Status::new(StatusCode::Denied));
                (rec, After::Return(denied))
            }
            Leaving::Exit { code } => {
                let rec = VcpuExit {
                    reason: ExitReason::GuestExit.raw(),
                    code,
                    ..VcpuExit::new_zeroed()
                };
                (rec, After::Continue)
            }
            Leaving::DeviceRequest(w) => {
                let rec = VcpuExit {
                    reason: ExitReason::DeviceRequest.raw(),
                    vdev: w.vdev.0,
                    vdev_op: w.op.raw(),
                    ..VcpuExit::new_zeroed()
                };
                (rec, After::DeviceWait(w))
            }
        }
    }
}

/// What a vCPU's next entry delivers, as an exit to the host leaves it.
enum After {
    /// Run the guest on.
    Continue,
    /// Complete the trapped call with this result.
    Return(CallResult),
    /// Complete the trapped call with the operation's result, once it is over.
    DeviceWait(DeviceWait),
}

impl After {
    /// The run state's fields that say what the next entry delivers: `next`, the result
    /// (`status`, `out`) and the operation waited on (`op`, `vdev`, `ticket`).
    fn delivery(self) -> (Next, CallResult, Option<DeviceWait>) {
        match self {
            After::Continue => (Next::Continue, CallResult::ok([0; 4]), None),
            After::Return(r) => (Next::Return, r, None),
            After::DeviceWait(w) => (Next::DeviceWait, CallResult::ok([0; 4]), Some(w)),
        }
    }
}

impl RunState {
    /// Leaves `after` for the next entry.
    fn set_next(&mut self, after: After) {
        let (next, r, wait) = after.delivery();
        self.next = next;
        self.status = r.status;
        self.out = r.out;
        self.op = wait.map_or(DeviceOp::None, |w| w.op);
        self.vdev = wait.map_or(0, |w| w.vdev.0);
        self.ticket = wait.map_or(0, |w| w.ticket);
    }
}

/// What an exit to the host writes of the claimed vCPU's granule ([`Tsm::exit_to_host`]): the
/// bytes of [`VcpuRun`] from `obj.exited` to `run.out`, the fields it changes and the two
/// it knows without reading them (see there).
#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct Released {
    exited: u64,
    exit_code: u64,
    running: u32,
    next: Next,
    op: DeviceOp,
    started: u32,
    vdev: u64,
    ticket: u64,
    status: u64,
    out: [u64; 4],
}

/// Where [`Released`] lies in a VCPU granule.
const RELEASED_OFFSET: usize = offset_of!(VcpuRun, obj.exited);

// `Released` is the run of `VcpuRun`'s bytes it says it is, field by field (offsets from
// `RELEASED_OFFSET`; wrapping, so a field before it could not pass).
const fn released_at(offset_in_vcpu_run: usize) -> usize {
    offset_in_vcpu_run.wrapping_sub(RELEASED_OFFSET)
}
const _: () = {
    assert!(released_at(offset_of!(VcpuRun, obj.exited)) == offset_of!(Released, exited));
    assert!(released_at(offset_of!(VcpuRun, obj.exit_code)) == offset_of!(Released, exit_code));
    assert!(released_at(offset_of!(VcpuRun, run.running)) == offset_of!(Released, running));
    assert!(released_at(offset_of!(VcpuRun, run.next)) == offset_of!(Released, next));
    assert!(released_at(offset_of!(VcpuRun, run.vdev)) == offset_of!(Released, vdev));
    assert!(released_at(offset_of!(VcpuRun, run.ticket)) == offset_of!(Released, ticket));
    assert!(released_at(offset_of!(VcpuRun, run.status)) == offset_of!(Released, status));
    assert!(released_at(offset_of!(VcpuRun, run.out)) == offset_of!(Released, out));
    assert!(released_at(offset_of!(VcpuRun, run.op)) == offset_of!(Released, op));
    assert!(released_at(offset_of!(VcpuRun, run.started)) == offset_of!(Released, started));
    assert!(released_at(offset_of!(VcpuRun, run.exit_record)) == size_of::<Released>());
};

impl Released {
    /// The claimed vCPU's fields after the exit `l`, which leaves `after` for the next entry.
    fn new(l: &Leaving, after: After) -> Self {
        let (exited, exit_code) = match *l {
            Leaving::Exit { code } => (1, code),
            _ => (0, 0),
        };
        let (next, r, wait) = after.delivery();
        Released {
            exited,
            exit_code,
            running: 0,
            next,
            vdev: wait.map_or(0, |w| w.vdev.0),
            ticket: wait.map_or(0, |w| w.ticket),
            status: r.status,
            out: r.out,
            op: wait.map_or(DeviceOp::None, |w| w.op),
            started: 1,
        }
    }
}

/// The vCPU's run state, read under the locked VCPU granule `g` into `room` and decoded.
fn load_run<'r>(
    t: &Tsm<'_>,
    g: &Locked<'_, '_>,
    room: &'r mut Room<RunState>,
) -> Result<&'r mut RunState, Status> {
    objects::read_decoded(t.platform, run_state_pa(g)?, room)
}

/// Where a VCPU granule (granule-aligned, so the offset stays inside it) keeps its run state.
fn run_state_pa(g: &Locked<'_, '_>) -> Result<Pa, Status> {
    g.pa().checked_add(RUN_STATE_OFFSET).ok_or_else(internal)
}

/// Writes `r` back as the run state at `at` (a locked VCPU granule's [`run_state_pa`]).
fn save_run(t: &Tsm<'_>, at: Pa, r: &RunState) -> Result<(), Status> {
    t.platform.write(at, r.as_bytes()).map_err(|_| internal())
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
    /// The TVM's GPA width. Like `root`, fixed at TVM_CREATE: guest calls take both from here
    /// ([`GuestCaller`]), so a buffer past the width is refused before any lock.
    pub gpa_bits: u8,
    /// The HAL's saved-context area: [`CONTEXT_SIZE`] bytes of the VCPU granule.
    pub context: Pa,
    /// The host PA this VCPU_RUN's exit record goes to (checked NS at the claim, and again
    /// under its lock when written).
    pub exit_record: Pa,
    /// How to (re)start it.
    pub resume: Resume,
    /// Only this module makes entries, and only from a claim (`vcpu_run`, `host_call`).
    claimed: Claimed,
}

/// Proof that a [`GuestEntry`] comes from a claim: private, so no other module or crate (the
/// HAL, a test) can make an entry for a vCPU the core did not claim.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Claimed;

/// A vCPU VCPU_RUN claimed, with its entry worked out under the locks the claim took.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Claim {
    /// The guest to run.
    pub entry: GuestEntry,
    /// The device operation the guest's last call still waits on: its result, once there,
    /// replaces `entry.resume`; while it is pending, the vCPU exits again at once.
    pub wait: Option<DeviceWait>,
}

/// What to do after a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostStep {
    /// Complete the call with this result and run the host.
    Reply(CallResult),
    /// The host's VCPU_RUN stays pending: run this guest.
    Enter(GuestEntry),
    /// The calling CPU leaves the host (HOST_CPU_STOP, PSCI CPU_OFF): the run loop marks it
    /// stopped ([`Tsm::cpu_stopped`]) and waits for a start request.
    Off,
}

/// What to do after a guest trap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestStep {
    /// Run the same guest again.
    Resume(Resume),
    /// Complete the host's VCPU_RUN with this result and run the host.
    ToHost(CallResult),
}

/// Locks and reads the vCPU `vcpu`, and reads its TVM's view without the TVM's lock (for
/// [`vcpu_run`]). Out of line on aarch64, as the `lock_with_parent` it replaces was: inlined
/// into `run_loop::run`, it cost aarch64's guest-call path +6 instructions of codegen and
/// VCPU_RUN +8; out of line on x86_64 it cost VCPU_RUN +39 (docs/benchmarks.md, `vrun5`).
#[cfg_attr(target_arch = "aarch64", inline(never))]
fn lock_vcpu_run<'t, 'a>(
    t: &'t Tsm<'a>,
    vcpu: Pa,
    rooms: (&'t mut Room<TvmView>, &'t mut Room<VcpuRun>),
) -> Result<(&'t mut TvmView, Guard<'t, 'a, VcpuRun>), Status> {
    let v = t.lock(Handle::<VcpuRun>::new(vcpu), 1, rooms.1)?;
    // The TVM's view (state, root, GPA width: all the checks and the entry need) is read
    // without the TVM's lock, under the vCPU's. Sound because, while this vCPU's granule is
    // locked as a VCPU, its TVM is live and the view's fields cannot change but for one
    // step of `state`: TVM_DESTROY refuses a TVM with vCPUs and VCPU_DESTROY needs this
    // lock; `root` and `gpa_bits` are fixed at TVM_CREATE; `state` only goes NEW → ACTIVE,
    // once (TVM_ACTIVATE, which rewrites the other bytes with their own values), and vCPUs
    // are created only in NEW. A read racing the activation sees NEW or ACTIVE (the two
    // differ in one byte), as if ordered before or after it; NEW refuses the run as it
    // would have under the lock. Taking the lock cost a try-lock, the parent's checks and
    // its release on every VCPU_RUN.
    let tvm = v.obj.links().tvm().pa();
    let o = objects::read_decoded(t.platform, tvm, rooms.0)?;
    Ok((o, v))
}

/// VCPU_RUN: validates and claims the vCPU and works out its entry under the vCPU's lock,
/// which it needs for the checks anyway; [`Tsm::host_call`] then enters it
/// ([`HostStep::Enter`]).
pub fn vcpu_run(t: &Tsm<'_>, a: args::VcpuRun) -> Result<HostNext, Status> {
    let (vcpu, record) = (a.vcpu, a.exit_record);
    // The record must be NS now: its published state is enough, as it is checked again under
    // its lock when it is written (a delegation in between makes that write fail, as one after
    // a locked check would). Checked before the other locks.
    if !record.0.is_multiple_of(8) {
        return Err(Status::arg(StatusCode::InvalidBuffer, 2));
    }
    t.check_ns_buffer(record, size_of::<VcpuExit>() as u64, 2)?;
    let (mut tvm_room, mut vcpu_room) = (Room::<TvmView>::new(), Room::new());
    let (o, mut v) = lock_vcpu_run(t, vcpu, (&mut tvm_room, &mut vcpu_room))?;
    let run_pa = run_state_pa(v.granule())?;
    let VcpuRun { obj: v_obj, run } = &mut *v;
    if o.state != TvmState::Active || v_obj.exited != 0 || run.running != 0 {
        return Err(Status::arg(StatusCode::ObjectState, 1));
    }
    let context = vcpu.checked_add(CONTEXT_OFFSET).ok_or_else(internal)?;
    let wait = (run.next == Next::DeviceWait).then_some(DeviceWait {
        vdev: Pa(run.vdev),
        op: run.op,
        ticket: run.ticket,
    });
    // A waiting guest has started (its call is waiting): its resume is the operation's
    // result, which `host_call` fetches without the vCPU's lock.
    let resume = if run.started == 0 {
        run.started = 1;
        Resume::Start {
            entry: Gpa(v_obj.entry),
            arg0: v_obj.arg0,
        }
    } else if run.next == Next::Return {
        Resume::Return(CallResult {
            status: run.status,
            out: run.out,
        })
    } else {
        Resume::Continue
    };
    if wait.is_none() {
        run.set_next(After::Continue);
    }
    // Before the save that marks the vCPU running: a failure after it would leave it running
    // with no claim to end the run.
    let gpa_bits = u8::try_from(o.gpa_bits).map_err(|_| internal())?;
    run.running = 1;
    run.exit_record = record.0;
    // Only the run state changes: the object's 48 bytes go back as they were read.
    save_run(t, run_pa, run)?;
    Ok(HostNext::Run(Claim {
        entry: GuestEntry {
            vcpu,
            tvm: v_obj.links().tvm().pa(),
            root: Pa(o.root),
            gpa_bits,
            context,
            exit_record: record,
            resume,
            claimed: Claimed,
        },
        wait,
    }))
}

/// Whether the vCPU in the locked granule is running (VCPU_DESTROY refuses it then: the HAL
/// owns its context area until the run ends).
pub fn is_running(t: &Tsm<'_>, gv: &Locked<'_, '_>) -> Result<bool, Status> {
    Ok(load_run(t, gv, &mut Room::new())?.running != 0)
}

impl Tsm<'_> {
    /// Handles one host call for the run loop: every call goes through [`Tsm::host_dispatch`]; a
    /// successful VCPU_RUN becomes [`HostStep::Enter`] (or an immediate exit when the guest
    /// still waits for the host to carry a device operation).
    pub fn host_call(&self, regs: &CallRegs) -> HostStep {
        let claim = match self.host_dispatch(regs) {
            HostNext::Reply(r) => return HostStep::Reply(r),
            HostNext::Off => return HostStep::Off,
            HostNext::Run(claim) => claim,
        };
        let Some(wait) = claim.wait else {
            return HostStep::Enter(claim.entry);
        };
        let vcpu = claim.entry.vcpu;
        // Checked without the vCPU's lock: the vdevice comes later in the lock order.
        let Some(result) = self.guest_op_result(wait.vdev, wait.ticket) else {
            let l = Leaving::DeviceRequest(wait);
            return HostStep::Reply(self.exit_to_host(vcpu, claim.entry.exit_record, &l));
        };
        match self.with_run(vcpu, |run| {
            run.set_next(After::Continue);
            Ok(())
        }) {
            Ok(()) => HostStep::Enter(GuestEntry {
                resume: Resume::Return(CallResult::status(result)),
                ..claim.entry
            }),
            Err(s) => {
                self.release(vcpu);
                HostStep::Reply(CallResult::status(s))
            }
        }
    }

    /// Handles one trap of the running vCPU `vcpu` (the HAL's, never a guest register); a
    /// call's TVM is found from the vCPU object.
    pub fn guest_exit(&self, vcpu: Pa, exit: GuestExit) -> GuestStep {
        // The HAL runs only vCPUs the core claimed: anything else is a HAL bug; the host's
        // call fails rather than the TSM trusting the vCPU.
        let Ok(Some(record)) = self.running(vcpu) else {
            return GuestStep::ToHost(CallResult::status(internal()));
        };
        self.guest_trap(vcpu, record, exit)
    }

    /// [`Tsm::guest_exit`] for the vCPU the run loop entered with `e`: a call's TVM is the
    /// entry's, found under the claim's locks, with its map's root and GPA width (both fixed at
    /// TVM_CREATE). A vCPU's TVM never changes, and it outlives the
    /// vCPU (TVM_DESTROY refuses a TVM with vCPUs, VCPU_DESTROY a running vCPU), so the vCPU
    /// object need not be read again on every call.
    ///
    /// Nor is the running flag: `e` is the claim itself (only this module makes a
    /// [`GuestEntry`], from a successful claim), and the flag it set is cleared only by
    /// [`Tsm::leave`] of this run, after which the run loop drops `e`. Between the claim and
    /// that release nothing else writes the flag: a second VCPU_RUN and VCPU_DESTROY refuse a
    /// running vCPU, and TVM_DESTROY a TVM with vCPUs. Reading it on every trap (the VCPU
    /// granule locked, the run state decoded: ~230 instructions per guest call) could not fail.
    ///
    /// An exit to the host is only decided here ([`Handled::Leave`] of a [`Leaving`]): the HAL
    /// saves the vCPU into its context area after this returns, and the run loop then ends the
    /// run with [`Tsm::leave`]. *Why:* released here, another CPU's VCPU_RUN could load the
    /// context area before this CPU had saved it, and run the vCPU from stale registers (the
    /// `smp4` scenario caught that on x86_64, whose HAL copies the VMCB state out on leaving).
    /// Deciding here and doing the work there also keeps the guest-call path (a call answered
    /// in place) free of the exit's code and of what it keeps live.
    pub fn guest_exit_entered(&self, e: &GuestEntry, exit: GuestExit) -> Handled<Leaving> {
        match exit {
            // By reference: moving the registers out copied them (a `memcpy`) on every call.
            GuestExit::Call(ref regs) => self.guest_call(
                Ok(GuestCaller {
                    vcpu: e.vcpu,
                    tvm: e.tvm,
                    root: e.root,
                    gpa_bits: e.gpa_bits,
                }),
                regs,
            ),
            GuestExit::Fault {
                syndrome,
                gpa,
                write,
            } => Handled::Leave(Leaving::Fault {
                syndrome,
                gpa,
                write,
            }),
            GuestExit::Interrupt => Handled::Leave(Leaving::Interrupt),
        }
    }

    /// Ends the run of the vCPU the run loop entered with `e`, once the HAL has left it and
    /// saved it (see [`Tsm::guest_exit_entered`]): the exit `l` recorded and the claim released
    /// in one update of the VCPU granule, then the exit record written. Returns the VCPU_RUN
    /// result.
    pub fn leave(&self, e: &GuestEntry, l: &Leaving) -> CallResult {
        self.exit_to_host(e.vcpu, e.exit_record, l)
    }

    /// A trap of `vcpu`, outside a run the run loop entered (running, its run's exit record
    /// `record`): a call's TVM is found from the vCPU object.
    fn guest_trap(&self, vcpu: Pa, record: Pa, exit: GuestExit) -> GuestStep {
        let l = match exit {
            GuestExit::Fault {
                syndrome,
                gpa,
                write,
            } => Leaving::Fault {
                syndrome,
                gpa,
                write,
            },
            GuestExit::Interrupt => Leaving::Interrupt,
            GuestExit::Call(ref regs) => match self.guest_call(self.guest_caller(vcpu), regs) {
                Handled::Reply(r) => return GuestStep::Resume(Resume::Return(r)),
                Handled::Leave(l) | Handled::Finish(l) => l,
            },
        };
        GuestStep::ToHost(self.exit_to_host(vcpu, record, &l))
    }

    // Inline: into the guest-call path of `guest_exit_entered`, where a call answered in place
    // writes its result straight into the step.
    #[inline(always)]
    fn guest_call(&self, caller: Result<GuestCaller, Status>, regs: &CallRegs) -> Handled<Leaving> {
        let mut out = CallResult::ok([0; 4]);
        let Some(next) = self.guest_dispatch_into(caller, regs, &mut out) else {
            let mut r = CallResult::ok([0; 4]);
            crate::dispatch::put(&mut r, &out);
            return Handled::Reply(r);
        };
        Handled::Leave(match next {
            GuestNext::Reply(r) => return Handled::Reply(r),
            GuestNext::DeniedCall { fid } => Leaving::DeniedCall { fid },
            // Final: `leave` marks the vCPU exited, so the HAL need not save it.
            GuestNext::Exit { code } => return Handled::Finish(Leaving::Exit { code }),
            GuestNext::DeviceRequest { vdev, op, ticket } => {
                Leaving::DeviceRequest(DeviceWait { vdev, op, ticket })
            }
        })
    }

    /// Ends the host's VCPU_RUN with the exit `l`, the claim released: one write to the VCPU
    /// granule leaves what the next entry delivers, releases the claim and, for G_EXIT, marks
    /// the vCPU exited; then the record is written to the run's exit record `record`. Returns
    /// the VCPU_RUN result. The record is written without the vCPU's lock (NS buffers come last
    /// in the lock order): it is the host's buffer, not the vCPU's state; the host's VCPU_RUN
    /// completes only after it. Out of line: only exits to the host come here.
    ///
    /// *Why the granule is written without being read:* the caller holds this run's claim
    /// (`running` set by its VCPU_RUN), and until this write clears it nothing but the claiming
    /// CPU writes the object or the run state: a second VCPU_RUN and VCPU_DESTROY refuse a
    /// running vCPU (under this lock), TVM_DESTROY a TVM with vCPUs, and no guest call writes
    /// either. So every field [`Released`] covers is known: `started` is 1 (the claim set it),
    /// `exited` and `exit_code` are 0 unless this is G_EXIT (the claim checked `exited`, and
    /// only this write sets the two, together), the rest is what this exit leaves; the record's
    /// PA is the claim's. The lock is still taken: another CPU's VCPU_RUN reads the object and
    /// run state under it, and must see the release and what the next entry delivers together.
    #[inline(never)]
    fn exit_to_host(&self, vcpu: Pa, record: Pa, l: &Leaving) -> CallResult {
        let (rec, after) = l.record();
        let released = Released::new(l, after);
        let written = self
            .granules
            .lock_in(vcpu, GranuleState::Vcpu)
            .map_err(|_| internal())
            .and_then(|g| {
                let pa = g
                    .pa()
                    .checked_add(RELEASED_OFFSET as u64)
                    .ok_or_else(internal)?;
                self.platform
                    .write(pa, released.as_bytes())
                    .map_err(|_| internal())
            });
        written
            .and_then(|()| self.write_record(record, &rec))
            .map_or_else(CallResult::status, |()| {
                CallResult::ok([u64::from(rec.reason), 0, 0, 0])
            })
    }

    /// Writes the exit record `rec` to the run's record `record`, under the record granule's
    /// lock, its NS state checked there (`InvalidBuffer(2)` otherwise: the host delegated it
    /// meanwhile). *Why not `write_ns`:* its unlocked peek first (`check_ns_buffer`) is for
    /// callers that may hold the buffer's granule themselves and must not wait on their own
    /// lock. No granule is held here (`exit_to_host` dropped the vCPU's; the run loop,
    /// `host_call` and `guest_trap` call in holding none), and `vcpu_run` checked the record's
    /// alignment and that it lies inside one granule when it took the PA this is.
    fn write_record(&self, record: Pa, rec: &VcpuExit) -> Result<(), Status> {
        let bad = Status::arg(StatusCode::InvalidBuffer, 2);
        let _g = self
            .granules
            .lock_in(record.granule_base(), GranuleState::Ns)
            .map_err(|_| bad)?;
        self.platform.write(record, rec.as_bytes()).map_err(|_| bad)
    }

    /// Ends the run (clears `running`); a no-op on a vCPU that is not running.
    fn release(&self, vcpu: Pa) {
        let _ = self.with_run(vcpu, |run| {
            run.running = 0;
            Ok(())
        });
    }

    /// The exit record of the vCPU's current run if it is running (`None` if not): its run
    /// state read under its lock, and not written back.
    fn running(&self, vcpu: Pa) -> Result<Option<Pa>, Status> {
        let gv = self
            .granules
            .lock_in(vcpu, GranuleState::Vcpu)
            .map_err(|_| internal())?;
        let mut room = Room::new();
        let run = load_run(self, &gv, &mut room)?;
        Ok((run.running != 0).then_some(Pa(run.exit_record)))
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
        let mut room = Room::new();
        let run = load_run(self, &gv, &mut room)?;
        let r = f(run)?;
        save_run(self, run_state_pa(&gv)?, run)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
