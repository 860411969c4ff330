//! What the driver learns from the device tree the kernel booted with (`/sys/firmware/fdt`, the
//! tree the TSM wrote for it; aarch64), as a host driver would rather than from QEMU's layout:
//! where PCIe configuration space is (the window the adapter presents it in, at the address
//! the kernel's own ECAM accessors use) and where the TSM's memory is (its `/reserved-memory`
//! `no-map` child). The tree is firmware input to user space: every value is checked, and a
//! tree that does not say what the driver needs is a [`TreeError`], never a guess.
//!
//! The IOMMU is not here: the TSM removes its node (the IOMMU is the TSM's, docs/design.md "A
//! Linux host"), so no host can learn it from the tree.
//!
//! The kernel's tree holds `FDT_NOP` tokens where the kernel erased properties it consumed at
//! boot (`/chosen`'s `rng-seed` and `kaslr-seed`), and the `fdt` crate (0.1.5) asserts on a NOP
//! followed by a property (`skip_current_node`: "bad node"), a panic on a well-formed tree. So
//! [`platform`] first removes every NOP in place ([`drop_nops`], the devicetree specification's
//! token grammar, every read bounds-checked), then parses. The crate still panics on some
//! corrupt trees (a property name offset without its NUL, for one): the kernel's tree is the
//! driver's own kernel's word, and such a panic ends the driver with status 101, never the
//! TSM's concern (its input from this host is checked by the TSM).

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

