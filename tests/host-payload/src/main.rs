//! The host payload: a small bare-metal program that plays the host OS's TSM driver. The TSM
//! enters it deprivileged (EL1 behind a stage 2 / an SVM guest behind a nested page table)
//! after boot; it reaches the TSM only
//! through the call gate, and its log goes out through the TSM's debug console.
#![no_std]
#![no_main]

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

mod cpu_start;
mod env;
mod jobs;
mod logger;
mod scenario;
#[cfg(target_arch = "x86_64")]
mod svm_escape;
mod vcpu_smoke;

use tsm_abi::call::CallId;
use tsm_abi::regs::{CallRegs, CallResult};

/// Issues one TSM call through the architectural gate.
pub fn tsm_call(call: CallId, args: &[u64]) -> CallResult {
    let mut regs = CallRegs {
        fid: call.fid() as u64,
        args: [0; 6],
    };
    for (slot, a) in regs.args.iter_mut().zip(args) {
        *slot = *a;
    }
    arch::call(&regs)
}

/// Ends the run: 0 = success.
pub fn system_off(code: u64) -> ! {
    tsm_call(CallId::SYSTEM_OFF, &[code]);
    // The TSM never returns from SYSTEM_OFF; if it did, the harness's timeout reports a hang.
    loop {
        core::hint::spin_loop();
    }
}

/// Called by the arch entry with the boot arguments the TSM passed (docs/design.md).
pub fn host_main(dram_base: u64, dram_size: u64, cpu: u64) -> ! {
    let id = arch::scenario_id();
    defmt::info!(
        "host payload up on CPU {=u64}: DRAM {=u64:#x}+{=u64:#x}, scenario {=u32}",
        cpu,
        dram_base,
        dram_size,
        id
    );
    let passed = scenario::run(id, dram_base, dram_size);
    if passed {
        defmt::info!("scenario {=u32}: PASS", id);
        system_off(0)
    } else {
        defmt::error!("scenario {=u32}: FAIL", id);
        system_off(1)
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Some(loc) = info.location() {
        defmt::error!("host panic at {=str}:{=u32}", loc.file(), loc.line());
    } else {
        defmt::error!("host panic");
    }
    system_off(1)
}
