//! The platform the core runs on: physical memory through the identity map, the console,
//! power-off through isa-debug-exit, host isolation through the TSM's page tables and the VT-d
//! host domain, entropy from RDSEED/RDRAND, TLB maintenance for TVM address maps, and VT-d.

use core::arch::asm;
use core::mem::MaybeUninit;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};

use super::boot::smap_enabled;
use super::bootinfo::BootInfo;
use super::cpu::{self, halt_forever, outb};
use super::{paging, smp, vtd};
use crate::platform::{
    AddressMapFormat, Console, DmaDomain, DmaFault, DmaStream, DmaTableFormat, Entropy,
    EntropyError, ExitCode, GuestMmu, HostCpus, HostIsolation, Iommu, IommuError, MemBounds,
    MemFault, MmioRefused, PhysMem, PowerOff, TableGranules, UnmapRefused, WordStore,
};

/// QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Ends the run: QEMU exits with `(v << 1) | 1`, so 0x10 → 33 (success), 0x11 → 35 (failure).
pub fn exit(code: ExitCode) -> ! {
    outb(
        DEBUG_EXIT_PORT,
        match code {
            ExitCode::Success => 0x10,
            ExitCode::Failure => 0x11,
        },
    );
    // Without the exit device there is nothing left to do but stop.
    halt_forever()
}

/// The x86_64 QEMU platform as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct X86Platform {
    /// What `check` admits: DRAM outside the TSM's own range.
    bounds: MemBounds,
    /// What `read_entry` reads tables from, and where a vCPU's context and root may lie
    /// (`guest`): DRAM outside the TSM's own range.
    pub(super) tables: TableGranules,
}

impl X86Platform {
    /// The platform over the DRAM boot found.
    pub fn new(boot: &BootInfo) -> Self {
        X86Platform {
            bounds: MemBounds::new(boot.dram, boot.tsm),
            tables: TableGranules::new(boot.dram, boot.tsm),
        }
    }

    /// [`PhysMem::zero`] of the granule's length at `pa`. An aligned one is tested with the
    /// bounds `tables` made at boot, `check`'s rule for a granule, in fewer instructions than
    /// `check` (which also bounds the length).
    // Out of line: inlined, its tests were merged with the length's, and every other length
    // paid for them (VDEV_CREATE +5, measured).
    #[inline(never)]
    fn zero_granule(&self, pa: Pa) -> Result<(), MemFault> {
        const LEN: usize = GRANULE_SIZE as usize;
        if !(pa.is_granule_aligned() && self.tables.admits(pa)) {
            self.check(pa, LEN)?;
        }
        // SAFETY: as in `PhysMem::write`: `[pa, pa + LEN)` is DRAM outside the TSM's own
        // range, checked by `check` or by `tables` (the same rule for an aligned granule).
        unsafe { zero(pa.0 as *mut u8, LEN) };
        Ok(())
    }

    /// [`PhysMem::zero`] of any other length. Out of line, so that `zero` is one compare and a
    /// jump either way: inlined, the register moves for its `check` were made before the
    /// length's test, and UNDELEGATE's scrub paid for them (+1, measured).
    #[inline(never)]
    fn zero_bytes(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        self.check(pa, len)?;
        // SAFETY: as in `PhysMem::write`: `check` admitted `[pa, pa + len)`, DRAM outside the
        // TSM's own range.
        unsafe { zero(pa.0 as *mut u8, len) };
        Ok(())
    }

    /// `[pa, pa + len)` is DRAM and does not touch the TSM's own image and carve-out (never a
    /// target of the core's copies; delegated granules lie outside it).
    pub(super) fn check(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        if !self.bounds.admits(pa, len as u64) {
            return Err(MemFault(pa));
        }
        Ok(())
    }
}

