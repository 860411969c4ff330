//! What a run of the `linux` scenario adds to QEMU (docs/design.md, "A Linux host"): Debian's
//! kernel Image in place of the host payload, the initramfs (the module, the user-space driver
//! and the guest payload, run by its `/init`), the kernel command line, and a second UART for the kernel's console (the first stays the TSM's), whose output joins the
//! run's log once QEMU has ended.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::arch::Arch;
use crate::decode::{Line, Program};
use crate::initramfs::{self, Entry};
use crate::workspace::Workspace;

/// Where the Image goes: the host entry (`hal/src/aarch64/host.rs`, `HOST_ENTRY`), 2 MiB
/// aligned as the arm64 boot protocol wants (the Image's text_offset is 0).
const IMAGE_ADDR: u64 = 0x4100_0000;
/// Where the initrd goes (`hal/src/aarch64/linux.rs`, `INITRD_BASE`); its size travels in the
/// parameters page's second word (the run's `param`).
const INITRD_ADDR: u64 = 0x4800_0000;
/// The kernel command line (QEMU puts it in `/chosen/bootargs`, which the TSM keeps). The
/// kernel's UART is the second PL011, `serial1` in the tree's aliases, so `ttyAMA1`; `panic=-1`
/// turns a panic into a reboot, which the TSM refuses, so a panicking kernel ends the run
/// quickly instead of waiting for the timeout.
const CMDLINE: &str =
    "console=ttyAMA1 earlycon=pl011,mmio32,0x9040000 rdinit=/init panic=-1 loglevel=7";

/// Why the `linux` scenario does not run on x86_64.
pub const NOT_ON_X86_64: &str = "the linux scenario is not yet supported on x86_64: the TSM boots \
     Debian's kernel as its host on aarch64 only (issue 18)";

/// What `/init` prints once user space runs.
pub const UP_MARKER: &str = "tsm-linux: user space is up";
/// What `/init` prints once the module loaded (its own line says whether a TSM answered).
pub const MODULE_MARKER: &str = "tsm-linux: tsm_host.ko loaded";
/// What the user-space driver prints when the whole device assignment passed.
pub const DRIVER_MARKER: &str = "tsm-linux-driver: story passed";
/// What `/init` prints when the driver's `isolation-tsm` failed as it must under Linux: its
/// probe of the TSM's memory is one user space cannot make (`Probe::Unavailable`), reported as
/// such rather than as blocked or reached.
pub const UNAVAILABLE_MARKER: &str =
    "tsm-linux: isolation-tsm failed as a probe this host cannot make";
/// What `/init` prints when the kernel logged all three of the driver's own probes of pages the
/// TSM took from the host (the TVM's private page and edu's BAR0 while the TVM held it in
/// `story`, a delegated granule in `isolation-delegated`) as the external aborts that killed
/// the probing child processes. (`devmem` cannot make these
/// probes: Debian's kernel has STRICT_DEVMEM, so `/dev/mem` refuses RAM and a claimed BAR.)
pub const DELEGATED_MARKER: &str =
    "tsm-linux: the driver's probes of pages the TSM holds ended in external aborts";
/// What `/init` prints when the probe of the TSM's memory ended as it must: the process that
/// read it was killed by SIGBUS (the external abort the TSM injected) and the kernel lived on.
pub const PROBE_MARKER: &str = "tsm-linux: probe of TSM memory killed by SIGBUS";

