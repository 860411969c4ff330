//! Call dispatch: the call ID is decoded once (an indexed table in `tsm-abi`), the caller's side
//! and the unused argument registers are checked, the registers become the call's typed
//! arguments ([`tsm_abi::call::Call`]), and one `match` per side hands them to the handler. The
//! matches are exhaustive over [`HostCall`] and [`GuestCall`], so a call without a handler, or a
//! handler given another call's arguments, does not build.
//!
//! Handlers say what happens next: most reply ([`Reply`]); VCPU_RUN runs a guest
//! ([`HostNext::Run`]); HOST_CPU_STOP and PSCI CPU_OFF take the CPU out of the host
//! ([`HostNext::Off`]); G_EXIT, G_VDEV_ACCEPT and G_VDEV_STOP end the guest's run
//! ([`GuestNext`]). The run loop ([`crate::run`]) acts on that and never looks at call IDs.

use tsm_abi::addr::Pa;
use tsm_abi::call::{Call, CallInfo, Caller, GuestCall, HostCall};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::state::DeviceOp;
use tsm_abi::status::{Status, StatusCode};

use crate::calls::{comm, device, dma, guest, memory, mmio, system, vcpu};
use crate::cpus;
use crate::objects::{Handle, Room, TvmView, VcpuHandle, internal};
use crate::run;
use crate::tsm::{Origin, Tsm};

/// What an ordinary handler returns: the caller's result (success, or a status that comes with
/// results such as `NeedsDeviceIo`), or a refusal that changed nothing.
pub type Reply = Result<CallResult, Status>;

/// What happens after a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostNext {
    /// Complete the call with this result and run the host.
    Reply(CallResult),
    /// VCPU_RUN claimed a vCPU: run it; the call completes when the guest exits to the host.
    Run(run::Claim),
    /// HOST_CPU_STOP / PSCI CPU_OFF: the calling CPU leaves the host and waits in the TSM
    /// (`crate::cpus`); the call does not complete.
    Off,
}

/// What happens after a guest call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestNext {
    /// Complete the call with this result and run the guest on.
    Reply(CallResult),
    /// G_EXIT: the vCPU exits with `GUEST_EXIT(code)` and never runs again.
    Exit {
        /// G_EXIT's argument.
        code: u64,
    },
    /// G_VDEV_ACCEPT / G_VDEV_STOP started a device operation the host must carry: the vCPU
    /// exits with `DEVICE_REQUEST {vdev, op}` and its call completes, once the operation is
    /// over, with [`Tsm::guest_op_result`]`(vdev, ticket)`.
    DeviceRequest {
        /// The VDEV handle.
        vdev: Pa,
        /// START or STOP.
        op: DeviceOp,
        /// The operation's ticket (never shown to the host).
        ticket: u64,
    },
    /// The guest issued a host call: it gets `Denied` when it next runs, and its vCPU exits
    /// with `DENIED_CALL(fid)`.
    DeniedCall {
        /// The function ID it used.
        fid: u64,
    },
}

/// The guest a guest call comes from, resolved from the trapped vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestCaller {
    /// The vCPU that trapped.
    pub vcpu: Pa,
    /// Its TVM.
    pub tvm: Pa,
    /// The TVM's map root and GPA width: fixed at TVM_CREATE and the TVM outlives its running
    /// vCPU (TVM_DESTROY refuses a TVM with vCPUs), so a call reads them from here, without the
    /// TVM's lock. The map they name changes only under that lock.
    pub root: Pa,
    /// See `root`.
    pub gpa_bits: u8,
}

/// What the dispatcher checks before any handler, in this order (docs/abi.md §2): a call ID
/// that names a call, a call of the caller's `side`, zero in every argument register past the
/// call's arguments. Returns the call and its table entry.
// Inline: out of line, its result went through memory and its frame cost a prologue on every
// call.
#[inline(always)]
fn decode(regs: &CallRegs, side: Caller) -> Result<(Call, CallInfo), Refused> {
    let info =
        CallInfo::of(regs.fid).ok_or(Refused::Status(Status::new(StatusCode::NotSupported)))?;
    if info.caller != side {
        return Err(Refused::OtherSide);
    }
    // The unused registers are checked in the call's own arm of `Call::decode`, where their
    // count is a constant.
    let call = Call::decode(info.id, &regs.args)
        .map_err(|number| Refused::Status(Status::arg(StatusCode::InvalidArgument, number)))?;
    Ok((call, info))
}

