//! Conventions shared by the host routines and the guest scripts: the guest's address map, the
//! modelled device's functions, and how a vCPU's `arg0` selects its script.

use tsm_abi::addr::Gpa;
use tsm_abi::params::InterfaceIdFormat;
use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, ReportFields};
use tsm_device_model::TdiConfig;
use tsm_device_model::fixtures::{LARGE_REPORT_INFO, LARGE_REPORT_RANGES};

/// Where the guest payload is linked and entered (docs/design.md "Guests").
pub const IMAGE_GPA: Gpa = Gpa(0x20_0000);
/// Pages the host maps for the guest image, its BSS and its stack (the guest's linker scripts
/// assert that the image fits).
pub const IMAGE_PAGES: u64 = 64;
/// Two private zero-filled pages for the guest's buffers (info, report, evidence, events).
pub const SCRATCH_GPA: Gpa = Gpa(0x30_0000);
/// Offset in the scratch area where a guest keeps evidence across host steps.
pub const SAVED_EVIDENCE: u64 = 0x1000;
/// The first GPA of the TVMs' shared half (docs/abi.md §5.2); the guest checks it against
/// G_TVM_INFO before it trusts any of these addresses.
pub const SHARED_BASE: Gpa = Gpa(1 << (GPA_BITS - 1));
/// The 2 MiB of the shared half the host gives tables (the private [`L3_GPA`], moved up).
pub const SHARED_L3_GPA: Gpa = Gpa(SHARED_BASE.0 + L3_GPA.0);
/// A page of host (NS) memory mapped shared.
pub const SHARED_GPA: Gpa = Gpa(SHARED_BASE.0 + 0x31_0000);
/// Where the isolation scenario maps a private page in one TVM only.
pub const OTHER_GPA: Gpa = Gpa(0x32_0000);
/// The 2 MiB the level-3 table covers: everything above lies in it.
pub const L3_GPA: Gpa = Gpa(0x20_0000);
/// Where the private-MMIO scenario maps the device's pages (private, under the level-3 table).
pub const MMIO_GPA: Gpa = Gpa(0x34_0000);
/// Pages of the device's first range it maps there, and the guest validates.
pub const MMIO_PAGES: u64 = 2;
/// The TVMs' guest-physical width (within every platform's FEATURES `MEMORY` range).
pub const GPA_BITS: u8 = 39;

/// The modelled device's PCI segment. Not 0, so that every DMA request the scenarios inject names
/// its segment, and the same RIDs on segment [`OTHER_SEGMENT`] are other devices.
pub const SEGMENT: u16 = 1;
/// A segment with no PDEV: any requester on it is a host device.
pub const OTHER_SEGMENT: u16 = 0;
/// The modelled device's requester-ID range; PF0 (its DSM) is the first.
pub const RID_BASE: u16 = 0x0100;
/// Requester IDs of the PDEV.
pub const RID_COUNT: u16 = 8;
/// Functions with a TDI after PF0 (pBDF `RID_BASE + 1 ..`).
pub const FUNCTIONS: u16 = 4;
/// The vBDF the first vdevice of a TVM gets; the next ones follow.
pub const VBDF_BASE: u16 = 0x0008;
/// A requester on [`SEGMENT`] that belongs to no PDEV (a host device).
pub const HOST_RID: u16 = 0x0300;
/// The interface-ID format of the PDEV.
pub const ID_FORMAT: InterfaceIdFormat = InterfaceIdFormat::Rid;

const fn tdi(rid: u16) -> TdiConfig<'static> {
    TdiConfig {
        interface_id: InterfaceId::new(rid, None),
        report: ReportFields {
            interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
            msi_x_message_control: 0,
            lnr_control: 0,
            tph_control: 0,
        },
        // Over 1 KiB: the TSM fetches it in two portions when the device's portions are small.
        mmio_ranges: &LARGE_REPORT_RANGES,
        device_specific_info: &LARGE_REPORT_INFO,
    }
}

