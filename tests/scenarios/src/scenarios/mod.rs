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

use tsm_abi::params::{LockFlags, VdevParams};
use tsm_abi::viommu::ViommuType;
use zerocopy::FromZeros;

use crate::driver::World;
use crate::layout::VBDF_BASE;

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

/// The vdevice `edu` becomes (`dma-diff`, `mmio-private`, `story`): its own requester ID as pBDF
/// and TDI function, at the guest's first vBDF, locked against firmware updates.
pub fn edu_vdev_params(rid: u16) -> VdevParams {
    VdevParams {
        pbdf: rid,
        vbdf: VBDF_BASE,
        function_id: u32::from(rid),
        lock_flags: LockFlags::NO_FW_UPDATE.bits(),
        ..VdevParams::new_zeroed()
    }
}
