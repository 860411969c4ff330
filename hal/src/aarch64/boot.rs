//! Boot: the entry point, the machine set-up, and the hand-off to the image's main.
//!
//! The image names its main with [`crate::aarch64_entry!`]; it receives a [`Boot`] with the
//! memory map, the platform, the core's granule descriptors and the host's context, once the
//! TSM's stage-1 and the host's stage-2 are on and EL2 traps what the host must not do.

use core::sync::atomic::AtomicU16;

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Pa};

use super::exception;
use super::host::HostContext;
use super::layout::{self, CarveOut};
use super::linux;
use super::memmap;
use super::mmu;
use super::pl011;
use super::platform::QemuVirt;
use super::smmu::{self, Smmu};
use super::smp::{self, MAX_CPUS, SECONDARY_STACK};
use super::stage2::{self, HostStage2};
use super::sysreg::{isb, read_sysreg, write_sysreg};
use crate::fatal::fatal_text;
use crate::platform::MemRange;

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    // Secondary CPUs wait (SMP comes later): only Aff0..Aff3 = 0 boots.
    "mrs x9, mpidr_el1",
    "mov x10, #0xffffff",
    "movk x10, #0xff, lsl #32",
    "tst x9, x10",
    "b.ne 2f",
    "mrs x9, CurrentEL",
    "cmp x9, #(2 << 2)",
    "b.ne 3f",
    // The image is built with FEAT_LSE atomics (.cargo/config.toml): on a CPU without them
    // (ID_AA64ISAR0_EL1.Atomic < 0b0010) the first lock would be an undefined instruction.
    "mrs x9, id_aa64isar0_el1",
    "ubfx x9, x9, #20, #4",
    "cmp x9, #2",
    "b.lo 3f",
    // FP/SIMD untrapped at EL2 and below (the host's and vCPUs' registers, which the
    // soft-float TSM leaves alone but for the swap around a vCPU's run and the scrub: `fp`);
    // SVE and SME stay trapped, their state is not switched.
    "mov x9, #0x33ff",
    "msr cptr_el2, x9",
    "isb",
    "adrp x9, __boot_stack_top",
    "add x9, x9, :lo12:__boot_stack_top",
    "mov sp, x9",
    "adrp x9, __bss_start",
    "add x9, x9, :lo12:__bss_start",
    "adrp x10, __bss_end",
    "add x10, x10, :lo12:__bss_end",
    "1:",
    "cmp x9, x10",
    "b.hs 4f",
    "str xzr, [x9], #8",
    "b 1b",
    "4:",
    "bl {boot}",
    "2:",
    "wfe",
    "b 2b",
    // Not entered at EL2, or no FEAT_LSE: nothing here can work; end the run as a failure.
    "3:",
    "adr x1, 5f",
    "mov x0, #0x18",
    "hlt #0xf000",
    "b 2b",
    ".balign 8",
    "5:",
    ".quad 0x20026, 1",
    boot = sym boot_primary,
);

unsafe extern "Rust" {
    /// The image's main, defined by [`crate::aarch64_entry!`] with exactly this signature.
    safe fn __tsm_aarch64_main(boot: Boot) -> !;
}

/// Defines the image's mains: `aarch64_entry!(main, secondary)` where `main: fn(Boot) -> !`
/// runs on the boot CPU and `secondary: fn(u64, HostContext) -> !` on every CPU
/// [`crate::aarch64::start_secondary_cpus`] starts (its index and its host context).
#[macro_export]
macro_rules! aarch64_entry {
    ($main:path, $secondary:path) => {
        #[unsafe(export_name = "__tsm_aarch64_main")]
        fn __tsm_aarch64_main(boot: $crate::aarch64::Boot) -> ! {
            let main: fn($crate::aarch64::Boot) -> ! = $main;
            main(boot)
        }
        #[unsafe(export_name = "__tsm_aarch64_secondary")]
        fn __tsm_aarch64_secondary(cpu: u64, host: $crate::aarch64::HostContext) -> ! {
            let secondary: fn(u64, $crate::aarch64::HostContext) -> ! = $secondary;
            secondary(cpu, host)
        }
    };
}

