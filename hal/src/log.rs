//! The console record format shared by every program that logs through the TSM.
//!
//! The UART carries records `COBS(stream ‖ payload) ‖ 0x00` (docs/design.md, "Logging"). The TSM
//! frames its own defmt frames (stream [`STREAM_TSM`]) and the frames the host and guests hand
//! it through the debug-console calls; nobody else touches the UART, so records never interleave.
//! The stream numbers and the payload limit are `tsm-platform`'s, which the core and xtask share.

pub use tsm_platform::log::{MAX_PAYLOAD, STREAM_GUEST, STREAM_HOST, STREAM_TEXT, STREAM_TSM};

/// Longest encoded record, delimiter included.
pub const MAX_RECORD: usize = 1 + MAX_PAYLOAD + MAX_PAYLOAD.div_ceil(254) + 1 + 1;

/// Encodes one record into `out` and returns its length. `payload` beyond [`MAX_PAYLOAD`]
/// bytes is dropped.
///
/// COBS is written here rather than taken from the `cobs` crate: its `encode` unwraps a
/// `Result`, which kept `core::fmt`'s `unwrap_failed` path and the crate's error `Debug` in the
/// image, and wants the stream byte and the payload in one buffer (a 513-byte copy per record).
pub fn encode_record(stream: u8, payload: &[u8], out: &mut [u8; MAX_RECORD]) -> usize {
    let payload = payload.get(..MAX_PAYLOAD).unwrap_or(payload);
    // A block is a code byte, its length + 1, then up to 254 non-zero bytes; a code below 0xFF
    // also stands for the zero after its block. `code_at` is the open block's code byte, `n`
    // the next free byte. At most 1 + MAX_PAYLOAD input bytes take at most one code byte per
    // 254 of them plus one, so every index stays below MAX_RECORD with the delimiter.
    // The stream byte starts the first block (or, the TSM's stream 0, closes an empty one):
    // taken before the loop so that the loop walks a plain slice.
    let (mut code_at, mut n) = if stream == 0 {
        out[0] = 1;
        (1, 2)
    } else {
        out[1] = stream;
        (0, 2)
    };
    for &b in payload {
        // A full block is closed only when a byte follows it: input that ends with one needs
        // no empty block after it.
        if n - code_at == 0xFF {
            out[code_at] = 0xFF;
            code_at = n;
            n += 1;
        }
        if b == 0 {
            out[code_at] = block_code(n - code_at);
            code_at = n;
        } else {
            out[n] = b;
        }
        n += 1;
    }
    out[code_at] = block_code(n - code_at);
    out[n] = 0;
    n + 1
}

/// A block's code byte from its length + 1, at most 0xFF by `encode_record`'s construction.
fn block_code(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_the_cobs_crates_encoding() {
        // Runs of non-zero bytes across the 254-byte block limit, zeros at the ends, all zeros.
        let patterns: [fn(usize) -> u8; 4] = [
            |i| (i % 3) as u8,
            |i| if i % 300 == 299 { 0 } else { 0xA5 },
            |_| 0,
            |i| (i % 255 + 1) as u8,
        ];
        for (pattern, stream) in patterns
            .iter()
            .flat_map(|p| [(p, STREAM_TSM), (p, STREAM_GUEST)])
        {
            let payload: [u8; MAX_PAYLOAD] = core::array::from_fn(pattern);
            for len in (0..=MAX_PAYLOAD).filter(|l| l % 251 < 8 || l % 254 < 4 || *l > 505) {
                let mut out = [0u8; MAX_RECORD];
                let n = encode_record(stream, &payload[..len], &mut out);
                let mut raw = [0u8; MAX_PAYLOAD + 1];
                raw[0] = stream;
                raw[1..=len].copy_from_slice(&payload[..len]);
                let mut want = [0u8; MAX_RECORD];
                let m = cobs::encode(&raw[..=len], &mut want);
                assert_eq!(&out[..n - 1], &want[..m], "length {len}");
                assert_eq!(out[n - 1], 0);
            }
        }
    }

    #[test]
    fn records_are_zero_free_and_decode_back() {
        for len in [0usize, 1, 253, 254, 255, MAX_PAYLOAD, MAX_PAYLOAD + 10] {
            let payload: [u8; MAX_PAYLOAD + 10] = core::array::from_fn(|i| (i % 3) as u8);
            let mut out = [0u8; MAX_RECORD];
            let n = encode_record(STREAM_HOST, &payload[..len], &mut out);
            assert_eq!(out[n - 1], 0);
            assert!(!out[..n - 1].contains(&0));
            let mut dec = [0u8; MAX_RECORD];
            let m = cobs::decode(&out[..n - 1], &mut dec).unwrap().frame_size();
            assert_eq!(dec[0], STREAM_HOST);
            let kept = len.min(MAX_PAYLOAD);
            assert_eq!(m, kept + 1);
            assert_eq!(&dec[1..m], &payload[..kept]);
        }
    }
}
