//! A fixed-size text buffer for the plain-text records of the fatal paths (no allocation, no
//! lock, truncates instead of failing).

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
}

impl core::fmt::Write for TextBuf {
    /// Never fails: what does not fit is dropped, so a report is cut, never lost.
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let n = s.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use core::fmt::Write;

    use super::*;

    #[test]
    fn keeps_what_fits_and_drops_the_rest() {
        let mut t = TextBuf::new();
        write!(t, "x{}={:#x} ", 3, 0xAB).unwrap();
        assert_eq!(t.as_str(), "x3=0xab ");
        for _ in 0..MAX_PAYLOAD {
            write!(t, "0123456789").unwrap();
        }
        assert_eq!(t.as_str().len(), MAX_PAYLOAD);
        assert!(t.as_str().starts_with("x3=0xab 0123456789"));
        assert!(t.as_str().ends_with("0123"));
    }

    #[test]
    fn a_character_cut_at_the_end_is_left_out() {
        let mut t = TextBuf::new();
        for _ in 0..MAX_PAYLOAD - 1 {
            t.write_str("a").unwrap();
        }
        // 'é' is two bytes: only the first fits.
        t.write_str("é").unwrap();
        assert_eq!(t.as_str().len(), MAX_PAYLOAD - 1);
        assert!(t.as_str().bytes().all(|b| b == b'a'));
    }
}
