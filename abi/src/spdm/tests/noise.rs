//! Random and mutated bytes: decoders refuse or accept, never panic, and what they accept
//! re-encodes to a message that decodes to the same value.

use super::samples::*;
use crate::spdm::*;
use std::{vec, vec::Vec};

/// xorshift64*: deterministic, dependency-free noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check_request(bytes: &[u8]) {
    if let Ok((req, _)) = Request::decode(bytes, &N) {
        let mut out = [0u8; 4096];
        let len = req
            .encode(&mut out, &N)
            .expect("accepted request re-encodes");
        assert_eq!(Request::decode(&out[..len], &N).unwrap().0, req);
    }
}

fn check_response(bytes: &[u8], expect: Expect) {
    if let Ok((rsp, _)) = Response::decode(bytes, expect, &N) {
        let mut out = [0u8; 4096];
        // ALGORITHMS with extended algorithms does not re-encode (none are supported).
        if let Ok(len) = rsp.encode(&mut out, &N) {
            assert_eq!(
                Response::decode(&out[..len], rsp.expect(), &N).unwrap().0,
                rsp
            );
        }
    }
}

const EXPECTS: [Expect; 12] = [
    Expect::Plain(ResponseCode::Version),
    Expect::Plain(ResponseCode::Capabilities),
    Expect::Plain(ResponseCode::Algorithms),
    Expect::Plain(ResponseCode::Digests),
    Expect::Plain(ResponseCode::Certificate),
    Expect::Measurements { signed: true },
    Expect::Measurements { signed: false },
    Expect::KeyExchangeRsp { summary: true },
    Expect::KeyExchangeRsp { summary: false },
    Expect::Plain(ResponseCode::FinishRsp),
    Expect::Plain(ResponseCode::KeyUpdateAck),
    Expect::Plain(ResponseCode::VendorDefined),
];

/// Inputs per loop (Miri interprets each one: fewer there).
const ROUNDS: usize = if cfg!(miri) { 300 } else { 20_000 };

#[test]
fn random_bytes_never_panic() {
    let mut noise = Noise(0x5EED_5EED);
    let mut buf = [0u8; 300];
    for _ in 0..ROUNDS {
        let len = noise.below(buf.len());
        for b in &mut buf[..len] {
            *b = noise.next() as u8;
        }
        // Half the time, a valid header so the bodies get exercised.
        if len >= 2 && noise.below(2) == 0 {
            buf[0] = 0x12;
        }
        check_request(&buf[..len]);
        check_response(&buf[..len], EXPECTS[noise.below(EXPECTS.len())]);
        let _ = opaque::selected_version(&buf[..len]);
        let _ = secured::RecordLayout::parse(&buf[..len]);
        let _ = CertChain::parse(&buf[..len], 48).map(|c| c.root_certificate());
    }
}

#[test]
fn mutated_samples_never_panic() {
    let mut noise = Noise(0xC0FFEE);
    let samples: Vec<(Vec<u8>, Expect)> = vec![
        (version(), EXPECTS[0]),
        (capabilities(0x61, 0x7FF6), EXPECTS[1]),
        (algorithms(), EXPECTS[2]),
        (digests(), EXPECTS[3]),
        (certificate(), EXPECTS[4]),
        (measurements(), EXPECTS[5]),
        (key_exchange_rsp(), EXPECTS[8]),
    ];
    for _ in 0..ROUNDS {
        let (sample, expect) = &samples[noise.below(samples.len())];
        let mut m = sample.clone();
        for _ in 0..1 + noise.below(4) {
            let i = noise.below(m.len());
            m[i] = noise.next() as u8;
        }
        check_response(&m, *expect);
        let mut r = key_exchange();
        let i = noise.below(r.len());
        r[i] ^= 1 << noise.below(8);
        check_request(&r);
    }
}
