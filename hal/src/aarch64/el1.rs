//! The EL1 (and EL0) system-register state a context owns: what the world switch swaps
//! between the host and a TVM vCPU besides the general and FP registers in the frame.
//!
//! Every swap is straight-line `mrs`/`msr` with the memory side in `stp`/`ldp` pairs: the
//! registers are listed in pairs that sit next to each other in [`El1State`]. A context that
//! starts afresh gets its reset values written directly ([`El1State::load_reset`]): no image
//! of zeros is built and loaded.

use core::mem::{MaybeUninit, offset_of};

macro_rules! el1_state {
    ($( ($f1:ident : $r1:literal, $f2:ident : $r2:literal), )*) => {
        /// One context's EL1/EL0 system registers (translation, exception, thread and timer
        /// state). The physical and virtual timers are included so that a timer one context
        /// armed never fires while the other runs.
        #[repr(C)]
        #[derive(Clone, Debug)]
        pub struct El1State {
            $( #[doc = $r1] pub $f1: u64, #[doc = $r2] pub $f2: u64, )*
        }

        // The pairs' `stp`/`ldp` address the second register of a pair 8 bytes after the first.
        const _: () = {
            $( assert!(offset_of!(El1State, $f2) == offset_of!(El1State, $f1) + 8); )*
        };

        impl El1State {
            /// The state of the context that ran last on this CPU, stored at `p`.
            ///
            /// # Safety
            /// `p` is valid for writes of an `El1State` and 8-byte aligned.
            unsafe fn save_to(p: *mut El1State) {
                $(
                    // SAFETY: `mrs` of EL1/EL0 registers only reads them (EL2 may); the store
                    // is inside `*p` (the caller's contract, the offset a field's).
                    unsafe {
                        core::arch::asm!(
                            concat!("mrs {a}, ", $r1),
                            concat!("mrs {b}, ", $r2),
                            "stp {a}, {b}, [{p}, #{o}]",
                            p = in(reg) p,
                            o = const offset_of!(El1State, $f1),
                            a = out(reg) _,
                            b = out(reg) _,
                            options(nostack, preserves_flags),
                        )
                    };
                )*
            }

            /// Installs this state on this CPU.
            ///
            /// # Safety
            /// No EL1/EL0 code runs on this CPU between this call and the next `eret` to the
            /// context the state belongs to (the registers govern only EL1/EL0). The caller
            /// follows it with an `isb`.
            pub unsafe fn load(&self) {
                let p: *const El1State = self;
                $(
                    // SAFETY: the load is inside `*self`; per the function's contract, only
                    // the context owning the state runs at EL1/EL0 under it.
                    unsafe {
                        core::arch::asm!(
                            "ldp {a}, {b}, [{p}, #{o}]",
                            concat!("msr ", $r1, ", {a}"),
                            concat!("msr ", $r2, ", {b}"),
                            p = in(reg) p,
                            o = const offset_of!(El1State, $f1),
                            a = out(reg) _,
                            b = out(reg) _,
                            options(nostack, preserves_flags, readonly),
                        )
                    };
                )*
            }

            /// Installs the state of a context that starts afresh: SCTLR_EL1 = `sctlr`,
            /// CPACR_EL1 = `cpacr`, every other register 0.
            ///
            /// # Safety
            /// As [`El1State::load`].
            pub unsafe fn load_reset(sctlr: u64, cpacr: u64) {
                $(
                    // SAFETY: as in `load`; the two writes touch no memory.
                    unsafe {
                        core::arch::asm!(
                            concat!("msr ", $r1, ", {a}"),
                            concat!("msr ", $r2, ", {b}"),
                            a = in(reg) reset(stringify!($f1), sctlr, cpacr),
                            b = in(reg) reset(stringify!($f2), sctlr, cpacr),
                            options(nomem, nostack, preserves_flags),
                        )
                    };
                )*
            }
        }
    };
}

/// The reset value of field `field` (see [`El1State::load_reset`]); folded at compile time.
#[inline(always)]
const fn reset(field: &str, sctlr: u64, cpacr: u64) -> u64 {
    match field.as_bytes() {
        b"sctlr" => sctlr,
        b"cpacr" => cpacr,
        _ => 0,
    }
}

el1_state! {
    (sctlr: "sctlr_el1", vbar: "vbar_el1"),
    (elr: "elr_el1", spsr: "spsr_el1"),
    (sp_el0: "sp_el0", sp_el1: "sp_el1"),
    (ttbr0: "ttbr0_el1", ttbr1: "ttbr1_el1"),
    (tcr: "tcr_el1", mair: "mair_el1"),
    (amair: "amair_el1", esr: "esr_el1"),
    (far: "far_el1", afsr0: "afsr0_el1"),
    (afsr1: "afsr1_el1", contextidr: "contextidr_el1"),
    (tpidr_el0: "tpidr_el0", tpidrro_el0: "tpidrro_el0"),
    (tpidr_el1: "tpidr_el1", cpacr: "cpacr_el1"),
    (par: "par_el1", cntkctl: "cntkctl_el1"),
    (csselr: "csselr_el1", mdscr: "mdscr_el1"),
    (cntv_ctl: "cntv_ctl_el0", cntv_cval: "cntv_cval_el0"),
    (cntp_ctl: "cntp_ctl_el0", cntp_cval: "cntp_cval_el0"),
}

impl El1State {
    /// The state of the context that ran last on this CPU, saved into `slot` (no zeroing of
    /// the 224 bytes first).
    pub fn save_into(slot: &mut MaybeUninit<El1State>) -> &El1State {
        // SAFETY: `save_to` writes every field (the macro stores every pair) into the slot,
        // exclusively borrowed and aligned for `El1State`; any bit pattern is a valid
        // `El1State` (plain integers), so it is initialised afterwards.
        unsafe {
            Self::save_to(slot.as_mut_ptr());
            slot.assume_init_ref()
        }
    }

    /// The state of the context that ran last on this CPU, saved into `self`.
    pub fn save(&mut self) {
        // SAFETY: `self` is exclusively borrowed and aligned.
        unsafe { Self::save_to(self) }
    }
}
