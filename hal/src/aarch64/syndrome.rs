//! Decoding of exception syndromes (ESR_ELx, HPFAR_EL2) for the fault log.

/// An exception class (ESR_ELx.EC).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ec(pub u8);

impl Ec {
    /// FP/SIMD access trapped (here: by CPTR_EL2.TFP).
    pub const FP_ACCESS: Ec = Ec(0x07);
    /// HVC from AArch64.
    pub const HVC64: Ec = Ec(0x16);
    /// SMC from AArch64 (trapped by HCR_EL2.TSC).
    pub const SMC64: Ec = Ec(0x17);
    /// Instruction abort from a lower EL.
    pub const IABT_LOWER: Ec = Ec(0x20);
    /// Instruction abort at the same EL.
    pub const IABT_SAME: Ec = Ec(0x21);
    /// Data abort from a lower EL.
    pub const DABT_LOWER: Ec = Ec(0x24);
    /// Data abort at the same EL.
    pub const DABT_SAME: Ec = Ec(0x25);

    /// The architectural name.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "unknown reason",
            0x01 => "WFI/WFE",
            0x07 => "FP/SIMD access",
            0x0E => "illegal execution state",
            0x15 => "SVC (AArch64)",
            0x16 => "HVC (AArch64)",
            0x17 => "SMC (AArch64)",
            0x18 => "MSR/MRS/system instruction",
            0x19 => "SVE access",
            0x1C => "pointer authentication failure",
            0x20 => "instruction abort from a lower EL",
            0x21 => "instruction abort at EL2",
            0x22 => "PC alignment fault",
            0x24 => "data abort from a lower EL",
            0x25 => "data abort at EL2",
            0x26 => "SP alignment fault",
            0x2C => "FP exception (AArch64)",
            0x2F => "SError",
            0x30 | 0x31 => "breakpoint",
            0x32 | 0x33 => "software step",
            0x34 | 0x35 => "watchpoint",
            0x3C => "BRK",
            _ => "other",
        }
    }

    /// Whether the ISS is an abort's (instruction or data).
    pub fn is_abort(self) -> bool {
        matches!(
            self,
            Ec::IABT_LOWER | Ec::IABT_SAME | Ec::DABT_LOWER | Ec::DABT_SAME
        )
    }
}

/// The exception class of an ESR value.
pub fn ec(esr: u64) -> Ec {
    Ec(((esr >> 26) & 0x3F) as u8)
}

/// The fields of an abort's ISS that say what went wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AbortIss {
    /// ISV: the access size/register fields below are valid.
    pub isv: bool,
    /// SAS: access size, log2 bytes.
    pub sas: u8,
    /// SRT: the register transferred.
    pub srt: u8,
    /// WnR: a write (data aborts).
    pub write: bool,
    /// S1PTW: the fault hit a stage-1 table walk (stage-2 fault on the walk).
    pub s1ptw: bool,
    /// DFSC/IFSC: the fault status code.
    pub fsc: u8,
}

impl AbortIss {
    /// Splits an abort's ESR.
    pub fn decode(esr: u64) -> Self {
        AbortIss {
            isv: esr & (1 << 24) != 0,
            sas: ((esr >> 22) & 0x3) as u8,
            srt: ((esr >> 16) & 0x1F) as u8,
            write: esr & (1 << 6) != 0,
            s1ptw: esr & (1 << 7) != 0,
            fsc: (esr & 0x3F) as u8,
        }
    }

    /// The fault status code's meaning.
    pub fn fsc_name(&self) -> &'static str {
        match self.fsc {
            0x00..=0x03 => "address size fault",
            0x04..=0x07 => "translation fault",
            0x09..=0x0B => "access flag fault",
            0x0D..=0x0F => "permission fault",
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            0x30 => "TLB conflict",
            _ => "other",
        }
    }

    /// The translation level a translation/access/permission fault was found at.
    pub fn level(&self) -> u8 {
        self.fsc & 0x3
    }
}

/// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA gives the page, FAR_EL2 the offset.
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar & 0x0000_0FFF_FFFF_FFF0) << 8) | (far & 0xFFF)
}
