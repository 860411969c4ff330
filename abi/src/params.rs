//! Creation parameters the host passes by physical address (TVM_CREATE, PDEV_CREATE,
//! VDEV_CREATE), and the flag words of the memory calls.
//!
//! A parameter block lies in host (NS) memory, 8-byte aligned and inside one granule. The TSM
//! copies it once into its own memory, then runs `validate()` on the copy; it never reads the
//! host's page again for the same call.

use bitflags::bitflags;

use crate::layout::{InvalidField, abi_enum, boundary_struct};

/// `MAP_PRIVATE` source argument meaning "no source page: the granule is mapped zeroed".
pub const NO_SOURCE: u64 = u64::MAX;

bitflags! {
    /// Access rights of a mapping (`flags` of MAP_PRIVATE and MAP_SHARED). At least READ must
    /// be set; other bits are reserved (`InvalidArgument`).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct MapFlags: u64 {
        /// Readable by the TVM's vCPUs and vdevices.
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Executable by the TVM's vCPUs (never by a device).
        const EXEC = 1 << 2;
    }
}

impl MapFlags {
    /// Decodes a flags argument: `None` when a reserved bit is set or READ is missing.
    pub const fn from_arg(raw: u64) -> Option<Self> {
        match Self::from_bits(raw) {
            Some(f) if f.contains(Self::READ) => Some(f),
            _ => None,
        }
    }
}

fn check(ok: bool, structure: &'static str, field: &'static str) -> Result<(), InvalidField> {
    if ok {
        Ok(())
    } else {
        Err(InvalidField { structure, field })
    }
}

boundary_struct! {
    /// TVM_CREATE parameters (64 bytes).
    pub struct TvmParams (size 64) {
        /// No flag is defined in ABI 1.0: must be 0.
        pub flags: u64 => 0,
        /// Width of the TVM's guest-physical address space in bits, within FEATURES
        /// `MEMORY.min_gpa_bits..=max_gpa_bits`. Every GPA argument must be below
        /// `1 << gpa_bits`.
        pub gpa_bits: u8 => 8,
        /// Must be 0.
        pub reserved0: [u8; 3] => 9,
        /// The most vCPUs VCPU_CREATE will create for this TVM (at least 1).
        pub max_vcpus: u32 => 12,
        /// Must be 0.
        pub reserved1: [u64; 6] => 16,
    }
}

impl TvmParams {
    /// Checks the rules that need no TSM state (the GPA-width range is checked against FEATURES
    /// by the TSM).
    pub fn validate(&self) -> Result<(), InvalidField> {
        const S: &str = "TvmParams";
        check(self.flags == 0, S, "flags")?;
        check(self.gpa_bits != 0, S, "gpa_bits")?;
        check(self.reserved0 == [0; 3], S, "reserved0")?;
        check(self.max_vcpus != 0, S, "max_vcpus")?;
        check(self.reserved1 == [0; 6], S, "reserved1")
    }
}

bitflags! {
    /// `PdevParams::flags`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct PdevFlags: u64 {
        /// Authenticate the device with SPDM at connect (certificate chain of `spdm_slot`,
        /// signed measurements), establish a secure session and send every TDISP message
        /// inside it (docs/abi.md §7.4). Without it TDISP travels in the clear and the guest
        /// is told so (`EvidenceFlags::DEVICE_AUTHENTICATED` clear).
        const SPDM = 1 << 0;
        /// Set up selective IDE streams at connect.
        /// `NotSupported` while FEATURES `SECURITY.IDE_STREAM` is clear.
        const IDE = 1 << 1;
    }
}

abi_enum! {
    /// How the TDISP `function_id` of a device's interfaces is formed (PCIe TDISP 1.0
    /// INTERFACE_ID: RID in bits 15:0, segment in 23:16, segment-valid in bit 24).
    pub enum InterfaceIdFormat ("IFID") {
        /// RID only; bits 31:16 are 0.
        Rid = 0 => "RID",
        /// RID plus segment, with the segment-valid bit set.
        RidSegment = 1 => "RID_SEGMENT",
    }
}

