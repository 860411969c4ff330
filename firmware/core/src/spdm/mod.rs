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

pub mod cert;
pub mod ecc;
pub mod requester;

#[cfg(test)]
mod tests;
