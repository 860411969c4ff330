//! System register access.

/// Reads a system register. Reads of the registers this module names have no side effects.
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: `mrs` of an ID, status or counter register only reads it.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }};
}

/// Writes a system register. Expands to `asm!`, so the caller wraps it in `unsafe` and states
/// why the new value is sound.
macro_rules! write_sysreg {
    ($reg:literal, $val:expr) => {
        core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) $val, options(nostack, preserves_flags))
    };
}

/// `isb`: later instructions see the effect of earlier system register writes.
pub fn isb() {
    // SAFETY: a barrier has no effect on memory or registers.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

pub(crate) use {read_sysreg, write_sysreg};
