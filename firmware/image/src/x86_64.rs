//! The TSM on x86_64 QEMU `q35`: after the HAL's boot, log the machine, then run the host in
//! ring 3 and hand each of its calls to the core until it powers off. A host VCPU_RUN runs
//! the vCPU in ring 3 on its TVM's map (`run_vcpu`) until the core sends the result back to
//! the host.

use spin::Once;
use tsm_abi::addr::Gpa;
use tsm_abi::regs::CallResult;
use tsm_core::Tsm;
use tsm_core::run::{GuestEntry, GuestExit, GuestStep, HostStep, Resume};
use tsm_hal::platform::ExitCode;
use tsm_hal::x86_64::{self as hal, BootInfo, Exit, Fault, GuestResume, X86Platform};

tsm_hal::x86_64_entry!(main);

/// The platform and the monitor, shared by every CPU (set up once by CPU 0).
static PLATFORM: Once<X86Platform> = Once::new();
static TSM: Once<Tsm<'static>> = Once::new();

fn main(boot: &'static BootInfo, cpu: usize) -> ! {
    if cpu == 0 {
        boot_cpu(boot);
    }
    let tsm = TSM.wait();
    run_host(boot, tsm, cpu)
}

/// The boot CPU: the banner, then the monitor.
fn boot_cpu(boot: &'static BootInfo) {
    defmt::info!(
        "TSM {=str} on x86_64 q35 (PVH), TSC {=u64} ticks/us",
        env!("CARGO_PKG_VERSION"),
        boot.tsc_ticks_per_us
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
    match Tsm::new(platform, boot.dram, boot.tsm, boot.granule_descriptors) {
        Ok(tsm) => {
            TSM.call_once(|| tsm);
        }
        Err(e) => {
            defmt::error!("core: cannot start: {}", defmt::Debug2Format(&e));
            hal::exit(ExitCode::Failure)
        }
    }
}

/// Runs the host on this CPU, handing each of its calls to the core.
///
/// On CPU 0, first starts the other CPUs: each comes back here through `main` with its index
/// and runs its own instance of the host payload (which tells them apart by that index).
fn run_host(boot: &'static BootInfo, tsm: &Tsm<'_>, cpu: usize) -> ! {
    if cpu == 0 {
        let cpus = hal::start_secondary_cpus(boot.madt_cpus);
        defmt::info!(
            "{=usize} CPUs up (INIT-SIPI-SIPI; the MADT lists {=?})",
            cpus,
            boot.madt_cpus
        );
    }
    let mut host = hal::host_context(boot, cpu as u64);
    defmt::info!(
        "CPU {=usize}: entering the host at {=u64:#x}",
        cpu,
        hal::HOST_ENTRY
    );
    loop {
        match host.run() {
            Exit::Call(regs) => {
                defmt::trace!("host call {=u64:#x} args {:#x}", regs.fid, regs.args);
                let r = match tsm.host_call(&regs) {
                    HostStep::Reply(r) => r,
                    HostStep::Enter(e) => run_vcpu(boot, tsm, &e),
                };
                defmt::trace!("  -> status {=u64:#x} out {:#x}", r.status, r.out);
                host.set_result(&r);
            }
            Exit::Fault(f) => {
                report_host_fault(&f);
                hal::exit(ExitCode::Failure)
            }
        }
    }
}

/// Runs a claimed vCPU until the core ends the host's VCPU_RUN; returns its result.
fn run_vcpu(boot: &BootInfo, tsm: &Tsm<'_>, e: &GuestEntry) -> CallResult {
    let mut resume = e.resume;
    loop {
        let hal_resume = match resume {
            Resume::Start { entry, arg0 } => GuestResume::Start {
                entry: entry.0,
                arg0,
            },
            Resume::Continue => GuestResume::Continue,
            Resume::Return(r) => GuestResume::Return(r),
        };
        let exit = match hal::run_guest(boot, e.context, e.root, hal_resume) {
            Ok(exit) => exit,
            Err(err) => {
                // The core handed over a context or root the HAL cannot use: a TSM bug.
                defmt::error!(
                    "vCPU {=u64:#x}: cannot enter (context {=u64:#x}, root {=u64:#x}): {}",
                    e.vcpu.0,
                    e.context.0,
                    e.root.0,
                    err
                );
                hal::exit(ExitCode::Failure)
            }
        };
        let trap = match exit {
            Exit::Call(regs) => {
                defmt::trace!("guest call {=u64:#x} args {:#x}", regs.fid, regs.args);
                GuestExit::Call(regs)
            }
            Exit::Fault(f) => {
                defmt::debug!(
                    "vCPU {=u64:#x}: {=str} error {=u64:#x} at rip {=u64:#x}, cr2 {=u64:#x}",
                    e.vcpu.0,
                    hal::vector_name(u64::from(f.vector)),
                    f.error_code,
                    f.regs.rip,
                    f.cr2
                );
                GuestExit::Fault {
                    syndrome: f.syndrome(),
                    gpa: f.page_fault_address().map(Gpa),
                    write: f.is_write(),
                }
            }
        };
        match tsm.guest_exit(e.vcpu, trap) {
            GuestStep::Resume(r) => resume = r,
            GuestStep::ToHost(r) => return r,
        }
    }
}

fn report_host_fault(f: &Fault) {
    let r = &f.regs;
    defmt::error!(
        "host fault: vector {=u8} {=str}, error code {=u64:#x}, rip {=u64:#x}, cs {=u64:#x}, rflags {=u64:#x}, rsp {=u64:#x}, cr2 {=u64:#x}",
        f.vector,
        hal::vector_name(u64::from(f.vector)),
        f.error_code,
        r.rip,
        f.cs,
        r.rflags,
        r.rsp,
        f.cr2
    );
    defmt::error!(
        "host regs: rax {=u64:#x} rbx {=u64:#x} rcx {=u64:#x} rdx {=u64:#x} rsi {=u64:#x} rdi {=u64:#x} rbp {=u64:#x} r8 {=u64:#x}",
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8
    );
    defmt::error!(
        "host regs: r9 {=u64:#x} r10 {=u64:#x} r11 {=u64:#x} r12 {=u64:#x} r13 {=u64:#x} r14 {=u64:#x} r15 {=u64:#x}",
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hal::report_panic(info)
}
