//! The host's part: carries each message the requester wrote to the responder over the
//! spdm-emu socket and brings the answer back, as opaque bytes, the way a host driver relays
//! a DOE mailbox for the TSM.
//!
//! Like a host driver, it handles the two plain `ERROR`s that ask the requester to wait
//! (DSP0274 1.2 "ERROR"): `Busy` (the same request again) and `ResponseNotReady`
//! (`RESPOND_IF_READY` after the responder's wait time). Neither message belongs to a
//! transcript, so the requester only ever sees the real answer. In a session the `ERROR` is
//! sealed, so the relay cannot see it and the requester fails the operation instead.

use std::net::TcpStream;
use std::time::Duration;

use tsm_abi::comm::COMM_PAYLOAD_SIZE;

use super::emu_socket::{
    self, COMMAND_NORMAL, COMMAND_SHUTDOWN, ObjectType, TRANSPORT_PCI_DOE, doe_unwrap, doe_wrap,
};

/// `ERROR`'s response code.
const ERROR: u8 = 0x7F;
/// `RESPOND_IF_READY`'s request code.
const RESPOND_IF_READY: u8 = 0xFF;
/// `ErrorCode` Busy.
const BUSY: u8 = 0x03;
/// `ErrorCode` ResponseNotReady.
const RESPONSE_NOT_READY: u8 = 0x42;
/// Waits a relay accepts for one request before it gives up.
const MAX_WAITS: u32 = 16;
/// The longest single wait (a responder's RDTExponent may ask for hours).
const MAX_WAIT: Duration = Duration::from_secs(1);
/// How long the relay waits after `Busy`.
const BUSY_WAIT: Duration = Duration::from_millis(10);
/// A responder silent for this long is not answering.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection to a responder.
#[derive(Debug)]
pub struct Relay {
    stream: TcpStream,
    /// Round trips carried (each retry counts).
    pub round_trips: u32,
    /// `Busy` and `ResponseNotReady` answers waited out.
    pub waits: u32,
}

impl Relay {
    /// Connects to `addr` (HOST:PORT).
    pub fn connect(addr: &str) -> Result<Self, String> {
        let stream =
            TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Self::over(stream)
    }

    /// Uses a connected stream.
    pub fn over(stream: TcpStream) -> Result<Self, String> {
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(READ_TIMEOUT)))
            .map_err(|e| format!("socket options: {e}"))?;
        Ok(Self {
            stream,
            round_trips: 0,
            waits: 0,
        })
    }

    /// One round trip: `message` as a DOE object of `kind`; returns the answer's message.
    fn round_trip(&mut self, kind: ObjectType, message: &[u8]) -> Result<Vec<u8>, String> {
        emu_socket::write_frame(&mut self.stream, COMMAND_NORMAL, &doe_wrap(kind, message)?)
            .map_err(|e| format!("sending a request: {e}"))?;
        self.round_trips += 1;
        let frame = emu_socket::read_frame(&mut self.stream)?
            .ok_or("the responder closed the connection instead of answering")?;
        if frame.command != COMMAND_NORMAL {
            return Err(format!(
                "the responder answered with socket command {:#06x}, not NORMAL",
                frame.command
            ));
        }
        if frame.transport != TRANSPORT_PCI_DOE {
            return Err(format!(
                "the responder speaks socket transport {} (this relay: PCI DOE, 2; start \
                 spdm_responder_emu with --trans PCI_DOE)",
                frame.transport
            ));
        }
        let (got, answer) = doe_unwrap(&frame.payload)?;
        if got != kind {
            return Err(format!(
                "a {kind:?} request was answered with a {got:?} object"
            ));
        }
        // The firmware's host takes at most one COMMUNICATE payload; so does this relay, so a
        // run here says whether the firmware would get the answer at all.
        if answer.len() > COMM_PAYLOAD_SIZE {
            return Err(format!(
                "a {}-byte answer exceeds the COMMUNICATE payload ({COMM_PAYLOAD_SIZE})",
                answer.len()
            ));
        }
        Ok(answer.to_vec())
    }

    /// Carries `request` (a secured record if `secured`) and returns the device's answer.
    pub fn exchange(&mut self, request: &[u8], secured: bool) -> Result<Vec<u8>, String> {
        let kind = ObjectType::of(secured);
        let mut answer = self.round_trip(kind, request)?;
        if secured {
            return Ok(answer);
        }
        for _ in 0..MAX_WAITS {
            match *answer.as_slice() {
                [_, ERROR, BUSY, ..] => {
                    std::thread::sleep(BUSY_WAIT);
                    answer = self.round_trip(kind, request)?;
                }
                // ExtendedErrorData: RDTExponent, RequestCode, Token, RDTM.
                [
                    version,
                    ERROR,
                    RESPONSE_NOT_READY,
                    _,
                    exponent,
                    code,
                    token,
                    ..,
                ] => {
                    let wait = 1u64.checked_shl(exponent.into()).unwrap_or(u64::MAX);
                    std::thread::sleep(Duration::from_micros(wait).min(MAX_WAIT));
                    answer = self.round_trip(kind, &[version, RESPOND_IF_READY, code, token])?;
                }
                _ => return Ok(answer),
            }
            self.waits += 1;
        }
        Err(format!(
            "the responder was still busy or not ready after {MAX_WAITS} waits"
        ))
    }

    /// Sends the socket's stop command and waits for the responder to acknowledge it.
    pub fn shutdown(mut self) -> Result<(), String> {
        emu_socket::write_frame(&mut self.stream, COMMAND_SHUTDOWN, &[])
            .map_err(|e| format!("sending SHUTDOWN: {e}"))?;
        match emu_socket::read_frame(&mut self.stream)? {
            Some(f) if f.command == COMMAND_SHUTDOWN => Ok(()),
            Some(f) => Err(format!(
                "SHUTDOWN answered with socket command {:#06x}",
                f.command
            )),
            None => {
                Err("the responder closed the connection without acknowledging SHUTDOWN".into())
            }
        }
    }
}
