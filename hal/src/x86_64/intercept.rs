//! What every SVM guest of the TSM (the host, TVM vCPUs) gets at entry and what its #VMEXITs
//! mean, up to the call gate: the one run loop of `host` and `guest`.
//!
//! **Entry** ([`enter_flat32`]): like a PVH boot loader, 32-bit protected mode with paging off:
//! flat 4 GiB code (selector 0x08) and data (0x10) segments, CPL 0, `CR0 = PE|ET`, interrupts
//! off, no GDT or IDT of its own yet. The guest owns its rings, page tables, GDT and IDT; the
//! TSM owns the nested page table under them.
//!
//! **Exits** ([`run`]). The call gate is `vmmcall` (rax = function ID, arguments and results in
//! the registers of docs/abi.md); the TSM moves RIP past it. Besides it, everything that would
//! let a guest escape or reach the TSM's hardware is intercepted ([`INTERCEPTS_MISC1`],
//! [`INTERCEPTS_MISC2`]) and completed here:
//! - VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA: #UD, as on a CPU without SVM (a
//!   guest VMSAVE would write host-physical memory: PLATFORM-FACTS.md);
//! - XSETBV: #UD. XCR0 is not switched by VMRUN, and the register state beyond x87/SSE is not
//!   kept per guest (`guest` switches the FXSAVE image only), so no guest gets XSAVE or AVX;
//! - CPUID: answered from the CPU's own, with SVM hidden (`8000_0001h ECX.SVM` clear, leaf
//!   `8000_000Ah` zero) and so is XSAVE (leaf 1's XSAVE, OSXSAVE and AVX, leaf 7's AVX2 and
//!   AVX-512 bits, leaf 0Dh zero), and so are the local APIC, x2APIC, MTRRs and machine checks,
//!   which no guest has;
//! - MSRs: every one but those VMRUN/`vmload` switch (`svm::PASSTHROUGH_MSRS`), and for a TVM
//!   vCPU EFER (below). The host's EFER is emulated: reads hide SVME (which VMRUN requires
//!   set), writes may change SCE, LME (not with paging on) and NXE, anything else is #GP. Every
//!   other intercepted MSR raises #GP(0), as an absent MSR does: among them VM_CR and
//!   VM_HSAVE_PA, the APIC base and the x2APIC registers (so no ICR write, hence no INIT or
//!   SIPI, leaves a guest), MTRRs, the SMM ranges and TSC_AUX (which VMRUN does not switch);
//!
//! **A TVM vCPU's EFER is its own** (`svm::MsrMap::Tvm`): it reads and writes it without an
//! exit, as an SEV-ES guest does (whose EFER writes a hypervisor can only watch after the fact,
//! never refuse). Every guest that leaves 32-bit entry for long mode writes EFER.LME once, and
//! the emulation cost each run a #VMEXIT and VMRUN (132 instructions, docs/benchmarks.md
//! "vrun7"). Why nothing the TSM or another guest relies on is in it:
//! - VMRUN loads the vCPU's EFER from its VMCB and the #VMEXIT saves it there and loads the
//!   TSM's own from the host-save area, so the TSM never runs on a guest's EFER. The nested
//!   walk's format is the host's paging mode at VMRUN, not the guest's EFER (its NXE included).
//! - The bits that change only how the vCPU's own instructions behave: SCE, NXE, LME/LMA,
//!   LMSLE (segment limits), FFXSR (its FXSAVE/FXRSTOR: the TSM's, which save and restore the
//!   vCPU's image, run under the TSM's EFER), TCE (how far its INVLPG flushes: its own TLB
//!   entries, and every TVM VMRUN flushes the whole TLB, `guest`), MCOMMIT, INTWB (its
//!   WBINVD, allowed anyway), UAIE (its linear addresses), AIBRSE (branch-prediction
//!   protection of its own CPL 0; the TSM's rests on the TSM's EFER and the exit).
//! - SVME: clearing it takes the vCPU's SVM instructions with it: its next `vmmcall` raises #UD
//!   where the CPU checks SVME first (QEMU does), which the vCPU intercepts like every exception
//!   (a FAULT exit, vector 6); and whatever exit comes next, every later VMRUN of its state
//!   fails its consistency check with VMEXIT_INVALID (-1): a FAULT exit with
//!   vector 0xFF and exit code FFFF_FFFFh (docs/abi.md), before a guest instruction runs, the
//!   TSM's state restored as after any exit. The vCPU has only stopped itself; the host
//!   destroys it. Seeing SVME set tells the guest nothing it does not know (it calls the TSM
//!   with `vmmcall`); CPUID still hides SVM, and the SVM instructions stay intercepted.
//! - A reserved bit: WRMSR raises #GP (a FAULT exit); QEMU's TCG drops it silently. Were one
//!   set, or LME changed under paging (#GP on hardware, taken by TCG), VMRUN's consistency
//!   checks would refuse the state as above.
//!
//! The `isolation` scenario's `BreakEntry` vCPU writes a reserved bit and then clears SVME: its
//! two FAULT exits above, and the TVM's other vCPUs and the host carry on. The host keeps the
//! emulation: it would gain one exit per boot.
//! - port I/O: every port; IN reads all-ones, OUT is dropped, string forms raise #GP(0). The
//!   TSM's own ports (COM1, the exit port, fw_cfg with its DMA interface, PCI's CF8/CFC) are
//!   among them; the host reaches its devices through MMIO (ECAM, BARs). A Linux host has its
//!   own permission map with the legacy PC devices open, and two chipset ports it reaches
//!   through `linux::io`;
//! - INVD (it would drop the TSM's dirty cache lines): done as a no-op, the caches kept;
//! - NMIs (the TSM's shootdown, taken by its handler once the exit has set GIF again) and
//!   INIT (which TCG never raises: PLATFORM-FACTS.md): the guest just goes on, unless the
//!   VMCB came back holding the TSM's own state ([`Vmcb::holds_tsm_state`]): then the exit is
//!   the caller's, which ends the run rather than run the TSM's state as a guest.
//!
//! Every other exit (a nested page fault, a triple fault, an intercepted exception) is the
//! caller's.

