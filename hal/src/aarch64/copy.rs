//! Memory copies and fills on aarch64: [`crate::platform::PhysMem`]'s copies and granule
//! zeroing, and the image's `memcpy` and `memset`.
//!
//! Written in assembly rather than Rust loops. Host memory may change under a copy, so every
//! access must happen as written (what volatile accesses give); volatile byte loops compile to
//! ~7 instructions per byte at `opt-level = "s"`, and a word loop in Rust keeps its iterator
//! and overflow checks (measured no better: docs/profile-aarch64.md). compiler_builtins'
//! generic `memcpy` costs half an instruction per byte when source and destination agree
//! modulo 8 and over two and a half when they do not. Here a 64-byte block is four `ldp` and
//! four `stp`, and zeroing a granule is 64 bytes per `st1` ([`zero`]).
//!
//! Before the MMU is on memory is Device and unaligned accesses fault, so copies then make
//! aligned accesses only; once it is on, the TSM's stage-1 maps DRAM as Normal memory with
//! SCTLR_EL2.A clear, and a copy whose ends disagree modulo 8 uses the plain word loop with
//! unaligned accesses.

use core::arch::asm;

/// The TSM's `memcpy` (in place of compiler_builtins' generic one, which moves a word in four
/// instructions at best and assembles words from single bytes when source and destination
/// differ modulo 8, as the compiler's temporaries often do): every move of an object, a
/// register frame or a call's arguments goes through it.
///
/// # Safety
/// C's `memcpy` contract: `src` readable and `dst` writable for `n` bytes, not overlapping.
/// Before the MMU is on only aligned accesses are made, so it also works then (Device memory).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n <= SMALL && mmu_on() {
        // SAFETY: the caller's contract, `n` at most `SMALL`, and the MMU is on.
        unsafe { copy_small(dst, src, n) };
        return dst;
    }
    // SAFETY: the caller's contract, which is `copy`'s.
    unsafe { copy(dst, src, n) }
}

/// The longest copy [`copy_small`] makes.
const SMALL: usize = 64;

/// A `memcpy` of at most [`SMALL`] bytes once the MMU is on: the first and last 16 (or 8, or
/// 4) bytes loaded as pairs, words or half-words that may overlap in the middle, then stored,
/// with no loop for anything from 4 bytes up. Most of the compiler's moves on the call paths
/// are 38-44 bytes between enums whose payloads disagree modulo 8 (a decoded call, a result:
/// four per guest call); through [`copy_aligned`] each took about 39 instructions, its loops
/// and byte tail included; here 14 to 16. Only `memcpy`: the compiler's moves within the
/// TSM's own memory. An overlapped byte is read twice, so `PhysMem` copies of host memory,
/// which promise one read per byte, keep [`copy`].
///
/// # Safety
/// As [`copy`], with `len <= SMALL` and the MMU on ([`mmu_on`]): unaligned accesses allowed.
#[inline(always)]
unsafe fn copy_small(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: reads only `[src, src + len)` and writes only `[dst, dst + len)`, the caller's
    // ranges: each case loads from the range's start and from its end minus the access size,
    // which is not below the start since `len` is at least that size in the case (17..=32 for
    // two pairs, 33..=64 for four, 8..=16 for two words, 4..=7 for two half-words, below 4
    // byte by byte); unaligned accesses are allowed with the MMU on (Normal memory,
    // SCTLR_EL2.A clear).
    unsafe {
        asm!(
            "add {se}, {s}, {n}",
            "add {de}, {d}, {n}",
            "cmp {n}, #16",
            "b.hi 4f",
            "cmp {n}, #8",
            "b.lo 2f",
            "ldr {a}, [{s}]",
            "ldr {b}, [{se}, #-8]",
            "str {a}, [{d}]",
            "str {b}, [{de}, #-8]",
            "b 9f",
            "2:",
            "cmp {n}, #4",
            "b.lo 3f",
            "ldr {a:w}, [{s}]",
            "ldr {b:w}, [{se}, #-4]",
            "str {a:w}, [{d}]",
            "str {b:w}, [{de}, #-4]",
            "b 9f",
            "3:",
            "cbz {n}, 9f",
            "ldrb {a:w}, [{s}], #1",
            "strb {a:w}, [{d}], #1",
            "subs {n}, {n}, #1",
            "b 3b",
            "4:",
            "ldp {a}, {b}, [{s}]",
            "ldp {c}, {e}, [{se}, #-16]",
            "cmp {n}, #32",
            "b.hi 5f",
            "stp {a}, {b}, [{d}]",
            "stp {c}, {e}, [{de}, #-16]",
            "b 9f",
            "5:",
            "ldp {f}, {g}, [{s}, #16]",
            "ldp {h}, {i}, [{se}, #-32]",
            "stp {a}, {b}, [{d}]",
            "stp {f}, {g}, [{d}, #16]",
            "stp {h}, {i}, [{de}, #-32]",
            "stp {c}, {e}, [{de}, #-16]",
            "9:",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            n = inout(reg) len => _,
            se = out(reg) _,
            de = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            e = out(reg) _,
            f = out(reg) _,
            g = out(reg) _,
            h = out(reg) _,
            i = out(reg) _,
            options(nostack),
        )
    };
}

