//! The architectural call gates (register convention: [`crate::regs`]). Each exists only with
//! its cargo feature on its architecture; this file holds the crate's only `unsafe` code.
#![cfg_attr(
    any(
        feature = "transport-smc",
        feature = "transport-hvc",
        feature = "transport-vmmcall"
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

#[cfg(all(target_arch = "x86_64", feature = "transport-vmmcall"))]
mod x86_64 {
    use super::super::Transport;
    use crate::regs::{CallRegs, CallResult};

    /// The gate from an SVM guest of the TSM (the host, and TVM vCPUs): `vmmcall`, with the
    /// function ID in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, the status back in
    /// `rax` and results in `rdi, rsi, rdx, r10`.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Vmmcall;

    impl Transport for Vmmcall {
        fn call(&mut self, regs: &CallRegs) -> CallResult {
            let (status, r1, r2, r3, r4);
            // SAFETY: `vmmcall` exits to the TSM, which writes rax and the four result
            // registers, preserves every other register (`crate::regs`) and resumes after the
            // instruction; it never touches the caller's stack (`nostack`). It may read or write
            // memory the call's arguments name (buffers the caller owns for the call's
            // duration), so the block is not `nomem`/`readonly`.
            unsafe {
                core::arch::asm!(
                    "vmmcall",
                    inout("rax") regs.fid => status,
                    inout("rdi") regs.args[0] => r1,
                    inout("rsi") regs.args[1] => r2,
                    inout("rdx") regs.args[2] => r3,
                    inout("r10") regs.args[3] => r4,
                    in("r8") regs.args[4],
                    in("r9") regs.args[5],
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

#[cfg(all(target_arch = "x86_64", feature = "transport-vmmcall"))]
pub use x86_64::Vmmcall;
