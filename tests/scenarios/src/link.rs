//! The device link: the host carries each TDISP request the TSM wrote into the COMMUNICATE
//! buffer to the device (here the device model, standing in for a DOE mailbox) and puts the
//! answer back, as a host driver's `pci_tsm_doe_transfer()` does.

use tsm_abi::addr::Pa;
use tsm_abi::api::{OpProgress, host};
use tsm_abi::comm::{COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommHeader, HostIoStatus};
use tsm_abi::tdisp::MAX_MESSAGE_SIZE;
use tsm_device_model::{Device, DeviceConfig, TdiConfig};
use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{REPORT_PORTION, TDIS};
use crate::{Fail, HostEnv, Outcome};

/// Most round trips one device operation may take (a report of the largest size in the
/// smallest portions stays far below).
const MAX_ROUND_TRIPS: usize = 64;

/// The device and the COMMUNICATE buffer the host uses for it.
#[derive(Debug)]
pub struct Link {
    /// The device model (misbehaviour knobs included).
    pub dev: Device<'static>,
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

    /// A device with the functions `tdis` (PF0 first), linked through `comm`.
    pub fn with_tdis(comm: Pa, tdis: &'static [TdiConfig<'static>]) -> Outcome<Self> {
        let mut config = DeviceConfig::new(tdis, [0x5C; 32]);
        config.max_report_portion = REPORT_PORTION;
        let dev = Device::new(config).map_err(|_| Fail::new("device model config", line!()))?;
        Ok(Link {
            dev,
            comm,
            round_trips: 0,
        })
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
        let mut rsp = [0u8; MAX_MESSAGE_SIZE + 64];
        // A device that does not answer is reported as NO_RESPONSE.
        let (n, status) = match self.dev.respond(req, &mut rsp) {
            Ok(n) => (n.min(COMM_PAYLOAD_SIZE), HostIoStatus::Response),
            Err(_) => (0, HostIoStatus::NoResponse),
        };
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
