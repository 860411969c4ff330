//! `cargo xtask gdb`: QEMU stopped at the first instruction with its gdb server, and
//! gdb-multiarch attached with the symbols of both images.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::images::Images;
use crate::outcome::Outcome;
use crate::qemu;
use crate::scenarios::Scenario;
use crate::workspace::{Workspace, show};

/// QEMU's `-s` listens here.
const GDB_PORT: u16 = 1234;
/// How long QEMU may take to open its gdb port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The gdb line matching a QEMU started with `-s -S` for `arch`.
pub fn gdb_command(arch: Arch, images: &Images) -> Command {
    let mut cmd = Command::new("gdb-multiarch");
    cmd.arg("-q").arg(&images.tsm);
    // `set confirm off` answers add-symbol-file's question, so the line works unattended.
    cmd.args(["-ex", "set confirm off", "-ex"]);
    cmd.arg(format!("set architecture {}", arch.gdb_architecture()));
    cmd.args(["-ex", &format!("target remote localhost:{GDB_PORT}"), "-ex"]);
    cmd.arg(format!("add-symbol-file {}", images.host.display()));
    cmd
}

/// `attach`: run gdb here and stop QEMU when it quits; otherwise print gdb's line and show the
/// decoded log until QEMU ends.
pub fn gdb(
    ws: &Workspace,
    arch: Arch,
    scenario: &Scenario,
    images: &Images,
    attach: bool,
) -> Result<bool, String> {
    let spec = qemu::RunSpec {
        arch,
        images,
        scenario_id: scenario.id,
        cpus: scenario.cpus,
        param: 0,
        timeout: None,
        gdb_server: true,
        own_process_group: attach,
        label: "gdb",
        linux: false,
    };
    let mut gdb = gdb_command(arch, images);
    if !attach {
        eprintln!(
            "QEMU waits for gdb on localhost:{GDB_PORT}. In another terminal run:\n  {}",
            show(&gdb)
        );
        let report = qemu::run(ws, &spec, None, &mut |line| println!("{line}"))?;
        return Ok(report.outcome == Outcome::Pass);
    }

    std::fs::create_dir_all(ws.logs_dir()).map_err(|e| format!("cannot create logs dir: {e}"))?;
    let live = ws.logs_dir().join(format!("{}-gdb.log", arch.name()));
    let mut live_file =
        File::create(&live).map_err(|e| format!("cannot create {}: {e}", live.display()))?;
    // Before QEMU starts, so QEMU inherits it too: Ctrl-C goes to the whole foreground process
    // group, and only gdb (which installs its own handler) should act on it.
    ignore_interrupts();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let qemu = s.spawn(|| {
            qemu::run(ws, &spec, Some(&stop), &mut |line| {
                // The terminal belongs to gdb; the log goes to a file to follow with tail -f.
                let _ = writeln!(live_file, "{line}");
                let _ = live_file.flush();
            })
        });
        let listening = wait_for_listen(GDB_PORT, LISTEN_TIMEOUT, || qemu.is_finished());
        let gdb_status = if listening {
            eprintln!("decoded log: tail -f {}\n$ {}", live.display(), show(&gdb));
            Some(
                gdb.status()
                    .map_err(|e| format!("cannot run `{}`: {e}", show(&gdb))),
            )
        } else {
            None
        };
        stop.store(true, Ordering::Relaxed);
        let report = qemu
            .join()
            .map_err(|_| "the QEMU thread panicked".to_string())??;
        match gdb_status {
            None => Err(format!(
                "QEMU did not open its gdb port {GDB_PORT} ({}); its log: {}",
                crate::outcome::describe(arch, report.ended),
                report.log_path.display()
            )),
            Some(status) => Ok(status?.success()),
        }
    })
}

fn ignore_interrupts() {
    // SAFETY: `signal` with SIG_IGN installs no handler code, so nothing runs in signal context;
    // SIGINT is a valid signal number and xtask installs no other SIGINT handler it could race.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Waits until something listens on TCP `port` (read from /proc/net, so no probe connection
/// reaches QEMU's single-client gdb stub), or `gave_up` says the server is gone.
fn wait_for_listen(port: u16, timeout: Duration, gave_up: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout && !gave_up() {
        if ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .any(|f| std::fs::read_to_string(Path::new(f)).is_ok_and(|t| listens(&t, port)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether a /proc/net/tcp table has a socket in LISTEN (state 0A) on local `port`.
fn listens(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local.is_some_and(|l| l.ends_with(&port)) && state == Some("0A")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listening_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                     0: 00000000:04D2 00000000:0000 0A 00000000:00000000\n   \
                     1: 0100007F:1F90 0100007F:04D2 01 00000000:00000000\n";
        assert!(listens(table, 1234));
        // Port 8080 appears only in an established connection, 4321 not at all.
        assert!(!listens(table, 8080));
        assert!(!listens(table, 4321));
    }

    #[test]
    fn gdb_line_loads_both_images_and_connects() {
        let images = Images {
            tsm: "t/tsm".into(),
            host: "t/tsm-host".into(),
        };
        assert_eq!(
            show(&gdb_command(Arch::Aarch64, &images)),
            "gdb-multiarch -q t/tsm -ex 'set confirm off' -ex 'set architecture aarch64' \
             -ex 'target remote localhost:1234' -ex 'add-symbol-file t/tsm-host'"
        );
    }
}