/// Copies with `rep movsq` (then `rep movsb` for a tail under 8 bytes), allowing ring-0 access
/// to user pages (SMAP) for the copy only. Quadwords, not `rep movsb` throughout: each
/// iteration of a string instruction counts as one instruction under QEMU's icount, so an
/// object load or save of 1.8 KiB cost 1 800 instructions byte-wise and 225 now (the bench's
/// figures; docs/benchmarks.md, "Handlers"). Each source byte is still read once.
///
/// # Safety
/// `src` and `dst` must be valid for `len` bytes and identity-mapped.
pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    let (words, tail) = (len / 8, len % 8);
    if smap_enabled() {
        // SAFETY: the caller guarantees both ranges; `words * 8 + tail = len`, and the string
        // instructions advance RSI/RDI past what they copied; AC is set only for this copy.
        unsafe {
            asm!("stac", "rep movsq", "mov rcx, {tail}", "rep movsb", "clac",
                 tail = in(reg) tail,
                 inout("rcx") words => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack))
        };
    } else {
        // SAFETY: as above.
        unsafe {
            asm!("rep movsq", "mov rcx, {tail}", "rep movsb",
                 tail = in(reg) tail,
                 inout("rcx") words => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack, preserves_flags))
        };
    }
}

/// While it lives, ring 0 may touch user pages (SMAP): for the direct accesses to a vCPU's
/// context area, which lies in a delegated granule that the TSM's tables map as all host
/// memory (U=1), and to table entries. Nothing in the bracket may follow a pointer the host
/// chose.
// The guard keeps whether it set AC, so `Drop` clears it exactly when `allow` set it, without
// loading `SMAP_ON` again (the bracketed accesses are not `nomem`: the compiler could not
// reuse the first load).
pub(super) struct UserAccess(bool);

impl UserAccess {
    pub(super) fn allow() -> Self {
        let smap = smap_enabled();
        if smap {
            // SAFETY: sets RFLAGS.AC only; `Drop` clears it. Not `nomem`, so the compiler keeps
            // the bracketed accesses inside.
            unsafe { asm!("stac", options(nostack)) };
        }
        UserAccess(smap)
    }
}

impl Drop for UserAccess {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: clears RFLAGS.AC, which `allow` set.
            unsafe { asm!("clac", options(nostack)) };
        }
    }
}

