//! Ending the run through Arm semihosting (`-semihosting`).

use crate::platform::ExitCode;

/// SYS_EXIT.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: with it, the block's second word is the exit status QEMU
/// exits with.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Ends the run: QEMU exits with status 0 on success and 1 on failure.
pub fn exit(code: ExitCode) -> ! {
    let status = match code {
        ExitCode::Success => 0,
        ExitCode::Failure => 1,
    };
    let block = [ADP_STOPPED_APPLICATION_EXIT, status];
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting call; SYS_EXIT reads the two-word block
    // x1 points to, which lives on this stack frame, and does not return under QEMU.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack, readonly))
    };
    halt()
}

/// Stops this CPU for good: where there is no semihosting host, or when ending the run failed.
pub fn halt() -> ! {
    loop {
        // SAFETY: `wfe` only waits.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}
