//! What the relay saw of the connection in the clear, for the run's summary: the versions the
//! responder offered, its capabilities, the algorithms it selected, its measurement blocks.
//! Decoded with the same codec as the requester; the requester alone decides what is
//! acceptable, so an answer that does not decode here is simply not summarised.

use std::fmt::Write as _;

use tsm_abi::spdm::{Algorithms, Capabilities, Expect, Negotiated, RequestCode, Response};

/// One measurement block: index, DMTF value type, whether a raw bit stream, value bytes.
pub type Block = (u8, u8, bool, usize);

/// The plain messages of a connect, as far as they decoded.
#[derive(Debug, Default)]
pub struct Observer {
    /// `VERSION` entries (`major.minor`).
    pub versions: Vec<String>,
    /// `CAPABILITIES`.
    pub capabilities: Option<Capabilities>,
    /// `ALGORITHMS`.
    pub algorithms: Option<Algorithms>,
    /// `CERTIFICATE` answers (chain portions).
    pub certificate_portions: u32,
    /// The blocks of the signed `MEASUREMENTS`.
    pub blocks: Vec<Block>,
}

impl Observer {
    /// Takes a plain request and the device's answer to it.
    pub fn observe(&mut self, request: &[u8], answer: &[u8]) {
        let Some(code) = request.get(1).copied().and_then(RequestCode::from_raw) else {
            return;
        };
        let n = self.negotiated();
        let expect = match code {
            RequestCode::GetMeasurements => Expect::Measurements { signed: true },
            other => Expect::Plain(other.response()),
        };
        let Ok((response, _)) = Response::decode(answer, expect, &n) else {
            return;
        };
        match response {
            Response::Version(list) => {
                self.versions = list
                    .iter()
                    .map(|v| format!("{}.{}", v.0 >> 12, (v.0 >> 8) & 0xF))
                    .collect();
            }
            Response::Capabilities(c) => self.capabilities = Some(c),
            Response::Algorithms(a) => self.algorithms = Some(a),
            Response::Certificate { .. } => self.certificate_portions += 1,
            Response::Measurements(m) => {
                self.blocks = m
                    .record
                    .blocks()
                    .map(|b| (b.index, b.value_type, b.raw, b.value.len()))
                    .collect();
            }
            _ => {}
        }
    }

    /// The sizes `ALGORITHMS` fixed (none before it).
    fn negotiated(&self) -> Negotiated {
        self.algorithms
            .and_then(|a| {
                Negotiated::from_selection(
                    a.base_asym,
                    a.base_hash,
                    a.dhe?,
                    a.measurement_hash,
                    false,
                )
            })
            .unwrap_or(Negotiated::NONE)
    }

    /// A request's name for error messages.
    pub fn name(&self, request: &[u8], secured: bool) -> String {
        if secured {
            return "a secured request".into();
        }
        match request.get(1).copied().and_then(RequestCode::from_raw) {
            Some(code) => format!("{code:?}"),
            None => "an unknown request".into(),
        }
    }

    /// The summary lines of the connection.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // The requester asks for CAPABILITIES at 1.2 only once VERSION offered it.
        let negotiated = if self.capabilities.is_some() {
            "; negotiated 1.2"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  versions offered: {}{negotiated}",
            self.versions.join(", ")
        );
        if let Some(c) = &self.capabilities {
            let _ = writeln!(
                s,
                "  responder capabilities: flags {:#010x}, DataTransferSize {}, MaxSPDMmsgSize {}, CTExponent {}",
                c.flags.bits(),
                c.data_transfer_size,
                c.max_message_size,
                c.ct_exponent
            );
        }
        if let Some(a) = &self.algorithms {
            let _ = writeln!(
                s,
                "  algorithms: {:?}, {:?}, {:?}, {:?}, {:?}, measurement hash {:?}",
                a.base_asym, a.base_hash, a.dhe, a.aead, a.key_schedule, a.measurement_hash
            );
        }
        s
    }
}
