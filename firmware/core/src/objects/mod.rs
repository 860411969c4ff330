//! TSM objects: plain zerocopy structs stored at the start of their host-donated granule.
//!
//! An object is only ever touched under its granule's lock, through a [`Guard`]: locking copies
//! it out into a [`Room`] in the handler's frame and decodes it there, the call changes the
//! copy, [`Guard::save`] checks the object's invariants and copies it back. Nothing points into
//! object memory, so a failed call that never saves leaves the object exactly as it was. A
//! [`Handle`] is the granule's physical address, typed by the kind of object it names.
//!
//! States, pending operations and vIOMMU types are fields of their ABI enum types
//! (`#[repr(u32)]`, the wire value): an object is decoded once, when it is loaded
//! (`TryFromBytes`), and handlers `match` on and store enums. Object granules are TSM memory,
//! so a value that does not decode is a TSM bug: the load fails with [`internal`], never a
//! panic.

use core::mem::offset_of;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::guest::{DIGEST_SIZE, NONCE_SIZE, SPDM_DIGEST_SIZE};
use tsm_abi::params::{PdevParams, VdevParams};

use tsm_abi::state::{DeviceOp, PdevState, TvmState, VdevState};
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::viommu::ViommuType;
use tsm_platform::PhysMem;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::granule::{GranuleState, Locked};
use crate::viommu::{EventQueue, HostEventQueue, PasidTable};

/// vdevices one TVM holds (its vBDF table lives in the TVM object).
pub const MAX_VDEVS_PER_TVM: usize = 32;
/// vdevices one PDEV holds (its pBDF table lives in the PDEV object).
pub const MAX_VDEVS_PER_PDEV: usize = 32;
/// vIOMMUs one TVM holds.
pub const MAX_VIOMMUS_PER_TVM: u64 = 8;

mod guard;

pub use guard::{Guard, Handle, Room};
pub(crate) use guard::{TvmSlots, VdevFamily, VdevFamilyRooms, save_new, save_new_vdev};

/// A TVM handle.
pub type TvmHandle = Handle<TvmObj>;
/// A VCPU handle.
pub type VcpuHandle = Handle<VcpuObj>;
/// A PDEV handle.
pub type PdevHandle = Handle<PdevObj>;
/// A VIOMMU handle.
pub type ViommuHandle = Handle<ViommuObj>;
/// A VDEV handle.
pub type VdevHandle = Handle<VdevObj>;

/// A struct the TSM keeps in its own memory and decodes whenever it reads it
/// ([`read_decoded`]): an object, or a vCPU's run state.
pub trait Stored: TryFromBytes + IntoBytes + Immutable + KnownLayout + Sized {
    /// Its bytes as 8-byte words (`[u64; size_of::<Self>() / 8]`): what a [`Room`] holds until
    /// it is decoded, aligned like it.
    type Words: FromBytes + IntoBytes + Immutable + KnownLayout;
}

/// A struct that lives at the start of a granule in state [`Object::STATE`].
pub trait Object: Stored {
    /// The granule state that holds this kind of object.
    const STATE: GranuleState;

    /// What holds for the object between calls, checked whenever it is written back (TF-RMM
    /// asserts its granule invariants at every unlock). A violation is a TSM bug, never a
    /// consequence of host or guest input: the write is refused (a debug build panics first).
    fn invariants(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

/// An object that names parent objects. The links lead the object's layout, so a call that
/// starts from the child can read them alone ([`Tsm::links`](crate::tsm::Tsm)) to learn which
/// parents to lock first.
pub trait Child: Object {
    /// The parent handles, as laid out at the start of the object.
    type Links: FromBytes + IntoBytes + Immutable + KnownLayout + PartialEq;
    /// The object's links.
    fn links(&self) -> Self::Links;
}

/// The TVM link leading a VCPU or VIOMMU.
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TvmLink {
    tvm: u64,
}

impl TvmLink {
    /// The TVM.
    pub fn tvm(&self) -> TvmHandle {
        Handle::new(Pa(self.tvm))
    }

    /// The TVM, for a call that locks its head alone.
    pub fn tvm_head(&self) -> Handle<TvmHead> {
        Handle::new(Pa(self.tvm))
    }
}

/// The links leading a VDEV.
#[derive(Clone, Copy, PartialEq, Eq, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VdevLinks {
    tvm: u64,
    pdev: u64,
    viommu: u64,
}

impl VdevLinks {
    /// The links of a vdevice of `tvm`, on `pdev`, under `viommu`.
    pub fn new(tvm: TvmHandle, pdev: PdevHandle, viommu: ViommuHandle) -> Self {
        VdevLinks {
            tvm: tvm.pa().0,
            pdev: pdev.pa().0,
            viommu: viommu.pa().0,
        }
    }
    /// The TVM.
    pub fn tvm(&self) -> TvmHandle {
        Handle::new(Pa(self.tvm))
    }
    /// The PDEV.
    pub fn pdev(&self) -> PdevHandle {
        Handle::new(Pa(self.pdev))
    }
    /// The PDEV, for a call that locks its head alone.
    pub fn pdev_head(&self) -> Handle<PdevHead> {
        Handle::new(Pa(self.pdev))
    }
    /// The vIOMMU.
    pub fn viommu(&self) -> ViommuHandle {
        Handle::new(Pa(self.viommu))
    }
}

/// Copies the object out of its locked granule into `room` and decodes it there.
fn load_into<'r, O: Object>(
    mem: &dyn PhysMem,
    g: &Locked<'_, '_>,
    room: &'r mut Room<O>,
) -> Result<&'r mut O, Status> {
    debug_assert_eq!(g.state(), O::STATE);
    read_decoded(mem, g.pa(), room)
}

