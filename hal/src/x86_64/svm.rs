//! AMD SVM: the TSM (ring 0, `EFER.SVME`) runs the host as an SVM guest behind the host's
//! nested page table (`paging`'s nested tables), one VMCB per CPU.
//!
//! What the CPU needs besides each VMCB: a host-save area per CPU (`VM_HSAVE_PA`, where VMRUN
//! keeps the TSM's state the exit restores), a second area per CPU for the state VMRUN does not
//! switch (FS, GS, TR, LDTR and the `syscall`/`sysenter` MSRs: `vmsave`d once at boot,
//! [`enable`], and `vmload`ed after each guest's `vmsave`), the I/O permission map and the MSR permission map
//! (shared by every CPU, set once by the boot CPU: every port and every MSR intercepted but the
//! guest-owned MSRs VMRUN/`vmload` switch, see [`init_maps`]). The maps live in the TSM's BSS;
//! the per-CPU pages are carved by boot after the static carve-out, for as many CPUs as the
//! MADT lists ([`set_cpu_pages`]), so a one-CPU machine holds one CPU's 20 KiB, not four. No
//! nested table maps either.
//!
//! [`run`] is the world switch: `clgi`, the guest's `vmload`, its
//! general-purpose registers, `vmrun`; on the #VMEXIT the guest's registers and `vmsave`, the
//! TSM's `vmload` (of [`enable`]'s `vmsave`), then `stgi`. The TSM runs
//! with the global interrupt flag set and `RFLAGS.IF` clear, so the NMIs of a TLB shootdown
//! (`smp`) reach it: an NMI that arrives while a guest runs is intercepted (a #VMEXIT), stays
//! pending through the exit, and is taken by the TSM's handler at the `stgi`. `RFLAGS.IF` is
//! set only between `clgi` and `vmrun` (and again by the #VMEXIT until a `cli` before the
//! `stgi`), where GIF holds interrupts off: it is the host IF VMRUN records, under which a TVM
//! vCPU's physical interrupts are intercepted (`guest`).
//!
//! QEMU's TCG (PLATFORM-FACTS.md) saves no next RIP, has no decode assists, no flush-by-ASID
//! and does not tag its TLB with ASIDs; the code relies on none of them: intercepted
//! instructions are skipped by their fixed encoding's length ([`Vmcb::skip`]), and a nested
//! table change is made effective by a full TLB flush on the next VMRUN of every CPU
//! ([`Vmcb::prepare_tlb`]).

use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use super::cpu;

const PAGE: usize = 4096;

/// `CPUID 8000_0001h ECX.SVM`.
pub const CPUID_SVM: u32 = 1 << 2;
/// `CPUID 8000_000Ah EDX.NP`: nested paging.
const CPUID_NP: u32 = 1 << 0;

/// `EFER.SVME`.
pub const EFER_SVME: u64 = 1 << 12;
/// `VM_CR`: SVM lock and disable bits.
pub const MSR_VM_CR: u32 = 0xC001_0114;
/// `VM_CR.SVMDIS`: the firmware disabled SVM.
const VM_CR_SVMDIS: u64 = 1 << 4;
/// `VM_HSAVE_PA`: where VMRUN saves the TSM's state.
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;

/// VMCB fields (AMD64 Architecture Programmer's Manual vol. 2, appendix B): the control area,
/// then the state-save area at 0x400. Segment registers there are 16 bytes: selector (u16),
/// attributes (u16), limit (u32), base (u64), written as two 8-byte fields. Each field type
/// can only be made here, so every offset [`Vmcb`] accesses is one of these: inside the page and
/// aligned to its width.
pub mod vmcb {
    /// An 8-byte field.
    #[derive(Clone, Copy)]
    pub struct F64(pub(super) usize);
    /// A 4-byte field.
    #[derive(Clone, Copy)]
    pub struct F32(pub(super) usize);
    /// A 1-byte field.
    #[derive(Clone, Copy)]
    pub struct F8(pub(super) usize);
    /// A segment register (two 8-byte words).
    #[derive(Clone, Copy)]
    pub struct Seg(pub(super) usize);

