//! Privileged CPU instructions: port I/O, MSRs, control registers, CPUID, TLB flushes.

use core::arch::asm;

/// `EFER`: long mode and syscall enables.
pub const MSR_EFER: u32 = 0xC000_0080;
/// The active GS base.
pub const MSR_GS_BASE: u32 = 0xC000_0101;

/// `EFER.SCE`: `syscall`/`sysret` enabled (a guest may set it).
pub const EFER_SCE: u64 = 1 << 0;

/// `CR0.MP`: WAIT/FWAIT honour TS.
pub const CR0_MP: u64 = 1 << 1;
/// `CR0.EM`: x87/MMX instructions raise #NM (and SSE ones #UD).
pub const CR0_EM: u64 = 1 << 2;
/// `CR0.TS`: task switched (lazy FPU switching; unused).
pub const CR0_TS: u64 = 1 << 3;
/// `CR0.WP`: ring 0 honours read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// `CR4.OSFXSR`: SSE enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// `CR4.OSXMMEXCPT`: SIMD floating-point exceptions enabled.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// `CR4.OSXSAVE`: XSAVE and XCR0 enabled.
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// `CR4.SMEP`: ring 0 never executes user pages.
pub const CR4_SMEP: u64 = 1 << 20;
/// `CR4.SMAP`: ring 0 touches user pages only with `RFLAGS.AC` set (`stac`).
pub const CR4_SMAP: u64 = 1 << 21;

/// Saves the x87/SSE registers to `area` (FXSAVE format).
///
/// # Safety
/// `area` must be 16-aligned and valid for writes of 512 bytes; CR0.EM and CR0.TS clear,
/// CR4.OSFXSR set (`boot::cpu_setup`).
pub unsafe fn fxsave(area: *mut u8) {
    // SAFETY: the caller's guarantee.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags)) };
}

/// Loads the x87/SSE registers from `area` (FXSAVE format).
///
/// # Safety
/// `area` must be 16-aligned and valid for reads of 512 bytes, with MXCSR's reserved bits clear
/// (an image FXSAVE wrote, or one built so); the CPU state as for [`fxsave`].
pub unsafe fn fxrstor(area: *const u8) {
    // SAFETY: the caller's guarantee.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(readonly, nostack, preserves_flags)) };
}

/// DR0..DR3, the debug address registers.
pub fn debug_addresses() -> [u64; 4] {
    let (a, b, c, d): (u64, u64, u64, u64);
    // SAFETY: reading debug registers in ring 0 has no side effects.
    unsafe {
        asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3",
             out(reg) a, out(reg) b, out(reg) c, out(reg) d, options(nomem, nostack, preserves_flags))
    };
    [a, b, c, d]
}

/// Loads DR0..DR3.
///
/// # Safety
/// Breakpoints the TSM's DR7 enables would fire in the TSM: the caller loads addresses for a
/// guest (whose own DR7 is in its VMCB) or the host's back, with the TSM's DR7 all clear.
pub unsafe fn set_debug_addresses(dr: [u64; 4]) {
    let [a, b, c, d] = dr;
    // SAFETY: the caller's guarantee; the writes touch no memory.
    unsafe {
        asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}",
             in(reg) a, in(reg) b, in(reg) c, in(reg) d, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the ports this HAL writes (COM1, PIT, PIC masks, speaker gate, isa-debug-exit) have
    // no memory side effects; ring 0 owns all port I/O.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reads of the device ports this HAL owns have no memory side effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes `value` to `port` with an access of `size` bytes (1, 2 or 4; any other is 4), for the
/// chipset registers a Linux host reaches through the TSM (`linux`).
pub fn port_out(port: u16, size: u8, value: u32) {
    // SAFETY: `linux` forwards only the ACPI PM1a control and SMI command registers, which
    // touch no memory; ring 0 owns all port I/O.
    unsafe {
        match size {
            1 => {
                asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack, preserves_flags))
            }
            2 => {
                asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack, preserves_flags))
            }
            _ => {
                asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
            }
        }
    };
}

/// Reads `port` with an access of `size` bytes (1, 2 or 4; any other is 4), zero-extended.
pub fn port_in(port: u16, size: u8) -> u32 {
    let value: u32;
    // SAFETY: as in `port_out`: reads of those registers have no memory side effects.
    unsafe {
        match size {
            1 => {
                let v: u8;
                asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            2 => {
                let v: u16;
                asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            _ => {
                asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
            }
        }
    };
    value
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with the architectural MSRs above, which exist on every x86_64 CPU.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The value must keep the CPU in a state the TSM's code relies on (long mode, its entry points).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the value is valid for the TSM.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Reads CR0.
pub fn cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR2 (the faulting linear address of the last #PF).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR4.
pub fn cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// Paging and protected mode must stay on.
pub unsafe fn set_cr0(v: u64) {
    // SAFETY: the caller keeps PG/PE set.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR3 (switches page tables; flushes non-global TLB entries).
///
/// # Safety
/// `pml4` must be a valid top-level table that maps the running code, stack and data.
pub unsafe fn set_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map everything the TSM touches next.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// PAE must stay on, and features enabled must be supported (checked with [`cpuid`]).
pub unsafe fn set_cr4(v: u64) {
    // SAFETY: the caller keeps PAE and only enables supported bits.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Executes CPUID: returns eax, ebx, ecx, edx.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads CR3 (the TSM's own tables while the TSM runs).
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Drops every non-global TLB entry of this CPU (reloads CR3).
pub fn flush_tlb() {
    // SAFETY: writing CR3 back with its own value keeps the same tables and only flushes.
    unsafe {
        asm!("mov {tmp}, cr3", "mov cr3, {tmp}", tmp = out(reg) _, options(nostack, preserves_flags))
    };
}

/// Writes the cache line holding `addr` back to memory and drops it from every cache, for a
/// device that reads memory without snooping the CPU's caches (a VT-d unit without
/// ECAP.C). `addr` must be mapped, as for a load; the caller orders it with [`mfence`].
pub fn clflush(addr: u64) {
    // SAFETY: CLFLUSH changes no memory contents, only where they are cached; the caller
    // passes a mapped address (an unmapped one faults like a load and is reported).
    unsafe { asm!("clflush [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Orders every earlier load, store and CLFLUSH before every later one.
pub fn mfence() {
    // SAFETY: a fence only orders memory accesses.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Writes back and invalidates every cache of this CPU (for tables written by code that does
/// not flush line by line, before a non-snooping VT-d unit reads them).
pub fn wbinvd() {
    // SAFETY: write-back then invalidate keeps memory contents; ring 0 may execute it.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// One RDSEED word, or `None` when the CPU had none ready (CF = 0).
pub fn rdseed() -> Option<u64> {
    let (value, ok): (u64, u8);
    // SAFETY: RDSEED only writes its destination and CF; callers check CPUID first.
    unsafe {
        asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// One RDRAND word, or `None` when the CPU had none ready (CF = 0).
pub fn rdrand() -> Option<u64> {
    let (value, ok): (u64, u8);
    // SAFETY: RDRAND only writes its destination and CF; callers check CPUID first.
    unsafe {
        asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stops this CPU for good (interrupts stay disabled).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
