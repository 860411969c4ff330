//! The x86_64 side of the host payload: entry, the `syscall` gate, the boot parameters page, the
//! clock, `vcpu-smoke`'s guest program and where the devices are.
//!
//! The TSM enters `_start` (the first byte of the image, linked at 0x100_0000) in ring 3 with
//! rdi = DRAM base, rsi = DRAM size, rdx = CPU index and rcx = TSC ticks per microsecond (the
//! TSM calibrated the TSC; ring 3 may read it with `rdtsc` but has no timer to calibrate
//! against). `_start` sets up the stack in BSS, applies the image's static-PIE relocations,
//! zeroes BSS and calls `host_main`.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tsm_abi::regs::{CallRegs, CallResult};

use crate::vcpu_smoke::FaultProbe;

/// The host boot parameters page; its first word is the scenario number (docs/design.md).
const HOST_PARAMS: usize = 0xFF_F000;

/// TSC ticks per microsecond, as the TSM passed them in rcx.
static TSC_TICKS_PER_US: AtomicU64 = AtomicU64::new(0);

/// Set by CPU 0 once relocations and BSS are done (in `.data`: its initial value is in the
/// image, BSS is not zeroed yet when other CPUs arrive).
static HOST_READY: AtomicU32 = AtomicU32::new(NOT_READY);
const NOT_READY: u32 = 0x5EED_0000;
const READY: u32 = 1;
/// CPUs with a stack of their own (`link/x86_64-host.ld` reserves one per CPU).
pub const MAX_CPUS: u64 = 4;
const STACK_SIZE: u64 = 0x40000;

core::arch::global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    // CPUs other than 0: wait for CPU 0's set-up, then take stack `cpu` below the top.
    "test rdx, rdx",
    "jz 7f",
    "cmp rdx, {max_cpus}",
    "jae 8f",
    "6:",
    "pause",
    "cmp dword ptr [rip + {ready}], {ready_value}",
    "jne 6b",
    "mov rax, rdx",
    "imul rax, rax, {stack_size}",
    "lea rsp, [rip + __host_stack_top]",
    "sub rsp, rax",
    "call {main}",
    "8:",
    "pause", // no stack for this CPU: it stays out of the way
    "jmp 8b",
    "7:",
    "lea rsp, [rip + __host_stack_top]",
    "mov r12, rdi",
    "mov r13, rsi",
    "mov r14, rdx",
    "mov r15, rcx",
    "lea rcx, [rip + __rela_start]",
    "lea rdx, [rip + __rela_end]",
    "lea r8, [rip + __host_start]",
    "lea r9, [rip + __bss_end]",
    "2:",
    "cmp rcx, rdx",
    "jae 3f",
    "cmp dword ptr [rcx + 8], 8", // R_X86_64_RELATIVE, the only kind a static PIE has
    "jne 4f",
    "mov rax, [rcx + 16]",
    "mov rdi, [rcx]",
    // defmt's `.defmt` (INFO, never loaded) gets relocations too: skip those outside the image.
    "cmp rdi, r8",
    "jb 5f",
    "cmp rdi, r9",
    "jae 5f",
    "mov [rdi], rax",
    "5:",
    "add rcx, 24",
    "jmp 2b",
    "3:",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    "mov [rip + {ticks}], r15",
    "mov dword ptr [rip + {ready}], {ready_value}",
    "mov rdi, r12",
    "mov rsi, r13",
    "mov rdx, r14",
    "call {main}",
    "4:",
    "ud2", // the TSM reports the #UD and ends the run
    ".popsection",
    ticks = sym TSC_TICKS_PER_US,
    main = sym host_entry,
    ready = sym HOST_READY,
    ready_value = const READY,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
);

extern "C" fn host_entry(dram_base: u64, dram_size: u64, cpu: u64) -> ! {
    if cpu == 0 {
        crate::host_main(dram_base, dram_size, cpu)
    }
    crate::jobs::secondary(cpu)
}

