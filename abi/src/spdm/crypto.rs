//! The DSP0274 1.2 key schedule and the DSP0277 record protection, for the one cipher suite
//! this project negotiates: SHA-384 and AES-256-GCM (the hash also fixes HMAC and HKDF).
//!
//! ```text
//! handshake_secret  = HKDF-Extract(salt = 0^H, DHE secret)
//!   req/rsp handshake secret = HKDF-Expand(handshake_secret, bin_str1/2(TH1), H)
//! salt_1            = HKDF-Expand(handshake_secret, bin_str0, H)
//! master_secret     = HKDF-Extract(salt_1, 0^H)
//!   req/rsp data secret      = HKDF-Expand(master_secret, bin_str3/4(TH2), H)
//! per secret:  key = HKDF-Expand(secret, bin_str5, 32), IV = HKDF-Expand(secret, bin_str6, 12)
//!              finished_key = HKDF-Expand(handshake secret, bin_str7, H)
//! key update:  secret' = HKDF-Expand(secret, bin_str9, H)
//! ```
//!
//! Both the TSM's requester and the device model's responder use this module, so a mistake
//! here would be symmetric: the byte strings it feeds HKDF are built by [`super::signing`]
//! and checked against DSP0274's layout by the tests.
//!
//! The session set-up's functions (transcript hash, HMAC, the key schedule) are `#[inline]`:
//! in the TSM only its SPDM requester (tsm-spdm) calls them, so the image compiles them, and the
//! SHA-384 / HMAC / HKDF code they instantiate, at tsm-spdm's opt-level "z" (Cargo.toml) instead
//! of tsm-abi's 2 (x86_64 `.text` −816 B; docs/benchmarks.md, branch `text8`). The record
//! functions (`Direction::seal` / `open`) stay at 2: every request of a bound vdevice's session
//! runs them.
//!
//! HKDF (RFC 5869) is written here over [`hmac_of`]'s HMAC, not taken from the `hkdf` crate: every
//! key it is given is an H-byte secret and every output at most H bytes, so Extract is one HMAC
//! and Expand one HMAC block, and the crate's general code (a 2.4 KiB expand at tsm-abi's
//! opt-level, a slice-keyed HMAC constructor and the `expect` behind it, which kept
//! `core::fmt`'s `Result::expect` path in the image) is not needed (docs/benchmarks.md, branch
//! `text9`). The tests check both against the `hkdf` crate.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha384};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::SpdmError;
use super::secured::{self, IV_SIZE, MAC_SIZE, RECORD_HEADER_SIZE, RecordLayout};
use super::signing::{self, Label};

/// SHA-384's digest size (`H`).
pub const HASH_SIZE: usize = 48;
/// AES-256's key size.
pub const KEY_SIZE: usize = 32;

/// A SHA-384 digest, a secret or a finished key (all `H` bytes).
pub type Digest = [u8; HASH_SIZE];

/// Why sealing or opening a record failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum RecordError {
    /// The record's framing is wrong (lengths).
    Framing(SpdmError),
    /// The record belongs to another session.
    WrongSession(u32),
    /// The MAC does not verify: tampered, replayed, reordered, or under another key.
    Authentication,
    /// The direction's sequence numbers are used up (2^64 records); the session must end.
    SequenceExhausted,
    /// The output buffer is too small.
    BufferTooSmall,
}

