//! What the monitor core needs from a platform, and nothing else: the traits it is written
//! against (its run loop's in [`run`]) and the stream numbers of the console records it relays. `tsm-hal` implements the
//! traits on the real machines, `tsm-core`'s tests over ordinary memory. Keeping them out of
//! `tsm-hal` keeps the core's build free of the HAL's dependencies (defmt, COBS, the device-tree
//! parser) and lets xtask read the stream numbers from here.
#![no_std]
// The default `PhysMem::zero` scrubs granules the host names, on any platform that keeps it: the
// same rules as tsm-core and tsm-abi, no unchecked arithmetic or indexing outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use core::mem::MaybeUninit;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use zerocopy::FromBytes;

pub mod log;
#[cfg(test)]
mod mem_bounds_tests;
pub mod run;
#[cfg(test)]
mod table_granules_tests;
#[cfg(test)]
mod test_layouts;
#[cfg(test)]
mod zero_tests;

/// A physical address the platform cannot reach (not RAM, or outside what the TSM maps).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemFault(pub Pa);

/// Access to physical memory by physical address, as the TSM sees it.
///
/// Reads of host (NS) memory may race with the host writing it: callers copy in once and
/// validate the copy, never the original.
pub trait PhysMem {
    /// Copies `out.len()` bytes at `pa` into `out`.
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault>;
    /// [`PhysMem::read`] into bytes that may be uninitialised (an object's room in a handler's
    /// frame, [`ReadBuf`]), returning `out` itself, every byte initialised: safe code could only read into
    /// zeroed bytes, a `memset` of the whole object before every copy (~110 instructions of a
    /// VCPU_RUN on aarch64, profiled). Platforms override it with their copy; the default
    /// zeroes `out` and reads into it.
    fn read_uninit<'b>(
        &self,
        pa: Pa,
        out: &'b mut [MaybeUninit<u8>],
    ) -> Result<&'b mut [u8], MemFault> {
        out.fill(MaybeUninit::new(0));
        // SAFETY: every byte of `out` was initialised by the `fill` above, and `MaybeUninit<u8>`
        // has the layout of `u8`.
        let out = unsafe { &mut *(core::ptr::from_mut(out) as *mut [u8]) };
        self.read(pa, out)?;
        Ok(out)
    }
    /// Copies `data` to `pa`.
    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault>;
    /// Entry `idx` (taken modulo 512) of the translation table in the granule at `table`: the
    /// little-endian 8 bytes at `table + 8 * idx`, what a walk reads at each level. A table is
    /// one whole granule, so a platform checks the granule (the same check as `read`'s over all
    /// of it) and loads the entry, always 8-aligned, with no further test; a `table` that is
    /// not granule-aligned is a fault. Platforms override it with one aligned load (the
    /// generic copy with its set-up cost a four-level walk ~190 instructions on aarch64,
    /// profiled); the default reads the bytes.
    fn read_entry(&self, table: Pa, idx: usize) -> Result<u64, MemFault> {
        if !table.is_granule_aligned() {
            return Err(MemFault(table));
        }
        let mut b = [0u8; 8];
        self.read(Pa(table.0 | (((idx % 512) as u64) << 3)), &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Stores each [`WordStore`] of `words`, in order, into the granule at `granule`: an
    /// object's fields updated in place in its locked granule, without a copy of the object
    /// written back whole. The granule is checked once, before any store (a `granule` that is
    /// not granule-aligned or not the platform's is a fault and nothing is stored); each
    /// [`WordOff`] is an aligned word inside it by construction, so a store needs no test of
    /// its own. Words are in the TSM's byte order. Platforms override it with one aligned store
    /// per word (a [`PhysMem::write`] costs ~44 instructions on aarch64 for 8-16 bytes,
    /// docs/benchmarks.md, `vdev4`); the default writes each word's bytes.
    fn write_words(&self, granule: Pa, words: &[WordStore]) -> Result<(), MemFault> {
        if !granule.is_granule_aligned() {
            return Err(MemFault(granule));
        }
        // Every word is tried with a read first, so that a granule this memory holds only in
        // part faults before any store, as the platforms' one granule check does.
        let mut b = [0u8; 8];
        for &WordStore(off, _) in words {
            self.read(Pa(granule.0 | off.get() as u64), &mut b)?;
        }
        for &WordStore(off, w) in words {
            self.write(Pa(granule.0 | off.get() as u64), &w.to_ne_bytes())?;
        }
        Ok(())
    }
    /// Zeroes `len` bytes at `pa` (a granule scrub). Platforms override it with their fastest
    /// zeroing (64-byte `st1`s, 16-byte SSE stores); the default writes zeros in 512-byte chunks.
    fn zero(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        const ZERO: [u8; 512] = [0; 512];
        let (mut at, mut left) = (pa, len);
        while left > 0 {
            let n = ZERO.len().min(left);
            self.write(at, ZERO.get(..n).ok_or(MemFault(pa))?)?;
            left = left.saturating_sub(n);
            // Only a chunk still to come needs an address: a range that ends at the top of the
            // address space is not an overflow.
            if left > 0 {
                at = at.checked_add(n as u64).ok_or(MemFault(pa))?;
            }
        }
        Ok(())
    }
}

/// The byte offset of an aligned 8-byte word inside a granule: what [`PhysMem::write_words`]
/// stores at. Only [`WordOff::at`] makes one, so every value is 8-aligned and at most
/// `GRANULE_SIZE - 8`; the core builds its fixed offsets in `const` items, checked at compile
/// time, and a table entry's at run time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct WordOff(u16);

/// One store of [`PhysMem::write_words`]: the word and where it goes. `repr(C)` (the offset at
/// byte 0, the word at byte 8) so that a platform may walk the stores in assembly.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct WordStore(pub WordOff, pub u64);

impl WordOff {
    /// `off` if it is an aligned word inside a granule.
    pub const fn at(off: usize) -> Option<Self> {
        if off.is_multiple_of(8) && off < GRANULE_SIZE as usize {
            // In range of `u16`: a granule is 4 KiB.
            Some(WordOff(off as u16))
        } else {
            None
        }
    }

    /// `OFF`, checked at compile time: the offset of a fixed field.
    pub const fn of<const OFF: usize>() -> Self {
        const {
            assert!(
                OFF.is_multiple_of(8) && OFF < GRANULE_SIZE as usize,
                "an aligned word inside a granule"
            );
        };
        WordOff(OFF as u16)
    }

    /// The offset in bytes.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// Room for a `T` read from physical memory ([`PhysMem::read_uninit`]), uninitialised until a
/// read fills it: what the core's handlers copy objects into, with no zeroing before the copy.
///
/// `filled` leads, `repr(C)`: with the uninitialised bytes first, rustc 1.95 built a new room
/// as one constant whose undefined bytes LLVM then zeroed with the flag (a `memset` of the whole
/// room on every lock, what this type exists to avoid).
#[repr(C)]
pub struct ReadBuf<T> {
    /// Every byte of `buf` is initialised: a read returned exactly them as `&mut [u8]`.
    filled: bool,
    buf: MaybeUninit<T>,
}

impl<T: FromBytes> ReadBuf<T> {
    /// Room not yet read into.
    pub const fn new() -> Self {
        ReadBuf {
            filled: false,
            buf: MaybeUninit::uninit(),
        }
    }

    /// Reads the `size_of::<T>()` bytes at `pa` into the room and returns them as a `T`. A
    /// platform that returns other bytes than the room's is a fault (at `pa`).
    pub fn read<M: PhysMem + ?Sized>(&mut self, mem: &M, pa: Pa) -> Result<&mut T, MemFault> {
        let at = self.buf.as_ptr().cast::<u8>();
        // A failed read may leave any bytes, initialised or not.
        self.filled = false;
        // SAFETY: the slice covers exactly `buf`'s `size_of::<T>()` bytes, borrowed mutably for
        // as long as it lives; `MaybeUninit<u8>` has alignment 1, and whatever is written
        // through it (initialised or not) is a valid `MaybeUninit<T>`.
        let out = unsafe {
            core::slice::from_raw_parts_mut(
                self.buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                size_of::<T>(),
            )
        };
        let bytes = mem.read_uninit(pa, out)?;
        // Safe code cannot turn `out` into `&mut [u8]`: a reference to exactly these bytes
        // comes from an implementation that initialised them (the contract of `read_uninit`).
        if !core::ptr::eq(bytes.as_ptr(), at) || bytes.len() != size_of::<T>() {
            return Err(MemFault(pa));
        }
        self.filled = true;
        // SAFETY: every byte of `buf` is initialised (just checked), and `T: FromBytes` makes
        // any initialised bytes a valid `T`.
        Ok(unsafe { self.buf.assume_init_mut() })
    }

    /// The `T` the last successful [`ReadBuf::read`] filled, if one did.
    pub fn filled(&mut self) -> Option<&mut T> {
        if !self.filled {
            return None;
        }
        // SAFETY: `filled` is set only after a read initialised every byte of `buf`, and
        // cleared before every later platform write into it (`read`'s); the only other writes
        // are through the `&mut T` this type hands out, which can only store valid `T`s or valid
        // field values. So `buf` still holds a valid `T` (`T: FromBytes`: any initialised bytes
        // were one, and safe writes keep it one).
        Some(unsafe { self.buf.assume_init_mut() })
    }
}

impl<T: FromBytes> Default for ReadBuf<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The console: relays a debug-console frame of the host or a guest (stream numbers in [`log`]).
pub trait Console {
    /// Writes one record of `stream` carrying `frame`.
    fn relay(&self, stream: u8, frame: &[u8]);
}

/// How a run ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitCode {
    /// Everything passed.
    Success,
    /// Something failed.
    Failure,
}

/// Powering off.
pub trait PowerOff {
    /// Ends the run (QEMU: semihosting SYS_EXIT / isa-debug-exit).
    fn power_off(&self, code: ExitCode) -> !;
}

/// The CPUs the host may start (docs/design.md, "CPU bring-up"): every CPU runs the TSM from
/// boot; CPUs other than the boot CPU wait in it until the host starts them.
pub trait HostCpus {
    /// The TSM's index (0 = the boot CPU) of the CPU the host names `hw_id` (aarch64: MPIDR
    /// affinity bits; x86_64: APIC ID), `None` unless that CPU runs the TSM.
    fn cpu_index(&self, hw_id: u64) -> Option<usize>;
    /// Wakes the CPUs waiting in the TSM ([`run::HostCpu::idle`]) after a start request was
    /// published.
    fn wake_cpus(&self);
    /// Whether the host's PSCI and SMCCC calls are the TSM's to answer (aarch64), or unknown
    /// calls (x86_64: the host uses HOST_CPU_START alone).
    fn has_psci(&self) -> bool;
}

/// A contiguous range of physical memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemRange {
    /// First byte.
    pub base: Pa,
    /// Size in bytes.
    pub size: u64,
}

