//! Bounds-checked reading and writing of byte buffers: the only place the codec touches offsets,
//! so no decoder or encoder can index out of range or overflow on hostile lengths.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{MAX_MESSAGE_SIZE, TdispError};

/// Reads a message front to back; every step either yields data or `Truncated`.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// A fixed-layout view of the next `size_of::<T>()` bytes.
    pub(crate) fn view<T>(&mut self) -> Result<&'a T, TdispError>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        let (value, rest) = T::ref_from_prefix(self.rest).map_err(|_| TdispError::Truncated)?;
        self.rest = rest;
        Ok(value)
    }

    /// `count` consecutive fixed-layout records.
    pub(crate) fn view_slice<T>(&mut self, count: usize) -> Result<&'a [T], TdispError>
    where
        T: FromBytes + Immutable + Unaligned,
    {
        let (values, rest) = <[T]>::ref_from_prefix_with_elems(self.rest, count)
            .map_err(|_| TdispError::Truncated)?;
        self.rest = rest;
        Ok(values)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], TdispError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(TdispError::Truncated)?;
        self.rest = rest;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, TdispError> {
        let (&first, rest) = self.rest.split_first().ok_or(TdispError::Truncated)?;
        self.rest = rest;
        Ok(first)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    /// The message must end here.
    pub(crate) fn finish(self) -> Result<(), TdispError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TdispError::TrailingBytes)
        }
    }
}

/// Writes a message front to back into a caller buffer, refusing to pass the message cap
/// (`Oversized`) or the buffer end (`BufferTooSmall`).
pub(crate) struct Writer<'b> {
    out: &'b mut [u8],
    len: usize,
    limit: usize,
}

impl<'b> Writer<'b> {
    /// A writer for one TDISP message (capped at [`MAX_MESSAGE_SIZE`]).
    pub(crate) fn message(out: &'b mut [u8]) -> Self {
        Self::with_limit(out, MAX_MESSAGE_SIZE)
    }

    pub(crate) fn with_limit(out: &'b mut [u8], limit: usize) -> Self {
        Self { out, len: 0, limit }
    }

    pub(crate) fn put<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), TdispError> {
        self.put_bytes(value.as_bytes())
    }

    pub(crate) fn put_bytes(&mut self, bytes: &[u8]) -> Result<(), TdispError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(TdispError::Oversized)?;
        if end > self.limit {
            return Err(TdispError::Oversized);
        }
        let dest = self
            .out
            .get_mut(self.len..end)
            .ok_or(TdispError::BufferTooSmall)?;
        dest.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub(crate) fn put_u8(&mut self, value: u8) -> Result<(), TdispError> {
        self.put_bytes(&[value])
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes written, for the post-encode check.
    pub(crate) fn into_written(self) -> &'b [u8] {
        let Self { out, len, .. } = self;
        let out: &'b [u8] = out;
        out.get(..len).unwrap_or_default()
    }
}
