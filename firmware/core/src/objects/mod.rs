//! TSM objects: plain zerocopy structs stored at the start of their host-donated granule.
//!
//! An object is only ever touched under its granule's lock: [`load`] copies it out, the call
//! changes the copy, [`save`] copies it back. Nothing points into object memory, so a failed
//! call that never saves leaves the object exactly as it was. A handle is the granule's
//! physical address.

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::guest::{DIGEST_SIZE, NONCE_SIZE};
use tsm_abi::params::{PdevParams, VdevParams};
use tsm_abi::status::{Status, StatusCode};
use tsm_hal::platform::PhysMem;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::granule::{GranuleState, Locked};
use crate::viommu::{EventQueue, PasidTable};

/// vdevices one TVM holds (its vBDF table lives in the TVM object).
pub const MAX_VDEVS_PER_TVM: usize = 32;
/// vdevices one PDEV holds (its pBDF table lives in the PDEV object).
pub const MAX_VDEVS_PER_PDEV: usize = 32;
/// vIOMMUs one TVM holds.
pub const MAX_VIOMMUS_PER_TVM: u64 = 8;

/// A struct that lives at the start of a granule in state [`Object::STATE`].
pub trait Object: FromBytes + IntoBytes + Immutable + KnownLayout + Sized {
    /// The granule state that holds this kind of object.
    const STATE: GranuleState;
}

/// Copies the object out of its locked granule.
///
/// Always inlined, like the `lock_*` helpers that call it: as calls, the object (up to 2 KiB)
/// went through three temporaries on its way out (`Ok(obj)`, the caller's `?`, its tuple), a
/// whole-object copy each; inlined, LLVM drops some of them. Hot paths use [`load_into`],
/// which copies nothing but the read (docs/profile-aarch64.md).
#[inline(always)]
pub fn load<O: Object>(mem: &dyn PhysMem, g: &Locked<'_, '_>) -> Result<O, Status> {
    let mut obj = O::new_zeroed();
    load_into(mem, g, &mut obj)?;
    Ok(obj)
}

/// Copies the object out of its locked granule into `obj`, read straight into place.
pub fn load_into<O: Object>(
    mem: &dyn PhysMem,
    g: &Locked<'_, '_>,
    obj: &mut O,
) -> Result<(), Status> {
    debug_assert_eq!(g.state(), O::STATE);
    mem.read(g.pa(), obj.as_mut_bytes()).map_err(|_| internal())
}

/// Copies the object back into its locked granule.
pub fn save<O: Object>(mem: &dyn PhysMem, g: &Locked<'_, '_>, obj: &O) -> Result<(), Status> {
    mem.write(g.pa(), obj.as_bytes()).map_err(|_| internal())
}

/// A platform memory fault on TSM-owned memory. The granule table covers only DRAM the
/// platform maps, so this means a broken platform; the call fails without changing state.
pub fn internal() -> Status {
    Status::new(StatusCode::NotSupported)
}

/// One vBDF → vdevice binding of a TVM.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VbdfSlot {
    /// The VDEV handle.
    pub vdev: u64,
    /// The vBDF.
    pub vbdf: u32,
    /// Non-zero: in use.
    pub used: u32,
}

/// A TVM.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TvmObj {
    /// `TvmState`.
    pub state: u32,
    /// Width of the GPA space.
    pub gpa_bits: u32,
    /// Root table granule.
    pub root: u64,
    /// Most vCPUs.
    pub max_vcpus: u64,
    /// vCPUs created so far (indices are never reused).
    pub vcpus_created: u64,
    /// Live vCPUs.
    pub vcpus: u64,
    /// Live vIOMMUs.
    pub viommus: u64,
    /// Live vdevices.
    pub vdevs: u64,
    /// Private pages mapped.
    pub private_pages: u64,
    /// Shared pages mapped.
    pub shared_pages: u64,
    /// Non-root tables.
    pub tables: u64,
    /// vBDF table.
    pub vbdfs: [VbdfSlot; MAX_VDEVS_PER_TVM],
}

impl Object for TvmObj {
    const STATE: GranuleState = GranuleState::Tvm;
}

/// A vCPU. Its register context is added when the HAL wires VCPU_RUN.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuObj {
    /// Owning TVM.
    pub tvm: u64,
    /// Entry GPA.
    pub entry: u64,
    /// First argument register at entry.
    pub arg0: u64,
    /// Index within the TVM.
    pub index: u64,
    /// Non-zero once the guest called G_EXIT.
    pub exited: u64,
    /// G_EXIT's code.
    pub exit_code: u64,
}

impl Object for VcpuObj {
    const STATE: GranuleState = GranuleState::Vcpu;
}

/// One pBDF → vdevice binding of a PDEV.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PbdfSlot {
    /// The VDEV handle.
    pub vdev: u64,
    /// The pBDF.
    pub pbdf: u32,
    /// Non-zero: in use.
    pub used: u32,
}

