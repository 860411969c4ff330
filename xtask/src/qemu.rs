//! Runs one QEMU boot: streams its UART through the log decoder, enforces the timeout, and
//! keeps the decoded log under target/xtask/logs.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::decode::{Line, LogDecoder};
use crate::images::Images;
use crate::outcome::{self, Ended, Outcome};
use crate::qemu_install::{PIN, Qemu};
use crate::workspace::{Workspace, show};

/// How often the loop looks at the child while no output arrives.
const TICK: Duration = Duration::from_millis(20);
/// UART output kept per run. A healthy run logs a few KiB; an image stuck printing in a loop
/// could otherwise fill the machine's memory before its timeout.
const MAX_LOG_BYTES: usize = 4 << 20;

pub struct RunSpec<'a> {
    pub arch: Arch,
    pub images: &'a Images,
    pub scenario_id: u32,
    /// QEMU's `-smp`.
    pub cpus: u32,
    /// The parameters page's second word (0: none; `smp4`'s calls per CPU).
    pub param: u32,
    /// `None`: no limit (a gdb session).
    pub timeout: Option<Duration>,
    /// Adds `-s -S`: gdb server on tcp::1234, CPUs stopped at the first instruction.
    pub gdb_server: bool,
    /// Starts QEMU in its own process group, out of reach of the terminal's Ctrl-C: when gdb
    /// shares the terminal, Ctrl-C must interrupt the target, not shut QEMU down.
    pub own_process_group: bool,
    /// Names the log files: `<arch>-<label>.log` (decoded) and `.bin` (raw UART bytes).
    pub label: &'a str,
    /// Boot Debian's Linux kernel as the host instead of the host payload (`crate::linux_boot`).
    pub linux: bool,
}

pub struct RunReport {
    pub ended: Ended,
    pub outcome: Outcome,
    pub wall: Duration,
    pub lines: Vec<Line>,
    pub log_path: PathBuf,
}

/// Boots `spec`; `on_line` sees each decoded line as it arrives. Setting `stop` ends the run
/// early (as [`Ended::Stopped`]).
pub fn run(
    ws: &Workspace,
    spec: &RunSpec,
    stop: Option<&AtomicBool>,
    on_line: &mut dyn FnMut(&Line),
) -> Result<RunReport, String> {
    run_with(ws, spec, &[], stop, on_line)
}

