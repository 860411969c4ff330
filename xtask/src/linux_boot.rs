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
/// TCG; `pci=off` because the chipset's functions are read-only in the host's ECAM and Linux
/// writes their BARs while it enumerates them; `nolapic` because the MP table names a local
/// APIC, which Linux would otherwise program at power-off (docs/design.md "A Linux host").
fn cmdline(arch: Arch) -> String {
    match arch {
        Arch::Aarch64 => {
            "console=ttyAMA1 earlycon=pl011,mmio32,0x9040000 rdinit=/init panic=-1 loglevel=7"
                .into()
        }
        Arch::X86_64 => format!(
            "console=ttyS1 earlyprintk=serial,ttyS1,115200 rdinit=/init panic=-1 loglevel=7 \
             nokaslr lpj=1000000 pci=off nolapic tsm_probe={X86_TSM_BASE}"
        ),
    }
}

/// What `/init` prints when the probe of the TSM's memory ended as it must: the process that
/// read it was killed by the signal the injected fault means (aarch64: SIGBUS, the external
/// abort; x86_64: SIGSEGV, the #GP(0)) and the kernel lived on.
pub const PROBE_MARKER: &str = "tsm-linux: probe of TSM memory killed by";
/// What `/init` prints once user space runs, before the probe.
pub const UP_MARKER: &str = "tsm-linux: user space is up";

/// `/init`: mounts the kernel's file systems, says it is up, reads the first word of the TSM's
/// memory through `/dev/mem` in a child process (aarch64: its address from the device tree's
/// `/reserved-memory`; x86_64: from `tsm_probe` on the command line), reports how that process
/// ended, and powers off (aarch64: PSCI SYSTEM_OFF; x86_64: ACPI S5; both reach the TSM's
/// power-off).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "UP_MARKER (kernel $(/bin/busybox uname -r))"
# The kernel logs the fatal signals of processes without a handler (the probe's).
echo 1 > /proc/sys/debug/exception-trace 2>/dev/null
probe() {
    echo "tsm-linux: reading TSM memory at $1 through /dev/mem"
    /bin/busybox devmem "$1" 32
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
/bin/busybox poweroff -f
"#;

/// The files of one Linux boot.
pub struct LinuxBoot {
    arch: Arch,
    image: PathBuf,
    initrd: PathBuf,
    initrd_size: u32,
    console: PathBuf,
}

/// Fetches Debian's kernel and busybox if needed and writes the initramfs.
pub fn prepare(ws: &Workspace, arch: Arch) -> Result<LinuxBoot, String> {
    let kernel = crate::linux_packages::ensure(arch, false)?;
    let dir = ws.xtask_dir().join("linux").join(arch.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cpio = initramfs_for(arch, &kernel.busybox())?;
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
            if a.to_string_lossy().starts_with("loader,file=") {
                *a = image.clone();
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
/// `/bin/sh` linking to it, and [`INIT`] as `/init`.
fn initramfs_for(arch: Arch, busybox: &Path) -> Result<Vec<u8>, String> {
    let bb =
        std::fs::read(busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    Ok(initramfs::archive(&entries(arch, bb)))
}

/// The signal a probe of TSM memory must die of on `arch`, and the shell's status for it.
fn probe_signal(arch: Arch) -> (&'static str, u32) {
    match arch {
        Arch::Aarch64 => ("SIGBUS", 128 + 7),
        Arch::X86_64 => ("SIGSEGV", 128 + 11),
    }
}

fn entries(arch: Arch, busybox: Vec<u8>) -> Vec<Entry> {
    let (signal, status) = probe_signal(arch);
    let init = INIT
        .replace("UP_MARKER", UP_MARKER)
        .replace("PROBE_MARKER", PROBE_MARKER)
        .replace("EXPECTED_SIGNAL", signal)
        .replace("EXPECTED_STATUS", &status.to_string());
    vec![
        Entry::Dir("bin".into()),
        Entry::File("bin/busybox".into(), 0o755, busybox),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::File("init".into(), 0o755, init.into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_probes_the_tsm_memory_reports_and_powers_off() {
        for (arch, signal, status) in [
            (Arch::Aarch64, "SIGBUS", "135"),
            (Arch::X86_64, "SIGSEGV", "139"),
        ] {
            let e = entries(arch, b"\x7fELF-busybox".to_vec());
            let Some(Entry::File(_, mode, init)) = e
                .iter()
                .find(|x| matches!(x, Entry::File(n, _, _) if n == "init"))
            else {
                panic!("no /init");
            };
            assert_eq!(*mode, 0o755);
            let text = String::from_utf8(init.clone()).unwrap();
            assert!(text.starts_with("#!/bin/busybox sh\n"));
            assert!(text.contains(&format!("{PROBE_MARKER} {signal}")) && text.contains(UP_MARKER));
            assert!(text.contains(&format!("-eq {status} ]")));
            assert!(text.contains("reserved-memory/tsm@") && text.contains("devmem"));
            assert!(text.contains("$tsm_probe") && text.contains("poweroff -f"));
        }
    }

    #[test]
    fn x86_64_cmdline_names_the_tsm_base_and_com2() {
        let line = cmdline(Arch::X86_64);
        assert!(line.contains("console=ttyS1") && line.contains("tsm_probe=0x200000"));
        assert!(!line.contains("  "), "{line}");
    }
}
