//! The x86_64 side of the host payload: entry, the `vmmcall` gate, its own descriptor tables
//! and page tables, the boot parameters page, the clock, `vcpu-smoke`'s guest program and
//! where the devices are.
//!
//! The TSM runs the host as an SVM guest and enters `_start` (the first byte of the image,
//! linked at 0x100_0000) on the boot CPU like a PVH boot loader: 32-bit protected mode, paging
//! off, flat segments, with edi = DRAM base, esi = DRAM size, edx = CPU index (0) and ecx = TSC
//! ticks per microsecond (the TSM calibrated the TSC; the host may read it with `rdtsc`). CPU 0
//! starts the others with HOST_CPU_START (`cpu_start`) at `_start_secondary`, in the same state
//! with edi = their index, which joins `_start` with it in edx. The payload is
//! its own small kernel in ring 0: CPU 0 keeps the arguments, zeroes BSS (which holds its page
//! tables, stacks and IDT), identity-maps the first 4 GiB with 2 MiB pages (uncached above
//! DRAM: the device windows), and every CPU turns on PAE paging and long mode on those tables,
//! loads the payload's GDT and far-jumps to 64-bit code. There CPU 0 applies the image's
//! static-PIE relocations, builds the IDT and lets the other CPUs go; each loads the IDT, takes
//! its stack and calls `host_main` or the secondary loop.
//!
//! Its IDT catches every exception: one at an instruction of its exception table ([`probe`]'s
//! access, which the TSM answers with #GP(0) when the host may not make it, docs/design.md
//! "Traps from the host"; `svm_escape`'s attempts) resumes at the instruction's fixup with the
//! vector recorded; anything else is logged and ends the run as a failure.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::api::Transport;
use tsm_abi::regs::{CallRegs, CallResult};

use tsm_abi::CallId;
use tsm_abi::status::{Status, StatusCode};
use tsm_scenarios::{Fail, Outcome};

use crate::cpu_start::Answer;
use crate::vcpu_smoke::FaultProbe;

/// The host boot parameters page; its first word is the scenario number (docs/design.md).
const HOST_PARAMS: usize = 0xFF_F000;

/// TSC ticks per microsecond, as the TSM passed them in ecx.
static TSC_TICKS_PER_US: AtomicU64 = AtomicU64::new(0);

const NOT_READY: u32 = 0x5EED_0000;
const READY: u32 = 1;
/// CPUs with a stack of their own (`link/x86_64-host.ld` reserves one per CPU).
pub const MAX_CPUS: u64 = 4;
const STACK_SIZE: u64 = 0x40000;

