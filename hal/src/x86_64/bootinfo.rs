//! What boot learned about the machine: the PVH memory map, DRAM and the TSM's own range.
//!
//! QEMU's PVH boot hands over `struct hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`) in
//! `ebx`; from version 1 it carries an E820-style memory map. "DRAM" for the core is the RAM
//! entry that holds the TSM image (the main RAM above 1 MiB on q35); the core tracks one
//! contiguous range, so other RAM entries (below 1 MiB; above 4 GiB, where q35 puts what does
//! not fit below its PCI hole once `-m` reaches 2.75 GiB) are reported ([`BootInfo::untracked_ram`])
//! but neither mapped nor given to the host.

use core::sync::atomic::AtomicU16;

use tsm_abi::addr::{GRANULE_SIZE, Pa};

use crate::platform::MemRange;

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336E_C578;
/// Field offsets in `hvm_start_info`.
const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 4;
const OFF_RSDP_PADDR: u64 = 32;
const OFF_MEMMAP_PADDR: u64 = 40;
const OFF_MEMMAP_ENTRIES: u64 = 48;
/// Size of one `hvm_memmap_table_entry` (addr, size, type, reserved).
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// Entries kept; q35 reports fewer than ten.
pub const MAX_MEMMAP: usize = 32;
/// The boot identity map covers the first 4 GiB: the start info and its map must lie there.
const BOOT_MAPPED_END: u64 = 1 << 32;

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
        madt_cpus: madt_cpu_count(read_u64(start_info + OFF_RSDP_PADDR)),
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

/// The longest ACPI table read (QEMU's are a few hundred bytes).
const MAX_TABLE: u64 = 64 * 1024;
/// ACPI header length (signature, length, revision, checksum, OEM fields).
const SDT_HEADER: u64 = 36;

fn read_u8(pa: u64) -> u8 {
    // SAFETY: as in `read_u32` (callers keep `pa` below BOOT_MAPPED_END); bytes need no
    // alignment.
    unsafe { core::ptr::read_volatile(pa as *const u8) }
}

/// Little-endian values at any alignment (ACPI fields often are not aligned).
fn acpi_u32(pa: u64) -> u32 {
    u32::from_le_bytes([
        read_u8(pa),
        read_u8(pa + 1),
        read_u8(pa + 2),
        read_u8(pa + 3),
    ])
}

fn acpi_u64(pa: u64) -> u64 {
    u64::from(acpi_u32(pa)) | (u64::from(acpi_u32(pa + 4)) << 32)
}

/// Whether `[pa, pa + len)` lies in the boot map and its bytes sum to 0 (ACPI checksums).
fn checksum_ok(pa: u64, len: u64) -> bool {
    len <= MAX_TABLE
        && pa
            .checked_add(len)
            .is_some_and(|end| end <= BOOT_MAPPED_END)
        && (0..len).fold(0u8, |sum, i| sum.wrapping_add(read_u8(pa + i))) == 0
}

/// A checksummed ACPI table at `pa`: its length, if it is whole and valid.
fn table(pa: u64, signature: &[u8; 4]) -> Option<u64> {
    if pa == 0 || pa.checked_add(SDT_HEADER)? > BOOT_MAPPED_END {
        return None;
    }
    let sig = acpi_u32(pa).to_le_bytes();
    let len = u64::from(acpi_u32(pa + 4));
    (sig == *signature && len >= SDT_HEADER && checksum_ok(pa, len)).then_some(len)
}

/// Counts the enabled processors (local APIC and x2APIC entries) of the MADT that the RSDP
/// at `rsdp` leads to (ACPI 6.5 §5.2.5, §5.2.12). Firmware tables, still read defensively:
/// every read is bounded by the checksummed lengths.
fn madt_cpu_count(rsdp: u64) -> Option<u32> {
    if rsdp == 0 || rsdp.checked_add(36)? > BOOT_MAPPED_END {
        return None;
    }
    if acpi_u64(rsdp) != u64::from_le_bytes(*b"RSD PTR ") || !checksum_ok(rsdp, 20) {
        return None;
    }
    // Revision 2+: the XSDT (64-bit entries); else the RSDT (32-bit entries).
    let (root, entry_size, signature) = if read_u8(rsdp + 15) >= 2 && checksum_ok(rsdp, 36) {
        (acpi_u64(rsdp + 24), 8, b"XSDT")
    } else {
        (u64::from(acpi_u32(rsdp + 16)), 4, b"RSDT")
    };
    let len = table(root, signature)?;
    let madt = (0..(len - SDT_HEADER) / entry_size)
        .map(|i| {
            let at = root + SDT_HEADER + i * entry_size;
            if entry_size == 8 {
                acpi_u64(at)
            } else {
                u64::from(acpi_u32(at))
            }
        })
        .find(|&t| table(t, b"APIC").is_some())?;
    let len = table(madt, b"APIC")?;
    // After the header: local APIC address (4), flags (4), then the entries.
    let mut at = madt + SDT_HEADER + 8;
    let end = madt + len;
    let mut cpus = 0u32;
    while at + 2 <= end {
        let (kind, entry_len) = (read_u8(at), u64::from(read_u8(at + 1)));
        if entry_len < 2 || at + entry_len > end {
            break;
        }
        // Type 0 (local APIC): flags at 4; type 9 (local x2APIC): flags at 8. Bit 0: enabled.
        let flags_at = match kind {
            0 if entry_len >= 8 => Some(at + 4),
            9 if entry_len >= 16 => Some(at + 8),
            _ => None,
        };
        if flags_at.is_some_and(|f| acpi_u32(f) & 1 != 0) {
            cpus = cpus.saturating_add(1);
        }
        at += entry_len;
    }
    Some(cpus)
}
