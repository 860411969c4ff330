//! The DRAM map, from the device tree QEMU leaves at the start of RAM.

use tsm_abi::addr::Pa;

use crate::platform::MemRange;

/// Where QEMU `virt` puts its generated DTB for an image linked above it (docs/design.md).
const DTB_ADDR: usize = 0x4000_0000;
/// FDT header magic (big-endian on the wire).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest DTB the TSM accepts: the space below the TSM image (QEMU pads its DTB to 1 MiB).
const DTB_MAX: usize = 2 << 20;
/// Granularity the TSM's stage-1 maps DRAM with; DRAM is trimmed to it.
pub const DRAM_ALIGN: u64 = 2 << 20;

/// Why there is no usable DRAM map.
#[derive(Clone, Copy, Debug)]
pub enum MemMapError {
    /// No FDT magic at the DTB address.
    NoDtb,
    /// The header's size is out of bounds, or the parser refused the blob.
    BadDtb,
    /// No `device_type = "memory"` node with a `reg`.
    NoMemory,
    /// The memory region is empty after trimming, or it does not hold the TSM image.
    BadMemory,
}

impl MemMapError {
    /// For the boot failure message.
    pub fn describe(self) -> &'static str {
        match self {
            MemMapError::NoDtb => "no FDT magic at 0x40000000",
            MemMapError::BadDtb => "malformed device tree",
            MemMapError::NoMemory => "no /memory reg in the device tree",
            MemMapError::BadMemory => "unusable /memory region",
        }
    }
}

fn read_be32(addr: usize) -> u32 {
    // SAFETY: `addr` lies in the first 8 bytes at DTB_ADDR, the start of DRAM, which is RAM on
    // QEMU virt; the TSM reads it before the host runs, so nothing writes it concurrently.
    u32::from_be(unsafe { core::ptr::read_volatile(addr as *const u32) })
}

/// The device tree's bytes. Only the boot CPU calls this, before the host runs, and drops the
/// result before it does (the host's stage-2 maps the DTB's memory).
pub fn dtb_blob() -> Result<&'static [u8], MemMapError> {
    if read_be32(DTB_ADDR) != FDT_MAGIC {
        return Err(MemMapError::NoDtb);
    }
    let total = read_be32(DTB_ADDR + 4) as usize;
    if !(8..=DTB_MAX).contains(&total) {
        return Err(MemMapError::BadDtb);
    }
    // SAFETY: [DTB_ADDR, DTB_ADDR + total) lies in the 2 MiB of RAM below the TSM image, which
    // nothing writes while the borrow lives (boot runs on one CPU, the host is not up; see the
    // function's doc).
    Ok(unsafe { core::slice::from_raw_parts(DTB_ADDR as *const u8, total) })
}

/// The device tree, parsed; as [`dtb_blob`].
fn dtb() -> Result<fdt::Fdt<'static>, MemMapError> {
    fdt::Fdt::new(dtb_blob()?).map_err(|_| MemMapError::BadDtb)
}

/// The CPUs PSCI can start: their MPIDR affinity values (the boot CPU's included), up to
/// `N`, and whether PSCI's conduit is SMC (QEMU `virt` with virtualization and no EL3
/// implements PSCI on SMC from EL2). `None` when the tree has no PSCI node with that method.
pub fn cpus_from_dtb<const N: usize>() -> Option<([u64; N], usize)> {
    let fdt = dtb().ok()?;
    let psci = fdt.find_node("/psci")?;
    if psci.property("method").and_then(|p| p.as_str()) != Some("smc") {
        return None;
    }
    let mut ids = [0; N];
    let mut n = 0;
    for (slot, cpu) in ids.iter_mut().zip(fdt.cpus()) {
        *slot = cpu.ids().first() as u64;
        n += 1;
    }
    Some((ids, n))
}

