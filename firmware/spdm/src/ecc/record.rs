//! Every P-384 result this thread's operations gave, in order: what the test checks Miri's
//! table ([`super::table`]) against. Test builds only (the device model's: feature
//! `p384-record`, which tsm-core's tests turn on; it includes this file by path).

extern crate std;

use std::cell::RefCell;
use std::string::String;
use std::vec::Vec;

std::thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn push(key: &[u8], value: &[u8]) {
    let line = std::format!("{} {}", super::table::hex(key), super::table::hex(value));
    LOG.with(|l| l.borrow_mut().push(line));
}

/// This thread's results since the last take, each once, as table lines.
pub fn take() -> Vec<String> {
    let mut lines = LOG.with(|l| l.take());
    let mut seen = std::collections::BTreeSet::new();
    lines.retain(|l| seen.insert(l.clone()));
    lines
}
