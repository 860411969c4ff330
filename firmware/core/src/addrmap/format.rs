//! Translation-table entry formats. A TVM address map is written in the format its platform
//! runs guests on; the walker in [`super`] is the same for both. A vdevice's DMA table is
//! written in the format of the platform IOMMU: Arm stage 2 again
//! (an SMMUv3 stream with stage 2 only), or Intel VT-d second-level paging.

use tsm_abi::addr::{Gpa, Pa};
use tsm_platform::{AddressMapFormat, DmaTableFormat, PhysMem};

use super::{Leaf, MapKind, Perms, WalkError};

/// Bits 47:12 of an entry: the output address (both formats; x86-64 allows up to bit 51, but
/// no supported platform has more than 48 physical address bits).
const ADDR_MASK: u64 = 0x0000_FFFF_FFFF_F000;

/// A decoded entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Entry {
    /// Nothing mapped.
    Invalid,
    /// A pointer to the next-level table.
    Table(Pa),
    /// A 4 KiB page (level 3 only).
    Page(Leaf),
    /// A valid entry the TSM never writes (a block, or bits outside the format): the walker
    /// treats it as a fault rather than guess.
    Foreign,
}

/// One page-table format: how entries are encoded at each level (0 = root .. 3 = leaf).
pub trait PteFormat: Sync {
    /// Decodes `raw` found at `level`.
    fn decode(&self, raw: u64, level: u8) -> Entry;
    /// A table entry pointing at `next` (levels 0..=2).
    fn table(&self, next: Pa) -> u64;
    /// A level-3 page entry.
    fn page(&self, leaf: Leaf) -> u64;
    /// The entry for `gpa` at `level` of the map rooted at `root`, with the table holding it
    /// ([`super::AddressMap::entry`]). A provided method so each format's copy of the walk
    /// calls its own `decode` directly, inlined: a walk makes one call into the format, not
    /// one per level.
    fn walk(
        &self,
        mem: &dyn PhysMem,
        root: Pa,
        gpa: Gpa,
        level: u8,
    ) -> Result<(Pa, Entry), WalkError> {
        super::walk(self, mem, root, gpa, level)
    }
    /// The page mapped at `gpa` in the map rooted at `root` ([`super::AddressMap::lookup`]):
    /// the walk to the leaf with the level a constant, so each format's copy unrolls the table
    /// levels with their index shifts known. Through [`PteFormat::walk`] with the level an
    /// argument, x86_64's walk of an unmapped GPA kept its loop (127 instructions for four
    /// levels, profiled), and a refused guest buffer walks to the leaf.
    fn lookup(&self, mem: &dyn PhysMem, root: Pa, gpa: Gpa) -> Result<Leaf, WalkError> {
        super::lookup(self, mem, root, gpa)
    }
}

/// The format a platform runs TVMs on.
pub fn for_platform(f: AddressMapFormat) -> &'static dyn PteFormat {
    match f {
        AddressMapFormat::ArmStage2 => &ArmStage2,
        AddressMapFormat::X86_64FourLevel => &X86_64,
    }
}

/// The format a platform IOMMU walks DMA tables in.
pub fn for_dma(f: DmaTableFormat) -> &'static dyn PteFormat {
    match f {
        DmaTableFormat::ArmStage2 => &ArmStage2,
        DmaTableFormat::VtdSecondLevel => &VtdSecondLevel,
    }
}

/// Arm VMSAv8-64 stage 2, 4 KiB granule (ARM ARM D8.3): descriptors with bits 1:0 = 0b11 are
/// tables at levels 0..=2 and pages at level 3; S2AP (7:6) gives read/write, XN (54:53)
/// execute-never, MemAttr (5:2) = 0b1111 normal write-back, SH (9:8) = inner shareable, AF
/// (10) set so the TVM takes no access-flag faults. Bit 55 (software use) marks shared pages.
/// A private MMIO page ([`MapKind::Mmio`]) has bit 56 (software use) set: validated, it is a
/// valid page with MemAttr = 0b0001 (Device-nGnRE), read/write, XN; unvalidated, the same
/// descriptor with bit 0 clear, which the hardware treats as invalid (ARM ARM D8.3: every other
/// bit of an invalid descriptor is ignored), so the TSM keeps the record and the guest faults.
pub struct ArmStage2;

