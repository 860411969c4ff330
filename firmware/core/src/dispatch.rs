//! Call dispatch: decode the call ID, check the caller and the unused argument registers, then
//! run the handler from a static table that has exactly one entry per [`CallId`], in
//! [`CallId::ALL`] order, each with the argument count the ABI gives (checked at compile time).

use tsm_abi::addr::Pa;
use tsm_abi::call::{CallId, Caller, MAX_ARGS};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::state::DeviceOp;
use tsm_abi::status::{Status, StatusCode};

use crate::calls::{comm, device, guest, memory, system, vcpu};
use crate::granule::GranuleState;
use crate::objects::{self, VcpuObj};
use crate::tsm::{Origin, Tsm};

/// The argument registers, copied out of the trapped context once.
pub type Args = [u64; MAX_ARGS];
/// A handler's result: `Ok` carries what the caller gets (success, or a status that comes with
/// results such as `NeedsDeviceIo`); `Err` is a refusal that changed nothing.
pub type Outcome = Result<CallResult, Status>;

/// The guest a guest call comes from, resolved from the trapped vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestCaller {
    /// The vCPU that trapped.
    pub vcpu: Pa,
    /// Its TVM.
    pub tvm: Pa,
}

/// What a handler knows about its caller.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ctx {
    /// `Some` for guest calls.
    pub guest: Option<GuestCaller>,
}

impl Ctx {
    /// The calling guest (guest calls only run with one: the dispatcher checks the side).
    pub fn guest(&self) -> Result<GuestCaller, Status> {
        self.guest.ok_or(Status::new(StatusCode::Denied))
    }
}

type Handler = for<'t, 'a> fn(&'t Tsm<'a>, Ctx, &Args) -> Outcome;

/// One call: its ID, how many argument registers it reads, its handler.
pub struct Entry {
    /// The call.
    pub call: CallId,
    /// Argument registers read (the rest must be zero).
    pub args: usize,
    handler: Handler,
}

macro_rules! table {
    ($( $call:ident : $args:literal => $handler:path, )*) => {
        const TABLE: [Entry; CallId::ALL.len()] = [
            $( Entry { call: CallId::$call, args: $args, handler: $handler }, )*
        ];
    };
}

table! {
    VERSION: 1 => system::version,
    FEATURES: 1 => system::features,
    CONSOLE_WRITE: 2 => system::console_write,
    SYSTEM_OFF: 1 => system::system_off,
    GRANULE_DELEGATE: 1 => memory::granule_delegate,
    GRANULE_UNDELEGATE: 1 => memory::granule_undelegate,
    TVM_CREATE: 3 => memory::tvm_create,
    TVM_ACTIVATE: 1 => memory::tvm_activate,
    TVM_DESTROY: 1 => memory::tvm_destroy,
    TABLE_CREATE: 4 => memory::table_create,
    TABLE_DESTROY: 3 => memory::table_destroy,
    MAP_PRIVATE: 5 => memory::map_private,
    MAP_SHARED: 4 => memory::map_shared,
    UNMAP: 2 => memory::unmap,
    VCPU_CREATE: 4 => vcpu::vcpu_create,
    VCPU_RUN: 2 => vcpu::vcpu_run,
    VCPU_DESTROY: 1 => vcpu::vcpu_destroy,
    PDEV_CREATE: 2 => device::pdev_create,
    PDEV_CONNECT: 2 => comm::pdev_connect,
    PDEV_STOP: 1 => device::pdev_stop,
    PDEV_DESTROY: 1 => device::pdev_destroy,
    VIOMMU_CREATE: 4 => device::viommu_create,
    VIOMMU_DESTROY: 1 => device::viommu_destroy,
    VDEV_CREATE: 4 => device::vdev_create,
    VDEV_BIND: 2 => comm::vdev_bind,
    VDEV_UNBIND: 2 => comm::vdev_unbind,
    VDEV_GET_STATE: 1 => device::vdev_get_state,
    VDEV_DESTROY: 1 => device::vdev_destroy,
    COMMUNICATE: 2 => comm::communicate,
    OP_CANCEL: 1 => comm::op_cancel,
    EVENT_READ: 2 => guest::event_read,
    TEST_DMA_INJECT: 5 => guest::test_dma_inject,
    G_VERSION: 1 => system::version,
    G_CONSOLE_WRITE: 2 => guest::console_write,
    G_EXIT: 1 => guest::exit,
    G_TVM_INFO: 0 => guest::tvm_info,
    G_VDEV_INFO: 2 => guest::vdev_info,
    G_VDEV_REPORT: 4 => guest::vdev_report,
    G_VDEV_ACCEPT: 2 => guest::vdev_accept,
    G_VDEV_STOP: 1 => guest::vdev_stop,
    G_S1_ATTACH: 4 => guest::s1_attach,
    G_S1_DETACH: 2 => guest::s1_detach,
    G_S1_INVALIDATE: 4 => guest::s1_invalidate,
    G_EVENT_READ: 2 => guest::event_read_guest,
}

