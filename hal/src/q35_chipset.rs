//! Which configuration writes of a Linux host to q35's chipset functions the TSM carries out
//! (`x86_64::config_write`; docs/design.md "On x86_64").
//!
//! The chipset's configuration pages (device 0, the MCH; device 31, the ICH9's LPC bridge, SATA
//! and SMBus functions) are read-only in the host's nested table: the MCH's PCIEXBAR, PAM,
//! SMRAM and ESMRAMC registers and the LPC bridge's RCBA, PMBASE, ACPI control and GPIO base
//! move windows in the *system* address space, which QEMU lets cover RAM, the TSM's included.
//! Linux still writes these functions while it enumerates bus 0 (BAR sizing, command, cache line
//! size, interrupt line), so the TSM takes each write that faults there and passes on only the
//! registers that cannot move anything over system memory:
//! - on every chipset function: COMMAND, STATUS (write-one-to-clear), cache line size, latency
//!   timer and interrupt line, byte by byte (a dword at 0x0C would also write BIST);
//! - on the LPC bridge: the PIRQ routing registers (PIRQA–D at 0x60, PIRQE–H at 0x68), which
//!   ACPI's interrupt links write to route PCI interrupts to the PIC's inputs;
//! - on device 31's functions but the LPC bridge (function 0): the six standard BARs. Their
//!   memory BARs decode only inside the PCI address space, which the CPU reaches through the
//!   PCI hole below 4 GiB and above RAM (QEMU lays PCI below RAM), as every other device's do.
//!
//! Everything else (the registers above, capabilities, extended space, anything unknown, and any
//! access that is not naturally aligned inside one function's page or wider than a dword) is
//! dropped: the write does not happen, the instruction completes, and a read shows the register
//! unchanged.

/// The MCH's device number and the ICH9's.
pub const MCH: u8 = 0;
pub const ICH9: u8 = 31;

/// What to do with one configuration write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Write it to the function.
    Forward,
    /// Drop it.
    Drop,
}

const COMMAND_STATUS: core::ops::Range<u16> = 0x04..0x08;
const CACHE_LINE_LATENCY: core::ops::Range<u16> = 0x0C..0x0E;
const BARS: core::ops::Range<u16> = 0x10..0x28;
const INTERRUPT_LINE: u16 = 0x3C;
const PIRQ_ROUTING: [core::ops::Range<u16>; 2] = [0x60..0x64, 0x68..0x6C];
/// A function's configuration space (ECAM).
const SPACE: u16 = 0x1000;

/// The verdict on a write of `width` bytes at `offset` of bus 0 function `device`.`function`.
pub fn config_write(device: u8, function: u8, offset: u16, width: u8) -> Verdict {
    let width = u16::from(width);
    let aligned = matches!(width, 1 | 2 | 4) && offset.is_multiple_of(width);
    if !aligned || offset >= SPACE || !(device == MCH || device == ICH9) || function > 7 {
        return Verdict::Drop;
    }
    let bars = device == ICH9 && function != 0;
    let lpc = device == ICH9 && function == 0;
    let allowed = |at: u16| {
        COMMAND_STATUS.contains(&at)
            || CACHE_LINE_LATENCY.contains(&at)
            || at == INTERRUPT_LINE
            || (bars && BARS.contains(&at))
            || (lpc && PIRQ_ROUTING.iter().any(|r| r.contains(&at)))
    };
    if (offset..offset + width).all(allowed) {
        Verdict::Forward
    } else {
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict::{Drop, Forward};
    use super::*;

    #[test]
    fn header_registers_every_function_may_write() {
        for (d, f) in [(MCH, 0), (ICH9, 0), (ICH9, 2), (ICH9, 3)] {
            assert_eq!(config_write(d, f, 0x04, 2), Forward);
            assert_eq!(config_write(d, f, 0x04, 4), Forward);
            assert_eq!(config_write(d, f, 0x06, 2), Forward);
            assert_eq!(config_write(d, f, 0x0C, 1), Forward);
            assert_eq!(config_write(d, f, 0x0D, 1), Forward);
            assert_eq!(config_write(d, f, 0x3C, 1), Forward);
            // A dword at 0x0C also writes BIST; 0x3C's dword the interrupt pin and more.
            assert_eq!(config_write(d, f, 0x0C, 4), Drop);
            assert_eq!(config_write(d, f, 0x3C, 4), Drop);
            assert_eq!(config_write(d, f, 0x00, 4), Drop);
        }
    }

    #[test]
    fn bars_only_of_sata_and_smbus() {
        for off in (0x10..0x28).step_by(4) {
            assert_eq!(config_write(ICH9, 2, off, 4), Forward);
            assert_eq!(config_write(ICH9, 3, off, 4), Forward);
            assert_eq!(config_write(ICH9, 0, off, 4), Drop);
            assert_eq!(config_write(MCH, 0, off, 4), Drop);
        }
        // The expansion ROM BAR is not among them.
        assert_eq!(config_write(ICH9, 2, 0x30, 4), Drop);
    }

    #[test]
    fn pirq_routing_of_the_lpc_bridge() {
        for off in [0x60, 0x63, 0x68, 0x6B] {
            assert_eq!(config_write(ICH9, 0, off, 1), Forward);
        }
        assert_eq!(config_write(ICH9, 0, 0x60, 4), Forward);
        assert_eq!(config_write(ICH9, 0, 0x64, 4), Drop);
        assert_eq!(config_write(ICH9, 0, 0x6C, 1), Drop);
    }

    #[test]
    fn windows_over_system_memory_are_dropped() {
        // MCH: PCIEXBAR (0x60), PAM0-6 (0x90-0x96), SMRAM (0x9D), ESMRAMC (0x9E).
        for (off, w) in [
            (0x60, 4),
            (0x64, 4),
            (0x90, 1),
            (0x96, 1),
            (0x9D, 1),
            (0x9E, 1),
        ] {
            assert_eq!(config_write(MCH, 0, off, w), Drop);
        }
        // LPC: PMBASE (0x40), ACPI_CNTL (0x44), GPIO base (0x48), RCBA (0xF0); PIRQ routing
        // on any other function.
        assert_eq!(config_write(ICH9, 2, 0x60, 1), Drop);
        assert_eq!(config_write(MCH, 0, 0x68, 1), Drop);
        for off in [0x40, 0x44, 0x48, 0xF0] {
            assert_eq!(config_write(ICH9, 0, off, 4), Drop);
        }
        // Capabilities and extended space, anywhere.
        assert_eq!(config_write(ICH9, 2, 0x80, 4), Drop);
        assert_eq!(config_write(ICH9, 2, 0x100, 4), Drop);
    }

    #[test]
    fn malformed_accesses_are_dropped() {
        assert_eq!(config_write(ICH9, 2, 0x05, 2), Drop);
        assert_eq!(config_write(ICH9, 2, 0x12, 4), Drop);
        assert_eq!(config_write(ICH9, 2, 0x10, 8), Drop);
        assert_eq!(config_write(ICH9, 2, 0x10, 3), Drop);
        assert_eq!(config_write(ICH9, 2, 0x10, 0), Drop);
        assert_eq!(config_write(ICH9, 2, 0x1000, 1), Drop);
        assert_eq!(config_write(ICH9, 2, u16::MAX, 1), Drop);
        assert_eq!(config_write(ICH9, 8, 0x04, 2), Drop);
        assert_eq!(config_write(1, 0, 0x04, 2), Drop);
    }
}
