//! The TSM's hardware abstraction layer.
//!
//! The arch modules implement `tsm-platform`'s traits (re-exported as [`platform`], so the image
//! names the platform through its HAL) on the real machines and hold every `unsafe` block,
//! inline assembly and raw address of the TSM. Both give the image the same functions for the
//! same roles: `console_write`, `now_us`, `exit`, `report_panic` (its panic handler) and
//! `selftest_fault` (the harness self-test's deliberate exception).
#![no_std]

pub use tsm_platform as platform;

#[cfg(any(test, all(target_arch = "aarch64", target_os = "none")))]
pub mod fdt_rewrite;
pub mod log;
#[cfg(any(test, all(target_arch = "x86_64", target_os = "none")))]
mod pc_reset;
#[cfg(any(test, all(target_arch = "x86_64", target_os = "none")))]
mod q35_chipset;
#[cfg(any(test, target_os = "none"))]
mod split_pool;
#[cfg(any(test, target_os = "none"))]
mod stack_use;
#[cfg(any(test, target_os = "none"))]
mod text;
#[cfg(any(test, all(target_arch = "x86_64", target_os = "none")))]
mod x86_store;
#[cfg(any(test, all(target_arch = "x86_64", target_os = "none")))]
mod x86_walk;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod aarch64;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use aarch64 as arch;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
use x86_64 as arch;

#[cfg(target_os = "none")]
mod fatal;
#[cfg(target_os = "none")]
pub mod logger;