impl MemRange {
    /// Whether `[pa, pa + len)` lies inside the range (false on overflow).
    pub fn contains(&self, pa: Pa, len: u64) -> bool {
        let (Some(end), Some(self_end)) =
            (pa.0.checked_add(len), self.base.0.checked_add(self.size))
        else {
            return false;
        };
        pa.0 >= self.base.0 && end <= self_end
    }
}

/// The granules a platform's [`PhysMem::read_entry`] reads tables from: inside `dram`, not
/// touching `tsm` (the TSM's own image and carve-out). The same rule as the platforms' range
/// check of a whole granule, with the bounds worked out once at boot, so the test of a
/// granule-aligned address is two subtractions and two compares; a walk makes it at every level
/// (the general check recomputed both ends and their overflow each time: ~10 of its ~26
/// instructions per level on aarch64, profiled). Each range is kept as its start and length,
/// so a granule is inside it iff its wrapping distance from the start is under the length: one
/// compare a range where two bounds took two (aarch64 also loads both words of a range in one
/// `ldp`).
#[derive(Clone, Copy, Debug)]
pub struct TableGranules {
    /// Aligned granules from `lo` (inclusive) to `lo + len` (exclusive) lie inside DRAM.
    lo: u64,
    len: u64,
    /// Aligned granules from `tsm_lo` (inclusive) to `tsm_lo + tsm_len` (exclusive) touch the
    /// TSM.
    tsm_lo: u64,
    tsm_len: u64,
}

