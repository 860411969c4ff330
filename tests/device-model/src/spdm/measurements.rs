//! The device's measurement blocks (DSP0274 1.2, DMTF format): digests (SHA-512) of
//! its ROM, firmware and hardware configuration, then its manifest and device mode as raw bit
//! streams (indices 0xFD and 0xFE, as 1.2 reserves them).

use sha2::{Digest, Sha512};
use tsm_abi::spdm::{MEASUREMENTS_ALL, MEASUREMENTS_COUNT, MeasurementSpec, RAW_BIT_STREAM};

/// Number of blocks.
pub(super) const BLOCKS: u8 = 5;
/// Room for every block.
pub(super) const RECORD_CAPACITY: usize = 3 * (4 + 3 + 64) + 2 * (4 + 3 + 32);

const MANIFEST: &[u8] = b"tsm device model, TDISP 1.0";
/// Device mode (1.2): operational mode capabilities and state, device mode capabilities and
/// state, each a u32; "normal operation" everywhere.
const DEVICE_MODE: [u8; 16] = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Block `index`: its DMTF value type and its value (a digest, or raw bytes).
fn block(index: u8, value: &mut [u8; 64]) -> Option<(u8, usize)> {
    let digest = |what: &[u8], value: &mut [u8; 64]| {
        *value = Sha512::digest(what).into();
        64
    };
    Some(match index {
        1 => (0, digest(b"immutable ROM v1", value)),
        2 => (1, digest(b"mutable firmware v7.1", value)),
        3 => (2, digest(b"hardware configuration: 8 queue pairs", value)),
        0xFD => {
            let n = MANIFEST.len();
            value.get_mut(..n)?.copy_from_slice(MANIFEST);
            (RAW_BIT_STREAM | 4, n)
        }
        0xFE => {
            value.get_mut(..16)?.copy_from_slice(&DEVICE_MODE);
            (RAW_BIT_STREAM | 5, 16)
        }
        _ => return None,
    })
}

/// Writes the blocks `operation` asks for (0: none; 0xFF: all; else that index) into `out`;
/// returns their count and length, `None` for an index the device does not have.
pub(super) fn record(operation: u8, out: &mut [u8]) -> Option<(u8, usize)> {
    let all = [1, 2, 3, 0xFD, 0xFE];
    let wanted: &[u8] = match operation {
        MEASUREMENTS_COUNT => &[],
        MEASUREMENTS_ALL => &all,
        i => {
            let at = all.iter().position(|&x| x == i)?;
            all.get(at..=at)?
        }
    };
    let mut len = 0usize;
    for &index in wanted {
        let mut value = [0u8; 64];
        let (value_type, size) = block(index, &mut value)?;
        let size16 = u16::try_from(size).ok()?;
        let dest = out.get_mut(len..len + 7 + size)?;
        dest[0] = index;
        dest[1] = MeasurementSpec::DMTF.bits();
        dest[2..4].copy_from_slice(&(size16 + 3).to_le_bytes());
        dest[4] = value_type;
        dest[5..7].copy_from_slice(&size16.to_le_bytes());
        dest[7..].copy_from_slice(value.get(..size)?);
        len += 7 + size;
    }
    Some((wanted.len() as u8, len))
}