    pub const INTERCEPT_EXCEPTIONS: F32 = F32(0x008);
    pub const INTERCEPT_MISC1: F32 = F32(0x00C);
    pub const INTERCEPT_MISC2: F32 = F32(0x010);
    pub const IOPM_BASE: F64 = F64(0x040);
    pub const MSRPM_BASE: F64 = F64(0x048);
    pub const ASID: F32 = F32(0x058);
    pub const TLB_CONTROL: F8 = F8(0x05C);
    /// Virtual interrupt control: V_TPR, V_IRQ, ..., V_INTR_MASKING (bit 24).
    pub const V_INTR: F32 = F32(0x060);
    pub const EXIT_CODE: F64 = F64(0x070);
    pub const EXIT_INFO1: F64 = F64(0x078);
    pub const EXIT_INFO2: F64 = F64(0x080);
    pub const EXIT_INT_INFO: F64 = F64(0x088);
    pub const NP_ENABLE: F64 = F64(0x090);
    pub const EVENT_INJ: F64 = F64(0x0A8);
    pub const N_CR3: F64 = F64(0x0B0);
    pub const ES: Seg = Seg(0x400);
    pub const CS: Seg = Seg(0x410);
    pub const SS: Seg = Seg(0x420);
    pub const DS: Seg = Seg(0x430);
    pub const FS: Seg = Seg(0x440);
    pub const GS: Seg = Seg(0x450);
    pub const GDTR: Seg = Seg(0x460);
    pub const LDTR: Seg = Seg(0x470);
    pub const IDTR: Seg = Seg(0x480);
    pub const TR: Seg = Seg(0x490);
    pub const CPL: F8 = F8(0x4CB);
    pub const EFER: F64 = F64(0x4D0);
    pub const CR4: F64 = F64(0x548);
    pub const CR3: F64 = F64(0x550);
    pub const CR0: F64 = F64(0x558);
    pub const DR7: F64 = F64(0x560);
    pub const DR6: F64 = F64(0x568);
    pub const RFLAGS: F64 = F64(0x570);
    pub const RIP: F64 = F64(0x578);
    pub const RSP: F64 = F64(0x5D8);
    pub const RAX: F64 = F64(0x5F8);
    pub const G_PAT: F64 = F64(0x668);

    /// The part of the state-save area a guest's context keeps between runs: ES through
    /// G_PAT (segments, descriptor tables, CPL, EFER, control and debug registers, RFLAGS,
    /// RIP, RSP, RAX, the `vmload` MSRs, CR2, PAT).
    pub const SAVED_STATE: core::ops::Range<usize> = 0x400..0x670;
}

/// Intercept bits of `INTERCEPT_MISC1`.
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const INIT: u32 = 1 << 3;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO: u32 = 1 << 27;
    pub const MSR: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of `INTERCEPT_MISC2`.
pub mod misc2 {
    pub const XSETBV: u32 = 1 << 13;
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
}

/// `V_INTR.V_INTR_MASKING`: the guest's RFLAGS.IF masks only virtual interrupts; physical ones
/// are masked by the RFLAGS.IF the TSM had at VMRUN.
pub const V_INTR_MASKING: u32 = 1 << 24;

