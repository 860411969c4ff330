//! Replays the seeds, the checked-in corpus and every saved regression input through each
//! target's checks, without libFuzzer: `cargo +nightly test --manifest-path fuzz/Cargo.toml`
//! (also under Miri). A crash the fuzzer found stays fixed because its input lives in
//! `regressions/<target>/` and runs here.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How long one input may run before it counts as a hang (xtask gives libFuzzer 10 s too;
/// Miri interprets, so it gets longer).
const HANG_SECONDS: u64 = if cfg!(miri) { 600 } else { 10 };

/// Runs one input on its own thread: `Err` says how it failed. A hung thread is left spinning
/// until the test process exits.
fn outcome(run: tsm_fuzz::Entry, bytes: Vec<u8>) -> Result<(), &'static str> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| run(&bytes)).is_ok();
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(Duration::from_secs(HANG_SECONDS)) {
        Ok(true) => Ok(()),
        Ok(false) => Err("fails its checks"),
        Err(_) => Err("hangs"),
    }
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).expect("readable input"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Under Miri every input costs seconds: it replays the seeds and regressions only.
fn corpus_dirs() -> &'static [&'static str] {
    if cfg!(miri) {
        &["regressions"]
    } else {
        &["corpus", "regressions"]
    }
}

#[test]
fn seeds_corpus_and_regressions_pass_every_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = Vec::new();
    for (target, run) in tsm_fuzz::TARGETS {
        let seeds = tsm_fuzz::seeds(target);
        assert!(!seeds.is_empty(), "{target} has seeds");
        let mut all: Vec<(String, Vec<u8>)> = seeds
            .into_iter()
            .map(|(n, b)| (format!("seed {n}"), b))
            .collect();
        for dir in corpus_dirs() {
            all.extend(inputs(&root.join(dir).join(target)));
        }
        // Every input runs even after one fails, so the report lists them all.
        for (name, bytes) in all {
            if let Err(how) = outcome(run, bytes) {
                failed.push(format!("{target}: {name} {how}"));
            }
        }
    }
    assert!(failed.is_empty(), "failing inputs:\n{}", failed.join("\n"));
}

#[test]
fn checked_in_seeds_match_the_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, _) in tsm_fuzz::TARGETS {
        for (name, bytes) in tsm_fuzz::seeds(target) {
            let path = root.join(target).join(format!("seed_{name}"));
            let stored = std::fs::read(&path).unwrap_or_default();
            assert!(
                stored == bytes,
                "{} is stale: rerun `cargo run --example seeds`",
                path.display()
            );
        }
    }
}
