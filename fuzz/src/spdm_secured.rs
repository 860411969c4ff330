//! `spdm_secured`: the DSP0277 record layer and the requester, fed arbitrary responses.
//!
//! Input: a selector byte, then bytes.
//! - Record layer: `app` bytes sealed under one key and opened under the same key must come
//!   back equal; with one byte flipped (position from the input) they must not open; arbitrary
//!   bytes opened under a key never panic, and a failed open leaves the sequence number where
//!   it was (a forged record changes nothing).
//! - The requester: a snapshot of it before one of the responses of an honest session (every
//!   phase, plain and secured) is given the input as that response. It must never panic; if
//!   it fails, it is FAILED with its session gone; in a secured phase it accepts nothing but
//!   the device's genuine record (plus DOE padding): nobody else has the key.

use tsm_abi::spdm::crypto::{self, Direction};
use tsm_core::spdm::requester::{Evidence, MAX_RECORD, Phase, Step};

use crate::input::Input;
use crate::spdm_session::{Rng, snapshots};

/// Runs every check on `data` (under Miri, the record layer only: the requester's snapshots
/// come from a session whose P-384 work would take hours interpreted).
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let flip = input.u16();
    let rest = input.rest();
    records(rest, usize::from(flip));
    if !cfg!(miri) {
        requester(usize::from(selector), rest);
    }
}

fn records(bytes: &[u8], flip: usize) {
    let secret = crypto::hash(&[b"fuzz"]);
    let (mut tx, mut rx) = (Direction::new(&secret), Direction::new(&secret));
    let app = &bytes[..bytes.len().min(MAX_RECORD - 64)];
    let mut record = vec![0u8; app.len() + 64];
    let n = tx.seal(0x1234_5678, app, &mut record).expect("fits");
    let mut tampered = record[..n].to_vec();
    let at = flip % n;
    tampered[at] ^= 0x80;
    assert!(
        rx.open(0x1234_5678, &mut tampered).is_err(),
        "flip at {at} opened"
    );
    assert_eq!(rx.sequence(), 0);
    assert_eq!(
        rx.open(0x1234_5678, &mut record[..n]).map(|m| m.to_vec()),
        Ok(app.to_vec())
    );
    // Arbitrary bytes as a record.
    let mut raw = bytes.to_vec();
    if rx.open(0x1234_5678, &mut raw).is_err() {
        assert_eq!(rx.sequence(), 1);
    }
}

fn requester(selector: usize, response: &[u8]) {
    let snaps = snapshots();
    let snap = &snaps[selector % snaps.len()];
    let mut req = snap.requester.clone();
    let secured = matches!(
        req.phase(),
        Phase::Finish | Phase::Tdisp | Phase::KeyUpdate | Phase::VerifyNewKey | Phase::EndSession
    );
    let mut chain = snap.chain.clone();
    let mut measurements = snap.measurements.clone();
    let mut evidence = Evidence {
        chain: &mut chain,
        measurements: &mut measurements,
    };
    let mut bytes = response.to_vec();
    let mut out = vec![0u8; MAX_RECORD];
    let genuine = response.len() >= snap.response.len()
        && response.len() - snap.response.len() <= 3
        && response.starts_with(&snap.response)
        && response[snap.response.len()..].iter().all(|&b| b == 0);
    match req.respond(&mut bytes, &mut out, &mut evidence, &Rng::new(2)) {
        Ok(step) => {
            assert!(!secured || genuine, "a forged record was accepted");
            if let Step::Send(o) = step {
                assert!(o.len <= MAX_RECORD);
            }
        }
        Err(_) => {
            assert_eq!(req.phase(), Phase::Failed);
            assert_eq!(req.session_id(), 0);
        }
    }
}

/// Seeds: a short record-layer input, and (not under Miri) every response of the recorded
/// session at its own step (the honest path).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("records".to_string(), b"\x00\x05\x00hello".to_vec())];
    if cfg!(miri) {
        return out;
    }
    let (_, received) = crate::spdm_session::transcript();
    for (i, (_, bytes)) in received.iter().enumerate() {
        let mut seed = vec![i as u8, 0, 0];
        seed.extend(bytes);
        out.push((format!("step_{i}"), seed));
    }
    out
}
