//! Time: the TSC, its rate taken once at boot.
//!
//! The rate comes from CPUID where the CPU states it (leaf 0x15: the TSC's ratio to the core
//! crystal and the crystal's frequency; else leaf 0x16: the base frequency, which an invariant
//! TSC runs at), and otherwise from PIT channel 2 over a short window. Channel 2's gate is
//! software-controlled through port 0x61 and its output is readable there (bit 5), so no
//! interrupt is needed: program a one-shot count of `CAL_TICKS` PIT ticks (1.193182 MHz, about
//! 250 µs: long against the PIT's one-tick start-up uncertainty, 0.34 %, short against the
//! boot it delays), read the TSC when it starts and when OUT2 rises, and scale. Timestamps are
//! TSC ticks since reset divided by ticks per microsecond; the host payload gets the same
//! divisor at entry (rcx), so TSM and host timestamps share one time base.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{cpuid, inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
/// About 250 µs of PIT ticks.
const CAL_TICKS: u16 = 298;
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

/// Where the TSC rate came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum Source {
    /// CPUID leaf 0x15 (crystal ratio).
    CpuidCrystal,
    /// CPUID leaf 0x16 (base frequency).
    CpuidBase,
    /// Measured against PIT channel 2.
    Pit,
}

/// Takes the TSC rate: ticks per microsecond (0 when no source gave one) and its source.
pub fn calibrate() -> (u64, Source) {
    let (per_us, source) = match from_cpuid() {
        Some(found) => found,
        None => (from_pit(), Source::Pit),
    };
    TICKS_PER_US.store(per_us, Ordering::Relaxed);
    (per_us, source)
}

/// The rate CPUID states, if it states one.
fn from_cpuid() -> Option<(u64, Source)> {
    let max = cpuid(0, 0)[0];
    if max >= 0x15 {
        let [denominator, numerator, crystal_hz, _] = cpuid(0x15, 0);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            let hz = u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator);
            return Some((hz / 1_000_000, Source::CpuidCrystal)).filter(|&(r, _)| r != 0);
        }
    }
    if max >= 0x16 {
        let base_mhz = u64::from(cpuid(0x16, 0)[0] & 0xFFFF);
        if base_mhz != 0 {
            return Some((base_mhz, Source::CpuidBase));
        }
    }
    None
}

/// The rate measured against PIT channel 2 (0 when the PIT never fired).
fn from_pit() -> u64 {
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
    // ticks / µs = elapsed / (CAL_TICKS / PIT_HZ s), rounded to the nearest.
    let scaled = u128::from(end.wrapping_sub(start)) * u128::from(PIT_HZ);
    let window = u128::from(CAL_TICKS) * 1_000_000;
    u64::try_from((scaled + window / 2) / window).unwrap_or(0)
}

/// TSC ticks per microsecond, as calibrated (0 before calibration).
pub fn ticks_per_us() -> u64 {
    TICKS_PER_US.load(Ordering::Relaxed)
}

/// Microseconds since reset (0 until calibrated).
pub fn now_us() -> u64 {
    rdtsc().checked_div(ticks_per_us()).unwrap_or(0)
}
