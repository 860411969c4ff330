//! Identifiers of SPDM 1.2 (DSP0274 1.2, "SPDM messages"): versions, request and response
//! codes, error codes, capability flags.

use bitflags::bitflags;

/// `SPDMVersion` of `GET_VERSION` and `VERSION`, which always travel as 1.0 (DSP0274, `GET_VERSION`).
pub const VERSION_1_0: u8 = 0x10;
/// `SPDMVersion` of every other message this codec handles: SPDM 1.2.
pub const VERSION_1_2: u8 = 0x12;

/// A `VERSION` entry (`VersionNumberEntry`, DSP0274 Table "VERSION response"): major in bits
/// 15:12, minor 11:8, update 7:4, alpha 3:0.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct VersionNumber(pub u16);

impl VersionNumber {
    /// The `SPDMVersion` byte this entry selects (major and minor, update and alpha dropped).
    pub const fn version_byte(self) -> u8 {
        // Bits 15:8 are the byte: the shift leaves exactly 8 bits.
        (self.0 >> 8) as u8
    }

    /// The entry for version byte `v` (update and alpha 0).
    pub const fn from_version_byte(v: u8) -> Self {
        Self((v as u16) << 8)
    }
}

/// Request codes (DSP0274 1.2 Table "SPDM request codes") this codec encodes and decodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum RequestCode {
    /// `GET_DIGESTS`.
    GetDigests = 0x81,
    /// `GET_CERTIFICATE`.
    GetCertificate = 0x82,
    /// `GET_VERSION`.
    GetVersion = 0x84,
    /// `GET_MEASUREMENTS`.
    GetMeasurements = 0xE0,
    /// `GET_CAPABILITIES`.
    GetCapabilities = 0xE1,
    /// `NEGOTIATE_ALGORITHMS`.
    NegotiateAlgorithms = 0xE3,
    /// `KEY_EXCHANGE`.
    KeyExchange = 0xE4,
    /// `FINISH`.
    Finish = 0xE5,
    /// `KEY_UPDATE`.
    KeyUpdate = 0xE9,
    /// `END_SESSION`.
    EndSession = 0xEC,
    /// `VENDOR_DEFINED_REQUEST`.
    VendorDefined = 0xFE,
}

impl RequestCode {
    /// Every request code, for decoders and tests.
    pub const ALL: [Self; 11] = [
        Self::GetDigests,
        Self::GetCertificate,
        Self::GetVersion,
        Self::GetMeasurements,
        Self::GetCapabilities,
        Self::NegotiateAlgorithms,
        Self::KeyExchange,
        Self::Finish,
        Self::KeyUpdate,
        Self::EndSession,
        Self::VendorDefined,
    ];

    /// The code for a raw byte, if this codec knows it.
    pub fn from_raw(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|&c| c as u8 == raw)
    }
}

/// Response codes (DSP0274 1.2 Table "SPDM response codes") this codec encodes and decodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum ResponseCode {
    /// `DIGESTS`.
    Digests = 0x01,
    /// `CERTIFICATE`.
    Certificate = 0x02,
    /// `VERSION`.
    Version = 0x04,
    /// `MEASUREMENTS`.
    Measurements = 0x60,
    /// `CAPABILITIES`.
    Capabilities = 0x61,
    /// `ALGORITHMS`.
    Algorithms = 0x63,
    /// `KEY_EXCHANGE_RSP`.
    KeyExchangeRsp = 0x64,
    /// `FINISH_RSP`.
    FinishRsp = 0x65,
    /// `KEY_UPDATE_ACK`.
    KeyUpdateAck = 0x69,
    /// `END_SESSION_ACK`.
    EndSessionAck = 0x6C,
    /// `VENDOR_DEFINED_RESPONSE`.
    VendorDefined = 0x7E,
    /// `ERROR`.
    Error = 0x7F,
}

impl RequestCode {
    /// The response code that answers this request (an `ERROR` may answer any of them).
    pub const fn response(self) -> ResponseCode {
        match self {
            Self::GetDigests => ResponseCode::Digests,
            Self::GetCertificate => ResponseCode::Certificate,
            Self::GetVersion => ResponseCode::Version,
            Self::GetMeasurements => ResponseCode::Measurements,
            Self::GetCapabilities => ResponseCode::Capabilities,
            Self::NegotiateAlgorithms => ResponseCode::Algorithms,
            Self::KeyExchange => ResponseCode::KeyExchangeRsp,
            Self::Finish => ResponseCode::FinishRsp,
            Self::KeyUpdate => ResponseCode::KeyUpdateAck,
            Self::EndSession => ResponseCode::EndSessionAck,
            Self::VendorDefined => ResponseCode::VendorDefined,
        }
    }

    /// The `SPDMVersion` byte the request and its response carry.
    pub const fn version(self) -> u8 {
        match self {
            Self::GetVersion => VERSION_1_0,
            _ => VERSION_1_2,
        }
    }
}