/// #VMEXIT codes.
pub mod exit {
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const INVLPGA: u64 = 0x7A;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const XSETBV: u64 = 0x8D;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// `EVENT_INJ`: valid, error code valid, type "exception".
const EVENT_VALID: u64 = 1 << 31;
const EVENT_ERROR_VALID: u64 = 1 << 11;
const EVENT_TYPE_EXCEPTION: u64 = 3 << 8;
/// `TLB_CONTROL`: flush the whole TLB on this VMRUN (TCG has no flush-by-ASID).
const TLB_FLUSH_ALL: u8 = 1;

/// The guest's general-purpose registers VMRUN does not switch (rax and rsp are in the VMCB).
/// `run` reads and writes them by the offsets below.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Gprs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// The layout of one CPU's pages in the memory boot carves for them (never built as a Rust
/// value: its size and field offsets place the pages).
#[repr(C, align(4096))]
struct CpuPages {
    /// The host's VMCB on this CPU.
    host_vmcb: [u8; PAGE],
    /// The VMCB this CPU runs TVM vCPUs with (their state is copied in and out: `guest`).
    guest_vmcb: [u8; PAGE],
    /// The TSM's FS/GS/TR/LDTR/`syscall` MSRs while a guest runs (`vmsave`/`vmload`).
    tsm_state: [u8; PAGE],
    /// `VM_HSAVE_PA`.
    hsave: [u8; PAGE],
    /// The host's x87/SSE state while a TVM vCPU runs on this CPU (FXSAVE format).
    host_fpu: FxState,
}

/// An x87/SSE register image in the FXSAVE format.
#[repr(C, align(16))]
pub struct FxState(pub [u8; 512]);

/// The I/O permission map and the two MSR permission maps ([`MsrMap`]) in five pages, not
/// seven: every port and nearly every MSR is intercepted, so most of their pages are all ones
/// and are shared. An MSR map is two pages: its first ([`Maps::host_msrpm`],
/// [`Maps::tvm_msrpm`]) holds the ranges from 0 and from C000_0000h, its second the range
/// from C001_0000h (which the TSM opens nowhere, [`msrpm_page0`]) and reserved bytes: all ones.
/// The I/O map is 12 KiB, of which the CPU reads only the first 8 KiB and three bits past them
/// (a multi-byte access at port FFFFh): [`Maps::ones`], then `tvm_msrpm`'s first byte, whose
/// bits are MSRs 0..3's intercepts: set, as no map opens them.
#[repr(C, align(4096))]
struct Maps {
    /// The host's MSR map's first page; its second is the first of `ones`.
    host_msrpm: [u8; PAGE],
    /// All ones: the host's second MSR page and the I/O map's first 8 KiB.
    ones: [u8; 2 * PAGE],
    /// A TVM vCPU's MSR map's first page; its first byte ends the I/O map.
    tvm_msrpm: [u8; PAGE],
    /// All ones: the TVM's second MSR page.
    ones_tail: [u8; PAGE],
}

const _: () = {
    assert!(offset_of!(Maps, ones) == offset_of!(Maps, host_msrpm) + PAGE);
    assert!(offset_of!(Maps, tvm_msrpm) == offset_of!(Maps, ones) + 2 * PAGE);
    assert!(offset_of!(Maps, ones_tail) == offset_of!(Maps, tvm_msrpm) + PAGE);
};

/// Memory only the CPU and this module touch: the maps are handed to the CPU by physical
/// (identity) address, and Rust code writes them only in [`init_maps`] before any CPU runs a
/// guest.
struct Shared<T>(UnsafeCell<T>);
// SAFETY: see the type's doc: the maps are written once before any reader exists.
unsafe impl<T> Sync for Shared<T> {}

/// Bytes of one CPU's pages (four 4 KiB pages and the FXSAVE area, page-aligned).
pub const CPU_PAGES_BYTES: u64 = size_of::<CpuPages>() as u64;

/// Where boot carved the CPUs' pages: `cpus` blocks of [`CPU_PAGES_BYTES`] from `base`.
struct CpuPagesArea {
    base: u64,
    cpus: usize,
    /// A Linux host's I/O permission map ([`LINUX_IOPM_BYTES`] after the CPUs' pages; carved
    /// only for a Linux host, so the TSM's `.bss` does not carry it): the legacy devices it
    /// drives itself open ([`open_linux_ports`]), every other port intercepted as in [`Maps`]'s.
    linux_iopm: Option<u64>,
}

/// Bytes of a Linux host's I/O permission map (the size of every IOPM).
pub const LINUX_IOPM_BYTES: u64 = 3 * PAGE as u64;

static CPU_PAGES: Once<CpuPagesArea> = Once::new();

/// Hands this module the zeroed memory boot carved for `cpus` CPUs' pages, followed (for a
/// Linux host, `linux`) by the Linux host's I/O permission map. Only the first call counts;
/// before it no CPU has SVM pages ([`enable`], [`Vmcb::host`] and [`Vmcb::guest`] find none).
///
/// # Safety
/// `[base, base + cpus * CPU_PAGES_BYTES + (LINUX_IOPM_BYTES if linux))` must be zeroed,
/// 4 KiB-aligned TSM memory, identity-mapped read-write for ring 0, that no nested table maps
/// and nothing else uses for as long as the TSM runs.
pub unsafe fn set_cpu_pages(base: u64, cpus: usize, linux: bool) {
    let linux_iopm = linux.then(|| base + cpus as u64 * CPU_PAGES_BYTES);
    CPU_PAGES.call_once(|| CpuPagesArea {
        base,
        cpus,
        linux_iopm,
    });
}

/// The Linux host's I/O permission map, if boot carved one.
fn linux_iopm() -> Option<&'static mut [u8]> {
    let pa = CPU_PAGES.get()?.linux_iopm?;
    // SAFETY: `set_cpu_pages`'s contract: LINUX_IOPM_BYTES of TSM memory at `pa`, identity-
    // mapped, used by nothing else; only the boot CPU writes it, before any guest runs
    // (`init_linux_iopm`, `open_linux_ports`), and afterwards only the CPU reads it.
    Some(unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, LINUX_IOPM_BYTES as usize) })
}

/// The identity address of CPU `cpu`'s pages, `None` for a CPU boot carved none for.
fn cpu_pages(cpu: usize) -> Option<u64> {
    let area = CPU_PAGES.get().filter(|a| cpu < a.cpus)?;
    Some(area.base + cpu as u64 * CPU_PAGES_BYTES)
}

static MAPS: Shared<Maps> = Shared(UnsafeCell::new(Maps {
    host_msrpm: [0; PAGE],
    ones: [0; 2 * PAGE],
    tvm_msrpm: [0; PAGE],
    ones_tail: [0; PAGE],
}));

/// Bumped after every change to the host's nested table, before the shootdown that follows
/// it: a CPU whose host VMCB last ran an older generation flushes its TLB on the next VMRUN.
static NESTED_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Records a change to a nested table (call it after the change, before the shootdown).
pub fn nested_changed() {
    NESTED_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Why SVM cannot run the host on this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug, defmt::Format)]
pub enum SvmError {
    /// CPUID reports no SVM.
    NoSvm,
    /// CPUID reports no nested paging.
    NoNestedPaging,
    /// `VM_CR.SVMDIS`: firmware turned SVM off.
    Disabled,
}

/// Whether this CPU can run the host: SVM with nested paging, not disabled.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn check() -> Result<(), SvmError> {
    if cpu::cpuid(0x8000_0000, 0)[0] < 0x8000_000A || cpu::cpuid(0x8000_0001, 0)[2] & CPUID_SVM == 0
    {
        return Err(SvmError::NoSvm);
    }
    if cpu::cpuid(0x8000_000A, 0)[3] & CPUID_NP == 0 {
        return Err(SvmError::NoNestedPaging);
    }
    if cpu::rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
        return Err(SvmError::Disabled);
    }
    Ok(())
}