mod arm {
    pub const VALID_TABLE_OR_PAGE: u64 = 0b11;
    pub const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
    pub const S2AP_R: u64 = 1 << 6;
    pub const S2AP_W: u64 = 1 << 7;
    pub const SH_INNER: u64 = 0b11 << 8;
    pub const AF: u64 = 1 << 10;
    pub const XN: u64 = 0b10 << 53;
    pub const XN_MASK: u64 = 0b11 << 53;
    pub const SW_SHARED: u64 = 1 << 55;
    pub const SW_MMIO: u64 = 1 << 56;
    pub const PAGE_FIXED: u64 = VALID_TABLE_OR_PAGE | MEMATTR_NORMAL_WB | SH_INNER | AF;
    pub const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
    /// A validated private MMIO page.
    pub const MMIO_PAGE: u64 =
        VALID_TABLE_OR_PAGE | MEMATTR_DEVICE_NGNRE | S2AP_R | S2AP_W | AF | XN | SW_MMIO;
}

impl PteFormat for ArmStage2 {
    fn decode(&self, raw: u64, level: u8) -> Entry {
        use arm::*;
        if level == 3 && raw & !ADDR_MASK == MMIO_PAGE & !1 {
            return mmio(raw, false);
        }
        if level == 3 && raw & !ADDR_MASK == MMIO_PAGE {
            return mmio(raw, true);
        }
        if raw & 1 == 0 {
            return Entry::Invalid;
        }
        if raw & 0b11 != VALID_TABLE_OR_PAGE {
            return Entry::Foreign;
        }
        let pa = Pa(raw & ADDR_MASK);
        if level < 3 {
            return if raw & !ADDR_MASK == VALID_TABLE_OR_PAGE {
                Entry::Table(pa)
            } else {
                Entry::Foreign
            };
        }
        let known = ADDR_MASK | PAGE_FIXED | S2AP_R | S2AP_W | XN_MASK | SW_SHARED;
        if raw & !known != 0 || raw & PAGE_FIXED != PAGE_FIXED || raw & S2AP_R == 0 {
            return Entry::Foreign;
        }
        Entry::Page(Leaf {
            pa,
            perms: Perms {
                write: raw & S2AP_W != 0,
                exec: raw & XN_MASK == 0,
            },
            kind: if raw & SW_SHARED != 0 {
                MapKind::Shared
            } else {
                MapKind::Private
            },
        })
    }

    fn table(&self, next: Pa) -> u64 {
        (next.0 & ADDR_MASK) | arm::VALID_TABLE_OR_PAGE
    }

    fn page(&self, leaf: Leaf) -> u64 {
        use arm::*;
        if let MapKind::Mmio { validated } = leaf.kind {
            // Unvalidated: bit 0 clear, bit 1 kept so no such entry is ever all zero.
            let bits = if validated { MMIO_PAGE } else { MMIO_PAGE & !1 };
            return (leaf.pa.0 & ADDR_MASK) | bits;
        }
        let mut e = (leaf.pa.0 & ADDR_MASK) | PAGE_FIXED | S2AP_R;
        if leaf.perms.write {
            e |= S2AP_W;
        }
        if !leaf.perms.exec {
            e |= XN;
        }
        if leaf.kind == MapKind::Shared {
            e |= SW_SHARED;
        }
        e
    }
}

/// x86-64 4-level paging (Intel SDM vol. 3 §4.5) as AMD nested paging walks it for a TVM (an
/// SVM guest; the nested walk counts as a user access, so U/S is needed at every level): every
/// level has P (0), R/W (1), U/S (2) and A (5) set on tables (permissions are decided at the
/// leaf; A is preset because the CPU sets it on every entry it walks, and an entry the CPU changed must still
/// decode as ours), leaves add NX (63) unless executable and set A/D (5, 6) so the CPU never
/// writes the table. Bit 9 (ignored by the CPU) marks shared pages. A private MMIO page
/// ([`MapKind::Mmio`]) has bit 10 (ignored by the CPU) set: validated, it is a present,
/// writable, non-executable page with PCD and PWT set (UC with the power-on PAT, which the TSM
/// never changes); unvalidated, the same entry with P clear, which the CPU ignores (SDM vol. 3
/// §4.5: a non-present entry's other bits are free), so the guest faults.
pub struct X86_64;

