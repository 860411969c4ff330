//! Call IDs.
//!
//! A call ID is the full 32-bit SMCCC function identifier: fast call (bit 31), SMC64 (bit 30),
//! owner 6 = "Vendor Specific Hypervisor Service" (bits 29:24), function number in bits 15:0.
//! The TSM runs at EL2 in place of a hypervisor, so the vendor-hypervisor owner range is the one
//! SMCCC gives it; host calls use function numbers `0x01xx`, guest calls `0x02xx`. On x86_64 the
//! same 32-bit value goes in `rax` (see [`crate::regs`]).

use crate::addr::{Gpa, Iova, Pa};
use crate::regs::CallRegs;

/// Bits of the function ID that are fixed for every TSM call (fast, SMC64, owner 6).
pub const FID_BASE: u32 = 0xC600_0000;
/// Function numbers of host calls start here.
pub const HOST_BASE: u16 = 0x0100;
/// Function numbers of guest calls start here.
pub const GUEST_BASE: u16 = 0x0200;

/// Who may issue a call. The TSM tells the sides apart by the context that trapped, never by an
/// argument: a host cannot issue a guest call and a guest cannot issue a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    /// The untrusted host (hypervisor / OS driver).
    Host,
    /// A TVM vCPU.
    Guest,
}

/// An argument register as a typed value: the typed addresses and plain words. Decoding is
/// total (every register value is some value of the type); what a value means, and whether it is
/// valid, is the handler's to check, with the argument's index in the status.
pub trait ArgWord: Copy {
    /// The value a register holds.
    fn from_word(raw: u64) -> Self;
    /// The register a value goes in.
    fn to_word(self) -> u64;
    /// Whether the argument names host physical memory (a granule or an NS buffer): what a
    /// host kernel forwarding calls for user space must check the caller may name
    /// ([`CallId::pa_args`]).
    const IS_PA: bool = false;
}

impl ArgWord for u64 {
    fn from_word(raw: u64) -> Self {
        raw
    }
    fn to_word(self) -> u64 {
        self
    }
}

macro_rules! arg_word_for_address {
    ($($t:ty),*) => {$(
        impl ArgWord for $t {
            fn from_word(raw: u64) -> Self {
                Self(raw)
            }
            fn to_word(self) -> u64 {
                self.0
            }
        }
    )*};
}
arg_word_for_address!(Gpa, Iova);

impl ArgWord for Pa {
    const IS_PA: bool = true;
    fn from_word(raw: u64) -> Self {
        Self(raw)
    }
    fn to_word(self) -> u64 {
        self.0
    }
}

/// Bit `i` set when `flags[i]` is.
const fn mask_of(flags: &[bool]) -> u8 {
    let mut mask = 0u8;
    let mut rest = flags;
    let mut bit = 1u8;
    while let [first, tail @ ..] = rest {
        if *first {
            mask |= bit;
        }
        bit = bit.wrapping_shl(1);
        rest = tail;
    }
    mask
}

/// 1 per argument, for counting them in a macro.
macro_rules! one {
    ($x:ident) => {
        1
    };
}