/// Why [`decode`] refused a call.
enum Refused {
    /// A call of the other side.
    OtherSide,
    /// Anything else, with its status.
    Status(Status),
}

/// Zeroes the result registers past the call's result count (docs/abi.md §2), in place: a
/// result moved in and out of here was copied twice (`memcpy` calls) on every call.
fn keep_results(r: &mut CallResult, info: CallInfo) {
    // Four selects rather than a counted loop or a copy of variable length.
    for (number, o) in (1u8..).zip(r.out.iter_mut()) {
        if number > info.result_count {
            *o = 0;
        }
    }
}

/// `*out = *r`, field by field: as one 40-byte move the compiler calls `memcpy` on aarch64
/// (about 16 instructions with the call, against five loads and stores).
#[inline(always)]
pub(crate) fn put(out: &mut CallResult, r: &CallResult) {
    out.status = r.status;
    let [a, b, c, d] = r.out;
    out.out = [a, b, c, d];
}

impl Tsm<'_> {
    /// One host call: what the HAL's run loop does next. No argument value can make it panic.
    pub fn host_dispatch(&self, regs: &CallRegs) -> HostNext {
        let (call, info) = match decode(regs, Caller::Host) {
            Ok((Call::Host(c), info)) => (c, info),
            Ok((Call::Guest(_), _)) | Err(Refused::OtherSide) => {
                return HostNext::Reply(CallResult::status(denied()));
            }
            // A function ID outside the TSM's calls may be PSCI's (checked only here, off the
            // path of the TSM's own calls).
            Err(Refused::Status(s)) => {
                return crate::psci::call(self, regs)
                    .unwrap_or(HostNext::Reply(CallResult::status(s)));
            }
        };
        self.host(call, info)
            .unwrap_or_else(|s| HostNext::Reply(CallResult::status(s)))
    }

    /// One guest call of the running vCPU `vcpu` (the HAL's, never a guest register).
    pub fn guest_dispatch(&self, vcpu: Pa, regs: &CallRegs) -> GuestNext {
        self.guest_dispatch_as(self.guest_caller(vcpu), regs)
    }

    /// One guest call of `caller` (its vCPU the HAL's, its TVM the one the vCPU was entered
    /// with, or the failure to find it).
    pub(crate) fn guest_dispatch_as(
        &self,
        caller: Result<GuestCaller, Status>,
        regs: &CallRegs,
    ) -> GuestNext {
        let mut out = CallResult::ok([0; 4]);
        match self.guest_dispatch_into(caller, regs, &mut out) {
            Some(next) => next,
            None => GuestNext::Reply(out),
        }
    }

    /// [`Tsm::guest_dispatch_as`] with the reply written into `out`: `None` when the guest
    /// resumes with `out` (a [`GuestNext::Reply`]), else what ends its run. The reply goes
    /// into the caller's room once instead of through `Reply`, `GuestNext` and the run loop's
    /// step, which put the result at different offsets: three 40-byte `memcpy` calls per guest
    /// call on aarch64 (profiled, docs/benchmarks.md).
    // Inline: into the guest-call path, where `out` is the step's own room.
    #[inline(always)]
    pub(crate) fn guest_dispatch_into(
        &self,
        caller: Result<GuestCaller, Status>,
        regs: &CallRegs,
        out: &mut CallResult,
    ) -> Option<GuestNext> {
        let (call, info) = match decode(regs, Caller::Guest) {
            Ok((Call::Guest(c), info)) => (c, info),
            Ok((Call::Host(_), _)) | Err(Refused::OtherSide) => {
                return Some(GuestNext::DeniedCall { fid: regs.fid });
            }
            Err(Refused::Status(s)) => {
                put(out, &CallResult::status(s));
                return None;
            }
        };
        let g = match caller {
            Ok(g) => g,
            Err(s) => {
                put(out, &CallResult::status(s));
                return None;
            }
        };
        self.guest(g, call, info, out)
    }

    /// A call from `origin` flattened into the registers the caller would see, for the tests
    /// and fuzzers that drive the core without a run loop: VCPU_RUN's claim is `SUCCESS`;
    /// G_EXIT is `SUCCESS` with result 1 = the code; a device request is `NeedsDeviceIo` with
    /// results (VDEV, `DeviceOp`, ticket); a host call from a guest is `Denied`.
    pub fn handle(&self, origin: Origin, regs: &CallRegs) -> CallResult {
        match origin {
            Origin::Host => match self.host_dispatch(regs) {
                HostNext::Reply(r) => r,
                HostNext::Run(_) | HostNext::Off => CallResult::ok([0; 4]),
            },
            Origin::Guest { vcpu } => match self.guest_dispatch(vcpu, regs) {
                GuestNext::Reply(r) => r,
                GuestNext::Exit { code } => CallResult::ok([code, 0, 0, 0]),
                GuestNext::DeviceRequest { vdev, op, ticket } => CallResult {
                    status: Status::new(StatusCode::NeedsDeviceIo).to_raw(),
                    out: [vdev.0, u64::from(op.raw()), ticket, 0],
                },
                GuestNext::DeniedCall { .. } => CallResult::status(denied()),
            },
        }
    }

    /// A host call's handler; a reply is trimmed to the call's result count (`info`).
    fn host(&self, call: HostCall, info: CallInfo) -> Result<HostNext, Status> {
        use HostCall::*;
        let reply = match call {
            // Straight to its result: through the common tail below, VERSION's result went to
            // the stack and back to be trimmed to a result count it already keeps
            // (`system::version`).
            Version(a) => return Ok(HostNext::Reply(system::version(a.requested))),
            Features(a) => system::features(self, a),
            ConsoleWrite(a) => system::console_write(self, a),
            SystemOff(a) => system::system_off(self, a),
            HostCpuStart(a) => cpus::host_cpu_start(self, a),
            HostCpuStop(_) => return Ok(HostNext::Off),
            GranuleDelegate(a) => memory::granule_delegate(self, a),
            GranuleUndelegate(a) => memory::granule_undelegate(self, a),
            TvmCreate(a) => memory::tvm_create(self, a),
            TvmActivate(a) => memory::tvm_activate(self, a),
            TvmDestroy(a) => memory::tvm_destroy(self, a),
            TableCreate(a) => memory::table_create(self, a),
            TableDestroy(a) => memory::table_destroy(self, a),
            MapPrivate(a) => memory::map_private(self, a),
            MapShared(a) => memory::map_shared(self, a),
            Unmap(a) => memory::unmap(self, a),
            VcpuCreate(a) => vcpu::vcpu_create(self, a),
            VcpuRun(a) => return run::vcpu_run(self, a),
            VcpuDestroy(a) => vcpu::vcpu_destroy(self, a),
            PdevCreate(a) => device::pdev_create(self, a),
            PdevConnect(a) => comm::pdev_connect(self, a),
            PdevDisconnect(a) => comm::pdev_disconnect(self, a),
            PdevKeyUpdate(a) => comm::pdev_key_update(self, a),
            PdevStop(a) => device::pdev_stop(self, a),
            PdevDestroy(a) => device::pdev_destroy(self, a),
            ViommuCreate(a) => device::viommu_create(self, a),
            ViommuDestroy(a) => device::viommu_destroy(self, a),
            VdevCreate(a) => device::vdev_create(self, a),
            VdevBind(a) => comm::vdev_bind(self, a),
            VdevUnbind(a) => comm::vdev_unbind(self, a),
            VdevGetState(a) => device::vdev_get_state(self, a),
            VdevDestroy(a) => device::vdev_destroy(self, a),
            VdevDmaTable(a) => dma::vdev_dma_table(self, a),
            VdevMmioMap(a) => mmio::vdev_mmio_map(self, a),
            VdevMmioUnmap(a) => mmio::vdev_mmio_unmap(self, a),
            Communicate(a) => comm::communicate(self, a),
            OpCancel(a) => comm::op_cancel(self, a),
            EventRead(a) => guest::event_read(self, a),
            TestDmaInject(a) => guest::test_dma_inject(self, a),
        };
        let mut r = reply?;
        keep_results(&mut r, info);
        Ok(HostNext::Reply(r))
    }

    /// A guest call's handler: its reply (or refusal) goes into `out` (`None`), trimmed to the
    /// call's result count (`info`), or what the run loop does next.
    // Inline: out of line (a closure over it was), its frame cost x86_64's guest call more than
    // the result moves it saved.
    #[inline(always)]
    fn guest(
        &self,
        g: GuestCaller,
        call: GuestCall,
        info: CallInfo,
        out: &mut CallResult,
    ) -> Option<GuestNext> {
        use GuestCall::*;
        // A refusal goes into `out` from its own arm: through one `Result` for every arm, which
        // the out-of-line handlers write in memory, an inlined handler's refusal
        // (G_CONSOLE_WRITE, G_VDEV_INFO) was stored there, read back and decoded (profiled).
        macro_rules! or_refuse {
            ($r:expr) => {
                match $r {
                    Ok(r) => r,
                    Err(s) => {
                        put(out, &CallResult::status(s));
                        return None;
                    }
                }
            };
        }
        let reply = match call {
            // Straight to `out`: its result keeps G_VERSION's count already (as VERSION's in
            // `host`), so the trim below would change nothing.
            GVersion(a) => {
                put(out, &system::version(a.requested));
                return None;
            }
            GConsoleWrite(a) => or_refuse!(guest::console_write(self, g, a)),
            GExit(a) => return Some(or_refuse!(guest::exit(self, g, a))),
            GTvmInfo(_) => or_refuse!(guest::tvm_info(self, g)),
            GVdevInfo(a) => or_refuse!(guest::vdev_info(self, g, a)),
            GVdevReport(a) => or_refuse!(guest::vdev_report(self, g, a)),
            GVdevCertChain(a) => or_refuse!(guest::vdev_cert_chain(self, g, a)),
            GVdevMeasurements(a) => or_refuse!(guest::vdev_measurements(self, g, a)),
            GVdevAccept(a) => match or_refuse!(guest::vdev_accept(self, g, a)) {
                GuestNext::Reply(r) => r,
                next => return Some(next),
            },
            GVdevStop(a) => match or_refuse!(guest::vdev_stop(self, g, a)) {
                GuestNext::Reply(r) => r,
                next => return Some(next),
            },
            GVdevMmioValidate(a) => or_refuse!(guest::vdev_mmio_validate(self, g, a)),
            GS1Attach(a) => or_refuse!(guest::s1_attach(self, g, a)),
            GS1Detach(a) => or_refuse!(guest::s1_detach(self, g, a)),
            GS1Invalidate(a) => or_refuse!(guest::s1_invalidate(self, g, a)),
            GEventRead(a) => or_refuse!(guest::event_read_guest(self, g, a)),
        };
        put(out, &reply);
        keep_results(out, info);
        None
    }

    /// The TVM of the vCPU that trapped, its root and width read from its head. The HAL passes
    /// a vCPU the TSM was running, so a failure here is a HAL bug; the call is refused rather
    /// than trusted. (The run loop's calls take all of it from their claim instead.)
    pub(crate) fn guest_caller(&self, vcpu: Pa) -> Result<GuestCaller, Status> {
        let tvm = self
            .links(VcpuHandle::new(vcpu), 1)
            .map_err(|_| denied())?
            .tvm()
            .pa();
        let mut room = Room::new();
        let o = self
            .lock(Handle::<TvmView>::new(tvm), 1, &mut room)
            .map_err(|_| denied())?;
        Ok(GuestCaller {
            vcpu,
            tvm,
            root: Pa(o.root),
            gpa_bits: u8::try_from(o.gpa_bits).map_err(|_| internal())?,
        })
    }
}

fn denied() -> Status {
    Status::new(StatusCode::Denied)
}
