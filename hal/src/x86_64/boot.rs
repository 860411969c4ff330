//! Boot: the PVH entry, the 32→64-bit trampoline and the Rust bring-up that ends in the
//! firmware's main (registered with [`crate::x86_64_entry!`]).
//!
//! QEMU's PVH boot enters `_pvh_start` (the address in the ELF note of type 18, name "Xen") in
//! 32-bit protected mode with paging off and `ebx` = the `hvm_start_info`. The trampoline
//! checks the CPU has long mode and NX, zeroes BSS and the static carve-out but its stacks,
//! identity-maps the first 4 GiB with 2 MiB pages (boot tables in the carve-out), sets CR4.PAE,
//! EFER.LME|NXE and CR0.PG, and far-returns into 64-bit code through a minimal GDT. The 64-bit
//! start applies the image's R_X86_64_RELATIVE relocations (the target links static-PIE; QEMU
//! loads it at its link address, so each one stores its addend; those aimed outside the image,
//! at defmt's never-loaded `.defmt` section, are skipped) and calls `tsm_x86_64_boot`, crate
//! tsm-hal-boot's call of [`boot_main`].
//!
//! The bring-up ([`boot_main`] and the boot-only functions of the other modules it calls:
//! ACPI, VT-d's and the page tables' set-up, the Linux loader, ...) is `#[inline]` and runs
//! only from tsm-hal-boot: an `#[inline]` function is compiled in the crate that calls it, and
//! under fat LTO with that crate's opt-level (for size, against tsm-hal's 2), so code run once
//! at boot is built for size and the run-time paths are not (docs/benchmarks.md, "Image
//! `.text`: x86_64's boot code for size").

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Once;

use super::bootinfo::{self, BootInfo};
use super::cpu::{self, outb};
use super::percpu;
use super::{guest, layout, linux, paging, pci, serial, smp, svm, tsc, vtd};
use crate::platform::{ExitCode, MemRange};

