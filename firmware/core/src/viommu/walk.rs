//! The translation itself: requester lookup, the two-stage walk, permissions, the final check.
//!
//! A request that fails several checks reports the first of, in this order: PASID
//! configuration, stage-1 walk (input range, then each level's table read and descriptor),
//! stage-2 translation of the final GPA, stage-1 permission, stage-2 permission, final check.
//! The cached path applies the same order to the cached walk, so it reports the same fault.

use tsm_abi::addr::{Gpa, Pa};
use tsm_platform::PhysMem;

use super::iotlb::{TableRef, WalkPrefix, Walked};
use super::stage1::{self, Format, Inherited, Step};
use super::{
    Context, Fault, FaultReason, Iotlb, PASID_MAX, Perms, Request, S2Entry, Stage1Format,
    Stage1Root, TvmId, VdevView,
};

/// A fault before it is tagged with the request: reason, stage-1 level, and the GPA stage 2
/// was given last (a stage-1 descriptor's, or the final one).
type Why = (FaultReason, Option<u8>, Option<Gpa>);

/// A fault before any stage-2 translation (no GPA to report).
const fn early(reason: FaultReason) -> Why {
    (reason, None, None)
}

/// Translates `req`, using and filling `iotlb`. A fault is returned, not recorded: the core
/// pushes it into the event queue of `fault.vdev` (or logs it, for a host device).
pub fn translate<C: Context>(ctx: &C, iotlb: &mut Iotlb, req: &Request) -> Result<Pa, Fault> {
    run(ctx, Some(iotlb), req)
}

/// Translates `req` with no cache at all (the reference the IOTLB path is tested against).
pub fn translate_uncached<C: Context>(ctx: &C, req: &Request) -> Result<Pa, Fault> {
    run(ctx, None, req)
}

fn run<C: Context>(ctx: &C, mut iotlb: Option<&mut Iotlb>, req: &Request) -> Result<Pa, Fault> {
    let fault = |vdev, (reason, level, gpa): Why| Fault {
        vdev,
        reason,
        level,
        gpa,
        iova: req.iova,
        pasid: req.pasid,
        access: req.access,
        t_bit: req.t_bit,
    };
    let Some(v) = ctx.vdevice(req.requester, req.pasid) else {
        return host_device(ctx, req).map_err(|r| fault(None, early(r)));
    };
    let tag = Some(v.id);
    if req.pasid.is_some_and(|p| p > PASID_MAX) {
        return Err(fault(tag, early(FaultReason::PasidNotConfigured)));
    }
    let cached = iotlb
        .as_deref_mut()
        .and_then(|t| t.lookup(v.id, req.pasid, req.iova));
    let walked = match cached {
        Some(w) => w,
        None => {
            let w = walk(ctx, iotlb.as_deref_mut(), &v, req).map_err(|w| fault(tag, w))?;
            if let Some(t) = iotlb {
                t.insert(v.id, v.tvm, req.pasid, req.iova, w);
            }
            w
        }
    };
    check(ctx, &v, req, &walked).map_err(|w| fault(tag, w))
}

/// A host device: the host's domain, then the final check (T=0 only, never secure).
fn host_device<C: Context>(ctx: &C, req: &Request) -> Result<Pa, FaultReason> {
    let m = ctx
        .host_domain(req.requester, req.iova)
        .filter(|m| m.perms.allows(req.access))
        .ok_or(FaultReason::HostDomain)?;
    final_check(ctx, None, req.t_bit, m.pa, None)
}

