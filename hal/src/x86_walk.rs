//! The translation an SVM guest's own page tables give a linear address, walked by the TSM to
//! read the instruction at the guest's RIP (`x86_64::config_write`): 5- and 4-level paging in
//! long mode, PAE and 32-bit paging (4 MiB pages, PSE-36 included) in protected mode, none with
//! CR0.PG clear.
//!
//! Every table entry is read through the caller's `read` (a guest-physical address and a size,
//! 4 or 8 bytes), which decides what guest memory the TSM may look at; the walk is over the
//! host's tables, so nothing here trusts them: a non-present entry ends it, reserved bits are
//! ignored (the CPU just made the same walk to fetch the instruction; a table that changed since
//! only gives the guest a different instruction of its own). Permissions are not checked for
//! the same reason.

/// The guest's paging controls, as its VMCB holds them.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// CR0.PG: paging on (also read by the SVM intercepts).
pub(crate) const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active (also read by the SVM intercepts and the config-write emulation).
pub(crate) const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1 << 0;
const LARGE: u64 = 1 << 7;
/// Bits 51:12 of an 8-byte entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The guest-physical address of linear address `la`, or `None` if a table entry on the way is
/// not present or `read` refuses it.
pub fn translate(p: &Paging, la: u64, mut read: impl FnMut(u64, u8) -> Option<u64>) -> Option<u64> {
    if p.cr0 & CR0_PG == 0 {
        return Some(la & 0xFFFF_FFFF);
    }
    if p.efer & EFER_LMA != 0 {
        let top = if p.cr4 & CR4_LA57 != 0 { 48 } else { 39 };
        return walk8(p.cr3 & ADDR_MASK, la, top, &mut read);
    }
    let la = la & 0xFFFF_FFFF;
    if p.cr4 & CR4_PAE != 0 {
        let pdpte = read((p.cr3 & 0xFFFF_FFE0) + ((la >> 30) & 3) * 8, 8)?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        return walk8(pdpte & ADDR_MASK, la, 21, &mut read);
    }
    let pde = read((p.cr3 & 0xFFFF_F000) + ((la >> 22) & 0x3FF) * 4, 4)?;
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & LARGE != 0 && p.cr4 & CR4_PSE != 0 {
        // PSE-36: bits 20:13 of the entry are bits 39:32 of the page.
        let high = ((pde >> 13) & 0xFF) << 32;
        return Some(high | (pde & 0xFFC0_0000) | (la & 0x3F_FFFF));
    }
    let pte = read((pde & 0xFFFF_F000) + ((la >> 12) & 0x3FF) * 4, 4)?;
    (pte & PRESENT != 0).then_some((pte & 0xFFFF_F000) | (la & 0xFFF))
}

