//! The TSM's defmt global logger: collects one defmt frame, then writes it to the UART as one
//! [`crate::log`] record. The arch module provides `console_write(&[u8])` (raw UART bytes) and
//! `now_us()` (microseconds since boot) for the timestamp.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;
use crate::log::{MAX_PAYLOAD, MAX_RECORD, STREAM_TEXT, STREAM_TSM, encode_record};

defmt::timestamp!("{=u64:us}", arch::now_us());

#[defmt::global_logger]
struct TsmLogger;

struct Frame {
    len: usize,
    buf: [u8; MAX_PAYLOAD],
    record: [u8; MAX_RECORD],
}

struct FrameCell(UnsafeCell<Frame>);
// SAFETY: the frame is only touched between `acquire` (which takes `LOCKED`) and `release`
// (which gives it back), so at most one CPU uses it at a time.
unsafe impl Sync for FrameCell {}

static LOCKED: AtomicBool = AtomicBool::new(false);
static FRAME: FrameCell = FrameCell(UnsafeCell::new(Frame {
    len: 0,
    buf: [0; MAX_PAYLOAD],
    record: [0; MAX_RECORD],
}));

// SAFETY: `acquire` takes a spin lock that `release` frees, so `write`/`flush`/`release` run with
// exclusive use of `FRAME`, as the trait requires.
unsafe impl defmt::Logger for TsmLogger {
    fn acquire() {
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we hold LOCKED.
        unsafe { (*FRAME.0.get()).len = 0 };
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: defmt calls release only after acquire, so we hold LOCKED.
        let f = unsafe { &mut *FRAME.0.get() };
        let n = encode_record(STREAM_TSM, &f.buf[..f.len], &mut f.record);
        arch::console_write(&f.record[..n]);
        LOCKED.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: defmt calls write only between acquire and release, so we hold LOCKED.
        let f = unsafe { &mut *FRAME.0.get() };
        let room = MAX_PAYLOAD - f.len;
        let n = bytes.len().min(room);
        f.buf[f.len..f.len + n].copy_from_slice(&bytes[..n]);
        f.len += n;
    }
}

/// Writes a plain-text record without taking the logger lock: for early boot and for fatal paths
/// that may run while the logger is held (an exception inside a log call).
pub fn emit_text(text: &str) {
    let mut record = [0u8; MAX_RECORD];
    let n = encode_record(STREAM_TEXT, text.as_bytes(), &mut record);
    arch::console_write(&record[..n]);
}

/// Relays a frame the host or a guest handed over with a debug-console call.
pub fn emit_relayed(stream: u8, frame: &[u8]) {
    let mut record = [0u8; MAX_RECORD];
    let n = encode_record(stream, frame, &mut record);
    while LOCKED
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    arch::console_write(&record[..n]);
    LOCKED.store(false, Ordering::Release);
}
