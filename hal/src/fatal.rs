//! The last-resort paths, the same on both arches: plain-text records, which need neither the
//! defmt logger nor its lock (a fault or panic may strike inside a log call, lock held).

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::arch::{exit, halt};
use crate::logger::emit_text;
use crate::platform::ExitCode;
use crate::text::TextBuf;

/// How many fatal paths have started: the second one (a fault while reporting) ends the run
/// without output, a third one (ending the run itself faulted) stops the CPU.
static DYING: AtomicU8 = AtomicU8::new(0);

/// Enters a fatal path. Returns only to the first one, which may report before it exits.
pub(crate) fn begin_dying() {
    match DYING.fetch_add(1, Ordering::AcqRel) {
        0 => {}
        1 => exit(ExitCode::Failure),
        _ => halt(),
    }
}

/// Writes `text` as one plain-text record.
pub(crate) fn emit(text: &TextBuf) {
    emit_text(text.as_str());
}

/// Reports a failure the TSM cannot go on from, in plain text, and ends the run.
pub(crate) fn fatal_text(msg: &str) -> ! {
    begin_dying();
    let mut t = TextBuf::new();
    let _ = write!(t, "tsm: fatal: {msg}");
    emit(&t);
    exit(ExitCode::Failure)
}

/// The image's panic handler: reports the panic (location and message) in plain text and ends
/// the run as a failure.
pub fn report_panic(info: &core::panic::PanicInfo) -> ! {
    begin_dying();
    let mut t = TextBuf::new();
    let _ = match info.location() {
        Some(loc) => write!(
            t,
            "tsm: panic at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        ),
        None => write!(t, "tsm: panic: {}", info.message()),
    };
    emit(&t);
    exit(ExitCode::Failure)
}
