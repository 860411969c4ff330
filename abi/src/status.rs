//! Status words.
//!
//! Every call returns a status in the first result register: bits 7:0 hold a [`StatusCode`],
//! bits 15:8 an index that says *which* thing the code is about (TF-RMM packs an index the same
//! way). Bits 63:16 are zero. The meaning of the index is fixed per code and documented on it;
//! an argument index is 1-based (argument 1 is the first argument register).

/// What went wrong (or `Success`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum StatusCode {
    /// The call did what it says. Index: 0.
    Success = 0,
    /// The call ID names no call, or the call or an option of it is not implemented on this
    /// platform or in this build (e.g. SPDM session setup before phase 2). Index: 0 or argument.
    NotSupported = 1,
    /// An argument has a value no state could make valid (reserved bits set, unknown enum value,
    /// non-zero unused register). Index: argument.
    InvalidArgument = 2,
    /// An address argument is not granule-aligned. Index: argument.
    Misaligned = 3,
    /// An address argument is outside the memory this TSM tracks, or a GPA outside the TVM's
    /// address space. Index: argument.
    OutOfRange = 4,
    /// A granule is not in the state the call needs. Index: argument.
    GranuleState = 5,
    /// A handle does not name a live object of the kind the call needs. Index: argument.
    BadHandle = 6,
    /// The object is in a state that does not allow the call. Index: argument.
    ObjectState = 7,
    /// Teardown refused: the object still has children. Index: the [`ObjectKind`] of a child.
    InUse = 8,
    /// The requested ABI version is not implemented. Index: 0.
    VersionMismatch = 9,
    /// The vIOMMU type is unknown. Index: argument.
    ViommuTypeUnknown = 10,
    /// The vIOMMU type is a known type that is not a TSM type (e.g. plain ARM_SMMUV3), or a TSM
    /// type this platform does not support. Index: argument.
    ViommuTypeNotTsm = 11,
    /// The pBDF is outside the PDEV's requester-ID range. Index: argument.
    BdfOutOfRange = 12,
    /// The pBDF is already used by a vdevice, the vBDF is already used in this TVM, or a new
    /// PDEV's requester-ID range overlaps another PDEV's. Index: argument.
    BdfInUse = 13,
    /// Two objects that must belong to the same TVM do not. Index: argument. No ABI 1.0 call
    /// names two TVM-bound objects, so none returns it yet.
    TvmMismatch = 14,
    /// The operation needs device I/O: a request is in the comm buffer; carry it to the device
    /// and call COMMUNICATE with the response. Index: 0.
    NeedsDeviceIo = 15,
    /// The device answered with an error or with a message that breaks the protocol; the object
    /// is now in ERROR. Index: 0.
    DeviceError = 16,
    /// No device operation is pending on the object. Index: argument.
    NoOperation = 17,
    /// A translation table is missing at this level; donate one with TABLE_CREATE. Index: level.
    TableMissing = 18,
    /// The GPA (or table slot) is already mapped. Index: argument.
    AlreadyMapped = 19,
    /// The GPA is not mapped. Index: argument.
    NotMapped = 20,
    /// The call is not allowed from this caller (host call from a guest or the reverse, or a
    /// guest naming a vdevice of another TVM). Index: 0.
    Denied = 21,
    /// The evidence echoed by the guest (nonce, report digest) is stale or wrong. Index: which
    /// field (1 = nonce, 2 = report digest, 3 = report counter, 4 = certificate chain digest,
    /// 5 = measurements digest).
    EvidenceMismatch = 22,
    /// A bounded table of the TSM is full (documented limits in FEATURES). Index: argument.
    Capacity = 23,
    /// A buffer argument is unusable: not NS memory (host) / not mapped (guest), crosses a granule,
    /// or is too small. Index: argument.
    InvalidBuffer = 24,
    /// The queue is empty. Index: 0.
    Empty = 25,
    /// The device operation a guest call waited for (G_VDEV_ACCEPT, G_VDEV_STOP) was cancelled
    /// by the host with OP_CANCEL; the vdevice is in ERROR. Index: 0.
    Cancelled = 26,
    /// TEST_DMA_INJECT: the secure vIOMMU refused the request (an event was queued).
    /// Index: the [`EventReason`](crate::event::EventReason).
    DmaFault = 27,
    /// G_VDEV_MMIO_VALIDATE: the mapping at the GPA is not the page the guest named. Index:
    /// the argument that does not match (2: no unvalidated MMIO page of this vdevice at the
    /// GPA; 3: another range; 4: another page of the range).
    MmioMismatch = 28,
}

