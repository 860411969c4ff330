//! SPDM 1.2 (DMTF DSP0274 1.2) wire codec, and DSP0277 secured-message framing on PCI DOE.
//!
//! The messages a TSM's requester and a device's responder exchange to authenticate the device,
//! read its signed measurements and set up a secure session that then carries TDISP:
//!
//! | requester → | ← responder | what for |
//! |---|---|---|
//! | `GET_VERSION` | `VERSION` | the versions both speak (this codec: 1.2) |
//! | `GET_CAPABILITIES` | `CAPABILITIES` | what each side does, buffer sizes |
//! | `NEGOTIATE_ALGORITHMS` | `ALGORITHMS` | one signature, hash, DHE group, AEAD |
//! | `GET_DIGESTS` | `DIGESTS` | the hash of each provisioned certificate chain |
//! | `GET_CERTIFICATE` | `CERTIFICATE` | a chain, in portions |
//! | `GET_MEASUREMENTS` | `MEASUREMENTS` | measurement blocks, signed over the transcript |
//! | `KEY_EXCHANGE` | `KEY_EXCHANGE_RSP` | ECDHE, signed; handshake keys |
//! | `FINISH` | `FINISH_RSP` | the session is established (data keys) |
//! | `KEY_UPDATE` | `KEY_UPDATE_ACK` | next data keys |
//! | `END_SESSION` | `END_SESSION_ACK` | the session ends |
//! | `VENDOR_DEFINED_REQUEST` | `VENDOR_DEFINED_RESPONSE` | PCI-SIG protocols (TDISP) |
//! | any | `ERROR` | |
//!
//! - [`Request`] / [`Response`]: `decode` and `encode`. SPDM messages do not carry the sizes of
//!   their variable fields (hashes, signatures, exchange data): [`Negotiated`] supplies them,
//!   and [`Expect`] says what a response answers. Decoding is zero-copy.
//! - [`MeasurementRecord`]: the measurement blocks of `MEASUREMENTS` (DMTF format), checked.
//! - [`CertChain`]: the SPDM certificate chain framing (length, root hash, DER certificates).
//! - [`opaque`]: `KEY_EXCHANGE` opaque data and DSP0277's secured-message version element.
//! - [`secured`]: the DSP0277 record of a secured message on PCI DOE, and the AEAD nonce.
//! - [`signing`]: the bytes signatures and the key schedule are computed over.
//! - `crypto` (feature `spdm-crypto`): the DSP0274 1.2 key schedule and AES-256-GCM records
//!   over SHA-384, shared by the TSM's requester and the device model's responder.
//!
//! Checks: a message is refused if it is shorter than its layout, has bytes after its last
//! field (except up to 3 zero bytes of PCI DOE padding, which a DOE data object may carry
//! because its length counts dwords), carries another `SPDMVersion` than the exchange uses, or
//! has a field outside its defined range or inconsistent with another. Reserved fields and
//! reserved bits are ignored on receipt and written as zero, as DSP0274 says (a responder of a
//! later version gives some of them a meaning). Nothing reachable from input panics. Encoding
//! decodes its own output and refuses what decoding would refuse.

mod algo;
mod chain;
mod codes;
mod cursor;
mod error;
mod measurement;
pub mod opaque;
mod request;
mod response;
pub mod secured;
pub mod signing;
mod types;

#[cfg(feature = "spdm-crypto")]
pub mod crypto;

#[cfg(test)]
mod tests;

pub use algo::{
    AeadSuite, Algorithms, BaseAsymAlgo, BaseHashAlgo, DheGroup, KeySchedule,
    MAX_NEGOTIATE_ALGORITHMS, MeasurementHashAlgo, MeasurementSpec, OtherParams,
};
pub use chain::{CHAIN_HEADER_SIZE, CertChain, der_sequence_len};
pub use codes::{
    CapFlags, ErrorCode, KeyOperation, MEASUREMENTS_ALL, MEASUREMENTS_COUNT, PCI_SIG_VENDOR_ID,
    PROTOCOL_ID_TDISP, RequestCode, ResponseCode, STANDARD_ID_PCI_SIG, VERSION_1_0, VERSION_1_2,
    VersionNumber,
};
pub use error::{Field, SpdmError};
pub use measurement::{MeasurementBlock, MeasurementRecord, RAW_BIT_STREAM};
pub use request::Request;
pub use response::{Expect, Response};
pub use types::{
    Capabilities, DigestList, ErrorResponse, KeyExchange, KeyExchangeRsp, MAX_EXTENDED_ERROR_DATA,
    MAX_OPAQUE_DATA, MIN_DATA_TRANSFER_SIZE, Measurements, NONCE_SIZE, Negotiated, SLOT_COUNT,
    VendorDefined, VersionList,
};