core::arch::global_asm!(
    // The entry arguments CPU 0 keeps for 64-bit code, and the flag the other CPUs wait on (in
    // `.data`: its initial value is in the image, BSS is not zeroed yet when they arrive).
    ".pushsection .data.host_boot, \"aw\"",
    ".balign 8",
    ".global __host_args",
    "__host_args:",
    ".long 0, 0, 0, 0",
    ".global __host_ready",
    "__host_ready:",
    ".long {not_ready}",
    ".popsection",
    "",
    ".pushsection .rodata.host_gdt, \"a\"",
    ".balign 16",
    ".global __host_gdt",
    "__host_gdt:",
    ".quad 0",
    ".quad 0x00AF9A000000FFFF", // 0x08: ring-0 code, 64-bit
    ".quad 0x00CF92000000FFFF", // 0x10: ring-0 data
    ".global __host_gdt_ptr",
    "__host_gdt_ptr:",
    ".word 23",
    ".long __host_gdt_abs",
    ".popsection",
    "",
    ".pushsection .text.entry, \"ax\"",
    ".code32",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "mov ebp, edx", // the CPU index, kept through the mode switch
    "test ebp, ebp",
    "jnz 20f",
    "mov [__host_args_abs], edi",
    "mov [__host_args_abs + 4], esi",
    "mov [__host_args_abs + 12], ecx",
    "mov edi, offset __bss_start_abs",
    "mov ecx, offset __bss_end_abs",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",
    // PML4[0] -> PDPT; PDPT[0..4] -> the 4 PDs; 2048 PD entries of 2 MiB over 4 GiB, uncached
    // from the end of DRAM on.
    "mov edi, offset __host_pml4_abs",
    "mov eax, offset __host_pdpt_abs",
    "or eax, 3",
    "mov [edi], eax",
    "mov edi, offset __host_pdpt_abs",
    "mov eax, offset __host_pd_abs",
    "or eax, 3",
    "mov ecx, 4",
    "2:",
    "mov [edi], eax",
    "add eax, 4096",
    "add edi, 8",
    "loop 2b",
    "mov ebx, [__host_args_abs]",
    "add ebx, [__host_args_abs + 4]",
    "mov edi, offset __host_pd_abs",
    "mov eax, 0x83", // present, writable, 2 MiB
    "mov ecx, 2048",
    "3:",
    "mov edx, eax",
    "cmp eax, ebx",
    "jb 4f",
    "or edx, 0x18", // PWT | PCD
    "4:",
    "mov [edi], edx",
    "add eax, 0x200000",
    "add edi, 8",
    "loop 3b",
    "10:",
    "mov eax, cr4",
    "or eax, 0x20", // PAE
    "mov cr4, eax",
    "mov eax, offset __host_pml4_abs",
    "mov cr3, eax",
    "mov ecx, 0xC0000080", // EFER
    "rdmsr",
    "or eax, 0x100", // LME
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000000", // PG
    "mov cr0, eax",
    "lgdt [__host_gdt_ptr_abs]",
    // ljmp 0x08:_start64
    ".byte 0xEA",
    ".long __start64_abs",
    ".word 0x08",
    // A CPU the payload started with HOST_CPU_START (`cpu_start`): edi = its index.
    ".global _start_secondary",
    "_start_secondary:",
    "mov edx, edi",
    "jmp _start",
    // CPUs other than 0: wait for CPU 0's tables, relocations and IDT.
    "20:",
    "pause",
    "cmp dword ptr [__host_ready_abs], {ready_value}",
    "jne 20b",
    "jmp 10b",
    "",
    ".code64",
    ".global _start64",
    "_start64:",
    "mov eax, 0x10",
    "mov ds, eax",
    "mov es, eax",
    "mov ss, eax",
    "mov fs, eax",
    "mov gs, eax",
    "test ebp, ebp",
    "jnz 30f",
    "lea rsp, [rip + __host_stack_top]",
    "lea rcx, [rip + __rela_start]",
    "lea rdx, [rip + __rela_end]",
    "lea r8, [rip + __host_start]",
    "lea r9, [rip + __bss_end]",
    "5:",
    "cmp rcx, rdx",
    "jae 7f",
    "cmp dword ptr [rcx + 8], 8", // R_X86_64_RELATIVE, the only kind a static PIE has
    "jne 9f",
    "mov rax, [rcx + 16]",
    "mov rdi, [rcx]",
    // defmt's `.defmt` (INFO, never loaded) gets relocations too: skip those outside the image.
    "cmp rdi, r8",
    "jb 6f",
    "cmp rdi, r9",
    "jae 6f",
    "mov [rdi], rax",
    "6:",
    "add rcx, 24",
    "jmp 5b",
    "7:",
    "mov eax, [rip + __host_args + 12]",
    "mov [rip + {ticks}], rax",
    "call {setup}",
    "mov dword ptr [rip + __host_ready], {ready_value}",
    "mov edi, [rip + __host_args]",
    "mov esi, [rip + __host_args + 4]",
    "xor edx, edx",
    "call {main}",
    "9:",
    "ud2", // a relocation of another kind: the IDT is not loaded yet, the triple fault ends the run
    "30:",
    "cmp ebp, {max_cpus}",
    "jae 31f",
    "mov eax, ebp",
    "imul rax, rax, {stack_size}",
    "lea rsp, [rip + __host_stack_top]",
    "sub rsp, rax",
    "call {load_idt}",
    "xor edi, edi",
    "xor esi, esi",
    "mov edx, ebp",
    "call {main}",
    "31:",
    "pause", // no stack for this CPU: it stays out of the way
    "jmp 31b",
    ".popsection",
    ticks = sym TSC_TICKS_PER_US,
    setup = sym setup_idt,
    load_idt = sym load_idt,
    main = sym host_entry,
    not_ready = const NOT_READY,
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

/// Exception vectors the IDT covers (all the architecture defines).
const VECTORS: usize = 32;

/// The IDT, shared by every CPU: filled by CPU 0 before the others are let go, read-only after.
struct Idt(UnsafeCell<[u64; 2 * VECTORS]>);
// SAFETY: written once by CPU 0 (`setup_idt`) before `__host_ready` releases the other CPUs,
// only read (by the CPUs' `lidt`) afterwards.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(UnsafeCell::new([0; 2 * VECTORS]));

/// Fills the IDT with interrupt gates to the exception stubs and loads it (CPU 0).
extern "C" fn setup_idt() {
    let stubs = exception_stubs as *const () as u64;
    // SAFETY: CPU 0 alone runs now (the others wait for `__host_ready`); nothing else
    // references the table.
    let idt = unsafe { &mut *IDT.0.get() };
    for (v, gate) in idt.chunks_exact_mut(2).enumerate() {
        let handler = stubs + 16 * v as u64;
        // Offset 15:0, selector 0x08, IST 0, type 0xE (64-bit interrupt gate), DPL 0, present,
        // offset 31:16; then offset 63:32.
        gate[0] =
            (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((handler >> 16) & 0xFFFF) << 48);
        gate[1] = handler >> 32;
    }
    load_idt();
}

/// Loads the IDT on this CPU.
extern "C" fn load_idt() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let p = Pointer {
        limit: (16 * VECTORS - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is filled (CPU 0 does it before any CPU loads it) and lives for good;
    // `lidt` only reads the 10-byte pointer.
    unsafe { asm!("lidt [{}]", in(reg) &raw const p, options(readonly, nostack, preserves_flags)) };
}

/// The vector + 1 of the exception the last instruction of the exception table took (0:
/// none): the table (`.data.rel.ro.host_extable`, pairs of the instruction's address and where to
/// resume) lists the instructions the payload runs expecting the TSM may refuse them
/// ([`probe`], `svm_escape`). Only CPU 0 runs them.
static PROBE_FAULT: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, which executes one instruction of the exception table, and returns the vector it
/// took (`None`: it went through) with `f`'s value.
pub fn attempt(f: impl FnOnce() -> u64) -> (Option<u8>, u64) {
    PROBE_FAULT.store(0, Ordering::SeqCst);
    let value = f();
    let fault = PROBE_FAULT.load(Ordering::SeqCst);
    (fault.checked_sub(1).map(|v| v as u8), value)
}

/// What `exception_common` pushes under the CPU's frame for an unexpected exception.
#[repr(C)]
struct ExceptionFrame {
    gprs: [u64; 15],
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
}

extern "C" fn unexpected_exception(f: &ExceptionFrame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    defmt::error!(
        "host exception: vector {=u64}, error code {=u64:#x}, rip {=u64:#x}, rsp {=u64:#x}, rflags {=u64:#x}, cr2 {=u64:#x}, rax {=u64:#x}",
        f.vector,
        f.error_code,
        f.rip,
        f.rsp,
        f.rflags,
        cr2,
        f.gprs[0]
    );
    crate::system_off(1)
}

unsafe extern "C" {
    fn exception_stubs();
    fn host_probe(pa: u64, write: u64, marker: u64) -> u64;
}

core::arch::global_asm!(
    ".pushsection .text.host_exceptions, \"ax\"",
    ".balign 16",
    ".global exception_stubs",
    "exception_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    // Vectors 8, 10-14, 17, 21, 29, 30 push an error code; the others get a 0.
    ".if (\\v == 8) || ((\\v >= 10) && (\\v <= 14)) || (\\v == 17) || (\\v == 21) || (\\v == 29) || (\\v == 30)",
    ".else",
    "push 0",
    ".endif",
    "push \\v",
    "jmp exception_common",
    ".endr",
    "",
    // [rsp] vector, +8 error code, +16 rip, +24 cs, +32 rflags, +40 rsp, +48 ss.
    "exception_common:",
    "push rax",
    "push rcx",
    "push rdx",
    // [rsp + 24] vector, +32 error code, +40 rip: look the rip up in the exception table.
    "mov rax, [rsp + 40]",
    "lea rcx, [rip + __host_extable_start]",
    "lea rdx, [rip + __host_extable_end]",
    "1:",
    "cmp rcx, rdx",
    "jae 3f",
    "cmp rax, [rcx]",
    "je 2f",
    "add rcx, 16",
    "jmp 1b",
    // An instruction that may fault on purpose: resume at its fixup with the vector recorded.
    "2:",
    "mov rax, [rcx + 8]",
    "mov [rsp + 40], rax",
    "mov rax, [rsp + 24]",
    "inc rax",
    "mov [rip + {fault}], rax",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    "3:",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "push r15",
    "push r14",
    "push r13",
    "push r12",
    "push r11",
    "push r10",
    "push r9",
    "push r8",
    "push rbp",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push rbx",
    "push rax",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {report}",
    "ud2",
    "",
    // host_probe(pa = rdi, write = rsi, marker = rdx) -> the loaded value (0 for a store or a
    // refused load): one access, listed in the exception table.
    ".global host_probe",
    "host_probe:",
    "xor eax, eax",
    "test rsi, rsi",
    "jnz 4f",
    "50:",
    "mov rax, [rdi]",
    "jmp 52f",
    "4:",
    "51:",
    "mov [rdi], rdx",
    "52:",
    "ret",
    ".pushsection .data.rel.ro.host_extable, \"aw\"",
    ".quad 50b, 52b",
    ".quad 51b, 52b",
    ".popsection",
    ".popsection",
    report = sym unexpected_exception,
    fault = sym PROBE_FAULT,
);

/// Touches 8 bytes at `pa`, memory the host must not reach, in one instruction: a load, or
/// with `write` a store of `marker`. The TSM blocks such an access, logs it and injects #GP(0),
/// which the IDT turns into a resume after the instruction. Returns whether it was blocked
/// (by a #GP) and what the load returned (0 when blocked: nothing moved).
pub fn probe(pa: u64, write: bool, marker: u64) -> (bool, u64) {
    const GP: u8 = 13;
    // SAFETY: one access to an address no Rust object of this program lives at: it either
    // reaches memory the caller reports as an isolation failure, or raises an exception the
    // handler resumes from at `host_probe`'s end. `host_probe` follows the C ABI.
    let (fault, value) = attempt(|| unsafe { host_probe(pa, u64::from(write), marker) });
    (fault == Some(GP), value)
}

/// HOST_CPU_START of the CPU with APIC ID `cpu` (QEMU numbers them by index).
pub fn cpu_start(cpu: u64, entry: u64, arg: u64) -> Answer {
    let r = crate::tsm_call(CallId::HOST_CPU_START, &[cpu, entry, arg]);
    match Status::from_raw(r.status) {
        Some(s) if s.is_success() => Answer::Started,
        Some(s) if s == Status::arg(StatusCode::InvalidArgument, 1) => Answer::NoSuchCpu,
        Some(s) if s == Status::arg(StatusCode::InvalidArgument, 2) => Answer::BadEntry,
        Some(s) if s == Status::arg(StatusCode::ObjectState, 1) => Answer::OnOrPending,
        _ => Answer::Other(r.status),
    }
}

/// The TSM has no call that says whether a CPU is off (the next HOST_CPU_START does).
pub fn cpu_is_off(_cpu: u64) -> Option<bool> {
    None
}

/// HOST_CPU_STOP: this CPU leaves the host; returns only if the TSM refused.
pub fn stop_self() {
    let r = crate::tsm_call(CallId::HOST_CPU_STOP, &[]);
    defmt::error!("HOST_CPU_STOP returned {=u64:#x}", r.status);
}

/// x86_64 has no PSCI: the ID of PSCI_VERSION is an unknown call like any other.
pub fn cpu_interface_checks() -> Outcome {
    let r = call(&CallRegs {
        fid: u64::from(tsm_abi::psci::PSCI_VERSION),
        args: [0; 6],
    });
    defmt::info!("cpu start: PSCI_VERSION's ID -> {=u64:#x}", r.status);
    if Status::from_raw(r.status) != Some(Status::new(StatusCode::NotSupported)) {
        return Err(Fail {
            what: "a PSCI ID was not refused on x86_64",
            line: line!(),
            got: r.status,
        });
    }
    Ok(())
}

/// x2APIC ICR: INIT and STARTUP (vector 0x08) to APIC ID `cpu` (destination in 63:32).
const MSR_X2APIC_ICR: u64 = 0x830;
const ICR_INIT: u64 = (1 << 14) | (0b101 << 8);
const ICR_STARTUP: u64 = (1 << 14) | (0b110 << 8) | 0x08;
/// The xAPIC page's ICR halves.
const XAPIC_ICR_LOW: u64 = 0xFEE0_0300;
const XAPIC_ICR_HIGH: u64 = 0xFEE0_0310;

/// What the host could start or reset CPU `cpu` with on its own: INIT and SIPI through the
/// x2APIC ICR (#GP: the TSM refuses every x2APIC MSR) and through the xAPIC page (blocked: it is
/// outside the host's nested table).
pub fn cpu_reset_attempts(cpu: u64) -> Outcome {
    const GP: u8 = 13;
    for (what, icr) in [("INIT", ICR_INIT), ("SIPI", ICR_STARTUP)] {
        let (vector, _) = crate::svm_escape::wrmsr(MSR_X2APIC_ICR, (cpu << 32) | icr);
        defmt::info!(
            "cpu start: {=str} through the x2APIC ICR -> vector {=?}",
            what,
            vector
        );
        if vector != Some(GP) {
            return Err(Fail::new("an ICR write was not refused with #GP", line!()));
        }
    }
    for (what, pa, value) in [
        ("ICR high", XAPIC_ICR_HIGH, cpu << 24),
        ("ICR low (INIT)", XAPIC_ICR_LOW, ICR_INIT),
    ] {
        let (blocked, _) = probe(pa, true, value);
        defmt::info!(
            "cpu start: xAPIC {=str} write blocked {=bool}",
            what,
            blocked
        );
        if !blocked {
            return Err(Fail::new("an xAPIC ICR write reached the APIC", line!()));
        }
    }
    Ok(())
}

/// Issues one call through `vmmcall` (abi/src/regs.rs): the ABI crate's transport.
pub fn call(regs: &CallRegs) -> CallResult {
    tsm_abi::api::Vmmcall.call(regs)
}

/// The scenario xtask chose, from the first word of the boot parameters page.
pub fn scenario_id() -> u32 {
    // SAFETY: the page lies in DRAM below the image, which the TSM maps for the host; QEMU's
    // loader wrote the word before boot and nothing writes it since.
    unsafe { core::ptr::read_volatile(HOST_PARAMS as *const u32) }
}

/// The scenario's parameter, the parameters page's second word (0 when xtask sets none):
/// `smp4` takes its calls per CPU from it.
pub fn scenario_param() -> u32 {
    // SAFETY: as for `scenario_id`: the word after it in the same page, written by QEMU's
    // loader before boot (or left zero) and never by Rust code.
    unsafe { core::ptr::read_volatile((HOST_PARAMS + 4) as *const u32) }
}

/// Microseconds since reset: the TSC divided by the rate the TSM passed at entry (0 if the TSM
/// could not calibrate).
pub fn now_us() -> u64 {
    // SAFETY: RDTSC (not intercepted by the TSM) has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    tsc.checked_div(TSC_TICKS_PER_US.load(Ordering::Relaxed))
        .unwrap_or(0)
}

// The `vcpu-smoke` guest program (crate::vcpu_smoke), entered like every TVM vCPU (docs/
// design.md "Guests"): in 32-bit protected mode, paging off, at GPA 0x20_0000, with edi = the
// low half of VCPU_CREATE's arg0: G_VERSION(1.0), then the host call VERSION (which the TSM
// must refuse: a DENIED_CALL exit, then `Denied` in rax), then G_EXIT((version failed << 31) |
// (VERSION's status << 16) | (arg0 & 0xFFFF)), where "version failed" is 0 only if G_VERSION
// succeeded and granted 1.0. The TSM preserves ebx and ebp across a call; the argument
// registers 32-bit code cannot reach (r8..r10) are 0 from the start and only ever get a call's
// zero fourth result. At `__smoke_touch` (offset 0x100) a second program loads from the
// address in edi and stops.
core::arch::global_asm!(
    ".pushsection .rodata.smoke_guest, \"a\"",
    ".balign 4096",
    ".code32",
    ".global __smoke_guest",
    "__smoke_guest:",
    "mov ebx, edi",
    "mov eax, 0xC6000200", // G_VERSION
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "vmmcall",
    "xor edi, 0x10000", // 0 if 1.0 was chosen
    "or edi, eax",      // | the status (0 = success)
    "test edi, edi",
    "setnz cl",
    "movzx ebp, cl",
    "mov eax, 0xC6000100", // VERSION, a host call
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "vmmcall",
    "shl eax, 16",
    "shl ebp, 31",
    "or ebp, eax",
    "movzx ebx, bx",
    "or ebp, ebx",
    "mov edi, ebp",
    "xor esi, esi",
    "xor edx, edx",
    "mov eax, 0xC6000202", // G_EXIT
    "vmmcall",
    // G_EXIT never returns; a #UD would be a FAULT exit.
    "ud2",
    ".balign 256",
    ".global __smoke_touch",
    "__smoke_touch:",
    "mov eax, [edi]",
    "ud2",
    ".balign 4096",
    ".code64",
    ".popsection",
);

// The `smp4` guest program (crate::smp4), run by several vCPUs of one TVM at once (it keeps
// nothing in memory), entered like every TVM vCPU (32-bit protected mode, paging off, at GPA
// 0x20_0000) with edi = the low half of VCPU_CREATE's arg0, the status word the TSM gives a
// refused host call: forever G_VERSION(1.0), then the host call VERSION, which the TSM must
// refuse (a DENIED_CALL exit to the host, then that status in eax when the host runs the vCPU
// again). G_EXIT(1) if G_VERSION failed or did not grant 1.0, G_EXIT(2) if the refusal was not
// the status in arg0. The TSM preserves ebx across a call.
core::arch::global_asm!(
    ".pushsection .rodata.smp_guest, \"a\"",
    ".balign 4096",
    ".code32",
    ".global __smp_guest",
    "__smp_guest:",
    "mov ebx, edi",
    "1:",
    "mov eax, 0xC6000200", // G_VERSION
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "vmmcall",
    "xor edi, 0x10000", // 0 if 1.0 was chosen
    "or edi, eax",      // | the status (0 = success)
    "jnz 2f",
    "mov eax, 0xC6000100", // VERSION, a host call
    "mov edi, 0x10000",
    "xor esi, esi",
    "xor edx, edx",
    "vmmcall",
    "cmp eax, ebx",
    "je 1b",
    "mov edi, 2",
    "jmp 3f",
    "2:",
    "mov edi, 1",
    "3:",
    "xor esi, esi",
    "xor edx, edx",
    "mov eax, 0xC6000202", // G_EXIT
    "vmmcall",
    // G_EXIT never returns; a #UD would be a FAULT exit.
    "ud2",
    ".balign 4096",
    ".code64",
    ".popsection",
);

/// `vcpu-smoke`'s fault vCPUs: one loads from host memory the TVM never mapped (the host
/// payload's own first page), one from the TSM's image by its physical address (no TVM's map
/// has it, and no GPA the TVM maps is there). Both are nested page faults that name the GPA.
pub const SMOKE_FAULTS: [FaultProbe; 2] = [
    FaultProbe {
        touches: 0x100_0000,
        gpa: 0x100_0000,
    },
    FaultProbe {
        touches: 0x80_0000,
        gpa: 0x80_0000,
    },
];

/// Whether a FAULT exit's syndrome is a data access fault: vector 14 (#PF, which a nested page
/// fault is reported as) in its low byte.
pub fn is_data_fault(syndrome: u64) -> bool {
    const PF: u64 = 14;
    syndrome & 0xFF == PF
}

/// The host's devices on QEMU `q35`, as its ACPI tables say: bus 0's ECAM (MCFG) at
/// 0xB000_0000, with every BAR assigned by SeaBIOS (the TSM maps both in the host's nested table, the chipset's
/// functions read-only), and the VT-d unit (DMAR), which the TSM owns and never maps for the
/// host. Used by `dma-hw` and `isolation-iommu` (env.rs).
pub const DEVICES: tsm_scenarios::HostDevices = tsm_scenarios::HostDevices {
    ecam: tsm_abi::addr::Pa(0xB000_0000),
    bar_window: None,
    iommu: tsm_abi::addr::Pa(0xFED9_0000),
};
