//! Which port writes of a PC host ask the machine to reset (docs/design.md "A Linux host",
//! x86_64 "Ports"): Linux's emergency restart (`panic=-1` after a panic, or `reboot -f`) tries
//! the FADT's reset register, then the keyboard controller, then the chipset's reset control
//! port. The TSM does not reset the machine under its host; it ends the run as a failure
//! instead, so a panicking kernel stops at once rather than spinning until the run's timeout.
//! Pure, so host tests reach it (the x86_64 HAL builds only for the bare-metal target).

/// The chipset's reset control register (Intel ICH/PCH `RST_CNT`; QEMU q35's FADT names it as
/// the ACPI reset register too, with the value 0x0F, which Linux writes first).
pub const RST_CNT: u16 = 0xCF9;
/// `RST_CNT.RST_CPU`: its rising edge resets the machine (`SYS_RST`, bit 1, only chooses how
/// hard, so a write of it alone does nothing yet).
const RST_CPU: u32 = 1 << 2;
/// The 8042 keyboard controller's command port, and its "pulse output line 0" command that
/// drives the CPU's reset line.
pub const KBC_COMMAND: u16 = 0x64;
const KBC_PULSE_RESET: u32 = 0xFE;

/// Whether an OUT of `size` bytes of `value` to `port` asks for a reset. Only single-byte
/// writes count: both registers are byte-wide, and a wider access that covers them is not
/// what any reset path issues.
pub fn is_reset_request(port: u16, size: u8, value: u32) -> bool {
    if size != 1 {
        return false;
    }
    let byte = value & 0xFF;
    match port {
        RST_CNT => byte & RST_CPU != 0,
        KBC_COMMAND => byte == KBC_PULSE_RESET,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_paths_of_linux_are_requests() {
        // The FADT reset register's value on q35 (seen in a panic run), a warm reset, and
        // Linux's CF9 sequence's second write.
        assert!(is_reset_request(RST_CNT, 1, 0x0F));
        assert!(is_reset_request(RST_CNT, 1, 0x06));
        assert!(is_reset_request(RST_CNT, 1, 0x0E));
        assert!(is_reset_request(KBC_COMMAND, 1, 0xFE));
        // Only the low byte is the register's; the upper bits of eax are not written.
        assert!(is_reset_request(KBC_COMMAND, 1, 0xFFFF_FFFE));
    }

    #[test]
    fn other_writes_are_not() {
        // SYS_RST alone (Linux's "request hard reset" first write) resets nothing yet.
        assert!(!is_reset_request(RST_CNT, 1, 0x02));
        assert!(!is_reset_request(RST_CNT, 1, 0x00));
        // Other keyboard controller commands (0xAD: disable keyboard; 0xD1: write output port).
        assert!(!is_reset_request(KBC_COMMAND, 1, 0xAD));
        assert!(!is_reset_request(KBC_COMMAND, 1, 0xD1));
        // The keyboard's data port, and neighbours of the two registers.
        assert!(!is_reset_request(0x60, 1, 0xFE));
        assert!(!is_reset_request(0xCF8, 1, 0x06));
        assert!(!is_reset_request(0xCFA, 1, 0x06));
        // Wider accesses: 0xCF8's dword (PCI configuration address) covers 0xCF9 but is not it.
        assert!(!is_reset_request(RST_CNT, 2, 0x06));
        assert!(!is_reset_request(KBC_COMMAND, 4, 0xFE));
    }
}
