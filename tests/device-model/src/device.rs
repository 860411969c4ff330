//! The responder: bytes in, bytes out, with the TDISP state machine of every TDI.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use tsm_abi::tdisp::{
    ErrorCode, ErrorResponse, InterfaceId, LockFlags, LockInterfaceParams, MMIO_PAGE_SIZE,
    MmioRange, NONCE_SIZE, Nonce, RangeAttributes, Request, Response, TdiState, TdispError,
    VersionList,
};

use crate::config::{ConfigError, DeviceConfig, MAX_TDIS, REPORT_CAPACITY, TdiConfig};
use crate::misbehaviour::{Knobs, Misbehaviour};
use crate::tdi::{Tdi, build_report, reported_ranges};

/// Why `respond` produced no bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ModelError {
    /// The response buffer cannot hold the answer.
    ResponseBufferTooSmall,
    /// The codec refused the model's own answer (a bug in the model or its configuration).
    Encode(TdispError),
}

/// A DSM with its TDIs, answering TDISP requests.
#[derive(Debug)]
pub struct Device<'c> {
    config: DeviceConfig<'c>,
    tdis: [Tdi; MAX_TDIS],
    rng: ChaCha20Rng,
    knobs: Knobs,
}

impl<'c> Device<'c> {
    /// A device with every TDI CONFIG_UNLOCKED.
    pub fn new(config: DeviceConfig<'c>) -> Result<Self, ConfigError> {
        config.check()?;
        Ok(Self {
            rng: ChaCha20Rng::from_seed(config.nonce_seed),
            config,
            tdis: [Tdi::UNLOCKED; MAX_TDIS],
            knobs: Knobs::default(),
        })
    }

