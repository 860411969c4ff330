//! The x86_64 side of the host payload: entry, the `syscall` gate, the boot parameters page and
//! the clock.
//!
//! The TSM enters `_start` (the first byte of the image, linked at 0x100_0000) in ring 3 with
//! rdi = DRAM base, rsi = DRAM size, rdx = CPU index and rcx = TSC ticks per microsecond (the
//! TSM calibrated the TSC; ring 3 may read it with `rdtsc` but has no timer to calibrate
//! against). `_start` sets up the stack in BSS, applies the image's static-PIE relocations,
//! zeroes BSS and calls `host_main`.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tsm_abi::StatusCode;
use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::api::{Error, Transport, host};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::params::{MapFlags, TvmParams};
use tsm_abi::regs::{CallRegs, CallResult};

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

/// The host's gate as the ABI wrappers' transport.
struct Gate;

impl Transport for Gate {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        call(regs)
    }
}

const PAGE: usize = 4096;

/// A page of host memory the TSM reads or writes by physical address (the host's memory is
/// identity-mapped, so an address is a PA).
#[repr(C, align(4096))]
struct Page<T>(T);

struct Shared<T>(UnsafeCell<T>);
// SAFETY: only CPU 0's scenario touches these, and the TSM only while a call runs.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn pa(&self) -> Pa {
        Pa(self.0.get() as u64)
    }
}

/// The guest program, raw x86-64 machine code run in ring 3 at [`GUEST_CODE_GPA`] with
/// rdi = VCPU_CREATE's arg0: G_VERSION(1.0), then G_EXIT((error << 32) | arg0), where error is
/// 0 only if G_VERSION succeeded and granted 1.0. A vCPU started at [`GUEST_TOUCH_OFFSET`]
/// instead reads the address in rdi.
const GUEST_PROGRAM: [u8; 48] = [
    0x48, 0x89, 0xFB, // mov rbx, rdi            ; keep arg0
    0xB8, 0x00, 0x02, 0x00, 0xC6, // mov eax, 0xC600_0200 ; G_VERSION
    0xBF, 0x00, 0x00, 0x01, 0x00, // mov edi, 0x1_0000    ; ABI 1.0
    0x0F, 0x05, // syscall
    0x48, 0x81, 0xF7, 0x00, 0x00, 0x01, 0x00, // xor rdi, 0x1_0000 ; 0 if 1.0 was chosen
    0x48, 0x09, 0xC7, // or rdi, rax            ; | the status (0 = success)
    0x48, 0xC1, 0xE7, 0x20, // shl rdi, 32
    0x48, 0x09, 0xDF, // or rdi, rbx            ; code = (error << 32) | arg0
    0x31, 0xF6, // xor esi, esi              ; G_EXIT's unused argument registers must be 0
    0x31, 0xD2, // xor edx, edx
    0x45, 0x31, 0xD2, // xor r10d, r10d
    0xB8, 0x02, 0x02, 0x00, 0xC6, // mov eax, 0xC600_0202 ; G_EXIT
    0x0F, 0x05, // syscall
    0x0F, 0x0B, // ud2 (never reached: G_EXIT does not return)
];
/// Where the "touch" program starts in the code page: `mov rax, [rdi]; ud2`.
const GUEST_TOUCH_OFFSET: u64 = 0x100;
const GUEST_TOUCH: [u8; 5] = [0x48, 0x8B, 0x07, 0x0F, 0x0B];

const fn code_page() -> [u8; PAGE] {
    let mut page = [0u8; PAGE];
    let mut i = 0;
    while i < GUEST_PROGRAM.len() {
        page[i] = GUEST_PROGRAM[i];
        i += 1;
    }
    let mut i = 0;
    while i < GUEST_TOUCH.len() {
        page[GUEST_TOUCH_OFFSET as usize + i] = GUEST_TOUCH[i];
        i += 1;
    }
    page
}

/// The source page MAP_PRIVATE copies the guest program from.
static GUEST_SOURCE: Page<[u8; PAGE]> = Page(code_page());
/// TVM_CREATE's parameters: 36-bit GPAs, three vCPUs.
static TVM_PARAMS: Page<TvmParams> = Page(TvmParams {
    flags: 0,
    gpa_bits: 36,
    reserved0: [0; 3],
    max_vcpus: 3,
    reserved1: [0; 6],
});
/// VCPU_RUN's exit records, one per CPU that runs vCPUs at the same time.
static EXIT_RECORDS: Shared<Page<[[u8; PAGE]; 2]>> = Shared(UnsafeCell::new(Page([[0; PAGE]; 2])));

