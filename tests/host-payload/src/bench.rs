//! The `bench` scenario: instructions per host call, read from the guest-visible counter
//! around each call. xtask runs it under QEMU `-icount shift=0` (one instruction per virtual
//! ns), so the counter measures instructions, and parses one line per figure
//! (xtask/src/bench.rs, docs/benchmarks.md):
//!
//! - `bench calib loop_insns=<n> ticks=<t>`: a loop of a known instruction count, for the scale
//!   from counter ticks to instructions;
//! - `bench overhead samples=<n> ticks=<t>`: two back-to-back counter reads, the cost a sample
//!   adds to what it measures;
//! - `bench call <name> samples=<n> ticks=<t>`: the sum over `n` samples of one call each;
//! - `bench guest <name> samples=<n> ticks=<t> overhead_ticks=<o>`: the same for a guest call,
//!   timed by the guest itself, with the sum of as many empty samples the guest took.
//!
//! Every measured call must return the status it is meant to, or the scenario fails: a refused
//! DELEGATE costs less than a real one and would pass for a fast one.

use tsm_abi::addr::Pa;
use tsm_abi::api::{OpProgress, Transport, host};
use tsm_abi::call::CallId;
use tsm_abi::exit::{ExitReason, VcpuExit};
use tsm_abi::regs::CallRegs;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::version::AbiVersion;
use tsm_scenarios::driver::{Exit, World};
use tsm_scenarios::layout::{
    BENCH_CALLS, BENCH_SUMS_GPA, BenchSums, GuestArg, IMAGE_GPA, MMIO_GPA, Script, VBDF_BASE,
    exit_code,
};
use tsm_scenarios::link::Link;
use tsm_scenarios::pool::Pool;
use tsm_scenarios::{Fail, HostEnv, Outcome};

use crate::env::Host;

/// Samples of each cheap call.
const CALLS: u32 = 256;
/// Granules delegated per round of the DELEGATE/UNDELEGATE figures.
const GRANULES: u32 = 64;
/// Rounds of [`GRANULES`] delegations.
const ROUNDS: u32 = 4;
/// VDEV_CREATE/VDEV_BIND samples: each carries a full bind and unbind through the device.
const VDEV_SAMPLES: u32 = 8;
/// TVM_CREATE / VCPU_CREATE / VCPU_DESTROY / TVM_DESTROY samples (one of each per round).
const OBJECT_SAMPLES: u32 = 16;
/// VDEV_MMIO_MAP/UNMAP samples (one page mapped and unmapped each).
const MMIO_SAMPLES: u32 = 32;
/// vCPUs of the VCPU_RUN figures, half of each kind (the scenarios' driver keeps at most this
/// many per TVM).
const VCPU_SAMPLES: usize = tsm_scenarios::driver::MAX_VCPUS;
/// Guest calls the TSM refuses in the isolation buffer script (`tsm_scenarios::guest`,
/// `iso_buffers`).
const REFUSED_GUEST_CALLS: u32 = 4;
/// VDEV_BIND samples inside an SPDM session.
const SPDM_BIND_SAMPLES: u32 = 4;
/// COMMUNICATE round trips one device operation may take before the bench calls it hung (a
/// connect asks for its chain in 1 KiB portions: about fifteen; the scenarios' driver allows as
/// many).
const MAX_ROUND_TRIPS: u32 = 64;
/// Iterations of the calibration loop (two instructions each).
const CALIB_ITERS: u64 = 1_000_000;
/// A function ID in the host range that names no call: the dispatcher refuses it before any
/// handler runs, so its round trip is the gate's floor.
const UNKNOWN_FID: u64 = 0xC600_01FF;

/// Runs the benchmark; false if a measured call did not do what it should.
pub fn run(dram_base: u64, dram_size: u64) -> bool {
    let mut env = Host::new(dram_base, dram_size);
    match measure(&mut env) {
        Ok(()) => true,
        Err(f) => {
            defmt::error!(
                "bench failed: {=str} (bench.rs line {=u32}, value {=u64:#x})",
                f.what,
                f.line,
                f.got
            );
            false
        }
    }
}