impl TableGranules {
    /// The granules of `dram` outside `tsm`.
    pub fn new(dram: MemRange, tsm: MemRange) -> Self {
        const LAST: u64 = GRANULE_SIZE - 1;
        // `[g, g + GRANULE_SIZE)` inside `[base, end)` iff `base <= g` and `g < end - LAST`;
        // an `end` that overflows (refused by `MemRange::contains`) or lies under one granule
        // admits none.
        let hi = dram
            .base
            .0
            .checked_add(dram.size)
            .and_then(|end| end.checked_sub(LAST))
            .unwrap_or(0);
        // `[g, g + GRANULE_SIZE)` touches `[base, end)` iff `g < end` and `g + LAST >= base`;
        // the saturations only widen the TSM's range to the ends of the address space, and
        // keep its start at or under its end (both are on either side of `tsm.base`).
        let tsm_lo = tsm.base.0.saturating_sub(LAST);
        let tsm_hi = tsm.base.0.saturating_add(tsm.size);
        TableGranules {
            lo: dram.base.0,
            // An empty DRAM range (`hi` under `lo`) admits none.
            len: hi.saturating_sub(dram.base.0),
            tsm_lo,
            tsm_len: tsm_hi.saturating_sub(tsm_lo),
        }
    }

    /// Whether the granule at `g` (granule-aligned: the caller checks it) is DRAM outside the
    /// TSM: `lo <= g < lo + len` and not `tsm_lo <= g < tsm_lo + tsm_len`, each as one compare
    /// of the wrapping distance from the start (an address under the start wraps to more than
    /// any length).
    #[inline(always)]
    pub fn admits(&self, g: Pa) -> bool {
        g.0.wrapping_sub(self.lo) < self.len && g.0.wrapping_sub(self.tsm_lo) >= self.tsm_len
    }

