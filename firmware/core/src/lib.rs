//! The TSM monitor core. Arch-free: it reaches hardware only through `tsm-hal`'s traits, so the
//! whole monitor runs under `cargo test`, Miri and fuzzers on the build machine.
#![no_std]
#![forbid(unsafe_code)]

pub mod dispatch;
