//! Starting and stopping the host's CPUs: HOST_CPU_START / HOST_CPU_STOP, PSCI and SMCCC on a
//! platform with PSCI, and the race of two CPUs starting the same one.

extern crate std;

use std::sync::Barrier;

use tsm_abi::CallId::*;
use tsm_abi::psci::{self as p, AffinityState, PsciStatus};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::StatusCode::*;
use tsm_platform::{AddressMapFormat, ExitCode};

use super::*;
use crate::run::HostStep;
use crate::testing::SIM_CPUS;

/// Host memory to start CPUs at (granule 10 is NS in every harness).
const ENTRY: u64 = 0x4000_A000 + 0x40;

fn raw(fid: u64, args: &[u64]) -> CallRegs {
    let mut regs = CallRegs { fid, args: [0; 6] };
    regs.args[..args.len()].copy_from_slice(args);
    regs
}

/// A PSCI / SMCCC call as the host makes it.
fn psci(h: &Harness, fid: u32, args: &[u64]) -> CallResult {
    h.tsm
        .handle(crate::Origin::Host, &raw(u64::from(fid), args))
}

fn status(h: &Harness, fid: u32, args: &[u64]) -> Option<PsciStatus> {
    PsciStatus::from_raw(psci(h, fid, args).status)
}

fn affinity(h: &Harness, cpu: u64) -> u64 {
    psci(h, p::AFFINITY_INFO_64, &[cpu, 0]).status
}

#[test]
fn host_cpu_start_checks_the_cpu_and_the_entry_and_changes_nothing_when_it_refuses() {
    for format in FORMATS {
        let h = harness(format);
        let delegated = h.delegate(12);
        let before = h.snapshot();
        let wakes = h.sim.wakes();
        let refusals = [
            ([SIM_CPUS as u64, ENTRY, 0], s(InvalidArgument, 1)),
            ([u64::MAX, ENTRY, 0], s(InvalidArgument, 1)),
            // The TSM's memory, a delegated granule, below and past DRAM.
            ([1, h.granule(0).0, 0], s(InvalidArgument, 2)),
            ([1, delegated.0 + 8, 0], s(InvalidArgument, 2)),
            ([1, 0, 0], s(InvalidArgument, 2)),
            ([1, h.granule(256).0, 0], s(InvalidArgument, 2)),
            // The boot CPU runs the host from the start.
            ([0, ENTRY, 0], s(ObjectState, 1)),
        ];
        for (args, want) in refusals {
            h.refused(HOST_CPU_START, &args, want);
            assert_eq!(h.snapshot(), before);
            assert_eq!(h.sim.wakes(), wakes, "a refused start woke the CPUs");
            assert_eq!(h.tsm.take_cpu_start(1), None);
        }
        h.host(HOST_CPU_START, &[1, ENTRY, 0xC0DE]).unwrap();
        assert_eq!(h.sim.wakes(), wakes + 1);
        // Pending, then on: a second start is refused either way, and changes nothing.
        h.refused(HOST_CPU_START, &[1, ENTRY + 4, 1], s(ObjectState, 1));
        assert_eq!(h.tsm.take_cpu_start(1), Some((ENTRY, 0xC0DE)));
        assert_eq!(h.tsm.take_cpu_start(1), None, "a start is taken once");
        h.refused(HOST_CPU_START, &[1, ENTRY + 4, 1], s(ObjectState, 1));
        // Stopped, it can be started again, with the new entry.
        h.tsm.cpu_stopped(1);
        h.host(HOST_CPU_START, &[1, ENTRY + 4, 7]).unwrap();
        assert_eq!(h.tsm.take_cpu_start(1), Some((ENTRY + 4, 7)));
        // Another CPU's state is its own.
        assert_eq!(h.tsm.take_cpu_start(2), None);
        assert_eq!(h.tsm.take_cpu_start(u64::MAX), None);
    }
}

#[test]
fn host_cpu_stop_takes_the_calling_cpu_out_of_the_host() {
    for format in FORMATS {
        let h = harness(format);
        let stop = raw(u64::from(HOST_CPU_STOP.fid()), &[]);
        assert_eq!(h.tsm.host_call(&stop), HostStep::Off);
        // Its one rule is the dispatcher's: no argument.
        h.refused(HOST_CPU_STOP, &[1], s(InvalidArgument, 1));
        // The run loop marks the CPU stopped; a stopped boot CPU can be started again.
        h.tsm.cpu_stopped(0);
        h.host(HOST_CPU_START, &[0, ENTRY, 0]).unwrap();
        assert_eq!(h.tsm.take_cpu_start(0), Some((ENTRY, 0)));
    }
}

