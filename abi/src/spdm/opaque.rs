//! Opaque data of `KEY_EXCHANGE` / `KEY_EXCHANGE_RSP` in DSP0274 1.2's general format
//! (`OpaqueDataFmt1`, Table "General opaque data format"), and the one element DSP0277
//! puts there: the secured-message version negotiation.
//!
//! ```text
//! general:  TotalElements (1) | Reserved (3) | element × TotalElements
//! element:  ID (1) | VendorLen (1) | VendorID | OpaqueElementDataLen (2) | data | zero padding to 4
//! DSP0277:  SMDataVersion (1) = 1 | SMDataID (1) | 0: SelectedVersion (2)
//!                                                | 1: VersionCount (1) | Version (2) × count
//! ```

use super::cursor::{Reader, Writer};
use super::{Field, SpdmError, VersionNumber};

/// Registry ID of DMTF (the element `ID` of DSP0277's data; no vendor ID).
const ID_DMTF: u8 = 0;
/// `SMDataVersion` of DSP0277 1.x.
const SM_DATA_VERSION: u8 = 1;
/// `SMDataID`: the responder's choice.
const SM_VERSION_SELECTION: u8 = 0;
/// `SMDataID`: the requester's offer.
const SM_SUPPORTED_VERSIONS: u8 = 1;

/// DSP0277 versions this codec's secured messages follow (1.0 and 1.1 frame records alike).
pub const SECURED_MESSAGE_VERSIONS: [VersionNumber; 2] =
    [VersionNumber(0x1000), VersionNumber(0x1100)];

/// One element of general opaque data.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct OpaqueElement<'a> {
    /// `ID` (a registry ID; 0 = DMTF).
    pub id: u8,
    /// `VendorID` (empty for DMTF).
    pub vendor_id: &'a [u8],
    /// The element's data, padding excluded.
    pub data: &'a [u8],
}

/// Checks general opaque data (every element, its padding, nothing after the last) and returns
/// its elements.
pub fn elements(opaque: &[u8]) -> Result<impl Iterator<Item = OpaqueElement<'_>>, SpdmError> {
    let bad = SpdmError::InvalidField(Field::OpaqueData);
    let (head, body) = opaque.split_at_checked(4).ok_or(bad)?;
    // `TotalElements`; the 3 bytes after it are reserved.
    let total = head.first().copied().unwrap_or(0);
    let mut check = Reader::new(body);
    for _ in 0..total {
        read_element(&mut check).map_err(|_| bad)?;
    }
    check.finish().map_err(|_| bad)?;
    let mut r = Reader::new(body);
    Ok((0..total).map_while(move |_| read_element(&mut r).ok()))
}

fn read_element<'a>(r: &mut Reader<'a>) -> Result<OpaqueElement<'a>, SpdmError> {
    let start = r.consumed();
    let id = r.u8()?;
    let vendor_len = r.u8()?;
    let vendor_id = r.bytes(vendor_len.into())?;
    let data_len = r.u16()?;
    let data = r.bytes(data_len.into())?;
    let used = r.consumed().saturating_sub(start);
    let padding = used.next_multiple_of(4).saturating_sub(used);
    if r.bytes(padding)?.iter().any(|&b| b != 0) {
        return Err(SpdmError::InvalidField(Field::OpaqueData));
    }
    Ok(OpaqueElement {
        id,
        vendor_id,
        data,
    })
}

/// The DMTF element with `SMDataID` = `id`, its data after the two-byte SM header.
fn secured_message_element(opaque: &[u8], id: u8) -> Result<&[u8], SpdmError> {
    let mut found = None;
    for e in elements(opaque)? {
        let mut r = Reader::new(e.data);
        if e.id == ID_DMTF
            && e.vendor_id.is_empty()
            && r.u8() == Ok(SM_DATA_VERSION)
            && r.u8() == Ok(id)
        {
            if found.is_some() {
                return Err(SpdmError::InvalidField(Field::OpaqueData));
            }
            found = e.data.get(2..);
        }
    }
    found.ok_or(SpdmError::InvalidField(Field::OpaqueData))
}

/// The responder's `SelectedVersion` in `KEY_EXCHANGE_RSP` opaque data.
pub fn selected_version(opaque: &[u8]) -> Result<VersionNumber, SpdmError> {
    let mut r = Reader::new(secured_message_element(opaque, SM_VERSION_SELECTION)?);
    let v = r.u16()?;
    r.finish()
        .map_err(|_| SpdmError::InvalidField(Field::OpaqueData))?;
    Ok(VersionNumber(v))
}

/// The requester's offered versions in `KEY_EXCHANGE` opaque data (raw little-endian entries).
pub fn supported_versions(
    opaque: &[u8],
) -> Result<impl Iterator<Item = VersionNumber> + '_, SpdmError> {
    let mut r = Reader::new(secured_message_element(opaque, SM_SUPPORTED_VERSIONS)?);
    let count = r.u8()?;
    let list = r.bytes(usize::from(count).saturating_mul(2))?;
    r.finish()
        .map_err(|_| SpdmError::InvalidField(Field::OpaqueData))?;
    Ok(list
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(|b| VersionNumber(u16::from_le_bytes(b))))
}

/// Writes general opaque data holding one DMTF element with `sm` as its data (after the SM
/// header byte pair, which this writes).
fn encode_one(out: &mut [u8], sm_id: u8, sm: &[u8]) -> Result<usize, SpdmError> {
    let mut w = Writer::new(out);
    w.u8(1)?;
    w.zeros(3)?;
    w.u8(ID_DMTF)?;
    w.u8(0)?;
    let data_len = sm.len().checked_add(2).ok_or(SpdmError::BadLength)?;
    w.len16(data_len)?;
    w.u8(SM_DATA_VERSION)?;
    w.u8(sm_id)?;
    w.bytes(sm)?;
    let padding = w.len().next_multiple_of(4).saturating_sub(w.len());
    w.zeros(padding)?;
    Ok(w.len())
}

/// `KEY_EXCHANGE` opaque data offering `versions` (at most 8).
pub fn encode_supported_versions(
    out: &mut [u8],
    versions: &[VersionNumber],
) -> Result<usize, SpdmError> {
    let mut sm = [0u8; 17];
    let mut w = Writer::new(&mut sm);
    w.u8(u8::try_from(versions.len()).map_err(|_| SpdmError::BadLength)?)?;
    for v in versions {
        w.u16(v.0).map_err(|_| SpdmError::BadLength)?;
    }
    let len = w.len();
    encode_one(
        out,
        SM_SUPPORTED_VERSIONS,
        sm.get(..len).unwrap_or_default(),
    )
}

/// `KEY_EXCHANGE_RSP` opaque data selecting `version`.
pub fn encode_version_selection(
    out: &mut [u8],
    version: VersionNumber,
) -> Result<usize, SpdmError> {
    encode_one(out, SM_VERSION_SELECTION, &version.0.to_le_bytes())
}
