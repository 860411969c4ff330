//! A TDISP device model: the device security manager (DSM) of one device with several TDIs,
//! answering TDISP 1.0 requests as bytes, exactly what a host carries over DOE.
//!
//! Each TDI runs the TDISP state machine: CONFIG_UNLOCKED → (LOCK) → CONFIG_LOCKED →
//! (START with the lock nonce) → RUN; STOP from any state → CONFIG_UNLOCKED. A wrong START
//! nonce is refused with INVALID_NONCE and moves the TDI to ERROR (the nonce is destroyed);
//! requests in the wrong state get INVALID_INTERFACE_STATE. The interface report is built from
//! the configuration at each request (reporting offset added, MSI-X ranges only when locked) and
//! served in portions that must continue where the last one ended. Nonces come from ChaCha20
//! seeded by the configuration, so runs are reproducible.
//!
//! [`Misbehaviour`] knobs make it break the protocol on purpose, alone or combined.
//!
//! ```
//! use tsm_abi::tdisp::{InterfaceId, ReportFields, InterfaceInfo, Request, Response,
//!     MAX_MESSAGE_SIZE};
//! use tsm_device_model::{Device, DeviceConfig, TdiConfig};
//!
//! let tdis = [TdiConfig {
//!     interface_id: InterfaceId::new(0x0100, None),
//!     report: ReportFields {
//!         interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
//!         msi_x_message_control: 0,
//!         lnr_control: 0,
//!         tph_control: 0,
//!     },
//!     mmio_ranges: &[],
//!     device_specific_info: &[],
//! }];
//! let mut device = Device::new(DeviceConfig::new(&tdis, [1; 32])).unwrap();
//! let mut req = [0u8; 64];
//! let mut rsp = [0u8; MAX_MESSAGE_SIZE];
//! let n = Request::GetVersion { interface_id: tdis[0].interface_id }.encode(&mut req).unwrap();
//! let m = device.respond(&req[..n], &mut rsp).unwrap();
//! assert!(matches!(Response::decode(&rsp[..m]), Ok(Response::Version { .. })));
//! ```
#![no_std]

mod config;
mod device;
pub mod fixtures;
pub mod identity;
mod misbehaviour;
pub mod spdm;
mod tdi;

#[cfg(test)]
mod tests;

pub use config::{
    ConfigError, DeviceConfig, MAX_DEVICE_INFO, MAX_RANGES, MAX_TDIS, TdiConfig, VERSIONS_1_0,
};
pub use device::{Device, ModelError};
pub use misbehaviour::Misbehaviour;