fn measure(env: &mut Host) -> Outcome {
    defmt::info!("bench start counter={=u64}", counter());
    calibrate();
    let overhead = sum(CALLS, || Ok(()))?;
    defmt::info!(
        "bench overhead samples={=u32} ticks={=u64}",
        CALLS,
        overhead
    );
    gate_calls(env)?;
    granule_calls(env)?;
    object_calls(env)?;
    vdev_calls(env)?;
    mmio_calls(env)?;
    vcpu_calls(env)?;
    guest_calls(env)?;
    spdm_calls(env)
}

/// The floor and VERSION: no state, so every sample is the same work. Both go through the
/// same path (the transport, no wrapper) so their difference is the TSM's.
fn gate_calls(env: &mut Host) -> Outcome {
    let floor = sum(CALLS, || {
        let regs = CallRegs {
            fid: UNKNOWN_FID,
            args: [0; 6],
        };
        let r = env.call(&regs);
        check(
            r.status == Status::new(StatusCode::NotSupported).to_raw(),
            "unknown FID not refused with NotSupported",
            r.status,
        )
    })?;
    report("floor_unknown_fid", CALLS, floor);
    let want = AbiVersion { major: 1, minor: 0 };
    let version = sum(CALLS, || {
        let regs = CallRegs {
            fid: u64::from(CallId::VERSION.fid()),
            args: [want.to_raw(), 0, 0, 0, 0, 0],
        };
        let r = env.call(&regs);
        check(
            r.status == Status::SUCCESS.to_raw(),
            "VERSION 1.0 refused",
            r.status,
        )
    })?;
    report("version", CALLS, version);
    Ok(())
}

/// DELEGATE and UNDELEGATE of fresh host granules, each timed alone.
fn granule_calls(env: &mut Host) -> Outcome {
    let mut pool = Pool::new(env);
    let mut granules = [Pa(0); GRANULES as usize];
    for g in granules.iter_mut() {
        *g = pool.ns(env)?;
    }
    let (mut delegate, mut undelegate) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        for &g in &granules {
            delegate += time(|| {
                let r = host::granule_delegate(env, g);
                check(r.is_ok(), "GRANULE_DELEGATE", g.0)
            })?;
        }
        for &g in &granules {
            undelegate += time(|| {
                let r = host::granule_undelegate(env, g);
                check(r.is_ok(), "GRANULE_UNDELEGATE", g.0)
            })?;
        }
    }
    report("granule_delegate", GRANULES * ROUNDS, delegate);
    report("granule_undelegate", GRANULES * ROUNDS, undelegate);
    Ok(())
}

/// TVM_CREATE, VCPU_CREATE, VCPU_DESTROY and TVM_DESTROY, each timed alone, in the order a
/// VMM makes them (the TVM has its root table only: nothing to tear down before the destroys).
/// Every round reuses the same delegated granules, which each destroy gives back DELEGATED.
fn object_calls(env: &mut Host) -> Outcome {
    let mut w = World::new(env)?;
    let params = w.tvm_params(env, 1)?;
    let (tvm, root, vcpu) = (
        w.pool.secure(env)?,
        w.pool.secure(env)?,
        w.pool.secure(env)?,
    );
    let (mut tvm_create, mut vcpu_create, mut vcpu_destroy, mut tvm_destroy) = (0, 0, 0, 0);
    for _ in 0..OBJECT_SAMPLES {
        tvm_create += time(|| {
            let r = host::tvm_create(env, tvm, params, root);
            check(r.is_ok(), "TVM_CREATE", tvm.0)
        })?;
        vcpu_create += time(|| {
            let r = host::vcpu_create(env, tvm, vcpu, IMAGE_GPA, 0);
            check(r.is_ok(), "VCPU_CREATE", vcpu.0)
        })?;
        vcpu_destroy += time(|| {
            let r = host::vcpu_destroy(env, vcpu);
            check(r.is_ok(), "VCPU_DESTROY", vcpu.0)
        })?;
        tvm_destroy += time(|| {
            let r = host::tvm_destroy(env, tvm);
            check(r.is_ok(), "TVM_DESTROY", tvm.0)
        })?;
    }
    report("tvm_create", OBJECT_SAMPLES, tvm_create);
    report("vcpu_create", OBJECT_SAMPLES, vcpu_create);
    report("vcpu_destroy", OBJECT_SAMPLES, vcpu_destroy);
    report("tvm_destroy", OBJECT_SAMPLES, tvm_destroy);
    w.finish(env)
}

