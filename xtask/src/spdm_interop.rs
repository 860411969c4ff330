//! `cargo xtask spdm-interop` and `cargo xtask spdm-responder`: the core's SPDM requester,
//! built for the build machine, against any responder that speaks the socket protocol of
//! DMTF's SPDM emulator with the PCI DOE transport; and the project's device model served the
//! same way (docs/design.md, "SPDM interoperability").
//!
//! | module | holds |
//! |---|---|
//! | [`emu_socket`] | the socket framing and the DOE data objects |
//! | [`relay`] | the host's relay: round trips, `Busy` / `ResponseNotReady`, the stop command |
//! | [`tsm_side`] | the core's requester with its evidence buffers, driven through the relay |
//! | [`observe`] | what the plain messages said, for the summary |
//! | [`tdisp_flow`] | TDISP in the session: version, capabilities, a whole bind |
//! | [`responder`] | the device model on a socket |

mod emu_socket;
mod observe;
mod relay;
mod responder;
mod tdisp_flow;
#[cfg(test)]
mod tests;
mod tsm_side;

use std::net::{TcpListener, TcpStream};
use std::thread;

use tsm_abi::tdisp::InterfaceId;
use tsm_core::spdm::requester::Requester;

use relay::Relay;
pub use tdisp_flow::Depth;
use tsm_side::TsmSide;

/// What to run against the responder.
#[derive(Clone, Debug)]
pub struct Options {
    /// HOST:PORT of the responder.
    pub responder: String,
    /// The certificate slot.
    pub slot: u8,
    /// The TDI that TDISP addresses (its `FUNCTION_ID`).
    pub function_id: u32,
    /// How far TDISP goes.
    pub tdisp: Depth,
}

/// Runs the whole exchange and prints its summary; `Ok(false)` (with the reason printed) when
/// the responder or the exchange failed.
pub fn interop(opts: &Options) -> Result<bool, String> {
    println!(
        "spdm-interop: responder {} (spdm-emu socket, PCI DOE)",
        opts.responder
    );
    match exchange(opts) {
        Ok(summary) => {
            print!("{summary}");
            println!("spdm-interop: PASS");
            Ok(true)
        }
        Err((summary, reason)) => {
            print!("{summary}");
            println!("spdm-interop: FAILED: {reason}");
            Ok(false)
        }
    }
}

/// The exchange; on failure, what was summarised so far and why it stopped.
fn exchange(opts: &Options) -> Result<String, (String, String)> {
    let interface = InterfaceId::from_function_id(opts.function_id).map_err(|e| {
        (
            String::new(),
            format!("interface {:#x}: {e:?}", opts.function_id),
        )
    })?;
    let relay = Relay::connect(&opts.responder).map_err(|e| (String::new(), e))?;
    let mut tsm = TsmSide::new(relay);
    let connected = tsm.connect(opts.slot);
    let mut summary = tsm.observer.summary();
    connected.map_err(|e| (summary.clone(), format!("connect: {e}")))?;
    summary.push_str(&evidence_summary(&tsm, opts.slot));
    let step = |summary: &mut String, line: Result<String, String>, what: &str| {
        line.map(|l| summary.push_str(&l))
            .map_err(|e| (summary.clone(), format!("{what}: {e}")))
    };
    step(
        &mut summary,
        tdisp_flow::run(&mut tsm, interface, opts.tdisp),
        "TDISP",
    )?;
    step(
        &mut summary,
        tsm.key_update()
            .map(|()| "  KEY_UPDATE (both directions, verified): ok\n".into()),
        "key update",
    )?;
    step(
        &mut summary,
        tsm.end_session().map(|()| "  END_SESSION: ok\n".into()),
        "end session",
    )?;
    let relay = tsm.relay;
    let (round_trips, waits) = (relay.round_trips, relay.waits);
    step(
        &mut summary,
        relay.shutdown().map(|()| {
            format!("  socket stop: acknowledged; {round_trips} round trips, {waits} waits\n")
        }),
        "stop",
    )?;
    Ok(summary)
}

/// The connect's results, from the requester's state and the evidence buffers.
fn evidence_summary(tsm: &TsmSide, slot: u8) -> String {
    let r: &Requester = &tsm.requester;
    let blocks = &tsm.observer.blocks;
    let indices: Vec<String> = blocks
        .iter()
        .map(|&(index, value_type, raw, len)| {
            format!(
                "{index}:{value_type}{}({len})",
                if raw { "raw" } else { "" }
            )
        })
        .collect();
    format!(
        "  certificate chain: slot {slot}, {} bytes in {} portions, verified to its root \
         (reported, not trusted); SHA-384 {}\n  \
         measurements: {} blocks [{}], {} bytes, signature verified; SHA-384 {}\n  \
         session {:#010x} established (KEY_EXCHANGE + FINISH, data keys)\n",
        r.chain_len(),
        tsm.observer.certificate_portions,
        hex(r.chain_digest()),
        blocks.len(),
        indices.join(" "),
        r.measurements_len(),
        hex(r.measurements_digest()),
        r.session_id(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cargo xtask spdm-responder`: serves the device model on `listen` until a peer stops it.
pub fn serve(listen: &str) -> Result<bool, String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("spdm-responder: device model listening on {addr} (spdm-emu socket, PCI DOE)");
    responder::serve(&listener, None)?;
    Ok(true)
}

/// The check `cargo xtask test` runs: the device model on a free local port, the hook against
/// it over TCP, with a whole bind.
pub fn self_test() -> Result<bool, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = thread::spawn(move || responder::serve(&listener, Some(1)));
    let passed = interop(&Options {
        responder: addr.to_string(),
        slot: 0,
        function_id: DEFAULT_FUNCTION_ID,
        tdisp: Depth::Bind,
    })?;
    if !server.is_finished() {
        // A run that never connected leaves the responder waiting in accept: one empty
        // connection ends it (its first read sees the close).
        let _ = TcpStream::connect(addr);
    }
    let served = server
        .join()
        .map_err(|_| "the responder thread panicked".to_string())?;
    served?;
    Ok(passed)
}

/// The TDI the hook binds by default: the device model's first function after PF0.
pub const DEFAULT_FUNCTION_ID: u32 = tsm_scenarios::layout::RID_BASE as u32 + 1;
