//! The measurement record of `MEASUREMENTS` (DSP0274 1.2, "Measurement block" and
//! "DMTF measurement specification format").
//!
//! ```text
//! block:  Index (1) | MeasurementSpecification (1) | MeasurementSize (2) | Measurement
//! DMTF:   DMTFSpecMeasurementValueType (1) | DMTFSpecMeasurementValueSize (2) | Value
//! ```

use super::cursor::Reader;
use super::{Field, MeasurementSpec, SpdmError};

/// `DMTFSpecMeasurementValueType` bit 7: the value is a raw bit stream, not a digest.
pub const RAW_BIT_STREAM: u8 = 0x80;

/// A measurement record whose blocks have all been checked: each block is in DMTF format with
/// consistent sizes, a digest value is exactly the measurement hash size, and no index is 0,
/// 0xFF or repeated.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct MeasurementRecord<'a> {
    bytes: &'a [u8],
    count: u8,
}

/// One measurement block.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct MeasurementBlock<'a> {
    /// `Index` (1..=0xFE; 0xFD is the measurement manifest and 0xFE the device mode in 1.2).
    pub index: u8,
    /// `DMTFSpecMeasurementValueType` bits 6:0 (0 immutable ROM, 1 mutable firmware, 2 hardware
    /// configuration, 3 firmware configuration, 4 manifest, 5 device mode, 6 firmware version, 7
    /// firmware security version, ...).
    pub value_type: u8,
    /// `DMTFSpecMeasurementValueType` bit 7: a raw bit stream rather than a digest.
    pub raw: bool,
    /// `DMTFSpecMeasurementValue`.
    pub value: &'a [u8],
}

impl<'a> MeasurementRecord<'a> {
    /// Checks `count` blocks filling `bytes` exactly; `digest_len` is the negotiated
    /// measurement hash size (0 when only raw bit streams were negotiated).
    pub fn parse(bytes: &'a [u8], count: u8, digest_len: usize) -> Result<Self, SpdmError> {
        let mut seen = [0u64; 4];
        let mut r = Reader::new(bytes);
        for _ in 0..count {
            let block = read_block(&mut r, digest_len)?;
            let (word, bit) = (usize::from(block.index / 64), block.index % 64);
            let slot = seen
                .get_mut(word)
                .ok_or(SpdmError::InvalidField(Field::BlockIndex))?;
            if *slot & (1 << bit) != 0 {
                return Err(SpdmError::Inconsistent(Field::BlockIndex));
            }
            *slot |= 1 << bit;
        }
        if r.remaining() != 0 {
            return Err(SpdmError::Inconsistent(Field::NumberOfBlocks));
        }
        Ok(Self { bytes, count })
    }

    /// The record's bytes, as they came (what a verifier hashes or replays).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// `NumberOfBlocks`.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// The blocks, in record order.
    pub fn blocks(&self) -> impl Iterator<Item = MeasurementBlock<'a>> + 'a {
        let mut r = Reader::new(self.bytes);
        // Every block was checked by `parse`: reading them again cannot fail.
        core::iter::from_fn(move || read_block_unchecked(&mut r).ok())
    }
}

fn read_block_unchecked<'a>(r: &mut Reader<'a>) -> Result<MeasurementBlock<'a>, SpdmError> {
    let index = r.u8()?;
    let _spec = r.u8()?;
    let size = usize::from(r.u16()?);
    let mut m = Reader::new(r.bytes(size)?);
    let value_type = m.u8()?;
    let value_size = usize::from(m.u16()?);
    let value = m.bytes(value_size)?;
    Ok(MeasurementBlock {
        index,
        value_type: value_type & !RAW_BIT_STREAM,
        raw: value_type & RAW_BIT_STREAM != 0,
        value,
    })
}

fn read_block<'a>(
    r: &mut Reader<'a>,
    digest_len: usize,
) -> Result<MeasurementBlock<'a>, SpdmError> {
    let index = r.u8()?;
    if index == 0 || index == 0xFF {
        return Err(SpdmError::InvalidField(Field::BlockIndex));
    }
    if MeasurementSpec::from_bits_retain(r.u8()?) != MeasurementSpec::DMTF {
        return Err(SpdmError::InvalidField(Field::BlockSpecification));
    }
    let size = usize::from(r.u16()?);
    let mut m = Reader::new(r.bytes(size)?);
    let value_type = m.u8()?;
    let value_size = usize::from(m.u16()?);
    let value = m.bytes(value_size)?;
    m.finish()
        .map_err(|_| SpdmError::Inconsistent(Field::BlockSize))?;
    let raw = value_type & RAW_BIT_STREAM != 0;
    if !raw && value.len() != digest_len {
        return Err(SpdmError::Inconsistent(Field::ValueSize));
    }
    Ok(MeasurementBlock {
        index,
        value_type: value_type & !RAW_BIT_STREAM,
        raw,
        value,
    })
}
