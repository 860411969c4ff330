//! `cargo xtask bench`: what the TSM costs, in one table checked against the budgets in
//! bench/budgets.toml (docs/benchmarks.md).
//!
//! - Instructions per host call: the host payload's `bench` scenario
//!   (tests/host-payload/src/bench.rs) times each call with the guest-visible counter while
//!   QEMU runs with `-icount shift=0` (one instruction per virtual ns) on one CPU, so counter
//!   ticks are instructions up to a scale the scenario calibrates with a loop of known length.
//! - Translation costs: the tsm-core criterion bench `translate` (host ns and table reads).
//! - Image size and static RAM of the release TSM: llvm-size and llvm-nm of the ELF, the TSM
//!   memory its boot banner reports; DRAM-proportional memory from two boots with different
//!   DRAM sizes.
//! - Instructions from reset to the host's first call: the host's first log timestamp.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tsm_scenarios::id;

use crate::arch::Arch;
use crate::decode::{Line, Program};
use crate::images::{self, Images};
use crate::outcome::Outcome;
use crate::qemu::{self, RunSpec};
use crate::scenarios::Variant;
use crate::workspace::{Workspace, show};

/// The images' defmt filter for the bench (unless DEFMT_LOG is set): without `debug`, whose
/// per-call log line (a UART write of the TSM's, thousands of instructions) would otherwise be
/// most of what each call costs, and without the guest's lines (its payload, `tsm_guest`, and
/// the guest scripts, `tsm_scenarios::guest`), so the VCPU_RUN figures' guests make no
/// G_CONSOLE_WRITE besides the refused ones they are timed for.
pub const BENCH_DEFMT_LOG: &str = "info,tsm_guest=off,tsm_scenarios::guest=off";
/// Generous: the bench carries 8 full binds and unbinds under icount on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Instructions per virtual µs at `-icount shift=0`.
const INSNS_PER_US: f64 = 1000.0;
/// DRAM of the normal QEMU line (xtask/src/arch.rs) and of the second boot, in MiB.
const DRAM_MIB: u64 = 512;
/// The second boot's DRAM: smaller than the first, so that the difference is what the TSM takes
/// in proportion to DRAM.
const DRAM2_MIB: u64 = 256;
/// The QEMU options the call figures are taken with: icount makes the counter count
/// instructions; one CPU, because with icount all CPUs share one instruction clock and a second
/// CPU spinning in its idle loop would be counted too.
const ICOUNT: [&str; 4] = ["-icount", "shift=0,sleep=off", "-smp", "1"];
/// The host calls, in table order: (scenario name, figure key, label).
const CALLS: [(&str, &str, &str); 18] = [
    (
        "floor_unknown_fid",
        "floor",
        "empty gate round trip (unknown FID, refused NotSupported)",
    ),
    ("version", "version", "VERSION"),
    ("granule_delegate", "delegate", "GRANULE_DELEGATE"),
    ("granule_undelegate", "undelegate", "GRANULE_UNDELEGATE"),
    (
        "tvm_create",
        "tvm_create",
        "TVM_CREATE (peer: TF-RMM REALM_CREATE 210686)",
    ),
    (
        "vcpu_create",
        "vcpu_create",
        "VCPU_CREATE (peer: TF-RMM REC_CREATE 27978)",
    ),
    (
        "vcpu_destroy",
        "vcpu_destroy",
        "VCPU_DESTROY (peer: TF-RMM REC_DESTROY 2555)",
    ),
    (
        "tvm_destroy",
        "tvm_destroy",
        "TVM_DESTROY, root table only (peer: TF-RMM REALM_DESTROY 1872)",
    ),
    ("vdev_create", "vdev_create", "VDEV_CREATE"),
    (
        "vdev_bind_tsm_part",
        "vdev_bind",
        "VDEV_BIND to its first NeedsDeviceIo (no device I/O)",
    ),
    (
        "vdev_bind_whole",
        "vdev_bind_whole",
        "the whole bind: VDEV_BIND and each COMMUNICATE of it (the device's side excluded)",
    ),
    (
        "vdev_dma_table_root",
        "vdev_dma_table_root",
        "VDEV_DMA_TABLE, the root (attach + refresh of 66 private pages, T=0 view)",
    ),
    (
        "vdev_dma_table",
        "vdev_dma_table",
        "VDEV_DMA_TABLE, a second table (refresh of 66 private pages, T=0 view)",
    ),
    (
        "vdev_mmio_map",
        "vdev_mmio_map",
        "VDEV_MMIO_MAP of one edu BAR0 page (report check, host TLB invalidation)",
    ),
    (
        "vdev_mmio_unmap",
        "vdev_mmio_unmap",
        "VDEV_MMIO_UNMAP (TVM TLB invalidation, page back to the host)",
    ),
    (
        "vcpu_run_minimal_guest",
        "vcpu_run",
        "VCPU_RUN of a minimal guest (start-up, G_VERSION, G_EXIT)",
    ),
    (
        "pdev_connect_spdm",
        "pdev_connect_spdm",
        "PDEV_CONNECT with SPDM: all its calls summed (device's work excluded)",
    ),
    (
        "vdev_bind_spdm",
        "vdev_bind_spdm",
        "VDEV_BIND in an SPDM session: all its calls summed (device's work excluded)",
    ),
];

pub struct Options {
    pub arches: Vec<Arch>,
    /// Exit non-zero when a figure is over budget.
    pub strict: bool,
    /// Criterion's `--quick`.
    pub quick: bool,
}

