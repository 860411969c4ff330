//! A Linux x86 `bzImage` as the host (docs/design.md, "A Linux host"): how boot tells it from
//! the host payload, and what Linux's 32-bit boot protocol (Documentation/arch/x86/boot.rst)
//! needs before its first instruction: the protected-mode kernel entered in 32-bit protected
//! mode with paging off, flat `__BOOT_CS` (0x10) and `__BOOT_DS` (0x18) segments, interrupts
//! off, esi = a `boot_params` ("zero page") the loader filled, ebp = edi = ebx = 0.
//!
//! Layout (all host DRAM; QEMU's loader puts the files there before the TSM runs): the whole
//! bzImage at [`HOST_ENTRY`] (the kernel decompresses itself above it, aligned up to its
//! `kernel_alignment`), the initrd at [`INITRD_BASE`] (its size in the parameters page's second
//! word), and right after the initrd, page-aligned, three pages the TSM writes: the zero page,
//! the command line (QEMU's `-append`, from the PVH start info), and the ACPI root the host
//! sees.
//!
//! What the host is given beyond its payload's share:
//! - an E820 map: the firmware's, with the TSM's memory, its start page (`smp::AP_PAGE`) and
//!   the three boot pages reserved, and RAM the TSM does not track (above 4 GiB) reserved too;
//! - an ACPI root (RSDP and XSDT) that lists every firmware table but the DMAR (VT-d is the
//!   TSM's) and the HPET (its page is not the host's): Linux reads the registers of every unit
//!   the DMAR lists at boot, and a blocked access there would be a #GP in its early code; its
//!   MCFG is the TSM's copy naming bus 0 only, the only configuration space the host has;
//! - firmware memory in its nested table ([`firmware_memory`]): the first MiB but the TSM's
//!   start page and the BIOS area (BIOS data area, EBDA, option ROMs; [`BIOS_AREA`] reads as
//!   zeros) and the reserved ranges between DRAM
//!   and the ECAM window (SeaBIOS's ACPI tables);
//! - the legacy devices of a PC it drives itself, through its own I/O permission map
//!   ([`open_ports`]): the 8259 PICs and their ELCR, the PIT, port 0x61, the RTC, COM2 (its
//!   console; COM1 is the TSM's), the ACPI PM1a event block, PM timer and GPE0. Two ports stay
//!   intercepted ([`io`]): PM1a control, where a write with SLP_EN is the host's power-off
//!   (the TSM's SYSTEM_OFF(0)) and any other write goes through, and the SMI command port,
//!   which takes only the FADT's ACPI_ENABLE value (an SMI would run firmware's SMM code,
//!   which the TSM does not trust the host to start). A reset request (`crate::pc_reset`: the
//!   chipset's 0xCF9, the keyboard controller's pulse) ends the run as SYSTEM_OFF(1): the TSM
//!   does not reset the machine, and a kernel that restarts after a panic must not spin.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::call::CallId;
use tsm_abi::regs::CallRegs;

use super::acpi::{HOST_ROOT_MAX, PmPorts};
use super::bootinfo::{BootInfo, E820_RAM};
use super::host::HOST_ENTRY;
use super::pci::{Access, Mmio, MmioMap};
use super::{cpu, smp, svm};
use crate::platform::MemRange;

