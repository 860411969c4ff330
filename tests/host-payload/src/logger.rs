//! The host payload's defmt logger: one frame per log call, handed to the TSM's debug console
//! (`CONSOLE_WRITE`), which frames it for the UART. The host has no device of its own.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use tsm_abi::call::CallId;

/// Longest frame the TSM accepts per `CONSOLE_WRITE`.
const MAX_FRAME: usize = 512;

defmt::timestamp!("{=u64:us}", crate::arch::now_us());

#[defmt::global_logger]
struct HostLogger;

/// Page-aligned so a frame never crosses a granule (the TSM requires one granule per buffer).
#[repr(C, align(4096))]
struct Frame {
    buf: [u8; MAX_FRAME],
    len: usize,
}

struct FrameCell(UnsafeCell<Frame>);
// SAFETY: only touched between acquire (takes LOCKED) and release (frees it).
unsafe impl Sync for FrameCell {}

static LOCKED: AtomicBool = AtomicBool::new(false);
static FRAME: FrameCell = FrameCell(UnsafeCell::new(Frame {
    buf: [0; MAX_FRAME],
    len: 0,
}));

// SAFETY: acquire/release bracket every write with the LOCKED spin lock.
unsafe impl defmt::Logger for HostLogger {
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
        // SAFETY: called after acquire, so we hold LOCKED.
        let f = unsafe { &*FRAME.0.get() };
        if f.len > 0 {
            // The host's memory is identity-mapped, so the buffer's address is its physical address.
            crate::tsm_call(
                CallId::CONSOLE_WRITE,
                &[f.buf.as_ptr() as u64, f.len as u64],
            );
        }
        LOCKED.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between acquire and release, so we hold LOCKED.
        let f = unsafe { &mut *FRAME.0.get() };
        let n = bytes.len().min(MAX_FRAME - f.len);
        f.buf[f.len..f.len + n].copy_from_slice(&bytes[..n]);
        f.len += n;
    }
}
