//! The host payload on aarch64: entered by the TSM at EL1 (MMU off, `HCR_EL2.DC` makes its
//! accesses cacheable), reaches the TSM with `smc #0` (abi/src/regs.rs). CPU 0 enters at
//! `_start` with x0..x2 = DRAM base, DRAM size, 0; it starts the others with PSCI CPU_ON
//! (`cpu_start`) at `_start_secondary` with their index as the context ID, which joins
//! `_start` with it in x2.

use core::sync::atomic::AtomicU32;

use tsm_abi::addr::Pa;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_scenarios::HostDevices;

use tsm_abi::psci::{self as p, PsciStatus};
use tsm_scenarios::{Fail, Outcome};

use crate::cpu_start::Answer;
use crate::vcpu_smoke::FaultProbe;

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
    // A CPU the payload started with PSCI CPU_ON (`cpu_start`): x0 = the context ID, its index.
    ".global _start_secondary",
    "_start_secondary:",
    "mov x2, x0",
    "b _start",
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

/// The host's own FP/SIMD values for [`call_keeping_fp`]: vn holds `FP_PATTERN + n` in both
/// lanes, FPCR rounds towards zero, FPSR has QC set.
const FP_PATTERN: u64 = 0x4F57_0000_0000_0000;
const FP_FPCR: u64 = 0b11 << 22;
const FP_FPSR: u64 = 1 << 27;

/// [`call`] with every FP/SIMD register, FPCR and FPSR holding the host's own values across
/// the call (set right before the `smc`, read right after it, in one asm block so no compiled
/// code touches them in between). Returns the result and whether they all came back as they
/// were: the TSM must leave the host's FP state alone, whatever vCPU it ran meanwhile
/// (hal/src/aarch64/fp.rs). FPCR and FPSR are zero again afterwards.
pub fn call_keeping_fp(regs: &CallRegs) -> (CallResult, bool) {
    let (status, r1, r2, r3, r4);
    let (fpcr, fpsr): (u64, u64);
    let mut v = [0u128; 32];
    // SAFETY: as in `call`; besides, the asm writes exactly the 512 bytes of `v` (x20 points
    // at it, 16-byte aligned, exclusively borrowed) and leaves FPCR and FPSR zero, as the
    // host's code runs with them; the vector registers are declared clobbered.
    unsafe {
        core::arch::asm!(
            "msr fpcr, {fpcr_in}",
            "msr fpsr, {fpsr_in}",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "dup v\\n\\().2d, x9",
            "add x9, x9, #1",
            ".endr",
            "smc #0",
            "stp q0, q1, [x20, #0]",
            "stp q2, q3, [x20, #32]",
            "stp q4, q5, [x20, #64]",
            "stp q6, q7, [x20, #96]",
            "stp q8, q9, [x20, #128]",
            "stp q10, q11, [x20, #160]",
            "stp q12, q13, [x20, #192]",
            "stp q14, q15, [x20, #224]",
            "stp q16, q17, [x20, #256]",
            "stp q18, q19, [x20, #288]",
            "stp q20, q21, [x20, #320]",
            "stp q22, q23, [x20, #352]",
            "stp q24, q25, [x20, #384]",
            "stp q26, q27, [x20, #416]",
            "stp q28, q29, [x20, #448]",
            "stp q30, q31, [x20, #480]",
            "mrs {fpcr}, fpcr",
            "mrs {fpsr}, fpsr",
            "msr fpcr, xzr",
            "msr fpsr, xzr",
            fpcr_in = in(reg) FP_FPCR,
            fpsr_in = in(reg) FP_FPSR,
            fpcr = out(reg) fpcr,
            fpsr = out(reg) fpsr,
            inout("x0") regs.fid => status,
            inout("x1") regs.args[0] => r1,
            inout("x2") regs.args[1] => r2,
            inout("x3") regs.args[2] => r3,
            inout("x4") regs.args[3] => r4,
            in("x5") regs.args[4],
            in("x6") regs.args[5],
            inout("x9") FP_PATTERN => _,
            in("x20") v.as_mut_ptr(),
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
            out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v16") _,
            out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            out("v22") _, out("v23") _, out("v24") _, out("v25") _, out("v26") _,
            out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack)
        )
    };
    let kept = v.iter().enumerate().all(|(n, &q)| {
        let lane = FP_PATTERN + n as u64;
        q == u128::from(lane) << 64 | u128::from(lane)
    }) && fpcr == FP_FPCR
        && fpsr == FP_FPSR;
    let result = CallResult {
        status,
        out: [r1, r2, r3, r4],
    };
    (result, kept)
}

