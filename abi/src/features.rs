//! The feature registers read with `FEATURES(index)`.
//!
//! Each register is one 64-bit word. Bits this ABI version does not define read as zero; a
//! caller must ignore them (later minor versions may define them). An index past
//! [`FeatureReg::ALL`] fails with `InvalidArgument` (index 1).
//!
//! | index | register | layout |
//! |---|---|---|
//! | 0 | `VIOMMU_TYPES` | [`ViommuTypes`] bit per supported TSM vIOMMU type |
//! | 1 | `STAGE1_FORMATS` | [`Stage1Formats`] bit per supported stage-1 format |
//! | 2 | `DEVICE_LIMITS` | [`DeviceLimits`]: vdevices per TVM / per PDEV, PDEVs, vIOMMUs per TVM (16 bits each) |
//! | 3 | `QUEUE_LIMITS` | [`QueueLimits`]: PASIDs per vdevice (bits 31:0), event-queue depth (47:32), private MMIO pages per vdevice (63:48) |
//! | 4 | `REPORT_LIMITS` | [`ReportLimits`]: max interface report (bits 31:0), max device message (63:32) |
//! | 5 | `TDISP` | [`TdispFeatures`]: TDISP versions (bits 7:0), accepted LOCK flags (bits 31:16) |
//! | 6 | `MEMORY` | [`MemoryFeatures`]: granule shift (7:0), min / max GPA bits (15:8, 23:16) |
//! | 7 | `SECURITY` | [`SecurityFeatures`]: SPDM session, IDE, measurements, ATS, P2P (SPDM session and measurements 1) |
//! | 8 | `BUILD` | [`BuildFlags`]: TEST_DMA_INJECT present |
//! | 9 | `DMA` | [`DmaFeatures`]: DMA-table granules per vdevice (15:0; 0 = no platform IOMMU), IOVA pages a DMA table maps (47:16), vdevices while an IOMMU gates DMA (63:48) |

use bitflags::bitflags;

use crate::layout::abi_enum;
use crate::viommu::{Stage1Format, ViommuType};

abi_enum! {
    /// Feature register indices (argument 1 of FEATURES).
    pub enum FeatureReg ("FEAT") {
        /// Supported TSM vIOMMU types ([`ViommuTypes`]).
        ViommuTypes = 0 => "VIOMMU_TYPES",
        /// Supported stage-1 formats ([`Stage1Formats`]).
        Stage1Formats = 1 => "STAGE1_FORMATS",
        /// Object limits ([`DeviceLimits`]).
        DeviceLimits = 2 => "DEVICE_LIMITS",
        /// PASID and event-queue limits ([`QueueLimits`]).
        QueueLimits = 3 => "QUEUE_LIMITS",
        /// Interface-report and device-message limits ([`ReportLimits`]).
        ReportLimits = 4 => "REPORT_LIMITS",
        /// TDISP versions and LOCK flags ([`TdispFeatures`]).
        Tdisp = 5 => "TDISP",
        /// Granule size and GPA widths ([`MemoryFeatures`]).
        Memory = 6 => "MEMORY",
        /// Link security ([`SecurityFeatures`]).
        Security = 7 => "SECURITY",
        /// Build properties ([`BuildFlags`]).
        Build = 8 => "BUILD",
        /// The platform IOMMU and vdevice DMA tables ([`DmaFeatures`]).
        Dma = 9 => "DMA",
    }
}

bitflags! {
    /// FEATURES register `VIOMMU_TYPES`: bit *n* set = TSM vIOMMU type `TSM_TYPE_BASE + n` is
    /// supported by this platform. VIOMMU_CREATE with a TSM type whose bit is clear fails with
    /// `ViommuTypeNotTsm`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct ViommuTypes: u64 {
        /// `TSM_NO_VIOMMU`.
        const TSM_NO_VIOMMU = 1 << 0;
        /// `TSM_SMMUV3`.
        const TSM_SMMUV3 = 1 << 1;
        /// `TSM_VTD`.
        const TSM_VTD = 1 << 2;
    }
}

