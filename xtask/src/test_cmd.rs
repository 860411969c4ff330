//! `cargo xtask test`: the host checks, then every scenario on every arch, two QEMUs at a
//! time, then one summary table.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::images::{self, Images};
use crate::outcome::{self, Outcome};
use crate::scenarios::{Scenario, Variant};
use crate::workspace::{Workspace, show};
use crate::{fuzz, procs, qemu, release_check, spdm_interop};

/// The machine has 2 cores; each QEMU runs one TCG thread per busy vCPU.
const PARALLEL_RUNS: usize = 2;
/// A check running longer is stuck (a deadlocked unit test, say): it is killed with everything
/// it started, so the rest still runs and CI reports it instead of timing out. Generous: a
/// cold `cargo test` compiles every dependency first.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CHECK_POLL: Duration = Duration::from_millis(100);
/// How much of a mismatched run's log is echoed to the console (the whole log is in its file).
const ECHO_LINES: usize = 80;

pub struct Options {
    pub checks: bool,
    pub arches: Vec<Arch>,
    pub scenarios: Vec<&'static Scenario>,
}

struct Row {
    what: String,
    arch: &'static str,
    expected: String,
    result: String,
    ok: bool,
    wall: Duration,
}

struct Job {
    arch: Arch,
    scenario: &'static Scenario,
    images: Images,
}