/// Turns SVM on for CPU `cpu` (`check` passed on it): `EFER.SVME`, its host-save area, and
/// its `vmsave` state for [`run`]'s exits to reload. Called once the CPU's descriptor tables
/// and `GS_BASE` are loaded (`boot::cpu_setup`): nothing changes the TSM's FS, GS, TR, LDTR or
/// `syscall`/`sysenter` MSRs afterwards, so one `vmsave` here serves every exit.
pub fn enable(cpu: usize) {
    let Some(pages) = cpu_pages(cpu) else {
        return;
    };
    let hsave = pages + offset_of!(CpuPages, hsave) as u64;
    let tsm_state = pages + offset_of!(CpuPages, tsm_state) as u64;
    // SAFETY: `check` found SVM enabled; SVME changes nothing the TSM's code relies on, and
    // the host-save area and `vmsave` page are this CPU's own 4 KiB-aligned pages of TSM
    // memory, which no nested table maps; `vmsave` writes only that page.
    unsafe {
        cpu::wrmsr(cpu::MSR_EFER, cpu::rdmsr(cpu::MSR_EFER) | EFER_SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, hsave);
        core::arch::asm!("vmsave rax", in("rax") tsm_state, options(nostack, preserves_flags));
    }
}

/// An MSR's bit pair in the permission map: (byte, bit of the read intercept), `None` for an
/// MSR outside the three ranges the map covers (always intercepted).
const fn msrpm_slot(msr: u32) -> Option<(usize, u32)> {
    let (base, offset) = match msr {
        0..=0x1FFF => (0, 0),
        0xC000_0000..=0xC000_1FFF => (0xC000_0000, 0x800),
        0xC001_0000..=0xC001_1FFF => (0xC001_0000, 0x1000),
        _ => return None,
    };
    let bit = (msr - base) as usize * 2;
    Some((offset + bit / 8, (bit % 8) as u32))
}

/// [`msrpm_slot`] of an MSR a map opens: in the map's first page, and not MSRs 0..3 (their
/// byte ends the I/O map: [`Maps`]). A compile-time error for any other.
const fn msrpm_page0(msr: u32) -> (usize, u32) {
    match msrpm_slot(msr) {
        Some((byte, bit)) if byte > 0 && byte < PAGE => (byte, bit),
        _ => panic!("an opened MSR must be in its map's first page, past byte 0"),
    }
}

/// The MSRs a guest reads and writes without a #VMEXIT: those VMRUN or `vmload`/`vmsave`
/// switch, so the TSM never runs on a guest's values and no guest sees another's. Every other
/// MSR is intercepted (`intercept` emulates or refuses it); TSC_AUX among them, which nothing
/// switches.
const PASSTHROUGH_MSRS: [u32; 10] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
];

/// Which MSR permission map a VMCB's guest gets ([`Vmcb::set_controls`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MsrMap {
    /// Every MSR but [`PASSTHROUGH_MSRS`] intercepted: EFER emulated (`intercept`).
    Host,
    /// As `Host`, and EFER read and written directly: a TVM vCPU's EFER is its own
    /// (`intercept`'s module doc says why that is sound).
    Tvm,
}

/// The opened MSRs' slots in the first page of an MSR map: the host's, then a TVM's (which
/// adds EFER: [`MsrMap::Tvm`]).
const HOST_OPEN: [(usize, u32); PASSTHROUGH_MSRS.len()] = {
    let mut slots = [(0, 0); PASSTHROUGH_MSRS.len()];
    let mut i = 0;
    while i < slots.len() {
        slots[i] = msrpm_page0(PASSTHROUGH_MSRS[i]);
        i += 1;
    }
    slots
};
const TVM_ONLY_OPEN: (usize, u32) = msrpm_page0(cpu::MSR_EFER);

/// Fills the I/O and MSR permission maps: every port and every MSR but
/// [`PASSTHROUGH_MSRS`] (and EFER in a TVM's) intercepted. The boot CPU calls it once, before
/// any guest runs.
// Boot only: compiled in tsm-hal-boot, for size (boot.rs says why).
#[inline]
pub fn init_maps() {
    // SAFETY: no CPU runs a guest yet (the module doc), so nothing else reads the maps.
    let maps = unsafe { &mut *MAPS.0.get() };
    maps.host_msrpm.fill(0xFF);
    maps.ones.fill(0xFF);
    maps.tvm_msrpm.fill(0xFF);
    maps.ones_tail.fill(0xFF);
    for (byte, bit) in HOST_OPEN {
        for page in [&mut maps.host_msrpm, &mut maps.tvm_msrpm] {
            if let Some(b) = page.get_mut(byte) {
                *b &= !(0b11 << bit);
            }
        }
    }
    let (byte, bit) = TVM_ONLY_OPEN;
    if let Some(b) = maps.tvm_msrpm.get_mut(byte) {
        *b &= !(0b11 << bit);
    }
}

/// Intercepts every port in the Linux host's I/O permission map (as `iopm` does), before
/// [`open_linux_ports`] opens its own. The boot CPU calls it once, before any guest runs.
pub fn init_linux_iopm() {
    if let Some(map) = linux_iopm() {
        map.fill(0xFF);
    }
}

/// Opens `count` ports from `first` in a Linux host's I/O permission map. The boot CPU calls
/// it, after [`init_linux_iopm`] and before any guest runs.
pub fn open_linux_ports(first: u16, count: u16) {
    let Some(map) = linux_iopm() else { return };
    for port in (usize::from(first)..).take(usize::from(count)) {
        if let Some(b) = map.get_mut(port / 8) {
            *b &= !(1 << (port % 8));
        }
    }
}

