//! COM1, the 16550 UART at I/O port 0x3F8: the only device the TSM logs through.

use super::cpu::{inb, outb};

const COM1: u16 = 0x3F8;
/// Register offsets.
const THR: u16 = 0;
const IER: u16 = 1;
const DLL: u16 = 0;
const DLM: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
/// LSR: the transmit holding register is empty.
const LSR_THRE: u8 = 1 << 5;

/// Programs 115200 baud 8N1, FIFOs on, interrupts off (the TSM polls).
pub fn init() {
    outb(COM1 + IER, 0);
    outb(COM1 + LCR, 0x80); // DLAB: the next two writes set the divisor
    outb(COM1 + DLL, 1); // 115200 / 1
    outb(COM1 + DLM, 0);
    outb(COM1 + LCR, 0x03); // 8 data bits, no parity, 1 stop bit
    outb(COM1 + FCR, 0xC7); // enable and clear FIFOs
    outb(COM1 + MCR, 0x03); // DTR | RTS, OUT2 off: no IRQ line
}

/// Writes raw bytes, polling THRE before each one.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        while inb(COM1 + LSR) & LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        outb(COM1 + THR, b);
    }
}
