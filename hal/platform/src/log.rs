//! The numbers of the console record format that the core and xtask share with the HAL, which
//! frames the records (`tsm_hal::log`). On the wire each record is
//! `COBS(stream ‖ payload) ‖ 0x00` (docs/design.md, "Logging").

/// The TSM's own defmt frames.
pub const STREAM_TSM: u8 = 0;
/// defmt frames of the host payload, relayed by `CONSOLE_WRITE`.
pub const STREAM_HOST: u8 = 1;
/// defmt frames of a guest, relayed by `G_CONSOLE_WRITE`.
pub const STREAM_GUEST: u8 = 2;
/// Plain UTF-8 text: early boot and the last-resort fatal paths.
pub const STREAM_TEXT: u8 = 0x7F;

/// Longest payload of one record; longer payloads are cut (a defmt frame is far shorter).
pub const MAX_PAYLOAD: usize = 512;
