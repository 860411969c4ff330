//! The requester against the device model's SPDM responder, through a relay that carries
//! bytes as the host would (and, in some tests, tampers with them as a hostile host would).

mod harness;
mod honest;
mod misbehaving;
