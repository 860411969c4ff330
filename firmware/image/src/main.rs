//! The TSM image. The arch module owns boot; then every CPU runs `tsm_core`'s run loop over the
//! HAL's host context and platform.
#![no_std]
#![no_main]

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
