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
pub const PACKAGES: [&str; 6] = [
    "tsm-abi",
    "tsm-platform",
    "tsm-hal",
    "tsm-core",
    "tsm-spdm",
    "tsm-device-model",
];
/// Cases per proptest property under Miri (proptest's default is 256).
const PROPTEST_CASES_UNDER_MIRI: &str = "8";
/// Tests Miri does not run. Loops over generated inputs scale themselves down under Miri
/// (`cfg!(miri)` constants next to them); these cannot, and what they add beyond the rest of
/// the suite is not about memory: the same code runs under Miri in the smaller tests named.
const SKIPPED_UNDER_MIRI: [&str; 2] = [
    // A 4094-range report, the largest that fits, whose overlap check is quadratic (8 M pair
    // checks, hours interpreted); the other `report::*` tests parse small reports under Miri.
    "tdisp::tests::report::largest_report_parses",
    // A coverage assertion over 256 generated vIOMMU worlds (a property of the generator); the
    // `props::*` properties run the same worlds through the same code, fewer cases each.
    "viommu::tests::props::the_random_worlds_reach_every_outcome",
];
/// Miri's own checks beyond its defaults. Leaks are not reported: the crates under test have no
/// allocator (no_std, no `alloc`), and the test harness leaks the simulated machine on purpose
/// (`tsm_core::testing::Harness` hands the monitor `'static` borrows of it). Isolation hides the
/// host's environment from the program, so `PROPTEST_CASES` is forwarded by name: without it
/// every property ran proptest's default 256 cases interpreted (hours).
const MIRIFLAGS: &str = "-Zmiri-ignore-leaks -Zmiri-env-forward=PROPTEST_CASES";
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
    test.env("MIRIFLAGS", miriflags(MIRIFLAGS));
    // Unit tests only: the one integration test (tsm-abi's C header check) runs gcc, which an
    // interpreter cannot; `--no-fail-fast` so one crate's error does not hide the others'.
    if has_nextest() {
        // One interpreter per test, as many at once as there are cores: Miri itself runs one
        // thread, and the core's device tests take a minute or more each interpreted.
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        test.args(["miri", "nextest", "run", "--lib", "--no-fail-fast"])
            .arg(format!("--test-threads={jobs}"));
        for p in PACKAGES {
            test.args(["-p", p]);
        }
        let skipped: Vec<String> = SKIPPED_UNDER_MIRI
            .iter()
            .map(|t| format!("test(={t})"))
            .collect();
        test.args(["-E", &format!("not ({})", skipped.join(" | "))]);
    } else {
        eprintln!("cargo-nextest not found: the tests run one after the other in one interpreter");
        test.args(["miri", "test", "--lib", "--no-fail-fast"]);
        for p in PACKAGES {
            test.args(["-p", p]);
        }
        test.args(["--", "--exact"]);
        for t in SKIPPED_UNDER_MIRI {
            test.args(["--skip", t]);
        }
    }
    let workspace_ok = passed(&mut test, "cargo miri test")?;
    // The fuzz targets' checks over their seeds and regression inputs (fuzz/tests/replay.rs).
    // The replay reads the inputs from disk, which Miri's isolation would refuse.
    let mut replay = nightly_cargo(ws, &target_dir);
    replay
        .args(["miri", "test", "--manifest-path"])
        .arg(ws.root.join("fuzz").join("Cargo.toml"))
        .env(
            "MIRIFLAGS",
            miriflags(&format!("{MIRIFLAGS} -Zmiri-disable-isolation")),
        );
    let replay_ok = passed(&mut replay, "cargo miri test (fuzz replay)")?;
    eprintln!("miri finished in {:.0} s", start.elapsed().as_secs_f64());
    Ok(workspace_ok && replay_ok)
}

/// Whether `cargo nextest` is installed (it is on this project's machines; nothing here needs it).
fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