/// A VMCB, by its (identity) physical address.
pub struct Vmcb {
    pa: u64,
    /// The nested-table generation this VMCB last ran with; `None`: flush on every VMRUN.
    generation: Option<u64>,
    /// The owning CPU's page for the TSM's `vmsave` state (found once here, not per VMRUN).
    tsm_state: u64,
}

/// A segment register as the VMCB holds it.
#[derive(Clone, Copy)]
pub struct Segment {
    pub selector: u16,
    /// Attributes: the descriptor's access byte in 7:0, AVL, L, D/B, G in 11:8.
    pub attributes: u16,
    pub limit: u32,
    pub base: u64,
}

/// A whole [`vmcb::SAVED_STATE`] area, built at compile time: what [`Vmcb::load_image`]
/// installs in one copy instead of a zeroing and a store per field. Word-aligned for that
/// copy's `movsq`.
#[repr(C, align(8))]
pub struct StateImage(pub [u8; vmcb::SAVED_STATE.end - vmcb::SAVED_STATE.start]);

impl StateImage {
    /// Every field 0.
    pub const fn zero() -> Self {
        StateImage([0; vmcb::SAVED_STATE.end - vmcb::SAVED_STATE.start])
    }

    const fn put(mut self, offset: usize, bytes: &[u8]) -> Self {
        let at = offset - vmcb::SAVED_STATE.start;
        let mut i = 0;
        while i < bytes.len() {
            self.0[at + i] = bytes[i];
            i += 1;
        }
        self
    }

    /// With field `f` = `value`.
    pub const fn set64(self, f: vmcb::F64, value: u64) -> Self {
        self.put(f.0, &value.to_le_bytes())
    }

    /// With field `f` = `value`.
    pub const fn set8(self, f: vmcb::F8, value: u8) -> Self {
        self.put(f.0, &[value])
    }

    /// With segment `f` = `s`, packed as [`Vmcb::set_segment`] packs it.
    pub const fn set_segment(self, f: vmcb::Seg, s: Segment) -> Self {
        let packed = s.selector as u64 | ((s.attributes as u64) << 16) | ((s.limit as u64) << 32);
        self.put(f.0, &packed.to_le_bytes())
            .put(f.0 + 8, &s.base.to_le_bytes())
    }
}

/// The state-save area's reserved ranges (APM vol. 2, table B-2; Linux's `vmcb_save_area`
/// names them `reserved_0xd8` and `reserved_0x180`): no architectural register is kept there.
const RESERVED_EFER_CR4: core::ops::Range<usize> = 0x4D8..0x548;
const RESERVED_RIP_RSP: core::ops::Range<usize> = 0x580..0x5D8;
const _: () = {
    assert!(vmcb::EFER.0 + 8 == RESERVED_EFER_CR4.start && RESERVED_EFER_CR4.end == vmcb::CR4.0);
    assert!(vmcb::RIP.0 + 8 == RESERVED_RIP_RSP.start && RESERVED_RIP_RSP.end == vmcb::RSP.0);
    assert!(vmcb::SAVED_STATE.start.is_multiple_of(8) && vmcb::SAVED_STATE.end.is_multiple_of(8));
};

/// Copies a [`vmcb::SAVED_STATE`] area from `src` to `dst` (each its first byte), all but the
/// two reserved ranges: 53 of its 78 words in three `rep movsq` (icount counts a step each: ~60
/// instructions, where the whole area through `memcpy` was 94). *Why sound:* the ranges hold
/// no state (reserved) and the TSM enables nothing that gives them a meaning (no SEV-ES,
/// whose save area differs, no PMC virtualization), so a VMCB's ranges keep boot's zeros
/// (the carve zeroes its pages) and a context's keep VCPU_CREATE's: nothing of one guest
/// reaches another through them.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `SAVED_STATE.len()` bytes, not
/// overlapping.
unsafe fn copy_state(dst: *mut u8, src: *const u8) {
    const BASE: usize = vmcb::SAVED_STATE.start;
    // SAFETY: the three copies stay inside `[0, SAVED_STATE.len())` of both buffers (the
    // ranges' asserts above), which the caller guarantees; DF is clear (the ABI's state on
    // entry to `asm!`), so `rep movsq` goes up; the skips move both pointers alike.
    unsafe {
        core::arch::asm!(
            "mov ecx, {head}",
            "rep movsq",
            "add rsi, {skip1}",
            "add rdi, {skip1}",
            "mov ecx, {mid}",
            "rep movsq",
            "add rsi, {skip2}",
            "add rdi, {skip2}",
            "mov ecx, {tail}",
            "rep movsq",
            head = const (RESERVED_EFER_CR4.start - BASE) / 8,
            skip1 = const RESERVED_EFER_CR4.end - RESERVED_EFER_CR4.start,
            mid = const (RESERVED_RIP_RSP.start - RESERVED_EFER_CR4.end) / 8,
            skip2 = const RESERVED_RIP_RSP.end - RESERVED_RIP_RSP.start,
            tail = const (vmcb::SAVED_STATE.end - RESERVED_RIP_RSP.end) / 8,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            out("rcx") _,
            options(nostack),
        );
    }
}

