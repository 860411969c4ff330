//! Bounds-checked reading and writing of SPDM messages (little-endian throughout, DSP0274
//! §"Byte ordering"): the only place the codec touches offsets, so no decoder or encoder can
//! index out of range or overflow on hostile lengths.

use super::SpdmError;

/// Reads a message front to back; every step either yields data or `Truncated`.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    whole: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            whole: bytes.len(),
        }
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], SpdmError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(SpdmError::Truncated)?;
        self.rest = rest;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], SpdmError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(SpdmError::Truncated)?;
        self.rest = rest;
        Ok(*taken)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, SpdmError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, SpdmError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A 3-byte little-endian length (`MeasurementRecordLength`).
    pub(crate) fn u24(&mut self) -> Result<u32, SpdmError> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SpdmError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Bytes read so far.
    pub(crate) fn consumed(&self) -> usize {
        self.whole.saturating_sub(self.rest.len())
    }

    /// The message must end here; returns its length.
    pub(crate) fn finish(self) -> Result<usize, SpdmError> {
        if self.rest.is_empty() {
            Ok(self.whole)
        } else {
            Err(SpdmError::TrailingBytes)
        }
    }

    /// The message ends here, but a PCI DOE data object may carry up to 3 zero bytes after it
    /// (a DOE data object's length counts dwords: PCIe Base 6.x, Data Object Exchange), which belong to no message. Returns the
    /// message's length.
    pub(crate) fn finish_doe(self) -> Result<usize, SpdmError> {
        let used = self.consumed();
        let padding_ok = self.rest.len() < 4
            && self.whole.is_multiple_of(4)
            && self.rest.iter().all(|&b| b == 0);
        if self.rest.is_empty() || padding_ok {
            Ok(used)
        } else {
            Err(SpdmError::TrailingBytes)
        }
    }
}

/// Writes a message front to back into a caller buffer, refusing to pass its end.
pub(crate) struct Writer<'b> {
    out: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(out: &'b mut [u8]) -> Self {
        Self { out, len: 0 }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), SpdmError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(SpdmError::BufferTooSmall)?;
        let dest = self
            .out
            .get_mut(self.len..end)
            .ok_or(SpdmError::BufferTooSmall)?;
        dest.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, value: u8) -> Result<(), SpdmError> {
        self.bytes(&[value])
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), SpdmError> {
        self.bytes(&value.to_le_bytes())
    }

    /// A 3-byte little-endian length; `BadLength` if it does not fit.
    pub(crate) fn u24(&mut self, value: usize) -> Result<(), SpdmError> {
        let v = u32::try_from(value)
            .ok()
            .filter(|&v| v < 1 << 24)
            .ok_or(SpdmError::BadLength)?;
        let [a, b, c, _] = v.to_le_bytes();
        self.bytes(&[a, b, c])
    }

    pub(crate) fn u32(&mut self, value: u32) -> Result<(), SpdmError> {
        self.bytes(&value.to_le_bytes())
    }

    /// A u16 length field for `len` bytes; `BadLength` if it does not fit.
    pub(crate) fn len16(&mut self, len: usize) -> Result<(), SpdmError> {
        self.u16(u16::try_from(len).map_err(|_| SpdmError::BadLength)?)
    }

    pub(crate) fn zeros(&mut self, count: usize) -> Result<(), SpdmError> {
        for _ in 0..count {
            self.u8(0)?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