    /// Whether `context` and `root` may be a vCPU's context area (`bytes` long, 16-aligned) and
    /// map root at its entry, on either arch: each inside one granule this admits. A context
    /// inside one granule lies in DRAM outside the TSM if its granule does, so two compares
    /// per address stand for the general range check and its end arithmetic. The offset is
    /// under a granule, so the room after it never wraps, whatever `bytes` is.
    #[inline(always)]
    pub fn check_entry(&self, context: Pa, bytes: u64, root: Pa) -> Result<(), run::EntryError> {
        let fits = context.0.is_multiple_of(16)
            && bytes <= GRANULE_SIZE.wrapping_sub(context.granule_offset())
            && self.admits(context.granule_base());
        if !fits {
            return Err(run::EntryError::BadContext);
        }
        if !(root.is_granule_aligned() && self.admits(root)) {
            return Err(run::EntryError::BadRoot);
        }
        Ok(())
    }
}

/// The platforms' range check for [`PhysMem`]: `[pa, pa + len)` inside `dram` and not
/// touching `tsm` (the TSM's own image and carve-out), with both ends worked out once at boot.
/// The check recomputed DRAM's and the TSM's ends, with their overflow tests, on every call
/// (VDEV_CREATE makes ~14). DRAM is kept as its start and length, so the offset of `pa` from
/// the start bounds both `pa` and `len` with one compare each, and `pa + len` cannot wrap.
#[derive(Clone, Copy, Debug)]
pub struct MemBounds {
    /// DRAM is `[lo, lo + span]` as the check sees it: `lo + span` does not wrap.
    lo: u64,
    span: u64,
    /// The TSM is `[tsm_lo, tsm_end)`.
    tsm_lo: u64,
    tsm_end: u64,
}

impl MemBounds {
    /// The bounds of `dram` outside `tsm`.
    pub fn new(dram: MemRange, tsm: MemRange) -> Self {
        // A DRAM range whose end wraps admits nothing (`MemRange::contains`): DRAM `[1, 1]`
        // admits only `(1, 0)`, which the whole-address-space TSM refuses. Boot never builds
        // one (both HALs find the TSM inside DRAM with `MemRange::contains`, which is false
        // when DRAM's end wraps).
        if dram.base.0.checked_add(dram.size).is_none() {
            return MemBounds {
                lo: 1,
                span: 0,
                tsm_lo: 0,
                tsm_end: u64::MAX,
            };
        }
        MemBounds {
            lo: dram.base.0,
            span: dram.size,
            tsm_lo: tsm.base.0,
            // Boot found the TSM inside DRAM, whose end does not wrap (above), so neither does
            // the TSM's; the check panicked if it had, and saturating only leaves `pa` =
            // `u64::MAX` outside the TSM.
            tsm_end: tsm.base.0.saturating_add(tsm.size),
        }
    }