/// One PSCI or SMCCC call (docs/abi.md §3.4) through `smc #0`, or `hvc #0` with `hvc`: the
/// TSM answers both. Returns x0; x1..x4 come back as passed, x5..x17 are preserved.
fn psci(fid: u32, args: [u64; 3], hvc: bool) -> u64 {
    let r;
    if hvc {
        // SAFETY: `hvc #0` traps to the TSM, which answers in x0 and touches no memory of ours.
        unsafe {
            core::arch::asm!(
                "hvc #0",
                inout("x0") u64::from(fid) => r,
                inout("x1") args[0] => _,
                inout("x2") args[1] => _,
                inout("x3") args[2] => _,
                out("x4") _,
                options(nostack, nomem)
            )
        };
    } else {
        // SAFETY: as above, through `smc #0`.
        unsafe {
            core::arch::asm!(
                "smc #0",
                inout("x0") u64::from(fid) => r,
                inout("x1") args[0] => _,
                inout("x2") args[1] => _,
                inout("x3") args[2] => _,
                out("x4") _,
                options(nostack, nomem)
            )
        };
    }
    r
}

/// PSCI CPU_ON of the CPU with MPIDR `cpu` (QEMU's `virt` numbers Aff0 by index), through
/// `smc`.
pub fn cpu_start(cpu: u64, entry: u64, arg: u64) -> Answer {
    answer(psci(p::CPU_ON_64, [cpu, entry, arg], false))
}

fn answer(raw: u64) -> Answer {
    match PsciStatus::from_raw(raw) {
        Some(PsciStatus::Success) => Answer::Started,
        Some(PsciStatus::InvalidParameters) => Answer::NoSuchCpu,
        Some(PsciStatus::InvalidAddress) => Answer::BadEntry,
        Some(PsciStatus::AlreadyOn | PsciStatus::OnPending) => Answer::OnOrPending,
        _ => Answer::Other(raw),
    }
}

