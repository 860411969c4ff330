//! The TSM monitor core. Arch-free: it reaches hardware only through `tsm-platform`, so the
//! whole monitor runs under `cargo test`, Miri and fuzzers on the build machine.
//!
//! | module | holds |
//! |---|---|
//! | [`tsm`] | the monitor ([`Tsm`]), the platform bundle, call origins |
//! | [`dispatch`] | decoding a call into its typed form and handing it to its handler; what runs next |
//! | [`granule`] | per-granule descriptors, states, locks |
//! | [`objects`] | TSM objects stored in donated granules |
//! | [`run`] | the VCPU_RUN protocol between the run loop and the core |
//! | [`run_loop`] | the run loop every CPU runs, over the HAL's `tsm_platform::run` traits |
//! | [`addrmap`] | TVM address maps (Arm stage 2 / x86-64 4-level), and the entry formats of DMA tables |
//! | [`calls`] | the call handlers |
//! | [`cpus`] | the host's CPUs: which run the host, which wait in the TSM, start requests |
//! | [`psci`] | PSCI and SMCCC for a host on a platform with PSCI |
//! | [`viommu`] | the secure vIOMMU's translation engine, IOTLB, PASID tables, event queues |
//! | [`viommu_glue`] | the core's side of the vIOMMU: stage-2 lookup, invalidation, events |
//! | [`spdm`] | the SPDM requester (device authentication, measurements, secure session): crate `tsm-spdm` |
//! | [`dma_tables`] | the single-stage tables the platform IOMMU walks for vdevices, composed from the vIOMMU |
//! | [`private_mmio`] | a vdevice's MMIO pages mapped into its TVM: the record, the report check, the release |
//! | `testing` | the simulated platform and test harness (tests and feature `testing`) |
//! | `invariants` | the checker of ARCHITECTURE.md §2 invariants 3–6 (tests and `testing`) |
//! | `viommu_reference` | a reference model of the vIOMMU's translation, from the architecture documents (tests and `testing`) |
#![no_std]
#![forbid(unsafe_code)]
// Host and guest input must never panic the monitor: no unwrap/expect/panic/unchecked indexing
// or unchecked arithmetic (release builds keep overflow checks, and a panic aborts) outside the
// test-only modules (which allow them, below). Each exception is an `#[allow]` with its bound.
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

pub mod addrmap;
pub mod calls;
pub mod cpus;
pub mod dispatch;
pub mod dma_tables;
pub mod granule;
pub mod objects;
pub mod private_mmio;
pub mod psci;
pub mod run;
pub mod run_loop;
pub use tsm_spdm as spdm;
pub mod tsm;
pub mod viommu;
pub mod viommu_glue;

#[cfg(test)]
mod tests;

// Test-only (tests, fuzzers, the model-based test): may panic on a broken simulation.
#[cfg(any(test, feature = "testing"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
pub mod invariants;
#[cfg(any(test, feature = "testing"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
pub mod testing;
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::arithmetic_side_effects)]
pub mod viommu_reference;

pub use tsm::{Origin, Platform, Tsm};