#[test]
fn psci_and_smccc_discovery() {
    let h = harness(AddressMapFormat::ArmStage2);
    assert_eq!(psci(&h, p::PSCI_VERSION, &[]).status, p::PSCI_VERSION_1_1);
    assert_eq!(psci(&h, p::SMCCC_VERSION, &[]).status, p::SMCCC_VERSION_1_2);
    assert_eq!(
        psci(&h, p::MIGRATE_INFO_TYPE, &[]).status,
        p::MIGRATE_NOT_REQUIRED
    );
    for f in [
        p::CPU_ON_64,
        p::CPU_ON_32,
        p::CPU_OFF,
        p::AFFINITY_INFO_64,
        p::SYSTEM_OFF,
        p::PSCI_FEATURES,
        p::SMCCC_VERSION,
    ] {
        assert_eq!(
            status(&h, p::PSCI_FEATURES, &[u64::from(f)]),
            Some(PsciStatus::Success),
            "{f:#x}"
        );
    }
    for f in [p::CPU_SUSPEND_32, 0x8400_0005, 0xC600_0100, 0] {
        assert_eq!(
            status(&h, p::PSCI_FEATURES, &[u64::from(f)]),
            Some(PsciStatus::NotSupported),
            "{f:#x}"
        );
    }
    assert_eq!(
        status(&h, p::SMCCC_ARCH_FEATURES, &[u64::from(p::SMCCC_VERSION)]),
        Some(PsciStatus::Success)
    );
    // ARCH_WORKAROUND_1: the TSM offers no firmware mitigation.
    assert_eq!(
        status(&h, p::SMCCC_ARCH_FEATURES, &[0x8000_8000]),
        Some(PsciStatus::NotSupported)
    );
}

#[test]
fn other_functions_are_not_supported_and_preserve_the_callers_registers() {
    let h = harness(AddressMapFormat::ArmStage2);
    let before = h.snapshot();
    // CPU_SUSPEND, a PSCI ID PSCI does not define, a SiP and an OEM call, a yielding
    // (non-fast) CPU_ON, an ID with the upper half of x0 set.
    for fid in [
        0x8400_0001,
        0xC400_0001,
        0x8400_00FF,
        0xC200_0000,
        0x8300_0001,
        0x0400_0003,
        0xFFFF_FFFF,
    ] {
        let args = [1, ENTRY, 3, 4, 5, 6];
        let r = h.tsm.handle(crate::Origin::Host, &raw(fid, &args));
        assert_eq!(
            PsciStatus::from_raw(r.status),
            Some(PsciStatus::NotSupported),
            "{fid:#x}"
        );
        assert_eq!(r.status, u64::MAX, "sign-extended");
        assert_eq!(r.out, [1, ENTRY, 3, 4], "x1..x4 preserved");
    }
    assert_eq!(h.snapshot(), before);
    assert_eq!(affinity(&h, 1), AffinityState::Off as u64);
    // The upper half of x0 is not part of an SMCCC function ID.
    assert_eq!(
        psci(&h, (1 << 32 | u64::from(p::PSCI_VERSION)) as u32, &[]).status,
        p::PSCI_VERSION_1_1
    );
    let r = h.tsm.handle(
        crate::Origin::Host,
        &raw(1 << 32 | u64::from(p::PSCI_VERSION), &[]),
    );
    assert_eq!(r.status, p::PSCI_VERSION_1_1);
    // The TSM's own range keeps the TSM's statuses.
    assert_eq!(
        h.tsm
            .handle(crate::Origin::Host, &raw(0xC600_01FF, &[]))
            .status,
        Status::new(NotSupported).to_raw()
    );
}

