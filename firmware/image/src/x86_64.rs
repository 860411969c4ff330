//! The TSM on x86_64 QEMU `q35`: after the HAL's boot, log the machine, then run the host in
//! ring 3 and hand each of its calls to the core until it powers off.

use tsm_core::{Origin, Tsm};
use tsm_hal::platform::ExitCode;
use tsm_hal::x86_64::{self as hal, BootInfo, Exit, Fault, X86Platform};

tsm_hal::x86_64_entry!(main);

fn main(boot: &'static BootInfo) -> ! {
    defmt::info!(
        "TSM {=str} on x86_64 q35 (PVH), TSC {=u64} ticks/us",
        env!("CARGO_PKG_VERSION"),
        boot.tsc_ticks_per_us
    );
    for e in boot.memmap() {
        defmt::info!(
            "memmap {=u64:#010x}..{=u64:#010x} {=str}",
            e.base,
            e.base.saturating_add(e.size),
            e.kind_name()
        );
    }
    if boot.memmap_dropped > 0 {
        defmt::warn!(
            "memmap: {=u32} entries beyond the table were dropped",
            boot.memmap_dropped
        );
    }
    let (used, pool) = hal::pool_usage();
    defmt::info!(
        "DRAM {=u64:#x}..{=u64:#x}, TSM {=u64:#x}..{=u64:#x} (page tables {=u64}/{=u64} pages)",
        boot.dram.base.0,
        boot.dram.base.0 + boot.dram.size,
        boot.tsm.base.0,
        boot.tsm.base.0 + boot.tsm.size,
        used,
        pool
    );
    if cfg!(feature = "selftest-fault") {
        defmt::warn!("selftest-fault: touching an unmapped address");
        hal::selftest_fault();
    }

    let platform = X86Platform::new(boot);
    let tsm = match Tsm::new(
        &platform,
        boot.dram,
        boot.tsm,
        hal::granule_descriptors(boot.dram.size),
    ) {
        Ok(tsm) => tsm,
        Err(e) => {
            defmt::error!("core: cannot start: {}", defmt::Debug2Format(&e));
            hal::exit(ExitCode::Failure)
        }
    };
    let mut host = hal::host_context(boot, 0);
    defmt::info!("entering the host at {=u64:#x}", hal::HOST_ENTRY);
    loop {
        match host.run() {
            Exit::Call(regs) => {
                defmt::trace!("host call {=u64:#x} args {:#x}", regs.fid, regs.args);
                let r = tsm.handle(Origin::Host, &regs);
                defmt::trace!("  -> status {=u64:#x} out {:#x}", r.status, r.out);
                host.set_result(&r);
            }
            Exit::Fault(f) => {
                report_host_fault(&f);
                hal::exit(ExitCode::Failure)
            }
        }
    }
}

fn report_host_fault(f: &Fault) {
    let r = &f.regs;
    defmt::error!(
        "host fault: vector {=u8} {=str}, error code {=u64:#x}, rip {=u64:#x}, cs {=u64:#x}, rflags {=u64:#x}, rsp {=u64:#x}, cr2 {=u64:#x}",
        f.vector,
        hal::vector_name(u64::from(f.vector)),
        f.error_code,
        r.rip,
        f.cs,
        r.rflags,
        r.rsp,
        f.cr2
    );
    defmt::error!(
        "host regs: rax {=u64:#x} rbx {=u64:#x} rcx {=u64:#x} rdx {=u64:#x} rsi {=u64:#x} rdi {=u64:#x} rbp {=u64:#x} r8 {=u64:#x}",
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8
    );
    defmt::error!(
        "host regs: r9 {=u64:#x} r10 {=u64:#x} r11 {=u64:#x} r12 {=u64:#x} r13 {=u64:#x} r14 {=u64:#x} r15 {=u64:#x}",
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hal::report_panic(info)
}
