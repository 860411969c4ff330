//! The requester against the device model's SPDM responder, through a relay that carries
//! bytes as the host would (and, in some tests, tampers with them as a hostile host would).
//!
//! Every test that connects does P-384 work (signatures, ECDHE), which takes minutes per
//! operation under Miri: those are ignored there. What they drive that Miri is for (the codec,
//! the records, the key schedule) runs under Miri in tsm-abi's tests.

mod harness;
mod honest;
mod misbehaving;
