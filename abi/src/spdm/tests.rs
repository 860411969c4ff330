//! Codec tests: hand-made messages from DSP0274 1.2's tables, every truncation, malformations,
//! DOE padding, random and mutated bytes, and the secured-message layer.

mod malformed;
mod noise;
mod samples;
mod secured;
