//! Decoding the instruction behind an SVM guest's write to a page the TSM emulates (a Linux
//! host's configuration write to a chipset function: `x86_64::config_write`).
//!
//! QEMU's SVM gives no decode assist (no instruction bytes, no next RIP on a nested page
//! fault), so the TSM reads the bytes at the guest's RIP itself and decodes them here. Only the
//! stores a kernel's MMIO accessors and compilers emit are recognised: `MOV r/m8, r8` (88),
//! `MOV r/m, r` (89), `MOV r/m8, imm8` (C6 /0) and `MOV r/m, imm` (C7 /0), with operand-size
//! (66), address-size (67) and segment prefixes and, in 64-bit mode, one REX prefix right before
//! the opcode, and a memory ModRM operand (SIB and displacements in 16-, 32- and 64-bit
//! addressing). Anything else, a truncated instruction, or one longer than the architecture's
//! 15 bytes is refused; the caller then does what it does for any access it does not emulate.
//!
//! Only the store's width, its source and the instruction's length are decoded: the address
//! written is the one the CPU reported, never recomputed from the operand. The bytes are host
//! input, so no path here can panic (every read is `get`).

/// The processor mode the instruction ran in, which sets the default operand and address sizes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// 16-bit code segment (real mode, or protected mode with CS.D clear).
    Bits16,
    /// 32-bit code segment (protected or compatibility mode, CS.D set).
    Bits32,
    /// 64-bit mode (EFER.LMA and CS.L).
    Bits64,
}

/// Where the stored value comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// General-purpose register `index` in the ModRM/REX numbering (0 rax, 1 rcx, 2 rdx, 3 rbx,
    /// 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8–15 r8–r15), its low `width` bytes.
    Register(u8),
    /// Bits 15:8 of register `index` (0–3: AH, CH, DH, BH), a byte store without REX.
    HighByte(u8),
    /// An immediate, already sign-extended to the store's width.
    Immediate(u64),
}

/// A decoded store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Store {
    /// Bytes written: 1, 2, 4 or 8.
    pub width: u8,
    /// The value's source.
    pub source: Source,
    /// The instruction's length in bytes (what RIP moves past it).
    pub len: u8,
}

/// Why bytes were not decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refused {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes.
    TooLong,
    /// A prefix a MOV store does not take (LOCK, REP), or a REX not right before the opcode.
    Prefix,
    /// Not one of the four MOV stores.
    Opcode,
    /// A register operand (ModRM.mod = 3) or a C6/C7 with ModRM.reg ≠ 0.
    Operand,
}

/// The architectural instruction length limit.
const MAX_LEN: usize = 15;

