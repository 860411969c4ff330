//! The device link: the host carries each TDISP request the TSM wrote into the COMMUNICATE
//! buffer to the device (here the device model, standing in for a DOE mailbox) and puts the
//! answer back, as a host driver's `pci_tsm_doe_transfer()` does. SPDM and secured SPDM
//! messages (a PDEV with `PdevFlags::SPDM`) go to the model's SPDM responder, as opaque bytes;
//! a host in the middle ([`Mitm`]) may change them on the way back.

use tsm_abi::addr::Pa;
use tsm_abi::api::{OpProgress, host};
use tsm_abi::comm::CommProtocol;
use tsm_abi::comm::{COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommHeader, HostIoStatus};
use tsm_abi::tdisp::MAX_MESSAGE_SIZE;
use tsm_device_model::identity::DeviceIdentity;
use tsm_device_model::spdm::{Reply, SpdmDevice};
use tsm_device_model::{Device, DeviceConfig, TdiConfig};
use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{REPORT_PORTION, TDIS};
use crate::{Fail, HostEnv, Outcome};

/// Most round trips one device operation may take (a report of the largest size in the
/// smallest portions stays far below).
const MAX_ROUND_TRIPS: usize = 64;

/// What a host in the middle does to the device's answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mitm {
    /// Carries every answer as it is.
    Honest,
    /// Flips one bit of the last byte of the answer to round trip `at` (a record's tag, or the
    /// last byte of a plain message).
    Flip {
        /// The round trip (`Link::round_trips` when it is carried).
        at: u64,
    },
    /// Answers round trip `at` with the answer of the round trip before it (a replayed
    /// record).
    Replay {
        /// The round trip.
        at: u64,
    },
}

/// The device and the COMMUNICATE buffer the host uses for it.
#[derive(Debug)]
pub struct Link {
    /// The device model (misbehaviour knobs included), for TDISP in the clear.
    pub dev: Device<'static>,
    /// The SPDM responder in front of its own device model, for a PDEV with SPDM.
    pub spdm: Option<SpdmDevice<'static>>,
    /// The device's functions (PF0 first), for the device behind an SPDM responder.
    tdis: &'static [TdiConfig<'static>],
    /// What the host does to the answers.
    pub mitm: Mitm,
    /// The last answer carried (for [`Mitm::Replay`]).
    last: [u8; COMM_PAYLOAD_SIZE],
    /// Its length.
    last_len: usize,
    /// The COMMUNICATE buffer (one NS granule).
    pub comm: Pa,
    /// Round trips carried so far.
    pub round_trips: u64,
}

impl Link {
    /// A device with the functions of [`crate::layout::TDIS`], linked through `comm`.
    pub fn new(comm: Pa) -> Outcome<Self> {
        Self::with_tdis(comm, &TDIS)
    }

