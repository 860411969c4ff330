//! Ways the SPDM responder can be told to break the protocol, so the requester's defences can
//! be tested.

use tsm_abi::spdm::RequestCode;

/// One misbehaviour. Several can be enabled at once; each stays on until
/// [`SpdmDevice::clear_misbehaviour`](super::SpdmDevice::clear_misbehaviour).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpdmMisbehaviour {
    /// Sign `MEASUREMENTS` wrongly (one signature bit flipped).
    BadMeasurementSignature,
    /// Sign `KEY_EXCHANGE_RSP` wrongly (one signature bit flipped).
    BadKeyExchangeSignature,
    /// Flip one ciphertext bit of every secured response.
    TamperCiphertext,
    /// Answer the next secured request with the record it sent last (a replayed record).
    ReplayRecord,
    /// Seal the next secured response with the sequence number after the expected one, as if
    /// an earlier record had been dropped and this one came out of order.
    SkipSequenceNumber,
    /// Stop answering at this request, and answer nothing after (a session that stops
    /// half-way).
    StopAt(RequestCode),
}

/// The enabled misbehaviours.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Knobs {
    pub bad_measurement_signature: bool,
    pub bad_key_exchange_signature: bool,
    pub tamper: bool,
    pub replay: bool,
    pub skip_sequence: bool,
    pub stop_at: Option<RequestCode>,
    /// Set once `stop_at` was reached.
    pub silent: bool,
}

impl Knobs {
    pub(super) fn enable(&mut self, m: SpdmMisbehaviour) {
        match m {
            SpdmMisbehaviour::BadMeasurementSignature => self.bad_measurement_signature = true,
            SpdmMisbehaviour::BadKeyExchangeSignature => self.bad_key_exchange_signature = true,
            SpdmMisbehaviour::TamperCiphertext => self.tamper = true,
            SpdmMisbehaviour::ReplayRecord => self.replay = true,
            SpdmMisbehaviour::SkipSequenceNumber => self.skip_sequence = true,
            SpdmMisbehaviour::StopAt(code) => self.stop_at = Some(code),
        }
    }
}
