//! The values SPDM messages carry, shared by [`Request`](super::Request) and
//! [`Response`](super::Response).

use super::algo::{BaseAsymAlgo, BaseHashAlgo, DheGroup, MeasurementHashAlgo};
use super::codes::{CapFlags, PCI_SIG_VENDOR_ID, STANDARD_ID_PCI_SIG, VersionNumber};
use super::cursor::{Reader, Writer};
use super::measurement::MeasurementRecord;
use super::{Field, SpdmError};

/// DSP0274 1.2's smallest `DataTransferSize` (`MinDataTransferSize`).
pub const MIN_DATA_TRANSFER_SIZE: u32 = 42;
/// DSP0274's largest opaque data (`OpaqueDataLength` ≤ 1024).
pub const MAX_OPAQUE_DATA: usize = 1024;
/// `RandomData` of `KEY_EXCHANGE` / `KEY_EXCHANGE_RSP`, and `Nonce` of `GET_MEASUREMENTS` /
/// `MEASUREMENTS`.
pub const NONCE_SIZE: usize = 32;
/// Certificate slots (`SlotID` 0..=7).
pub const SLOT_COUNT: u8 = 8;
/// Longest `ERROR` extended data (DSP0274 1.2: at most 32 bytes).
pub const MAX_EXTENDED_ERROR_DATA: usize = 32;

/// The sizes of the variable fields, fixed by the negotiated algorithms and capabilities: SPDM
/// messages do not carry them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Negotiated {
    /// `H`: the base hash's digest size (digests, root hash, verify data, summary hash).
    pub hash: usize,
    /// `S`: the base asymmetric algorithm's signature size.
    pub signature: usize,
    /// `D`: the DHE group's `ExchangeData` size.
    pub exchange: usize,
    /// The measurement hash's digest size (0 for raw bit streams only).
    pub measurement_hash: usize,
    /// Both sides set `HANDSHAKE_IN_THE_CLEAR_CAP`: `FINISH` / `FINISH_RSP` travel in the clear
    /// and `ResponderVerifyData` moves from `KEY_EXCHANGE_RSP` to `FINISH_RSP`.
    pub handshake_in_clear: bool,
}

impl Negotiated {
    /// Before `ALGORITHMS`: no variable field can be decoded yet.
    pub const NONE: Self = Self {
        hash: 0,
        signature: 0,
        exchange: 0,
        measurement_hash: 0,
        handshake_in_clear: false,
    };

    /// The sizes of one selection of each (`None` if one of them is not a single known
    /// algorithm).
    pub fn from_selection(
        base_asym: BaseAsymAlgo,
        base_hash: BaseHashAlgo,
        dhe: DheGroup,
        measurement_hash: MeasurementHashAlgo,
        handshake_in_clear: bool,
    ) -> Option<Self> {
        Some(Self {
            hash: base_hash.digest_len()?,
            signature: base_asym.signature_len()?,
            exchange: dhe.exchange_len()?,
            measurement_hash: measurement_hash.digest_len()?,
            handshake_in_clear,
        })
    }
}

/// The body of `GET_CAPABILITIES` and `CAPABILITIES` (1.2 layout, 20 bytes with the header).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Capabilities {
    /// `CTExponent`: cryptographic timeout 2^n µs.
    pub ct_exponent: u8,
    /// `Flags`.
    pub flags: CapFlags,
    /// `DataTransferSize`: the largest message the sender can receive whole.
    pub data_transfer_size: u32,
    /// `MaxSPDMmsgSize`: the largest message it can reassemble (chunking).
    pub max_message_size: u32,
}

impl Capabilities {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, SpdmError> {
        r.u8()?;
        let ct_exponent = r.u8()?;
        r.u16()?;
        let flags = CapFlags::from_bits_retain(r.u32()?);
        let data_transfer_size = r.u32()?;
        let max_message_size = r.u32()?;
        let caps = Self {
            ct_exponent,
            flags,
            data_transfer_size,
            max_message_size,
        };
        caps.check()?;
        Ok(caps)
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), SpdmError> {
        self.check()?;
        w.u8(0)?;
        w.u8(self.ct_exponent)?;
        w.u16(0)?;
        w.u32(self.flags.bits())?;
        w.u32(self.data_transfer_size)?;
        w.u32(self.max_message_size)
    }

