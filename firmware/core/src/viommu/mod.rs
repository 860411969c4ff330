//! The secure vIOMMU: one translation engine for **both** T=0 and T=1 DMA of every requester.
//!
//! [`translate`] takes a DMA request ([`Requester`], optional PASID, T bit, IOVA, access) and
//! returns the physical address it may reach, or a [`Fault`]:
//!
//! 1. the requester (segment and requester ID) names a vdevice ([`Devices::vdevice`]) or, if
//!    none, a host device, which goes through the host's own domain ([`Devices::host_domain`])
//!    and then step 4;
//! 2. stage 1 in the format of the vdevice's vIOMMU type ([`Stage1Format`]): Arm VMSAv8-64 with a
//!    4 KiB granule, or x86-64 4-level first-stage paging; skipped for `TSM_NO_VIOMMU` and for
//!    requests without PASID when the guest attached no default root. Stage-1 tables are TVM
//!    memory: every descriptor read is itself translated by stage 2 and must land in the TVM's
//!    *private* memory (a table the host could rewrite would let the host steer T=1 DMA);
//! 3. stage 2: the TVM's address map ([`Stage2::stage2`]), the same one the CPU uses;
//! 4. the final check: T=0 to a secure granule faults ([`FaultReason::T0ToSecure`]) whatever
//!    the path; T=1 needs a vdevice whose TDI is RUN *and* accepted, and a final page that is
//!    the TVM's own (a private mapping must be secure, a shared one non-secure).
//!
//! The final check runs on every request, cached or not, so invariants 1 and 2 never depend on
//! the IOTLB being invalidated on time; invalidation keeps translations exact (a translation never
//! outlives a mapping it came from), see [`Iotlb`].
//!
//! The module does not know how the core stores TVMs, vdevices or address maps: the core
//! implements the small traits below over its objects. It embeds [`PasidTable`],
//! [`EventQueue`] and [`HostEventQueue`] in its VDEV object and keeps one [`Iotlb`] behind a
//! spin mutex.

mod enumerate;
mod events;
mod fault;
mod iotlb;
mod pasid;
mod stage1;
mod walk;

#[cfg(test)]
mod tests;

pub use enumerate::stage1_pages;
pub use events::{
    EVENT_QUEUE_CAPACITY, EventQueue, EventRecord, GuestFault, HostDomainQueue, HostEventQueue,
    HostFault, HostFaultSummary, HostRecord,
};
pub use fault::{Fault, FaultReason};
pub use iotlb::{
    IOTLB_CAPACITY, IOTLB_SETS, IOTLB_WAYS, Iotlb, PasidScope, TABLE_CACHE_CAPACITY,
    WALK_CACHE_CAPACITY,
};
pub use pasid::{PASID_CAPACITY, PasidError, PasidTable, Stage1Root};
pub use walk::{translate, translate_uncached};

use tsm_abi::addr::{Gpa, Iova, Pa};
use tsm_platform::PhysMem;

/// Largest PASID (PCIe PASIDs are 20 bits).
pub const PASID_MAX: u32 = (1 << 20) - 1;

/// Who issued a DMA request: the PCI segment the request arrived on and the PCIe requester ID
/// (bus/device/function) the device put on the bus. Requester IDs repeat across segments, so
/// only the pair names a device.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Requester {
    /// PCI segment (domain).
    pub segment: u16,
    /// Requester ID within the segment.
    pub rid: u16,
}

/// The core's name for a vdevice (its handle). Tags IOTLB entries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct VdevId(pub u64);

/// The core's name for a TVM (its handle). Selects the stage-2 map.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TvmId(pub u64);

/// What a request does to memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Access {
    /// DMA read.
    Read = 0,
    /// DMA write.
    Write = 1,
}

/// Read/write permission of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Perms {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

impl Perms {
    /// No access.
    pub const NONE: Perms = Perms {
        read: false,
        write: false,
    };
    /// Read only.
    pub const R: Perms = Perms {
        read: true,
        write: false,
    };
    /// Read and write.
    pub const RW: Perms = Perms {
        read: true,
        write: true,
    };

