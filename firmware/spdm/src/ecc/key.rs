//! The key a P-384 result is remembered (`crypto-memo`) or looked up (Miri's table) by. Shared
//! with the device model's responder, whose `spdm/ecc.rs` includes this file by path.

extern crate std;

use std::vec::Vec;

/// An operation's inputs: hands each, in order, to the function it is given.
pub(super) type Inputs<'a> = dyn Fn(&mut dyn FnMut(&[u8])) + 'a;

/// The key of an operation: its number, then each input length-prefixed (so two splits of
/// the same bytes are different keys).
pub(super) fn encode(op: u8, inputs: &Inputs<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(256);
    key.push(op);
    inputs(&mut |input| {
        key.extend_from_slice(&(input.len() as u64).to_le_bytes());
        key.extend_from_slice(input);
    });
    key
}
