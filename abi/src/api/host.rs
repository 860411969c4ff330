//! Host calls. A handle is the physical address of the granule an object lives in.
//! Preconditions, state changes and every status of each call: `docs/abi.md`.

use super::{
    OpProgress, QueueState, Result, Transport, Versions, device_op, invoke, invoke0, negotiate,
    queue_pop,
};
use crate::addr::{Gpa, Iova, Pa};
use crate::call::CallId;
use crate::event::{DmaInjectFlags, HOST_DOMAIN_EVENTS, PasidArg};
use crate::features::{
    BuildFlags, DeviceLimits, DmaFeatures, FeatureReg, MemoryFeatures, QueueLimits, ReportLimits,
    SecurityFeatures, Stage1Formats, TdispFeatures, ViommuTypes,
};
use crate::params::{MapFlags, NO_SOURCE};
use crate::state::{DeviceOp, VdevState};
use crate::version::AbiVersion;
use crate::viommu::ViommuType;
use crate::{api::Error, exit::ExitReason};

/// VERSION: asks for `requested`; always learns the implemented range.
pub fn version<T: Transport + ?Sized>(t: &mut T, requested: AbiVersion) -> Result<Versions> {
    negotiate(t, CallId::VERSION, requested)
}

/// FEATURES: reads one feature register.
pub fn features<T: Transport + ?Sized>(t: &mut T, reg: FeatureReg) -> Result<u64> {
    invoke(t, CallId::FEATURES, &[u64::from(reg.raw())]).map(|o| o[0])
}

/// Every feature register, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Features {
    /// `VIOMMU_TYPES`.
    pub viommu_types: ViommuTypes,
    /// `STAGE1_FORMATS`.
    pub stage1_formats: Stage1Formats,
    /// `DEVICE_LIMITS`.
    pub device_limits: DeviceLimits,
    /// `QUEUE_LIMITS`.
    pub queue_limits: QueueLimits,
    /// `REPORT_LIMITS`.
    pub report_limits: ReportLimits,
    /// `TDISP`.
    pub tdisp: TdispFeatures,
    /// `MEMORY`.
    pub memory: MemoryFeatures,
    /// `SECURITY`.
    pub security: SecurityFeatures,
    /// `BUILD`.
    pub build: BuildFlags,
    /// `DMA`.
    pub dma: DmaFeatures,
}

/// Reads and decodes every feature register (bits this version does not define are dropped).
pub fn read_features<T: Transport + ?Sized>(t: &mut T) -> Result<Features> {
    let mut f = |r| features(t, r);
    Ok(Features {
        viommu_types: ViommuTypes::from_bits_truncate(f(FeatureReg::ViommuTypes)?),
        stage1_formats: Stage1Formats::from_bits_truncate(f(FeatureReg::Stage1Formats)?),
        device_limits: DeviceLimits::from_raw(f(FeatureReg::DeviceLimits)?),
        queue_limits: QueueLimits::from_raw(f(FeatureReg::QueueLimits)?),
        report_limits: ReportLimits::from_raw(f(FeatureReg::ReportLimits)?),
        tdisp: TdispFeatures::from_bits_truncate(f(FeatureReg::Tdisp)?),
        memory: MemoryFeatures::from_raw(f(FeatureReg::Memory)?),
        security: SecurityFeatures::from_bits_truncate(f(FeatureReg::Security)?),
        build: BuildFlags::from_bits_truncate(f(FeatureReg::Build)?),
        dma: DmaFeatures::from_raw(f(FeatureReg::Dma)?),
    })
}

/// CONSOLE_WRITE: logs `len` bytes at `buf` (one framed record, inside one granule).
pub fn console_write<T: Transport + ?Sized>(t: &mut T, buf: Pa, len: u64) -> Result<()> {
    invoke0(t, CallId::CONSOLE_WRITE, &[buf.raw(), len])
}

/// SYSTEM_OFF: powers off with `code` (0 = success). Returns only if the TSM refused.
pub fn system_off<T: Transport + ?Sized>(t: &mut T, code: u64) -> Result<()> {
    invoke0(t, CallId::SYSTEM_OFF, &[code])
}

/// HOST_CPU_START: starts the CPU the host names `cpu` (x86_64: APIC ID; aarch64: MPIDR
/// affinity), waiting in the TSM, at `entry` (host memory) with `arg`.
pub fn host_cpu_start<T: Transport + ?Sized>(
    t: &mut T,
    cpu: u64,
    entry: Pa,
    arg: u64,
) -> Result<()> {
    invoke0(t, CallId::HOST_CPU_START, &[cpu, entry.raw(), arg])
}

