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
pub fn encode_record(stream: u8, payload: &[u8], out: &mut [u8; MAX_RECORD]) -> usize {
    let payload = payload.get(..MAX_PAYLOAD).unwrap_or(payload);
    let mut raw = [0u8; MAX_PAYLOAD + 1];
    raw[0] = stream;
    raw[1..=payload.len()].copy_from_slice(payload);
    let n = cobs::encode(&raw[..=payload.len()], &mut out[..MAX_RECORD - 1]);
    out[n] = 0;
    n + 1
}

#[cfg(test)]
mod tests {
    use super::*;

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
