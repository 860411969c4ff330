//! Time: the TSC, its rate taken once at boot.
//!
//! The rate comes from CPUID where the CPU states it (leaf 0x15: the TSC's ratio to the core
//! crystal and the crystal's frequency; else leaf 0x16: the base frequency, which an invariant
//! TSC runs at), and otherwise from PIT channel 2 over a window of at least `CAL_TICKS` PIT
//! ticks (1.193182 MHz, about 100 µs: the PIT's one-tick start-up and read uncertainties are
//! under 2 % of it, enough for log timestamps and boot's delays, the rate's only uses).
//! Channel 2's gate is software-controlled through port 0x61 and its count can be latched and
//! read, so no interrupt is needed. The window is opened ([`start`]) before boot's first long
//! loop (painting the boot stack) and closed ([`calibrate`]) after the set-up that follows:
//! boot's own work is the window, and boot waits only for what is left of the 100 µs (under
//! QEMU's icount, where a wait is counted as instructions, little). Timestamps are TSC
//! ticks since reset divided by ticks per microsecond; the host payload gets the same divisor at
//! entry (rcx), so TSM and host timestamps share one time base.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{cpuid, inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
/// The shortest window, in PIT ticks: about 100 µs.
const CAL_TICKS: u16 = 119;
/// The count the window starts from: the longest the 16-bit counter holds (55 ms).
const FULL_COUNT: u16 = 0xFFFF;
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
/// PIT command: channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count).
const CH2_MODE0: u8 = 0b1011_0000;
/// PIT command: latch channel 2's count.
const CH2_LATCH: u8 = 0b1000_0000;
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

/// An open calibration window: PIT channel 2 counting down from [`FULL_COUNT`] since the TSC
/// read `start` (`None`: CPUID states the rate, no window is needed).
pub struct Window {
    start: Option<u64>,
}

/// Opens the calibration window (boot CPU, once, before [`calibrate`]).
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn start() -> Window {
    Window {
        start: from_cpuid().is_none().then(open),
    }
}

/// Starts PIT channel 2 counting down from [`FULL_COUNT`]; the TSC when it started.
fn open() -> u64 {
    let ctl = inb(SPEAKER) & !(GATE2 | SPEAKER_DATA);
    outb(SPEAKER, ctl); // gate low: the counter holds
    outb(PIT_CMD, CH2_MODE0);
    outb(PIT_CH2, FULL_COUNT as u8);
    outb(PIT_CH2, (FULL_COUNT >> 8) as u8);
    outb(SPEAKER, ctl | GATE2); // gate high: counting starts, OUT2 is low until terminal count
    rdtsc()
}

/// Takes the TSC rate: ticks per microsecond (0 when no source gave one) and its source.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn calibrate(window: Window) -> (u64, Source) {
    let (per_us, source) = match (from_cpuid(), window.start) {
        (Some(found), _) => found,
        (None, Some(start)) => (from_pit(start), Source::Pit),
        (None, None) => (0, Source::Pit),
    };
    TICKS_PER_US.store(per_us, Ordering::Relaxed);
    (per_us, source)
}

/// The rate CPUID states, if it states one.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
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

/// PIT ticks since the window opened, with the TSC when they were read; `None` once the count
/// passed zero (OUT2 high: the window is over 55 ms and the count no longer says how long).
fn elapsed() -> Option<(u16, u64)> {
    outb(PIT_CMD, CH2_LATCH);
    let tsc = rdtsc();
    let count = u16::from(inb(PIT_CH2)) | u16::from(inb(PIT_CH2)) << 8;
    (inb(SPEAKER) & OUT2 == 0).then_some((FULL_COUNT - count, tsc))
}

/// The rate measured against PIT channel 2 from `start`; if boot overran the counter (a slow
/// emulator), over a window of its own. 0 when the PIT never counted.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
fn from_pit(start: u64) -> u64 {
    let measured = measure(start).or_else(|| measure(open()));
    outb(SPEAKER, inb(SPEAKER) & !(GATE2 | SPEAKER_DATA));
    let Some((pit, ticks)) = measured else {
        return 0;
    };
    // ticks / µs = ticks / (pit / PIT_HZ s), rounded to the nearest.
    let scaled = u128::from(ticks) * u128::from(PIT_HZ);
    let window = u128::from(pit) * 1_000_000;
    u64::try_from((scaled + window / 2) / window).unwrap_or(0)
}

/// PIT ticks and TSC ticks of the window opened at TSC `start`, once it is at least
/// [`CAL_TICKS`] long; `None` if it overran the counter or the PIT does not count.
fn measure(start: u64) -> Option<(u16, u64)> {
    loop {
        let (pit, tsc) = elapsed()?;
        let ticks = tsc.wrapping_sub(start);
        if pit >= CAL_TICKS {
            return Some((pit, ticks));
        }
        if ticks > MAX_POLL_TICKS {
            return None;
        }
    }
}

/// TSC ticks per microsecond, as calibrated (0 before calibration).
pub fn ticks_per_us() -> u64 {
    TICKS_PER_US.load(Ordering::Relaxed)
}

/// Microseconds since reset (0 until calibrated).
pub fn now_us() -> u64 {
    rdtsc().checked_div(ticks_per_us()).unwrap_or(0)
}