    /// Whether `[pa, pa + len)` is DRAM outside the TSM: `pa - lo <= span` (an address under
    /// `lo` wraps to more than any span), `len <= span - (pa - lo)`, and then `pa + len`, at
    /// most `lo + span`, does not wrap for the TSM's test.
    #[inline(always)]
    pub fn admits(&self, pa: Pa, len: u64) -> bool {
        let off = pa.0.wrapping_sub(self.lo);
        off <= self.span
            // `off <= span` just above, so this does not wrap.
            && len <= self.span.wrapping_sub(off)
            && !(pa.0 < self.tsm_end && pa.0.wrapping_add(len) > self.tsm_lo)
    }
}

/// Taking granules out of the host's reach and giving them back (invariant 3 of the
/// architecture: the host can never read or write a secure granule).
///
/// aarch64: the host's stage-2 entry for the granule; x86_64: the host's nested page-table
/// entry (and the U bit of the TSM's own page-table entry). Both return only after the change is visible to every CPU (TLBs invalidated,
/// broadcast where the architecture needs it), so a secure granule is unreachable by the time
/// the call that delegated it returns.
pub trait HostIsolation {
    /// Removes `pa`'s granule from the host's address space. `pa` is granule-aligned DRAM.
    /// On an error nothing changed: the host still reaches the granule.
    fn unmap_from_host(&self, pa: Pa) -> Result<(), UnmapRefused>;
    /// Maps `pa`'s granule back into the host's address space (read/write, normal memory).
    fn map_to_host(&self, pa: Pa) -> Result<(), MemFault>;
    /// Takes the 4 KiB page of device MMIO at `pa` (granule-aligned) out of the host's address
    /// space, for a TVM's private MMIO mapping: only a page of a window where the host's
    /// devices' BARs live (never DRAM, configuration space, or a device the TSM keeps), and
    /// only one the host still has, so a page is never given to two mappings.
    fn take_mmio_from_host(&self, pa: Pa) -> Result<(), MmioRefused>;
    /// Gives a page [`HostIsolation::take_mmio_from_host`] took back to the host (device memory,
    /// read/write).
    fn give_mmio_to_host(&self, pa: Pa) -> Result<(), MmioRefused>;
}

/// Why a granule stayed the host's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnmapRefused {
    /// Not a granule of host DRAM the host has (outside DRAM, the TSM's own, or taken).
    NotHostMemory,
    /// The granule lies in a block the host's tables map whole, and every table for splitting
    /// one is in use by a block that still holds taken granules (the bound boot sized).
    NoSplitTable,
}

/// Why a page of device MMIO did not change hands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MmioRefused {
    /// The page is not in a window of the host's device BARs.
    NotDeviceMemory,
    /// Take: the host no longer has the page (another mapping holds it).
    Taken,
    /// Give: the host has the page already.
    NotTaken,
    /// The tables needed to take a single page out of a larger host mapping are used up.
    NoTables,
}

/// The platform's entropy source failed or is not ready.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EntropyError;

/// Random bytes for nonces (the TSM's TDISP accept nonce). aarch64: `RNDR` (FEAT_RNG);
/// x86_64: `RDSEED`/`RDRAND`. An implementation reports failure rather than returning
/// predictable bytes.
pub trait Entropy {
    /// Fills `out` with random bytes.
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError>;
}

/// The translation-table format of TVM address maps on this platform.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AddressMapFormat {
    /// Arm VMSAv8-64 stage 2, 4 KiB granule, 48-bit IPA, starting at level 0 (the TVM runs at
    /// EL1 behind it; `VTTBR_EL2.BADDR` = root).
    ArmStage2,
    /// x86-64 4-level paging as AMD nested paging walks it (the TVM runs as an SVM guest
    /// behind it; `N_CR3` = root).
    X86_64FourLevel,
}

/// What the core needs to keep TVM address maps and the CPUs' view of them in sync.
pub trait GuestMmu {
    /// The format the core writes TVM translation tables in.
    fn address_map_format(&self) -> AddressMapFormat;
    /// Invalidates every CPU's cached translations of `gpa` in the address map whose root table
    /// is `root` (aarch64: `TLBI IPAS2E1IS` + `TLBI VMALLE1IS` for that VMID; x86_64:
    /// `INVLPG`/`INVPCID` for that PCID, with a shootdown to other CPUs). Returns after completion.
    fn invalidate_guest_page(&self, root: Pa, gpa: Gpa);
    /// Invalidates every cached translation of the address map whose root table is `root`
    /// (called when a TVM is destroyed, before its root granule is reused).
    fn invalidate_guest_all(&self, root: Pa);
}

