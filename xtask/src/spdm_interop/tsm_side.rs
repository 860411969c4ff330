//! The TSM's side, built for the build machine: the core's own SPDM requester
//! (`tsm_core::spdm::requester`, the code the firmware runs) with the evidence buffers the
//! PDEV's granules give it in the firmware, driven through the relay.

use std::fs::File;
use std::io::Read;

use tsm_core::objects::{CHAIN_CAPACITY, MEASUREMENTS_CAPACITY};
use tsm_core::spdm::requester::{Evidence, MAX_RECORD, Outbound, Outcome, Requester, Step};
use tsm_platform::{Entropy, EntropyError};

use super::observe::Observer;
use super::relay::Relay;

/// Round trips one operation may take: a connect asks for the chain in 1 KiB portions, so
/// even a 64 KiB chain stays far below.
const MAX_ROUND_TRIPS: usize = 128;

/// The build machine's randomness (the firmware uses RNDR or RDSEED).
#[derive(Debug)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError> {
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(out))
            .map_err(|_| EntropyError)
    }
}

/// How an operation ended, with a TDISP answer copied out of the response buffer.
#[derive(Debug)]
pub enum Done {
    /// [`Outcome::Connected`].
    Connected,
    /// [`Outcome::Tdisp`].
    Tdisp(Vec<u8>),
    /// [`Outcome::KeysUpdated`].
    KeysUpdated,
    /// [`Outcome::Ended`].
    Ended,
}

/// The requester, its evidence buffers and the link to the device.
#[derive(Debug)]
pub struct TsmSide {
    /// The requester's state.
    pub requester: Box<Requester>,
    /// The certificate chain, as the PDEV's evidence granule holds it.
    pub chain: Vec<u8>,
    /// The measurement record, likewise.
    pub measurements: Vec<u8>,
    /// The host's relay.
    pub relay: Relay,
    /// What the plain messages said.
    pub observer: Observer,
    out: Vec<u8>,
}

impl TsmSide {
    /// A requester with nothing going on, talking through `relay`.
    pub fn new(relay: Relay) -> Self {
        Self {
            requester: Box::new(Requester::new()),
            chain: vec![0; CHAIN_CAPACITY],
            measurements: vec![0; MEASUREMENTS_CAPACITY],
            relay,
            observer: Observer::default(),
            out: vec![0; MAX_RECORD],
        }
    }

    /// Connects with the chain in `slot`.
    pub fn connect(&mut self, slot: u8) -> Result<(), String> {
        let first = self
            .requester
            .start_connect(slot, &mut self.out)
            .map_err(|f| format!("GET_VERSION: {f:?}"))?;
        self.expect(first, "connect", |d| matches!(d, Done::Connected))
            .map(drop)
    }

    /// Sends one TDISP message in the session; returns the device's TDISP answer.
    pub fn tdisp(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        let first = self
            .requester
            .start_tdisp(message, &mut self.out)
            .map_err(|f| format!("TDISP request: {f:?}"))?;
        match self.drive(first)? {
            Done::Tdisp(answer) => Ok(answer),
            other => Err(format!("a TDISP request ended as {other:?}")),
        }
    }

    /// Updates both directions' keys.
    pub fn key_update(&mut self) -> Result<(), String> {
        let first = self
            .requester
            .start_key_update(&OsEntropy, &mut self.out)
            .map_err(|f| format!("KEY_UPDATE: {f:?}"))?;
        self.expect(first, "key update", |d| matches!(d, Done::KeysUpdated))
            .map(drop)
    }

    /// Ends the session.
    pub fn end_session(&mut self) -> Result<(), String> {
        let first = self
            .requester
            .start_end_session(&mut self.out)
            .map_err(|f| format!("END_SESSION: {f:?}"))?;
        self.expect(first, "end session", |d| matches!(d, Done::Ended))
            .map(drop)
    }

    fn expect(
        &mut self,
        first: Outbound,
        what: &str,
        wanted: fn(&Done) -> bool,
    ) -> Result<Done, String> {
        let done = self.drive(first)?;
        if wanted(&done) {
            Ok(done)
        } else {
            Err(format!("{what} ended as {done:?}"))
        }
    }

    /// Carries requests and answers until the operation ends.
    fn drive(&mut self, first: Outbound) -> Result<Done, String> {
        let mut sent = first;
        for _ in 0..MAX_ROUND_TRIPS {
            let request = self
                .out
                .get(..sent.len)
                .ok_or("the requester wrote past its buffer")?
                .to_vec();
            let mut answer = self.relay.exchange(&request, sent.secured)?;
            if !sent.secured {
                self.observer.observe(&request, &answer);
            }
            let mut evidence = Evidence {
                chain: &mut self.chain,
                measurements: &mut self.measurements,
            };
            let step =
                self.requester
                    .respond(&mut answer, &mut self.out, &mut evidence, &OsEntropy);
            match step {
                Ok(Step::Send(next)) => sent = next,
                Ok(Step::Done(Outcome::Connected)) => return Ok(Done::Connected),
                Ok(Step::Done(Outcome::Tdisp(m))) => return Ok(Done::Tdisp(m.to_vec())),
                Ok(Step::Done(Outcome::KeysUpdated)) => return Ok(Done::KeysUpdated),
                Ok(Step::Done(Outcome::Ended)) => return Ok(Done::Ended),
                Err(f) => {
                    return Err(format!(
                        "the requester refused the answer to {}: {f:?}",
                        self.observer.name(&request, sent.secured)
                    ));
                }
            }
        }
        Err(format!("no end after {MAX_ROUND_TRIPS} round trips"))
    }
}
