//! The guest's view of its TVM: the call gate, memory by GPA and the counter. The guest runs
//! with addresses equal to GPAs (MMU off behind stage 2 on aarch64; VA = GPA on x86_64), so a
//! GPA is a pointer.

use tsm_abi::addr::Gpa;
use tsm_abi::api::Transport;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_scenarios::{GuestEnv, GuestFault};

/// The guest environment the scripts run in.
pub struct Guest;

impl Transport for Guest {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        crate::arch::Gate.call(regs)
    }
}

impl GuestEnv for Guest {
    fn read(&mut self, gpa: Gpa, out: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: the address is a GPA of this TVM the script names; if the TVM does not
            // map it, the access traps to the TSM and the vCPU exits to the host (it does not
            // return here). Volatile: the memory may be shared with the host or written by the
            // TSM behind the compiler's back.
            *b = unsafe { core::ptr::read_volatile((gpa.0 as usize + i) as *const u8) };
        }
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), GuestFault> {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`; the scripts only write their scratch pages, which hold no
            // Rust object of this program.
            unsafe { core::ptr::write_volatile((gpa.0 as usize + i) as *mut u8, *b) };
        }
        Ok(())
    }

    fn counter(&mut self) -> u64 {
        crate::arch::counter()
    }

    fn break_entry_state(&mut self) -> Option<bool> {
        crate::arch::break_entry_state()
    }

    fn mmio_read32(&mut self, gpa: Gpa) -> Result<u32, GuestFault> {
        // SAFETY: one aligned 4-byte load from a GPA the script names as a device page of this
        // TVM; if it is not mapped (or not validated yet) the access traps to the TSM and the
        // vCPU exits to the host instead of returning here.
        Ok(unsafe { core::ptr::read_volatile((gpa.0 & !3) as usize as *const u32) })
    }

    fn mmio_write32(&mut self, gpa: Gpa, value: u32) -> Result<(), GuestFault> {
        // SAFETY: as in `mmio_read32`; a device register holds no Rust object of this program.
        unsafe { core::ptr::write_volatile((gpa.0 & !3) as usize as *mut u32, value) };
        Ok(())
    }

    fn mmio_read64(&mut self, gpa: Gpa) -> Result<u64, GuestFault> {
        // SAFETY: as in `mmio_read32`, one aligned 8-byte load (edu's DMA registers are 64
        // bits wide).
        Ok(unsafe { core::ptr::read_volatile((gpa.0 & !7) as usize as *const u64) })
    }

    fn mmio_write64(&mut self, gpa: Gpa, value: u64) -> Result<(), GuestFault> {
        // SAFETY: as in `mmio_write32`, one aligned 8-byte store.
        unsafe { core::ptr::write_volatile((gpa.0 & !7) as usize as *mut u64, value) };
        Ok(())
    }
}