/// Copies the `T` at `pa` into `room` and decodes it there, in place: the read is the only
/// copy. A state or other typed field that does not decode fails like a memory fault
/// ([`internal`]): it is TSM memory, so that is a TSM bug. Under the granule's lock for
/// handlers ([`Tsm::lock`](crate::tsm::Tsm), the run state); without it for the translation
/// engine's snapshots and the invariant checker.
pub fn read_decoded<'r, T: Stored>(
    mem: &dyn PhysMem,
    pa: Pa,
    room: &'r mut Room<T>,
) -> Result<&'r mut T, Status> {
    decode(room.read(mem, pa)?)
}

/// Decodes the `T` read into a room ([`Room::read`]), in place.
fn decode<T: Stored>(bytes: &mut [u8]) -> Result<&mut T, Status> {
    T::try_mut_from_bytes(bytes).map_err(|_| internal())
}

/// Writes an object to its granule at `pa`, if its invariants hold.
fn write<O: Object>(mem: &dyn PhysMem, pa: Pa, obj: &O) -> Result<(), Status> {
    debug_check_invariants(obj);
    mem.write(pa, obj.as_bytes()).map_err(|_| internal())
}

/// Stops a debug build on an object about to be stored whose invariants do not hold.
///
/// A violation is a TSM bug, never the result of host or guest input: every debug build (unit,
/// model and fuzz tests, the QEMU scenarios) checks at every save and stops on one, as TF-RMM
/// asserts its granule invariants at unlock in debug builds. Release images skip the check:
/// its slot scans cost ~900 instructions on VDEV_CREATE's four saves.
fn debug_check_invariants<O: Object>(obj: &O) {
    debug_assert!(
        obj.invariants().is_ok(),
        "{}: {:?}",
        core::any::type_name::<O>(),
        obj.invariants()
    );
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

/// An object whose calls mostly touch its leading part reaches that part's fields directly
/// (`obj.state`), so the handlers read the same whether they locked the head or the whole.
macro_rules! reaches_head {
    ($obj:ty => $head:ty) => {
        impl core::ops::Deref for $obj {
            type Target = $head;
            fn deref(&self) -> &$head {
                &self.head
            }
        }

        impl core::ops::DerefMut for $obj {
            fn deref_mut(&mut self) -> &mut $head {
                &mut self.head
            }
        }
    };
}

/// A TVM: its [`TvmHead`], then its vBDF table, which only the vdevice calls need: the calls
/// that change counts alone (TVM_DESTROY, VCPU_CREATE, VCPU_DESTROY) lock the head.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TvmObj {
    /// State, root and counts.
    pub head: TvmHead,
    /// vBDF table.
    pub vbdfs: [VbdfSlot; MAX_VDEVS_PER_TVM],
}

reaches_head!(TvmObj => TvmHead);

/// The leading part of a [`TvmObj`].
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TvmHead {
    /// Its state.
    pub state: TvmState,
    /// Width of the GPA space.
    pub gpa_bits: u32,
    /// Root table granule.
    pub root: u64,
    /// Live vdevices.
    pub vdevs: u64,
    /// Most vCPUs.
    pub max_vcpus: u64,
    /// vCPUs created so far (indices are never reused).
    pub vcpus_created: u64,
    /// Live vCPUs.
    pub vcpus: u64,
    /// Live vIOMMUs.
    pub viommus: u64,
    /// Private pages mapped.
    pub private_pages: u64,
    /// Shared pages mapped.
    pub shared_pages: u64,
    /// Non-root tables.
    pub tables: u64,
}

/// The leading part of a [`TvmHead`], all a guest call made outside the run loop reads of its
/// TVM ([`crate::Tsm::guest_caller`]): the map a buffer's GPA is looked up in and its width.
/// A copy of 16 bytes instead of the head's 88 and their zeroing (a `memset` call; profiled,
/// docs/benchmarks.md). It is never saved: no guest call changes its TVM.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TvmView {
    /// [`TvmHead::state`].
    pub state: TvmState,
    /// [`TvmHead::gpa_bits`].
    pub gpa_bits: u32,
    /// [`TvmHead::root`].
    pub root: u64,
}

/// A free vBDF slot.
const FREE_VBDF: VbdfSlot = VbdfSlot {
    vdev: 0,
    vbdf: 0,
    used: 0,
};

impl TvmObj {
    /// A NEW TVM with no children and nothing mapped.
    pub fn new(root: Pa, gpa_bits: u8, max_vcpus: u64) -> Self {
        TvmObj {
            head: TvmHead {
                state: TvmState::New,
                gpa_bits: u32::from(gpa_bits),
                root: root.0,
                max_vcpus,
                vcpus_created: 0,
                vcpus: 0,
                viommus: 0,
                vdevs: 0,
                private_pages: 0,
                shared_pages: 0,
                tables: 0,
            },
            vbdfs: [FREE_VBDF; MAX_VDEVS_PER_TVM],
        }
    }
}

impl TvmObj {
    /// Frees the vBDF slot of `vdev`: the last slot in use moves into it, so the slots in use
    /// stay the first `vdevs` ([`TvmObj::invariants`]), which VDEV_CREATE reads alone.
    pub fn release_vbdf(&mut self, vdev: u64) -> Result<(), Status> {
        release_slot(
            &mut self.head.vdevs,
            &mut self.vbdfs,
            |s| s.vdev == vdev,
            FREE_VBDF,
        )
    }
}