/// One measured figure.
#[derive(Debug, Clone)]
struct Figure {
    arch: Option<Arch>,
    /// Budget key (bench/budgets.toml) and JSON name.
    key: String,
    label: String,
    /// The value, or why there is none.
    value: Result<f64, String>,
    unit: &'static str,
    /// Calls only: the value over the floor's.
    ratio: Option<f64>,
}

/// A budget verdict for one figure.
struct Verdict {
    /// The budgets as the table shows them.
    budget: Option<String>,
    /// The budget of the value, and of its ratio to the floor.
    max: Option<f64>,
    max_ratio: Option<f64>,
    over: bool,
}

/// Runs everything; `Ok(false)` only with `--strict` and a figure over budget, or when a
/// measurement run failed.
pub fn bench(ws: &Workspace, opts: &Options) -> Result<bool, String> {
    let budgets_path = ws.root.join("bench/budgets.toml");
    let budgets = parse_budgets(
        &std::fs::read_to_string(&budgets_path)
            .map_err(|e| format!("cannot read {}: {e}", budgets_path.display()))?,
    )?;
    if std::env::var_os("DEFMT_LOG").is_none() {
        // SAFETY: xtask has started no thread yet (the QEMU runs that use threads come
        // later), so nothing reads the environment concurrently.
        unsafe { std::env::set_var("DEFMT_LOG", BENCH_DEFMT_LOG) };
    }
    let mut figures = Vec::new();
    let mut runs_ok = true;
    for &arch in &opts.arches {
        let images = images::build(ws, arch, true, Variant::Normal)?;
        let lines = boot(ws, arch, &images, id::BENCH, &ICOUNT, "bench")?;
        runs_ok &= lines.is_some();
        let lines = lines.unwrap_or_default();
        figures.extend(call_figures(arch, &lines));
        figures.extend(size_figures(ws, arch, &images.tsm)?);
        // Same CPU count as the first boot: each CPU's stack is carve-out too.
        let second = [
            "-m".to_string(),
            format!("{DRAM2_MIB}M"),
            "-smp".into(),
            "1".into(),
        ];
        let second: Vec<&str> = second.iter().map(String::as_str).collect();
        let lines2 = boot(ws, arch, &images, id::BOOT, &second, "bench-dram2")?;
        runs_ok &= lines2.is_some();
        figures.extend(memory_figures(arch, &lines, &lines2.unwrap_or_default()));
    }
    figures.extend(translate_figures(ws, opts.quick)?);

    let verdicts: Vec<Verdict> = figures.iter().map(|f| judge(f, &budgets)).collect();
    print!("{}", table(&figures, &verdicts));
    let json_path = ws.xtask_dir().join("bench.json");
    std::fs::create_dir_all(ws.xtask_dir())
        .map_err(|e| format!("cannot create {}: {e}", ws.xtask_dir().display()))?;
    std::fs::write(&json_path, json(&figures, &verdicts))
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    let over: Vec<&str> = figures
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.over)
        .map(|(f, _)| f.key.as_str())
        .collect();
    println!(
        "{} figures, {} over budget; JSON: {}",
        figures.len(),
        over.len(),
        json_path.display()
    );
    if !runs_ok {
        eprintln!("xtask: a measurement run failed (see its log under target/xtask/logs)");
    }
    Ok(runs_ok && (!opts.strict || over.is_empty()))
}

/// Boots `scenario` with `extra` QEMU options; the decoded lines, or `None` if the run did not
/// pass (the figures it should have given are then reported as missing, never made up).
fn boot(
    ws: &Workspace,
    arch: Arch,
    images: &Images,
    scenario: u32,
    extra: &[&str],
    label: &str,
) -> Result<Option<Vec<Line>>, String> {
    let spec = RunSpec {
        arch,
        images,
        scenario_id: scenario,
        cpus: 2,
        param: 0,
        timeout: Some(TIMEOUT),
        gdb_server: false,
        own_process_group: false,
        label,
        linux: false,
    };
    eprintln!("== {} {label}: QEMU with {}", arch.name(), extra.join(" "));
    let report = qemu::run_with(ws, &spec, extra, None, &mut |_| {})?;
    eprintln!(
        "== {} {label}: {} in {:.1} s; log: {}",
        arch.name(),
        report.outcome,
        report.wall.as_secs_f64(),
        report.log_path.display()
    );
    Ok((report.outcome == Outcome::Pass).then_some(report.lines))
}

/// Messages of one program's lines.
fn messages(lines: &[Line], program: Program) -> impl Iterator<Item = &str> {
    lines
        .iter()
        .filter(move |l| l.program == Some(program))
        .map(|l| l.message.as_str())
}

/// `key=<u64>` out of a `bench ...` message.
fn field(message: &str, key: &str) -> Option<u64> {
    message.split_whitespace().find_map(|w| {
        w.strip_prefix(key)?
            .strip_prefix('=')?
            .trim_end_matches(',')
            .parse()
            .ok()
    })
}

/// What the `bench` scenario's lines say: the tick scale, the per-sample overhead, each
/// call's ticks, the figures it could not take and the first host timestamp.
#[derive(Debug, Default, PartialEq)]
struct BenchLog {
    insns_per_tick: Option<f64>,
    overhead_ticks: Option<f64>,
    /// name → (samples, ticks)
    calls: BTreeMap<String, (u64, u64)>,
    /// Guest calls timed by the guest: name → (samples, ticks, ticks of as many empty samples).
    guest_calls: BTreeMap<String, (u64, u64, u64)>,
    /// Refused guest calls the second kind of VCPU_RUN sample makes on top of the first.
    refused_guest_calls: Option<u64>,
    /// COMMUNICATE round trips of one whole bind.
    bind_round_trips: Option<u64>,
}