/// What boot hands the image.
pub struct Boot {
    /// DRAM (2 MiB aligned), from the device tree.
    pub dram: MemRange,
    /// The TSM's own memory: image and carve-out. Never in the host's stage-2.
    pub tsm: MemRange,
    /// This CPU's index.
    pub cpu: u64,
    /// The platform the core runs on.
    pub platform: QemuVirt,
    /// The core's granule descriptors, one per DRAM granule, zeroed, in the carve-out.
    pub granule_descriptors: &'static [AtomicU16],
    /// The host, ready to enter.
    pub host: HostContext,
}

/// HCR_EL2 while the host runs: VM (stage-2 on), SWIO, FMO/IMO/AMO (physical interrupts and
/// SErrors come to EL2), FB and BSU = inner shareable (the host's TLB and barrier operations
/// reach every CPU), DC (the host runs with its MMU off; DC makes its accesses Normal WB),
/// TSC (SMC traps to EL2: the call gate), RW (EL1 is AArch64).
pub(crate) const HCR_HOST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (0b01 << 10)
    | (1 << 12)
    | (1 << 19)
    | (1 << 31);
/// HCR_EL2 while a Linux host runs: [`HCR_HOST`] without FMO/IMO/AMO (the kernel owns the
/// GIC and takes its interrupts and SErrors itself; the TSM uses none) and without DC (the
/// kernel turns its own MMU on; with DC set it hangs), with APK and API (its pointer
/// authentication keys and instructions do not trap).
pub(crate) const HCR_LINUX: u64 =
    (HCR_HOST & !((1 << 3) | (1 << 4) | (1 << 5) | (1 << 12))) | (1 << 40) | (1 << 41);
/// CPTR_EL2 while a Linux host runs: as at entry (FP/SIMD untrapped, SME trapped) but SVE
/// untrapped too (TZ clear), since the kernel uses it when the CPU has it.
pub(crate) const CPTR_LINUX: u64 = 0x32FF;
/// CPTR_EL2 the TSM boots with and TVM vCPUs run under once their FP/SIMD registers are
/// loaded: SVE and SME trapped.
pub(crate) const CPTR_TSM: u64 = 0x33FF;
/// CPTR_EL2.TFP: FP/SIMD accesses (FPCR and FPSR too) at EL0..EL2 trap to EL2. Set while a vCPU
/// runs with the host's FP/SIMD registers still loaded (`guest`'s lazy switch).
pub(crate) const CPTR_TFP: u64 = 1 << 10;
/// SCTLR_EL1 the host starts with: RES1 bits only (MMU, caches and alignment checks off).
const SCTLR_EL1_RESET: u64 = 0x30D0_0800;
/// CNTHCTL_EL2: EL1 may read the physical counter and use the physical timer.
const CNTHCTL_EL1_ACCESS: u64 = 0b11;

/// Room left above the painted part of the boot stack for the frames painting it.
const PAINT_MARGIN: u64 = 4096;

