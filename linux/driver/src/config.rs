//! Configuration space as the scenarios' PCI code sees it: an ECAM window with edu at its
//! requester ID and nothing else on segment 0, read and written through the module's
//! configuration-space ioctl. BAR0 is virtualized as vfio-pci does it: its address is Linux's
//! assignment, which the module never lets user space change, so the sizing write (all ones)
//! and the write of the address back are answered here and never reach the device.

use tsm_abi::addr::Pa;

use crate::device::{Device, Errno};
use crate::uapi;

/// Configuration-space register offsets.
const BAR0: u64 = 0x10;
const BAR5_END: u64 = 0x28;
const ROM: u64 = 0x30;
/// The address bits of a memory BAR.
const BAR_ADDR: u32 = !0xF;

/// One function's configuration space at its place in an ECAM window.
#[derive(Debug)]
pub struct ConfigSpace {
    /// The window's first byte: bus 0, device 0, function 0.
    ecam: Pa,
    /// edu's function, by requester ID on segment 0 bus 0; `None` when the module has no edu
    /// there (the window then holds no function at all).
    rid: Option<u16>,
    bar0: u64,
    bar0_size: u64,
    /// Between the sizing write and the write of the address back.
    sizing: bool,
}

/// Where an ECAM address falls.
enum Slot {
    /// Outside the window.
    Outside,
    /// A function that is not there.
    Absent,
    /// edu's register at this offset.
    Edu(u64),
}

impl ConfigSpace {
    /// The window at `ecam` holding the function `info` describes.
    pub fn new(ecam: Pa, info: Option<&uapi::DevInfo>) -> Self {
        // The scenarios look for edu on bus 0 of segment 0, as the bare-metal host does.
        let rid = info.and_then(|i| (i.segment == 0 && i.rid >> 8 == 0).then_some(i.rid));
        ConfigSpace {
            ecam,
            rid,
            bar0: info.map_or(0, |i| i.bar0),
            bar0_size: info.map_or(0, |i| i.bar0_size),
            sizing: false,
        }
    }

    fn slot(&self, pa: Pa) -> Slot {
        let Some(off) = pa.0.checked_sub(self.ecam.0) else {
            return Slot::Outside;
        };
        // Bus 0's 256 functions of 4 KiB.
        if off >= 1 << 20 {
            return Slot::Outside;
        }
        match self.rid {
            Some(rid) if off >> 12 == u64::from(rid) => Slot::Edu(off & 0xFFF),
            _ => Slot::Absent,
        }
    }

    /// Whether `pa` is in the window.
    pub fn contains(&self, pa: Pa) -> bool {
        !matches!(self.slot(pa), Slot::Outside)
    }

    /// One aligned 32-bit load at `pa` in the window: all ones where no function is.
    pub fn read32<D: Device>(&mut self, dev: &mut D, pa: Pa) -> Option<u32> {
        if !pa.0.is_multiple_of(4) {
            return None;
        }
        match self.slot(pa) {
            Slot::Outside => None,
            Slot::Absent => Some(u32::MAX),
            Slot::Edu(BAR0) if self.sizing => {
                let flags = cfg(dev, BAR0, None).ok()? & !BAR_ADDR;
                let mask = (!self.bar0_size.wrapping_sub(1)) as u32 & BAR_ADDR;
                Some(mask | flags)
            }
            Slot::Edu(reg) => cfg(dev, reg, None).ok(),
        }
    }

    /// One aligned 32-bit store at `pa` in the window; false when it is refused (outside,
    /// no function, a BAR other than BAR0's sizing protocol, the module said no).
    pub fn write32<D: Device>(&mut self, dev: &mut D, pa: Pa, value: u32) -> bool {
        if !pa.0.is_multiple_of(4) {
            return false;
        }
        match self.slot(pa) {
            Slot::Outside | Slot::Absent => false,
            Slot::Edu(BAR0) => {
                if value == u32::MAX {
                    self.sizing = true;
                    true
                } else if u64::from(value & BAR_ADDR) == self.bar0 {
                    self.sizing = false;
                    true
                } else {
                    // Moving BAR0 is Linux's: its address stays what Linux assigned.
                    false
                }
            }
            Slot::Edu(reg) if (BAR0..BAR5_END).contains(&reg) || reg == ROM => false,
            Slot::Edu(reg) => cfg(dev, reg, Some(value)).is_ok(),
        }
    }
}

/// One 32-bit access through the module.
fn cfg<D: Device>(dev: &mut D, reg: u64, write: Option<u32>) -> Result<u32, Errno> {
    let mut c = uapi::Cfg {
        offset: reg as u32,
        size: 4,
        write: u32::from(write.is_some()),
        value: write.unwrap_or(0),
    };
    dev.ioctl(uapi::IOC_CFG, &mut c)?;
    Ok(c.value)
}
