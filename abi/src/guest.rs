//! Structures of the guest ABI: what a TVM reads about its vdevices and what it echoes to
//! accept one, and the stage-1 attach configuration.
//!
//! Acceptance is bound to fresh evidence: each VDEV_BIND draws a new random `nonce`, and the
//! bind caches the interface report with its SHA-256 `digest` and a `report_counter` that
//! increases on every report fetch of that vdevice. G_VDEV_ACCEPT
//! succeeds only if the guest echoes all three as they are *now*; evidence read before an
//! unbind/rebind or a report refetch is refused with `EvidenceMismatch`. Under an SPDM session
//! the SHA-384 digests of the device's certificate chain and of its signed measurement record
//! are echoed too, so a swapped device or a stale measurement is never accepted by mistake.

use bitflags::bitflags;

use crate::layout::{InvalidField, boundary_struct};

/// Size of the accept nonce.
pub const NONCE_SIZE: usize = 32;
/// Size of the report digest (SHA-256).
pub const DIGEST_SIZE: usize = 32;
/// Size of the SPDM digests (SHA-384) of the certificate chain and the measurement record.
pub const SPDM_DIGEST_SIZE: usize = 48;

boundary_struct! {
    /// What G_VDEV_INFO writes to the guest (256 bytes).
    pub struct VdevInfo (size 256) {
        /// [`VdevState`](crate::state::VdevState).
        pub state: u32 => 0,
        /// The vdevice's vBDF (the argument the guest named it by).
        pub vbdf: u16 => 4,
        /// TDISP version negotiated with the device (0x10 = 1.0); 0 before the PDEV is READY.
        pub tdisp_version: u8 => 6,
        /// 0.
        pub reserved0: u8 => 7,
        /// Length of the cached interface report in bytes (0 while none is cached).
        pub report_len: u32 => 8,
        /// The TDISP LOCK flags the host asked for at bind
        /// ([`LockFlags`](crate::params::LockFlags)); the guest should check them.
        pub lock_flags: u16 => 12,
        /// 0.
        pub reserved1: u16 => 14,
        /// Number of report fetches for this vdevice so far (echo in [`AcceptEvidence`]).
        pub report_counter: u64 => 16,
        /// [`ViommuType`](crate::viommu::ViommuType) of the vIOMMU the vdevice is under.
        pub viommu_type: u32 => 24,
        /// [`EvidenceFlags`]: what stands behind `nonce`, `report_digest` and the report.
        pub evidence_flags: u32 => 28,
        /// The accept nonce drawn by the last VDEV_BIND (zero while UNLOCKED).
        pub nonce: [u8; NONCE_SIZE] => 32,
        /// SHA-256 of the cached interface report (zero while none is cached).
        pub report_digest: [u8; DIGEST_SIZE] => 64,
        /// Bytes of the device's SPDM certificate chain (G_VDEV_CERT_CHAIN); 0 without
        /// `DEVICE_AUTHENTICATED` or while no report is cached.
        pub chain_len: u32 => 96,
        /// Bytes of the device's signed measurement record (G_VDEV_MEASUREMENTS); 0 as
        /// `chain_len`.
        pub measurements_len: u32 => 100,
        /// 0.
        pub reserved3: [u64; 3] => 104,
        /// SHA-384 of the certificate chain buffer (echo in [`AcceptEvidence`]); zero as
        /// `chain_len`.
        pub chain_digest: [u8; SPDM_DIGEST_SIZE] => 128,
        /// SHA-384 of the measurement record (echo in [`AcceptEvidence`]); zero as
        /// `chain_len`.
        pub measurements_digest: [u8; SPDM_DIGEST_SIZE] => 176,
        /// 0.
        pub reserved4: [u64; 4] => 224,
    }
}

bitflags! {
    /// `VdevInfo::evidence_flags`: how far the guest may trust what G_VDEV_INFO and
    /// G_VDEV_REPORT show it (docs/abi.md §7).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct EvidenceFlags: u32 {
        /// The device's TDISP messages (the LOCK response, the interface report, the START
        /// response) reached the TSM through an SPDM secure session the TSM terminates, with a
        /// device whose certificate chain (`chain_digest`) verified up to its root and whose
        /// signed measurements (`measurements_digest`) verified with the chain's leaf key. The
        /// TSM does not judge the root or the measurements: the guest does, by its own policy.
        /// Clear for a PDEV without `PdevFlags::SPDM`: the host relayed TDISP in the clear and
        /// could have written the report itself (§15); a guest that needs a real device must
        /// not accept while this bit is clear.
        const DEVICE_AUTHENTICATED = 1 << 0;
    }
}

