//! Codec tests: round trips against hand-made bytes, every malformation, every truncation,
//! random and mutated bytes.

mod arith_edges;
mod fuzz;
mod malformed;
mod report;
mod roundtrip;
mod samples;
