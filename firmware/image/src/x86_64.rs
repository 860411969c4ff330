//! The TSM on x86_64 QEMU `q35`: after the HAL's boot, log the machine and start the monitor,
//! then the run loop ([`tsm_core::run_loop`]) on every CPU over the HAL's SVM host context
//! and [`X86Platform`].

use spin::Once;
use tsm_core::Tsm;
use tsm_core::run_loop::Start;
use tsm_core::viommu::Iotlb;
use tsm_hal::platform::ExitCode;
use tsm_hal::x86_64::{self as hal, BootInfo, X86Platform};

// The HAL's vCPU context fits the area the core reserves for it in the VCPU granule.
const _: () = assert!(hal::GUEST_FRAME_SIZE <= tsm_core::run::CONTEXT_SIZE);

tsm_hal::x86_64_entry!(main);

/// The platform and the monitor, shared by every CPU (set up once by CPU 0).
static PLATFORM: Once<X86Platform> = Once::new();
static TSM: Once<Tsm<'static>> = Once::new();
/// The monitor's IOTLB, most of its state: a static of its own (zero bytes when empty, so in
/// `.bss`), so that no boot frame holds it while the monitor is built (docs/design.md, "Memory
/// layout on QEMU", Stacks).
static IOTLB: spin::Mutex<Iotlb> = spin::Mutex::new(Iotlb::new());

fn main(boot: &'static BootInfo, cpu: usize) -> ! {
    if cpu == 0 {
        boot_cpu(boot);
        tsm_hal_boot::end_of_boot();
    }
    let tsm = TSM.wait();
    run_host(boot, tsm, cpu)
}

/// The boot CPU: the banner, then the monitor.
fn boot_cpu(boot: &'static BootInfo) {
    defmt::info!(
        "TSM {=str} on x86_64 q35 (PVH), TSC {=u64} ticks/us, entered at {=u64} us",
        env!("CARGO_PKG_VERSION"),
        boot.tsc_ticks_per_us,
        hal::entry_us()
    );
    for e in boot.memmap() {
        defmt::info!(
            "memmap {=u64:#010x}..{=u64:#010x} {=str}",
            e.base,
            e.base.saturating_add(e.size),
            e.kind_name()
        );
    }
    if boot.memmap_dropped > 0 {
        defmt::warn!(
            "memmap: {=u32} entries beyond the table were dropped",
            boot.memmap_dropped
        );
    }
    // RAM below DRAM is the legacy area under 1 MiB (the real-mode start page lives there);
    // RAM above it is what q35 moved above 4 GiB, lost to the host: say so.
    let dram_end = boot.dram.base.0 + boot.dram.size;
    for e in boot.untracked_ram().filter(|e| e.base >= dram_end) {
        defmt::warn!(
            "RAM {=u64:#x}..{=u64:#x} ({=u64} MiB) not tracked: the core manages one DRAM range, so the host does not get it",
            e.base,
            e.base.saturating_add(e.size),
            e.size >> 20
        );
    }
    let (used, pool) = hal::pool_usage();
    defmt::info!(
        "DRAM {=u64:#x}..{=u64:#x}, TSM {=u64:#x}..{=u64:#x} (page tables {=u64}/{=u64} pages)",
        boot.dram.base.0,
        boot.dram.base.0 + boot.dram.size,
        boot.tsm.base.0,
        boot.tsm.base.0 + boot.tsm.size,
        used,
        pool
    );
    if cfg!(feature = "selftest-fault") {
        defmt::warn!("selftest-fault: touching an unmapped address");
        hal::selftest_fault();
    }

    let platform = PLATFORM.call_once(|| X86Platform::new(boot));
    match Tsm::new(
        platform,
        boot.dram,
        boot.tsm,
        boot.granule_descriptors,
        &IOTLB,
    ) {
        Ok(tsm) => {
            TSM.call_once(|| tsm);
        }
        Err(e) => {
            defmt::error!("core: cannot start: {}", e);
            hal::exit(ExitCode::Failure)
        }
    }
}

/// Runs this CPU for good.
///
/// On CPU 0, first starts the other CPUs: each comes back here through `main` with its index
/// and waits in the TSM until the host starts it with HOST_CPU_START; CPU 0 enters the host.
fn run_host(boot: &'static BootInfo, tsm: &Tsm<'_>, cpu: usize) -> ! {
    if cpu == 0 {
        let cpus = tsm_hal_boot::start_secondary_cpus(boot.madt_cpus);
        defmt::info!(
            "{=usize} CPUs up in the TSM (INIT-SIPI-SIPI; the MADT lists {=?}); the host starts the others",
            cpus,
            boot.madt_cpus
        );
    }
    let Some(mut host) = tsm_hal_boot::host_context(boot, cpu) else {
        defmt::error!(
            "CPU {=usize}: the host cannot be entered (DRAM above 4 GiB, or no VMCB for this CPU)",
            cpu
        );
        hal::exit(ExitCode::Failure)
    };
    let start = if cpu == 0 {
        defmt::info!(
            "CPU {=usize}: entering the host at {=u64:#x}",
            cpu,
            hal::HOST_ENTRY
        );
        Start::Host
    } else {
        defmt::debug!("CPU {=usize}: waiting for the host to start it", cpu);
        Start::Waiting
    };
    tsm_core::run_loop::run(tsm, cpu as u64, &mut host, PLATFORM.wait(), start)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hal::report_panic(info)
}
