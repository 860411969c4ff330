//! A reference model of what one DMA request must come to, for the vIOMMU property test and
//! the `walkers` fuzz target to hold the translation engine ([`viommu::translate`]) to.
//!
//! It is written from the documents, not from `viommu::walk`: the Arm ARM's VMSAv8-64 stage-1
//! walk with the 4 KiB granule (initial level from the input size, the bits each level
//! resolves, descriptor types, APTable / AP[2:1] / AF, 48-bit output), the Intel SDM and VT-d's
//! 4-level first-stage paging (canonical input, P / R/W / U/S / PS, reserved bits for a 48-bit
//! address width), and docs/abi.md §8.2 (the translation contract) and §8.3 (the guest event a
//! fault queues). Where the documents leave a choice to the TSM it follows the TSM's stated
//! one: DMA is an unprivileged access, no A/D updates, and when several checks fail the first
//! of the order `viommu::walk` states wins (PASID, input range, each level's table read and
//! descriptor, stage 2 of the final GPA, stage-1 permission, stage-2 permission, final check).
//!
//! The stage-1 roots come from the caller's own record of what was attached, not from the
//! engine's PASID table, so a root or input size the engine stores wrongly shows up too.
//!
//! It answers at the granularity the guest sees: the PA, or the event of the fault (reason,
//! `S1_WALK`, the GPA where translation stopped). [`observed`] puts an engine result in the
//! same terms, through the core's own fault-to-event mapping.

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::event::EventReason;
use tsm_platform::PhysMem;

use crate::viommu::{Context, Fault, PASID_MAX, Perms, Request, Stage1Format, TvmId, VdevId};
use crate::viommu_glue::event_reason;

/// The guest-visible part of a fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    /// The event's reason.
    pub reason: EventReason,
    /// `S1_WALK`: it happened on a stage-1 table read.
    pub s1_walk: bool,
    /// Where translation stopped (`GPA_VALID`).
    pub gpa: Option<Gpa>,
}

/// A stage-1 root as the guest attached it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attached {
    /// GPA of the top-level table.
    pub table: Gpa,
    /// The input size in bits.
    pub ia_bits: u8,
}

/// An engine result in the reference's terms.
pub fn observed(r: &Result<Pa, Fault>) -> Result<Pa, Event> {
    r.map_err(|f| {
        let (reason, s1_walk) = event_reason(f.reason);
        Event {
            reason,
            s1_walk,
            gpa: f.gpa,
        }
    })
}

fn fault(reason: EventReason, gpa: Option<u64>) -> Event {
    Event {
        reason,
        s1_walk: false,
        gpa: gpa.map(Gpa),
    }
}

const PAGE: u64 = 0xFFF;
/// Output-address bits 47:12 (both formats here have 48-bit output addresses).
const OA: u64 = 0x0000_FFFF_FFFF_F000;

/// Bits `lo..hi` of `v`.
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & ((1u64 << (hi - lo)) - 1)
}

fn bit(v: u64, n: u32) -> bool {
    v >> n & 1 == 1
}

/// What `req` must come to, in a world `ctx` whose attached stage-1 roots are `roots`.
pub fn expected<C: Context>(
    ctx: &C,
    roots: impl Fn(VdevId, Option<u32>) -> Option<Attached>,
    req: &Request,
) -> Result<Pa, Event> {
    let iova = req.iova.0;
    let Some(v) = ctx.vdevice(req.requester, req.pasid) else {
        // A host device: its domain, then only T=0 to non-secure memory.
        let m = ctx
            .host_domain(req.requester, req.iova)
            .filter(|m| m.perms.allows(req.access))
            .ok_or(fault(EventReason::Stage2Translation, None))?;
        return if req.t_bit {
            Err(fault(EventReason::T1NotAllowed, None))
        } else if ctx.is_secure(Pa(m.pa.0 & !PAGE)) {
            Err(fault(EventReason::T0ToSecure, None))
        } else {
            Ok(m.pa)
        };
    };
    if req.pasid.is_some_and(|p| p > PASID_MAX) {
        return Err(fault(EventReason::PasidNotAttached, None));
    }
    let (gpa, s1_perms) = match (v.format, roots(v.id, req.pasid), req.pasid) {
        (Stage1Format::None, _, _) | (_, None, None) => (iova, Perms::RW),
        (_, None, Some(_)) => return Err(fault(EventReason::PasidNotAttached, None)),
        (Stage1Format::ArmVmsav8_64_4k, Some(root), _) => arm(ctx, v.tvm, root, iova)?,
        (Stage1Format::X86_64FirstStage4Level, Some(root), _) => x86(ctx, v.tvm, root, iova)?,
    };
    let at = Some(gpa);
    let s2 = ctx
        .stage2(v.tvm, Gpa(gpa & !PAGE))
        .ok_or(fault(EventReason::Stage2Translation, at))?;
    if !s1_perms.allows(req.access) {
        return Err(fault(EventReason::Stage1Permission, at));
    }
    if !s2.perms.allows(req.access) {
        return Err(fault(EventReason::Stage2Permission, at));
    }
    let pa = Pa((s2.pa.0 & !PAGE) | (gpa & PAGE));
    let secure = ctx.is_secure(Pa(pa.0 & !PAGE));
    if !req.t_bit {
        return if secure {
            Err(fault(EventReason::T0ToSecure, at))
        } else {
            Ok(pa)
        };
    }
    // T=1: a RUN and accepted vdevice, and a page that is its TVM's own (private and secure,
    // or shared and not secure).
    if !(v.tdi_run && v.accepted) || s2.private != secure {
        return Err(fault(EventReason::T1NotAllowed, at));
    }
    Ok(pa)
}

