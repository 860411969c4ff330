//! Scenario `smp4` on QEMU (`-smp 4`): CPU 0 builds the contested objects of the `smp` race
//! (`tsm_scenarios::scenarios::smp`) and a second TVM, active, with one vCPU per CPU running
//! `__smp_guest` (the arch file: G_VERSION, then a host call the TSM refuses, forever), starts
//! CPUs 1–3 through the TSM and has all four race until each has made its share of calls:
//!
//! - every round, `smp::step` (delegate / map / unmap / undelegate of the same granules, the
//!   vdevice's state, CPU 0's bind and unbind through the device, the others' malformed
//!   COMMUNICATEs) and a VCPU_RUN: of the CPU's own vCPU, and every fourth round of the next
//!   CPU's, which may be running there (`ObjectState(1)`, the ABI's answer for that race);
//! - CPU 1 also keeps QEMU's `edu` busy reading the contested granules (its transfers run while
//!   the others change what the IOMMU translates) and copies each read back to a host page: no
//!   byte of the secret the granules hold while private may ever arrive, and every fault the
//!   host-domain queue reports must be edu's read refused as T=0 to secure memory.
//!
//! Every status any call gets must be one its race allows (`smp::Got`); each CPU counts them,
//! and the counts are logged per CPU at the end (`cargo xtask smp-soak` reads those lines).
//! Then everything is torn down and every granule checked back in NS, scrubbed.
//!
//! The calls per CPU come from the parameters page's second word (`arch::scenario_param`,
//! [`DEFAULT_CALLS`] when xtask sets none).

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::event::{EventFlags, EventReason, HostEvent};
use tsm_abi::exit::{ExitReason, VcpuExit};
use tsm_abi::status::{Status, StatusCode};
use tsm_scenarios::pci::{Direction, Edu};
use tsm_scenarios::scenarios::smp::{self, Got, RACE_GRANULES, SECRET, Shared, Tally};
use tsm_scenarios::{Fail, HostEnv, Outcome};
use zerocopy::{FromZeros, IntoBytes};

use crate::env::Host;

/// Calls per CPU when xtask names none: `cargo xtask test`'s run.
const DEFAULT_CALLS: u64 = 1000;
/// The CPUs that race (QEMU `-smp 4`; the TSM and the payload both have room for four).
const CPUS: usize = 4;
/// Bytes per `edu` read of a contested granule.
const PROBE_LEN: u64 = 64;
/// A CPU not done this long after CPU 0 finished its share: a deadlock (a long run's CPUs
/// finish within seconds of each other).
const STRAGGLER_TIMEOUT_US: u64 = 120_000_000;
/// `edu` has not finished one transfer after this long: it is stuck.
const DMA_TIMEOUT_US: u64 = 30_000_000;

/// What the CPUs share, written by CPU 0 before it posts the jobs (the post's release store
/// orders them).
struct Words {
    /// DRAM base and size (the CPUs' `Host`), the calls per CPU.
    dram: [AtomicU64; 3],
    /// TVM, vdevice, bad COMMUNICATE buffer, secret page, then the contested granules.
    race: [AtomicU64; 4 + RACE_GRANULES],
    /// The program TVM's vCPUs, one per CPU.
    vcpus: [AtomicU64; CPUS],
    /// VCPU_RUN's exit record of each CPU.
    exits: [AtomicU64; CPUS],
    /// edu's requester ID and BAR0; the host page a probe copies the device's buffer to; the
    /// host-domain event buffer.
    dma: [AtomicU64; 4],
}

static WORDS: Words = Words {
    dram: [const { AtomicU64::new(0) }; 3],
    race: [const { AtomicU64::new(0) }; 4 + RACE_GRANULES],
    vcpus: [const { AtomicU64::new(0) }; CPUS],
    exits: [const { AtomicU64::new(0) }; CPUS],
    dma: [const { AtomicU64::new(0) }; 4],
};

/// Each CPU's tally ([`Tally::counts`]), written by the CPU when its share is done.
static TALLIES: [[AtomicU64; Got::ALL.len()]; CPUS] =
    [const { [const { AtomicU64::new(0) }; Got::ALL.len()] }; CPUS];
/// edu reads of a contested granule finished (and copied back and checked).
static PROBES: AtomicU64 = AtomicU64::new(0);

fn load(words: &[AtomicU64], i: usize) -> u64 {
    words.get(i).map_or(0, |w| w.load(Ordering::Relaxed))
}

fn store(words: &[AtomicU64], values: &[u64]) {
    for (w, &v) in words.iter().zip(values) {
        w.store(v, Ordering::Relaxed);
    }
}

