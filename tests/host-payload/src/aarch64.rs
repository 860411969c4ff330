//! The host payload on aarch64: entered by the TSM at EL1 (MMU off, `HCR_EL2.DC` makes its
//! accesses cacheable), reaches the TSM with `smc #0` (abi/src/regs.rs).

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU32;

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::api::{Error, Transport, host};
use tsm_abi::call::CallId;
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::params::{MapFlags, TvmParams};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};

/// The host boot-parameters page: the scenario number is its first word (docs/design.md).
const PARAMS_PAGE: usize = 0x40FF_F000;

/// Set by CPU 0 once BSS is zeroed (in `.data`: its initial value is in the image, so other
/// CPUs that arrive before CPU 0's set-up wait for it).
static HOST_READY: AtomicU32 = AtomicU32::new(NOT_READY);
const NOT_READY: u32 = 0x5EED_0000;
const READY: u32 = 1;
/// CPUs with a stack of their own (`link/aarch64-host.ld` reserves one per CPU).
pub const MAX_CPUS: u64 = 4;

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    // FP/SIMD untrapped at EL1: compiled Rust uses it.
    "mov x9, #(0b11 << 20)",
    "msr cpacr_el1, x9",
    "isb",
    // CPUs other than 0: wait for CPU 0's set-up, then take stack `cpu` below the top.
    "cbz x2, 7f",
    "cmp x2, #{max_cpus}",
    "b.hs 8f",
    "adrp x9, {ready}",
    "6:",
    "ldr w10, [x9, :lo12:{ready}]",
    "cmp w10, #{ready_value}",
    "b.eq 5f",
    "wfe",
    "b 6b",
    "5:",
    "adrp x9, __stack_top",
    "add x9, x9, :lo12:__stack_top",
    "sub x9, x9, x2, lsl #18",
    "mov sp, x9",
    "bl {main}",
    // No stack for this CPU: it stays out of the way.
    "8:",
    "wfe",
    "b 8b",
    "7:",
    "adrp x9, __stack_top",
    "add x9, x9, :lo12:__stack_top",
    "mov sp, x9",
    "adrp x9, __bss_start",
    "add x9, x9, :lo12:__bss_start",
    "adrp x10, __bss_end",
    "add x10, x10, :lo12:__bss_end",
    "1:",
    "cmp x9, x10",
    "b.hs 2f",
    "str xzr, [x9], #8",
    "b 1b",
    // x0..x2 (DRAM base, DRAM size, CPU index) are untouched so far.
    "2:",
    "adrp x9, {ready}",
    "mov w10, #{ready_value}",
    "dmb ish",
    "str w10, [x9, :lo12:{ready}]",
    "dsb ish",
    "sev",
    "bl {main}",
    "3:",
    "wfe",
    "b 3b",
    main = sym entry,
    ready = sym HOST_READY,
    ready_value = const READY,
    max_cpus = const MAX_CPUS,
);

extern "C" fn entry(dram_base: u64, dram_size: u64, cpu: u64) -> ! {
    if cpu == 0 {
        crate::host_main(dram_base, dram_size, cpu)
    }
    crate::jobs::secondary(cpu)
}

/// Issues one call through the gate. x5..x17 are preserved by the TSM (abi/src/regs.rs) but
/// the arguments go in x1..x6, so those are inputs and x0..x4 carry the results.
pub fn call(regs: &CallRegs) -> CallResult {
    let (status, r1, r2, r3, r4);
    // SAFETY: `smc #0` traps to the TSM, which writes x0..x4 and resumes after the smc; it
    // touches no memory of ours except buffers the call's arguments name, which the caller
    // owns for the call's duration (hence no `nomem`).
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") regs.fid => status,
            inout("x1") regs.args[0] => r1,
            inout("x2") regs.args[1] => r2,
            inout("x3") regs.args[2] => r3,
            inout("x4") regs.args[3] => r4,
            in("x5") regs.args[4],
            in("x6") regs.args[5],
            options(nostack)
        )
    };
    CallResult {
        status,
        out: [r1, r2, r3, r4],
    }
}

