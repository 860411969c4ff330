//! What the driver learns from the device tree the kernel booted with (`/sys/firmware/fdt`, the
//! tree the TSM wrote for it; aarch64), as a host driver would rather than from QEMU's layout:
//! where PCIe configuration space is (the window the adapter presents it in, at the address
//! the kernel's own ECAM accessors use) and where the TSM's memory is (its `/reserved-memory`
//! `no-map` child). The tree is firmware input to user space: every value is checked, and a
//! tree that does not say what the driver needs is a [`TreeError`], never a guess.
//!
//! The IOMMU is not here: the TSM removes its node (the IOMMU is the TSM's, docs/design.md "A
//! Linux host"), so no host can learn it from the tree.

use tsm_abi::addr::{GRANULE_SIZE, Pa};

/// The `compatible` of a PCIe host bridge with a flat ECAM window.
const PCIE_COMPATIBLE: &str = "pci-host-ecam-generic";
/// The name the TSM gives its `/reserved-memory` child (`tsm@<address>`).
const TSM_NODE: &str = "tsm@";
/// One bus's configuration space in an ECAM window: 32 devices × 8 functions × 4 KiB.
const ECAM_BUS: u64 = 1 << 20;

/// What the tree says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TreePlatform {
    /// The PCIe host bridge's ECAM window, bus 0 first.
    pub ecam: Pa,
    /// The first granule of the TSM's memory.
    pub tsm_memory: Pa,
}

/// Why the tree did not give the driver its platform.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TreeError {
    /// Not a flattened device tree, or one the parser refuses (bad header, sizes, offsets).
    Malformed,
    /// No `pci-host-ecam-generic` node, or one without a `reg`.
    NoPcie,
    /// The ECAM window is not 1 MiB aligned, smaller than one bus or wraps.
    BadEcam,
    /// No `/reserved-memory/tsm@…` child with `no-map` and a `reg`.
    NoTsmMemory,
    /// The TSM's range is not granule aligned, empty or wraps.
    BadTsmMemory,
}

impl TreeError {
    /// For the driver's error line.
    pub fn describe(self) -> &'static str {
        match self {
            TreeError::Malformed => "not a well-formed flattened device tree",
            TreeError::NoPcie => "no pci-host-ecam-generic node with a reg",
            TreeError::BadEcam => {
                "the PCIe ECAM window is not 1 MiB aligned, smaller than a bus or wraps"
            }
            TreeError::NoTsmMemory => "no /reserved-memory/tsm@... node with no-map and a reg",
            TreeError::BadTsmMemory => "the TSM's reserved range is unaligned, empty or wraps",
        }
    }
}

/// The platform `blob` (a flattened device tree) describes.
pub fn platform(blob: &[u8]) -> Result<TreePlatform, TreeError> {
    let fdt = fdt::Fdt::new(blob).map_err(|_| TreeError::Malformed)?;
    let (ecam, ecam_size) = fdt
        .find_compatible(&[PCIE_COMPATIBLE])
        .and_then(first_reg)
        .ok_or(TreeError::NoPcie)?;
    if !ecam.is_multiple_of(ECAM_BUS)
        || ecam_size < ECAM_BUS
        || ecam.checked_add(ecam_size).is_none()
    {
        return Err(TreeError::BadEcam);
    }
    let (tsm, tsm_size) = fdt
        .find_node("/reserved-memory")
        .into_iter()
        .flat_map(|r| r.children())
        .filter(|n| n.name.starts_with(TSM_NODE) && n.property("no-map").is_some())
        .find_map(first_reg)
        .ok_or(TreeError::NoTsmMemory)?;
    if !tsm.is_multiple_of(GRANULE_SIZE)
        || !tsm_size.is_multiple_of(GRANULE_SIZE)
        || tsm_size == 0
        || tsm.checked_add(tsm_size).is_none()
    {
        return Err(TreeError::BadTsmMemory);
    }
    Ok(TreePlatform {
        ecam: Pa(ecam),
        tsm_memory: Pa(tsm),
    })
}

