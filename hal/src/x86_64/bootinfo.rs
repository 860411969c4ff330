//! What boot learned about the machine: the PVH memory map, DRAM and the TSM's own range, and
//! what the ACPI tables say (`acpi`: the CPUs, the VT-d unit, PCI configuration space).
//!
//! QEMU's PVH boot hands over `struct hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`) in
//! `ebx`; from version 1 it carries an E820-style memory map. "DRAM" for the core is the RAM
//! entry that holds the TSM image (the main RAM above 1 MiB on q35); the core tracks one
//! contiguous range, so other RAM entries (below 1 MiB; above 4 GiB, where q35 puts what does
//! not fit below its PCI hole once `-m` reaches 2.75 GiB) are reported ([`BootInfo::untracked_ram`])
//! but neither mapped nor given to the host.

use core::sync::atomic::AtomicU16;

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use super::acpi::{Acpi, BOOT_MAPPED_END, Dmar, Ecam};
use crate::platform::MemRange;

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336E_C578;
/// Field offsets in `hvm_start_info`.
const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 4;
const OFF_CMDLINE_PADDR: u64 = 24;
const OFF_RSDP_PADDR: u64 = 32;
const OFF_MEMMAP_PADDR: u64 = 40;
const OFF_MEMMAP_ENTRIES: u64 = 48;
/// Size of one `hvm_memmap_table_entry` (addr, size, type, reserved).
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// Entries kept; q35 reports fewer than ten.
pub const MAX_MEMMAP: usize = 32;

/// One memory map entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemMapEntry {
    /// First byte.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// E820 type (1 = RAM, 2 = reserved, 3 = ACPI, 4 = NVS, 5 = unusable).
    pub kind: u32,
}

/// E820 type 1.
pub const E820_RAM: u32 = 1;

impl MemMapEntry {
    /// The E820 type's name.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "RAM",
            2 => "reserved",
            3 => "ACPI",
            4 => "ACPI NVS",
            5 => "unusable",
            7 => "persistent",
            _ => "other",
        }
    }
}

/// Why boot could not describe the machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum BootInfoError {
    /// `ebx` did not point at an `hvm_start_info` (wrong magic or outside the boot map).
    StartInfoMissing,
    /// The start info predates the memory map (version 0), or its map lies outside the boot map.
    MemoryMapMissing,
    /// No RAM entry holds the TSM image.
    DramNotFound,
}

/// The machine as boot found it.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    memmap: [MemMapEntry; MAX_MEMMAP],
    memmap_len: usize,
    /// Entries the firmware reported beyond [`MAX_MEMMAP`] (dropped).
    pub memmap_dropped: u32,
    /// The DRAM the core manages (granule-aligned); the host owns all of it but [`Self::tsm`].
    pub dram: MemRange,
    /// The TSM's own memory: image and carve-out.
    pub tsm: MemRange,
    /// The core's granule descriptors, one per granule of [`Self::dram`], in the carve-out.
    pub granule_descriptors: &'static [AtomicU16],
    /// TSC ticks per microsecond (0 if calibration failed).
    pub tsc_ticks_per_us: u64,
    /// Enabled processors the ACPI MADT lists (`None`: no usable MADT).
    pub madt_cpus: Option<u32>,
    /// The ACPI DMAR (`None`: no usable DMAR, so no VT-d).
    pub dmar: Option<Dmar>,
    /// PCI segment 0's ECAM window from the ACPI MCFG (`None`: none usable).
    pub ecam: Option<Ecam>,
    /// The ACPI root (`None`: no usable RSDP), for what a Linux host is given (`linux`).
    pub acpi: Option<Acpi>,
    /// The command line's physical address (QEMU's `-append`; 0 if none).
    pub cmdline: u64,
}

impl BootInfo {
    /// The memory map as reported (up to [`MAX_MEMMAP`] entries).
    pub fn memmap(&self) -> &[MemMapEntry] {
        self.memmap.get(..self.memmap_len).unwrap_or(&[])
    }

