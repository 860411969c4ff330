//! Turns UART records into readable log lines: each defmt stream is decoded with the table of
//! the ELF that produced it.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use defmt_decoder::Table;
use tsm_platform::log::{STREAM_GUEST, STREAM_HOST, STREAM_TEXT, STREAM_TSM};

use crate::records::{Chunk, RecordSplitter};

/// Who wrote a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Tsm,
    Host,
    Guest,
    /// The Linux host's console (the second UART), in the `linux` scenario.
    Linux,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Tsm => "tsm",
            Program::Host => "host",
            Program::Guest => "guest",
            Program::Linux => "linux",
        }
    }
}

/// One decoded line of a run's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// `None` for bytes no program can be held to (garbage, unknown streams).
    pub program: Option<Program>,
    /// Seconds since boot as the program's timestamp shows it.
    pub time: Option<String>,
    pub level: &'static str,
    pub message: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.program.map_or("uart", Program::name);
        let time = self.time.as_deref().unwrap_or("");
        // Continuation lines of a multi-line message line up under its first line: the
        // columns before the bar are 12 + 1 + 5 + 1 + 5 + 1 wide.
        let message = self.message.replace('\n', &format!("\n{:25}| ", ""));
        write!(f, "{time:>12} {:<5} {program:<5} | {message}", self.level)
    }
}

/// Decoder state for one run: the tables of its ELFs and the splitter's partial record.
pub struct LogDecoder {
    tsm: Option<Table>,
    host: Option<Table>,
    guest: Option<Table>,
    splitter: RecordSplitter,
}

impl LogDecoder {
    /// Reads the defmt tables of the TSM and host payload ELFs, and of the guest payload the
    /// host embeds when its ELF (`tsm-guest`) sits next to the host's, as the image build
    /// leaves it.
    pub fn load(tsm_elf: &Path, host_elf: &Path) -> Result<Self, String> {
        let guest_elf = host_elf.with_file_name("tsm-guest");
        let guest = if guest_elf.exists() {
            load_table(&guest_elf)?
        } else {
            None
        };
        Ok(Self::new(
            load_table(tsm_elf)?,
            load_table(host_elf)?,
            guest,
        ))
    }

    pub fn new(tsm: Option<Table>, host: Option<Table>, guest: Option<Table>) -> Self {
        Self {
            tsm,
            host,
            guest,
            splitter: RecordSplitter::default(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let chunks = self.splitter.push(bytes);
        chunks.iter().map(|c| self.render(c)).collect()
    }

    pub fn finish(&mut self) -> Option<Line> {
        let chunk = self.splitter.finish()?;
        Some(self.render(&chunk))
    }

    fn render(&self, chunk: &Chunk) -> Line {
        match chunk {
            Chunk::Garbage(bytes) => Line {
                program: None,
                time: None,
                level: "??",
                message: format!(
                    "{} bytes outside records: {}",
                    bytes.len(),
                    show_bytes(bytes)
                ),
            },
            Chunk::Record {
                stream: STREAM_TEXT,
                payload,
            } => Line {
                program: Some(Program::Tsm),
                time: None,
                level: "TEXT",
                message: String::from_utf8_lossy(payload).trim_end().to_string(),
            },
            Chunk::Record {
                stream: STREAM_TSM,
                payload,
            } => decode_frame(Program::Tsm, self.tsm.as_ref(), payload),
            Chunk::Record {
                stream: STREAM_HOST,
                payload,
            } => decode_frame(Program::Host, self.host.as_ref(), payload),
            Chunk::Record {
                stream: STREAM_GUEST,
                payload,
            } => decode_frame(Program::Guest, self.guest.as_ref(), payload),
            Chunk::Record { stream, payload } => Line {
                program: None,
                time: None,
                level: "??",
                message: format!(
                    "record of unknown stream {stream:#04x}: {}",
                    show_bytes(payload)
                ),
            },
        }
    }
}

/// The defmt table of `elf`. An unreadable table is not fatal: the run still boots and its
/// frames are shown in hex, which beats no run at all.
fn load_table(elf: &Path) -> Result<Option<Table>, String> {
    let bytes = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    match Table::parse(&bytes) {
        Ok(Some(table)) => Ok(Some(table)),
        Ok(None) => {
            eprintln!("xtask: warning: {} has no defmt table", elf.display());
            Ok(None)
        }
        Err(e) => {
            eprintln!("xtask: warning: defmt table of {}: {e}", elf.display());
            Ok(None)
        }
    }
}

/// One raw defmt frame (encoding-raw: the record holds exactly one).
fn decode_frame(program: Program, table: Option<&Table>, payload: &[u8]) -> Line {
    let undecoded = |why: &str| Line {
        program: Some(program),
        time: None,
        level: "??",
        message: format!("undecodable frame ({why}): {}", show_bytes(payload)),
    };
    let Some(table) = table else {
        return undecoded("no defmt table for this program");
    };
    // The decoder trusts its input more than the log of a crashing image deserves; a panic in
    // it must cost one line, not the run (and the QEMU it would leave behind).
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        table.decode(payload).map(|(frame, consumed)| {
            let mut message = frame.display_message().to_string();
            if let Some(extra) = payload.get(consumed..).filter(|rest| !rest.is_empty()) {
                message.push_str(&format!(
                    " [+{} trailing bytes: {}]",
                    extra.len(),
                    show_bytes(extra)
                ));
            }
            Line {
                program: Some(program),
                time: frame.display_timestamp().map(|t| t.to_string()),
                level: frame.level().map_or("PRINT", level_name),
                message,
            }
        })
    }));
    match decoded {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => undecoded(&format!("{e:?}")),
        Err(_) => undecoded("the defmt decoder panicked on it"),
    }
}

