//! Scenario `vcpu-smoke`: one TVM's vCPUs end to end, before the guest payload and the
//! scenario driver (tests/scenarios) are involved. Delegate granules (on aarch64 the host's
//! load and store to one must be blocked), build a TVM with a hand-written guest program in a
//! private page and three vCPUs, and run them:
//!
//! - vCPU 0 calls G_VERSION(1.0), then the host call VERSION: it must exit DENIED_CALL naming
//!   VERSION, then, run again, G_EXIT with a code proving G_VERSION granted 1.0, VERSION was
//!   refused with `Denied`, and it got its `arg0`; it must not run again after that;
//! - vCPUs 1 and 2 load from memory the TVM does not map (the host's own page, and the TSM's
//!   memory by its physical address): each must come back twice (the access is retried) as the FAULT exit the arch's
//!   [`crate::arch::SMOKE_FAULTS`] says. They run at the same time on CPUs 1 and 0.
//!
//! Then tear everything down and undelegate: every granule must come back zeroed.
//!
//! The only arch parts are the guest program (`__smoke_guest` / `__smoke_touch`, an
//! assembly page in the arch file), the fault targets and how an exit's syndrome names a data
//! access fault.

use core::cell::UnsafeCell;

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::api::{Error, Transport, host};
use tsm_abi::call::CallId;
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::params::{MapFlags, TvmParams};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};

use crate::arch::{SMOKE_FAULTS, is_data_fault};

/// A vCPU that loads from memory its TVM must not reach, and what its FAULT exit must say.
pub struct FaultProbe {
    /// The address the vCPU loads from (its `arg0`).
    pub touches: u64,
    /// The GPA the exit must name.
    pub gpa: u64,
}

// The guest program, in the arch file: a page whose first byte is `__smoke_guest`, entered
// with arg0 in the first argument register, doing what the module documentation says and
// ending with G_EXIT([`smoke_code`]); at `__smoke_touch` (offset [`TOUCH_OFFSET`]) a second
// program loads from the address in arg0 and stops.
unsafe extern "C" {
    /// The guest program's page (MAP_PRIVATE's source).
    static __smoke_guest: u8;
    /// The touch program, inside the same page.
    static __smoke_touch: u8;
}

/// Where the touch program starts in the guest program's page.
const TOUCH_OFFSET: u64 = 0x100;

/// The G_EXIT code of vCPU 0: bit 31 set if G_VERSION failed or did not grant 1.0, VERSION's
/// status in bits 30:16, `arg0`'s low 16 bits below (32 bits: the x86_64 program runs in
/// 32-bit mode).
const fn smoke_code(version_failed: bool, host_call_status: u64, arg0: u64) -> u64 {
    (version_failed as u64) << 31 | (host_call_status & 0x7FFF) << 16 | (arg0 & 0xFFFF)
}

/// What vCPU 0 gets in its first argument register and must hand back in its exit code.
const SMOKE_ARG0: u64 = 0x5EED;
/// Where the guest program is mapped (and where the guest payload is linked, docs/design.md).
const GUEST_CODE_GPA: u64 = 0x20_0000;

const PAGE: usize = 4096;

/// A page of host memory the TSM reads or writes by physical address (the host's memory is
/// identity-mapped on x86_64 and its MMU is off on aarch64, so an address is a PA).
#[repr(C, align(4096))]
struct Page<T>(T);

struct Shared<T>(UnsafeCell<T>);

// SAFETY: only this scenario touches these: CPU 0 the pool, CPU `n` exit record `n`, and the
// TSM only while a call of that CPU runs.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn pa(&self) -> Pa {
        Pa(self.0.get() as u64)
    }
}

/// TVM_CREATE's parameters: 36-bit GPAs, three vCPUs.
static TVM_PARAMS: Page<TvmParams> = Page(TvmParams {
    flags: 0,
    gpa_bits: 36,
    reserved0: [0; 3],
    max_vcpus: 3,
    reserved1: [0; 6],
});

/// CPUs that run vCPUs here: 0 and 1.
const RUNNING_CPUS: usize = 2;
/// VCPU_RUN's exit record, one page per CPU that runs vCPUs.
static EXIT_RECORDS: Shared<Page<[[u8; PAGE]; RUNNING_CPUS]>> =
    Shared(UnsafeCell::new(Page([[0; PAGE]; RUNNING_CPUS])));