/// Frees the slot `is_it` picks among the first `*used` of `slots`, moving the last in use into
/// it, and counts it off `used`. No such slot is a TSM bug (the internal status).
fn release_slot<S: Copy>(
    used: &mut u64,
    slots: &mut [S],
    is_it: impl Fn(&S) -> bool,
    free: S,
) -> Result<(), Status> {
    let n = usize::try_from(*used).map_err(|_| internal())?;
    let last = n.checked_sub(1).ok_or_else(internal)?;
    let in_use = slots.get_mut(..n).ok_or_else(internal)?;
    let i = in_use.iter().position(is_it).ok_or_else(internal)?;
    in_use.swap(i, last);
    if let Some(s) = in_use.get_mut(last) {
        *s = free;
    }
    *used = last as u64;
    Ok(())
}

/// Whether exactly the first `used` of `slots` are in use.
fn slots_packed<S>(used: u64, slots: &[S], in_use: impl Fn(&S) -> bool) -> bool {
    usize::try_from(used).is_ok_and(|n| {
        n <= slots.len() && slots.iter().enumerate().all(|(i, s)| in_use(s) == (i < n))
    })
}

impl Stored for TvmObj {
    type Words = [u64; size_of::<TvmObj>() / 8];
}

impl Stored for TvmHead {
    type Words = [u64; size_of::<TvmHead>() / 8];
}

impl Stored for TvmView {
    type Words = [u64; size_of::<TvmView>() / 8];
}

impl Object for TvmView {
    const STATE: GranuleState = GranuleState::Tvm;
}

impl Object for TvmHead {
    const STATE: GranuleState = GranuleState::Tvm;

    fn invariants(&self) -> Result<(), &'static str> {
        if self.vcpus > self.vcpus_created || self.vcpus_created > self.max_vcpus {
            return Err("vcpus <= vcpus_created <= max_vcpus");
        }
        Ok(())
    }
}

impl Object for TvmObj {
    const STATE: GranuleState = GranuleState::Tvm;

    fn invariants(&self) -> Result<(), &'static str> {
        self.head.invariants()?;
        if !slots_packed(self.vdevs, &self.vbdfs, |s| s.used != 0) {
            return Err("the first `vdevs` vBDF slots in use, one per vdevice");
        }
        Ok(())
    }
}

/// A vCPU. Its register context is added when the HAL wires VCPU_RUN.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
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

impl Stored for VcpuObj {
    type Words = [u64; size_of::<VcpuObj>() / 8];
}

impl Object for VcpuObj {
    const STATE: GranuleState = GranuleState::Vcpu;
}

impl Child for VcpuObj {
    type Links = TvmLink;
    fn links(&self) -> TvmLink {
        TvmLink { tvm: self.tvm }
    }
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

/// A PDEV: its [`PdevHead`], then its pBDF table, which only the vdevice lifecycle needs: the
/// device-I/O calls (connect, bind, COMMUNICATE) lock the head.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PdevObj {
    /// Parameters, state, operation and session.
    pub head: PdevHead,
    /// pBDF table.
    pub pbdfs: [PbdfSlot; MAX_VDEVS_PER_PDEV],
}

reaches_head!(PdevObj => PdevHead);

/// The leading part of a [`PdevObj`]: one device security manager and the requester IDs it
/// manages.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PdevHead {
    /// The validated creation parameters.
    pub params: PdevParams,
    /// Its state.
    pub state: PdevState,
    /// The pending operation.
    pub op: DeviceOp,
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
    /// With `PdevFlags::SPDM`, the EVIDENCE granule holding the device's certificate chain and
    /// measurement record (from PDEV_CONNECT until the PDEV goes back to NEW or is
    /// destroyed); 0 otherwise.
    pub evidence: u64,
    /// The object (this PDEV or one of its VDEVs) whose request is out in the SPDM session,
    /// 0 while none is: the session carries one request at a time, so a second object waits.
    pub session_owner: u64,
}

/// A free pBDF slot.
const FREE_PBDF: PbdfSlot = PbdfSlot {
    vdev: 0,
    pbdf: 0,
    used: 0,
};

impl PdevObj {
    /// A NEW PDEV with no vdevices, for validated `params`.
    pub fn new(params: PdevParams) -> Self {
        PdevObj {
            head: PdevHead {
                params,
                state: PdevState::New,
                op: DeviceOp::None,
                seq: 0,
                step: 0,
                tdisp_version: 0,
                dsm_caps: 0,
                lock_flags_supported: 0,
                req_msgs_supported: [0; 16],
                vdevs: 0,
                evidence: 0,
                session_owner: 0,
            },
            pbdfs: [FREE_PBDF; MAX_VDEVS_PER_PDEV],
        }
    }
}

impl PdevObj {
    /// Frees the pBDF slot of `vdev` as [`TvmObj::release_vbdf`] does.
    pub fn release_pbdf(&mut self, vdev: u64) -> Result<(), Status> {
        release_slot(
            &mut self.head.vdevs,
            &mut self.pbdfs,
            |s| s.vdev == vdev,
            FREE_PBDF,
        )
    }
}

impl Stored for PdevObj {
    type Words = [u64; size_of::<PdevObj>() / 8];
}

impl Stored for PdevHead {
    type Words = [u64; size_of::<PdevHead>() / 8];
}

impl Object for PdevHead {
    const STATE: GranuleState = GranuleState::Pdev;