/// VDEV_CREATE, and VDEV_BIND up to its first `NeedsDeviceIo` (the TSM's own work: checks,
/// state change, the first TDISP request written): the device round trips that follow are
/// the device's cost, not the TSM's, and are carried untimed. Each sample then unbinds and
/// destroys the vdevice so the next one starts from the same state.
fn vdev_calls(env: &mut Host) -> Outcome {
    let mut w = World::new(env)?;
    let t = w.add_tvm(env, &[])?;
    let ty = tsm_scenarios::scenarios::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    let pdev = w.connect_pdev(env)?;
    let params = w.pool.ns(env)?;
    check(
        env.write(params, &vdev_params_bytes()),
        "write VdevParams",
        params.0,
    )?;
    let vdev = w.pool.secure(env)?;
    // DMA-table granules: VDEV_DESTROY gives them back DELEGATED, ready for the next sample.
    let tables = [w.pool.secure(env)?, w.pool.secure(env)?];
    let with_iommu = w.features.dma.tables_per_vdev != 0;
    let comm = w.link.comm;
    let (mut create, mut bind, mut root, mut table) = (0u64, 0u64, 0u64, 0u64);
    let (mut whole, mut round_trips) = (0u64, 0u64);
    for _ in 0..VDEV_SAMPLES {
        create += time(|| {
            let r = host::vdev_create(env, vdev, pdev, viommu, params);
            check(r.is_ok(), "VDEV_CREATE", vdev.0)
        })?;
        if with_iommu {
            // The root (attach, then a refresh) and one more table (a refresh): each refresh
            // puts every page of the TVM's map to the engine (66 private pages, T=0 view).
            for (sum, &g) in [&mut root, &mut table].into_iter().zip(&tables) {
                *sum += time(|| {
                    let r = host::vdev_dma_table(env, vdev, g);
                    check(r.is_ok(), "VDEV_DMA_TABLE", g.0)
                })?;
            }
        }
        let mut first = Ok(OpProgress::Done);
        let bind_last = time(|| {
            first = host::vdev_bind(env, vdev, comm);
            check(
                matches!(first, Ok(OpProgress::NeedsDeviceIo(_))),
                "VDEV_BIND did not ask for device I/O",
                0,
            )
        })?;
        bind += bind_last;
        // The rest of the bind: each COMMUNICATE timed alone, the device's side of every
        // round trip (the link carrying the request to the device model and its response
        // back) untimed.
        whole += bind_last;
        let mut step = first;
        let mut trips = 0;
        while let Ok(OpProgress::NeedsDeviceIo(_)) = step {
            check(trips < MAX_ROUND_TRIPS, "VDEV_BIND did not finish", vdev.0)?;
            trips += 1;
            w.link.carry(env)?;
            whole += time(|| {
                step = host::communicate(env, vdev, comm);
                Ok(())
            })?;
        }
        check(
            step == Ok(OpProgress::Done),
            "VDEV_BIND carried to its end",
            vdev.0,
        )?;
        round_trips += trips as u64;
        unbind_and_destroy(env, &mut w, vdev)?;
    }
    report("vdev_create", VDEV_SAMPLES, create);
    report("vdev_bind_tsm_part", VDEV_SAMPLES, bind);
    report("vdev_bind_whole", VDEV_SAMPLES, whole);
    defmt::info!(
        "bench vdev_bind_round_trips={=u64}",
        round_trips / u64::from(VDEV_SAMPLES)
    );
    if with_iommu {
        report("vdev_dma_table_root", VDEV_SAMPLES, root);
        report("vdev_dma_table", VDEV_SAMPLES, table);
    }
    w.finish(env)
}

