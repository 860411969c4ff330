//! The host driver under Linux (issue 18): the scenarios' host environment
//! ([`tsm_scenarios::HostEnv`]) over the kernel module's /dev/tsm, so the driver routines the
//! bare-metal host payload runs ([`tsm_scenarios::driver`], [`tsm_scenarios::link`]) run
//! unchanged as a Linux process. docs/design.md "Linux host: module and user-space driver".
//!
//! [`host`] is the adapter, [`config`] the configuration space it presents, [`uapi`] the
//! module's blocks, [`device`] what the adapter needs from the module, [`tree`] the platform
//! as the kernel's device tree gives it; `sys` (Linux targets only) is the real device over raw
//! system calls, this crate's only `unsafe` code.
#![cfg_attr(not(test), no_std)]

pub mod config;
pub mod device;
pub mod host;
pub mod tree;
pub mod uapi;

#[cfg(target_os = "none")]
pub mod sys;

#[cfg(test)]
mod tests;