fn parse_bench_log<'a>(host: impl Iterator<Item = &'a str>) -> BenchLog {
    let mut log = BenchLog::default();
    for m in host {
        if let Some(rest) = m.strip_prefix("bench calib ") {
            if let (Some(insns), Some(ticks)) = (field(rest, "loop_insns"), field(rest, "ticks"))
                && ticks > 0
            {
                log.insns_per_tick = Some(insns as f64 / ticks as f64);
            }
        } else if let Some(rest) = m.strip_prefix("bench overhead ") {
            if let (Some(n), Some(ticks)) = (field(rest, "samples"), field(rest, "ticks"))
                && n > 0
            {
                log.overhead_ticks = Some(ticks as f64 / n as f64);
            }
        } else if let Some(rest) = m.strip_prefix("bench call ") {
            if let (Some(name), Some(n), Some(ticks)) = (
                rest.split_whitespace().next(),
                field(rest, "samples"),
                field(rest, "ticks"),
            ) {
                log.calls.insert(name.to_string(), (n, ticks));
            }
        } else if let Some(rest) = m.strip_prefix("bench guest ") {
            if let (Some(name), Some(n), Some(ticks), Some(empty)) = (
                rest.split_whitespace().next(),
                field(rest, "samples"),
                field(rest, "ticks"),
                field(rest, "overhead_ticks"),
            ) {
                log.guest_calls.insert(name.to_string(), (n, ticks, empty));
            }
        } else if let Some(rest) = m.strip_prefix("bench ") {
            if let Some(n) = field(rest, "refused_guest_calls") {
                log.refused_guest_calls = Some(n);
            } else if let Some(n) = field(rest, "vdev_bind_round_trips") {
                log.bind_round_trips = Some(n);
            }
        }
    }
    log
}

/// Seconds (the decoder's rendering of a `{=u64:us}` timestamp) as µs.
fn time_us(time: &str) -> Option<f64> {
    time.trim().parse::<f64>().ok().map(|s| s * 1e6)
}

fn call_figures(arch: Arch, lines: &[Line]) -> Vec<Figure> {
    let log = parse_bench_log(messages(lines, Program::Host));
    let per_call = |name: &str| -> Result<f64, String> {
        let scale = log
            .insns_per_tick
            .ok_or("no calibration line (bench run failed?)")?;
        let overhead = log.overhead_ticks.ok_or("no overhead line")?;
        let &(n, ticks) = log
            .calls
            .get(name)
            .ok_or_else(|| format!("no `bench call {name}` line (bench run failed?)"))?;
        if n == 0 {
            return Err("0 samples".into());
        }
        Ok((ticks as f64 / n as f64 - overhead).max(0.0) * scale)
    };
    let floor = per_call(CALLS[0].0).ok();
    let mut out = Vec::new();
    for (name, key, label) in CALLS {
        let value = per_call(name);
        let ratio = match (&value, floor) {
            (Ok(v), Some(f)) if f > 0.0 => Some(v / f),
            _ => None,
        };
        out.push(Figure {
            arch: Some(arch),
            key: key.to_string(),
            label: label.to_string(),
            value,
            unit: "insns",
            ratio,
        });
    }
    // Two kinds of VCPU_RUN that differ only by the refused guest calls of the second.
    let refused = match (
        per_call("vcpu_run_refused_guest_calls"),
        per_call("vcpu_run_minimal_guest"),
        log.refused_guest_calls,
    ) {
        (Ok(with), Ok(without), Some(n)) if n > 0 => Ok((with - without) / n as f64),
        (Err(e), _, _) | (_, Err(e), _) => Err(e),
        _ => Err("no `bench refused_guest_calls` line".into()),
    };
    let ratio = match (&refused, floor) {
        (Ok(v), Some(f)) if f > 0.0 => Some(v / f),
        _ => None,
    };
    out.push(Figure {
        arch: Some(arch),
        key: "guest_call_refused".into(),
        label: "guest call refused after its argument checks (G_CONSOLE_WRITE, G_VDEV_INFO; from two VCPU_RUN kinds)".into(),
        value: refused,
        unit: "insns",
        ratio,
    });
    // Timed inside the guest, with the guest's own empty samples as the overhead.
    let guest = match (log.insns_per_tick, log.guest_calls.get("g_version")) {
        (Some(scale), Some(&(n, ticks, empty))) if n > 0 => {
            Ok(((ticks as f64 - empty as f64) / n as f64).max(0.0) * scale)
        }
        (None, _) => Err("no calibration line (bench run failed?)".into()),
        (Some(_), Some(_)) => Err("0 samples".into()),
        (Some(_), None) => Err("no `bench guest g_version` line (bench run failed?)".into()),
    };
    let ratio = match (&guest, floor) {
        (Ok(v), Some(f)) if f > 0.0 => Some(v / f),
        _ => None,
    };
    out.push(Figure {
        arch: Some(arch),
        key: "guest_call".into(),
        label: "guest call (G_VERSION from a TVM vCPU, timed in the guest)".into(),
        value: guest,
        unit: "insns",
        ratio,
    });
    out.push(Figure {
        arch: Some(arch),
        key: "vdev_bind_round_trips".into(),
        label: "COMMUNICATE round trips of the whole bind".into(),
        value: log
            .bind_round_trips
            .map(|n| n as f64)
            .ok_or_else(|| "no `bench vdev_bind_round_trips` line".to_string()),
        unit: "round trips",
        ratio: None,
    });
    out.push(Figure {
        arch: Some(arch),
        key: "counter_scale".into(),
        label: "counter scale (calibrated: loop of known length)".into(),
        value: log
            .insns_per_tick
            .ok_or_else(|| "no calibration line".to_string()),
        unit: "insns/tick",
        ratio: None,
    });
    let first = |p: Program| {
        lines
            .iter()
            .find(|l| l.program == Some(p))
            .and_then(|l| l.time.as_deref())
            .and_then(time_us)
    };
    let first_host = first(Program::Host);
    out.push(Figure {
        arch: Some(arch),
        key: "reset_to_host".into(),
        label: "reset to the host's first call (its first log timestamp)".into(),
        value: first_host
            .map(|us| us * INSNS_PER_US)
            .ok_or_else(|| "no timestamped host line".into()),
        unit: "insns",
        ratio: None,
    });
    // From the TSM's first instruction, where the TSM says when that was (x86_64, whose reset
    // figure includes SeaBIOS; aarch64's starts at the TSM's first instruction).
    if let Some(entered) = messages(lines, Program::Tsm).find_map(entered_us) {
        out.push(Figure {
            arch: Some(arch),
            key: "tsm_entry_to_host".into(),
            label: "the TSM's first instruction to the host's first call".into(),
            value: first_host
                .map(|h| (h - entered).max(0.0) * INSNS_PER_US)
                .ok_or_else(|| "no timestamped host line".into()),
            unit: "insns",
            ratio: None,
        });
    }
    // Without what runs before the TSM (x86_64: SeaBIOS loads the PVH kernel) and the TSM's
    // work before its logger is up.
    out.push(Figure {
        arch: Some(arch),
        key: "tsm_log_to_host".into(),
        label: "the TSM's first log line to the host's first call".into(),
        value: match (first(Program::Tsm), first_host) {
            (Some(t), Some(h)) => Ok((h - t).max(0.0) * INSNS_PER_US),
            _ => Err("no timestamped TSM or host line".into()),
        },
        unit: "insns",
        ratio: None,
    });
    out
}