    fn invariants(&self) -> Result<(), &'static str> {
        let allowed = match self.state {
            PdevState::Connecting => self.op == DeviceOp::Connect,
            PdevState::Ready => matches!(
                self.op,
                DeviceOp::None | DeviceOp::KeyUpdate | DeviceOp::Disconnect
            ),
            _ => self.op == DeviceOp::None,
        };
        if !allowed {
            return Err("CONNECT pending exactly while CONNECTING, session operations only READY");
        }
        if self.session_owner != 0 && self.params.pdev_flags().is_empty() {
            return Err("a session owner only with SPDM");
        }
        Ok(())
    }
}

impl Object for PdevObj {
    const STATE: GranuleState = GranuleState::Pdev;

    fn invariants(&self) -> Result<(), &'static str> {
        self.head.invariants()?;
        if !slots_packed(self.vdevs, &self.pbdfs, |s| s.used != 0) {
            return Err("the first `vdevs` pBDF slots in use, one per vdevice");
        }
        Ok(())
    }
}

/// A secure vIOMMU.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ViommuObj {
    /// Owning TVM.
    pub tvm: u64,
    /// Its type (a TSM type: invariant 6).
    pub vtype: ViommuType,
    /// Creation flags (none defined).
    pub flags: u32,
    /// Live vdevices under it.
    pub vdevs: u64,
}

impl Stored for ViommuObj {
    type Words = [u64; size_of::<ViommuObj>() / 8];
}

impl Object for ViommuObj {
    const STATE: GranuleState = GranuleState::Viommu;
}

impl Child for ViommuObj {
    type Links = TvmLink;
    fn links(&self) -> TvmLink {
        TvmLink { tvm: self.tvm }
    }
}

/// A vdevice (vPCI function). Its private MMIO pages follow it in the same granule
/// ([`crate::private_mmio::MmioMaps`] at [`MMIO_MAPS_OFFSET`]), then its DMA tables
/// ([`crate::dma_tables::DmaTables`] at [`DMA_TABLES_OFFSET`]), and the cached TDISP interface
/// report ends it ([`REPORT_CAPACITY`] bytes at [`REPORT_OFFSET`]): none is copied when the
/// VDEV is locked.
///
/// Its [`VdevHead`] leads it, then the vIOMMU tables, which start all zero: VDEV_CREATE zeroes
/// the object's bytes in the granule and writes only the head, instead of building the whole
/// object (1.8 KiB) in its frame and copying it (docs/benchmarks.md, "Handlers").
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VdevObj {
    /// Everything but the vIOMMU tables.
    pub head: VdevHead,
    /// Stage-1 roots per PASID.
    pub pasids: PasidTable,
    /// Faults of this vdevice, full records for the guest.
    pub events: EventQueue,
    /// The same faults as the host may know them, popped by the host as sanitized records.
    pub host_events: HostEventQueue,
}

reaches_head!(VdevObj => VdevHead);

/// The leading part of a [`VdevObj`]: its links, state, operation and bind results.
///
/// Laid out for VDEV_BIND, which locks only the leading [`VdevBindHead`] (everything up to
/// `guest_result`) and zeroes the results of an earlier bind, which follow it contiguously
/// ([`BIND_CLEARED`]), in one write: 200 bytes less read and written back than the whole
/// head (docs/benchmarks.md, `vbind5`). The fields no bind touches close it.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VdevHead {
    /// Owning TVM.
    pub tvm: u64,
    /// Its PDEV.
    pub pdev: u64,
    /// Its vIOMMU.
    pub viommu: u64,
    /// The validated creation parameters.
    pub params: VdevParams,
    /// Its state.
    pub state: VdevState,
    /// The pending operation.
    pub op: DeviceOp,
    /// Requests sent in the pending operation.
    pub seq: u64,
    /// Operation step (see `requester`).
    pub step: u32,
    /// The type of its vIOMMU (copied at create: the vIOMMU outlives the vdevice).
    pub viommu_type: ViommuType,
    /// TDISP version negotiated by the PDEV.
    pub tdisp_version: u32,
    /// Non-zero: the TVM accepted the current bind.
    pub accepted: u32,
    /// The TSM's accept nonce for the guest (fresh at every LOCKED).
    pub accept_nonce: [u8; NONCE_SIZE],
    /// Length asked in the outstanding GET_DEVICE_INTERFACE_REPORT.
    pub report_asked: u32,
    /// The status code the guest's operation ended with, [`GUEST_OP_PENDING`] while it runs
    /// (then the pending operation is the guest's: one operation at a time).
    pub guest_result: u32,
    /// The PDEV's evidence granule when the bind took its digests; non-zero exactly when the
    /// current bind ran in the PDEV's SPDM session (`DEVICE_AUTHENTICATED`).
    pub evidence: u64,
    /// Bytes of certificate chain in the PDEV's evidence granule (0 unless authenticated).
    pub chain_len: u32,
    /// Bytes of measurement record in the PDEV's evidence granule (0 unless authenticated).
    pub measurements_len: u32,
    /// SHA-384 of the certificate chain, taken at bind.
    pub chain_digest: [u8; SPDM_DIGEST_SIZE],
    /// SHA-384 of the measurement record, taken at bind.
    pub measurements_digest: [u8; SPDM_DIGEST_SIZE],
    /// The device's START_INTERFACE nonce (from LOCK_INTERFACE_RESPONSE).
    pub start_nonce: [u8; 32],
    /// SHA-256 of the cached report.
    pub report_digest: [u8; DIGEST_SIZE],
    /// Bytes of report cached (received so far while fetching).
    pub report_len: u32,
    /// Total report length the device announced (0 before the first portion).
    pub report_total: u32,
    /// Report fetches so far.
    pub report_counter: u64,
    /// The ticket of the guest call (accept/stop) whose result `guest_result` holds, 0 if none.
    /// Tickets are never reused ([`Tsm::guest_ticket`](crate::tsm::Tsm)), so the result reaches
    /// only the vCPU that started the operation on this incarnation of the vdevice.
    pub guest_ticket: u64,
}