#[test]
fn psci_cpu_on_and_affinity_info() {
    let h = harness(AddressMapFormat::ArmStage2);
    let delegated = h.delegate(12);
    let before = h.snapshot();
    let refusals = [
        (
            p::CPU_ON_64,
            [SIM_CPUS as u64, ENTRY],
            PsciStatus::InvalidParameters,
        ),
        (
            p::CPU_ON_64,
            [1 << 32 | 1, ENTRY],
            PsciStatus::InvalidParameters,
        ),
        (
            p::CPU_ON_64,
            [1, h.granule(1).0],
            PsciStatus::InvalidAddress,
        ),
        (p::CPU_ON_64, [1, delegated.0], PsciStatus::InvalidAddress),
        (p::CPU_ON_64, [1, 1 << 40], PsciStatus::InvalidAddress),
        (p::CPU_ON_64, [0, ENTRY], PsciStatus::AlreadyOn),
    ];
    for (fid, [cpu, entry], want) in refusals {
        assert_eq!(
            status(&h, fid, &[cpu, entry, 9]),
            Some(want),
            "{cpu:#x} {entry:#x}"
        );
        assert_eq!(h.snapshot(), before);
        assert_eq!(affinity(&h, 1), AffinityState::Off as u64);
    }
    assert_eq!(affinity(&h, 0), AffinityState::On as u64);
    assert_eq!(
        psci(&h, p::AFFINITY_INFO_64, &[SIM_CPUS as u64, 0]).status,
        PsciStatus::InvalidParameters.to_raw()
    );
    // Cluster-level queries are not tracked.
    assert_eq!(
        psci(&h, p::AFFINITY_INFO_64, &[0, 1]).status,
        PsciStatus::InvalidParameters.to_raw()
    );
    // SMC32: only the low halves count, so CPU 1 at ENTRY with context 9.
    let high = 0xDEAD_0000_0000_0000;
    assert_eq!(
        status(&h, p::CPU_ON_32, &[high | 1, high | ENTRY, high | 9]),
        Some(PsciStatus::Success)
    );
    assert_eq!(affinity(&h, 1), AffinityState::OnPending as u64);
    assert_eq!(
        status(&h, p::CPU_ON_64, &[1, ENTRY, 9]),
        Some(PsciStatus::OnPending)
    );
    assert_eq!(h.tsm.take_cpu_start(1), Some((ENTRY, 9)));
    assert_eq!(affinity(&h, 1), AffinityState::On as u64);
    assert_eq!(
        psci(&h, p::AFFINITY_INFO_32, &[high | 1, 0]).status,
        AffinityState::On as u64
    );
    assert_eq!(
        status(&h, p::CPU_ON_64, &[1, ENTRY, 9]),
        Some(PsciStatus::AlreadyOn)
    );
    // CPU_OFF leaves the host; the CPU is off once the run loop says it left.
    let off = raw(u64::from(p::CPU_OFF), &[]);
    assert_eq!(h.tsm.host_call(&off), HostStep::Off);
    assert_eq!(affinity(&h, 1), AffinityState::On as u64);
    h.tsm.cpu_stopped(1);
    assert_eq!(affinity(&h, 1), AffinityState::Off as u64);
    assert_eq!(
        status(&h, p::CPU_ON_64, &[1, ENTRY, 10]),
        Some(PsciStatus::Success)
    );
}

#[test]
fn psci_system_off_powers_off_and_reset_is_refused() {
    let h = harness(AddressMapFormat::ArmStage2);
    let off = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        psci(&h, p::SYSTEM_OFF, &[])
    }))
    .unwrap_err();
    assert_eq!(off.downcast_ref::<ExitCode>(), Some(&ExitCode::Success));
    // A reset keeps DRAM: the next boot would give the host every delegated granule as it is.
    let before = h.snapshot();
    assert_eq!(
        status(&h, p::SYSTEM_RESET, &[]),
        Some(PsciStatus::NotSupported)
    );
    assert_eq!(
        status(&h, p::PSCI_FEATURES, &[u64::from(p::SYSTEM_RESET)]),
        Some(PsciStatus::NotSupported)
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn without_psci_the_arm_ids_are_unknown_calls() {
    let h = harness(AddressMapFormat::X86_64FourLevel);
    for fid in [
        p::PSCI_VERSION,
        p::CPU_ON_64,
        p::SMCCC_VERSION,
        p::SYSTEM_OFF,
    ] {
        assert_eq!(
            psci(&h, fid, &[1, ENTRY, 0]).status,
            Status::new(NotSupported).to_raw(),
            "{fid:#x}"
        );
    }
    assert_eq!(h.tsm.take_cpu_start(1), None);
}

/// Two CPUs start the same CPU at once, round after round: exactly one succeeds each time, and
/// the other is told the CPU is pending or on.
#[test]
fn two_cpus_starting_the_same_cpu_one_wins() {
    const ROUNDS: usize = 200;
    let h = harness(AddressMapFormat::ArmStage2);
    let barrier = Barrier::new(2);
    let attempt = |who: u64| {
        let mut outcomes = std::vec::Vec::new();
        for _ in 0..ROUNDS {
            barrier.wait();
            outcomes.push(status(&h, p::CPU_ON_64, &[2, ENTRY, who]));
            barrier.wait();
            if who == 0 {
                // The started CPU takes its request, runs, and stops again.
                assert!(h.tsm.take_cpu_start(2).is_some());
                h.tsm.cpu_stopped(2);
            }
            barrier.wait();
        }
        outcomes
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| attempt(0));
        let b = s.spawn(|| attempt(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (x, y) in a.into_iter().zip(b) {
        let wins = [x, y]
            .iter()
            .filter(|&&r| r == Some(PsciStatus::Success))
            .count();
        assert_eq!(wins, 1, "{x:?} {y:?}");
        assert!(
            [x, y].iter().all(|r| matches!(
                r,
                Some(PsciStatus::Success | PsciStatus::OnPending | PsciStatus::AlreadyOn)
            )),
            "{x:?} {y:?}"
        );
    }
}
