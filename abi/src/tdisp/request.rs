//! TDISP requests (TSM → DSM).

use zerocopy::byteorder::little_endian::{U16, U32};

use super::codes::{InterfaceId, RequestCode};
use super::cursor::Writer;
use super::error::{Field, TdispError};
use super::flags::RangeAttributes;
use super::payload::{LockInterfaceParams, MmioRange, NONCE_SIZE, Nonce, VendorData};
use super::{header, wire};

/// A TDISP 1.0 request, decoded and checked. Borrowed data points into the decoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Request<'a> {
    /// `GET_TDISP_VERSION`.
    GetVersion {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `GET_TDISP_CAPABILITIES`.
    GetCapabilities {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// `TSM_CAPS`; all bits reserved in TDISP 1.0, so 0.
        tsm_caps: u32,
    },
    /// `LOCK_INTERFACE_REQUEST`: CONFIG_UNLOCKED → CONFIG_LOCKED.
    LockInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// What to lock and how to report.
        params: LockInterfaceParams,
    },
    /// `GET_DEVICE_INTERFACE_REPORT`: `length` (≥ 1) report bytes from `offset`.
    GetDeviceInterfaceReport {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// 0 for the first portion, then the sum of the portions received.
        offset: u16,
        /// Most bytes the requester takes in the answer; at least 1.
        length: u16,
    },
    /// `GET_DEVICE_INTERFACE_STATE`.
    GetDeviceInterfaceState {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `START_INTERFACE_REQUEST`: CONFIG_LOCKED → RUN.
    StartInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The nonce from `LOCK_INTERFACE_RESPONSE`.
        nonce: Nonce,
    },
    /// `STOP_INTERFACE_REQUEST`: any state → CONFIG_UNLOCKED.
    StopInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `BIND_P2P_STREAM_REQUEST`.
    BindP2pStream {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The P2P IDE stream to bind.
        stream_id: u8,
    },
    /// `UNBIND_P2P_STREAM_REQUEST`.
    UnbindP2pStream {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The P2P IDE stream to unbind.
        stream_id: u8,
    },
    /// `SET_MMIO_ATTRIBUTE_REQUEST`: only [`RangeAttributes::IS_NON_TEE_MEM`] may be set.
    SetMmioAttribute {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The range and its new attributes.
        range: MmioRange,
    },
    /// `VDM_REQUEST`.
    Vdm {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// Registry, vendor ID and vendor data.
        vendor: VendorData<'a>,
    },
}

