//! The scenarios: the seven of the HAL issue, `dma-hw` and `dma-diff` (issue 13). Each builds what it
//! needs with [`crate::driver`], checks its rules, tears down and proves every granule is back
//! in NS.

pub mod acceptance;
pub mod bad_input;
pub mod dma;
pub mod dma_diff;
pub mod dma_hw;
pub mod hostile;
pub mod isolation;
pub mod lifecycle;
pub mod mmio;
pub mod smp;
pub mod spdm;

use tsm_abi::viommu::ViommuType;

use crate::driver::World;

/// The vIOMMU types FEATURES reports (in ABI order).
pub fn viommu_types(w: &World) -> impl Iterator<Item = ViommuType> + '_ {
    ViommuType::ALL.iter().copied().filter(|&t| {
        w.features
            .viommu_types
            .contains(tsm_abi::features::ViommuTypes::of(t))
    })
}

/// The first vIOMMU type FEATURES reports.
pub fn first_viommu_type(w: &World) -> crate::Outcome<ViommuType> {
    viommu_types(w)
        .next()
        .ok_or(crate::Fail::new("FEATURES reports no vIOMMU type", line!()))
}