macro_rules! calls {
    (
        host {$(
            $(#[$hdoc:meta])*
            $hname:ident = $hnum:literal, $hty:ident { $( $harg:ident : $hargty:ty ),* $(,)? }, results $hres:literal;
        )*}
        guest {$(
            $(#[$gdoc:meta])*
            $gname:ident = $gnum:literal, $gty:ident { $( $garg:ident : $gargty:ty ),* $(,)? }, results $gres:literal;
        )*}
    ) => {
        /// Every call the TSM implements. Variants carry the spec's names verbatim (the C header and
        /// docs/abi.md use the same ones), hence not camel case.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr(u32)]
        pub enum CallId {
            $( $(#[$hdoc])* $hname = FID_BASE | $hnum, )*
            $( $(#[$gdoc])* $gname = FID_BASE | $gnum, )*
        }

        impl CallId {
            /// Every call, in ID order.
            pub const ALL: &'static [CallId] = &[ $( CallId::$hname, )* $( CallId::$gname, )* ];

            /// Number of argument registers the call reads (the rest must be zero).
            pub const fn arg_count(self) -> usize {
                match self {
                    $( CallId::$hname => 0 $( + one!($harg) )*, )*
                    $( CallId::$gname => 0 $( + one!($garg) )*, )*
                }
            }
            /// Number of result registers the call writes after the status.
            pub const fn result_count(self) -> usize {
                match self {
                    $( CallId::$hname => $hres, )*
                    $( CallId::$gname => $gres, )*
                }
            }
            /// Bit `i` set when argument `i` is a physical address ([`ArgWord::IS_PA`]).
            /// Arguments that may hold a PA or a sentinel (MAP_PRIVATE's `source`) are plain
            /// words here.
            pub const fn pa_args(self) -> u8 {
                match self {
                    $( CallId::$hname => mask_of(&[$( <$hargty as ArgWord>::IS_PA ),*]), )*
                    $( CallId::$gname => mask_of(&[$( <$gargty as ArgWord>::IS_PA ),*]), )*
                }
            }
            /// Which side may issue the call.
            pub const fn caller(self) -> Caller {
                match self {
                    $( CallId::$hname => Caller::Host, )*
                    $( CallId::$gname => Caller::Guest, )*
                }
            }
            /// The upper-case name used in logs and the spec.
            pub const fn name(self) -> &'static str {
                match self {
                    $( CallId::$hname => stringify!($hname), )*
                    $( CallId::$gname => stringify!($gname), )*
                }
            }
            /// The full 32-bit function ID.
            pub const fn fid(self) -> u32 {
                self as u32
            }
        }

        /// The typed arguments of each call, one struct per call, named after it. Field names
        /// are the argument names of docs/abi.md §10–§11, in register order.
        pub mod args {
            #[allow(unused_imports, reason = "each type is used by some calls only")]
            use crate::addr::{Gpa, Iova, Pa};
            $(
                $(#[$hdoc])*
                #[derive(Clone, Copy, PartialEq, Eq, Debug)]
                #[allow(missing_docs, reason = "the fields are the call's arguments, documented on the call")]
                pub struct $hty { $( pub $harg: $hargty, )* }
            )*
            $(
                $(#[$gdoc])*
                #[derive(Clone, Copy, PartialEq, Eq, Debug)]
                #[allow(missing_docs, reason = "the fields are the call's arguments, documented on the call")]
                pub struct $gty { $( pub $garg: $gargty, )* }
            )*
        }

        /// A host call with its typed arguments.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum HostCall {
            $( $(#[$hdoc])* $hty(args::$hty), )*
        }

        /// A guest call with its typed arguments.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum GuestCall {
            $( $(#[$gdoc])* $gty(args::$gty), )*
        }

        impl Call {
            /// The typed form of `id` with argument registers `a`, or the number (1-based) of
            /// the first register past the call's arguments that is not zero (docs/abi.md
            /// §2, "Reserved").
            // Inline: out of line, the call came back through memory (a tag word and the
            // arguments at odd offsets) and the dispatcher's `match` copied the arguments out
            // again (two 38-byte `memcpy`s per guest call, docs/benchmarks.md "perf2").
            #[inline(always)]
            // The unused registers are checked in each call's arm, where their count is a
            // constant: one OR of the unused words and a branch (VERSION: five words), against
            // a compare and branch per register for a count read from the call table (17
            // instructions on aarch64, 36 on x86_64, docs/benchmarks.md "gate2").
            pub fn decode(id: CallId, a: &[u64; MAX_ARGS]) -> Result<Call, u8> {
                #[allow(unused_variables, unused_mut, reason = "calls without arguments read none")]
                let mut words = a.iter().copied();
                Ok(match id {
                    $( CallId::$hname => {
                        unused_zero(a, const { CallId::$hname.arg_count() })?;
                        Call::Host(HostCall::$hty(args::$hty {
                            $( $harg: ArgWord::from_word(words.next().unwrap_or(0)), )*
                        }))
                    } )*
                    $( CallId::$gname => {
                        unused_zero(a, const { CallId::$gname.arg_count() })?;
                        Call::Guest(GuestCall::$gty(args::$gty {
                            $( $garg: ArgWord::from_word(words.next().unwrap_or(0)), )*
                        }))
                    } )*
                })
            }

            /// Which call it is.
            pub const fn id(&self) -> CallId {
                match self {
                    $( Call::Host(HostCall::$hty(_)) => CallId::$hname, )*
                    $( Call::Guest(GuestCall::$gty(_)) => CallId::$gname, )*
                }
            }

            /// The registers that issue it (unused argument registers 0).
            #[allow(unused_variables, reason = "calls without arguments read no field")]
            pub fn encode(&self) -> CallRegs {
                let mut regs = CallRegs { fid: u64::from(self.id().fid()), args: [0; MAX_ARGS] };
                #[allow(unused_mut, reason = "calls without arguments fill none")]
                let mut slots = regs.args.iter_mut();
                match self {
                    $( Call::Host(HostCall::$hty(a)) => {
                        $( if let Some(slot) = slots.next() { *slot = a.$harg.to_word(); } )*
                    } )*
                    $( Call::Guest(GuestCall::$gty(a)) => {
                        $( if let Some(slot) = slots.next() { *slot = a.$garg.to_word(); } )*
                    } )*
                }
                regs
            }
        }
    };
}

/// A call decoded once from its registers: which side may issue it, the call, and its typed
/// arguments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Call {
    /// A host call.
    Host(HostCall),
    /// A guest call.
    Guest(GuestCall),
}

/// A function ID that names no call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownCall(pub u64);

/// Maximum argument registers of any call.
pub const MAX_ARGS: usize = 6;

/// `Err` with the number (1-based) of the first of `a[used..]` that is not zero. `used` is a
/// constant where it is inlined ([`Call::decode`]'s arms), so the test folds to one OR of the
/// unused words. The words are taken by value, never through a slice or a reference to a
/// function out of line: either made the run loop keep the call's registers in a stack slot
/// and spill around every call (floor +37 on aarch64, measured).
#[inline(always)]
fn unused_zero(a: &[u64; MAX_ARGS], used: usize) -> Result<(), u8> {
    let [a1, a2, a3, a4, a5, a6] = *a;
    let rest = match used {
        0 => a1 | a2 | a3 | a4 | a5 | a6,
        1 => a2 | a3 | a4 | a5 | a6,
        2 => a3 | a4 | a5 | a6,
        3 => a4 | a5 | a6,
        4 => a5 | a6,
        5 => a6,
        _ => 0,
    };
    if rest == 0 {
        Ok(())
    } else {
        Err(first_nonzero(a1, a2, a3, a4, a5, a6, used))
    }
}

/// The number (1-based) of the first of `a1`..`a6` past the first `used` that is not zero;
/// [`unused_zero`]'s refusal, out of line and cold (never called with every one of them zero:
/// then it returns 0).
#[cold]
#[inline(never)]
#[allow(
    clippy::too_many_arguments,
    reason = "six registers, by value: see `unused_zero`"
)]
fn first_nonzero(a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64, used: usize) -> u8 {
    (1u8..)
        .zip([a1, a2, a3, a4, a5, a6])
        .skip(used)
        .find(|&(_, w)| w != 0)
        .map_or(0, |(n, _)| n)
}
/// Maximum result registers (after the status) of any call.
pub const MAX_RESULTS: usize = 4;

/// Call numbers (the low 16 bits of a function ID) are below this: host calls are 0x01xx,
/// guest calls 0x02xx.
const CALL_NUMBERS: usize = 0x300;

/// [`CallId::ALL`]'s index of each call number, plus one (0: no call has the number): the
/// decode is one indexed load, not a comparison per call.
static CALL_INDEX: [u8; CALL_NUMBERS] = call_index();

// Compile-time only (`slice::get` is not const): an index out of range, a call number that
// does not fit or a table of more than 255 entries fails the build, not the TSM.
#[allow(clippy::indexing_slicing)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "evaluated only in a static's initializer: `i < ALL.len() < 255` bounds `i + 1`, and an overflow would fail the build"
)]
const fn call_index() -> [u8; CALL_NUMBERS] {
    assert!(CallId::ALL.len() < u8::MAX as usize);
    let mut index = [0u8; CALL_NUMBERS];
    let mut i = 0;
    while i < CallId::ALL.len() {
        let number = (CallId::ALL[i] as u32 & 0xFFFF) as usize;
        assert!(index[number] == 0, "two calls with one number");
        index[number] = (i + 1) as u8;
        i += 1;
    }
    index
}

/// What the dispatcher needs of a call before its handler runs, one table entry per call: one
/// indexed load instead of a `match` over the call IDs per property (which compiles to a tree of
/// compares on the sparse function IDs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CallInfo {
    /// The call.
    pub id: CallId,
    /// [`CallId::caller`].
    pub caller: Caller,
    /// [`CallId::arg_count`].
    pub arg_count: u8,
    /// [`CallId::result_count`].
    pub result_count: u8,
}

/// [`CallInfo`] of each call, in [`CallId::ALL`]'s order (indexed through `CALL_INDEX`).
static CALL_INFO: [CallInfo; CallId::ALL.len()] = call_info();

// Compile-time only, as `call_index`: the table is built from the same `match`es the `CallId`
// methods are, and a count that does not fit a byte fails the build.
#[allow(clippy::indexing_slicing)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "evaluated only in a static's initializer: `i < ALL.len()` bounds `i + 1`"
)]
const fn call_info() -> [CallInfo; CallId::ALL.len()] {
    let mut info = [CallInfo {
        id: CallId::VERSION,
        caller: Caller::Host,
        arg_count: 0,
        result_count: 0,
    }; CallId::ALL.len()];
    let mut i = 0;
    while i < CallId::ALL.len() {
        let id = CallId::ALL[i];
        assert!(id.arg_count() <= MAX_ARGS && id.result_count() <= MAX_RESULTS);
        info[i] = CallInfo {
            id,
            caller: id.caller(),
            arg_count: id.arg_count() as u8,
            result_count: id.result_count() as u8,
        };
        i += 1;
    }
    info
}

impl CallInfo {
    /// The call function ID `fid` names, or `None`.
    pub fn of(fid: u64) -> Option<CallInfo> {
        if fid & !0xFFFF != u64::from(FID_BASE) {
            return None;
        }
        let i = usize::from(*CALL_INDEX.get((fid & 0xFFFF) as usize)?).checked_sub(1)?;
        let e = CALL_INFO.get(i)?;
        // Field by field: each field's load then carries its type's range, so a caller's test
        // for `None` (an `id` outside the calls' range) folds away where the lookup succeeded;
        // with `copied()` the entry was loaded as plain bytes and the test kept (four
        // instructions on every call).
        Some(CallInfo {
            id: e.id,
            caller: e.caller,
            arg_count: e.arg_count,
            result_count: e.result_count,
        })
    }
}

impl TryFrom<u64> for CallId {
    type Error = UnknownCall;
    fn try_from(raw: u64) -> Result<Self, UnknownCall> {
        CallInfo::of(raw).map(|i| i.id).ok_or(UnknownCall(raw))
    }
}

calls! {
    host {
    // ---- host: discovery and platform ----
    /// Negotiate the ABI version. args: requested version. results: status, chosen, lowest, highest.
    VERSION = 0x0100, Version { requested: u64 }, results 3;
    /// Read one feature register. args: register index. results: value.
    FEATURES = 0x0101, Features { index: u64 }, results 1;
    /// Debug console: write a framed log record from an NS buffer. args: buffer PA, length.
    CONSOLE_WRITE = 0x0102, ConsoleWrite { buffer: Pa, len: u64 }, results 0;
    /// Power the platform off, reporting a result code (0 = success). args: code.
    SYSTEM_OFF = 0x0103, SystemOff { code: u64 }, results 0;
    /// Start a CPU that waits in the TSM: it enters the host at `entry` (host memory) with
    /// `arg`. args: CPU (x86_64: APIC ID; aarch64: MPIDR affinity), entry PA, argument.
    HOST_CPU_START = 0x0104, HostCpuStart { cpu: u64, entry: Pa, arg: u64 }, results 0;
    /// The calling CPU leaves the host and waits in the TSM until HOST_CPU_START (or PSCI
    /// CPU_ON) names it again; no return on success.
    HOST_CPU_STOP = 0x0105, HostCpuStop {}, results 0;

    // ---- host: memory ----
    /// Make an NS granule secure and free. args: PA.
    GRANULE_DELEGATE = 0x0110, GranuleDelegate { pa: Pa }, results 0;
    /// Scrub a free secure granule and give it back to the host. args: PA.
    GRANULE_UNDELEGATE = 0x0111, GranuleUndelegate { pa: Pa }, results 0;
    /// Create a TVM in a delegated granule. args: TVM granule, params PA (NS), root table granule.
    TVM_CREATE = 0x0120, TvmCreate { tvm: Pa, params: Pa, root: Pa }, results 0;
    /// NEW -> ACTIVE: no more private maps with content; vCPUs may run. args: TVM.
    TVM_ACTIVATE = 0x0121, TvmActivate { tvm: Pa }, results 0;
    /// Destroy an empty TVM; returns its granules to DELEGATED. args: TVM.
    TVM_DESTROY = 0x0122, TvmDestroy { tvm: Pa }, results 0;
    /// Donate a delegated granule as a translation table at (GPA, level). args: TVM, GPA, level, granule.
    TABLE_CREATE = 0x0123, TableCreate { tvm: Pa, gpa: Gpa, level: u64, table: Pa }, results 0;
    /// Take back an empty translation table at (GPA, level). args: TVM, GPA, level. results: granule.
    TABLE_DESTROY = 0x0124, TableDestroy { tvm: Pa, gpa: Gpa, level: u64 }, results 1;
    /// Map a delegated granule as private memory at GPA, optionally filled from an NS page.
    /// args: TVM, GPA, granule, source PA (or NO_SOURCE), flags.
    MAP_PRIVATE = 0x0125, MapPrivate { tvm: Pa, gpa: Gpa, page: Pa, source: u64, flags: u64 }, results 0;
    /// Map an NS granule as shared memory at GPA. args: TVM, GPA, NS PA, flags.
    MAP_SHARED = 0x0126, MapShared { tvm: Pa, gpa: Gpa, page: Pa, flags: u64 }, results 0;
    /// Unmap a GPA; a private page goes back to DELEGATED (scrubbed). args: TVM, GPA. results: PA.
    UNMAP = 0x0127, Unmap { tvm: Pa, gpa: Gpa }, results 1;

    // ---- host: vCPUs ----
    /// Create a vCPU in a delegated granule. args: TVM, vCPU granule, entry GPA, arg0.
    VCPU_CREATE = 0x0130, VcpuCreate { tvm: Pa, vcpu: Pa, entry: Gpa, arg0: u64 }, results 0;
    /// Run a vCPU until it exits; the exit record is written to an NS buffer. args: vCPU, exit PA.
    /// results: exit reason.
    VCPU_RUN = 0x0131, VcpuRun { vcpu: Pa, exit_record: Pa }, results 1;
    /// Destroy a vCPU. args: vCPU.
    VCPU_DESTROY = 0x0132, VcpuDestroy { vcpu: Pa }, results 0;

    // ---- host: devices ----
    /// Create a PDEV (device security manager behind PF0) in a delegated granule.
    /// args: PDEV granule, params PA (NS).
    PDEV_CREATE = 0x0140, PdevCreate { pdev: Pa, params: Pa }, results 0;
    /// Start the connect operation (with `PdevFlags::SPDM`: the SPDM connect and session first;
    /// then TDISP GET_VERSION / GET_CAPABILITIES). args: PDEV, comm buffer PA, evidence granule
    /// (a DELEGATED granule the PDEV keeps for the device's chain and measurements with SPDM;
    /// 0 without). results: pending operation, PDEV state.
    PDEV_CONNECT = 0x0141, PdevConnect { pdev: Pa, comm: Pa, evidence: Pa }, results 2;
    /// Stop a PDEV (refused while vdevices are bound). args: PDEV.
    PDEV_STOP = 0x0142, PdevStop { pdev: Pa }, results 0;
    /// Destroy a PDEV with no vdevices. args: PDEV.
    PDEV_DESTROY = 0x0143, PdevDestroy { pdev: Pa }, results 0;
    /// End the SPDM session of a READY PDEV with no bound vdevice (END_SESSION, in the session)
    /// and go back to NEW. args: PDEV, comm buffer PA. results: pending operation, PDEV state.
    PDEV_DISCONNECT = 0x0144, PdevDisconnect { pdev: Pa, comm: Pa }, results 2;
    /// Update both directions' session keys of a READY PDEV (SPDM KEY_UPDATE, then
    /// VerifyNewKey). args: PDEV, comm buffer PA. results: pending operation, PDEV state.
    PDEV_KEY_UPDATE = 0x0145, PdevKeyUpdate { pdev: Pa, comm: Pa }, results 2;
    /// Create a secure vIOMMU of a TSM type for a TVM. args: TVM, VIOMMU granule, type, flags.
    VIOMMU_CREATE = 0x0150, ViommuCreate { tvm: Pa, viommu: Pa, vtype: u64, flags: u64 }, results 0;
    /// Destroy a vIOMMU with no vdevices. args: VIOMMU.
    VIOMMU_DESTROY = 0x0151, ViommuDestroy { viommu: Pa }, results 0;
    /// Create the vPCI function: pBDF of the PDEV -> vBDF in the TVM, under the vIOMMU.
    /// args: VDEV granule, PDEV, VIOMMU, params PA (NS).
    VDEV_CREATE = 0x0160, VdevCreate { vdev: Pa, pdev: Pa, viommu: Pa, params: Pa }, results 0;
    /// Start bind (TDISP LOCK_INTERFACE + report fetch). args: VDEV, comm buffer PA.
    /// results: pending operation, VDEV state.
    VDEV_BIND = 0x0161, VdevBind { vdev: Pa, comm: Pa }, results 2;
    /// Start unbind (T=1 DMA off, TDISP STOP_INTERFACE). args: VDEV, comm buffer PA.
    /// results: pending operation, VDEV state.
    VDEV_UNBIND = 0x0162, VdevUnbind { vdev: Pa, comm: Pa }, results 2;
    /// Read a vdevice's state. args: VDEV. results: state, pending operation.
    VDEV_GET_STATE = 0x0163, VdevGetState { vdev: Pa }, results 2;
    /// Destroy an UNLOCKED or ERROR vdevice. args: VDEV.
    VDEV_DESTROY = 0x0164, VdevDestroy { vdev: Pa }, results 0;
    /// Donate a delegated granule to a vdevice's DMA table (the single-stage table the platform
    /// IOMMU walks for its stream). args: VDEV, table granule.
    VDEV_DMA_TABLE = 0x0165, VdevDmaTable { vdev: Pa, table: Pa }, results 0;
    /// Map one 4 KiB page of a LOCKED or RUN vdevice's MMIO, inside its interface report's
    /// ranges, at a private GPA of its TVM, unvalidated; the host loses the page until it is
    /// unmapped. args: VDEV, GPA, host PA of the page.
    VDEV_MMIO_MAP = 0x0166, VdevMmioMap { vdev: Pa, gpa: Gpa, pa: Pa }, results 0;
    /// Remove one private MMIO page of a vdevice from its TVM and give it back to the host.
    /// args: VDEV, GPA. results: the page's PA.
    VDEV_MMIO_UNMAP = 0x0167, VdevMmioUnmap { vdev: Pa, gpa: Gpa }, results 1;
    /// Continue the pending device operation of an object with the device's response in the comm
    /// buffer. args: object (PDEV or VDEV), comm buffer PA. results: pending operation, object state.
    COMMUNICATE = 0x0170, Communicate { object: Pa, comm: Pa }, results 2;
    /// Cancel the pending device operation; the object goes to ERROR (VDEV) or back (PDEV).
    /// args: object.
    OP_CANCEL = 0x0171, OpCancel { object: Pa }, results 0;
    /// Pop one sanitized event of a vdevice into an NS buffer. args: VDEV (or
    /// HOST_DOMAIN_EVENTS), buffer PA. results: events left, overflow count.
    EVENT_READ = 0x0180, EventRead { queue: u64, buffer: Pa }, results 2;
    /// Test builds only: inject a DMA request as if the device issued it.
    /// args: requester ID, PASID (or NO_PASID), IOVA, flags (T bit, write), PCI segment.
    /// results: PA on success.
    TEST_DMA_INJECT = 0x01F0, TestDmaInject { rid: u64, pasid: u64, iova: Iova, flags: u64, segment: u64 }, results 1;

    }
    guest {
    /// Negotiate the ABI version (guest side). args: requested. results: chosen, lowest, highest.
    G_VERSION = 0x0200, GVersion { requested: u64 }, results 3;
    /// Debug console from the guest. args: buffer GPA, length.
    G_CONSOLE_WRITE = 0x0201, GConsoleWrite { buffer: Gpa, len: u64 }, results 0;
    /// The guest is done; the vCPU exits to the host with this code. args: code.
    G_EXIT = 0x0202, GExit { code: u64 }, results 0;
    /// The calling TVM's address space: results: GPA width in bits, first GPA of the shared
    /// half (GPAs below it are private). A guest learns its split here, never from the host.
    G_TVM_INFO = 0x0203, GTvmInfo {}, results 2;
    /// Read a vdevice's info (state, nonce, report digest) into a guest buffer. args: vBDF, buffer GPA.
    G_VDEV_INFO = 0x0210, GVdevInfo { vbdf: u64, buffer: Gpa }, results 0;
    /// Read a portion of the cached interface report. args: vBDF, offset, buffer GPA, length.
    /// results: bytes copied, bytes remaining.
    G_VDEV_REPORT = 0x0211, GVdevReport { vbdf: u64, offset: u64, buffer: Gpa, len: u64 }, results 2;
    /// Accept the device: echo the nonce and report digest read from G_VDEV_INFO.
    /// args: vBDF, buffer GPA holding the echoed evidence.
    G_VDEV_ACCEPT = 0x0212, GVdevAccept { vbdf: u64, evidence: Gpa }, results 0;
    /// Stop the device (T=1 off, back to UNLOCKED via the host). args: vBDF.
    G_VDEV_STOP = 0x0213, GVdevStop { vbdf: u64 }, results 0;
    /// Read a portion of the device's SPDM certificate chain (the chain buffer of the PDEV's
    /// slot, as the device served it and the TSM verified it). args: vBDF, offset, buffer GPA,
    /// length. results: bytes copied, bytes remaining.
    G_VDEV_CERT_CHAIN = 0x0214, GVdevCertChain { vbdf: u64, offset: u64, buffer: Gpa, len: u64 }, results 2;
    /// Read a portion of the device's signed SPDM measurement record (DMTF measurement blocks).
    /// args: vBDF, offset, buffer GPA, length. results: bytes copied, bytes remaining.
    G_VDEV_MEASUREMENTS = 0x0215, GVdevMeasurements { vbdf: u64, offset: u64, buffer: Gpa, len: u64 }, results 2;
    /// Validate the unvalidated MMIO mapping at a GPA as page `page_index` of MMIO range
    /// `range_index` (0-based, in report order) of the vdevice's interface report; the page
    /// becomes accessible (device memory). args: vBDF, GPA, range index, page index.
    G_VDEV_MMIO_VALIDATE = 0x0216, GVdevMmioValidate { vbdf: u64, gpa: Gpa, range_index: u64, page_index: u64 }, results 0;
    /// Attach a stage-1 root for (vdevice, PASID). args: vBDF, PASID, root GPA, flags.
    G_S1_ATTACH = 0x0220, GS1Attach { vbdf: u64, pasid: u64, root: Gpa, config: u64 }, results 0;
    /// Detach the stage-1 root for (vdevice, PASID). args: vBDF, PASID.
    G_S1_DETACH = 0x0221, GS1Detach { vbdf: u64, pasid: u64 }, results 0;
    /// Invalidate cached translations. args: vBDF, PASID (or ALL_PASIDS), IOVA, size (0 = all).
    G_S1_INVALIDATE = 0x0222, GS1Invalidate { vbdf: u64, pasid: u64, iova: Iova, size: u64 }, results 0;
    /// Pop one full event record of an own vdevice into a guest buffer. args: vBDF, buffer GPA.
    /// results: events left, overflow count.
    G_EVENT_READ = 0x0230, GEventRead { vbdf: u64, buffer: Gpa }, results 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_round_trips_through_try_from() {
        for &c in CallId::ALL {
            assert_eq!(CallId::try_from(c.fid() as u64), Ok(c));
            assert!(c.arg_count() <= MAX_ARGS, "{}", c.name());
            assert!(c.result_count() <= MAX_RESULTS, "{}", c.name());
            let num = (c.fid() & 0xFFFF) as u16;
            match c.caller() {
                Caller::Host => assert!((HOST_BASE..GUEST_BASE).contains(&num)),
                Caller::Guest => assert!(num >= GUEST_BASE),
            }
        }
    }

    #[test]
    fn the_call_table_agrees_with_the_call_ids() {
        for &c in CallId::ALL {
            let info = CallInfo::of(c.fid() as u64).expect("every call is in the table");
            assert_eq!(info.id, c);
            assert_eq!(info.caller, c.caller(), "{}", c.name());
            assert_eq!(usize::from(info.arg_count), c.arg_count(), "{}", c.name());
            assert_eq!(
                usize::from(info.result_count),
                c.result_count(),
                "{}",
                c.name()
            );
        }
        // Every other number of the range, and a known number under another owner or with
        // high bits set, names nothing.
        let known = |n: u64| CallId::ALL.iter().any(|c| u64::from(c.fid() & 0xFFFF) == n);
        for n in (0..=0xFFFFu64).filter(|&n| !known(n)) {
            assert_eq!(CallInfo::of(u64::from(FID_BASE) | n), None, "{n:#x}");
        }
        let version = u64::from(CallId::VERSION.fid());
        for raw in [version ^ (1 << 24), version | (1 << 32), version & 0xFFFF] {
            assert_eq!(CallInfo::of(raw), None, "{raw:#x}");
        }
    }

    #[test]
    fn typed_calls_round_trip_through_their_registers() {
        for &c in CallId::ALL {
            let mut args = [0u64; MAX_ARGS];
            for (i, a) in args.iter_mut().enumerate().take(c.arg_count()) {
                *a = 0x1111_0000_0000_0000 * (i as u64 + 1) + c.fid() as u64;
            }
            let Ok(call) = Call::decode(c, &args) else {
                panic!("{}: refused its own arguments", c.name());
            };
            assert_eq!(call.id(), c);
            let regs = call.encode();
            assert_eq!(regs.fid, c.fid() as u64, "{}", c.name());
            assert_eq!(regs.args, args, "{}: argument order", c.name());
        }
        let t = Call::decode(CallId::TVM_CREATE, &[0x1000, 0x2000, 0x3000, 0, 0, 0]);
        assert_eq!(
            t,
            Ok(Call::Host(HostCall::TvmCreate(args::TvmCreate {
                tvm: Pa(0x1000),
                params: Pa(0x2000),
                root: Pa(0x3000)
            })))
        );
    }

    #[test]
    fn decode_names_the_first_unused_register_that_is_not_zero() {
        for &c in CallId::ALL {
            for first in c.arg_count()..MAX_ARGS {
                for also in [None, Some(MAX_ARGS - 1)] {
                    let mut args = [7u64; MAX_ARGS];
                    args[c.arg_count()..].fill(0);
                    args[first] = 1 << first;
                    if let Some(i) = also {
                        args[i] = u64::MAX;
                    }
                    assert_eq!(
                        Call::decode(c, &args),
                        Err(first as u8 + 1),
                        "{} {first}",
                        c.name()
                    );
                }
            }
        }
    }

    #[test]
    fn ids_are_unique_and_smccc_shaped() {
        for (i, a) in CallId::ALL.iter().enumerate() {
            assert_eq!(a.fid() & 0xFF00_0000, FID_BASE, "fast, SMC64, owner 6");
            for b in &CallId::ALL[i + 1..] {
                assert_ne!(a.fid(), b.fid());
            }
        }
    }

    #[test]
    fn pa_args_name_the_typed_addresses() {
        assert_eq!(CallId::VERSION.pa_args(), 0);
        assert_eq!(CallId::GRANULE_DELEGATE.pa_args(), 0b1);
        // TVM, params, root; the GPA and level of TABLE_CREATE are not PAs.
        assert_eq!(CallId::TVM_CREATE.pa_args(), 0b111);
        assert_eq!(CallId::TABLE_CREATE.pa_args(), 0b1001);
        // `source` may be NO_SOURCE: a plain word.
        assert_eq!(CallId::MAP_PRIVATE.pa_args(), 0b101);
        assert_eq!(CallId::EVENT_READ.pa_args(), 0b10);
        assert_eq!(CallId::G_VDEV_INFO.pa_args(), 0);
        for c in CallId::ALL {
            assert_eq!(c.pa_args() >> c.arg_count(), 0, "{}", c.name());
        }
    }

    #[test]
    fn unknown_ids_are_refused() {
        for raw in [
            0u64,
            0x8400_0000,
            FID_BASE as u64,
            (FID_BASE | 0x01FF) as u64,
            u64::MAX,
            (CallId::VERSION.fid() as u64) | (1 << 32),
        ] {
            assert_eq!(CallId::try_from(raw), Err(UnknownCall(raw)));
        }
    }
}