/// HOST_CPU_STOP: the calling CPU leaves the host for the TSM. Returns only if the TSM
/// refused.
pub fn host_cpu_stop<T: Transport + ?Sized>(t: &mut T) -> Result<()> {
    invoke0(t, CallId::HOST_CPU_STOP, &[])
}

/// GRANULE_DELEGATE: makes the NS granule at `pa` secure and free.
pub fn granule_delegate<T: Transport + ?Sized>(t: &mut T, pa: Pa) -> Result<()> {
    invoke0(t, CallId::GRANULE_DELEGATE, &[pa.raw()])
}

/// GRANULE_UNDELEGATE: scrubs the free secure granule at `pa` and returns it to the host.
pub fn granule_undelegate<T: Transport + ?Sized>(t: &mut T, pa: Pa) -> Result<()> {
    invoke0(t, CallId::GRANULE_UNDELEGATE, &[pa.raw()])
}

/// TVM_CREATE: a TVM in granule `tvm` with [`TvmParams`](crate::params::TvmParams) at
/// `params` and its stage-2 root table in granule `root`.
pub fn tvm_create<T: Transport + ?Sized>(t: &mut T, tvm: Pa, params: Pa, root: Pa) -> Result<()> {
    invoke0(
        t,
        CallId::TVM_CREATE,
        &[tvm.raw(), params.raw(), root.raw()],
    )
}

/// TVM_ACTIVATE: NEW → ACTIVE.
pub fn tvm_activate<T: Transport + ?Sized>(t: &mut T, tvm: Pa) -> Result<()> {
    invoke0(t, CallId::TVM_ACTIVATE, &[tvm.raw()])
}

/// TVM_DESTROY: destroys an empty TVM.
pub fn tvm_destroy<T: Transport + ?Sized>(t: &mut T, tvm: Pa) -> Result<()> {
    invoke0(t, CallId::TVM_DESTROY, &[tvm.raw()])
}

/// TABLE_CREATE: donates granule `table` as the level-`level` translation table covering `gpa`.
pub fn table_create<T: Transport + ?Sized>(
    t: &mut T,
    tvm: Pa,
    gpa: Gpa,
    level: u8,
    table: Pa,
) -> Result<()> {
    invoke0(
        t,
        CallId::TABLE_CREATE,
        &[tvm.raw(), gpa.raw(), u64::from(level), table.raw()],
    )
}

/// TABLE_DESTROY: takes back the empty level-`level` table covering `gpa`; returns its granule.
pub fn table_destroy<T: Transport + ?Sized>(t: &mut T, tvm: Pa, gpa: Gpa, level: u8) -> Result<Pa> {
    invoke(
        t,
        CallId::TABLE_DESTROY,
        &[tvm.raw(), gpa.raw(), u64::from(level)],
    )
    .map(|o| Pa(o[0]))
}

/// MAP_PRIVATE: maps delegated `granule` at `gpa`, filled from the NS page `source` or zeroed.
pub fn map_private<T: Transport + ?Sized>(
    t: &mut T,
    tvm: Pa,
    gpa: Gpa,
    granule: Pa,
    source: Option<Pa>,
    flags: MapFlags,
) -> Result<()> {
    let src = source.map_or(NO_SOURCE, Pa::raw);
    invoke0(
        t,
        CallId::MAP_PRIVATE,
        &[tvm.raw(), gpa.raw(), granule.raw(), src, flags.bits()],
    )
}

/// MAP_SHARED: maps the NS granule `ns` at `gpa`.
pub fn map_shared<T: Transport + ?Sized>(
    t: &mut T,
    tvm: Pa,
    gpa: Gpa,
    ns: Pa,
    flags: MapFlags,
) -> Result<()> {
    invoke0(
        t,
        CallId::MAP_SHARED,
        &[tvm.raw(), gpa.raw(), ns.raw(), flags.bits()],
    )
}

/// UNMAP: unmaps `gpa`; returns the granule that was mapped there.
pub fn unmap<T: Transport + ?Sized>(t: &mut T, tvm: Pa, gpa: Gpa) -> Result<Pa> {
    invoke(t, CallId::UNMAP, &[tvm.raw(), gpa.raw()]).map(|o| Pa(o[0]))
}

/// VCPU_CREATE: a vCPU in granule `vcpu` that starts at `entry` with `arg0` in its first
/// argument register.
pub fn vcpu_create<T: Transport + ?Sized>(
    t: &mut T,
    tvm: Pa,
    vcpu: Pa,
    entry: Gpa,
    arg0: u64,
) -> Result<()> {
    invoke0(
        t,
        CallId::VCPU_CREATE,
        &[tvm.raw(), vcpu.raw(), entry.raw(), arg0],
    )
}