/// Reads the stage-1 descriptor at `gpa`: through stage 2, which must map it readable, in
/// private memory that is secure.
fn descriptor<C: Context>(ctx: &C, tvm: TvmId, gpa: u64) -> Result<u64, Event> {
    let walk = |reason| Event {
        reason,
        s1_walk: true,
        gpa: Some(Gpa(gpa)),
    };
    let s2 = ctx
        .stage2(tvm, Gpa(gpa & !PAGE))
        .filter(|e| e.perms.read)
        .ok_or(walk(EventReason::Stage2Translation))?;
    let page = s2.pa.0 & !PAGE;
    if !s2.private || !ctx.is_secure(Pa(page)) {
        return Err(walk(EventReason::Stage2Permission));
    }
    let mut b = [0u8; 8];
    ctx.mem()
        .read(Pa(page | (gpa & PAGE)), &mut b)
        .map_err(|_| walk(EventReason::Stage2Translation))?;
    Ok(u64::from_le_bytes(b))
}

/// Arm VMSAv8-64 stage 1, 4 KiB granule, TTB0 of `ia_bits` (T0SZ = 64 - `ia_bits`).
fn arm<C: Context>(ctx: &C, tvm: TvmId, root: Attached, iova: u64) -> Result<(u64, Perms), Event> {
    let ia = u32::from(root.ia_bits);
    let invalid = fault(EventReason::Stage1Translation, None);
    // T0SZ 16..=39: without FEAT_TTST the smallest input is 25 bits.
    if !(25..=48).contains(&ia) {
        return Err(fault(EventReason::PasidNotAttached, None));
    }
    if iova >> ia != 0 {
        return Err(fault(EventReason::AddressSize, None));
    }
    // Each level resolves 9 bits above the 12-bit page offset; the walk takes as many levels
    // as the input needs, ending at level 3, and the first one resolves what is left.
    let levels = (ia - 12).div_ceil(9);
    let mut table = root.table.0;
    let (mut no_write, mut no_unpriv) = (false, false);
    for level in (4 - levels)..4 {
        let lo = 12 + 9 * (3 - level);
        let hi = ia.min(lo + 9);
        let d = descriptor(ctx, tvm, table + 8 * bits(iova, hi, lo))?;
        if !bit(d, 0) {
            return Err(invalid);
        }
        // bits[1:0]: 11 is a table above level 3 and a page at it; 01 a block at levels 1
        // and 2 only (with the 4 KiB granule and no LPA2); anything else is invalid.
        let table_or_page = bit(d, 1);
        let block = !table_or_page && (level == 1 || level == 2);
        if !table_or_page && !block {
            return Err(invalid);
        }
        // Output address bits 51:48 with a 48-bit output size: an Address size fault, which
        // the ABI reports as S1_TRANSLATION.
        if bits(d, 52, 48) != 0 {
            return Err(invalid);
        }
        if table_or_page && level < 3 {
            // APTable[1] (bit 62): no write below; APTable[0] (bit 61): no EL0 access below.
            no_write |= bit(d, 62);
            no_unpriv |= bit(d, 61);
            table = d & OA;
            continue;
        }
        if !bit(d, 10) {
            // The Access flag: no hardware update, so an Access flag fault.
            return Err(invalid);
        }
        let out = (d & OA & !((1u64 << lo) - 1)) | bits(iova, lo, 0);
        // AP[1] (bit 6): EL0 (unprivileged, as DMA is) may access; AP[2] (bit 7): read-only.
        let read = bit(d, 6) && !no_unpriv;
        let write = read && !bit(d, 7) && !no_write;
        return Ok((out, Perms { read, write }));
    }
    unreachable!("level 3 always ends the walk")
}

/// x86-64 4-level paging (VT-d first stage), 48-bit input.
fn x86<C: Context>(ctx: &C, tvm: TvmId, root: Attached, iova: u64) -> Result<(u64, Perms), Event> {
    let invalid = fault(EventReason::Stage1Translation, None);
    if root.ia_bits != 48 {
        return Err(fault(EventReason::PasidNotAttached, None));
    }
    // Canonical: bits 63:48 copy bit 47.
    if ((iova << 16) as i64 >> 16) as u64 != iova {
        return Err(fault(EventReason::AddressSize, None));
    }
    let mut table = root.table.0;
    let (mut rw, mut us) = (true, true);
    // PML4 (bits 47:39), PDPT (38:30), PD (29:21), PT (20:12).
    for level in 0..4u32 {
        let lo = 12 + 9 * (3 - level);
        let d = descriptor(ctx, tvm, table + 8 * bits(iova, lo + 9, lo))?;
        if !bit(d, 0) {
            return Err(invalid);
        }
        // Bits 51:48 are reserved with a 48-bit address width.
        if bits(d, 52, 48) != 0 {
            return Err(invalid);
        }
        rw &= bit(d, 1);
        us &= bit(d, 2);
        let ps = bit(d, 7);
        let leaf = match level {
            // PS is reserved in a PML4E.
            0 if ps => return Err(invalid),
            // A 1 GiB or 2 MiB page: address bits below its size are reserved, but for PAT
            // (bit 12).
            1 | 2 if ps => {
                if bits(d, lo, 13) != 0 {
                    return Err(invalid);
                }
                true
            }
            // Bit 7 of a PTE is PAT: every PTE maps a page.
            3 => true,
            _ => false,
        };
        if !leaf {
            table = d & OA;
            continue;
        }
        let out = (d & OA & !((1u64 << lo) - 1)) | bits(iova, lo, 0);
        // DMA is a user-mode access: U/S must be 1 all the way down, R/W too for a write.
        return Ok((
            out,
            Perms {
                read: us,
                write: us && rw,
            },
        ));
    }
    unreachable!("level 3 always ends the walk")
}