boundary_struct! {
    /// PDEV_CREATE parameters (64 bytes): the device security manager (DSM) behind PF0 and the
    /// requester-ID range of the functions it manages.
    pub struct PdevParams (size 64) {
        /// [`PdevFlags`]; undefined bits must be 0.
        pub flags: u64 => 0,
        /// PCI segment (domain) of the device; at most 0xFF under
        /// [`InterfaceIdFormat::RidSegment`] (the TDISP interface ID has 8 segment bits).
        pub segment: u16 => 8,
        /// Requester ID (bus << 8 | device << 3 | function) of PF0, the DSM.
        pub rid_base: u16 => 10,
        /// Number of consecutive requester IDs from `rid_base` the DSM manages (its functions
        /// and VFs): at least 1, and `rid_base + rid_count <= 0x1_0000`.
        pub rid_count: u16 => 12,
        /// Must be 0.
        pub reserved0: u16 => 14,
        /// [`InterfaceIdFormat`] of the device's TDISP interface IDs.
        pub interface_id_format: u32 => 16,
        /// With [`PdevFlags::SPDM`]: the certificate slot (0..=7) whose chain authenticates
        /// the device (the host's choice; the guest sees the chain it names). 0 otherwise.
        pub spdm_slot: u32 => 20,
        /// Must be 0.
        pub reserved2: [u64; 5] => 24,
    }
}

impl PdevParams {
    /// Checks the rules that need no TSM state.
    pub fn validate(&self) -> Result<(), InvalidField> {
        const S: &str = "PdevParams";
        check(PdevFlags::from_bits(self.flags).is_some(), S, "flags")?;
        check(self.rid_count != 0, S, "rid_count")?;
        check(
            u32::from(self.rid_base)
                .checked_add(u32::from(self.rid_count))
                .is_some_and(|end| end <= 0x1_0000),
            S,
            "rid_count",
        )?;
        check(self.reserved0 == 0, S, "reserved0")?;
        check(
            InterfaceIdFormat::from_raw(self.interface_id_format.into()).is_some(),
            S,
            "interface_id_format",
        )?;
        check(
            self.interface_id_format != InterfaceIdFormat::RidSegment.raw() || self.segment <= 0xFF,
            S,
            "segment",
        )?;
        check(
            self.spdm_slot < 8
                && (self.spdm_slot == 0 || self.pdev_flags().contains(PdevFlags::SPDM)),
            S,
            "spdm_slot",
        )?;
        check(self.reserved2 == [0; 5], S, "reserved2")
    }

    /// The flags, once validated.
    pub const fn pdev_flags(&self) -> PdevFlags {
        PdevFlags::from_bits_truncate(self.flags)
    }

    /// Whether `rid` is one of the DSM's functions.
    pub const fn contains_rid(&self, rid: u16) -> bool {
        match rid.checked_sub(self.rid_base) {
            Some(d) => d < self.rid_count,
            None => false,
        }
    }

    /// The TDISP `function_id` of the function at `rid` under this PDEV's format (the value
    /// `VdevParams::function_id` must carry).
    pub const fn function_id(&self, rid: u16) -> u32 {
        if self.interface_id_format == InterfaceIdFormat::RidSegment.raw() {
            rid as u32 | ((self.segment as u32 & 0xFF) << 16) | (1 << 24)
        } else {
            rid as u32
        }
    }
}

/// TDISP LOCK_INTERFACE_REQUEST flags ([`VdevParams::lock_flags`]), passed through to the
/// device at bind; only the flags FEATURES `TDISP` lists as accepted may be set. The one
/// definition is the TDISP codec's.
pub use crate::tdisp::LockFlags;

