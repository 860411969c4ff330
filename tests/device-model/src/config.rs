//! What the modelled device is: its TDISP versions and capabilities, and its TDIs with their
//! report contents.

use tsm_abi::tdisp::{
    Capabilities, InterfaceId, InterfaceReport, LockFlags, MAX_REPORT_PORTION, MmioRange,
    ReportFields, RequestCode, SupportedRequests, TDISP_VERSION_1_0, TdispError,
};

/// Most TDIs one modelled DSM hosts.
pub const MAX_TDIS: usize = 8;
/// Most MMIO ranges one TDI reports.
pub const MAX_RANGES: usize = 32;
/// Most device-specific info bytes one TDI reports.
pub const MAX_DEVICE_INFO: usize = 512;
/// Room for the largest report the model builds (one spare range for the changing-report knob).
pub(crate) const REPORT_CAPACITY: usize = 16 + (MAX_RANGES + 1) * 16 + 4 + MAX_DEVICE_INFO;

/// One TDI of the device.
#[derive(Clone, Copy, Debug)]
pub struct TdiConfig<'c> {
    /// Its interface ID.
    pub interface_id: InterfaceId,
    /// Fixed report fields. MSI-X and TPH controls are reported only if the lock asked for
    /// `LOCK_MSIX` (the spec says they must read 0 otherwise).
    pub report: ReportFields,
    /// MMIO ranges in host-physical page frames; the lock's reporting offset is added when
    /// reported. Ranges marked `MSIX_TABLE`/`MSIX_PBA` are reported only under `LOCK_MSIX`.
    pub mmio_ranges: &'c [MmioRange],
    /// `DEVICE_SPECIFIC_INFO`.
    pub device_specific_info: &'c [u8],
}

/// The modelled DSM.
#[derive(Clone, Copy, Debug)]
pub struct DeviceConfig<'c> {
    /// `TDISP_VERSION` entries; must offer 1.0.
    pub versions: &'c [u8],
    /// `TDISP_CAPABILITIES`. `REQ_MSGS_SUPPORTED` must not list VDM_REQUEST (the model has no
    /// vendor messages; it answers them UNSUPPORTED_REQUEST).
    pub capabilities: Capabilities,
    /// The TDIs.
    pub tdis: &'c [TdiConfig<'c>],
    /// Largest report portion the device sends in one response (its own buffer limit).
    pub max_report_portion: u16,
    /// Seed of the nonce generator (ChaCha20): same seed, same nonces.
    pub nonce_seed: [u8; 32],
}

/// The version list a TDISP 1.0 device offers.
pub const VERSIONS_1_0: &[u8] = &[TDISP_VERSION_1_0];

impl<'c> DeviceConfig<'c> {
    /// A TDISP 1.0 device hosting `tdis`: every request but VDM, every lock flag, 52 address
    /// bits, one outstanding request per TDI, full-size report portions.
    pub fn new(tdis: &'c [TdiConfig<'c>], nonce_seed: [u8; 32]) -> Self {
        let req_msgs_supported = RequestCode::ALL
            .iter()
            .filter(|&&code| code != RequestCode::Vdm)
            .fold(SupportedRequests::NONE, |set, &code| set.with(code));
        Self {
            versions: VERSIONS_1_0,
            capabilities: Capabilities {
                dsm_caps: 0,
                req_msgs_supported,
                lock_interface_flags_supported: LockFlags::all(),
                dev_addr_width: 52,
                num_req_this: 1,
                num_req_all: 1,
            },
            tdis,
            // MAX_REPORT_PORTION (4029) fits a u16.
            max_report_portion: MAX_REPORT_PORTION as u16,
            nonce_seed,
        }
    }

    /// Checks what `Device::new` needs: limits, unique IDs, encodable answers.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.tdis.len() > MAX_TDIS {
            return Err(ConfigError::TooManyTdis);
        }
        if !self.versions.contains(&TDISP_VERSION_1_0) || self.versions.len() > 255 {
            return Err(ConfigError::Versions);
        }
        if self
            .capabilities
            .req_msgs_supported
            .contains(RequestCode::Vdm)
        {
            return Err(ConfigError::VdmNotModelled);
        }
        let mut buf = [0u8; 64];
        tsm_abi::tdisp::Response::Capabilities {
            interface_id: InterfaceId::new(0, None),
            caps: self.capabilities,
        }
        .encode(&mut buf)
        .map_err(ConfigError::Capabilities)?;
        if self.max_report_portion == 0 || usize::from(self.max_report_portion) > MAX_REPORT_PORTION
        {
            return Err(ConfigError::PortionSize);
        }
        for (i, tdi) in self.tdis.iter().enumerate() {
            let later = self.tdis.get(i.saturating_add(1)..).unwrap_or_default();
            if later.iter().any(|t| t.interface_id == tdi.interface_id) {
                return Err(ConfigError::DuplicateInterface);
            }
            if tdi.mmio_ranges.len() > MAX_RANGES {
                return Err(ConfigError::TooManyRanges);
            }
            if tdi.device_specific_info.len() > MAX_DEVICE_INFO {
                return Err(ConfigError::DeviceInfoTooLong);
            }
            let mut report = [0u8; REPORT_CAPACITY];
            InterfaceReport::encode(
                &tdi.report,
                tdi.mmio_ranges,
                tdi.device_specific_info,
                &mut report,
            )
            .map_err(ConfigError::Report)?;
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfigError {
    /// More than [`MAX_TDIS`] TDIs.
    TooManyTdis,
    /// Two TDIs share an interface ID.
    DuplicateInterface,
    /// A TDI has more than [`MAX_RANGES`] MMIO ranges.
    TooManyRanges,
    /// A TDI has more than [`MAX_DEVICE_INFO`] bytes of device-specific info.
    DeviceInfoTooLong,
    /// A TDI's report would not pass the codec (overlapping ranges, reserved bits, ...).
    Report(TdispError),
    /// The version list is empty, too long, or lacks TDISP 1.0.
    Versions,
    /// The capabilities would not pass the codec.
    Capabilities(TdispError),
    /// The capabilities list VDM_REQUEST, which the model does not implement.
    VdmNotModelled,
    /// `max_report_portion` is 0 or above the codec's portion cap.
    PortionSize,
}