/// What one CPU needs, as it reads it from [`WORDS`].
struct Ctx {
    race: Shared,
    vcpus: [Pa; CPUS],
    exit: Pa,
    calls: u64,
    edu: Edu,
    out: Pa,
    event: Pa,
}

impl Ctx {
    fn read(cpu: usize) -> Ctx {
        let r = |i| Pa(load(&WORDS.race, i));
        Ctx {
            race: Shared {
                tvm: r(0),
                vdev: r(1),
                bad_comm: r(2),
                secret: r(3),
                granules: core::array::from_fn(|i| r(4 + i)),
            },
            vcpus: core::array::from_fn(|i| Pa(load(&WORDS.vcpus, i))),
            exit: Pa(load(&WORDS.exits, cpu)),
            calls: load(&WORDS.dram, 2),
            edu: Edu {
                rid: load(&WORDS.dma, 0) as u16,
                bar0: Pa(load(&WORDS.dma, 1)),
                bar0_size: 0,
            },
            out: Pa(load(&WORDS.dma, 2)),
            event: Pa(load(&WORDS.dma, 3)),
        }
    }
}

/// CPUs 1–3's job: their share of the race, without the device link.
fn cpu_job(cpu: u64) -> bool {
    let cpu = cpu as usize;
    let mut host = Host::new(load(&WORDS.dram, 0), load(&WORDS.dram, 1));
    match share(&mut host, cpu, &Ctx::read(cpu), None) {
        Ok(t) => {
            publish_tally(cpu, &t);
            true
        }
        Err(f) => {
            defmt::error!(
                "smp4: CPU {=usize} failed: {=str} (line {=u32}, value {=u64:#x})",
                cpu,
                f.what,
                f.line,
                f.got
            );
            false
        }
    }
}

fn publish_tally(cpu: usize, t: &Tally) {
    if let Some(slots) = TALLIES.get(cpu) {
        for (slot, &c) in slots.iter().zip(&t.counts) {
            slot.store(c, Ordering::Relaxed);
        }
    }
}

/// One CPU's share: rounds until it has made `ctx.calls` calls.
fn share(
    env: &mut Host,
    cpu: usize,
    ctx: &Ctx,
    mut link: Option<&mut tsm_scenarios::link::Link>,
) -> Outcome<Tally> {
    let mut tally = Tally::default();
    let mut probe = (cpu == 1).then_some(Probe::Idle);
    let report_every = (ctx.calls / 10).max(1);
    let mut next_report = report_every;
    let mut i = 0usize;
    while tally.calls() < ctx.calls {
        smp::step(env, cpu, &ctx.race, link.as_deref_mut(), i, &mut tally)?;
        run_vcpu(env, cpu, ctx, i, &mut tally)?;
        if let Some(p) = probe.as_mut() {
            p.advance(env, ctx, i, &mut tally)?;
        }
        if cpu == 0 && tally.calls() >= next_report {
            defmt::info!(
                "smp4: progress: CPU 0 at {=u64} of {=u64} calls",
                tally.calls(),
                ctx.calls
            );
            next_report += report_every;
        }
        i += 1;
    }
    if let Some(mut p) = probe {
        // The transfer in flight must end before the granules go back: teardown checks them.
        while !matches!(p, Probe::Idle) {
            p.advance(env, ctx, i, &mut tally)?;
        }
    }
    Ok(tally)
}

/// VCPU_RUN of this CPU's vCPU or (every fourth round) the next CPU's: it must stop at its
/// refused host call, or be refused because another CPU runs it.
fn run_vcpu(env: &mut Host, cpu: usize, ctx: &Ctx, i: usize, tally: &mut Tally) -> Outcome {
    let v = if i % 4 == 3 { (cpu + 1) % CPUS } else { cpu };
    let vcpu = ctx
        .vcpus
        .get(v)
        .copied()
        .ok_or(Fail::new("vCPU", line!()))?;
    let (got, reason) = smp::judge(
        host::vcpu_run(env, vcpu, ctx.exit),
        Some(Got::VcpuRan),
        &[(Status::arg(StatusCode::ObjectState, 1), Got::VcpuBusy)],
        "racing VCPU_RUN",
    )?;
    if let Some(reason) = reason {
        let mut rec = VcpuExit::new_zeroed();
        ensure(
            env.read(ctx.exit, rec.as_mut_bytes()),
            "read the exit record",
            0,
        )?;
        if reason != ExitReason::DeniedCall {
            defmt::error!(
                "smp4: CPU {=usize}: vCPU {=u64:#x}: exit reason {=u32}, code {=u64:#x}, syndrome {=u64:#x}, GPA {=u64:#x}, fid {=u64:#x}",
                cpu,
                vcpu.0,
                rec.reason,
                rec.code,
                rec.syndrome,
                rec.gpa,
                rec.fid
            );
        }
        ensure(
            reason == ExitReason::DeniedCall && rec.reason == reason.raw(),
            "a racing vCPU did not stop at its host call (G_EXIT code 1: G_VERSION failed, 2: the host call's refusal was wrong)",
            rec.code,
        )?;
    }
    tally.add(got);
    Ok(())
}

