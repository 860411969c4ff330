//! One honest SPDM connect and session between the TSM's requester and the device model's
//! responder, recorded once per process: the messages (seeds for both SPDM targets) and a
//! snapshot of the requester before each response (where `spdm_secured` feeds its input).

use std::sync::OnceLock;

use tsm_abi::tdisp::{InterfaceId, InterfaceInfo, ReportFields};
use tsm_core::spdm::requester::{Evidence, MAX_RECORD, Outbound, Requester, Step};
use tsm_device_model::identity::DEVICE;
use tsm_device_model::spdm::{Reply, SpdmDevice};
use tsm_device_model::{Device, DeviceConfig, TdiConfig};
use tsm_platform::{Entropy, EntropyError};

/// Deterministic randomness (xorshift64*) for the requester.
pub struct Rng(std::cell::Cell<u64>);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(std::cell::Cell::new(seed | 1))
    }
}

impl Entropy for Rng {
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

static TDIS: [TdiConfig<'static>; 1] = [TdiConfig {
    interface_id: InterfaceId::new(0x0100, None),
    report: ReportFields {
        interface_info: InterfaceInfo::DMA_WITHOUT_PASID,
        msi_x_message_control: 0,
        lnr_control: 0,
        tph_control: 0,
    },
    mmio_ranges: &[],
    device_specific_info: &[],
}];

/// The requester as it was just before a response: its state and the chain and measurement
/// bytes stored so far.
#[derive(Clone)]
pub struct Snapshot {
    pub requester: Requester,
    /// The device's genuine response at this step.
    pub response: Vec<u8>,
    pub chain: Vec<u8>,
    pub measurements: Vec<u8>,
}

/// Messages of one direction: (secured, bytes).
pub type Messages = Vec<(bool, Vec<u8>)>;

struct Recording {
    sent: Messages,
    received: Messages,
    snapshots: Vec<Snapshot>,
}

fn record() -> Recording {
    let device = Device::new(DeviceConfig::new(&TDIS, [7; 32])).expect("valid device");
    let mut dev = SpdmDevice::new(device, DEVICE, [9; 32]);
    let mut req = Requester::new();
    let rng = Rng::new(1);
    let mut chain = vec![0u8; 4096];
    let mut measurements = vec![0u8; 2048];
    let mut rec = Recording {
        sent: Vec::new(),
        received: Vec::new(),
        snapshots: Vec::new(),
    };
    let mut out = [0u8; MAX_RECORD];
    let tdisp_version = [0x10, 0x81, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for op in 0..4 {
        let first: Outbound = match op {
            0 => req.start_connect(0, &mut out),
            1 => req.start_tdisp(&tdisp_version, &mut out),
            2 => req.start_key_update(&rng, &mut out),
            _ => req.start_end_session(&mut out),
        }
        .expect("an honest session");
        let mut next = first;
        loop {
            rec.sent.push((next.secured, out[..next.len].to_vec()));
            let mut rsp = vec![0u8; MAX_RECORD + 64];
            let Ok(Reply::Message { len, secured }) =
                dev.respond(&out[..next.len], next.secured, &mut rsp)
            else {
                panic!("the honest device answers");
            };
            rsp.truncate(len);
            rec.received.push((secured, rsp.clone()));
            rec.snapshots.push(Snapshot {
                requester: req.clone(),
                response: rsp.clone(),
                chain: chain.clone(),
                measurements: measurements.clone(),
            });
            let mut evidence = Evidence {
                chain: &mut chain,
                measurements: &mut measurements,
            };
            match req.respond(&mut rsp, &mut out, &mut evidence, &rng) {
                Ok(Step::Send(o)) => next = o,
                Ok(Step::Done(_)) => break,
                Err(e) => panic!("the honest session fails: {e:?}"),
            }
        }
    }
    rec
}

fn recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(record)
}

/// The requester's messages and the device's responses, in order.
pub fn transcript() -> (Messages, Messages) {
    let r = recording();
    (r.sent.clone(), r.received.clone())
}

/// The requester before each response of the recorded session, in order.
pub fn snapshots() -> &'static [Snapshot] {
    &recording().snapshots
}