/// Who issued a DMA request, as the platform IOMMU identifies it: the PCI segment and the
/// requester ID (bus/device/function). On both QEMU machines the SMMU StreamID / VT-d source-id
/// is the requester ID on segment 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DmaStream {
    /// PCI segment.
    pub segment: u16,
    /// Requester ID.
    pub rid: u16,
}

/// Why the platform IOMMU stopped a DMA request, in the terms the core's events use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DmaFaultKind {
    /// No valid translation (SMMU F_TRANSLATION / C_BAD_STE, VT-d "not present" reasons).
    Translation,
    /// The mapping forbids the access (SMMU F_PERMISSION, VT-d read/write not allowed).
    Permission,
    /// The address is beyond the domain's input size (SMMU F_ADDR_SIZE, VT-d address above AW).
    AddressSize,
    /// Anything else the IOMMU reported (a configuration or walk error): logged by the HAL.
    Other,
}

/// One DMA fault the platform IOMMU recorded (SMMU event record, VT-d fault record), decoded
/// by the HAL. `iova` is the address the device used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DmaFault {
    /// The requester.
    pub stream: DmaStream,
    /// The address the device used.
    pub iova: u64,
    /// A write (else a read).
    pub write: bool,
    /// Why it was stopped.
    pub kind: DmaFaultKind,
}

/// What the platform IOMMU does with one stream's DMA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DmaDomain {
    /// The host domain: identity over the host's DRAM minus the TSM's memory and every secure
    /// granule (the same granules [`HostIsolation`] takes from and gives back to the host).
    Host,
    /// Every request faults.
    Blocked,
    /// A single-stage table the core built, in [`Iommu::table_format`], rooted at `root`
    /// (TSM-owned, never host-writable memory). `tag` names its cached translations
    /// (SMMU VMID, VT-d domain ID) for [`Iommu::invalidate`]; `1..=DMA_MAX_TAG`.
    Table {
        /// Root table (level 0 of a 48-bit, 4-level walk).
        root: Pa,
        /// Cache tag.
        tag: u16,
    },
}

/// The largest tag a [`DmaDomain::Table`] may use (SMMU VMIDs and VT-d domain IDs both have at
/// least 8 bits; tag 0 is the host domain's).
pub const DMA_MAX_TAG: u16 = 255;

/// Why the IOMMU refused a stream configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IommuError {
    /// The platform has no IOMMU the TSM drives.
    Absent,
    /// The stream is outside what the IOMMU's tables cover (segment, requester ID).
    NoSuchStream,
    /// The tag is 0 or above [`DMA_MAX_TAG`], or the root is not a granule-aligned address.
    BadDomain,
}

/// The platform IOMMU, owned by the TSM (docs/design.md "The platform IOMMU"). Every method
/// returns only after the hardware no longer uses what it replaced: configuration and TLB
/// invalidations are completed with the hardware's own sync (SMMU CMD_SYNC, VT-d wait
/// descriptor / register-based invalidation done).
///
/// The host domain is kept by the HAL itself, in step with [`HostIsolation`]: a granule the host
/// loses goes out of the host domain, TLBs invalidated, before `unmap_from_host` returns.
pub trait Iommu {
    /// Whether a hardware IOMMU gates DMA on this platform.
    fn present(&self) -> bool;
    /// The format [`DmaDomain::Table`] tables are written in, `None` without an IOMMU.
    fn table_format(&self) -> Option<DmaTableFormat>;
    /// Points `stream` at `domain`.
    fn attach(&self, stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError>;
    /// Drops every cached translation under `tag` (after the core changed its table).
    fn invalidate(&self, tag: u16);
    /// Hands every fault the IOMMU recorded since the last drain to `sink`, oldest first.
    fn drain_faults(&self, sink: &mut dyn FnMut(DmaFault));
}

/// Formats of [`DmaDomain::Table`] tables.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DmaTableFormat {
    /// Arm VMSAv8-64 stage 2, 4 KiB granule, 48-bit input, walk from level 0 (an SMMUv3 STE
    /// with stage 2 only): the same descriptors as [`AddressMapFormat::ArmStage2`].
    ArmStage2,
    /// Intel VT-d second-level paging, 4-level (48-bit AGAW): R = bit 0, W = bit 1, the
    /// address in bits 12..52, no present bit.
    VtdSecondLevel,
}
