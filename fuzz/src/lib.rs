//! The fuzz targets' logic, kept in a library so the same code runs under libFuzzer
//! (`fuzz_targets/*.rs`), in the corpus and regression replay test (`tests/replay.rs`) and
//! under Miri.
//!
//! | module | target | input |
//! |---|---|---|
//! | [`dispatcher`] | `dispatcher` | host and guest calls against the host-built core |
//! | [`tdisp`] | `tdisp_decode` | TDISP messages, reports and report portions |
//! | [`walkers`] | `walkers` | vIOMMU stage-1/stage-2 tables and requests |
//! | [`device_model`] | `device_model` | TDISP requests to the device model |
//! | [`cert_chain`] | `cert_chain` | SPDM certificate chains (X.509 DER) to the core's verifier |
//! | [`spdm`] | `spdm_decode` | SPDM messages, measurement records, opaque data, chain framing |
//! | [`spdm_secured`] | `spdm_secured` | DSP0277 records; the SPDM requester's response at every step of a session |

pub mod cert_chain;
pub mod device_model;
pub mod dispatcher;
pub mod input;
/// The core's invariant checker, `tsm_core::invariants` itself, compiled into this crate: the
/// fuzz build leaves this crate's comparisons untraced (fuzz/Cargo.toml), and the checker runs
/// after every state-changing call, so traced it was a quarter of a dispatcher execution. The
/// same source, so the same checks; the core's own tests and the model test use the core's
/// copy.
#[path = "../../firmware/core/src/invariants.rs"]
pub mod invariants;
pub mod spdm;
pub mod spdm_secured;
pub mod spdm_session;
pub mod tdisp;
pub mod walkers;

// The checker names the core's modules from its crate root (`crate::objects`, …).
use tsm_core::{addrmap, dma_tables, granule, objects, testing, tsm};

/// A target's entry: runs one input, panics on a failed check.
pub type Entry = fn(&[u8]);

/// Every target: its name (a `fuzz_targets/` binary and a `corpus/` directory) and its entry.
pub const TARGETS: [(&str, Entry); 7] = [
    ("dispatcher", dispatcher::run),
    ("tdisp_decode", tdisp::run),
    ("walkers", walkers::run),
    ("device_model", device_model::run),
    ("cert_chain", cert_chain::run),
    ("spdm_decode", spdm::run),
    ("spdm_secured", spdm_secured::run),
];

/// The hand-made seeds of `target` (name, bytes); `examples/seeds.rs` writes them to
/// `corpus/<target>/seed_<name>`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "dispatcher" => dispatcher::seeds(),
        "tdisp_decode" => tdisp::seeds(),
        "walkers" => walkers::seeds(),
        "device_model" => device_model::seeds(),
        "cert_chain" => cert_chain::seeds(),
        "spdm_decode" => spdm::seeds(),
        "spdm_secured" => spdm_secured::seeds(),
        _ => Vec::new(),
    }
}
