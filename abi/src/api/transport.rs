//! The architectural call gates (register convention: [`crate::regs`]). Each exists only with
//! its cargo feature on its architecture; this file holds the crate's only `unsafe` code.
#![cfg_attr(
    any(
        feature = "transport-smc",
        feature = "transport-hvc",
        feature = "transport-syscall"
    ),
    allow(unsafe_code)
)]

#[cfg(all(
    target_arch = "aarch64",
    any(feature = "transport-smc", feature = "transport-hvc")
))]
mod aarch64 {
    use super::super::Transport;
    use crate::regs::{CallRegs, CallResult};

    /// Issues one call with `$insn` (`smc #0` or `hvc #0`).
    ///
    /// Arguments go in x1..x6, the function ID in x0; the TSM returns the status in x0 and
    /// results in x1..x4. The TSM preserves x5..x30 (`crate::regs`), but SMCCC 1.2 lets a
    /// callee use x0..x17 for results, so x5..x17 are declared clobbered too: a caller built
    /// against this crate stays correct even behind a conduit that follows SMCCC to the letter.
    macro_rules! smccc_call {
        ($insn:literal, $regs:expr) => {{
            let regs: &CallRegs = $regs;
            let (status, r1, r2, r3, r4);
            // SAFETY: the instruction traps to the TSM (or the firmware behind the conduit),
            // which resumes after it with results in x0..x4 and at most x5..x17 changed, all
            // declared here as outputs or clobbers. It uses no stack of ours (`nostack`). It
            // may read or write memory the call's arguments name (buffers the caller owns for
            // the call's duration), so the block is not `nomem`/`readonly`: the compiler
            // assumes memory may change, exactly as for an opaque function call.
            unsafe {
                core::arch::asm!(
                    $insn,
                    inout("x0") regs.fid => status,
                    inout("x1") regs.args[0] => r1,
                    inout("x2") regs.args[1] => r2,
                    inout("x3") regs.args[2] => r3,
                    inout("x4") regs.args[3] => r4,
                    inout("x5") regs.args[4] => _,
                    inout("x6") regs.args[5] => _,
                    lateout("x7") _, lateout("x8") _, lateout("x9") _, lateout("x10") _,
                    lateout("x11") _, lateout("x12") _, lateout("x13") _, lateout("x14") _,
                    lateout("x15") _, lateout("x16") _, lateout("x17") _,
                    options(nostack)
                );
            }
            CallResult {
                status,
                out: [r1, r2, r3, r4],
            }
        }};
    }

    /// The host's gate: `smc #0`, trapped to the TSM at EL2 by `HCR_EL2.TSC`.
    #[cfg(feature = "transport-smc")]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Smc;

    #[cfg(feature = "transport-smc")]
    impl Transport for Smc {
        fn call(&mut self, regs: &CallRegs) -> CallResult {
            smccc_call!("smc #0", regs)
        }
    }

    /// The guest's gate (and the host's alternative): `hvc #0`.
    #[cfg(feature = "transport-hvc")]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Hvc;

    #[cfg(feature = "transport-hvc")]
    impl Transport for Hvc {
        fn call(&mut self, regs: &CallRegs) -> CallResult {
            smccc_call!("hvc #0", regs)
        }
    }
}

#[cfg(all(target_arch = "aarch64", feature = "transport-hvc"))]
pub use aarch64::Hvc;
#[cfg(all(target_arch = "aarch64", feature = "transport-smc"))]
pub use aarch64::Smc;

#[cfg(all(target_arch = "x86_64", feature = "transport-syscall"))]
mod x86_64 {
    use super::super::Transport;
    use crate::regs::{CallRegs, CallResult};

    /// The gate from ring 3 (host payload and guests): `syscall`, with the function ID in
    /// `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, the status back in `rax` and results
    /// in `rdi, rsi, rdx, r10`.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Syscall;

    impl Transport for Syscall {
        fn call(&mut self, regs: &CallRegs) -> CallResult {
            let (status, r1, r2, r3, r4);
            // SAFETY: `syscall` enters the TSM, which returns with `sysret` after writing rax
            // and the four result registers; `syscall`/`sysret` themselves overwrite rcx
            // (return rip) and r11 (rflags), declared clobbered. The TSM preserves every other
            // register (`crate::regs`) and switches to its own stack, so ours is untouched
            // (`nostack`). It may read or write memory the call's arguments name (buffers the
            // caller owns for the call's duration), so the block is not `nomem`/`readonly`.
            unsafe {
                core::arch::asm!(
                    "syscall",
                    inout("rax") regs.fid => status,
                    inout("rdi") regs.args[0] => r1,
                    inout("rsi") regs.args[1] => r2,
                    inout("rdx") regs.args[2] => r3,
                    inout("r10") regs.args[3] => r4,
                    in("r8") regs.args[4],
                    in("r9") regs.args[5],
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack)
                );
            }
            CallResult {
                status,
                out: [r1, r2, r3, r4],
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", feature = "transport-syscall"))]
pub use x86_64::Syscall;

/// On a Linux build machine the `syscall` gate reaches the Linux kernel instead of the TSM:
/// an unknown system call number returns `-ENOSYS` in `rax` and preserves every other
/// register, which checks the asm block's register assignment end to end.
#[cfg(all(
    test,
    target_arch = "x86_64",
    target_os = "linux",
    feature = "transport-syscall"
))]
mod tests {
    use super::super::Transport;
    use super::Syscall;
    use crate::regs::CallRegs;

    #[test]
    fn syscall_gate_assigns_the_documented_registers() {
        const ENOSYS: u64 = 38;
        let regs = CallRegs {
            fid: 0xC600_0100,
            args: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
        };
        let r = Syscall.call(&regs);
        assert_eq!(r.status, ENOSYS.wrapping_neg());
        // Linux preserved rdi, rsi, rdx, r10: they come back as the result registers.
        assert_eq!(r.out, [0x11, 0x22, 0x33, 0x44]);
    }
}