impl Vmcb {
    /// CPU `cpu`'s host VMCB (`None` for a CPU without pages), zeroed by boot's carve.
    pub fn host(cpu: usize) -> Option<Vmcb> {
        let pages = cpu_pages(cpu)?;
        Some(Vmcb {
            pa: pages + offset_of!(CpuPages, host_vmcb) as u64,
            generation: Some(u64::MAX),
            tsm_state: pages + offset_of!(CpuPages, tsm_state) as u64,
        })
    }

    /// CPU `cpu`'s VMCB for TVM vCPUs (`None` for a CPU without pages). Every VMRUN with it
    /// flushes the TLB: the vCPUs of every TVM share it, and TCG has no flush-by-ASID to be
    /// finer with.
    pub fn guest(cpu: usize) -> Option<Vmcb> {
        let pages = cpu_pages(cpu)?;
        Some(Vmcb {
            pa: pages + offset_of!(CpuPages, guest_vmcb) as u64,
            generation: None,
            tsm_state: pages + offset_of!(CpuPages, tsm_state) as u64,
        })
    }

    /// Replaces all of [`vmcb::SAVED_STATE`] but its reserved ranges (which hold nothing,
    /// [`copy_state`]) with `image`: nothing of the last guest that ran with this VMCB is left
    /// for the next.
    pub fn load_image(&mut self, image: &StateImage) {
        // SAFETY: the image is `SAVED_STATE.len()` bytes of TSM memory (a static or the
        // caller's), never this VMCB's page.
        unsafe { self.load_state(image.0.as_ptr()) }
    }

    /// Copies [`vmcb::SAVED_STATE`] out to `dst`, but for its reserved ranges
    /// ([`copy_state`]).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `SAVED_STATE.len()` bytes, not overlapping the VMCB.
    pub unsafe fn save_state(&self, dst: *mut u8) {
        let src = self.at::<u8>(vmcb::SAVED_STATE.start).cast_const();
        // SAFETY: the source is inside this VMCB's page (identity-mapped, read-write for ring
        // 0); the caller guarantees the destination.
        unsafe { copy_state(dst, src) };
    }

    /// Copies [`vmcb::SAVED_STATE`] in from `src`, but for its reserved ranges
    /// ([`copy_state`]).
    ///
    /// # Safety
    /// `src` must be valid for reads of `SAVED_STATE.len()` bytes, not overlapping the VMCB.
    pub unsafe fn load_state(&mut self, src: *const u8) {
        let dst = self.at::<u8>(vmcb::SAVED_STATE.start);
        // SAFETY: as in `save_state`, the other way round.
        unsafe { copy_state(dst, src) };
    }

    /// The save area for the host's x87/SSE state of the CPU whose VMCB this is, found from
    /// this VMCB's CPU pages: a second look-up of them cost the entry of a vCPU its bounds
    /// checks again (~8 instructions, `vrun8`).
    pub fn host_fpu(&self) -> *mut FxState {
        (self.tsm_state - offset_of!(CpuPages, tsm_state) as u64
            + offset_of!(CpuPages, host_fpu) as u64) as *mut FxState
    }

    // Wrapping: `pa` is a page of boot's carve and every offset of `vmcb` lies inside the
    // page, so the add never wraps; its overflow test cost two instructions per VMCB access
    // that LLVM could not fold (every host and guest call has some, `vrun8`).
    fn at<T>(&self, offset: usize) -> *mut T {
        self.pa.wrapping_add(offset as u64) as *mut T
    }

    pub fn read64(&self, f: vmcb::F64) -> u64 {
        // SAFETY: `f` is a field of `vmcb` (inside the page, 8-aligned) of this VMCB, one of
        // this module's pages (identity-mapped read-write for ring 0); the CPU writes it only
        // inside `run`, on this CPU.
        unsafe { self.at::<u64>(f.0).read_volatile() }
    }

    pub fn write64(&mut self, f: vmcb::F64, value: u64) {
        // SAFETY: as in `read64`.
        unsafe { self.at::<u64>(f.0).write_volatile(value) }
    }

    pub fn write32(&mut self, f: vmcb::F32, value: u32) {
        // SAFETY: as in `read64`, a 4-aligned field.
        unsafe { self.at::<u32>(f.0).write_volatile(value) }
    }

    pub fn write8(&mut self, f: vmcb::F8, value: u8) {
        // SAFETY: as in `read64`, a byte field.
        unsafe { self.at::<u8>(f.0).write_volatile(value) }
    }

    pub fn set_segment(&mut self, f: vmcb::Seg, s: Segment) {
        let packed =
            u64::from(s.selector) | (u64::from(s.attributes) << 16) | (u64::from(s.limit) << 32);
        self.write64(vmcb::F64(f.0), packed);
        self.write64(vmcb::F64(f.0 + 8), s.base);
    }

