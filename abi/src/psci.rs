//! PSCI 1.1 and SMCCC 1.2 as the TSM implements them for an aarch64 host (docs/abi.md §3.4):
//! the function IDs it answers and the values it returns. The host starts, stops and queries
//! its CPUs with these, through the same `smc #0` / `hvc #0` as the TSM's own calls; the TSM's
//! calls keep owner 6 ([`crate::call::FID_BASE`]), these are owners 0 (Arm architecture) and 4
//! (standard secure service).

/// SMCCC_VERSION (SMC32).
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES (SMC32): x1 = a function ID of owner 0.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC32 and SMC64 (not supported: docs/abi.md §3.4).
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32: x1 = target MPIDR, x2 = entry, x3 = context ID (32 bits each).
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xC400_0003;
/// AFFINITY_INFO, SMC32: x1 = target affinity, x2 = lowest affinity level.
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES: x1 = a function ID.
pub const PSCI_FEATURES: u32 = 0x8400_000A;

/// What PSCI_VERSION returns: 1.1 (major in 31:16, minor in 15:0).
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// What SMCCC_VERSION returns: 1.2.
pub const SMCCC_VERSION_1_2: u64 = 0x0001_0002;
/// MIGRATE_INFO_TYPE: no Trusted OS that needs migrating.
pub const MIGRATE_NOT_REQUIRED: u64 = 2;

/// PSCI return codes, as the 32-bit signed values PSCI defines, sign-extended to the register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
pub enum PsciStatus {
    /// The call did what it says (and, for SMCCC, the function exists).
    Success = 0,
    /// The function is not implemented (also SMCCC's NOT_SUPPORTED).
    NotSupported = -1,
    /// A parameter names nothing that exists (CPU_ON / AFFINITY_INFO: no such CPU).
    InvalidParameters = -2,
    /// The call is refused (CPU_OFF of a CPU the TSM cannot turn off).
    Denied = -3,
    /// CPU_ON: the target already runs the host.
    AlreadyOn = -4,
    /// CPU_ON: the target is being started by an earlier CPU_ON.
    OnPending = -5,
    /// An internal failure.
    InternalFailure = -6,
    /// CPU_ON: the entry address is not host memory.
    InvalidAddress = -9,
}

impl PsciStatus {
    /// The register form (sign-extended: a 32-bit caller reads it in w0).
    pub const fn to_raw(self) -> u64 {
        self as i32 as i64 as u64
    }

    /// Decodes a result register (its low 32 bits, as PSCI defines them).
    pub fn from_raw(raw: u64) -> Option<Self> {
        use PsciStatus::*;
        [
            Success,
            NotSupported,
            InvalidParameters,
            Denied,
            AlreadyOn,
            OnPending,
            InternalFailure,
            InvalidAddress,
        ]
        .into_iter()
        .find(|s| s.to_raw() as u32 == raw as u32)
    }
}

/// AFFINITY_INFO's answer for a CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum AffinityState {
    /// It runs the host.
    On = 0,
    /// It waits in the TSM.
    Off = 1,
    /// A CPU_ON for it has been accepted and it has not entered the host yet.
    OnPending = 2,
}

/// The owner field of an SMCCC function ID (bits 29:24).
pub const fn owner(fid: u64) -> u64 {
    (fid >> 24) & 0x3F
}

/// Whether a function ID is an SMC32 call (bit 30 clear): its arguments are the registers' low
/// 32 bits.
pub const fn is_smc32(fid: u64) -> bool {
    fid & (1 << 30) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_psci_values_sign_extended_and_decode_back() {
        assert_eq!(PsciStatus::NotSupported.to_raw(), u64::MAX);
        assert_eq!(PsciStatus::InvalidAddress.to_raw(), (-9i64) as u64);
        for s in [
            PsciStatus::Success,
            PsciStatus::AlreadyOn,
            PsciStatus::OnPending,
            PsciStatus::InvalidParameters,
        ] {
            assert_eq!(PsciStatus::from_raw(s.to_raw()), Some(s));
            assert_eq!(PsciStatus::from_raw(s.to_raw() & 0xFFFF_FFFF), Some(s));
        }
        assert_eq!(PsciStatus::from_raw(-7i64 as u64), None);
    }

    #[test]
    fn owners_tell_psci_from_the_tsm_calls() {
        assert_eq!(owner(u64::from(CPU_ON_64)), 4);
        assert_eq!(owner(u64::from(SMCCC_VERSION)), 0);
        assert_eq!(owner(u64::from(crate::call::FID_BASE)), 6);
        assert!(is_smc32(u64::from(CPU_ON_32)));
        assert!(!is_smc32(u64::from(CPU_ON_64)));
    }
}
