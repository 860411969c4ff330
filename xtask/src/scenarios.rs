//! The QEMU scenarios: what each runs and what it must end with. The numbers are
//! `tsm_scenarios::id`'s, which the host payload runs; a unit test checks that every one of them
//! but the bench's is run here.

use std::time::Duration;

use tsm_scenarios::id;

use crate::arch::Arch;
use crate::decode::Program;
use crate::outcome::{MustLog, Outcome};

/// How the TSM image of a scenario is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Normal,
    /// With tsm-firmware's `selftest-fault` feature: the TSM takes a deliberate exception.
    SelftestFault,
    /// With tsm-firmware's `dma-inject` feature: the test-only TEST_DMA_INJECT call exists.
    DmaInject,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Normal, Variant::SelftestFault, Variant::DmaInject];

    /// tsm-firmware features of this variant.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Variant::Normal => &[],
            Variant::SelftestFault => &["selftest-fault"],
            Variant::DmaInject => &["dma-inject"],
        }
    }

    pub fn dir_name(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::SelftestFault => "selftest-fault",
            Variant::DmaInject => "dma-inject",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// Written to the first word of the host boot-parameters page.
    pub id: u32,
    /// What the run must end with, on both arches.
    pub expect: Outcome,
    pub timeout: Duration,
    pub variant: Variant,
    /// QEMU's `-smp`: the CPUs the machine has.
    pub cpus: u32,
    pub must_log: &'static [MustLog],
    pub about: &'static str,
    /// Its host and guest log `story: ` lines, one per step after the step's check passed:
    /// `cargo xtask run` shows only those unless `--verbose`.
    pub narrated: bool,
    /// The host is Debian's Linux kernel (`crate::linux_boot`), not the host payload.
    pub linux: bool,
}

/// Generous for a boot under TCG on a loaded 2-core machine; a run that needs longer is a bug.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The end-to-end scenarios (tests/scenarios) make hundreds of calls and device round trips
/// under TCG.
const E2E_TIMEOUT: Duration = Duration::from_secs(90);
/// `smp4` makes 1,000 calls on each of four CPUs, under TCG on a machine that may have two
/// cores for them.
const SMP4_TIMEOUT: Duration = Duration::from_secs(180);
/// `spdm-mitm` connects seven times.
const SPDM_MITM_TIMEOUT: Duration = Duration::from_secs(300);