/// The leading part of a [`VdevHead`], all VDEV_BIND reads and writes of it; the bind results
/// after it ([`BIND_CLEARED`]) it zeroes without reading them
/// ([`Guard::save_bind`](guard::Guard)). Field for field the start of the head.
#[derive(Clone, Debug, TryFromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VdevBindHead {
    /// [`VdevHead::tvm`].
    pub tvm: u64,
    /// [`VdevHead::pdev`].
    pub pdev: u64,
    /// [`VdevHead::viommu`].
    pub viommu: u64,
    /// [`VdevHead::params`].
    pub params: VdevParams,
    /// [`VdevHead::state`].
    pub state: VdevState,
    /// [`VdevHead::op`].
    pub op: DeviceOp,
    /// [`VdevHead::seq`].
    pub seq: u64,
    /// [`VdevHead::step`].
    pub step: u32,
    /// [`VdevHead::viommu_type`].
    pub viommu_type: ViommuType,
    /// [`VdevHead::tdisp_version`].
    pub tdisp_version: u32,
    /// [`VdevHead::accepted`].
    pub accepted: u32,
    /// [`VdevHead::accept_nonce`].
    pub accept_nonce: [u8; NONCE_SIZE],
    /// [`VdevHead::report_asked`].
    pub report_asked: u32,
    /// [`VdevHead::guest_result`].
    pub guest_result: u32,
}

// Field for field the start of `VdevHead`, up to the bind results.
const _: () = assert!(
    offset_of!(VdevBindHead, tvm) == offset_of!(VdevHead, tvm)
        && offset_of!(VdevBindHead, pdev) == offset_of!(VdevHead, pdev)
        && offset_of!(VdevBindHead, viommu) == offset_of!(VdevHead, viommu)
        && offset_of!(VdevBindHead, params) == offset_of!(VdevHead, params)
        && offset_of!(VdevBindHead, state) == offset_of!(VdevHead, state)
        && offset_of!(VdevBindHead, op) == offset_of!(VdevHead, op)
        && offset_of!(VdevBindHead, seq) == offset_of!(VdevHead, seq)
        && offset_of!(VdevBindHead, step) == offset_of!(VdevHead, step)
        && offset_of!(VdevBindHead, viommu_type) == offset_of!(VdevHead, viommu_type)
        && offset_of!(VdevBindHead, tdisp_version) == offset_of!(VdevHead, tdisp_version)
        && offset_of!(VdevBindHead, accepted) == offset_of!(VdevHead, accepted)
        && offset_of!(VdevBindHead, accept_nonce) == offset_of!(VdevHead, accept_nonce)
        && offset_of!(VdevBindHead, report_asked) == offset_of!(VdevHead, report_asked)
        && offset_of!(VdevBindHead, guest_result) == offset_of!(VdevHead, guest_result)
        && size_of::<VdevBindHead>() == offset_of!(VdevHead, evidence)
        && size_of::<VdevBindHead>().is_multiple_of(8)
);

/// The bytes of a [`VdevHead`] (offset and length) that hold the results of a bind and that a
/// new bind zeroes: `evidence` to `report_total`, every field VDEV_BIND clears and none other.
pub const BIND_CLEARED: (usize, usize) = (
    offset_of!(VdevHead, evidence),
    offset_of!(VdevHead, report_counter).abs_diff(offset_of!(VdevHead, evidence)),
);
// Contiguous, in this order, between the bind head and the fields a bind keeps.
const _: () = assert!(
    offset_of!(VdevHead, evidence) < offset_of!(VdevHead, chain_len)
        && offset_of!(VdevHead, chain_len) < offset_of!(VdevHead, measurements_len)
        && offset_of!(VdevHead, measurements_len) < offset_of!(VdevHead, chain_digest)
        && offset_of!(VdevHead, chain_digest) < offset_of!(VdevHead, measurements_digest)
        && offset_of!(VdevHead, measurements_digest) < offset_of!(VdevHead, start_nonce)
        && offset_of!(VdevHead, start_nonce) < offset_of!(VdevHead, report_digest)
        && offset_of!(VdevHead, report_digest) < offset_of!(VdevHead, report_len)
        && offset_of!(VdevHead, report_len) < offset_of!(VdevHead, report_total)
        && offset_of!(VdevHead, report_total) < offset_of!(VdevHead, report_counter)
        && offset_of!(VdevHead, report_counter).abs_diff(offset_of!(VdevHead, report_total)) == 4
        && offset_of!(VdevHead, report_counter) < offset_of!(VdevHead, guest_ticket)
        && BIND_CLEARED.0.is_multiple_of(8)
        && BIND_CLEARED.1.is_multiple_of(8)
);

/// The leading fields of a [`VdevHead`], up to the last one a new vdevice has non-zero: the rest
/// of a new head is zero bytes, so VDEV_CREATE writes this into the zeroed object
/// ([`VDEV_ZEROED`]) instead of a whole head (360 bytes) built in its frame and copied.
#[derive(IntoBytes, Immutable)]
#[repr(C)]
pub struct VdevHeadStart {
    tvm: u64,
    pdev: u64,
    viommu: u64,
    params: VdevParams,
    state: VdevState,
    op: DeviceOp,
    seq: u64,
    step: u32,
    viommu_type: ViommuType,
    tdisp_version: u32,
    accepted: u32,
}