mod x86 {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    pub const PS: u64 = 1 << 7;
    pub const SW_SHARED: u64 = 1 << 9;
    pub const SW_MMIO: u64 = 1 << 10;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const NX: u64 = 1 << 63;
    pub const TABLE: u64 = P | RW | US | A;
    pub const PAGE_FIXED: u64 = P | US | A | D;
    /// A validated private MMIO page.
    pub const MMIO_PAGE: u64 = PAGE_FIXED | RW | PWT | PCD | NX | SW_MMIO;
}

impl PteFormat for X86_64 {
    fn decode(&self, raw: u64, level: u8) -> Entry {
        use x86::*;
        if level == 3 && raw & !ADDR_MASK == MMIO_PAGE & !P {
            return mmio(raw, false);
        }
        if level == 3 && raw & !ADDR_MASK == MMIO_PAGE {
            return mmio(raw, true);
        }
        if raw & P == 0 {
            return Entry::Invalid;
        }
        let pa = Pa(raw & ADDR_MASK);
        if level < 3 {
            return if raw & !ADDR_MASK & !(A | D) == TABLE & !(A | D) && raw & PS == 0 {
                Entry::Table(pa)
            } else {
                Entry::Foreign
            };
        }
        let known = ADDR_MASK | PAGE_FIXED | RW | NX | SW_SHARED;
        if raw & !known != 0 || raw & PAGE_FIXED != PAGE_FIXED {
            return Entry::Foreign;
        }
        Entry::Page(Leaf {
            pa,
            perms: Perms {
                write: raw & RW != 0,
                exec: raw & NX == 0,
            },
            kind: if raw & SW_SHARED != 0 {
                MapKind::Shared
            } else {
                MapKind::Private
            },
        })
    }

    fn table(&self, next: Pa) -> u64 {
        (next.0 & ADDR_MASK) | x86::TABLE
    }

    fn page(&self, leaf: Leaf) -> u64 {
        use x86::*;
        if let MapKind::Mmio { validated } = leaf.kind {
            let bits = if validated { MMIO_PAGE } else { MMIO_PAGE & !P };
            return (leaf.pa.0 & ADDR_MASK) | bits;
        }
        let mut e = (leaf.pa.0 & ADDR_MASK) | PAGE_FIXED;
        if leaf.perms.write {
            e |= RW;
        }
        if !leaf.perms.exec {
            e |= NX;
        }
        if leaf.kind == MapKind::Shared {
            e |= SW_SHARED;
        }
        e
    }
}

/// A private MMIO page at `raw`'s address: read/write, never executable.
fn mmio(raw: u64, validated: bool) -> Entry {
    Entry::Page(Leaf {
        pa: Pa(raw & ADDR_MASK),
        perms: Perms {
            write: true,
            exec: false,
        },
        kind: MapKind::Mmio { validated },
    })
}

/// Intel VT-d second-level paging, 4 levels (VT-d spec §9.8, "Second-Level Paging Entries"),
/// for DMA tables only: R (0), W (1), the address in bits 51:12, PS (7) for large pages. There is
/// no present bit: an entry with R and W clear maps nothing. A table entry sets R and W (the
/// rights of every level are ANDed, so the leaf decides); a leaf sets R, and W when writable.
/// Execute, memory type and snoop bits stay 0 (devices do not execute; coherency is the
/// platform's default), and there is no software bit, so every page decodes as private: the
/// kind of a DMA mapping is decided when it is composed, never read back.
pub struct VtdSecondLevel;

mod vtd {
    pub const R: u64 = 1 << 0;
    pub const W: u64 = 1 << 1;
    pub const TABLE: u64 = R | W;
}

