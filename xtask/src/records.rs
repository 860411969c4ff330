//! Splits the UART byte stream into records `COBS(stream ‖ payload) ‖ 0x00` (docs/design.md,
//! "Logging"). Bytes that do not form a record are kept as garbage so they can be shown.

/// Longest run of bytes without a delimiter kept before it is given up as garbage: far more
/// than the longest record the TSM writes (`tsm_hal::log::MAX_RECORD`, a COBS-encoded
/// `tsm_platform::log::MAX_PAYLOAD` plus its stream byte), so a runaway image cannot make xtask
/// buffer without bound.
const MAX_PENDING: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Record {
        stream: u8,
        payload: Vec<u8>,
    },
    /// Bytes that are not a well-formed record, delimiters included, in arrival order.
    Garbage(Vec<u8>),
}

/// Incremental splitter: QEMU's output arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct RecordSplitter {
    pending: Vec<u8>,
}

impl RecordSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Chunk> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == 0 {
                let piece = std::mem::take(&mut self.pending);
                emit(&mut out, decode_piece(piece));
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_PENDING {
                    emit(&mut out, Chunk::Garbage(std::mem::take(&mut self.pending)));
                }
            }
        }
        out
    }

    /// The bytes after the last delimiter: a record cut off by the end of the run.
    pub fn finish(&mut self) -> Option<Chunk> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then_some(Chunk::Garbage(rest))
    }
}

/// Appends `chunk`, merging neighbouring garbage so a burst of noise is one line, not hundreds.
fn emit(out: &mut Vec<Chunk>, chunk: Chunk) {
    if let (Some(Chunk::Garbage(prev)), Chunk::Garbage(more)) = (out.last_mut(), &chunk) {
        prev.extend_from_slice(more);
        return;
    }
    out.push(chunk);
}

/// One delimited piece (without its 0x00) as a record, or as garbage with its delimiter.
fn decode_piece(piece: Vec<u8>) -> Chunk {
    if let Ok(raw) = cobs::decode_vec(&piece)
        && let Some((&stream, payload)) = raw.split_first()
    {
        return Chunk::Record {
            stream,
            payload: payload.to_vec(),
        };
    }
    let mut garbage = piece;
    garbage.push(0);
    Chunk::Garbage(garbage)
}

#[cfg(test)]
mod tests {
    use tsm_platform::log::STREAM_TEXT;

    use super::*;

    fn record(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut raw = vec![stream];
        raw.extend_from_slice(payload);
        let mut out = cobs::encode_vec(&raw);
        out.push(0);
        out
    }

    #[test]
    fn splits_records_and_keeps_payload_zeros() {
        let mut bytes = record(0, &[1, 0, 2, 0]);
        bytes.extend(record(STREAM_TEXT, b"hello"));
        let chunks = RecordSplitter::default().push(&bytes);
        assert_eq!(
            chunks,
            vec![
                Chunk::Record {
                    stream: 0,
                    payload: vec![1, 0, 2, 0]
                },
                Chunk::Record {
                    stream: STREAM_TEXT,
                    payload: b"hello".to_vec()
                },
            ]
        );
    }

    #[test]
    fn records_may_arrive_one_byte_at_a_time() {
        let long: Vec<u8> = (0..600u32).map(|i| (i % 7) as u8).collect();
        let bytes = record(1, &long);
        let mut splitter = RecordSplitter::default();
        let chunks: Vec<Chunk> = bytes.iter().flat_map(|b| splitter.push(&[*b])).collect();
        assert_eq!(
            chunks,
            vec![Chunk::Record {
                stream: 1,
                payload: long
            }]
        );
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn bytes_outside_records_are_shown_not_dropped() {
        let mut bytes = b"boom\r\n".to_vec();
        bytes.push(0);
        bytes.push(0);
        let good = record(0, &[9]);
        bytes.extend(&good);
        bytes.extend(b"tail");
        let mut splitter = RecordSplitter::default();
        let chunks = splitter.push(&bytes);
        // "boom\r\n" is not valid COBS, the lone 0x00 is an empty piece: both are garbage,
        // merged into one chunk, and the good record after them still decodes.
        assert_eq!(
            chunks,
            vec![
                Chunk::Garbage(b"boom\r\n\0\0".to_vec()),
                Chunk::Record {
                    stream: 0,
                    payload: vec![9]
                },
            ]
        );
        assert_eq!(splitter.finish(), Some(Chunk::Garbage(b"tail".to_vec())));
    }

    #[test]
    fn a_run_without_delimiters_is_bounded() {
        let mut splitter = RecordSplitter::default();
        let chunks = splitter.push(&vec![0x55; MAX_PENDING + 10]);
        assert_eq!(chunks, vec![Chunk::Garbage(vec![0x55; MAX_PENDING])]);
        assert_eq!(splitter.finish(), Some(Chunk::Garbage(vec![0x55; 10])));
    }
}
