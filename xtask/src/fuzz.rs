//! `cargo xtask fuzz [--target T] [--time SECONDS | --execs N]`, the fuzz smoke run of
//! `cargo xtask test`, and [`fuzz_for`], which long runs (a soak) call with a budget per target.
//!
//! The targets live in `fuzz/` (a cargo-fuzz crate in its own workspace, see
//! docs/assurance.md). cargo-fuzz needs nightly, so every cargo command here names `+nightly`
//! explicitly over the pinned toolchain; nightly and cargo-fuzz are installed when missing.
//! All targets are built in one cargo invocation, then each built libFuzzer binary runs for its
//! time slice, one at a time (the fuzzers are single-threaded; the machine is shared).
//!
//! Each run reads the checked-in seeds (`fuzz/corpus/<target>/`) and the saved crash inputs
//! (`fuzz/regressions/<target>/`), and grows a working corpus under the target dir, so the
//! repository only ever holds seeds. A crash leaves its input in
//! `<target-dir>/fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace::Workspace;

/// Every fuzz target (binaries of `fuzz/Cargo.toml`).
pub const TARGETS: [&str; 7] = [
    "dispatcher",
    "tdisp_decode",
    "walkers",
    "device_model",
    "cert_chain",
    "spdm_decode",
    "spdm_secured",
];
/// Seconds per target in the smoke run of `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 5;
/// libFuzzer's per-input timeout: every target's input is bounded (at most 64 steps), so an
/// input that takes this long is a hang worth reporting.
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// Largest input libFuzzer generates (a full TDISP message plus room for a step program).
const MAX_INPUT_LEN: usize = 8192;
/// The toolchain cargo-fuzz needs (`-Z` flags and sanitizer coverage).
const NIGHTLY: &str = "nightly";
/// Host triple the fuzz binaries are built for (cargo-fuzz always passes `--target`).
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// How long each target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many seconds (libFuzzer's `-max_total_time`).
    Seconds(u64),
    /// This many executions (libFuzzer's `-runs`), however long they take.
    Executions(u64),
}

/// glibc malloc settings for the fuzz processes: without them every execution that frees its
/// simulated DRAM (a few hundred KiB) gives the pages back to the kernel and faults them in
/// again on the next one, a large share of a dispatcher execution (docs/assurance.md).
const MALLOC_TUNABLES: &str =
    "glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432";

/// One target's run.
#[derive(Debug)]
pub struct TargetRun {
    pub target: &'static str,
    /// libFuzzer's `stat::number_of_executed_units` (seeds included).
    pub executions: u64,
    pub wall: Duration,
    /// Inputs in the working corpus after the run.
    pub corpus: usize,
    /// The input that crashed the target, if any.
    pub crash: Option<PathBuf>,
}

/// Fuzzes `target` (every target when `None`) within `budget` each. `Ok(true)` when no target
/// crashed; `Err` when the fuzzers could not be installed, built or started.
pub fn fuzz(ws: &Workspace, target: Option<&str>, budget: Budget) -> Result<bool, String> {
    let names: Vec<String> = target.into_iter().map(str::to_string).collect();
    let budgets: Vec<_> = targets(&names)?.into_iter().map(|t| (t, budget)).collect();
    let runs = fuzz_for(ws, &budgets)?;
    print_summary(&runs);
    Ok(runs.iter().all(|r| r.crash.is_none()))
}

/// The targets `names` names, every target when it is empty.
pub fn targets(names: &[String]) -> Result<Vec<&'static str>, String> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|t| {
            TARGETS.iter().copied().find(|k| k == t).ok_or_else(|| {
                format!(
                    "no fuzz target `{t}`; the targets are {}",
                    TARGETS.join(", ")
                )
            })
        })
        .collect()
}

/// The smoke run `cargo xtask test` calls: every target for [`SMOKE_SECONDS`].
pub fn smoke(ws: &Workspace) -> Result<bool, String> {
    fuzz(ws, None, Budget::Seconds(SMOKE_SECONDS))
}

/// Installs what is missing, builds every target, and runs each target of `budgets` within
/// its budget, one after the other (the figures of docs/assurance.md's Results come from
/// here; [`print_summary`] prints them).
pub fn fuzz_for(
    ws: &Workspace,
    budgets: &[(&'static str, Budget)],
) -> Result<Vec<TargetRun>, String> {
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let dirs = FuzzDirs::new(ws);
    build(ws, &dirs)?;
    budgets
        .iter()
        .map(|&(t, budget)| run_one(ws, &dirs, t, budget))
        .collect()
}

/// Where the fuzz build and its outputs go: a target dir of its own (instrumented builds
/// would otherwise evict the normal ones), the growing corpora, crash artifacts.
struct FuzzDirs {
    target_dir: PathBuf,
}

impl FuzzDirs {
    fn new(ws: &Workspace) -> Self {
        FuzzDirs {
            target_dir: ws.target_dir.join("fuzz"),
        }
    }

    fn binary(&self, target: &str) -> PathBuf {
        self.target_dir
            .join(HOST_TRIPLE)
            .join("release")
            .join(target)
    }

    fn corpus(&self, target: &str) -> PathBuf {
        self.target_dir.join("corpus").join(target)
    }

    fn artifacts(&self, target: &str) -> PathBuf {
        self.target_dir.join("artifacts").join(target)
    }
}

/// A `cargo +nightly` command. The variables a parent cargo or rustup proxy sets would pin
/// the child to the repository's toolchain, so they are cleared.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .stdin(Stdio::null());
    cmd
}

fn run_status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Installs the nightly toolchain (minimal profile) if rustup lacks it.
pub fn ensure_nightly() -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let listed = String::from_utf8_lossy(&out.stdout);
    if listed
        .lines()
        .any(|l| l.starts_with(&format!("{NIGHTLY}-")))
    {
        return Ok(());
    }
    eprintln!("installing the {NIGHTLY} toolchain (fuzzing and Miri need it)");
    run_status(
        Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
        "rustup toolchain install nightly",
    )
}