core::arch::global_asm!(
    // The PVH entry note: namesz, descsz, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen", entry.
    ".pushsection .note.pvh, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 4",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".long __pvh_entry_abs",
    ".popsection",
    "",
    ".pushsection .data.entry_tsc, \"aw\"",
    ".balign 8",
    ".global __entry_tsc",
    "__entry_tsc:",
    ".quad 0",
    ".popsection",
    "",
    ".pushsection .rodata.boot_gdt, \"a\"",
    ".balign 8",
    ".global __boot_gdt",
    "__boot_gdt:",
    ".quad 0",
    ".quad 0x00AF9A000000FFFF", // 0x08: ring-0 code, 64-bit
    ".quad 0x00CF92000000FFFF", // 0x10: ring-0 data
    ".popsection",
    "",
    ".pushsection .text.boot, \"ax\"",
    ".code32",
    ".global _pvh_start",
    "_pvh_start:",
    "cli",
    "cld",
    // The TSC at the TSM's first instruction, for the boot figures (before BSS is zeroed, so
    // it lives in .data).
    "rdtsc",
    "mov edi, offset __entry_tsc_abs",
    "mov [edi], eax",
    "mov [edi + 4], edx",
    "mov esi, ebx", // hvm_start_info, kept in esi (cpuid clobbers ebx)
    "mov eax, 0x80000000",
    "cpuid",
    "cmp eax, 0x80000001",
    "jb 90f",
    "mov eax, 0x80000001",
    "cpuid",
    "test edx, 0x20000000", // long mode
    "jz 90f",
    "test edx, 0x00100000", // NX
    "jz 90f",
    // Zero BSS and the static carve-out's boot tables and per-CPU blocks, 4 bytes a store
    // (both ends are page-aligned in the link script); the stacks above are painted instead.
    "mov edi, offset __bss_start_abs",
    "mov ecx, offset __bss_end_abs",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",
    "mov esp, offset __stack_top_abs",
    // PML4[0] -> PDPT; PDPT[0..4] -> the 4 PDs; PD entries: 2 MiB pages over the first 4 GiB.
    "mov edi, offset __boot_pml4_abs",
    "mov eax, offset __boot_pdpt_abs",
    "or eax, 3",
    "mov [edi], eax",
    "mov edi, offset __boot_pdpt_abs",
    "mov eax, offset __boot_pd_abs",
    "or eax, 3",
    "mov ecx, 4",
    "2:",
    "mov [edi], eax",
    "add eax, 4096",
    "add edi, 8",
    "loop 2b",
    "mov edi, offset __boot_pd_abs",
    "mov eax, 0x83", // present, writable, 2 MiB
    "mov ecx, 2048",
    "3:",
    "mov [edi], eax",
    "add eax, 0x200000",
    "add edi, 8",
    "loop 3b",
    "mov eax, offset __boot_pml4_abs",
    "mov cr3, eax",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov ecx, 0xC0000080", // EFER
    "rdmsr",
    "or eax, 0x900", // LME | NXE
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001", // PG | PE
    "mov cr0, eax",
    // lgdt from the stack: [esp+2] limit, [esp+4] base.
    "mov eax, offset __boot_gdt_abs",
    "push eax",
    "mov eax, 0x170000", // limit 3*8-1 = 0x17 in the upper half
    "push eax",
    "lgdt [esp + 2]",
    "add esp, 8",
    "mov eax, 0x08",
    "push eax",
    "mov eax, offset __start64_abs",
    "push eax",
    "retf",
    "90:",
    "mov al, 0x11", // isa-debug-exit: failure
    "out 0xf4, al",
    "91:",
    "hlt",
    "jmp 91b",
    "",
    ".code64",
    ".global _start64",
    "_start64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "lea rsp, [rip + __stack_top]",
    "lea rcx, [rip + __rela_start]",
    "lea rdx, [rip + __rela_end]",
    "lea r8, [rip + __tsm_start]",
    "lea r9, [rip + __carveout_static_end]",
    "4:",
    "cmp rcx, rdx",
    "jae 6f",
    "cmp dword ptr [rcx + 8], 8", // R_X86_64_RELATIVE, the only kind a static PIE has
    "jne 92f",
    "mov rax, [rcx + 16]",
    "mov rdi, [rcx]",
    // defmt's `.defmt` (INFO, never loaded, "address" 1..) gets relocations too: skip
    // everything outside the image.
    "cmp rdi, r8",
    "jb 5f",
    "cmp rdi, r9",
    "jae 5f",
    "mov [rdi], rax",
    "5:",
    "add rcx, 24",
    "jmp 4b",
    "6:",
    "mov edi, esi",
    "call tsm_x86_64_boot",
    "92:",
    "mov al, 0x11",
    "out 0xf4, al",
    "93:",
    "hlt",
    "jmp 93b",
    ".popsection",
);

