//! The byte source every target decodes its input from, and the matching writer the seed
//! generator uses.
//!
//! The format is deliberately trivial (little-endian integers read in order, zero once the
//! input runs out) so that seeds checked into `fuzz/corpus/` can be written by hand or by
//! [`Writer`], and stay valid when the decoders evolve only by appending fields. Every byte
//! string decodes to *some* program: the fuzzer never wastes executions on parse failures.

/// Reads integers from the fuzzer's bytes; reads past the end yield zeros.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `n` bytes (fewer at the end of input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = tail;
        head
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.bytes.len())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let src = self.bytes(N);
        out[..src.len()].copy_from_slice(src);
        out
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        u8::from_le_bytes(self.array())
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A bool (low bit of a byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// One of `items` (by a byte, modulo their count); `None` if `items` is empty.
    pub fn pick<'s, T>(&mut self, items: &'s [T]) -> Option<&'s T> {
        let i = usize::from(self.u8());
        items.get(i.checked_rem(items.len())?)
    }
}

/// Writes what [`Input`] reads, for hand-made seeds.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// A byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Raw bytes.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_input_agree_and_short_input_reads_zeros() {
        let mut w = Writer::default();
        w.u8(7)
            .u16(0x1234)
            .u32(0xDEAD_BEEF)
            .u64(u64::MAX - 1)
            .raw(&[9, 9]);
        let mut i = Input::new(&w.bytes);
        assert_eq!(
            (i.u8(), i.u16(), i.u32(), i.u64()),
            (7, 0x1234, 0xDEAD_BEEF, u64::MAX - 1)
        );
        assert_eq!(i.bytes(5), &[9, 9]);
        assert!(i.is_empty());
        assert_eq!((i.u64(), i.bool()), (0, false));
        assert_eq!(i.pick::<u8>(&[]), None);
        let mut j = Input::new(&[5]);
        assert_eq!(j.pick(&[10, 20, 30]), Some(&30));
    }
}
