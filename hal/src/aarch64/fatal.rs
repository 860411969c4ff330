//! The last-resort paths: plain-text records that need neither the defmt logger nor its lock.

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

use super::semihosting::{exit, halt};
use crate::logger::emit_text;
use crate::platform::ExitCode;

/// How many fatal paths have started: the second one (a fault while reporting) ends the run
/// without output, a third one (SYS_EXIT itself faulted) stops the CPU.
static DYING: AtomicU8 = AtomicU8::new(0);

/// A line of text built on the stack; what does not fit is cut.
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Writes the line as one plain-text record.
    pub fn emit(&self) {
        // Only whole `&str`s are copied in, so the cut is the only way to split a character.
        let bytes = &self.buf[..self.len];
        let text = match core::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        emit_text(text);
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Enters a fatal path. Returns only to the first one, which may report before it exits.
pub fn begin_dying() {
    match DYING.fetch_add(1, Ordering::AcqRel) {
        0 => {}
        1 => exit(ExitCode::Failure),
        _ => halt(),
    }
}

/// Reports a boot failure in plain text and ends the run.
pub fn fatal_text(msg: &str) -> ! {
    begin_dying();
    let mut line = Line::new();
    let _ = write!(line, "tsm: fatal: {msg}");
    line.emit();
    exit(ExitCode::Failure)
}

/// Reports a panic in plain text (location and message), without the defmt logger: the panic
/// may have struck while it was held.
pub fn panic_text(info: &core::panic::PanicInfo) {
    let mut line = Line::new();
    let _ = match info.location() {
        Some(loc) => write!(
            line,
            "tsm: panic at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        ),
        None => write!(line, "tsm: panic: {}", info.message()),
    };
    line.emit();
}