/// What an isolation host-access run must log, the same on both arches: the host's announcement
/// of the access and its PASS (it survived the blocked access and went on to the teardown), and
/// the TSM's "blocked" line with the address: on aarch64 the IPA of the stage-2 fault it
/// skipped, on x86_64 the GPA of the nested page fault it turned into an injected #GP(0). The
/// addresses: the TSM image base, or the pool granule
/// `tsm_scenarios::scenarios::isolation::TARGET_INDEX` (3) above the pool base (DRAM base +
/// 32 MiB: 0x210_0000 on x86_64, 0x4200_0000 on aarch64; tests/host-payload/src/env.rs). An
/// access that is not blocked fails on both: the host says FAIL, and the TSM line is missing.
macro_rules! host_access_blocked {
    ($host:literal, $x86_blocked:literal, $arm_blocked:literal) => {
        [
            MustLog {
                arch: None,
                program: Program::Host,
                text: $host,
            },
            MustLog {
                arch: Some(Arch::X86_64),
                program: Program::Tsm,
                text: $x86_blocked,
            },
            MustLog {
                arch: Some(Arch::Aarch64),
                program: Program::Tsm,
                text: $arm_blocked,
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ]
    };
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "boot",
        id: id::BOOT,
        expect: Outcome::Pass,
        timeout: RUN_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        // The host says PASS only after its VERSION calls came back through the gate (and, on
        // x86_64, every way out of SVM guest mode it tried was refused: the last is a read of
        // the local APIC, which the TSM must log as blocked).
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
            MustLog {
                arch: Some(Arch::X86_64),
                program: Program::Tsm,
                text: "host read of GPA 0xfee00020",
            },
        ],
        about: "the host negotiates the ABI version through the call gate; on x86_64 its attempts to leave SVM guest mode are refused",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "selftest-fail",
        id: id::SELFTEST_FAIL,
        expect: Outcome::Fail,
        timeout: RUN_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "FAIL",
        }],
        about: "harness self-test: the host reports failure, the run must fail",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "selftest-hang",
        id: id::SELFTEST_HANG,
        expect: Outcome::Hang,
        // Short: this one always runs to its timeout.
        timeout: Duration::from_secs(10),
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[],
        about: "harness self-test: the host spins, the run must be killed and reported as a hang",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "selftest-fault",
        id: id::BOOT,
        expect: Outcome::Fail,
        timeout: RUN_TIMEOUT,
        variant: Variant::SelftestFault,
        cpus: 2,
        must_log: &[
            MustLog {
                arch: Some(Arch::Aarch64),
                program: Program::Tsm,
                text: "ESR",
            },
            MustLog {
                arch: Some(Arch::X86_64),
                program: Program::Tsm,
                text: "RIP",
            },
        ],
        about: "harness self-test: the TSM takes an exception, the run must fail with its registers logged",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "vcpu-smoke",
        id: id::VCPU_SMOKE,
        expect: Outcome::Pass,
        timeout: RUN_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "one TVM vCPU end to end: a guest call, a host call refused as a DENIED_CALL exit, G_EXIT, faults on memory the TVM does not map",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "lifecycle",
        id: id::LIFECYCLE,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::DmaInject,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "delegate, TVM, a vIOMMU of each type, PDEV connect, vdevices bound, the guest checks each report and accepts, T=1 DMA, unbind, ordered teardown, every granule back to NS",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "isolation",
        id: id::ISOLATION,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "a TVM cannot touch or name another TVM's or the host's memory; the host cannot map one TVM's page into another",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "isolation-delegated",
        id: id::ISOLATION_DELEGATED,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &host_access_blocked!(
            "loads from a delegated granule at",
            "host read of GPA 0x2103000",
            "host read of IPA 0x42003000"
        ),
        about: "the host loads from a delegated granule: the TSM blocks and logs it, the host goes on",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "isolation-private",
        id: id::ISOLATION_PRIVATE,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &host_access_blocked!(
            "stores to a TVM's private page at",
            "host write of GPA 0x2103000",
            "host write of IPA 0x42003000"
        ),
        about: "the host stores to a TVM's private page: the TSM blocks and logs it, the host goes on",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "isolation-tsm",
        id: id::ISOLATION_TSM,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &host_access_blocked!(
            "loads from the TSM's memory at",
            "host read of GPA 0x200000",
            "host read of IPA 0x40200000"
        ),
        about: "the host loads from the TSM's own memory: the TSM blocks and logs it, the host goes on",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "isolation-iommu",
        id: id::ISOLATION_IOMMU,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        // x86_64: the VT-d registers are outside the host's nested table, as secure memory is.
        must_log: &host_access_blocked!(
            "loads from the IOMMU's registers at",
            "host read of GPA 0xfed90000",
            "host read of IPA 0x9050000"
        ),
        about: "the host loads from the platform IOMMU's registers (SMMU, VT-d): the TSM blocks and logs it, the host goes on",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "spdm",
        id: id::SPDM,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "an authenticated device: SPDM connect (chain, signed measurements, session) through the host relay, TDISP sealed in the session, the guest checks chain and measurements and accepts to RUN, key update, END_SESSION",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "spdm-mitm",
        id: id::SPDM_MITM,
        expect: Outcome::Pass,
        // Seven worlds, each with a P-384 connect under TCG.
        timeout: SPDM_MITM_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "a host in the middle: a flipped, replayed or out-of-order record, a chain that does not verify, a bad signature end in DEVICE_ERROR; another device is evidence the guest tells apart and does not accept",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "bad-input",
        id: id::BAD_INPUT,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "every host call with stale/forged handles, wrong states, bad addresses and buffers, wrong vIOMMU types and BDFs gets its documented status",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "acceptance",
        id: id::ACCEPTANCE,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "forged and stale evidence refused, the host and another TVM cannot accept, fresh evidence from the guest reaches RUN",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "hostile-device",
        id: id::HOSTILE_DEVICE,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::DmaInject,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "each device misbehaviour puts the vdevice in ERROR, never RUN, no T=1",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "dma-rules",
        id: id::DMA_RULES,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::DmaInject,
        cpus: 2,
        must_log: &[MustLog {
            arch: None,
            program: Program::Host,
            text: "PASS",
        }],
        about: "TEST_DMA_INJECT: T=0 never reaches private memory, T=0 shared works, T=1 only in RUN",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "smp",
        id: id::SMP,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
            // CPU 1 entered the host only when the host started it through the TSM, and came
            // back to the TSM when the host stopped it.
            MustLog {
                arch: None,
                program: Program::Tsm,
                text: "CPU 1: the host starts it at",
            },
            MustLog {
                arch: None,
                program: Program::Tsm,
                text: "CPU 1: the host stopped it; waiting in the TSM",
            },
        ],
        about: "the host starts CPU 1 through the TSM (bad starts and INIT/SIPI refused), two CPUs issue racing calls on the same objects, invariants hold afterwards, CPU 1 stops and restarts",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "smp4",
        id: id::SMP4,
        expect: Outcome::Pass,
        timeout: SMP4_TIMEOUT,
        variant: Variant::Normal,
        cpus: 4,
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Tsm,
                text: "CPU 3: the host starts it at",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "none saw the secret",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ],
        about: "four CPUs race delegate/map/unmap/undelegate of the same granules, bind/unbind against malformed COMMUNICATEs and VCPU_RUN of one TVM's vCPUs while edu reads the granules through the IOMMU; every status one its race allows, counted per CPU; every granule back in NS",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "dma-hw",
        id: id::DMA_HW,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "was refused by the IOMMU",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ],
        about: "QEMU's edu device, driven by the host, DMAs through the TSM's IOMMU: host pages pass, a just-delegated granule, a TVM's private page and the TSM's memory fault into the host-domain queue",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "dma-diff",
        id: id::DMA_DIFF,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::DmaInject,
        cpus: 2,
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "rows, 0 different",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ],
        about: "the differential test: edu through the TSM's IOMMU and the software engine give the same outcome for every row (host device and vdevice; shared, private, delegated, TSM and unmapped targets; before bind, LOCKED, RUN, after unmap and remap, after unbind, destroyed)",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "mmio-private",
        id: id::MMIO_PRIVATE,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        // The host's load of BAR0 while a TVM holds it is blocked on both arches and the host
        // goes on (x86_64: the page is out of the host's nested table, the TSM injects #GP(0)).
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "the guest's access before validation faulted",
            },
            MustLog {
                arch: None,
                program: Program::Guest,
                text: "drove edu through its private mapping",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "after unbind the host reaches edu's BAR0 again",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "while a TVM holds it",
            },
            MustLog {
                arch: Some(Arch::X86_64),
                program: Program::Tsm,
                text: "host read of GPA 0xfea00000",
            },
            MustLog {
                arch: Some(Arch::Aarch64),
                program: Program::Tsm,
                text: "host read of IPA 0x10000000",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ],
        about: "edu is the vdevice: the host maps its BAR0 pages (named by the TDI's report) into a TVM: a touch before validation faults, the guest validates them against the report, its edu DMA into private memory is refused before accept, it drives edu itself (id, liveness, factorial) and its edu DMA lands in private memory in RUN; after unbind the host reaches BAR0 again and its edu DMA at the guest's pages is refused, and its load of BAR0 while bound is blocked, logged and survived",
        narrated: false,
        linux: false,
    },
    Scenario {
        name: "story",
        id: id::STORY,
        expect: Outcome::Pass,
        timeout: E2E_TIMEOUT,
        variant: Variant::Normal,
        cpus: 2,
        // The story's steps in order (an SPDM-authenticated `mmio-private`).
        must_log: &[
            MustLog {
                arch: None,
                program: Program::Host,
                text: "story: host: connected edu",
            },
            MustLog {
                arch: None,
                program: Program::Guest,
                text: "story: guest: the device's certificate chain",
            },
            MustLog {
                arch: None,
                program: Program::Guest,
                text: "was refused by the real IOMMU",
            },
            MustLog {
                arch: None,
                program: Program::Guest,
                text: "story: guest: accepted the device (RUN)",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "the real IOMMU refused the T=0 write and read",
            },
            MustLog {
                arch: None,
                program: Program::Guest,
                text: "its data is intact",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "story: host: teardown",
            },
            MustLog {
                arch: None,
                program: Program::Host,
                text: "PASS",
            },
        ],
        about: "what `cargo xtask run` shows: a TVM, a secure vIOMMU and edu as its vPCI function, connected over SPDM and bound; the guest checks the evidence, validates its private MMIO, is refused T=0 DMA before accept, accepts, and edu's DMA lands in its private memory; the host cannot read it, its DMA at the guest's pages is refused after unbind; teardown returns every granule",
        narrated: true,
        linux: false,
    },
];

