//! The ACPI tables boot reads (ACPI 6.5 §5.2): the MADT for the CPU count, the DMAR for the
//! VT-d remapping unit (Intel VT-d 4.1 §8), the MCFG for PCI Express configuration space
//! (PCI Firmware 3.3 §4.1.2).
//!
//! The RSDP comes from the PVH start info (QEMU's PVH option ROM fills `rsdp_paddr`) or, when
//! that is 0, from the BIOS area search of ACPI §5.2.5.1 (the first KiB of the EBDA, then
//! 0xE0000..0x100000 on 16-byte boundaries). Everything is read under the boot identity map,
//! which covers the first 4 GiB ([`BOOT_MAPPED_END`]): a table outside it is not used. The
//! tables are firmware's, still read defensively: every read is bounded by a checksummed
//! length, and all arithmetic on their fields is checked.
//!
//! Boot only: every function is `#[inline]`, so tsm-hal-boot compiles them, for size
//! (`boot`'s module doc says why).

/// The boot identity map covers the first 4 GiB: every table must lie there.
pub const BOOT_MAPPED_END: u64 = 1 << 32;
/// The longest table read (QEMU's are a few hundred bytes).
const MAX_TABLE: u64 = 64 * 1024;
/// The common header (signature, length, revision, checksum, OEM fields).
const SDT_HEADER: u64 = 36;
/// The RSDP's ACPI 1.0 part and its ACPI 2.0+ length.
const RSDP_V1_LEN: u64 = 20;
const RSDP_V2_LEN: u64 = 36;
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Where the BIOS data area keeps the EBDA's real-mode segment.
const EBDA_SEGMENT_PTR: u64 = 0x40E;
/// The legacy BIOS ROM area the RSDP may also be in.
const BIOS_AREA: (u64, u64) = (0xE_0000, 0x10_0000);

/// Reads one byte of physical memory under the boot identity map.
#[inline]
fn read_u8(pa: u64) -> Option<u8> {
    if pa >= BOOT_MAPPED_END {
        return None;
    }
    // SAFETY: `pa` is below BOOT_MAPPED_END, which the boot tables identity-map (supervisor,
    // read-write); callers read firmware tables there (RAM or ROM on q35), where a volatile
    // read has no side effect.
    Some(unsafe { core::ptr::read_volatile(pa as *const u8) })
}

/// Little-endian values at any alignment (ACPI fields often are not aligned).
#[inline]
fn read_le<const N: usize>(pa: u64) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, b) in (0u64..).zip(out.iter_mut()) {
        *b = read_u8(pa.checked_add(i)?)?;
    }
    Some(out)
}

#[inline]
fn read_u16(pa: u64) -> Option<u16> {
    read_le(pa).map(u16::from_le_bytes)
}

#[inline]
fn read_u32(pa: u64) -> Option<u32> {
    read_le(pa).map(u32::from_le_bytes)
}

#[inline]
fn read_u64(pa: u64) -> Option<u64> {
    read_le(pa).map(u64::from_le_bytes)
}

/// Whether `[pa, pa + len)` lies in the boot map and its bytes sum to 0 (ACPI checksums).
#[inline]
fn checksum_ok(pa: u64, len: u64) -> bool {
    len <= MAX_TABLE
        && pa
            .checked_add(len)
            .is_some_and(|end| end <= BOOT_MAPPED_END)
        && (0..len).try_fold(0u8, |sum, i| Some(sum.wrapping_add(read_u8(pa + i)?))) == Some(0)
}

/// A whole, checksummed table: where it is and how long.
#[derive(Clone, Copy, Debug)]
struct Table {
    pa: u64,
    len: u64,
}

impl Table {
    /// The table at `pa` if it carries `signature` and its checksum holds.
    #[inline]
    fn at(pa: u64, signature: &[u8; 4]) -> Option<Table> {
        if pa == 0 {
            return None;
        }
        let sig = read_le::<4>(pa)?;
        let len = u64::from(read_u32(pa.checked_add(4)?)?);
        (sig == *signature && len >= SDT_HEADER && checksum_ok(pa, len))
            .then_some(Table { pa, len })
    }

