//! A Linux arm64 `Image` as the host (docs/design.md, "A Linux host"): how boot tells it from
//! the bare-metal host payload, and what the kernel's boot protocol needs before its first
//! instruction (Documentation/arm64/booting.rst): the Image at a 2 MiB-aligned base
//! (`text_offset` 0), x0 = the physical address of a device tree, MMU off, EL1h with D, A, I, F
//! masked. The device tree is QEMU's, rewritten (`crate::fdt_rewrite`) with the TSM's memory
//! reserved `no-map`, the TSM's UART and SMMU gone, and the initrd in `/chosen`; the kernel
//! command line is QEMU's (`-append`), kept as it is.
//!
//! Layout (all host DRAM; the loader puts the files there before the TSM runs):
//! `0x4000_0000` QEMU's DTB, right after it (page aligned) the rewritten one, `0x40FF_F000`
//! the parameters page (its second word: the initrd's size in bytes), `0x4100_0000` the
//! Image ([`super::host::HOST_ENTRY`]), `0x4800_0000` the initrd ([`INITRD_BASE`]).

use core::sync::atomic::{AtomicBool, Ordering};

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::host::HOST_ENTRY;
use crate::fdt_rewrite::{self, Edits, Value};
use crate::platform::MemRange;

/// `ARM\x64` at offset 0x38 of an arm64 Image header, little-endian.
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Where the loader puts the initrd (xtask's `linux` scenario, docs/design.md).
pub const INITRD_BASE: u64 = 0x4800_0000;

/// Set by the boot CPU, before any other CPU runs, when the host is a Linux Image.
static LINUX: AtomicBool = AtomicBool::new(false);

/// Whether the host is a Linux Image (after [`detect`]).
pub fn is_linux() -> bool {
    LINUX.load(Ordering::Acquire)
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: `addr` is a 4-aligned address of host DRAM in the image header or the parameters
    // page, identity-mapped by the TSM's stage 1; boot reads it before any host code runs, so
    // nothing writes it concurrently.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn read_u64(addr: u64) -> u64 {
    u64::from(read_u32(addr)) | (u64::from(read_u32(addr + 4)) << 32)
}

/// The Image header at the host entry, if there is one: `(text_offset, image_size)`.
fn header() -> Option<(u64, u64)> {
    (read_u32(HOST_ENTRY + 0x38) == IMAGE_MAGIC)
        .then(|| (read_u64(HOST_ENTRY + 0x08), read_u64(HOST_ENTRY + 0x10)))
}

/// Looks at what the loader put at the host entry and records whether it is a Linux Image.
/// Boot CPU only, before the host's stage 2 is built (the host's devices depend on it).
pub fn detect() -> bool {
    let linux = header().is_some();
    LINUX.store(linux, Ordering::Release);
    linux
}

/// Whether two ranges share a byte.
fn overlaps(a: &MemRange, b: &MemRange) -> bool {
    a.base.0 < b.base.0.saturating_add(b.size) && b.base.0 < a.base.0.saturating_add(a.size)
}

/// Checks the Image and the initrd against the memory map and writes the host's device tree
/// next to QEMU's; its address (the kernel's x0). `dtb` is QEMU's blob, `params` the host
/// parameters page, `tsm` the TSM's memory, `drop_units` the devices the TSM keeps.
pub fn prepare(
    dtb: &[u8],
    dram: &MemRange,
    tsm: &MemRange,
    params: u64,
    drop_units: &[u64],
) -> Result<u64, &'static str> {
    let (text_offset, image_size) = header().ok_or("no arm64 Image header at the host entry")?;
    if text_offset != 0 {
        return Err("the Image's text_offset is not 0 (a kernel older than 3.17?)");
    }
    let image = MemRange {
        base: Pa(HOST_ENTRY),
        size: image_size.max(GRANULE_SIZE),
    };
    let initrd_size = u64::from(read_u32(params + 4));
    let initrd = MemRange {
        base: Pa(INITRD_BASE),
        size: initrd_size.max(1),
    };
    let out_base = (dtb.as_ptr() as u64)
        .checked_add(dtb.len() as u64)
        .and_then(|e| e.checked_next_multiple_of(GRANULE_SIZE))
        .ok_or("the device tree's end overflows")?;
    let out = MemRange {
        base: Pa(out_base),
        size: tsm.base.0.saturating_sub(out_base),
    };
    if out.size == 0 || !dram.contains(out.base, out.size) {
        return Err("no room for the host's device tree between QEMU's and the TSM");
    }
    for (what, r) in [("the Image", &image), ("the initrd", &initrd)] {
        if !dram.contains(r.base, r.size) || overlaps(r, tsm) || overlaps(r, &out) {
            defmt::error!(
                "{=str} at {=u64:#x}+{=u64:#x} is outside DRAM or overlaps the TSM or the device tree",
                what,
                r.base.0,
                r.size
            );
            return Err("a Linux host file does not fit the memory layout");
        }
    }
    if initrd_size > 0 && overlaps(&image, &initrd) {
        return Err("the Image (with its BSS) overlaps the initrd");
    }
    let chosen = [
        ("linux,initrd-start", Value::U64(INITRD_BASE)),
        ("linux,initrd-end", Value::U64(INITRD_BASE + initrd_size)),
    ];
    let edits = Edits {
        drop_units,
        reserved: &[(tsm.base.0, tsm.size)],
        chosen: if initrd_size > 0 { &chosen } else { &[] },
    };
    // SAFETY: [out.base, out.base + out.size) is host DRAM between QEMU's device tree and the
    // TSM's memory (checked above), identity-mapped; no host code runs yet and nothing else
    // uses it, so this is the only reference.
    let buf = unsafe { core::slice::from_raw_parts_mut(out.base.0 as *mut u8, out.size as usize) };
    let len = fdt_rewrite::rewrite(dtb, &edits, buf).map_err(|e| match e {
        fdt_rewrite::FdtError::BadHeader => "QEMU's device tree has a bad header",
        fdt_rewrite::FdtError::Malformed => "QEMU's device tree is malformed",
        fdt_rewrite::FdtError::HasReservedMemory => {
            "QEMU's device tree already has a /reserved-memory node"
        }
        fdt_rewrite::FdtError::TooBig => "the host's device tree does not fit below the TSM",
        fdt_rewrite::FdtError::BadEdit => "a device-tree edit does not fit its cells",
    })?;
    // The kernel reads the tree with its MMU and caches off.
    super::smp::clean_to_poc(out.base.0, len as u64);
    defmt::info!(
        "host: Linux Image at {=u64:#x} ({=u64} bytes), initrd at {=u64:#x} ({=u64} bytes), device tree at {=u64:#x} ({=usize} bytes, TSM memory {=u64:#x}+{=u64:#x} reserved no-map)",
        HOST_ENTRY,
        image_size,
        INITRD_BASE,
        initrd_size,
        out.base.0,
        len,
        tsm.base.0,
        tsm.size
    );
    Ok(out.base.0)
}
