//! What a scenario needs from the place it runs. The host side is the host payload on QEMU or
//! the simulated host on the build machine; the guest side is the guest payload in a TVM or the
//! simulated vCPU. Both reach the TSM through a [`Transport`].

use tsm_abi::addr::{Gpa, Pa};
use tsm_abi::api::Transport;

/// What an access the host expects to be blocked did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Probe {
    /// The access trapped and no data moved (what isolation requires).
    Blocked,
    /// The access reached the memory: an isolation failure.
    Reached,
    /// The environment could not make the access at all (Linux user space cannot map the
    /// TSM's memory or the IOMMU's registers): nothing was shown, so a scenario that needs
    /// the probe fails rather than passes unchecked.
    Unavailable,
}

/// Where the host's devices are, as a real host learns it from its device tree (aarch64) or
/// ACPI tables (x86_64): PCI segment 0's configuration space and the platform IOMMU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostDevices {
    /// Configuration space of segment 0 (ECAM): bus `b`, device `d`, function `f` at
    /// `ecam + (b << 20 | d << 15 | f << 12)`.
    pub ecam: Pa,
    /// Where the host places a memory BAR the firmware left unassigned (base, size); `None`
    /// where the firmware assigns them all (SeaBIOS on x86_64 `q35`).
    pub bar_window: Option<(Pa, u64)>,
    /// The platform IOMMU's registers: the TSM's, never the host's to touch.
    pub iommu: Pa,
}

/// The host side: the call gate plus the host's own (NS) memory, by physical address.
pub trait HostEnv: Transport {
    /// Copies host memory at `pa` into `out`. Used only on memory the host owns (NS); `false`
    /// when the access was blocked (a bug the scenario reports).
    fn read(&mut self, pa: Pa, out: &mut [u8]) -> bool;
    /// Copies `data` to host memory at `pa` (as [`HostEnv::read`]).
    fn write(&mut self, pa: Pa, data: &[u8]) -> bool;
    /// Reads (or, with `write`, overwrites with a marker) the first 8 bytes at `pa`, an address
    /// the host must not reach, and says whether the TSM blocked it (docs/design.md "Traps from
    /// the host").
    fn probe(&mut self, pa: Pa, write: bool) -> Probe;
    /// The NS memory the scenarios may donate and use for buffers: (base, granules). Nothing
    /// else of the host lives there.
    fn pool(&self) -> (Pa, u64);
    /// A granule of the TSM's own memory (image or carve-out).
    fn tsm_memory(&self) -> Pa;
    /// The guest payload as a flat binary to load at [`crate::layout::IMAGE_GPA`], if this
    /// environment has one. The simulated vCPU runs the guest script in-process and needs
    /// none; its environment returns a stand-in image so loading is still exercised.
    fn guest_image(&self) -> Option<&[u8]>;
    /// The host's devices; `None` where there are none (the build machine has no PCI bus).
    fn devices(&self) -> Option<HostDevices> {
        None
    }
    /// One 32-bit load from device memory (configuration space, a BAR) at `pa`, 4-byte
    /// aligned; `None` where the environment has no devices.
    fn mmio_read32(&mut self, _pa: Pa) -> Option<u32> {
        None
    }
    /// One 32-bit store to device memory at `pa`, 4-byte aligned; `false` where the
    /// environment has no devices.
    fn mmio_write32(&mut self, _pa: Pa, _value: u32) -> bool {
        false
    }
    /// One 64-bit load from device memory at `pa`, 8-byte aligned (as `mmio_read32`).
    fn mmio_read64(&mut self, _pa: Pa) -> Option<u64> {
        None
    }
    /// One 64-bit store to device memory at `pa`, 8-byte aligned (as `mmio_write32`).
    fn mmio_write64(&mut self, _pa: Pa, _value: u64) -> bool {
        false
    }
    /// Microseconds on the clock device timers run on, to bound waits for a device; `None`
    /// where there is no such clock (and no device to wait for).
    fn now_us(&mut self) -> Option<u64> {
        None
    }
    /// Whether TVM vCPUs are AMD SVM guests, whose guest payload can clear its own EFER.SVME
    /// ([`GuestEnv::break_entry_state`]): on x86_64, but for the simulated vCPU.
    fn svm_guests(&self) -> bool {
        cfg!(target_arch = "x86_64")
    }
}

/// A guest access to a GPA its TVM does not map (or maps without the needed permission). On
/// QEMU the vCPU exits to the host instead; on the build machine the simulated vCPU turns this
/// into the same `FAULT` exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestFault {
    /// The GPA accessed.
    pub gpa: Gpa,
    /// Whether it was a write.
    pub write: bool,
}

/// The guest side: the call gate plus the TVM's memory, by GPA (the guest runs with GPA = its
/// addresses: MMU off behind stage 2 on aarch64, VA = GPA on x86_64).
pub trait GuestEnv: Transport {
    /// Copies `out.len()` bytes at `gpa` into `out`.
    fn read(&mut self, gpa: Gpa, out: &mut [u8]) -> Result<(), GuestFault>;
    /// Copies `data` to `gpa`.
    fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), GuestFault>;
    /// The guest-visible counter, read after everything before it (an ISB or LFENCE first):
    /// CNTVCT_EL0 or the TSC in a TVM, the same counter the host reads; a deterministic fake
    /// clock for the simulated vCPU. [`crate::layout::Script::Bench`] times calls with it.
    fn counter(&mut self) -> u64;
    /// Puts the vCPU in a state the CPU refuses to enter, as a hostile guest can: on x86_64
    /// it writes EFER with reserved bit 63 set (#GP on hardware, dropped by QEMU's TCG), then
    /// clears EFER.SVME, which its next `vmmcall` and VMRUN need (docs/design.md "x86_64: the
    /// host and TVMs as SVM guests"). `Some(dropped)`: done, and whether the reserved bit read
    /// back clear; `None` where no such state exists (aarch64, the simulated vCPU).
    fn break_entry_state(&mut self) -> Option<bool> {
        None
    }
    /// One 32-bit load from the device page mapped at `gpa` (4-byte aligned): a fault if the
    /// mapping is not there or not validated. The simulated vCPU has no devices.
    fn mmio_read32(&mut self, gpa: Gpa) -> Result<u32, GuestFault> {
        Err(GuestFault { gpa, write: false })
    }
    /// One 32-bit store to the device page mapped at `gpa` (as `mmio_read32`).
    fn mmio_write32(&mut self, gpa: Gpa, _value: u32) -> Result<(), GuestFault> {
        Err(GuestFault { gpa, write: true })
    }
    /// One 64-bit load from the device page mapped at `gpa` (8-byte aligned; as
    /// `mmio_read32`).
    fn mmio_read64(&mut self, gpa: Gpa) -> Result<u64, GuestFault> {
        Err(GuestFault { gpa, write: false })
    }
    /// One 64-bit store to the device page mapped at `gpa` (as `mmio_read64`).
    fn mmio_write64(&mut self, gpa: Gpa, _value: u64) -> Result<(), GuestFault> {
        Err(GuestFault { gpa, write: true })
    }
}