/// Touches 8 bytes at `pa`, memory the host must not reach, in one instruction: a load, or
/// with `write` a store of `marker`. The TSM blocks such an access, logs it and resumes after
/// it with x17 = 1 (docs/design.md, "aarch64 TVM contexts and SMP"). Returns whether it was
/// blocked and what the load returned (0 when blocked: nothing moved).
pub fn probe(pa: u64, write: bool, marker: u64) -> (bool, u64) {
    let (blocked, value): (u64, u64);
    if write {
        // SAFETY: a single store to an address no Rust object of this program lives at: it
        // either reaches NS memory (an isolation failure the caller reports) or traps to the
        // TSM, which skips it and sets x17 (declared clobbered).
        unsafe {
            core::arch::asm!(
                "mov x17, xzr",
                "str {m}, [{a}]",
                a = in(reg) pa,
                m = in(reg) marker,
                out("x17") blocked,
                options(nostack)
            )
        };
        value = 0;
    } else {
        // SAFETY: as above, with a single load; its destination stays 0 when blocked.
        unsafe {
            core::arch::asm!(
                "mov x17, xzr",
                "mov {v}, xzr",
                "ldr {v}, [{a}]",
                a = in(reg) pa,
                v = out(reg) value,
                out("x17") blocked,
                options(nostack)
            )
        };
    }
    (blocked == 1, value)
}

/// The scenario xtask chose for this run.
pub fn scenario_id() -> u32 {
    // SAFETY: the parameters page is host DRAM (mapped in the host's stage-2) that QEMU's loader
    // filled before boot; a volatile read because no Rust code ever writes it.
    unsafe { core::ptr::read_volatile(PARAMS_PAGE as *const u32) }
}

/// Microseconds since the counter started, from the virtual counter (offset 0 under the TSM).
pub fn now_us() -> u64 {
    let (count, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags));
    }
    let us = (u128::from(count) * 1_000_000)
        .checked_div(u128::from(freq))
        .unwrap_or(0);
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// The host's gate as the ABI wrappers' transport.
struct Gate;

impl Transport for Gate {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        call(regs)
    }
}

const PAGE: usize = 4096;

/// A page of host memory the TSM reads or writes by physical address (the host runs with its
/// MMU off, so an address is a PA).
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

// The guest program: one page of raw AArch64 code the TVM runs at EL1 (MMU off) at
// GUEST_CODE_GPA with x0 = VCPU_CREATE's arg0. It calls G_VERSION(1.0), then the host call
// VERSION (which the TSM must refuse: a DENIED_CALL exit, then `Denied` in x0), then
// G_EXIT((version error << 48) | (VERSION's status << 16) | (arg0 & 0xFFFF)), where the version
// error is 0 only if G_VERSION succeeded and chose 1.0. At `__guest_touch` (offset 0x100) a
// second program reads the address in x0 and stops.
core::arch::global_asm!(
    ".pushsection .rodata.guest_program, \"a\"",
    ".balign 4096",
    ".global __guest_program",
    "__guest_program:",
    "mov x19, x0",
    "movz x0, #0x0200",
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "hvc #0",
    "eor x1, x1, #0x10000",
    "orr x20, x1, x0",
    "movz x0, #0x0100",
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "hvc #0",
    "mov x21, x0",
    "lsl x1, x20, #48",
    "orr x1, x1, x21, lsl #16",
    "and x19, x19, #0xFFFF",
    "orr x1, x1, x19",
    "movz x0, #0x0202",
    "movk x0, #0xC600, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    // G_EXIT never returns; an undefined instruction would be a FAULT exit.
    "udf #0",
    ".balign 256",
    ".global __guest_touch",
    "__guest_touch:",
    "ldr x1, [x0]",
    "udf #1",
    ".balign 4096",
    ".popsection",
);

unsafe extern "C" {
    /// The guest program's page (MAP_PRIVATE's source).
    static __guest_program: u8;
    /// The touch program, inside the same page.
    static __guest_touch: u8;
}

