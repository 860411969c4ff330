//! The COMMUNICATE buffer: one granule of host (NS) memory through which the TSM hands a device
//! request to the host and the host hands the device's response back.
//!
//! The TSM writes the header and the request in the payload, and returns `NeedsDeviceIo`. The
//! host sends `payload[..request_len]` to the device (DOE mailbox of the PDEV's DSM, data
//! object type per `protocol`), overwrites the payload with the response, sets
//! `response_len` and `host_status`, and calls COMMUNICATE. The TSM copies the response out of
//! the buffer once, before parsing it; the fields it wrote itself (`op`, `protocol`,
//! `request_len`, `object`, `sequence`) are informational for the host and are never read back.

use crate::addr::GRANULE_SIZE;
use crate::layout::{abi_enum, boundary_struct};

/// Size of the COMMUNICATE buffer header.
pub const COMM_HEADER_SIZE: usize = 64;
/// Bytes of payload in the COMMUNICATE buffer (the rest of the granule).
pub const COMM_PAYLOAD_SIZE: usize = GRANULE_SIZE as usize - COMM_HEADER_SIZE;

abi_enum! {
    /// What the TSM asks the host to do with the buffer (`CommHeader::op`).
    pub enum CommOp ("COMM_OP") {
        /// Nothing: no request in the buffer (written on completion of an operation).
        None = 0 => "NONE",
        /// Send `payload[..request_len]` to the device and return its response.
        Exchange = 1 => "EXCHANGE",
    }
}

abi_enum! {
    /// How the request travels to the device (`CommHeader::protocol`).
    pub enum CommProtocol ("COMM_PROTO") {
        /// No request.
        None = 0 => "NONE",
        /// A bare TDISP message (PCIe TDISP 1.0 header first), in the clear: a PDEV created
        /// without `PdevFlags::SPDM`. The guest is told (no `DEVICE_AUTHENTICATED`).
        Tdisp = 1 => "TDISP",
        /// A plain SPDM message for the DOE CMA feature (data object type 1): the SPDM
        /// connect before the session exists.
        Spdm = 2 => "SPDM",
        /// A DSP0277 secured SPDM message (session ID, length, AES-256-GCM ciphertext, tag)
        /// for the DOE secured-CMA feature (data object type 2): everything once the session
        /// exists, TDISP included. The host cannot read or change it undetected.
        SecuredSpdm = 3 => "SECURED_SPDM",
    }
}

abi_enum! {
    /// What the host reports about the exchange (`CommHeader::host_status`).
    pub enum HostIoStatus ("HOST_IO") {
        /// The device answered; `payload[..response_len]` holds the response.
        Response = 0 => "RESPONSE",
        /// The device did not answer (DOE timeout, mailbox error, device gone). The TSM fails
        /// the operation with `DeviceError` and puts the object in ERROR.
        NoResponse = 1 => "NO_RESPONSE",
    }
}

boundary_struct! {
    /// Header of the COMMUNICATE buffer (64 bytes).
    pub struct CommHeader (size 64) {
        /// [`CommOp`] (TSM-written).
        pub op: u32 => 0,
        /// [`CommProtocol`] (TSM-written).
        pub protocol: u32 => 4,
        /// Bytes of request in the payload (TSM-written).
        pub request_len: u32 => 8,
        /// Bytes of response in the payload (host-written; at most [`COMM_PAYLOAD_SIZE`],
        /// `InvalidBuffer` otherwise).
        pub response_len: u32 => 12,
        /// [`HostIoStatus`] (host-written).
        pub host_status: u32 => 16,
        /// Must be 0 (host-written fields are checked).
        pub reserved0: u32 => 20,
        /// Handle of the PDEV or VDEV the request belongs to (TSM-written).
        pub object: u64 => 24,
        /// Number of the request within the operation, from 1 (TSM-written; lets a host
        /// trace and spot a replayed buffer).
        pub sequence: u64 => 32,
        /// Must be 0.
        pub reserved1: [u64; 3] => 40,
    }
}