/// VDEV_MMIO_MAP and VDEV_MMIO_UNMAP of one page of `edu`'s BAR0, on a LOCKED vdevice whose
/// report names BAR0 (the `mmio-private` scenario's device): each map takes the page from the
/// host (TLB invalidation) and checks it against the report; each unmap gives it back.
fn mmio_calls(env: &mut Host) -> Outcome {
    let edu = tsm_scenarios::pci::Edu::probe(env)?;
    let mut w = World::with_tdis(env, tsm_scenarios::scenarios::mmio::tdis(&edu)?)?;
    let t = w.add_tvm(env, &[])?;
    w.connect_pdev(env)?;
    let viommu = w.add_viommu(env, t, tsm_abi::viommu::ViommuType::TsmNoViommu)?;
    let v = w.add_vdev(env, t, viommu, 0)?;
    let vdev = w.vdev(v)?.pa;
    let bound = w.bind(env, v)?;
    check(bound.is_ok(), "VDEV_BIND", vdev.0)?;
    let (mut map, mut unmap) = (0u64, 0u64);
    for _ in 0..MMIO_SAMPLES {
        map += time(|| {
            let r = host::vdev_mmio_map(env, vdev, MMIO_GPA, edu.bar0);
            check(r.is_ok(), "VDEV_MMIO_MAP", edu.bar0.0)
        })?;
        unmap += time(|| {
            let r = host::vdev_mmio_unmap(env, vdev, MMIO_GPA);
            check(r == Ok(edu.bar0), "VDEV_MMIO_UNMAP", edu.bar0.0)
        })?;
    }
    report("vdev_mmio_map", MMIO_SAMPLES, map);
    report("vdev_mmio_unmap", MMIO_SAMPLES, unmap);
    let unbound = w.unbind(env, v)?;
    check(unbound.is_ok(), "VDEV_UNBIND", vdev.0)?;
    w.finish(env)
}

/// The VDEV_CREATE parameters of the device's function 0, as the TSM reads them.
fn vdev_params_bytes() -> [u8; core::mem::size_of::<tsm_abi::params::VdevParams>()] {
    let params = World::vdev_params(0);
    // SAFETY: `VdevParams` is a boundary struct: `repr(C)`, `Copy`, and derives zerocopy's
    // `IntoBytes` (abi/src/layout.rs), so it has no padding and every byte is initialised; the
    // array has its exact size. (The host payload has no zerocopy dependency of its own.)
    unsafe { core::mem::transmute(params) }
}

/// VCPU_RUN of vCPUs of two kinds, alternating, one sample per vCPU (G_EXIT ends a vCPU for
/// good); xtask builds the guest without log output for this:
///
/// - the least the guest payload can do: start-up, one G_VERSION, G_EXIT (`arg0` 0 names no
///   script, so the guest exits with `BAD_ARG` right after its version check);
/// - the same plus the isolation buffer script: [`REFUSED_GUEST_CALLS`] guest calls the TSM
///   refuses after checking their arguments (three G_CONSOLE_WRITEs of memory the TVM does
///   not map, a G_VDEV_INFO of a vdevice it does not have), then G_EXIT(0).
///
/// xtask takes the difference per refused call as the cost of a guest call.
fn vcpu_calls(env: &mut Host) -> Outcome {
    let mut w = World::new(env)?;
    let iso = GuestArg {
        script: Script::IsoBuffers,
        vbdf: VBDF_BASE,
        count: 0,
    }
    .encode();
    let mut args = [0u64; VCPU_SAMPLES];
    for a in args.iter_mut().skip(1).step_by(2) {
        *a = iso;
    }
    let t = w.add_tvm(env, &args)?;
    w.activate(env, t)?;
    let vcpus = w.tvm(t)?.vcpus.clone();
    let exit = w.exit;
    let (mut minimal, mut refusing) = (0u64, 0u64);
    for (&vcpu, &arg) in vcpus.iter().zip(&args) {
        let ticks = time(|| {
            let r = host::vcpu_run(env, vcpu, exit);
            check(
                matches!(r, Ok(ExitReason::GuestExit)),
                "VCPU_RUN did not end with G_EXIT",
                vcpu.0,
            )
        })?;
        let mut rec = [0u8; core::mem::size_of::<VcpuExit>()];
        check(env.read(exit, &mut rec), "read the exit record", exit.0)?;
        // SAFETY: `VcpuExit` is a boundary struct (`repr(C)`, zerocopy `FromBytes`:
        // abi/src/layout.rs), so any bytes of its exact size are a valid value.
        let rec: VcpuExit = unsafe { core::mem::transmute(rec) };
        // Any other code is the line of a failed guest check (a refused G_VERSION, or a call
        // the TSM did not refuse as the script expects).
        if arg == iso {
            check(
                rec.code == 0,
                "guest exit code of the buffer script",
                rec.code,
            )?;
            refusing += ticks;
        } else {
            check(
                rec.code == exit_code::BAD_ARG,
                "guest exit code (G_VERSION failed?)",
                rec.code,
            )?;
            minimal += ticks;
        }
    }
    let half = (VCPU_SAMPLES / 2) as u32;
    report("vcpu_run_minimal_guest", half, minimal);
    report("vcpu_run_refused_guest_calls", half, refusing);
    defmt::info!("bench refused_guest_calls={=u32}", REFUSED_GUEST_CALLS);
    w.finish(env)
}