/// Object kinds, used as the index of [`StatusCode::InUse`] and in granule-state reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    /// A TVM.
    Tvm = 1,
    /// A vCPU.
    Vcpu = 2,
    /// A physical device (DSM).
    Pdev = 3,
    /// A secure vIOMMU.
    Viommu = 4,
    /// A vPCI function.
    Vdev = 5,
    /// A translation table granule.
    Table = 6,
    /// A private data page.
    PrivatePage = 7,
}

/// A status: code plus index.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// The index (see the code's documentation).
    pub index: u8,
}

impl Status {
    /// Success.
    pub const SUCCESS: Status = Status {
        code: StatusCode::Success,
        index: 0,
    };

    /// A status with index 0.
    pub const fn new(code: StatusCode) -> Self {
        Status { code, index: 0 }
    }
    /// A status about argument `arg` (1-based).
    pub const fn arg(code: StatusCode, arg: u8) -> Self {
        Status { code, index: arg }
    }
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        (self.code as u64) | ((self.index as u64) << 8)
    }
    /// Decodes the register form; `None` for a word no TSM returns.
    pub fn from_raw(raw: u64) -> Option<Self> {
        if raw >> 16 != 0 {
            return None;
        }
        let code = StatusCode::try_from((raw & 0xFF) as u8).ok()?;
        Some(Status {
            code,
            index: (raw >> 8) as u8,
        })
    }
    /// Whether this is success.
    pub const fn is_success(self) -> bool {
        matches!(self.code, StatusCode::Success)
    }
}

impl StatusCode {
    /// Every code, in value order.
    pub const ALL: &'static [StatusCode] = &[
        StatusCode::Success,
        StatusCode::NotSupported,
        StatusCode::InvalidArgument,
        StatusCode::Misaligned,
        StatusCode::OutOfRange,
        StatusCode::GranuleState,
        StatusCode::BadHandle,
        StatusCode::ObjectState,
        StatusCode::InUse,
        StatusCode::VersionMismatch,
        StatusCode::ViommuTypeUnknown,
        StatusCode::ViommuTypeNotTsm,
        StatusCode::BdfOutOfRange,
        StatusCode::BdfInUse,
        StatusCode::TvmMismatch,
        StatusCode::NeedsDeviceIo,
        StatusCode::DeviceError,
        StatusCode::NoOperation,
        StatusCode::TableMissing,
        StatusCode::AlreadyMapped,
        StatusCode::NotMapped,
        StatusCode::Denied,
        StatusCode::EvidenceMismatch,
        StatusCode::Capacity,
        StatusCode::InvalidBuffer,
        StatusCode::Empty,
        StatusCode::Cancelled,
        StatusCode::DmaFault,
        StatusCode::MmioMismatch,
    ];

    /// The upper-case name used in the spec and the C header (`TSM_STATUS_<NAME>`).
    pub const fn name(self) -> &'static str {
        use StatusCode::*;
        match self {
            Success => "SUCCESS",
            NotSupported => "NOT_SUPPORTED",
            InvalidArgument => "INVALID_ARGUMENT",
            Misaligned => "MISALIGNED",
            OutOfRange => "OUT_OF_RANGE",
            GranuleState => "GRANULE_STATE",
            BadHandle => "BAD_HANDLE",
            ObjectState => "OBJECT_STATE",
            InUse => "IN_USE",
            VersionMismatch => "VERSION_MISMATCH",
            ViommuTypeUnknown => "VIOMMU_TYPE_UNKNOWN",
            ViommuTypeNotTsm => "VIOMMU_TYPE_NOT_TSM",
            BdfOutOfRange => "BDF_OUT_OF_RANGE",
            BdfInUse => "BDF_IN_USE",
            TvmMismatch => "TVM_MISMATCH",
            NeedsDeviceIo => "NEEDS_DEVICE_IO",
            DeviceError => "DEVICE_ERROR",
            NoOperation => "NO_OPERATION",
            TableMissing => "TABLE_MISSING",
            AlreadyMapped => "ALREADY_MAPPED",
            NotMapped => "NOT_MAPPED",
            Denied => "DENIED",
            EvidenceMismatch => "EVIDENCE_MISMATCH",
            Capacity => "CAPACITY",
            InvalidBuffer => "INVALID_BUFFER",
            Empty => "EMPTY",
            Cancelled => "CANCELLED",
            DmaFault => "DMA_FAULT",
            MmioMismatch => "MMIO_MISMATCH",
        }
    }
}