/// Zeroes with 16-byte SSE stores when the range is whole 256-byte steps at a 16-byte aligned
/// address (a granule scrub, a VDEV object), else with `rep stosq` (then `rep stosb` for a tail
/// under 8 bytes), allowing ring-0 access to user pages (SMAP) for the stores only.
///
/// QEMU counts every `rep stosq` step as an instruction (512 per granule, most of
/// GRANULE_UNDELEGATE under icount, profiled). SSE's `movdqa` is the widest store the TSM
/// has (XSAVE and AVX stay off: `boot::cpu_setup`, `intercept`), so a granule is 256 stores;
/// they go 64 to a loop step when the length is whole 1 KiB steps (a granule: 4 steps, 12
/// loop instructions) and 16 to a step otherwise (a granule took 48 loop instructions that
/// way). The TSM is built without SSE, so `xmm0` holds the interrupted context's value (the
/// host's or a vCPU's: they are not saved on a call): it is kept on the stack around the
/// stores.
///
/// # Safety
/// `dst` must be valid for `len` bytes and identity-mapped.
// Out of line: inlined into its three callers, the 1 KiB loop put 2 KiB more into `.text` than
// the call costs in instructions.
#[inline(never)]
pub(super) unsafe fn zero(dst: *mut u8, len: usize) {
    const STEP: usize = 256;
    const BIG_STEP: usize = 1024;
    // Boot zeroes memory before `boot::cpu_setup` enables SSE on this CPU (CR4.OSFXSR, with
    // CR0.EM and TS cleared at the same time): until then `movdqa` is #UD.
    let sse = cpu::cr4() & cpu::CR4_OSFXSR != 0;
    if sse && (dst as usize).is_multiple_of(16) && len.is_multiple_of(STEP) && len != 0 {
        let big = usize::from(len.is_multiple_of(BIG_STEP));
        // The SMAP bracket without `UserAccess`: the guard's kept flag let the compiler thread
        // its two tests and emit the store loops twice, once per branch (+653 bytes).
        if smap_enabled() {
            // SAFETY: sets RFLAGS.AC only, for the stores below; cleared after them.
            unsafe { asm!("stac", options(nostack)) };
        }
        // SAFETY: writes exactly `[dst, dst + len)` (the caller's range): each pass stores the
        // 1024 bytes (`big` non-zero: `len` is a multiple of 1024) or the 256 bytes at `rdi`
        // (16-byte aligned, as `movdqa` needs: `dst` is and the steps are multiples of 16) and
        // advances it; `rcx` counts the bytes left, a non-zero multiple of the step, so the
        // loop ends at zero. `xmm0` is saved on the stack and restored; AC (set above under
        // SMAP) allows the stores to user pages.
        unsafe {
            asm!(
                "sub rsp, 16",
                "movdqu [rsp], xmm0",
                "pxor xmm0, xmm0",
                "test {big}, {big}",
                "jz 3f",
                "2:",
                ".irp off, 0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240",
                "movdqa [rdi + \\off], xmm0",
                "movdqa [rdi + \\off + 256], xmm0",
                "movdqa [rdi + \\off + 512], xmm0",
                "movdqa [rdi + \\off + 768], xmm0",
                ".endr",
                "add rdi, 1024",
                "sub rcx, 1024",
                "jnz 2b",
                "jmp 4f",
                "3:",
                ".irp off, 0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240",
                "movdqa [rdi + \\off], xmm0",
                ".endr",
                "add rdi, 256",
                "sub rcx, 256",
                "jnz 3b",
                "4:",
                "movdqu xmm0, [rsp]",
                "add rsp, 16",
                big = in(reg) big,
                inout("rdi") dst => _,
                inout("rcx") len => _,
            )
        };
        if smap_enabled() {
            // SAFETY: clears RFLAGS.AC, which the test above set under the same flag (each CPU's
            // set-up stores the same value, before SSE is on).
            unsafe { asm!("clac", options(nostack)) };
        }
        return;
    }
    let (words, tail) = (len / 8, len % 8);
    if smap_enabled() {
        // SAFETY: the caller guarantees the range; `words * 8 + tail = len`; AC is set only
        // for the stores.
        unsafe {
            asm!("stac", "rep stosq", "mov rcx, {tail}", "rep stosb", "clac",
                 tail = in(reg) tail,
                 inout("rcx") words => _, inout("rdi") dst => _, in("rax") 0u64,
                 options(nostack))
        };
    } else {
        // SAFETY: as above.
        unsafe {
            asm!("rep stosq", "mov rcx, {tail}", "rep stosb",
                 tail = in(reg) tail,
                 inout("rcx") words => _, inout("rdi") dst => _, in("rax") 0u64,
                 options(nostack, preserves_flags))
        };
    }
}