/// This CPU's SP.
fn current_sp() -> u64 {
    let sp: u64;
    // SAFETY: reads SP, nothing else.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Called by the image on the boot CPU once boot is over (the monitor is up, the other CPUs
/// started): logs how much of the boot stack boot used, then paints it again below the caller's
/// frame, so the mark logged at power-off is what the run loop needs on this CPU.
pub fn end_of_boot() {
    // SAFETY: loads only.
    let used = crate::stack_use::high_water(unsafe { layout::boot_stack_words(u64::MAX) });
    defmt::info!(
        "stack high-water: boot used {=usize} of {=u64} bytes",
        used,
        layout::boot_stack_size()
    );
    // SAFETY: below this frame's SP less the margin nothing lives on the boot stack (boot's
    // frames returned), and only this CPU runs on it.
    crate::stack_use::paint(unsafe { layout::boot_stack_words(current_sp() - PAINT_MARGIN) });
}

extern "C" fn boot_primary() -> ! {
    // SAFETY: below SP less the margin nothing lives yet (this is the first frame on the boot
    // stack, and nothing else runs on it).
    crate::stack_use::paint(unsafe { layout::boot_stack_words(current_sp() - PAINT_MARGIN) });
    exception::install();
    let dram = memmap::dram_from_dtb().unwrap_or_else(|e| fatal_text(e.describe()));
    let granules = dram.size >> GRANULE_SHIFT;
    // The devices the TSM places: the SMMU it keeps, the PCIe windows the host gets (read
    // before the host can touch the tree).
    let devices = memmap::devices_from_dtb();
    // A Linux host gets every device but the TSM's (it finds them in the device tree); the
    // bare-metal payload only the PCIe windows it drives.
    let linux = linux::detect();
    let tsm_devices = [
        devices.smmu,
        Some(MemRange {
            base: Pa(pl011::PL011_BASE as u64),
            size: GRANULE_SIZE,
        }),
    ];
    let all_mmio = mmio_but(&dram, &tsm_devices).map(|low| linux_windows(low, devices.pcie));
    let pcie = devices.pcie.map(|p| [p.ecam, p.mmio]);
    let windows = if linux {
        let Some(w) = all_mmio.as_ref() else {
            fatal_text(
                "the TSM's devices (SMMU, UART) are not where a Linux host's MMIO can go around them",
            )
        };
        w.as_slice()
    } else {
        pcie.as_ref().map_or(&[][..], |w| &w[..])
    };
    if let Some(smmu) = devices.smmu
        && windows.iter().any(|w| overlaps(w, &smmu))
    {
        fatal_text("a PCIe window of the device tree overlaps the SMMU's registers");
    }
    let Some(device_tables) = stage2::device_table_count(windows) else {
        fatal_text("malformed PCIe windows in the device tree")
    };
    // The SMMU's stream table and queues, and the granules skipped to align them.
    let smmu_tables = if devices.smmu.is_some() {
        smmu::MEMORY_TABLES as u64 + (smmu::MEMORY_ALIGN >> GRANULE_SHIFT) - 1
    } else {
        0
    };
    // Secondary CPUs (PSCI from the device tree, read before the host can touch it): a stack
    // each, reserved only for the CPUs the tree lists (up to MAX_CPUS).
    let (mpidr, cpus) = memmap::cpus_from_dtb::<MAX_CPUS>().unwrap_or(([0; MAX_CPUS], 1));
    let stacks = SECONDARY_STACK * (cpus.max(1) as u64 - 1);
    // The TSM's range given `s2_tables` host stage-2 tables.
    let tsm_with = |s2_tables: u64| {
        s2_tables
            .checked_add(
                mmu::TABLES as u64
                    + device_tables
                    + stage2::MMIO_SPLIT_TABLES as u64
                    + smmu_tables
                    + (stage2::ROOT_ALIGN >> GRANULE_SHIFT)
                    - 1,
            )
            .and_then(|t| t.checked_mul(GRANULE_SIZE))
            .zip(layout::descriptor_bytes(granules))
            .and_then(|(tables, descs)| {
                layout::tsm_range(tables.checked_add(descs)?.checked_add(stacks)?, &dram)
            })
    };
    // The stage 2 needs a level-3 table per 2 MiB block the TSM touches, which depends on the
    // TSM's size. Sized first for the most the TSM may span (up to the limit), then for the
    // range that gives: a smaller range from the same start touches no more blocks.
    let Some((s2_tables, tsm)) = stage2::table_count(&dram, &layout::tsm_most())
        .and_then(tsm_with)
        .and_then(|first| stage2::table_count(&dram, &first))
        .and_then(|n| Some((n, tsm_with(n)?)))
    else {
        fatal_text("the TSM's memory does not fit in DRAM below the host parameters page")
    };
    let Some(s2_tables) = stage2::table_count(&dram, &tsm).filter(|&n| n <= s2_tables) else {
        fatal_text("the TSM's memory does not fit in DRAM below the host parameters page")
    };
    // SAFETY: boot_primary runs once, on the boot CPU (the entry parks the others).
    let mut carve = unsafe { CarveOut::new() };
    let Some(s1) = carve.tables(mmu::TABLES, &tsm) else {
        fatal_text("no room for stage-1 tables")
    };
    if mmu::enable(&dram, s1, layout::boot_stack_guard()).is_err() {
        fatal_text("DRAM outside what the TSM's stage-1 can map");
    }
    let Some(s2) = carve.aligned_tables(s2_tables as usize, stage2::ROOT_ALIGN, &tsm) else {
        fatal_text("no room for the host's stage-2 tables")
    };
    let stage2 = match HostStage2::build(dram, tsm, s2) {
        Ok(s) => s,
        Err(stage2::Stage2Error::SmallPaSize) => {
            fatal_text("the CPU's physical address size is below the host stage 2's 40 bits")
        }
        Err(_) => fatal_text("cannot build the host's stage-2"),
    };
    let Some(pool) = carve.tables(device_tables as usize, &tsm) else {
        fatal_text("no room for the host's device mappings")
    };
    let Some(split) = carve.tables(stage2::MMIO_SPLIT_TABLES, &tsm) else {
        fatal_text("no room for the tables that take BAR pages from the host")
    };
    if stage2
        .map_devices(windows, devices.pcie.map(|p| p.mmio), pool, split)
        .is_err()
    {
        fatal_text("cannot map the PCIe windows for the host (inside DRAM's GiBs or overlapping)");
    }
    let smmu = devices.smmu.map(|frame| {
        let Some(memory) = carve.aligned_tables(smmu::MEMORY_TABLES, smmu::MEMORY_ALIGN, &tsm)
        else {
            fatal_text("no room for the SMMU's tables and queues")
        };
        match Smmu::init(frame, memory, stage2.dma_root()) {
            Ok(s) => s,
            Err(e) => fatal_text(e.describe()),
        }
    });
    match (devices.smmu, &smmu) {
        (Some(frame), Some(s)) => defmt::info!(
            "SMMUv3 at {=u64:#x} is the TSM's: stream table and queues in TSM memory, the streams of bus 0 in the host domain (DMA root {=u64:#x}), {=u64}-bit inputs for the core's tables",
            frame.base.0,
            stage2.dma_root().0,
            s.table_input_bits()
        ),
        _ => defmt::warn!("no SMMUv3 in the device tree: device DMA is not gated"),
    }
    if let Some(p) = devices.pcie {
        defmt::info!(
            "host devices: PCIe ECAM {=u64:#x}+{=u64:#x}, MMIO window {=u64:#x}+{=u64:#x}",
            p.ecam.base.0,
            p.ecam.size,
            p.mmio.base.0,
            p.mmio.size
        );
    }
    let Some(granule_descriptors) = carve.descriptors(granules as usize, &tsm) else {
        fatal_text("no room for the granule descriptors")
    };
    let mut stack_top = [0; MAX_CPUS];
    for top in stack_top.iter_mut().take(cpus).skip(1) {
        let Some(t) = carve.stack(SECONDARY_STACK, &tsm) else {
            fatal_text("no room for the secondary CPUs' stacks")
        };
        *top = t;
    }
    let host_args = if linux {
        let dtb = memmap::dtb_blob().unwrap_or_else(|e| fatal_text(e.describe()));
        let tsm_most = layout::tsm_most();
        let params = tsm_most.base.0 + tsm_most.size;
        let units = tsm_devices.map(|d| d.map_or(u64::MAX, |d| d.base.0));
        match linux::prepare(dtb, &dram, &tsm, params, &units) {
            Ok(dtb) => [dtb, 0, 0],
            Err(e) => fatal_text(e),
        }
    } else {
        [dram.base.0, dram.size, 0]
    };
    trap_host();
    smp::publish(smp::Shared {
        mair: read_sysreg!("mair_el2"),
        tcr: read_sysreg!("tcr_el2"),
        ttbr0: read_sysreg!("ttbr0_el2"),
        sctlr: read_sysreg!("sctlr_el2"),
        vtcr: read_sysreg!("vtcr_el2"),
        vttbr: read_sysreg!("vttbr_el2"),
        dram,
        smmu: devices.smmu,
        bars: devices.pcie.map(|p| p.mmio),
        mpidr,
        stack_top,
        cpus,
    });
    let host = HostContext::new(
        &dram,
        devices.smmu,
        devices.pcie.map(|p| p.mmio),
        0,
        host_args,
    );
    __tsm_aarch64_main(Boot {
        dram,
        tsm,
        cpu: 0,
        platform: QemuVirt::new(dram, tsm, stage2, smmu),
        granule_descriptors,
        host,
    })
}

/// The MMIO below DRAM's first GiB (QEMU `virt` puts every device there but, with
/// `highmem=on`, PCIe's ECAM and 64-bit window, which [`linux_windows`] adds) but `holes` (the TSM's devices, each inside it or `None`), as up to three windows.
fn mmio_but(dram: &MemRange, holes: &[Option<MemRange>; 2]) -> Option<[MemRange; 3]> {
    let top = dram.base.0 & !((1 << 30) - 1);
    let mut h: [MemRange; 2] = [holes[0]?, holes[1]?];
    h.sort_unstable_by_key(|r| r.base.0);
    let [a, b] = h;
    let a_end = a.base.0.checked_add(a.size)?;
    let b_end = b.base.0.checked_add(b.size)?;
    if a_end > b.base.0 || b_end > top {
        return None;
    }
    let span = |from: u64, to: u64| MemRange {
        base: Pa(from),
        size: to - from,
    };
    Some([span(0, a.base.0), span(a_end, b.base.0), span(b_end, top)])
}

/// Up to the three windows of [`mmio_but`] and the PCIe windows above them (ECAM with
/// `highmem=on`, the 64-bit BAR window), as a Linux host gets them.
struct Windows {
    list: [MemRange; 5],
    len: usize,
}

impl Windows {
    fn as_slice(&self) -> &[MemRange] {
        self.list.get(..self.len).unwrap_or(&[])
    }
}

/// `low` and the PCIe windows of `pcie` that lie above it.
fn linux_windows(low: [MemRange; 3], pcie: Option<memmap::Pcie>) -> Windows {
    let top = low[2].base.0 + low[2].size;
    let mut w = Windows {
        list: [low[0], low[1], low[2], low[2], low[2]],
        len: 3,
    };
    if let Some(p) = pcie {
        for high in [Some(p.ecam), p.mmio64].into_iter().flatten() {
            if high.base.0 >= top
                && let Some(slot) = w.list.get_mut(w.len)
            {
                *slot = high;
                w.len += 1;
            }
        }
    }
    w
}

/// Whether two ranges share a byte.
fn overlaps(a: &MemRange, b: &MemRange) -> bool {
    a.base.0 < b.base.0.saturating_add(b.size) && b.base.0 < a.base.0.saturating_add(a.size)
}

/// HCR_EL2 while the host runs: [`HCR_LINUX`] for a Linux Image, else [`HCR_HOST`].
pub(crate) fn host_hcr() -> u64 {
    if linux::is_linux() {
        HCR_LINUX
    } else {
        HCR_HOST
    }
}

/// Sets the EL2 controls the host runs under on this CPU (its stage-2 is already installed).
pub(crate) fn trap_host() {
    let midr = read_sysreg!("midr_el1");
    let mpidr = read_sysreg!("mpidr_el1");
    // SAFETY: these registers only govern EL1/EL0, where nothing runs until the first world
    // switch; the host sees its real CPU IDs, a zero virtual counter offset, no EL2 traps of
    // coprocessor registers, and starts with its MMU off. CPTR_EL2 for a Linux host only
    // lifts the SVE trap (FP/SIMD stays usable at EL2, SME trapped); ZCR_EL2 governs EL1's
    // vector length only.
    unsafe {
        write_sysreg!("vpidr_el2", midr);
        write_sysreg!("vmpidr_el2", mpidr);
        write_sysreg!("cnthctl_el2", CNTHCTL_EL1_ACCESS);
        write_sysreg!("cntvoff_el2", 0u64);
        write_sysreg!("hstr_el2", 0u64);
        write_sysreg!("sctlr_el1", SCTLR_EL1_RESET);
        write_sysreg!("hcr_el2", host_hcr());
        if linux::is_linux() {
            write_sysreg!("cptr_el2", CPTR_LINUX);
            isb();
            // ZCR_EL2.LEN at its maximum: the CPU clamps it to the longest vector it has, so
            // EL1 may pick any length.
            core::arch::asm!("msr S3_4_C1_C2_0, {}", in(reg) 0xFu64, options(nostack));
        }
    }
    isb();
}