    pub fn segment(&self, f: vmcb::Seg) -> Segment {
        let packed = self.read64(vmcb::F64(f.0));
        Segment {
            selector: packed as u16,
            attributes: (packed >> 16) as u16,
            limit: (packed >> 32) as u32,
            base: self.read64(vmcb::F64(f.0 + 8)),
        }
    }

    /// The intercepts (`exceptions`: one bit per vector), the permission maps (`msrs` the MSR
    /// map), the ASID and nested paging on `n_cr3`. No #VMEXIT writes any of them.
    pub fn set_controls(
        &mut self,
        misc1_bits: u32,
        misc2_bits: u32,
        exceptions: u32,
        msrs: MsrMap,
        asid: u32,
        n_cr3: u64,
    ) {
        let maps = MAPS.0.get() as u64;
        let iopm = maps + offset_of!(Maps, ones) as u64;
        let msrpm = maps
            + match msrs {
                MsrMap::Host => offset_of!(Maps, host_msrpm),
                MsrMap::Tvm => offset_of!(Maps, tvm_msrpm),
            } as u64;
        self.write32(vmcb::INTERCEPT_EXCEPTIONS, exceptions);
        self.write32(vmcb::INTERCEPT_MISC1, misc1_bits);
        self.write32(vmcb::INTERCEPT_MISC2, misc2_bits);
        self.write64(vmcb::IOPM_BASE, iopm);
        self.write64(vmcb::MSRPM_BASE, msrpm);
        self.write32(vmcb::ASID, asid);
        self.write64(vmcb::NP_ENABLE, 1);
        self.set_nested_root(n_cr3);
    }

    /// Nested paging on `n_cr3` (with the controls [`Vmcb::set_controls`] wrote).
    pub fn set_nested_root(&mut self, n_cr3: u64) {
        self.write64(vmcb::N_CR3, n_cr3);
    }

    /// Makes this VMCB's guest use a Linux host's I/O permission map ([`open_linux_ports`]);
    /// without one (boot carved none: no Linux host) the guest keeps the map that intercepts
    /// every port.
    pub fn use_linux_iopm(&mut self) {
        if let Some(pa) = CPU_PAGES.get().and_then(|a| a.linux_iopm) {
            self.write64(vmcb::IOPM_BASE, pa);
        }
    }

    /// Moves the guest's RIP past an intercepted instruction of `len` bytes (TCG saves no
    /// next RIP; every instruction the TSM skips has one fixed encoding, and a guest that
    /// prefixes it only misleads itself).
    pub fn skip(&mut self, len: u64) {
        let rip = self.read64(vmcb::RIP);
        self.write64(vmcb::RIP, rip.wrapping_add(len));
    }

    /// Injects exception `vector` with `error_code` (if `Some`) on the next VMRUN.
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut event = u64::from(vector) | EVENT_TYPE_EXCEPTION | EVENT_VALID;
        if let Some(e) = error_code {
            event |= EVENT_ERROR_VALID | (u64::from(e) << 32);
        }
        self.write64(vmcb::EVENT_INJ, event);
    }

    /// Requests a full TLB flush on the next VMRUN if a nested table changed since this VMCB
    /// last ran. Called with the global interrupt flag clear, right before VMRUN (`run`):
    /// a shootdown NMI for a change after this read stays pending and forces a #VMEXIT the
    /// moment the guest starts, so the flush it asks for happens on the following VMRUN.
    fn prepare_tlb(&mut self) {
        let flush = match self.generation.as_mut() {
            Some(last) => {
                let now = NESTED_GENERATION.load(Ordering::SeqCst);
                let changed = now != *last;
                *last = now;
                changed
            }
            None => true,
        };
        self.write8(vmcb::TLB_CONTROL, if flush { TLB_FLUSH_ALL } else { 0 });
    }

    /// Runs the guest until its next #VMEXIT; returns the exit code.
    pub fn run(&mut self, gprs: &mut Gprs) -> u64 {
        // SAFETY: `clgi` holds off NMIs until VMRUN (the shootdown protocol, `prepare_tlb`).
        // Not `nomem`: the asm must also be a compiler barrier, or the generation load of
        // `prepare_tlb` could be hoisted above it, and a shootdown acknowledged in between
        // would leave this CPU's next VMRUN without the flush it asked for.
        unsafe { core::arch::asm!("clgi", options(nostack, preserves_flags)) };
        self.prepare_tlb();
        // SAFETY: `svm_run` takes this VMCB (a page of this module, set up by the caller with
        // the intercepts that keep the guest off the TSM: nested paging on the host's table,
        // which maps no TSM memory), `gprs` (ours, exclusively borrowed) and this CPU's
        // state-save page; it returns on the #VMEXIT with the TSM's registers, stack and
        // `vmsave` state restored, IF clear and GIF set again (IF is set only while GIF is
        // clear, so no interrupt reaches the TSM).
        unsafe { svm_run(self.pa, gprs, self.tsm_state) };
        self.write64(vmcb::EVENT_INJ, 0);
        self.read64(vmcb::EXIT_CODE)
    }

    /// Whether the state-save area holds the TSM's own state at the instruction after its
    /// `vmrun` (the TSM's CR3 and that RIP) instead of the guest's: what QEMU's TCG left in
    /// a host VMCB once in a four-CPU soak under shootdown NMIs (docs/assurance.md, "The
    /// x86_64 long run"). Running it would run the TSM's state as a guest; the caller ends
    /// the run instead. A guest can forge the two values, and then only ends its own run.
    pub fn holds_tsm_state(&self) -> bool {
        self.read64(vmcb::RIP) == core::ptr::addr_of!(svm_run_resume) as u64
            && self.read64(vmcb::CR3) == cpu::cr3()
    }

    /// Logs what the next report of the anomaly [`Vmcb::holds_tsm_state`] detects needs:
    /// the exit that carried it and whether this CPU's host-save area is where boot put it.
    pub fn report_tsm_state(&self, cpu: usize, code: u64) {
        defmt::error!(
            "CPU {=usize}: VMCB {=u64:#x} holds the TSM's own state after exit {=u64:#x} (EXITINFO1 {=u64:#x}, EXITINTINFO {=u64:#x}); VM_HSAVE_PA {=u64:#x}, rsp {=u64:#x}, rax {=u64:#x}: the guest's state is lost, its run ends",
            cpu,
            self.pa,
            code,
            self.read64(vmcb::EXIT_INFO1),
            self.read64(vmcb::EXIT_INT_INFO),
            cpu::rdmsr(MSR_VM_HSAVE_PA),
            self.read64(vmcb::RSP),
            self.read64(vmcb::RAX)
        );
    }
}

