//! Exhaustive truncations and random bytes: the decoders must refuse or accept, never panic, and
//! whatever they accept must re-encode to the same bytes (one wire form per value).

use super::samples::*;
use crate::tdisp::*;

/// xorshift64*: deterministic, dependency-free noise for the loops below.
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

fn check_request(bytes: &[u8]) -> bool {
    match Request::decode(bytes) {
        Ok(req) => {
            let mut out = [0u8; MAX_MESSAGE_SIZE];
            let len = req.encode(&mut out).expect("accepted request re-encodes");
            assert_eq!(&out[..len], bytes);
            true
        }
        Err(_) => false,
    }
}

fn check_response(bytes: &[u8]) -> bool {
    match Response::decode(bytes) {
        Ok(rsp) => {
            let mut out = [0u8; MAX_MESSAGE_SIZE];
            let len = rsp.encode(&mut out).expect("accepted response re-encodes");
            assert_eq!(&out[..len], bytes);
            true
        }
        Err(_) => false,
    }
}

fn check_report(bytes: &[u8]) -> bool {
    match InterfaceReport::parse(bytes) {
        Ok(report) => {
            let mut ranges = [MmioRange {
                first_page: 0,
                number_of_pages: 1,
                attributes: RangeAttributes::empty(),
                range_id: 0,
            }; 16];
            let n = report.mmio_range_count();
            for (slot, r) in ranges.iter_mut().zip(report.mmio_ranges()) {
                *slot = r;
            }
            let mut out = [0u8; 1024];
            let len = InterfaceReport::encode(
                &report.fields(),
                &ranges[..n],
                report.device_specific_info(),
                &mut out,
            )
            .expect("accepted report re-encodes");
            assert_eq!(&out[..len], bytes);
            true
        }
        Err(_) => false,
    }
}

#[test]
fn every_truncation_of_every_message_is_refused() {
    for req in requests() {
        let (buf, len) = req_bytes(&req);
        for n in 0..len {
            let truncated = Request::decode(&buf[..n]);
            // A VDM shortened inside its vendor data is a different valid VDM.
            let inside_vdm_data =
                matches!(req, Request::Vdm { vendor, .. } if n >= len - vendor.data.len());
            assert_eq!(truncated.is_ok(), inside_vdm_data, "{req:?} cut to {n}");
        }
    }
    for rsp in responses() {
        let (buf, len) = rsp_bytes(&rsp);
        for n in 0..len {
            let truncated = Response::decode(&buf[..n]);
            let inside_vdm_data =
                matches!(rsp, Response::Vdm { vendor, .. } if n >= len - vendor.data.len());
            assert_eq!(truncated.is_ok(), inside_vdm_data, "{rsp:?} cut to {n}");
        }
    }
}

/// Iterations of [`random_bytes_never_panic`]; Miri interprets each one, so it runs a
/// hundredth of them (the same code paths, fewer inputs).
const RANDOM_MESSAGES: u32 = if cfg!(miri) { 3_000 } else { 300_000 };
/// Iterations of [`mutated_valid_messages_never_panic`], scaled like [`RANDOM_MESSAGES`].
const MUTATED_MESSAGES: u32 = if cfg!(miri) { 1_000 } else { 100_000 };

#[test]
fn random_bytes_never_panic() {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut buf = [0u8; 96];
    let mut accepted = 0;
    for i in 0..RANDOM_MESSAGES {
        let len = noise.below(buf.len() + 1);
        for b in buf.iter_mut() {
            *b = noise.next() as u8;
        }
        // Most iterations get a plausible header so the payload decoders are reached.
        if i % 4 != 0 && len >= 16 {
            buf[0] = TDISP_VERSION_1_0;
            buf[1] = if i % 2 == 0 {
                0x81 + noise.below(11) as u8
            } else {
                [
                    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x7F,
                ][noise.below(12)]
            };
            buf[2..4].fill(0);
            buf[6..16].fill(0);
            // Sparse payloads pass the reserved-field checks more often.
            if i % 3 == 0 {
                for b in buf[16..].iter_mut() {
                    if noise.below(4) != 0 {
                        *b = 0;
                    }
                }
            }
        }
        accepted += usize::from(check_request(&buf[..len]));
        accepted += usize::from(check_response(&buf[..len]));
        accepted += usize::from(check_report(&buf[..len]));
    }
    // The loop must reach the success paths too, or it tests only the first check (natively
    // about one input in 200 is accepted).
    std::eprintln!("{accepted} of {RANDOM_MESSAGES} accepted");
    assert!(
        accepted > RANDOM_MESSAGES as usize / 300,
        "only {accepted} accepted"
    );
}

#[test]
fn mutated_valid_messages_never_panic() {
    let mut noise = Noise(0xD1B5_4A32_D192_ED03);
    let reqs = requests();
    let rsps = responses();
    for _ in 0..MUTATED_MESSAGES {
        let (mut buf, len) = req_bytes(&reqs[noise.below(reqs.len())]);
        let cut = flip(&mut noise, &mut buf, len);
        check_request(&buf[..cut]);
        let (mut buf, len) = rsp_bytes(&rsps[noise.below(rsps.len())]);
        let cut = flip(&mut noise, &mut buf, len);
        check_response(&buf[..cut]);
    }
}

/// Flips 1..=3 bits of `buf[..len]` and picks a length of `len - 1`, `len` or `len + 1`.
fn flip(noise: &mut Noise, buf: &mut [u8], len: usize) -> usize {
    for _ in 0..1 + noise.below(3) {
        let at = noise.below(len);
        buf[at] ^= 1 << noise.below(8);
    }
    (len + noise.below(3) - 1).min(buf.len())
}
