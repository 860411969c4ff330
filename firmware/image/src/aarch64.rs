//! The TSM on aarch64: boot banner, then the host run loop. Every host call goes to
//! `tsm_core`; any other host exit is reported with its decoded syndrome and fails the run.

use tsm_core::{Origin, Tsm};
use tsm_hal::aarch64::syndrome::{self, AbortIss, Ec};
use tsm_hal::aarch64::{Boot, Exit, Fault, exit};
use tsm_hal::platform::ExitCode;

tsm_hal::aarch64_entry!(main);

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
        defmt::warn!("self-test: reading past the end of DRAM");
        tsm_hal::aarch64::fault_selftest(&dram);
    }
    let mut host = boot.host;
    let platform = boot.platform;
    let monitor = match Tsm::new(&platform, dram, tsm, boot.granule_descriptors) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("the monitor cannot start: {}", defmt::Debug2Format(&e));
            exit(ExitCode::Failure)
        }
    };
    loop {
        match host.run() {
            Exit::Call(regs) => {
                let result = monitor.handle(Origin::Host, &regs);
                defmt::debug!(
                    "host call {=u64:#x}({=u64:#x}, {=u64:#x}, {=u64:#x}) -> {=u64:#x} [{=u64:#x}, {=u64:#x}, {=u64:#x}, {=u64:#x}]",
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
                report_fault(&fault, host.frame().x);
                exit(ExitCode::Failure)
            }
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
    // Plain text only: the panic may have struck inside a defmt log call, with its lock held.
    tsm_hal::aarch64::panic_text(info);
    exit(ExitCode::Failure)
}