impl PhysMem for X86Platform {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.check(pa, out.len())?;
        // SAFETY: `check` put the range inside DRAM, which the TSM's tables identity-map
        // (present, writable) for ring 0; `out` is our own buffer. The host may write the
        // source concurrently: the copy is a plain byte copy done once, callers validate it.
        unsafe { copy(out.as_mut_ptr(), pa.0 as *const u8, out.len()) };
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
            copy(dst.cast::<u8>(), pa.0 as *const u8, len);
            Ok(&mut *dst)
        }
    }

    fn read_entry(&self, table: Pa, idx: usize) -> Result<u64, MemFault> {
        if !table.is_granule_aligned() || !self.tables.admits(table) {
            return Err(MemFault(table));
        }
        let pa = table.0 | (((idx % 512) as u64) << 3);
        let _user = UserAccess::allow();
        // SAFETY: the granule at `table` is DRAM outside the TSM (checked above: `tables` is
        // `check`'s rule for a whole granule), which the TSM's tables identity-map for ring 0,
        // maybe as a user page (`_user` allows that access; the load follows no pointer the
        // host chose). `pa` is an 8-aligned word inside the granule: one atomic load, so a
        // concurrent entry store is seen whole or not at all.
        let word = unsafe { core::ptr::read_volatile(pa as *const u64) };
        Ok(u64::from_le(word))
    }

    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        self.check(pa, data.len())?;
        // SAFETY: as in `read`; the destination is DRAM outside the TSM's own range.
        unsafe { copy(pa.0 as *mut u8, data.as_ptr(), data.len()) };
        Ok(())
    }

    /// The stores in one assembly loop with SMAP's bracket tested once: the same loop in Rust
    /// came out unrolled four times with the flag loaded at each end, 219 bytes of an image
    /// with none to spare.
    fn write_words(&self, granule: Pa, words: &[WordStore]) -> Result<(), MemFault> {
        if !granule.is_granule_aligned() || !self.tables.admits(granule) {
            return Err(MemFault(granule));
        }
        let smap = u8::from(smap_enabled());
        // SAFETY: the granule at `granule` is DRAM outside the TSM (checked above: `tables` is
        // `check`'s rule for a whole granule), which the TSM's tables identity-map for ring 0,
        // maybe as a user page: `stac` allows that access when SMAP is on and `clac` ends the
        // allowance after the stores, which follow no pointer the host chose (RFLAGS.AC is
        // clear again on exit, as on entry). `words` is `len` `WordStore`s,
        // `repr(C)`: the offset a `u16` at byte 0, the word at byte 8, 16 bytes each; an offset
        // is 8-aligned and under `GRANULE_SIZE`, so each store is one aligned word inside the
        // granule (`granule` is granule-aligned, so `or` adds it).
        unsafe {
            asm!(
                "test {smap}, {smap}",
                "jz 2f",
                "stac",
                "2:",
                "test {n}, {n}",
                "jz 4f",
                "3:",
                "movzx {off:e}, word ptr [{p}]",
                "mov {w}, qword ptr [{p} + 8]",
                "or {off}, {g}",
                "mov qword ptr [{off}], {w}",
                "add {p}, 16",
                "dec {n}",
                "jnz 3b",
                "4:",
                "test {smap}, {smap}",
                "jz 5f",
                "clac",
                "5:",
                smap = in(reg_byte) smap,
                g = in(reg) granule.0,
                p = inout(reg) words.as_ptr() => _,
                n = inout(reg) words.len() => _,
                off = out(reg) _,
                w = out(reg) _,
                options(nostack),
            )
        };
        Ok(())
    }

    fn zero(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        // A granule's length (every scrub) goes its own way, tested on its own so that other
        // lengths (a VDEV object) pay one compare for it.
        if len as u64 == GRANULE_SIZE {
            return self.zero_granule(pa);
        }
        self.zero_bytes(pa, len)
    }
}

impl Console for X86Platform {
    fn relay(&self, stream: u8, frame: &[u8]) {
        crate::logger::emit_relayed(stream, frame);
    }
}

/// The host names its CPUs by local APIC ID, as the ACPI MADT lists them. A CPU waiting in the
/// TSM polls its start request with `pause` (`HostContext::idle`): nothing to wake, and no
/// interrupt or IPI of its own the TSM would have to tell from a shootdown NMI. No PSCI: the
/// host starts CPUs with HOST_CPU_START.
impl HostCpus for X86Platform {
    fn cpu_index(&self, hw_id: u64) -> Option<usize> {
        smp::cpu_index(hw_id)
    }

    fn wake_cpus(&self) {}

    fn has_psci(&self) -> bool {
        false
    }
}

impl PowerOff for X86Platform {
    fn power_off(&self, code: ExitCode) -> ! {
        super::boot::log_stack_use();
        exit(code)
    }
}

