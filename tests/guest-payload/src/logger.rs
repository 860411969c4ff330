//! The guest's defmt logger (`tsm_scenarios::console_log`): each frame goes to the TSM's debug
//! console with G_CONSOLE_WRITE (stream 2, docs/design.md "Logging").

use tsm_abi::addr::Gpa;
use tsm_abi::api::guest;

tsm_scenarios::console_logger!(now_us: crate::arch::now_us(), send: console_write);

/// The guest's addresses are its GPAs, so the frame's address is its GPA. A refused write has
/// nowhere to be reported.
fn console_write(frame: &[u8]) {
    let _ = guest::g_console_write(
        &mut crate::arch::Gate,
        Gpa(frame.as_ptr() as u64),
        frame.len() as u64,
    );
}
