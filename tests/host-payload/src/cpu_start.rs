//! Starting and stopping the host's CPUs through the TSM (docs/design.md "CPU bring-up"), part
//! of the SMP scenario on both arches: aarch64 with PSCI CPU_ON / CPU_OFF / AFFINITY_INFO,
//! x86_64 with HOST_CPU_START / HOST_CPU_STOP (`arch::cpu_start`, `arch::stop_self`).
//!
//! [`refusals`] tries what the TSM must refuse, each leaving CPU 1 off: a CPU that does not
//! exist, an entry in the TSM's memory, in a granule the host delegated, outside DRAM, and
//! (x86_64) INIT and SIPI through the x2APIC ICR and the xAPIC page; then starts CPU 1 and
//! checks a second start is refused. [`stop_and_restart`] has CPU 1 stop itself, starts it
//! again and gives it a job.

use tsm_abi::CallId;
use tsm_scenarios::{Fail, HostEnv, Outcome};

use crate::env::Host;
use crate::tsm_call;

/// What a start request got, on either arch.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum Answer {
    /// The CPU will enter the host at the entry.
    Started,
    /// No such CPU.
    NoSuchCpu,
    /// The entry is not host memory.
    BadEntry,
    /// The CPU is on, or a start for it is pending.
    OnOrPending,
    /// Anything else: the raw status word.
    Other(u64),
}

/// Where a CPU the payload starts enters: `_start_secondary` (the arch's entry) with its
/// index as the argument.
fn entry() -> u64 {
    unsafe extern "C" {
        static _start_secondary: u8;
    }
    core::ptr::addr_of!(_start_secondary) as u64
}

/// Starts CPU `cpu` (QEMU numbers its CPUs' MPIDR / APIC ID by index) at the payload's
/// secondary entry: true if it was started now or earlier.
pub fn start(cpu: u64) -> bool {
    let a = crate::arch::cpu_start(cpu, entry(), cpu);
    if !matches!(a, Answer::Started | Answer::OnOrPending) {
        defmt::error!("cpu start: starting CPU {=u64} got {}", cpu, a);
        return false;
    }
    true
}

fn check(what: &'static str, got: Answer, want: Answer) -> Outcome {
    defmt::info!("cpu start: {=str} -> {}", what, got);
    if got != want {
        defmt::error!("cpu start: {=str}: wanted {}", what, want);
        return Err(Fail::new(what, line!()));
    }
    Ok(())
}

/// CPU 1 is still off (aarch64: AFFINITY_INFO says so; x86_64 has no query, and the final
/// successful start shows it).
fn still_off(what: &'static str) -> Outcome {
    if crate::arch::cpu_is_off(1) == Some(false) {
        defmt::error!("cpu start: CPU 1 is not off after {=str}", what);
        return Err(Fail::new(
            "CPU 1 left its off state after a refusal",
            line!(),
        ));
    }
    Ok(())
}

/// The refusals, then CPU 1 started (module doc). Runs before anything else started CPU 1.
pub fn refusals(host: &mut Host, dram_base: u64, dram_size: u64) -> Outcome {
    crate::arch::cpu_interface_checks()?;
    still_off("the discovery calls")?;
    let good = entry();
    let (pool, _) = host.pool();
    let delegated = pool;
    let r = tsm_call(CallId::GRANULE_DELEGATE, &[delegated.0]);
    if r.status != 0 {
        return Err(Fail {
            what: "cpu start: cannot delegate a granule",
            line: line!(),
            got: r.status,
        });
    }
    let cases: [(&'static str, u64, u64, Answer); 6] = [
        ("a CPU that does not exist", 0x100, good, Answer::NoSuchCpu),
        (
            "entry in the TSM's memory",
            1,
            host.tsm_memory().0,
            Answer::BadEntry,
        ),
        (
            "entry in a delegated granule",
            1,
            delegated.0 + 0x100,
            Answer::BadEntry,
        ),
        (
            "entry past DRAM",
            1,
            dram_base + dram_size,
            Answer::BadEntry,
        ),
        ("entry at 0 (not DRAM)", 1, 0, Answer::BadEntry),
        ("the calling CPU 0", 0, good, Answer::OnOrPending),
    ];
    for (what, cpu, at, want) in cases {
        check(what, crate::arch::cpu_start(cpu, at, 1), want)?;
        still_off(what)?;
    }
    let r = tsm_call(CallId::GRANULE_UNDELEGATE, &[delegated.0]);
    if r.status != 0 {
        return Err(Fail {
            what: "cpu start: cannot undelegate",
            line: line!(),
            got: r.status,
        });
    }
    crate::arch::cpu_reset_attempts(1)?;
    still_off("the reset attempts")?;
    check("CPU 1", crate::arch::cpu_start(1, good, 1), Answer::Started)?;
    check(
        "CPU 1 again",
        crate::arch::cpu_start(1, good + 4, 1),
        Answer::OnOrPending,
    )?;
    Ok(())
}

/// Has CPU 1 stop itself, waits until it is off (aarch64: AFFINITY_INFO; x86_64: until a start
/// succeeds), starts it again and checks it runs a job.
pub fn stop_and_restart() -> Outcome {
    if !crate::jobs::stop(1) {
        return Err(Fail::new("cpu start: CPU 1 did not take the stop", line!()));
    }
    let deadline = crate::arch::now_us().saturating_add(5_000_000);
    loop {
        if crate::arch::now_us() >= deadline {
            return Err(Fail::new("cpu start: CPU 1 never stopped", line!()));
        }
        match crate::arch::cpu_is_off(1) {
            Some(true) | None => match crate::arch::cpu_start(1, entry(), 1) {
                Answer::Started => break,
                Answer::OnOrPending => core::hint::spin_loop(),
                a => {
                    defmt::error!("cpu start: restarting CPU 1 got {}", a);
                    return Err(Fail::new("cpu start: restart refused", line!()));
                }
            },
            Some(false) => core::hint::spin_loop(),
        }
    }
    defmt::info!("cpu start: CPU 1 stopped and started again");
    if !crate::jobs::post_job(1, version_job, 0)
        || crate::jobs::wait_job(1, 5_000_000) != Some(true)
    {
        return Err(Fail::new(
            "cpu start: the restarted CPU 1 ran no job",
            line!(),
        ));
    }
    Ok(())
}

/// A job that proves a CPU runs the host and reaches the TSM: VERSION(1.0) granted.
fn version_job(_arg: u64) -> bool {
    tsm_call(CallId::VERSION, &[0x1_0000]).status == 0
}