impl ViommuTypes {
    /// The bit of one type.
    pub const fn of(t: ViommuType) -> Self {
        match t {
            ViommuType::TsmNoViommu => Self::TSM_NO_VIOMMU,
            ViommuType::TsmSmmuv3 => Self::TSM_SMMUV3,
            ViommuType::TsmVtd => Self::TSM_VTD,
        }
    }
}

bitflags! {
    /// FEATURES register `STAGE1_FORMATS`: bit *n* set = [`Stage1Format`] value *n* is supported.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct Stage1Formats: u64 {
        /// `NONE` (always set).
        const NONE = 1 << 0;
        /// `ARM_VMSAV8_64_4K`.
        const ARM_VMSAV8_64_4K = 1 << 1;
        /// `X86_64_FS_4LEVEL`.
        const X86_64_FS_4LEVEL = 1 << 2;
    }
}

impl Stage1Formats {
    /// The bit of one format.
    pub const fn of(f: Stage1Format) -> Self {
        match f {
            Stage1Format::None => Self::NONE,
            Stage1Format::ArmVmsav8_64_4k => Self::ARM_VMSAV8_64_4K,
            Stage1Format::X86_64FirstStage4Level => Self::X86_64_FS_4LEVEL,
        }
    }
}

/// Reads bits `lo..lo+width` of `raw` (`width < 64`).
const fn field(raw: u64, lo: u32, width: u32) -> u64 {
    (raw >> lo) & !(u64::MAX << width)
}

/// FEATURES register `DEVICE_LIMITS`. Each count is the most objects of that kind the TSM's
/// fixed-size tables hold; one more fails with `Capacity`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DeviceLimits {
    /// Bits 15:0: vdevices per TVM.
    pub vdevs_per_tvm: u16,
    /// Bits 31:16: vdevices per PDEV.
    pub vdevs_per_pdev: u16,
    /// Bits 47:32: PDEVs in the system.
    pub pdevs: u16,
    /// Bits 63:48: vIOMMUs per TVM.
    pub viommus_per_tvm: u16,
}

impl DeviceLimits {
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.vdevs_per_tvm as u64)
            | (self.vdevs_per_pdev as u64) << 16
            | (self.pdevs as u64) << 32
            | (self.viommus_per_tvm as u64) << 48
    }
    /// Decodes the register form (every bit is defined).
    pub const fn from_raw(raw: u64) -> Self {
        DeviceLimits {
            vdevs_per_tvm: field(raw, 0, 16) as u16,
            vdevs_per_pdev: field(raw, 16, 16) as u16,
            pdevs: field(raw, 32, 16) as u16,
            viommus_per_tvm: field(raw, 48, 16) as u16,
        }
    }
}

/// FEATURES register `QUEUE_LIMITS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct QueueLimits {
    /// Bits 31:0: PASIDs one vdevice may have stage-1 roots for at once (the root for requests
    /// without PASID comes on top).
    pub pasids_per_vdev: u32,
    /// Bits 47:32: records each per-vdevice event queue holds before it counts overflows.
    pub event_queue_depth: u16,
    /// Bits 63:48: private MMIO pages one vdevice may have mapped at once (VDEV_MMIO_MAP).
    pub mmio_pages_per_vdev: u16,
}

impl QueueLimits {
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.pasids_per_vdev as u64)
            | (self.event_queue_depth as u64) << 32
            | (self.mmio_pages_per_vdev as u64) << 48
    }
    /// Decodes the register form, ignoring undefined bits.
    pub const fn from_raw(raw: u64) -> Self {
        QueueLimits {
            pasids_per_vdev: field(raw, 0, 32) as u32,
            event_queue_depth: field(raw, 32, 16) as u16,
            mmio_pages_per_vdev: field(raw, 48, 16) as u16,
        }
    }
}

/// FEATURES register `REPORT_LIMITS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReportLimits {
    /// Bits 31:0: the largest TDISP interface report the TSM caches per vdevice; a device that
    /// reports a longer one fails the bind with `DeviceError`.
    pub max_report_len: u32,
    /// Bits 63:32: the largest device message (request or response) that fits the
    /// COMMUNICATE buffer's payload.
    pub max_message_len: u32,
}

