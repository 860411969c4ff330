//! PCIe TDISP 1.0 wire format (requester and responder side).
//!
//! TDISP messages travel inside SPDM `VENDOR_DEFINED_REQUEST/RESPONSE` (PCI-SIG, protocol ID
//! [`PROTOCOL_ID`]) over a secured session; this module handles the TDISP message itself: the
//! 16-byte header (version, type, interface ID) and the payload.
//!
//! - [`Request`] / [`Response`]: every TDISP 1.0 message, with `decode(&[u8])` and
//!   `encode(&mut [u8]) -> len`. Decoding is zero-copy (variable parts borrow the input).
//! - [`InterfaceReport`]: the TDI report, parsed and checked; [`ReportReassembly`] fetches it in
//!   portions; [`InterfaceReport::encode`] builds one (responder side).
//! - [`TdispError`]: why bytes were refused; one variant per kind of malformation.
//!
//! Checks are strict on purpose (the TSM treats the host channel and the device as hostile):
//! a message is refused if it is longer than [`MAX_MESSAGE_SIZE`], shorter than its layout,
//! has bytes after its last field, a version other than [`TDISP_VERSION_1_0`], an unknown type
//! for the direction decoded, any reserved field or bit set, or fields that disagree. (The spec
//! tells receivers to *ignore* reserved bits; refusing them is this codec's choice, so a device
//! that sets them is reported rather than half-trusted.) Nothing reachable from input panics.
//!
//! Encoding refuses whatever decoding would refuse (it decodes its own output), so a value that
//! encodes always decodes back equal.
//!
//! # Example: a requester locking a TDI and starting it
//!
//! ```
//! use tsm_abi::tdisp::{
//!     InterfaceId, LockFlags, LockInterfaceParams, Request, Response, TdispError,
//!     MAX_MESSAGE_SIZE,
//! };
//!
//! # fn device(req: &[u8], rsp: &mut [u8]) -> usize {
//! #     let Ok(Request::LockInterface { interface_id, .. }) = Request::decode(req) else {
//! #         unreachable!()
//! #     };
//! #     Response::LockInterface { interface_id, nonce: [7; 32] }.encode(rsp).unwrap()
//! # }
//! # fn main() -> Result<(), TdispError> {
//! let tdi = InterfaceId::new(0x0100, None); // 01:00.0, segment unknown
//! let lock = Request::LockInterface {
//!     interface_id: tdi,
//!     params: LockInterfaceParams {
//!         flags: LockFlags::NO_FW_UPDATE | LockFlags::LOCK_MSIX,
//!         default_stream_id: 0,
//!         mmio_reporting_offset: 0,
//!         bind_p2p_address_mask: 0,
//!     },
//! };
//! let mut req = [0u8; MAX_MESSAGE_SIZE];
//! let req_len = lock.encode(&mut req)?;
//!
//! // ... the host carries req[..req_len] to the device and brings back the response ...
//! let mut rsp = [0u8; MAX_MESSAGE_SIZE];
//! let rsp_len = device(&req[..req_len], &mut rsp);
//!
//! let response = Response::decode(&rsp[..rsp_len])?;
//! assert!(response.answers(&lock)); // same TDI, LOCK_INTERFACE_RESPONSE or TDISP_ERROR
//! let nonce = match response {
//!     Response::LockInterface { nonce, .. } => nonce,
//!     Response::Error { error, .. } => panic!("device refused: {:?}", error.code),
//!     _ => unreachable!("answers() ruled the other codes out"),
//! };
//! let start = Request::StartInterface { interface_id: tdi, nonce };
//! let start_len = start.encode(&mut req)?;
//! # let _ = start_len;
//! # Ok(())
//! # }
//! ```
//!
//! Fetching the report: call [`ReportReassembly::next_request`] for each
//! `GET_DEVICE_INTERFACE_REPORT`, feed each `DEVICE_INTERFACE_REPORT` portion to
//! [`ReportReassembly::accept`], then [`ReportReassembly::report`] parses the result.

mod codes;
mod cursor;
mod error;
mod flags;
mod header;
mod payload;
mod report;
mod request;
mod response;
mod wire;

#[cfg(test)]
mod tests;

pub use codes::{ErrorCode, InterfaceId, Registry, RequestCode, ResponseCode, TdiState};
pub use error::{Field, TdispError};
pub use flags::{InterfaceInfo, LockFlags, RangeAttributes};
pub use payload::{
    Capabilities, ErrorResponse, LockInterfaceParams, MMIO_PAGE_SIZE, MmioRange, NONCE_SIZE, Nonce,
    SupportedRequests, VendorData, VersionList,
};
pub use report::{InterfaceReport, MmioRanges, ReportFields, ReportReassembly};
pub use request::Request;
pub use response::Response;

/// `TDISPVersion` of TDISP 1.0 (major 1 in bits 7:4, minor 0 in bits 3:0).
pub const TDISP_VERSION_1_0: u8 = 0x10;

/// Protocol ID of TDISP in the SPDM vendor-defined payload (PCI-SIG registry).
pub const PROTOCOL_ID: u8 = 0x01;

/// Size of the TDISP message header.
pub const HEADER_SIZE: usize = 16;

/// Largest TDISP message (header included) this codec takes or makes.
///
/// The TDX module caps the TDISP payload at 4049 bytes (the DOE mailbox buffer minus the
/// DOE, SPDM vendor-defined and secured-message headers, MAC and padding); we use the same cap
/// so a message fits the smallest DOE transport a TSM here has to support.
pub const MAX_MESSAGE_SIZE: usize = 4049;

/// Largest report portion one `DEVICE_INTERFACE_REPORT` can carry under [`MAX_MESSAGE_SIZE`]
/// (header + `PORTION_LENGTH` + `REMAINDER_LENGTH` come first).
pub const MAX_REPORT_PORTION: usize = MAX_MESSAGE_SIZE - HEADER_SIZE - 4;

/// Largest whole TDI report accepted: portion offsets are u16, so a report is addressable up to
/// 64 KiB − 1 bytes.
pub const MAX_REPORT_SIZE: usize = u16::MAX as usize;
