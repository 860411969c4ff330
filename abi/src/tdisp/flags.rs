//! Bit fields of TDISP 1.0 messages and of the interface report. Undefined bits are reserved;
//! the decoders refuse them (`ReservedNonZero`).

use bitflags::bitflags;

bitflags! {
    /// `LOCK_INTERFACE_REQUEST` `FLAGS` (and `LOCK_INTERFACE_FLAGS_SUPPORTED`).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct LockFlags: u16 {
        /// No device firmware update while the TDI is CONFIG_LOCKED or RUN.
        const NO_FW_UPDATE = 0x1;
        /// System cache line size is 128 bytes (clear: 64 bytes).
        const SYSTEM_CACHE_LINE_SIZE = 0x2;
        /// Lock the MSI-X table and PBA.
        const LOCK_MSIX = 0x4;
        /// Direct P2P may later be enabled with `BIND_P2P_STREAM_REQUEST`.
        const BIND_P2P = 0x8;
        /// Redirect all ATS translation requests upstream to the root complex.
        const ALL_REQUEST_REDIRECT = 0x10;
    }
}

bitflags! {
    /// Report `INTERFACE_INFO`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct InterfaceInfo: u16 {
        /// Firmware updates are refused while the TDI is CONFIG_LOCKED or RUN.
        const NO_UPDATE_AFTER_LOCK = 0x1;
        /// The TDI issues DMA without PASID.
        const DMA_WITHOUT_PASID = 0x2;
        /// The TDI issues DMA with PASID.
        const DMA_WITH_PASID = 0x4;
        /// ATS is supported and enabled.
        const ATS_SUPPORTED = 0x8;
        /// PRS is supported and enabled.
        const PRS_SUPPORTED = 0x10;
    }
}

bitflags! {
    /// MMIO range attributes (bits 15:0 of the range's attribute dword).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct RangeAttributes: u16 {
        /// The range maps the MSI-X table (reported only when locked).
        const MSIX_TABLE = 0x1;
        /// The range maps the MSI-X PBA (reported only when locked).
        const MSIX_PBA = 0x2;
        /// The range is non-TEE memory.
        const IS_NON_TEE_MEM = 0x4;
        /// The range's attributes can be changed with `SET_MMIO_ATTRIBUTE_REQUEST`.
        const IS_MEM_ATTR_UPDATABLE = 0x8;
    }
}

impl RangeAttributes {
    /// The only attribute `SET_MMIO_ATTRIBUTE_REQUEST` may carry (other bits are reserved there).
    pub const SETTABLE: Self = Self::IS_NON_TEE_MEM;
}