use tsm_abi::regs::CallRegs;

use super::cpu;
use super::linux::{self, Port};
use super::svm::{self, Gprs, Segment, StateImage, Vmcb, exit, misc1, misc2, vmcb};
use crate::x86_walk::{CR0_PG, EFER_LMA};

/// The intercepts every guest gets (module doc).
pub const INTERCEPTS_MISC1: u32 = misc1::NMI
    | misc1::INIT
    | misc1::CPUID
    | misc1::INVD
    | misc1::INVLPGA
    | misc1::IOIO
    | misc1::MSR
    | misc1::SHUTDOWN;
pub const INTERCEPTS_MISC2: u32 = misc2::XSETBV
    | misc2::VMRUN
    | misc2::VMMCALL
    | misc2::VMLOAD
    | misc2::VMSAVE
    | misc2::STGI
    | misc2::CLGI
    | misc2::SKINIT;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;
/// The EFER bits a guest may write.
const EFER_GUEST_WRITABLE: u64 = cpu::EFER_SCE | EFER_LME | EFER_NXE;
/// The power-on PAT.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

pub const VECTOR_UD: u8 = 6;
pub const VECTOR_GP: u8 = 13;

/// Instruction lengths of the intercepted instructions the TSM completes (no next-RIP in TCG;
/// every one has a single encoding, and a guest that prefixes one only misleads itself).
const LEN_VMMCALL: u64 = 3;
const LEN_TWO_BYTE: u64 = 2;

/// EXITINFO1 of an IOIO exit: IN (else OUT), string, operand size bits.
const IO_IN: u64 = 1 << 0;
const IO_STRING: u64 = 1 << 2;
const IO_SIZE_8: u64 = 1 << 4;
const IO_SIZE_16: u64 = 1 << 5;

/// A 32-bit flat segment: base 0, limit 4 GiB, D/B and G set, `access` its access byte.
const fn flat32(selector: u16, access: u16) -> Segment {
    Segment {
        selector,
        attributes: access | (1 << 10) | (1 << 11),
        limit: u32::MAX,
        base: 0,
    }
}

const EMPTY_SEGMENT: Segment = Segment {
    selector: 0,
    attributes: 0,
    limit: 0,
    base: 0,
};

/// The entry state of the module doc, RIP 0: the whole state-save area, every field not named
/// here 0.
static FLAT32: StateImage = {
    let data = flat32(0x10, 0x93);
    StateImage::zero()
        .set_segment(vmcb::CS, flat32(0x08, 0x9B))
        .set_segment(vmcb::DS, data)
        .set_segment(vmcb::ES, data)
        .set_segment(vmcb::SS, data)
        .set_segment(vmcb::FS, data)
        .set_segment(vmcb::GS, data)
        .set_segment(vmcb::GDTR, EMPTY_SEGMENT)
        .set_segment(vmcb::IDTR, EMPTY_SEGMENT)
        .set_segment(vmcb::LDTR, EMPTY_SEGMENT)
        // A present, busy 32-bit TSS: what a task register holds after boot firmware.
        .set_segment(
            vmcb::TR,
            Segment {
                selector: 0,
                attributes: 0x8B,
                limit: 0xFFFF,
                base: 0,
            },
        )
        .set8(vmcb::CPL, 0)
        .set64(vmcb::EFER, svm::EFER_SVME)
        .set64(vmcb::CR0, CR0_PE | CR0_ET)
        .set64(vmcb::DR7, 0x400)
        .set64(vmcb::DR6, 0xFFFF_0FF0)
        .set64(vmcb::RFLAGS, 1 << 1)
        .set64(vmcb::G_PAT, PAT_DEFAULT)
};

