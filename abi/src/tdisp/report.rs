//! The TDI report (`DEVICE_INTERFACE_REPORT` contents): a zero-copy parser with full consistency
//! checks, an encoder for responders, and the requester-side reassembly of portions.

use zerocopy::byteorder::little_endian::{U16, U32};

use super::codes::InterfaceId;
use super::cursor::{Reader, Writer};
use super::error::{Field, TdispError};
use super::flags::{InterfaceInfo, RangeAttributes};
use super::payload::MmioRange;
use super::request::Request;
use super::{MAX_REPORT_PORTION, MAX_REPORT_SIZE, wire};

/// The fixed fields at the start of a TDI report.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ReportFields {
    /// `INTERFACE_INFO`.
    pub interface_info: InterfaceInfo,
    /// MSI-X Message Control register (0 if MSI-X is unsupported or not locked).
    pub msi_x_message_control: u16,
    /// LNR Control register (0 if unsupported).
    pub lnr_control: u16,
    /// TPH Requester Control register (0 if unsupported or MSI-X not locked).
    pub tph_control: u32,
}

/// A parsed TDI report borrowing the report bytes.
///
/// A value of this type passed every check: length cap, reserved fields, range count against
/// the length, `DEVICE_SPECIFIC_INFO_LEN` against the bytes left, each range's attributes, size
/// and address overflow, and no two ranges overlapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct InterfaceReport<'a> {
    fields: ReportFields,
    ranges: &'a [wire::MmioRange],
    device_specific_info: &'a [u8],
}

impl<'a> InterfaceReport<'a> {
    /// Parses and checks a whole report.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TdispError> {
        if bytes.len() > MAX_REPORT_SIZE {
            return Err(TdispError::Oversized);
        }
        let mut r = Reader::new(bytes);
        let h: &wire::ReportHeader = r.view()?;
        let interface_info = InterfaceInfo::from_bits(h.interface_info.get())
            .ok_or(TdispError::ReservedNonZero(Field::InterfaceInfo))?;
        if h.reserved.get() != 0 {
            return Err(TdispError::ReservedNonZero(Field::ReportReserved));
        }
        let body = r.rest();
        // The count must leave room for exactly the ranges plus the info length field.
        let range_count = usize::try_from(h.mmio_range_count.get())
            .ok()
            .filter(|&n| {
                n.checked_mul(size_of::<wire::MmioRange>())
                    .and_then(|len| len.checked_add(4))
                    .is_some_and(|m| m <= body.len())
            })
            .ok_or(TdispError::Inconsistent(Field::MmioRangeCount))?;
        let mut r = Reader::new(body);
        let ranges: &[wire::MmioRange] = r.view_slice(range_count)?;
        let info_len: &U32 = r.view()?;
        let device_specific_info = r.rest();
        if usize::try_from(info_len.get()).ok() != Some(device_specific_info.len()) {
            return Err(TdispError::Inconsistent(Field::DeviceSpecificInfoLength));
        }
        for w in ranges {
            MmioRange::from_wire(w, RangeAttributes::all())?;
        }
        // Quadratic, but bounded: a report under MAX_REPORT_SIZE holds at most 4094 ranges.
        for (i, a) in ranges.iter().enumerate() {
            let later = ranges.get(i.saturating_add(1)..).unwrap_or_default();
            if later.iter().any(|b| pages_of(a).overlaps(&pages_of(b))) {
                return Err(TdispError::Inconsistent(Field::RangeOverlap));
            }
        }
        Ok(Self {
            fields: ReportFields {
                interface_info,
                msi_x_message_control: h.msi_x_message_control.get(),
                lnr_control: h.lnr_control.get(),
                tph_control: h.tph_control.get(),
            },
            ranges,
            device_specific_info,
        })
    }

    /// Encodes a report into `out`; returns its length. Refuses anything [`Self::parse`] would.
    pub fn encode(
        fields: &ReportFields,
        ranges: &[MmioRange],
        device_specific_info: &[u8],
        out: &mut [u8],
    ) -> Result<usize, TdispError> {
        let mut w = Writer::with_limit(out, MAX_REPORT_SIZE);
        let count = u32::try_from(ranges.len()).map_err(|_| TdispError::Oversized)?;
        let info_len =
            u32::try_from(device_specific_info.len()).map_err(|_| TdispError::Oversized)?;
        w.put(&wire::ReportHeader {
            interface_info: U16::new(fields.interface_info.bits()),
            reserved: U16::new(0),
            msi_x_message_control: U16::new(fields.msi_x_message_control),
            lnr_control: U16::new(fields.lnr_control),
            tph_control: U32::new(fields.tph_control),
            mmio_range_count: U32::new(count),
        })?;
        for range in ranges {
            w.put(&range.to_wire())?;
        }
        w.put(&U32::new(info_len))?;
        w.put_bytes(device_specific_info)?;
        let len = w.len();
        InterfaceReport::parse(w.into_written())?;
        Ok(len)
    }

    /// The fixed fields.
    pub const fn fields(&self) -> ReportFields {
        self.fields
    }

    /// Number of MMIO ranges.
    pub const fn mmio_range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The MMIO ranges in report order.
    pub fn mmio_ranges(&self) -> MmioRanges<'a> {
        MmioRanges {
            inner: self.ranges.iter(),
        }
    }

    /// `DEVICE_SPECIFIC_INFO`.
    pub const fn device_specific_info(&self) -> &'a [u8] {
        self.device_specific_info
    }
}