unsafe extern "Rust" {
    /// The firmware's main, defined by [`crate::x86_64_entry!`].
    fn tsm_x86_64_main(boot: &'static BootInfo, cpu: usize) -> !;
}

/// Registers the firmware's main: `fn(&'static BootInfo, cpu: usize) -> !`, called on the
/// boot CPU (0) once boot is done, and on each secondary CPU (1..) once it is up.
#[macro_export]
macro_rules! x86_64_entry {
    ($main:path) => {
        #[unsafe(export_name = "tsm_x86_64_main")]
        fn __tsm_x86_64_main(boot: &'static $crate::x86_64::BootInfo, cpu: usize) -> ! {
            $main(boot, cpu)
        }
    };
}

/// Enters the firmware's main on this CPU.
pub(super) fn enter_main(info: &'static BootInfo, cpu: usize) -> ! {
    // SAFETY: `tsm_x86_64_main` is the firmware's `fn(&'static BootInfo, usize) -> !`
    // exported by `x86_64_entry!`, which fixes its signature.
    unsafe { tsm_x86_64_main(info, cpu) }
}

/// The boot info, once the boot CPU parsed it.
pub(super) fn boot_info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

static BOOT_INFO: Once<BootInfo> = Once::new();
static SMAP_ON: AtomicBool = AtomicBool::new(false);

/// Whether SMAP is enabled (host-memory copies then need `stac`/`clac`).
pub fn smap_enabled() -> bool {
    SMAP_ON.load(Ordering::Relaxed)
}

unsafe extern "C" {
    /// The boot tables' four PDs (2 MiB pages over the first 4 GiB), in the static carve-out.
    static __boot_pd: u8;
}

/// PD entry bits: page-level write-through and cache-disable (uncached, for MMIO).
const BOOT_PD_UNCACHED: u64 = (1 << 3) | (1 << 4);

/// Makes `[pa, pa + len)` (below 4 GiB) uncached in the boot identity map, for MMIO read during
/// boot before the TSM's tables exist (PCI configuration space): the boot trampoline maps the
/// first 4 GiB write-back, and firmware's MTRRs need not cover every MMIO window. Whole 2 MiB
/// pages change; nothing else the boot CPU touches shares them (the ranges are outside RAM).
pub(super) fn boot_map_uncached(pa: u64, len: u64) {
    let pd = core::ptr::addr_of!(__boot_pd) as u64;
    let first = pa >> 21;
    let last = pa.saturating_add(len.max(1) - 1) >> 21;
    for index in first..=last.min(2047) {
        // SAFETY: the four boot PDs are 2048 contiguous entries in the static carve-out
        // (identity-mapped, read-write); `index` < 2048. Only the memory type of a 2 MiB page
        // outside RAM changes (the caller's MMIO), and the TLB flush below makes it effective.
        unsafe {
            let e = (pd + index * 8) as *mut u64;
            e.write_volatile(e.read_volatile() | BOOT_PD_UNCACHED);
        }
    }
    cpu::flush_tlb();
}

/// Room left above the painted part of the boot stack for the frames painting it.
const PAINT_MARGIN: u64 = 4096;

unsafe extern "C" {
    /// The TSC when the TSM's first instruction ran (written by `_pvh_start`).
    static __entry_tsc: u64;
}

/// Microseconds since reset at the TSM's first instruction (what ran before it, SeaBIOS, is
/// not the TSM's: the boot figures start here).
pub fn entry_us() -> u64 {
    // SAFETY: `__entry_tsc` is an 8-aligned `.data` word `_pvh_start` wrote once, before any
    // Rust code ran; nothing writes it since.
    let tsc = unsafe { core::ptr::addr_of!(__entry_tsc).read_volatile() };
    tsc.checked_div(tsc::ticks_per_us()).unwrap_or(0)
}

/// This CPU's RSP.
fn current_sp() -> u64 {
    let sp: u64;
    // SAFETY: reads RSP, nothing else.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Called by the image on the boot CPU once boot is over (the monitor is up): logs how much of
/// the boot stack boot used, then paints it again below the caller's frame, so the mark logged
/// at power-off is what the run loop needs on this CPU.
///
/// `#[inline]`: compiled in tsm-hal-boot, for size (the image calls it through that crate).
#[inline]
pub fn end_of_boot() {
    let l = layout::layout();
    // SAFETY: loads only.
    let used = crate::stack_use::high_water(unsafe { l.stack_words(0, u64::MAX) });
    defmt::info!(
        "stack high-water: boot used {=usize} of {=u64} bytes",
        used,
        l.stack_size(0)
    );
    // SAFETY: below this frame's RSP less the margin nothing lives on the boot stack (boot's
    // frames returned), and only this CPU runs on it.
    crate::stack_use::paint(unsafe { l.stack_words(0, current_sp() - PAINT_MARGIN) });
}

/// Logs the stack high-water mark (`crate::stack_use`) of each CPU that came up (the others'
/// stacks were never painted).
pub(super) fn log_stack_use() {
    let l = layout::layout();
    for cpu in (0..percpu::MAX_CPUS).filter(|&c| c == 0 || smp::is_online(c)) {
        // SAFETY: loads only.
        let words = unsafe { l.stack_words(cpu, u64::MAX) };
        defmt::info!(
            "stack high-water: CPU {=usize} used {=usize} of {=u64} bytes",
            cpu,
            crate::stack_use::high_water(words),
            l.stack_size(cpu)
        );
    }
}

/// The boot CPU's bring-up from the PVH start info at `start_info` to the firmware's main.
/// Only crate tsm-hal-boot's `tsm_x86_64_boot` (the symbol `_start64` calls) calls it, which
/// compiles it and the boot-only code it calls for size (the module's doc says why).
#[inline]
pub fn boot_main(start_info: u64) -> ! {
    serial::init();
    // SeaBIOS leaves the legacy PICs programmed; mask them so no IRQ reaches an absent vector.
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
    let l = layout::layout();
    // Painting the boot stack is the first long loop: the TSC's calibration window runs over it
    // and the set-up that follows.
    let window = tsc::start();
    // SAFETY: this is the first frame on the boot stack, so nothing lives below SP less the
    // margin. (The secondary CPUs' stacks are painted when they are started: `smp`.)
    crate::stack_use::paint(unsafe { l.stack_words(0, current_sp() - PAINT_MARGIN) });
    if !percpu::blocks_reserved() {
        defmt::error!("boot: the link script's per-CPU blocks do not match percpu's");
        super::exit(ExitCode::Failure)
    }
    // The per-CPU tables first, so a fault during boot is reported (they are identity-mapped
    // under the boot tables and the TSM's alike).
    percpu::load(0);
    if let Err(e) = svm::check() {
        defmt::error!(
            "boot: the CPU cannot run the host as an SVM guest with nested paging ({}); QEMU needs -cpu max",
            e
        );
        super::exit(ExitCode::Failure)
    }
    svm::init_maps();
    let (ticks, source) = tsc::calibrate(window);
    defmt::debug!("TSC rate from {}", source);
    smp::install_realmode_code();
    let mut info = match bootinfo::parse(start_info, l.image, ticks) {
        Ok(info) => info,
        Err(e) => {
            defmt::error!(
                "boot: no usable PVH start info at {=u64:#x}: {}",
                start_info,
                e
            );
            super::exit(ExitCode::Failure)
        }
    };
    let iommu = match vtd::unit(&info) {
        Ok(unit) => unit,
        Err(e) => {
            defmt::error!(
                "boot: the ACPI DMAR describes DMA remapping the TSM cannot own ({}), so device DMA could not be gated",
                e
            );
            super::exit(ExitCode::Failure)
        }
    };
    let mut mmio = pci::discover(
        &info,
        paging::LAPIC_BASE,
        iommu.as_ref().map(vtd::registers),
    );
    if linux::detect() {
        linux::firmware_memory(&info, &mut mmio);
    }
    if let Some(Err(e)) = iommu.as_ref().map(|u| vtd::check_scope(u, &mmio.functions)) {
        defmt::error!(
            "boot: a PCI function is not behind VT-d ({}), so its DMA could not be gated",
            e
        );
        super::exit(ExitCode::Failure)
    }
    if mmio.dropped > 0 {
        defmt::warn!(
            "PCI: {=u32} BARs beyond the table are not mapped for the host",
            mmio.dropped
        );
    }
    let tsm_most = MemRange {
        base: l.image.base,
        size: l.limit.saturating_sub(l.image.base.0),
    };
    let pages = paging::pool_pages(&info.dram, &tsm_most, mmio.entries()).zip(match iommu {
        Some(_) => vtd::pool_pages(&info.dram, &tsm_most),
        None => Some(0),
    });
    let Some((pool_pages, iommu_pages)) = pages else {
        defmt::error!(
            "boot: DRAM {=u64:#x}+{=u64:#x} cannot be mapped",
            info.dram.base.0,
            info.dram.size
        );
        super::exit(ExitCode::Failure)
    };
    // SVM pages for the CPUs that will run the TSM: as many as the MADT lists (the secondary
    // CPUs' start waits for no more), all `percpu::MAX_CPUS` without one.
    let cpus = info.madt_cpus.map_or(percpu::MAX_CPUS, |n| {
        (n as usize).clamp(1, percpu::MAX_CPUS)
    });
    // And a Linux host's I/O permission map after them.
    let linux_iopm_bytes = if linux::is_linux() {
        svm::LINUX_IOPM_BYTES
    } else {
        0
    };
    let cpu_pages_bytes = svm::CPU_PAGES_BYTES * cpus as u64 + linux_iopm_bytes;
    // SAFETY: once, on the boot CPU, before anything uses the memory after the static
    // carve-out (the secondary CPUs are not started yet).
    let carved = match unsafe {
        layout::carve(&l, &info.dram, pool_pages, iommu_pages, cpu_pages_bytes)
    } {
        Ok(c) => c,
        Err(e) => {
            defmt::error!(
                "boot: the carve-out cannot hold the granule descriptors, {=u64} page tables, {=u64} VT-d tables and {=usize} CPUs' SVM pages for DRAM {=u64:#x}+{=u64:#x}: {=u64} bytes needed, {=u64} free below {=u64:#x}",
                pool_pages,
                iommu_pages,
                cpus,
                info.dram.base.0,
                info.dram.size,
                e.needed,
                e.available,
                l.limit
            );
            super::exit(ExitCode::Failure)
        }
    };
    info.tsm = carved.tsm;
    info.granule_descriptors = carved.descriptors;
    if linux::is_linux()
        && let Err(e) = linux::prepare(&info, l.limit)
    {
        defmt::error!("boot: cannot start the Linux host: {=str}", e);
        super::exit(ExitCode::Failure)
    }
    // SAFETY: the carve zeroed this TSM memory (identity-mapped by the boot tables now and by
    // the TSM's once `paging::init` below loads them, which map the whole of `info.tsm`; before
    // SVM is enabled in `cpu_setup` only the Linux host's I/O map in it is written, by
    // `open_ports` below), and nothing else is given it.
    unsafe { svm::set_cpu_pages(carved.cpu_pages.base.0, cpus, linux::is_linux()) };
    // Under the boot tables still: they map the firmware's ACPI tables, where the FADT's ports
    // are read; the TSM's own tables do not.
    if linux::is_linux() {
        linux::open_ports(&info);
    }
    if let Err(e) = paging::init(info.dram, info.tsm, carved.pt_pool, &l, mmio.entries()) {
        defmt::error!(
            "boot: page tables for DRAM {=u64:#x}+{=u64:#x} failed: {}",
            info.dram.base.0,
            info.dram.size,
            e
        );
        super::exit(ExitCode::Failure)
    }
    match iommu {
        Some(unit) => match vtd::init(&unit, carved.iommu_pool, info.dram, info.tsm) {
            Ok(s) => defmt::info!(
                "VT-d {=u32}.{=u32} at {=u64:#x} is the TSM's: CAP {=u64:#x}, ECAP {=u64:#x}, translation on; host domain and context tables {=u64} pages",
                (s.version >> 4) & 0xF,
                s.version & 0xF,
                unit.base,
                s.cap,
                s.ecap,
                s.pages
            ),
            Err(e) => {
                defmt::error!("boot: VT-d at {=u64:#x} failed: {}", unit.base, e);
                super::exit(ExitCode::Failure)
            }
        },
        None => defmt::warn!(
            "no ACPI DMAR: device DMA is not gated (QEMU needs -device intel-iommu,aw-bits=48)"
        ),
    }
    cpu_setup(0);
    let info = BOOT_INFO.call_once(|| info);
    enter_main(info, 0)
}

/// What every CPU sets up once the TSM's tables are live: its descriptor tables and stacks,
/// SMEP/SMAP, x87/SSE register access for moving guests' register images (the TSM itself is
/// soft-float), SVM.
pub(super) fn cpu_setup(cpu: usize) {
    percpu::load(cpu);
    enable_smep_smap();
    // FXSAVE/FXRSTOR of the guests' x87/SSE state (`guest`) need EM and TS clear and OSFXSR
    // set; no XSAVE state is enabled (guests get none: `intercept`).
    // SAFETY: PE, PG and WP stay set; only the FPU bits change, and nothing in the TSM computes
    // with the FPU.
    unsafe {
        cpu::set_cr0((cpu::cr0() | cpu::CR0_MP) & !(cpu::CR0_EM | cpu::CR0_TS));
        cpu::set_cr4((cpu::cr4() | cpu::CR4_OSFXSR | cpu::CR4_OSXMMEXCPT) & !cpu::CR4_OSXSAVE);
    }
    svm::enable(cpu);
    guest::init_cpu(cpu);
    smp::cpu_online(cpu);
}

/// SMEP and SMAP when the CPU has them (CPUID.7.0:EBX bits 7 and 20; `-cpu max` does).
fn enable_smep_smap() {
    if cpu::cpuid(0, 0)[0] < 7 {
        return;
    }
    let ebx = cpu::cpuid(7, 0)[1];
    let mut cr4 = cpu::cr4();
    if ebx & (1 << 7) != 0 {
        cr4 |= cpu::CR4_SMEP;
    }
    let smap = ebx & (1 << 20) != 0;
    if smap {
        cr4 |= cpu::CR4_SMAP;
    }
    // SAFETY: only bits CPUID reports as supported are added; the TSM runs on supervisor pages
    // and touches host pages only in the stac/clac copies of `platform`.
    unsafe { cpu::set_cr4(cr4) };
    SMAP_ON.store(smap, Ordering::Relaxed);
}
