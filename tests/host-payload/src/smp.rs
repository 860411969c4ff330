//! Scenario 7 (SMP) on QEMU: CPU 0 checks what starting a CPU through the TSM refuses and
//! starts CPU 1 (`cpu_start`), builds the contested objects (`tsm_scenarios::scenarios::smp`),
//! publishes them, posts the racing worker to CPU 1, runs its own worker with the device link at
//! the same time, collects CPU 1's result, tears down and checks every granule, then has CPU 1
//! stop itself and starts it again.

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::Pa;
use tsm_scenarios::scenarios::smp::{self, Got, RACE_GRANULES, Shared, Tally};
use tsm_scenarios::{Fail, Outcome};

use crate::env::Host;

/// Rounds per CPU: each is a racing call, a VDEV_GET_STATE and (every 8th round on CPU 0) a
/// bind and unbind through the device; enough for both CPUs to win and lose races under TCG
/// well inside the run's timeout.
const ITERATIONS: u32 = 200;
/// CPU 1 not done this long after CPU 0 finished its share: a deadlock.
const CPU1_TIMEOUT_US: u64 = 30_000_000;

/// The shared objects as CPU 1 reads them: DRAM base and size, TVM, vdevice, bad COMMUNICATE
/// buffer, secret page, then the contested granules. Written by CPU 0 before it posts the job (the post's
/// release store orders them).
const WORDS: usize = 6 + RACE_GRANULES;
static SHARED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// CPU 1's tally ([`Tally::counts`]).
static CPU1_TALLY: [AtomicU64; Got::ALL.len()] = [const { AtomicU64::new(0) }; Got::ALL.len()];

fn word(i: usize) -> u64 {
    SHARED.get(i).map_or(0, |w| w.load(Ordering::Relaxed))
}

fn publish(dram_base: u64, dram_size: u64, s: &Shared) {
    let head = [
        dram_base,
        dram_size,
        s.tvm.0,
        s.vdev.0,
        s.bad_comm.0,
        s.secret.0,
    ];
    let words = head.iter().chain(s.granules.iter().map(|g| &g.0));
    for (slot, &v) in SHARED.iter().zip(words) {
        slot.store(v, Ordering::Relaxed);
    }
}

fn shared() -> Shared {
    let mut granules = [Pa(0); RACE_GRANULES];
    for (i, g) in granules.iter_mut().enumerate() {
        *g = Pa(word(6 + i));
    }
    Shared {
        tvm: Pa(word(2)),
        vdev: Pa(word(3)),
        bad_comm: Pa(word(4)),
        secret: Pa(word(5)),
        granules,
    }
}

/// CPU 1's job: its share of the race, without the device link.
fn cpu1_worker(_arg: u64) -> bool {
    let mut host = Host::new(word(0), word(1));
    match smp::worker(&mut host, 1, &shared(), None, ITERATIONS) {
        Ok(t) => {
            for (slot, &c) in CPU1_TALLY.iter().zip(&t.counts) {
                slot.store(c, Ordering::Relaxed);
            }
            true
        }
        Err(f) => {
            defmt::error!(
                "smp: CPU 1 failed: {=str} (scenarios line {=u32}, value {=u64:#x})",
                f.what,
                f.line,
                f.got
            );
            false
        }
    }
}

/// Runs the scenario from CPU 0.
pub fn run(dram_base: u64, dram_size: u64) -> Outcome {
    let mut host = Host::new(dram_base, dram_size);
    crate::cpu_start::refusals(&mut host, dram_base, dram_size)?;
    let (mut w, s) = smp::setup(&mut host)?;
    publish(dram_base, dram_size, &s);
    if !crate::jobs::post_job(1, cpu1_worker, 0) {
        return Err(Fail::new(
            "smp: CPU 1 is not up in the host payload",
            line!(),
        ));
    }
    let here = smp::worker(&mut host, 0, &s, Some(&mut w.link), ITERATIONS);
    // CPU 1 must be done before teardown either way: it still calls on these objects.
    let there = crate::jobs::wait_job(1, CPU1_TIMEOUT_US);
    let a = here?;
    match there {
        Some(true) => {}
        Some(false) => return Err(Fail::new("smp: CPU 1's share failed", line!())),
        None => return Err(Fail::new("smp: CPU 1 did not finish (deadlock?)", line!())),
    }
    let mut b = Tally::default();
    for (c, slot) in b.counts.iter_mut().zip(&CPU1_TALLY) {
        *c = slot.load(Ordering::Relaxed);
    }
    defmt::info!(
        "smp: {=u32} rounds per CPU; CPU 0 {=u64} calls won, {=u64} races lost; CPU 1 {=u64} won, {=u64} lost",
        ITERATIONS,
        a.succeeded(),
        a.lost_races(),
        b.succeeded(),
        b.lost_races()
    );
    if a.succeeded() == 0 || b.succeeded() == 0 {
        return Err(Fail::new("smp: a CPU got no call through", line!()));
    }
    smp::finish(&mut host, w, &s)?;
    crate::cpu_start::stop_and_restart()
}
