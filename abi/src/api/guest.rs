//! Guest calls, issued from inside a TVM. A vdevice is named by its vBDF; buffers are GPAs of
//! the TVM's own memory. Preconditions and statuses: `docs/abi.md`.

use super::{QueueState, Result, Transport, Versions, invoke, invoke0, negotiate, queue_pop};
use crate::addr::{Gpa, Iova};
use crate::call::CallId;
use crate::event::PasidArg;
use crate::guest::S1Config;
use crate::version::AbiVersion;

/// G_VERSION: asks for `requested`; always learns the implemented range.
pub fn g_version<T: Transport + ?Sized>(t: &mut T, requested: AbiVersion) -> Result<Versions> {
    negotiate(t, CallId::G_VERSION, requested)
}

/// G_CONSOLE_WRITE: logs `len` bytes at `buf` (one framed record, inside one granule).
pub fn g_console_write<T: Transport + ?Sized>(t: &mut T, buf: Gpa, len: u64) -> Result<()> {
    invoke0(t, CallId::G_CONSOLE_WRITE, &[buf.raw(), len])
}

/// G_EXIT: ends the guest with `code`; returns only if the TSM refused.
pub fn g_exit<T: Transport + ?Sized>(t: &mut T, code: u64) -> Result<()> {
    invoke0(t, CallId::G_EXIT, &[code])
}

/// The calling TVM's address space, from G_TVM_INFO (docs/abi.md §5.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TvmInfo {
    /// Width of the GPA space in bits.
    pub gpa_bits: u8,
    /// First GPA of the shared half: GPAs below it are private, from it up shared.
    pub shared_base: Gpa,
}

/// G_TVM_INFO: the caller's GPA width and its private/shared split. A guest takes the split
/// from here, never from the host.
pub fn g_tvm_info<T: Transport + ?Sized>(t: &mut T) -> Result<TvmInfo> {
    let o = invoke(t, CallId::G_TVM_INFO, &[])?;
    Ok(TvmInfo {
        gpa_bits: u8::try_from(o[0]).map_err(|_| super::Error::Malformed {
            call: CallId::G_TVM_INFO,
            status: 0,
        })?,
        shared_base: Gpa(o[1]),
    })
}

/// G_VDEV_INFO: writes the [`VdevInfo`](crate::guest::VdevInfo) of vdevice `vbdf` to `buf`.
pub fn g_vdev_info<T: Transport + ?Sized>(t: &mut T, vbdf: u16, buf: Gpa) -> Result<()> {
    invoke0(t, CallId::G_VDEV_INFO, &[u64::from(vbdf), buf.raw()])
}

/// Result of G_VDEV_REPORT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReportChunk {
    /// Bytes written to the buffer.
    pub copied: u64,
    /// Bytes of the report after them.
    pub remaining: u64,
}

/// G_VDEV_REPORT: copies up to `len` bytes of the cached interface report from `offset` to
/// `buf`.
pub fn g_vdev_report<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    offset: u64,
    buf: Gpa,
    len: u64,
) -> Result<ReportChunk> {
    read_chunk(t, CallId::G_VDEV_REPORT, vbdf, offset, buf, len)
}

/// G_VDEV_CERT_CHAIN: copies up to `len` bytes of the device's SPDM certificate chain from
/// `offset` to `buf`.
pub fn g_vdev_cert_chain<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    offset: u64,
    buf: Gpa,
    len: u64,
) -> Result<ReportChunk> {
    read_chunk(t, CallId::G_VDEV_CERT_CHAIN, vbdf, offset, buf, len)
}

/// G_VDEV_MEASUREMENTS: copies up to `len` bytes of the device's signed measurement record
/// from `offset` to `buf`.
pub fn g_vdev_measurements<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    offset: u64,
    buf: Gpa,
    len: u64,
) -> Result<ReportChunk> {
    read_chunk(t, CallId::G_VDEV_MEASUREMENTS, vbdf, offset, buf, len)
}

/// One chunk of a vdevice's cached evidence (report, chain or measurements): the three calls
/// share their arguments and results.
fn read_chunk<T: Transport + ?Sized>(
    t: &mut T,
    call: CallId,
    vbdf: u16,
    offset: u64,
    buf: Gpa,
    len: u64,
) -> Result<ReportChunk> {
    invoke(t, call, &[u64::from(vbdf), offset, buf.raw(), len]).map(|o| ReportChunk {
        copied: o[0],
        remaining: o[1],
    })
}

/// G_VDEV_ACCEPT: accepts vdevice `vbdf` with the [`AcceptEvidence`](crate::guest::AcceptEvidence)
/// at `evidence`. Returns once the device is RUN (the host carries START_INTERFACE meanwhile).
pub fn g_vdev_accept<T: Transport + ?Sized>(t: &mut T, vbdf: u16, evidence: Gpa) -> Result<()> {
    invoke0(t, CallId::G_VDEV_ACCEPT, &[u64::from(vbdf), evidence.raw()])
}

/// G_VDEV_STOP: stops vdevice `vbdf` (T=1 off at once; UNLOCKED once the host carried
/// STOP_INTERFACE).
pub fn g_vdev_stop<T: Transport + ?Sized>(t: &mut T, vbdf: u16) -> Result<()> {
    invoke0(t, CallId::G_VDEV_STOP, &[u64::from(vbdf)])
}

/// G_VDEV_MMIO_VALIDATE: accepts the MMIO mapping at `gpa` as page `page_index` of range
/// `range_index` of vdevice `vbdf`'s interface report (the ranges in report order).
pub fn g_vdev_mmio_validate<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    gpa: Gpa,
    range_index: u64,
    page_index: u64,
) -> Result<()> {
    invoke0(
        t,
        CallId::G_VDEV_MMIO_VALIDATE,
        &[u64::from(vbdf), gpa.raw(), range_index, page_index],
    )
}

/// G_S1_ATTACH: attaches the stage-1 table at `root` for (`vbdf`, `pasid`), walked for the
/// input size in `config` (which also sets the level `root` is a table of, see [`S1Config`]).
pub fn g_s1_attach<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    pasid: PasidArg,
    root: Gpa,
    config: S1Config,
) -> Result<()> {
    invoke0(
        t,
        CallId::G_S1_ATTACH,
        &[u64::from(vbdf), pasid.to_raw(), root.raw(), config.to_raw()],
    )
}

/// G_S1_DETACH: detaches the stage-1 table of (`vbdf`, `pasid`).
pub fn g_s1_detach<T: Transport + ?Sized>(t: &mut T, vbdf: u16, pasid: PasidArg) -> Result<()> {
    invoke0(t, CallId::G_S1_DETACH, &[u64::from(vbdf), pasid.to_raw()])
}

/// G_S1_INVALIDATE: drops cached translations of (`vbdf`, `pasid`) for `size` bytes from
/// `iova` (`size` 0 = every address).
pub fn g_s1_invalidate<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    pasid: PasidArg,
    iova: Iova,
    size: u64,
) -> Result<()> {
    invoke0(
        t,
        CallId::G_S1_INVALIDATE,
        &[u64::from(vbdf), pasid.to_raw(), iova.raw(), size],
    )
}

/// G_EVENT_READ: pops one [`GuestEvent`](crate::event::GuestEvent) of vdevice `vbdf` into
/// `buf`; `None` when the queue is empty.
pub fn g_event_read<T: Transport + ?Sized>(
    t: &mut T,
    vbdf: u16,
    buf: Gpa,
) -> Result<Option<QueueState>> {
    queue_pop(t, CallId::G_EVENT_READ, &[u64::from(vbdf), buf.raw()])
}