/// Decodes the store at the start of `bytes` (at most the first 15 are looked at).
pub fn decode(bytes: &[u8], mode: Mode) -> Result<Store, Refused> {
    let mut at = 0usize;
    let mut opsize = false;
    let mut addrsize = false;
    let mut rex = 0u8;
    let byte = |i: usize| -> Result<u8, Refused> {
        if i >= MAX_LEN {
            return Err(Refused::TooLong);
        }
        bytes.get(i).copied().ok_or(Refused::Truncated)
    };
    let opcode = loop {
        let b = byte(at)?;
        at += 1;
        if rex != 0 && !matches!(b, 0x88 | 0x89 | 0xC6 | 0xC7) {
            // A REX must come last; one followed by a prefix (or a second REX) is not a store
            // this module takes.
            return Err(if is_legacy_prefix(b) || (0x40..=0x4F).contains(&b) {
                Refused::Prefix
            } else {
                Refused::Opcode
            });
        }
        match b {
            0x66 => opsize = true,
            0x67 => addrsize = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => {}
            0xF0 | 0xF2 | 0xF3 => return Err(Refused::Prefix),
            0x40..=0x4F if mode == Mode::Bits64 => rex = b,
            b => break b,
        }
    };
    let rex_w = rex & 0x08 != 0;
    let byte_op = matches!(opcode, 0x88 | 0xC6);
    if !byte_op && !matches!(opcode, 0x89 | 0xC7) {
        return Err(Refused::Opcode);
    }
    let width: u8 = if byte_op {
        1
    } else if rex_w {
        8
    } else {
        match (mode, opsize) {
            (Mode::Bits16, false) | (Mode::Bits32 | Mode::Bits64, true) => 2,
            _ => 4,
        }
    };
    let modrm = byte(at)?;
    at += 1;
    let md = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if md == 3 {
        return Err(Refused::Operand);
    }
    // The memory operand's SIB and displacement bytes.
    let addr16 = match mode {
        Mode::Bits16 => !addrsize,
        Mode::Bits32 => addrsize,
        Mode::Bits64 => false,
    };
    let disp = if addr16 {
        match md {
            0 if rm == 6 => 2,
            0 => 0,
            1 => 1,
            _ => 2,
        }
    } else {
        let mut base = rm;
        if rm == 4 {
            base = byte(at)? & 7;
            at += 1;
        }
        match md {
            0 if base == 5 => 4,
            0 => 0,
            1 => 1,
            _ => 4,
        }
    };
    at += disp;
    let source = match opcode {
        0x88 | 0x89 => {
            let index = reg | if rex & 0x04 != 0 { 8 } else { 0 };
            if byte_op && rex == 0 && (4..8).contains(&index) {
                Source::HighByte(index - 4)
            } else {
                Source::Register(index)
            }
        }
        _ => {
            if reg != 0 {
                return Err(Refused::Operand);
            }
            let imm_len = usize::from(width.min(4));
            let mut imm = 0u64;
            for i in 0..imm_len {
                imm |= u64::from(byte(at + i)?) << (8 * i);
            }
            at += imm_len;
            if width == 8 {
                // REX.W C7: imm32 sign-extended to 64 bits.
                imm = i64::from(imm as u32 as i32) as u64;
            }
            Source::Immediate(imm)
        }
    };
    // The last byte must exist and lie within the limit (a displacement with nothing after it).
    byte(at - 1)?;
    Ok(Store {
        width,
        source,
        len: at as u8,
    })
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0xF0 | 0xF2 | 0xF3
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8], mode: Mode) -> Store {
        decode(bytes, mode).unwrap()
    }

    #[test]
    fn linux_mmconfig_accessors() {
        // movb %al,(%rdx); movw %ax,(%rdx); movl %eax,(%rdx)
        assert_eq!(
            ok(&[0x88, 0x02], Mode::Bits64),
            Store {
                width: 1,
                source: Source::Register(0),
                len: 2
            }
        );
        assert_eq!(
            ok(&[0x66, 0x89, 0x02], Mode::Bits64),
            Store {
                width: 2,
                source: Source::Register(0),
                len: 3
            }
        );
        assert_eq!(
            ok(&[0x89, 0x02], Mode::Bits64),
            Store {
                width: 4,
                source: Source::Register(0),
                len: 2
            }
        );
        // movl %eax,(%r8): REX.B
        assert_eq!(
            ok(&[0x41, 0x89, 0x00], Mode::Bits64),
            Store {
                width: 4,
                source: Source::Register(0),
                len: 3
            }
        );
        // movw %r9w,(%rdi): 66 REX.R
        assert_eq!(
            ok(&[0x66, 0x44, 0x89, 0x0F], Mode::Bits64),
            Store {
                width: 2,
                source: Source::Register(9),
                len: 4
            }
        );
    }

    #[test]
    fn byte_registers_with_and_without_rex() {
        // movb %ah,(%rdi) without REX; movb %spl,(%rdi) with an empty REX.
        assert_eq!(ok(&[0x88, 0x27], Mode::Bits64).source, Source::HighByte(0));
        assert_eq!(ok(&[0x88, 0x3F], Mode::Bits64).source, Source::HighByte(3));
        assert_eq!(
            ok(&[0x40, 0x88, 0x27], Mode::Bits64).source,
            Source::Register(4)
        );
        assert_eq!(
            ok(&[0x44, 0x88, 0x3F], Mode::Bits64).source,
            Source::Register(15)
        );
    }

    #[test]
    fn widths_by_mode_and_prefix() {
        assert_eq!(ok(&[0x48, 0x89, 0x02], Mode::Bits64).width, 8);
        // REX.W wins over 66.
        assert_eq!(ok(&[0x66, 0x48, 0x89, 0x02], Mode::Bits64).width, 8);
        assert_eq!(ok(&[0x89, 0x02], Mode::Bits32).width, 4);
        assert_eq!(ok(&[0x66, 0x89, 0x02], Mode::Bits32).width, 2);
        assert_eq!(ok(&[0x89, 0x07], Mode::Bits16).width, 2);
        assert_eq!(ok(&[0x66, 0x89, 0x07], Mode::Bits16).width, 4);
        // Outside 64-bit mode 0x40..0x4F are INC/DEC, not REX.
        assert_eq!(
            decode(&[0x48, 0x89, 0x02], Mode::Bits32),
            Err(Refused::Opcode)
        );
    }

    #[test]
    fn immediates() {
        // movb $0x5a,(%rax)
        assert_eq!(
            ok(&[0xC6, 0x00, 0x5A], Mode::Bits64),
            Store {
                width: 1,
                source: Source::Immediate(0x5A),
                len: 3
            }
        );
        // movw $0x1234,0x4(%rax)
        assert_eq!(
            ok(&[0x66, 0xC7, 0x40, 0x04, 0x34, 0x12], Mode::Bits64),
            Store {
                width: 2,
                source: Source::Immediate(0x1234),
                len: 6
            }
        );
        // movl $0x80000000,0x10(%rax,%rbx,4)
        assert_eq!(
            ok(
                &[0xC7, 0x44, 0x98, 0x10, 0x00, 0x00, 0x00, 0x80],
                Mode::Bits64
            ),
            Store {
                width: 4,
                source: Source::Immediate(0x8000_0000),
                len: 8
            }
        );
        // movq $-1,(%rax): imm32 sign-extended.
        assert_eq!(
            ok(&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], Mode::Bits64).source,
            Source::Immediate(u64::MAX)
        );
        // C7 with ModRM.reg = 1 is not a MOV.
        assert_eq!(
            decode(&[0xC7, 0x08, 0, 0, 0, 0], Mode::Bits64),
            Err(Refused::Operand)
        );
    }

    #[test]
    fn addressing_forms() {
        // disp8, disp32, RIP-relative, SIB with no base (disp32), SIB with base.
        assert_eq!(ok(&[0x89, 0x42, 0x10], Mode::Bits64).len, 3);
        assert_eq!(ok(&[0x89, 0x82, 1, 2, 3, 4], Mode::Bits64).len, 6);
        assert_eq!(ok(&[0x89, 0x05, 1, 2, 3, 4], Mode::Bits64).len, 6);
        assert_eq!(ok(&[0x89, 0x04, 0x25, 1, 2, 3, 4], Mode::Bits64).len, 7);
        assert_eq!(ok(&[0x89, 0x04, 0x24], Mode::Bits64).len, 3);
        assert_eq!(ok(&[0x89, 0x44, 0x24, 0x08], Mode::Bits64).len, 4);
        assert_eq!(ok(&[0x89, 0x84, 0x24, 1, 2, 3, 4], Mode::Bits64).len, 7);
        // 16-bit addressing: [disp16], [bx+si+disp8], [bp+disp16]; 67 switches it.
        assert_eq!(ok(&[0x89, 0x06, 0x34, 0x12], Mode::Bits16).len, 4);
        assert_eq!(ok(&[0x89, 0x40, 0x10], Mode::Bits16).len, 3);
        assert_eq!(ok(&[0x89, 0x86, 0x34, 0x12], Mode::Bits16).len, 4);
        assert_eq!(ok(&[0x67, 0x89, 0x06, 0x34, 0x12], Mode::Bits32).len, 5);
        assert_eq!(ok(&[0x67, 0x89, 0x05, 1, 2, 3, 4], Mode::Bits16).len, 7);
        // Segment overrides are taken.
        assert_eq!(ok(&[0x26, 0x3E, 0x89, 0x02], Mode::Bits32).len, 4);
    }

    #[test]
    fn register_operands_and_other_opcodes_are_refused() {
        assert_eq!(decode(&[0x89, 0xC2], Mode::Bits64), Err(Refused::Operand));
        assert_eq!(
            decode(&[0xC6, 0xF8, 0], Mode::Bits64),
            Err(Refused::Operand)
        );
        for op in [0x8B, 0x8A, 0xA3, 0xAB, 0x0F, 0x90, 0x01] {
            assert_eq!(
                decode(&[op, 0x02, 0, 0, 0, 0], Mode::Bits64),
                Err(Refused::Opcode)
            );
        }
    }

    #[test]
    fn bad_prefixes() {
        for p in [0xF0, 0xF2, 0xF3] {
            assert_eq!(decode(&[p, 0x89, 0x02], Mode::Bits64), Err(Refused::Prefix));
        }
        // REX then a legacy prefix, two REX, REX then a non-store.
        assert_eq!(
            decode(&[0x48, 0x66, 0x89, 0x02], Mode::Bits64),
            Err(Refused::Prefix)
        );
        assert_eq!(
            decode(&[0x48, 0x41, 0x89, 0x02], Mode::Bits64),
            Err(Refused::Prefix)
        );
        assert_eq!(
            decode(&[0x48, 0x8B, 0x02], Mode::Bits64),
            Err(Refused::Opcode)
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let whole: [&[u8]; 8] = [
            &[0x88, 0x02],
            &[0x66, 0x41, 0x89, 0x00],
            &[0xC6, 0x00, 0x5A],
            &[0x66, 0xC7, 0x40, 0x04, 0x34, 0x12],
            &[0xC7, 0x44, 0x98, 0x10, 0x00, 0x00, 0x00, 0x80],
            &[0x89, 0x04, 0x25, 1, 2, 3, 4],
            &[0x48, 0xC7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0x67, 0x89, 0x06, 0x34, 0x12],
        ];
        for bytes in whole {
            let mode = if bytes[0] == 0x67 {
                Mode::Bits32
            } else {
                Mode::Bits64
            };
            assert_eq!(decode(bytes, mode).unwrap().len as usize, bytes.len());
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..cut], mode),
                    Err(Refused::Truncated),
                    "{bytes:x?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn the_length_limit() {
        // 11 segment prefixes + C7 05 disp32 imm32 = 21 bytes: past 15.
        let mut long = [0x3E; 21];
        long[11..].copy_from_slice(&[0xC7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode(&long, Mode::Bits64), Err(Refused::TooLong));
        // Exactly 15: 5 prefixes + 10 bytes.
        assert_eq!(decode(&long[6..], Mode::Bits64).unwrap().len, 15);
        // 14 prefixes then the opcode at byte 15 (the 16th): too long, not truncated.
        let prefixes = [0x2E; 20];
        assert_eq!(decode(&prefixes, Mode::Bits64), Err(Refused::TooLong));
    }

    #[test]
    fn random_instructions_decode_within_their_bytes() {
        // A fixed xorshift sequence of 15-byte inputs biased towards the bytes that matter.
        let interesting = [
            0x66, 0x67, 0x2E, 0x41, 0x48, 0x4C, 0x88, 0x89, 0xC6, 0xC7, 0x04, 0x05,
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            let mut bytes = [0u8; 15];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if x & 1 == 0 {
                    interesting[(x >> 8) as usize % interesting.len()]
                } else {
                    (x >> 16) as u8
                };
            }
            let cut = (x >> 40) as usize % 16;
            for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
                if let Ok(s) = decode(&bytes[..cut], mode) {
                    assert!(usize::from(s.len) <= cut && [1, 2, 4, 8].contains(&s.width));
                }
            }
        }
    }

    #[test]
    fn no_input_panics() {
        // Every one- and two-byte input, and three-byte inputs over the prefixes and opcodes
        // that matter, in every mode.
        for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
            let _ = decode(&[], mode);
            for a in 0..=255u8 {
                let _ = decode(&[a], mode);
                for b in 0..=255u8 {
                    let _ = decode(&[a, b], mode);
                    for c in [0x88, 0x89, 0xC6, 0xC7, 0x04, 0x05, 0x25, 0x44, 0x84, 0xFF] {
                        if let Ok(s) = decode(&[a, b, c], mode) {
                            assert!(s.len <= 3 && [1, 2, 4, 8].contains(&s.width));
                        }
                    }
                }
            }
        }
    }
}
