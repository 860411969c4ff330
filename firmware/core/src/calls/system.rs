//! Discovery and platform calls: VERSION / G_VERSION, FEATURES, CONSOLE_WRITE, SYSTEM_OFF.

use tsm_abi::call::args;
use tsm_abi::comm::COMM_PAYLOAD_SIZE;
use tsm_abi::features::{
    BuildFlags, DeviceLimits, DmaFeatures, FeatureReg, MemoryFeatures, QueueLimits, ReportLimits,
    SecurityFeatures, Stage1Formats, TdispFeatures, ViommuTypes,
};
use tsm_abi::regs::CallResult;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::version::{self, AbiVersion};
use tsm_platform::log::{MAX_PAYLOAD, STREAM_HOST};
use tsm_platform::{DMA_MAX_TAG, ExitCode};

use crate::addrmap;
use crate::dispatch::Reply;
use crate::dma_tables::{DMA_MAX_PAGES, MAX_DMA_TABLES};
use crate::objects::{MAX_VDEVS_PER_PDEV, MAX_VDEVS_PER_TVM, MAX_VIOMMUS_PER_TVM, REPORT_CAPACITY};
use crate::tsm::{MAX_PDEVS, Tsm};
use crate::viommu_glue;

/// VERSION / G_VERSION: the caller names the version it wants; it gets it if it is in range,
/// and always learns the range.
/// Never refused: every outcome is a result, and none has anything past VERSION's three
/// results (the dispatcher relies on that to skip the trim, `Tsm::host`).
pub fn version(requested: u64) -> CallResult {
    let (lowest, highest) = (version::LOWEST.to_raw(), version::HIGHEST.to_raw());
    // The common case first, on the register form: a version's raw form orders as the version
    // does (major above minor) and every raw value in the range is a valid version, so one
    // range compare decides it (the decode and both compares of the general path cost x86_64's
    // VERSION eight instructions).
    if (lowest..=highest).contains(&requested) {
        return CallResult::ok([requested, lowest, highest, 0]);
    }
    // A branch, not selects: without it the compiler computed this status on every VERSION
    // and G_VERSION and selected it away.
    core::hint::cold_path();
    let status = match AbiVersion::from_raw(requested) {
        None => Status::arg(StatusCode::InvalidArgument, 1),
        Some(_) => Status::new(StatusCode::VersionMismatch),
    };
    CallResult {
        status: status.to_raw(),
        out: [0, lowest, highest, 0],
    }
}

// What the range compare above relies on: the range is a range of valid versions.
const _: () = assert!(
    version::LOWEST.to_raw() <= version::HIGHEST.to_raw()
        && AbiVersion::from_raw(version::HIGHEST.to_raw()).is_some()
);

/// TDISP LOCK flags the TSM passes to devices. BIND_P2P needs P2P support (FEATURES
/// `SECURITY.P2P`), which this phase lacks.
pub const ACCEPTED_LOCK_FEATURES: TdispFeatures = TdispFeatures::LOCK_NO_FW_UPDATE
    .union(TdispFeatures::LOCK_SYSTEM_CACHE_LINE_SIZE)
    .union(TdispFeatures::LOCK_MSIX)
    .union(TdispFeatures::LOCK_ALL_REQUEST_REDIRECT);

/// The value of one feature register.
pub fn feature(t: &Tsm<'_>, reg: FeatureReg) -> u64 {
    match reg {
        FeatureReg::ViommuTypes => ViommuTypes::all().bits(),
        FeatureReg::Stage1Formats => Stage1Formats::all().bits(),
        FeatureReg::DeviceLimits => DeviceLimits {
            vdevs_per_tvm: MAX_VDEVS_PER_TVM as u16,
            vdevs_per_pdev: MAX_VDEVS_PER_PDEV as u16,
            pdevs: MAX_PDEVS as u16,
            viommus_per_tvm: MAX_VIOMMUS_PER_TVM as u16,
        }
        .to_raw(),
        FeatureReg::QueueLimits => QueueLimits {
            pasids_per_vdev: viommu_glue::PASIDS_PER_VDEV,
            event_queue_depth: viommu_glue::EVENT_QUEUE_DEPTH,
            mmio_pages_per_vdev: crate::private_mmio::MAX_MMIO_PAGES as u16,
        }
        .to_raw(),
        FeatureReg::ReportLimits => ReportLimits {
            max_report_len: REPORT_CAPACITY as u32,
            max_message_len: COMM_PAYLOAD_SIZE as u32,
        }
        .to_raw(),
        FeatureReg::Tdisp => (TdispFeatures::VERSION_1_0 | ACCEPTED_LOCK_FEATURES).bits(),
        FeatureReg::Memory => MemoryFeatures {
            granule_shift: 12,
            min_gpa_bits: addrmap::MIN_GPA_BITS,
            max_gpa_bits: t.max_gpa_bits(),
        }
        .to_raw(),
        FeatureReg::Security => {
            (SecurityFeatures::SPDM_SESSION | SecurityFeatures::DEVICE_MEASUREMENTS).bits()
        }
        FeatureReg::Build => {
            let mut f = BuildFlags::empty();
            if cfg!(feature = "dma-inject") {
                f |= BuildFlags::TEST_DMA_INJECT;
            }
            if cfg!(debug_assertions) {
                f |= BuildFlags::DEBUG;
            }
            f.bits()
        }
        // All zero without a platform IOMMU: no DMA tables, nothing bounded by tags.
        FeatureReg::Dma => match t.iommu {
            Some(_) => DmaFeatures {
                tables_per_vdev: MAX_DMA_TABLES as u16,
                pages_per_vdev: DMA_MAX_PAGES,
                vdevs: DMA_MAX_TAG,
            },
            None => DmaFeatures::default(),
        }
        .to_raw(),
    }
}

/// FEATURES: one register per index.
pub fn features(t: &Tsm<'_>, a: args::Features) -> Reply {
    let reg = FeatureReg::from_raw(a.index).ok_or(Status::arg(StatusCode::InvalidArgument, 1))?;
    Ok(CallResult::ok([feature(t, reg), 0, 0, 0]))
}

/// CONSOLE_WRITE: one framed record from a host buffer inside one NS granule.
pub fn console_write(t: &Tsm<'_>, a: args::ConsoleWrite) -> Reply {
    let len = a.len;
    if len == 0 || len > MAX_PAYLOAD as u64 {
        return Err(Status::arg(StatusCode::InvalidArgument, 2));
    }
    let mut frame = [0u8; MAX_PAYLOAD];
    let frame = frame
        .get_mut(..len as usize)
        .ok_or(Status::arg(StatusCode::InvalidArgument, 2))?;
    t.read_ns(a.buffer, frame, 1)?;
    t.platform.relay(STREAM_HOST, frame);
    Ok(CallResult::ok([0; 4]))
}

/// SYSTEM_OFF: ends the run (0 = success).
pub fn system_off(t: &Tsm<'_>, a: args::SystemOff) -> Reply {
    t.platform.power_off(if a.code == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
