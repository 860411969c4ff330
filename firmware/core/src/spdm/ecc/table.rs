//! P-384 results precomputed for Miri: one whole SPDM session (connect, TDISP, key update,
//! end) interpreted in minutes instead of days.
//!
//! Miri interprets every field operation of the curve arithmetic, so one verification takes
//! minutes and a connect (seven operations here, four in the device model) did not finish.
//! Under `cfg(miri)` [`lookup`] answers from `table.txt` the operations a session of the test
//! `spdm::tests::honest::a_whole_session_runs_under_miri` makes, keyed by every input byte
//! as `crypto-memo` keys them (the operation, then each input length-prefixed); anything else
//! is computed. The table is what a native run of that test computes: the test records every
//! result the arithmetic gives (`record`, test builds only) and fails unless the table holds
//! exactly those, so a table entry is the real result for its inputs, checked on every
//! `cargo test`; `TSM_BLESS=1` rewrites it after a change to the session.

extern crate std;

use std::vec::Vec;

/// The table, one `key value` line per result, in hex.
pub const TABLE: &str = include_str!("table.txt");

/// An operation's inputs: hands each, in order, to the function it is given.
type Inputs<'a> = dyn Fn(&mut dyn FnMut(&[u8])) + 'a;

/// The memo key of an operation: its number, then each input length-prefixed (so two splits
/// of the same bytes are different keys).
pub(super) fn encode(op: u8, inputs: &Inputs<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(256);
    key.push(op);
    inputs(&mut |input| {
        key.extend_from_slice(&(input.len() as u64).to_le_bytes());
        key.extend_from_slice(input);
    });
    key
}

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

/// Results this thread's operations gave, in order (test builds: what the table is checked
/// against).
#[cfg(test)]
pub(crate) mod record {
    extern crate std;

    use std::cell::RefCell;
    use std::string::String;
    use std::vec::Vec;

    std::thread_local! {
        static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    pub(in crate::spdm::ecc) fn push(key: &[u8], value: &[u8]) {
        let line = std::format!("{} {}", super::hex(key), super::hex(value));
        LOG.with(|l| l.borrow_mut().push(line));
    }

    /// This thread's results since the last take, each once, as table lines.
    pub fn take() -> Vec<String> {
        let mut lines = LOG.with(|l| l.take());
        let mut seen = std::collections::BTreeSet::new();
        lines.retain(|l| seen.insert(l.clone()));
        lines
    }
}
