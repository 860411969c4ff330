//! `cargo xtask`: the project's one entry point. Every command first checks its prerequisites
//! and installs what is missing, so a fresh machine needs nothing but rustup.

mod apt;
mod arch;
mod bench;
mod decode;
mod fuzz;
mod gdb;
mod images;
mod initramfs;
mod linux_boot;
mod linux_check;
mod linux_module;
mod linux_packages;
mod miri;
mod outcome;
mod prereq;
mod procs;
mod qemu;
mod qemu_install;
mod records;
mod release_check;
mod scenarios;
mod smp_soak;
mod soak;
mod spdm_interop;
mod test_cmd;
mod workspace;

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::arch::Arch;
use crate::decode::Program;
use crate::images::Images;
use crate::outcome::Outcome;
use crate::scenarios::{Scenario, Variant};
use crate::workspace::Workspace;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test the TSM firmware in QEMU (aarch64 and x86_64)",
    after_help = "Exit status: 0 when every run passed, 1 when a run or check failed or hung, \
                  2 when xtask itself could not do its job (a failed build, a missing tool)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the prerequisites and install what is missing: rustup targets and components of
    /// the pinned toolchain, QEMU from Debian. Every other command does this first.
    Setup,
    /// Build the TSM image (`tsm`) and the host payload (`tsm-host`).
    Build(BuildArgs),
    /// Boot the TSM with the host payload in QEMU and show the decoded log. The exit status is
    /// the run's result.
    Run(RunArgs),
    /// Everything CI checks: host unit tests, clippy, rustfmt, then every QEMU scenario on both
    /// arches (at most two at once), with a summary table.
    Test(TestArgs),
    /// Boot in QEMU stopped at the first instruction with a gdb server on localhost:1234, and
    /// attach gdb-multiarch (installed on demand) with the TSM's and the host's symbols.
    Gdb(GdbArgs),
    /// Measure what the TSM costs (instructions per host call under QEMU icount, vIOMMU
    /// translation, image size and static RAM, boot) against bench/budgets.toml; prints one
    /// table and writes target/xtask/bench.json (docs/benchmarks.md).
    Bench(BenchArgs),
    /// The long run of the four-CPU race (`smp4`): every CPU makes `--calls-per-cpu` calls on
    /// shared objects; prints progress, then a table of each CPU's outcomes (docs/assurance.md).
    SmpSoak(SmpSoakArgs),
    /// Run the libFuzzer targets (fuzz/, nightly + cargo-fuzz, installed when missing), each
    /// bounded in time or executions, one at a time (docs/assurance.md).
    Fuzz(FuzzArgs),
    /// Run the host-buildable crates' tests under Miri (nightly, installed when missing).
    Miri,
    /// The long runs, one part after the other with progress, then a table (part, size, time,
    /// result): the model test at a million sequences, Miri, every fuzz target
    /// (docs/assurance.md). Long: run it under `nice`.
    Soak(SoakArgs),
    /// Run the core's SPDM requester on this machine against a responder speaking the socket
    /// protocol of DMTF's SPDM emulator (PCI DOE): connection, certificate, signed measurements,
    /// a session, TDISP in it, key update, END_SESSION, then the socket's stop command.
    SpdmInterop(SpdmInteropArgs),
    /// Serve the project's device model (SPDM responder + TDISP) on a socket, speaking the
    /// protocol `spdm-interop` speaks, until a peer sends the stop command.
    SpdmResponder(SpdmResponderArgs),
    /// Fetch Debian's kernel for the Linux host (issue 18, in progress: the TSM does not boot
    /// it yet): the image, the headers a module builds against, a static busybox; the newest
    /// build of the machine's release, unpacked into the cache folder, nothing installed.
    LinuxPackages(LinuxPackagesArgs),
    /// Build the Linux host's pieces for each arch: the kernel module (linux/module:
    /// tsm_host.ko) against Debian's headers (fetched first when missing; the arm64 cross
    /// compiler too, unpacked, not installed), its vermagic checked, and the user-space driver
    /// (linux/driver, a static binary). With --boot-check, boot Debian's kernel under QEMU
    /// without a TSM, with both in a busybox initramfs, and check the module loads, /dev/tsm
    /// appears, edu binds and a scenario fails cleanly at its first call.
    LinuxModule(LinuxModuleArgs),
}