/// `0x<a>..0x<b>` right after `marker` in `message`.
fn range_after(message: &str, marker: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let word = rest.split([' ', ',', '(']).next()?;
    let (a, b) = word.split_once("..")?;
    let hex = |s: &str| u64::from_str_radix(s.trim().strip_prefix("0x")?, 16).ok();
    Some((hex(a)?, hex(b)?))
}

/// The TSM memory (image + carve-out) its boot banner reports, in bytes.
fn tsm_memory(lines: &[Line]) -> Option<u64> {
    messages(lines, Program::Tsm).find_map(|m| {
        let (a, b) = range_after(m, "TSM memory ").or_else(|| range_after(m, ", TSM "))?;
        b.checked_sub(a)
    })
}

fn memory_figures(arch: Arch, lines: &[Line], lines2: &[Line]) -> Vec<Figure> {
    let total = tsm_memory(lines);
    let total2 = tsm_memory(lines2);
    let per_gib = match (total, total2) {
        // A TSM that reserves a fixed amount whatever the DRAM (a static descriptor array sized
        // for the most DRAM it supports) has no per-GiB figure: 0 would read as "free".
        (Some(a), Some(b)) if a == b => Err(format!(
            "fixed: the TSM memory is {} KiB with {DRAM2_MIB} and with {DRAM_MIB} MiB of DRAM (see granule_table_static)",
            a / 1024
        )),
        (Some(a), Some(b)) => {
            Ok(a.saturating_sub(b) as f64 * 1024.0 / (DRAM_MIB - DRAM2_MIB) as f64)
        }
        _ => Err("a boot banner with the TSM memory range is missing".to_string()),
    };
    let granules_per_gib = (1u64 << 30) as f64 / 4096.0;
    vec![
        Figure {
            arch: Some(arch),
            key: "tsm_memory".into(),
            label: format!("TSM memory: image + carve-out ({DRAM_MIB} MiB DRAM)"),
            value: total
                .map(|t| t as f64 / 1024.0)
                .ok_or_else(|| "no banner".into()),
            unit: "KiB",
            ratio: None,
        },
        Figure {
            arch: Some(arch),
            key: "dram_tracking_per_gib".into(),
            label: format!(
                "DRAM-proportional TSM memory per GiB (boots at {DRAM_MIB} and {DRAM2_MIB} MiB)"
            ),
            value: per_gib.clone().map(|b| b / 1024.0),
            unit: "KiB/GiB",
            ratio: None,
        },
        Figure {
            arch: Some(arch),
            key: "bytes_per_granule".into(),
            label: "  the same per 4 KiB granule".into(),
            value: per_gib.map(|b| b / granules_per_gib),
            unit: "B/granule",
            ratio: None,
        },
        Figure {
            arch: Some(arch),
            key: "stack_high_water".into(),
            label: "deepest TSM stack use of the bench run (painted stacks, logged at power-off)"
                .into(),
            value: stack_high_water(lines)
                .map(|b| b as f64 / 1024.0)
                .ok_or_else(|| "no stack high-water line".into()),
            unit: "KiB",
            ratio: None,
        },
    ]
}

/// The `entered at <µs> us` of the TSM's banner.
fn entered_us(message: &str) -> Option<f64> {
    let rest = &message[message.find("entered at ")? + 11..];
    rest.split(' ').next()?.parse().ok()
}

/// The most bytes any CPU's stack used, from the TSM's `stack high-water: CPU n used X of Y
/// bytes` lines.
fn stack_high_water(lines: &[Line]) -> Option<u64> {
    messages(lines, Program::Tsm)
        .filter_map(|m| {
            let rest = &m[m.find("stack high-water: ")?..];
            let used = &rest[rest.find(" used ")? + 6..];
            used.split(' ').next()?.parse::<u64>().ok()
        })
        .max()
}

fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed ({})", show(&cmd), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `llvm-size -A` rows: section → bytes.
fn parse_sections(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let size = w.next()?.parse().ok()?;
            name.starts_with('.').then(|| (name.to_string(), size))
        })
        .collect()
}

/// `llvm-nm` rows: symbol → address.
fn parse_symbols(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let addr = u64::from_str_radix(w.next()?, 16).ok()?;
            let _kind = w.next()?;
            Some((w.next()?.to_string(), addr))
        })
        .collect()
}

fn size_figures(ws: &Workspace, arch: Arch, elf: &Path) -> Result<Vec<Figure>, String> {
    let mut size = Command::new(images::llvm_tool(ws, "size")?);
    size.args(["-A", "-d"]).arg(elf);
    let sections = parse_sections(&output(size)?);
    let mut nm = Command::new(images::llvm_tool(ws, "nm")?);
    nm.arg(elf);
    let symbols = parse_symbols(&output(nm)?);
    let sum = |prefixes: &[&str]| -> u64 {
        sections
            .iter()
            .filter(|(n, _)| prefixes.contains(&n.as_str()))
            .map(|(_, s)| *s)
            .sum()
    };
    // The TSM's own .bss, without the carve-out that x86_64's link script places inside the
    // section from `__boot_pml4` on (aarch64 has its own .carveout section).
    let bss = match (
        symbols.get("__bss_start"),
        symbols.get("__boot_pml4"),
        symbols.get("__bss_end"),
    ) {
        (Some(start), Some(carve), _) => Ok(carve.saturating_sub(*start)),
        (Some(start), None, Some(end)) => Ok(end.saturating_sub(*start)),
        _ => Err("no __bss_start/__bss_end symbols".to_string()),
    };
    let kib = |b: u64| b as f64 / 1024.0;
    let mut sized = Command::new(images::llvm_tool(ws, "nm")?);
    sized.args(["-S", "-C"]).arg(elf);
    let sized = output(sized)?;
    let descriptors = static_descriptors(&sized);
    let fig = |key: &str, label: &str, value: Result<f64, String>| Figure {
        arch: Some(arch),
        key: key.into(),
        label: label.into(),
        value,
        unit: "KiB",
        ratio: None,
    };
    Ok(vec![
        fig(
            "text",
            "image .text",
            Ok(kib(sum(&[".text", ".text.boot"]))),
        ),
        fig(
            "rodata",
            "image .rodata",
            Ok(kib(sum(&[".rodata", ".rela.dyn"]))),
        ),
        fig("data", "image .data", Ok(kib(sum(&[".data"])))),
        fig("bss", "image .bss (without the carve-out)", bss.map(kib)),
        fig(
            "granule_table_static",
            "  of which a static granule-descriptor array",
            Ok(kib(descriptors)),
        ),
        fig(
            "spdm_text",
            "  .text of SPDM and its crypto crates (llvm-nm sizes)",
            Ok(kib(spdm_text(&sized))),
        ),
    ])
}

/// The crates SPDM brought into the image: the requester and its codec, the RustCrypto
/// crates (sha2 also hashes the TDISP report, a few hundred bytes of it).
const SPDM_CRATES: [&str; 19] = [
    "tsm_spdm::",
    "tsm_abi::spdm::",
    "tsm_spdm_aead::",
    "p384::",
    "primeorder::",
    "elliptic_curve::",
    "crypto_bigint::",
    "ecdsa::",
    "sha2::",
    "aes::",
    "aes_gcm::",
    "ghash::",
    "polyval::",
    "hmac::",
    "der::",
    "spki::",
    "digest::",
    "cipher::",
    "subtle::",
];

/// Bytes of code symbols (`llvm-nm -S -C` kinds t, T, W) of [`SPDM_CRATES`], by the demangled
/// name's path (a generic instantiated for a crate's type counts as that crate's).
fn spdm_text(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_addr, size, kind) = (w.next()?, w.next()?, w.next()?);
            let name: String = w.collect::<Vec<_>>().join(" ");
            let code = matches!(kind, "t" | "T" | "W" | "w");
            let spdm = SPDM_CRATES.iter().any(|c| name.contains(c));
            (code && spdm)
                .then(|| u64::from_str_radix(size, 16).ok())
                .flatten()
        })
        .sum()
}

/// Bytes of static symbols named `GRANULE_DESCRIPTORS` (`llvm-nm -S -C` rows: address, size,
/// kind, name): a granule table reserved at link time rather than sized from DRAM at boot.
fn static_descriptors(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_addr, size, _kind) = (w.next()?, w.next()?, w.next()?);
            let name = w.next()?;
            name.contains("GRANULE_DESCRIPTORS")
                .then(|| u64::from_str_radix(size, 16).ok())
                .flatten()
        })
        .sum()
}

/// Table reads of one translation path: (path, [IOTLB hit, miss cold, miss warm, no cache]).
type Reads = (String, [u64; 4]);

