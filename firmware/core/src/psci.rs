//! PSCI 1.1 and SMCCC 1.2 for a host whose platform has PSCI (aarch64; docs/abi.md §3.4): the
//! host's SMCs and HVCs all trap to the TSM, so the calls a kernel makes to its firmware for its
//! CPUs and its power land here, beside the TSM's own calls (owner 6, which keep their
//! statuses). CPU_ON, CPU_OFF and AFFINITY_INFO are [`crate::cpus`]'s start requests and
//! states; SYSTEM_OFF powers off as the TSM's SYSTEM_OFF(0) does. SYSTEM_RESET is
//! NOT_SUPPORTED: a reset keeps DRAM, and the next boot would hand every delegated granule to
//! the host unscrubbed (docs/abi.md §2.1). Every other function of any other owner is
//! NOT_SUPPORTED (-1).
//!
//! Results: x0 only; x1..x4 come back as the caller passed them (SMCCC 1.2 preserves every
//! register that carries no result, and the run loop writes x0..x4).

use tsm_abi::psci::{self as p, AffinityState, PsciStatus};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_platform::ExitCode;

use crate::cpus::{Power, StartError};
use crate::dispatch::HostNext;
use crate::tsm::Tsm;

/// The owner of the TSM's own calls (`tsm_abi::call::FID_BASE`).
const TSM_OWNER: u64 = 6;
/// SMCCC bit 31: a fast call (every function here is one).
const FAST: u32 = 1 << 31;

/// The PSCI or SMCCC call in `regs`, answered; `None` when the platform has no PSCI or the
/// function ID is in the TSM's own range (then it is the TSM's call to refuse).
pub(crate) fn call(t: &Tsm<'_>, regs: &CallRegs) -> Option<HostNext> {
    // SMCCC: the function ID is W0; the upper half of x0 is not part of it.
    let fid = regs.fid as u32;
    // The owner first: a compare, where the platform's answer is a call through its vtable
    // (six instructions on every unknown call of the TSM's range, the floor's path).
    if p::owner(u64::from(fid)) == TSM_OWNER || !t.platform.has_psci() {
        return None;
    }
    let smc32 = p::is_smc32(u64::from(fid));
    let arg = |i: usize| {
        let v = regs.args.get(i).copied().unwrap_or(0);
        if smc32 { v & 0xFFFF_FFFF } else { v }
    };
    let status = match fid {
        _ if fid & FAST == 0 => PsciStatus::NotSupported.to_raw(),
        p::SMCCC_VERSION => p::SMCCC_VERSION_1_2,
        p::SMCCC_ARCH_FEATURES => arch_feature(arg(0)),
        p::PSCI_VERSION => p::PSCI_VERSION_1_1,
        p::PSCI_FEATURES => psci_feature(arg(0)),
        p::CPU_ON_32 | p::CPU_ON_64 => cpu_on(t, arg(0), arg(1), arg(2)).to_raw(),
        p::AFFINITY_INFO_32 | p::AFFINITY_INFO_64 => affinity_info(t, arg(0), arg(1)),
        p::CPU_OFF => return Some(HostNext::Off),
        p::MIGRATE_INFO_TYPE => p::MIGRATE_NOT_REQUIRED,
        p::SYSTEM_OFF => t.platform.power_off(ExitCode::Success),
        _ => PsciStatus::NotSupported.to_raw(),
    };
    Some(HostNext::Reply(CallResult {
        status,
        out: [regs.args[0], regs.args[1], regs.args[2], regs.args[3]],
    }))
}

/// The functions PSCI_FEATURES reports as implemented (CPU_SUSPEND is not: docs/abi.md §3.4).
const PSCI_FUNCTIONS: [u32; 10] = [
    p::PSCI_VERSION,
    p::CPU_OFF,
    p::CPU_ON_32,
    p::CPU_ON_64,
    p::AFFINITY_INFO_32,
    p::AFFINITY_INFO_64,
    p::MIGRATE_INFO_TYPE,
    p::SYSTEM_OFF,
    p::PSCI_FEATURES,
    // PSCI 1.0 reports SMCCC_VERSION here: it is how a caller learns SMCCC 1.1 or later.
    p::SMCCC_VERSION,
];

fn psci_feature(fid: u64) -> u64 {
    if PSCI_FUNCTIONS.iter().any(|&f| u64::from(f) == fid) {
        PsciStatus::Success.to_raw()
    } else {
        PsciStatus::NotSupported.to_raw()
    }
}

/// SMCCC_ARCH_FEATURES: the two architecture functions the TSM implements; none of the
/// workaround functions (the TSM offers no firmware mitigation a kernel could call).
fn arch_feature(fid: u64) -> u64 {
    if fid == u64::from(p::SMCCC_VERSION) || fid == u64::from(p::SMCCC_ARCH_FEATURES) {
        PsciStatus::Success.to_raw()
    } else {
        PsciStatus::NotSupported.to_raw()
    }
}

/// CPU_ON: the context ID reaches the started CPU in x0 ([`crate::cpus`] checks the rest).
fn cpu_on(t: &Tsm<'_>, mpidr: u64, entry: u64, context: u64) -> PsciStatus {
    match t.cpu_start(mpidr, entry, context) {
        Ok(()) => PsciStatus::Success,
        Err(StartError::NoSuchCpu) => PsciStatus::InvalidParameters,
        Err(StartError::BadEntry) => PsciStatus::InvalidAddress,
        Err(StartError::AlreadyOn) => PsciStatus::AlreadyOn,
        Err(StartError::OnPending) => PsciStatus::OnPending,
    }
}

/// AFFINITY_INFO at affinity level 0 (one CPU); higher levels name clusters, which the TSM
/// does not track: INVALID_PARAMETERS, as for a CPU that does not exist.
fn affinity_info(t: &Tsm<'_>, mpidr: u64, level: u64) -> u64 {
    let power = if level == 0 { t.cpu_power(mpidr) } else { None };
    match power {
        Some(Power::On) => AffinityState::On as u64,
        Some(Power::Off) => AffinityState::Off as u64,
        Some(Power::OnPending) => AffinityState::OnPending as u64,
        None => PsciStatus::InvalidParameters.to_raw(),
    }
}
