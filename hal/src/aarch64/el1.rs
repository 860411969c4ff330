//! The EL1 (and EL0) system-register state a context owns: what the world switch swaps
//! between the host and a TVM vCPU besides the general and FP registers in the frame.

use super::sysreg::{read_sysreg, write_sysreg};

macro_rules! el1_state {
    ($( $field:ident : $reg:literal, )*) => {
        /// One context's EL1/EL0 system registers (translation, exception, thread and timer
        /// state). The physical and virtual timers are included so that a timer one context
        /// armed never fires while the other runs.
        #[repr(C)]
        #[derive(Clone, Debug, Default)]
        pub struct El1State {
            $( #[doc = $reg] pub $field: u64, )*
        }

        impl El1State {
            /// The state of the context that ran last on this CPU.
            pub fn save() -> Self {
                El1State { $( $field: read_sysreg!($reg), )* }
            }

            /// Installs this state on this CPU.
            ///
            /// # Safety
            /// No EL1/EL0 code runs on this CPU between this call and the next `eret` to the
            /// context the state belongs to (the registers govern only EL1/EL0). The caller
            /// follows it with an `isb`.
            pub unsafe fn load(&self) {
                $(
                    // SAFETY: per the function's contract, only the context owning the
                    // state runs at EL1/EL0 under it.
                    unsafe { write_sysreg!($reg, self.$field) };
                )*
            }
        }
    };
}

el1_state! {
    sctlr: "sctlr_el1",
    vbar: "vbar_el1",
    elr: "elr_el1",
    spsr: "spsr_el1",
    sp_el0: "sp_el0",
    sp_el1: "sp_el1",
    ttbr0: "ttbr0_el1",
    ttbr1: "ttbr1_el1",
    tcr: "tcr_el1",
    mair: "mair_el1",
    amair: "amair_el1",
    esr: "esr_el1",
    far: "far_el1",
    afsr0: "afsr0_el1",
    afsr1: "afsr1_el1",
    contextidr: "contextidr_el1",
    tpidr_el0: "tpidr_el0",
    tpidrro_el0: "tpidrro_el0",
    tpidr_el1: "tpidr_el1",
    cpacr: "cpacr_el1",
    par: "par_el1",
    cntkctl: "cntkctl_el1",
    csselr: "csselr_el1",
    mdscr: "mdscr_el1",
    cntv_ctl: "cntv_ctl_el0",
    cntv_cval: "cntv_cval_el0",
    cntp_ctl: "cntp_ctl_el0",
    cntp_cval: "cntp_cval_el0",
}