    /// The address of byte `offset` if `[offset, offset + size)` lies inside the table.
    #[inline]
    fn field(&self, offset: u64, size: u64) -> Option<u64> {
        (offset.checked_add(size)? <= self.len).then(|| self.pa + offset)
    }
}

/// The RSDT or XSDT: the list of every other table.
#[derive(Clone, Copy, Debug)]
pub struct Acpi {
    root: Table,
    /// 8 for the XSDT's 64-bit entries, 4 for the RSDT's 32-bit ones.
    entry_size: u64,
}

/// The RSDP at `pa`, if its signature and checksums hold.
#[inline]
fn rsdp_at(pa: u64) -> Option<u64> {
    (read_le::<8>(pa)? == *RSDP_SIGNATURE && checksum_ok(pa, RSDP_V1_LEN)).then_some(pa)
}

/// Searches the BIOS areas of ACPI §5.2.5.1 for the RSDP.
#[inline]
fn scan_for_rsdp() -> Option<u64> {
    let ebda = u64::from(read_u16(EBDA_SEGMENT_PTR)?) << 4;
    // A real EBDA lies in conventional memory below the video area; anything else is not one.
    let ebda_area = (0x8_0000..0xA_0000)
        .contains(&ebda)
        .then_some((ebda, ebda + 1024));
    ebda_area
        .into_iter()
        .chain([BIOS_AREA])
        .flat_map(|(start, end)| (start..end).step_by(16))
        .find_map(rsdp_at)
}

impl Acpi {
    /// The tables the RSDP leads to: the one at `pvh_rsdp` (the PVH start info's, 0 if none),
    /// else the one the BIOS area search finds.
    #[inline]
    pub fn find(pvh_rsdp: u64) -> Option<Acpi> {
        let rsdp = if pvh_rsdp != 0 {
            rsdp_at(pvh_rsdp)?
        } else {
            scan_for_rsdp()?
        };
        // Revision 2+: the XSDT (64-bit entries) if its extended checksum holds; else the RSDT.
        let xsdt = (read_u8(rsdp.checked_add(15)?)? >= 2 && checksum_ok(rsdp, RSDP_V2_LEN))
            .then(|| read_u64(rsdp + 24))
            .flatten()
            .and_then(|pa| Table::at(pa, b"XSDT"));
        let (root, entry_size) = match xsdt {
            Some(t) => (t, 8),
            None => (Table::at(u64::from(read_u32(rsdp + 16)?), b"RSDT")?, 4),
        };
        Some(Acpi { root, entry_size })
    }

    /// The first table with `signature` the root lists.
    #[inline]
    fn table(&self, signature: &[u8; 4]) -> Option<Table> {
        let entries = (self.root.len - SDT_HEADER) / self.entry_size;
        (0..entries).find_map(|i| {
            let at = self.root.pa + SDT_HEADER + i * self.entry_size;
            let pa = if self.entry_size == 8 {
                read_u64(at)?
            } else {
                u64::from(read_u32(at)?)
            };
            Table::at(pa, signature)
        })
    }

    /// The variable-length structures after `first` in `t`, each `(type, address, length)`
    /// with `type` read as `type_size` bytes and the length as the `len_size` bytes after it
    /// (MADT: 1 + 1; DMAR: 2 + 2). Stops at the first one that does not fit.
    #[inline]
    fn structures(
        t: Table,
        first: u64,
        type_size: u64,
        len_size: u64,
    ) -> impl Iterator<Item = (u16, u64, u64)> {
        let read = move |pa: u64, size: u64| -> Option<u64> {
            if size == 1 {
                read_u8(pa).map(u64::from)
            } else {
                read_u16(pa).map(u64::from)
            }
        };
        let mut at = first;
        core::iter::from_fn(move || {
            let head = t.field(at, type_size + len_size)?;
            let kind = u16::try_from(read(head, type_size)?).ok()?;
            let len = read(head + type_size, len_size)?;
            if len < type_size + len_size {
                return None;
            }
            let pa = t.field(at, len)?;
            at += len;
            Some((kind, pa, len))
        })
    }