impl ReportLimits {
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.max_report_len as u64) | (self.max_message_len as u64) << 32
    }
    /// Decodes the register form (every bit is defined).
    pub const fn from_raw(raw: u64) -> Self {
        ReportLimits {
            max_report_len: field(raw, 0, 32) as u32,
            max_message_len: field(raw, 32, 32) as u32,
        }
    }
}

bitflags! {
    /// FEATURES register `TDISP`: bits 7:0 one bit per TDISP version the TSM speaks as requester
    /// (bit 0 = 1.0); bits 31:16 the TDISP LOCK_INTERFACE flags a host may set in
    /// [`VdevParams::lock_flags`](crate::params::VdevParams::lock_flags) (bit 16 + *n* = flag
    /// bit *n*, see [`LockFlags`](crate::params::LockFlags)).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct TdispFeatures: u64 {
        /// TDISP 1.0 (version byte 0x10).
        const VERSION_1_0 = 1 << 0;
        /// LOCK flag NO_FW_UPDATE accepted.
        const LOCK_NO_FW_UPDATE = 1 << 16;
        /// LOCK flag SYSTEM_CACHE_LINE_SIZE accepted.
        const LOCK_SYSTEM_CACHE_LINE_SIZE = 1 << 17;
        /// LOCK flag LOCK_MSIX accepted.
        const LOCK_MSIX = 1 << 18;
        /// LOCK flag BIND_P2P accepted.
        const LOCK_BIND_P2P = 1 << 19;
        /// LOCK flag ALL_REQUEST_REDIRECT accepted.
        const LOCK_ALL_REQUEST_REDIRECT = 1 << 20;
    }
}

impl TdispFeatures {
    /// The LOCK flags the TSM accepts, in [`LockFlags`](crate::params::LockFlags) bit positions.
    pub const fn lock_flags(self) -> crate::params::LockFlags {
        crate::params::LockFlags::from_bits_truncate((self.bits() >> 16) as u16)
    }
}

/// FEATURES register `MEMORY`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemoryFeatures {
    /// Bits 7:0: log2 of the granule size (12 = 4 KiB).
    pub granule_shift: u8,
    /// Bits 15:8: the smallest `TvmParams::gpa_bits` accepted.
    pub min_gpa_bits: u8,
    /// Bits 23:16: the largest `TvmParams::gpa_bits` accepted.
    pub max_gpa_bits: u8,
}

impl MemoryFeatures {
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.granule_shift as u64)
            | (self.min_gpa_bits as u64) << 8
            | (self.max_gpa_bits as u64) << 16
    }
    /// Decodes the register form, ignoring undefined bits.
    pub const fn from_raw(raw: u64) -> Self {
        MemoryFeatures {
            granule_shift: field(raw, 0, 8) as u8,
            min_gpa_bits: field(raw, 8, 8) as u8,
            max_gpa_bits: field(raw, 16, 8) as u8,
        }
    }
}

/// FEATURES register `DMA`: whether a platform IOMMU gates device DMA, and the bounds of the
/// single-stage DMA tables the TSM composes for vdevices in granules the host donates
/// (VDEV_DMA_TABLE).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DmaFeatures {
    /// Bits 15:0: granules one vdevice's DMA table may hold. 0: no platform IOMMU gates DMA on
    /// this platform, and VDEV_DMA_TABLE is refused with `NotSupported`.
    pub tables_per_vdev: u16,
    /// Bits 47:16: IOVA pages one vdevice's DMA table maps at most; DMA to the pages past it
    /// faults.
    pub pages_per_vdev: u32,
    /// Bits 63:48: vdevices the system holds while a platform IOMMU gates DMA (each needs an
    /// IOMMU tag); one more is refused with `Capacity`.
    pub vdevs: u16,
}

impl DmaFeatures {
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.tables_per_vdev as u64)
            | (self.pages_per_vdev as u64) << 16
            | (self.vdevs as u64) << 48
    }
    /// Decodes the register form (every bit is defined).
    pub const fn from_raw(raw: u64) -> Self {
        DmaFeatures {
            tables_per_vdev: field(raw, 0, 16) as u16,
            pages_per_vdev: field(raw, 16, 32) as u32,
            vdevs: field(raw, 48, 16) as u16,
        }
    }
}