#[derive(Args)]
struct LinuxModuleArgs {
    /// Which architectures.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Boot Debian's kernel (no TSM below it) with the module and the driver and check them.
    #[arg(long)]
    boot_check: bool,
}

#[derive(Args)]
struct LinuxPackagesArgs {
    /// Which architectures' kernels.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Look the newest version up again and replace the unpacked one.
    #[arg(long)]
    refresh: bool,
}

#[derive(Args)]
struct SpdmInteropArgs {
    /// The responder, HOST:PORT (spdm-emu's default port is 2323).
    #[arg(long, value_name = "HOST:PORT")]
    responder: String,
    /// The certificate slot to connect with.
    #[arg(long, default_value_t = 0)]
    slot: u8,
    /// The TDISP interface (`FUNCTION_ID`: requester ID, segment bits).
    #[arg(long, value_name = "FUNCTION_ID", value_parser = parse_u32, default_value_t = spdm_interop::DEFAULT_FUNCTION_ID)]
    function_id: u32,
    /// How far TDISP goes in the session: GET_TDISP_VERSION, then GET_TDISP_CAPABILITIES, then
    /// a whole bind (lock, report, start, state, stop).
    #[arg(long, value_enum, default_value = "bind")]
    tdisp: TdispDepth,
}

#[derive(Clone, Copy, ValueEnum)]
enum TdispDepth {
    Version,
    Capabilities,
    Bind,
}

impl From<TdispDepth> for spdm_interop::Depth {
    fn from(d: TdispDepth) -> Self {
        match d {
            TdispDepth::Version => Self::Version,
            TdispDepth::Capabilities => Self::Capabilities,
            TdispDepth::Bind => Self::Bind,
        }
    }
}

#[derive(Args)]
struct SpdmResponderArgs {
    /// Where to listen, HOST:PORT (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2323")]
    listen: String,
}

/// A number in decimal or with a 0x prefix.
fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| e.to_string())
}

#[derive(Args)]
struct SmpSoakArgs {
    /// Which architectures to run.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Calls each of the four CPUs makes.
    #[arg(long, default_value_t = 100_000)]
    calls_per_cpu: u32,
}

#[derive(Args)]
struct FuzzArgs {
    /// One target (dispatcher, tdisp_decode, walkers, device_model, cert_chain, spdm_decode,
    /// spdm_secured);
    /// default: all.
    #[arg(long)]
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60, conflicts_with = "execs")]
    time: u64,
    /// Executions per target instead of a time (libFuzzer's `-runs`), for long runs whose
    /// figures go to docs/assurance.md.
    #[arg(long)]
    execs: Option<u64>,
}