    /// The enabled processors the MADT lists (local APIC and x2APIC entries, §5.2.12).
    #[inline]
    pub fn cpu_count(&self) -> Option<u32> {
        let madt = self.table(b"APIC")?;
        // After the header: local APIC address (4), flags (4), then the entries.
        let cpus = Self::structures(madt, SDT_HEADER + 8, 1, 1)
            .filter(|&(kind, pa, len)| {
                // Type 0 (local APIC): flags at 4; type 9 (local x2APIC): flags at 8.
                let flags_at = match kind {
                    0 if len >= 8 => Some(pa + 4),
                    9 if len >= 16 => Some(pa + 8),
                    _ => None,
                };
                flags_at.and_then(read_u32).is_some_and(|f| f & 1 != 0)
            })
            .count();
        u32::try_from(cpus).ok()
    }

    /// The DMA remapping units the DMAR reports (VT-d §8.1, §8.3).
    #[inline]
    pub fn dmar(&self) -> Option<Dmar> {
        let t = self.table(b"DMAR")?;
        let mut dmar = Dmar {
            host_address_width: read_u8(t.field(36, 1)?)?.saturating_add(1),
            units: 0,
            first: None,
            reserved_regions: 0,
        };
        // After the header: host address width (1), flags (1), 10 reserved bytes.
        for (kind, pa, len) in Self::structures(t, 48, 2, 2) {
            match kind {
                // DRHD: flags (1) at 4, size (1) at 5, segment (2) at 6, register base (8) at 8.
                DRHD if len >= 16 => {
                    dmar.units = dmar.units.saturating_add(1);
                    if dmar.first.is_none() {
                        dmar.first = Some(Drhd {
                            base: read_u64(pa + 8)?,
                            // Bits 3:0: 2^N pages (VT-d 3.0+; 0 before, one page).
                            register_pages: 1 << (read_u8(pa + 5)? & 0xF),
                            segment: read_u16(pa + 6)?,
                            include_pci_all: read_u8(pa + 4)? & 1 != 0,
                            bus0_scope: bus0_scope(pa, len)?,
                        });
                    }
                }
                RMRR => dmar.reserved_regions = dmar.reserved_regions.saturating_add(1),
                _ => {}
            }
        }
        Some(dmar)
    }

    /// The ECAM window of PCI segment 0 that starts at bus 0, from the MCFG.
    #[inline]
    pub fn ecam(&self) -> Option<Ecam> {
        let t = self.table(b"MCFG")?;
        // After the header: 8 reserved bytes, then 16-byte entries: base (8), segment (2),
        // start bus (1), end bus (1), 4 reserved.
        let entries = (t.len.checked_sub(SDT_HEADER + 8)?) / 16;
        (0..entries).find_map(|i| {
            let at = t.field(SDT_HEADER + 8 + i * 16, 16)?;
            let ecam = Ecam {
                base: read_u64(at)?,
                segment: read_u16(at + 8)?,
                start_bus: read_u8(at + 10)?,
                end_bus: read_u8(at + 11)?,
            };
            (ecam.segment == 0 && ecam.start_bus == 0 && ecam.end_bus >= ecam.start_bus)
                .then_some(ecam)
        })
    }
}

/// The functions on bus 0 that a DRHD at `pa` (`len` bytes) lists in its device scopes (VT-d
/// §8.3.1: from byte 16, each: type, length, 2 reserved, enumeration ID, start bus, then
/// (device, function) pairs), as a bitmap of device << 3 | function. Endpoints (type 1) and
/// bridges (type 2, the bridge function itself) whose path is one pair from bus 0.
#[inline]
fn bus0_scope(pa: u64, len: u64) -> Option<[u64; 4]> {
    let mut scope = [0u64; 4];
    let mut at = 16;
    while at + 6 <= len {
        let entry_len = u64::from(read_u8(pa + at + 1)?);
        if entry_len < 6 || at + entry_len > len {
            break;
        }
        let kind = read_u8(pa + at)?;
        let start_bus = read_u8(pa + at + 5)?;
        if (kind == 1 || kind == 2) && start_bus == 0 && entry_len == 8 {
            let devfn = (read_u8(pa + at + 6)? & 0x1F) << 3 | (read_u8(pa + at + 7)? & 0x7);
            if let Some(word) = scope.get_mut(usize::from(devfn >> 6)) {
                *word |= 1 << (devfn & 63);
            }
        }
        at += entry_len;
    }
    Some(scope)
}