/// The TSM's `memset` (the compiler's zero-initialisations): 64 bytes per four `stp`.
///
/// # Safety
/// C's `memset` contract: `dst` writable for `n` bytes. Only aligned accesses are made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // C converts the value to `unsigned char`: the truncation is the contract.
    let byte = c as u8;
    // SAFETY: the caller's contract, which is `fill`'s.
    unsafe { fill(dst, u64::from_ne_bytes([byte; 8]), n) };
    dst
}

/// Copies `len` bytes from `src` to `dst` (the ranges do not overlap) with aligned accesses
/// only: 64-byte blocks of `ldp`/`stp` when source and destination agree modulo 8, aligned
/// words shifted together when they do not. Each destination byte is written once from one
/// read of its source byte; the shifted path also reads the unused bytes of the aligned words
/// that hold the first and last source bytes (never another word, so never another page).
/// Returns `dst` (so that `memcpy` can tail-call the unaligned path).
///
/// # Safety
/// `src` must be readable and `dst` writable for `len` bytes, both as memory mapped in the
/// TSM's stage-1 (or, before the MMU is on, as DRAM).
#[inline(always)]
pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    if (dst as usize | src as usize) & 7 == 0 || mmu_on() {
        // SAFETY: the caller's contract; both pointers are 8-byte aligned, or the MMU is on,
        // so both ranges are Normal memory in the TSM's stage-1, where (SCTLR_EL2.A clear)
        // unaligned `ldp`/`stp`/`ldr`/`str` are allowed.
        unsafe { copy_aligned(dst, src, len) };
        dst
    } else {
        // SAFETY: the caller's contract.
        unsafe { copy_unaligned(dst, src, len) }
    }
}

/// Whether this CPU's EL2 stage-1 is on (SCTLR_EL2.M): from then on every address the TSM
/// copies is Normal memory (DRAM, its own image; device registers are never copied), and the
/// TSM's SCTLR_EL2 leaves alignment checks off (`mmu`).
///
/// Copies whose source and destination disagree modulo 8 are common on the call paths: the
/// compiler moves a call's result between enums whose payloads sit at different offsets, and
/// the shifted path took ~80 instructions for 40 bytes (two per guest call, profiled).
#[inline(always)]
fn mmu_on() -> bool {
    super::sysreg::read_sysreg!("sctlr_el2") & 1 != 0
}

