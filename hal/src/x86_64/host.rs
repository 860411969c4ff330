//! The host as an SVM guest: its VMCB on each CPU, how it starts, and what each #VMEXIT means
//! (the HAL's [`HostCpu`]).
//!
//! **Entry.** Like a PVH boot loader the TSM enters the host at [`HOST_ENTRY`] in 32-bit
//! protected mode with paging off: flat 4 GiB code (selector 0x08) and data (0x10) segments,
//! CPL 0, `CR0 = PE|ET`, interrupts off, no GDT or IDT of its own yet (the host loads its
//! own), with edi = DRAM base, esi = DRAM size (DRAM lies below 4 GiB on q35), edx = CPU index,
//! ecx = TSC ticks per microsecond. The host owns its rings, page tables, GDT and IDT; the TSM
//! owns the nested page table under them (`paging`), ASID [`HOST_ASID`].
//!
//! **Exits.** The call gate is `vmmcall` (rax = function ID, arguments and results in the
//! registers of docs/abi.md); the TSM moves RIP past it. Besides it, everything that would let
//! the host escape or reach the TSM's hardware is intercepted:
//! - VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA: #UD, as on a CPU without SVM (a
//!   guest VMSAVE would write host-physical memory: PLATFORM-FACTS.md);
//! - CPUID: answered from the CPU's own, with SVM hidden (`8000_0001h ECX.SVM` clear, leaf
//!   `8000_000Ah` zero);
//! - MSRs: every one but those VMRUN/`vmload` switch (`svm::PASSTHROUGH_MSRS`). EFER is
//!   emulated: reads hide SVME (which VMRUN requires set), writes may change SCE, LME (not with
//!   paging on) and NXE, anything else is #GP. Every other intercepted MSR raises #GP(0), as an
//!   absent MSR does: among them VM_CR and VM_HSAVE_PA, the APIC base and the x2APIC registers
//!   (so no ICR write, hence no INIT or SIPI, leaves the host), MTRRs and the SMM ranges;
//! - port I/O: every port; IN reads all-ones, OUT is dropped, string forms raise #GP(0). The
//!   TSM's own ports (COM1, the exit port, fw_cfg with its DMA interface, PCI's CF8/CFC) are
//!   among them; the host's devices are reached through MMIO (ECAM, BARs);
//! - INVD (it would drop the TSM's dirty cache lines): done as a no-op, the caches kept;
//! - NMIs (the TSM's shootdown, taken by its handler once the exit has set GIF again) and
//!   INIT (which TCG never raises: PLATFORM-FACTS.md);
//! - a triple fault (SHUTDOWN): the run ends.
//!
//! The host has no local APIC: its page is outside the nested table. The TSM starts every CPU
//! itself at boot and enters the host on each (`smp`); interrupts are not intercepted, and the
//! host enables none.
//!
//! **Blocked accesses.** A host access to anything its nested table does not map (delegated
//! and TVM-private granules, the TSM's memory, the VT-d registers, the local APIC, unassigned
//! addresses) is a nested page fault. The TSM logs it with the guest-physical address and
//! injects #GP(0) at the faulting instruction, which did not happen: the x86 exception a kernel
//! gets for an access it may not make (Linux fixes up or kills the task); a #PF would send a
//! kernel to its own page tables, which map the address. A fault while the CPU delivers an
//! event, or on the host's own page-table walk, ends the run: injecting into a half-delivered
//! event could not leave the host's state consistent (a triple fault would end it too).

use tsm_abi::regs::{CallRegs, CallResult};

use super::cpu;
use super::paging;
use super::svm::{self, Gprs, Segment, Vmcb, exit, misc1, misc2, vmcb};
use crate::platform::run::{HostCpu, HostExit, HostTrap};

/// The host payload's entry: the first byte of its image (docs/design.md).
pub const HOST_ENTRY: u64 = 0x100_0000;
/// The host's address-space tag.
const HOST_ASID: u32 = 1;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// The EFER bits the host may write.
const EFER_HOST_WRITABLE: u64 = cpu::EFER_SCE | EFER_LME | EFER_NXE;
/// The power-on PAT.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

const VECTOR_UD: u8 = 6;
const VECTOR_GP: u8 = 13;

/// Instruction lengths of the intercepted instructions the TSM completes (no next-RIP in TCG).
const LEN_VMMCALL: u64 = 3;
const LEN_TWO_BYTE: u64 = 2;