    fn check(&self) -> Result<(), SpdmError> {
        let both = |a: CapFlags, b: CapFlags| self.flags.contains(a | b);
        // `MEAS_CAP` and `PSK_CAP` = 11b are reserved values.
        if both(CapFlags::MEAS_CAP_NO_SIG, CapFlags::MEAS_CAP_SIG)
            || both(CapFlags::PSK_CAP, CapFlags::PSK_CAP_WITH_CONTEXT)
        {
            return Err(SpdmError::InvalidField(Field::CapabilityFlags));
        }
        if self.data_transfer_size < MIN_DATA_TRANSFER_SIZE
            || self.max_message_size < self.data_transfer_size
        {
            return Err(SpdmError::InvalidField(Field::DataTransferSize));
        }
        Ok(())
    }
}

/// The version entries of `VERSION`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct VersionList<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> VersionList<'a> {
    /// Wraps little-endian `VersionNumberEntry` bytes (2 per entry).
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = VersionNumber> + 'a {
        self.bytes
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(|b| VersionNumber(u16::from_le_bytes(b)))
    }

    /// Whether an entry has version byte `v` (major and minor; update and alpha ignored).
    pub fn contains(&self, v: u8) -> bool {
        self.iter().any(|e| e.version_byte() == v)
    }

    /// Number of entries.
    pub fn count(&self) -> usize {
        self.bytes.len() / 2
    }
}

/// The digests of `DIGESTS`, one per bit of the slot mask, in slot order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct DigestList<'a> {
    /// `Param2`: the slots with a certificate chain.
    pub slot_mask: u8,
    pub(crate) bytes: &'a [u8],
    pub(crate) hash: usize,
}

impl<'a> DigestList<'a> {
    /// The digests of the slots in `slot_mask`, `hash` bytes each, in slot order.
    pub fn new(slot_mask: u8, bytes: &'a [u8], hash: usize) -> Self {
        Self {
            slot_mask,
            bytes,
            hash,
        }
    }

    /// The chain digest of `slot`, if the slot has a chain.
    pub fn digest(&self, slot: u8) -> Option<&'a [u8]> {
        if slot >= SLOT_COUNT || self.slot_mask & (1 << slot) == 0 {
            return None;
        }
        let below = (self.slot_mask & ((1u8 << slot).wrapping_sub(1))).count_ones();
        let start = usize::try_from(below).ok()?.checked_mul(self.hash)?;
        self.bytes.get(start..start.checked_add(self.hash)?)
    }

    /// All digests, in slot order.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// `MEASUREMENTS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Measurements<'a> {
    /// `Param1`: the number of measurement indices when the request asked for the count,
    /// reserved otherwise.
    pub total_blocks: u8,
    /// `Param2` bits 3:0: the slot whose key signed (reserved when unsigned).
    pub slot: u8,
    /// `Param2` bits 5:4 (1.2): 01b measurements changed since the last request, 10b not
    /// changed, 00b not detected.
    pub content_changed: u8,
    /// `NumberOfBlocks` blocks, checked.
    pub record: MeasurementRecord<'a>,
    /// `Nonce`: the responder's.
    pub nonce: [u8; NONCE_SIZE],
    /// `OpaqueData`.
    pub opaque: &'a [u8],
    /// `Signature`, present when the request asked for one.
    pub signature: Option<&'a [u8]>,
}

/// `KEY_EXCHANGE`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct KeyExchange<'a> {
    /// `Param1`: `MeasurementSummaryHashType` (0 none, 1 TCB, 0xFF all).
    pub summary_type: u8,
    /// `Param2`: the responder's certificate slot (0..=7), or 0xFF for a provisioned key.
    pub slot: u8,
    /// `ReqSessionID`.
    pub req_session_id: u16,
    /// `SessionPolicy` (1.2; bit 0 `TerminationPolicy`).
    pub session_policy: u8,
    /// `RandomData`.
    pub random: [u8; NONCE_SIZE],
    /// `ExchangeData` (`D` bytes: for ECDHE, X ‖ Y).
    pub exchange: &'a [u8],
    /// `OpaqueData`.
    pub opaque: &'a [u8],
}