/// The host's CPU view (its page tables) and its devices' view (the VT-d host domain) change
/// together: both have dropped the granule, on every CPU and in the IOTLB, before
/// `unmap_from_host` returns. If VT-d fails, the CPU side is put back and the call fails, so
/// the granule stays the host's in both views.
impl HostIsolation for X86Platform {
    fn unmap_from_host(&self, pa: Pa) -> Result<(), UnmapRefused> {
        paging::unmap_from_host(pa).map_err(|e| match e {
            paging::PagingError::NoSplitTable => UnmapRefused::NoSplitTable,
            _ => UnmapRefused::NotHostMemory,
        })?;
        if let Err(e) = vtd::host_unmap(pa) {
            if e != vtd::VtdError::NoSplitTable {
                defmt::error!(
                    "VT-d: taking {=u64:#x} out of the host domain failed: {}",
                    pa.0,
                    e
                );
            }
            if let Err(e) = paging::map_to_host(pa) {
                defmt::error!(
                    "giving {=u64:#x} back to the host's tables failed too: {}",
                    pa.0,
                    e
                );
            }
            return Err(match e {
                vtd::VtdError::NoSplitTable => UnmapRefused::NoSplitTable,
                _ => UnmapRefused::NotHostMemory,
            });
        }
        Ok(())
    }

    fn map_to_host(&self, pa: Pa) -> Result<(), MemFault> {
        if let Err(e) = vtd::host_map(pa) {
            defmt::error!(
                "VT-d: putting {=u64:#x} back into the host domain failed: {}",
                pa.0,
                e
            );
            return Err(MemFault(pa));
        }
        paging::map_to_host(pa).map_err(|_| MemFault(pa))
    }

    /// VT-d has nothing to forget: the host domain maps DRAM only.
    fn take_mmio_from_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        paging::take_mmio(pa)
    }

    fn give_mmio_to_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        paging::give_mmio(pa)
    }
}

/// Attempts per 64-bit word before reporting failure (Intel's DRNG guide suggests 10 for
/// RDRAND; RDSEED may underflow more often, so it falls back to RDRAND).
const RNG_RETRIES: u32 = 10;

impl Entropy for X86Platform {
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError> {
        let has_rdseed = cpu::cpuid(0, 0)[0] >= 7 && cpu::cpuid(7, 0)[1] & (1 << 18) != 0;
        let has_rdrand = cpu::cpuid(1, 0)[2] & (1 << 30) != 0;
        let word = || {
            (0..RNG_RETRIES)
                .find_map(|_| if has_rdseed { cpu::rdseed() } else { None })
                .or_else(|| {
                    (0..RNG_RETRIES).find_map(|_| if has_rdrand { cpu::rdrand() } else { None })
                })
                .ok_or(EntropyError)
        };
        // Whole words apart from the short end: a copy of a length known only at run time is a
        // `memcpy` call per word.
        let mut words = out.chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&word()?.to_le_bytes());
        }
        let end = words.into_remainder();
        if !end.is_empty() {
            end.copy_from_slice(word()?.to_le_bytes().get(..end.len()).ok_or(EntropyError)?);
        }
        Ok(())
    }
}

impl GuestMmu for X86Platform {
    fn address_map_format(&self) -> AddressMapFormat {
        AddressMapFormat::X86_64FourLevel
    }

    /// TVM vCPUs run with the TLB flushed on every VMRUN (`guest`), and the TSM never walks a
    /// TVM's map through its own TLB (it edits the tables through the identity map): only CPUs
    /// running `root` right now hold its translations, and the shootdown NMI makes them leave
    /// the guest, whose next VMRUN flushes.
    fn invalidate_guest_page(&self, root: Pa, _gpa: Gpa) {
        smp::shootdown(Some(root.0));
    }

    fn invalidate_guest_all(&self, root: Pa) {
        smp::shootdown(Some(root.0));
    }
}

/// VT-d, owned by the TSM (`vtd`); absent when boot found no ACPI DMAR.
impl Iommu for X86Platform {
    fn present(&self) -> bool {
        vtd::present()
    }

    fn table_format(&self) -> Option<DmaTableFormat> {
        vtd::present().then_some(DmaTableFormat::VtdSecondLevel)
    }

    fn attach(&self, stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError> {
        vtd::attach(stream, domain)
    }

    fn invalidate(&self, tag: u16) {
        vtd::invalidate(tag);
    }

    fn drain_faults(&self, sink: &mut dyn FnMut(DmaFault)) {
        vtd::drain_faults(sink);
    }
}