/// EXITINFO1 of a nested page fault: bit 1 write, bit 4 instruction fetch, bit 33 during the
/// guest's own page-table walk.
const NPF_WRITE: u64 = 1 << 1;
const NPF_FETCH: u64 = 1 << 4;
const NPF_WALK: u64 = 1 << 33;
/// EXITINTINFO: an event was being delivered.
const INT_INFO_VALID: u64 = 1 << 31;

/// EXITINFO1 of an IOIO exit: IN (else OUT), string, operand size bits.
const IO_IN: u64 = 1 << 0;
const IO_STRING: u64 = 1 << 2;
const IO_SIZE_8: u64 = 1 << 4;
const IO_SIZE_16: u64 = 1 << 5;

const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8FF;

/// The host's context on one CPU: its VMCB and the registers VMRUN does not switch.
pub struct HostContext {
    cpu: usize,
    vmcb: Vmcb,
    gprs: Gprs,
}

/// A host exit that is not a call, as the VMCB recorded it.
#[derive(Clone, Copy, Debug)]
pub struct HostFault {
    code: u64,
    info1: u64,
    info2: u64,
    int_info: u64,
    rip: u64,
}

/// A 32-bit flat segment: base 0, limit 4 GiB, D/B and G set, `access` its access byte.
fn flat32(selector: u16, access: u16) -> Segment {
    Segment {
        selector,
        attributes: access | (1 << 10) | (1 << 11),
        limit: u32::MAX,
        base: 0,
    }
}

impl HostContext {
    /// CPU `cpu`'s host, about to start at `entry` with `args` in edi, esi, edx, ecx (module
    /// doc); `None` if the CPU has no VMCB (`cpu` ≥ `percpu::MAX_CPUS`).
    pub fn new(cpu: usize, entry: u32, args: [u32; 4]) -> Option<Self> {
        let mut v = Vmcb::host(cpu)?;
        v.set_controls(
            misc1::NMI
                | misc1::INIT
                | misc1::CPUID
                | misc1::INVD
                | misc1::INVLPGA
                | misc1::IOIO
                | misc1::MSR
                | misc1::SHUTDOWN,
            misc2::VMRUN
                | misc2::VMMCALL
                | misc2::VMLOAD
                | misc2::VMSAVE
                | misc2::STGI
                | misc2::CLGI
                | misc2::SKINIT,
            HOST_ASID,
            paging::nested_root(),
        );
        let code = flat32(0x08, 0x9B);
        let data = flat32(0x10, 0x93);
        v.set_segment(vmcb::CS, code);
        for s in [vmcb::DS, vmcb::ES, vmcb::SS, vmcb::FS, vmcb::GS] {
            v.set_segment(s, data);
        }
        let empty = Segment {
            selector: 0,
            attributes: 0,
            limit: 0,
            base: 0,
        };
        for s in [vmcb::GDTR, vmcb::IDTR, vmcb::LDTR] {
            v.set_segment(s, empty);
        }
        // A present, busy 32-bit TSS: what a task register holds after boot firmware.
        v.set_segment(
            vmcb::TR,
            Segment {
                selector: 0,
                attributes: 0x8B,
                limit: 0xFFFF,
                base: 0,
            },
        );
        v.write8(vmcb::CPL, 0);
        v.write64(vmcb::EFER, svm::EFER_SVME);
        v.write64(vmcb::CR0, CR0_PE | CR0_ET);
        v.write64(vmcb::CR3, 0);
        v.write64(vmcb::CR4, 0);
        v.write64(vmcb::DR7, 0x400);
        v.write64(vmcb::DR6, 0xFFFF_0FF0);
        v.write64(vmcb::RFLAGS, 1 << 1);
        v.write64(vmcb::RIP, u64::from(entry));
        v.write64(vmcb::RSP, 0);
        v.write64(vmcb::RAX, 0);
        v.write64(vmcb::G_PAT, PAT_DEFAULT);
        let gprs = Gprs {
            rdi: u64::from(args[0]),
            rsi: u64::from(args[1]),
            rdx: u64::from(args[2]),
            rcx: u64::from(args[3]),
            ..Gprs::default()
        };
        Some(HostContext { cpu, vmcb: v, gprs })
    }

    fn set_rax(&mut self, value: u64) {
        self.vmcb.write64(vmcb::RAX, value);
    }