/// DMAR structure types: DMA remapping hardware unit, reserved memory region.
const DRHD: u16 = 0;
const RMRR: u16 = 1;

/// What the DMAR says about the platform's DMA remapping.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct Dmar {
    /// The widest DMA address the platform can issue, in bits.
    pub host_address_width: u8,
    /// DRHD structures (remapping units) listed.
    pub units: u32,
    /// The first of them.
    pub first: Option<Drhd>,
    /// RMRR structures: memory some device keeps using for DMA behind the OS's back (legacy
    /// USB, graphics), which a VT-d driver is asked to keep identity-mapped.
    pub reserved_regions: u32,
}

/// One DMA remapping hardware unit.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct Drhd {
    /// Its register set's first page.
    pub base: u64,
    /// Pages of registers.
    pub register_pages: u64,
    /// The PCI segment it serves.
    pub segment: u16,
    /// It serves every device of its segment that no other unit lists (INCLUDE_PCI_ALL; QEMU
    /// before 6.1).
    pub include_pci_all: bool,
    /// Otherwise, the functions on bus 0 it serves (bit device << 3 | function; QEMU 6.1 on
    /// lists every device behind the unit).
    pub bus0_scope: [u64; 4],
}

/// A PCI Express enhanced configuration (ECAM) window.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct Ecam {
    /// Configuration space of bus `start_bus`, device 0, function 0.
    pub base: u64,
    /// PCI segment.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

/// The FADT's fixed-hardware I/O ports (§5.2.9, the 32-bit block addresses at offsets 48..92)
/// a Linux host drives itself: the SMI command port and its ACPI_ENABLE value, the PM1a event
/// and control blocks, the PM timer and GPE0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PmPorts {
    pub smi_cmd: u16,
    pub acpi_enable: u8,
    pub pm1a_evt: u16,
    pub pm1_evt_len: u8,
    pub pm1a_cnt: u16,
    pub pm1_cnt_len: u8,
    pub pm_tmr: u16,
    pub gpe0: u16,
    pub gpe0_len: u8,
}

/// Where the host's XSDT ends at most (the RSDP padded to 64 bytes, then up to 64 entries), and
/// its own MCFG after it.
const HOST_XSDT_END: usize = 64 + SDT_HEADER as usize + 8 * 64;
/// The host's MCFG: the header, 8 reserved bytes and one allocation.
const HOST_MCFG_LEN: usize = SDT_HEADER as usize + 8 + 16;
/// Room the host's copy of the root takes at most: RSDP, XSDT and MCFG.
pub const HOST_ROOT_MAX: usize = HOST_XSDT_END + HOST_MCFG_LEN;

/// Sets byte `at` of `bytes` so that they sum to 0.
#[inline]
fn fix_checksum(bytes: &mut [u8], at: usize) {
    if let Some(b) = bytes.get_mut(at) {
        *b = 0;
    }
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    if let Some(b) = bytes.get_mut(at) {
        *b = 0u8.wrapping_sub(sum);
    }
}

impl Acpi {
    /// The FADT's ports, if it has one and every block it names lies in the 16-bit port space.
    #[inline]
    pub fn pm_ports(&self) -> Option<PmPorts> {
        let t = self.table(b"FACP")?;
        let port = |o: u64| u16::try_from(read_u32(t.field(o, 4)?)?).ok();
        let byte = |o: u64| read_u8(t.field(o, 1)?);
        Some(PmPorts {
            smi_cmd: port(48)?,
            acpi_enable: byte(52)?,
            pm1a_evt: port(56)?,
            pm1_evt_len: byte(88)?,
            pm1a_cnt: port(64)?,
            pm1_cnt_len: byte(89)?,
            pm_tmr: port(76)?,
            gpe0: port(80)?,
            gpe0_len: byte(92)?,
        })
    }

