//! The guest's defmt logger: one frame per log call, handed to the TSM's debug console with
//! G_CONSOLE_WRITE (stream 2, docs/design.md "Logging"). The guest has no device of its own.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use tsm_abi::addr::Gpa;
use tsm_abi::api::guest;

/// Longest frame the TSM accepts per G_CONSOLE_WRITE.
const MAX_FRAME: usize = 512;

defmt::timestamp!("{=u64:us}", crate::arch::now_us());

#[defmt::global_logger]
struct GuestLogger;

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
unsafe impl defmt::Logger for GuestLogger {
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
            // The guest's addresses are its GPAs, so the buffer's address is its GPA.
            let _ = guest::g_console_write(
                &mut crate::arch::Gate,
                Gpa(f.buf.as_ptr() as u64),
                f.len as u64,
            );
        }
        LOCKED.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between acquire and release, so we hold LOCKED.
        let f = unsafe { &mut *FRAME.0.get() };
        let room = MAX_FRAME.saturating_sub(f.len);
        let n = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (f.buf.get_mut(f.len..f.len + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
            f.len += n;
        }
    }
}