    /// CPUID from the CPU's own answer, SVM hidden.
    fn cpuid(&mut self) {
        let leaf = self.vmcb.read64(vmcb::RAX) as u32;
        let mut r = cpu::cpuid(leaf, self.gprs.rcx as u32);
        match leaf {
            0x8000_0001 => r[2] &= !svm::CPUID_SVM,
            0x8000_000A => r = [0; 4],
            _ => {}
        }
        self.set_rax(u64::from(r[0]));
        self.gprs.rbx = u64::from(r[1]);
        self.gprs.rcx = u64::from(r[2]);
        self.gprs.rdx = u64::from(r[3]);
        self.vmcb.skip(LEN_TWO_BYTE);
    }

    /// RDMSR/WRMSR: EFER emulated, everything else #GP(0) (module doc).
    fn msr(&mut self) {
        let msr = self.gprs.rcx as u32;
        let write = self.vmcb.read64(vmcb::EXIT_INFO1) & 1 != 0;
        let efer = self.vmcb.read64(vmcb::EFER);
        let done = match (msr, write) {
            (cpu::MSR_EFER, false) => {
                let value = efer & !svm::EFER_SVME;
                self.set_rax(value & 0xFFFF_FFFF);
                self.gprs.rdx = value >> 32;
                true
            }
            (cpu::MSR_EFER, true) => {
                let value = (self.gprs.rdx << 32) | (self.vmcb.read64(vmcb::RAX) & 0xFFFF_FFFF);
                let paging = self.vmcb.read64(vmcb::CR0) & CR0_PG != 0;
                let allowed = value & !(EFER_HOST_WRITABLE | EFER_LMA) == 0
                    && !(paging && (value ^ efer) & EFER_LME != 0);
                if allowed {
                    let new = (value & EFER_HOST_WRITABLE) | (efer & EFER_LMA) | svm::EFER_SVME;
                    self.vmcb.write64(vmcb::EFER, new);
                }
                allowed
            }
            _ => false,
        };
        if done {
            self.vmcb.skip(LEN_TWO_BYTE);
        } else {
            if X2APIC_MSRS.contains(&msr) || msr == svm::MSR_VM_CR || msr == svm::MSR_VM_HSAVE_PA {
                defmt::debug!(
                    "CPU {=usize}: host {=str} of MSR {=u32:#x} refused",
                    self.cpu,
                    if write { "write" } else { "read" },
                    msr
                );
            }
            self.vmcb.inject_exception(VECTOR_GP, Some(0));
        }
    }

    /// Port I/O: IN reads all-ones, OUT is dropped, string forms #GP(0).
    fn io(&mut self) {
        let info = self.vmcb.read64(vmcb::EXIT_INFO1);
        if info & IO_STRING != 0 {
            self.vmcb.inject_exception(VECTOR_GP, Some(0));
            return;
        }
        if info & IO_IN != 0 {
            let ones = if info & IO_SIZE_8 != 0 {
                0xFF
            } else if info & IO_SIZE_16 != 0 {
                0xFFFF
            } else {
                0xFFFF_FFFF
            };
            let rax = self.vmcb.read64(vmcb::RAX);
            // A 32-bit IN zero-extends into rax; narrower ones keep the upper bits.
            let kept = if ones == 0xFFFF_FFFF { 0 } else { rax & !ones };
            self.set_rax(kept | ones);
        }
        // EXITINFO2 of an IOIO exit is the next instruction's RIP, even without next-RIP saving.
        let next = self.vmcb.read64(vmcb::EXIT_INFO2);
        self.vmcb.write64(vmcb::RIP, next);
    }

    fn fault(&self, code: u64) -> HostFault {
        HostFault {
            code,
            info1: self.vmcb.read64(vmcb::EXIT_INFO1),
            info2: self.vmcb.read64(vmcb::EXIT_INFO2),
            int_info: self.vmcb.read64(vmcb::EXIT_INT_INFO),
            rip: self.vmcb.read64(vmcb::RIP),
        }
    }