// Field for field the start of `VdevHead`.
const _: () = assert!(
    offset_of!(VdevHeadStart, tvm) == offset_of!(VdevHead, tvm)
        && offset_of!(VdevHeadStart, pdev) == offset_of!(VdevHead, pdev)
        && offset_of!(VdevHeadStart, viommu) == offset_of!(VdevHead, viommu)
        && offset_of!(VdevHeadStart, params) == offset_of!(VdevHead, params)
        && offset_of!(VdevHeadStart, state) == offset_of!(VdevHead, state)
        && offset_of!(VdevHeadStart, op) == offset_of!(VdevHead, op)
        && offset_of!(VdevHeadStart, seq) == offset_of!(VdevHead, seq)
        && offset_of!(VdevHeadStart, step) == offset_of!(VdevHead, step)
        && offset_of!(VdevHeadStart, viommu_type) == offset_of!(VdevHead, viommu_type)
        && offset_of!(VdevHeadStart, tdisp_version) == offset_of!(VdevHead, tdisp_version)
        && offset_of!(VdevHeadStart, accepted) == offset_of!(VdevHead, accepted)
        && size_of::<VdevHeadStart>() == offset_of!(VdevHead, accept_nonce)
);

impl VdevHeadStart {
    /// The head of an UNLOCKED vdevice under `links`, for validated `params`: no operation, no
    /// report, no evidence (the zero bytes after this). Its tables (no stage-1 root, no events)
    /// are all zero bytes too.
    pub fn new(
        links: VdevLinks,
        params: VdevParams,
        viommu_type: ViommuType,
        tdisp_version: u32,
    ) -> Self {
        VdevHeadStart {
            tvm: links.tvm,
            pdev: links.pdev,
            viommu: links.viommu,
            params,
            state: VdevState::Unlocked,
            op: DeviceOp::None,
            seq: 0,
            step: 0,
            viommu_type,
            tdisp_version,
            accepted: 0,
        }
    }
}

impl VdevObj {
    /// The whole new object, field by field (VDEV_CREATE writes the same bytes in place: a
    /// [`VdevHeadStart`] over zero bytes).
    #[cfg(test)]
    pub fn new(
        links: VdevLinks,
        params: VdevParams,
        viommu_type: ViommuType,
        tdisp_version: u32,
    ) -> Self {
        VdevObj {
            head: VdevHead {
                tvm: links.tvm,
                pdev: links.pdev,
                viommu: links.viommu,
                params,
                state: VdevState::Unlocked,
                op: DeviceOp::None,
                seq: 0,
                step: 0,
                viommu_type,
                tdisp_version,
                accepted: 0,
                chain_len: 0,
                measurements_len: 0,
                evidence: 0,
                chain_digest: [0; SPDM_DIGEST_SIZE],
                measurements_digest: [0; SPDM_DIGEST_SIZE],
                start_nonce: [0; 32],
                accept_nonce: [0; NONCE_SIZE],
                report_digest: [0; DIGEST_SIZE],
                report_counter: 0,
                report_len: 0,
                report_total: 0,
                report_asked: 0,
                guest_result: 0,
                guest_ticket: 0,
            },
            pasids: PasidTable::new(),
            events: EventQueue::new(),
            host_events: HostEventQueue::new(),
        }
    }
}

impl Stored for VdevHead {
    type Words = [u64; size_of::<VdevHead>() / 8];
}

impl Stored for VdevBindHead {
    type Words = [u64; size_of::<VdevBindHead>() / 8];
}

impl Stored for VdevObj {
    type Words = [u64; size_of::<VdevObj>() / 8];
}

impl Object for VdevObj {
    const STATE: GranuleState = GranuleState::Vdev;

    fn invariants(&self) -> Result<(), &'static str> {
        self.head.invariants()
    }
}

/// The calls that never touch the vIOMMU tables lock the head alone.
impl Object for VdevHead {
    const STATE: GranuleState = GranuleState::Vdev;

    fn invariants(&self) -> Result<(), &'static str> {
        vdev_invariants(self.state, self.op, self.accepted, self.guest_result)
    }
}

/// VDEV_BIND locks the bind head alone, which holds every field the invariants look at.
impl Object for VdevBindHead {
    const STATE: GranuleState = GranuleState::Vdev;

    fn invariants(&self) -> Result<(), &'static str> {
        vdev_invariants(self.state, self.op, self.accepted, self.guest_result)
    }
}

/// A vdevice's invariants ([`Object::invariants`]), over the fields both its head and its bind
/// head hold.
fn vdev_invariants(
    state: VdevState,
    op: DeviceOp,
    accepted: u32,
    guest_result: u32,
) -> Result<(), &'static str> {
    let expected = match state {
        VdevState::Locking => DeviceOp::Bind,
        VdevState::Starting => DeviceOp::Start,
        VdevState::Stopping => DeviceOp::Stop,
        _ => DeviceOp::None,
    };
    if op != expected {
        return Err("an operation pending exactly in LOCKING, STARTING, STOPPING");
    }
    if accepted != 0 && state != VdevState::Run {
        return Err("accepted only in RUN");
    }
    if guest_result == GUEST_OP_PENDING && !matches!(op, DeviceOp::Start | DeviceOp::Stop) {
        return Err("a guest waits only on START or STOP");
    }
    Ok(())
}

