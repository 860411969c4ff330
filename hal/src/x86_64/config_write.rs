//! A Linux host's configuration writes to q35's chipset functions, emulated (docs/design.md
//! "On x86_64"): their pages are read-only in its nested table (`pci`), so each write is a
//! nested page fault. Reads go straight to the device.
//!
//! For a write fault in one of those pages the TSM reads the instruction at the host's RIP (its
//! linear address through the host's own page tables, `x86_walk`, every table entry and
//! instruction byte read only where the nested table maps host DRAM: `paging::read_host`),
//! decodes it (`x86_store`: a MOV store, else the access is refused as any blocked one is),
//! applies `q35_chipset`'s allow-list to the faulting address and width, writes the register
//! through the TSM's own mapping or drops the write (logged once per register, at debug), and
//! moves RIP past the instruction (QEMU's SVM saves no next RIP on a nested page fault).
//!
//! The address written is the CPU's, never the decoded operand's; the host only chooses the
//! instruction and its value. A host that rewrites its instruction between the fault and the
//! read (another CPU) gets the write of the instruction the TSM read, one it could have made
//! itself.

use core::sync::atomic::{AtomicU64, Ordering};

use super::svm::{Gprs, Vmcb, vmcb};
use super::{paging, pci};
use crate::q35_chipset::{self, Verdict};
use crate::x86_store::{self, Mode, Source};
use crate::x86_walk::{self, EFER_LMA, Paging};

/// VMCB segment attributes: L (64-bit code) and D/B.
const CS_L: u16 = 1 << 9;
const CS_D: u16 = 1 << 10;
const PAGE: u64 = 4096;
/// The longest instruction.
const MAX_INSTRUCTION: usize = 15;

/// Dropped registers already logged: one bit per dword of the first 256 bytes, one word per
/// function (index `(device == 31) << 3 | function`).
static LOGGED: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
/// Per function (bit: the same index), whether a dropped write at 0x100 or above was logged.
static LOGGED_EXTENDED: AtomicU64 = AtomicU64::new(0);

/// Completes the host's write fault at `gpa` if it is a chipset configuration write this
/// module emulates (module doc): `true` then, with RIP past the instruction; `false` leaves
/// the host's state untouched for the caller's blocked-access path.
pub fn emulate(v: &mut Vmcb, g: &Gprs, gpa: u64) -> bool {
    let Some((device, function, offset)) = pci::chipset_function(gpa) else {
        return false;
    };
    let cs = v.segment(vmcb::CS);
    let long = v.read64(vmcb::EFER) & EFER_LMA != 0;
    let mode = if long && cs.attributes & CS_L != 0 {
        Mode::Bits64
    } else if cs.attributes & CS_D != 0 {
        Mode::Bits32
    } else {
        Mode::Bits16
    };
    let rip = v.read64(vmcb::RIP);
    let ip_mask = match mode {
        Mode::Bits64 => u64::MAX,
        Mode::Bits32 => 0xFFFF_FFFF,
        Mode::Bits16 => 0xFFFF,
    };
    let linear = if mode == Mode::Bits64 {
        rip
    } else {
        cs.base.wrapping_add(rip & ip_mask) & 0xFFFF_FFFF
    };
    let paging = Paging {
        cr0: v.read64(vmcb::CR0),
        cr3: v.read64(vmcb::CR3),
        cr4: v.read64(vmcb::CR4),
        efer: v.read64(vmcb::EFER),
    };
    let mut bytes = [0u8; MAX_INSTRUCTION];
    let got = fetch(&paging, linear, &mut bytes);
    let Some(store) = bytes
        .get(..got)
        .and_then(|b| x86_store::decode(b, mode).ok())
    else {
        return false;
    };
    let value = match store.source {
        Source::Register(i) => register(v, g, i),
        Source::HighByte(i) => register(v, g, i) >> 8,
        Source::Immediate(imm) => imm,
    };
    match q35_chipset::config_write(device, function, offset, store.width) {
        Verdict::Forward => {
            pci::chipset_write(device, function, offset, store.width, value as u32);
        }
        Verdict::Drop => log_drop(device, function, offset, store.width),
    }
    v.write64(vmcb::RIP, rip.wrapping_add(u64::from(store.len)) & ip_mask);
    true
}

/// Copies up to 15 instruction bytes at linear address `la` of the host into `out`, page by
/// page, stopping at the first byte it may not read; the bytes copied.
fn fetch(p: &Paging, la: u64, out: &mut [u8; MAX_INSTRUCTION]) -> usize {
    let mut got = 0;
    while got < out.len() {
        let at = la.wrapping_add(got as u64);
        let chunk = ((PAGE - at % PAGE) as usize).min(out.len() - got);
        let Some(pa) = x86_walk::translate(p, at, read_entry) else {
            break;
        };
        let Some(dst) = out.get_mut(got..got + chunk) else {
            break;
        };
        if !paging::read_host(pa, dst) {
            break;
        }
        got += chunk;
    }
    got
}

/// A page-table entry of `size` bytes (4 or 8) at guest-physical `pa`, if the host may read it.
fn read_entry(pa: u64, size: u8) -> Option<u64> {
    let mut b = [0u8; 8];
    let dst = b.get_mut(..usize::from(size))?;
    paging::read_host(pa, dst).then(|| u64::from_le_bytes(b))
}

/// General-purpose register `i` in the ModRM/REX numbering.
fn register(v: &Vmcb, g: &Gprs, i: u8) -> u64 {
    match i {
        0 => v.read64(vmcb::RAX),
        1 => g.rcx,
        2 => g.rdx,
        3 => g.rbx,
        4 => v.read64(vmcb::RSP),
        5 => g.rbp,
        6 => g.rsi,
        7 => g.rdi,
        8 => g.r8,
        9 => g.r9,
        10 => g.r10,
        11 => g.r11,
        12 => g.r12,
        13 => g.r13,
        14 => g.r14,
        _ => g.r15,
    }
}

fn log_drop(device: u8, function: u8, offset: u16, width: u8) {
    let index = usize::from(device == q35_chipset::ICH9) << 3 | usize::from(function & 7);
    let first = if offset < 0x100 {
        let bit = 1u64 << (offset / 4);
        LOGGED
            .get(index)
            .is_some_and(|w| w.fetch_or(bit, Ordering::Relaxed) & bit == 0)
    } else {
        let bit = 1u64 << index;
        LOGGED_EXTENDED.fetch_or(bit, Ordering::Relaxed) & bit == 0
    };
    if first {
        defmt::debug!(
            "host config write to chipset 00:{=u8:02x}.{=u8} offset {=u16:#x} ({=u8} bytes) dropped",
            device,
            function,
            offset,
            width
        );
    }
}