impl<'a> Request<'a> {
    /// Decodes and checks one whole request message.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, TdispError> {
        let (mut r, raw_type, interface_id) =
            header::decode(bytes, |t| RequestCode::from_wire(t).is_ok())?;
        let code = RequestCode::from_wire(raw_type)?;
        let request = match code {
            RequestCode::GetVersion => Self::GetVersion { interface_id },
            RequestCode::GetCapabilities => {
                let w: &wire::GetCapabilities = r.view()?;
                if w.tsm_caps.get() != 0 {
                    return Err(TdispError::ReservedNonZero(Field::TsmCaps));
                }
                Self::GetCapabilities {
                    interface_id,
                    tsm_caps: 0,
                }
            }
            RequestCode::LockInterface => Self::LockInterface {
                interface_id,
                params: LockInterfaceParams::decode(&mut r)?,
            },
            RequestCode::GetDeviceInterfaceReport => {
                let w: &wire::GetReport = r.view()?;
                if w.length.get() == 0 {
                    return Err(TdispError::InvalidField(Field::ReportRequestLength));
                }
                Self::GetDeviceInterfaceReport {
                    interface_id,
                    offset: w.offset.get(),
                    length: w.length.get(),
                }
            }
            RequestCode::GetDeviceInterfaceState => Self::GetDeviceInterfaceState { interface_id },
            RequestCode::StartInterface => {
                let nonce: &Nonce = r.view()?;
                Self::StartInterface {
                    interface_id,
                    nonce: *nonce,
                }
            }
            RequestCode::StopInterface => Self::StopInterface { interface_id },
            RequestCode::BindP2pStream => Self::BindP2pStream {
                interface_id,
                stream_id: r.u8()?,
            },
            RequestCode::UnbindP2pStream => Self::UnbindP2pStream {
                interface_id,
                stream_id: r.u8()?,
            },
            RequestCode::SetMmioAttribute => {
                let w: &wire::MmioRange = r.view()?;
                Self::SetMmioAttribute {
                    interface_id,
                    range: MmioRange::from_wire(w, RangeAttributes::SETTABLE)?,
                }
            }
            RequestCode::Vdm => Self::Vdm {
                interface_id,
                vendor: VendorData::decode(&mut r)?,
            },
        };
        r.finish()?;
        Ok(request)
    }

    /// Encodes into `out`; returns the message length.
    ///
    /// Refuses (with the error decode would give) any value decode would refuse, so what this
    /// writes always decodes back to `self`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, TdispError> {
        let mut w = Writer::message(out);
        header::encode(&mut w, self.code().to_wire(), self.interface_id())?;
        match self {
            Self::GetVersion { .. }
            | Self::GetDeviceInterfaceState { .. }
            | Self::StopInterface { .. } => {}
            Self::GetCapabilities { tsm_caps, .. } => w.put(&wire::GetCapabilities {
                tsm_caps: U32::new(*tsm_caps),
            })?,
            Self::LockInterface { params, .. } => params.encode(&mut w)?,
            Self::GetDeviceInterfaceReport { offset, length, .. } => w.put(&wire::GetReport {
                offset: U16::new(*offset),
                length: U16::new(*length),
            })?,
            Self::StartInterface { nonce, .. } => w.put_bytes(nonce)?,
            Self::BindP2pStream { stream_id, .. } | Self::UnbindP2pStream { stream_id, .. } => {
                w.put_u8(*stream_id)?;
            }
            Self::SetMmioAttribute { range, .. } => w.put(&range.to_wire())?,
            Self::Vdm { vendor, .. } => vendor.encode(&mut w)?,
        }
        let len = w.len();
        Request::decode(w.into_written())?;
        Ok(len)
    }

    /// The request code.
    pub const fn code(&self) -> RequestCode {
        match self {
            Self::GetVersion { .. } => RequestCode::GetVersion,
            Self::GetCapabilities { .. } => RequestCode::GetCapabilities,
            Self::LockInterface { .. } => RequestCode::LockInterface,
            Self::GetDeviceInterfaceReport { .. } => RequestCode::GetDeviceInterfaceReport,
            Self::GetDeviceInterfaceState { .. } => RequestCode::GetDeviceInterfaceState,
            Self::StartInterface { .. } => RequestCode::StartInterface,
            Self::StopInterface { .. } => RequestCode::StopInterface,
            Self::BindP2pStream { .. } => RequestCode::BindP2pStream,
            Self::UnbindP2pStream { .. } => RequestCode::UnbindP2pStream,
            Self::SetMmioAttribute { .. } => RequestCode::SetMmioAttribute,
            Self::Vdm { .. } => RequestCode::Vdm,
        }
    }

    /// The TDI the request addresses.
    pub const fn interface_id(&self) -> InterfaceId {
        match self {
            Self::GetVersion { interface_id }
            | Self::GetCapabilities { interface_id, .. }
            | Self::LockInterface { interface_id, .. }
            | Self::GetDeviceInterfaceReport { interface_id, .. }
            | Self::GetDeviceInterfaceState { interface_id }
            | Self::StartInterface { interface_id, .. }
            | Self::StopInterface { interface_id }
            | Self::BindP2pStream { interface_id, .. }
            | Self::UnbindP2pStream { interface_id, .. }
            | Self::SetMmioAttribute { interface_id, .. }
            | Self::Vdm { interface_id, .. } => *interface_id,
        }
    }
}

// A START nonce is read as one fixed-size view; keep it in step with the constant.
const _: () = assert!(core::mem::size_of::<Nonce>() == NONCE_SIZE);
