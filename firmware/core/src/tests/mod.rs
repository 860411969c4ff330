//! Host unit tests of the calls, over the simulated platform.

extern crate std;

mod cpus;
mod devices;
#[cfg(feature = "dma-inject")]
mod dma;
mod dma_tables;
#[cfg(feature = "dma-inject")]
mod gpa_split;
mod memory;
mod overflow;
mod platform_faults;
mod private_mmio;
#[cfg(feature = "dma-inject")]
mod requesters;
mod system;
mod teardown;
mod watch;

use tsm_abi::CallId;
use tsm_abi::addr::Pa;
use tsm_abi::params::TvmParams;
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::AddressMapFormat;
use zerocopy::{FromZeros, IntoBytes};

use crate::testing::Harness;

pub(crate) const FORMATS: [AddressMapFormat; 2] = [
    AddressMapFormat::ArmStage2,
    AddressMapFormat::X86_64FourLevel,
];

pub(crate) fn s(code: StatusCode, index: u8) -> Status {
    Status::arg(code, index)
}

/// A harness with 256 granules.
pub(crate) fn harness(format: AddressMapFormat) -> Harness {
    Harness::new(256, format)
}

pub(crate) fn tvm_params(gpa_bits: u8, max_vcpus: u32) -> TvmParams {
    TvmParams {
        gpa_bits,
        max_vcpus,
        ..TvmParams::new_zeroed()
    }
}

/// Granule numbers a TVM built by [`build_tvm`] uses.
pub(crate) struct TvmSetup {
    pub tvm: Pa,
    pub root: Pa,
    pub tables: [Pa; 3],
}

/// Creates a TVM in granules `first..first+5` (params in `first`, TVM, root, and the level
/// 1..3 tables covering GPA 0) .
/// The first GPA of the shared half of a [`build_tvm`] TVM (40 GPA bits, docs/abi.md §5.2).
pub(crate) const SHARED_GPA: u64 = 1 << 39;

/// Tables for the first 2 MiB of the shared half of a [`build_tvm`] TVM, from granules 240..243
/// (which no test uses otherwise).
pub(crate) fn shared_tables(h: &Harness, tvm: Pa) -> [Pa; 3] {
    let mut tables = [Pa(0); 3];
    for (i, level) in (1..=3u64).enumerate() {
        tables[i] = h.delegate(240 + i as u64);
        h.host(
            CallId::TABLE_CREATE,
            &[tvm.0, SHARED_GPA, level, tables[i].0],
        )
        .unwrap();
    }
    tables
}

pub(crate) fn build_tvm(h: &Harness, first: u64) -> TvmSetup {
    let params = h.host_put(first, tvm_params(40, 2).as_bytes());
    let tvm = h.delegate(first + 1);
    let root = h.delegate(first + 2);
    h.host(CallId::TVM_CREATE, &[tvm.0, params.0, root.0])
        .unwrap();
    let mut tables = [Pa(0); 3];
    for (i, level) in (1..=3u64).enumerate() {
        tables[i] = h.delegate(first + 3 + i as u64);
        h.host(CallId::TABLE_CREATE, &[tvm.0, 0, level, tables[i].0])
            .unwrap();
    }
    TvmSetup { tvm, root, tables }
}
