//! `cargo xtask smp-soak`: the long run of the `smp4` scenario (four CPUs racing the calls that
//! share objects, tests/host-payload/src/smp4.rs) with a number of calls per CPU chosen here,
//! its progress shown as it goes and its per-CPU outcome counts collected (docs/assurance.md,
//! "SMP on four CPUs"). [`smp_soak`] is the function other commands call.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::arch::Arch;
use crate::images::{self, Images};
use crate::outcome::{self, Outcome};
use crate::qemu::{self, RunSpec};
use crate::scenarios::{self, Variant};
use crate::workspace::Workspace;

/// What one long run did.
#[derive(Debug)]
pub struct Summary {
    pub arch: Arch,
    pub calls_per_cpu: u32,
    /// Whether the scenario passed (every status one its race allows, every granule back).
    pub passed: bool,
    /// Why it did not, as the harness judged it.
    pub failure: Option<String>,
    pub wall: Duration,
    /// Per CPU: each outcome's name and count, as the host payload logged them.
    pub per_cpu: Vec<BTreeMap<String, u64>>,
    /// Per CPU: the calls it made.
    pub calls: Vec<u64>,
    /// The host payload's closing line (edu reads, milliseconds of racing), if it got there.
    pub closing: Option<String>,
}

impl Summary {
    /// A table: one row per outcome, one column per CPU.
    pub fn table(&self) -> String {
        let mut names: Vec<&String> = self.per_cpu.iter().flat_map(|m| m.keys()).collect();
        names.sort();
        names.dedup();
        let mut out = format!(
            "smp-soak {}: {} calls per CPU requested, {} in {:.1} s\n{:<36}",
            self.arch.name(),
            self.calls_per_cpu,
            if self.passed { "PASS" } else { "FAIL" },
            self.wall.as_secs_f64(),
            "outcome"
        );
        for cpu in 0..self.per_cpu.len() {
            out += &format!(" {:>10}", format!("CPU {cpu}"));
        }
        out += "\n";
        for name in names {
            out += &format!("{name:<36}");
            for m in &self.per_cpu {
                out += &format!(" {:>10}", m.get(name).copied().unwrap_or(0));
            }
            out += "\n";
        }
        out += &format!("{:<36}", "calls");
        for c in &self.calls {
            out += &format!(" {c:>10}");
        }
        out += "\n";
        if let Some(c) = &self.closing {
            out += c;
            out += "\n";
        }
        if let Some(f) = &self.failure {
            out += &format!("failure: {f}\n");
        }
        out
    }
}

/// How long a run of `calls` calls per CPU may take under TCG before it counts as hung: 100
/// calls a second per CPU when the machine is quiet, but a dozen when other QEMUs share its
/// cores. A deadlock is caught sooner, inside the run (a CPU that does not finish within two
/// minutes of CPU 0 fails it).
fn timeout(calls: u32) -> Duration {
    Duration::from_secs(300 + u64::from(calls) / 10)
}

/// Builds the images and runs `smp4` on `arch` with `calls_per_cpu` calls per CPU, printing
/// its progress lines as they come. The images are the bench's (release, and without the
/// TSM's per-call `debug` line unless DEFMT_LOG says otherwise: hundreds of thousands of calls
/// would fill the kept log and cost most of the run), so call it while xtask runs no other
/// thread: it sets DEFMT_LOG for the build, as `bench` does.
pub fn smp_soak(ws: &Workspace, arch: Arch, calls_per_cpu: u32) -> Result<Summary, String> {
    let scenario = scenarios::find("smp4").ok_or("no smp4 scenario")?;
    debug_assert_eq!(scenario.variant, Variant::Normal);
    if std::env::var_os("DEFMT_LOG").is_none() {
        // SAFETY: the caller runs no other thread (the doc above; a QEMU run's threads are
        // joined before it returns), so nothing reads the environment concurrently.
        unsafe { std::env::set_var("DEFMT_LOG", crate::bench::BENCH_DEFMT_LOG) };
    }
    let images: Images = images::build(ws, arch, true, scenario.variant)?;
    let spec = RunSpec {
        arch,
        images: &images,
        scenario_id: scenario.id,
        cpus: scenario.cpus,
        param: calls_per_cpu,
        timeout: Some(timeout(calls_per_cpu)),
        gdb_server: false,
        own_process_group: false,
        label: "smp-soak",
        linux: false,
    };
    println!(
        "== {} smp-soak: {calls_per_cpu} calls per CPU on 4 CPUs (log: target/xtask/logs)",
        arch.name()
    );
    let report = qemu::run(ws, &spec, None, &mut |line| {
        if line.message.starts_with("smp4: progress")
            || line.message.contains("failed")
            || line.level == "ERROR"
        {
            println!("{line}");
        }
    })?;
    let verdict = outcome::judge(
        arch,
        scenario.expect,
        scenario.must_log,
        report.outcome,
        &report.lines,
    );
    let mut per_cpu: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); 4];
    let mut calls = vec![0; 4];
    let mut closing = None;
    for line in &report.lines {
        if let Some((cpu, name, n)) = count_line(&line.message) {
            if let Some(m) = per_cpu.get_mut(cpu) {
                m.insert(name.to_string(), n);
            }
        } else if let Some((cpu, n)) = calls_line(&line.message) {
            if let Some(c) = calls.get_mut(cpu) {
                *c = n;
            }
        } else if line.message.contains("none saw the secret") {
            closing = Some(line.message.clone());
        }
    }
    Ok(Summary {
        arch,
        calls_per_cpu,
        passed: verdict.is_ok() && report.outcome == Outcome::Pass,
        failure: verdict.err(),
        wall: report.wall,
        per_cpu,
        calls,
        closing,
    })
}

/// `smp4: CPU <n>: <outcome> x<count>`.
fn count_line(message: &str) -> Option<(usize, &str, u64)> {
    let rest = message.strip_prefix("smp4: CPU ")?;
    let (cpu, rest) = rest.split_once(": ")?;
    let (name, n) = rest.rsplit_once(" x")?;
    Some((cpu.parse().ok()?, name, n.parse().ok()?))
}

/// `smp4: CPU <n>: <calls> calls, ...`.
fn calls_line(message: &str) -> Option<(usize, u64)> {
    let rest = message.strip_prefix("smp4: CPU ")?;
    let (cpu, rest) = rest.split_once(": ")?;
    let (n, _) = rest.split_once(" calls, ")?;
    Some((cpu.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payloads_lines_parse() {
        assert_eq!(
            count_line("smp4: CPU 2: MAP_PRIVATE GranuleState(3) x1234"),
            Some((2, "MAP_PRIVATE GranuleState(3)", 1234))
        );
        assert_eq!(
            calls_line("smp4: CPU 3: 100002 calls, 60000 succeeded, 40002 lost a race"),
            Some((3, 100_002))
        );
        assert_eq!(count_line("smp4: CPU 3: 100002 calls, 6 succeeded"), None);
        assert_eq!(calls_line("smp4: CPU 2: UNMAP ok x5"), None);
    }
}