/// The access-independent part: stage 1 (if any) and the stage-2 translation of its output.
fn walk<C: Context>(
    ctx: &C,
    mut cache: Option<&mut Iotlb>,
    v: &VdevView,
    req: &Request,
) -> Result<Walked, Why> {
    let format = match v.format {
        Stage1Format::None => None,
        Stage1Format::ArmVmsav8_64_4k => Some(Format::Arm),
        Stage1Format::X86_64FirstStage4Level => Some(Format::X86),
    };
    let root = match (format, v.stage1) {
        (None, _) | (_, Stage1Root::Bypass) => None,
        (Some(f), Stage1Root::Root { table, ia_bits }) => {
            // G_S1_ATTACH stores only sizes the format has: another one is a corrupted
            // object, and a root without a usable configuration.
            let start =
                stage1::start_level(f, ia_bits).ok_or(early(FaultReason::PasidNotConfigured))?;
            Some((f, table, ia_bits, start))
        }
        (Some(_), Stage1Root::NotConfigured) => {
            return Err(early(FaultReason::PasidNotConfigured));
        }
    };
    let mut w = Walked {
        s1: None,
        gpa: Gpa(req.iova.0),
        s2: S2Entry {
            pa: Pa(0),
            perms: Perms::NONE,
            private: false,
        },
        tables: [TableRef::default(); 4],
        ntables: 0,
    };
    if let Some((f, root, ia_bits, start)) = root {
        if !stage1::input_ok(f, ia_bits, req.iova) {
            return Err(early(FaultReason::S1InputRange));
        }
        let mut table = root.granule_base().0;
        let mut inh = Inherited::NONE;
        let mut first = start;
        // A known prefix (same vdevice, PASID and 2 MiB region) skips the levels above 3.
        let prefix = cache
            .as_deref()
            .and_then(|c| c.walk_lookup(v.id, req.pasid, req.iova));
        if let Some(p) = prefix {
            table = p.table;
            inh = p.inh;
            for (slot, t) in w.tables.iter_mut().zip(p.tables()) {
                *slot = *t;
            }
            w.ntables = p.ntables;
            first = 3;
        }
        for level in first..4 {
            // `table` is granule-aligned and the index is below 512: the OR cannot carry.
            let desc_gpa = Gpa(table | (stage1::index(req.iova, level) << 3));
            let (desc, tref) = read_descriptor(ctx, cache.as_deref_mut(), v.tvm, desc_gpa)
                .map_err(|r| (r, Some(level), Some(desc_gpa)))?;
            if let Some(slot) = w.tables.get_mut(usize::from(w.ntables)) {
                *slot = tref;
            }
            // At most one table per level, four levels: the count stays below 5.
            w.ntables = w.ntables.saturating_add(1);
            match stage1::decode(f, desc, level, req.iova, &mut inh)
                .map_err(|r| (r, Some(level), None))?
            {
                Step::Table(next) if level == 2 => {
                    table = next;
                    if let Some(c) = cache.as_deref_mut() {
                        let [t0, t1, t2, _] = w.tables;
                        let p = WalkPrefix {
                            table,
                            inh,
                            tables: [t0, t1, t2],
                            ntables: w.ntables,
                        };
                        c.walk_insert(v.id, v.tvm, req.pasid, req.iova, p);
                    }
                }
                Step::Table(next) => table = next,
                Step::Leaf { oa, perms } => {
                    w.s1 = Some((perms, level));
                    w.gpa = Gpa(oa);
                    break;
                }
            }
        }
        // Both decoders end every level-3 descriptor in a leaf or a fault; this only guards
        // against a future decoder that does not.
        if w.s1.is_none() {
            return Err((FaultReason::S1Translation, Some(3), None));
        }
    }
    let gpa = w.gpa;
    w.gpa = gpa.granule_base();
    let s2 = ctx
        .stage2(v.tvm, w.gpa)
        .ok_or((FaultReason::S2Translation, None, Some(gpa)))?;
    w.s2 = S2Entry {
        pa: s2.pa.granule_base(),
        ..s2
    };
    Ok(w)
}

/// Reads the stage-1 descriptor at `gpa`: translated by stage 2, which must map it readable,
/// private and secure (a table the host can write would let the host redirect T=1 DMA).
fn read_descriptor<C: Context>(
    ctx: &C,
    cache: Option<&mut Iotlb>,
    tvm: TvmId,
    gpa: Gpa,
) -> Result<(u64, TableRef), FaultReason> {
    let page = gpa.granule_base();
    let s2 = match cache.as_ref().and_then(|c| c.table_lookup(tvm, page)) {
        Some(s2) => s2,
        None => {
            let s2 = ctx.stage2(tvm, page).ok_or(FaultReason::S1TableNotMapped)?;
            if let Some(c) = cache {
                c.table_insert(tvm, page, s2);
            }
            s2
        }
    };
    if !s2.perms.read {
        return Err(FaultReason::S1TableNotMapped);
    }
    let pa_page = s2.pa.granule_base();
    if !s2.private || !ctx.is_secure(pa_page) {
        return Err(FaultReason::S1TableShared);
    }
    let mut buf = [0u8; 8];
    ctx.mem()
        .read(Pa(pa_page.0 | gpa.granule_offset()), &mut buf)
        .map_err(|_| FaultReason::S1TableRead)?;
    Ok((
        u64::from_le_bytes(buf),
        TableRef {
            gpa: page,
            pa: pa_page,
        },
    ))
}

/// Permissions of both stages, then the final check.
fn check<C: Context>(ctx: &C, v: &VdevView, req: &Request, w: &Walked) -> Result<Pa, Why> {
    // The walk is cached per page: the offset comes from this request, not the one that
    // filled the entry (both formats keep the IOVA's low 12 bits in the output).
    let offset = req.iova.granule_offset();
    let gpa = Some(Gpa(w.gpa.0 | offset));
    if let Some((perms, level)) = w.s1
        && !perms.allows(req.access)
    {
        return Err((FaultReason::S1Permission, Some(level), gpa));
    }
    if !w.s2.perms.allows(req.access) {
        return Err((FaultReason::S2Permission, None, gpa));
    }
    let pa = Pa(w.s2.pa.0 | offset);
    final_check(ctx, Some(v), req.t_bit, pa, Some(w.s2.private)).map_err(|r| (r, None, gpa))
}

/// Invariants 1 and 2, applied to every request whatever the path: T=0 never reaches secure
/// memory; T=1 only from a RUN + accepted vdevice, only to a page that is its TVM's own.
fn final_check<C: Context>(
    ctx: &C,
    v: Option<&VdevView>,
    t_bit: bool,
    pa: Pa,
    private: Option<bool>,
) -> Result<Pa, FaultReason> {
    let secure = ctx.is_secure(pa.granule_base());
    if !t_bit {
        return if secure {
            Err(FaultReason::T0ToSecure)
        } else {
            Ok(pa)
        };
    }
    match v {
        Some(v) if v.tdi_run && v.accepted => {}
        _ => return Err(FaultReason::T1NotAllowed),
    }
    // A private mapping must be a secure page, a shared one a host page: anything else is an
    // inconsistent map, and T=1 must not reach what it names.
    if private != Some(secure) {
        return Err(FaultReason::T1NotTvmMemory);
    }
    Ok(pa)
}