    /// The RAM entries outside [`Self::dram`]: no granule of them is tracked, mapped or given
    /// to the host.
    pub fn untracked_ram(&self) -> impl Iterator<Item = &MemMapEntry> {
        let dram = self.dram;
        self.memmap().iter().filter(move |e| {
            e.kind == E820_RAM && granule_range(e).is_none_or(|r| !dram.contains(r.base, r.size))
        })
    }
}

/// Reads a little-endian value of physical memory under the boot identity map.
fn read_u32(pa: u64) -> u32 {
    // SAFETY: callers only pass addresses below BOOT_MAPPED_END, which the boot tables map
    // (supervisor, read-write) and which are RAM or ROM on q35; a volatile read has no side
    // effect there.
    unsafe { core::ptr::read_volatile(pa as *const u32) }
}

fn read_u64(pa: u64) -> u64 {
    u64::from(read_u32(pa)) | (u64::from(read_u32(pa + 4)) << 32)
}

/// Parses the start info at `start_info` and picks DRAM: the RAM entry that holds `tsm`.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn parse(
    start_info: u64,
    tsm: MemRange,
    tsc_ticks_per_us: u64,
) -> Result<BootInfo, BootInfoError> {
    if start_info == 0
        || start_info.saturating_add(OFF_MEMMAP_ENTRIES + 8) > BOOT_MAPPED_END
        || !start_info.is_multiple_of(8)
    {
        return Err(BootInfoError::StartInfoMissing);
    }
    if read_u32(start_info + OFF_MAGIC) != START_INFO_MAGIC {
        return Err(BootInfoError::StartInfoMissing);
    }
    if read_u32(start_info + OFF_VERSION) < 1 {
        return Err(BootInfoError::MemoryMapMissing);
    }
    let map = read_u64(start_info + OFF_MEMMAP_PADDR);
    let count = u64::from(read_u32(start_info + OFF_MEMMAP_ENTRIES));
    let map_end = count
        .checked_mul(MEMMAP_ENTRY_SIZE)
        .and_then(|len| map.checked_add(len))
        .ok_or(BootInfoError::MemoryMapMissing)?;
    if map == 0 || map_end > BOOT_MAPPED_END || !map.is_multiple_of(8) {
        return Err(BootInfoError::MemoryMapMissing);
    }
    let acpi = Acpi::find(read_u64(start_info + OFF_RSDP_PADDR));
    let mut info = BootInfo {
        memmap: [MemMapEntry::default(); MAX_MEMMAP],
        memmap_len: 0,
        memmap_dropped: 0,
        dram: MemRange {
            base: Pa(0),
            size: 0,
        },
        tsm,
        granule_descriptors: &[],
        tsc_ticks_per_us,
        madt_cpus: acpi.and_then(|a| a.cpu_count()),
        dmar: acpi.and_then(|a| a.dmar()),
        ecam: acpi.and_then(|a| a.ecam()),
        acpi,
        cmdline: read_u64(start_info + OFF_CMDLINE_PADDR),
    };
    let mut dram = None;
    for i in 0..count {
        let at = map + i * MEMMAP_ENTRY_SIZE;
        let entry = MemMapEntry {
            base: read_u64(at),
            size: read_u64(at + 8),
            kind: read_u32(at + 16),
        };
        if entry.kind == E820_RAM && dram.is_none() {
            dram = granule_range(&entry).filter(|r| r.contains(tsm.base, tsm.size));
        }
        match info.memmap.get_mut(info.memmap_len) {
            Some(slot) => {
                *slot = entry;
                info.memmap_len += 1;
            }
            None => info.memmap_dropped = info.memmap_dropped.saturating_add(1),
        }
    }
    info.dram = dram.ok_or(BootInfoError::DramNotFound)?;
    Ok(info)
}

/// The granule-aligned part of a RAM entry, if any.
fn granule_range(e: &MemMapEntry) -> Option<MemRange> {
    let base = e.base.checked_next_multiple_of(GRANULE_SIZE)?;
    let end = e.base.checked_add(e.size)? & !(GRANULE_SIZE - 1);
    (end > base).then(|| MemRange {
        base: Pa(base),
        size: end - base,
    })
}
