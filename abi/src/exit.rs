//! The VCPU_RUN exit record: why a vCPU stopped running and what the host must do about it.
//!
//! VCPU_RUN writes one [`VcpuExit`] to the host buffer it names (8-byte aligned, inside one
//! granule) and returns the reason in result register 1 as well. Fields a reason does not use
//! are 0. The record never holds guest register contents or private data: only what the host
//! needs to make progress.

use bitflags::bitflags;

use crate::layout::{abi_enum, boundary_struct};

abi_enum! {
    /// Why VCPU_RUN returned (`VcpuExit::reason`, result register 1).
    pub enum ExitReason ("EXIT") {
        /// The guest called G_EXIT(`code`); the vCPU will not run again (VCPU_RUN fails with
        /// `ObjectState`).
        GuestExit = 1 => "GUEST_EXIT",
        /// The guest issued a call that needs device I/O on vdevice `vdev` (`vdev_op`: START for
        /// G_VDEV_ACCEPT, STOP for G_VDEV_STOP). The host drives the operation with COMMUNICATE
        /// on `vdev` until it completes, then runs the vCPU again; the guest's call then returns
        /// the operation's result. Running the vCPU earlier exits again with the same record.
        DeviceRequest = 2 => "DEVICE_REQUEST",
        /// The guest took a fault the TSM does not resolve: an access to a GPA with no mapping
        /// (`gpa`, with [`ExitFlags::GPA_VALID`]) or any other exception (`syndrome`). The host
        /// may map the page and run the vCPU again (it retries the access).
        Fault = 3 => "FAULT",
        /// The guest issued a host call (`fid`); it got `Denied` in its status register and
        /// continues after the call when run again.
        DeniedCall = 4 => "DENIED_CALL",
        /// A physical interrupt for the host arrived while the vCPU ran: the TSM stopped it so
        /// the host can take the interrupt (it is delivered once the host runs with interrupts
        /// enabled). No other field is set; the vCPU's state is saved and it continues where it
        /// was when run again.
        Interrupt = 5 => "INTERRUPT",
    }
}

bitflags! {
    /// `VcpuExit::flags`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct ExitFlags: u32 {
        /// `gpa` holds the faulting guest-physical address (granule-aligned: the offset within
        /// the page is withheld).
        const GPA_VALID = 1 << 0;
        /// The faulting access was a write.
        const WRITE = 1 << 1;
    }
}

boundary_struct! {
    /// The exit record VCPU_RUN writes (64 bytes).
    pub struct VcpuExit (size 64) {
        /// [`ExitReason`].
        pub reason: u32 => 0,
        /// [`ExitFlags`].
        pub flags: u32 => 4,
        /// GUEST_EXIT: the guest's code (0 = success).
        pub code: u64 => 8,
        /// DEVICE_REQUEST: handle of the vdevice.
        pub vdev: u64 => 16,
        /// DEVICE_REQUEST: the [`DeviceOp`](crate::state::DeviceOp) the guest started.
        pub vdev_op: u32 => 24,
        /// 0.
        pub reserved0: u32 => 28,
        /// FAULT: architecture syndrome (aarch64: `ESR_EL2`; x86_64: vector in bits 7:0,
        /// error code in bits 63:32).
        pub syndrome: u64 => 32,
        /// FAULT with [`ExitFlags::GPA_VALID`]: the faulting GPA, granule-aligned.
        pub gpa: u64 => 40,
        /// DENIED_CALL: the function ID the guest used.
        pub fid: u64 => 48,
        /// 0.
        pub reserved1: u64 => 56,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DeviceOp;
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    #[test]
    fn exit_record_round_trips() {
        let e = VcpuExit {
            reason: ExitReason::DeviceRequest.raw(),
            vdev: 0x4010_0000,
            vdev_op: DeviceOp::Start.raw(),
            ..VcpuExit::new_zeroed()
        };
        let back = VcpuExit::read_from_bytes(e.as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            ExitReason::from_raw(back.reason.into()),
            Some(ExitReason::DeviceRequest)
        );
        assert_eq!(ExitReason::from_raw(0), None);
    }
}
