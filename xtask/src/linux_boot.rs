//! What a run of the `linux` scenario adds to QEMU (docs/design.md, "A Linux host"): Debian's
//! kernel Image in place of the host payload, the initramfs, the kernel command line, and a
//! second UART for the kernel's console (the first stays the TSM's), whose output joins the
//! run's log once QEMU has ended.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::arch::Arch;
use crate::decode::{Line, Program};
use crate::initramfs::{self, Entry};
use crate::workspace::Workspace;

/// Where the kernel goes: the host entry (aarch64: `hal/src/aarch64/host.rs`, `HOST_ENTRY`,
/// 2 MiB aligned as the arm64 boot protocol wants, the Image's text_offset being 0; x86_64:
/// `hal/src/x86_64/host.rs`, the whole bzImage, which decompresses itself above it).
fn image_addr(arch: Arch) -> u64 {
    match arch {
        Arch::Aarch64 => 0x4100_0000,
        Arch::X86_64 => 0x0100_0000,
    }
}

/// Where the initrd goes (`hal/src/<arch>/linux.rs`, `INITRD_BASE`: DRAM base + 128 MiB); its
/// size travels in the parameters page's second word (the run's `param`).
fn initrd_addr(arch: Arch) -> u64 {
    match arch {
        Arch::Aarch64 => 0x4800_0000,
        Arch::X86_64 => 0x0800_0000,
    }
}

/// The first byte of the TSM's memory on x86_64 (its link address, docs/design.md "Memory
/// layout on QEMU"): what `/init` probes there, handed to it on the command line (an unknown
/// `name=value` parameter the kernel passes to init's environment).
const X86_TSM_BASE: &str = "0x200000";

/// The kernel command line (aarch64: QEMU puts it in `/chosen/bootargs`, which the TSM keeps;
/// x86_64: QEMU's PVH start info, which the TSM copies into the kernel's zero page). The
/// kernel's UART is the second one (the first is the TSM's): aarch64's second PL011 (`serial1`
/// in the tree's aliases, so `ttyAMA1`), x86_64's COM2 (`ttyS1`). `panic=-1` turns a panic into
/// a reboot, which the TSM refuses, so a panicking kernel ends the run quickly instead of
/// waiting for the timeout. x86_64: `nokaslr` keeps the kernel where the TSM checked it fits;
/// `lpj=` skips the delay-loop calibration against the timer tick, which takes seconds under
/// TCG; `nolapic` because the MP table names a local
/// APIC, which Linux would otherwise program at power-off (docs/design.md "A Linux host").
fn cmdline(arch: Arch) -> String {
    match arch {
        Arch::Aarch64 => {
            "console=ttyAMA1 earlycon=pl011,mmio32,0x9040000 rdinit=/init panic=-1 loglevel=7"
                .into()
        }
        Arch::X86_64 => format!(
            "console=ttyS1 earlyprintk=serial,ttyS1,115200 rdinit=/init panic=-1 loglevel=7 \
             nokaslr lpj=1000000 nolapic tsm_probe={X86_TSM_BASE}"
        ),
    }
}

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
/// `story`, a delegated granule in `isolation-delegated`) as the faults that killed the probing
/// child processes (aarch64: the injected external aborts; x86_64: the injected #GP(0)s). (`devmem` cannot make these
/// probes: Debian's kernel has STRICT_DEVMEM, so `/dev/mem` refuses RAM and a claimed BAR.)
pub const DELEGATED_MARKER: &str =
    "tsm-linux: the driver's probes of pages the TSM holds ended in the faults it injects";
/// What `/init` prints when the probe of the TSM's memory ended as it must: the process that
/// read it was killed by the signal the injected fault means (aarch64: SIGBUS, the external
/// abort; x86_64: SIGSEGV, the #GP(0)) and the kernel lived on.
pub const PROBE_MARKER: &str = "tsm-linux: probe of TSM memory killed by";

/// `/init`: mounts the kernel's file systems and says it is up; where the initramfs carries the
/// module, loads it and runs the user-space driver's `story` (the whole device
/// assignment, the bare-metal host's own driver routines over /dev/tsm), `isolation-delegated`
/// and `isolation-tsm` (which must fail: user space cannot map the TSM's memory), and checks the
/// kernel's log of the driver's probes; then reads the first word of the TSM's memory through
/// `/dev/mem` in a child process (aarch64: its address from the device tree's
/// `/reserved-memory`; x86_64: from `tsm_probe` on the command line), reports how that process
/// ended, and powers off (aarch64: PSCI SYSTEM_OFF; x86_64: ACPI S5; both reach the TSM's
/// power-off). Each marker is printed only once its check passed.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
echo "UP_MARKER (kernel $($B uname -r))"
# The kernel logs the fatal signals of processes without a handler (the probes').
echo 1 > /proc/sys/debug/exception-trace 2>/dev/null
if [ -e /tsm/tsm_host.ko ] && $B insmod /tsm/tsm_host.ko; then
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
    aborts=$($B dmesg | $B grep -c 'ABORT_PATTERN')
    if [ "$aborts" -ge 3 ]; then
        echo "DELEGATED_MARKER ($aborts)"
    fi
