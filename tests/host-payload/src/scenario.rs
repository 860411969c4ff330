//! The scenarios the host payload can run; xtask picks one per QEMU run through the host
//! boot-parameters page (docs/design.md).

use tsm_abi::call::CallId;
use tsm_abi::status::Status;
use tsm_abi::version::{self, AbiVersion};

use crate::tsm_call;

#[path = "bench.rs"]
mod bench;
#[path = "smp.rs"]
mod smp;

/// Scenario numbers, shared with xtask (xtask/src/scenarios.rs keeps the same table).
pub mod id {
    /// Boot smoke test: negotiate the ABI version through the gate.
    pub const BOOT: u32 = 0;
    /// Harness self-test: the host reports failure.
    pub const SELFTEST_FAIL: u32 = 1;
    /// Harness self-test: the host never ends the run.
    pub const SELFTEST_HANG: u32 = 2;
    /// One TVM vCPU end to end: a guest call, a host call refused as a DENIED_CALL exit, G_EXIT,
    /// faults on memory the TVM does not map (`crate::vcpu_smoke`).
    pub const VCPU_SMOKE: u32 = 3;
    /// The seven end-to-end scenarios (`tsm_scenarios::id`; checked equal below).
    pub const LIFECYCLE: u32 = 10;
    /// Scenario 2.
    pub const ISOLATION: u32 = 11;
    /// Scenario 3.
    pub const BAD_INPUT: u32 = 12;
    /// Scenario 4.
    pub const ACCEPTANCE: u32 = 13;
    /// Scenario 5.
    pub const HOSTILE_DEVICE: u32 = 14;
    /// Scenario 6.
    pub const DMA_RULES: u32 = 15;
    /// Scenario 7.
    pub const SMP: u32 = 16;
    /// Scenario 2, host part: a load from a delegated granule.
    pub const ISOLATION_DELEGATED: u32 = 17;
    /// Scenario 2, host part: a store to a TVM's private page.
    pub const ISOLATION_PRIVATE: u32 = 18;
    /// Scenario 2, host part: a load from the TSM's memory.
    pub const ISOLATION_TSM: u32 = 19;
    /// Benchmark, run by `cargo xtask bench` only (docs/benchmarks.md); not in `cargo xtask test`.
    pub const BENCH: u32 = super::bench::ID;
}

const _: () = {
    use tsm_scenarios::id as s;
    assert!(id::LIFECYCLE == s::LIFECYCLE && id::ISOLATION == s::ISOLATION);
    assert!(id::BAD_INPUT == s::BAD_INPUT && id::ACCEPTANCE == s::ACCEPTANCE);
    assert!(id::HOSTILE_DEVICE == s::HOSTILE_DEVICE && id::DMA_RULES == s::DMA_RULES);
    assert!(id::SMP == s::SMP && id::ISOLATION_DELEGATED == s::ISOLATION_DELEGATED);
    assert!(id::ISOLATION_PRIVATE == s::ISOLATION_PRIVATE && id::ISOLATION_TSM == s::ISOLATION_TSM);
};

/// Runs scenario `id`; true when it passed.
pub fn run(id: u32, dram_base: u64, dram_size: u64) -> bool {
    match id {
        id::SMP => report(id, smp::run(dram_base, dram_size)),
        id::LIFECYCLE..=id::ISOLATION_TSM => end_to_end(id, dram_base, dram_size),
        id::BOOT => boot(),
        id::BENCH => bench::run(dram_base, dram_size),
        id::SELFTEST_FAIL => false,
        id::SELFTEST_HANG => loop {
            core::hint::spin_loop();
        },
        id::VCPU_SMOKE => crate::vcpu_smoke::run(),
        other => {
            defmt::error!("unknown scenario {=u32}", other);
            false
        }
    }
}

/// VERSION through the gate: asking for 1.0 must be granted, asking for 99.0 must be refused
/// with the supported range.
fn boot() -> bool {
    let want = AbiVersion { major: 1, minor: 0 };
    let r = tsm_call(CallId::VERSION, &[want.to_raw()]);
    let status = Status::from_raw(r.status);
    defmt::info!(
        "VERSION(1.0) -> status {=u64:#x}, chosen {=u64:#x}, lowest {=u64:#x}, highest {=u64:#x}",
        r.status,
        r.out[0],
        r.out[1],
        r.out[2]
    );
    let granted = status.is_some_and(|s| s.is_success())
        && r.out[0] == want.to_raw()
        && r.out[1] == version::LOWEST.to_raw()
        && r.out[2] == version::HIGHEST.to_raw();
    let r = tsm_call(
        CallId::VERSION,
        &[AbiVersion {
            major: 99,
            minor: 0,
        }
        .to_raw()],
    );
    defmt::info!("VERSION(99.0) -> status {=u64:#x}", r.status);
    let refused = Status::from_raw(r.status)
        .is_some_and(|s| s.code == tsm_abi::StatusCode::VersionMismatch)
        && r.out[2] == version::HIGHEST.to_raw();
    granted && refused
}

/// One of the seven scenarios, as host driver with the guest payload and the device model.
fn end_to_end(id: u32, dram_base: u64, dram_size: u64) -> bool {
    let mut host = crate::env::Host::new(dram_base, dram_size);
    report(id, tsm_scenarios::run(&mut host, id))
}

/// Logs why scenario `id` failed; true when it passed.
fn report(id: u32, outcome: tsm_scenarios::Outcome) -> bool {
    match outcome {
        Ok(()) => true,
        Err(f) => {
            defmt::error!(
                "scenario {=u32} failed: {=str} (scenarios line {=u32}, value {=u64:#x})",
                id,
                f.what,
                f.line,
                f.got
            );
            false
        }
    }
}
