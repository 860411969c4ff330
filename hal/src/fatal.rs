//! The last-resort paths, the same on both arches: plain-text records, which need neither the
//! defmt logger nor its lock (a fault or panic may strike inside a log call, lock held).

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
    t.push("tsm: fatal: ").push(msg);
    emit(&t);
    exit(ExitCode::Failure)
}

/// The image's panic handler: reports the panic in plain text and ends the run as a failure.
///
/// It says where (file:line:col) and, when the message is a plain string, what; a message with
/// arguments (core's index and overflow checks, `expect` on an error) is not formatted: this
/// handler is what would link `core::fmt` into the image, and the location finds the check.
pub fn report_panic(info: &core::panic::PanicInfo) -> ! {
    begin_dying();
    let mut t = TextBuf::new();
    t.push("tsm: panic");
    if let Some(loc) = info.location() {
        t.push(" at ")
            .push(loc.file())
            .push(":")
            .dec(loc.line().into())
            .push(":")
            .dec(loc.column().into());
    }
    t.push(": ").push(
        info.message()
            .as_str()
            .unwrap_or("(message with arguments, not formatted)"),
    );
    emit(&t);
    exit(ExitCode::Failure)
}
