//! Secondary CPUs: started with INIT-SIPI-SIPI through the local APIC (xAPIC MMIO), each runs
//! the common per-CPU setup and then the firmware's main with its index, where it waits in the
//! TSM until the host starts it with HOST_CPU_START (`tsm_core::cpus`). The host has no local
//! APIC (`host`), so its CPUs send no INIT or SIPI; a device's MSI still can while interrupt
//! remapping is off (docs/design.md "CPU bring-up", the open hole).
//!
//! The startup IPI starts an AP in real mode at `vector × 4 KiB`: [`AP_PAGE`] (0x8000) holds a
//! copy of `ap_realmode` (copied by the boot CPU under the boot tables, before the TSM's
//! tables exist). That page is below the DRAM the host gets (which starts at 1 MiB), so the
//! host never maps it; the TSM's tables do not map it either.
//!
//! `ap_realmode` takes a ticket (`lock xadd` on a word of the page) that becomes the CPU index
//! (1, 2, ...), parks for good if the index is not below [`MAX_CPUS`], loads its own small GDT,
//! enters protected mode, turns on PAE paging on the boot CPU's boot tables (identity over the
//! first 4 GiB, still in the carve-out), long mode, and jumps to `_ap_start64` in the image,
//! which takes the index's stack from the carve-out and calls [`ap_main`]: the TSM's tables,
//! then the same per-CPU setup as the boot CPU.
//!
//! CPU count: the IPIs go to "all excluding self", so every CPU the firmware brought up
//! answers; the boot CPU waits until as many have checked in as the ACPI MADT lists (enabled
//! processors, capped at [`MAX_CPUS`]), or for [`CHECK_IN_US`] when there is no MADT or some
//! never come.
//!
//! TLB shootdown ([`shootdown`]): the TSM runs with interrupts off, so it reaches another CPU
//! with an NMI. A CPU running a guest (the host or a TVM vCPU) leaves it for the NMI (every
//! guest intercepts NMIs) and takes it in the TSM once the #VMEXIT has set GIF again; its
//! handler (`trap`, `nmi_entry`) reloads CR3 and counts the NMI in the CPU's per-CPU data; the
//! sender waits for the count to move. The CPU's TLB then holds nothing of the TSM's tables
//! from before the sender's change, and its next VMRUN flushes the guest's translations
//! (`svm`). TVM maps are shot down only on the CPUs running that map ([`set_running_root`]);
//! the host's views (its nested table, the TSM's tables) on every other CPU.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use super::boot;
use super::cpu::{self, rdtsc};
use super::layout;
use super::paging::{self, LAPIC_BASE};
use super::percpu::{self, MAX_CPUS};
use super::tsc;
use crate::platform::ExitCode;

/// The page APs start in (SIPI vector 0x08).
pub(super) const AP_PAGE: u64 = 0x8000;
const SIPI_VECTOR: u32 = (AP_PAGE >> 12) as u32;
/// How long the boot CPU waits for APs to check in.
const CHECK_IN_US: u64 = 200_000;

/// Local APIC registers (xAPIC, offsets from [`LAPIC_BASE`]).
const ID: u64 = 0x20;
const SVR: u64 = 0xF0;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// SVR: APIC software enable, spurious vector 0xFF.
const SVR_ENABLE: u32 = 0x1FF;
/// ICR: destination shorthand "all excluding self", level assert.
const ICR_ALL_BUT_SELF: u32 = (0b11 << 18) | (1 << 14);
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
/// ICR: delivery mode NMI, level assert, no shorthand (the destination is in ICR_HIGH).
const ICR_NMI: u32 = (0b100 << 8) | (1 << 14);
const ICR_PENDING: u32 = 1 << 12;

/// APs that reached `ap_main`.
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// Bit n: CPU n runs the TSM (set by [`cpu_online`]).
static ONLINE_MASK: AtomicU32 = AtomicU32::new(0);
/// CPU n's local APIC ID.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// CPU n's running guest map root (0: none, the CPU runs the TSM or the host).
static RUNNING_ROOT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Records this CPU (index `cpu`) as up: its APIC ID, its APIC software-enabled (it sends
/// shootdown NMIs). Called by every CPU once the TSM's tables are live.
pub(super) fn cpu_online(cpu: usize) {
    lapic_write(SVR, lapic_read(SVR) | SVR_ENABLE);
    if let Some(id) = APIC_IDS.get(cpu) {
        id.store(lapic_read(ID) >> 24, Ordering::Release);
        ONLINE_MASK.fetch_or(1 << cpu, Ordering::AcqRel);
    }
}

/// Whether CPU `cpu` came up and runs the TSM.
pub(super) fn is_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && ONLINE_MASK.load(Ordering::Acquire) & (1 << cpu) != 0
}

