//! The [`crate::platform`] traits on QEMU `virt`.

use core::mem::MaybeUninit;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};

use super::copy;
use super::smmu::Smmu;
use super::stage2::{self, HostStage2, HostWalkers, Stage2Error};
use super::sysreg::read_sysreg;
use super::vmid::Vmids;
use crate::platform::{
    AddressMapFormat, Console, DmaDomain, DmaFault, DmaStream, DmaTableFormat, Entropy,
    EntropyError, ExitCode, GuestMmu, HostCpus, HostIsolation, Iommu, IommuError, MemBounds,
    MemFault, MemRange, MmioRefused, PhysMem, PowerOff, TableGranules, UnmapRefused, WordStore,
};

/// The machine as the core sees it.
pub struct QemuVirt {
    /// What `check` admits: DRAM outside the TSM.
    bounds: MemBounds,
    /// What `read_entry` reads tables from: `dram` outside `tsm`.
    pub(super) tables: TableGranules,
    pub(super) stage2: HostStage2,
    /// The SMMU, if the machine has one (`iommu=smmuv3`): device DMA is gated only then.
    smmu: Option<Smmu>,
    /// TVM roots → VMIDs (taken around TLB maintenance and vCPU entry/exit only).
    pub(super) vmids: spin::Mutex<Vmids>,
}

impl QemuVirt {
    pub(crate) fn new(
        dram: MemRange,
        tsm: MemRange,
        stage2: HostStage2,
        smmu: Option<Smmu>,
    ) -> Self {
        QemuVirt {
            bounds: MemBounds::new(dram, tsm),
            tables: TableGranules::new(dram, tsm),
            stage2,
            smmu,
            vmids: spin::Mutex::new(Vmids::new()),
        }
    }

    /// `[pa, pa + len)` is DRAM outside the TSM's own image and carve-out (never a target of
    /// the core's copies: its objects live in delegated granules, which lie outside it).
    pub(super) fn check(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        if !self.bounds.admits(pa, len as u64) {
            return Err(MemFault(pa));
        }
        Ok(())
    }
}

impl PhysMem for QemuVirt {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.check(pa, out.len())?;
        // SAFETY: [pa, pa + out.len()) is DRAM (checked above), identity-mapped as Normal
        // memory in the TSM's stage-1; `out` is our own buffer. The host may write the source
        // concurrently: `copy` reads each byte once, and the caller validates only this copy.
        unsafe { copy::copy(out.as_mut_ptr(), pa.0 as *const u8, out.len()) };
        Ok(())
    }

    fn read_uninit<'b>(
        &self,
        pa: Pa,
        out: &'b mut [MaybeUninit<u8>],
    ) -> Result<&'b mut [u8], MemFault> {
        self.check(pa, out.len())?;
        let len = out.len();
        let dst = core::ptr::from_mut(out) as *mut [u8];
        // SAFETY: as in `read`; `out` is our own buffer, which the copy writes whole (every one
        // of its `len` bytes) before the slice below is formed over it as initialised bytes
        // (`MaybeUninit<u8>` has the layout of `u8`).
        unsafe {
            copy::copy(dst.cast::<u8>(), pa.0 as *const u8, len);
            Ok(&mut *dst)
        }
    }

    fn read_entry(&self, table: Pa, idx: usize) -> Result<u64, MemFault> {
        if !table.is_granule_aligned() || !self.tables.admits(table) {
            return Err(MemFault(table));
        }
        let pa = table.0 | (((idx % 512) as u64) << 3);
        // SAFETY: the granule at `table` is DRAM outside the TSM (checked above: `tables` is
        // `check`'s rule for a whole granule), identity-mapped as Normal
        // memory in the TSM's stage-1, and `pa` is an 8-aligned word inside it: one
        // single-copy-atomic load, so a concurrent entry store is seen whole or not at all.
        Ok(u64::from_le(unsafe {
            core::ptr::read_volatile(pa as *const u64)
        }))
    }

    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        self.check(pa, data.len())?;
        // SAFETY: [pa, pa + data.len()) is DRAM outside the TSM's own memory (checked
        // above), identity-mapped as Normal memory in the TSM's stage-1; the core decides whose
        // it may write.
        unsafe { copy::copy(pa.0 as *mut u8, data.as_ptr(), data.len()) };
        Ok(())
    }

    fn write_words(&self, granule: Pa, words: &[WordStore]) -> Result<(), MemFault> {
        if !granule.is_granule_aligned() || !self.tables.admits(granule) {
            return Err(MemFault(granule));
        }
        for &WordStore(off, w) in words {
            // SAFETY: the granule at `granule` is DRAM outside the TSM's own memory (checked
            // above: `tables` is `check`'s rule for a whole granule), identity-mapped as Normal
            // memory in the TSM's stage-1; a `WordOff` is 8-aligned and under `GRANULE_SIZE`,
            // so the store is one aligned word inside that granule.
            unsafe { core::ptr::write_volatile((granule.0 as usize | off.get()) as *mut u64, w) };
        }
        Ok(())
    }

    fn zero(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        // A whole granule (every scrub): `tables`' four compares instead of `check`'s general
        // range test with its overflow checks, and no length dispatch (~15 of the ~100
        // instructions of UNDELEGATE's scrub, profiled).
        if len == GRANULE_SIZE as usize && pa.is_granule_aligned() && self.tables.admits(pa) {
            // SAFETY: the granule at `pa` is DRAM outside the TSM's own memory (`admits` is
            // `check`'s rule for a whole granule), identity-mapped as Normal memory in the
            // TSM's stage-1: 4 KiB from a granule-aligned, so 64-byte aligned, address.
            unsafe { copy::zero_page(pa.0 as usize) };
            return Ok(());
        }
        self.check(pa, len)?;
        // SAFETY: as in `write`.
        unsafe { copy::zero(pa.0 as *mut u8, len) };
        Ok(())
    }
}

