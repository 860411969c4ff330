//! Device model tests, driven through the codec as a requester would.

mod harness;
mod honest;
mod knobs;
mod spdm;
