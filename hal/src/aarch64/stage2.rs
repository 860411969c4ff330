//! The host's stage-2 translation: an identity map of DRAM minus the TSM's memory, at 4 KiB
//! granularity so that single granules can be taken from the host and given back.
//!
//! Every DRAM granule has its own level-3 descriptor from boot on, so taking a granule away
//! is one descriptor store plus TLB maintenance (no block splitting, no allocation). The tables
//! live in the TSM's carve-out, sized from the DRAM size at boot. MMIO is not mapped: the host
//! reaches no device (it logs through `CONSOLE_WRITE`).

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Gpa, Pa};

use super::mmu::{Table, pa_size_field};
use super::sysreg::{isb, read_sysreg, write_sysreg};
use super::vmid::Vmid;
use crate::platform::MemRange;

const ENTRIES: u64 = 512;
const L1_SHIFT: u32 = 30;
const L2_SHIFT: u32 = 21;
/// Input (IPA) bits: 39, walk starting at level 1 (VTCR_EL2.SL0 = 1) with one table.
const IPA_BITS: u64 = 39;
/// VTCR_EL2: T0SZ, SL0 = 1 (level 1), inner/outer WBWA walks, inner shareable, 4 KiB granule,
/// RES1 bit 31. PS is added from the CPU's PA size.
const VTCR_BASE: u64 =
    (64 - IPA_BITS) | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);
/// The host's VMID (TVMs get 1..=255, see `vmid`).
const HOST_VMID: u64 = 0;
/// VTCR_EL2 for TVM address maps (`AddressMapFormat::ArmStage2`): 48-bit IPA (T0SZ = 16),
/// walk starting at level 0 (SL0 = 2), otherwise as the host's.
const VTCR_TVM_BASE: u64 = 16 | (0b10 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);

const VALID_TABLE: u64 = 0b11;
/// A level-3 page: valid, MemAttr = Normal inner/outer write-back (with HCR_EL2.DC the host's
/// own accesses are Normal WB too), S2AP = read/write, inner shareable, access flag set;
/// executable.
const HOST_PAGE: u64 = 0b11 | (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);

/// Why a granule's host mapping was not changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage2Error {
    /// The address is not granule-aligned.
    Misaligned,
    /// The granule is not host DRAM (outside DRAM).
    OutOfRange,
    /// The granule is the TSM's own memory, which the host never gets.
    TsmMemory,
    /// Unmap of a granule the host does not have.
    NotMapped,
    /// Map of a granule the host already has.
    AlreadyMapped,
}

/// The host's stage-2 tables.
pub struct HostStage2 {
    dram: MemRange,
    tsm: MemRange,
    /// One level-3 table per 2 MiB of DRAM, in address order.
    l3: &'static [Table],
}

/// Tables needed to map `dram`: the level-1 table, one level-2 table per GiB DRAM touches,
/// one level-3 table per 2 MiB.
pub fn table_count(dram: &MemRange) -> Option<u64> {
    let end = dram.base.0.checked_add(dram.size)?;
    let first_gib = dram.base.0 >> L1_SHIFT;
    let l2 = end.div_ceil(1 << L1_SHIFT).checked_sub(first_gib)?;
    1u64.checked_add(l2)?
        .checked_add(dram.size.div_ceil(1 << L2_SHIFT))
}

impl HostStage2 {
    /// Builds the host's map of `dram` in `tables` (`table_count(dram)` zeroed tables of the
    /// carve-out) and installs it (VTTBR_EL2/VTCR_EL2). `dram` is 2 MiB aligned and lies below
    /// 2^39; `tsm` is inside it. Runs once, on the boot CPU, before any host code.
    pub(crate) fn build(dram: MemRange, tsm: MemRange, tables: &'static [Table]) -> Option<Self> {
        let count = tables.len();
        let (l1, rest) = tables.split_first()?;
        let n_l2 = count.checked_sub(1 + (dram.size >> L2_SHIFT) as usize)?;
        let (l2, l3) = rest.split_at(n_l2);
        let first_gib = dram.base.0 >> L1_SHIFT;
        for (i, l3t) in l3.iter().enumerate() {
            let block = dram.base.0 + ((i as u64) << L2_SHIFT);
            let l2t = l2.get(((block >> L1_SHIFT) - first_gib) as usize)?;
            for (j, e) in l3t.0.iter().enumerate() {
                let pa = block + ((j as u64) << GRANULE_SHIFT);
                let tsm_owned = tsm.contains(Pa(pa), GRANULE_SIZE);
                e.store(
                    if tsm_owned { 0 } else { pa | HOST_PAGE },
                    Ordering::Relaxed,
                );
            }
            l2t.0[((block >> L2_SHIFT) % ENTRIES) as usize]
                .store(l3t.0.as_ptr() as u64 | VALID_TABLE, Ordering::Relaxed);
        }
        for (i, l2t) in l2.iter().enumerate() {
            l1.0.get(first_gib as usize + i)?
                .store(l2t.0.as_ptr() as u64 | VALID_TABLE, Ordering::Relaxed);
        }
        let vtcr = VTCR_BASE | (pa_size_field() << 16);
        // SAFETY: the tables above are complete; VTTBR/VTCR only take effect for EL1/EL0
        // (HCR_EL2.VM), which no code uses yet. The barrier publishes the tables to the walker.
        unsafe {
            core::arch::asm!("dsb ish", options(nostack, preserves_flags));
            write_sysreg!("vtcr_el2", vtcr);
            write_sysreg!("vttbr_el2", (HOST_VMID << 48) | l1.0.as_ptr() as u64);
        }
        isb();
        Some(HostStage2 { dram, tsm, l3 })
    }