/// Where the loader puts the initrd (xtask's `linux` scenario).
pub const INITRD_BASE: u64 = 0x0800_0000;
/// `HdrS` at offset 0x202 of a bzImage, little-endian.
const HEADER_MAGIC: u32 = 0x5372_6448;
/// The oldest boot protocol with `init_size` and `kernel_alignment` in force: 2.10.
const MIN_PROTOCOL: u16 = 0x020A;
/// The first MiB, which a PC kernel reads as firmware left it.
const LOW_MEMORY_END: u64 = 0x10_0000;
/// The BIOS area a Linux host reads as zeros (`paging`'s page of zeros): SeaBIOS's MP table
/// there names the local APIC and the I/O APIC, which are not the host's, and Linux believes
/// it over the CPUID that says there is no APIC; the RSDP the host needs is the TSM's copy,
/// named in the zero page.
pub const BIOS_AREA: (u64, u64) = (0xF_0000, LOW_MEMORY_END);
/// The HPET's registers (q35), which a Linux host reads as zeros: the firmware's AML reads
/// the HPET's ID there to say whether one is present, and an ID of 0 says none (the page is
/// not the host's, and its ACPI table is hidden).
pub const HPET_PAGE: u64 = 0xFED0_0000;
/// E820 type 2.
const E820_RESERVED: u32 = 2;
/// The zero page's E820 table holds at most 128 entries.
const MAX_E820: usize = 128;
/// PM1 control's SLP_EN (ACPI §4.8.3.2.1): the write that enters the sleep state SLP_TYP names.
const SLP_EN: u32 = 1 << 13;
/// Tables the host's ACPI root leaves out (module doc).
const HIDDEN_TABLES: [&[u8; 4]; 2] = [b"DMAR", b"HPET"];

/// Offsets in `struct boot_params` and its setup header (boot.rst, "The real-mode kernel
/// header" and zero-page.rst).
mod zp {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const SETUP_SECTS: usize = 0x1F1;
    pub const HEADER_END_BYTE: usize = 0x201;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE: usize = 0x234;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const INIT_SIZE: usize = 0x260;
    pub const E820_TABLE: usize = 0x2D0;
}

/// Set by the boot CPU, before any other CPU runs, when the host is a bzImage.
static LINUX: AtomicBool = AtomicBool::new(false);
/// The zero page's address and the kernel's entry, once [`prepare`] wrote the page.
static ZERO_PAGE: AtomicU64 = AtomicU64::new(0);
static ENTRY: AtomicU64 = AtomicU64::new(0);
/// The FADT's ports, once [`open_ports`] opened them.
static PM: Once<PmPorts> = Once::new();

/// Whether the host is a Linux bzImage (after [`detect`]).
pub fn is_linux() -> bool {
    LINUX.load(Ordering::Acquire)
}

fn read_u8(pa: u64) -> u8 {
    // SAFETY: boot reads only the bzImage header at HOST_ENTRY and the command line, in host
    // memory below 4 GiB that the boot tables identity-map, before any host code runs.
    unsafe { core::ptr::read_volatile(pa as *const u8) }
}

fn read_le(pa: u64, len: u64) -> u64 {
    (0..len).fold(0, |v, i| v | (u64::from(read_u8(pa + i)) << (8 * i)))
}

/// Looks at what the loader put at the host entry and records whether it is a bzImage of a
/// boot protocol this module speaks. Boot CPU only, before the host's tables are built.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn detect() -> bool {
    let linux = read_le(HOST_ENTRY + zp::HEADER as u64, 4) == u64::from(HEADER_MAGIC);
    LINUX.store(linux, Ordering::Release);
    linux
}

/// Whether two ranges share a byte.
fn overlaps(a: &MemRange, b: &MemRange) -> bool {
    a.base.0 < b.base.0.saturating_add(b.size) && b.base.0 < a.base.0.saturating_add(a.size)
}

fn range(base: u64, size: u64) -> MemRange {
    MemRange {
        base: Pa(base),
        size,
    }
}

/// The firmware memory a Linux host gets in its nested table (module doc), added to `mmio`.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn firmware_memory(info: &BootInfo, mmio: &mut MmioMap) {
    let low = [
        (0, smp::AP_PAGE),
        (smp::AP_PAGE + GRANULE_SIZE, BIOS_AREA.0),
    ];
    for (base, end) in low {
        mmio.push(Mmio {
            base,
            size: end - base,
            access: Access::HostMemory,
        });
    }
    let dram_end = info.dram.base.0 + info.dram.size;
    let ceiling = info.ecam.map_or(LOW_MEMORY_END, |e| e.base);
    for e in info.memmap().iter().filter(|e| e.kind != E820_RAM) {
        let base = e.base & !(GRANULE_SIZE - 1);
        let Some(end) = e
            .base
            .checked_add(e.size)
            .and_then(|x| x.checked_next_multiple_of(GRANULE_SIZE))
        else {
            continue;
        };
        if base >= dram_end && end <= ceiling && end > base {
            mmio.push(Mmio {
                base,
                size: end - base,
                access: Access::HostMemory,
            });
        }
    }
}