/// Replaces `v`'s state-save area (all of it that holds state: `Vmcb::load_image`) with the
/// entry state of the module doc, RIP = `entry`: one copy of a compile-time image ([`FLAT32`]),
/// so nothing of a guest that ran before with `v` is left.
pub fn enter_flat32(v: &mut Vmcb, entry: u64) {
    v.load_image(&FLAT32);
    v.write64(vmcb::RIP, entry);
}

/// Gives `v`'s flat segments (as [`enter_flat32`] wrote them) the selectors of Linux's 32-bit
/// boot protocol: code 0x10, data 0x18.
pub fn boot_protocol_selectors(v: &mut Vmcb) {
    v.set_segment(vmcb::CS, flat32(0x10, 0x9B));
    for s in [vmcb::DS, vmcb::ES, vmcb::SS, vmcb::FS, vmcb::GS] {
        v.set_segment(s, flat32(0x18, 0x93));
    }
}

/// Why [`run`] stopped.
pub enum Stop {
    /// A `vmmcall`, RIP already past it; registers copied once.
    Call(CallRegs),
    /// An exit this module does not complete: its #VMEXIT code.
    Exit(u64),
}

/// Runs the guest of `v` on CPU `cpu` until it makes a call or an exit the caller handles.
/// `linux_host`: the guest is a Linux host, whose intercepted chipset ports `linux::io` serves.
// Inline, with the exits completed here out of line (`other`): called, the function's frame and
// its `Stop` returned through memory, then moved into the caller's exit enum, cost every host
// and guest call ~30 instructions (docs/benchmarks.md, "perf2").
#[inline(always)]
pub fn run(v: &mut Vmcb, g: &mut Gprs, cpu: usize, linux_host: bool) -> Stop {
    loop {
        let code = v.run(g);
        if code == exit::VMMCALL {
            v.skip(LEN_VMMCALL);
            return Stop::Call(CallRegs {
                fid: v.read64(vmcb::RAX),
                args: [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9],
            });
        }
        if let Some(stop) = other(v, g, cpu, code, linux_host) {
            return stop;
        }
    }
}

/// Completes exit `code` (no call) if it is this module's: `None` then, and the guest runs on;
/// otherwise what the caller gets.
#[inline(never)]
fn other(v: &mut Vmcb, g: &mut Gprs, cpu: usize, code: u64, linux_host: bool) -> Option<Stop> {
    match code {
        exit::CPUID => cpuid(v, g),
        exit::MSR => msr(v, g, cpu),
        exit::IOIO => return io(v, linux_host),
        exit::INVD => v.skip(LEN_TWO_BYTE),
        exit::NMI | exit::INIT => {
            if v.holds_tsm_state() {
                v.report_tsm_state(cpu, code);
                return Some(Stop::Exit(code));
            }
        }
        exit::VMRUN
        | exit::VMLOAD
        | exit::VMSAVE
        | exit::STGI
        | exit::CLGI
        | exit::SKINIT
        | exit::INVLPGA
        | exit::XSETBV => v.inject_exception(VECTOR_UD, None),
        code => return Some(Stop::Exit(code)),
    }
    None
}

/// `CPUID 1 ECX`: XSAVE, OSXSAVE, AVX.
const CPUID1_XSAVE: u32 = 1 << 26;
const CPUID1_OSXSAVE: u32 = 1 << 27;
const CPUID1_AVX: u32 = 1 << 28;
/// `CPUID 1 ECX`: x2APIC.
const CPUID1_X2APIC: u32 = 1 << 21;
/// `CPUID 1 EDX` and `8000_0001h EDX`: what a guest does not have: the local APIC (outside its
/// nested table), MTRRs and machine checks (their MSRs raise #GP). A kernel that saw them
/// would touch them; Linux takes a #GP on a machine-check MSR for a hardware fault and panics.
const CPUID_EDX_ABSENT: u32 = (1 << 7) | (1 << 9) | (1 << 12) | (1 << 14);
/// `CPUID 7.0 EBX`: the features whose state only XSAVE manages (AVX2, AVX-512 F/DQ/IFMA/PF/
/// ER/CD/BW/VL).
const CPUID7_EXTENDED_STATE: u32 = (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);

