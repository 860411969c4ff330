//! The monitor: the platform, the granule table, and the few registries that cannot live in
//! donated granules. Calls enter through [`Tsm::host_call`] and [`Tsm::guest_exit`] (see [`crate::run`] and
//! [`crate::dispatch`]).

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Pa};
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::{
    AddressMapFormat, Console, DmaTableFormat, Entropy, GuestMmu, HostCpus, HostIsolation, Iommu,
    MemRange, PhysMem, PowerOff,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::addrmap::format::{self, PteFormat};
use crate::addrmap::{self, AddressMap};
use crate::dma_tables::DmaTags;
use crate::granule::{GranuleState, GranuleTable, Locked};
use crate::objects::internal;
use crate::viommu::{HostDomainQueue, Iotlb, Requester};

/// Everything the core needs from the platform (implemented by the arch HALs, and by
/// [`crate::testing::SimPlatform`] in tests).
pub trait Platform:
    PhysMem + Console + PowerOff + HostIsolation + HostCpus + Entropy + GuestMmu + Iommu + Sync
{
}
impl<T: PhysMem + Console + PowerOff + HostIsolation + HostCpus + Entropy + GuestMmu + Iommu + Sync>
    Platform for T
{
}

/// Who trapped into the TSM. The HAL fills it from the trapped context, never from a register
/// the caller controls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Origin {
    /// The host.
    Host,
    /// A TVM vCPU (the VCPU object the TSM was running).
    Guest {
        /// The VCPU handle.
        vcpu: Pa,
    },
}

/// PDEVs the system holds (the registry that maps requesters to PDEVs).
pub const MAX_PDEVS: usize = 16;

/// One PDEV's requester-ID range, on its segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PdevRange {
    /// The PDEV handle.
    pub pdev: Pa,
    /// PCI segment.
    pub segment: u16,
    /// First requester ID.
    pub rid_base: u16,
    /// Number of requester IDs.
    pub rid_count: u16,
}

impl PdevRange {
    /// Whether `requester` is in the range: on its segment, with its RID in range.
    pub fn contains(&self, requester: Requester) -> bool {
        requester.segment == self.segment
            && requester
                .rid
                .checked_sub(self.rid_base)
                .is_some_and(|d| d < self.rid_count)
    }

    /// One past the last requester ID (a u16 base plus a u16 count always fits a u32).
    fn end(&self) -> u32 {
        u32::from(self.rid_base).saturating_add(u32::from(self.rid_count))
    }

    /// Whether the two ranges share a requester (same segment, RIDs in common).
    pub fn overlaps(&self, other: &PdevRange) -> bool {
        self.segment == other.segment
            && u32::from(self.rid_base) < other.end()
            && u32::from(other.rid_base) < self.end()
    }
}

/// Why the monitor could not start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitError {
    /// Fewer descriptors than DRAM granules.
    TooFewDescriptors {
        /// Descriptors needed.
        needed: u64,
    },
    /// DRAM base or size is not granule-aligned.
    Misaligned,
    /// The IOTLB handed in holds translations (of another monitor, or left from before).
    IotlbInUse,
}

/// The monitor.
pub struct Tsm<'a> {
    pub(crate) platform: &'a dyn Platform,
    pub(crate) granules: GranuleTable<'a>,
    pub(crate) fmt: &'static dyn PteFormat,
    pub(crate) format: AddressMapFormat,
    pub(crate) pdevs: spin::Mutex<heapless::Vec<PdevRange, MAX_PDEVS>>,
    /// The format of vdevice DMA tables, `None` when no platform IOMMU gates DMA (read once:
    /// the hooks on every map change test only this).
    pub(crate) iommu: Option<DmaTableFormat>,
    /// The IOMMU tags in use; held by every DMA-table refresh (`crate::dma_tables`), after
    /// every granule lock and before the IOTLB.
    pub(crate) dma: spin::Mutex<DmaTags>,
    /// The secure vIOMMU's translation cache (taken after every granule lock). Borrowed, not
    /// owned: at 34 KiB it is most of the monitor, and a monitor that held it would be built
    /// on the boot stack and moved into its static through temporaries (docs/design.md,
    /// "Memory layout on QEMU", Stacks).
    pub(crate) iotlb: &'a spin::Mutex<Iotlb>,
    /// Faults of requesters that belong to no vdevice (EVENT_READ of `HOST_DOMAIN_EVENTS`).
    pub(crate) host_domain_events: spin::Mutex<HostDomainQueue>,
    /// The last guest-operation ticket handed out ([`Tsm::guest_ticket`]).
    guest_tickets: AtomicU64,
    /// Which CPUs run the host (`crate::cpus`).
    pub(crate) cpus: crate::cpus::CpuStates,
}