fn exit_record(cpu: u64) -> Pa {
    Pa(EXIT_RECORDS.pa().0 + (cpu.min(1) as usize * PAGE) as u64)
}

/// Granules the scenario delegates: TVM, root, level-1..3 tables, the code page, three vCPUs.
const SECURE: usize = 9;
static SECURE_POOL: Shared<Page<[[u8; PAGE]; SECURE]>> =
    Shared(UnsafeCell::new(Page([[0; PAGE]; SECURE])));

/// Where the guest program is mapped (and where the guest payload is linked, docs/design.md).
const GUEST_CODE_GPA: u64 = 0x20_0000;
/// What the smoke vCPU gets in rdi and must hand back as its exit code.
const SMOKE_ARG0: u64 = 0x5EED;
/// Host memory the TVM never mapped: the host payload's own first page.
const HOST_PAGE: u64 = 0x100_0000;
/// The TSM's trap trampoline alias (supervisor-only, in every TVM's map).
const TSM_ALIAS: u64 = 0xFFFF_FFFF_C000_0000;
const PF: u64 = 14;

fn granule(i: usize) -> Pa {
    Pa(SECURE_POOL.pa().0 + (i * PAGE) as u64)
}

fn read_exit(cpu: u64) -> VcpuExit {
    // SAFETY: the record page is ours, page-aligned, used by CPU `cpu` only and written by the
    // TSM only during that CPU's VCPU_RUN, which has returned; a volatile read because the
    // compiler never saw the write.
    unsafe { core::ptr::read_volatile(exit_record(cpu).0 as *const VcpuExit) }
}

/// The fault jobs: (vCPU index, address it touches, the GPA its FAULT exit must name).
const FAULT_JOBS: [(usize, u64, Option<u64>); 2] =
    [(1, HOST_PAGE, Some(HOST_PAGE)), (2, TSM_ALIAS, None)];

/// Runs fault job `job` on this CPU: the vCPU must come back twice with a #PF FAULT exit (the
/// access is retried when it runs again).
fn fault_job(cpu: u64, job: u64) -> Option<()> {
    let t = &mut Gate;
    let &(index, target, gpa) = FAULT_JOBS.get(job as usize)?;
    let vcpu = granule(6 + index);
    for _ in 0..2 {
        let reason = ok("VCPU_RUN", host::vcpu_run(t, vcpu, exit_record(cpu)))?;
        let e = read_exit(cpu);
        defmt::info!(
            "CPU {=u64}: vCPU {=usize} touching {=u64:#x}: exit {=u32} syndrome {=u64:#x} flags {=u32:#x} gpa {=u64:#x}",
            cpu,
            index,
            target,
            e.reason,
            e.syndrome,
            e.flags,
            e.gpa
        );
        let gpa_ok = match gpa {
            Some(g) => e.flags & ExitFlags::GPA_VALID.bits() != 0 && e.gpa == g,
            None => e.flags & ExitFlags::GPA_VALID.bits() == 0 && e.gpa == 0,
        };
        if reason != ExitReason::Fault || e.syndrome & 0xFF != PF || !gpa_ok || e.code != 0 {
            defmt::error!("vCPU {=usize}: expected a #PF FAULT exit", index);
            return None;
        }
    }
    Some(())
}

/// Fault job `job` as CPU 1 runs it.
fn fault_job_on_cpu1(job: u64) -> bool {
    fault_job(1, job).is_some()
}

/// Checks `r`, logging `what` and the error on failure.
fn ok<T>(what: &str, r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            defmt::error!("{=str} failed: {}", what, defmt::Debug2Format(&e));
            None
        }
    }
}

/// Scenario `vcpu-smoke`: delegate granules, build a TVM with the guest program in a private
/// page and three vCPUs, run them: the first must exit GUEST_EXIT with its arg0 (it made a
/// guest call on the way), the second touches host memory the TVM does not map and the third
/// the TSM's supervisor-only trampoline alias: both must come back as FAULT exits; those two
/// run at the same time on CPU 1 and CPU 0. Then tear everything down and undelegate; every
/// granule must come back zeroed.
pub fn vcpu_smoke() -> bool {
    vcpu_smoke_steps().is_some()
}

