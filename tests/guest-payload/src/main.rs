//! The guest payload: a bare-metal program the host loads into a TVM's private memory at GPA
//! 0x20_0000 (docs/design.md "Guests"). It runs the guest script its `arg0` selects
//! (`tsm_scenarios::guest`) and ends with G_EXIT(code), 0 when every check passed.
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

mod logger;
mod memory;

use tsm_abi::api::guest;

/// G_EXIT code of a guest that panicked.
const PANICKED: u64 = 0xDEAD;

/// Called by the arch entry with the vCPU's first argument register.
pub fn guest_main(arg0: u64) -> ! {
    let mut env = memory::Guest;
    let code = match tsm_scenarios::guest::main(&mut env, arg0) {
        Ok(code) => code,
        // Unreachable on hardware (a bad access exits to the host); kept total.
        Err(fault) => fault.gpa.0 | 0xFA,
    };
    if code == 0 {
        defmt::info!("guest: all checks passed");
    } else {
        defmt::error!("guest: check failed, exit code {=u64}", code);
    }
    exit(code)
}

/// G_EXIT; the TSM never resumes an exited vCPU.
fn exit(code: u64) -> ! {
    let _ = guest::g_exit(&mut arch::Gate, code);
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Some(loc) = info.location() {
        defmt::error!("guest panic at {=str}:{=u32}", loc.file(), loc.line());
    }
    exit(PANICKED)
}