/// Granules the scenario delegates: TVM, root, level-1..3 tables, the code page, three vCPUs.
const SECURE: usize = 9;
/// The first vCPU granule.
const FIRST_VCPU: usize = 6;
static SECURE_POOL: Shared<Page<[[u8; PAGE]; SECURE]>> =
    Shared(UnsafeCell::new(Page([[0; PAGE]; SECURE])));

/// The host's gate as the ABI wrappers' transport.
struct Gate;

impl Transport for Gate {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        crate::arch::call(regs)
    }
}

fn granule(i: usize) -> Pa {
    Pa(SECURE_POOL.pa().0 + (i * PAGE) as u64)
}

/// CPU `cpu`'s exit record page (`cpu` is 0 or 1, [`RUNNING_CPUS`]).
fn exit_record(cpu: u64) -> Pa {
    let index = cpu.min(RUNNING_CPUS as u64 - 1);
    Pa(EXIT_RECORDS.pa().0 + index * PAGE as u64)
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

/// Runs fault probe `job` (an index into [`SMOKE_FAULTS`], vCPU `job + 1`) twice on CPU
/// `cpu`: each run must end in the FAULT exit the probe describes.
fn fault_job(cpu: u64, job: u64) -> Option<()> {
    let t = &mut Gate;
    let probe = SMOKE_FAULTS.get(job as usize)?;
    let index = job as usize + 1;
    let vcpu = granule(FIRST_VCPU + index);
    for _ in 0..2 {
        let reason = ok("VCPU_RUN", host::vcpu_run(t, vcpu, exit_record(cpu)))?;
        let e = read_exit(cpu);
        defmt::info!(
            "CPU {=u64}: vCPU {=usize} touching {=u64:#x}: exit {=u32} syndrome {=u64:#x} flags {=u32:#x} gpa {=u64:#x}",
            cpu,
            index,
            probe.touches,
            e.reason,
            e.syndrome,
            e.flags,
            e.gpa
        );
        let gpa_ok = e.flags == ExitFlags::GPA_VALID.bits() && e.gpa == probe.gpa;
        if reason != ExitReason::Fault || !is_data_fault(e.syndrome) || !gpa_ok || e.code != 0 {
            defmt::error!("vCPU {=usize}: expected a data-access FAULT exit", index);
            return None;
        }
    }
    Some(())
}

/// Fault probe `job` as CPU 1 runs it.
fn fault_job_on_cpu1(job: u64) -> bool {
    fault_job(1, job).is_some()
}

/// Runs the scenario; true when it passed.
pub fn run() -> bool {
    steps().is_some()
}

fn steps() -> Option<()> {
    let t = &mut Gate;
    let [tvm, root, l1, l2, l3, code, vcpus @ ..] = core::array::from_fn::<_, SECURE, _>(granule);
    for i in 0..SECURE {
        ok("GRANULE_DELEGATE", host::granule_delegate(t, granule(i)))?;
    }
    #[cfg(target_arch = "aarch64")]
    host_access_blocked(granule(0))?;
    let params = Pa(core::ptr::addr_of!(TVM_PARAMS) as u64);
    ok("TVM_CREATE", host::tvm_create(t, tvm, params, root))?;
    ok("TABLE_CREATE 1", host::table_create(t, tvm, Gpa(0), 1, l1))?;
    ok("TABLE_CREATE 2", host::table_create(t, tvm, Gpa(0), 2, l2))?;
    ok(
        "TABLE_CREATE 3",
        host::table_create(t, tvm, Gpa(GUEST_CODE_GPA), 3, l3),
    )?;
    let source = Pa(core::ptr::addr_of!(__smoke_guest) as u64);
    if core::ptr::addr_of!(__smoke_touch) as u64 != source.0 + TOUCH_OFFSET {
        defmt::error!("the touch program is not at its offset in the guest page");
        return None;
    }
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
    let touch = Gpa(GUEST_CODE_GPA + TOUCH_OFFSET);
    ok(
        "VCPU_CREATE 0",
        host::vcpu_create(t, tvm, vcpus[0], Gpa(GUEST_CODE_GPA), SMOKE_ARG0),
    )?;
    for (i, probe) in SMOKE_FAULTS.iter().enumerate() {
        ok(
            "VCPU_CREATE",
            host::vcpu_create(t, tvm, vcpus[i + 1], touch, probe.touches),
        )?;
    }
    ok("TVM_ACTIVATE", host::tvm_activate(t, tvm))?;
    guest_calls(vcpus[0])?;

    // The two fault vCPUs at the same time: probe 0 on CPU 1 (if it is up), probe 1 here.
    let remote = crate::jobs::post_job(1, fault_job_on_cpu1, 0);
    if !remote {
        defmt::warn!("CPU 1 is not up in the host: CPU 0 runs both fault vCPUs");
        fault_job(0, 0)?;
    }
    let here = fault_job(0, 1);
    if remote {
        if crate::jobs::wait_job(1, 10_000_000) != Some(true) {
            defmt::error!("CPU 1's vCPU job failed or did not finish");
            return None;
        }
        defmt::info!("vCPU 1 ran on CPU 1 while vCPU 2 ran on CPU 0");
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

/// vCPU 0: a DENIED_CALL exit for its host call, then G_EXIT with the code that proves both of
/// its calls went as they must; then it cannot run again. On aarch64 both runs are made with the
/// host's own values in every FP/SIMD register, which must come back unchanged, while the
/// guest program checks it saw none of them and kept its own (`crate::arch`'s program).
fn guest_calls(vcpu: Pa) -> Option<()> {
    #[cfg(target_arch = "aarch64")]
    let t = &mut FpKeepingGate { all_kept: true };
    #[cfg(not(target_arch = "aarch64"))]
    let t = &mut Gate;
    let record = exit_record(0);
    let reason = ok("VCPU_RUN 0", host::vcpu_run(t, vcpu, record))?;
    let e = read_exit(0);
    defmt::info!("vCPU 0: exit {=u32} fid {=u64:#x}", e.reason, e.fid);
    if reason != ExitReason::DeniedCall
        || e.reason != ExitReason::DeniedCall.raw()
        || e.fid != u64::from(CallId::VERSION.fid())
    {
        defmt::error!("vCPU 0: expected DENIED_CALL for VERSION");
        return None;
    }
    let reason = ok("VCPU_RUN 0", host::vcpu_run(t, vcpu, record))?;
    let e = read_exit(0);
    defmt::info!("vCPU 0: exit {=u32} code {=u64:#x}", e.reason, e.code);
    let denied = Status::new(StatusCode::Denied).to_raw();
    let expected = smoke_code(false, denied, SMOKE_ARG0);
    if reason != ExitReason::GuestExit
        || e.reason != ExitReason::GuestExit.raw()
        || e.code != expected
    {
        defmt::error!("vCPU 0: expected GUEST_EXIT with code {=u64:#x}", expected);
        return None;
    }
    let again = host::vcpu_run(t, vcpu, record);
    if again.err().and_then(|e| e.status()).map(|s| s.code) != Some(StatusCode::ObjectState) {
        defmt::error!("vCPU 0 ran again after G_EXIT");
        return None;
    }
    #[cfg(target_arch = "aarch64")]
    if !t.all_kept {
        defmt::error!("vCPU 0's runs changed the host's FP/SIMD registers");
        return None;
    }
    Some(())
}

/// The host's gate with the host's own values in every FP/SIMD register across each call
/// (`crate::arch::call_keeping_fp`); `all_kept` turns false once a call changed them.
#[cfg(target_arch = "aarch64")]
struct FpKeepingGate {
    all_kept: bool,
}

#[cfg(target_arch = "aarch64")]
impl Transport for FpKeepingGate {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        let (result, kept) = crate::arch::call_keeping_fp(regs);
        self.all_kept &= kept;
        result
    }
}

/// A delegated granule is out of the host's reach: its load and store must be blocked. Only
/// aarch64's TSM skips a blocked host access and lets the host go on; x86_64's ends the run
/// (docs/design.md "Traps from the host"), so there the `isolation-delegated` run checks it.
#[cfg(target_arch = "aarch64")]
fn host_access_blocked(delegated: Pa) -> Option<()> {
    let (read_blocked, value) = crate::arch::probe(delegated.0, false, 0);
    let (write_blocked, _) = crate::arch::probe(delegated.0, true, 0xBAD0_BAD0);
    if !read_blocked || value != 0 || !write_blocked {
        defmt::error!("a host access to a delegated granule was not blocked");
        return None;
    }
    Some(())
}
