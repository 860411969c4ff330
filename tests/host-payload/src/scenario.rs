//! The scenarios the host payload can run; xtask picks one per QEMU run through the host
//! boot-parameters page (docs/design.md), by its number in `tsm_scenarios::id`.

use tsm_abi::call::CallId;
use tsm_abi::status::Status;
use tsm_abi::version::{self, AbiVersion};
use tsm_scenarios::id;

use crate::tsm_call;

#[path = "bench.rs"]
mod bench;
#[path = "smp.rs"]
mod smp;
#[path = "smp4.rs"]
mod smp4;

/// Runs scenario `id`; true when it passed.
pub fn run(id: u32, dram_base: u64, dram_size: u64) -> bool {
    match id {
        id::SMP => report(id, smp::run(dram_base, dram_size)),
        id::SMP4 => report(id, smp4::run(dram_base, dram_size)),
        id::LIFECYCLE..=id::STORY => end_to_end(id, dram_base, dram_size),
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
/// with the supported range. On x86_64 the host then tries its way out of SVM guest mode
/// (`svm_escape`); aarch64's host has no such attempt to survive: every EL2 register or
/// instruction it tries is a fatal trap.
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
    let passed = granted && refused;
    #[cfg(target_arch = "x86_64")]
    let passed = crate::svm_escape::all_refused() && passed;
    passed
}

/// One of the end-to-end scenarios, as host driver with the guest payload, the device model
/// and the devices.
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
