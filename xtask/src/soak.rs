//! `cargo xtask soak`: the long versions of the checks `cargo xtask test` runs short, one after
//! the other, each part with its own progress, then one table (part, size, time, result), so
//! the figures in docs/assurance.md can be reproduced with one command.
//!
//! Each part is one function returning a [`PartRun`]; adding a part is a [`Part`] value, its
//! flags and one arm in [`soak`].

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::workspace::Workspace;
use crate::{fuzz, miri, smp_soak};

/// The parts, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Part {
    /// The model-based test of the core (firmware/core/tests/model.rs) at `--model-sequences`.
    Model,
    /// Every host-buildable crate's tests and the fuzz replay under Miri.
    Miri,
    /// The four-CPU race (`smp4`) on both arches at `--smp-calls` calls per CPU.
    Smp,
    /// Every libFuzzer target (or `--fuzz-target`) for `--fuzz-time` seconds or `--fuzz-execs`
    /// executions each.
    Fuzz,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Model, Part::Miri, Part::Smp, Part::Fuzz];
}

pub struct Options {
    pub only: Vec<Part>,
    /// Model sequences in all, shared between the two address-map formats.
    pub model_sequences: u64,
    pub model_steps: u64,
    /// Threads per format (`None`: the model test's default, the CPUs).
    pub model_threads: Option<u64>,
    /// Calls per CPU of the four-CPU race.
    pub smp_calls_per_cpu: u32,
    /// Per fuzz target.
    pub fuzz_budget: fuzz::Budget,
    pub fuzz_targets: Vec<String>,
}

/// One part's line of the final table.
pub struct PartRun {
    pub part: &'static str,
    /// What ran, in the part's own units.
    pub size: String,
    pub wall: Duration,
    pub result: String,
    pub ok: bool,
}

/// Runs the parts `opts.only` names (all when empty). `Ok(true)` when every part passed; a
/// part that could not start is a failed row, not the end of the soak.
pub fn soak(ws: &Workspace, opts: &Options) -> Result<bool, String> {
    let mut rows = Vec::new();
    for part in Part::ALL {
        if !opts.only.is_empty() && !opts.only.contains(&part) {
            continue;
        }
        eprintln!("== soak: {part:?}");
        let start = Instant::now();
        let run = match part {
            Part::Model => model(
                ws,
                opts.model_sequences,
                opts.model_steps,
                opts.model_threads,
            ),
            Part::Miri => miri_part(ws),
            Part::Smp => smp_part(ws, opts.smp_calls_per_cpu),
            Part::Fuzz => fuzz_part(ws, &opts.fuzz_targets, opts.fuzz_budget),
        };
        rows.push(run.unwrap_or_else(|e| PartRun {
            part: name(part),
            size: "-".into(),
            wall: start.elapsed(),
            result: format!("ERROR: {e}"),
            ok: false,
        }));
    }
    print_table(&rows);
    Ok(rows.iter().all(|r| r.ok))
}

fn name(part: Part) -> &'static str {
    match part {
        Part::Model => "model",
        Part::Miri => "miri",
        Part::Smp => "smp",
        Part::Fuzz => "fuzz",
    }
}

