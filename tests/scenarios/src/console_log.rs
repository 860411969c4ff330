//! The payloads' defmt logger: one frame per log call, collected in a page and handed whole to
//! the TSM's debug console (`CONSOLE_WRITE` from the host, `G_CONSOLE_WRITE` from a guest),
//! which frames it for the UART (docs/design.md "Logging"). The host and guests have no device
//! of their own. Each payload instantiates it with [`crate::console_logger!`], naming the call
//! that sends a frame.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Longest frame the TSM accepts per debug-console call; a longer one is cut.
pub const MAX_FRAME: usize = 512;

/// Page-aligned so a frame never crosses a granule (the TSM requires one granule per buffer).
#[repr(C, align(4096))]
struct Frame {
    buf: [u8; MAX_FRAME],
    len: usize,
}

/// One frame being collected, behind a spin lock: defmt's `acquire` / `write` / `release`.
pub struct ConsoleFrame {
    locked: AtomicBool,
    frame: UnsafeCell<Frame>,
}

// SAFETY: `frame` is only touched between `acquire` (which takes `locked`) and `release` (which
// frees it), so at most one CPU uses it at a time.
unsafe impl Sync for ConsoleFrame {}

impl ConsoleFrame {
    /// An empty, unlocked frame.
    pub const fn new() -> Self {
        ConsoleFrame {
            locked: AtomicBool::new(false),
            frame: UnsafeCell::new(Frame {
                buf: [0; MAX_FRAME],
                len: 0,
            }),
        }
    }

    /// Takes the lock (spinning while another CPU holds it) and starts an empty frame.
    pub fn acquire(&self) {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we hold the lock.
        unsafe { (*self.frame.get()).len = 0 };
    }

    /// Appends `bytes`; what does not fit in [`MAX_FRAME`] is dropped.
    ///
    /// # Safety
    ///
    /// Only between [`ConsoleFrame::acquire`] and [`ConsoleFrame::release`] on the same CPU.
    pub unsafe fn write(&self, bytes: &[u8]) {
        // SAFETY: the caller holds the lock.
        let f = unsafe { &mut *self.frame.get() };
        let n = bytes.len().min(MAX_FRAME.saturating_sub(f.len));
        if let (Some(dst), Some(src)) = (f.buf.get_mut(f.len..f.len + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
            f.len += n;
        }
    }

    /// Hands the frame, if not empty, to `send` (its address is the buffer's), then frees the
    /// lock.
    ///
    /// # Safety
    ///
    /// Only after [`ConsoleFrame::acquire`] on the same CPU.
    pub unsafe fn release(&self, send: impl FnOnce(&[u8])) {
        // SAFETY: the caller holds the lock.
        let f = unsafe { &*self.frame.get() };
        if let Some(frame) = f.buf.get(..f.len).filter(|b| !b.is_empty()) {
            send(frame);
        }
        self.locked.store(false, Ordering::Release);
    }
}

impl Default for ConsoleFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// Defines the program's defmt global logger over a [`ConsoleFrame`]: `now_us` (an expression)
/// is the timestamp in microseconds, `send` a `fn(&[u8])` that hands a frame to the TSM.
#[macro_export]
macro_rules! console_logger {
    (now_us: $now:expr, send: $send:path $(,)?) => {
        defmt::timestamp!("{=u64:us}", $now);

        static CONSOLE_FRAME: $crate::console_log::ConsoleFrame =
            $crate::console_log::ConsoleFrame::new();

        #[defmt::global_logger]
        struct ConsoleLogger;

        // SAFETY: `acquire` takes the frame's spin lock that `release` frees, so `write` and
        // `release` run with exclusive use of the frame, as `ConsoleFrame` requires.
        unsafe impl defmt::Logger for ConsoleLogger {
            fn acquire() {
                CONSOLE_FRAME.acquire();
            }

            unsafe fn flush() {}

            unsafe fn release() {
                // SAFETY: defmt calls release only after acquire.
                unsafe { CONSOLE_FRAME.release($send) };
            }

            unsafe fn write(bytes: &[u8]) {
                // SAFETY: defmt calls write only between acquire and release.
                unsafe { CONSOLE_FRAME.write(bytes) };
            }
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    fn sent(f: &ConsoleFrame) -> Option<Vec<u8>> {
        let mut out = None;
        // SAFETY: the test acquired `f` on this thread.
        unsafe { f.release(|b| out = Some(b.to_vec())) };
        out
    }

    #[test]
    fn one_frame_per_acquire_release_from_a_page_aligned_buffer() {
        let f = ConsoleFrame::new();
        f.acquire();
        // SAFETY: acquired above, on this thread.
        unsafe {
            f.write(b"ab");
            f.write(b"cd");
        }
        let mut at = 0;
        // SAFETY: as above.
        unsafe { f.release(|b| at = b.as_ptr() as usize) };
        assert_eq!(at % 4096, 0, "the frame starts a page");
        f.acquire();
        // SAFETY: as above.
        unsafe { f.write(b"xyz") };
        assert_eq!(
            sent(&f).as_deref(),
            Some(&b"xyz"[..]),
            "a new frame each time"
        );
    }

    #[test]
    fn an_empty_frame_is_not_sent_and_a_long_one_is_cut() {
        let f = ConsoleFrame::new();
        f.acquire();
        assert_eq!(sent(&f), None);
        f.acquire();
        // SAFETY: acquired above, on this thread.
        unsafe {
            f.write(&[7; MAX_FRAME - 1]);
            f.write(&[8; 10]);
            f.write(&[9; 10]);
        }
        let frame = sent(&f).unwrap_or_default();
        assert_eq!(frame.len(), MAX_FRAME);
        assert_eq!(frame[MAX_FRAME - 1], 8);
    }
}