fi
probe() {
    echo "tsm-linux: reading TSM memory at $1 through /dev/mem"
    $B devmem "$1" 32
    status=$?
    if [ "$status" -eq EXPECTED_STATUS ]; then
        echo "PROBE_MARKER EXPECTED_SIGNAL (status $status)"
    else
        echo "tsm-linux: probe of TSM memory ended with status $status, not EXPECTED_SIGNAL"
    fi
}
if [ -n "$tsm_probe" ]; then
    probe "$tsm_probe"
fi
for node in /proc/device-tree/reserved-memory/tsm@*; do
    [ -e "$node" ] && probe "0x${node##*@}"
done
$B poweroff -f
"#;

/// The files of one Linux boot.
pub struct LinuxBoot {
    arch: Arch,
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
    let kernel = crate::linux_packages::ensure(arch, false)?;
    let payload = Payload {
        module: crate::linux_module::build(ws, arch, &kernel)?.ko,
        driver: crate::linux_check::build_driver(ws, arch)?,
        guest: crate::images::build_guest(ws, arch)?.0,
    };
    let dir = ws.xtask_dir().join("linux").join(arch.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cpio = initramfs_for(arch, &kernel.busybox(), &payload)?;
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
        arch,
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

    /// Turns the arch's QEMU line into this boot's: the kernel replaces the host payload's
    /// loader, and the initrd, the command line and the kernel's UART are added; on x86_64 the
    /// machine has one CPU (Linux would start others with INIT and SIPI from its local APIC,
    /// and the host has none: docs/design.md "A Linux host on x86_64").
    pub fn apply(&self, args: &mut Vec<OsString>) {
        let mut image = OsString::from("loader,file=");
        image.push(&self.image);
        image.push(format!(",addr={:#x},force-raw=on", image_addr(self.arch)));
        for a in args.iter_mut() {
            let text = a.to_string_lossy();
            if text.starts_with("loader,file=") {
                *a = image.clone();
            } else if self.arch == Arch::Aarch64 && text.starts_with("virt,") {
                // `highmem=on`: ECAM at 0x40_1000_0000 and the 64-bit BAR window at 512 GiB,
                // which the kernel finds in the tree and the TSM's 40-bit host stage 2 maps
                // (docs/design.md "A Linux host"). The payload keeps `highmem=off`: it knows
                // the low ECAM from QEMU's layout.
                *a = text.replace("highmem=off", "highmem=on").into();
            }
        }
        let mut initrd = OsString::from("loader,file=");
        initrd.push(&self.initrd);
        initrd.push(format!(",addr={:#x},force-raw=on", initrd_addr(self.arch)));
        let mut serial = OsString::from("file:");
        serial.push(&self.console);
        args.extend([
            "-device".into(),
            initrd,
            "-append".into(),
            cmdline(self.arch).into(),
            "-serial".into(),
            serial,
        ]);
        if self.arch == Arch::X86_64 {
            args.extend(["-smp".into(), "1".into()]);
        }
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
fn initramfs_for(arch: Arch, busybox: &Path, p: &Payload) -> Result<Vec<u8>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let payload = [read(&p.module)?, read(&p.driver)?, read(&p.guest)?];
    Ok(initramfs::archive(&entries(arch, read(busybox)?, payload)))
}

/// The signal a probe of TSM memory must die of on `arch`, and the shell's status for it.
fn probe_signal(arch: Arch) -> (&'static str, u32) {
    match arch {
        Arch::Aarch64 => ("SIGBUS", 128 + 7),
        Arch::X86_64 => ("SIGSEGV", 128 + 11),
    }
}

/// What the kernel logs for a probing child of the driver's that the TSM's fault killed
/// (aarch64: the injected external abort; x86_64: the injected #GP(0)), as a `grep` pattern.
fn abort_pattern(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => {
            "tsm-linux-drive.*unhandled exception: DABT (lower EL), ESR 0x0*92000010, synchronous external abort"
        }
        Arch::X86_64 => "tsm-linux-drive.* general protection fault ip:.* error:0",
    }
}

/// The initramfs's entries; `payload` is the module, the driver and the guest payload.
fn entries(arch: Arch, busybox: Vec<u8>, payload: [Vec<u8>; 3]) -> Vec<Entry> {
    let (signal, status) = probe_signal(arch);
    let init = INIT
        .replace("UP_MARKER", UP_MARKER)
        .replace("MODULE_MARKER", MODULE_MARKER)
        .replace("DELEGATED_MARKER", DELEGATED_MARKER)
        .replace("UNAVAILABLE_MARKER", UNAVAILABLE_MARKER)
        .replace("PROBE_MARKER", PROBE_MARKER)
        .replace("ABORT_PATTERN", abort_pattern(arch))
        .replace("EXPECTED_SIGNAL", signal)
        .replace("EXPECTED_STATUS", &status.to_string());
    let mut e = vec![
        Entry::Dir("bin".into()),
        Entry::File("bin/busybox".into(), 0o755, busybox),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
    ];
    let [module, driver, guest] = payload;
    e.extend([
        Entry::Dir("tsm".into()),
        Entry::File("tsm/tsm_host.ko".into(), 0o644, module),
        Entry::File("tsm/tsm-linux-driver".into(), 0o755, driver),
        Entry::File("tsm/guest.bin".into(), 0o644, guest),
    ]);
    e.push(Entry::File("init".into(), 0o755, init.into_bytes()));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(e: &[Entry], name: &str) -> Option<(u32, Vec<u8>)> {
        e.iter().find_map(|x| match x {
            Entry::File(n, mode, data) if n == name => Some((*mode, data.clone())),
            _ => None,
        })
    }

    #[test]
    fn init_loads_the_module_runs_the_story_probes_and_powers_off() {
        let payload = [b"ko".to_vec(), b"drv".to_vec(), b"guest".to_vec()];
        let e = entries(Arch::Aarch64, b"\x7fELF-busybox".to_vec(), payload);
        assert_eq!(
            file(&e, "tsm/tsm-linux-driver"),
            Some((0o755, b"drv".to_vec()))
        );
        assert_eq!(file(&e, "tsm/guest.bin"), Some((0o644, b"guest".to_vec())));
        assert_eq!(file(&e, "tsm/tsm_host.ko"), Some((0o644, b"ko".to_vec())));
        let (mode, init) = file(&e, "init").expect("no /init");
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
        assert!(!text.contains("_MARKER") && !text.contains("EXPECTED_"));
        assert!(text.contains("insmod /tsm/tsm_host.ko"));
        for run in ["story", "isolation-delegated", "isolation-tsm"] {
            assert!(text.contains(&format!("/tsm/tsm-linux-driver {run} /tsm/guest.bin")));
        }
        assert!(text.ends_with("poweroff -f\n"));
    }

    #[test]
    fn init_probes_the_tsm_memory_reports_and_powers_off() {
        for (arch, signal, status) in [
            (Arch::Aarch64, "SIGBUS", "135"),
            (Arch::X86_64, "SIGSEGV", "139"),
        ] {
            let payload = [b"ko".to_vec(), b"drv".to_vec(), b"guest".to_vec()];
            let e = entries(arch, b"\x7fELF-busybox".to_vec(), payload);
            assert_eq!(file(&e, "tsm/tsm_host.ko"), Some((0o644, b"ko".to_vec())));
            let (mode, init) = file(&e, "init").expect("no /init");
            assert_eq!(mode, 0o755);
            let text = String::from_utf8(init).unwrap();
            assert!(text.contains(&format!("{PROBE_MARKER} {signal}")) && text.contains(UP_MARKER));
            assert!(text.contains(&format!("-eq {status} ]")));
            assert!(text.contains("reserved-memory/tsm@") && text.contains("devmem"));
            assert!(text.contains("$tsm_probe") && text.contains("poweroff -f"));
            // The driver's probes are counted by what the kernel logs for this arch's fault.
            assert!(text.contains(abort_pattern(arch)) && !text.contains("ABORT_PATTERN"));
        }
    }

    #[test]
    fn aarch64_linux_runs_with_highmem_and_the_payload_without() {
        let boot = |arch| LinuxBoot {
            arch,
            image: "Image".into(),
            initrd: "initrd".into(),
            initrd_size: 0,
            console: "console".into(),
        };
        let line = |arch: Arch, linux: bool| {
            let mut args = arch.qemu_args(Path::new("tsm"), Path::new("host"), 1, 2, 0);
            if linux {
                boot(arch).apply(&mut args);
            }
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let linux = line(Arch::Aarch64, true);
        assert!(linux.contains("iommu=smmuv3,highmem=on ") && !linux.contains("highmem=off"));
        assert!(linux.contains("loader,file=Image,addr=0x41000000,force-raw=on"));
        assert!(line(Arch::Aarch64, false).contains("highmem=off"));
        assert!(!line(Arch::X86_64, true).contains("highmem"));
    }

    #[test]
    fn x86_64_cmdline_names_the_tsm_base_and_com2() {
        let line = cmdline(Arch::X86_64);
        assert!(line.contains("console=ttyS1") && line.contains("tsm_probe=0x200000"));
        assert!(!line.contains("  "), "{line}");
    }
}
