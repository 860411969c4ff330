//! P-384 results precomputed for Miri: one whole SPDM session (connect, TDISP, key update,
//! end) interpreted in minutes instead of days. The same source serves the requester (here,
//! `spdm/ecc/table.txt`) and the device model's responder (its `spdm/ecc.rs` includes this file
//! by path, with its own table): each crate's `ecc` module holds its [`TABLE`].
//!
//! Miri interprets every field operation of the curve arithmetic, so one verification takes
//! minutes and a connect (seven operations here, four in the device model) did not finish.
//! Under `cfg(miri)` [`lookup`] answers from the table the operations a session of the test
//! `spdm::tests::honest::a_whole_session_runs_under_miri` makes, keyed by every input byte
//! as `crypto-memo` keys them ([`encode`]); anything else is computed. The table is what a
//! native run of that test computes: the test records every result the arithmetic gives
//! (`record`, test builds only) and fails unless the table holds exactly those, so a table
//! entry is the real result for its inputs, checked on every `cargo test`; `TSM_BLESS=1`
//! rewrites it after a change to the session.

extern crate std;

pub use super::TABLE;
pub(super) use super::key::encode;

/// The table's result for `key`, if it has one of `N` bytes; only under Miri (natively every
/// result is computed, and recorded to check the table).
pub(super) fn lookup<const N: usize>(key: &[u8]) -> Option<[u8; N]> {
    if !cfg!(miri) {
        return None;
    }
    let want = hex(key);
    TABLE
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == want)
        .and_then(|(_, v)| unhex(v))
}

/// Lowercase hex, as the table is written.
pub(super) fn hex(bytes: &[u8]) -> std::string::String {
    use core::fmt::Write;
    let mut s = std::string::String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = u8::from_str_radix(core::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}