/// [`run`] with `extra` QEMU arguments after the arch's line (later options override earlier
/// ones: `cargo xtask bench` adds `-icount` and `-smp 1`).
pub fn run_with(
    ws: &Workspace,
    spec: &RunSpec,
    extra: &[&str],
    stop: Option<&AtomicBool>,
    on_line: &mut dyn FnMut(&Line),
) -> Result<RunReport, String> {
    let mut decoder = LogDecoder::load(&spec.images.tsm, &spec.images.host)?;
    // The pinned QEMU `prereq::ensure` installed (every command checks it first).
    let qemu = Qemu::locate()?;
    let version = qemu
        .version()
        .ok_or_else(|| format!("QEMU {PIN} is not installed: run `cargo xtask setup`"))?;
    let linux = if spec.linux {
        Some(crate::linux_boot::prepare(ws, spec.arch)?)
    } else {
        None
    };
    let mut cmd = qemu.command(spec.arch);
    let mut args = spec.arch.qemu_args(
        &spec.images.tsm,
        &spec.images.host,
        spec.scenario_id,
        spec.cpus,
        linux.as_ref().map_or(spec.param, |l| l.param()),
    );
    if let Some(l) = &linux {
        l.apply(&mut args);
    }
    cmd.args(args);
    // `TSM_QEMU_MEM=2G cargo xtask run|test ...` boots with that much RAM (QEMU's `-m` syntax)
    // instead of the arch's default; QEMU takes the last `-m`, so `extra` still overrides it.
    if let Some(mem) = std::env::var_os("TSM_QEMU_MEM").filter(|m| !m.is_empty()) {
        cmd.arg("-m").arg(mem);
    }
    if spec.gdb_server {
        cmd.args(["-s", "-S"]);
    }
    cmd.args(extra);
    if spec.own_process_group {
        cmd.process_group(0);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes one raw syscall
    // (prctl is async-signal-safe); it touches no memory of the parent and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // QEMU dies with the thread that started it: however xtask ends (CI's kill, an
            // error), no QEMU is left running or holding the gdb port.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", show(&cmd)))?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = child
        .stdout
        .take()
        .ok_or("QEMU's stdout was not captured")?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child
        .stderr
        .take()
        .ok_or("QEMU's stderr was not captured")?;
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        // Whatever was read before an error is still worth showing.
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let mut raw = Vec::new();
    let mut lines = Vec::new();
    let mut dropped = 0usize;
    let mut take = |bytes: Vec<u8>, lines: &mut Vec<Line>| {
        if raw.len() >= MAX_LOG_BYTES {
            dropped = dropped.saturating_add(bytes.len());
            return;
        }
        for line in decoder.push(&bytes) {
            on_line(&line);
            lines.push(line);
        }
        raw.extend(bytes);
    };
    let deadline = spec.timeout.map(|t| start + t);
    let ended = loop {
        match rx.recv_timeout(TICK) {
            Ok(bytes) => take(bytes, &mut lines),
            Err(RecvTimeoutError::Timeout) => {}
            // stdout closed before QEMU exited: keep waiting for the exit without spinning.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
            break status.code().map_or(Ended::Signalled, Ended::Exited);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill(&mut child)?;
            break Ended::TimedOut;
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            kill(&mut child)?;
            break Ended::Stopped;
        }
    };
    // QEMU is gone, so its stdout reaches EOF: collect what is still in flight.
    for bytes in rx.iter() {
        take(bytes, &mut lines);
    }
    if let Some(line) = decoder.finish() {
        on_line(&line);
        lines.push(line);
    }
    // The kernel's console went to its own UART's file: its lines follow the TSM's.
    if let Some(l) = &linux {
        for line in l.console_lines() {
            on_line(&line);
            lines.push(line);
        }
    }
    if dropped > 0 {
        let cut = Line {
            program: None,
            time: None,
            level: "??",
            message: format!("log cut at {MAX_LOG_BYTES} bytes: {dropped} more bytes not kept"),
        };
        on_line(&cut);
        lines.push(cut);
    }
    let _ = reader.join();
    let stderr = stderr.join().unwrap_or_default();
    let wall = start.elapsed();
    let ended = outcome::signalled_if_qemu_says_so(ended, &stderr);
    let outcome = outcome::outcome(spec.arch, ended);
    if !stderr.trim().is_empty() {
        let qemu_says = Line {
            program: None,
            time: None,
            level: "QEMU",
            message: stderr.trim_end().to_string(),
        };
        on_line(&qemu_says);
        lines.push(qemu_says);
    }

    let summary = format!(
        "{outcome}: {} after {:.2} s",
        outcome::describe(spec.arch, ended),
        wall.as_secs_f64()
    );
    let base = format!("{}-{}", spec.arch.name(), spec.label);
    let log_path = write_logs(ws, &base, &cmd, &version, &lines, &raw, &summary)?;
    Ok(RunReport {
        ended,
        outcome,
        wall,
        lines,
        log_path,
    })
}

fn kill(child: &mut Child) -> Result<(), String> {
    // An error here means QEMU already exited between the check and the kill: fine either way.
    let _ = child.kill();
    child
        .wait()
        .map(drop)
        .map_err(|e| format!("waiting for killed QEMU: {e}"))
}

fn write_logs(
    ws: &Workspace,
    base: &str,
    cmd: &Command,
    version: &str,
    lines: &[Line],
    raw: &[u8],
    summary: &str,
) -> Result<PathBuf, String> {
    let dir = ws.logs_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The environment too: the unpacked QEMU needs its module and library folders to start.
    let env: String = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let mut text = format!("# $ {env}{}\n# QEMU {version}\n", show(cmd));
    for line in lines {
        let _ = writeln!(text, "{line}");
    }
    let _ = writeln!(text, "# {summary}");
    let log = dir.join(format!("{base}.log"));
    std::fs::write(&log, text).map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let bin = dir.join(format!("{base}.bin"));
    std::fs::write(&bin, raw).map_err(|e| format!("cannot write {}: {e}", bin.display()))?;
    Ok(log)
}
