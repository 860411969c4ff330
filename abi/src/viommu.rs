//! Secure vIOMMU types and the stage-1 formats they carry.
//!
//! The types mirror the direction of Linux iommufd (`enum iommu_viommu_type`): a vIOMMU object
//! is created with a type, and only a *TSM* type lets its vdevices enter TSM mode (T=1). A host
//! driver passes the TSM value of the iommufd type it was asked for; the iommufd types that
//! exist today (and the proposed ARM_REALM_SMMUV3) are known here so the TSM can refuse them with
//! their own status ([`StatusCode::ViommuTypeNotTsm`](crate::StatusCode::ViommuTypeNotTsm))
//! instead of "unknown".
//!
//! TSM values live at [`TSM_TYPE_BASE`] and up, far from iommufd's small enum values, so a host
//! that forwards an iommufd type number unchanged can never hit a TSM type by accident.
//!
//! | TSM type | value | proposed iommufd name | stage 1 the guest programs |
//! |---|---|---|---|
//! | `TSM_NO_VIOMMU` | `0x5453_0000` | `IOMMU_VIOMMU_TYPE_TSM_NO_VIOMMU` | none ("NOP" type: stage 2 only) |
//! | `TSM_SMMUV3` | `0x5453_0001` | `IOMMU_VIOMMU_TYPE_TSM_SMMUV3` | Arm VMSAv8-64, 4 KiB granule, 25..=48-bit input |
//! | `TSM_VTD` | `0x5453_0002` | `IOMMU_VIOMMU_TYPE_TSM_VTD` | x86-64 4-level first-stage |
//!
//! | iommufd type (not TSM) | value | result of VIOMMU_CREATE |
//! |---|---|---|
//! | `IOMMU_VIOMMU_TYPE_DEFAULT` | 0 | `ViommuTypeNotTsm` |
//! | `IOMMU_VIOMMU_TYPE_ARM_SMMUV3` | 1 | `ViommuTypeNotTsm` |
//! | `IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV` | 2 | `ViommuTypeNotTsm` |
//! | `IOMMU_VIOMMU_TYPE_ARM_REALM_SMMUV3` (proposed) | 3 | `ViommuTypeNotTsm` |
//! | anything else | | `ViommuTypeUnknown` |

use crate::layout::abi_enum;

/// First value of the TSM vIOMMU type range (`"TS" << 16`).
pub const TSM_TYPE_BASE: u32 = 0x5453_0000;

abi_enum! {
    /// A secure vIOMMU type (argument 3 of VIOMMU_CREATE).
    pub enum ViommuType ("VIOMMU_TYPE") {
        /// No guest stage 1: DMA of the TVM's vdevices is translated by the TVM's address map
        /// (stage 2) only. Works on every platform ("NOP" type).
        TsmNoViommu = 0x5453_0000 => "TSM_NO_VIOMMU",
        /// A secure SMMUv3-like vIOMMU: the guest attaches stage-1 tables in the Arm VMSAv8-64
        /// format with a 4 KiB granule.
        TsmSmmuv3 = 0x5453_0001 => "TSM_SMMUV3",
        /// A secure VT-d-like vIOMMU: the guest attaches x86-64 4-level first-stage tables.
        TsmVtd = 0x5453_0002 => "TSM_VTD",
    }
}

abi_enum! {
    /// The format of the guest-owned stage-1 I/O page tables a vIOMMU walks.
    pub enum Stage1Format ("S1_FORMAT") {
        /// No stage 1 (TSM_NO_VIOMMU).
        None = 0 => "NONE",
        /// Arm VMSAv8-64 translation tables, 4 KiB granule, stage 1 (as an SMMUv3 CD's TTB0),
        /// 25..=48-bit input: the walk starts at level 0, 1 or 2 as the input size requires.
        ArmVmsav8_64_4k = 1 => "ARM_VMSAV8_64_4K",
        /// x86-64 4-level paging as used by VT-d first-stage translation (48-bit input).
        X86_64FirstStage4Level = 2 => "X86_64_FS_4LEVEL",
    }
}

impl ViommuType {
    /// The stage-1 format the guest uses under this vIOMMU type.
    pub const fn stage1_format(self) -> Stage1Format {
        match self {
            ViommuType::TsmNoViommu => Stage1Format::None,
            ViommuType::TsmSmmuv3 => Stage1Format::ArmVmsav8_64_4k,
            ViommuType::TsmVtd => Stage1Format::X86_64FirstStage4Level,
        }
    }
}

/// Known iommufd vIOMMU types that are not TSM types (`enum iommu_viommu_type`, plus the
/// proposed `IOMMU_VIOMMU_TYPE_ARM_REALM_SMMUV3 = 3` of the Arm CCA series).
pub mod iommufd {
    /// `IOMMU_VIOMMU_TYPE_DEFAULT`.
    pub const DEFAULT: u64 = 0;
    /// `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
    pub const ARM_SMMUV3: u64 = 1;
    /// `IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV`.
    pub const TEGRA241_CMDQV: u64 = 2;
    /// `IOMMU_VIOMMU_TYPE_ARM_REALM_SMMUV3` (proposed, not merged).
    pub const ARM_REALM_SMMUV3: u64 = 3;
    /// All of the above.
    pub const NON_TSM_TYPES: [u64; 4] = [DEFAULT, ARM_SMMUV3, TEGRA241_CMDQV, ARM_REALM_SMMUV3];
}

/// Why a type value is not a TSM vIOMMU type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ViommuTypeError {
    /// A known vIOMMU type that cannot carry TSM-mode vdevices (e.g. plain ARM_SMMUV3).
    /// The TSM returns `ViommuTypeNotTsm`.
    NotTsm(u64),
    /// A value no type has. The TSM returns `ViommuTypeUnknown`.
    Unknown(u64),
}

impl TryFrom<u64> for ViommuType {
    type Error = ViommuTypeError;
    fn try_from(raw: u64) -> Result<Self, ViommuTypeError> {
        if let Some(t) = ViommuType::from_raw(raw) {
            return Ok(t);
        }
        if iommufd::NON_TSM_TYPES.contains(&raw) {
            Err(ViommuTypeError::NotTsm(raw))
        } else {
            Err(ViommuTypeError::Unknown(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsm_types_decode_and_carry_their_stage1_format() {
        for &t in ViommuType::ALL {
            assert_eq!(ViommuType::try_from(u64::from(t.raw())), Ok(t));
            assert!(t.raw() >= TSM_TYPE_BASE);
        }
        assert_eq!(ViommuType::TsmNoViommu.stage1_format(), Stage1Format::None);
        assert_eq!(
            ViommuType::TsmSmmuv3.stage1_format(),
            Stage1Format::ArmVmsav8_64_4k
        );
        assert_eq!(
            ViommuType::TsmVtd.stage1_format(),
            Stage1Format::X86_64FirstStage4Level
        );
    }

    #[test]
    fn iommufd_types_are_not_tsm_and_others_are_unknown() {
        for raw in iommufd::NON_TSM_TYPES {
            assert_eq!(ViommuType::try_from(raw), Err(ViommuTypeError::NotTsm(raw)));
        }
        for raw in [
            4u64,
            0x5453_0003,
            u64::from(TSM_TYPE_BASE) - 1,
            u64::from(TSM_TYPE_BASE) | 1 << 32,
            u64::MAX,
        ] {
            assert_eq!(
                ViommuType::try_from(raw),
                Err(ViommuTypeError::Unknown(raw))
            );
        }
    }
}