/// `/init`: mounts the kernel's file systems, says it is up, loads the module and runs the
/// user-space driver's `story` (the whole device assignment, the bare-metal host's own driver
/// routines over /dev/tsm), `isolation-delegated` and `isolation-tsm` (which must fail: user
/// space cannot map the TSM's memory), checks the kernel's log of the driver's probes, reads the first
/// word of the TSM's memory (found in the device tree's `/reserved-memory`) through `/dev/mem`
/// in a child process, reports how that process ended, and powers off (PSCI SYSTEM_OFF,
/// through the TSM). Each marker is printed only once its check passed.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
echo "UP_MARKER (kernel $($B uname -r))"
# The kernel logs the fatal signals of processes without a handler (the probes' SIGBUS).
echo 1 > /proc/sys/debug/exception-trace
if $B insmod /tsm/tsm_host.ko; then
    echo "MODULE_MARKER"
    /tsm/tsm-linux-driver story /tsm/guest.bin
    echo "tsm-linux: the driver's story exited with status $?"
    # A granule the driver delegated and no object holds yet, loaded through the pool mapping.
    /tsm/tsm-linux-driver isolation-delegated /tsm/guest.bin
    echo "tsm-linux: the driver's isolation-delegated exited with status $?"
    # The TSM's memory is not the driver's to map: the probe must fail as one this host
    # cannot make, neither blocked nor reached.
    out=$(/tsm/tsm-linux-driver isolation-tsm /tsm/guest.bin)
    rc=$?
    echo "$out"
    if [ "$rc" -eq 1 ] && echo "$out" | $B grep -q 'failed: this host cannot make the access the probe needs'; then
        echo "UNAVAILABLE_MARKER"
    fi
    # The probing children are the driver's forks, which the kernel names after it: the
    # story's of the TVM's private page and of edu's BAR0 while the TVM held it, and
    # isolation-delegated's of its delegated granule.
    aborts=$($B dmesg | $B grep -c 'tsm-linux-drive.*unhandled exception: DABT (lower EL), ESR 0x0*92000010, synchronous external abort')
    if [ "$aborts" -ge 3 ]; then
        echo "DELEGATED_MARKER ($aborts)"
    fi