pub fn test(ws: &Workspace, opts: &Options) -> Result<bool, String> {
    let start = Instant::now();
    let mut rows = Vec::new();
    if opts.checks {
        for (what, arch, mut cmd) in checks(ws) {
            rows.push(check(what, arch, &mut cmd)?);
        }
        // A few seconds per fuzz target, after replaying the checked-in seeds and every saved
        // crash input (docs/assurance.md); the long runs are `cargo xtask fuzz`.
        let t = Instant::now();
        let result = fuzz::smoke(ws);
        if let Err(e) = &result {
            eprintln!("xtask: {e}");
        }
        let ok = matches!(result, Ok(true));
        rows.push(Row {
            what: format!("fuzz smoke ({} targets)", fuzz::TARGETS.len()),
            arch: "host",
            expected: "-".into(),
            result: if ok { "ok".into() } else { "FAILED".into() },
            ok,
            wall: t.elapsed(),
        });
        // The interop hook against the device model over a real TCP socket (docs/design.md,
        // "SPDM interoperability").
        let t = Instant::now();
        let result = spdm_interop::self_test();
        if let Err(e) = &result {
            eprintln!("xtask: {e}");
        }
        let ok = matches!(result, Ok(true));
        rows.push(Row {
            what: "spdm-interop vs device model (TCP)".into(),
            arch: "host",
            expected: "PASS".into(),
            result: if ok { "PASS".into() } else { "FAILED".into() },
            ok,
            wall: t.elapsed(),
        });
    }

    let mut jobs = Vec::new();
    for &arch in &opts.arches {
        let t = Instant::now();
        let mut built: Vec<(Variant, Result<Images, String>)> = Vec::new();
        for variant in Variant::ALL {
            if !opts.scenarios.iter().any(|s| s.variant == variant) {
                continue;
            }
            // The variants reuse the normal build's host payload.
            let normal_failed = built
                .iter()
                .any(|(v, r)| *v == Variant::Normal && r.is_err());
            let result = if normal_failed {
                Err("the normal images did not build".to_string())
            } else {
                images::build(ws, arch, false, variant)
            };
            built.push((variant, result));
        }
        let failed: Vec<&str> = built
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(String::as_str))
            .collect();
        for e in &failed {
            eprintln!("xtask: {e}");
        }
        rows.push(Row {
            what: "build images".into(),
            arch: arch.name(),
            expected: "-".into(),
            result: if failed.is_empty() {
                "built".into()
            } else {
                "FAILED".into()
            },
            ok: failed.is_empty(),
            wall: t.elapsed(),
        });
        if opts.checks
            && let Some((_, Ok(test_build))) = built.iter().find(|(v, _)| *v == Variant::DmaInject)
        {
            let t = Instant::now();
            let result = release_check::check(ws, arch, test_build);
            if let Err(e) = &result {
                eprintln!("xtask: {e}");
            }
            rows.push(Row {
                what: "no TEST_DMA_INJECT in release image".into(),
                arch: arch.name(),
                expected: "absent".into(),
                result: result.clone().unwrap_or_else(|_| "FAILED".into()),
                ok: result.is_ok(),
                wall: t.elapsed(),
            });
        }
        for &scenario in &opts.scenarios {
            match built.iter().find(|(v, _)| *v == scenario.variant) {
                Some((_, Ok(images))) => jobs.push(Job {
                    arch,
                    scenario,
                    images: images.clone(),
                }),
                _ => rows.push(Row {
                    what: scenario.name.into(),
                    arch: arch.name(),
                    expected: scenario.expect.to_string(),
                    result: "NOT BUILT".into(),
                    ok: false,
                    wall: Duration::ZERO,
                }),
            }
        }
    }
    rows.extend(run_all(ws, &jobs));

    print_table(&rows);
    let passed = rows.iter().filter(|r| r.ok).count();
    let failed = rows.len() - passed;
    println!(
        "cargo xtask test took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // The plain closing line CI reads.
    println!("xtask: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The host checks, each one cargo command from the workspace root.
fn checks(ws: &Workspace) -> Vec<(&'static str, &'static str, Command)> {
    let mut list = Vec::new();
    let mut unit = ws.cargo();
    // Every crate's tests run even when one crate's fail, so one report shows them all.
    unit.args(["test", "--no-fail-fast"]);
    list.push(("unit tests", "host", unit));
    // The SPDM tests again through the P-384 memo only the fuzzers build (`crypto-memo`): the
    // handshakes, honest and misbehaving, end as they do without it (tsm-spdm's tests, and the
    // device model's, whose responder has the memo too).
    let mut memo = ws.cargo();
    memo.args([
        "test",
        "-p",
        "tsm-spdm",
        "-p",
        "tsm-device-model",
        "--features",
        "tsm-spdm/crypto-memo,tsm-device-model/crypto-memo",
        "--lib",
    ]);
    list.push(("unit tests (crypto-memo)", "host", memo));
    let mut clippy = ws.cargo();
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    list.push(("clippy", "host", clippy));
    for arch in Arch::ALL {
        // tsm-hal too: its arch modules exist only on the bare-metal targets, so the host
        // clippy run never sees them; the payloads are bare-metal only. The image's crates and
        // the guest payload on the image's target (`Arch::guest_triple`), the other payloads
        // on theirs (the same on x86_64). tsm-hal-boot is x86_64's boot code (empty elsewhere).
        let image = [
            "tsm-hal",
            "tsm-hal-boot",
            "tsm-firmware",
            "tsm-guest-payload",
        ];
        // The Linux driver's binary and its system calls exist only on the payloads' targets.
        let payloads = ["tsm-host-payload", "tsm-linux-driver"];
        let runs: Vec<(&str, Vec<&str>)> = if arch.tsm_triple() == arch.triple() {
            vec![(arch.triple(), [&image[..], &payloads[..]].concat())]
        } else {
            vec![
                (arch.tsm_triple(), image.to_vec()),
                (arch.triple(), payloads.to_vec()),
            ]
        };
        for (triple, crates) in runs {
            let mut clippy = ws.cargo();
            clippy.arg("clippy");
            for c in &crates {
                clippy.args(["-p", c]);
            }
            if crates.contains(&"tsm-linux-driver") {
                clippy.args(["--features", "tsm-linux-driver/linux-bin"]);
            }
            clippy.args(["--target", triple, "--", "-D", "warnings"]);
            list.push(("clippy", arch.name(), clippy));
        }
    }
    let mut fmt = ws.cargo();
    fmt.args(["fmt", "--all", "--check"]);
    list.push(("rustfmt", "all", fmt));
    list
}

fn check(what: &'static str, arch: &'static str, cmd: &mut Command) -> Result<Row, String> {
    eprintln!("\n$ {}", show(cmd));
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for `{}`: {e}", show(cmd)))?
        {
            break Some(status);
        }
        if t.elapsed() >= CHECK_TIMEOUT {
            procs::kill_tree(child.id());
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(CHECK_POLL);
    };
    let (result, ok) = match status {
        Some(s) if s.success() => ("ok".to_string(), true),
        Some(s) => (format!("FAILED ({s})"), false),
        None => (
            format!("HUNG (killed after {} s)", CHECK_TIMEOUT.as_secs()),
            false,
        ),
    };
    if !ok {
        eprintln!("xtask: {what} ({arch}): {result}");
    }
    Ok(Row {
        what: what.into(),
        arch,
        expected: "-".into(),
        result,
        ok,
        wall: t.elapsed(),
    })
}

/// Runs the jobs, at most [`PARALLEL_RUNS`] at once; rows come back in job order.
fn run_all(ws: &Workspace, jobs: &[Job]) -> Vec<Row> {
    // The runs that must time out go last: side by side they cost one timeout, and the short
    // runs never queue behind them.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| {
        jobs.get(i)
            .is_some_and(|j| j.scenario.expect == Outcome::Hang)
    });
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_RUNS {
            s.spawn(|| {
                let claim = || {
                    let i = *order.get(next.fetch_add(1, Ordering::Relaxed))?;
                    Some((i, jobs.get(i)?))
                };
                while let Some((i, job)) = claim() {
                    let row = run_one(ws, job);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, row));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, row)| row).collect()
}

