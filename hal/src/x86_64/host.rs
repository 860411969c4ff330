//! The host as an SVM guest: its VMCB on each CPU, how it starts, and what each #VMEXIT means
//! (the HAL's [`HostCpu`]).
//!
//! **Entry and exits** are those of every SVM guest of the TSM (`intercept`): at [`HOST_ENTRY`]
//! in 32-bit protected mode, paging off, with edi = DRAM base, esi = DRAM size (DRAM lies
//! below 4 GiB on q35), edx = CPU index, ecx = TSC ticks per microsecond; the call gate is
//! `vmmcall`. The host's address-space tag is [`HOST_ASID`]; its nested table is `paging`'s.
//!
//! The host has no local APIC: its page is outside the nested table (a Linux host reads zeros
//! there, read-only: `linux`), and the x2APIC MSRs are refused (#GP), so it can send no INIT,
//! SIPI or any other IPI. The TSM starts every CPU
//! itself at boot (`smp`) and enters the host on the boot CPU; the others wait in the TSM until
//! the host starts them with HOST_CPU_START ([`HostContext::start`] gives the entry state).
//! Interrupts are not intercepted: the payload enables none; a Linux host takes its PIC's
//! through its own IDT while it runs. A triple fault ends the run.
//!
//! **Blocked accesses.** A host access to anything its nested table does not map (delegated
//! and TVM-private granules, the TSM's memory, the VT-d registers, the local APIC, unassigned
//! addresses) is a nested page fault. The TSM logs it with the guest-physical address and
//! injects #GP(0) at the faulting instruction, which did not happen: the x86 exception a kernel
//! gets for an access it may not make (Linux fixes up or kills the task); a #PF would send a
//! kernel to its own page tables, which map the address. A fault while the CPU delivers an
//! event, or on the host's own page-table walk, ends the run: injecting into a half-delivered
//! event could not leave the host's state consistent (a triple fault would end it too).

use tsm_abi::regs::CallResult;

use super::intercept::{self, Stop, VECTOR_GP};
use super::svm::{Gprs, MsrMap, Vmcb, exit, vmcb};
use super::{config_write, paging};
use crate::platform::run::{HostCpu, HostExit, HostTrap};

/// The host payload's entry: the first byte of its image (docs/design.md).
pub const HOST_ENTRY: u64 = 0x100_0000;
/// The host's address-space tag.
const HOST_ASID: u32 = 1;

/// EXITINFO1 of a nested page fault: bit 1 write, bit 4 instruction fetch, bit 33 during the
/// guest's own page-table walk.
const NPF_WRITE: u64 = 1 << 1;
const NPF_FETCH: u64 = 1 << 4;
const NPF_WALK: u64 = 1 << 33;
/// EXITINTINFO: an event was being delivered.
const INT_INFO_VALID: u64 = 1 << 31;

/// The host's context on one CPU: its VMCB and the registers VMRUN does not switch.
pub struct HostContext {
    cpu: usize,
    /// The host is a Linux kernel (`linux`): its own port map and chipset ports.
    linux: bool,
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

impl HostContext {
    /// CPU `cpu`'s host, about to start at `entry` with `args` in edi, esi, edx, ecx (module
    /// doc); `None` if the CPU has no VMCB (`cpu` ≥ `percpu::MAX_CPUS`).
    #[inline]
    pub fn new(cpu: usize, entry: u32, args: [u32; 4]) -> Option<Self> {
        let mut v = Vmcb::host(cpu)?;
        v.set_controls(
            intercept::INTERCEPTS_MISC1,
            intercept::INTERCEPTS_MISC2,
            0,
            MsrMap::Host,
            HOST_ASID,
            paging::nested_root(),
        );
        intercept::enter_flat32(&mut v, u64::from(entry));
        let gprs = Gprs {
            rdi: u64::from(args[0]),
            rsi: u64::from(args[1]),
            rdx: u64::from(args[2]),
            rcx: u64::from(args[3]),
            ..Gprs::default()
        };
        Some(HostContext {
            cpu,
            linux: false,
            vmcb: v,
            gprs,
        })
    }

    /// The boot CPU's Linux host, about to start at `entry` by the 32-bit boot protocol
    /// (`linux`): `enter_flat32`'s state with the protocol's selectors (`__BOOT_CS` 0x10,
    /// `__BOOT_DS` 0x18), esi = `zero_page`, every other register 0.
    #[inline]
    pub fn new_linux(entry: u32, zero_page: u32) -> Option<Self> {
        let mut h = Self::new(0, entry, [0, zero_page, 0, 0])?;
        h.linux = true;
        h.vmcb.use_linux_iopm();
        intercept::boot_protocol_selectors(&mut h.vmcb);
        Some(h)
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
        match intercept::run(&mut self.vmcb, &mut self.gprs, self.cpu, self.linux) {
            Stop::Call(regs) => HostExit::Call(regs),
            Stop::Exit(code) => HostExit::Trap(self.fault(code)),
        }
    }

    fn complete_call(&mut self, result: &CallResult) {
        self.vmcb.write64(vmcb::RAX, result.status);
        let g = &mut self.gprs;
        g.rdi = result.out[0];
        g.rsi = result.out[1];
        g.rdx = result.out[2];
        g.r10 = result.out[3];
    }

    /// HOST_CPU_START's entry state (docs/abi.md): the boot CPU's (`intercept::enter_flat32`:
    /// 32-bit protected mode, paging off, flat segments, CPL 0, interrupts off) at `entry`, with
    /// rdi = `arg` (32-bit code sees edi, its low half) and every other register 0. The whole
    /// state-save area is replaced: nothing of the host session that ran on this CPU before
    /// a HOST_CPU_STOP is left in the VMCB, and the first VMRUN flushes the TLB (a fresh handle
    /// on the same page, as at boot), so none of that session's global pages survives either.
    fn start(&mut self, entry: u64, arg: u64) {
        if let Some(fresh) = Vmcb::host(self.cpu) {
            self.vmcb = fresh;
        }
        self.vmcb.write64(vmcb::EVENT_INJ, 0);
        intercept::enter_flat32(&mut self.vmcb, entry);
        self.gprs = Gprs {
            rdi: arg,
            ..Gprs::default()
        };
    }

    fn idle(&self) {
        core::hint::spin_loop();
    }

    /// A nested page fault on an address the host may not reach is logged and becomes a #GP(0)
    /// at the faulting instruction (module doc); everything else is reported and ends the run.
    fn handle_trap(&mut self, f: HostFault) -> HostTrap {
        match f.code {
            exit::NPF
                if self.linux
                    && f.info1 & (NPF_WRITE | NPF_WALK | NPF_FETCH) == NPF_WRITE
                    && f.int_info & INT_INFO_VALID == 0
                    && config_write::emulate(&mut self.vmcb, &self.gprs, f.info2) =>
            {
                HostTrap::Survived
            }
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