/// An `ERROR` response's `ErrorCode` (DSP0274 1.2 Table "Error code and error data"). Kept as
/// the raw byte: a responder of a later version may send a code this codec does not name, and
/// the requester fails the same way for all of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// `InvalidRequest`.
    pub const INVALID_REQUEST: Self = Self(0x01);
    /// `Busy`.
    pub const BUSY: Self = Self(0x03);
    /// `UnexpectedRequest`.
    pub const UNEXPECTED_REQUEST: Self = Self(0x04);
    /// `Unspecified`.
    pub const UNSPECIFIED: Self = Self(0x05);
    /// `DecryptError`: a secured message did not decrypt or verify.
    pub const DECRYPT_ERROR: Self = Self(0x06);
    /// `UnsupportedRequest`.
    pub const UNSUPPORTED_REQUEST: Self = Self(0x07);
    /// `SessionRequired`.
    pub const SESSION_REQUIRED: Self = Self(0x0B);
    /// `ResponseTooLarge`.
    pub const RESPONSE_TOO_LARGE: Self = Self(0x0D);
    /// `RequestTooLarge`.
    pub const REQUEST_TOO_LARGE: Self = Self(0x0E);
    /// `VersionMismatch`.
    pub const VERSION_MISMATCH: Self = Self(0x41);
    /// `ResponseNotReady`.
    pub const RESPONSE_NOT_READY: Self = Self(0x42);
    /// `RequestResynch`.
    pub const REQUEST_RESYNCH: Self = Self(0x43);
}

bitflags! {
    /// `GET_CAPABILITIES` / `CAPABILITIES` `Flags` (DSP0274 1.2 Tables "Requester flag fields"
    /// and "Responder flag fields"). Bits the version does not define are kept as they came:
    /// receivers ignore them (DSP0274 §"Reserved fields").
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct CapFlags: u32 {
        /// Responder: negotiated state can be cached across a reset.
        const CACHE_CAP = 1 << 0;
        /// Certificates (`GET_DIGESTS`, `GET_CERTIFICATE`).
        const CERT_CAP = 1 << 1;
        /// `CHALLENGE`.
        const CHAL_CAP = 1 << 2;
        /// Responder: measurements without signature (`MEAS_CAP` = 01b).
        const MEAS_CAP_NO_SIG = 1 << 3;
        /// Responder: measurements with signature (`MEAS_CAP` = 10b).
        const MEAS_CAP_SIG = 1 << 4;
        /// Responder: fresh measurements after every reset.
        const MEAS_FRESH_CAP = 1 << 5;
        /// Secured messages can be encrypted.
        const ENCRYPT_CAP = 1 << 6;
        /// Secured messages carry a MAC.
        const MAC_CAP = 1 << 7;
        /// Mutual authentication.
        const MUT_AUTH_CAP = 1 << 8;
        /// `KEY_EXCHANGE`.
        const KEY_EX_CAP = 1 << 9;
        /// `PSK_EXCHANGE` (bits 11:10, `PSK_CAP`; 01b here).
        const PSK_CAP = 1 << 10;
        /// Responder: `PSK_EXCHANGE` with context (`PSK_CAP` = 10b).
        const PSK_CAP_WITH_CONTEXT = 1 << 11;
        /// Encapsulated requests.
        const ENCAP_CAP = 1 << 12;
        /// `HEARTBEAT`.
        const HBEAT_CAP = 1 << 13;
        /// `KEY_UPDATE`.
        const KEY_UPD_CAP = 1 << 14;
        /// The session handshake (`FINISH`) travels in the clear.
        const HANDSHAKE_IN_THE_CLEAR_CAP = 1 << 15;
        /// A provisioned public key instead of certificates.
        const PUB_KEY_ID_CAP = 1 << 16;
        /// Large messages in chunks.
        const CHUNK_CAP = 1 << 17;
        /// Responder: alias certificate model (1.2).
        const ALIAS_CERT_CAP = 1 << 18;
        /// Responder: `SET_CERTIFICATE` (1.2).
        const SET_CERT_CAP = 1 << 19;
        /// Responder: `GET_CSR` (1.2).
        const CSR_CAP = 1 << 20;
        /// Responder: certificate installation needs a reset (1.2).
        const CERT_INSTALL_RESET_CAP = 1 << 21;
        // Bits DSP0274 1.2 reserves: a later responder may set them.
        const _ = !0;
    }
}

/// `GET_MEASUREMENTS` `MeasurementOperation`: every block.
pub const MEASUREMENTS_ALL: u8 = 0xFF;
/// `GET_MEASUREMENTS` `MeasurementOperation`: only the number of blocks.
pub const MEASUREMENTS_COUNT: u8 = 0x00;

/// `KEY_UPDATE` `KeyOperation` (DSP0274 1.2 Table "KEY_UPDATE operations").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum KeyOperation {
    /// The requester's key only.
    UpdateKey = 1,
    /// Both directions' keys; the ACK travels under the responder's new key.
    UpdateAllKeys = 2,
    /// The first message under the new key(s): confirms the update.
    VerifyNewKey = 3,
}

impl KeyOperation {
    pub(crate) fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::UpdateKey),
            2 => Some(Self::UpdateAllKeys),
            3 => Some(Self::VerifyNewKey),
            _ => None,
        }
    }
}

/// `VENDOR_DEFINED_*` `StandardID` of PCI-SIG (DSP0274 1.2 Table "Registry or standards body
/// ID").
pub const STANDARD_ID_PCI_SIG: u16 = 3;
/// The PCI-SIG vendor ID the PCIe Base spec puts in `VendorID` (with `Len` = 2) for the
/// protocols it carries over SPDM (TDISP, IDE_KM).
pub const PCI_SIG_VENDOR_ID: u16 = 0x0001;
/// `ProtocolID`, the first byte of a PCI-SIG vendor-defined payload, for TDISP (PCIe Base 6.x
/// §11.3; IDE_KM is 0).
pub const PROTOCOL_ID_TDISP: u8 = 0x01;