fn run_one(ws: &Workspace, job: &Job) -> Row {
    let s = job.scenario;
    let spec = qemu::RunSpec {
        arch: job.arch,
        images: &job.images,
        scenario_id: s.id,
        cpus: s.cpus,
        param: 0,
        timeout: Some(s.timeout),
        gdb_server: false,
        own_process_group: false,
        label: s.name,
        linux: s.linux,
    };
    let (result, verdict, wall) = match qemu::run(ws, &spec, None, &mut |_| {}) {
        Ok(report) => {
            let verdict = outcome::judge(
                job.arch,
                s.expect,
                s.must_log,
                report.outcome,
                &report.lines,
            );
            let detail = outcome::describe(job.arch, report.ended);
            let mut echo = String::new();
            if verdict.is_err() {
                let skip = report.lines.len().saturating_sub(ECHO_LINES);
                echo = report
                    .lines
                    .iter()
                    .skip(skip)
                    .map(|l| format!("    {l}\n"))
                    .collect();
            }
            let note = match &verdict {
                Ok(()) => format!("{} (expected), {detail}", report.outcome),
                Err(why) => format!(
                    "MISMATCH: {why}; {detail}; log {}",
                    report.log_path.display()
                ),
            };
            // One print per run so the two slots' lines never interleave mid-record.
            eprint!(
                "[{}] {} {}: {note}, {:.2} s\n{echo}",
                if verdict.is_ok() { " ok " } else { "FAIL" },
                job.arch.name(),
                s.name,
                report.wall.as_secs_f64()
            );
            (report.outcome.to_string(), verdict.is_ok(), report.wall)
        }
        Err(e) => {
            eprintln!("[FAIL] {} {}: cannot run: {e}", job.arch.name(), s.name);
            ("ERROR".into(), false, Duration::ZERO)
        }
    };
    Row {
        what: s.name.into(),
        arch: job.arch.name(),
        expected: s.expect.to_string(),
        result,
        ok: verdict,
        wall,
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "check / scenario",
        "arch",
        "expected",
        "result",
        "verdict",
        "time",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.what.clone(),
                r.arch.to_string(),
                r.expected.clone(),
                r.result.clone(),
                if r.ok { "ok" } else { "FAILED" }.to_string(),
                format!("{:.1} s", r.wall.as_secs_f64()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let print = |row: [&str; 6]| {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(width).enumerate() {
            // The time column is right-aligned so the decimal points line up.
            if i == 5 {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{line}");
    };
    println!();
    print(header);
    for row in &cells {
        print(row.each_ref().map(String::as_str));
    }
}