/// G_VERSION from a TVM's vCPU, timed inside the guest: the host sees only whole VCPU_RUNs,
/// so a guest running [`Script::Bench`] reads its counter (the same one as the host's) around
/// each call and leaves the sums in a page the host maps shared. The guest checks that every
/// call succeeded: its exit code is 0, else the line of the failed check.
fn guest_calls(env: &mut Host) -> Outcome {
    let mut w = World::new(env)?;
    let arg = GuestArg {
        script: Script::Bench,
        vbdf: 0,
        count: 0,
    }
    .encode();
    let t = w.add_tvm(env, &[arg])?;
    let page = w.map_shared(env, t, BENCH_SUMS_GPA)?;
    w.activate(env, t)?;
    w.run_expect(env, t, 0, Exit::Exited(0))?;
    let mut raw = [0u8; BenchSums::SIZE];
    check(env.read(page, &mut raw), "read the guest's sums", page.0)?;
    let sums = BenchSums::decode(&raw);
    check(
        sums.samples == u64::from(BENCH_CALLS),
        "samples in the guest's sums",
        sums.samples,
    )?;
    defmt::info!(
        "bench guest g_version samples={=u64} ticks={=u64} overhead_ticks={=u64}",
        sums.samples,
        sums.calls,
        sums.empty
    );
    w.finish(env)
}

/// PDEV_CONNECT with SPDM (version to FINISH: the requester's steps, the chain and signature
/// checks, ECDHE, the key schedule), then VDEV_BIND inside its session (every TDISP message
/// sealed and opened): every call of each operation timed and summed, the TSM's whole part.
/// The device model answers between the calls in this payload, untimed, so its own work
/// (signing, its half of ECDHE) is not counted.
fn spdm_calls(env: &mut Host) -> Outcome {
    let mut w = World::new(env)?;
    let t = w.add_tvm(env, &[])?;
    let ty = tsm_scenarios::scenarios::first_viommu_type(&w)?;
    let viommu = w.add_viommu(env, t, ty)?;
    w.link.use_spdm(tsm_device_model::identity::DEVICE)?;
    let (pdev, evidence) = w.create_pdev_spdm(env)?;
    let comm = w.link.comm;
    let (connect, connect_calls) = drive_timed(env, &mut w.link, pdev, |env| {
        host::pdev_connect(env, pdev, comm, evidence)
    })?;
    defmt::info!("bench spdm_connect_calls={=u32}", connect_calls);
    report("pdev_connect_spdm", 1, connect);
    let params = w.pool.ns(env)?;
    check(
        env.write(params, &vdev_params_bytes()),
        "write VdevParams",
        params.0,
    )?;
    let vdev = w.pool.secure(env)?;
    let mut bind = 0u64;
    for _ in 0..SPDM_BIND_SAMPLES {
        let r = host::vdev_create(env, vdev, pdev, viommu, params);
        check(r.is_ok(), "VDEV_CREATE", vdev.0)?;
        let (ticks, _) = drive_timed(env, &mut w.link, vdev, |env| {
            host::vdev_bind(env, vdev, comm)
        })?;
        bind += ticks;
        unbind_and_destroy(env, &mut w, vdev)?;
    }
    report("vdev_bind_spdm", SPDM_BIND_SAMPLES, bind);
    w.finish(env)
}

