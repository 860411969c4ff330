//! What a run of the `linux` scenario adds to QEMU (docs/design.md, "A Linux host"): Debian's
//! kernel Image in place of the host payload, the initramfs, the kernel command line, and a
//! second UART for the kernel's console (the first stays the TSM's), whose output joins the
//! run's log once QEMU has ended.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::arch::Arch;
use crate::decode::{Line, Program};
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

/// The files of one Linux boot.
pub struct LinuxBoot {
    image: PathBuf,
    initrd: PathBuf,
    initrd_size: u32,
    console: PathBuf,
}

/// Fetches Debian's kernel and busybox if needed and writes the initramfs.
pub fn prepare(ws: &Workspace, arch: Arch) -> Result<LinuxBoot, String> {
    if arch == Arch::X86_64 {
        return Err(NOT_ON_X86_64.into());
    }
    let kernel = crate::linux_packages::ensure(arch, false)?;
    let dir = ws.xtask_dir().join("linux").join(arch.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cpio = crate::initramfs::build(&kernel.busybox())?;
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
