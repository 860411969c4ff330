//! The seven scenarios on the build machine, against the monitor core over its simulated
//! platform, for both address-map formats. After each: the invariant checker, and every
//! granule of the pool back in NS.

mod sim;

use std::time::Instant;

use tsm_platform::AddressMapFormat;
use tsm_scenarios::id;

const FORMATS: [AddressMapFormat; 2] = [
    AddressMapFormat::ArmStage2,
    AddressMapFormat::X86_64FourLevel,
];

fn scenario(n: u32) {
    for format in FORMATS {
        let sim = sim::Sim::new(format);
        let mut host = sim.host();
        let t = Instant::now();
        let r = tsm_scenarios::run(&mut host, n);
        assert_eq!(r, Ok(()), "scenario {n} on {format:?}");
        sim.check_clean();
        eprintln!("scenario {n} on {format:?}: {:?}", t.elapsed());
    }
}

#[test]
fn s1_lifecycle() {
    scenario(id::LIFECYCLE);
}

#[test]
fn s22_spdm() {
    scenario(id::SPDM);
}

#[test]
fn s23_spdm_mitm() {
    scenario(id::SPDM_MITM);
}

#[test]
fn s2_isolation() {
    scenario(id::ISOLATION);
}

/// The host's own accesses, one run each as on QEMU: here the simulated platform blocks them
/// and the run goes on to the teardown.
#[test]
fn s2_isolation_host_accesses() {
    scenario(id::ISOLATION_DELEGATED);
    scenario(id::ISOLATION_PRIVATE);
    scenario(id::ISOLATION_TSM);
}

/// An access that reaches the memory fails the run: the host-access runs cannot pass when the
/// platform lets the host through (here: the target is an NS granule the host may touch).
#[test]
fn a_host_access_that_goes_through_fails() {
    let sim = sim::Sim::new(AddressMapFormat::ArmStage2);
    let mut host = sim.host();
    host.let_through = true;
    let r = tsm_scenarios::run(&mut host, id::ISOLATION_DELEGATED);
    assert!(r.is_err_and(|f| f.what == "host reached secure memory"));
}

#[test]
fn s3_bad_input() {
    scenario(id::BAD_INPUT);
}

#[test]
fn s4_acceptance() {
    scenario(id::ACCEPTANCE);
}

#[test]
fn s5_hostile_device() {
    scenario(id::HOSTILE_DEVICE);
}

#[test]
fn s6_dma_rules() {
    scenario(id::DMA_RULES);
}

/// Two and four host CPUs (threads) on the same objects; the invariant checker afterwards.
#[test]
fn s7_smp() {
    use tsm_scenarios::scenarios::smp;
    const ITERATIONS: u32 = 2000;
    for cpus in [2, 4] {
        for format in FORMATS {
            let sim = sim::Sim::new(format);
            let mut hosts: Vec<_> = (0..cpus).map(|_| sim.host()).collect();
            let t = Instant::now();
            let (mut world, shared) = smp::setup(&mut hosts[0]).expect("setup");
            let start = std::sync::Barrier::new(cpus);
            let tallies: Vec<smp::Tally> = std::thread::scope(|s| {
                let mut link = Some(&mut world.link);
                let (shared, start) = (&shared, &start);
                let workers: Vec<_> = hosts
                    .iter_mut()
                    .enumerate()
                    .map(|(cpu, h)| {
                        let link = link.take();
                        s.spawn(move || {
                            start.wait();
                            smp::worker(h, cpu, shared, link, ITERATIONS)
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .enumerate()
                    .map(|(cpu, w)| {
                        w.join()
                            .unwrap()
                            .unwrap_or_else(|f| panic!("CPU {cpu}: {f:?}"))
                    })
                    .collect()
            });
            for (cpu, tally) in tallies.iter().enumerate() {
                assert!(
                    tally.succeeded() > 0,
                    "CPU {cpu} got no work done: {tally:?}"
                );
            }
            assert!(
                tallies.iter().map(smp::Tally::lost_races).sum::<u64>() > 0,
                "{cpus} CPUs never lost a race: they did not race"
            );
            sim.h.check();
            let mut h = sim.host();
            assert_eq!(smp::finish(&mut h, world, &shared), Ok(()));
            sim.check_clean();
            eprintln!(
                "scenario 7 on {cpus} CPUs, {format:?}: {:?}, {tallies:?}",
                t.elapsed()
            );
        }
    }
}

/// The guest half of `cargo xtask bench`'s guest-call figure (tests/host-payload/src/bench.rs):
/// a [`Script::Bench`] guest times its G_VERSIONs with the simulated vCPU's fake clock and
/// leaves the sums in a page the host maps shared. The clock makes the sums exact.
#[test]
fn bench_guest_times_its_calls() {
    use tsm_scenarios::HostEnv;
    use tsm_scenarios::driver::{Exit, World};
    use tsm_scenarios::layout::{BENCH_CALLS, BENCH_SUMS_GPA, BenchSums, GuestArg, Script};

    for format in FORMATS {
        let sim = sim::Sim::new(format);
        let mut host = sim.host();
        let mut w = World::new(&mut host).expect("world");
        let arg = GuestArg {
            script: Script::Bench,
            vbdf: 0,
            count: 0,
        }
        .encode();
        let t = w.add_tvm(&mut host, &[arg]).expect("TVM");
        let page = w
            .map_shared(&mut host, t, BENCH_SUMS_GPA)
            .expect("sums page");
        w.activate(&mut host, t).expect("TVM_ACTIVATE");
        w.run_expect(&mut host, t, 0, Exit::Exited(0))
            .expect("the guest's checks pass");
        let mut raw = [0u8; BenchSums::SIZE];
        assert!(host.read(page, &mut raw));
        let n = u64::from(BENCH_CALLS);
        assert_eq!(
            BenchSums::decode(&raw),
            BenchSums {
                samples: n,
                calls: n * (sim::CLOCK_READ_TICKS + sim::CLOCK_CALL_TICKS),
                empty: n * sim::CLOCK_READ_TICKS,
            },
            "on {format:?}"
        );
        assert_eq!(w.finish(&mut host), Ok(()));
        sim.check_clean();
    }
}

/// A host whose interrupts preempt vCPUs (a Linux host's timer): the driver re-runs a vCPU on
/// each INTERRUPT exit (whose record it checks holds nothing else) and the scenarios with
/// guests pass as without them, the interrupted vCPUs continuing where they were.
#[test]
fn host_interrupts_preempt_vcpus_and_the_scenarios_still_pass() {
    for n in [id::LIFECYCLE, id::ACCEPTANCE] {
        for format in FORMATS {
            let sim = sim::Sim::new(format);
            sim.interrupt_every(2);
            let r = tsm_scenarios::run(&mut sim.host(), n);
            assert_eq!(r, Ok(()), "scenario {n} on {format:?} under interrupts");
            sim.check_clean();
            let interrupts = sim.interrupts.load(std::sync::atomic::Ordering::Relaxed);
            assert!(interrupts > 0, "scenario {n} on {format:?}: no vCPU ran");
        }
    }
}

/// The single-CPU entry (what the host payload runs) fails loudly instead of passing.
#[test]
fn smp_on_one_cpu_fails_with_a_reason() {
    let sim = sim::Sim::new(AddressMapFormat::ArmStage2);
    let r = tsm_scenarios::run(&mut sim.host(), id::SMP);
    assert!(r.is_err_and(|f| f.what.contains("second CPU")));
}