/// SHA-384 over the concatenation of `parts` (a transcript kept in pieces).
#[inline]
pub fn hash(parts: &[&[u8]]) -> Digest {
    let mut h = Sha384::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA-384's block size: a shorter key is zero-padded to it (RFC 2104 §2).
const HMAC_BLOCK: usize = 128;

fn hmac_of(key: &Digest, data: &[u8]) -> Hmac<Sha384> {
    // Padding the 48-byte key to the block size ourselves is what HMAC does with it anyway,
    // and makes the fixed-size (infallible) constructor usable.
    let mut block = [0u8; HMAC_BLOCK];
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    let mut mac = <Hmac<Sha384> as KeyInit>::new(&block.into());
    mac.update(data);
    mac
}

/// HMAC-SHA-384 of `data` under `key` (verify data).
#[inline]
pub fn hmac(key: &Digest, data: &Digest) -> Digest {
    hmac_of(key, data).finalize().into_bytes().into()
}

/// Whether `tag` is HMAC-SHA-384 of `data` under `key`, compared in constant time.
#[inline]
pub fn hmac_verify(key: &Digest, data: &Digest, tag: &[u8]) -> bool {
    hmac_of(key, data).verify_slice(tag).is_ok()
}

/// HKDF-Extract(`salt`, `ikm`) = HMAC(`salt`, `ikm`) (RFC 5869 §2.2).
#[inline]
fn extract(salt: &Digest, ikm: &[u8]) -> Digest {
    hmac_of(salt, ikm).finalize().into_bytes().into()
}

/// HKDF-Expand(`prk`, bin_str(`label`, `context`), N) for N of at most H bytes (one block):
/// T(1) = HMAC(`prk`, info ‖ 0x01), truncated (RFC 5869 §2.3). One block is all SPDM's key
/// schedule asks for (secrets of H bytes, the AEAD's key and IV); the bound and the context's
/// type are checked when this is compiled, so a longer output cannot come out short.
#[inline]
fn expand<const N: usize>(prk: &Digest, label: Label, context: Option<&Digest>, out: &mut [u8; N]) {
    const { assert!(N <= HASH_SIZE, "HKDF-Expand of more than one block") };
    expand_block(prk, label, context.map_or(&[], |c| c.as_slice()), out);
}

/// [`expand`]'s body, one copy for every output size.
#[inline]
fn expand_block(prk: &Digest, label: Label, context: &[u8], out: &mut [u8]) {
    let mut info = [0u8; signing::MAX_BIN_STR];
    // `out` is at most H bytes (`expand`), so the length is exact.
    let length = u16::try_from(out.len()).unwrap_or(u16::MAX);
    let info = signing::bin_str(&mut info, length, label, context)
        .ok()
        .and_then(|n| info.get(..n));
    // A context of at most H bytes and every label fit `MAX_BIN_STR`.
    debug_assert!(info.is_some(), "HKDF-Expand of {label:?}");
    if let Some(info) = info {
        let mut mac = hmac_of(prk, info);
        mac.update(&[1]);
        for (o, t) in out.iter_mut().zip(mac.finalize().into_bytes()) {
            *o = t;
        }
    }
}

#[inline]
fn expand_digest(prk: &Digest, label: Label, context: Option<&Digest>) -> Digest {
    let mut out = [0u8; HASH_SIZE];
    expand(prk, label, context, &mut out);
    out
}

/// The handshake phase's secrets, from the ECDHE shared secret and TH1.
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HandshakeSecrets {
    /// `handshake_secret` (kept for the master secret).
    pub handshake: Digest,
    /// The requester's handshake secret.
    pub request: Digest,
    /// The responder's handshake secret.
    pub response: Digest,
}

impl HandshakeSecrets {
    /// From the DHE shared secret (for ECDHE, the X coordinate) and TH1 (the transcript hash
    /// through `KEY_EXCHANGE_RSP`'s signature).
    #[inline]
    pub fn derive(dhe_secret: &[u8], th1: &Digest) -> Self {
        let handshake = extract(&[0u8; HASH_SIZE], dhe_secret);
        Self {
            request: expand_digest(&handshake, Label::ReqHandshake, Some(th1)),
            response: expand_digest(&handshake, Label::RspHandshake, Some(th1)),
            handshake,
        }
    }
}

/// The requester's and the responder's data secrets, from `handshake_secret` and TH2 (the
/// transcript through `FINISH_RSP`).
#[inline]
pub fn data_secrets(handshake_secret: &Digest, th2: &Digest) -> (Digest, Digest) {
    let salt = expand_digest(handshake_secret, Label::Derived, None);
    let master = extract(&salt, &[0u8; HASH_SIZE]);
    (
        expand_digest(&master, Label::ReqData, Some(th2)),
        expand_digest(&master, Label::RspData, Some(th2)),
    )
}

/// The finished key of a handshake secret (for verify data).
#[inline]
pub fn finished_key(handshake_secret: &Digest) -> Digest {
    expand_digest(handshake_secret, Label::Finished, None)
}

/// One direction of a session: its secret, the AEAD key and IV derived from it, and the next
/// sequence number. Plain bytes, so it can live in the TSM's object memory.
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Direction {
    secret: Digest,
    key: [u8; KEY_SIZE],
    iv: [u8; IV_SIZE],
    reserved: [u8; 4],
    sequence: u64,
}

impl core::fmt::Debug for Direction {
    // Keys stay out of logs: only where the sequence is.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Direction")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Direction {
    /// Keys of `secret` (a handshake or data secret), sequence number 0.
    #[inline]
    pub fn new(secret: &Digest) -> Self {
        let mut d = Self {
            secret: *secret,
            key: [0; KEY_SIZE],
            iv: [0; IV_SIZE],
            reserved: [0; 4],
            sequence: 0,
        };
        expand(secret, Label::Key, None, &mut d.key);
        expand(secret, Label::Iv, None, &mut d.iv);
        d
    }

    /// The secret the keys come from (a finished key is derived from a handshake secret).
    pub fn secret(&self) -> &Digest {
        &self.secret
    }

    /// The next sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// `KEY_UPDATE`: the next secret (`bin_str9`), its keys, sequence number 0.
    #[inline]
    pub fn update(&mut self) {
        *self = Self::new(&expand_digest(&self.secret, Label::TrafficUpdate, None));
    }

    /// Takes the sequence number of the next record and advances it.
    fn take_sequence(&mut self) -> Result<u64, RecordError> {
        let seq = self.sequence;
        self.sequence = seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(seq)
    }

    /// Seals `app` (an SPDM message) into a record of session `session_id` in `out`; returns
    /// the record's length.
    pub fn seal(
        &mut self,
        session_id: u32,
        app: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        let (header, rest) = out
            .split_at_mut_checked(RECORD_HEADER_SIZE)
            .ok_or(RecordError::BufferTooSmall)?;
        let plain_len =
            secured::encode_plaintext(rest, app).map_err(|_| RecordError::BufferTooSmall)?;
        secured::encode_header(header, session_id, plain_len).map_err(RecordError::Framing)?;
        let (body, tail) = rest
            .split_at_mut_checked(plain_len)
            .ok_or(RecordError::BufferTooSmall)?;
        let mac = tail
            .get_mut(..MAC_SIZE)
            .ok_or(RecordError::BufferTooSmall)?;
        let seq = self.take_sequence()?;
        let nonce = secured::nonce(&self.iv, seq);
        let tag = tsm_spdm_aead::seal(&self.key, &nonce, header, body)
            .map_err(|_| RecordError::BufferTooSmall)?;
        mac.copy_from_slice(&tag);
        RECORD_HEADER_SIZE
            .checked_add(plain_len)
            .and_then(|n| n.checked_add(MAC_SIZE))
            .ok_or(RecordError::BufferTooSmall)
    }

    /// Opens the record in `record` (decrypting in place) and returns its application data.
    /// The sequence number advances only when the record verifies: a forged record changes
    /// nothing.
    pub fn open<'b>(
        &mut self,
        session_id: u32,
        record: &'b mut [u8],
    ) -> Result<&'b [u8], RecordError> {
        let layout = RecordLayout::parse(record).map_err(RecordError::Framing)?;
        if layout.session_id != session_id {
            return Err(RecordError::WrongSession(layout.session_id));
        }
        let (header, ciphertext, mac) = layout
            .split_mut(record)
            .ok_or(RecordError::Framing(SpdmError::Truncated))?;
        let tag = <&[u8; MAC_SIZE]>::try_from(mac)
            .map_err(|_| RecordError::Framing(SpdmError::Truncated))?;
        let next = self
            .sequence
            .checked_add(1)
            .ok_or(RecordError::SequenceExhausted)?;
        let nonce = secured::nonce(&self.iv, self.sequence);
        tsm_spdm_aead::open(&self.key, &nonce, header, ciphertext, tag)
            .map_err(|_| RecordError::Authentication)?;
        self.sequence = next;
        let ciphertext: &'b [u8] = ciphertext;
        secured::app_data(ciphertext).map_err(RecordError::Framing)
    }
}
