//! What the adapter needs from /dev/tsm: its ioctls, the two mappings it offers (the pool and
//! edu's BAR0), and a clock. The real one is [`crate::sys::TsmFile`]; the tests use a fake.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A Linux error number (positive), as a failed system call returns it negated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Errno(pub u32);

/// The module's mappings.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Region {
    /// The file's pool, from its first granule.
    Pool,
    /// edu's BAR0, uncached.
    Bar0,
}

/// An access width.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    /// 4 bytes.
    W32,
    /// 8 bytes.
    W64,
}

impl Width {
    /// Its size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }
}

/// /dev/tsm, opened.
pub trait Device {
    /// One ioctl with `arg` as its block (read and written in place).
    fn ioctl<T: IntoBytes + FromBytes + Immutable>(
        &mut self,
        request: u32,
        arg: &mut T,
    ) -> Result<(), Errno>;
    /// Maps `len` bytes of `region` (once each); false when the module refused.
    fn map(&mut self, region: Region, len: u64) -> bool;
    /// One load of `width` at `offset` into a mapped region, aligned and inside it; `None`
    /// outside.
    fn load(&mut self, region: Region, offset: u64, width: Width) -> Option<u64>;
    /// One store (as [`Device::load`]); false outside.
    fn store(&mut self, region: Region, offset: u64, width: Width, value: u64) -> bool;
    /// One access at `offset` of a mapped region, made by a child process so a fault ends the
    /// child only: `Some(true)` when it faulted, `Some(false)` when it completed, `None` when
    /// no probe could be made.
    fn probe(&mut self, region: Region, offset: u64, write: bool) -> Option<bool>;
    /// Microseconds of the monotonic clock.
    fn now_us(&mut self) -> u64;
}