    /// Whether `access` is allowed.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

/// The stage-1 format a vIOMMU type gives its guest (mirrors `tsm_abi::viommu::Stage1Format`:
/// the core maps a VIOMMU's type to this with `ViommuType::stage1_format`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage1Format {
    /// `TSM_NO_VIOMMU`: stage 2 only.
    None,
    /// `TSM_SMMUV3`: Arm VMSAv8-64, 4 KiB granule, TTB0 only, 25..=48-bit input; the walk
    /// starts at level 0, 1 or 2 as the input size requires.
    ArmVmsav8_64_4k,
    /// `TSM_VTD`: x86-64 4-level first-stage paging, 48-bit canonical input.
    X86_64FirstStage4Level,
}

impl Stage1Format {
    /// The smallest stage-1 input size (bits) the walk of this format implements; every size
    /// from it to 48 works. `None`: the format has no stage 1. G_S1_ATTACH refuses the others.
    pub const fn min_ia_bits(self) -> Option<u8> {
        match self {
            Stage1Format::None => None,
            Stage1Format::ArmVmsav8_64_4k => Some(25),
            Stage1Format::X86_64FirstStage4Level => Some(48),
        }
    }
}

/// One DMA request as a device issues it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Request {
    /// Who issued it.
    pub requester: Requester,
    /// The PASID prefix, if any (must be `<= PASID_MAX`).
    pub pasid: Option<u32>,
    /// The TDISP T bit: the request claims to come from a TDI in RUN.
    pub t_bit: bool,
    /// Address the device used.
    pub iova: Iova,
    /// Read or write.
    pub access: Access,
}

/// What the core tells the vIOMMU about one vdevice, copied out of its VDEV object for the
/// duration of one translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VdevView {
    /// Its handle.
    pub id: VdevId,
    /// The TVM it is assigned to.
    pub tvm: TvmId,
    /// Stage-1 format of its VIOMMU's type.
    pub format: Stage1Format,
    /// Whether its TDI is in TDISP RUN (`VdevState::Run`).
    pub tdi_run: bool,
    /// Whether the TVM accepted it (G_VDEV_ACCEPT succeeded for this bind).
    pub accepted: bool,
    /// The stage-1 root for the request's PASID: `PasidTable::lookup(pasid)`.
    pub stage1: Stage1Root,
}

/// One 4 KiB page of a TVM's address map as stage 2 sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct S2Entry {
    /// Physical address of the granule the GPA's page maps to (granule-aligned).
    pub pa: Pa,
    /// DMA permissions of the mapping.
    pub perms: Perms,
    /// Private (TVM_PRIVATE granule) or shared (host granule).
    pub private: bool,
}

/// A host device's view of memory (the host's own IOMMU domain, or identity).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostMapping {
    /// Physical address the IOVA itself reaches (not its page: the offset is kept).
    pub pa: Pa,
    /// Permissions of the host mapping.
    pub perms: Perms,
}

/// Requester lookup: the core's vdevice registry and the host's domain.
pub trait Devices {
    /// The vdevice bound to `requester`, with the stage-1 root of `pasid`; `None` for a host
    /// device.
    fn vdevice(&self, requester: Requester, pasid: Option<u32>) -> Option<VdevView>;
    /// Where a host device's `iova` goes (identity, or the host's own map): the PA of `iova`
    /// itself, offset included. `None`: unmapped. Host-domain results are never cached.
    fn host_domain(&self, requester: Requester, iova: Iova) -> Option<HostMapping>;
}

/// The TVM address map (one source of truth for the CPU and the vIOMMU).
pub trait Stage2 {
    /// The mapping of the page holding `gpa` in `tvm`'s map, if any.
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry>;
}

/// The granule table's answer to "is this PA secure?".
pub trait SecureMemory {
    /// Whether `pa`'s granule is secure (any state but NS, including the TSM's own memory).
    fn is_secure(&self, pa: Pa) -> bool;
}

/// Everything one translation needs.
pub trait Context: Devices + Stage2 + SecureMemory {
    /// The reader for stage-1 table pages.
    type Mem: PhysMem;
    /// Physical memory, for stage-1 descriptor reads.
    fn mem(&self) -> &Self::Mem;
}