/// The model test with `sequences` in all (half per address-map format, both formats at
/// once), its progress lines passed through; the size is what the test reports it ran.
pub fn model(
    ws: &Workspace,
    sequences: u64,
    steps: u64,
    threads: Option<u64>,
) -> Result<PartRun, String> {
    let start = Instant::now();
    let mut cmd = ws.cargo();
    cmd.args([
        "test",
        "-p",
        "tsm-core",
        "--test",
        "model",
        "--",
        "--nocapture",
    ])
    .env("TSM_MODEL_SEQUENCES", sequences.div_ceil(2).to_string())
    .env("TSM_MODEL_STEPS", steps.to_string())
    .env("TSM_MODEL_PROGRESS", "1")
    .stdout(Stdio::piped());
    if let Some(t) = threads {
        cmd.env("TSM_MODEL_THREADS", t.to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the model test: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout from the model test")?;
    let (mut ran, mut calls) = (0u64, 0u64);
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| format!("reading the model test's output: {e}"))?;
        println!("{line}");
        if let Some((s, c)) = model_summary(&line) {
            ran += s;
            calls += c;
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the model test: {e}"))?;
    Ok(PartRun {
        part: "model",
        size: format!("{ran} sequences, {calls} calls"),
        wall: start.elapsed(),
        result: if status.success() {
            "ok".into()
        } else {
            "FAILED (seed above)".into()
        },
        ok: status.success() && ran > 0,
    })
}

/// (sequences, calls) from the model test's closing line for one format:
/// `model <format>: <n> sequences, <m> calls (...`.
fn model_summary(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("model ")?;
    let (_, rest) = rest.split_once(": ")?;
    let (seqs, rest) = rest.split_once(" sequences, ")?;
    let (calls, _) = rest.split_once(" calls")?;
    Some((seqs.parse().ok()?, calls.parse().ok()?))
}

/// `cargo xtask miri`.
pub fn miri_part(ws: &Workspace) -> Result<PartRun, String> {
    let start = Instant::now();
    let ok = miri::miri(ws)?;
    Ok(PartRun {
        part: "miri",
        size: format!(
            "unit tests of {} crates + fuzz replay",
            miri::PACKAGES.len()
        ),
        wall: start.elapsed(),
        result: if ok { "ok".into() } else { "FAILED".into() },
        ok,
    })
}

/// `cargo xtask smp-soak` on both arches: one row for the two, each arch's table printed.
pub fn smp_part(ws: &Workspace, calls_per_cpu: u32) -> Result<PartRun, String> {
    let start = Instant::now();
    let mut results = Vec::new();
    for arch in Arch::ALL {
        let summary = smp_soak::smp_soak(ws, arch, calls_per_cpu)?;
        print!("{}", summary.table());
        let total: u64 = summary.calls.iter().sum();
        results.push((arch, summary.passed, total, summary.failure));
    }
    let ok = results.iter().all(|r| r.1);
    Ok(PartRun {
        part: "smp",
        size: results
            .iter()
            .map(|(a, _, n, _)| format!("{}: {n} calls", a.name()))
            .collect::<Vec<_>>()
            .join(", "),
        wall: start.elapsed(),
        result: if ok {
            "ok".into()
        } else {
            results
                .iter()
                .filter(|r| !r.1)
                .map(|(a, _, _, f)| format!("{} FAILED: {}", a.name(), f.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ")
        },
        ok,
    })
}

/// `cargo xtask fuzz` over `targets` (every target when empty), `budget` each.
pub fn fuzz_part(
    ws: &Workspace,
    targets: &[String],
    budget: fuzz::Budget,
) -> Result<PartRun, String> {
    let start = Instant::now();
    let budgets: Vec<_> = fuzz::targets(targets)?
        .into_iter()
        .map(|t| (t, budget))
        .collect();
    let runs = fuzz::fuzz_for(ws, &budgets)?;
    fuzz::print_summary(&runs);
    let executions: u64 = runs.iter().map(|r| r.executions).sum();
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crash.is_some())
        .map(|r| r.target)
        .collect();
    Ok(PartRun {
        part: "fuzz",
        size: format!(
            "{} targets x {}, {executions} executions",
            runs.len(),
            match budget {
                fuzz::Budget::Seconds(s) => format!("{s} s"),
                fuzz::Budget::Executions(n) => format!("{n} executions"),
            }
        ),
        wall: start.elapsed(),
        result: if crashed.is_empty() {
            "ok".into()
        } else {
            format!("CRASH in {}", crashed.join(", "))
        },
        ok: crashed.is_empty(),
    })
}

fn print_table(rows: &[PartRun]) {
    let width = rows.iter().map(|r| r.size.len()).max().unwrap_or(4).max(4);
    println!();
    println!("{:<6} {:<width$} {:>10}  result", "part", "size", "time");
    for r in rows {
        println!(
            "{:<6} {:<width$} {:>9.0}s  {}",
            r.part,
            r.size,
            r.wall.as_secs_f64(),
            r.result
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_tests_closing_line_is_parsed() {
        let line = "model ArmStage2: 5000 sequences, 475216 calls (291125 succeeded, ...) in 3.1 s";
        assert_eq!(model_summary(line), Some((5000, 475216)));
        assert_eq!(
            model_summary("model ArmStage2: 10000 of 500000 sequences in 30 s"),
            None
        );
        assert_eq!(model_summary("test model_x86_64 ... ok"), None);
    }
}