/// The walk of 8-byte entries from the table at `table` whose index is bits `top + 8 : top` of
/// `la`, down to a 4 KiB page (large pages at the 1 GiB and 2 MiB levels).
fn walk8(
    mut table: u64,
    la: u64,
    top: u32,
    read: &mut impl FnMut(u64, u8) -> Option<u64>,
) -> Option<u64> {
    let mut shift = top;
    loop {
        let e = read(table + ((la >> shift) & 511) * 8, 8)?;
        if e & PRESENT == 0 {
            return None;
        }
        let size = 1u64 << shift;
        if shift == 12 || ((shift == 21 || shift == 30) && e & LARGE != 0) {
            return Some((e & ADDR_MASK & !(size - 1)) | (la & (size - 1)));
        }
        table = e & ADDR_MASK;
        shift -= 9;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory of a few entries: `(address, value)`; anything else reads as refused.
    fn mem<'a>(entries: &'a [(u64, u64)]) -> impl FnMut(u64, u8) -> Option<u64> + 'a {
        move |pa, size| {
            entries
                .iter()
                .find(|(a, _)| *a == pa)
                .map(|(_, v)| if size == 4 { v & 0xFFFF_FFFF } else { *v })
        }
    }

    const LONG: Paging = Paging {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    #[test]
    fn paging_off() {
        let p = Paging {
            cr0: 1,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
        assert_eq!(translate(&p, 0x1_2345_6789, mem(&[])), Some(0x2345_6789));
    }

    #[test]
    fn four_level_pages() {
        // la 0xffffffff81000123: PML4 511, PDPT 510, PD 8, PT 0.
        let la = 0xFFFF_FFFF_8100_0123;
        let tables = [
            (0x1000 + 511 * 8, 0x2000 | 0x63),
            (0x2000 + 510 * 8, 0x3000 | 0x63),
            (0x3000 + 8 * 8, 0x4000 | 0x63),
            (0x4000, (1 << 63) | 0x0123_4000 | 0x63),
        ];
        assert_eq!(translate(&LONG, la, mem(&tables)), Some(0x0123_4123));
        // A 2 MiB page at the PD.
        let large = [
            (0x1000 + 511 * 8, 0x2000 | 0x63),
            (0x2000 + 510 * 8, 0x3000 | 0x63),
            (0x3000 + 8 * 8, 0x0120_0000 | 0xE3),
        ];
        assert_eq!(translate(&LONG, la, mem(&large)), Some(0x0120_0123));
        // A 1 GiB page at the PDPT (its PAT bit 12 is not address).
        let huge = [
            (0x1000 + 511 * 8, 0x2000 | 0x63),
            (0x2000 + 510 * 8, 0x4000_0000 | 0x10E3),
        ];
        assert_eq!(translate(&LONG, la, mem(&huge)), Some(0x4100_0123));
        // Not present, or unreadable, anywhere on the way.
        assert_eq!(translate(&LONG, la, mem(&tables[..3])), None);
        let mut absent = tables;
        absent[1].1 &= !PRESENT;
        assert_eq!(translate(&LONG, la, mem(&absent)), None);
    }

    #[test]
    fn five_level() {
        let p = Paging {
            cr4: CR4_PAE | CR4_LA57,
            ..LONG
        };
        let la = 0x0000_0000_0040_0010;
        let tables = [
            (0x1000, 0x2000 | 1),
            (0x2000, 0x3000 | 1),
            (0x3000, 0x4000 | 1),
            (0x4000 + 2 * 8, 0x5000 | 1),
            (0x5000, 0x9000 | 1),
        ];
        assert_eq!(translate(&p, la, mem(&tables)), Some(0x9010));
    }

    #[test]
    fn pae() {
        let p = Paging {
            cr0: CR0_PG | 1,
            cr3: 0x1020,
            cr4: CR4_PAE,
            efer: 0,
        };
        let la = 0xC010_2345;
        let tables = [
            (0x1020 + 3 * 8, 0x2000 | 1),
            (0x2000, 0x3000 | 1),
            (0x3000 + 0x102 * 8, 0x7000 | 1),
        ];
        assert_eq!(translate(&p, la, mem(&tables)), Some(0x7345));
        let large = [(0x1020 + 3 * 8, 0x2000 | 1), (0x2000, 0x0060_0000 | 0x81)];
        assert_eq!(translate(&p, la, mem(&large)), Some(0x0070_2345));
    }

    #[test]
    fn thirty_two_bit() {
        let p = Paging {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PSE,
            efer: 0,
        };
        let la = 0xC040_1234;
        let tables = [(0x1000 + 0x301 * 4, 0x2000 | 1), (0x2000 + 4, 0x5000 | 1)];
        assert_eq!(translate(&p, la, mem(&tables)), Some(0x5234));
        // A 4 MiB page, with PSE-36 bits 39:32 = 1.
        let large = [(0x1000 + 0x301 * 4, 0x0080_0000 | (1 << 13) | 0x81)];
        assert_eq!(translate(&p, la, mem(&large)), Some(0x1_0080_1234));
        // Without CR4.PSE the PS bit is not a large page: the entry is a table.
        let no_pse = Paging { cr4: 0, ..p };
        let as_table = [
            (0x1000 + 0x301 * 4, 0x0080_0000 | 0x81),
            (0x0080_0000 + 4, 0x6000 | 1),
        ];
        assert_eq!(translate(&no_pse, la, mem(&as_table)), Some(0x6234));
    }
}
