//! The TSM on aarch64: boot banner, then the host run loop. Every host call goes to
//! `tsm_core` ([`Tsm::host_call`]); a VCPU_RUN runs the vCPU ([`run_vcpu`]) until the core
//! completes the call; a host load or store to memory it does not own is logged and skipped
//! (the isolation probes); any other host exit is reported with its decoded syndrome and fails
//! the run.

use spin::Once;
use tsm_abi::addr::Gpa;
use tsm_abi::regs::CallResult;
use tsm_core::Tsm;
use tsm_core::run::{GuestEntry, GuestExit, GuestStep, HostStep, Resume};
use tsm_hal::aarch64::syndrome::{self, AbortIss, Ec};
use tsm_hal::aarch64::{
    Boot, Exit, Fault, GUEST_CONTEXT_BYTES, GuestTrap, HostContext, QemuVirt, Start, exit,
};
use tsm_hal::platform::{ExitCode, MemRange};

// The HAL's vCPU context fits the area the core reserves for it in the VCPU granule.
const _: () = assert!(GUEST_CONTEXT_BYTES as u64 <= tsm_core::run::CONTEXT_SIZE);

tsm_hal::aarch64_entry!(main, secondary);

/// The platform and the monitor, shared by every CPU (set up once by CPU 0 before it starts
/// the others).
static PLATFORM: Once<QemuVirt> = Once::new();
static MONITOR: Once<Tsm<'static>> = Once::new();

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
    let monitor = match Tsm::new(platform, dram, tsm, boot.granule_descriptors) {
        Ok(m) => MONITOR.call_once(|| m),
        Err(e) => {
            defmt::error!("the monitor cannot start: {}", defmt::Debug2Format(&e));
            exit(ExitCode::Failure)
        }
    };
    let cpus = tsm_hal::aarch64::start_secondary_cpus();
    defmt::info!("{=usize} CPUs up (PSCI CPU_ON)", cpus);
    run_host(platform, monitor, boot.host, dram, boot.cpu)
}

/// A secondary CPU (started by CPU 0 once the monitor is shared): runs the host on it.
fn secondary(cpu: u64, host: HostContext, dram: MemRange) -> ! {
    let (Some(platform), Some(monitor)) = (PLATFORM.get(), MONITOR.get()) else {
        defmt::error!("CPU {=u64} started before the monitor", cpu);
        exit(ExitCode::Failure)
    };
    run_host(platform, monitor, host, dram, cpu)
}

/// Runs the host on this CPU, handing each of its calls to the core.
fn run_host(
    platform: &QemuVirt,
    monitor: &Tsm<'_>,
    mut host: HostContext,
    dram: MemRange,
    cpu: u64,
) -> ! {
    defmt::debug!("CPU {=u64}: entering the host", cpu);
    loop {
        match host.run() {
            Exit::Call(regs) => {
                let result = match monitor.host_call(&regs) {
                    HostStep::Reply(r) => r,
                    HostStep::Enter(e) => run_vcpu(platform, monitor, &e),
                };
                defmt::debug!(
                    "CPU {=u64} host call {=u64:#x}({=u64:#x}, {=u64:#x}, {=u64:#x}) -> {=u64:#x} [{=u64:#x}, {=u64:#x}, {=u64:#x}, {=u64:#x}]",
                    cpu,
                    regs.fid,
                    regs.args[0],
                    regs.args[1],
                    regs.args[2],
                    result.status,
                    result.out[0],
                    result.out[1],
                    result.out[2],
                    result.out[3]
                );
                host.finish_call(&result);
            }
            Exit::Fault(fault) => {
                if let Some(ipa) = host.skip_blocked_access(&dram) {
                    defmt::warn!(
                        "CPU {=u64}: host {=str} of IPA {=u64:#x} (not host memory) blocked and skipped, ELR {=u64:#x}",
                        cpu,
                        if AbortIss::decode(fault.esr).write {
                            "write"
                        } else {
                            "read"
                        },
                        ipa,
                        fault.elr
                    );
                    continue;
                }
                report_fault(&fault, host.frame().x);
                exit(ExitCode::Failure)
            }
        }
    }
}

