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
