//! ABI version numbers: `major << 16 | minor`. A caller passes the version it wants to `VERSION`
//! and gets back the lowest and highest the TSM implements; minor versions only add.

/// A packed ABI version.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct AbiVersion {
    /// Incompatible changes bump the major.
    pub major: u16,
    /// Additions bump the minor.
    pub minor: u16,
}

impl AbiVersion {
    /// Packs into the register form.
    pub const fn to_raw(self) -> u64 {
        ((self.major as u64) << 16) | self.minor as u64
    }
    /// Unpacks from the register form; `None` when bits above 31 are set.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw >> 32 != 0 {
            return None;
        }
        Some(Self {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        })
    }
}

/// The lowest version this TSM speaks.
pub const LOWEST: AbiVersion = AbiVersion { major: 1, minor: 0 };
/// The highest version this TSM speaks.
pub const HIGHEST: AbiVersion = AbiVersion { major: 1, minor: 0 };
