//! The host payload's defmt logger (`tsm_scenarios::console_log`): each frame goes to the
//! TSM's debug console with `CONSOLE_WRITE`.

use tsm_abi::call::CallId;

tsm_scenarios::console_logger!(now_us: crate::arch::now_us(), send: console_write);

/// The host's memory is identity-mapped, so the frame's address is its physical address.
fn console_write(frame: &[u8]) {
    crate::tsm_call(
        CallId::CONSOLE_WRITE,
        &[frame.as_ptr() as u64, frame.len() as u64],
    );
}
