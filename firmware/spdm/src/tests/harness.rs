//! A relay between the requester and the device model's responder.

extern crate std;

use core::cell::Cell;
use std::vec::Vec;

use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, ReportFields};
use tsm_device_model::identity::{DEVICE, DeviceIdentity};
use tsm_device_model::spdm::{Reply, SpdmDevice};
use tsm_device_model::{Device, DeviceConfig, TdiConfig};
use tsm_platform::{Entropy, EntropyError};

use crate::requester::{Evidence, Failure, MAX_RECORD, Outbound, Outcome, Requester, Step};

/// xorshift64*: deterministic randomness for the requester.
pub struct TestRng(Cell<u64>);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(Cell::new(seed | 1))
    }
}

impl Entropy for TestRng {
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError> {
        let mut s = self.0.get();
        for b in out {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            *b = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        self.0.set(s);
        Ok(())
    }
}

pub const TDI: InterfaceId = InterfaceId::new(0x0100, None);

pub static TDIS: [TdiConfig<'static>; 1] = [TdiConfig {
    interface_id: TDI,
    report: ReportFields {
        interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
        msi_x_message_control: 0,
        lnr_control: 0,
        tph_control: 0,
    },
    mmio_ranges: &[],
    device_specific_info: b"spdm test TDI",
}];

/// An operation's end, owned (the TDISP response copied out of the relay's buffer).
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Connected,
    Tdisp(Vec<u8>),
    KeysUpdated,
    Ended,
}

/// What the relay saw go wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayError {
    /// The requester failed.
    Requester(Failure),
    /// The device did not answer: the relay told the requester (abort).
    NoResponse,
}

/// The TSM side (requester and its buffers), the device, and a relay between them that
/// counts exchanges and can tamper.
pub struct Link {
    pub req: Requester,
    pub dev: SpdmDevice<'static>,
    pub rng: TestRng,
    pub chain: [u8; 4096],
    pub measurements: [u8; 2048],
    /// Responses relayed so far.
    pub exchanges: usize,
    /// Messages of the requester, in order: (secured, bytes).
    pub sent: Vec<(bool, Vec<u8>)>,
    /// Responses of the device, in order: (secured, bytes).
    pub received: Vec<(bool, Vec<u8>)>,
}

pub type Tamper<'a> = &'a mut dyn FnMut(usize, &mut Vec<u8>);

impl Link {
    pub fn new(identity: DeviceIdentity) -> Self {
        let device = Device::new(DeviceConfig::new(&TDIS, [7; 32])).unwrap();
        Self {
            req: Requester::new(),
            dev: SpdmDevice::new(device, identity, [9; 32]),
            rng: TestRng::new(0x5EED),
            chain: [0; 4096],
            measurements: [0; 2048],
            exchanges: 0,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// The device with the project's device identity.
    pub fn device() -> Self {
        Self::new(DEVICE)
    }

    /// Relays until the operation that `first` started ends. `tamper` may change each
    /// response (numbered from 0 across the link's life) before the requester sees it.
    pub fn drive(
        &mut self,
        first: Outbound,
        out: &mut [u8; MAX_RECORD],
        tamper: Tamper<'_>,
    ) -> Result<Done, RelayError> {
        let mut next = first;
        loop {
            self.sent.push((next.secured, out[..next.len].to_vec()));
            let mut rsp = [0u8; MAX_RECORD + 64];
            let reply = self
                .dev
                .respond(&out[..next.len], next.secured, &mut rsp)
                .unwrap();
            let Reply::Message { len, secured } = reply else {
                self.req.abort();
                return Err(RelayError::NoResponse);
            };
            let mut bytes = rsp[..len].to_vec();
            tamper(self.exchanges, &mut bytes);
            self.exchanges += 1;
            self.received.push((secured, bytes.clone()));
            let mut evidence = Evidence {
                chain: &mut self.chain,
                measurements: &mut self.measurements,
            };
            let step = self
                .req
                .respond(&mut bytes, out, &mut evidence, &self.rng)
                .map_err(RelayError::Requester)?;
            match step {
                Step::Send(o) => next = o,
                Step::Done(Outcome::Connected) => return Ok(Done::Connected),
                Step::Done(Outcome::Tdisp(m)) => return Ok(Done::Tdisp(m.to_vec())),
                Step::Done(Outcome::KeysUpdated) => return Ok(Done::KeysUpdated),
                Step::Done(Outcome::Ended) => return Ok(Done::Ended),
            }
        }
    }

    pub fn connect_with(&mut self, tamper: Tamper<'_>) -> Result<Done, RelayError> {
        let mut out = [0u8; MAX_RECORD];
        let first = self.req.start_connect(0, &mut out).unwrap();
        self.drive(first, &mut out, tamper)
    }

    pub fn connect(&mut self) -> Result<Done, RelayError> {
        self.connect_with(&mut |_, _| {})
    }

    pub fn tdisp(&mut self, message: &[u8]) -> Result<Done, RelayError> {
        let mut out = [0u8; MAX_RECORD];
        let first = self
            .req
            .start_tdisp(message, &mut out)
            .map_err(RelayError::Requester)?;
        self.drive(first, &mut out, &mut |_, _| {})
    }

    pub fn key_update(&mut self) -> Result<Done, RelayError> {
        let mut out = [0u8; MAX_RECORD];
        let first = self
            .req
            .start_key_update(&self.rng, &mut out)
            .map_err(RelayError::Requester)?;
        self.drive(first, &mut out, &mut |_, _| {})
    }

    pub fn end_session(&mut self) -> Result<Done, RelayError> {
        let mut out = [0u8; MAX_RECORD];
        let first = self
            .req
            .start_end_session(&mut out)
            .map_err(RelayError::Requester)?;
        self.drive(first, &mut out, &mut |_, _| {})
    }
}

/// TDISP `GET_TDISP_VERSION` for the test TDI.
pub fn tdisp_get_version() -> Vec<u8> {
    let mut m = [0u8; 64];
    let n = tsm_abi::tdisp::Request::GetVersion { interface_id: TDI }
        .encode(&mut m)
        .unwrap();
    m[..n].to_vec()
}