fn ensure(cond: bool, what: &'static str, got: u64) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(Fail {
            what,
            line: line!(),
            got,
        })
    }
}

/// CPU 1's use of `edu`: read a contested granule into the device's buffer, copy the buffer to
/// a host page, check it, drain the host-domain fault queue; one transfer at a time, advanced
/// once a round so the CPU keeps racing meanwhile.
enum Probe {
    Idle,
    /// Reading granule `k` since `at` (µs).
    Reading {
        k: usize,
        at: u64,
    },
    /// Copying the buffer to the host page since `at`.
    Copying {
        k: usize,
        at: u64,
    },
}

impl Probe {
    fn advance(&mut self, env: &mut Host, ctx: &Ctx, i: usize, tally: &mut Tally) -> Outcome {
        let now = crate::arch::now_us();
        match *self {
            Probe::Idle => {
                let k = i % RACE_GRANULES;
                let g = ctx
                    .race
                    .granules
                    .get(k)
                    .copied()
                    .ok_or(Fail::new("granule", line!()))?;
                ctx.edu
                    .start_dma(env, Direction::ToDevice, g.0, 0, PROBE_LEN)?;
                *self = Probe::Reading { k, at: now };
            }
            Probe::Reading { k, at } => {
                if ctx.edu.busy(env)? {
                    return stuck(now, at);
                }
                ctx.edu
                    .start_dma(env, Direction::ToRam, ctx.out.0, 0, PROBE_LEN)?;
                *self = Probe::Copying { k, at: now };
            }
            Probe::Copying { k, at } => {
                if ctx.edu.busy(env)? {
                    return stuck(now, at);
                }
                let mut got = [0u8; PROBE_LEN as usize];
                ensure(env.read(ctx.out, &mut got), "read the probe page", 0)?;
                ensure(
                    got.iter().all(|&b| b != SECRET),
                    "edu read a TVM's private page: the IOMMU let T=0 reach secure memory",
                    ctx.race.granules.get(k).map_or(0, |g| g.0),
                )?;
                // The next probe must not see this one's bytes.
                ensure(
                    env.write(ctx.out, &[0; PROBE_LEN as usize]),
                    "clear the probe page",
                    0,
                )?;
                drain_faults(env, ctx, tally)?;
                PROBES.fetch_add(1, Ordering::Relaxed);
                *self = Probe::Idle;
            }
        }
        Ok(())
    }
}

fn stuck(now: u64, since: u64) -> Outcome {
    ensure(
        now.saturating_sub(since) < DMA_TIMEOUT_US,
        "edu's transfer did not finish",
        since,
    )
}

/// Reads the host-domain queue until it is empty: every fault in it must be edu's read,
/// refused as T=0 to secure memory (the only transfers here are its reads of the granules).
fn drain_faults(env: &mut Host, ctx: &Ctx, tally: &mut Tally) -> Outcome {
    loop {
        let left = match host::event_read(env, EventQueue::HostDomain, ctx.event) {
            Ok(left) => left,
            Err(e) => {
                return Err(Fail {
                    what: "EVENT_READ host domain",
                    line: line!(),
                    got: tsm_scenarios::driver::raw_error(e),
                });
            }
        };
        if left.is_none() {
            tally.add(Got::NoDmaFault);
            return Ok(());
        }
        let mut ev = HostEvent::new_zeroed();
        ensure(env.read(ctx.event, ev.as_mut_bytes()), "read the event", 0)?;
        ensure(
            ev.vdev == 0 && ev.segment == 0 && ev.rid == ctx.edu.rid,
            "a host-domain fault names another requester",
            u64::from(ev.rid),
        )?;
        ensure(
            ev.reason == EventReason::T0ToSecure.raw() && ev.flags & EventFlags::WRITE.bits() == 0,
            "a host-domain fault other than edu's refused read",
            u64::from(ev.reason),
        )?;
        tally.add(Got::DmaFault);
    }
}