boundary_struct! {
    /// VDEV_CREATE parameters (64 bytes): one function of a PDEV, as the TVM will see it.
    pub struct VdevParams (size 64) {
        /// No flag is defined in ABI 1.0: must be 0.
        pub flags: u64 => 0,
        /// Physical requester ID of the function; within the PDEV's RID range
        /// (`BdfOutOfRange` otherwise) and not used by another vdevice (`BdfInUse`).
        pub pbdf: u16 => 8,
        /// Requester ID the TVM sees (its vPCI bus/device/function); unique in the TVM
        /// (`BdfInUse`). The guest ABI names the vdevice by it.
        pub vbdf: u16 => 10,
        /// TDISP INTERFACE_ID `function_id` of the function: must equal
        /// `PdevParams::function_id(pbdf)` (`InvalidArgument`).
        pub function_id: u32 => 12,
        /// TDISP LOCK_INTERFACE flags ([`LockFlags`]) sent at bind.
        pub lock_flags: u16 => 16,
        /// TDISP LOCK_INTERFACE `default_stream_id` (the IDE stream for the interface's
        /// traffic; 0 while IDE is not supported).
        pub default_stream_id: u8 => 18,
        /// Must be 0.
        pub reserved0: u8 => 19,
        /// Must be 0.
        pub reserved1: u32 => 20,
        /// TDISP LOCK_INTERFACE `mmio_reporting_offset`: added by the device to the MMIO
        /// addresses in its interface report.
        pub mmio_reporting_offset: u64 => 24,
        /// TDISP LOCK_INTERFACE `bind_p2p_address_mask`; must be 0 unless
        /// [`LockFlags::BIND_P2P`] is set.
        pub bind_p2p_address_mask: u64 => 32,
        /// The virtual device ID of the vIOMMU (iommufd `IOMMU_VDEVICE_ALLOC.virt_id`: vSID of
        /// SMMUv3, vRID of VT-d). Must be 0 under TSM_NO_VIOMMU; the TSM reports it in the
        /// guest's event records.
        pub virt_id: u64 => 40,
        /// Must be 0.
        pub reserved2: [u64; 2] => 48,
    }
}

impl VdevParams {
    /// Checks the rules that need no TSM state (the function ID, BDF ranges, accepted LOCK
    /// flags and `virt_id` rule are checked by the TSM against the PDEV, the TVM, FEATURES and
    /// the vIOMMU).
    pub fn validate(&self) -> Result<(), InvalidField> {
        const S: &str = "VdevParams";
        check(self.flags == 0, S, "flags")?;
        check(self.function_id >> 25 == 0, S, "function_id")?;
        let lock = LockFlags::from_bits(self.lock_flags);
        check(lock.is_some(), S, "lock_flags")?;
        check(self.reserved0 == 0, S, "reserved0")?;
        check(self.reserved1 == 0, S, "reserved1")?;
        check(
            self.bind_p2p_address_mask == 0
                || lock.is_some_and(|l| l.contains(LockFlags::BIND_P2P)),
            S,
            "bind_p2p_address_mask",
        )?;
        check(self.reserved2 == [0; 2], S, "reserved2")
    }