/// Opens the ports of the module doc in the Linux host's I/O permission map and keeps the
/// FADT's for [`io`]. Boot CPU only, before any guest runs.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn open_ports(info: &BootInfo) {
    svm::init_linux_iopm();
    for (first, count) in [
        (0x20, 2),  // master PIC
        (0xA0, 2),  // slave PIC
        (0x4D0, 2), // ELCR
        (0x40, 4),  // PIT
        (0x61, 1),  // port B: PIT channel 2 gate, speaker
        (0x70, 2),  // RTC / CMOS
        (0x2F8, 8), // COM2
    ] {
        svm::open_linux_ports(first, count);
    }
    if let Some(pm) = info.acpi.and_then(|a| a.pm_ports()) {
        for (first, count) in [
            (pm.pm1a_evt, u16::from(pm.pm1_evt_len)),
            (pm.pm_tmr, 4),
            (pm.gpe0, u16::from(pm.gpe0_len)),
        ] {
            if first != 0 {
                svm::open_linux_ports(first, count);
            }
        }
        PM.call_once(|| pm);
    }
}

/// A Linux host's intercepted access of `size` bytes to `port` (module doc), `out` the value
/// of an OUT (`None`: an IN).
pub fn io(port: u16, size: u8, out: Option<u32>) -> Port {
    if !is_linux() {
        return Port::NotLinux;
    }
    if let Some(v) = out
        && crate::pc_reset::is_reset_request(port, size, v)
    {
        defmt::warn!(
            "Linux host asked for a reset (port {=u16:#x}, value {=u32:#x}): the TSM does not reset the machine; powering off as a failure",
            port,
            v & 0xFF
        );
        return Port::Reset;
    }
    let Some(pm) = PM.get() else {
        return Port::NotLinux;
    };
    let pm1a_cnt = pm.pm1a_cnt != 0
        && port >= pm.pm1a_cnt
        && u32::from(port) + u32::from(size) <= u32::from(pm.pm1a_cnt) + u32::from(pm.pm1_cnt_len);
    match out {
        Some(v) if pm1a_cnt && port == pm.pm1a_cnt && v & SLP_EN != 0 => Port::PowerOff,
        Some(v) if pm1a_cnt => {
            cpu::port_out(port, size, v);
            Port::Done
        }
        None if pm1a_cnt => Port::In(cpu::port_in(port, size)),
        Some(v)
            if port == pm.smi_cmd
                && size == 1
                && pm.acpi_enable != 0
                && v == u32::from(pm.acpi_enable) =>
        {
            cpu::port_out(port, 1, v);
            Port::Done
        }
        _ => Port::NotLinux,
    }
}

/// What [`io`] made of a port access.
pub enum Port {
    /// Not a port of a Linux host's: the common rule applies.
    NotLinux,
    /// An OUT, done.
    Done,
    /// An IN's value.
    In(u32),
    /// The host asked for S5: SYSTEM_OFF(0).
    PowerOff,
    /// The host asked for a reset: SYSTEM_OFF(1).
    Reset,
}

/// The call a power-off (`failed` false) or reset request stands for.
pub fn power_off_call(failed: bool) -> CallRegs {
    CallRegs {
        fid: u64::from(CallId::SYSTEM_OFF.fid()),
        args: [u64::from(failed), 0, 0, 0, 0, 0],
    }
}

/// Host memory at `pa` for boot to write.
///
/// # Safety
/// `[pa, pa + len)` must be host DRAM outside the TSM, identity-mapped read-write by the boot
/// tables, that nothing else references (boot, before any host code runs).
unsafe fn host_bytes(pa: u64, len: usize) -> &'static mut [u8] {
    // SAFETY: the caller's guarantee.
    unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), &'static str> {
    buf.get_mut(at..at + bytes.len())
        .ok_or("a zero-page field is out of range")?
        .copy_from_slice(bytes);
    Ok(())
}