/// The `linux` scenario's number in the parameters page: the kernel never reads it.
const LINUX_ID: u32 = u32::MAX;
/// A Linux boot under TCG takes 11 to 35 s here on a loaded machine (x86_64's with every port
/// access of its console an exit to the TSM, longer), and the story under it (SPDM, TDISP, the
/// guest, edu's DMA) as long as `story` does on its own; CI has 2 cores.
const LINUX_TIMEOUT: Duration = Duration::from_secs(240);

/// The scenarios with Debian's Linux kernel as the host (issue 18).
pub const LINUX_SCENARIOS: &[Scenario] = &[Scenario {
    name: "linux",
    id: LINUX_ID,
    expect: Outcome::Pass,
    timeout: LINUX_TIMEOUT,
    variant: Variant::Normal,
    cpus: 2,
    must_log: &[
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::UP_MARKER,
        },
        // The module found the TSM below the kernel (VERSION through the SMC conduit).
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "tsm_host: TSM ABI 1.0 granted",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::MODULE_MARKER,
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "edu bound: requester ID",
        },
        // The story's host steps, printed by the driver after each step's check passed.
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: created a TVM",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: connected edu",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: created the vPCI function for edu",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: bound the TDI",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: mapped edu's first register pages",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "its load from the private page the data landed in was blocked",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: unbound the TDI",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "the real IOMMU refused the T=0 write and read",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: bound and mapped again",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "story: host: teardown destroyed every object and returned all",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::DRIVER_MARKER,
        },
        // A granule the driver delegated, probed from Linux: blocked, and the driver went on.
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "isolation: the TSM blocked the host's access at",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: "tsm-linux-driver: isolation-delegated passed",
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::UNAVAILABLE_MARKER,
        },
        // The kernel's log of the driver's probes of pages the TSM held: external aborts.
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::DELEGATED_MARKER,
        },
        MustLog {
            arch: None,
            program: Program::Linux,
            text: crate::linux_boot::PROBE_MARKER,
        },
        // The kernel's own log of the probe's death: it took the fault as its own exception.
        MustLog {
            arch: Some(Arch::Aarch64),
            program: Program::Linux,
            text: "unhandled exception: DABT (lower EL)",
        },
        // The guest's steps, logged through the TSM's console as with the host payload.
        MustLog {
            arch: None,
            program: Program::Guest,
            text: "story: guest: the device's certificate chain",
        },
        MustLog {
            arch: None,
            program: Program::Guest,
            text: "was refused by the real IOMMU",
        },
        MustLog {
            arch: None,
            program: Program::Guest,
            text: "story: guest: accepted the device (RUN)",
        },
        MustLog {
            arch: None,
            program: Program::Guest,
            text: "its data is intact",
        },
        // The TSM's injections: the driver's probes (edu's BAR0, where Linux put it, while
        // the TVM held it; the private page's address is the pool's, which Linux chooses) and
        // /init's read of TSM memory.
        MustLog {
            arch: Some(Arch::Aarch64),
            program: Program::Tsm,
            text: "Linux host access to IPA 0x10000000 (not the host's) blocked",
        },
        MustLog {
            arch: Some(Arch::Aarch64),
            program: Program::Tsm,
            text: "Linux host access to IPA 0x40200000 (not the host's) blocked",
        },
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Linux,
            text: "general protection fault",
        },
        // PCI: the kernel enumerates bus 0 and finds edu; its writes to the chipset's read-only
        // configuration pages are emulated: the SATA function's BAR sizing goes through to the
        // device (a dropped write would give another size), the MCH's BAR writes are dropped.
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Linux,
            text: "pci 0000:00:01.0: [1234:11e8]",
        },
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Linux,
            text: "pci 0000:00:1f.2: BAR 5 [mem 0xfeb00000-0xfeb00fff]",
        },
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Tsm,
            text: "host config write to chipset 00:00.0 offset 0x10 (4 bytes) dropped",
        },
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Tsm,
            text: "host read of GPA 0x200000 (not the host's) blocked",
        },
        // The driver's probe of edu's BAR0 (where firmware put it) while the TVM held it.
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Tsm,
            text: "host read of GPA 0xfea00000 (not the host's) blocked",
        },
    ],
    about: "Debian's kernel boots as the host with an initramfs; /init loads tsm_host.ko and runs the user-space driver's `story` over /dev/tsm: a TVM with the guest payload, a secure vIOMMU, edu as its vPCI function connected over SPDM and bound, the guest accepts, edu's DMA lands in its private memory through the real IOMMU (SMMUv3; VT-d), a T=0 write to secure memory is refused, the driver's probes of pages the TSM holds are killed by the faults it injects (external aborts; #GP(0)), teardown returns every granule. x86_64: the kernel enumerates bus 0, its writes to the chipset's configuration emulated by the TSM. Both: /init reads TSM memory through /dev/mem and is killed by the fault the TSM injects (aarch64: an external abort, SIGBUS; x86_64: #GP(0), SIGSEGV), the kernel lives on and powers off (PSCI SYSTEM_OFF; ACPI S5)",
    narrated: false,
    linux: true,
}];

pub fn find(name: &str) -> Option<&'static Scenario> {
    all().find(|s| s.name == name)
}

/// Every scenario: the host payload's, then the Linux ones.
pub fn all() -> impl Iterator<Item = &'static Scenario> {
    SCENARIOS.iter().chain(LINUX_SCENARIOS)
}

pub fn names() -> Vec<&'static str> {
    all().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_number_is_run_once_named() {
        for (name, n) in id::ALL {
            assert_eq!(
                id::ALL.iter().filter(|(_, m)| m == n).count(),
                1,
                "{name} = {n} is not the only scenario with its number"
            );
            // The bench runs under `cargo xtask bench` (docs/benchmarks.md), not here.
            assert!(
                *n == id::BENCH || SCENARIOS.iter().any(|s| s.id == *n),
                "host scenario {name} = {n} has no xtask scenario"
            );
        }
    }

    #[test]
    fn names_are_unique_and_findable() {
        for s in all() {
            assert_eq!(find(s.name).map(|f| f.id), Some(s.id));
            assert_eq!(all().filter(|o| o.name == s.name).count(), 1);
        }
        assert!(find("no-such-scenario").is_none());
    }
}
