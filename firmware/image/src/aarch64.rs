//! The TSM on aarch64: boot banner, the monitor, the other CPUs, then the run loop
//! ([`tsm_core::run_loop`]) on every CPU over the HAL's host context and [`QemuVirt`]: the
//! boot CPU enters the host, the others wait in the TSM until the host starts them with PSCI
//! CPU_ON.

use spin::Once;
use tsm_core::Tsm;
use tsm_core::run_loop::Start;
use tsm_core::viommu::Iotlb;
use tsm_hal::aarch64::{Boot, GUEST_CONTEXT_BYTES, HostContext, QemuVirt, exit};
use tsm_hal::platform::ExitCode;

// The HAL's vCPU context fits the area the core reserves for it in the VCPU granule.
const _: () = assert!(GUEST_CONTEXT_BYTES as u64 <= tsm_core::run::CONTEXT_SIZE);

tsm_hal::aarch64_entry!(main, secondary);

/// The platform and the monitor, shared by every CPU (set up once by CPU 0 before it starts
/// the others).
static PLATFORM: Once<QemuVirt> = Once::new();
static MONITOR: Once<Tsm<'static>> = Once::new();
/// The monitor's IOTLB, most of its state: a static of its own (zero bytes when empty, so in
/// `.bss`), so that no boot frame holds it while the monitor is built (docs/design.md, "Memory
/// layout on QEMU", Stacks).
static IOTLB: spin::Mutex<Iotlb> = spin::Mutex::new(Iotlb::new());

fn main(boot: Boot) -> ! {
    let (dram, tsm) = (boot.dram, boot.tsm);
    defmt::info!(
        "TSM {=str} on aarch64 EL2, CPU {=u64}: DRAM {=u64:#x}..{=u64:#x} ({=u64} MiB), TSM memory {=u64:#x}..{=u64:#x} ({=u64} KiB)",
        env!("CARGO_PKG_VERSION"),
        boot.cpu,
        dram.base.0,
        dram.base.0 + dram.size,
        dram.size >> 20,
        tsm.base.0,
        tsm.base.0 + tsm.size,
        tsm.size >> 10
    );
    if cfg!(feature = "selftest-fault") {
        defmt::warn!("selftest-fault: touching an unmapped address");
        tsm_hal::aarch64::selftest_fault();
    }
    let platform = PLATFORM.call_once(|| boot.platform);
    let monitor = match Tsm::new(platform, dram, tsm, boot.granule_descriptors, &IOTLB) {
        Ok(m) => MONITOR.call_once(|| m),
        Err(e) => {
            defmt::error!("the monitor cannot start: {}", e);
            exit(ExitCode::Failure)
        }
    };
    let cpus = tsm_hal::aarch64::start_secondary_cpus();
    defmt::info!(
        "{=usize} CPUs up in the TSM (PSCI CPU_ON); the host starts the others",
        cpus
    );
    tsm_hal::aarch64::end_of_boot();
    run(platform, monitor, boot.host, boot.cpu, Start::Host)
}

/// A secondary CPU (started by CPU 0 once the monitor is shared): waits until the host starts
/// it.
fn secondary(cpu: u64, host: HostContext) -> ! {
    let (Some(platform), Some(monitor)) = (PLATFORM.get(), MONITOR.get()) else {
        defmt::error!("CPU {=u64} started before the monitor", cpu);
        exit(ExitCode::Failure)
    };
    run(platform, monitor, host, cpu, Start::Waiting)
}

/// Runs this CPU for good.
fn run(platform: &QemuVirt, monitor: &Tsm<'_>, mut host: HostContext, cpu: u64, start: Start) -> ! {
    defmt::debug!("CPU {=u64}: running ({=?})", cpu, start);
    tsm_core::run_loop::run(monitor, cpu, &mut host, platform, start)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    tsm_hal::aarch64::report_panic(info)
}