/// CPUID from the CPU's own answer, SVM and XSAVE hidden.
fn cpuid(v: &mut Vmcb, g: &mut Gprs) {
    let leaf = v.read64(vmcb::RAX) as u32;
    let mut r = cpu::cpuid(leaf, g.rcx as u32);
    match leaf {
        1 => {
            r[2] &= !(CPUID1_XSAVE | CPUID1_OSXSAVE | CPUID1_AVX | CPUID1_X2APIC);
            r[3] &= !CPUID_EDX_ABSENT;
        }
        0x8000_0001 => {
            r[2] &= !svm::CPUID_SVM;
            r[3] &= !CPUID_EDX_ABSENT;
        }
        7 => r[1] &= !CPUID7_EXTENDED_STATE,
        0xD | 0x8000_000A => r = [0; 4],
        _ => {}
    }
    v.write64(vmcb::RAX, u64::from(r[0]));
    g.rbx = u64::from(r[1]);
    g.rcx = u64::from(r[2]);
    g.rdx = u64::from(r[3]);
    v.skip(LEN_TWO_BYTE);
}

const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8FF;

/// RDMSR/WRMSR: EFER emulated (a TVM vCPU's is not intercepted), everything else #GP(0)
/// (module doc).
fn msr(v: &mut Vmcb, g: &mut Gprs, cpu: usize) {
    let msr = g.rcx as u32;
    let write = v.read64(vmcb::EXIT_INFO1) & 1 != 0;
    let efer = v.read64(vmcb::EFER);
    let done = match (msr, write) {
        (cpu::MSR_EFER, false) => {
            let value = efer & !svm::EFER_SVME;
            v.write64(vmcb::RAX, value & 0xFFFF_FFFF);
            g.rdx = value >> 32;
            true
        }
        (cpu::MSR_EFER, true) => {
            let value = (g.rdx << 32) | (v.read64(vmcb::RAX) & 0xFFFF_FFFF);
            let paging = v.read64(vmcb::CR0) & CR0_PG != 0;
            let allowed = value & !(EFER_GUEST_WRITABLE | EFER_LMA) == 0
                && !(paging && (value ^ efer) & EFER_LME != 0);
            if allowed {
                let new = (value & EFER_GUEST_WRITABLE) | (efer & EFER_LMA) | svm::EFER_SVME;
                v.write64(vmcb::EFER, new);
            }
            allowed
        }
        _ => false,
    };
    if done {
        v.skip(LEN_TWO_BYTE);
        return;
    }
    if X2APIC_MSRS.contains(&msr) || msr == svm::MSR_VM_CR || msr == svm::MSR_VM_HSAVE_PA {
        defmt::debug!(
            "CPU {=usize}: guest {=str} of MSR {=u32:#x} refused",
            cpu,
            if write { "write" } else { "read" },
            msr
        );
    }
    v.inject_exception(VECTOR_GP, Some(0));
}

/// Port I/O: IN reads all-ones, OUT is dropped, string forms #GP(0); a Linux host's chipset
/// ports are `linux::io`'s, and its power-off request stops the run as SYSTEM_OFF(0), its
/// reset request as SYSTEM_OFF(1).
fn io(v: &mut Vmcb, linux_host: bool) -> Option<Stop> {
    let info = v.read64(vmcb::EXIT_INFO1);
    if info & IO_STRING != 0 {
        v.inject_exception(VECTOR_GP, Some(0));
        return None;
    }
    let size: u8 = if info & IO_SIZE_8 != 0 {
        1
    } else if info & IO_SIZE_16 != 0 {
        2
    } else {
        4
    };
    let port = (info >> 16) as u16;
    let rax = v.read64(vmcb::RAX);
    let write = (info & IO_IN == 0).then_some(rax as u32);
    let port_result = if linux_host {
        linux::io(port, size, write)
    } else {
        Port::NotLinux
    };
    match port_result {
        Port::PowerOff => return Some(Stop::Call(linux::power_off_call(false))),
        Port::Reset => return Some(Stop::Call(linux::power_off_call(true))),
        Port::In(value) => {
            let mask = if size == 4 {
                u64::MAX
            } else {
                (1u64 << (8 * size)) - 1
            };
            let kept = if size == 4 { 0 } else { rax & !mask };
            v.write64(vmcb::RAX, kept | (u64::from(value) & mask));
        }
        Port::Done => {}
        Port::NotLinux if info & IO_IN != 0 => {
            let ones = if info & IO_SIZE_8 != 0 {
                0xFF
            } else if info & IO_SIZE_16 != 0 {
                0xFFFF
            } else {
                0xFFFF_FFFF
            };
            // A 32-bit IN zero-extends into rax; narrower ones keep the upper bits.
            let kept = if ones == 0xFFFF_FFFF { 0 } else { rax & !ones };
            v.write64(vmcb::RAX, kept | ones);
        }
        Port::NotLinux => {}
    }
    // EXITINFO2 of an IOIO exit is the next instruction's RIP, even without next-RIP saving.
    let next = v.read64(vmcb::EXIT_INFO2);
    v.write64(vmcb::RIP, next);
    None
}