/// AFFINITY_INFO of CPU `cpu`: whether it is off (`None` if the TSM refused the query).
pub fn cpu_is_off(cpu: u64) -> Option<bool> {
    match psci(p::AFFINITY_INFO_64, [cpu, 0, 0], false) {
        0 | 2 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// PSCI CPU_OFF: this CPU leaves the host; returns only if the TSM refused.
pub fn stop_self() {
    let r = psci(p::CPU_OFF, [0; 3], false);
    defmt::error!("CPU_OFF returned {=u64:#x}", r);
}

/// What a kernel asks first: PSCI and SMCCC versions and features, through both conduits.
pub fn cpu_interface_checks() -> Outcome {
    let calls: [(&'static str, u32, [u64; 3], bool, u64); 9] = [
        (
            "PSCI_VERSION (smc)",
            p::PSCI_VERSION,
            [0; 3],
            false,
            p::PSCI_VERSION_1_1,
        ),
        (
            "PSCI_VERSION (hvc)",
            p::PSCI_VERSION,
            [0; 3],
            true,
            p::PSCI_VERSION_1_1,
        ),
        (
            "PSCI_FEATURES(SMCCC_VERSION)",
            p::PSCI_FEATURES,
            [u64::from(p::SMCCC_VERSION), 0, 0],
            false,
            0,
        ),
        (
            "SMCCC_VERSION",
            p::SMCCC_VERSION,
            [0; 3],
            false,
            p::SMCCC_VERSION_1_2,
        ),
        (
            "PSCI_FEATURES(CPU_ON)",
            p::PSCI_FEATURES,
            [u64::from(p::CPU_ON_64), 0, 0],
            false,
            0,
        ),
        (
            "PSCI_FEATURES(CPU_SUSPEND)",
            p::PSCI_FEATURES,
            [u64::from(p::CPU_SUSPEND_32), 0, 0],
            false,
            PsciStatus::NotSupported.to_raw(),
        ),
        (
            "CPU_SUSPEND",
            p::CPU_SUSPEND_32,
            [0; 3],
            false,
            PsciStatus::NotSupported.to_raw(),
        ),
        (
            "AFFINITY_INFO at level 1",
            p::AFFINITY_INFO_64,
            [0, 1, 0],
            false,
            PsciStatus::InvalidParameters.to_raw(),
        ),
        (
            "MIGRATE_INFO_TYPE",
            p::MIGRATE_INFO_TYPE,
            [0; 3],
            false,
            p::MIGRATE_NOT_REQUIRED,
        ),
    ];
    for (what, fid, args, hvc, want) in calls {
        let got = psci(fid, args, hvc);
        defmt::info!("cpu start: {=str} -> {=u64:#x}", what, got);
        if got != want {
            return Err(Fail {
                what: "a PSCI/SMCCC discovery call answered wrongly",
                line: line!(),
                got,
            });
        }
    }
    Ok(())
}

/// The host's other way to the firmware's CPU_ON: the HVC conduit, which the TSM answers with
/// the same checks (an entry in the TSM's memory refused).
pub fn cpu_reset_attempts(cpu: u64) -> Outcome {
    let got = answer(psci(p::CPU_ON_64, [cpu, 0x4020_0000, 0], true));
    defmt::info!(
        "cpu start: CPU_ON through hvc at the TSM's image -> {}",
        got
    );
    if got != Answer::BadEntry {
        return Err(Fail::new("CPU_ON through hvc was not checked", line!()));
    }
    Ok(())
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

/// The scenario's parameter, the parameters page's second word (0 when xtask sets none):
/// `smp4` takes its calls per CPU from it.
pub fn scenario_param() -> u32 {
    // SAFETY: as for `scenario_id`: the word after it in the same page, written by QEMU's
    // loader before boot (or left zero) and never by Rust code.
    unsafe { core::ptr::read_volatile((PARAMS_PAGE + 4) as *const u32) }
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

// The `vcpu-smoke` guest program (crate::vcpu_smoke), run at EL1 (MMU off) at GPA 0x20_0000
// with x0 = VCPU_CREATE's arg0: G_VERSION(1.0), then the host call VERSION (which the TSM must
// refuse: a DENIED_CALL exit, then `Denied` in x0), then G_EXIT((version failed << 31) |
// (VERSION's status << 16) | (arg0 & 0xFFFF)), where "version failed" is 0 only if G_VERSION
// succeeded and granted 1.0. The TSM preserves x19..x21 across a call; unused argument
// registers are 0. At `__smoke_touch` (offset 0x100) a second program loads from the address
// in x0 and stops.
//
// FP/SIMD isolation (the host runs these VCPU_RUNs with its own values in every FP register,
// `call_keeping_fp`): first, every FP/SIMD register, FPSR and FPCR must be zero (a fresh
// vCPU's: none of the host's may show), else `udf #2`; then the program fills v0..v31 with
// its own values (0x6E00 + n in both lanes of vn), and once VERSION comes back (the host ran
// in between) they must still be there, else `udf #3`. Either is a FAULT exit where the host
// expects DENIED_CALL or GUEST_EXIT. That code sits after the touch program (offset 0x200),
// which keeps its offset.
core::arch::global_asm!(
    ".pushsection .rodata.smoke_guest, \"a\"",
    ".balign 4096",
    ".global __smoke_guest",
    "__smoke_guest:",
    "b 10f",
    "11:",
    "mov x19, x0",
    "movz x0, #0x0200", // G_VERSION
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    "eor x1, x1, #0x10000", // 0 if 1.0 was chosen
    "orr x20, x1, x0",      // | the status (0 = success)
    "cmp x20, #0",
    "cset x20, ne",
    "movz x0, #0x0100", // VERSION, a host call
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    "b 20f",
    "21:",
    "mov x21, x0",
    "lsl x1, x20, #31",
    "orr x1, x1, x21, lsl #16",
    "and x19, x19, #0xFFFF",
    "orr x1, x1, x19",
    "movz x0, #0x0202", // G_EXIT
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
    ".global __smoke_touch",
    "__smoke_touch:",
    "ldr x1, [x0]",
    "udf #1",
    ".balign 256",
    // The FP/SIMD checks (see above), after the touch program.
    "10:",
    "mrs x9, fpsr",
    "mrs x10, fpcr",
    "orr x9, x9, x10",
    ".irp n, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "orr v0.16b, v0.16b, v\\n\\().16b",
    ".endr",
    "mov x10, v0.d[0]",
    "orr x9, x9, x10",
    "mov x10, v0.d[1]",
    "orr x9, x9, x10",
    "cbz x9, 12f",
    "udf #2",
    "12:",
    "mov x9, #0x6E00",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "dup v\\n\\().2d, x9",
    "add x9, x9, #1",
    ".endr",
    "b 11b",
    "20:",
    "mov x9, #0x6E00",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "mov x10, v\\n\\().d[0]",
    "cmp x10, x9",
    "b.ne 22f",
    "mov x10, v\\n\\().d[1]",
    "cmp x10, x9",
    "b.ne 22f",
    "add x9, x9, #1",
    ".endr",
    "b 21b",
    "22:",
    "udf #3",
    ".balign 4096",
    ".popsection",
);

// The `smp4` guest program (crate::smp4), run by several vCPUs of one TVM at once (it keeps
// nothing in memory), at EL1 (MMU off) at GPA 0x20_0000 with x0 = VCPU_CREATE's arg0, the
// status word the TSM gives a refused host call: forever G_VERSION(1.0), then the host call
// VERSION, which the TSM must refuse (a DENIED_CALL exit to the host, then that status in x0
// when the host runs the vCPU again). G_EXIT(1) if G_VERSION failed or did not grant 1.0,
// G_EXIT(2) if the refusal was not the status in arg0. The TSM preserves x19 across a call.
core::arch::global_asm!(
    ".pushsection .rodata.smp_guest, \"a\"",
    ".balign 4096",
    ".global __smp_guest",
    "__smp_guest:",
    "mov x19, x0",
    "1:",
    "movz x0, #0x0200", // G_VERSION
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    "eor x1, x1, #0x10000", // 0 if 1.0 was chosen
    "orr x1, x1, x0",       // | the status (0 = success)
    "cbnz x1, 2f",
    "movz x0, #0x0100", // VERSION, a host call
    "movk x0, #0xC600, lsl #16",
    "movz x1, #0x1, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    "cmp x0, x19",
    "b.eq 1b",
    "mov x1, #2",
    "b 3f",
    "2:",
    "mov x1, #1",
    "3:",
    "movz x0, #0x0202", // G_EXIT
    "movk x0, #0xC600, lsl #16",
    "mov x2, xzr",
    "mov x3, xzr",
    "mov x4, xzr",
    "mov x5, xzr",
    "mov x6, xzr",
    "hvc #0",
    // G_EXIT never returns; an undefined instruction would be a FAULT exit.
    "udf #0",
    ".balign 4096",
    ".popsection",
);

/// `vcpu-smoke`'s fault vCPUs: one loads from host memory the TVM never mapped (the host
/// payload's own first page), one from the TSM's image (in no TVM's map). Both are stage-2
/// faults that name the GPA.
pub const SMOKE_FAULTS: [FaultProbe; 2] = [
    FaultProbe {
        touches: 0x4100_0000,
        gpa: 0x4100_0000,
    },
    FaultProbe {
        touches: 0x4020_0000,
        gpa: 0x4020_0000,
    },
];

/// Whether a FAULT exit's syndrome (ESR_EL2) is a data abort from a lower EL.
pub fn is_data_fault(syndrome: u64) -> bool {
    const EC_DABT_LOWER: u64 = 0x24;
    syndrome >> 26 == EC_DABT_LOWER
}

/// The host's devices on QEMU `virt` (`iommu=smmuv3,highmem=off`), as its device tree says:
/// the PCIe host bridge's ECAM and 32-bit memory window (no firmware assigns BARs there), and
/// the SMMUv3, which the TSM owns.
pub const DEVICES: HostDevices = HostDevices {
    ecam: Pa(0x3f00_0000),
    bar_window: Some((Pa(0x1000_0000), 0x2eff_0000)),
    iommu: Pa(0x0905_0000),
};