    /// Answers one TDISP request message with one response message; returns its length.
    ///
    /// Malformed requests get the TDISP_ERROR the spec asks for (VERSION_MISMATCH,
    /// UNSUPPORTED_REQUEST, INVALID_REQUEST), unknown TDIs INVALID_INTERFACE.
    pub fn respond(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, ModelError> {
        let mut report = [0u8; REPORT_CAPACITY];
        let answer = self.answer(request, &mut report);
        let answer = self.knobs.substitute(answer);
        let len = answer.encode(response).map_err(|e| match e {
            TdispError::BufferTooSmall => ModelError::ResponseBufferTooSmall,
            other => ModelError::Encode(other),
        })?;
        self.knobs.mangle(response, len, &mut self.rng)
    }

    /// Turns a misbehaviour on (see [`Misbehaviour`]).
    pub fn enable(&mut self, misbehaviour: Misbehaviour) {
        self.knobs.enable(misbehaviour);
    }

    /// Back to honest answers.
    pub fn clear_misbehaviour(&mut self) {
        self.knobs = Knobs::default();
    }

    /// The TDISP state of a TDI, as the device sees it.
    pub fn tdi_state(&self, interface_id: InterfaceId) -> Option<TdiState> {
        self.index_of(interface_id)
            .and_then(|i| self.tdis.get(i))
            .map(|t| t.state)
    }

    /// Simulates a security-relevant change (BAR rewrite, FLR, IDE stream failure...): a
    /// CONFIG_LOCKED or RUN TDI goes to ERROR. Returns whether it did.
    pub fn trigger_error(&mut self, interface_id: InterfaceId) -> bool {
        let Some(tdi) = self
            .index_of(interface_id)
            .and_then(|i| self.tdis.get_mut(i))
        else {
            return false;
        };
        if matches!(tdi.state, TdiState::ConfigLocked | TdiState::Run) {
            tdi.fail();
            true
        } else {
            false
        }
    }

    fn index_of(&self, interface_id: InterfaceId) -> Option<usize> {
        self.config
            .tdis
            .iter()
            .position(|t| t.interface_id == interface_id)
    }

    /// The honest answer (or the `ErrorFor` one), before any byte-level mangling.
    fn answer<'b>(&mut self, bytes: &[u8], report: &'b mut [u8]) -> Response<'b>
    where
        'c: 'b,
    {
        let request = match Request::decode(bytes) {
            Ok(request) => request,
            Err(e) => return refuse_malformed(bytes, e),
        };
        let interface_id = request.interface_id();
        let code = request.code();
        let error = |error| Response::Error {
            interface_id,
            error,
        };
        if let Some((refused, err_code)) = self.knobs.error_for
            && refused == code
        {
            return error(ErrorResponse::new(err_code));
        }
        if !self.config.capabilities.req_msgs_supported.contains(code) {
            return error(ErrorResponse::unsupported(code.to_wire()));
        }
        let Some(index) = self.index_of(interface_id) else {
            return error(ErrorResponse::new(ErrorCode::InvalidInterface));
        };
        let (Some(cfg), Some(tdi)) = (self.config.tdis.get(index), self.tdis.get_mut(index)) else {
            return error(ErrorResponse::new(ErrorCode::InvalidInterface));
        };
        let result =
            match request {
                Request::GetVersion { .. } => match VersionList::new(self.config.versions) {
                    Ok(versions) => Ok(Response::Version {
                        interface_id,
                        versions,
                    }),
                    Err(_) => Err(ErrorCode::Unspecified),
                },
                Request::GetCapabilities { .. } => Ok(Response::Capabilities {
                    interface_id,
                    caps: self.config.capabilities,
                }),
                Request::LockInterface { params, .. } => {
                    lock(cfg, tdi, params, &mut self.rng).map(|nonce| Response::LockInterface {
                        interface_id,
                        nonce,
                    })
                }
                Request::GetDeviceInterfaceReport { offset, length, .. } => {
                    let changing = self.knobs.changing_report;
                    let max = self.config.max_report_portion;
                    report_portion(cfg, tdi, offset, length.min(max), changing, report).map(
                        |(portion, remainder_length)| Response::DeviceInterfaceReport {
                            interface_id,
                            portion,
                            remainder_length,
                        },
                    )
                }
                Request::GetDeviceInterfaceState { .. } => Ok(Response::DeviceInterfaceState {
                    interface_id,
                    state: tdi.state,
                }),
                Request::StartInterface { nonce, .. } => {
                    start(tdi, &nonce).map(|()| Response::StartInterface { interface_id })
                }
                Request::StopInterface { .. } => {
                    tdi.stop();
                    Ok(Response::StopInterface { interface_id })
                }
                Request::BindP2pStream { stream_id, .. } => bind_p2p(tdi, stream_id, true)
                    .map(|()| Response::BindP2pStream { interface_id }),
                Request::UnbindP2pStream { stream_id, .. } => bind_p2p(tdi, stream_id, false)
                    .map(|()| Response::UnbindP2pStream { interface_id }),
                Request::SetMmioAttribute { range, .. } => set_mmio_attribute(cfg, tdi, &range)
                    .map(|()| Response::SetMmioAttribute { interface_id }),
                // Not in the capabilities (checked at configuration), so refused above; kept
                // explicit so a new request kind cannot slip through unhandled.
                Request::Vdm { .. } => return error(ErrorResponse::unsupported(code.to_wire())),
            };
        result.unwrap_or_else(|code| error(ErrorResponse::new(code)))
    }
}

/// The TDISP_ERROR for a request the codec refused.
fn refuse_malformed<'b>(bytes: &[u8], e: TdispError) -> Response<'b> {
    // Answer about the interface named in the header when there is one, else about 0.
    let interface_id = bytes
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .and_then(|b| InterfaceId::from_function_id(u32::from_le_bytes(b)).ok())
        .unwrap_or(InterfaceId::new(0, None));
    let error = match e {
        TdispError::VersionMismatch(_) => ErrorResponse::new(ErrorCode::VersionMismatch),
        TdispError::UnknownMessageType(t) => ErrorResponse::unsupported(t),
        _ => ErrorResponse::new(ErrorCode::InvalidRequest),
    };
    Response::Error {
        interface_id,
        error,
    }
}

fn lock(
    cfg: &TdiConfig<'_>,
    tdi: &mut Tdi,
    params: LockInterfaceParams,
    rng: &mut ChaCha20Rng,
) -> Result<Nonce, ErrorCode> {
    if tdi.state != TdiState::ConfigUnlocked {
        return Err(ErrorCode::InvalidInterfaceState);
    }
    // The offset keeps reported ranges page-aligned and must not wrap any of them.
    if !params.mmio_reporting_offset.is_multiple_of(MMIO_PAGE_SIZE) {
        return Err(ErrorCode::InvalidRequest);
    }
    let mut probe = [0u8; REPORT_CAPACITY];
    let mut locked = *tdi;
    locked.lock(params, [0; NONCE_SIZE], cfg);
    build_report(cfg, &locked, &params, false, &mut probe)
        .map_err(|_| ErrorCode::InvalidRequest)?;
    let mut nonce = [0u8; NONCE_SIZE];
    rng.fill_bytes(&mut nonce);
    tdi.lock(params, nonce, cfg);
    Ok(nonce)
}