impl Child for VdevObj {
    type Links = VdevLinks;
    fn links(&self) -> VdevLinks {
        VdevLinks {
            tvm: self.tvm,
            pdev: self.pdev,
            viommu: self.viommu,
        }
    }
}

/// The calls that never touch the vIOMMU tables (VDEV_BIND, VDEV_UNBIND) lock the head alone:
/// 1.8 KiB less to zero, read and write back.
impl Child for VdevHead {
    type Links = VdevLinks;
    fn links(&self) -> VdevLinks {
        VdevLinks {
            tvm: self.tvm,
            pdev: self.pdev,
            viommu: self.viommu,
        }
    }
}

impl Child for VdevBindHead {
    type Links = VdevLinks;
    fn links(&self) -> VdevLinks {
        VdevLinks {
            tvm: self.tvm,
            pdev: self.pdev,
            viommu: self.viommu,
        }
    }
}

/// `VdevObj::guest_result` while the guest's operation runs.
pub const GUEST_OP_PENDING: u32 = u32::MAX;

/// Where a vdevice's private MMIO pages are recorded in its granule
/// ([`crate::private_mmio::MmioMaps`]): right after the object, so VDEV_CREATE's zeroing of
/// the object ([`VDEV_ZEROED`]) empties the record too and only its root is written.
pub const MMIO_MAPS_OFFSET: u64 = size_of::<VdevObj>().next_multiple_of(8) as u64;
/// Where a vdevice's DMA tables are recorded in its granule: after the MMIO record, so the
/// same zeroing empties it too and VDEV_CREATE writes only its tag.
pub const DMA_TABLES_OFFSET: u64 =
    MMIO_MAPS_OFFSET + size_of::<crate::private_mmio::MmioMaps>() as u64;
/// Where the cached interface report starts in a VDEV granule: after the DMA record.
pub const REPORT_OFFSET: u64 = DMA_TABLES_OFFSET + size_of::<crate::dma_tables::DmaTables>() as u64;
/// The longest interface report the TSM caches (FEATURES `REPORT_LIMITS`): the rest of the
/// granule.
pub const REPORT_CAPACITY: u64 = GRANULE_SIZE - REPORT_OFFSET;
/// The bytes VDEV_CREATE zeroes at the start of a new VDEV granule: the object, its MMIO record
/// and its DMA record rounded up to whole 256-byte blocks, which both HALs zero with block
/// stores (x86_64's SSE path takes whole 256-byte steps only, aarch64's 64-byte blocks) instead
/// of a string or byte loop for the odd size. The bytes past the records lie in the report
/// area, which holds nothing a call reads until a bind writes it (`report_len` is 0).
pub const VDEV_ZEROED: usize = (REPORT_OFFSET as usize).next_multiple_of(256);
const _: () = assert!(VDEV_ZEROED as u64 <= GRANULE_SIZE);

