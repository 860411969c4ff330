//! Why a TDISP message was refused by the codec.

/// Names the field a [`TdispError`] is about, so a log line says what was wrong without a dump.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Field {
    /// Header bytes 2..4.
    HeaderReserved,
    /// `INTERFACE_ID` bytes 4..12 (the reserved u64).
    InterfaceIdReserved,
    /// `FUNCTION_ID` bits 31:25, or a segment number without the segment-valid bit.
    FunctionId,
    /// `VERSION_NUM_COUNT` (must be at least 1).
    VersionCount,
    /// `TSM_CAPS` (all bits reserved in TDISP 1.0).
    TsmCaps,
    /// `DSM_CAPS` (all bits reserved in TDISP 1.0).
    DsmCaps,
    /// `REQ_MSGS_SUPPORTED`: a bit for a request code TDISP 1.0 does not define.
    ReqMsgsSupported,
    /// `LOCK_INTERFACE_FLAGS_SUPPORTED` bits 15:5.
    LockFlagsSupported,
    /// The 3 reserved bytes of `TDISP_CAPABILITIES`.
    CapabilitiesReserved,
    /// `DEV_ADDR_WIDTH` outside 1..=64.
    DevAddrWidth,
    /// `NUM_REQ_THIS` larger than a non-zero `NUM_REQ_ALL` (0 states no bound).
    NumReq,
    /// `LOCK_INTERFACE_REQUEST` `FLAGS` bits 15:5.
    LockFlags,
    /// The reserved byte of `LOCK_INTERFACE_REQUEST`.
    LockReserved,
    /// `GET_DEVICE_INTERFACE_REPORT` `LENGTH` is 0.
    ReportRequestLength,
    /// `PORTION_LENGTH` disagrees with the bytes present, or exceeds the length asked for.
    PortionLength,
    /// `REMAINDER_LENGTH` disagrees with earlier portions, or the report would exceed its cap.
    RemainderLength,
    /// A portion starts somewhere else than where the previous one ended.
    PortionOffset,
    /// `TDI_STATE` above 3.
    TdiState,
    /// MMIO range attribute bits that are reserved (in the report: 15:4; in
    /// `SET_MMIO_ATTRIBUTE_REQUEST`: everything except `IS_NON_TEE_MEM`).
    RangeAttributes,
    /// An MMIO range with zero pages.
    RangePages,
    /// An MMIO range whose end (`FIRST_PAGE + NUMBER_OF_PAGES`) passes the 64-bit address space.
    RangeOverflow,
    /// Two MMIO ranges of one report overlap.
    RangeOverlap,
    /// `TDISP_ERROR` `ERROR_CODE` is not a TDISP 1.0 code.
    ErrorCode,
    /// `TDISP_ERROR` `ERROR_DATA` is not what the code defines (reserved, request code, or length).
    ErrorData,
    /// `REGISTRY_ID` is neither PCI-SIG (0) nor CXL (1).
    RegistryId,
    /// `VENDOR_ID_LEN` is 0.
    VendorIdLength,
    /// `INTERFACE_INFO` bits 15:5.
    InterfaceInfo,
    /// The reserved u16 at report offset 2.
    ReportReserved,
    /// `MMIO_RANGE_COUNT` does not fit the report bytes.
    MmioRangeCount,
    /// `DEVICE_SPECIFIC_INFO_LEN` does not match the bytes that follow it.
    DeviceSpecificInfoLength,
}

/// A TDISP message (or interface report) the codec refuses, or an encode that cannot be done.
///
/// Each malformation has its own variant so callers and tests can tell them apart; none of them
/// is ever a panic.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TdispError {
    /// The bytes end before the fixed part of the message, or before a length it declares.
    Truncated,
    /// Bytes follow the last field of the message.
    TrailingBytes,
    /// Longer than [`MAX_MESSAGE_SIZE`](super::MAX_MESSAGE_SIZE) (or, for a report,
    /// [`MAX_REPORT_SIZE`](super::MAX_REPORT_SIZE)).
    Oversized,
    /// The `TDISPVersion` byte is not [`TDISP_VERSION_1_0`](super::TDISP_VERSION_1_0).
    VersionMismatch(u8),
    /// The `MessageType` byte is not a message of the direction being decoded.
    UnknownMessageType(u8),
    /// A reserved field or bit is not zero.
    ReservedNonZero(Field),
    /// A field holds a value outside its defined range.
    InvalidField(Field),
    /// Fields disagree with each other or with the length (counts, lengths, address overflow).
    Inconsistent(Field),
    /// Encode only: the output buffer is smaller than the message.
    BufferTooSmall,
}