/// Serves `length` report bytes from `offset`: (portion, remainder).
fn report_portion<'b>(
    cfg: &TdiConfig<'_>,
    tdi: &mut Tdi,
    offset: u16,
    length: u16,
    changing: bool,
    report: &'b mut [u8],
) -> Result<(&'b [u8], u16), ErrorCode> {
    if !matches!(tdi.state, TdiState::ConfigLocked | TdiState::Run) {
        return Err(ErrorCode::InvalidInterfaceState);
    }
    let lock = tdi.lock.ok_or(ErrorCode::InvalidInterfaceState)?;
    // A fetch starts at 0; later portions continue exactly where the last one ended.
    if offset != 0 && offset != tdi.next_report_offset {
        return Err(ErrorCode::InvalidRequest);
    }
    let len = build_report(cfg, tdi, &lock, changing && offset != 0, report)
        .map_err(|_| ErrorCode::Unspecified)?;
    let start = usize::from(offset);
    if start >= len {
        return Err(ErrorCode::InvalidRequest);
    }
    let end = start.saturating_add(usize::from(length)).min(len);
    let report: &'b [u8] = report;
    let portion = report.get(start..end).ok_or(ErrorCode::Unspecified)?;
    let remainder = u16::try_from(len.saturating_sub(end)).map_err(|_| ErrorCode::Unspecified)?;
    tdi.next_report_offset = if remainder == 0 {
        0
    } else {
        u16::try_from(end).map_err(|_| ErrorCode::Unspecified)?
    };
    Ok((portion, remainder))
}

fn start(tdi: &mut Tdi, nonce: &Nonce) -> Result<(), ErrorCode> {
    if tdi.state != TdiState::ConfigLocked {
        return Err(ErrorCode::InvalidInterfaceState);
    }
    let expected = tdi.nonce.ok_or(ErrorCode::InvalidInterfaceState)?;
    // Compare every byte: how long the check takes says nothing about where it failed.
    let diff = expected
        .iter()
        .zip(nonce.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        tdi.fail();
        return Err(ErrorCode::InvalidNonce);
    }
    tdi.nonce = None;
    tdi.state = TdiState::Run;
    Ok(())
}

fn bind_p2p(tdi: &mut Tdi, stream_id: u8, bind: bool) -> Result<(), ErrorCode> {
    if tdi.state != TdiState::Run {
        return Err(ErrorCode::InvalidInterfaceState);
    }
    let lock = tdi.lock.ok_or(ErrorCode::InvalidInterfaceState)?;
    if !lock.flags.contains(LockFlags::BIND_P2P) || stream_id == lock.default_stream_id {
        return Err(ErrorCode::InvalidRequest);
    }
    if tdi.stream_bound(stream_id) == bind {
        return Err(ErrorCode::InvalidRequest);
    }
    tdi.set_stream(stream_id, bind);
    Ok(())
}

fn set_mmio_attribute(
    cfg: &TdiConfig<'_>,
    tdi: &mut Tdi,
    range: &MmioRange,
) -> Result<(), ErrorCode> {
    if tdi.state != TdiState::Run {
        return Err(ErrorCode::InvalidInterfaceState);
    }
    let lock = tdi.lock.ok_or(ErrorCode::InvalidInterfaceState)?;
    let index = reported_ranges(cfg, tdi, &lock)
        .filter_map(Result::ok)
        .find(|(_, r)| {
            r.first_page == range.first_page
                && r.number_of_pages == range.number_of_pages
                && r.range_id == range.range_id
                && r.attributes
                    .contains(RangeAttributes::IS_MEM_ATTR_UPDATABLE)
        })
        .map(|(i, _)| i)
        .ok_or(ErrorCode::InvalidRequest)?;
    let bit = u32::try_from(index)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .ok_or(ErrorCode::InvalidRequest)?;
    if range.attributes.contains(RangeAttributes::IS_NON_TEE_MEM) {
        tdi.non_tee |= bit;
    } else {
        tdi.non_tee &= !bit;
    }
    Ok(())
}