bitflags! {
    /// FEATURES register `SECURITY`: link-security functions. A bit reads 1 only once the
    /// matching function is real (a set bit is a promise the TSM keeps, never a placeholder):
    /// this TSM sets `SPDM_SESSION` and `DEVICE_MEASUREMENTS`; IDE, ATS and P2P read 0.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct SecurityFeatures: u64 {
        /// The TSM establishes an SPDM secure session with the DSM and sends TDISP inside it
        /// (`PdevFlags::SPDM`). While clear, TDISP messages travel in the clear
        /// (`CommProtocol::Tdisp`) and `PdevFlags::SPDM` is refused with `NotSupported`.
        const SPDM_SESSION = 1 << 0;
        /// The TSM programs selective IDE streams (keys via IDE_KM). While clear,
        /// `PdevFlags::IDE` is refused with `NotSupported`.
        const IDE_STREAM = 1 << 1;
        /// The TSM fetches signed device measurements for the guest (G_VDEV_MEASUREMENTS) and
        /// the certificate chain that signs them (G_VDEV_CERT_CHAIN).
        const DEVICE_MEASUREMENTS = 1 << 2;
        /// Translated (ATS) requests from vdevices are accepted and checked.
        const ATS = 1 << 3;
        /// Peer-to-peer streams between vdevices (TDISP BIND_P2P).
        const P2P = 1 << 4;
    }
}

bitflags! {
    /// FEATURES register `BUILD`: properties of this TSM build.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct BuildFlags: u64 {
        /// The test-only `TEST_DMA_INJECT` call exists. Never set in a release image: a
        /// production host must refuse to use a TSM that reports it.
        const TEST_DMA_INJECT = 1 << 0;
        /// Debug build (extra logging, assertions).
        const DEBUG = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_registers_round_trip() {
        let d = DeviceLimits {
            vdevs_per_tvm: 0x1234,
            vdevs_per_pdev: 0x5678,
            pdevs: 0x9abc,
            viommus_per_tvm: 0xdef0,
        };
        assert_eq!(d.to_raw(), 0xdef0_9abc_5678_1234);
        assert_eq!(DeviceLimits::from_raw(d.to_raw()), d);
        let q = QueueLimits {
            pasids_per_vdev: 0x1_0000,
            event_queue_depth: 64,
            mmio_pages_per_vdev: 16,
        };
        assert_eq!(q.to_raw(), 0x0010_0040_0001_0000);
        assert_eq!(QueueLimits::from_raw(q.to_raw()), q);
        let r = ReportLimits {
            max_report_len: 4096,
            max_message_len: 4032,
        };
        assert_eq!(ReportLimits::from_raw(r.to_raw()), r);
        let m = MemoryFeatures {
            granule_shift: 12,
            min_gpa_bits: 32,
            max_gpa_bits: 48,
        };
        assert_eq!(m.to_raw(), 0x30_20_0c);
        assert_eq!(MemoryFeatures::from_raw(m.to_raw() | 1 << 40), m);
        let d = DmaFeatures {
            tables_per_vdev: 16,
            pages_per_vdev: 0x1_2345,
            vdevs: 255,
        };
        assert_eq!(d.to_raw(), 0x00ff_0001_2345_0010);
        assert_eq!(DmaFeatures::from_raw(d.to_raw()), d);
    }

    #[test]
    fn type_and_format_bits_follow_their_values() {
        for &t in ViommuType::ALL {
            let n = t.raw() - crate::viommu::TSM_TYPE_BASE;
            assert_eq!(ViommuTypes::of(t).bits(), 1 << n);
        }
        for &f in Stage1Format::ALL {
            assert_eq!(Stage1Formats::of(f).bits(), 1 << f.raw());
        }
    }

    #[test]
    fn tdisp_lock_bits_line_up_with_lock_flags() {
        use crate::params::LockFlags;
        for (name, flag) in LockFlags::all().iter_names() {
            let feat = TdispFeatures::from_bits(u64::from(flag.bits()) << 16).unwrap();
            assert_eq!(feat.lock_flags(), flag, "{name}");
        }
        assert_eq!(
            TdispFeatures::all().lock_flags(),
            LockFlags::all(),
            "every LOCK flag has a feature bit"
        );
    }
}
