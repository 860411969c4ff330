//! Time since boot from the architectural counter.

use super::sysreg::read_sysreg;

/// Microseconds since the counter started (power-on on QEMU).
pub fn now_us() -> u64 {
    let count = read_sysreg!("cntpct_el0");
    let freq = read_sysreg!("cntfrq_el0");
    // u128: count * 10^6 does not fit u64 after a few days at GHz rates.
    let us = (u128::from(count) * 1_000_000)
        .checked_div(u128::from(freq))
        .unwrap_or(0);
    u64::try_from(us).unwrap_or(u64::MAX)
}
