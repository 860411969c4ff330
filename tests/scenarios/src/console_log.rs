//! The payloads' defmt logger: one frame per log call, collected in a page and handed whole to
//! the TSM's debug console (`CONSOLE_WRITE` from the host, `G_CONSOLE_WRITE` from a guest),
//! which frames it for the UART (docs/design.md "Logging"). The host and guests have no device
//! of their own. Each payload instantiates it with [`crate::console_logger!`], naming the call
//! that sends a frame.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

/// Longest frame the TSM accepts per debug-console call; a longer one is cut.
pub const MAX_FRAME: usize = 512;

/// The bytes of the frame being collected. Aligned to its size, which divides the granule, so a
/// frame never crosses a granule (the TSM requires one granule per buffer). Every byte is
/// written before it is read (the frame's length counts the bytes written since `acquire`), so
/// it needs no initial value: [`crate::console_logger!`] puts it in `.uninit`, which the
/// payloads' linker scripts place in memory their start-up does not zero.
#[repr(C, align(512))]
pub struct FrameBuf(UnsafeCell<[MaybeUninit<u8>; MAX_FRAME]>);

const _: () = assert!(
    MAX_FRAME == core::mem::align_of::<FrameBuf>() && 4096 % MAX_FRAME == 0,
    "a frame must not cross a granule"
);

// SAFETY: the buffer is only touched through the `ConsoleFrame` that holds it, between its
// `acquire` and `release`, so at most one CPU uses it at a time.
unsafe impl Sync for FrameBuf {}

impl FrameBuf {
    /// A buffer with no defined content.
    pub const fn new() -> Self {
        FrameBuf(UnsafeCell::new(
            [const { MaybeUninit::uninit() }; MAX_FRAME],
        ))
    }
}

impl Default for FrameBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// One frame being collected in a [`FrameBuf`], behind a spin lock: defmt's `acquire` /
/// `write` / `release`.
pub struct ConsoleFrame {
    locked: AtomicBool,
    /// Bytes of `buf` written since `acquire`: exactly its initialised prefix.
    len: UnsafeCell<usize>,
    buf: &'static FrameBuf,
}

// SAFETY: `len` and `buf` are only touched between `acquire` (which takes `locked`) and
// `release` (which frees it), so at most one CPU uses them at a time.
unsafe impl Sync for ConsoleFrame {}

impl ConsoleFrame {
    /// An unlocked frame collected in `buf`, which only this frame may use.
    pub const fn new(buf: &'static FrameBuf) -> Self {
        ConsoleFrame {
            locked: AtomicBool::new(false),
            len: UnsafeCell::new(0),
            buf,
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
        unsafe { *self.len.get() = 0 };
    }

    /// Appends `bytes`; what does not fit in [`MAX_FRAME`] is dropped.
    ///
    /// # Safety
    ///
    /// Only between [`ConsoleFrame::acquire`] and [`ConsoleFrame::release`] on the same CPU.
    pub unsafe fn write(&self, bytes: &[u8]) {
        // SAFETY: the caller holds the lock, so nothing else uses `len` or the buffer.
        let (len, buf) = unsafe { (&mut *self.len.get(), &mut *self.buf.0.get()) };
        let n = bytes.len().min(MAX_FRAME.saturating_sub(*len));
        if let (Some(dst), Some(src)) = (buf.get_mut(*len..*len + n), bytes.get(..n)) {
            dst.write_copy_of_slice(src);
            *len += n;
        }
    }

    /// Hands the frame, if not empty, to `send` (its address is the buffer's), then frees the
    /// lock.
    ///
    /// # Safety
    ///
    /// Only after [`ConsoleFrame::acquire`] on the same CPU.
    pub unsafe fn release(&self, send: impl FnOnce(&[u8])) {
        // SAFETY: the caller holds the lock, so nothing else uses `len` or the buffer.
        let (len, buf) = unsafe { (*self.len.get(), &*self.buf.0.get()) };
        if let Some(frame) = buf.get(..len).filter(|b| !b.is_empty()) {
            // SAFETY: `write` initialised the first `len` bytes since `acquire` set it to 0.
            send(unsafe { frame.assume_init_ref() });
        }
        self.locked.store(false, Ordering::Release);
    }
}

/// Defines the program's defmt global logger over a [`ConsoleFrame`]: `now_us` (an expression)
/// is the timestamp in microseconds, `send` a `fn(&[u8])` that hands a frame to the TSM.
#[macro_export]
macro_rules! console_logger {
    (now_us: $now:expr, send: $send:path $(,)?) => {
        defmt::timestamp!("{=u64:us}", $now);

        // SAFETY: `.uninit` is writable memory of the image that its start-up does not zero
        // (every payload's linker script places it after `__bss_end`); any content is a value
        // of `FrameBuf`, which is `MaybeUninit`, and `ConsoleFrame` reads only bytes it wrote.
        #[unsafe(link_section = ".uninit.console_frame")]
        static CONSOLE_BUF: $crate::console_log::FrameBuf = $crate::console_log::FrameBuf::new();

        static CONSOLE_FRAME: $crate::console_log::ConsoleFrame =
            $crate::console_log::ConsoleFrame::new(&CONSOLE_BUF);

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

    fn frame() -> ConsoleFrame {
        ConsoleFrame::new(std::boxed::Box::leak(std::boxed::Box::new(FrameBuf::new())))
    }

    fn sent(f: &ConsoleFrame) -> Option<Vec<u8>> {
        let mut out = None;
        // SAFETY: the test acquired `f` on this thread.
        unsafe { f.release(|b| out = Some(b.to_vec())) };
        out
    }

    #[test]
    fn one_frame_per_acquire_release_from_a_buffer_within_a_granule() {
        let f = frame();
        f.acquire();
        // SAFETY: acquired above, on this thread.
        unsafe {
            f.write(b"ab");
            f.write(b"cd");
        }
        let mut at = 0;
        // SAFETY: as above.
        unsafe { f.release(|b| at = b.as_ptr() as usize) };
        assert_eq!(at % MAX_FRAME, 0, "the frame cannot cross a granule");
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
        let f = frame();
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