/// PF0 and the functions.
pub static TDIS: [TdiConfig<'static>; 1 + FUNCTIONS as usize] = [
    tdi(RID_BASE),
    tdi(RID_BASE + 1),
    tdi(RID_BASE + 2),
    tdi(RID_BASE + 3),
    tdi(RID_BASE + 4),
];

/// A TDI for each function of PCI bus 0 (interface ID = its requester ID), for a device model
/// that answers TDISP for a real function ([`crate::scenarios::dma_diff`]: QEMU's `edu`, which
/// has no DOE mailbox of its own). `&BUS0_TDIS[rid..][..1]` is the TDI of function `rid`.
pub static BUS0_TDIS: [TdiConfig<'static>; 256] = {
    let mut tdis = [tdi(0); 256];
    let mut rid = 1;
    while rid < 256 {
        tdis[rid] = tdi(rid as u16);
        rid += 1;
    }
    tdis
};

/// The device's report portion size: small, so every bind fetches the report in portions.
pub const REPORT_PORTION: u16 = 600;

/// The guest scripts (`arg0` bits 7:0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Script {
    /// For `count` vdevices from `vbdf`: check info, read the report and its digest, accept,
    /// see RUN.
    Lifecycle = 1,
    /// Name memory outside the TVM's map in guest calls: refused.
    IsoBuffers = 2,
    /// Read the GPA in `arg0` bits 63:12: must fault (never returns on QEMU).
    Touch = 3,
    /// Wrong evidence refused field by field; yield; stale evidence refused; fresh accepted.
    AcceptProbe = 4,
    /// Name another TVM's vdevice (`vbdf`): it does not exist for this TVM.
    OtherTvm = 5,
    /// `count` rounds: the vdevice is in ERROR with no evidence and cannot be accepted; yield.
    HostileRounds = 6,
    /// Accept with right evidence; the device fails START: `DeviceError`, vdevice ERROR.
    StartFails = 7,
    /// Accept; yield (host checks T=1 in RUN); stop; yield (host checks T=1 is off).
    DmaAccept = 8,
    /// Time [`BENCH_CALLS`] G_VERSIONs with the guest's counter and leave the sums at
    /// [`BENCH_SUMS_GPA`] (the host's `bench` scenario, docs/benchmarks.md).
    Bench = 9,
    /// Accept `vbdf`; yield (the host runs its RUN rows, then unbinds); the first full fault
    /// record must be the hardware's refusal of the host's first T=0 write to private memory.
    DmaDiff = 10,
    /// The device is authenticated: read the chain and measurements, check their digests and
    /// that the chain is the expected device's (else exit [`exit_code::UNTRUSTED_DEVICE`]
    /// without accepting); changed digests refused; accept; see RUN.
    Authenticated = 11,
    /// Private MMIO: read the report, validate the device pages at [`MMIO_GPA`] against its
    /// first range (a wrong page refused first); have `edu` write into a private page (refused
    /// before accept); accept; drive `edu` through the pages and have it copy private memory
    /// (lands in RUN); yield (the host unbinds and aims `edu` at the guest's pages); find the
    /// host's attempts refused in the queue and the data intact
    /// ([`crate::scenarios::mmio`]).
    Mmio = 12,
    /// [`Script::Mmio`] for an authenticated device: first check its chain and measurements
    /// against their digests and the chain against the one the guest trusts, as
    /// [`Script::Authenticated`] does.
    Story = 13,
    /// Put the vCPU in a state the CPU will not enter it in ([`crate::GuestEnv::break_entry_state`]:
    /// x86_64's EFER.SVME clear, after a reserved EFER bit that must not stick), then call:
    /// must fault, and so must every later run (never returns on QEMU's x86_64). Where no such
    /// state exists, it has nothing to check and exits 0.
    BreakEntry = 14,
}