/// [`copy`] when both pointers are 8-byte aligned (objects, frames, most of the compiler's
/// moves), or when the MMU is on: blocks, pairs, a word and bytes in one go, with no set-up.
///
/// # Safety
/// As [`copy`], with `dst` and `src` 8-byte aligned, or with the MMU on ([`mmu_on`]).
#[inline(always)]
unsafe fn copy_aligned(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: reads `[src, src + len)` and writes `[dst, dst + len)` (the caller's ranges),
    // words with accesses the caller's alignment or the MMU's Normal memory allows. `n` is
    // what is left minus 64 in the block loop and minus 16 after it; each loop runs only
    // while a full block or pair is left. After the pair loop `n` is `left - 16` with `left`
    // in 0..16, so bit 3 of `n` is bit 3 of `left` (a word left) and `n & 7` the bytes left.
    unsafe {
        asm!(
            "subs {n}, {n}, #64",
            "b.lo 3f",
            "2:",
            "ldp {a}, {b}, [{s}], #16",
            "ldp {c}, {e}, [{s}], #16",
            "ldp {f}, {g}, [{s}], #16",
            "ldp {h}, {i}, [{s}], #16",
            "stp {a}, {b}, [{d}], #16",
            "stp {c}, {e}, [{d}], #16",
            "stp {f}, {g}, [{d}], #16",
            "stp {h}, {i}, [{d}], #16",
            "subs {n}, {n}, #64",
            "b.hs 2b",
            "3:",
            "adds {n}, {n}, #48",
            "b.lo 5f",
            "4:",
            "ldp {a}, {b}, [{s}], #16",
            "stp {a}, {b}, [{d}], #16",
            "subs {n}, {n}, #16",
            "b.hs 4b",
            "5:",
            "tbz {n}, #3, 6f",
            "ldr {a}, [{s}], #8",
            "str {a}, [{d}], #8",
            "6:",
            "ands {n}, {n}, #7",
            "b.eq 8f",
            "7:",
            "ldrb {a:w}, [{s}], #1",
            "strb {a:w}, [{d}], #1",
            "subs {n}, {n}, #1",
            "b.ne 7b",
            "8:",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            n = inout(reg) len => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            e = out(reg) _,
            f = out(reg) _,
            g = out(reg) _,
            h = out(reg) _,
            i = out(reg) _,
            options(nostack),
        )
    };
}

/// [`copy`] when a pointer is not 8-byte aligned: bytes up to `dst`'s alignment, then aligned
/// words (shifted together when `src` is still unaligned), then bytes.
///
/// # Safety
/// As [`copy`].
#[inline(never)]
unsafe fn copy_unaligned(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    let head = ((dst as usize).wrapping_neg() & 7).min(len);
    let words = (len - head) & !7;
    // SAFETY: head, words and tail partition the caller's ranges; after the head `dst` is
    // 8-byte aligned, and `copy_aligned` gets an aligned `src` too, `copy_shifted` the other.
    unsafe {
        copy_bytes(dst, src, head);
        let (d, s) = (dst.add(head), src.add(head));
        if words != 0 {
            if (s as usize) & 7 == 0 {
                copy_aligned(d, s, words);
            } else {
                copy_shifted(d, s, words);
            }
        }
        copy_bytes(d.add(words), s.add(words), len - head - words);
    }
    dst
}

/// Byte copy, one `ldrb`/`strb` pair per byte.
///
/// # Safety
/// As [`copy`].
unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: reads `[src, src + len)` and writes `[dst, dst + len)`, which the caller
    // guarantees; `len > 0`, so the loop runs at least once and ends at zero.
    unsafe {
        asm!(
            "2:",
            "ldrb {t:w}, [{s}], #1",
            "strb {t:w}, [{d}], #1",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            n = inout(reg) len => _,
            t = out(reg) _,
            options(nostack),
        )
    };
}

/// Word copy from a source that is not 8-byte aligned: each destination word is two aligned
/// source words shifted together.
///
/// # Safety
/// As [`copy`], with `dst` 8-byte aligned, `src` not, and `len` a non-zero multiple of 8.
unsafe fn copy_shifted(dst: *mut u8, src: *const u8, len: usize) {
    let aligned = (src as usize) & !7;
    // 8..=56: the source's offset in its word, in bits (`src` is not aligned).
    let shift = ((src as usize) & 7) * 8;
    // SAFETY: reads the aligned words from the one holding `src` to the one holding
    // `src + len - 1` (each holds a byte of the caller's source range, so each is mapped) and
    // writes `[dst, dst + len)` with aligned stores. `lslv` takes its amount modulo 64, so
    // `neg` gives 64 - shift. The loop body is unrolled twice to alternate the two words'
    // registers; `n` reaches zero after `len / 8` stores.
    unsafe {
        asm!(
            "ldr {w0}, [{s}], #8",
            "neg {rsh}, {sh}",
            "2:",
            "ldr {w1}, [{s}], #8",
            "lsr {t}, {w0}, {sh}",
            "lsl {u}, {w1}, {rsh}",
            "orr {t}, {t}, {u}",
            "str {t}, [{d}], #8",
            "subs {n}, {n}, #8",
            "b.eq 3f",
            "ldr {w0}, [{s}], #8",
            "lsr {t}, {w1}, {sh}",
            "lsl {u}, {w0}, {rsh}",
            "orr {t}, {t}, {u}",
            "str {t}, [{d}], #8",
            "subs {n}, {n}, #8",
            "b.ne 2b",
            "3:",
            s = inout(reg) aligned => _,
            d = inout(reg) dst => _,
            n = inout(reg) len => _,
            sh = in(reg) shift,
            rsh = out(reg) _,
            w0 = out(reg) _,
            w1 = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            options(nostack),
        )
    };
}

