//! Identifiers and enumerated values of TDISP 1.0: interface IDs, message codes, TDI states,
//! error codes, vendor registries.

use super::error::{Field, TdispError};

/// `INTERFACE_ID`: names one TDI within a DSM by the requester ID of the function hosting it.
///
/// Wire form: `FUNCTION_ID` = RID\[15:0\], segment\[23:16\], segment-valid bit 24, bits 31:25
/// reserved; then 8 reserved bytes. A value of this type is always well formed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct InterfaceId {
    function_id: u32,
}

impl InterfaceId {
    const SEGMENT_VALID: u32 = 1 << 24;
    const DEFINED_BITS: u32 = 0x01FF_FFFF;

    /// The TDI hosted by function `requester_id` (bus:dev.fn), in `segment` if the device knows it.
    pub const fn new(requester_id: u16, segment: Option<u8>) -> Self {
        let function_id = match segment {
            Some(seg) => requester_id as u32 | (seg as u32) << 16 | Self::SEGMENT_VALID,
            None => requester_id as u32,
        };
        Self { function_id }
    }

    /// Checks a raw `FUNCTION_ID`: reserved bits 31:25 clear, and no segment number without the
    /// segment-valid bit.
    pub const fn from_function_id(function_id: u32) -> Result<Self, TdispError> {
        if function_id & !Self::DEFINED_BITS != 0 {
            return Err(TdispError::ReservedNonZero(Field::FunctionId));
        }
        if function_id & Self::SEGMENT_VALID == 0 && function_id & 0x00FF_0000 != 0 {
            return Err(TdispError::ReservedNonZero(Field::FunctionId));
        }
        Ok(Self { function_id })
    }

    /// The raw `FUNCTION_ID`.
    pub const fn function_id(self) -> u32 {
        self.function_id
    }

    /// Requester ID (bus:dev.fn) of the hosting function.
    pub const fn requester_id(self) -> u16 {
        // Truncation keeps bits 15:0, which is the field.
        self.function_id as u16
    }