impl Script {
    const ALL: [Script; 14] = [
        Script::Lifecycle,
        Script::IsoBuffers,
        Script::Touch,
        Script::AcceptProbe,
        Script::OtherTvm,
        Script::HostileRounds,
        Script::StartFails,
        Script::DmaAccept,
        Script::Bench,
        Script::DmaDiff,
        Script::Authenticated,
        Script::Mmio,
        Script::Story,
        Script::BreakEntry,
    ];
}

/// A vCPU's `arg0`: which script, on which vdevices (or which GPA).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestArg {
    /// The script.
    pub script: Script,
    /// First vBDF (scripts about vdevices).
    pub vbdf: u16,
    /// How many vdevices or rounds.
    pub count: u8,
}

impl GuestArg {
    /// The `arg0` value.
    pub const fn encode(self) -> u64 {
        self.script as u64 | (self.vbdf as u64) << 8 | (self.count as u64) << 24
    }

    /// `arg0` of a [`Script::Touch`] of `gpa` (granule-aligned).
    pub const fn touch(gpa: Gpa) -> u64 {
        (gpa.0 & !0xFFF) | Script::Touch as u64
    }

    /// Decodes `arg0`; `None` for an unknown script.
    pub fn decode(raw: u64) -> Option<Self> {
        let script = *Script::ALL.iter().find(|s| **s as u64 == raw & 0xFF)?;
        Some(GuestArg {
            script,
            vbdf: (raw >> 8) as u16,
            count: (raw >> 24) as u8,
        })
    }

    /// The GPA a [`Script::Touch`] reads.
    pub const fn touch_gpa(raw: u64) -> Gpa {
        Gpa(raw & !0xFFF)
    }
}

/// G_VERSIONs a [`Script::Bench`] guest times, and empty samples it takes to measure what a
/// sample adds: as many as the host's `bench` scenario times of each host call.
pub const BENCH_CALLS: u32 = 256;
/// Where a [`Script::Bench`] guest leaves its [`BenchSums`]: a page the host maps shared, so
/// the host can read them after the guest's G_EXIT (its private memory it cannot).
pub const BENCH_SUMS_GPA: Gpa = SHARED_GPA;

/// What a [`Script::Bench`] guest measured, in counter ticks; three little-endian `u64`s in
/// field order at [`BENCH_SUMS_GPA`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BenchSums {
    /// Samples of each kind.
    pub samples: u64,
    /// Sum over the samples of one G_VERSION between two counter reads.
    pub calls: u64,
    /// Sum over the samples of two back-to-back counter reads.
    pub empty: u64,
}

impl BenchSums {
    /// Bytes at [`BENCH_SUMS_GPA`].
    pub const SIZE: usize = 24;

    /// The bytes the guest writes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        for (chunk, v) in out
            .chunks_exact_mut(8)
            .zip([self.samples, self.calls, self.empty])
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The sums in the bytes the host read.
    pub fn decode(raw: &[u8; Self::SIZE]) -> Self {
        let mut v = [0u64; 3];
        for (chunk, x) in raw.chunks_exact(8).zip(v.iter_mut()) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *x = u64::from_le_bytes(word);
        }
        let [samples, calls, empty] = v;
        BenchSums {
            samples,
            calls,
            empty,
        }
    }
}

/// Guest exit codes: 0 passed; otherwise the line of the failed check (guest scripts report
/// `line!()`), or one of these.
pub mod exit_code {
    /// `arg0` named no script.
    pub const BAD_ARG: u64 = 0xBAD0;
    /// A [`super::Script::Touch`] read returned data.
    pub const TOUCH_REACHED: u64 = 0xBAD1;
    /// [`super::Script::Mmio`]: driving `edu`'s DMA failed (the line in `tests/scenarios/src/pci.rs`
    /// of the failed check in bits 63:32).
    pub const EDU_DMA: u64 = 0xBAD3;
    /// [`super::Script::Authenticated`]: the chain is not the one the guest's policy trusts.
    pub const UNTRUSTED_DEVICE: u64 = 0xBAD2;
    /// [`super::Script::BreakEntry`]: the call after the break returned.
    pub const ENTRY_STATE_KEPT: u64 = 0xBAD4;
}
