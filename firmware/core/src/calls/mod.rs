//! Call handlers, one module per group of calls. A host handler takes the call's typed
//! arguments (`tsm_abi::call::args::*`), a guest handler also the [`GuestCaller`]; both reply
//! ([`Reply`]) unless the call changes what runs next ([`HostNext`], [`GuestNext`]). The
//! dispatcher's `match` in [`crate::dispatch`] names each handler once.
//!
//! [`GuestCaller`]: crate::dispatch::GuestCaller
//! [`Reply`]: crate::dispatch::Reply
//! [`HostNext`]: crate::dispatch::HostNext
//! [`GuestNext`]: crate::dispatch::GuestNext

pub mod comm;
pub mod device;
pub mod dma;
pub mod guest;
pub mod memory;
pub mod mmio;
pub mod session;
pub mod system;
pub mod vcpu;
