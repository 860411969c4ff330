//! Stage-1 descriptor decoding for the two guest formats. The walk loop (and the stage-2
//! translation of every table read) is in `walk`; this file only says what one descriptor means.
//!
//! Both formats here: levels 0 (top) to 3, 9 index bits per level, 4 KiB tables of 8-byte
//! little-endian descriptors, 48-bit output addresses. The input size is the guest's
//! (G_S1_ATTACH): 25..=48 bits for Arm, where it also sets the level the walk starts at; 48 for
//! x86-64.
//!
//! DMA requests are treated as *unprivileged* (as SMMUv3 treats PCIe traffic by default and as
//! VT-d treats first-stage user requests); Linux's io-pgtable-arm and intel-iommu set the
//! unprivileged/user bit on every DMA mapping accordingly.

use tsm_abi::addr::Iova;

use super::{FaultReason, Perms};

/// Output address bits 47:12.
const OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;
/// Output address bits 51:48: above the 48 bits both formats support here.
const OA_HIGH: u64 = 0x000F_0000_0000_0000;

/// Index of `iova`'s descriptor in a level-`level` table. For an IOVA that passed
/// [`input_ok`] the bits above the input size are zero (Arm) or copies of bit 47 above bit 47
/// (x86-64), so at the start level the index holds only input bits, as the architectures'
/// shorter top-level tables require.
pub(super) fn index(iova: Iova, level: u8) -> u64 {
    (iova.0 >> level_shift(level)) & 0x1FF
}

/// Lowest IOVA bit a level-`level` table indexes, which is also the size shift of a leaf at
/// that level (3: 4 KiB, 2: 2 MiB, 1: 1 GiB): `12 + 9 * (3 - level)`, spelled out so no level can underflow it (levels past 3
/// count as 3).
pub(super) fn level_shift(level: u8) -> u32 {
    match level {
        0 => 39,
        1 => 30,
        2 => 21,
        _ => 12,
    }
}

/// The level a walk of an `ia_bits`-bit input starts at; `None` for an input size the format
/// does not have here.
///
/// Arm: the initial lookup level of the VMSAv8-64 4 KiB-granule walk (Arm ARM, "Translation
/// table walk", as an SMMUv3 CD's T0SZ = 64 - `ia_bits` selects it): the top level resolves the
/// input bits that remain above the levels below it, 1 to 9 of them. 25 bits is the smallest
/// input without FEAT_TTST (SMMU_IDR3.STT), which would add level-3 starts. x86-64: 4-level
/// paging always starts at the PML4 and translates 48 bits.
pub(super) fn start_level(format: Format, ia_bits: u8) -> Option<u8> {
    match (format, ia_bits) {
        (Format::Arm, 40..=48) | (Format::X86, 48) => Some(0),
        (Format::Arm, 31..=39) => Some(1),
        (Format::Arm, 25..=30) => Some(2),
        _ => None,
    }
}

/// Whether `iova` is in the input range of an `ia_bits`-bit walk (`ia_bits` one that
/// [`start_level`] accepts).
pub(super) fn input_ok(format: Format, ia_bits: u8, iova: Iova) -> bool {
    match format {
        // TTB0 only: every bit at or above the input size is zero.
        Format::Arm => iova.0.checked_shr(u32::from(ia_bits)) == Some(0),
        // Canonical: bits 63:47 all equal.
        Format::X86 => {
            let top = iova.0 >> 47;
            top == 0 || top == (1 << 17) - 1
        }
    }
}

/// A stage-1 format that has tables.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Format {
    Arm,
    X86,
}

/// Permission restrictions collected from table descriptors on the way down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Inherited {
    /// No write below (Arm APTable[1]; x86 R/W = 0).
    pub no_write: bool,
    /// No unprivileged access below (Arm APTable[0]; x86 U/S = 0).
    pub no_user: bool,
}

impl Inherited {
    pub const NONE: Inherited = Inherited {
        no_write: false,
        no_user: false,
    };
}

/// What one descriptor says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Step {
    /// Next table at this GPA.
    Table(u64),
    /// A leaf: output address (of the IOVA itself, not of the block) and permissions.
    Leaf { oa: u64, perms: Perms },
}

