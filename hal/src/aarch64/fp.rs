//! The FP/SIMD registers of a lower-EL context, and their swap around a vCPU's run.
//!
//! The TSM image is built for `aarch64-unknown-none-softfloat` (xtask's `Arch::tsm_triple`):
//! the compiler never uses the FP/SIMD registers, and the only assembly that does
//! (`copy::zero`'s `st1`) saves and restores the four it uses itself. So while the TSM runs,
//! q0–q31, FPSR and FPCR hold the host's values, and a host call needs no FP save or restore at
//! all: the host's FP state is preserved by construction. A vCPU's run is the one place they
//! change hands, lazily (`guest::LazyFp`): the vCPU runs with CPTR_EL2.TFP set until its first
//! FP/SIMD access, which `guest` takes as the moment to save the host's into an [`FpRegs`] on
//! the TSM's stack and load the vCPU's, and the reverse when the run ends if that happened. A
//! vCPU therefore only ever sees its own registers (zero on its first run), never the host's,
//! and the host gets its own back unchanged. Calls a vCPU makes that the TSM answers in place
//! keep whichever registers are loaded. SVE and SME stay trapped to EL2 (`boot`), so there are
//! no wider registers to switch.

#[cfg(target_feature = "neon")]
compile_error!(
    "the aarch64 TSM must be built for aarch64-unknown-none-softfloat: with NEON the compiler may keep \
     values in the FP/SIMD registers, which hold the host's state while the TSM runs (fp.rs)"
);

use core::mem::{MaybeUninit, offset_of};

/// q0..q31, FPSR and FPCR.
#[repr(C, align(16))]
#[derive(Clone, Debug, Default)]
pub struct FpRegs {
    /// q0..q31.
    pub v: [u128; 32],
    /// FP status.
    pub fpsr: u64,
    /// FP control.
    pub fpcr: u64,
}

// The assembly addresses the registers with immediate offsets; pin them here.
const _: () = {
    assert!(offset_of!(FpRegs, v) == 0);
    assert!(offset_of!(FpRegs, fpsr) == 512);
    assert!(offset_of!(FpRegs, fpcr) == 520);
};

core::arch::global_asm!(
    // The image's target has no FP/SIMD feature; this code is the exception (module doc).
    ".arch_extension fp",
    ".arch_extension simd",
    ".section .text.fp_switch, \"ax\"",
    // void __fp_save(FpRegs *regs)
    ".global __fp_save",
    "__fp_save:",
    "stp q0, q1, [x0, #0]",
    "stp q2, q3, [x0, #32]",
    "stp q4, q5, [x0, #64]",
    "stp q6, q7, [x0, #96]",
    "stp q8, q9, [x0, #128]",
    "stp q10, q11, [x0, #160]",
    "stp q12, q13, [x0, #192]",
    "stp q14, q15, [x0, #224]",
    "stp q16, q17, [x0, #256]",
    "stp q18, q19, [x0, #288]",
    "stp q20, q21, [x0, #320]",
    "stp q22, q23, [x0, #352]",
    "stp q24, q25, [x0, #384]",
    "stp q26, q27, [x0, #416]",
    "stp q28, q29, [x0, #448]",
    "stp q30, q31, [x0, #480]",
    "mrs x1, fpsr",
    "mrs x2, fpcr",
    "add x0, x0, #512",
    "stp x1, x2, [x0]",
    "ret",
    // void __fp_load(const FpRegs *regs)
    ".global __fp_load",
    "__fp_load:",
    "ldp q0, q1, [x0, #0]",
    "ldp q2, q3, [x0, #32]",
    "ldp q4, q5, [x0, #64]",
    "ldp q6, q7, [x0, #96]",
    "ldp q8, q9, [x0, #128]",
    "ldp q10, q11, [x0, #160]",
    "ldp q12, q13, [x0, #192]",
    "ldp q14, q15, [x0, #224]",
    "ldp q16, q17, [x0, #256]",
    "ldp q18, q19, [x0, #288]",
    "ldp q20, q21, [x0, #320]",
    "ldp q22, q23, [x0, #352]",
    "ldp q24, q25, [x0, #384]",
    "ldp q26, q27, [x0, #416]",
    "ldp q28, q29, [x0, #448]",
    "ldp q30, q31, [x0, #480]",
    "add x0, x0, #512",
    "ldp x1, x2, [x0]",
    "msr fpsr, x1",
    "msr fpcr, x2",
    "ret",
    // void __fp_zero(void): a fresh vCPU's registers, without an image of zeros to load.
    ".global __fp_zero",
    "__fp_zero:",
    "movi v0.2d, #0",
    "movi v1.2d, #0",
    "movi v2.2d, #0",
    "movi v3.2d, #0",
    "movi v4.2d, #0",
    "movi v5.2d, #0",
    "movi v6.2d, #0",
    "movi v7.2d, #0",
    "movi v8.2d, #0",
    "movi v9.2d, #0",
    "movi v10.2d, #0",
    "movi v11.2d, #0",
    "movi v12.2d, #0",
    "movi v13.2d, #0",
    "movi v14.2d, #0",
    "movi v15.2d, #0",
    "movi v16.2d, #0",
    "movi v17.2d, #0",
    "movi v18.2d, #0",
    "movi v19.2d, #0",
    "movi v20.2d, #0",
    "movi v21.2d, #0",
    "movi v22.2d, #0",
    "movi v23.2d, #0",
    "movi v24.2d, #0",
    "movi v25.2d, #0",
    "movi v26.2d, #0",
    "movi v27.2d, #0",
    "movi v28.2d, #0",
    "movi v29.2d, #0",
    "movi v30.2d, #0",
    "movi v31.2d, #0",
    "msr fpsr, xzr",
    "msr fpcr, xzr",
    "ret",
);