/// VCPU_RUN: runs `vcpu` until it exits; the [`VcpuExit`](crate::exit::VcpuExit) record goes
/// to `exit`.
pub fn vcpu_run<T: Transport + ?Sized>(t: &mut T, vcpu: Pa, exit: Pa) -> Result<ExitReason> {
    let out = invoke(t, CallId::VCPU_RUN, &[vcpu.raw(), exit.raw()])?;
    ExitReason::from_raw(out[0]).ok_or(Error::Malformed {
        call: CallId::VCPU_RUN,
        status: 0,
    })
}

/// VCPU_DESTROY.
pub fn vcpu_destroy<T: Transport + ?Sized>(t: &mut T, vcpu: Pa) -> Result<()> {
    invoke0(t, CallId::VCPU_DESTROY, &[vcpu.raw()])
}

/// PDEV_CREATE: a PDEV in granule `pdev` with [`PdevParams`](crate::params::PdevParams) at
/// `params`.
pub fn pdev_create<T: Transport + ?Sized>(t: &mut T, pdev: Pa, params: Pa) -> Result<()> {
    invoke0(t, CallId::PDEV_CREATE, &[pdev.raw(), params.raw()])
}

/// PDEV_CONNECT: starts the connect operation with COMMUNICATE buffer `comm`.
pub fn pdev_connect<T: Transport + ?Sized>(
    t: &mut T,
    pdev: Pa,
    comm: Pa,
    evidence: Pa,
) -> Result<OpProgress> {
    device_op(
        t,
        CallId::PDEV_CONNECT,
        &[pdev.raw(), comm.raw(), evidence.raw()],
    )
}

/// PDEV_DISCONNECT: ends the SPDM session (END_SESSION) of a READY PDEV.
pub fn pdev_disconnect<T: Transport + ?Sized>(t: &mut T, pdev: Pa, comm: Pa) -> Result<OpProgress> {
    device_op(t, CallId::PDEV_DISCONNECT, &[pdev.raw(), comm.raw()])
}

/// PDEV_KEY_UPDATE: updates the SPDM session's keys of a READY PDEV.
pub fn pdev_key_update<T: Transport + ?Sized>(t: &mut T, pdev: Pa, comm: Pa) -> Result<OpProgress> {
    device_op(t, CallId::PDEV_KEY_UPDATE, &[pdev.raw(), comm.raw()])
}

/// PDEV_STOP.
pub fn pdev_stop<T: Transport + ?Sized>(t: &mut T, pdev: Pa) -> Result<()> {
    invoke0(t, CallId::PDEV_STOP, &[pdev.raw()])
}

/// PDEV_DESTROY.
pub fn pdev_destroy<T: Transport + ?Sized>(t: &mut T, pdev: Pa) -> Result<()> {
    invoke0(t, CallId::PDEV_DESTROY, &[pdev.raw()])
}

/// VIOMMU_CREATE: a vIOMMU of type `ty` for `tvm` in granule `viommu` (no flag is defined in
/// ABI 1.0). Hosts that must forward an unchecked type number use [`Transport::call`].
pub fn viommu_create<T: Transport + ?Sized>(
    t: &mut T,
    tvm: Pa,
    viommu: Pa,
    ty: ViommuType,
) -> Result<()> {
    invoke0(
        t,
        CallId::VIOMMU_CREATE,
        &[tvm.raw(), viommu.raw(), u64::from(ty.raw()), 0],
    )
}

/// VIOMMU_DESTROY.
pub fn viommu_destroy<T: Transport + ?Sized>(t: &mut T, viommu: Pa) -> Result<()> {
    invoke0(t, CallId::VIOMMU_DESTROY, &[viommu.raw()])
}

/// VDEV_CREATE: a vdevice in granule `vdev`, function of `pdev`, under `viommu`, with
/// [`VdevParams`](crate::params::VdevParams) at `params`.
pub fn vdev_create<T: Transport + ?Sized>(
    t: &mut T,
    vdev: Pa,
    pdev: Pa,
    viommu: Pa,
    params: Pa,
) -> Result<()> {
    invoke0(
        t,
        CallId::VDEV_CREATE,
        &[vdev.raw(), pdev.raw(), viommu.raw(), params.raw()],
    )
}

/// VDEV_BIND: starts the bind operation with COMMUNICATE buffer `comm`.
pub fn vdev_bind<T: Transport + ?Sized>(t: &mut T, vdev: Pa, comm: Pa) -> Result<OpProgress> {
    device_op(t, CallId::VDEV_BIND, &[vdev.raw(), comm.raw()])
}

