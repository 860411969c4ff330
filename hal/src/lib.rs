//! The TSM's hardware abstraction layer.
//!
//! `platform` holds the traits the monitor core is written against (host-buildable, no unsafe);
//! the arch modules implement them on the real machines and hold every `unsafe` block, inline
//! assembly and raw address of the TSM.
#![no_std]

pub mod log;
pub mod platform;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod aarch64;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use aarch64 as arch;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
use x86_64 as arch;

#[cfg(target_os = "none")]
pub mod logger;