    /// Writes into `out`, which the caller places at physical address `out_pa`, an ACPI 2.0
    /// RSDP and after it (at `out_pa + 64`) an XSDT that lists every table of the firmware's
    /// root but those whose signature is in `hide`; the tables themselves stay where firmware
    /// put them, but for the MCFG, which is the host's own copy after the XSDT naming bus 0
    /// only ([`Self::write_host_mcfg`]). Returns the bytes used, `None` if `out` is too small,
    /// the root has more than 64 entries, or a root entry is unreadable. The RSDP is at
    /// `out_pa`.
    #[inline]
    pub fn write_host_root(&self, out: &mut [u8], out_pa: u64, hide: &[&[u8; 4]]) -> Option<usize> {
        let header = SDT_HEADER as usize;
        let entries = (self.root.len - SDT_HEADER) / self.entry_size;
        let mut len = 64 + header;
        let mut mcfg = false;
        for i in 0..entries {
            let at = self.root.pa + SDT_HEADER + i * self.entry_size;
            let pa = if self.entry_size == 8 {
                read_u64(at)?
            } else {
                u64::from(read_u32(at)?)
            };
            let signature = read_le::<4>(pa)?;
            if hide.iter().any(|h| **h == signature) {
                continue;
            }
            let pa = match self.ecam() {
                Some(ecam) if signature == *b"MCFG" => {
                    self.write_host_mcfg(out.get_mut(HOST_XSDT_END..HOST_ROOT_MAX)?, pa, ecam)?;
                    mcfg = true;
                    out_pa + HOST_XSDT_END as u64
                }
                _ => pa,
            };
            if len + 8 > HOST_XSDT_END {
                return None;
            }
            out.get_mut(len..len + 8)?
                .copy_from_slice(&pa.to_le_bytes());
            len += 8;
        }
        // The XSDT's header: the firmware root's, renamed, with its new length and checksum.
        let xsdt = out.get_mut(64..len)?;
        for (i, b) in xsdt.iter_mut().take(header).enumerate() {
            *b = read_u8(self.root.pa + i as u64)?;
        }
        xsdt.get_mut(0..4)?.copy_from_slice(b"XSDT");
        xsdt.get_mut(4..8)?
            .copy_from_slice(&u32::try_from(len - 64).ok()?.to_le_bytes());
        *xsdt.get_mut(8)? = 1;
        fix_checksum(xsdt, 9);
        let rsdp = out.get_mut(0..RSDP_V2_LEN as usize)?;
        rsdp.fill(0);
        rsdp.get_mut(0..8)?.copy_from_slice(RSDP_SIGNATURE);
        rsdp.get_mut(9..15)?.copy_from_slice(b"TSM   ");
        *rsdp.get_mut(15)? = 2;
        rsdp.get_mut(20..24)?
            .copy_from_slice(&(RSDP_V2_LEN as u32).to_le_bytes());
        rsdp.get_mut(24..32)?
            .copy_from_slice(&(out_pa + 64).to_le_bytes());
        fix_checksum(rsdp.get_mut(0..RSDP_V1_LEN as usize)?, 8);
        fix_checksum(rsdp, 32);
        Some(if mcfg { HOST_ROOT_MAX } else { len })
    }

    /// The host's MCFG into `out` (`HOST_MCFG_LEN` bytes): the firmware's at `pa`, header kept
    /// but for its length and checksum, with the one allocation of `ecam` cut to bus 0. Only bus
    /// 0's configuration space is in the host's nested table (`pci`), so a host that believed
    /// the firmware's buses 0–255 would read bus 1 and take a #GP (Linux's peer-bus scan does).
    #[inline]
    fn write_host_mcfg(&self, out: &mut [u8], pa: u64, ecam: Ecam) -> Option<()> {
        let header = SDT_HEADER as usize;
        for (i, b) in out.iter_mut().take(header).enumerate() {
            *b = read_u8(pa + i as u64)?;
        }
        out.get_mut(4..8)?
            .copy_from_slice(&u32::try_from(HOST_MCFG_LEN).ok()?.to_le_bytes());
        let rest = out.get_mut(header..HOST_MCFG_LEN)?;
        rest.fill(0);
        rest.get_mut(8..16)?
            .copy_from_slice(&ecam.base.to_le_bytes());
        // Segment 0, start bus 0, end bus 0 (the rest stays zero).
        fix_checksum(out.get_mut(..HOST_MCFG_LEN)?, 9);
        Some(())
    }
}
