//! TDISP inside the session (PCIe 6.x §11, carried as SPDM `VENDOR_DEFINED_REQUEST` with the
//! PCI-SIG vendor ID and protocol ID 1): `GET_TDISP_VERSION`, `GET_TDISP_CAPABILITIES`, then
//! the whole life of one interface as the TSM drives it for VDEV_BIND,
//! G_VDEV_ACCEPT and VDEV_UNBIND: `LOCK_INTERFACE`, the interface report in portions,
//! `START_INTERFACE`, `GET_DEVICE_INTERFACE_STATE` (RUN), `STOP_INTERFACE`.

use tsm_abi::tdisp::{
    InterfaceId, InterfaceReport, LockFlags, LockInterfaceParams, ReportReassembly, Request,
    RequestCode, Response, TDISP_VERSION_1_0, TdiState,
};

use super::tsm_side::TsmSide;

/// How far the TDISP exchange goes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Depth {
    /// `GET_TDISP_VERSION` only.
    Version,
    /// Then `GET_TDISP_CAPABILITIES`.
    Capabilities,
    /// Then lock, report, start, state, stop.
    Bind,
}

/// The report buffer: TDISP's largest report.
const REPORT_CAPACITY: usize = tsm_abi::tdisp::MAX_REPORT_SIZE;
/// Requests a whole bind needs the device to implement.
const BIND_REQUESTS: [RequestCode; 5] = [
    RequestCode::LockInterface,
    RequestCode::GetDeviceInterfaceReport,
    RequestCode::StartInterface,
    RequestCode::GetDeviceInterfaceState,
    RequestCode::StopInterface,
];

/// Sends `request` in the session and decodes the answer, which must answer it.
fn ask(tsm: &mut TsmSide, request: &Request<'_>, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut message = [0u8; 64];
    let len = request
        .encode(&mut message)
        .map_err(|e| format!("encoding {request:?}: {e:?}"))?;
    *buf = tsm.tdisp(&message[..len])?;
    Ok(())
}

/// Decodes the answer in `buf` to `request`.
fn answer<'b>(request: &Request<'_>, buf: &'b [u8]) -> Result<Response<'b>, String> {
    let response =
        Response::decode(buf).map_err(|e| format!("the answer to {request:?}: {e:?}"))?;
    if let Response::Error { error, .. } = response {
        return Err(format!("{request:?} answered with TDISP_ERROR {error:?}"));
    }
    if !response.answers(request) {
        return Err(format!("{request:?} answered with {response:?}"));
    }
    Ok(response)
}

/// Runs the TDISP exchange with the interface `interface`; returns its summary lines.
pub fn run(tsm: &mut TsmSide, interface: InterfaceId, depth: Depth) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut summary = String::new();

    let request = Request::GetVersion {
        interface_id: interface,
    };
    ask(tsm, &request, &mut buf)?;
    let Response::Version { versions, .. } = answer(&request, &buf)? else {
        return Err("GET_TDISP_VERSION: not a TDISP_VERSION".into());
    };
    if !versions.contains(TDISP_VERSION_1_0) {
        return Err("the device does not offer TDISP 1.0".into());
    }
    summary.push_str("  TDISP: version 1.0");
    if depth == Depth::Version {
        summary.push('\n');
        return Ok(summary);
    }

    let request = Request::GetCapabilities {
        interface_id: interface,
        tsm_caps: 0,
    };
    ask(tsm, &request, &mut buf)?;
    let Response::Capabilities { caps, .. } = answer(&request, &buf)? else {
        return Err("GET_TDISP_CAPABILITIES: not a TDISP_CAPABILITIES".into());
    };
    let supported: Vec<_> = BIND_REQUESTS
        .into_iter()
        .filter(|&c| caps.req_msgs_supported.contains(c))
        .collect();
    summary.push_str(&format!(
        "; capabilities: lock flags {:#06x}, address width {}, {} of the {} bind requests\n",
        caps.lock_interface_flags_supported.bits(),
        caps.dev_addr_width,
        supported.len(),
        BIND_REQUESTS.len()
    ));
    if depth == Depth::Capabilities {
        return Ok(summary);
    }
    if supported.len() != BIND_REQUESTS.len() {
        return Err(format!(
            "the device implements only {supported:?} of {BIND_REQUESTS:?}: no bind"
        ));
    }

    let request = Request::LockInterface {
        interface_id: interface,
        params: LockInterfaceParams {
            flags: LockFlags::empty(),
            default_stream_id: 0,
            mmio_reporting_offset: 0,
            bind_p2p_address_mask: 0,
        },
    };
    ask(tsm, &request, &mut buf)?;
    let Response::LockInterface { nonce, .. } = answer(&request, &buf)? else {
        return Err("LOCK_INTERFACE: not a LOCK_INTERFACE_RESPONSE".into());
    };

    let mut report = vec![0u8; REPORT_CAPACITY];
    let mut fetch = ReportReassembly::new();
    let mut portions = 0;
    while let Some(request) = fetch
        .next_request(interface, report.len())
        .map_err(|e| format!("report: {e:?}"))?
    {
        ask(tsm, &request, &mut buf)?;
        let Response::DeviceInterfaceReport {
            portion,
            remainder_length,
            ..
        } = answer(&request, &buf)?
        else {
            return Err("GET_DEVICE_INTERFACE_REPORT: not a report".into());
        };
        fetch
            .accept(&mut report, portion, remainder_length)
            .map_err(|e| format!("report portion: {e:?}"))?;
        portions += 1;
    }
    let parsed: InterfaceReport<'_> = fetch
        .report(&report)
        .map_err(|e| format!("the interface report does not parse: {e:?}"))?;
    summary.push_str(&format!(
        "  TDISP bind: LOCK_INTERFACE ok; report {} bytes in {portions} portions, {} MMIO ranges",
        fetch.received(),
        parsed.mmio_ranges().count()
    ));

    let request = Request::StartInterface {
        interface_id: interface,
        nonce,
    };
    ask(tsm, &request, &mut buf)?;
    answer(&request, &buf)?;
    let request = Request::GetDeviceInterfaceState {
        interface_id: interface,
    };
    ask(tsm, &request, &mut buf)?;
    match answer(&request, &buf)? {
        Response::DeviceInterfaceState {
            state: TdiState::Run,
            ..
        } => {}
        other => {
            return Err(format!(
                "after START_INTERFACE the device reports {other:?}"
            ));
        }
    }
    let request = Request::StopInterface {
        interface_id: interface,
    };
    ask(tsm, &request, &mut buf)?;
    answer(&request, &buf)?;
    summary.push_str("; START_INTERFACE ok, state RUN; STOP_INTERFACE ok\n");
    Ok(summary)
}