/// Zeroes `len` bytes at `dst`: 64-byte aligned blocks with one `st1` of four zeroed vector
/// registers each (saved and restored around the loop: they are the running context's),
/// stores elsewhere. While a vCPU runs with the host's FP/SIMD registers still loaded,
/// CPTR_EL2.TFP traps EL2's own FP/SIMD accesses too (`guest::LazyFp`): the block stores clear
/// it around themselves and put the caller's CPTR_EL2 back (the next ERET into the vCPU
/// synchronises that; the TSM runs no FP/SIMD instruction outside these).
///
/// Not `DC ZVA`: QEMU's `max` CPU has 64-byte ZVA blocks, so a granule took 64 `DC ZVA`s and as
/// many address updates and loop tests (321 instructions per scrub under icount, profiled),
/// while `st1` with post-increment writes 64 bytes and moves the pointer in one instruction and
/// eight of them make a 512-byte step (84 instructions per granule). On hardware `DC ZVA` saves
/// the line fills; the bench counts instructions, and both are plain stores to the TSM.
///
/// # Safety
/// `dst` must be writable for `len` bytes as memory mapped in the TSM's stage-1.
pub(super) unsafe fn zero(dst: *mut u8, len: usize) {
    const BLOCK: usize = 64;
    let start = dst as usize;
    if (start | len).is_multiple_of(BLOCK) {
        // A granule scrub: no ends to store around the blocks (two empty `fill` calls cost
        // more than a tenth of the scrub), and no loop.
        if len == PAGE {
            // SAFETY: the caller's range: 4 KiB from a 64-byte aligned address.
            unsafe { zero_page(start) };
        } else {
            // SAFETY: the caller's range, 64-byte aligned and a multiple of 64 long.
            unsafe { zero_blocks(start, len) };
        }
        return;
    }
    let end = start.saturating_add(len);
    // The block-aligned middle `[first, last)` of the range (empty when there is none).
    let first = start.next_multiple_of(BLOCK).min(end);
    let last = (end & !(BLOCK - 1)).max(first);
    // SAFETY: `start <= first <= last <= end = start + len`, so the three parts cover exactly the
    // caller's range; `[first, last)` is a whole number of aligned 64-byte blocks.
    unsafe {
        fill(dst, 0, first - start);
        zero_blocks(first, last - first);
        fill(last as *mut u8, 0, end - last);
    }
}

/// Bytes [`zero_page`] zeroes: a granule, what every scrub zeroes.
const PAGE: usize = 4096;

/// The start of [`zero_page`]'s and [`zero_blocks`]'s assembly: CPTR_EL2.TFP cleared if set
/// (a vCPU's run with the host's FP/SIMD registers still loaded, `guest::LazyFp`) and
/// synchronised, keeping the caller's CPTR_EL2 in `{c}` (`{t}` a scratch register); v0..v3, the
/// running context's, kept in 64 bytes below SP; then zeroed.
macro_rules! zero_regs_enter {
    () => {
        concat!(
            ".arch_extension simd\n",
            "mrs {c}, cptr_el2\n",
            "tbz {c}, #10, 7f\n",
            "bic {t}, {c}, #(1 << 10)\n",
            "msr cptr_el2, {t}\n",
            "isb\n",
            "7:\n",
            "stp q0, q1, [sp, #-64]!\n",
            "stp q2, q3, [sp, #32]\n",
            "movi v0.2d, #0\n",
            "movi v1.2d, #0\n",
            "movi v2.2d, #0\n",
            "movi v3.2d, #0",
        )
    };
}

/// The end of [`zero_page`]'s and [`zero_blocks`]'s assembly: v0..v3 and the caller's CPTR_EL2
/// (`{c}`, from [`zero_regs_enter`]) put back.
macro_rules! zero_regs_leave {
    () => {
        concat!(
            "ldp q2, q3, [sp, #32]\n",
            "ldp q0, q1, [sp], #64\n",
            "msr cptr_el2, {c}",
        )
    };
}

