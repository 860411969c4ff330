//! AES-256-GCM for the SPDM secured-message records (DSP0277) that tsm-abi's `spdm::crypto`
//! seals and opens: the tag detached, the data encrypted or decrypted in place.
//!
//! A crate of its own so that the release profile compiles the cipher for size: generic code
//! takes the opt-level of the crate that instantiates it, and the CTR keystream and GHASH these
//! two functions instantiate were compiled at tsm-abi's opt-level 2, 8 KiB of x86_64's image,
//! for records that only PDEV_CONNECT and the calls of a device's SPDM session seal and open
//! (docs/benchmarks.md, "Image `.text`: the record cipher for size, x86_64's loops unaligned").
#![no_std]
#![forbid(unsafe_code)]

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// AES-256's key size.
pub const KEY_SIZE: usize = 32;
/// GCM's nonce size (the record's per-sequence IV).
pub const NONCE_SIZE: usize = 12;
/// GCM's tag size (the record's MAC).
pub const TAG_SIZE: usize = 16;

/// Why sealing or opening failed: the data is longer than GCM allows (sealing), or the tag
/// does not verify (opening).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Error;

/// Encrypts `data` in place under `key` and `nonce`, authenticating `aad` with it; the tag.
// Out of line: a single call site would otherwise be inlined into tsm-abi's record code and
// compiled at its opt-level again.
#[inline(never)]
pub fn seal(
    key: &[u8; KEY_SIZE],
    nonce: &[u8; NONCE_SIZE],
    aad: &[u8],
    data: &mut [u8],
) -> Result<[u8; TAG_SIZE], Error> {
    Aes256Gcm::new(&(*key).into())
        .encrypt_inout_detached(&Nonce::from(*nonce), aad, data.into())
        .map(Into::into)
        .map_err(|_| Error)
}

/// Checks `tag` over `aad` and `data` under `key` and `nonce`, and decrypts `data` in place if
/// it verifies.
#[inline(never)]
pub fn open(
    key: &[u8; KEY_SIZE],
    nonce: &[u8; NONCE_SIZE],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8; TAG_SIZE],
) -> Result<(), Error> {
    Aes256Gcm::new(&(*key).into())
        .decrypt_inout_detached(&Nonce::from(*nonce), aad, data.into(), &Tag::from(*tag))
        .map_err(|_| Error)
}