/// TVM_CREATE's parameters: 36-bit GPAs, three vCPUs.
static TVM_PARAMS: Page<TvmParams> = Page(TvmParams {
    flags: 0,
    gpa_bits: 36,
    reserved0: [0; 3],
    max_vcpus: 3,
    reserved1: [0; 6],
});
/// VCPU_RUN's exit record, one page per CPU.
static EXIT_RECORDS: Shared<Page<[[u8; PAGE]; MAX_CPUS as usize]>> =
    Shared(UnsafeCell::new(Page([[0; PAGE]; MAX_CPUS as usize])));

/// Granules the scenario delegates: TVM, root, level-1..3 tables, the code page, three vCPUs.
const SECURE: usize = 9;
static SECURE_POOL: Shared<Page<[[u8; PAGE]; SECURE]>> =
    Shared(UnsafeCell::new(Page([[0; PAGE]; SECURE])));

/// Where the guest program is mapped (and where the guest payload is linked, docs/design.md).
const GUEST_CODE_GPA: u64 = 0x20_0000;
/// What the smoke vCPU gets in x0 and must hand back in its exit code.
const SMOKE_ARG0: u64 = 0x5EED;
/// Host memory the TVM never mapped: the host payload's own first page.
const HOST_PAGE: u64 = 0x4100_0000;
/// The TSM's own image (never in any TVM's map).
const TSM_IMAGE: u64 = 0x4020_0000;
/// ESR_EL2.EC of a data abort from a lower EL.
const EC_DABT_LOWER: u64 = 0x24;

fn granule(i: usize) -> Pa {
    Pa(SECURE_POOL.pa().0 + (i * PAGE) as u64)
}

/// CPU `cpu`'s exit record page.
fn exit_record(cpu: u64) -> Pa {
    Pa(EXIT_RECORDS.pa().0 + cpu * PAGE as u64)
}

