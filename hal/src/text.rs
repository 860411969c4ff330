//! A fixed-size text buffer for the plain-text records of the fatal paths (no allocation, no
//! lock, truncates instead of failing). Numbers are written by hand, not through `core::fmt`:
//! these paths are the image's only text formatting, and `core::fmt`'s machinery (with the
//! `Debug`/`Display` code it keeps reachable) would be ~12 KiB of `.text` for them alone.

use crate::log::MAX_PAYLOAD;

/// Up to one record's payload of text.
pub struct TextBuf {
    buf: [u8; MAX_PAYLOAD],
    len: usize,
}

impl TextBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        TextBuf {
            buf: [0; MAX_PAYLOAD],
            len: 0,
        }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        // Truncation may cut a multi-byte character: keep the valid prefix.
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or("")
            }
        }
    }

    /// Appends `s`. What does not fit is dropped, so a report is cut, never lost.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.push_bytes(s.as_bytes())
    }

    /// Appends `v` in decimal.
    // These writers are out of line: the paths are cold, and inlined at each of their few
    // dozen uses they cost more `.text` than `core::fmt` did.
    #[inline(never)]
    pub fn dec(&mut self, v: u64) -> &mut Self {
        self.number(v, 10)
    }

    /// Appends `v` in hexadecimal with a `0x` prefix, as `{:#x}` would.
    #[inline(never)]
    pub fn hex(&mut self, v: u64) -> &mut Self {
        self.push("0x").number(v, 16)
    }

    /// Appends `v` in `base` (2..=16), without leading zeros.
    #[inline(never)]
    fn number(&mut self, mut v: u64, base: u64) -> &mut Self {
        // u64::MAX has 20 decimal digits, fewer in any larger base.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while start > 0 {
            start -= 1;
            if let (Some(d), Some(&c)) = (
                digits.get_mut(start),
                b"0123456789abcdef".get((v % base) as usize),
            ) {
                *d = c;
            }
            v /= base;
            if v == 0 {
                break;
            }
        }
        self.push_bytes(digits.get(start..).unwrap_or(&[]))
    }

    /// Appends ` name value` for each name and value, the value in hexadecimal.
    // One loop out of line for a register dump: unrolled at each dump, the pairs were ~40
    // calls' worth of code.
    #[inline(never)]
    pub fn fields(&mut self, names: &[&str], values: &[u64]) -> &mut Self {
        for (name, v) in names.iter().zip(values) {
            self.push(" ").push(name).push(" ").hex(*v);
        }
        self
    }

    #[inline(never)]
    fn push_bytes(&mut self, s: &[u8]) -> &mut Self {
        let room = self.buf.len().saturating_sub(self.len);
        let n = s.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + n), s.get(..n)) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_core_fmt_writes_them() {
        for (v, text) in [
            (0, "0 0x0"),
            (9, "9 0x9"),
            (10, "10 0xa"),
            (0xAB, "171 0xab"),
            (0x10, "16 0x10"),
            (1 << 63, "9223372036854775808 0x8000000000000000"),
            (u64::MAX, "18446744073709551615 0xffffffffffffffff"),
        ] {
            let mut t = TextBuf::new();
            t.dec(v).push(" ").hex(v);
            assert_eq!(t.as_str(), text);
        }
    }

    #[test]
    fn keeps_what_fits_and_drops_the_rest() {
        let mut t = TextBuf::new();
        t.push("x").dec(3).push("=").hex(0xAB).push(" ");
        assert_eq!(t.as_str(), "x3=0xab ");
        for _ in 0..MAX_PAYLOAD {
            t.push("0123456789");
        }
        assert_eq!(t.as_str().len(), MAX_PAYLOAD);
        assert!(t.as_str().starts_with("x3=0xab 0123456789"));
        assert!(t.as_str().ends_with("0123"));
    }

    #[test]
    fn fields_are_name_value_pairs() {
        let mut t = TextBuf::new();
        t.push("regs:").fields(&["a", "b"], &[1, 0x20]);
        assert_eq!(t.as_str(), "regs: a 0x1 b 0x20");
    }

    #[test]
    fn a_number_cut_at_the_end_keeps_its_leading_digits() {
        let mut t = TextBuf::new();
        for _ in 0..MAX_PAYLOAD - 4 {
            t.push("a");
        }
        t.hex(0x12345).dec(7);
        assert!(t.as_str().ends_with("0x12"));
        assert_eq!(t.as_str().len(), MAX_PAYLOAD);
    }

    #[test]
    fn a_character_cut_at_the_end_is_left_out() {
        let mut t = TextBuf::new();
        for _ in 0..MAX_PAYLOAD - 1 {
            t.push("a");
        }
        // 'é' is two bytes: only the first fits.
        t.push("é");
        assert_eq!(t.as_str().len(), MAX_PAYLOAD - 1);
        assert!(t.as_str().bytes().all(|b| b == b'a'));
    }
}