/// Runs the scenario from CPU 0.
pub fn run(dram_base: u64, dram_size: u64) -> Outcome {
    let mut host = Host::new(dram_base, dram_size);
    let calls = match crate::arch::scenario_param() {
        0 => DEFAULT_CALLS,
        n => u64::from(n),
    };
    let (mut w, s) = smp::setup(&mut host)?;
    let edu = Edu::probe(&mut host)?;
    let denied = Status::new(StatusCode::Denied).to_raw();
    let mut program = [0u8; GRANULE_SIZE as usize];
    ensure(
        host.read(guest_program(), &mut program),
        "read the guest program",
        0,
    )?;
    let t = w.add_program_tvm(&mut host, &program, &[denied; CPUS])?;
    w.activate(&mut host, t)?;
    let vcpus = w.tvm(t)?.vcpus.clone();
    ensure(
        vcpus.len() == CPUS,
        "smp4: the program TVM's vCPUs",
        vcpus.len() as u64,
    )?;
    store(&WORDS.dram, &[dram_base, dram_size, calls]);
    store(&WORDS.race, &[s.tvm.0, s.vdev.0, s.bad_comm.0, s.secret.0]);
    store(
        WORDS.race.get(4..).unwrap_or_default(),
        &s.granules.map(|g| g.0),
    );
    for (slot, v) in WORDS.vcpus.iter().zip(&vcpus) {
        slot.store(v.0, Ordering::Relaxed);
    }
    for slot in &WORDS.exits {
        slot.store(w.pool.ns(&mut host)?.0, Ordering::Relaxed);
    }
    let out = w.pool.ns(&mut host)?;
    store(
        &WORDS.dma,
        &[u64::from(edu.rid), edu.bar0.0, out.0, w.event.0],
    );
    defmt::info!(
        "smp4: 4 CPUs, {=u64} calls each: {=usize} contested granules, {=usize} vCPUs of one TVM, edu at RID {=u16:#x} reading the granules",
        calls,
        RACE_GRANULES,
        CPUS,
        edu.rid
    );
    for cpu in 1..CPUS {
        if !crate::jobs::post_job(cpu, cpu_job, cpu as u64) {
            return Err(Fail {
                what: "smp4: a CPU did not come up in the host payload",
                line: line!(),
                got: cpu as u64,
            });
        }
    }
    let start = crate::arch::now_us();
    let here = share(&mut host, 0, &Ctx::read(0), Some(&mut w.link));
    // Every CPU must be done before teardown either way: they still call on these objects.
    let mut failed = here.as_ref().err().copied();
    for cpu in 1..CPUS {
        match crate::jobs::wait_job(cpu, STRAGGLER_TIMEOUT_US) {
            Some(true) => {}
            Some(false) => {
                failed = failed.or(Some(Fail::new("smp4: a CPU's share failed", line!())))
            }
            None => {
                failed = failed.or(Some(Fail {
                    what: "smp4: a CPU did not finish (deadlock?)",
                    line: line!(),
                    got: cpu as u64,
                }))
            }
        }
    }
    let elapsed_ms = crate::arch::now_us().saturating_sub(start) / 1000;
    if let Some(f) = failed {
        return Err(f);
    }
    let here = here?;
    publish_tally(0, &here);
    summary(calls, elapsed_ms)?;
    smp::finish(&mut host, w, &s)
}

/// Logs each CPU's counts (the lines `cargo xtask smp-soak` parses) and checks that every CPU
/// got work done and the race was one.
fn summary(calls: u64, elapsed_ms: u64) -> Outcome {
    let mut lost = 0;
    for (cpu, slots) in TALLIES.iter().enumerate() {
        let mut t = Tally::default();
        for (c, slot) in t.counts.iter_mut().zip(slots) {
            *c = slot.load(Ordering::Relaxed);
        }
        for g in Got::ALL {
            let n = t.count(g);
            if n > 0 {
                defmt::info!("smp4: CPU {=usize}: {=str} x{=u64}", cpu, g.name(), n);
            }
        }
        defmt::info!(
            "smp4: CPU {=usize}: {=u64} calls, {=u64} succeeded, {=u64} lost a race",
            cpu,
            t.calls(),
            t.succeeded(),
            t.lost_races()
        );
        ensure(
            t.succeeded() > 0 && t.calls() >= calls,
            "smp4: a CPU did not get its calls through",
            cpu as u64,
        )?;
        ensure(
            t.count(Got::VcpuRan) > 0,
            "smp4: a CPU never ran a vCPU",
            cpu as u64,
        )?;
        lost += t.lost_races();
    }
    let probes = PROBES.load(Ordering::Relaxed);
    defmt::info!(
        "smp4: {=u64} edu reads of the contested granules, none saw the secret; {=u64} ms for the race",
        probes,
        elapsed_ms
    );
    ensure(
        lost > 0,
        "smp4: no call lost a race: the CPUs did not race",
        0,
    )?;
    ensure(probes > 0, "smp4: edu read no contested granule", 0)
}

/// The page holding `__smp_guest` (in the arch file).
fn guest_program() -> Pa {
    unsafe extern "C" {
        static __smp_guest: u8;
    }
    Pa(core::ptr::addr_of!(__smp_guest) as u64)
}