fi
for node in /proc/device-tree/reserved-memory/tsm@*; do
    addr=0x${node##*@}
    echo "tsm-linux: reading TSM memory at $addr through /dev/mem"
    $B devmem "$addr" 32
    status=$?
    if [ "$status" -eq 135 ]; then
        echo "PROBE_MARKER (status $status)"
    else
        echo "tsm-linux: probe of TSM memory ended with status $status, not SIGBUS"
    fi
done
$B poweroff -f
"#;

/// The files of one Linux boot.
pub struct LinuxBoot {
    image: PathBuf,
    initrd: PathBuf,
    initrd_size: u32,
    console: PathBuf,
}

/// What goes into the initramfs besides busybox: the module, the user-space driver, and the
/// guest payload the driver loads into its TVM.
struct Payload {
    module: PathBuf,
    driver: PathBuf,
    guest: PathBuf,
}

/// Fetches Debian's kernel and busybox if needed, builds the module, the driver and the guest
/// payload, and writes the initramfs.
pub fn prepare(ws: &Workspace, arch: Arch) -> Result<LinuxBoot, String> {
    if arch == Arch::X86_64 {
        return Err(NOT_ON_X86_64.into());
    }
    let kernel = crate::linux_packages::ensure(arch, false)?;
    let payload = Payload {
        module: crate::linux_module::build(ws, arch, &kernel)?.ko,
        driver: crate::linux_check::build_driver(ws, arch)?,
        guest: crate::images::build_guest(ws, arch)?.0,
    };
    let dir = ws.xtask_dir().join("linux").join(arch.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cpio = initramfs_for(&kernel.busybox(), &payload)?;
    let initrd = dir.join("initramfs.cpio");
    std::fs::write(&initrd, &cpio)
        .map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
    let console = ws
        .logs_dir()
        .join(format!("{}-linux-console.txt", arch.name()));
    std::fs::create_dir_all(ws.logs_dir()).map_err(|e| format!("cannot create logs: {e}"))?;
    // A stale console from an earlier run must not pass this one.
    let _ = std::fs::remove_file(&console);
    Ok(LinuxBoot {
        image: kernel.image(),
        initrd,
        initrd_size: u32::try_from(cpio.len()).map_err(|_| "initramfs over 4 GiB")?,
        console,
    })
}

impl LinuxBoot {
    /// The parameters page's second word: the initrd's size.
    pub fn param(&self) -> u32 {
        self.initrd_size
    }

    /// Turns the arch's QEMU line into this boot's: the Image replaces the host payload's
    /// loader, and the initrd, the command line and the kernel's UART are added.
    pub fn apply(&self, args: &mut Vec<OsString>) {
        let mut image = OsString::from("loader,file=");
        image.push(&self.image);
        image.push(format!(",addr={IMAGE_ADDR:#x},force-raw=on"));
        for a in args.iter_mut() {
            if a.to_string_lossy().starts_with("loader,file=") {
                *a = image.clone();
            }
        }
        let mut initrd = OsString::from("loader,file=");
        initrd.push(&self.initrd);
        initrd.push(format!(",addr={INITRD_ADDR:#x},force-raw=on"));
        let mut serial = OsString::from("file:");
        serial.push(&self.console);
        args.extend([
            "-device".into(),
            initrd,
            "-append".into(),
            CMDLINE.into(),
            "-serial".into(),
            serial,
        ]);
    }

    /// The kernel's console output, one line each.
    pub fn console_lines(&self) -> Vec<Line> {
        let text = std::fs::read(&self.console).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .map(|l| Line {
                program: Some(Program::Linux),
                time: None,
                level: "",
                message: l.trim_end_matches('\r').to_string(),
            })
            .collect()
    }
}

/// The scenario's initramfs for `busybox` (a static busybox of the kernel's architecture): it,
/// `/bin/sh` linking to it, the payload in `/tsm`, and [`INIT`] as `/init`.
fn initramfs_for(busybox: &Path, p: &Payload) -> Result<Vec<u8>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    Ok(initramfs::archive(&entries(
        read(busybox)?,
        read(&p.module)?,
        read(&p.driver)?,
        read(&p.guest)?,
    )))
}

fn entries(busybox: Vec<u8>, module: Vec<u8>, driver: Vec<u8>, guest: Vec<u8>) -> Vec<Entry> {
    let init = INIT
        .replace("UP_MARKER", UP_MARKER)
        .replace("MODULE_MARKER", MODULE_MARKER)
        .replace("DELEGATED_MARKER", DELEGATED_MARKER)
        .replace("UNAVAILABLE_MARKER", UNAVAILABLE_MARKER)
        .replace("PROBE_MARKER", PROBE_MARKER);
    vec![
        Entry::Dir("bin".into()),
        Entry::File("bin/busybox".into(), 0o755, busybox),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("tsm".into()),
        Entry::File("tsm/tsm_host.ko".into(), 0o644, module),
        Entry::File("tsm/tsm-linux-driver".into(), 0o755, driver),
        Entry::File("tsm/guest.bin".into(), 0o644, guest),
        Entry::File("init".into(), 0o755, init.into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_the_module_runs_the_story_probes_and_powers_off() {
        let e = entries(
            b"\x7fELF-busybox".to_vec(),
            b"ko".to_vec(),
            b"drv".to_vec(),
            b"guest".to_vec(),
        );
        let file = |name: &str| {
            e.iter().find_map(|x| match x {
                Entry::File(n, mode, data) if n == name => Some((*mode, data.clone())),
                _ => None,
            })
        };
        assert_eq!(file("tsm/tsm-linux-driver"), Some((0o755, b"drv".to_vec())));
        assert_eq!(file("tsm/guest.bin"), Some((0o644, b"guest".to_vec())));
        assert_eq!(file("tsm/tsm_host.ko"), Some((0o644, b"ko".to_vec())));
        let (mode, init) = file("init").expect("no /init");
        assert_eq!(mode, 0o755);
        let text = String::from_utf8(init).unwrap();
        assert!(text.starts_with("#!/bin/busybox sh\n"));
        for marker in [
            UP_MARKER,
            MODULE_MARKER,
            DELEGATED_MARKER,
            UNAVAILABLE_MARKER,
            PROBE_MARKER,
        ] {
            assert!(text.contains(marker), "{marker}");
        }
        // Every placeholder was replaced.
        assert!(!text.contains("_MARKER"));
        assert!(text.contains("insmod /tsm/tsm_host.ko"));
        for run in ["story", "isolation-delegated", "isolation-tsm"] {
            assert!(text.contains(&format!("/tsm/tsm-linux-driver {run} /tsm/guest.bin")));
        }
        assert!(text.contains("reserved-memory/tsm@") && text.contains("devmem"));
        assert!(text.ends_with("poweroff -f\n"));
    }
}