/// Issues one call through `syscall` (abi/src/regs.rs): rax = function ID, arguments in rdi,
/// rsi, rdx, r10, r8, r9; results in rax (status), rdi, rsi, rdx, r10. `syscall` itself
/// clobbers rcx and r11.
pub fn call(regs: &CallRegs) -> CallResult {
    let [a1, a2, a3, a4, a5, a6] = regs.args;
    let (status, o1, o2, o3, o4): (u64, u64, u64, u64, u64);
    // SAFETY: the TSM preserves every register but rax, rcx, r11 and the result registers (all
    // declared as outputs). It may read and write the buffers a call names: the block is not
    // `nomem`/`readonly`, so the compiler assumes memory changed. `syscall` does not use the stack.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") regs.fid => status,
            inlateout("rdi") a1 => o1,
            inlateout("rsi") a2 => o2,
            inlateout("rdx") a3 => o3,
            inlateout("r10") a4 => o4,
            in("r8") a5,
            in("r9") a6,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        )
    };
    CallResult {
        status,
        out: [o1, o2, o3, o4],
    }
}

/// The scenario xtask chose, from the first word of the boot parameters page.
pub fn scenario_id() -> u32 {
    // SAFETY: the page lies in DRAM below the image, which the TSM maps for the host; QEMU's
    // loader wrote the word before boot and nothing writes it since.
    unsafe { core::ptr::read_volatile(HOST_PARAMS as *const u32) }
}

/// Microseconds since reset: the TSC divided by the rate the TSM passed at entry (0 if the TSM
/// could not calibrate).
pub fn now_us() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD is clear) and has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    tsc.checked_div(TSC_TICKS_PER_US.load(Ordering::Relaxed))
        .unwrap_or(0)
}

// The `vcpu-smoke` guest program (crate::vcpu_smoke), run in ring 3 at GPA 0x20_0000 with
// rdi = VCPU_CREATE's arg0: G_VERSION(1.0), then the host call VERSION (which the TSM must
// refuse: a DENIED_CALL exit, then `Denied` in rax), then G_EXIT((version failed << 48) |
// (VERSION's status << 16) | (arg0 & 0xFFFF)), where "version failed" is 0 only if G_VERSION
// succeeded and granted 1.0. The TSM preserves rbx and r12..r15 across a call; unused argument
// registers are 0. At `__smoke_touch` (offset 0x100) a second program loads from the address
// in rdi and stops.
core::arch::global_asm!(
    ".pushsection .rodata.smoke_guest, \"a\"",
    ".balign 4096",
    ".global __smoke_guest",
    "__smoke_guest:",
    "mov rbx, rdi",
    "mov eax, 0xC6000200", // G_VERSION
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "syscall",
    "xor rdi, 0x10000", // 0 if 1.0 was chosen
    "or rdi, rax",      // | the status (0 = success)
    "xor r12d, r12d",
    "test rdi, rdi",
    "setnz r12b",
    "mov eax, 0xC6000100", // VERSION, a host call
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "syscall",
    "mov r13, rax",
    "shl r12, 48",
    "shl r13, 16",
    "or r12, r13",
    "movzx ebx, bx",
    "or r12, rbx",
    "mov rdi, r12",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "mov eax, 0xC6000202", // G_EXIT
    "syscall",
    // G_EXIT never returns; a #UD would be a FAULT exit.
    "ud2",
    ".balign 256",
    ".global __smoke_touch",
    "__smoke_touch:",
    "mov rax, [rdi]",
    "ud2",
    ".balign 4096",
    ".popsection",
);

/// `vcpu-smoke`'s fault vCPUs: one loads from host memory the TVM never mapped (the host
/// payload's own first page), one from the TSM's trap trampoline alias, which every TVM's
/// tables map supervisor-only (a #PF on a present page: no GPA).
pub const SMOKE_FAULTS: [FaultProbe; 2] = [
    FaultProbe {
        touches: 0x100_0000,
        gpa: Some(0x100_0000),
    },
    FaultProbe {
        touches: 0xFFFF_FFFF_C000_0000,
        gpa: None,
    },
];

/// Whether a FAULT exit's syndrome is a data access fault: vector 14 (#PF) in its low byte.
pub fn is_data_fault(syndrome: u64) -> bool {
    const PF: u64 = 14;
    syndrome & 0xFF == PF
}

/// The host's devices on QEMU `q35`, as its ACPI tables say: bus 0's ECAM (MCFG) at
/// 0xB000_0000, with every BAR assigned by SeaBIOS (the TSM maps both for ring 3, the chipset's
/// functions read-only), and the VT-d unit (DMAR), which the TSM owns and never maps for the
/// host. Used by `dma-hw` and `isolation-iommu` (env.rs).
pub const DEVICES: tsm_scenarios::HostDevices = tsm_scenarios::HostDevices {
    ecam: tsm_abi::addr::Pa(0xB000_0000),
    bar_window: None,
    iommu: tsm_abi::addr::Pa(0xFED9_0000),
};
