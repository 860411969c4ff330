//! `cargo xtask miri`: the host-buildable crates' tests under Miri (nightly), which checks the
//! unsafe code outside `hal/`'s arch modules and every test's memory accesses for undefined
//! behaviour. Installs nightly's `miri` and `rust-src` components when missing.
//!
//! Property tests run fewer cases under Miri (each case is interpreted, hundreds of times
//! slower than native): `PROPTEST_CASES` scales them without touching the tests.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::fuzz::ensure_nightly;
use crate::workspace::Workspace;

/// The crates Miri runs: everything that builds for the host.
pub const PACKAGES: [&str; 4] = ["tsm-abi", "tsm-hal", "tsm-core", "tsm-device-model"];
/// Cases per proptest property under Miri (proptest's default is 256).
const PROPTEST_CASES_UNDER_MIRI: &str = "8";
/// Tests too slow for Miri (each takes seconds natively: hours interpreted). They are loops
/// over generated inputs of safe code, so what Miri would add is small; the fuzz targets run
/// the same code paths natively for millions of executions. The rest of each suite runs.
const SKIPPED_UNDER_MIRI: [&str; 5] = [
    // tsm-abi: 300 000 random and 100 000 mutated TDISP messages; a 4094-range report whose
    // overlap check is quadratic.
    "tdisp::tests::fuzz::random_bytes_never_panic",
    "tdisp::tests::fuzz::mutated_valid_messages_never_panic",
    "tdisp::tests::report::largest_report_parses",
    // tsm-core: 256 generated vIOMMU worlds with a coverage assertion, and 24 randomized
    // teardowns of a fully populated monitor.
    "viommu::tests::props::the_random_worlds_reach_every_outcome",
    "tests::teardown::random_teardown_returns_every_granule",
];
const NIGHTLY: &str = "nightly";

/// Runs the tests of [`PACKAGES`] and the fuzz corpus replay under Miri. `Ok(true)` when Miri
/// reports no error; `Err` when Miri could not be installed or started.
pub fn miri(ws: &Workspace) -> Result<bool, String> {
    ensure_nightly()?;
    ensure_components()?;
    let start = Instant::now();
    let target_dir = ws.target_dir.join("miri");
    // `miri setup` builds the sysroot once, without prompting (it asks before installing
    // anything only when rust-src is missing, which ensure_components rules out).
    run(
        nightly_cargo(ws, &target_dir).args(["miri", "setup"]),
        "cargo miri setup",
    )?;
    let mut test = nightly_cargo(ws, &target_dir);
    // Unit tests only: the one integration test (tsm-abi's C header check) runs gcc, which an
    // interpreter cannot; `--no-fail-fast` so one crate's error does not hide the others'.
    test.args(["miri", "test", "--lib", "--no-fail-fast"]);
    for p in PACKAGES {
        test.args(["-p", p]);
    }
    test.arg("--");
    for t in SKIPPED_UNDER_MIRI {
        test.args(["--skip", t]);
    }
    let workspace_ok = passed(&mut test, "cargo miri test")?;
    // The fuzz targets' checks over their seeds and regression inputs (fuzz/tests/replay.rs).
    // The replay reads the inputs from disk, which Miri's isolation would refuse.
    let mut replay = nightly_cargo(ws, &target_dir);
    replay
        .args(["miri", "test", "--manifest-path"])
        .arg(ws.root.join("fuzz").join("Cargo.toml"))
        .env("MIRIFLAGS", miriflags("-Zmiri-disable-isolation"));
    let replay_ok = passed(&mut replay, "cargo miri test (fuzz replay)")?;
    eprintln!("miri finished in {:.0} s", start.elapsed().as_secs_f64());
    Ok(workspace_ok && replay_ok)
}

/// MIRIFLAGS from the environment plus `extra`.
fn miriflags(extra: &str) -> String {
    match std::env::var("MIRIFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} {extra}"),
        _ => extra.to_string(),
    }
}

fn nightly_cargo(ws: &Workspace, target_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .current_dir(&ws.root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null());
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cmd.env("PROPTEST_CASES", PROPTEST_CASES_UNDER_MIRI);
    }
    cmd
}

/// Runs a step xtask needs; its failure is xtask's failure.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    if passed(cmd, what)? {
        Ok(())
    } else {
        Err(format!("{what} failed"))
    }
}

/// Whether `cmd` succeeded; `Err` only when it could not be started.
fn passed(cmd: &mut Command, what: &str) -> Result<bool, String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    Ok(status.success())
}

/// Adds nightly's `miri` and `rust-src` if they are not installed.
fn ensure_components() -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let has = |c: &str| {
        installed
            .lines()
            .any(|l| l == c || l.starts_with(&format!("{c}-")))
    };
    let missing: Vec<&str> = ["miri", "rust-src"]
        .into_iter()
        .filter(|c| !has(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "installing {} for the {NIGHTLY} toolchain",
        missing.join(" and ")
    );
    run(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", NIGHTLY])
            .args(&missing),
        "rustup component add",
    )
}
