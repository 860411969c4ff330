//! The PL011 UART of QEMU `virt`: the only device the TSM drives, and only it (the host logs
//! through `CONSOLE_WRITE`; the UART is not in the host's stage-2).

/// The UART's MMIO base on QEMU `virt`.
pub(crate) const PL011_BASE: usize = 0x0900_0000;
/// Data register.
const UARTDR: usize = 0x000;
/// Flag register.
const UARTFR: usize = 0x018;
/// UARTFR: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;

/// Writes raw bytes to the UART, waiting for FIFO room as needed.
pub fn console_write(bytes: &[u8]) {
    let fr = (PL011_BASE + UARTFR) as *const u32;
    let dr = (PL011_BASE + UARTDR) as *mut u32;
    for &b in bytes {
        // SAFETY: UARTFR/UARTDR are the PL011's registers, mapped as device memory in the TSM's
        // stage-1 (and reached uncached before the MMU is on); nothing else in the TSM maps them.
        unsafe {
            while core::ptr::read_volatile(fr) & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile(dr, u32::from(b));
        }
    }
}