/// Criterion's results: (benchmark name, median ns), and the bench's table-read counts.
fn parse_criterion(stdout: &str) -> (Vec<(String, f64)>, Vec<Reads>) {
    let mut times = Vec::new();
    let mut reads = Vec::new();
    let mut name: Option<String> = None;
    for line in stdout.lines() {
        if let Some((who, counts)) = line.split_once(": IOTLB hit") {
            // "  two-stage Arm : IOTLB hit 0, miss ... cold 24 / warm 5, no cache at all 24"
            let n: Vec<u64> = counts
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            if let [hit, cold, warm, uncached] = n[..] {
                reads.push((who.trim().to_string(), [hit, cold, warm, uncached]));
            }
            continue;
        }
        if let Some((before, after)) = line.split_once("time:") {
            let before = before.trim();
            let bench = if before.is_empty() {
                name.take()
            } else {
                Some(before.to_string())
            };
            let mid = after
                .trim()
                .trim_start_matches('[')
                .split_whitespace()
                .collect::<Vec<_>>();
            // [low unit mid unit high unit]
            if let (Some(bench), Some(v), Some(unit)) = (bench, mid.get(2), mid.get(3)) {
                let scale = match *unit {
                    "ps" => 1e-3,
                    "ns" => 1.0,
                    "µs" | "us" => 1e3,
                    "ms" => 1e6,
                    _ => f64::NAN,
                };
                if let Ok(v) = v.parse::<f64>() {
                    times.push((bench, v * scale));
                }
            }
            continue;
        }
        let t = line.trim_end();
        if !t.is_empty()
            && !t.starts_with(char::is_whitespace)
            && !t.starts_with("Benchmarking")
            && !t.starts_with("Found")
            && !t.starts_with("table reads")
        {
            name = Some(t.to_string());
        }
    }
    (times, reads)
}

/// Lower-case words joined by `_`: a budget key from a benchmark name.
fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('_') && !s.is_empty() {
            s.push('_');
        }
    }
    s.trim_end_matches('_').to_string()
}

fn translate_figures(ws: &Workspace, quick: bool) -> Result<Vec<Figure>, String> {
    let mut cmd = ws.cargo();
    cmd.args(["bench", "-p", "tsm-core", "--bench", "translate"]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    eprintln!("$ {}", show(&cmd));
    let stdout = output(cmd)?;
    let (times, reads) = parse_criterion(&stdout);
    if times.is_empty() {
        return Err("criterion printed no `time:` line for the translate bench".into());
    }
    let mut out = Vec::new();
    for (name, ns) in times {
        out.push(Figure {
            arch: None,
            key: format!("{}_ns", slug(&name)),
            label: format!("translate: {name}"),
            value: Ok(ns),
            unit: "ns (host)",
            ratio: None,
        });
    }
    for (who, [hit, cold, warm, uncached]) in reads {
        for (what, n) in [
            ("IOTLB hit", hit),
            ("miss, caches cold", cold),
            ("miss, caches warm", warm),
            ("no cache", uncached),
        ] {
            out.push(Figure {
                arch: None,
                key: format!("reads_{}_{}", slug(&who), slug(what)),
                label: format!("table reads: {who}, {what}"),
                value: Ok(n as f64),
                unit: "reads",
                ratio: None,
            });
        }
    }
    Ok(out)
}

/// `key = number` lines (TOML subset; `#` comments and `[section]` headers ignored).
fn parse_budgets(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('[') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("bench/budgets.toml line {}: not `key = number`", i + 1))?;
        let v: f64 = v.trim().replace('_', "").parse().map_err(|_| {
            format!(
                "bench/budgets.toml line {}: {:?} is not a number",
                i + 1,
                v.trim()
            )
        })?;
        out.insert(k.trim().trim_matches('"').to_string(), v);
    }
    Ok(out)
}

/// Checks a figure against `<arch>.<key>` (or `<key>`) and, for calls, `<key>_ratio`.
fn judge(f: &Figure, budgets: &BTreeMap<String, f64>) -> Verdict {
    let find = |key: &str| {
        f.arch
            .and_then(|a| budgets.get(&format!("{}.{key}", a.name())))
            .or_else(|| budgets.get(key))
            .copied()
    };
    let max = find(&f.key);
    let max_ratio = find(&format!("{}_ratio", f.key));
    let mut parts = Vec::new();
    if let Some(b) = max {
        parts.push(format!("≤ {}", num(b)));
    }
    if let Some(b) = max_ratio {
        parts.push(format!("≤ {b}×"));
    }
    let over = max.is_some_and(|b| f.value.as_ref().is_ok_and(|v| *v > b))
        || max_ratio.is_some_and(|b| f.ratio.is_some_and(|r| exceeds(r, b)));
    Verdict {
        budget: (!parts.is_empty()).then(|| parts.join(", ")),
        max,
        max_ratio,
        over,
    }
}

/// `ratio > budget`, but a ratio equal to the budget in exact arithmetic is within it: two
/// counts scaled by the same calibration factor (192 / 160 against 1.2) divide to a double one
/// ulp off the budget's.
fn exceeds(ratio: f64, budget: f64) -> bool {
    ratio > budget * (1.0 + 1e-9)
}