    /// The segment, if the segment-valid bit is set.
    pub const fn segment(self) -> Option<u8> {
        if self.function_id & Self::SEGMENT_VALID != 0 {
            Some((self.function_id >> 16) as u8)
        } else {
            None
        }
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident : $repr:ty, $field:expr, $err:ident {
        $($(#[$vmeta:meta])* $variant:ident = $value:expr,)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr($repr)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The value for a wire code, or the codec error for an undefined one.
            pub const fn from_wire(raw: $repr) -> Result<Self, TdispError> {
                match raw {
                    $($value => Ok(Self::$variant),)*
                    _ => Err(wire_enum!(@err $err, raw, $field)),
                }
            }

            /// The wire code.
            pub const fn to_wire(self) -> $repr {
                self as $repr
            }
        }
    };
    (@err UnknownMessageType, $raw:expr, $field:expr) => { TdispError::UnknownMessageType($raw) };
    (@err InvalidField, $raw:expr, $field:expr) => { TdispError::InvalidField($field) };
}

wire_enum! {
    /// TDISP 1.0 request codes (`MessageType` of a request).
    RequestCode: u8, (), UnknownMessageType {
        /// `GET_TDISP_VERSION`.
        GetVersion = 0x81,
        /// `GET_TDISP_CAPABILITIES`.
        GetCapabilities = 0x82,
        /// `LOCK_INTERFACE_REQUEST`.
        LockInterface = 0x83,
        /// `GET_DEVICE_INTERFACE_REPORT`.
        GetDeviceInterfaceReport = 0x84,
        /// `GET_DEVICE_INTERFACE_STATE`.
        GetDeviceInterfaceState = 0x85,
        /// `START_INTERFACE_REQUEST`.
        StartInterface = 0x86,
        /// `STOP_INTERFACE_REQUEST`.
        StopInterface = 0x87,
        /// `BIND_P2P_STREAM_REQUEST`.
        BindP2pStream = 0x88,
        /// `UNBIND_P2P_STREAM_REQUEST`.
        UnbindP2pStream = 0x89,
        /// `SET_MMIO_ATTRIBUTE_REQUEST`.
        SetMmioAttribute = 0x8A,
        /// `VDM_REQUEST`.
        Vdm = 0x8B,
    }
}

wire_enum! {
    /// TDISP 1.0 response codes (`MessageType` of a response).
    ResponseCode: u8, (), UnknownMessageType {
        /// `TDISP_VERSION`.
        Version = 0x01,
        /// `TDISP_CAPABILITIES`.
        Capabilities = 0x02,
        /// `LOCK_INTERFACE_RESPONSE`.
        LockInterface = 0x03,
        /// `DEVICE_INTERFACE_REPORT`.
        DeviceInterfaceReport = 0x04,
        /// `DEVICE_INTERFACE_STATE`.
        DeviceInterfaceState = 0x05,
        /// `START_INTERFACE_RESPONSE`.
        StartInterface = 0x06,
        /// `STOP_INTERFACE_RESPONSE`.
        StopInterface = 0x07,
        /// `BIND_P2P_STREAM_RESPONSE`.
        BindP2pStream = 0x08,
        /// `UNBIND_P2P_STREAM_RESPONSE`.
        UnbindP2pStream = 0x09,
        /// `SET_MMIO_ATTRIBUTE_RESPONSE`.
        SetMmioAttribute = 0x0A,
        /// `VDM_RESPONSE`.
        Vdm = 0x0B,
        /// `TDISP_ERROR`: the answer to any request that failed.
        Error = 0x7F,
    }
}

impl RequestCode {
    /// The response code a successful answer to this request carries.
    pub const fn response(self) -> ResponseCode {
        match self {
            Self::GetVersion => ResponseCode::Version,
            Self::GetCapabilities => ResponseCode::Capabilities,
            Self::LockInterface => ResponseCode::LockInterface,
            Self::GetDeviceInterfaceReport => ResponseCode::DeviceInterfaceReport,
            Self::GetDeviceInterfaceState => ResponseCode::DeviceInterfaceState,
            Self::StartInterface => ResponseCode::StartInterface,
            Self::StopInterface => ResponseCode::StopInterface,
            Self::BindP2pStream => ResponseCode::BindP2pStream,
            Self::UnbindP2pStream => ResponseCode::UnbindP2pStream,
            Self::SetMmioAttribute => ResponseCode::SetMmioAttribute,
            Self::Vdm => ResponseCode::Vdm,
        }
    }

    /// Bit index in `REQ_MSGS_SUPPORTED` (code − 0x80: every request code has bit 7 set, see
    /// the assertion below, so clearing it is the subtraction).
    pub const fn supported_bit(self) -> u8 {
        self.to_wire() & 0x7F
    }
}

const _: () = {
    let mut codes = RequestCode::ALL;
    while let [code, rest @ ..] = codes {
        assert!(code.to_wire() & 0x80 != 0, "request codes have bit 7 set");
        codes = rest;
    }
};

wire_enum! {
    /// `TDI_STATE` of `DEVICE_INTERFACE_STATE`.
    TdiState: u8, Field::TdiState, InvalidField {
        /// Default state; the VMM configures the TDI. T=1 requests are rejected.
        ConfigUnlocked = 0,
        /// Configuration locked and tracked (after `LOCK_INTERFACE_REQUEST`).
        ConfigLocked = 1,
        /// Operational for the TVM (after `START_INTERFACE_REQUEST` with the lock nonce).
        Run = 2,
        /// A security-relevant change or failure; only `STOP_INTERFACE_REQUEST` leaves it.
        Error = 3,
    }
}

wire_enum! {
    /// `TDISP_ERROR` `ERROR_CODE` values of TDISP 1.0.
    ErrorCode: u32, Field::ErrorCode, InvalidField {
        /// One or more request fields are invalid.
        InvalidRequest = 0x01,
        /// The responder ignored the request; it may succeed if sent again.
        Busy = 0x03,
        /// The TDI is not in a state that allows the request.
        InvalidInterfaceState = 0x04,
        /// An unspecified error.
        Unspecified = 0x05,
        /// The request code is not supported; `ERROR_DATA` holds it.
        UnsupportedRequest = 0x07,
        /// The version is not supported or not the negotiated one.
        VersionMismatch = 0x41,
        /// Vendor-defined; `ERROR_DATA` is the length of the extended error data that follows.
        VendorSpecific = 0xFF,
        /// `INTERFACE_ID` does not exist in this DSM.
        InvalidInterface = 0x101,
        /// `START_INTERFACE_NONCE` does not match the one the device generated.
        InvalidNonce = 0x102,
        /// The device could not generate a nonce.
        InsufficientEntropy = 0x103,
        /// The device configuration is invalid or unsupported for locking.
        InvalidDeviceConfiguration = 0x104,
    }
}

wire_enum! {
    /// `REGISTRY_ID`: who assigned a `VENDOR_ID`.
    Registry: u8, Field::RegistryId, InvalidField {
        /// PCI-SIG vendor ID.
        PciSig = 0x00,
        /// CXL vendor ID.
        Cxl = 0x01,
    }
}