    /// The LOCK flags, once validated.
    pub const fn lock(&self) -> LockFlags {
        LockFlags::from_bits_truncate(self.lock_flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    fn tvm() -> TvmParams {
        TvmParams {
            gpa_bits: 40,
            max_vcpus: 2,
            ..TvmParams::new_zeroed()
        }
    }

    fn pdev() -> PdevParams {
        PdevParams {
            segment: 0,
            rid_base: 0x0100,
            rid_count: 8,
            ..PdevParams::new_zeroed()
        }
    }

    fn vdev() -> VdevParams {
        VdevParams {
            pbdf: 0x0101,
            vbdf: 0x0008,
            function_id: 0x0101,
            lock_flags: LockFlags::NO_FW_UPDATE.bits(),
            ..VdevParams::new_zeroed()
        }
    }

    fn field_of(r: Result<(), InvalidField>) -> &'static str {
        r.expect_err("must be refused").field
    }

    #[test]
    fn good_params_validate_and_round_trip_through_bytes() {
        tvm().validate().unwrap();
        pdev().validate().unwrap();
        vdev().validate().unwrap();
        assert_eq!(TvmParams::read_from_bytes(tvm().as_bytes()), Ok(tvm()));
        assert_eq!(PdevParams::read_from_bytes(pdev().as_bytes()), Ok(pdev()));
        assert_eq!(VdevParams::read_from_bytes(vdev().as_bytes()), Ok(vdev()));
    }

    #[test]
    fn tvm_params_name_the_bad_field() {
        let f = |m: fn(&mut TvmParams)| {
            let mut p = tvm();
            m(&mut p);
            field_of(p.validate())
        };
        assert_eq!(f(|p| p.flags = 1), "flags");
        assert_eq!(f(|p| p.gpa_bits = 0), "gpa_bits");
        assert_eq!(f(|p| p.reserved0[2] = 1), "reserved0");
        assert_eq!(f(|p| p.max_vcpus = 0), "max_vcpus");
        assert_eq!(f(|p| p.reserved1[5] = 1), "reserved1");
    }

    #[test]
    fn pdev_params_name_the_bad_field() {
        let f = |m: fn(&mut PdevParams)| {
            let mut p = pdev();
            m(&mut p);
            field_of(p.validate())
        };
        assert_eq!(f(|p| p.flags = 1 << 2), "flags");
        assert_eq!(f(|p| p.rid_count = 0), "rid_count");
        assert_eq!(
            f(|p| {
                p.rid_base = 0xFFFF;
                p.rid_count = 2
            }),
            "rid_count"
        );
        assert_eq!(f(|p| p.reserved0 = 1), "reserved0");
        assert_eq!(f(|p| p.interface_id_format = 2), "interface_id_format");
        assert_eq!(
            f(|p| {
                p.interface_id_format = InterfaceIdFormat::RidSegment.raw();
                p.segment = 0x100
            }),
            "segment"
        );
        assert_eq!(f(|p| p.spdm_slot = 1), "spdm_slot");
        assert_eq!(
            f(|p| {
                p.flags = PdevFlags::SPDM.bits();
                p.spdm_slot = 8
            }),
            "spdm_slot"
        );
        let mut slot7 = pdev();
        slot7.flags = PdevFlags::SPDM.bits();
        slot7.spdm_slot = 7;
        slot7.validate().unwrap();
        assert_eq!(f(|p| p.reserved2[0] = 1), "reserved2");
        let mut edge = pdev();
        edge.rid_base = 0xFFFF;
        edge.rid_count = 1;
        edge.validate().unwrap();
        assert!(edge.contains_rid(0xFFFF));
        assert!(!edge.contains_rid(0xFFFE));
    }

    #[test]
    fn pdev_function_id_follows_the_format() {
        let mut p = pdev();
        assert_eq!(p.function_id(0x0102), 0x0102);
        p.interface_id_format = InterfaceIdFormat::RidSegment.raw();
        p.segment = 3;
        p.validate().unwrap();
        assert_eq!(p.function_id(0x0102), 0x0103_0102);
    }

    #[test]
    fn vdev_params_name_the_bad_field() {
        let f = |m: fn(&mut VdevParams)| {
            let mut p = vdev();
            m(&mut p);
            field_of(p.validate())
        };
        assert_eq!(f(|p| p.flags = 1), "flags");
        assert_eq!(f(|p| p.function_id = 1 << 25), "function_id");
        assert_eq!(f(|p| p.lock_flags = 1 << 5), "lock_flags");
        assert_eq!(f(|p| p.reserved0 = 1), "reserved0");
        assert_eq!(f(|p| p.reserved1 = 1), "reserved1");
        assert_eq!(f(|p| p.bind_p2p_address_mask = 1), "bind_p2p_address_mask");
        assert_eq!(f(|p| p.reserved2[1] = 1), "reserved2");
        let mut p2p = vdev();
        p2p.lock_flags |= LockFlags::BIND_P2P.bits();
        p2p.bind_p2p_address_mask = 0xFFFF_0000;
        p2p.validate().unwrap();
    }

    #[test]
    fn map_flags_need_read_and_no_reserved_bit() {
        assert_eq!(MapFlags::from_arg(1), Some(MapFlags::READ));
        assert_eq!(MapFlags::from_arg(7), Some(MapFlags::all()));
        assert_eq!(MapFlags::from_arg(2), None);
        assert_eq!(MapFlags::from_arg(0), None);
        assert_eq!(MapFlags::from_arg(1 | 1 << 3), None);
    }
}