unsafe extern "C" {
    fn __fp_save(regs: *mut FpRegs);
    fn __fp_load(regs: *const FpRegs);
    fn __fp_zero();
}

impl FpRegs {
    /// The registers as they are now, saved into `slot` (the host's, around a vCPU's run: no
    /// zeroing of 528 bytes first, and no move of them out of a constructor).
    pub(crate) fn save_into(slot: &mut MaybeUninit<FpRegs>) -> &FpRegs {
        // SAFETY: `__fp_save` writes all 528 bytes of the slot (exclusively borrowed, 16-byte
        // aligned: every field, q0..q31, FPSR, FPCR), so it is initialised afterwards, and any
        // bit pattern is a valid `FpRegs` (plain integers); as in `save` otherwise.
        unsafe {
            __fp_save(slot.as_mut_ptr());
            slot.assume_init_ref()
        }
    }

    /// The registers as they are now.
    pub(crate) fn save(&mut self) {
        // SAFETY: stores 528 bytes into `self` (exclusively borrowed, 16-byte aligned, the
        // offsets pinned above) and reads the FP registers, which EL2 may access (CPTR_EL2.TFP
        // is clear: `boot`, and while a vCPU runs `guest` saves only once it has cleared it);
        // clobbers only x0..x2, caller-saved.
        unsafe { __fp_save(self) }
    }

    /// Makes these the registers of whatever runs next at EL1.
    ///
    /// # Safety
    /// The FP/SIMD registers must belong to the context about to run: their previous values
    /// must have been saved if anyone still needs them (the TSM itself never does: module doc).
    pub(crate) unsafe fn load(&self) {
        // SAFETY: reads 528 bytes of `self`; the register writes are the caller's contract;
        // clobbers only x0..x2, caller-saved.
        unsafe { __fp_load(self) }
    }

    /// Makes zeros (FPSR and FPCR too, as [`FpRegs::default`]) the registers of whatever runs
    /// next at EL1: a fresh vCPU's, in 35 instructions instead of a 528-byte image written
    /// and loaded.
    ///
    /// # Safety
    /// As [`FpRegs::load`].
    pub(crate) unsafe fn load_zero() {
        // SAFETY: writes only the FP/SIMD registers, FPSR and FPCR (the caller's contract) and
        // touches no memory.
        unsafe { __fp_zero() }
    }
}