/// A PDEV: one device security manager and the requester IDs it manages.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PdevObj {
    /// The validated creation parameters.
    pub params: PdevParams,
    /// `PdevState`.
    pub state: u32,
    /// Pending `DeviceOp`.
    pub op: u32,
    /// Requests sent in the pending operation.
    pub seq: u64,
    /// Connect step (see `requester`).
    pub step: u32,
    /// Negotiated TDISP version byte (0 before READY).
    pub tdisp_version: u32,
    /// DSM capabilities the device reported.
    pub dsm_caps: u32,
    /// LOCK flags the device supports.
    pub lock_flags_supported: u32,
    /// Requests the device supports (bitmap from CAPABILITIES).
    pub req_msgs_supported: [u8; 16],
    /// Live vdevices.
    pub vdevs: u64,
    /// pBDF table.
    pub pbdfs: [PbdfSlot; MAX_VDEVS_PER_PDEV],
}

impl Object for PdevObj {
    const STATE: GranuleState = GranuleState::Pdev;
}

/// A secure vIOMMU.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ViommuObj {
    /// Owning TVM.
    pub tvm: u64,
    /// `ViommuType`.
    pub vtype: u32,
    /// Creation flags (none defined).
    pub flags: u32,
    /// Live vdevices under it.
    pub vdevs: u64,
}

impl Object for ViommuObj {
    const STATE: GranuleState = GranuleState::Viommu;
}

/// A vdevice (vPCI function). The cached TDISP interface report follows it in the same granule
/// ([`REPORT_CAPACITY`] bytes at [`REPORT_OFFSET`]).
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VdevObj {
    /// Owning TVM.
    pub tvm: u64,
    /// Its PDEV.
    pub pdev: u64,
    /// Its vIOMMU.
    pub viommu: u64,
    /// The validated creation parameters.
    pub params: VdevParams,
    /// `VdevState`.
    pub state: u32,
    /// Pending `DeviceOp`.
    pub op: u32,
    /// Requests sent in the pending operation.
    pub seq: u64,
    /// Operation step (see `requester`).
    pub step: u32,
    /// `ViommuType` of its vIOMMU (copied at create: the vIOMMU outlives the vdevice).
    pub viommu_type: u32,
    /// TDISP version negotiated by the PDEV.
    pub tdisp_version: u32,
    /// Non-zero: the TVM accepted the current bind.
    pub accepted: u32,
    /// The device's START_INTERFACE nonce (from LOCK_INTERFACE_RESPONSE).
    pub start_nonce: [u8; 32],
    /// The TSM's accept nonce for the guest (fresh at every LOCKED).
    pub accept_nonce: [u8; NONCE_SIZE],
    /// SHA-256 of the cached report.
    pub report_digest: [u8; DIGEST_SIZE],
    /// Report fetches so far.
    pub report_counter: u64,
    /// Bytes of report cached (received so far while fetching).
    pub report_len: u32,
    /// Total report length the device announced (0 before the first portion).
    pub report_total: u32,
    /// Length asked in the outstanding GET_DEVICE_INTERFACE_REPORT.
    pub report_asked: u32,
    /// The status code the guest's operation ended with, [`GUEST_OP_PENDING`] while it runs
    /// (then the pending operation is the guest's: one operation at a time).
    pub guest_result: u32,
    /// The ticket of the guest call (accept/stop) whose result `guest_result` holds, 0 if none.
    /// Tickets are never reused ([`Tsm::guest_ticket`](crate::tsm::Tsm)), so the result reaches
    /// only the vCPU that started the operation on this incarnation of the vdevice.
    pub guest_ticket: u64,
    /// Stage-1 roots per PASID.
    pub pasids: PasidTable,
    /// Faults of this vdevice, full records for the guest.
    pub events: EventQueue,
    /// The same faults, popped by the host as sanitized records.
    pub host_events: EventQueue,
}

impl Object for VdevObj {
    const STATE: GranuleState = GranuleState::Vdev;
}

/// `VdevObj::guest_result` while the guest's operation runs.
pub const GUEST_OP_PENDING: u32 = u32::MAX;

/// Where the cached interface report starts in a VDEV granule.
pub const REPORT_OFFSET: u64 = size_of::<VdevObj>().next_multiple_of(8) as u64;
/// The longest interface report the TSM caches (FEATURES `REPORT_LIMITS`).
pub const REPORT_CAPACITY: u64 = GRANULE_SIZE - REPORT_OFFSET;

const _: () = assert!(size_of::<TvmObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(size_of::<VcpuObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(size_of::<PdevObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(size_of::<ViommuObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(REPORT_OFFSET < GRANULE_SIZE && REPORT_CAPACITY >= 1024);

/// The handle of a locked object granule.
pub fn handle(g: &Locked<'_, '_>) -> u64 {
    g.pa().0
}

/// The PA an object field names.
pub fn pa(raw: u64) -> Pa {
    Pa(raw)
}
