//! The MMIO the TSM's tables map beyond DRAM and the local APIC: the VT-d registers for the TSM
//! alone, and for the host (uncached, in its nested table too) PCI configuration space of bus 0 and the memory
//! BARs firmware assigned there, so the host drives its devices (QEMU's `edu`) itself.
//!
//! Boot reads this before the TSM's tables exist, under the boot identity map, whose 2 MiB
//! pages over bus 0's ECAM window are made uncached first ([`super::boot::boot_map_uncached`]).
//! It sizes every memory BAR of every function on bus 0 (decoding off while it does, then
//! restored), keeps those that lie clear of RAM, the ECAM window, the local APIC and the VT-d
//! registers, and hands the list to `paging`, which sizes its pool for them.
//!
//! **The chipset's configuration space is read-only for the host.** On q35, device 0 is the
//! MCH, whose PCIEXBAR, PAM and SMRAM registers move the ECAM window and the legacy areas in
//! the *system* address space, and device 31 is the ICH9, whose RCBA does the same with the
//! root-complex registers; QEMU gives those windows priority over RAM, so a host that could
//! write them could lay MMIO over the TSM's own memory. (A Linux host's writes there fault and
//! are emulated through an allow-list: `config_write`, `crate::q35_chipset`; the TSM's own
//! tables map these pages writable for that.) Every other function's configuration
//! space is the host's: its BARs only move inside the PCI address space, which the CPU sees
//! only through the PCI hole, and its DMA goes through VT-d.

use core::sync::atomic::{AtomicU64, Ordering};

use super::bootinfo::{BootInfo, E820_RAM};
use crate::platform::MemRange;
use crate::q35_chipset::{ICH9, MCH};

/// Entries an [`MmioMap`] holds: the VT-d registers, bus 0's configuration space (three ranges)
/// and the BARs (q35 with `edu` has six).
pub const MAX_MMIO: usize = 24;
const PAGE: u64 = 4096;
/// Configuration space per bus and per function (ECAM: bus << 20 | device << 15 | fn << 12).
const BUS_SPAN: u64 = 1 << 20;
const DEVICE_SPAN: u64 = 1 << 15;
/// q35's chipset devices on bus 0: the MCH and the ICH9 (see the module doc).
const CHIPSET_DEVICES: [u64; 2] = [MCH as u64, ICH9 as u64];
/// Bus 0's configuration space, once [`discover`] mapped it (0: none).
static BUS0: AtomicU64 = AtomicU64::new(0);

/// Configuration header offsets.
const VENDOR_ID: u64 = 0x00;
const COMMAND: u64 = 0x04;
const HEADER_TYPE_DWORD: u64 = 0x0C;
const BAR0: u64 = 0x10;
/// COMMAND: I/O space and memory space decoding.
const DECODE: u32 = 0b11;

/// Who gets an MMIO range, and how.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum Access {
    /// The TSM only (supervisor).
    Tsm,
    /// The host, read-write.
    HostReadWrite,
    /// The host, read-only.
    HostReadOnly,
    /// The host, read-write: a memory BAR, whose pages the TSM may take from the host for a
    /// TVM's private MMIO (`paging::take_mmio`).
    HostBar,
    /// The host, read-write, cached and executable: firmware's memory outside DRAM that a
    /// Linux host reads as a PC kernel does (the first MiB, the ACPI tables: `linux`).
    HostMemory,
}

/// One page-aligned MMIO range and who gets it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mmio {
    /// First byte (page-aligned).
    pub base: u64,
    /// Bytes (whole pages).
    pub size: u64,
    /// Who gets it.
    pub access: Access,
}

/// The MMIO ranges boot found, in the order found.
#[derive(Clone, Copy, Debug)]
pub struct MmioMap {
    entries: [Mmio; MAX_MMIO],
    len: usize,
    /// BARs beyond [`MAX_MMIO`], not mapped.
    pub dropped: u32,
    /// The functions found on bus 0 (bit device << 3 | function), which VT-d must serve.
    pub functions: [u64; 4],
}