/// VDEV_UNBIND: starts the unbind operation with COMMUNICATE buffer `comm`.
pub fn vdev_unbind<T: Transport + ?Sized>(t: &mut T, vdev: Pa, comm: Pa) -> Result<OpProgress> {
    device_op(t, CallId::VDEV_UNBIND, &[vdev.raw(), comm.raw()])
}

/// VDEV_GET_STATE: the vdevice's state and the operation pending on it.
pub fn vdev_get_state<T: Transport + ?Sized>(t: &mut T, vdev: Pa) -> Result<(VdevState, DeviceOp)> {
    let out = invoke(t, CallId::VDEV_GET_STATE, &[vdev.raw()])?;
    let malformed = Error::Malformed {
        call: CallId::VDEV_GET_STATE,
        status: 0,
    };
    let state = VdevState::from_raw(out[0]).ok_or(malformed)?;
    let op = DeviceOp::from_raw(out[1]).ok_or(malformed)?;
    Ok((state, op))
}

/// VDEV_DESTROY.
pub fn vdev_destroy<T: Transport + ?Sized>(t: &mut T, vdev: Pa) -> Result<()> {
    invoke0(t, CallId::VDEV_DESTROY, &[vdev.raw()])
}

/// VDEV_DMA_TABLE: donates the delegated granule `table` to the DMA table of `vdev`.
pub fn vdev_dma_table<T: Transport + ?Sized>(t: &mut T, vdev: Pa, table: Pa) -> Result<()> {
    invoke0(t, CallId::VDEV_DMA_TABLE, &[vdev.raw(), table.raw()])
}

/// VDEV_MMIO_MAP: maps the vdevice's MMIO page at host PA `pa` at private `gpa` of its TVM,
/// unvalidated; the host loses the page until VDEV_MMIO_UNMAP or the vdevice leaves LOCKED/RUN.
pub fn vdev_mmio_map<T: Transport + ?Sized>(t: &mut T, vdev: Pa, gpa: Gpa, pa: Pa) -> Result<()> {
    invoke0(t, CallId::VDEV_MMIO_MAP, &[vdev.raw(), gpa.raw(), pa.raw()])
}

/// VDEV_MMIO_UNMAP: removes the vdevice's MMIO page at `gpa` from its TVM; returns its PA,
/// which is the host's again.
pub fn vdev_mmio_unmap<T: Transport + ?Sized>(t: &mut T, vdev: Pa, gpa: Gpa) -> Result<Pa> {
    invoke(t, CallId::VDEV_MMIO_UNMAP, &[vdev.raw(), gpa.raw()]).map(|o| Pa(o[0]))
}

/// COMMUNICATE: continues the operation pending on `object` (a PDEV or VDEV) with the
/// device's response in `comm`.
pub fn communicate<T: Transport + ?Sized>(t: &mut T, object: Pa, comm: Pa) -> Result<OpProgress> {
    device_op(t, CallId::COMMUNICATE, &[object.raw(), comm.raw()])
}

/// OP_CANCEL: abandons the operation pending on `object`.
pub fn op_cancel<T: Transport + ?Sized>(t: &mut T, object: Pa) -> Result<()> {
    invoke0(t, CallId::OP_CANCEL, &[object.raw()])
}

/// Which host event queue EVENT_READ pops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventQueue {
    /// The queue of one vdevice.
    Vdev(Pa),
    /// Faults of requesters that belong to no vdevice.
    HostDomain,
}

/// EVENT_READ: pops one [`HostEvent`](crate::event::HostEvent) into `buf`; `None` when the
/// queue is empty.
pub fn event_read<T: Transport + ?Sized>(
    t: &mut T,
    queue: EventQueue,
    buf: Pa,
) -> Result<Option<QueueState>> {
    let q = match queue {
        EventQueue::Vdev(v) => v.raw(),
        EventQueue::HostDomain => HOST_DOMAIN_EVENTS,
    };
    queue_pop(t, CallId::EVENT_READ, &[q, buf.raw()])
}

/// TEST_DMA_INJECT (test builds only): translates a DMA request of requester `rid` on PCI
/// segment `segment` as the secure vIOMMU would; returns the final PA, or `DmaFault` with the
/// reason as index.
pub fn test_dma_inject<T: Transport + ?Sized>(
    t: &mut T,
    segment: u16,
    rid: u16,
    pasid: PasidArg,
    iova: Iova,
    flags: DmaInjectFlags,
) -> Result<Pa> {
    invoke(
        t,
        CallId::TEST_DMA_INJECT,
        &[
            u64::from(rid),
            pasid.to_raw(),
            iova.raw(),
            flags.bits(),
            u64::from(segment),
        ],
    )
    .map(|o| Pa(o[0]))
}
