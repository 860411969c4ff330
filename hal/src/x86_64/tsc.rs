//! Time: the TSC, calibrated once at boot against PIT channel 2.
//!
//! Channel 2's gate is software-controlled through port 0x61 and its output is readable there
//! (bit 5), so no interrupt is needed: program a one-shot count of `CAL_TICKS` PIT ticks
//! (1.193182 MHz, i.e. 10 ms), read the TSC when it starts and when OUT2 rises, and divide.
//! Timestamps are TSC ticks since reset divided by ticks per microsecond; the host payload gets
//! the same divisor at entry (rcx), so TSM and host timestamps share one time base.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
const CAL_TICKS: u16 = 11_932; // 10 ms
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const SPEAKER: u16 = 0x61;
/// Port 0x61: gate of channel 2 (bit 0), speaker data (bit 1), OUT2 (bit 5).
const GATE2: u8 = 1 << 0;
const SPEAKER_DATA: u8 = 1 << 1;
const OUT2: u8 = 1 << 5;
/// Upper bound of the poll, so a missing PIT cannot hang boot (about 1 s of TSC at 4 GHz).
const MAX_POLL_TICKS: u64 = 4_000_000_000;

static TICKS_PER_US: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC rate. Returns ticks per microsecond (0 when the PIT never fired).
pub fn calibrate() -> u64 {
    let ctl = inb(SPEAKER) & !(GATE2 | SPEAKER_DATA);
    outb(SPEAKER, ctl); // gate low: the counter holds
    outb(PIT_CMD, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count)
    outb(PIT_CH2, CAL_TICKS as u8);
    outb(PIT_CH2, (CAL_TICKS >> 8) as u8);
    outb(SPEAKER, ctl | GATE2); // gate high: counting starts, OUT2 is low until terminal count
    let start = rdtsc();
    let mut end = start;
    while inb(SPEAKER) & OUT2 == 0 {
        end = rdtsc();
        if end.wrapping_sub(start) > MAX_POLL_TICKS {
            return 0;
        }
    }
    outb(SPEAKER, ctl);
    let elapsed = end.wrapping_sub(start);
    let per_us = elapsed / (u64::from(CAL_TICKS) * 1_000_000 / PIT_HZ);
    TICKS_PER_US.store(per_us, Ordering::Relaxed);
    per_us
}

/// TSC ticks per microsecond, as calibrated (0 before calibration).
pub fn ticks_per_us() -> u64 {
    TICKS_PER_US.load(Ordering::Relaxed)
}

/// Microseconds since reset (0 until calibrated).
pub fn now_us() -> u64 {
    rdtsc().checked_div(ticks_per_us()).unwrap_or(0)
}