/// `KEY_EXCHANGE_RSP`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct KeyExchangeRsp<'a> {
    /// `Param1`: `HeartbeatPeriod`.
    pub heartbeat_period: u8,
    /// `RspSessionID`.
    pub rsp_session_id: u16,
    /// `MutAuthRequested`.
    pub mut_auth_requested: u8,
    /// `ReqSlotIDParam`.
    pub req_slot_id: u8,
    /// `RandomData`.
    pub random: [u8; NONCE_SIZE],
    /// `ExchangeData` (`D` bytes).
    pub exchange: &'a [u8],
    /// `MeasurementSummaryHash` (`H` bytes), when the request asked for a summary.
    pub measurement_summary: Option<&'a [u8]>,
    /// `OpaqueData`.
    pub opaque: &'a [u8],
    /// `Signature` (`S` bytes), over the transcript up to the field before it.
    pub signature: &'a [u8],
    /// `ResponderVerifyData` (`H` bytes), unless the handshake is in the clear.
    pub verify_data: Option<&'a [u8]>,
}

impl KeyExchangeRsp<'_> {
    /// The bytes after `Signature`'s start: the signature and the verify data. The signed part
    /// of the message is everything before them.
    pub fn signature_and_verify_len(&self) -> usize {
        self.signature
            .len()
            .saturating_add(self.verify_data.map_or(0, <[u8]>::len))
    }
}

/// `VENDOR_DEFINED_REQUEST` / `VENDOR_DEFINED_RESPONSE`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct VendorDefined<'a> {
    /// `StandardID`: the registry the vendor ID belongs to.
    pub standard_id: u16,
    /// `VendorID` (`Len` bytes).
    pub vendor_id: &'a [u8],
    /// `VendorDefinedReqPayload` / `VendorDefinedRespPayload`.
    pub payload: &'a [u8],
}

/// PCI-SIG's vendor ID as `VendorID` bytes.
const PCI_SIG_VENDOR_ID_BYTES: [u8; 2] = PCI_SIG_VENDOR_ID.to_le_bytes();

impl<'a> VendorDefined<'a> {
    /// A PCI-SIG message: `payload` must already start with the protocol ID.
    pub fn pci_sig(payload: &'a [u8]) -> Self {
        Self {
            standard_id: STANDARD_ID_PCI_SIG,
            vendor_id: &PCI_SIG_VENDOR_ID_BYTES,
            payload,
        }
    }

    /// For a PCI-SIG message (PCI-SIG standard ID and vendor ID): its protocol ID and the
    /// protocol's message.
    pub fn pci_protocol(&self) -> Option<(u8, &'a [u8])> {
        if self.standard_id != STANDARD_ID_PCI_SIG || self.vendor_id != PCI_SIG_VENDOR_ID_BYTES {
            return None;
        }
        let (&protocol, message) = self.payload.split_first()?;
        Some((protocol, message))
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, SpdmError> {
        let standard_id = r.u16()?;
        let vendor_len = r.u8()?;
        let vendor_id = r.bytes(vendor_len.into())?;
        let payload_len = r.u16()?;
        let payload = r.bytes(payload_len.into())?;
        Ok(Self {
            standard_id,
            vendor_id,
            payload,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), SpdmError> {
        w.u16(self.standard_id)?;
        w.u8(u8::try_from(self.vendor_id.len()).map_err(|_| SpdmError::BadLength)?)?;
        w.bytes(self.vendor_id)?;
        w.len16(self.payload.len())?;
        w.bytes(self.payload)
    }
}

/// `ERROR`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ErrorResponse<'a> {
    /// `Param1`: `ErrorCode`.
    pub code: super::ErrorCode,
    /// `Param2`: `ErrorData`.
    pub data: u8,
    /// `ExtendedErrorData` (at most 32 bytes).
    pub extended: &'a [u8],
}