impl Console for QemuVirt {
    fn relay(&self, stream: u8, frame: &[u8]) {
        crate::logger::emit_relayed(stream, frame);
    }
}

impl PowerOff for QemuVirt {
    fn power_off(&self, code: ExitCode) -> ! {
        super::smp::log_stack_use();
        super::semihosting::exit(code)
    }
}

/// The host names its CPUs by MPIDR affinity, as the device tree lists them; a CPU waiting in
/// the TSM sleeps in `wfe` (`HostContext::idle`), which the start request's `sev` ends.
impl HostCpus for QemuVirt {
    fn cpu_index(&self, hw_id: u64) -> Option<usize> {
        super::smp::cpu_index(hw_id)
    }

    fn wake_cpus(&self) {
        // SAFETY: `sev` only sets the event register of every CPU; the start request it
        // announces was published (release) before it, and `dsb` orders that store first.
        unsafe { core::arch::asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
    }

    fn has_psci(&self) -> bool {
        true
    }
}

/// The host's CPU stage 2 and its DMA domain share their level-3 tables
/// (`stage2::HostStage2`), so one descriptor store changes both; the CPUs' TLBs are invalidated
/// by the stage-2 code, the SMMU's here.
impl HostIsolation for QemuVirt {
    fn unmap_from_host(&self, pa: Pa) -> Result<(), UnmapRefused> {
        self.stage2
            .unmap_from_host(pa, &self.smmu)
            .map_err(|e| match e {
                Stage2Error::NoTables => UnmapRefused::NoSplitTable,
                _ => UnmapRefused::NotHostMemory,
            })
    }

    /// Nothing to invalidate in the SMMU: a walk that found no descriptor left nothing in its
    /// TLB, so the next DMA walks the tables again and finds the new one.
    fn map_to_host(&self, pa: Pa) -> Result<(), MemFault> {
        self.stage2.map_to_host(pa).map_err(|_| MemFault(pa))
    }

    /// The SMMU has nothing to forget: the host's DMA domain never maps MMIO.
    fn take_mmio_from_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        self.stage2.take_mmio(pa)
    }

    fn give_mmio_to_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        self.stage2.give_mmio(pa)
    }
}