/// Decodes descriptor `desc` met at `level` while translating `iova`; `inh` accumulates the
/// table-level restrictions.
pub(super) fn decode(
    format: Format,
    desc: u64,
    level: u8,
    iova: Iova,
    inh: &mut Inherited,
) -> Result<Step, FaultReason> {
    match format {
        Format::Arm => decode_arm(desc, level, iova, inh),
        Format::X86 => decode_x86(desc, level, iova, inh),
    }
}

/// The low `shift` bits set (`(1 << shift) - 1`, for `shift < 64`).
fn low_mask(shift: u32) -> u64 {
    !(u64::MAX << shift)
}

fn leaf_oa(desc: u64, level: u8, iova: Iova) -> u64 {
    let low = low_mask(level_shift(level));
    (desc & OA_MASK & !low) | (iova.0 & low)
}

/// Arm VMSAv8-64 stage 1, 4 KiB granule. bits[1:0]: `x0` invalid, `11` table (levels 0–2) or
/// page (level 3), `01` block (levels 1–2; reserved at 0 and 3). Leaf: AF = bit 10,
/// AP[2:1] = bits 7:6 (AP[1]: unprivileged access, AP[2]: read-only). Table: APTable = bits
/// 62:61 (bit 62: no write below, bit 61: no unprivileged access below).
fn decode_arm(desc: u64, level: u8, iova: Iova, inh: &mut Inherited) -> Result<Step, FaultReason> {
    if desc & 1 == 0 {
        return Err(FaultReason::S1Translation);
    }
    if desc & OA_HIGH != 0 {
        return Err(FaultReason::S1AddressSize);
    }
    let is_table_or_page = desc & 2 != 0;
    if level < 3 && is_table_or_page {
        inh.no_write |= desc & (1 << 62) != 0;
        inh.no_user |= desc & (1 << 61) != 0;
        return Ok(Step::Table(desc & OA_MASK));
    }
    if level == 0 || (level == 3 && !is_table_or_page) {
        return Err(FaultReason::S1Reserved);
    }
    if desc & (1 << 10) == 0 {
        return Err(FaultReason::S1AccessFlag);
    }
    let user = desc & (1 << 6) != 0 && !inh.no_user;
    let write = user && desc & (1 << 7) == 0 && !inh.no_write;
    Ok(Step::Leaf {
        oa: leaf_oa(desc, level, iova),
        perms: Perms { read: user, write },
    })
}

/// x86-64 4-level paging as VT-d first-stage uses it. P = bit 0, R/W = bit 1, U/S = bit 2,
/// PS = bit 7 (1 GiB page in a PDPTE, 2 MiB in a PDE; reserved in a PML4E; PAT in a PTE).
/// Reserved: address bits 51:48 (48-bit guest address width), and in a large page the address
/// bits below its size other than the PAT bit 12. XD (bit 63) and bits 62:52 are ignored:
/// DMA has no execute requests.
fn decode_x86(desc: u64, level: u8, iova: Iova, inh: &mut Inherited) -> Result<Step, FaultReason> {
    if desc & 1 == 0 {
        return Err(FaultReason::S1Translation);
    }
    if desc & OA_HIGH != 0 {
        return Err(FaultReason::S1Reserved);
    }
    inh.no_write |= desc & (1 << 1) == 0;
    inh.no_user |= desc & (1 << 2) == 0;
    let ps = desc & (1 << 7) != 0;
    let leaf = match level {
        0 if ps => return Err(FaultReason::S1Reserved),
        1 | 2 if ps => {
            // Address bits 29:13 (1 GiB) or 20:13 (2 MiB) are reserved; bit 12 is PAT.
            let reserved = low_mask(level_shift(level)) & !0x1FFF;
            if desc & reserved != 0 {
                return Err(FaultReason::S1Reserved);
            }
            true
        }
        3 => true,
        _ => false,
    };
    if !leaf {
        return Ok(Step::Table(desc & OA_MASK));
    }
    let read = !inh.no_user;
    let write = read && !inh.no_write;
    Ok(Step::Leaf {
        oa: leaf_oa(desc, level, iova),
        perms: Perms { read, write },
    })
}