/// The host's E820 map (module doc) into `out`, with `holes` (sorted, disjoint) cut out of RAM
/// as reserved; the entries written.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
fn e820(
    info: &BootInfo,
    holes: &[MemRange],
    out: &mut [(u64, u64, u32); MAX_E820],
) -> Result<usize, &'static str> {
    let mut n = 0;
    let mut emit = |base: u64, end: u64, kind: u32| -> Result<(), &'static str> {
        if end > base {
            *out.get_mut(n)
                .ok_or("the E820 map has more than 128 entries")? = (base, end - base, kind);
            n += 1;
        }
        Ok(())
    };
    for e in info.memmap() {
        let end = e.base.saturating_add(e.size);
        let whole = range(e.base, e.size);
        if e.kind != E820_RAM {
            emit(e.base, end, e.kind)?;
        } else if e.base < LOW_MEMORY_END || overlaps(&whole, &info.dram) {
            let mut at = e.base;
            for h in holes.iter().filter(|h| overlaps(&whole, h)) {
                let h_end = (h.base.0 + h.size).min(end);
                emit(at, h.base.0.max(at), E820_RAM)?;
                emit(h.base.0.max(at), h_end, E820_RESERVED)?;
                at = h_end;
            }
            emit(at, end, E820_RAM)?;
        } else {
            // RAM the TSM does not track is not in the host's nested table.
            emit(e.base, end, E820_RESERVED)?;
        }
    }
    Ok(n)
}