    fn report(&self, f: &HostFault, what: &str) {
        let g = &self.gprs;
        defmt::error!(
            "CPU {=usize}: host {=str}: exit code {=u64:#x}, EXITINFO1 {=u64:#x}, EXITINFO2 {=u64:#x}, EXITINTINFO {=u64:#x}, rip {=u64:#x}, rsp {=u64:#x}, rflags {=u64:#x}, cr0 {=u64:#x}, cr3 {=u64:#x}, efer {=u64:#x}",
            self.cpu,
            what,
            f.code,
            f.info1,
            f.info2,
            f.int_info,
            f.rip,
            self.vmcb.read64(vmcb::RSP),
            self.vmcb.read64(vmcb::RFLAGS),
            self.vmcb.read64(vmcb::CR0),
            self.vmcb.read64(vmcb::CR3),
            self.vmcb.read64(vmcb::EFER)
        );
        defmt::error!(
            "host regs: rax {=u64:#x} rbx {=u64:#x} rcx {=u64:#x} rdx {=u64:#x} rsi {=u64:#x} rdi {=u64:#x} rbp {=u64:#x} r8 {=u64:#x} r9 {=u64:#x} r10 {=u64:#x} r11 {=u64:#x} r12 {=u64:#x} r13 {=u64:#x} r14 {=u64:#x} r15 {=u64:#x}",
            self.vmcb.read64(vmcb::RAX),
            g.rbx,
            g.rcx,
            g.rdx,
            g.rsi,
            g.rdi,
            g.rbp,
            g.r8,
            g.r9,
            g.r10,
            g.r11,
            g.r12,
            g.r13,
            g.r14,
            g.r15
        );
    }
}

impl HostCpu for HostContext {
    type Trap = HostFault;

    /// Runs the host until it makes a call or an exit the TSM does not complete itself.
    fn run(&mut self) -> HostExit<HostFault> {
        loop {
            let code = self.vmcb.run(&mut self.gprs, self.cpu);
            match code {
                exit::VMMCALL => {
                    self.vmcb.skip(LEN_VMMCALL);
                    let g = &self.gprs;
                    return HostExit::Call(CallRegs {
                        fid: self.vmcb.read64(vmcb::RAX),
                        args: [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9],
                    });
                }
                exit::CPUID => self.cpuid(),
                exit::MSR => self.msr(),
                exit::IOIO => self.io(),
                // INVD would drop dirty lines, the TSM's among them: nothing is dropped.
                exit::INVD => self.vmcb.skip(LEN_TWO_BYTE),
                exit::NMI | exit::INIT => {}
                exit::VMRUN
                | exit::VMLOAD
                | exit::VMSAVE
                | exit::STGI
                | exit::CLGI
                | exit::SKINIT
                | exit::INVLPGA => self.vmcb.inject_exception(VECTOR_UD, None),
                _ => return HostExit::Trap(self.fault(code)),
            }
        }
    }

    fn complete_call(&mut self, result: &CallResult) {
        self.set_rax(result.status);
        let g = &mut self.gprs;
        g.rdi = result.out[0];
        g.rsi = result.out[1];
        g.rdx = result.out[2];
        g.r10 = result.out[3];
    }

    /// A nested page fault on an address the host may not reach is logged and becomes a #GP(0)
    /// at the faulting instruction (module doc); everything else is reported and ends the run.
    fn handle_trap(&mut self, f: HostFault) -> HostTrap {
        match f.code {
            exit::NPF if f.info1 & NPF_WALK == 0 && f.int_info & INT_INFO_VALID == 0 => {
                let access = if f.info1 & NPF_FETCH != 0 {
                    "fetch"
                } else if f.info1 & NPF_WRITE != 0 {
                    "write"
                } else {
                    "read"
                };
                defmt::warn!(
                    "CPU {=usize}: host {=str} of GPA {=u64:#x} (not the host's) blocked: nested page fault (error code {=u64:#x}), #GP(0) injected at rip {=u64:#x}",
                    self.cpu,
                    access,
                    f.info2,
                    f.info1,
                    f.rip
                );
                self.vmcb.inject_exception(VECTOR_GP, Some(0));
                HostTrap::Survived
            }
            exit::NPF => {
                self.report(
                    &f,
                    "nested page fault while delivering an event or walking its own tables",
                );
                HostTrap::Fatal
            }
            exit::SHUTDOWN => {
                self.report(&f, "shut down (triple fault)");
                HostTrap::Fatal
            }
            exit::INVALID => {
                self.report(&f, "state refused by VMRUN");
                HostTrap::Fatal
            }
            _ => {
                self.report(&f, "exit the TSM does not handle");
                HostTrap::Fatal
            }
        }
    }
}
