//! The x86_64 boot CPU's bring-up, in a crate of its own so that it can have its own opt-level
//! (the workspace's `[profile.release.package.tsm-hal-boot]`, for size).
//!
//! tsm-hal's `_start64` calls `tsm_x86_64_boot` once, on the boot CPU; it runs
//! [`tsm_hal::x86_64::boot_main`]. That function and the boot-only code of tsm-hal it calls
//! are `#[inline]`, so they are compiled here, with this crate's opt-level, and not in tsm-hal,
//! whose run-time paths stay at 2 (docs/benchmarks.md, "Image `.text`: x86_64's boot code for
//! size"). The firmware image links this crate on x86_64; elsewhere it is empty.

#![no_std]

/// The boot CPU's Rust entry, called by tsm-hal's `_start64` (64-bit mode, the boot stack,
/// the image relocated) with the PVH start info's address.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
// SAFETY: the one definition of this symbol in the image; `_start64` calls it with the
// System V ABI this `extern "C"` signature has.
#[unsafe(no_mangle)]
extern "C" fn tsm_x86_64_boot(start_info: u64) -> ! {
    tsm_hal::x86_64::boot_main(start_info)
}

// The image's once-per-boot or once-per-CPU calls into tsm-hal, compiled here for size: each
// wraps an `#[inline]` tsm-hal function, and is itself out of line, or the image's opt-level
// would compile it again.

/// [`tsm_hal::x86_64::end_of_boot`].
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline(never)]
pub fn end_of_boot() {
    tsm_hal::x86_64::end_of_boot()
}

/// [`tsm_hal::x86_64::start_secondary_cpus`].
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline(never)]
pub fn start_secondary_cpus(expected: Option<u32>) -> usize {
    tsm_hal::x86_64::start_secondary_cpus(expected)
}

/// [`tsm_hal::x86_64::host_context`].
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline(never)]
pub fn host_context(
    boot: &tsm_hal::x86_64::BootInfo,
    cpu: usize,
) -> Option<tsm_hal::x86_64::HostContext> {
    tsm_hal::x86_64::host_context(boot, cpu)
}