    /// A device with the functions `tdis` (the first is PF0, its DSM), linked through `comm`.
    pub fn with_tdis(comm: Pa, tdis: &'static [TdiConfig<'static>]) -> Outcome<Self> {
        let mut config = DeviceConfig::new(tdis, [0x5C; 32]);
        config.max_report_portion = REPORT_PORTION;
        let dev = Device::new(config).map_err(|_| Fail::new("device model config", line!()))?;
        Ok(Link {
            dev,
            spdm: None,
            tdis,
            mitm: Mitm::Honest,
            last: [0; COMM_PAYLOAD_SIZE],
            last_len: 0,
            comm,
            round_trips: 0,
        })
    }

    /// Puts an SPDM responder with `identity` (and a fresh device with the link's functions
    /// behind it) on the link.
    pub fn use_spdm(&mut self, identity: DeviceIdentity) -> Outcome {
        let mut config = DeviceConfig::new(self.tdis, [0x5C; 32]);
        config.max_report_portion = REPORT_PORTION;
        let dev = Device::new(config).map_err(|_| Fail::new("device model config", line!()))?;
        self.spdm = Some(SpdmDevice::new(dev, identity, [0xA7; 32]));
        Ok(())
    }

    /// The device's answer to `req` sent as `protocol`: `None` when it does not answer.
    fn answer(&mut self, protocol: u32, req: &[u8], rsp: &mut [u8]) -> Option<usize> {
        let spdm = CommProtocol::from_raw(protocol.into())
            .filter(|p| *p != CommProtocol::Tdisp && *p != CommProtocol::None);
        match (spdm, self.spdm.as_mut()) {
            (Some(p), Some(s)) => match s.respond(req, p == CommProtocol::SecuredSpdm, rsp) {
                Ok(Reply::Message { len, .. }) => Some(len),
                _ => None,
            },
            (Some(_), None) => None,
            (None, _) => self.dev.respond(req, rsp).ok(),
        }
    }

    /// Carries the request in the buffer to the device and writes its answer back.
    pub fn carry<E: HostEnv>(&mut self, env: &mut E) -> Outcome {
        let mut head = CommHeader::new_zeroed();
        ensure!(
            env.read(self.comm, head.as_mut_bytes()),
            "read COMMUNICATE header"
        );
        let len = head.request_len as usize;
        ensure!(
            len <= COMM_PAYLOAD_SIZE,
            "request longer than the payload",
            len
        );
        let payload = Pa(self.comm.0 + COMM_HEADER_SIZE as u64);
        let mut req = [0u8; COMM_PAYLOAD_SIZE];
        let req = req
            .get_mut(..len)
            .ok_or(Fail::new("request length", line!()))?;
        ensure!(env.read(payload, req), "read COMMUNICATE payload");
        // Room for the oversized-response knob (one byte past the message cap).
        let mut rsp = [0u8; COMM_PAYLOAD_SIZE + MAX_MESSAGE_SIZE];
        // A device that does not answer is reported as NO_RESPONSE.
        let (mut n, status) = match self.answer(head.protocol, req, &mut rsp) {
            Some(n) => (n.min(COMM_PAYLOAD_SIZE), HostIoStatus::Response),
            None => (0, HostIoStatus::NoResponse),
        };
        match self.mitm {
            Mitm::Flip { at } if at == self.round_trips && n > 0 => {
                if let Some(b) = rsp.get_mut(n - 1) {
                    *b ^= 1;
                }
            }
            Mitm::Replay { at } if at == self.round_trips => {
                let len = self.last_len;
                if let (Some(dst), Some(src)) = (rsp.get_mut(..len), self.last.get(..len)) {
                    dst.copy_from_slice(src);
                    n = len;
                }
            }
            _ => {}
        }
        if let (Some(dst), Some(src)) = (self.last.get_mut(..n), rsp.get(..n)) {
            dst.copy_from_slice(src);
            self.last_len = n;
        }
        let mut answer = CommHeader::new_zeroed();
        answer.op = head.op;
        answer.protocol = head.protocol;
        answer.request_len = head.request_len;
        answer.object = head.object;
        answer.sequence = head.sequence;
        answer.response_len = n as u32;
        answer.host_status = status.raw();
        let body = rsp.get(..n).ok_or(Fail::new("response length", line!()))?;
        ensure!(env.write(payload, body), "write COMMUNICATE payload");
        ensure!(
            env.write(self.comm, answer.as_bytes()),
            "write COMMUNICATE header"
        );
        self.round_trips += 1;
        Ok(())
    }

    /// Drives the operation `first` started on `object` to its end: `Ok(Ok(()))` when it
    /// completed, `Ok(Err(e))` when the TSM ended it with an error (`DeviceError` for a device
    /// that broke the protocol).
    pub fn drive<E: HostEnv>(
        &mut self,
        env: &mut E,
        object: Pa,
        first: tsm_abi::api::Result<OpProgress>,
    ) -> Outcome<tsm_abi::api::Result<()>> {
        let mut step = first;
        for _ in 0..MAX_ROUND_TRIPS {
            match step {
                Ok(OpProgress::Done) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
                Ok(OpProgress::NeedsDeviceIo(_)) => {
                    self.carry(env)?;
                    step = host::communicate(env, object, self.comm);
                }
            }
        }
        Err(Fail::new("device operation did not finish", line!()))
    }
}
