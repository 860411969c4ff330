//! `cargo xtask linux-module --boot-check`: Debian's kernel booted directly under QEMU (no TSM
//! below it) with a busybox initramfs holding the module, the user-space driver and the guest
//! payload; the init script loads the module and reports what a kernel without a TSM can show:
//! the module loads, /dev/tsm appears, edu binds to it, and a scenario fails cleanly at its
//! first host call (the module answers ENODEV, the driver reports it and exits). The run with
//! the TSM below is the `linux` scenario (issue 18).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::initramfs::{self, Entry};
use crate::linux_packages::Kernel;
use crate::workspace::{Workspace, show};

/// What a Linux boot under TCG may take here (11-35 s measured), with room for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Lines the init script prints, each after its check passed; the check wants them all.
const EXPECTED: &[&str] = &[
    "tsm-check: module loaded",
    "tsm-check: /dev/tsm present",
    "tsm-check: edu bound to tsm_host_edu",
    "tsm-check: driver refused cleanly",
    "tsm-check: done",
];

/// The user-space driver for `arch`: the static binary (`--features linux-bin`, release).
pub fn build_driver(ws: &Workspace, arch: Arch) -> Result<PathBuf, String> {
    let mut cmd = ws.cargo();
    cmd.args([
        "build",
        "-p",
        "tsm-linux-driver",
        "--features",
        "linux-bin",
        "--release",
        "--target",
        arch.triple(),
    ]);
    eprintln!("$ {}", show(&cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    if !status.success() {
        return Err(format!(
            "building the {} driver failed ({status})",
            arch.name()
        ));
    }
    Ok(ws
        .target_dir
        .join(arch.triple())
        .join("release")
        .join("tsm-linux-driver"))
}

/// The init script: each check prints its line only when it passed.
fn init_script() -> String {
    // dma-hw's first host call is VERSION: without a TSM the module refuses it (ENODEV, 19),
    // which the driver reports as the status word REFUSED | 19. On aarch64 the driver stops
    // before, as cleanly: QEMU's own tree has no TSM reservation to learn the TSM's memory
    // from (linux/driver/src/tree.rs).
    "#!/bin/busybox sh\n\
     B=/bin/busybox\n\
     $B mount -t proc proc /proc\n\
     $B mount -t sysfs sys /sys\n\
     $B mount -t devtmpfs dev /dev\n\
     $B insmod /tsm/tsm_host.ko && echo 'tsm-check: module loaded'\n\
     [ -c /dev/tsm ] && echo 'tsm-check: /dev/tsm present'\n\
     for d in /sys/bus/pci/drivers/tsm_host_edu/0*; do [ -e \"$d\" ] && echo 'tsm-check: edu bound to tsm_host_edu'; done\n\
     /tsm/tsm-linux-driver dma-hw /tsm/guest.bin > /tmp/driver.log 2>&1\n\
     rc=$?\n\
     $B cat /tmp/driver.log\n\
     [ $rc = 1 ] && $B grep -qE 'failed: VERSION.*value 0x8000000000000013|does not give the platform: no /reserved-memory/tsm@' /tmp/driver.log && echo 'tsm-check: driver refused cleanly'\n\
     $B dmesg | $B grep tsm_host\n\
     echo 'tsm-check: done'\n\
     $B poweroff -f\n"
        .to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The initramfs: busybox, the module, the driver, the guest payload, the init script.
pub fn initramfs(
    kernel: &Kernel,
    module: &Path,
    driver: &Path,
    guest: &Path,
) -> Result<Vec<u8>, String> {
    Ok(initramfs::archive(&[
        Entry::Dir("bin".into()),
        Entry::File("bin/busybox".into(), 0o755, read(&kernel.busybox())?),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("tmp".into()),
        Entry::Dir("tsm".into()),
        Entry::File("tsm/tsm_host.ko".into(), 0o644, read(module)?),
        Entry::File("tsm/tsm-linux-driver".into(), 0o755, read(driver)?),
        Entry::File("tsm/guest.bin".into(), 0o644, read(guest)?),
        Entry::File("init".into(), 0o755, init_script().into_bytes()),
    ]))
}

/// Boots `kernel` with `initrd` under QEMU and checks the init script's lines; true when all
/// came.
pub fn boot(ws: &Workspace, arch: Arch, kernel: &Kernel, initrd: &Path) -> Result<bool, String> {
    let (qemu, _) = crate::qemu_install::ensure()?;
    let mut cmd = qemu.command(arch);
    let console = match arch {
        Arch::Aarch64 => {
            cmd.args(["-M", "virt", "-cpu", "max"]);
            "ttyAMA0"
        }
        Arch::X86_64 => {
            cmd.args(["-M", "q35", "-cpu", "max"]);
            "ttyS0"
        }
    };
    let log = ws
        .logs_dir()
        .join(format!("linux-boot-check-{}.log", arch.name()));
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let out =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    cmd.args([
        "-m",
        "1G",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-device",
        "edu",
    ])
    .arg("-kernel")
    .arg(kernel.image())
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(format!("console={console} rdinit=/init panic=-1 quiet"))
    .stdin(Stdio::null())
    .stdout(out.try_clone().map_err(|e| e.to_string())?)
    .stderr(out);
    eprintln!("$ {}  (log: {})", show(&cmd), log.display());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    let start = Instant::now();
    let timed_out = loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break false;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            crate::procs::kill_tree(child.id());
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = String::from_utf8_lossy(&read(&log)?).into_owned();
    let missing: Vec<&str> = EXPECTED
        .iter()
        .copied()
        .filter(|l| !text.contains(l))
        .collect();
    for line in text.lines().filter(|l| l.contains("tsm")) {
        eprintln!("  | {line}");
    }
    if timed_out {
        eprintln!(
            "{}: the boot did not end within {BOOT_TIMEOUT:?}",
            arch.name()
        );
    }
    for m in &missing {
        eprintln!("{}: missing `{m}` (log: {})", arch.name(), log.display());
    }
    Ok(!timed_out && missing.is_empty())
}