impl ObjectKind {
    /// Every kind, in value order.
    pub const ALL: &'static [ObjectKind] = &[
        ObjectKind::Tvm,
        ObjectKind::Vcpu,
        ObjectKind::Pdev,
        ObjectKind::Viommu,
        ObjectKind::Vdev,
        ObjectKind::Table,
        ObjectKind::PrivatePage,
    ];

    /// The upper-case name used in the spec and the C header (`TSM_OBJ_<NAME>`).
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Tvm => "TVM",
            ObjectKind::Vcpu => "VCPU",
            ObjectKind::Pdev => "PDEV",
            ObjectKind::Viommu => "VIOMMU",
            ObjectKind::Vdev => "VDEV",
            ObjectKind::Table => "TABLE",
            ObjectKind::PrivatePage => "PRIVATE_PAGE",
        }
    }
}

impl TryFrom<u8> for StatusCode {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        use StatusCode::*;
        Ok(match v {
            0 => Success,
            1 => NotSupported,
            2 => InvalidArgument,
            3 => Misaligned,
            4 => OutOfRange,
            5 => GranuleState,
            6 => BadHandle,
            7 => ObjectState,
            8 => InUse,
            9 => VersionMismatch,
            10 => ViommuTypeUnknown,
            11 => ViommuTypeNotTsm,
            12 => BdfOutOfRange,
            13 => BdfInUse,
            14 => TvmMismatch,
            15 => NeedsDeviceIo,
            16 => DeviceError,
            17 => NoOperation,
            18 => TableMissing,
            19 => AlreadyMapped,
            20 => NotMapped,
            21 => Denied,
            22 => EvidenceMismatch,
            23 => Capacity,
            24 => InvalidBuffer,
            25 => Empty,
            26 => Cancelled,
            27 => DmaFault,
            28 => MmioMismatch,
            other => return Err(other),
        })
    }
}

impl TryFrom<u8> for ObjectKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        use ObjectKind::*;
        Ok(match v {
            1 => Tvm,
            2 => Vcpu,
            3 => Pdev,
            4 => Viommu,
            5 => Vdev,
            6 => Table,
            7 => PrivatePage,
            other => return Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        let mut n = 0;
        for v in 0..=u8::MAX {
            if let Ok(code) = StatusCode::try_from(v) {
                assert_eq!(code as u8, v);
                for index in [0u8, 1, 6, 255] {
                    let s = Status { code, index };
                    assert_eq!(Status::from_raw(s.to_raw()), Some(s));
                }
                n += 1;
            }
        }
        assert_eq!(n, StatusCode::ALL.len());
        for (i, c) in StatusCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in value order");
        }
        assert_eq!(Status::from_raw(1 << 16), None);
        assert_eq!(Status::from_raw(0xFF), None);
    }
}