    fn entry(&self, pa: Pa) -> Result<&AtomicU64, Stage2Error> {
        if !pa.is_granule_aligned() {
            return Err(Stage2Error::Misaligned);
        }
        if !self.dram.contains(pa, GRANULE_SIZE) {
            return Err(Stage2Error::OutOfRange);
        }
        let off = pa.0 - self.dram.base.0;
        let table = self
            .l3
            .get((off >> L2_SHIFT) as usize)
            .ok_or(Stage2Error::OutOfRange)?;
        Ok(&table.0[((off >> GRANULE_SHIFT) % ENTRIES) as usize])
    }

    /// Takes the granule at `pa` out of the host's address space. When this returns, no CPU
    /// can reach it through a host translation any more.
    pub fn unmap_from_host(&self, pa: Pa) -> Result<(), Stage2Error> {
        let e = self.entry(pa)?;
        e.compare_exchange(pa.0 | HOST_PAGE, 0, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Stage2Error::NotMapped)?;
        flush_ipa(pa);
        Ok(())
    }

    /// Gives the granule at `pa` back to the host. The TSM's own memory is refused.
    pub fn map_to_host(&self, pa: Pa) -> Result<(), Stage2Error> {
        let e = self.entry(pa)?;
        if self.tsm.contains(pa, GRANULE_SIZE) {
            return Err(Stage2Error::TsmMemory);
        }
        e.compare_exchange(0, pa.0 | HOST_PAGE, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Stage2Error::AlreadyMapped)?;
        flush_ipa(pa);
        Ok(())
    }
}

/// Drops every CPU's cached translations of `gpa` tagged with `vmid`.
pub fn invalidate_tvm_ipa(vmid: Vmid, gpa: Gpa) {
    with_vmid(vmid, || flush_ipa(Pa(gpa.0)));
}

/// Drops every CPU's cached translations tagged with `vmid`.
pub fn invalidate_tvm_all(vmid: Vmid) {
    with_vmid(vmid, || {
        // SAFETY: TLB maintenance and barriers only drop cached translations.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    });
}

/// Runs `f` with VTTBR_EL2 naming `vmid` (TLB maintenance by IPA or VMID uses the VMID in
/// VTTBR_EL2), then puts the previous value back. Only the VMID matters for maintenance, so
/// the table address stays 0.
fn with_vmid(vmid: Vmid, f: impl FnOnce()) {
    let before = read_sysreg!("vttbr_el2");
    // SAFETY: VTTBR_EL2 only governs EL1/EL0 translation; no EL1 code runs on this CPU until
    // the previous value is restored below, before returning.
    unsafe { write_sysreg!("vttbr_el2", u64::from(vmid.0) << 48) };
    isb();
    f();
    // SAFETY: restores the value read above.
    unsafe { write_sysreg!("vttbr_el2", before) };
    isb();
}

/// The host's stage-2 registers, saved while a TVM's are installed.
pub struct HostStage2Regs {
    vttbr: u64,
    vtcr: u64,
}

/// Installs the TVM address map rooted at `root` (tagged `vmid`) as this CPU's stage 2.
///
/// # Safety
/// Until [`leave_tvm`], only the vCPU of that TVM runs at EL1/EL0 on this CPU; `root` is the
/// TVM's root table (a TABLE granule the core keeps alive while the vCPU runs).
pub unsafe fn enter_tvm(vmid: Vmid, root: Pa) -> HostStage2Regs {
    let host = HostStage2Regs {
        vttbr: read_sysreg!("vttbr_el2"),
        vtcr: read_sysreg!("vtcr_el2"),
    };
    let vtcr = VTCR_TVM_BASE | (pa_size_field() << 16);
    // SAFETY: per the contract, only the TVM's vCPU runs under these values; its VMID keeps
    // its cached translations apart from the host's and other TVMs'.
    unsafe {
        write_sysreg!("vtcr_el2", vtcr);
        write_sysreg!(
            "vttbr_el2",
            (u64::from(vmid.0) << 48) | (root.0 & 0x0000_FFFF_FFFF_F000)
        );
    }
    isb();
    host
}

/// Puts the host's stage 2 back.
///
/// # Safety
/// The vCPU entered with [`enter_tvm`] no longer runs; the host runs next on this CPU.
pub unsafe fn leave_tvm(host: HostStage2Regs) {
    // SAFETY: the host's own values, read by `enter_tvm`.
    unsafe {
        write_sysreg!("vtcr_el2", host.vtcr);
        write_sysreg!("vttbr_el2", host.vttbr);
    }
    isb();
}

/// Drops every cached translation of `ipa` on every CPU of the inner-shareable domain: stage-2
/// entries by IPA, then the combined stage-1+2 entries (which are tagged by VA, so all of the
/// VMID's). Uses the VMID in VTTBR_EL2 (the host's, but in `with_vmid`).
fn flush_ipa(ipa: Pa) {
    // SAFETY: TLB maintenance and barriers only drop cached translations; the descriptor store
    // before it is made visible to the walkers first (dsb ishst).
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi ipas2e1is, {page}",
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            page = in(reg) ipa.0 >> GRANULE_SHIFT,
            options(nostack, preserves_flags)
        )
    };
}