/// Checks the bzImage and the initrd against the memory map, writes the zero page, the command
/// line and the host's ACPI root after the initrd, and returns `(entry, zero page)`: the
/// protected-mode kernel's first byte and esi. `params` is the host parameters page.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn prepare(info: &BootInfo, params: u64) -> Result<(u64, u64), &'static str> {
    let hdr = |off: usize, len: u64| read_le(HOST_ENTRY + off as u64, len);
    if hdr(zp::VERSION, 2) < u64::from(MIN_PROTOCOL) {
        return Err("the bzImage's boot protocol is older than 2.10");
    }
    if hdr(zp::RELOCATABLE, 1) == 0 {
        return Err("the bzImage is not relocatable");
    }
    let setup_sects = match hdr(zp::SETUP_SECTS, 1) {
        0 => 4,
        n => n,
    };
    let entry = HOST_ENTRY + (setup_sects + 1) * 512;
    let align = hdr(zp::KERNEL_ALIGNMENT, 4).max(1);
    let kernel_base = entry
        .checked_next_multiple_of(align)
        .ok_or("the kernel's alignment overflows")?;
    let kernel = range(HOST_ENTRY, kernel_base - HOST_ENTRY + hdr(zp::INIT_SIZE, 4));
    let initrd_size = read_le(params + 4, 4);
    let initrd = range(INITRD_BASE, initrd_size.max(1));
    let pages_base = (INITRD_BASE + initrd_size).next_multiple_of(GRANULE_SIZE);
    let pages = range(pages_base, 3 * GRANULE_SIZE);
    for (what, r) in [
        ("the kernel", &kernel),
        ("the initrd", &initrd),
        ("the boot pages", &pages),
    ] {
        if !info.dram.contains(r.base, r.size) || overlaps(r, &info.tsm) {
            defmt::error!(
                "{=str} at {=u64:#x}+{=u64:#x} is outside DRAM or overlaps the TSM",
                what,
                r.base.0,
                r.size
            );
            return Err("a Linux host file does not fit the memory layout");
        }
    }
    if overlaps(&kernel, &initrd) || overlaps(&kernel, &pages) {
        return Err("the kernel (decompressed, with its BSS) overlaps the initrd");
    }
    // SAFETY: `pages` is host DRAM outside the TSM (checked above), below 4 GiB (DRAM is),
    // identity-mapped by the boot tables; no host code runs yet and nothing else uses it.
    let buf = unsafe { host_bytes(pages_base, 3 * GRANULE_SIZE as usize) };
    buf.fill(0);
    let (zero, rest) = buf.split_at_mut(GRANULE_SIZE as usize);
    let (cmdline, root) = rest.split_at_mut(GRANULE_SIZE as usize);
    // The setup header, as the bzImage has it, at the same offsets.
    let header_end = zp::HEADER + hdr(zp::HEADER_END_BYTE, 1) as usize + 2;
    for at in zp::SETUP_SECTS..header_end.min(zp::E820_TABLE) {
        *zero.get_mut(at).ok_or("the setup header is out of range")? = hdr(at, 1) as u8;
    }
    zero[zp::TYPE_OF_LOADER] = 0xFF;
    put(zero, zp::RAMDISK_IMAGE, &(INITRD_BASE as u32).to_le_bytes())?;
    put(zero, zp::RAMDISK_SIZE, &(initrd_size as u32).to_le_bytes())?;
    let cmdline_pa = pages_base + GRANULE_SIZE;
    let max = (hdr(zp::CMDLINE_SIZE, 4) as usize).min(cmdline.len() - 1);
    if info.cmdline != 0 {
        let len = (0..=max as u64)
            .position(|i| read_u8(info.cmdline + i) == 0)
            .ok_or("the command line is longer than the kernel takes")?;
        for (i, b) in cmdline.iter_mut().take(len).enumerate() {
            *b = read_u8(info.cmdline + i as u64);
        }
    }
    put(zero, zp::CMD_LINE_PTR, &(cmdline_pa as u32).to_le_bytes())?;
    let root_pa = cmdline_pa + GRANULE_SIZE;
    if let Some(acpi) = info.acpi {
        acpi.write_host_root(
            root.get_mut(..HOST_ROOT_MAX)
                .ok_or("no room for the ACPI root")?,
            root_pa,
            &HIDDEN_TABLES,
        )
        .ok_or("the host's ACPI root does not fit its page")?;
        put(zero, zp::ACPI_RSDP_ADDR, &root_pa.to_le_bytes())?;
    }
    let mut map = [(0u64, 0u64, 0u32); MAX_E820];
    // The boot pages are reserved too: the kernel reads the ACPI root long after it starts
    // allocating memory.
    let holes = [range(smp::AP_PAGE, GRANULE_SIZE), info.tsm, pages];
    let n = e820(info, &holes, &mut map)?;
    for (i, (base, size, kind)) in map.iter().take(n).enumerate() {
        let at = zp::E820_TABLE + i * 20;
        put(zero, at, &base.to_le_bytes())?;
        put(zero, at + 8, &size.to_le_bytes())?;
        put(zero, at + 16, &kind.to_le_bytes())?;
    }
    zero[zp::E820_ENTRIES] = n as u8;
    ENTRY.store(entry, Ordering::Relaxed);
    ZERO_PAGE.store(pages_base, Ordering::Release);
    defmt::info!(
        "host: Linux bzImage at {=u64:#x} (protocol {=u64:#x}, entry {=u64:#x}, {=u64} bytes decompressed from {=u64:#x}), initrd at {=u64:#x} ({=u64} bytes), zero page at {=u64:#x} with {=usize} E820 entries (TSM memory {=u64:#x}+{=u64:#x} reserved)",
        HOST_ENTRY,
        hdr(zp::VERSION, 2),
        entry,
        hdr(zp::INIT_SIZE, 4),
        kernel_base,
        INITRD_BASE,
        initrd_size,
        pages_base,
        n,
        info.tsm.base.0,
        info.tsm.size
    );
    Ok((entry, pages_base))
}

/// The kernel's entry and its zero page, once [`prepare`] wrote it.
pub fn boot_state() -> Option<(u64, u64)> {
    let zero = ZERO_PAGE.load(Ordering::Acquire);
    (zero != 0).then(|| (ENTRY.load(Ordering::Relaxed), zero))
}
