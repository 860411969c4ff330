//! Why an SPDM message (or a secured-message record) was refused by the codec.

/// Names the field an [`SpdmError`] is about, so a log line says what was wrong without a dump.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Field {
    /// `VERSION` `VersionNumberEntryCount` is 0.
    VersionCount,
    /// `GET_CAPABILITIES` / `CAPABILITIES` `Flags`: a combination DSP0274 1.2 calls reserved
    /// (`MEAS_CAP` or `PSK_CAP` = 11b).
    CapabilityFlags,
    /// `DataTransferSize` below the 1.2 minimum (42), or above `MaxSPDMmsgSize`.
    DataTransferSize,
    /// The `Length` of `NEGOTIATE_ALGORITHMS` / `ALGORITHMS` disagrees with the message.
    AlgorithmsLength,
    /// An algorithm structure table of an unknown type, out of ascending order, or repeated.
    AlgStructType,
    /// `AlgCount` of an algorithm structure: a fixed-field width other than 2.
    AlgCount,
    /// An `ALGORITHMS` selection with more than one bit set.
    Selection,
    /// `ExtAsymSelCount` / `ExtHashSelCount` above 1.
    ExtSelectionCount,
    /// `SlotID` above 7.
    SlotId,
    /// `DIGESTS`: no slot, or the digests do not match the slot mask.
    SlotMask,
    /// `CERTIFICATE` `PortionLength` is 0 while `RemainderLength` is not.
    PortionLength,
    /// `GET_MEASUREMENTS` `MeasurementOperation` / attribute bits.
    MeasurementOperation,
    /// `NumberOfBlocks` disagrees with the measurement record.
    NumberOfBlocks,
    /// A measurement block index of 0 or 0xFF, or one that repeats.
    BlockIndex,
    /// A measurement block in a specification other than DMTF's.
    BlockSpecification,
    /// A measurement block whose `MeasurementSize` disagrees with its DMTF header.
    BlockSize,
    /// A digest measurement whose size is not the measurement hash size.
    ValueSize,
    /// `OpaqueDataLength` above DSP0274's 1024-byte limit.
    OpaqueLength,
    /// General opaque data (`OpaqueDataFmt1`) that does not parse.
    OpaqueData,
    /// `KEY_UPDATE` `KeyOperation` outside 1..=3.
    KeyOperation,
    /// `FINISH`: a slot ID without a signature, or a signature attribute bit that is reserved.
    FinishAttributes,
    /// `VENDOR_DEFINED_*`: `Len` (vendor ID length).
    VendorIdLength,
    /// `ERROR`: extended error data longer than 32 bytes.
    ExtendedErrorData,
    /// SPDM certificate chain: `Length` disagrees with the bytes.
    ChainLength,
    /// SPDM certificate chain: no DER certificate, or bytes that are not a DER `SEQUENCE`.
    ChainCertificates,
    /// Secured message: `Length` shorter than the MAC and the application data length field.
    RecordLength,
    /// Secured message: `ApplicationDataLength` longer than the decrypted data.
    AppDataLength,
}

/// An SPDM message or secured-message record the codec refuses, or an encode that cannot be
/// done. None of them is ever a panic.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum SpdmError {
    /// The bytes end before the fixed part of the message, or before a length it declares.
    Truncated,
    /// Bytes follow the last field of the message (other than DOE padding, see
    /// [`Response::decode`](super::Response::decode)).
    TrailingBytes,
    /// The `SPDMVersion` byte is not the one this exchange uses (1.0 for `GET_VERSION` /
    /// `VERSION`, 1.2 for everything else).
    VersionMismatch(u8),
    /// A request or response code other than the one expected.
    UnexpectedCode(u8),
    /// A field holds a value outside its defined range.
    InvalidField(Field),
    /// Fields disagree with each other or with the length.
    Inconsistent(Field),
    /// Encode only: a variable field's length is not the negotiated one, or does not fit its
    /// length field.
    BadLength,
    /// Encode only: the output buffer is smaller than the message.
    BufferTooSmall,
}