/// The index of the CPU whose local APIC ID is `apic_id`, if it runs the TSM.
pub(super) fn cpu_index(apic_id: u64) -> Option<usize> {
    let id = u32::try_from(apic_id).ok()?;
    let online = ONLINE_MASK.load(Ordering::Acquire);
    (0..MAX_CPUS).find(|&c| {
        online & (1 << c) != 0
            && APIC_IDS
                .get(c)
                .is_some_and(|a| a.load(Ordering::Acquire) == id)
    })
}

/// Publishes the guest map this CPU is about to run (`Some(root)`) or has left (`None`).
/// Ordered before the CR3 switch that follows, so a [`shootdown`] for `root` either sees it
/// or its table change is visible to this CPU's walks.
pub(super) fn set_running_root(root: Option<u64>) {
    if let Some(slot) = RUNNING_ROOT.get(percpu::this_cpu()) {
        slot.store(root.unwrap_or(0), Ordering::SeqCst);
    }
    fence(Ordering::SeqCst);
}

/// Makes every other CPU drop its cached translations: those running the guest map `root`
/// (`Some`), or all of them (`None`: the TSM's own tables, which the host runs on). Returns
/// once each has done so. The caller has already changed the tables.
pub fn shootdown(root: Option<u64>) {
    fence(Ordering::SeqCst);
    let me = percpu::this_cpu();
    // The online CPUs but this one, one bit each: the loop visits only them (a filter over
    // every possible CPU cost ~9 instructions per CPU slot on every (un)delegate). This CPU's
    // index is below `MAX_CPUS` (boot parks the others), so the shift is exact without the
    // checked form's test (three instructions of every (un)delegate).
    const { assert!(MAX_CPUS <= 32) };
    let mut others = ONLINE_MASK.load(Ordering::Acquire) & !(1u32.wrapping_shl(me as u32));
    while others != 0 {
        let cpu = others.trailing_zeros() as usize;
        others &= others - 1;
        let (Some(running), Some(id)) = (RUNNING_ROOT.get(cpu), APIC_IDS.get(cpu)) else {
            continue;
        };
        if root.is_some_and(|r| running.load(Ordering::SeqCst) != r) {
            continue;
        }
        let before = percpu::nmi_acks(cpu);
        lapic_write(ICR_HIGH, id.load(Ordering::Acquire) << 24);
        lapic_write(ICR_LOW, ICR_NMI);
        while percpu::nmi_acks(cpu) == before {
            core::hint::spin_loop();
        }
    }
}

core::arch::global_asm!(
    ".pushsection .rodata.ap_realmode, \"a\"",
    ".balign 16",
    ".global ap_realmode",
    "ap_realmode:",
    ".code16",
    // Data at fixed offsets first (memory operands can name only one symbol): GDT at 8, its
    // pointer at 40, the ticket at 48.
    "jmp 1f",
    ".balign 8",
    ".quad 0",
    ".quad 0x00CF9A000000FFFF", // 0x08: 32-bit code
    ".quad 0x00CF92000000FFFF", // 0x10: data
    ".quad 0x00AF9A000000FFFF", // 0x18: 64-bit code
    ".word 31",
    ".long {page} + 8",
    ".balign 8",
    ".long 0",
    ".balign 8",
    "1:",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    "mov eax, 1",
    "lock xadd dword ptr [48], eax",
    "inc eax",
    "mov esi, eax", // the CPU index, kept through the mode switches
    "cmp eax, {max_cpus}",
    "jae 9f",
    "lgdt [40]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    // ljmp 0x08:AP_PAGE + (ap_pm - ap_realmode), 32-bit offset
    ".byte 0x66, 0xEA",
    ".long {page} + (ap_pm - ap_realmode)",
    ".word 0x08",
    "9:",
    "cli",
    "hlt",
    "jmp 9b",
    ".code32",
    "ap_pm:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov eax, offset __boot_pml4_abs",
    "mov cr3, eax",
    "mov ecx, 0xC0000080", // EFER
    "rdmsr",
    "or eax, 0x900", // LME | NXE
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000000", // PG
    "mov cr0, eax",
    // ljmp 0x18:AP_PAGE + (ap_lm - ap_realmode)
    ".byte 0xEA",
    ".long {page} + (ap_lm - ap_realmode)",
    ".word 0x18",
    ".code64",
    "ap_lm:",
    "mov eax, offset __ap_start64_abs",
    "jmp rax",
    ".global ap_realmode_end",
    "ap_realmode_end:",
    ".popsection",
    "",
    ".pushsection .text.boot, \"ax\"",
    ".code64",
    ".global _ap_start64",
    "_ap_start64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "mov eax, esi",
    "imul rax, rax, {stride}",
    "lea rsp, [rip + __ap_stacks_start]",
    "add rsp, rax",
    "mov edi, esi",
    "call {main}",
    "ud2",
    ".popsection",
    max_cpus = const MAX_CPUS,
    page = const AP_PAGE,
    stride = const layout::AP_STACK_STRIDE,
    main = sym ap_main,
);