/// The first DRAM region of the device tree, trimmed to [`DRAM_ALIGN`]. The tree is read once,
/// at boot, before the host can touch it.
pub fn dram_from_dtb() -> Result<MemRange, MemMapError> {
    let fdt = dtb()?;
    let region = fdt
        .all_nodes()
        .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        .find_map(|n| n.reg()?.next())
        .ok_or(MemMapError::NoMemory)?;
    let base = region.starting_address as u64;
    let size = region.size.ok_or(MemMapError::NoMemory)? as u64;
    let end = base.checked_add(size).ok_or(MemMapError::BadMemory)?;
    let base = base
        .checked_next_multiple_of(DRAM_ALIGN)
        .ok_or(MemMapError::BadMemory)?;
    let end = end - end % DRAM_ALIGN;
    if end <= base {
        return Err(MemMapError::BadMemory);
    }
    Ok(MemRange {
        base: Pa(base),
        size: end - base,
    })
}

/// The devices the TSM places at boot: the SMMU it keeps for itself and the PCIe windows it
/// gives the host. Read once from the device tree, before the host can touch it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Devices {
    /// The SMMUv3's registers (`compatible = "arm,smmu-v3"`), if the machine has one.
    pub smmu: Option<MemRange>,
    /// The PCIe host bridge (`compatible = "pci-host-ecam-generic"`), if any.
    pub pcie: Option<Pcie>,
}

/// The host's PCIe windows: where its devices' configuration space and BARs are.
#[derive(Clone, Copy, Debug)]
pub struct Pcie {
    /// Configuration space (ECAM), from `reg`.
    pub ecam: MemRange,
    /// The 32-bit memory window BARs are placed in, from `ranges`.
    pub mmio: MemRange,
    /// The 64-bit memory window, from `ranges`, if the bridge has one (QEMU `virt` with
    /// `highmem=on`: 512 GiB at 512 GiB); a Linux host may place BARs there.
    pub mmio64: Option<MemRange>,
}

/// PCI address space codes (bits 25:24 of a `ranges` entry's first cell) of 32-bit and 64-bit
/// memory.
const PCI_SPACE_MEM32: u32 = 0b10;
const PCI_SPACE_MEM64: u32 = 0b11;

/// The first `reg` region of `node` as a range.
fn first_reg(node: fdt::node::FdtNode<'_, '_>) -> Option<MemRange> {
    let r = node.reg()?.next()?;
    Some(MemRange {
        base: Pa(r.starting_address as u64),
        size: r.size? as u64,
    })
}

/// A big-endian number of `cells` 32-bit cells from the front of `bytes`.
fn cells(bytes: &[u8], cells: usize) -> Option<u64> {
    (0..cells).try_fold(0u64, |acc, i| {
        let c = bytes.get(i * 4..i * 4 + 4)?;
        Some((acc << 32) | u64::from(u32::from_be_bytes(c.try_into().ok()?)))
    })
}

/// The first memory window of address space `code` in a PCIe host bridge's `ranges` (child
/// address: 3 cells, the first holding the space code; parent address and size as the tree's
/// cells say).
fn pcie_window(
    fdt: &fdt::Fdt<'_>,
    node: fdt::node::FdtNode<'_, '_>,
    code: u32,
) -> Option<MemRange> {
    let child = node.cell_sizes().address_cells;
    let size = node.cell_sizes().size_cells;
    let parent = fdt.root().cell_sizes().address_cells;
    let entry = (child + parent + size) * 4;
    let ranges = node.property("ranges")?.value;
    ranges.chunks_exact(entry).find_map(|e| {
        let space = (cells(e, 1)? >> 24) as u32 & 0b11;
        let base = cells(e.get(child * 4..)?, parent)?;
        let len = cells(e.get((child + parent) * 4..)?, size)?;
        (space == code && len > 0).then_some(MemRange {
            base: Pa(base),
            size: len,
        })
    })
}

/// The SMMU and the PCIe windows of the device tree (each `None` when absent or malformed).
pub fn devices_from_dtb() -> Devices {
    let Ok(fdt) = dtb() else {
        return Devices::default();
    };
    let smmu = fdt.find_compatible(&["arm,smmu-v3"]).and_then(first_reg);
    let pcie = fdt
        .find_compatible(&["pci-host-ecam-generic"])
        .and_then(|n| {
            Some(Pcie {
                ecam: first_reg(n)?,
                mmio: pcie_window(&fdt, n, PCI_SPACE_MEM32)?,
                mmio64: pcie_window(&fdt, n, PCI_SPACE_MEM64),
            })
        });
    Devices { smmu, pcie }
}