/// A node's first `reg` entry (address, size), as its parent's cell sizes say.
fn first_reg(node: fdt::node::FdtNode<'_, '_>) -> Option<(u64, u64)> {
    let r = node.reg()?.next()?;
    Some((r.starting_address as u64, r.size? as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flattened device tree, written as the spec lays it out (header, empty reservation
    /// map, structure block, strings block).
    #[derive(Default)]
    struct Writer {
        structs: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Writer {
        fn word(&mut self, w: u32) {
            self.structs.extend(w.to_be_bytes());
        }
        fn begin(&mut self, name: &str) {
            self.word(1);
            self.structs.extend(name.as_bytes());
            self.structs.push(0);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
        }
        fn end(&mut self) {
            self.word(2);
        }
        fn prop(&mut self, name: &str, value: &[u8]) {
            let off = self.strings.len() as u32;
            self.strings.extend(name.as_bytes());
            self.strings.push(0);
            self.word(3);
            self.word(value.len() as u32);
            self.word(off);
            self.structs.extend(value);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
        }
        fn cells(&mut self, name: &str, cells: &[u32]) {
            let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &v);
        }
        fn finish(mut self) -> Vec<u8> {
            self.word(9);
            let rsv = 40u32;
            let structs = rsv + 16;
            let strings = structs + self.structs.len() as u32;
            let total = strings + self.strings.len() as u32;
            let mut b = Vec::new();
            for w in [
                0xd00d_feed,
                total,
                structs,
                strings,
                rsv,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structs.len() as u32,
            ] {
                b.extend(u32::to_be_bytes(w));
            }
            b.extend([0u8; 16]);
            b.extend(self.structs);
            b.extend(self.strings);
            b
        }
    }

    /// QEMU `virt`'s tree with `highmem=on` as the TSM rewrites it, with `ecam` and `tsm` (two
    /// cells each for address and size) and the `no-map` flag as given.
    fn tree(ecam: Option<[u32; 4]>, tsm: Option<[u32; 4]>, no_map: bool) -> Vec<u8> {
        let mut w = Writer::default();
        w.begin("");
        w.cells("#address-cells", &[2]);
        w.cells("#size-cells", &[2]);
        w.begin("pl011@9040000");
        w.prop("compatible", b"arm,pl011\0arm,primecell\0");
        w.cells("reg", &[0, 0x0904_0000, 0, 0x1000]);
        w.end();
        if let Some(reg) = ecam {
            w.begin("pcie@10000000");
            w.prop("compatible", b"pci-host-ecam-generic\0");
            w.prop("device_type", b"pci\0");
            w.cells("reg", &reg);
            w.end();
        }
        w.begin("reserved-memory");
        w.cells("#address-cells", &[2]);
        w.cells("#size-cells", &[2]);
        w.prop("ranges", &[]);
        if let Some(reg) = tsm {
            w.begin("tsm@40200000");
            w.cells("reg", &reg);
            if no_map {
                w.prop("no-map", &[]);
            }
            w.end();
        }
        w.end();
        w.end();
        w.finish()
    }

    const HIGH_ECAM: [u32; 4] = [0x40, 0x1000_0000, 0, 0x1000_0000];
    const TSM: [u32; 4] = [0, 0x4020_0000, 0, 0x00DF_F000];

    #[test]
    fn the_rewritten_tree_gives_ecam_and_the_tsm() {
        assert_eq!(
            platform(&tree(Some(HIGH_ECAM), Some(TSM), true)),
            Ok(TreePlatform {
                ecam: Pa(0x40_1000_0000),
                tsm_memory: Pa(0x4020_0000),
            })
        );
        // highmem=off: the low ECAM.
        let low = [0, 0x3f00_0000, 0, 0x0100_0000];
        assert_eq!(
            platform(&tree(Some(low), Some(TSM), true)).map(|p| p.ecam),
            Ok(Pa(0x3f00_0000))
        );
    }

    #[test]
    fn a_tree_without_what_the_driver_needs_is_refused() {
        assert_eq!(
            platform(&tree(None, Some(TSM), true)),
            Err(TreeError::NoPcie)
        );
        assert_eq!(
            platform(&tree(Some(HIGH_ECAM), None, true)),
            Err(TreeError::NoTsmMemory)
        );
        // A tsm@ child the kernel may map is not the TSM's reservation.
        assert_eq!(
            platform(&tree(Some(HIGH_ECAM), Some(TSM), false)),
            Err(TreeError::NoTsmMemory)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for ecam in [
            [0x40, 0x1008_0000, 0, 0x1000_0000],      // not 1 MiB aligned
            [0x40, 0x1000_0000, 0, 0x8_0000],         // smaller than a bus
            [0xFFFF_FFFF, 0xFFF0_0000, 0, 0x20_0000], // wraps
        ] {
            assert_eq!(
                platform(&tree(Some(ecam), Some(TSM), true)),
                Err(TreeError::BadEcam),
                "{ecam:x?}"
            );
        }
        for tsm in [
            [0, 0x4020_0800, 0, 0x1000],           // unaligned base
            [0, 0x4020_0000, 0, 0x800],            // unaligned size
            [0, 0x4020_0000, 0, 0],                // empty
            [0xFFFF_FFFF, 0xFFFF_F000, 0, 0x2000], // wraps
        ] {
            assert_eq!(
                platform(&tree(Some(HIGH_ECAM), Some(tsm), true)),
                Err(TreeError::BadTsmMemory),
                "{tsm:x?}"
            );
        }
    }

    #[test]
    fn what_is_not_a_tree_is_refused() {
        assert_eq!(platform(&[]), Err(TreeError::Malformed));
        assert_eq!(platform(&[0u8; 64]), Err(TreeError::Malformed));
        let mut t = tree(Some(HIGH_ECAM), Some(TSM), true);
        // A total size beyond the bytes there are.
        let beyond = t.len() as u32 + 4096;
        t[4..8].copy_from_slice(&beyond.to_be_bytes());
        assert_eq!(platform(&t), Err(TreeError::Malformed));
        // Every truncation is refused or parsed, never a panic.
        let t = tree(Some(HIGH_ECAM), Some(TSM), true);
        for n in 0..t.len() {
            let _ = platform(&t[..n]);
        }
    }
}
