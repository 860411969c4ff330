//! The TSM image. The arch module owns boot and the host run loop; both hand every call to
//! `tsm_core`.
#![no_std]
#![no_main]

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