/// The platform `blob` (a flattened device tree) describes; `blob` is left with its NOP
/// tokens removed.
pub fn platform(blob: &mut [u8]) -> Result<TreePlatform, TreeError> {
    let len = drop_nops(blob).ok_or(TreeError::Malformed)?;
    let blob = blob.get(..len).ok_or(TreeError::Malformed)?;
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

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Header words (devicetree specification 5.2): totalsize, off_dt_struct, off_dt_strings,
/// size_dt_strings, size_dt_struct, as byte offsets.
const TOTALSIZE: usize = 4;
const OFF_STRUCT: usize = 8;
const OFF_STRINGS: usize = 12;
const SIZE_STRINGS: usize = 32;
const SIZE_STRUCT: usize = 36;
const HEADER: usize = 40;

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn set_word(b: &mut [u8], at: usize, w: u32) -> Option<()> {
    b.get_mut(at..at.checked_add(4)?)?
        .copy_from_slice(&w.to_be_bytes());
    Some(())
}

/// Removes the NOP tokens of the tree in `blob` in place: the structure block is compacted,
/// the strings block moved down behind it (the layout Linux and the TSM write: header,
/// reservation map, structure block, strings block) and the header's sizes and offsets
/// rewritten. The tree's new length, or `None` for a blob that is not such a tree (bad magic,
/// sizes or offsets, a token outside the grammar, a name or value past the block's end).
fn drop_nops(blob: &mut [u8]) -> Option<usize> {
    if word(blob, 0)? != FDT_MAGIC {
        return None;
    }
    let field = |at| usize::try_from(word(blob, at)?).ok();
    let total = field(TOTALSIZE)?;
    let off_struct = field(OFF_STRUCT)?;
    let size_struct = field(SIZE_STRUCT)?;
    let off_strings = field(OFF_STRINGS)?;
    let size_strings = field(SIZE_STRINGS)?;
    let struct_end = off_struct.checked_add(size_struct)?;
    let strings_end = off_strings.checked_add(size_strings)?;
    if off_struct < HEADER
        || !off_struct.is_multiple_of(4)
        || struct_end > off_strings
        || strings_end > total
        || total > blob.len()
    {
        return None;
    }
    let (mut read, mut write) = (off_struct, off_struct);
    loop {
        let token = word(blob, read)?;
        let len = match token {
            FDT_BEGIN_NODE => {
                let name = blob.get(read + 4..struct_end)?;
                let nul = name.iter().position(|&c| c == 0)?;
                4 + (nul + 1).next_multiple_of(4)
            }
            FDT_PROP => {
                let value = usize::try_from(word(blob, read.checked_add(4)?)?).ok()?;
                12usize.checked_add(value.checked_next_multiple_of(4)?)?
            }
            FDT_END_NODE | FDT_END | FDT_NOP => 4,
            _ => return None,
        };
        let next = read.checked_add(len)?;
        if next > struct_end {
            return None;
        }
        if token != FDT_NOP {
            blob.copy_within(read..next, write);
            write += len;
        }
        read = next;
        if token == FDT_END {
            break;
        }
    }
    let new_strings = write;
    blob.copy_within(off_strings..strings_end, new_strings);
    let new_total = new_strings.checked_add(size_strings)?;
    set_word(blob, SIZE_STRUCT, u32::try_from(write - off_struct).ok()?)?;
    set_word(blob, OFF_STRINGS, u32::try_from(new_strings).ok()?)?;
    set_word(blob, TOTALSIZE, u32::try_from(new_total).ok()?)?;
    Some(new_total)
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
        fn nop(&mut self) {
            self.word(4);
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

    /// The tree as the kernel exposes it: `/chosen` with the properties it consumed at boot
    /// erased to NOP tokens between the others, NOPs between nodes and before the end.
    fn tree_with_nops() -> Vec<u8> {
        let mut w = Writer::default();
        w.begin("");
        w.cells("#address-cells", &[2]);
        w.nop();
        w.cells("#size-cells", &[2]);
        w.begin("chosen");
        w.nop();
        w.nop();
        w.nop();
        w.prop("bootargs", b"console=ttyAMA1\0");
        w.nop();
        w.prop("stdout-path", b"serial1\0");
        w.end();
        w.nop();
        w.begin("pcie@10000000");
        w.prop("compatible", b"pci-host-ecam-generic\0");
        w.nop();
        w.cells("reg", &HIGH_ECAM);
        w.end();
        w.begin("reserved-memory");
        w.cells("#address-cells", &[2]);
        w.cells("#size-cells", &[2]);
        w.begin("tsm@40200000");
        w.cells("reg", &TSM);
        w.nop();
        w.prop("no-map", &[]);
        w.end();
        w.end();
        w.nop();
        w.end();
        w.finish()
    }

    #[test]
    fn nop_tokens_the_kernel_left_are_no_obstacle() {
        let want = Ok(TreePlatform {
            ecam: Pa(0x40_1000_0000),
            tsm_memory: Pa(0x4020_0000),
        });
        let mut t = tree_with_nops();
        let size = word(&t, SIZE_STRUCT).unwrap();
        assert_eq!(platform(&mut t), want);
        // Its nine NOPs are gone, and the compacted tree parses to the same platform again.
        assert_eq!(word(&t, SIZE_STRUCT), Some(size - 9 * 4));
        let len = word(&t, TOTALSIZE).unwrap() as usize;
        assert_eq!(drop_nops(&mut t), Some(len));
        assert_eq!(platform(&mut t[..len].to_vec()), want);
    }

    /// A tree whose root holds `body` as its only content.
    fn root_with(body: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        w.begin("");
        body(&mut w);
        w.end();
        w.finish()
    }

    #[test]
    fn a_token_outside_the_grammar_or_past_the_block_is_malformed() {
        let mut t = root_with(|w| w.word(7));
        assert_eq!(drop_nops(&mut t), None);
        let mut t = root_with(|w| {
            w.word(FDT_PROP);
            w.word(0xFFFF_FFF0);
            w.word(0);
        });
        assert_eq!(drop_nops(&mut t), None);
        // A node name without its NUL inside the block.
        let mut t = root_with(|w| {
            w.word(FDT_BEGIN_NODE);
            w.structs.extend(b"abcd");
        });
        let size = word(&t, SIZE_STRUCT).unwrap();
        set_word(&mut t, SIZE_STRUCT, size - 8).unwrap();
        assert_eq!(drop_nops(&mut t), None);
        // A structure block that ends before its END token.
        let mut t = tree_with_nops();
        let size = word(&t, SIZE_STRUCT).unwrap();
        set_word(&mut t, SIZE_STRUCT, size - 4).unwrap();
        assert_eq!(platform(&mut t), Err(TreeError::Malformed));
        // A strings block past the tree's total size.
        let mut t = tree_with_nops();
        let total = word(&t, TOTALSIZE).unwrap();
        set_word(&mut t, TOTALSIZE, total - 1).unwrap();
        assert_eq!(platform(&mut t), Err(TreeError::Malformed));
    }

    #[test]
    fn no_single_byte_change_of_the_header_or_structure_makes_drop_nops_panic() {
        // drop_nops's own reads; the `fdt` crate, which parses what it leaves, trusts a
        // well-formed tree (its panics on a corrupt one end the driver: module doc).
        let clean = tree_with_nops();
        let strings = word(&clean, OFF_STRINGS).unwrap() as usize;
        for at in 0..strings {
            for value in [0x00, 0x01, 0x04, 0x7F, 0xFF] {
                let mut t = clean.clone();
                t[at] = value;
                if let Some(len) = drop_nops(&mut t) {
                    assert!(len <= t.len());
                }
            }
        }
    }

    const HIGH_ECAM: [u32; 4] = [0x40, 0x1000_0000, 0, 0x1000_0000];
    const TSM: [u32; 4] = [0, 0x4020_0000, 0, 0x00DF_F000];

    #[test]
    fn the_rewritten_tree_gives_ecam_and_the_tsm() {
        assert_eq!(
            platform(&mut tree(Some(HIGH_ECAM), Some(TSM), true)),
            Ok(TreePlatform {
                ecam: Pa(0x40_1000_0000),
                tsm_memory: Pa(0x4020_0000),
            })
        );
        // highmem=off: the low ECAM.
        let low = [0, 0x3f00_0000, 0, 0x0100_0000];
        assert_eq!(
            platform(&mut tree(Some(low), Some(TSM), true)).map(|p| p.ecam),
            Ok(Pa(0x3f00_0000))
        );
    }

    #[test]
    fn a_tree_without_what_the_driver_needs_is_refused() {
        assert_eq!(
            platform(&mut tree(None, Some(TSM), true)),
            Err(TreeError::NoPcie)
        );
        assert_eq!(
            platform(&mut tree(Some(HIGH_ECAM), None, true)),
            Err(TreeError::NoTsmMemory)
        );
        // A tsm@ child the kernel may map is not the TSM's reservation.
        assert_eq!(
            platform(&mut tree(Some(HIGH_ECAM), Some(TSM), false)),
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
                platform(&mut tree(Some(ecam), Some(TSM), true)),
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
                platform(&mut tree(Some(HIGH_ECAM), Some(tsm), true)),
                Err(TreeError::BadTsmMemory),
                "{tsm:x?}"
            );
        }
    }

    #[test]
    fn what_is_not_a_tree_is_refused() {
        assert_eq!(platform(&mut []), Err(TreeError::Malformed));
        assert_eq!(platform(&mut [0u8; 64]), Err(TreeError::Malformed));
        let mut t = tree(Some(HIGH_ECAM), Some(TSM), true);
        // A total size beyond the bytes there are.
        let beyond = t.len() as u32 + 4096;
        t[4..8].copy_from_slice(&beyond.to_be_bytes());
        assert_eq!(platform(&mut t), Err(TreeError::Malformed));
        // Every truncation is refused or parsed, never a panic.
        let t = tree(Some(HIGH_ECAM), Some(TSM), true);
        for n in 0..t.len() {
            let _ = platform(&mut t[..n].to_vec());
        }
    }
}