/// Installs cargo-fuzz from the Rust package registry (a few minutes, once) if `cargo fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let present = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz from the Rust package registry (once; takes a few minutes)");
    run_status(
        nightly_cargo().args(["install", "cargo-fuzz", "--locked"]),
        "cargo install cargo-fuzz",
    )
}

/// Builds every target in one go: release with debug assertions and overflow checks (an
/// overflow reachable from input is a crash), no sanitizer (the fuzzed crates have no unsafe
/// code, so AddressSanitizer would only cost speed; Miri covers the unsafe outside `hal/`).
/// Comparisons are traced in every crate but the harness's own (`--no-trace-compares`, given
/// back to the others by fuzz/Cargo.toml's profile).
fn build(ws: &Workspace, dirs: &FuzzDirs) -> Result<(), String> {
    let start = Instant::now();
    run_status(
        nightly_cargo()
            .current_dir(&ws.root)
            .env("CARGO_TARGET_DIR", &dirs.target_dir)
            .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
            .arg("--no-trace-compares"),
        "cargo fuzz build",
    )?;
    eprintln!(
        "fuzz targets built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_one(
    ws: &Workspace,
    dirs: &FuzzDirs,
    target: &'static str,
    budget: Budget,
) -> Result<TargetRun, String> {
    let corpus = dirs.corpus(target);
    let artifacts = dirs.artifacts(target);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let before = crash_files(&artifacts);
    let fuzz_dir = ws.root.join("fuzz");
    let mut cmd = Command::new(dirs.binary(target));
    // New inputs go to the first directory; the others are read only.
    cmd.arg(&corpus).arg(fuzz_dir.join("corpus").join(target));
    let regressions = fuzz_dir.join("regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(&regressions);
    }
    let mut prefix = artifacts.clone().into_os_string();
    prefix.push("/");
    let limit = match budget {
        Budget::Seconds(s) => format!("-max_total_time={s}"),
        Budget::Executions(n) => format!("-runs={n}"),
    };
    cmd.arg(limit)
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-max_len={MAX_INPUT_LEN}"))
        .arg("-print_final_stats=1")
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
        .stdin(Stdio::null());
    match budget {
        Budget::Seconds(s) => eprintln!("fuzzing {target} for {s} s"),
        Budget::Executions(n) => eprintln!("fuzzing {target} for {n} executions"),
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", dirs.binary(target).display()))?;
    let wall = start.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    let executions = executed_units(&log).ok_or_else(|| {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "{target}: libFuzzer printed no final stats (exit {}):\n{}",
            out.status,
            tail.join("\n")
        )
    });
    let crash = crash_files(&artifacts)
        .into_iter()
        .find(|f| !before.contains(f));
    let corpus_size = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
    if !out.status.success() || crash.is_some() {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        eprintln!(
            "{target} crashed (exit {}):\n{}",
            out.status,
            tail.join("\n")
        );
        let crash = crash.or_else(|| Some(artifacts.clone()));
        if let Some(c) = &crash {
            eprintln!(
                "reproduce: {} {}\nkeep it: copy it to fuzz/regressions/{target}/ once fixed",
                dirs.binary(target).display(),
                c.display()
            );
        }
        return Ok(TargetRun {
            target,
            executions: executions.unwrap_or(0),
            wall,
            corpus: corpus_size,
            crash,
        });
    }
    Ok(TargetRun {
        target,
        executions: executions?,
        wall,
        corpus: corpus_size,
        crash: None,
    })
}

/// `stat::number_of_executed_units: N` from libFuzzer's final stats.
fn executed_units(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
}

/// Crash, timeout, OOM and leak inputs libFuzzer left in `dir`.
fn crash_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "timeout-", "oom-", "leak-", "slow-unit-"]
                    .iter()
                    .any(|k| n.starts_with(k))
            })
        })
        .collect()
}

/// One line per run: executions, wall time, rate, working-corpus size, result.
pub fn print_summary(runs: &[TargetRun]) {
    println!(
        "{:<14} {:>14} {:>9} {:>12} {:>8}  result",
        "target", "executions", "seconds", "exec/s", "corpus"
    );
    for r in runs {
        let secs = r.wall.as_secs_f64();
        let rate = if secs > 0.0 {
            r.executions as f64 / secs
        } else {
            0.0
        };
        let result = match &r.crash {
            None => "ok".to_string(),
            Some(p) => format!("CRASH {}", p.display()),
        };
        println!(
            "{:<14} {:>14} {:>9.1} {:>12.0} {:>8}  {result}",
            r.target, r.executions, secs, rate, r.corpus
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_parsed() {
        let log = "#1 INITED\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec:     2057\n";
        assert_eq!(executed_units(log), Some(123456));
        assert_eq!(executed_units("no stats"), None);
    }
}