/// The SMMU's host-domain streams walk the host's stage-2 tables (through the DMA root).
impl HostWalkers for Option<Smmu> {
    fn forget(&self, pa: Pa) {
        if let Some(smmu) = self {
            smmu.invalidate_host(pa);
        }
    }

    fn forget_all(&self) {
        if let Some(smmu) = self {
            smmu.invalidate_host_all();
        }
    }
}

/// Reads of RNDR per 64-bit word before reporting failure (it fails only transiently).
const RNG_RETRIES: u32 = 10;

/// One RNDR read (FEAT_RNG), `None` when the hardware had no entropy at hand.
fn rndr() -> Option<u64> {
    let (value, ok): (u64, u64);
    // SAFETY: RNDR only reads the random number generator and sets NZCV; the caller checked
    // that FEAT_RNG is implemented, so the encoding does not trap.
    unsafe {
        core::arch::asm!(
            "mrs {v}, s3_3_c2_c4_0",
            "cset {ok}, ne",
            v = out(reg) value,
            ok = out(reg) ok,
            options(nomem, nostack)
        )
    };
    (ok != 0).then_some(value)
}

impl Entropy for QemuVirt {
    /// From RNDR; fails on CPUs without FEAT_RNG (QEMU's `cortex-a57`; `-cpu max` has it).
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError> {
        if (read_sysreg!("id_aa64isar0_el1") >> 60) & 0xF == 0 {
            return Err(EntropyError);
        }
        let word = || (0..RNG_RETRIES).find_map(|_| rndr()).ok_or(EntropyError);
        // Whole aligned words with one store each, the unaligned ends byte by byte: the image
        // is built for strict alignment, so a word copied into bytes of unknown alignment is
        // eight shifted byte stores (~23 instructions a word, 103 for VDEV_BIND's 32-byte
        // nonce, profiled), and a copy of a length known only at run time a `memcpy` call.
        // SAFETY: `u64` has no invalid bit patterns and no padding, so any aligned run of bytes
        // may be viewed as `u64`s; `align_to_mut` splits `out` into exactly such a run and its
        // unaligned ends, and every byte is stored below before `out` is used again.
        let (head, words, tail) = unsafe { out.align_to_mut::<u64>() };
        for w in words {
            *w = word()?.to_le();
        }
        for end in [head, tail] {
            for chunk in end.chunks_mut(8) {
                let bytes = word()?.to_le_bytes();
                chunk.copy_from_slice(bytes.get(..chunk.len()).ok_or(EntropyError)?);
            }
        }
        Ok(())
    }
}

impl GuestMmu for QemuVirt {
    fn address_map_format(&self) -> AddressMapFormat {
        AddressMapFormat::ArmStage2
    }

    /// A root without a VMID has nothing cached (its VMID, if it had one, was flushed when it
    /// changed hands); the lock keeps the VMID from changing hands during the flush.
    fn invalidate_guest_page(&self, root: Pa, gpa: Gpa) {
        let vmids = self.vmids.lock();
        if let Some(vmid) = vmids.of(root) {
            stage2::invalidate_tvm_ipa(vmid, gpa);
        }
    }

    fn invalidate_guest_all(&self, root: Pa) {
        let vmids = self.vmids.lock();
        if let Some(vmid) = vmids.of(root) {
            stage2::invalidate_tvm_all(vmid);
        }
    }
}

/// The SMMUv3 (`super::smmu`), when the machine has one.
impl Iommu for QemuVirt {
    fn present(&self) -> bool {
        self.smmu.is_some()
    }

    fn table_format(&self) -> Option<DmaTableFormat> {
        self.smmu.as_ref().map(|_| DmaTableFormat::ArmStage2)
    }

    fn attach(&self, stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError> {
        self.smmu
            .as_ref()
            .ok_or(IommuError::Absent)?
            .attach(stream, domain)
    }

    fn invalidate(&self, tag: u16) {
        if let Some(smmu) = &self.smmu {
            smmu.invalidate(tag);
        }
    }

    fn drain_faults(&self, sink: &mut dyn FnMut(DmaFault)) {
        if let Some(smmu) = &self.smmu {
            smmu.drain(sink);
        }
    }
}