impl PteFormat for VtdSecondLevel {
    fn decode(&self, raw: u64, level: u8) -> Entry {
        use vtd::*;
        if raw == 0 {
            return Entry::Invalid;
        }
        let pa = Pa(raw & ADDR_MASK);
        if level < 3 {
            return if raw & !ADDR_MASK == TABLE {
                Entry::Table(pa)
            } else {
                Entry::Foreign
            };
        }
        // Only R or R|W: a write-only page, or any other bit, is not one the TSM writes.
        if raw & !(ADDR_MASK | W) != R {
            return Entry::Foreign;
        }
        Entry::Page(Leaf {
            pa,
            perms: Perms {
                write: raw & W != 0,
                exec: false,
            },
            kind: MapKind::Private,
        })
    }

    fn table(&self, next: Pa) -> u64 {
        (next.0 & ADDR_MASK) | vtd::TABLE
    }

    fn page(&self, leaf: Leaf) -> u64 {
        let mut e = (leaf.pa.0 & ADDR_MASK) | vtd::R;
        if leaf.perms.write {
            e |= vtd::W;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves() -> impl Iterator<Item = Leaf> {
        [MapKind::Private, MapKind::Shared]
            .into_iter()
            .flat_map(|kind| {
                [(false, false), (true, false), (false, true), (true, true)]
                    .into_iter()
                    .map(move |(write, exec)| Leaf {
                        pa: Pa(0x0000_8765_4321_0000),
                        perms: Perms { write, exec },
                        kind,
                    })
            })
    }

    /// The invariant checker skips zero entries without decoding them (a zeroed table is most
    /// of what it reads after every step of the model test).
    #[test]
    fn a_zero_entry_is_invalid_at_every_level() {
        for f in [
            AddressMapFormat::ArmStage2,
            AddressMapFormat::X86_64FourLevel,
        ] {
            for level in 0..=3 {
                assert_eq!(
                    for_platform(f).decode(0, level),
                    Entry::Invalid,
                    "{f:?} L{level}"
                );
            }
        }
    }

    #[test]
    fn both_formats_round_trip_every_leaf_and_table() {
        for f in [
            AddressMapFormat::ArmStage2,
            AddressMapFormat::X86_64FourLevel,
        ] {
            let fmt = for_platform(f);
            for leaf in leaves() {
                assert_eq!(fmt.decode(fmt.page(leaf), 3), Entry::Page(leaf), "{f:?}");
            }
            for level in 0..3 {
                assert_eq!(
                    fmt.decode(fmt.table(Pa(0x4000_3000)), level),
                    Entry::Table(Pa(0x4000_3000))
                );
            }
            // `AddressMap` takes an all-zero entry as invalid without asking the format.
            for level in 0..=3 {
                assert_eq!(fmt.decode(0, level), Entry::Invalid, "{f:?}");
            }
        }
    }

    #[test]
    fn architectural_bits_are_where_the_manuals_put_them() {
        let leaf = Leaf {
            pa: Pa(0x4000_5000),
            perms: Perms {
                write: true,
                exec: false,
            },
            kind: MapKind::Private,
        };
        // Arm: valid page, MemAttr=1111, S2AP=11, SH=11, AF, XN=10.
        assert_eq!(
            ArmStage2.page(leaf),
            0x4000_5000 | 0b11 | 0b1111 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10 | 0b10 << 53
        );
        // x86: P, RW, US, A, D, NX.
        assert_eq!(X86_64.page(leaf), 0x4000_5000 | 0b111 | 0b11 << 5 | 1 << 63);
        assert_eq!(ArmStage2.table(Pa(0x4000_6000)), 0x4000_6003);
        assert_eq!(X86_64.table(Pa(0x4000_6000)), 0x4000_6027);
    }

    #[test]
    fn vtd_second_level_entries_round_trip_and_sit_where_the_spec_puts_them() {
        let fmt = for_dma(DmaTableFormat::VtdSecondLevel);
        for write in [false, true] {
            // Devices never execute and the format has no kind bit: a DMA leaf is always
            // decoded as a private, non-executable page.
            let leaf = Leaf {
                pa: Pa(0x0000_8765_4321_0000),
                perms: Perms { write, exec: false },
                kind: MapKind::Private,
            };
            assert_eq!(fmt.decode(fmt.page(leaf), 3), Entry::Page(leaf));
        }
        for level in 0..3 {
            assert_eq!(
                fmt.decode(fmt.table(Pa(0x4000_3000)), level),
                Entry::Table(Pa(0x4000_3000))
            );
        }
        let rw = Leaf {
            pa: Pa(0x4000_5000),
            perms: Perms {
                write: true,
                exec: false,
            },
            kind: MapKind::Private,
        };
        assert_eq!(VtdSecondLevel.page(rw), 0x4000_5000 | 0b11);
        assert_eq!(
            VtdSecondLevel.page(Leaf {
                perms: Perms::default(),
                ..rw
            }),
            0x4000_5001
        );
        assert_eq!(VtdSecondLevel.table(Pa(0x4000_6000)), 0x4000_6003);
        assert_eq!(fmt.decode(0, 0), Entry::Invalid);
        // A 2 MiB page (PS), a write-only page, a snoop bit, a table without W: not ours.
        assert_eq!(fmt.decode(0x4000_0000 | 0b11 | 1 << 7, 2), Entry::Foreign);
        assert_eq!(fmt.decode(0x4000_0000 | 0b10, 3), Entry::Foreign);
        assert_eq!(fmt.decode(0x4000_0000 | 0b11 | 1 << 11, 3), Entry::Foreign);
        assert_eq!(fmt.decode(0x4000_0000 | 0b01, 1), Entry::Foreign);
        // The Arm stage-2 DMA format is the address maps' own.
        let arm = for_dma(DmaTableFormat::ArmStage2);
        assert_eq!(arm.page(rw), ArmStage2.page(rw));
    }

    #[test]
    fn private_mmio_pages_round_trip_and_fault_until_validated() {
        for f in [
            AddressMapFormat::ArmStage2,
            AddressMapFormat::X86_64FourLevel,
        ] {
            let fmt = for_platform(f);
            for validated in [false, true] {
                let leaf = Leaf {
                    pa: Pa(0x1000_5000),
                    perms: Perms {
                        write: true,
                        exec: false,
                    },
                    kind: MapKind::Mmio { validated },
                };
                let raw = fmt.page(leaf);
                assert_eq!(fmt.decode(raw, 3), Entry::Page(leaf), "{f:?}");
                // Bit 0 is the valid / present bit of both formats: the hardware walks past
                // an unvalidated page as if nothing were mapped.
                assert_eq!(raw & 1 != 0, validated, "{f:?}");
                assert_ne!(raw, 0);
                // Only leaves: the same bits at a table level are not ours.
                assert!(!matches!(fmt.decode(raw, 2), Entry::Page(_)), "{f:?}");
            }
        }
        let leaf = |validated| Leaf {
            pa: Pa(0x1000_5000),
            perms: Perms {
                write: true,
                exec: false,
            },
            kind: MapKind::Mmio { validated },
        };
        // Arm: valid page, MemAttr=0001 (Device-nGnRE), S2AP=11, AF, XN=10, bit 56.
        assert_eq!(
            ArmStage2.page(leaf(true)),
            0x1000_5000 | 0b11 | 0b0001 << 2 | 0b11 << 6 | 1 << 10 | 0b10 << 53 | 1 << 56
        );
        // x86: P, RW, US, PWT, PCD, A, D, bit 10, NX.
        assert_eq!(
            X86_64.page(leaf(true)),
            0x1000_5000 | 0b111 | 0b11 << 3 | 0b11 << 5 | 1 << 10 | 1 << 63
        );
        assert_eq!(X86_64.page(leaf(false)), X86_64.page(leaf(true)) & !1);
    }

    #[test]
    fn blocks_and_unknown_bits_are_foreign() {
        // Arm level-1/2 block descriptor (0b01) and an x86 2 MiB page (PS).
        assert_eq!(ArmStage2.decode(0x4000_0000 | 0b01, 1), Entry::Foreign);
        assert_eq!(
            X86_64.decode(0x4000_0000 | 0b111 | 1 << 7, 2),
            Entry::Foreign
        );
        // A level-3 Arm entry without AF, an x86 leaf with PWT set.
        assert_eq!(
            ArmStage2.decode(0x4000_0000 | 0b11 | 0b1111 << 2 | 1 << 6 | 0b11 << 8, 3),
            Entry::Foreign
        );
        assert_eq!(
            X86_64.decode(0x4000_0000 | 0b101 | 0b11 << 5 | 1 << 3, 3),
            Entry::Foreign
        );
    }
}