boundary_struct! {
    /// The COMMUNICATE buffer: one granule, granule-aligned, in host (NS) memory.
    pub struct CommBuffer (size 4096) {
        /// The header.
        pub header: CommHeader => 0,
        /// The request (TSM to device) or the response (device to TSM).
        pub payload: [u8; COMM_PAYLOAD_SIZE] => 64,
    }
}

/// What the host reports in a COMMUNICATE buffer header, as the TSM decodes it from its private
/// copy of the header (before it copies any payload).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostAnswer {
    /// The device answered with this many payload bytes (at most [`COMM_PAYLOAD_SIZE`]).
    Response(usize),
    /// The host reports that the device did not answer.
    NoResponse,
}

/// Why the host-written part of a COMMUNICATE buffer header is unusable (the TSM returns
/// `InvalidBuffer` for argument 2 and leaves the operation pending, so the host may retry).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommError {
    /// `response_len` is larger than the payload.
    ResponseTooLong,
    /// `host_status` is not a [`HostIoStatus`].
    BadHostStatus,
    /// A reserved field is not 0.
    Reserved,
}

impl CommHeader {
    /// Decodes the host-written fields; the caller then copies `Response(n)` payload bytes.
    pub fn host_answer(&self) -> Result<HostAnswer, CommError> {
        if self.reserved0 != 0 || self.reserved1 != [0; 3] {
            return Err(CommError::Reserved);
        }
        match HostIoStatus::from_raw(self.host_status.into()) {
            Some(HostIoStatus::NoResponse) => Ok(HostAnswer::NoResponse),
            Some(HostIoStatus::Response) => usize::try_from(self.response_len)
                .ok()
                .filter(|&n| n <= COMM_PAYLOAD_SIZE)
                .map(HostAnswer::Response)
                .ok_or(CommError::ResponseTooLong),
            None => Err(CommError::BadHostStatus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    #[test]
    fn buffer_is_one_granule_and_round_trips() {
        assert_eq!(size_of::<CommBuffer>(), GRANULE_SIZE as usize);
        let mut b = CommBuffer::new_zeroed();
        b.header.op = CommOp::Exchange.raw();
        b.header.protocol = CommProtocol::Tdisp.raw();
        b.header.request_len = 16;
        b.header.object = 0x4000_1000;
        b.header.sequence = 3;
        b.payload[..4].copy_from_slice(&[0x10, 0x81, 0, 0]);
        let back = CommBuffer::read_from_bytes(b.as_bytes()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn host_answer_is_bounded_and_checked() {
        let mut h = CommHeader::new_zeroed();
        h.response_len = 5;
        assert_eq!(h.host_answer(), Ok(HostAnswer::Response(5)));
        h.response_len = COMM_PAYLOAD_SIZE as u32;
        assert_eq!(h.host_answer(), Ok(HostAnswer::Response(COMM_PAYLOAD_SIZE)));
        h.response_len = COMM_PAYLOAD_SIZE as u32 + 1;
        assert_eq!(h.host_answer(), Err(CommError::ResponseTooLong));
        h.response_len = u32::MAX;
        assert_eq!(h.host_answer(), Err(CommError::ResponseTooLong));
        h.host_status = HostIoStatus::NoResponse.raw();
        assert_eq!(h.host_answer(), Ok(HostAnswer::NoResponse));
        h.host_status = 2;
        assert_eq!(h.host_answer(), Err(CommError::BadHostStatus));
        h.host_status = 0;
        h.response_len = 0;
        h.reserved0 = 1;
        assert_eq!(h.host_answer(), Err(CommError::Reserved));
        h.reserved0 = 0;
        h.reserved1[2] = 1;
        assert_eq!(h.host_answer(), Err(CommError::Reserved));
    }
}
