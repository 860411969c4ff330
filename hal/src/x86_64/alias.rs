//! The alias region: the supervisor-only top gigabyte of the address space (PML4 entry 511),
//! mapped the same in the TSM's tables and in every TVM's, KPTI style.
//!
//! A TVM runs in ring 3 directly on its own map (VA = GPA), whose lower half is the TVM's and
//! collides with the TSM's identity-mapped image. What the CPU touches on a trap *before* the
//! trampoline has switched CR3 back to the TSM's tables must therefore live at addresses the
//! TVM's map has too: the trampoline text (`.text.trampoline`: exception stubs, the `syscall`
//! entry, the ring-3 entry tail), and each CPU's GDT, TSS, IDT, per-CPU data (GS) and trap
//! stacks (`percpu`). They are mapped here at fixed addresses in the top 2 GiB, so the
//! trampoline can also reach them with sign-extended 32-bit absolute addresses:
//!
//! | virtual address | what | rights |
//! |---|---|---|
//! | [`TEXT`] | the trampoline text (its identity pages, aliased) | read, execute |
//! | [`CPUS`] + n × block | CPU n's block: data page, guard, trap stack, guard, IST stack | read, write (guards unmapped) |
//!
//! No entry on the way has U set, so ring 3 (host or TVM) can neither read nor execute any of
//! it; SMEP/SMAP are unaffected (ring 0 runs supervisor pages).

use super::layout::Layout;
use super::percpu::{self, BLOCK_PAGES, MAX_CPUS};

/// PML4 index of the region.
pub const ALIAS_PML4_INDEX: u64 = 511;
/// Where the trampoline text is aliased.
pub const TEXT: u64 = 0xFFFF_FFFF_C000_0000;
/// Where CPU 0's block is aliased; CPU n's follows at n × [`BLOCK_PAGES`] pages.
pub const CPUS: u64 = 0xFFFF_FFFF_C020_0000;

const PAGE: u64 = 4096;

/// What an alias page holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Trampoline code: read-only, executable.
    Text,
    /// Descriptor tables, per-CPU data, stacks: read-write, never executed.
    Data,
}

/// One page of the region.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// Its alias address.
    pub va: u64,
    /// The physical (identity) page behind it.
    pub pa: u64,
    /// Its rights.
    pub kind: Kind,
}

/// Every page the region maps.
pub fn pages(l: &Layout) -> impl Iterator<Item = Page> {
    let start = l.trampoline_start;
    let text_pages = (l.trampoline_end - start).div_ceil(PAGE);
    let text = (0..text_pages).map(move |i| Page {
        va: TEXT + i * PAGE,
        pa: start + i * PAGE,
        kind: Kind::Text,
    });
    let cpus = (0..MAX_CPUS as u64).flat_map(|cpu| {
        (0..BLOCK_PAGES as u64)
            .filter(|&p| !percpu::is_guard_page(p))
            .map(move |p| Page {
                va: cpu_block(cpu as usize) + p * PAGE,
                pa: percpu::block_pa(cpu as usize) + p * PAGE,
                kind: Kind::Data,
            })
    });
    text.chain(cpus)
}

/// The alias address of a trampoline symbol at identity address `identity`.
pub fn text(l: &Layout, identity: u64) -> u64 {
    TEXT + (identity - l.trampoline_start)
}

/// The alias address of CPU `cpu`'s block.
pub fn cpu_block(cpu: usize) -> u64 {
    CPUS + (cpu * BLOCK_PAGES) as u64 * PAGE
}