/// Zeroes the 4 KiB at `start` with 64 `st1` in a row: the loop of [`zero_blocks`] added 20
/// instructions to every granule scrub (UNDELEGATE's, profiled), for 256 bytes of code here.
///
/// # Safety
/// As [`zero`], with `start` a multiple of 64 and the range [`PAGE`] bytes long.
pub(super) unsafe fn zero_page(start: usize) {
    // The `.rept` count below.
    const { assert!(PAGE == 64 * 64) };
    // SAFETY: writes exactly `[start, start + PAGE)`, which the caller owns: 64 `st1` of 64
    // bytes each, each advancing `p`. v0..v3 are kept and put back, and CPTR_EL2 lifted, as in
    // `zero_blocks`.
    unsafe {
        asm!(
            zero_regs_enter!(),
            ".rept 64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            ".endr",
            zero_regs_leave!(),
            p = inout(reg) start => _,
            c = out(reg) _,
            t = out(reg) _,
        )
    };
}

/// Zeroes `[start, start + len)`, `len` a multiple of 64: eight blocks per step while 512 bytes
/// are left, then one.
///
/// # Safety
/// As [`zero`], with `start` and `len` multiples of 64.
unsafe fn zero_blocks(start: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: writes exactly `[start, start + len)`, which the caller owns: `n` counts the bytes
    // left, each `st1` writes the 64 at `p` and advances it, the 512-byte loop runs only while
    // 512 are left and the 64-byte loop while any are (a multiple of 64, so it ends at zero).
    // v0..v3 hold the running context's values (the TSM is soft-float: `fp`), so the asm
    // keeps them in 64 bytes below SP and puts them back before it ends. CPTR_EL2.TFP, if set
    // (`zero`), is cleared first, synchronised, and set again at the end with the caller's
    // whole CPTR_EL2 value.
    unsafe {
        asm!(
            zero_regs_enter!(),
            "subs {n}, {n}, #512",
            "b.lo 3f",
            "2:",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "subs {n}, {n}, #512",
            "b.hs 2b",
            "3:",
            "adds {n}, {n}, #512",
            "b.eq 5f",
            "4:",
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{p}], #64",
            "subs {n}, {n}, #64",
            "b.ne 4b",
            "5:",
            zero_regs_leave!(),
            p = inout(reg) start => _,
            n = inout(reg) len => _,
            c = out(reg) _,
            t = out(reg) _,
        )
    };
}

/// Stores `pattern` (a byte repeated eight times) over `[dst, dst + len)`: bytes up to an
/// 8-byte boundary, 64-byte blocks of four `stp`, then pairs, a word and bytes.
///
/// # Safety
/// `dst` must be writable for `len` bytes.
unsafe fn fill(dst: *mut u8, pattern: u64, len: usize) {
    let head = ((dst as usize).wrapping_neg() & 7).min(len);
    let words = (len - head) & !7;
    // SAFETY: head, words and tail partition `[dst, dst + len)`; the word part starts 8-byte
    // aligned and is a multiple of 8 long. `n` counts down as in `copy_aligned`: each loop runs
    // only while a full block or pair remains, and bit 3 of `n + 16` tells a last word.
    unsafe {
        fill_bytes(dst, pattern as u8, head);
        let w = dst.add(head);
        if words != 0 {
            asm!(
                "subs {n}, {n}, #64",
                "b.lo 3f",
                "2:",
                "stp {p}, {p}, [{d}], #16",
                "stp {p}, {p}, [{d}], #16",
                "stp {p}, {p}, [{d}], #16",
                "stp {p}, {p}, [{d}], #16",
                "subs {n}, {n}, #64",
                "b.hs 2b",
                "3:",
                "adds {n}, {n}, #48",
                "b.lo 5f",
                "4:",
                "stp {p}, {p}, [{d}], #16",
                "subs {n}, {n}, #16",
                "b.hs 4b",
                "5:",
                "tbz {n}, #3, 6f",
                "str {p}, [{d}]",
                "6:",
                d = inout(reg) w => _,
                n = inout(reg) words => _,
                p = in(reg) pattern,
                options(nostack),
            );
        }
        fill_bytes(w.add(words), pattern as u8, len - head - words);
    }
}

/// Byte stores of `byte`.
///
/// # Safety
/// As [`fill`].
unsafe fn fill_bytes(dst: *mut u8, byte: u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: writes `[dst, dst + len)` (the caller's range); `len > 0`, the loop ends at zero.
    unsafe {
        asm!(
            "2:",
            "strb {b:w}, [{d}], #1",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            d = inout(reg) dst => _,
            n = inout(reg) len => _,
            b = in(reg) u32::from(byte),
            options(nostack),
        )
    };
}