/// The page span of a wire range that already passed `MmioRange::from_wire`.
fn pages_of(w: &wire::MmioRange) -> MmioRange {
    MmioRange {
        first_page: w.first_page.get(),
        number_of_pages: w.number_of_pages.get(),
        attributes: RangeAttributes::empty(),
        range_id: 0,
    }
}

/// Iterator over the MMIO ranges of a checked [`InterfaceReport`].
#[derive(Clone, Debug)]
pub struct MmioRanges<'a> {
    inner: core::slice::Iter<'a, wire::MmioRange>,
}

impl Iterator for MmioRanges<'_> {
    type Item = MmioRange;

    fn next(&mut self) -> Option<MmioRange> {
        let w = self.inner.next()?;
        // Checked by `InterfaceReport::parse`, so nothing here can fail or be truncated.
        Some(MmioRange {
            first_page: w.first_page.get(),
            number_of_pages: w.number_of_pages.get(),
            attributes: RangeAttributes::from_bits_truncate(w.range_attributes.get()),
            range_id: w.range_id.get(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for MmioRanges<'_> {}

/// Requester side of fetching a report in portions into a caller buffer.
///
/// Plain data (no borrow), so a resumable requester can keep it between device round trips.
/// It checks what the protocol lets it check: each portion is no longer than asked, makes
/// progress, and `offset + portion + REMAINDER_LENGTH` stays the same across portions (a report
/// that changes length mid-fetch is refused). A same-length change of content is not detectable
/// here; the report digest bound into the SPDM session covers that.
///
/// ```
/// use tsm_abi::tdisp::{InterfaceId, ReportReassembly, Request, Response, TdispError};
///
/// # fn device(req: &Request<'_>, report: &'static [u8]) -> Response<'static> {
/// #     let Request::GetDeviceInterfaceReport { interface_id, offset, length } = *req else {
/// #         unreachable!()
/// #     };
/// #     let start = usize::from(offset);
/// #     let end = (start + usize::from(length).min(8)).min(report.len());
/// #     Response::DeviceInterfaceReport {
/// #         interface_id,
/// #         portion: &report[start..end],
/// #         remainder_length: (report.len() - end) as u16,
/// #     }
/// # }
/// # static REPORT: [u8; 20] = [0; 20];
/// # fn main() -> Result<(), TdispError> {
/// let tdi = InterfaceId::new(0x0100, None);
/// let mut buffer = [0u8; 1024];
/// let mut fetch = ReportReassembly::new();
/// while let Some(request) = fetch.next_request(tdi, buffer.len())? {
///     // (encode `request`, let the host carry it, decode the answer)
///     let answer = device(&request, &REPORT);
///     match answer {
///         Response::DeviceInterfaceReport { portion, remainder_length, .. }
///             if answer.answers(&request) =>
///         {
///             fetch.accept(&mut buffer, portion, remainder_length)?;
///         }
///         _ => return Err(TdispError::UnknownMessageType(answer.code().to_wire())),
///     }
/// }
/// let report = fetch.report(&buffer)?;
/// assert_eq!(report.mmio_range_count(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReportReassembly {
    received: usize,
    total: Option<usize>,
    asked: Option<u16>,
}

impl ReportReassembly {
    /// Nothing fetched yet.
    pub const fn new() -> Self {
        Self {
            received: 0,
            total: None,
            asked: None,
        }
    }

    /// The next `GET_DEVICE_INTERFACE_REPORT` to send (recorded as outstanding), or `None` once
    /// the whole report is in. `buffer_len` is the size of the buffer the report goes into.
    pub fn next_request(
        &mut self,
        interface_id: InterfaceId,
        buffer_len: usize,
    ) -> Result<Option<Request<'static>>, TdispError> {
        if self.is_complete() {
            return Ok(None);
        }
        let offset = u16::try_from(self.received).map_err(|_| TdispError::Oversized)?;
        let room = buffer_len.saturating_sub(self.received);
        let wanted = match self.total {
            Some(total) => total.saturating_sub(self.received),
            None => usize::MAX,
        };
        let length = room.min(wanted).min(MAX_REPORT_PORTION);
        let length = u16::try_from(length).map_err(|_| TdispError::Oversized)?;
        if length == 0 {
            return Err(TdispError::BufferTooSmall);
        }
        self.asked = Some(length);
        Ok(Some(Request::GetDeviceInterfaceReport {
            interface_id,
            offset,
            length,
        }))
    }

    /// Takes the answer to the outstanding request into `buffer`; returns whether the report is
    /// complete.
    pub fn accept(
        &mut self,
        buffer: &mut [u8],
        portion: &[u8],
        remainder_length: u16,
    ) -> Result<bool, TdispError> {
        let asked = self
            .asked
            .take()
            .ok_or(TdispError::Inconsistent(Field::PortionOffset))?;
        if portion.len() > usize::from(asked) {
            return Err(TdispError::Inconsistent(Field::PortionLength));
        }
        if portion.is_empty() && remainder_length != 0 {
            return Err(TdispError::Inconsistent(Field::PortionLength));
        }
        let end = self.received.saturating_add(portion.len());
        let total = end.saturating_add(usize::from(remainder_length));
        if total > MAX_REPORT_SIZE {
            return Err(TdispError::Oversized);
        }
        if self.total.is_some_and(|t| t != total) {
            return Err(TdispError::Inconsistent(Field::RemainderLength));
        }
        if total > buffer.len() {
            return Err(TdispError::BufferTooSmall);
        }
        let dest = buffer
            .get_mut(self.received..end)
            .ok_or(TdispError::BufferTooSmall)?;
        dest.copy_from_slice(portion);
        self.received = end;
        self.total = Some(total);
        Ok(self.is_complete())
    }

    /// Whether every byte of the report has been received.
    pub fn is_complete(&self) -> bool {
        self.total == Some(self.received)
    }

    /// Report bytes received so far.
    pub const fn received(&self) -> usize {
        self.received
    }

    /// Parses the complete report out of `buffer` (the one given to [`Self::accept`]).
    pub fn report<'b>(&self, buffer: &'b [u8]) -> Result<InterfaceReport<'b>, TdispError> {
        if !self.is_complete() {
            return Err(TdispError::Truncated);
        }
        let bytes = buffer.get(..self.received).ok_or(TdispError::Truncated)?;
        InterfaceReport::parse(bytes)
    }
}