fn read_exit(cpu: u64) -> VcpuExit {
    // SAFETY: the record page is this CPU's, page-aligned and only written by the TSM during
    // this CPU's VCPU_RUN, which has returned; a volatile read because the compiler never saw
    // the write.
    unsafe { core::ptr::read_volatile(exit_record(cpu).0 as *const VcpuExit) }
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

/// Runs `vcpu` (started at the touch program) twice on CPU `cpu`: each run must end in a FAULT
/// exit, a stage-2 data abort at `target` (the GPA the vCPU's arg0 names; the access is
/// retried).
fn fault_job(cpu: u64, vcpu: Pa, target: u64) -> Option<()> {
    let t = &mut Gate;
    for _ in 0..2 {
        let reason = ok("VCPU_RUN", host::vcpu_run(t, vcpu, exit_record(cpu)))?;
        let e = read_exit(cpu);
        defmt::info!(
            "CPU {=u64}: vCPU {=u64:#x}: exit {=u32} syndrome {=u64:#x} flags {=u32:#x} gpa {=u64:#x}",
            cpu,
            vcpu.0,
            e.reason,
            e.syndrome,
            e.flags,
            e.gpa
        );
        let gpa_ok = e.flags == ExitFlags::GPA_VALID.bits() && e.gpa == target;
        if reason != ExitReason::Fault
            || e.syndrome >> 26 != EC_DABT_LOWER
            || !gpa_ok
            || e.code != 0
        {
            defmt::error!(
                "vCPU {=u64:#x}: expected a stage-2 data abort FAULT exit",
                vcpu.0
            );
            return None;
        }
    }
    Some(())
}

/// CPU 1's part of `vcpu-smoke`: vCPU 1 (handle `vcpu`) must fault on [`HOST_PAGE`].
fn vcpu1_fault_job(vcpu: u64) -> bool {
    fault_job(1, Pa(vcpu), HOST_PAGE).is_some()
}

/// Scenario `vcpu-smoke`: delegate granules (the host's loads and stores to one are blocked),
/// build a TVM with the guest program in a private
/// page and three vCPUs, run them: the first must exit DENIED_CALL (it tried a host call),
/// then GUEST_EXIT with a code proving G_VERSION worked and the host call got `Denied`; the
/// second (on CPU 1, in parallel) touches host memory the TVM does not map and the third the
/// TSM's image: both must come back as FAULT exits (stage-2 data aborts) naming that GPA,
/// twice (the access is retried). Then tear everything down and undelegate; every granule must come back zeroed.
pub fn vcpu_smoke() -> bool {
    vcpu_smoke_steps().is_some()
}

fn vcpu_smoke_steps() -> Option<()> {
    let t = &mut Gate;
    let [tvm, root, l1, l2, l3, code, vcpus @ ..] = core::array::from_fn::<_, SECURE, _>(granule);
    for i in 0..SECURE {
        ok("GRANULE_DELEGATE", host::granule_delegate(t, granule(i)))?;
    }
    // A delegated granule is out of the host's reach: both probes are blocked.
    let (read_blocked, value) = probe(granule(0).0, false, 0);
    let (write_blocked, _) = probe(granule(0).0, true, 0xBAD0_BAD0);
    if !read_blocked || value != 0 || !write_blocked {
        defmt::error!("a host access to a delegated granule was not blocked");
        return None;
    }
    let params = Pa(core::ptr::addr_of!(TVM_PARAMS) as u64);
    ok("TVM_CREATE", host::tvm_create(t, tvm, params, root))?;
    ok("TABLE_CREATE 1", host::table_create(t, tvm, Gpa(0), 1, l1))?;
    ok("TABLE_CREATE 2", host::table_create(t, tvm, Gpa(0), 2, l2))?;
    ok(
        "TABLE_CREATE 3",
        host::table_create(t, tvm, Gpa(GUEST_CODE_GPA), 3, l3),
    )?;
    let source = Pa(core::ptr::addr_of!(__guest_program) as u64);
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
    let touch_offset = core::ptr::addr_of!(__guest_touch) as u64 - source.0;
    let touch = Gpa(GUEST_CODE_GPA + touch_offset);
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
        host::vcpu_create(t, tvm, vcpus[2], touch, TSM_IMAGE),
    )?;
    ok("TVM_ACTIVATE", host::tvm_activate(t, tvm))?;
    let record = exit_record(0);

    let reason = ok("VCPU_RUN 0", host::vcpu_run(t, vcpus[0], record))?;
    let e = read_exit(0);
    defmt::info!("vCPU 0: exit {=u32} fid {=u64:#x}", e.reason, e.fid);
    if reason != ExitReason::DeniedCall || e.fid != u64::from(CallId::VERSION.fid()) {
        defmt::error!("vCPU 0: expected DENIED_CALL for VERSION");
        return None;
    }
    let reason = ok("VCPU_RUN 0", host::vcpu_run(t, vcpus[0], record))?;
    let e = read_exit(0);
    defmt::info!("vCPU 0: exit {=u32} code {=u64:#x}", e.reason, e.code);
    let denied = Status::new(StatusCode::Denied).to_raw();
    let expected = (denied << 16) | SMOKE_ARG0;
    if reason != ExitReason::GuestExit || e.code != expected {
        defmt::error!("vCPU 0: expected GUEST_EXIT with code {=u64:#x}", expected);
        return None;
    }
    let again = host::vcpu_run(t, vcpus[0], record);
    if again.err().and_then(|e| e.status()).map(|s| s.code) != Some(StatusCode::ObjectState) {
        defmt::error!("vCPU 0 ran again after G_EXIT");
        return None;
    }

    // vCPU 1 on CPU 1 (when it is up) while CPU 0 runs vCPU 2: two VCPU_RUNs of one TVM at
    // once, on two CPUs.
    let parallel = crate::jobs::post_job(1, vcpu1_fault_job, vcpus[1].0);
    if !parallel {
        defmt::warn!("CPU 1 is not up in the host: CPU 0 runs both fault vCPUs");
        fault_job(0, vcpus[1], HOST_PAGE)?;
    }
    fault_job(0, vcpus[2], TSM_IMAGE)?;
    if parallel {
        if crate::jobs::wait_job(1, 5_000_000) != Some(true) {
            defmt::error!("CPU 1's vCPU job failed or did not finish");
            return None;
        }
        defmt::info!("vCPU 1 ran on CPU 1 while vCPU 2 ran on CPU 0");
    }

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