boundary_struct! {
    /// What the guest passes to G_VDEV_ACCEPT (192 bytes): the evidence it verified, echoed.
    pub struct AcceptEvidence (size 192) {
        /// `VdevInfo::nonce`.
        pub nonce: [u8; NONCE_SIZE] => 0,
        /// `VdevInfo::report_digest`.
        pub report_digest: [u8; DIGEST_SIZE] => 32,
        /// `VdevInfo::report_counter`.
        pub report_counter: u64 => 64,
        /// Must be 0.
        pub reserved: [u64; 3] => 72,
        /// `VdevInfo::chain_digest`.
        pub chain_digest: [u8; SPDM_DIGEST_SIZE] => 96,
        /// `VdevInfo::measurements_digest`.
        pub measurements_digest: [u8; SPDM_DIGEST_SIZE] => 144,
    }
}

/// Which echoed field disagrees with the TSM's current evidence. The value is the index of
/// the `EvidenceMismatch` status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum EvidenceField {
    /// The nonce.
    Nonce = 1,
    /// The report digest.
    ReportDigest = 2,
    /// The report counter.
    ReportCounter = 3,
    /// The certificate chain digest (another device, or another chain of it).
    ChainDigest = 4,
    /// The measurements digest (the device was measured again since the guest looked).
    MeasurementsDigest = 5,
}

impl AcceptEvidence {
    /// The evidence a guest echoes after reading `info`.
    pub const fn from_info(info: &VdevInfo) -> Self {
        AcceptEvidence {
            nonce: info.nonce,
            report_digest: info.report_digest,
            report_counter: info.report_counter,
            reserved: [0; 3],
            chain_digest: info.chain_digest,
            measurements_digest: info.measurements_digest,
        }
    }

    /// Checks the reserved field (the TSM refuses a bad one with `InvalidArgument`).
    pub fn validate(&self) -> Result<(), InvalidField> {
        if self.reserved == [0; 3] {
            Ok(())
        } else {
            Err(InvalidField {
                structure: "AcceptEvidence",
                field: "reserved",
            })
        }
    }

    /// Compares the echo with the TSM's `current` evidence, field by field in index order.
    /// The nonce and digest are compared in constant time (the guest must not learn how many
    /// leading bytes matched).
    // Out of line on x86_64: a cold guest call's, which LLVM otherwise inlines into the TSM's
    // run loop when the HAL's entry shrinks, and x86_64's `.text` is at its budget (`vrun8`).
    #[cfg_attr(target_arch = "x86_64", inline(never))]
    pub fn matches(&self, current: &AcceptEvidence) -> Result<(), EvidenceField> {
        if !ct_eq(&self.nonce, &current.nonce) {
            return Err(EvidenceField::Nonce);
        }
        if !ct_eq(&self.report_digest, &current.report_digest) {
            return Err(EvidenceField::ReportDigest);
        }
        if self.report_counter != current.report_counter {
            return Err(EvidenceField::ReportCounter);
        }
        if !ct_eq(&self.chain_digest, &current.chain_digest) {
            return Err(EvidenceField::ChainDigest);
        }
        if !ct_eq(&self.measurements_digest, &current.measurements_digest) {
            return Err(EvidenceField::MeasurementsDigest);
        }
        Ok(())
    }
}

/// Equality that reads every byte whatever the data.
fn ct_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

/// The stage-1 configuration word of G_S1_ATTACH (argument 4).
///
/// Bits 7:0 are the stage-1 input-address width in bits; 0 means the format's default
/// (48). `ARM_VMSAV8_64_4K` accepts 25..=48 (the context descriptor's `T0SZ = 64 - bits`),
/// and the width sets the level of the root table: 0 for 40..=48 bits, 1 for 31..=39, 2 for
/// 25..=30 (the Arm 4 KiB-granule walk). `X86_64_FS_4LEVEL` accepts only 48 (the root is the
/// PML4). An IOVA at or above 2^width faults `ADDRESS_SIZE`. Bits 63:8 are reserved and must
/// be 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct S1Config {
    /// Input-address width in bits (25..=48).
    pub ia_bits: u8,
}

