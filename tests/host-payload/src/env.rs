//! The host payload as a scenario environment (`tsm_scenarios::HostEnv`): the architectural
//! call gate, the host's identity-mapped memory, the pool the scenarios donate from, the
//! embedded guest image, and the devices (PCI configuration space and BARs, by the arch's
//! `DEVICES`).

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::api::Transport;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_scenarios::{HostDevices, HostEnv, Probe};

/// Where the scenarios' pool starts above the DRAM base: clear of the TSM image and carve-out,
/// the host boot-parameters page and the host payload (docs/design.md "Memory layout").
const POOL_OFFSET: u64 = 0x200_0000;
/// Granules in the pool (4 MiB).
const POOL_GRANULES: u64 = tsm_scenarios::pool::MAX_GRANULES;

/// The first granule of the TSM image (docs/design.md "Memory layout").
#[cfg(target_arch = "aarch64")]
const TSM_IMAGE: u64 = 0x4020_0000;
#[cfg(target_arch = "x86_64")]
const TSM_IMAGE: u64 = 0x0020_0000;

/// The guest payload as a flat binary, when xtask built this payload with `TSM_GUEST_BIN`
/// (build.rs sets `guest_image` then).
#[cfg(guest_image)]
static GUEST_IMAGE: Option<&[u8]> = Some(include_bytes!(env!("TSM_GUEST_BIN")));
#[cfg(not(guest_image))]
static GUEST_IMAGE: Option<&[u8]> = None;

/// The host as the scenarios see it.
pub struct Host {
    dram_base: u64,
    dram_size: u64,
}

impl Host {
    /// The host on the DRAM the TSM reported at entry.
    pub fn new(dram_base: u64, dram_size: u64) -> Self {
        Host {
            dram_base,
            dram_size,
        }
    }

    /// Whether `[pa, pa + len)` is DRAM (the host maps all of its NS DRAM identity).
    fn in_dram(&self, pa: Pa, len: usize) -> bool {
        let end = self.dram_base.saturating_add(self.dram_size);
        pa.0 >= self.dram_base && pa.0.checked_add(len as u64).is_some_and(|e| e <= end)
    }

    /// Whether `pa` may take a device access of `size` bytes: aligned, and not DRAM (memory
    /// goes through `read`/`write`, secure memory through `probe`). Aligned to its size, the
    /// access lies wholly in DRAM or wholly outside (DRAM is granule-aligned).
    fn device_access(&self, pa: Pa, size: usize) -> bool {
        pa.0.is_multiple_of(size as u64) && !self.in_dram(pa, 1)
    }
}

impl Transport for Host {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        crate::arch::call(regs)
    }
}

impl HostEnv for Host {
    fn read(&mut self, pa: Pa, out: &mut [u8]) -> bool {
        if !self.in_dram(pa, out.len()) {
            return false;
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `pa..pa + len` is DRAM, which the host maps identity; the scenarios read
            // only NS memory here (secure memory is touched only through `probe`). Volatile:
            // the TSM and guests write it behind the compiler's back.
            *b = unsafe { core::ptr::read_volatile((pa.0 as usize + i) as *const u8) };
        }
        true
    }

    fn write(&mut self, pa: Pa, data: &[u8]) -> bool {
        if !self.in_dram(pa, data.len()) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`; the pool holds no Rust object of this program.
            unsafe { core::ptr::write_volatile((pa.0 as usize + i) as *mut u8, *b) };
        }
        true
    }

    /// One real load or store at `pa`. The TSM blocks it and logs it; the host resumes after it
    /// knowing it was blocked (`arch::probe`; docs/design.md "Traps from the host").
    fn probe(&mut self, pa: Pa, write: bool) -> Probe {
        probe(pa, write)
    }

    fn pool(&self) -> (Pa, u64) {
        let base = (self.dram_base + POOL_OFFSET) & !(GRANULE_SIZE - 1);
        let room = self
            .dram_base
            .saturating_add(self.dram_size)
            .saturating_sub(base)
            / GRANULE_SIZE;
        (Pa(base), POOL_GRANULES.min(room))
    }

    fn tsm_memory(&self) -> Pa {
        Pa(TSM_IMAGE)
    }

    fn guest_image(&self) -> Option<&[u8]> {
        GUEST_IMAGE
    }

    fn devices(&self) -> Option<HostDevices> {
        Some(crate::arch::DEVICES)
    }

    fn mmio_read32(&mut self, pa: Pa) -> Option<u32> {
        if !self.device_access(pa, 4) {
            return None;
        }
        // SAFETY: an aligned 4-byte load from device memory outside DRAM (checked above), one
        // instruction; a register read has no effect on this program's memory.
        Some(unsafe { core::ptr::read_volatile(pa.0 as usize as *const u32) })
    }

    fn mmio_write32(&mut self, pa: Pa, value: u32) -> bool {
        if !self.device_access(pa, 4) {
            return false;
        }
        // SAFETY: an aligned 4-byte store to device memory outside DRAM (checked above); no
        // Rust object of this program lives there.
        unsafe { core::ptr::write_volatile(pa.0 as usize as *mut u32, value) };
        true
    }

    fn mmio_read64(&mut self, pa: Pa) -> Option<u64> {
        if !self.device_access(pa, 8) {
            return None;
        }
        // SAFETY: as in `mmio_read32`, 8 bytes.
        Some(unsafe { core::ptr::read_volatile(pa.0 as usize as *const u64) })
    }

    fn mmio_write64(&mut self, pa: Pa, value: u64) -> bool {
        if !self.device_access(pa, 8) {
            return false;
        }
        // SAFETY: as in `mmio_write32`, 8 bytes.
        unsafe { core::ptr::write_volatile(pa.0 as usize as *mut u64, value) };
        true
    }

    fn now_us(&mut self) -> Option<u64> {
        Some(crate::arch::now_us())
    }
}

/// What the host stores when it probes with a write.
const MARKER: u64 = 0xBAD0_BAD0_BAD0_BAD0;

/// One access through the arch's probe: the TSM blocks it (aarch64: skips it and sets x17;
/// x86_64: injects #GP(0), which the payload's IDT resumes from), or it went through.
fn probe(pa: Pa, write: bool) -> Probe {
    match crate::arch::probe(pa.0, write, MARKER) {
        // Blocked, and the load's destination kept its 0: nothing moved.
        (true, 0) => Probe::Blocked,
        _ => Probe::Reached,
    }
}
