//! `tsm-linux-driver <scenario> <guest image>`: runs one of the scenarios' host sides as a
//! Linux process over /dev/tsm (linux/module), the same driver code the bare-metal host payload
//! runs; exits 0 when it passed. Static and freestanding: `_start` below, system calls in
//! `tsm_linux_driver::sys`.
#![no_std]
#![no_main]

use core::fmt::Write;

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_linux_driver::host::{LinuxHost, Platform};
use tsm_linux_driver::sys::{self, Args, TsmFile};
use tsm_scenarios::layout::IMAGE_PAGES;
use tsm_scenarios::pool::MAX_GRANULES;

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x0, sp",
    "bl {entry}",
    entry = sym entry,
);

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// The platform's ECAM window, IOMMU and TSM memory. aarch64: ECAM and the TSM's memory from
/// the kernel's device tree (`tree`); the IOMMU, which the TSM hides from the tree, at QEMU
/// `virt`'s address (only `isolation-iommu` names it, a probe user space cannot make anyway).
/// x86_64: QEMU `q35`'s layout, as the bare-metal payload's `DEVICES` (the ACPI MCFG and the
/// E820 map would be the firmware's word: not read yet).
#[cfg(target_arch = "aarch64")]
fn platform(out: &mut Stdout) -> Option<(Pa, Pa, Pa)> {
    const IOMMU: Pa = Pa(0x0905_0000);
    const FDT: &core::ffi::CStr = c"/sys/firmware/fdt";
    // QEMU pads its tree to 1 MiB; the TSM's copy for the kernel is never larger.
    let mut blob = [0u8; 1 << 20];
    let Some(blob) = sys::read_file(FDT, &mut blob) else {
        let _ = writeln!(
            out,
            "tsm-linux-driver: cannot read {FDT:?} (or it exceeds 1 MiB)"
        );
        return None;
    };
    match tsm_linux_driver::tree::platform(blob) {
        Ok(t) => Some((t.ecam, IOMMU, t.tsm_memory)),
        Err(e) => {
            let _ = writeln!(
                out,
                "tsm-linux-driver: the device tree in {FDT:?} does not give the platform: {}",
                e.describe()
            );
            None
        }
    }
}
#[cfg(target_arch = "x86_64")]
fn platform(_: &mut Stdout) -> Option<(Pa, Pa, Pa)> {
    Some((Pa(0xB000_0000), Pa(0xFED9_0000), Pa(0x0020_0000)))
}

struct Stdout;

impl Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        sys::write_all(1, s.as_bytes());
        Ok(())
    }
}

extern "C" fn entry(sp: usize) -> ! {
    // SAFETY: `_start` passes the stack pointer Linux entered it with.
    let args = unsafe { Args::from_initial_stack(sp) };
    sys::exit(run(&args))
}

fn run(args: &Args) -> u8 {
    let mut out = Stdout;
    let (Some(name), Some(image_path)) = (args.get(1), args.get(2)) else {
        let _ = writeln!(out, "usage: tsm-linux-driver <scenario> <guest image>");
        return 2;
    };
    let name = name.to_str().unwrap_or("");
    let Some(id) = scenario(name) else {
        let _ = writeln!(out, "tsm-linux-driver: no scenario {name}");
        return 2;
    };
    let mut image = [0u8; (IMAGE_PAGES * GRANULE_SIZE) as usize];
    let Some(guest_image) = sys::read_file(image_path, &mut image) else {
        let _ = writeln!(
            out,
            "tsm-linux-driver: cannot read the guest image {image_path:?}"
        );
        return 2;
    };
    let dev = match TsmFile::open() {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(out, "tsm-linux-driver: cannot open /dev/tsm: errno {}", e.0);
            return 1;
        }
    };
    let Some((ecam, iommu, tsm_memory)) = platform(&mut out) else {
        return 1;
    };
    let platform = Platform {
        ecam,
        iommu,
        tsm_memory,
        guest_image,
    };
    let mut host = match LinuxHost::new(dev, MAX_GRANULES, platform) {
        Ok(h) => h,
        Err(e) => {
            let _ = writeln!(out, "tsm-linux-driver: cannot set up the host: {e:?}");
            return 1;
        }
    };
    // The scenario's own log lines (`say!`), as the host payload logs them.
    tsm_scenarios::narrate::set_sink(|s| sys::write_all(1, s.as_bytes()));
    let _ = writeln!(out, "tsm-linux-driver: running {name}");
    match tsm_scenarios::run(&mut host, id) {
        Ok(()) => {
            let _ = writeln!(out, "tsm-linux-driver: {name} passed");
            0
        }
        Err(f) => {
            let _ = writeln!(
                out,
                "tsm-linux-driver: {name} failed: {} (scenarios line {}, value {:#x})",
                f.what, f.line, f.got
            );
            1
        }
    }
}

/// The number of the scenario named `name` (`mmio-private` or `MMIO_PRIVATE`).
fn scenario(name: &str) -> Option<u32> {
    tsm_scenarios::id::ALL.iter().find_map(|&(n, id)| {
        let same = n.len() == name.len()
            && n.bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b.to_ascii_uppercase() || (a == b'_' && b == b'-'));
        same.then_some(id)
    })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Stdout, "tsm-linux-driver: panic: {info}");
    sys::exit(101)
}