/// Runs a claimed vCPU until the core ends the host's VCPU_RUN; returns the call's result.
fn run_vcpu(platform: &QemuVirt, tsm: &Tsm<'_>, e: &GuestEntry) -> CallResult {
    let mut resume = e.resume;
    loop {
        let start = match resume {
            Resume::Start { entry, arg0 } => Start::Fresh {
                entry: entry.0,
                arg0,
            },
            Resume::Continue => Start::Continue,
            Resume::Return(r) => Start::Return(r),
        };
        let exit = match platform.run_guest(e.context, e.root, start) {
            Ok(GuestTrap::Call(regs)) => {
                defmt::debug!(
                    "vCPU {=u64:#x} call {=u64:#x}({=u64:#x}, {=u64:#x})",
                    e.vcpu.0,
                    regs.fid,
                    regs.args[0],
                    regs.args[1]
                );
                GuestExit::Call(regs)
            }
            Ok(GuestTrap::Fault {
                syndrome,
                ipa,
                write,
            }) => {
                defmt::debug!(
                    "vCPU {=u64:#x} fault: ESR {=u64:#x}, IPA valid {=bool} {=u64:#x}",
                    e.vcpu.0,
                    syndrome,
                    ipa.is_some(),
                    ipa.unwrap_or(0)
                );
                GuestExit::Fault {
                    syndrome,
                    gpa: ipa.map(Gpa),
                    write,
                }
            }
            // The core's claim and the HAL's checks disagree: a TSM bug. The vCPU does not
            // run; the host gets a FAULT exit without an address and may tear it down.
            Err(err) => {
                defmt::error!(
                    "vCPU {=u64:#x} cannot be entered: {}",
                    e.vcpu.0,
                    defmt::Debug2Format(&err)
                );
                GuestExit::Fault {
                    syndrome: 0,
                    gpa: None,
                    write: false,
                }
            }
        };
        match tsm.guest_exit(e.vcpu, exit) {
            GuestStep::Resume(r) => resume = r,
            GuestStep::ToHost(r) => return r,
        }
    }
}

/// Logs a host exit that is not a call: the syndrome decoded, then the host's registers.
fn report_fault(f: &Fault, x: [u64; 31]) {
    let ec = syndrome::ec(f.esr);
    defmt::error!(
        "host fault ({=?}): EC {=u8:#x} ({=str}), ESR {=u64:#x}, FAR {=u64:#x}, HPFAR {=u64:#x}, ELR {=u64:#x}, SPSR {=u64:#x}",
        f.kind,
        ec.0,
        ec.name(),
        f.esr,
        f.far,
        f.hpfar,
        f.elr,
        f.spsr
    );
    if ec.is_abort() {
        let iss = AbortIss::decode(f.esr);
        defmt::error!(
            "  {=str} at level {=u8} (FSC {=u8:#x}), {=str}, IPA {=u64:#x}, on stage-1 walk {=bool}, ISV {=bool} (size {=u8}, register x{=u8})",
            iss.fsc_name(),
            iss.level(),
            iss.fsc,
            if iss.write { "write" } else { "read" },
            syndrome::fault_ipa(f.hpfar, f.far),
            iss.s1ptw,
            iss.isv,
            1u8 << iss.sas,
            iss.srt
        );
    } else if ec == Ec::SMC64 || ec == Ec::HVC64 {
        defmt::error!("  call with a non-zero immediate {=u64:#x}", f.esr & 0xFFFF);
    }
    defmt::error!("  x0..x7   {:#x}", first::<8>(&x, 0));
    defmt::error!("  x8..x15  {:#x}", first::<8>(&x, 8));
    defmt::error!("  x16..x23 {:#x}", first::<8>(&x, 16));
    defmt::error!("  x24..x30 {:#x}", first::<7>(&x, 24));
}

/// `N` registers from `start`.
fn first<const N: usize>(x: &[u64; 31], start: usize) -> [u64; N] {
    core::array::from_fn(|i| x.get(start + i).copied().unwrap_or(0))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    tsm_hal::aarch64::report_panic(info)
}