/// The table is complete, in `CallId::ALL` order, and agrees with the ABI's argument counts.
// Compile-time only (`slice::get` is not const): `i` stays below both lengths, checked equal.
#[allow(clippy::indexing_slicing)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "evaluated only in a const item: `i < t.len()` bounds `i + 1`, and an overflow would fail the build"
)]
const fn table_is_complete(t: &[Entry]) -> bool {
    if t.len() != CallId::ALL.len() {
        return false;
    }
    let mut i = 0;
    while i < t.len() {
        let c = CallId::ALL[i];
        if t[i].call as u32 != c as u32 || t[i].args != c.arg_count() {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(
    table_is_complete(&TABLE),
    "dispatch table must match CallId::ALL and arg_count"
);

/// The dispatch table.
pub static DISPATCH: [Entry; CallId::ALL.len()] = TABLE;

/// Call numbers (the low 16 bits of the function ID) are below this: host calls are
/// 0x01xx, guest calls 0x02xx.
const CALL_NUMBERS: usize = 0x300;

/// The call's number: its index into [`CALL_INDEX`].
fn call_number(call: CallId) -> usize {
    (call.fid() & 0xFFFF) as usize
}

/// [`DISPATCH`]'s entry of each call number, plus one (0: no call has the number).
static CALL_INDEX: [u8; CALL_NUMBERS] = call_index();

// Compile-time only (`slice::get` is not const): an index out of range, a call number that
// does not fit or a table of more than 255 entries fails the build, not the TSM.
#[allow(clippy::indexing_slicing)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "evaluated only in a static's initializer: `i < TABLE.len() < 255` bounds `i + 1`, and an overflow would fail the build"
)]
const fn call_index() -> [u8; CALL_NUMBERS] {
    assert!(TABLE.len() < u8::MAX as usize);
    let mut index = [0u8; CALL_NUMBERS];
    let mut i = 0;
    while i < TABLE.len() {
        let number = (TABLE[i].call as u32 & 0xFFFF) as usize;
        assert!(index[number] == 0, "two calls with one number");
        index[number] = (i + 1) as u8;
        i += 1;
    }
    index
}

/// How a call ended, as the HAL glue needs to know it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Completion {
    /// Write this back to the caller's registers.
    Done(CallResult),
    /// A guest call (G_VDEV_ACCEPT, G_VDEV_STOP) started a device operation the host must
    /// carry: the vCPU exits to the host with `DEVICE_REQUEST {vdev, op}`; when it is run
    /// again after the operation finished, the guest's call returns
    /// [`Tsm::guest_op_result`]`(vdev, ticket)`.
    DeviceRequest {
        /// The VDEV handle.
        vdev: Pa,
        /// START or STOP.
        op: DeviceOp,
        /// The operation's ticket (never shown to the host).
        ticket: u64,
    },
    /// The guest called G_EXIT: the vCPU exits with `GUEST_EXIT(code)` and never runs again.
    GuestExit {
        /// G_EXIT's argument.
        code: u64,
    },
}