#[derive(Args)]
struct SoakArgs {
    /// Only these parts, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<soak::Part>,
    /// Model-test sequences in all (half on each address-map format).
    #[arg(long, default_value_t = 1_000_000)]
    model_sequences: u64,
    /// Random steps per model sequence before its teardown.
    #[arg(long, default_value_t = 12)]
    model_steps: u64,
    /// Threads per address-map format for the model test (default: the CPUs).
    #[arg(long)]
    model_threads: Option<u64>,
    /// Seconds per fuzz target.
    #[arg(long, default_value_t = 600)]
    fuzz_time: u64,
    /// Calls per CPU of the four-CPU race (both arches).
    #[arg(long, default_value_t = 100_000)]
    smp_calls: u32,
    /// Executions per fuzz target, however long they take (instead of `--fuzz-time`).
    #[arg(long)]
    fuzz_execs: Option<u64>,
    /// Fuzz only these targets, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    fuzz_target: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    /// Which architectures to measure.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Exit with status 1 when a figure is over its budget (default: only mark it).
    #[arg(long)]
    strict: bool,
    /// Pass `--quick` to criterion (shorter, noisier translation figures).
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ArchChoice {
    #[value(name = "aarch64")]
    Aarch64,
    #[value(name = "x86_64")]
    X86_64,
    All,
}

impl ArchChoice {
    fn arches(self) -> Vec<Arch> {
        match self {
            ArchChoice::Aarch64 => vec![Arch::Aarch64],
            ArchChoice::X86_64 => vec![Arch::X86_64],
            ArchChoice::All => Arch::ALL.to_vec(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OneArch {
    #[value(name = "aarch64")]
    Aarch64,
    #[value(name = "x86_64")]
    X86_64,
}

impl From<OneArch> for Arch {
    fn from(a: OneArch) -> Arch {
        match a {
            OneArch::Aarch64 => Arch::Aarch64,
            OneArch::X86_64 => Arch::X86_64,
        }
    }
}

#[derive(Args)]
struct BuildArgs {
    /// Which architecture to build for.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Build with the release profile (optimised, overflow checks kept).
    #[arg(long)]
    release: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Which architecture to boot; `all` boots each in turn.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// The scenario the host payload runs (see xtask/src/scenarios.rs); by default `story`,
    /// the whole of device assignment on the platform IOMMU, narrated.
    #[arg(long, default_value = "story", value_parser = PossibleValuesParser::new(scenarios::names()))]
    scenario: String,
    /// Boot the release-profile images.
    #[arg(long)]
    release: bool,
    /// Kill the run after this many seconds (default: the scenario's timeout).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Show the whole decoded log of a narrated scenario (`story`), not just its narration.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Skip the host checks (unit tests, clippy, rustfmt): only build and run the scenarios.
    #[arg(long)]
    no_checks: bool,
    /// Run the scenarios on this architecture only.
    #[arg(long, value_enum, default_value = "all")]
    arch: ArchChoice,
    /// Run only these scenarios (repeatable; default: all).
    #[arg(long, value_parser = PossibleValuesParser::new(scenarios::names()))]
    scenario: Vec<String>,
}

#[derive(Args)]
struct GdbArgs {
    /// Which architecture to debug.
    #[arg(long, value_enum)]
    arch: OneArch,
    /// The scenario the host payload runs.
    #[arg(long, default_value = "boot", value_parser = PossibleValuesParser::new(scenarios::names()))]
    scenario: String,
    /// Debug the release-profile images.
    #[arg(long)]
    release: bool,
    /// Do not start gdb: print its command line and show the decoded log here, for a gdb
    /// started in another terminal.
    #[arg(long)]
    no_attach: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(passed)`, or the reason xtask could not do its job.
fn dispatch(cmd: Cmd) -> Result<bool, String> {
    let ws = Workspace::locate()?;
    let needs = prereq::Needs {
        gdb: matches!(cmd, Cmd::Gdb(_)),
    };
    prereq::ensure(&ws, needs, matches!(cmd, Cmd::Setup))?;
    match cmd {
        Cmd::Setup => Ok(true),
        Cmd::Build(args) => {
            for arch in args.arch.arches() {
                images::build(&ws, arch, args.release, Variant::Normal)?;
                let path = |triple: &str, bin: &str| {
                    ws.target_dir
                        .join(triple)
                        .join(images::profile(args.release))
                        .join(bin)
                };
                println!(
                    "{}: {} and {}",
                    arch.name(),
                    path(arch.tsm_triple(), "tsm").display(),
                    path(arch.triple(), "tsm-host").display()
                );
            }
            Ok(true)
        }
        Cmd::Run(args) => run(&ws, &args),
        Cmd::Test(args) => {
            let scenarios: Vec<&'static Scenario> = if args.scenario.is_empty() {
                scenarios::all().collect()
            } else {
                args.scenario
                    .iter()
                    .filter_map(|n| scenarios::find(n))
                    .collect()
            };
            let opts = test_cmd::Options {
                checks: !args.no_checks,
                arches: args.arch.arches(),
                scenarios,
            };
            test_cmd::test(&ws, &opts)
        }
        Cmd::Bench(args) => bench::bench(
            &ws,
            &bench::Options {
                arches: args.arch.arches(),
                strict: args.strict,
                quick: args.quick,
            },
        ),
        Cmd::SmpSoak(args) => {
            let mut passed = true;
            for arch in args.arch.arches() {
                let summary = smp_soak::smp_soak(&ws, arch, args.calls_per_cpu)?;
                print!("{}", summary.table());
                passed &= summary.passed;
            }
            Ok(passed)
        }
        Cmd::Fuzz(args) => {
            let budget = match args.execs {
                Some(n) => fuzz::Budget::Executions(n),
                None => fuzz::Budget::Seconds(args.time),
            };
            fuzz::fuzz(&ws, args.target.as_deref(), budget)
        }
        Cmd::Miri => miri::miri(&ws),
        Cmd::Soak(args) => soak::soak(
            &ws,
            &soak::Options {
                only: args.only,
                model_sequences: args.model_sequences,
                model_steps: args.model_steps,
                model_threads: args.model_threads,
                smp_calls_per_cpu: args.smp_calls,
                fuzz_budget: match args.fuzz_execs {
                    Some(n) => fuzz::Budget::Executions(n),
                    None => fuzz::Budget::Seconds(args.fuzz_time),
                },
                fuzz_targets: args.fuzz_target,
            },
        ),
        Cmd::SpdmInterop(args) => spdm_interop::interop(&spdm_interop::Options {
            responder: args.responder,
            slot: args.slot,
            function_id: args.function_id,
            tdisp: args.tdisp.into(),
        }),
        Cmd::SpdmResponder(args) => spdm_interop::serve(&args.listen),
        Cmd::LinuxPackages(args) => {
            for arch in args.arch.arches() {
                let k = linux_packages::ensure(arch, args.refresh)?;
                println!(
                    "{}: Debian kernel {} ({})\n  image   {}\n  config  {}\n  headers {}\n  busybox {}",
                    arch.name(),
                    k.abi,
                    k.version,
                    k.image().display(),
                    k.config().display(),
                    k.headers().display(),
                    k.busybox().display()
                );
            }
            Ok(true)
        }
        Cmd::LinuxModule(args) => {
            let mut passed = true;
            for arch in args.arch.arches() {
                let k = linux_packages::ensure(arch, false)?;
                let m = linux_module::build(&ws, arch, &k)?;
                let driver = linux_check::build_driver(&ws, arch)?;
                println!(
                    "{}: {}\n  vermagic {}\n  driver {}",
                    arch.name(),
                    m.ko.display(),
                    m.vermagic,
                    driver.display()
                );
                if args.boot_check {
                    let (guest, _) = images::build_guest(&ws, arch)?;
                    let cpio = linux_check::initramfs(&k, &m.ko, &driver, &guest)?;
                    let path = ws
                        .xtask_dir()
                        .join("linux-module")
                        .join(format!("{}-check.cpio", arch.name()));
                    std::fs::write(&path, cpio)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    let ok = linux_check::boot(&ws, arch, &k, &path)?;
                    println!(
                        "{}: boot check {}",
                        arch.name(),
                        if ok { "passed" } else { "FAILED" }
                    );
                    passed &= ok;
                }
            }
            Ok(passed)
        }
        Cmd::Gdb(args) => {
            let scenario = find_scenario(&args.scenario)?;
            let arch = Arch::from(args.arch);
            let images = build_for(&ws, arch, args.release, scenario.variant)?;
            gdb::gdb(&ws, arch, scenario, &images, !args.no_attach)
        }
    }
}

fn find_scenario(name: &str) -> Result<&'static Scenario, String> {
    scenarios::find(name).ok_or_else(|| format!("no scenario {name:?}"))
}

/// Builds what a scenario of `variant` needs: the normal images (the host payload comes from
/// them), then the variant's TSM.
fn build_for(
    ws: &Workspace,
    arch: Arch,
    release: bool,
    variant: Variant,
) -> Result<Images, String> {
    let normal = images::build(ws, arch, release, Variant::Normal)?;
    if variant == Variant::Normal {
        Ok(normal)
    } else {
        images::build(ws, arch, release, variant)
    }
}

fn run(ws: &Workspace, args: &RunArgs) -> Result<bool, String> {
    let scenario = find_scenario(&args.scenario)?;
    let timeout = args.timeout.map_or(scenario.timeout, Duration::from_secs);
    let mut passed = true;
    for arch in args.arch.arches() {
        let images = build_for(ws, arch, args.release, scenario.variant)?;
        println!(
            "== {} {} (scenario id {}): {}",
            arch.name(),
            scenario.name,
            scenario.id,
            scenario.about
        );
        let spec = qemu::RunSpec {
            arch,
            images: &images,
            scenario_id: scenario.id,
            cpus: scenario.cpus,
            param: 0,
            timeout: Some(timeout),
            gdb_server: false,
            own_process_group: false,
            label: scenario.name,
            linux: scenario.linux,
        };
        let narrate = scenario.narrated && !args.verbose;
        let report = qemu::run(ws, &spec, None, &mut |line| {
            if !narrate {
                println!("{line}");
            } else if let Some(step) = narration(line) {
                println!("{step}");
            }
        })?;
        println!(
            "== {} {}: {} ({}) in {:.2} s; log: {}",
            arch.name(),
            scenario.name,
            report.outcome,
            outcome::describe(arch, report.ended),
            report.wall.as_secs_f64(),
            report.log_path.display()
        );
        passed &= report.outcome == Outcome::Pass;
    }
    Ok(passed)
}

/// What a narrated run shows of `line`: a `story: ` step of the host or guest, without the
/// prefix (the program's name says who, "host: " or "guest: ", and follows), and every error,
/// so a failed run says where it stopped.
fn narration(line: &decode::Line) -> Option<String> {
    let step = matches!(line.program, Some(Program::Host | Program::Guest))
        .then(|| line.message.strip_prefix(STORY_PREFIX))
        .flatten();
    match step {
        Some(step) => Some(format!("  {step}")),
        None if line.level == "ERROR" => Some(format!("  {line}")),
        None => None,
    }
}

/// How the scenarios mark a narrated step (tests/scenarios/src/scenarios/mmio.rs).
const STORY_PREFIX: &str = "story: ";

#[cfg(test)]
mod tests {
    use super::*;

    fn line(program: Program, level: &'static str, message: &str) -> decode::Line {
        decode::Line {
            program: Some(program),
            time: Some("1.000000".into()),
            level,
            message: message.into(),
        }
    }

    #[test]
    fn narration_shows_the_steps_of_host_and_guest_and_every_error() {
        let step = line(Program::Host, "INFO", "story: host: bound the TDI");
        assert_eq!(narration(&step).as_deref(), Some("  host: bound the TDI"));
        let guest = line(Program::Guest, "INFO", "story: guest: accepted");
        assert_eq!(narration(&guest).as_deref(), Some("  guest: accepted"));
        // Only the host and guest narrate; the rest of an INFO log stays out.
        assert_eq!(narration(&line(Program::Tsm, "INFO", "story: x")), None);
        assert_eq!(narration(&line(Program::Host, "INFO", "teardown: 3")), None);
        let error = line(Program::Host, "ERROR", "scenario 26 failed: VDEV_BIND");
        assert!(narration(&error).is_some_and(|l| l.contains("scenario 26 failed")));
    }
}
