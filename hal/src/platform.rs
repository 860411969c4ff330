//! The traits the monitor core is written against. The arch modules implement them on the real
//! machines; `tsm-core`'s tests implement them over ordinary memory.

use tsm_abi::addr::Pa;

/// A physical address the platform cannot reach (not RAM, or outside what the TSM maps).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemFault(pub Pa);

/// Access to physical memory by physical address, as the TSM sees it.
///
/// Reads of host (NS) memory may race with the host writing it: callers copy in once and
/// validate the copy, never the original.
pub trait PhysMem {
    /// Copies `out.len()` bytes at `pa` into `out`.
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault>;
    /// Copies `data` to `pa`.
    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault>;
}

/// The console: relays a debug-console frame of the host or a guest (see `crate::log`).
pub trait Console {
    /// Writes one record of `stream` carrying `frame`.
    fn relay(&self, stream: u8, frame: &[u8]);
}

/// How a run ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitCode {
    /// Everything passed.
    Success,
    /// Something failed.
    Failure,
}

/// Powering off.
pub trait PowerOff {
    /// Ends the run (QEMU: semihosting SYS_EXIT / isa-debug-exit).
    fn power_off(&self, code: ExitCode) -> !;
}

/// A contiguous range of physical memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemRange {
    /// First byte.
    pub base: Pa,
    /// Size in bytes.
    pub size: u64,
}

impl MemRange {
    /// Whether `[pa, pa + len)` lies inside the range (false on overflow).
    pub fn contains(&self, pa: Pa, len: u64) -> bool {
        let (Some(end), Some(self_end)) = (pa.0.checked_add(len), self.base.0.checked_add(self.size)) else {
            return false;
        };
        pa.0 >= self.base.0 && end <= self_end
    }
}