fn num(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn table(figures: &[Figure], verdicts: &[Verdict]) -> String {
    let mut rows = vec![[
        "arch".to_string(),
        "figure".into(),
        "key".into(),
        "value".into(),
        "unit".into(),
        "× floor".into(),
        "budget".into(),
        "".into(),
    ]];
    for (f, v) in figures.iter().zip(verdicts) {
        rows.push([
            f.arch.map_or("host", Arch::name).to_string(),
            f.label.clone(),
            f.key.clone(),
            match &f.value {
                Ok(x) => num(*x),
                Err(why) => format!("n/a ({why})"),
            },
            f.unit.to_string(),
            f.ratio.map_or(String::new(), |r| format!("{r:.2}")),
            v.budget.clone().unwrap_or_default(),
            if v.over { "OVER".into() } else { String::new() },
        ]);
    }
    // Markdown, so the table pastes into docs/benchmarks.md as it is.
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for (i, r) in rows.iter().enumerate() {
        s.push('|');
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(s, " {cell:<w$} |", w = widths[c]);
        }
        s.push('\n');
        if i == 0 {
            s.push('|');
            for w in &widths {
                let _ = write!(s, "{}|", "-".repeat(w + 2));
            }
            s.push('\n');
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json(figures: &[Figure], verdicts: &[Verdict]) -> String {
    let mut s = String::from("{\n  \"figures\": [\n");
    for (i, (f, v)) in figures.iter().zip(verdicts).enumerate() {
        let _ = writeln!(
            s,
            "    {{\"arch\": {}, \"key\": {}, \"label\": {}, \"value\": {}, \"unit\": {}, \"ratio_to_floor\": {}, \"na\": {}, \"budget\": {}, \"budget_max\": {}, \"budget_max_ratio\": {}, \"over_budget\": {}}}{}",
            f.arch.map_or("null".into(), |a| json_str(a.name())),
            json_str(&f.key),
            json_str(&f.label),
            f.value.as_ref().map_or("null".into(), |x| json_num(*x)),
            json_str(f.unit),
            f.ratio.map_or("null".into(), json_num),
            f.value
                .as_ref()
                .err()
                .map_or("null".into(), |w| json_str(w)),
            v.budget.as_deref().map_or("null".into(), json_str),
            v.max.map_or("null".into(), json_num),
            v.max_ratio.map_or("null".into(), json_num),
            v.over,
            if i + 1 < figures.len() { "," } else { "" }
        );
    }
    s.push_str("  ]\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_code_of_the_spdm_crates_only() {
        let nm = "\
0000000000401000 0000000000000100 T tsm_spdm::requester::Requester::respond
0000000000401100 0000000000000020 t <p384::arithmetic::field::FieldElement as core::ops::Mul>::mul
0000000000401200 0000000000000040 T tsm_core::dispatch::dispatch
0000000000501000 0000000000000800 r p384::TABLE
0000000000601000 0000000000000008 t sha2::sha512::compress512
";
        assert_eq!(spdm_text(nm), 0x100 + 0x20 + 0x8);
    }

    #[test]
    fn parses_the_bench_lines() {
        let log = parse_bench_log(
            [
                "bench start counter=5",
                "bench calib loop_insns=2000000 ticks=125000",
                "bench overhead samples=4 ticks=8",
                "bench call version samples=256 ticks=5120",
                "bench refused_guest_calls=4",
                "bench vdev_bind_round_trips=9",
                "bench guest g_version samples=256 ticks=9000 overhead_ticks=512",
            ]
            .into_iter(),
        );
        assert_eq!(log.bind_round_trips, Some(9));
        assert_eq!(log.insns_per_tick, Some(16.0));
        assert_eq!(log.overhead_ticks, Some(2.0));
        assert_eq!(log.calls.get("version"), Some(&(256, 5120)));
        assert_eq!(log.refused_guest_calls, Some(4));
        assert_eq!(log.guest_calls.get("g_version"), Some(&(256, 9000, 512)));
    }

    #[test]
    fn per_call_subtracts_overhead_and_scales() {
        let line = |m: &str| Line {
            program: Some(Program::Host),
            time: Some("0.001500".into()),
            level: "INFO",
            message: m.into(),
        };
        let lines = [
            line("bench calib loop_insns=200 ticks=100"),
            line("bench overhead samples=10 ticks=20"),
            line("bench call floor_unknown_fid samples=10 ticks=1020"),
            line("bench call version samples=10 ticks=1520"),
            line("bench call vcpu_run_minimal_guest samples=2 ticks=1004"),
            line("bench call vcpu_run_refused_guest_calls samples=2 ticks=1804"),
            line("bench refused_guest_calls=4"),
            line("bench guest g_version samples=4 ticks=1208 overhead_ticks=8"),
        ];
        let f = call_figures(Arch::Aarch64, &lines);
        // (1020/10 - 2) × 2 = 200; (1520/10 - 2) × 2 = 300.
        assert_eq!(f[0].value, Ok(200.0));
        assert_eq!(f[1].value, Ok(300.0));
        assert_eq!(f[1].ratio, Some(1.5));
        assert!(f[2].value.is_err(), "a missing call is n/a, not zero");
        // ((1804/2 - 2) - (1004/2 - 2)) × 2 / 4 = 200: the floor again.
        let refused = f.iter().find(|f| f.key == "guest_call_refused");
        assert_eq!(
            refused.map(|f| (f.value.clone(), f.ratio)),
            Some((Ok(200.0), Some(1.0)))
        );
        // (1208 - 8) / 4 × 2 = 600, with the guest's own overhead: three floors.
        let guest = f.iter().find(|f| f.key == "guest_call");
        assert_eq!(
            guest.map(|f| (f.value.clone(), f.ratio)),
            Some((Ok(600.0), Some(3.0)))
        );
        let reset = f
            .iter()
            .find(|f| f.key == "reset_to_host")
            .map(|f| f.value.clone());
        assert_eq!(reset, Some(Ok(1_500_000.0)));
    }

    #[test]
    fn reads_when_the_tsm_was_entered() {
        assert_eq!(
            entered_us("TSM 0.1.0 on x86_64 q35 (PVH), TSC 1000 ticks/us, entered at 17011 us"),
            Some(17011.0)
        );
        assert_eq!(entered_us("TSM 0.1.0 on aarch64 EL2, CPU 0"), None);
    }

    #[test]
    fn takes_the_deepest_stack_of_any_cpu() {
        let line = |program, m: &str| Line {
            program: Some(program),
            time: None,
            level: "INFO",
            message: m.into(),
        };
        let lines = [
            line(
                Program::Tsm,
                "stack high-water: CPU 0 used 9216 of 65536 bytes",
            ),
            line(
                Program::Tsm,
                "stack high-water: CPU 1 used 12288 of 65536 bytes",
            ),
            line(
                Program::Host,
                "stack high-water: CPU 2 used 99999 of 65536 bytes",
            ),
            line(Program::Tsm, "stack high-water: CPU 3 used garbage"),
        ];
        assert_eq!(stack_high_water(&lines), Some(12288));
        assert_eq!(stack_high_water(&lines[2..]), None);
    }

    #[test]
    fn reads_the_tsm_memory_of_both_banners() {
        assert_eq!(
            range_after(
                "TSM memory 0x40200000..0x40600000 (4096 KiB)",
                "TSM memory "
            ),
            Some((0x4020_0000, 0x4060_0000))
        );
        assert_eq!(
            range_after(
                "DRAM 0x0..0x20000000, TSM 0x200000..0x900000 (page tables 3/64 pages)",
                ", TSM "
            ),
            Some((0x20_0000, 0x90_0000))
        );
    }

    #[test]
    fn finds_a_static_descriptor_array() {
        let nm = "00000000002273e8 0000000000080000 b tsm_hal::x86_64::layout::GRANULE_DESCRIPTORS::he6\n\
                  0000000000226c40 0000000000000410 b tsm_hal::logger::FRAME::ha6\n";
        assert_eq!(static_descriptors(nm), 0x80000);
        assert_eq!(
            static_descriptors("0000000000226c40 0000000000000410 b FRAME\n"),
            0
        );
    }

    #[test]
    fn parses_criterion_output() {
        let out = "table reads per translation (stage 2 = a 4-level table, 4 reads per lookup):\n  two-stage Arm : IOTLB hit 0, miss with walk and table caches cold 24 / warm 5, no cache at all 24\niotlb hit (two-stage Arm entry)\n                        time:   [49.856 ns 50.065 ns 50.898 ns]\n\nmiss, stage 2 only      time:   [174.04 ns 174.58 ns 176.78 ns]\n";
        let (times, reads) = parse_criterion(out);
        assert_eq!(
            times,
            vec![
                ("iotlb hit (two-stage Arm entry)".to_string(), 50.065),
                ("miss, stage 2 only".to_string(), 174.58)
            ]
        );
        assert_eq!(reads, vec![("two-stage Arm".to_string(), [0, 24, 5, 24])]);
        assert_eq!(
            slug("miss, two-stage Arm, no cache (24-read floor)"),
            "miss_two_stage_arm_no_cache_24_read_floor"
        );
    }

    #[test]
    fn budgets_mark_what_is_over() {
        let b = parse_budgets(
            "# c\n[calls]\nfloor = 400 # why\nversion_ratio = 1.5\naarch64.text = 10\n",
        )
        .unwrap_or_default();
        let fig = |key: &str, value: f64, ratio: Option<f64>| Figure {
            arch: Some(Arch::Aarch64),
            key: key.into(),
            label: String::new(),
            value: Ok(value),
            unit: "",
            ratio,
        };
        assert!(!judge(&fig("floor", 400.0, None), &b).over);
        assert!(judge(&fig("floor", 401.0, None), &b).over);
        assert!(judge(&fig("version", 1.0, Some(1.6)), &b).over);
        assert!(judge(&fig("text", 11.0, None), &b).over);
        assert!(judge(&fig("other", 1e9, None), &b).budget.is_none());
        assert!(parse_budgets("x = y").is_err());
    }

    #[test]
    fn json_holds_values_budgets_and_reasons() {
        let b = parse_budgets("floor = 400\nversion_ratio = 1.5\n").unwrap_or_default();
        let figs = [
            Figure {
                arch: Some(Arch::X86_64),
                key: "floor".into(),
                label: "a \"quoted\" label".into(),
                value: Ok(485.0),
                unit: "insns",
                ratio: Some(1.0),
            },
            Figure {
                arch: None,
                key: "version".into(),
                label: String::new(),
                value: Err("why".into()),
                unit: "insns",
                ratio: None,
            },
        ];
        let v: Vec<Verdict> = figs.iter().map(|f| judge(f, &b)).collect();
        let j = json(&figs, &v);
        assert!(j.contains(
            r#""arch": "x86_64", "key": "floor", "label": "a \"quoted\" label", "value": 485,"#
        ));
        assert!(
            j.contains(r#""budget_max": 400, "budget_max_ratio": null, "over_budget": true},"#)
        );
        assert!(
            j.contains(r#""value": null, "unit": "insns", "ratio_to_floor": null, "na": "why""#)
        );
        assert!(
            j.contains(r#""budget_max": null, "budget_max_ratio": 1.5, "over_budget": false}"#)
        );
    }

    #[test]
    fn a_ratio_equal_to_its_budget_is_within_it() {
        let scale = 0.999_996_5;
        assert!(!exceeds((192.0 * scale) / (160.0 * scale), 1.2));
        assert!(!exceeds(0.6 / 0.5, 1.2));
        assert!(exceeds(193.0 / 160.0, 1.2));
        assert!(exceeds(154.0 / 128.0, 1.2));
    }

    #[test]
    fn the_budgets_file_parses() {
        let text = include_str!("../../bench/budgets.toml");
        let b = parse_budgets(text);
        assert!(b.as_ref().is_ok_and(|b| b.contains_key("floor")), "{b:?}");
    }
}
