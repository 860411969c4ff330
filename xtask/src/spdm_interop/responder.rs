//! The device model served on a socket: the project's SPDM responder (tests/device-model) in
//! front of the scenarios' device (five functions, a report over 1 KiB served in 600-byte
//! portions), speaking the spdm-emu socket protocol with the PCI DOE transport, so that the
//! interop hook has a responder that also does TDISP.

use std::net::{TcpListener, TcpStream};

use tsm_device_model::identity::DEVICE;
use tsm_device_model::spdm::{MAX_MESSAGE, Reply, SpdmDevice};
use tsm_device_model::{Device, DeviceConfig};
use tsm_scenarios::layout::{REPORT_PORTION, TDIS};

use super::emu_socket::{
    self, COMMAND_CONTINUE, COMMAND_NORMAL, COMMAND_SHUTDOWN, COMMAND_TEST, COMMAND_UNKNOWN,
    ObjectType, TRANSPORT_PCI_DOE, doe_unwrap, doe_wrap,
};

/// A responder with the scenarios' device and the device identity (`identity::DEVICE`).
fn device() -> Result<SpdmDevice<'static>, String> {
    let mut config = DeviceConfig::new(&TDIS, [0x5C; 32]);
    config.max_report_portion = REPORT_PORTION;
    let device = Device::new(config).map_err(|e| format!("device model: {e:?}"))?;
    Ok(SpdmDevice::new(device, DEVICE, [0xA7; 32]))
}

/// Serves connections on `listener` one after the other, each with a fresh device, until a
/// peer sends SHUTDOWN (then returns) or `connections` have been served.
pub fn serve(listener: &TcpListener, connections: Option<usize>) -> Result<(), String> {
    let mut served = 0;
    while connections.is_none_or(|n| served < n) {
        let (stream, peer) = listener
            .accept()
            .map_err(|e| format!("accepting a connection: {e}"))?;
        served += 1;
        eprintln!("spdm-responder: connection from {peer}");
        match serve_one(stream) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => eprintln!("spdm-responder: connection from {peer} ended: {e}"),
        }
    }
    Ok(())
}

/// Serves one connection; `Ok(true)` when it ended with SHUTDOWN.
fn serve_one(mut stream: TcpStream) -> Result<bool, String> {
    stream
        .set_nodelay(true)
        .map_err(|e| format!("socket options: {e}"))?;
    let mut spdm = device()?;
    let mut out = vec![0u8; MAX_MESSAGE];
    while let Some(frame) = emu_socket::read_frame(&mut stream)? {
        let send = |stream: &mut TcpStream, command, payload: &[u8]| {
            emu_socket::write_frame(stream, command, payload)
                .map_err(|e| format!("sending an answer: {e}"))
        };
        if frame.transport != TRANSPORT_PCI_DOE {
            // spdm-emu's responder refuses a transport it was not started with the same way.
            return Err(format!("peer uses socket transport {}", frame.transport));
        }
        match frame.command {
            COMMAND_NORMAL => {
                let (kind, message) = doe_unwrap(&frame.payload)?;
                let secured = kind == ObjectType::SecuredSpdm;
                let answer = match spdm.respond(message, secured, &mut out) {
                    Ok(Reply::Message { len, secured }) => {
                        doe_wrap(ObjectType::of(secured), &out[..len])?
                    }
                    // A silent device: the DOE mailbox returns nothing.
                    Ok(Reply::Silent) => Vec::new(),
                    Err(e) => return Err(format!("device model: {e:?}")),
                };
                send(&mut stream, COMMAND_NORMAL, &answer)?;
            }
            COMMAND_SHUTDOWN => {
                send(&mut stream, COMMAND_SHUTDOWN, &[])?;
                return Ok(true);
            }
            COMMAND_TEST | COMMAND_CONTINUE => send(&mut stream, frame.command, &[])?,
            _ => send(&mut stream, COMMAND_UNKNOWN, &[])?,
        }
    }
    Ok(false)
}