/// Carries a device operation to its end, timing only the TSM's calls: `first` (the call that
/// starts it) and each COMMUNICATE; the link's device answers in between, untimed. Returns the
/// Untimed between samples: the vdevice unbound through the device and destroyed.
fn unbind_and_destroy(env: &mut Host, w: &mut World, vdev: Pa) -> Outcome {
    let first = host::vdev_unbind(env, vdev, w.link.comm);
    let unbound = w.link.drive(env, vdev, first)?;
    check(unbound.is_ok(), "VDEV_UNBIND", vdev.0)?;
    check(
        host::vdev_destroy(env, vdev).is_ok(),
        "VDEV_DESTROY",
        vdev.0,
    )
}

/// ticks and the number of calls; the operation must succeed.
fn drive_timed(
    env: &mut Host,
    link: &mut Link,
    object: Pa,
    first: impl FnOnce(&mut Host) -> tsm_abi::api::Result<OpProgress>,
) -> Outcome<(u64, u32)> {
    let mut step = Ok(OpProgress::Done);
    let mut ticks = time(|| {
        step = first(env);
        Ok(())
    })?;
    for calls in 1..=MAX_ROUND_TRIPS {
        match step {
            Ok(OpProgress::Done) => return Ok((ticks, calls)),
            Err(_) => return Err(Fail::new("timed device operation failed", line!())),
            Ok(OpProgress::NeedsDeviceIo(_)) => {
                link.carry(env)?;
                ticks += time(|| {
                    step = host::communicate(env, object, link.comm);
                    Ok(())
                })?;
            }
        }
    }
    Err(Fail::new("timed device operation did not finish", line!()))
}

fn report(name: &str, samples: u32, ticks: u64) {
    defmt::info!(
        "bench call {=str} samples={=u32} ticks={=u64}",
        name,
        samples,
        ticks
    );
}

/// Counter ticks across `f`.
fn time(f: impl FnOnce() -> Outcome) -> Outcome<u64> {
    let start = counter();
    f()?;
    let end = counter();
    Ok(end.wrapping_sub(start))
}

/// Ticks summed over `n` samples of `f`.
fn sum(n: u32, mut f: impl FnMut() -> Outcome) -> Outcome<u64> {
    let mut total = 0u64;
    for _ in 0..n {
        total = total.wrapping_add(time(&mut f)?);
    }
    Ok(total)
}

fn check(ok: bool, what: &'static str, got: u64) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(Fail {
            what,
            line: line!(),
            got,
        })
    }
}

/// Times a loop of exactly `2 × CALIB_ITERS` instructions: the scale xtask checks the
/// counter's rate against.
fn calibrate() {
    let start = counter();
    spin(CALIB_ITERS);
    let ticks = counter().wrapping_sub(start);
    defmt::info!(
        "bench calib loop_insns={=u64} ticks={=u64}",
        2 * CALIB_ITERS,
        ticks
    );
}

/// The architected counter the host can read: CNTVCT_EL0 (after an ISB, so it is not read
/// early) on aarch64.
#[cfg(target_arch = "aarch64")]
fn counter() -> u64 {
    let count: u64;
    // SAFETY: ISB and a read of the virtual counter touch no memory and have no side effects.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags));
    }
    count
}

/// The TSC (the TSM does not intercept RDTSC), fenced so it is not read early.
#[cfg(target_arch = "x86_64")]
fn counter() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC touch no memory; RDTSC only writes edx:eax.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// `n` iterations of a two-instruction loop (`n` ≥ 1).
#[cfg(target_arch = "aarch64")]
fn spin(n: u64) {
    // SAFETY: only counts a register down; no memory, no stack.
    unsafe {
        core::arch::asm!("2:", "subs {n}, {n}, #1", "b.ne 2b", n = inout(reg) n => _, options(nomem, nostack));
    }
}

/// `n` iterations of a two-instruction loop (`n` ≥ 1).
#[cfg(target_arch = "x86_64")]
fn spin(n: u64) {
    // SAFETY: only counts a register down; no memory, no stack.
    unsafe {
        core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack));
    }
}