impl S1Config {
    /// The default width.
    pub const DEFAULT_IA_BITS: u8 = 48;

    /// Decodes the argument for a vIOMMU whose format accepts `min_bits..=48`; `None` when a
    /// reserved bit is set or the width is out of range.
    pub const fn from_raw(raw: u64, min_bits: u8) -> Option<Self> {
        if raw >> 8 != 0 {
            return None;
        }
        let bits = match raw as u8 {
            0 => Self::DEFAULT_IA_BITS,
            b => b,
        };
        if bits < min_bits || bits > Self::DEFAULT_IA_BITS {
            return None;
        }
        Some(S1Config { ia_bits: bits })
    }

    /// The register form.
    pub const fn to_raw(self) -> u64 {
        self.ia_bits as u64
    }
}

/// Decodes a vBDF argument of the guest calls (bits 63:16 must be 0).
pub const fn vbdf_arg(raw: u64) -> Option<u16> {
    if raw >> 16 == 0 {
        Some(raw as u16)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    fn info() -> VdevInfo {
        VdevInfo {
            state: crate::state::VdevState::Locked.raw(),
            vbdf: 8,
            tdisp_version: 0x10,
            report_len: 100,
            report_counter: 2,
            nonce: [0xA5; 32],
            report_digest: [0x5A; 32],
            chain_digest: [0x3C; 48],
            measurements_digest: [0xC3; 48],
            ..VdevInfo::new_zeroed()
        }
    }

    #[test]
    fn info_and_evidence_round_trip() {
        assert_eq!(VdevInfo::read_from_bytes(info().as_bytes()), Ok(info()));
        let e = AcceptEvidence::from_info(&info());
        assert_eq!(AcceptEvidence::read_from_bytes(e.as_bytes()), Ok(e));
        e.validate().unwrap();
    }

    #[test]
    fn evidence_mismatch_names_the_field() {
        let cur = AcceptEvidence::from_info(&info());
        assert_eq!(cur.matches(&cur), Ok(()));
        let mut e = cur;
        e.nonce[31] ^= 1;
        assert_eq!(e.matches(&cur), Err(EvidenceField::Nonce));
        let mut e = cur;
        e.report_digest[0] ^= 1;
        assert_eq!(e.matches(&cur), Err(EvidenceField::ReportDigest));
        let mut e = cur;
        e.report_counter = 1;
        assert_eq!(e.matches(&cur), Err(EvidenceField::ReportCounter));
        let mut e = cur;
        e.chain_digest[47] ^= 1;
        assert_eq!(e.matches(&cur), Err(EvidenceField::ChainDigest));
        let mut e = cur;
        e.measurements_digest[0] ^= 0x80;
        assert_eq!(e.matches(&cur), Err(EvidenceField::MeasurementsDigest));
        let mut e = cur;
        e.reserved[2] = 1;
        assert_eq!(e.validate().unwrap_err().field, "reserved");
    }

    #[test]
    fn s1_config_and_vbdf_arguments() {
        assert_eq!(S1Config::from_raw(0, 25), Some(S1Config { ia_bits: 48 }));
        assert_eq!(S1Config::from_raw(39, 25), Some(S1Config { ia_bits: 39 }));
        assert_eq!(S1Config::from_raw(25, 25), Some(S1Config { ia_bits: 25 }));
        assert_eq!(S1Config::from_raw(24, 25), None);
        assert_eq!(S1Config::from_raw(49, 25), None);
        assert_eq!(S1Config::from_raw(39, 48), None);
        assert_eq!(S1Config::from_raw(1 << 8 | 48, 25), None);
        assert_eq!(S1Config { ia_bits: 39 }.to_raw(), 39);
        assert_eq!(vbdf_arg(0xFFFF), Some(0xFFFF));
        assert_eq!(vbdf_arg(0x1_0000), None);
    }
}