unsafe extern "C" {
    fn svm_run(vmcb: u64, gprs: *mut Gprs, tsm_state: u64);
    /// The instruction after `svm_run`'s `vmrun` (never called: its address is compared).
    static svm_run_resume: u8;
}

core::arch::global_asm!(
    ".pushsection .text.svm_run, \"ax\"",
    ".balign 16",
    // svm_run(vmcb = rdi, gprs = rsi, tsm_state = rdx), GIF clear.
    "svm_run:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdx",
    "push rsi",
    "push rdi",
    // The TSM's `vmsave` state is `enable`'s, which nothing changes.
    "mov rax, rdi",
    "vmload rax",
    "mov rbx, [rsi + {rbx}]",
    "mov rcx, [rsi + {rcx}]",
    "mov rdx, [rsi + {rdx}]",
    "mov rdi, [rsi + {rdi}]",
    "mov rbp, [rsi + {rbp}]",
    "mov r8, [rsi + {r8}]",
    "mov r9, [rsi + {r9}]",
    "mov r10, [rsi + {r10}]",
    "mov r11, [rsi + {r11}]",
    "mov r12, [rsi + {r12}]",
    "mov r13, [rsi + {r13}]",
    "mov r14, [rsi + {r14}]",
    "mov r15, [rsi + {r15}]",
    "mov rsi, [rsi + {rsi}]",
    // IF set for VMRUN alone (GIF, clear, still holds every interrupt off in the TSM): it is
    // the host IF a guest with V_INTR_MASKING is run under, so a physical interrupt reaches the
    // guest's INTR intercept (a #VMEXIT) instead of waiting for the host. A guest without
    // V_INTR_MASKING (the host) masks them with its own IF, which this does not touch.
    "sti",
    "vmrun rax",
    ".global svm_run_resume",
    "svm_run_resume:",
    // #VMEXIT: rax (the VMCB) and rsp are the TSM's again; [rsp] vmcb, +8 gprs, +16 state.
    "push rsi",
    "mov rsi, [rsp + 16]",
    "mov [rsi + {rbx}], rbx",
    "mov [rsi + {rcx}], rcx",
    "mov [rsi + {rdx}], rdx",
    "mov [rsi + {rdi}], rdi",
    "mov [rsi + {rbp}], rbp",
    "mov [rsi + {r8}], r8",
    "mov [rsi + {r9}], r9",
    "mov [rsi + {r10}], r10",
    "mov [rsi + {r11}], r11",
    "mov [rsi + {r12}], r12",
    "mov [rsi + {r13}], r13",
    "mov [rsi + {r14}], r14",
    "mov [rsi + {r15}], r15",
    "pop qword ptr [rsi + {rsi}]",
    "mov rax, [rsp]",
    "vmsave rax",
    "mov rax, [rsp + 16]",
    "vmload rax",
    // The #VMEXIT restored the IF set above: cleared before GIF lets an interrupt through, so
    // the TSM never takes one (an intercepted interrupt stays pending for the host).
    "cli",
    "stgi",
    "add rsp, 24",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".popsection",
    rbx = const offset_of!(Gprs, rbx),
    rcx = const offset_of!(Gprs, rcx),
    rdx = const offset_of!(Gprs, rdx),
    rsi = const offset_of!(Gprs, rsi),
    rdi = const offset_of!(Gprs, rdi),
    rbp = const offset_of!(Gprs, rbp),
    r8 = const offset_of!(Gprs, r8),
    r9 = const offset_of!(Gprs, r9),
    r10 = const offset_of!(Gprs, r10),
    r11 = const offset_of!(Gprs, r11),
    r12 = const offset_of!(Gprs, r12),
    r13 = const offset_of!(Gprs, r13),
    r14 = const offset_of!(Gprs, r14),
    r15 = const offset_of!(Gprs, r15),
);
