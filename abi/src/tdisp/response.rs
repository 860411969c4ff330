//! TDISP responses (DSM → TSM).

use zerocopy::byteorder::little_endian::U16;

use super::codes::{InterfaceId, ResponseCode, TdiState};
use super::cursor::Writer;
use super::error::{Field, TdispError};
use super::payload::{Capabilities, ErrorResponse, Nonce, VendorData, VersionList};
use super::request::Request;
use super::{MAX_REPORT_PORTION, header, wire};

/// A TDISP 1.0 response, decoded and checked. Borrowed data points into the decoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Response<'a> {
    /// `TDISP_VERSION`.
    Version {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// Versions the device supports.
        versions: VersionList<'a>,
    },
    /// `TDISP_CAPABILITIES`.
    Capabilities {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The device's capabilities.
        caps: Capabilities,
    },
    /// `LOCK_INTERFACE_RESPONSE`: the TDI is CONFIG_LOCKED.
    LockInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The nonce START must echo.
        nonce: Nonce,
    },
    /// `DEVICE_INTERFACE_REPORT`: one portion of the TDI report.
    DeviceInterfaceReport {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// The report bytes of this portion (`PORTION_LENGTH` of them).
        portion: &'a [u8],
        /// Report bytes still to come after this portion.
        remainder_length: u16,
    },
    /// `DEVICE_INTERFACE_STATE`.
    DeviceInterfaceState {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// Its state.
        state: TdiState,
    },
    /// `START_INTERFACE_RESPONSE`: the TDI is in RUN.
    StartInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `STOP_INTERFACE_RESPONSE`: the TDI is CONFIG_UNLOCKED.
    StopInterface {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `BIND_P2P_STREAM_RESPONSE`.
    BindP2pStream {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `UNBIND_P2P_STREAM_RESPONSE`.
    UnbindP2pStream {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `SET_MMIO_ATTRIBUTE_RESPONSE`.
    SetMmioAttribute {
        /// The TDI addressed.
        interface_id: InterfaceId,
    },
    /// `VDM_RESPONSE`.
    Vdm {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// Registry, vendor ID and vendor data.
        vendor: VendorData<'a>,
    },
    /// `TDISP_ERROR`.
    Error {
        /// The TDI addressed.
        interface_id: InterfaceId,
        /// Code, data and extended data.
        error: ErrorResponse<'a>,
    },
}

impl<'a> Response<'a> {
    /// Decodes and checks one whole response message.
    ///
    /// For a report portion this checks `PORTION_LENGTH` against the bytes present; whether the
    /// portion fits the request and the earlier portions is [`ReportReassembly`]'s job.
    ///
    /// [`ReportReassembly`]: super::ReportReassembly
    pub fn decode(bytes: &'a [u8]) -> Result<Self, TdispError> {
        let (mut r, raw_type, interface_id) =
            header::decode(bytes, |t| ResponseCode::from_wire(t).is_ok())?;
        let code = ResponseCode::from_wire(raw_type)?;
        let response = match code {
            ResponseCode::Version => Self::Version {
                interface_id,
                versions: VersionList::decode(&mut r)?,
            },
            ResponseCode::Capabilities => Self::Capabilities {
                interface_id,
                caps: Capabilities::decode(&mut r)?,
            },
            ResponseCode::LockInterface => {
                let nonce: &Nonce = r.view()?;
                Self::LockInterface {
                    interface_id,
                    nonce: *nonce,
                }
            }
            ResponseCode::DeviceInterfaceReport => {
                let w: &wire::ReportPortion = r.view()?;
                let declared = usize::from(w.portion_length.get());
                let portion = r.rest();
                if portion.len() != declared {
                    return Err(TdispError::Inconsistent(Field::PortionLength));
                }
                Self::DeviceInterfaceReport {
                    interface_id,
                    portion,
                    remainder_length: w.remainder_length.get(),
                }
            }
            ResponseCode::DeviceInterfaceState => Self::DeviceInterfaceState {
                interface_id,
                state: TdiState::from_wire(r.u8()?)?,
            },
            ResponseCode::StartInterface => Self::StartInterface { interface_id },
            ResponseCode::StopInterface => Self::StopInterface { interface_id },
            ResponseCode::BindP2pStream => Self::BindP2pStream { interface_id },
            ResponseCode::UnbindP2pStream => Self::UnbindP2pStream { interface_id },
            ResponseCode::SetMmioAttribute => Self::SetMmioAttribute { interface_id },
            ResponseCode::Vdm => Self::Vdm {
                interface_id,
                vendor: VendorData::decode(&mut r)?,
            },
            ResponseCode::Error => Self::Error {
                interface_id,
                error: ErrorResponse::decode(&mut r)?,
            },
        };
        r.finish()?;
        Ok(response)
    }

    /// Encodes into `out`; returns the message length.
    ///
    /// Refuses (with the error decode would give) any value decode would refuse, so what this
    /// writes always decodes back to `self`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, TdispError> {
        let mut w = Writer::message(out);
        header::encode(&mut w, self.code().to_wire(), self.interface_id())?;
        match self {
            Self::Version { versions, .. } => versions.encode(&mut w)?,
            Self::Capabilities { caps, .. } => caps.encode(&mut w)?,
            Self::LockInterface { nonce, .. } => w.put_bytes(nonce)?,
            Self::DeviceInterfaceReport {
                portion,
                remainder_length,
                ..
            } => {
                if portion.len() > MAX_REPORT_PORTION {
                    return Err(TdispError::Oversized);
                }
                let portion_length = u16::try_from(portion.len())
                    .map_err(|_| TdispError::Inconsistent(Field::PortionLength))?;
                w.put(&wire::ReportPortion {
                    portion_length: U16::new(portion_length),
                    remainder_length: U16::new(*remainder_length),
                })?;
                w.put_bytes(portion)?;
            }
            Self::DeviceInterfaceState { state, .. } => w.put_u8(state.to_wire())?,
            Self::StartInterface { .. }
            | Self::StopInterface { .. }
            | Self::BindP2pStream { .. }
            | Self::UnbindP2pStream { .. }
            | Self::SetMmioAttribute { .. } => {}
            Self::Vdm { vendor, .. } => vendor.encode(&mut w)?,
            Self::Error { error, .. } => error.encode(&mut w)?,
        }
        let len = w.len();
        Response::decode(w.into_written())?;
        Ok(len)
    }

    /// The response code.
    pub const fn code(&self) -> ResponseCode {
        match self {
            Self::Version { .. } => ResponseCode::Version,
            Self::Capabilities { .. } => ResponseCode::Capabilities,
            Self::LockInterface { .. } => ResponseCode::LockInterface,
            Self::DeviceInterfaceReport { .. } => ResponseCode::DeviceInterfaceReport,
            Self::DeviceInterfaceState { .. } => ResponseCode::DeviceInterfaceState,
            Self::StartInterface { .. } => ResponseCode::StartInterface,
            Self::StopInterface { .. } => ResponseCode::StopInterface,
            Self::BindP2pStream { .. } => ResponseCode::BindP2pStream,
            Self::UnbindP2pStream { .. } => ResponseCode::UnbindP2pStream,
            Self::SetMmioAttribute { .. } => ResponseCode::SetMmioAttribute,
            Self::Vdm { .. } => ResponseCode::Vdm,
            Self::Error { .. } => ResponseCode::Error,
        }
    }

    /// The TDI the response is about.
    pub const fn interface_id(&self) -> InterfaceId {
        match self {
            Self::Version { interface_id, .. }
            | Self::Capabilities { interface_id, .. }
            | Self::LockInterface { interface_id, .. }
            | Self::DeviceInterfaceReport { interface_id, .. }
            | Self::DeviceInterfaceState { interface_id, .. }
            | Self::StartInterface { interface_id }
            | Self::StopInterface { interface_id }
            | Self::BindP2pStream { interface_id }
            | Self::UnbindP2pStream { interface_id }
            | Self::SetMmioAttribute { interface_id }
            | Self::Vdm { interface_id, .. }
            | Self::Error { interface_id, .. } => *interface_id,
        }
    }

    /// Whether this can be the answer to `request`: same interface ID, and either the matching
    /// response code or `TDISP_ERROR`. A requester must check this before trusting anything in
    /// the response.
    pub fn answers(&self, request: &Request<'_>) -> bool {
        self.interface_id() == request.interface_id()
            && (self.code() == request.code().response() || self.code() == ResponseCode::Error)
    }
}