const _: () = assert!(size_of::<TvmObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(offset_of!(TvmObj, head) == 0 && size_of::<TvmHead>().is_multiple_of(8));
// The view leads the head.
const _: () = assert!(
    offset_of!(TvmView, state) == offset_of!(TvmHead, state)
        && offset_of!(TvmView, gpa_bits) == offset_of!(TvmHead, gpa_bits)
        && offset_of!(TvmView, root) == offset_of!(TvmHead, root)
        && size_of::<TvmView>() <= size_of::<TvmHead>()
        && size_of::<TvmView>().is_multiple_of(8)
);
// The links lead their objects (`Child`).
const _: () = assert!(offset_of!(VcpuObj, tvm) == offset_of!(TvmLink, tvm));
const _: () = assert!(offset_of!(ViommuObj, tvm) == offset_of!(TvmLink, tvm));
const _: () = assert!(
    offset_of!(VdevObj, head) == 0
        && offset_of!(VdevHead, tvm) == offset_of!(VdevLinks, tvm)
        && offset_of!(VdevHead, pdev) == offset_of!(VdevLinks, pdev)
        && offset_of!(VdevHead, viommu) == offset_of!(VdevLinks, viommu)
);
const _: () = assert!(size_of::<VcpuObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(size_of::<PdevObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(offset_of!(PdevObj, head) == 0 && size_of::<PdevHead>().is_multiple_of(8));
/// Where the PDEV's SPDM requester state lives in its granule, after the object.
pub const SESSION_OFFSET: u64 = size_of::<PdevObj>().next_multiple_of(8) as u64;
const _: () = assert!(SESSION_OFFSET + crate::spdm::requester::STATE_SIZE as u64 <= GRANULE_SIZE);
/// Bytes of an evidence granule for the certificate chain (from offset 0); the measurement
/// record takes the rest.
pub const CHAIN_CAPACITY: usize = 3072;
/// Bytes of an evidence granule for the measurement record (from [`CHAIN_CAPACITY`]).
pub const MEASUREMENTS_CAPACITY: usize = GRANULE_SIZE as usize - CHAIN_CAPACITY;
const _: () = assert!(size_of::<ViommuObj>() as u64 <= GRANULE_SIZE);
const _: () = assert!(REPORT_OFFSET < GRANULE_SIZE && REPORT_CAPACITY >= 1024);
// `Stored::Words` holds the whole object: no object ends in a partial word.
const _: () = assert!(
    size_of::<TvmObj>().is_multiple_of(8)
        && size_of::<VcpuObj>().is_multiple_of(8)
        && size_of::<PdevObj>().is_multiple_of(8)
        && size_of::<ViommuObj>().is_multiple_of(8)
        && size_of::<VdevObj>().is_multiple_of(8)
        && size_of::<VdevHead>().is_multiple_of(8)
);

#[cfg(test)]
mod tests {
    use tsm_abi::CallId;
    use zerocopy::FromZeros;

    use super::*;
    use crate::tests::{FORMATS, build_tvm, harness};

    fn vdev(state: VdevState, op: DeviceOp) -> VdevObj {
        let links = VdevLinks::new(Handle::new(Pa(0)), Handle::new(Pa(0)), Handle::new(Pa(0)));
        let mut v = VdevObj::new(links, VdevParams::new_zeroed(), ViommuType::TsmSmmuv3, 0);
        v.state = state;
        v.op = op;
        v
    }

    /// VDEV_CREATE writes only the head into a zeroed object: that is the whole new object only
    /// while the new tables are zero bytes.
    #[test]
    fn a_new_vdevs_tables_are_zero_bytes() {
        let v = vdev(VdevState::Unlocked, DeviceOp::None);
        let tables = v.as_bytes().get(size_of::<VdevHead>()..).unwrap();
        assert!(!tables.is_empty() && tables.iter().all(|&b| b == 0));
    }

    #[test]
    fn vdev_invariants() {
        use DeviceOp as Op;
        use VdevState as S;
        for (s, op) in [
            (S::Unlocked, Op::None),
            (S::Locking, Op::Bind),
            (S::Locked, Op::None),
            (S::Starting, Op::Start),
            (S::Run, Op::None),
            (S::Stopping, Op::Stop),
            (S::Error, Op::None),
        ] {
            assert_eq!(vdev(s, op).invariants(), Ok(()), "{s:?} {op:?}");
        }
        assert!(vdev(S::Locked, Op::Bind).invariants().is_err());
        assert!(vdev(S::Stopping, Op::None).invariants().is_err());
        let mut v = vdev(S::Locked, Op::None);
        v.accepted = 1;
        assert!(v.invariants().is_err());
        v.state = S::Run;
        assert_eq!(v.invariants(), Ok(()));
        v.guest_result = GUEST_OP_PENDING;
        assert!(v.invariants().is_err());
        let mut v = vdev(S::Starting, Op::Start);
        v.guest_result = GUEST_OP_PENDING;
        assert_eq!(v.invariants(), Ok(()));
    }

    /// Destroying a vdevice keeps the slots in use the first `vdevs`, which VDEV_CREATE reads
    /// alone (and takes the next one).
    #[test]
    fn a_released_slot_keeps_the_table_packed() {
        let mut p = PdevObj::new(PdevParams::new_zeroed());
        for (i, s) in p.pbdfs.iter_mut().take(3).enumerate() {
            *s = PbdfSlot {
                vdev: 0x1000 * (i as u64 + 1),
                pbdf: i as u32,
                used: 1,
            };
        }
        p.vdevs = 3;
        assert_eq!(p.invariants(), Ok(()));
        p.release_pbdf(0x1000).unwrap();
        assert_eq!(p.invariants(), Ok(()));
        assert_eq!(
            (p.vdevs, p.pbdfs[0].vdev, p.pbdfs[1].vdev),
            (2, 0x3000, 0x2000)
        );
        assert_eq!(p.release_pbdf(0x1000), Err(internal()));
        p.release_pbdf(0x2000).unwrap();
        p.release_pbdf(0x3000).unwrap();
        assert_eq!((p.vdevs, p.invariants()), (0, Ok(())));
        assert_eq!(p.release_pbdf(0x3000), Err(internal()));
        let mut t = TvmObj::new(Pa(0), 40, 1);
        t.vbdfs[1].used = 1;
        t.vdevs = 1;
        assert!(t.invariants().is_err(), "a hole before a slot in use");
    }

    #[test]
    fn tvm_and_pdev_invariants() {
        let mut t = TvmObj::new(Pa(0), 40, 2);
        t.vcpus_created = 2;
        t.vcpus = 1;
        assert_eq!(t.invariants(), Ok(()));
        t.vcpus_created = 3;
        assert!(t.invariants().is_err());
        t.vcpus_created = 2;
        t.vdevs = 1;
        assert!(t.invariants().is_err());
        t.vbdfs[0].used = 1;
        assert_eq!(t.invariants(), Ok(()));

        let mut p = PdevObj::new(PdevParams::new_zeroed());
        assert_eq!(p.invariants(), Ok(()));
        p.state = PdevState::Connecting;
        p.op = DeviceOp::Connect;
        assert_eq!(p.invariants(), Ok(()));
        p.state = PdevState::Ready;
        assert!(p.invariants().is_err());
        p.op = DeviceOp::None;
        assert_eq!(p.invariants(), Ok(()));
        p.pbdfs[3].used = 1;
        assert!(p.invariants().is_err());
    }

    /// A state word that is no `TvmState` (only a TSM bug can write one) fails the call that
    /// loads the object with the internal status, changes nothing, and is what the invariant
    /// checker reports.
    #[test]
    fn an_object_that_does_not_decode_fails_its_load() {
        for format in FORMATS {
            let h = harness(format);
            let tvm = build_tvm(&h, 10).tvm;
            let at = tvm.checked_add(offset_of!(TvmHead, state) as u64).unwrap();
            h.sim.write(at, &7u32.to_le_bytes()).unwrap();
            let before = h.snapshot();
            assert_eq!(h.host(CallId::TVM_ACTIVATE, &[tvm.0]), Err(internal()));
            assert!(h.snapshot() == before);
            let e = crate::invariants::check(&h.tsm, h.sim).unwrap_err();
            assert!(e.contains("does not decode"), "{e}");
        }
    }
}
