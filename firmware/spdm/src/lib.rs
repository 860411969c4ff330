//! SPDM (DMTF DSP0274 1.2): the TSM's requester, which authenticates a device, reads its signed
//! measurements and keeps a secure session (DSP0277) with it through which TDISP travels.
//!
//! - [`requester`]: the step machine, driven by the host relaying opaque bytes (docs/abi.md
//!   §6), with every buffer bounded and its state plain bytes that live in TSM object memory.
//! - [`cert`]: the verifier of the device's certificate chain.
//! - [`ecc`]: the P-384 operations both use (remembered per process in the fuzzer's build).
//!
//! The wire format is `tsm_abi::spdm`'s; the key schedule and the record protection are
//! `tsm_abi::spdm::crypto`, shared with the device model's responder.
//!
//! A crate of its own, not a module of tsm-core (which re-exports it as `tsm_core::spdm`), so
//! that the release profile can compile it for size: under fat LTO a crate's opt-level is its
//! functions' attributes, and generic code (the P-384 arithmetic, DER readers, the SPDM codec's
//! hashing) takes the level of the crate that instantiates it. Only PDEV_CONNECT and the
//! calls of a device's session run this code (docs/benchmarks.md, "Image `.text`: SPDM in its
//! own crate").
#![no_std]
#![forbid(unsafe_code)]
// Device input must never panic the monitor: no unwrap/expect/panic/unchecked indexing or
// unchecked arithmetic outside the tests (as in tsm-core).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod cert;
pub mod ecc;
pub mod requester;

#[cfg(test)]
mod tests;