fn level_name(level: defmt_parser::Level) -> &'static str {
    use defmt_parser::Level;
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// Hex, plus the printable text when there is some: stray bytes are often text printed past
/// the logger (an early boot message, a panic that bypassed it).
fn show_bytes(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut s = hex.join(" ");
    if bytes.iter().any(|b| b.is_ascii_graphic()) {
        s.push_str(&format!(" {:?}", String::from_utf8_lossy(bytes)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut raw = vec![stream];
        raw.extend_from_slice(payload);
        let mut out = cobs::encode_vec(&raw);
        out.push(0);
        out
    }

    #[test]
    fn text_records_keep_their_words() {
        let mut d = LogDecoder::new(None, None, None);
        let lines = d.push(&record(STREAM_TEXT, b"early boot: no DTB\n"));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].program, Some(Program::Tsm));
        assert_eq!(lines[0].message, "early boot: no DTB");
        assert_eq!(
            lines[0].to_string(),
            "             TEXT  tsm   | early boot: no DTB"
        );
    }

    #[test]
    fn multi_line_messages_stay_in_the_message_column() {
        let line = Line {
            program: Some(Program::Host),
            time: Some("1.000001".into()),
            level: "ERROR",
            message: "first\nsecond".into(),
        };
        let text = line.to_string();
        let mut rows = text.lines();
        let first = rows.next().unwrap_or_default();
        let second = rows.next().unwrap_or_default();
        assert_eq!(first, "    1.000001 ERROR host  | first");
        assert_eq!(first.find('|'), second.find('|'));
        assert!(second.ends_with("| second"));
    }

    #[test]
    fn frames_without_a_table_are_shown_in_hex() {
        let mut d = LogDecoder::new(None, None, None);
        let lines = d.push(&record(STREAM_HOST, &[0x01, 0x00, 0xff]));
        assert_eq!(lines[0].program, Some(Program::Host));
        assert_eq!(lines[0].level, "??");
        assert!(
            lines[0].message.ends_with("01 00 ff"),
            "{}",
            lines[0].message
        );
    }

    #[test]
    fn garbage_and_unknown_streams_are_shown() {
        let mut d = LogDecoder::new(None, None, None);
        let mut bytes = b"oops\0".to_vec();
        bytes.extend(record(0x33, &[1, 2]));
        let lines = d.push(&bytes);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].program, None);
        assert!(
            lines[0].message.contains("6f 6f 70 73 00 \"oops\\0\""),
            "{}",
            lines[0].message
        );
        assert!(
            lines[1]
                .message
                .starts_with("record of unknown stream 0x33: 01 02")
        );
        assert!(d.finish().is_none());
    }
}