impl<'a> Tsm<'a> {
    /// A monitor over `dram`, of which `tsm` (image and carve-out, which must hold `descs`) is
    /// the TSM's own. `descs` needs one entry per DRAM granule (`dram.size / 4096`; 2 bytes
    /// each: 256 KiB for 512 MiB), zeroed ([`GranuleTable::new`]); extra entries are unused.
    /// `iotlb` is the monitor's IOTLB, empty (an image keeps it in a static, `Iotlb::new` being
    /// const); no other monitor may use it.
    pub fn new(
        platform: &'a dyn Platform,
        dram: MemRange,
        tsm: MemRange,
        descs: &'a [AtomicU16],
        iotlb: &'a spin::Mutex<Iotlb>,
    ) -> Result<Self, InitError> {
        if !dram.base.is_granule_aligned() || !dram.size.is_multiple_of(GRANULE_SIZE) {
            return Err(InitError::Misaligned);
        }
        if !iotlb.lock().is_clear() {
            return Err(InitError::IotlbInUse);
        }
        let needed = dram.size >> GRANULE_SHIFT;
        let descs = usize::try_from(needed)
            .ok()
            .and_then(|n| descs.get(..n))
            .ok_or(InitError::TooFewDescriptors { needed })?;
        let tsm_end = Pa(tsm.base.0.saturating_add(tsm.size));
        let format = platform.address_map_format();
        Ok(Tsm {
            platform,
            granules: GranuleTable::new(dram.base, descs, tsm.base..tsm_end),
            fmt: format::for_platform(format),
            format,
            pdevs: spin::Mutex::new(heapless::Vec::new()),
            iommu: if platform.present() {
                platform.table_format()
            } else {
                None
            },
            dma: spin::Mutex::new(DmaTags::new()),
            iotlb,
            host_domain_events: spin::Mutex::new(HostDomainQueue::new()),
            guest_tickets: AtomicU64::new(0),
            cpus: crate::cpus::CpuStates::new(),
        })
    }

    /// A ticket for a guest call that waits on a device operation: never 0 and never handed
    /// out twice (2^64 operations are out of reach), so it names one operation of one vCPU on
    /// one incarnation of a vdevice. The vdevice and the waiting vCPU both keep it; the result
    /// goes only where they match.
    pub(crate) fn guest_ticket(&self) -> u64 {
        self.guest_tickets
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// The granule table (for invariant checks and the HAL's diagnostics).
    pub fn granules(&self) -> &GranuleTable<'a> {
        &self.granules
    }