unsafe extern "C" {
    static ap_realmode: u8;
    static ap_realmode_end: u8;
}

/// Copies the real-mode start code to [`AP_PAGE`]. Boot calls it while the boot tables (which
/// map the first 4 GiB) are live.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub(super) fn install_realmode_code() {
    let start = core::ptr::addr_of!(ap_realmode);
    let len = core::ptr::addr_of!(ap_realmode_end) as usize - start as usize;
    // SAFETY: AP_PAGE is conventional RAM below 1 MiB that nothing else uses (the PVH start
    // info and its memory map sit elsewhere; the host never gets memory below 1 MiB); the boot
    // tables map it read-write; the code is shorter than a page (checked at link time below).
    unsafe { core::ptr::copy_nonoverlapping(start, AP_PAGE as *mut u8, len) };
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: the local APIC page is mapped supervisor-only, uncached, in the TSM's tables
    // (`paging`); a 32-bit store to one of its registers has no effect on memory.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, value) };
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as in `lapic_write`; reads of SVR/ICR have no side effects.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn delay_us(us: u64) {
    let start = rdtsc();
    let ticks = us.saturating_mul(tsc::ticks_per_us().max(1));
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

fn send_ipi(icr: u32) {
    lapic_write(ICR_HIGH, 0);
    lapic_write(ICR_LOW, icr);
    for _ in 0..1000 {
        if lapic_read(ICR_LOW) & ICR_PENDING == 0 {
            return;
        }
        delay_us(10);
    }
}

/// Starts every other CPU (INIT, then two SIPIs, per the MP specification's timing) and waits
/// for them to check in (as many as `expected` counts, this one included, or until the
/// timeout). Returns how many CPUs run the TSM, this one included.
///
/// `#[inline]`: compiled in tsm-hal-boot, for size (the image calls it through that crate).
#[inline]
pub fn start_secondary_cpus(expected: Option<u32>) -> usize {
    let want = expected.map_or(MAX_CPUS, |n| (n as usize).clamp(1, MAX_CPUS)) - 1;
    if want == 0 {
        // The MADT lists this CPU alone: no INIT-SIPI-SIPI, and no 10 ms INIT wait.
        return 1;
    }
    let l = layout::layout();
    for cpu in 1..MAX_CPUS {
        // SAFETY: no secondary CPU runs yet (they start below), so their stacks are free.
        crate::stack_use::paint(unsafe { l.stack_words(cpu, u64::MAX) });
    }
    lapic_write(SVR, lapic_read(SVR) | SVR_ENABLE);
    send_ipi(ICR_ALL_BUT_SELF | ICR_INIT);
    delay_us(10_000);
    for _ in 0..2 {
        send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | SIPI_VECTOR);
        delay_us(200);
    }
    let start = rdtsc();
    let limit = CHECK_IN_US.saturating_mul(tsc::ticks_per_us().max(1));
    while ONLINE.load(Ordering::Acquire) < want && rdtsc().wrapping_sub(start) < limit {
        core::hint::spin_loop();
    }
    1 + ONLINE.load(Ordering::Acquire)
}

/// An AP on its carve-out stack, still on the boot tables.
extern "C" fn ap_main(index: u32) -> ! {
    let cpu = index as usize;
    if paging::activate().is_err() {
        // The boot CPU starts APs only after building the tables; nothing sensible is left.
        cpu::halt_forever()
    }
    boot::cpu_setup(cpu);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    match boot::boot_info() {
        Some(info) => boot::enter_main(info, cpu),
        None => super::exit(ExitCode::Failure),
    }
}
