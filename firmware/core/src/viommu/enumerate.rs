//! The IOVA pages a vdevice's stage-1 table can translate, in ascending order: the candidates a
//! DMA table composed from this engine must consider (`crate::dma_tables`). Enumeration only
//! proposes: each candidate is then put to [`translate_uncached`](super::translate_uncached),
//! which decides, so this walk need not repeat the engine's checks, only never miss a page the
//! engine could translate. It follows every descriptor [`stage1::decode`] reads as a table or
//! a leaf, from table pages that stage 2 maps readable, private and secure (the engine faults
//! a walk through any other page, `S1TableShared` / `S1TableNotMapped`).
//!
//! A guest's tables are hostile input: they may share subtrees, so a walk of every reachable
//! entry can be 512^4 long. The caller's budget bounds the entries read; a block leaf yields
//! each of its pages until the caller says stop.

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Iova, Pa};
use tsm_platform::PhysMem;

use super::stage1::{self, Format, Inherited, Step};
use super::{Context, Stage1Format, Stage1Root, TvmId, VdevView};

/// Descriptors read from memory at a time.
const CHUNK: usize = 64;
/// IOVAs at and above this no 4-level, 48-bit DMA table can hold.
const IOVA_LIMIT: u64 = 1 << 48;

/// Calls `visit` with every IOVA page (ascending) that `v`'s stage-1 table for `v.stage1` maps,
/// reading at most `budget` descriptors (decremented as they are read), until `visit` returns
/// `false`. Nothing happens for a vdevice whose requests skip stage 1 (no root attached, or
/// `TSM_NO_VIOMMU`): the caller enumerates the TVM's map instead.
pub fn stage1_pages<C: Context>(
    ctx: &C,
    v: &VdevView,
    budget: &mut u32,
    visit: &mut dyn FnMut(Iova) -> bool,
) {
    let format = match v.format {
        Stage1Format::None => return,
        Stage1Format::ArmVmsav8_64_4k => Format::Arm,
        Stage1Format::X86_64FirstStage4Level => Format::X86,
    };
    let Stage1Root::Root { table, ia_bits } = v.stage1 else {
        return;
    };
    let Some(start) = stage1::start_level(format, ia_bits) else {
        return;
    };
    // The root resolves the input bits above the levels below it (Arm: 1 to 9 of them). An
    // x86-64 PML4's upper half holds the upper canonical half, above what a DMA table holds.
    let root_entries = match format {
        Format::Arm => 1u64
            .checked_shl(u32::from(ia_bits).saturating_sub(stage1::level_shift(start)))
            .unwrap_or(0),
        Format::X86 => 256,
    };
    let mut w = Walk {
        ctx,
        tvm: v.tvm,
        format,
        budget,
        visit,
        stopped: false,
    };
    w.table(table.granule_base(), start, 0, root_entries);
}

struct Walk<'w, C> {
    ctx: &'w C,
    tvm: TvmId,
    format: Format,
    budget: &'w mut u32,
    visit: &'w mut dyn FnMut(Iova) -> bool,
    stopped: bool,
}

impl<C: Context> Walk<'_, C> {
    /// Where the stage-1 table at `gpa` lies, if the engine would read it.
    fn table_pa(&self, gpa: Gpa) -> Option<Pa> {
        let s2 = self.ctx.stage2(self.tvm, gpa)?;
        let pa = s2.pa.granule_base();
        (s2.perms.read && s2.private && self.ctx.is_secure(pa)).then_some(pa)
    }

    /// The first `entries` (at most 512) descriptors of the level-`level` table at `gpa`, which
    /// maps the IOVAs from `base`. Levels below 3 recurse: four levels at most.
    fn table(&mut self, gpa: Gpa, level: u8, base: u64, entries: u64) {
        let Some(pa) = self.table_pa(gpa) else {
            return;
        };
        let shift = stage1::level_shift(level);
        let mut buf = [0u8; CHUNK * 8];
        let mut idx = 0u64;
        while let Some(left) = entries.min(512).checked_sub(idx).filter(|&l| l > 0) {
            let n = left.min(CHUNK as u64);
            // idx < 512: the entry's offset stays inside the (aligned) table page.
            let at = Pa(pa.0 | (idx << 3));
            let Some(bytes) = buf.get_mut(..(n as usize).saturating_mul(8)) else {
                return;
            };
            if self.ctx.mem().read(at, bytes).is_err() {
                return;
            }
            for d in bytes.chunks_exact(8) {
                let Some(rest) = self.budget.checked_sub(1) else {
                    self.stopped = true;
                    return;
                };
                *self.budget = rest;
                let desc = u64::from_le_bytes(d.try_into().unwrap_or([0; 8]));
                // idx < 512 and `base` is aligned to the table's span: the OR cannot carry.
                let iova = base | (idx << shift);
                idx = idx.saturating_add(1);
                let mut inh = Inherited::NONE;
                match stage1::decode(self.format, desc, level, Iova(iova), &mut inh) {
                    // Both decoders give tables only above level 3.
                    Ok(Step::Table(next)) if level < 3 => {
                        self.table(Gpa(next), level.saturating_add(1), iova, 512);
                    }
                    Ok(Step::Leaf { .. }) => self.leaf(iova, shift),
                    Ok(Step::Table(_)) | Err(_) => {}
                }
                if self.stopped {
                    return;
                }
            }
        }
    }

    /// Every page of the leaf at `iova` that maps `1 << shift` bytes.
    fn leaf(&mut self, iova: u64, shift: u32) {
        let size = 1u64.checked_shl(shift).unwrap_or(0);
        let mut off = 0;
        while off < size && !self.stopped {
            let page = iova | off;
            if page >= IOVA_LIMIT || !(self.visit)(Iova(page)) {
                self.stopped = true;
            }
            off = off.saturating_add(GRANULE_SIZE);
        }
    }
}