    /// The format of the TVMs' address maps.
    pub fn address_map_format(&self) -> &'static dyn PteFormat {
        self.fmt
    }

    /// The format of vdevice DMA tables; `None` without a platform IOMMU.
    pub fn dma_table_format(&self) -> Option<DmaTableFormat> {
        self.iommu
    }

    /// The PDEV requester-ID ranges.
    pub fn pdev_ranges(&self) -> heapless::Vec<PdevRange, MAX_PDEVS> {
        self.pdevs.lock().clone()
    }

    /// The largest GPA width a TVM may ask for on this platform. x86-64 TVM maps stay at 47
    /// bits, what 4-level tables translate in the lower canonical half, a width every x86-64
    /// CPU's guest page tables can also reach (the nested walk itself would take 48).
    pub(crate) fn max_gpa_bits(&self) -> u8 {
        match self.format {
            AddressMapFormat::ArmStage2 => addrmap::MAX_GPA_BITS,
            AddressMapFormat::X86_64FourLevel => addrmap::MAX_GPA_BITS - 1,
        }
    }

    /// Whether this platform offers `t` (FEATURES `VIOMMU_TYPES`). The secure vIOMMU walks
    /// both stage-1 formats in software, so every TSM type is available on both arches.
    pub(crate) fn supports_viommu(&self, t: tsm_abi::viommu::ViommuType) -> bool {
        tsm_abi::features::ViommuTypes::all().contains(tsm_abi::features::ViommuTypes::of(t))
    }

    /// The address map rooted at `root`.
    pub(crate) fn map(&self, root: Pa) -> AddressMap<'_> {
        AddressMap::new(self.platform, self.fmt, root)
    }

    /// Locks the NS granule holding `[pa, pa + len)` (which must not cross a granule), so the
    /// host cannot delegate it while the TSM reads or writes it. `InvalidBuffer` (index `arg`)
    /// otherwise.
    pub(crate) fn lock_ns_buffer(
        &self,
        pa: Pa,
        len: u64,
        arg: u8,
    ) -> Result<Locked<'_, 'a>, Status> {
        self.check_ns_buffer(pa, len, arg)?;
        self.granules
            .lock_in(pa.granule_base(), GranuleState::Ns)
            .map_err(|_| Status::arg(StatusCode::InvalidBuffer, arg))
    }

    /// [`Tsm::lock_ns_buffer`]'s checks on the published state, without the lock: for a
    /// buffer checked now and locked again when it is used (VCPU_RUN's exit record). A buffer
    /// in an object's granule fails here, so a caller holding that object cannot wait on it.
    pub(crate) fn check_ns_buffer(&self, pa: Pa, len: u64, arg: u8) -> Result<(), Status> {
        let bad = Status::arg(StatusCode::InvalidBuffer, arg);
        if len == 0
            || pa
                .granule_offset()
                .checked_add(len)
                .is_none_or(|e| e > GRANULE_SIZE)
        {
            return Err(bad);
        }
        // The caller may already hold an object's granule lock (PDEV_CONNECT holds its PDEV) and
        // the host may name a buffer inside that same granule: locking it would spin on our own
        // lock forever. An object granule is never NS, so refuse on the published state before
        // locking; `lock_ns_buffer` repeats the check under the lock, race-free.
        if !matches!(
            self.granules.peek(pa.granule_base()),
            Ok((GranuleState::Ns, _))
        ) {
            return Err(bad);
        }
        Ok(())
    }

    /// Copies a host buffer in, once.
    pub(crate) fn read_ns(&self, pa: Pa, out: &mut [u8], arg: u8) -> Result<(), Status> {
        let _g = self.lock_ns_buffer(pa, out.len() as u64, arg)?;
        self.platform
            .read(pa, out)
            .map_err(|_| Status::arg(StatusCode::InvalidBuffer, arg))
    }

    /// Copies data out to a host buffer.
    pub(crate) fn write_ns(&self, pa: Pa, data: &[u8], arg: u8) -> Result<(), Status> {
        let _g = self.lock_ns_buffer(pa, data.len() as u64, arg)?;
        self.platform
            .write(pa, data)
            .map_err(|_| Status::arg(StatusCode::InvalidBuffer, arg))
    }

    /// Copies a parameter block in once (8-byte aligned, inside one NS granule).
    pub(crate) fn read_params<T: FromBytes + IntoBytes>(
        &self,
        pa: Pa,
        arg: u8,
    ) -> Result<T, Status> {
        if !pa.0.is_multiple_of(8) {
            return Err(Status::arg(StatusCode::InvalidBuffer, arg));
        }
        let mut v = T::new_zeroed();
        self.read_ns(pa, v.as_mut_bytes(), arg)?;
        Ok(v)
    }

    /// Zeroes a granule the TSM owns.
    pub(crate) fn scrub(&self, pa: Pa) -> Result<(), Status> {
        self.platform
            .zero(pa.granule_base(), GRANULE_SIZE as usize)
            .map_err(|_| internal())
    }

    /// Locks two distinct granules in ascending address order (the lock order within a kind),
    /// returning them in argument order. Equal addresses fail with `GranuleState` for `b`.
    pub(crate) fn lock_pair(
        &self,
        a: (Pa, u8),
        b: (Pa, u8),
    ) -> Result<(Locked<'_, 'a>, Locked<'_, 'a>), Status> {
        if a.0.granule_base() == b.0.granule_base() {
            return Err(Status::arg(StatusCode::GranuleState, b.1));
        }
        if a.0 < b.0 {
            let ga = self.granules.lock(a.0).map_err(|e| e.status(a.1))?;
            let gb = self.granules.lock(b.0).map_err(|e| e.status(b.1))?;
            Ok((ga, gb))
        } else {
            let gb = self.granules.lock(b.0).map_err(|e| e.status(b.1))?;
            let ga = self.granules.lock(a.0).map_err(|e| e.status(a.1))?;
            Ok((ga, gb))
        }
    }
}