impl Tsm<'_> {
    /// Handles one call from `origin`: the entry point of the HAL's trap handlers. Every path
    /// returns a status word; no argument value can make it panic; result registers past the
    /// call's result count are zero.
    pub fn handle_call(&self, origin: Origin, regs: &CallRegs) -> Completion {
        let call = CallId::try_from(regs.fid).ok();
        let r = match self.dispatch(origin, regs) {
            Ok(r) => r,
            Err(s) => CallResult::status(s),
        };
        let needs_io = Status::new(StatusCode::NeedsDeviceIo).to_raw();
        if call == Some(CallId::G_EXIT) && r.status == Status::SUCCESS.to_raw() {
            return Completion::GuestExit { code: r.out[0] };
        }
        if matches!(origin, Origin::Guest { .. })
            && r.status == needs_io
            && let Some(op) = DeviceOp::from_raw(r.out[1])
        {
            return Completion::DeviceRequest {
                vdev: Pa(r.out[0]),
                op,
                ticket: r.out[2],
            };
        }
        let keep = call.map_or(0, CallId::result_count);
        let mut out = [0; 4];
        for (o, v) in out.iter_mut().zip(r.out).take(keep) {
            *o = v;
        }
        Completion::Done(CallResult {
            status: r.status,
            out,
        })
    }

    /// [`Self::handle_call`] flattened into registers. For the two guest completions that
    /// never return to the guest (they end its run instead), the results carry what the run
    /// loop needs: a device request is `NeedsDeviceIo` with results (VDEV, `DeviceOp`, ticket), G_EXIT
    /// is `SUCCESS` with result 1 = the code. Every other result past the call's result count
    /// is zero.
    pub fn handle(&self, origin: Origin, regs: &CallRegs) -> CallResult {
        match self.handle_call(origin, regs) {
            Completion::Done(r) => r,
            Completion::DeviceRequest { vdev, op, ticket } => CallResult {
                status: Status::new(StatusCode::NeedsDeviceIo).to_raw(),
                out: [vdev.0, u64::from(op.raw()), ticket, 0],
            },
            Completion::GuestExit { code } => CallResult::ok([code, 0, 0, 0]),
        }
    }

    fn dispatch(&self, origin: Origin, regs: &CallRegs) -> Outcome {
        let args: Args = regs.args;
        let call = CallId::try_from(regs.fid).map_err(|_| Status::new(StatusCode::NotSupported))?;
        let side = match origin {
            Origin::Host => Caller::Host,
            Origin::Guest { .. } => Caller::Guest,
        };
        if call.caller() != side {
            return Err(Status::new(StatusCode::Denied));
        }
        // Indexed, not searched: guest calls sit at the end of the table, where a linear scan
        // cost ~200 instructions per guest call on aarch64.
        let entry = CALL_INDEX
            .get(call_number(call))
            .and_then(|&i| usize::from(i).checked_sub(1))
            .and_then(|i| DISPATCH.get(i))
            .ok_or(Status::new(StatusCode::NotSupported))?;
        // Argument indices are 1-based, one per argument register.
        const NUMBERS: [u8; tsm_abi::call::MAX_ARGS] = [1, 2, 3, 4, 5, 6];
        for (&number, &a) in NUMBERS.iter().zip(args.iter()).skip(entry.args) {
            if a != 0 {
                return Err(Status::arg(StatusCode::InvalidArgument, number));
            }
        }
        let guest = match origin {
            Origin::Host => None,
            Origin::Guest { vcpu } => Some(self.guest_caller(vcpu)?),
        };
        (entry.handler)(self, Ctx { guest }, &args)
    }

    /// The TVM of the vCPU that trapped. The HAL passes a vCPU the TSM was running, so a
    /// failure here is a HAL bug; the call is refused rather than trusted.
    fn guest_caller(&self, vcpu: Pa) -> Result<GuestCaller, Status> {
        let g = self
            .granules
            .lock_in(vcpu, GranuleState::Vcpu)
            .map_err(|_| Status::new(StatusCode::Denied))?;
        let v: VcpuObj = objects::load(self.platform, &g)?;
        Ok(GuestCaller {
            vcpu,
            tvm: Pa(v.tvm),
        })
    }
}