fn vcpu_smoke_steps() -> Option<()> {
    let t = &mut Gate;
    let [tvm, root, l1, l2, l3, code, vcpus @ ..] = core::array::from_fn::<_, SECURE, _>(granule);
    for i in 0..SECURE {
        ok("GRANULE_DELEGATE", host::granule_delegate(t, granule(i)))?;
    }
    let params = Pa(core::ptr::addr_of!(TVM_PARAMS) as u64);
    ok("TVM_CREATE", host::tvm_create(t, tvm, params, root))?;
    ok("TABLE_CREATE 1", host::table_create(t, tvm, Gpa(0), 1, l1))?;
    ok("TABLE_CREATE 2", host::table_create(t, tvm, Gpa(0), 2, l2))?;
    ok(
        "TABLE_CREATE 3",
        host::table_create(t, tvm, Gpa(GUEST_CODE_GPA), 3, l3),
    )?;
    let source = Pa(core::ptr::addr_of!(GUEST_SOURCE) as u64);
    ok(
        "MAP_PRIVATE",
        host::map_private(
            t,
            tvm,
            Gpa(GUEST_CODE_GPA),
            code,
            Some(source),
            MapFlags::READ | MapFlags::EXEC,
        ),
    )?;
    let touch = Gpa(GUEST_CODE_GPA + GUEST_TOUCH_OFFSET);
    ok(
        "VCPU_CREATE 0",
        host::vcpu_create(t, tvm, vcpus[0], Gpa(GUEST_CODE_GPA), SMOKE_ARG0),
    )?;
    ok(
        "VCPU_CREATE 1",
        host::vcpu_create(t, tvm, vcpus[1], touch, HOST_PAGE),
    )?;
    ok(
        "VCPU_CREATE 2",
        host::vcpu_create(t, tvm, vcpus[2], touch, TSM_ALIAS),
    )?;
    ok("TVM_ACTIVATE", host::tvm_activate(t, tvm))?;
    let record = exit_record(0);

    let reason = ok("VCPU_RUN 0", host::vcpu_run(t, vcpus[0], record))?;
    let e = read_exit(0);
    defmt::info!("vCPU 0: exit {=u32} code {=u64:#x}", e.reason, e.code);
    if reason != ExitReason::GuestExit
        || e.reason != ExitReason::GuestExit.raw()
        || e.code != SMOKE_ARG0
    {
        defmt::error!(
            "vCPU 0: expected GUEST_EXIT with code {=u64:#x}",
            SMOKE_ARG0
        );
        return None;
    }
    let again = host::vcpu_run(t, vcpus[0], record);
    if again.err().and_then(|e| e.status()).map(|s| s.code) != Some(StatusCode::ObjectState) {
        defmt::error!("vCPU 0 ran again after G_EXIT");
        return None;
    }

    // The two fault vCPUs at the same time: job 0 on CPU 1 (if it is up), job 1 here.
    let remote = crate::jobs::post_job(1, fault_job_on_cpu1, 0);
    if !remote {
        defmt::warn!("CPU 1 is not up: both fault vCPUs run on CPU 0");
        fault_job(0, 0)?;
    }
    let here = fault_job(0, 1);
    if remote && crate::jobs::wait_job(1, u64::MAX) != Some(true) {
        defmt::error!("the fault job on CPU 1 failed");
        return None;
    }
    here?;

    for (i, v) in vcpus.iter().enumerate() {
        ok("VCPU_DESTROY", host::vcpu_destroy(t, *v))?;
        defmt::debug!("vCPU {=usize} destroyed", i);
    }
    let unmapped = ok("UNMAP", host::unmap(t, tvm, Gpa(GUEST_CODE_GPA)))?;
    if unmapped != code {
        defmt::error!("UNMAP returned {=u64:#x}, not the code page", unmapped.0);
        return None;
    }
    ok(
        "TABLE_DESTROY 3",
        host::table_destroy(t, tvm, Gpa(GUEST_CODE_GPA), 3),
    )?;
    ok("TABLE_DESTROY 2", host::table_destroy(t, tvm, Gpa(0), 2))?;
    ok("TABLE_DESTROY 1", host::table_destroy(t, tvm, Gpa(0), 1))?;
    ok("TVM_DESTROY", host::tvm_destroy(t, tvm))?;
    for i in 0..SECURE {
        ok(
            "GRANULE_UNDELEGATE",
            host::granule_undelegate(t, granule(i)),
        )?;
        // SAFETY: the granule is host memory again (undelegated); a volatile read because
        // the TSM, not this program, last wrote it.
        let dirty = (0..PAGE / 8)
            .any(|w| unsafe { core::ptr::read_volatile((granule(i).0 as *const u64).add(w)) != 0 });
        if dirty {
            defmt::error!(
                "granule {=u64:#x} came back from the TSM not zeroed",
                granule(i).0
            );
            return None;
        }
    }
    defmt::info!(
        "vcpu-smoke: {=usize} granules delegated, used and returned zeroed",
        SECURE
    );
    Some(())
}