impl MmioMap {
    /// The ranges.
    pub fn entries(&self) -> &[Mmio] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    pub(super) fn push(&mut self, m: Mmio) {
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = m;
                self.len += 1;
            }
            None => self.dropped = self.dropped.saturating_add(1),
        }
    }
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` share a byte (lengths non-zero, no wrap).
fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// What boot knows must never be mapped for the host as MMIO.
struct Keep<'a> {
    info: &'a BootInfo,
    lapic: u64,
    iommu: Option<MemRange>,
    /// The whole ECAM window (every bus), once known.
    ecam: Option<(u64, u64)>,
}

impl Keep<'_> {
    /// Whether `[base, base + size)` touches RAM, the local APIC page, the VT-d registers or
    /// the ECAM window.
    fn touches(&self, base: u64, size: u64) -> bool {
        self.info
            .memmap()
            .iter()
            .any(|e| e.kind == E820_RAM && overlaps(base, size, e.base, e.size))
            || overlaps(base, size, self.lapic, PAGE)
            || self
                .iommu
                .is_some_and(|r| overlaps(base, size, r.base.0, r.size))
            || self
                .ecam
                .is_some_and(|(e, len)| overlaps(base, size, e, len))
    }
}

/// The MMIO of `info`'s machine: the VT-d registers `iommu` (TSM), then bus 0's configuration
/// space and the memory BARs assigned on it (host). `lapic` is the local APIC page the TSM maps
/// itself.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn discover(info: &BootInfo, lapic: u64, iommu: Option<MemRange>) -> MmioMap {
    let mut map = MmioMap {
        entries: [Mmio {
            base: 0,
            size: 0,
            access: Access::Tsm,
        }; MAX_MMIO],
        len: 0,
        dropped: 0,
        functions: [0; 4],
    };
    if let Some(r) = iommu {
        map.push(Mmio {
            base: r.base.0,
            size: r.size,
            access: Access::Tsm,
        });
    }
    let mut keep = Keep {
        info,
        lapic,
        iommu,
        ecam: None,
    };
    let Some(ecam) = info.ecam else {
        defmt::warn!("PCI: no ACPI MCFG, so the host gets no PCI configuration space");
        return map;
    };
    let bus0_end = ecam.base.checked_add(BUS_SPAN);
    if !ecam.base.is_multiple_of(BUS_SPAN)
        || bus0_end.is_none_or(|end| end > super::acpi::BOOT_MAPPED_END)
        || keep.touches(ecam.base, BUS_SPAN)
    {
        defmt::error!(
            "PCI: ECAM window at {=u64:#x} is misaligned, above 4 GiB or over RAM, the local APIC or VT-d: not used",
            ecam.base
        );
        return map;
    }
    super::boot::boot_map_uncached(ecam.base, BUS_SPAN);
    BUS0.store(ecam.base, Ordering::Release);
    // Bus 0's configuration space: the chipset's devices read-only, the rest read-write.
    let [mch, ich] = CHIPSET_DEVICES;
    for (first, last, access) in [
        (mch, mch, Access::HostReadOnly),
        (mch + 1, ich - 1, Access::HostReadWrite),
        (ich, ich, Access::HostReadOnly),
    ] {
        map.push(Mmio {
            base: ecam.base + first * DEVICE_SPAN,
            size: (last + 1 - first) * DEVICE_SPAN,
            access,
        });
    }
    keep.ecam = Some((ecam.base, (u64::from(ecam.end_bus) + 1) * BUS_SPAN));
    for device in 0..32 {
        for function in 0..8 {
            let cfg = ecam.base + device * DEVICE_SPAN + function * PAGE;
            let id = cfg_read(cfg, VENDOR_ID);
            if id & 0xFFFF == 0xFFFF {
                if function == 0 {
                    break;
                }
                continue;
            }
            let devfn = device << 3 | function;
            if let Some(word) = map.functions.get_mut((devfn >> 6) as usize) {
                *word |= 1 << (devfn & 63);
            }
            let header = (cfg_read(cfg, HEADER_TYPE_DWORD) >> 16) as u8;
            let f = Function {
                device,
                function,
                id,
            };
            for bar in bars(cfg, header) {
                add_bar(&mut map, &keep, f, bar);
            }
            // Bit 7 of the header type: more functions than function 0.
            if function == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
    map
}

/// The chipset function whose configuration page holds `gpa` (one of the host's read-only
/// pages): `(device, function, offset)`.
pub fn chipset_function(gpa: u64) -> Option<(u8, u8, u16)> {
    let bus0 = BUS0.load(Ordering::Acquire);
    let at = gpa
        .checked_sub(bus0)
        .filter(|&at| bus0 != 0 && at < BUS_SPAN)?;
    let device = (at / DEVICE_SPAN) as u8;
    CHIPSET_DEVICES.contains(&u64::from(device)).then_some((
        device,
        ((at % DEVICE_SPAN) / PAGE) as u8,
        (at % PAGE) as u16,
    ))
}

/// Writes `value`'s low `width` bytes (1, 2 or 4, naturally aligned) at `offset` of chipset
/// function `device`.`function` on bus 0, for a Linux host's write `q35_chipset` lets through.
pub fn chipset_write(device: u8, function: u8, offset: u16, width: u8, value: u32) {
    let bus0 = BUS0.load(Ordering::Acquire);
    let device = u64::from(device);
    if bus0 == 0
        || !CHIPSET_DEVICES.contains(&device)
        || function > 7
        || offset >= PAGE as u16
        || !matches!(width, 1 | 2 | 4)
        || !offset.is_multiple_of(u16::from(width))
    {
        return;
    }
    let at = bus0 + device * DEVICE_SPAN + u64::from(function) * PAGE + u64::from(offset);
    let _user = super::platform::UserAccess::allow();
    // SAFETY: `at` is a naturally aligned `width`-byte register inside a chipset function's
    // page of bus 0's ECAM window (checked above; `discover` checked the window lies below
    // 4 GiB clear of RAM), which the TSM's tables map uncached and writable (user pages, hence
    // the SMAP bracket); `q35_chipset` chose the register.
    unsafe {
        match width {
            1 => core::ptr::write_volatile(at as *mut u8, value as u8),
            2 => core::ptr::write_volatile(at as *mut u16, value as u16),
            _ => core::ptr::write_volatile(at as *mut u32, value),
        }
    }
}

/// One sized memory BAR.
#[derive(Clone, Copy, Debug)]
struct Bar {
    index: u64,
    base: u64,
    size: u64,
}

/// Reads a configuration dword of the function at `cfg` (bus 0, in the ECAM window).
fn cfg_read(cfg: u64, offset: u64) -> u32 {
    // SAFETY: `cfg + offset` is a dword of bus 0's ECAM window, which `discover` checked lies
    // below 4 GiB clear of RAM, and made uncached in the boot identity map that maps it; a
    // configuration read has no side effect.
    unsafe { core::ptr::read_volatile((cfg + offset) as *const u32) }
}

/// Writes a configuration dword of the function at `cfg` (bus 0, in the ECAM window).
fn cfg_write(cfg: u64, offset: u64, value: u32) {
    // SAFETY: as in `cfg_read`; callers write only COMMAND and BARs of the function they size,
    // and put each back.
    unsafe { core::ptr::write_volatile((cfg + offset) as *mut u32, value) };
}

/// Sizes the memory BARs of the function at `cfg` (6 for a type-0 header, 2 for a bridge's
/// type 1; none for others): all-ones written, the mask read, the original put back, with
/// decoding off meanwhile so the device never answers at the all-ones address.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
fn bars(cfg: u64, header: u8) -> impl Iterator<Item = Bar> {
    let count = match header & 0x7F {
        0 => 6,
        1 => 2,
        _ => 0,
    };
    let mut found = [None; 6];
    if count > 0 {
        let command = cfg_read(cfg, COMMAND);
        // The upper half is STATUS, whose write-1-to-clear bits a zero leaves alone.
        cfg_write(cfg, COMMAND, command & 0xFFFF & !DECODE);
        let mut i = 0;
        while i < count {
            let at = BAR0 + 4 * i;
            let low = cfg_read(cfg, at);
            // I/O BARs are port space, not mapped; bits 2:1 = 0b10: a 64-bit memory BAR.
            let wide = low & 1 == 0 && (low >> 1) & 0b11 == 0b10 && i + 1 < count;
            if low & 1 == 0 {
                cfg_write(cfg, at, u32::MAX);
                let mask_low = cfg_read(cfg, at);
                cfg_write(cfg, at, low);
                let (high, mask_high) = if wide {
                    let high = cfg_read(cfg, at + 4);
                    cfg_write(cfg, at + 4, u32::MAX);
                    let mask_high = cfg_read(cfg, at + 4);
                    cfg_write(cfg, at + 4, high);
                    (high, mask_high)
                } else {
                    (0, u32::MAX)
                };
                let base = (u64::from(high) << 32) | u64::from(low & !0xF);
                let mask = (u64::from(mask_high) << 32) | u64::from(mask_low & !0xF);
                // An unimplemented BAR reads back 0: no size.
                let size = (!mask).wrapping_add(1);
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| found.get_mut(i))
                    && mask != 0
                    && mask != u64::MAX << 32
                {
                    *slot = Some(Bar {
                        index: i,
                        base,
                        size,
                    });
                }
            }
            i += if wide { 2 } else { 1 };
        }
        cfg_write(cfg, COMMAND, command & 0xFFFF);
    }
    found.into_iter().flatten()
}

/// A function on bus 0: device, function number, vendor and device ID.
#[derive(Clone, Copy, Debug)]
struct Function {
    device: u64,
    function: u64,
    id: u32,
}

/// Adds `bar` of `f` for the host if it is assigned, naturally aligned and clear of what the
/// TSM keeps.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
fn add_bar(map: &mut MmioMap, keep: &Keep<'_>, f: Function, bar: Bar) {
    let (vendor, device_id) = (f.id & 0xFFFF, f.id >> 16);
    // BARs smaller than a page share it with their neighbours (all the host's): map the page.
    let base = bar.base & !(PAGE - 1);
    let end = bar
        .base
        .checked_add(bar.size)
        .and_then(|e| e.checked_next_multiple_of(PAGE))
        .filter(|&end| {
            bar.base != 0
                && bar.size.is_power_of_two()
                && bar.base.is_multiple_of(bar.size)
                // The lower canonical half: the TSM's tables map BARs at their addresses.
                && end <= 1 << 47
                && !keep.touches(base, end - base)
        });
    let Some(end) = end else {
        defmt::warn!(
            "PCI 00:{=u64:02x}.{=u64} {=u32:04x}:{=u32:04x} BAR{=u64} at {=u64:#x}+{=u64:#x} not mapped for the host: unassigned, misaligned or over memory the TSM keeps",
            f.device,
            f.function,
            vendor,
            device_id,
            bar.index,
            bar.base,
            bar.size
        );
        return;
    };
    defmt::info!(
        "PCI 00:{=u64:02x}.{=u64} {=u32:04x}:{=u32:04x} BAR{=u64} {=u64:#x}+{=u64:#x}: the host's",
        f.device,
        f.function,
        vendor,
        device_id,
        bar.index,
        bar.base,
        bar.size
    );
    map.push(Mmio {
        base,
        size: end - base,
        access: Access::HostBar,
    });
}
