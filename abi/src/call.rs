//! Call IDs.
//!
//! A call ID is the full 32-bit SMCCC function identifier: fast call (bit 31), SMC64 (bit 30),
//! owner 6 = "Vendor Specific Hypervisor Service" (bits 29:24), function number in bits 15:0.
//! The TSM runs at EL2 in place of a hypervisor, so the vendor-hypervisor owner range is the one
//! SMCCC gives it; host calls use function numbers `0x01xx`, guest calls `0x02xx`. On x86_64 the
//! same 32-bit value goes in `rax` (see [`crate::regs`]).

/// Bits of the function ID that are fixed for every TSM call (fast, SMC64, owner 6).
pub const FID_BASE: u32 = 0xC600_0000;
/// Function numbers of host calls start here.
pub const HOST_BASE: u16 = 0x0100;
/// Function numbers of guest calls start here.
pub const GUEST_BASE: u16 = 0x0200;

/// Who may issue a call. The TSM tells the sides apart by the context that trapped, never by an
/// argument: a host cannot issue a guest call and a guest cannot issue a host call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    /// The untrusted host (hypervisor / OS driver).
    Host,
    /// A TVM vCPU.
    Guest,
}

macro_rules! calls {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $caller:ident, args $nargs:literal, results $nres:literal; )*) => {
        /// Every call the TSM implements. Variants carry the spec's names verbatim (the C header and
        /// docs/abi.md use the same ones), hence not camel case.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr(u32)]
        pub enum CallId {
            $( $(#[$doc])* $name = FID_BASE | $num, )*
        }

        impl CallId {
            /// Every call, in ID order.
            pub const ALL: &'static [CallId] = &[ $( CallId::$name, )* ];

            /// Number of argument registers the call reads (the rest must be zero).
            pub const fn arg_count(self) -> usize {
                match self { $( CallId::$name => $nargs, )* }
            }
            /// Number of result registers the call writes after the status.
            pub const fn result_count(self) -> usize {
                match self { $( CallId::$name => $nres, )* }
            }
            /// Which side may issue the call.
            pub const fn caller(self) -> Caller {
                match self { $( CallId::$name => Caller::$caller, )* }
            }
            /// The upper-case name used in logs and the spec.
            pub const fn name(self) -> &'static str {
                match self { $( CallId::$name => stringify!($name), )* }
            }
            /// The full 32-bit function ID.
            pub const fn fid(self) -> u32 {
                self as u32
            }
        }

        impl TryFrom<u64> for CallId {
            type Error = UnknownCall;
            fn try_from(raw: u64) -> Result<Self, UnknownCall> {
                $( if raw == (FID_BASE | $num) as u64 { return Ok(CallId::$name); } )*
                Err(UnknownCall(raw))
            }
        }
    };
}

/// A function ID that names no call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownCall(pub u64);

/// Maximum argument registers of any call.
pub const MAX_ARGS: usize = 6;
/// Maximum result registers (after the status) of any call.
pub const MAX_RESULTS: usize = 4;

calls! {
    // ---- host: discovery and platform ----
    /// Negotiate the ABI version. args: requested version. results: status, chosen, lowest, highest.
    VERSION = 0x0100, Host, args 1, results 3;
    /// Read one feature register. args: register index. results: value.
    FEATURES = 0x0101, Host, args 1, results 1;
    /// Debug console: write a framed log record from an NS buffer. args: buffer PA, length.
    CONSOLE_WRITE = 0x0102, Host, args 2, results 0;
    /// Power the platform off, reporting a result code (0 = success). args: code.
    SYSTEM_OFF = 0x0103, Host, args 1, results 0;

    // ---- host: memory ----
    /// Make an NS granule secure and free. args: PA.
    GRANULE_DELEGATE = 0x0110, Host, args 1, results 0;
    /// Scrub a free secure granule and give it back to the host. args: PA.
    GRANULE_UNDELEGATE = 0x0111, Host, args 1, results 0;
    /// Create a TVM in a delegated granule. args: TVM granule, params PA (NS), root table granule.
    TVM_CREATE = 0x0120, Host, args 3, results 0;
    /// NEW -> ACTIVE: no more private maps with content; vCPUs may run. args: TVM.
    TVM_ACTIVATE = 0x0121, Host, args 1, results 0;
    /// Destroy an empty TVM; returns its granules to DELEGATED. args: TVM.
    TVM_DESTROY = 0x0122, Host, args 1, results 0;
    /// Donate a delegated granule as a translation table at (GPA, level). args: TVM, GPA, level, granule.
    TABLE_CREATE = 0x0123, Host, args 4, results 0;
    /// Take back an empty translation table at (GPA, level). args: TVM, GPA, level. results: granule.
    TABLE_DESTROY = 0x0124, Host, args 3, results 1;
    /// Map a delegated granule as private memory at GPA, optionally filled from an NS page.
    /// args: TVM, GPA, granule, source PA (or NO_SOURCE), flags.
    MAP_PRIVATE = 0x0125, Host, args 5, results 0;
    /// Map an NS granule as shared memory at GPA. args: TVM, GPA, NS PA, flags.
    MAP_SHARED = 0x0126, Host, args 4, results 0;
    /// Unmap a GPA; a private page goes back to DELEGATED (scrubbed). args: TVM, GPA. results: PA.
    UNMAP = 0x0127, Host, args 2, results 1;

    // ---- host: vCPUs ----
    /// Create a vCPU in a delegated granule. args: TVM, vCPU granule, entry GPA, arg0.
    VCPU_CREATE = 0x0130, Host, args 4, results 0;
    /// Run a vCPU until it exits; the exit record is written to an NS buffer. args: vCPU, exit PA.
    /// results: exit reason.
    VCPU_RUN = 0x0131, Host, args 2, results 1;
    /// Destroy a vCPU. args: vCPU.
    VCPU_DESTROY = 0x0132, Host, args 1, results 0;

    // ---- host: devices ----
    /// Create a PDEV (device security manager behind PF0) in a delegated granule.
    /// args: PDEV granule, params PA (NS).
    PDEV_CREATE = 0x0140, Host, args 2, results 0;
    /// Start the connect operation (TDISP GET_VERSION / GET_CAPABILITIES). args: PDEV, comm buffer PA.
    /// results: pending operation, PDEV state.
    PDEV_CONNECT = 0x0141, Host, args 2, results 2;
    /// Stop a PDEV (refused while vdevices are bound). args: PDEV.
    PDEV_STOP = 0x0142, Host, args 1, results 0;
    /// Destroy a PDEV with no vdevices. args: PDEV.
    PDEV_DESTROY = 0x0143, Host, args 1, results 0;
    /// Create a secure vIOMMU of a TSM type for a TVM. args: TVM, VIOMMU granule, type, flags.
    VIOMMU_CREATE = 0x0150, Host, args 4, results 0;
    /// Destroy a vIOMMU with no vdevices. args: VIOMMU.
    VIOMMU_DESTROY = 0x0151, Host, args 1, results 0;
    /// Create the vPCI function: pBDF of the PDEV -> vBDF in the TVM, under the vIOMMU.
    /// args: VDEV granule, PDEV, VIOMMU, params PA (NS).
    VDEV_CREATE = 0x0160, Host, args 4, results 0;
    /// Start bind (TDISP LOCK_INTERFACE + report fetch). args: VDEV, comm buffer PA.
    /// results: pending operation, VDEV state.
    VDEV_BIND = 0x0161, Host, args 2, results 2;
    /// Start unbind (T=1 DMA off, TDISP STOP_INTERFACE). args: VDEV, comm buffer PA.
    /// results: pending operation, VDEV state.
    VDEV_UNBIND = 0x0162, Host, args 2, results 2;
    /// Read a vdevice's state. args: VDEV. results: state, pending operation.
    VDEV_GET_STATE = 0x0163, Host, args 1, results 2;
    /// Destroy an UNLOCKED or ERROR vdevice. args: VDEV.
    VDEV_DESTROY = 0x0164, Host, args 1, results 0;
    /// Continue the pending device operation of an object with the device's response in the comm
    /// buffer. args: object (PDEV or VDEV), comm buffer PA. results: pending operation, object state.
    COMMUNICATE = 0x0170, Host, args 2, results 2;
    /// Cancel the pending device operation; the object goes to ERROR (VDEV) or back (PDEV).
    /// args: object.
    OP_CANCEL = 0x0171, Host, args 1, results 0;
    /// Pop one sanitized event of a vdevice into an NS buffer. args: VDEV, buffer PA.
    /// results: events left, overflow count.
    EVENT_READ = 0x0180, Host, args 2, results 2;
    /// Test builds only: inject a DMA request as if the device issued it.
    /// args: requester ID, PASID (or NO_PASID), IOVA, flags (T bit, write), PCI segment.
    /// results: PA on success.
    TEST_DMA_INJECT = 0x01F0, Host, args 5, results 1;

    // ---- guest ----
    /// Negotiate the ABI version (guest side). args: requested. results: chosen, lowest, highest.
    G_VERSION = 0x0200, Guest, args 1, results 3;
    /// Debug console from the guest. args: buffer GPA, length.
    G_CONSOLE_WRITE = 0x0201, Guest, args 2, results 0;
    /// The guest is done; the vCPU exits to the host with this code. args: code.
    G_EXIT = 0x0202, Guest, args 1, results 0;
    /// The calling TVM's address space: results: GPA width in bits, first GPA of the shared
    /// half (GPAs below it are private). A guest learns its split here, never from the host.
    G_TVM_INFO = 0x0203, Guest, args 0, results 2;
    /// Read a vdevice's info (state, nonce, report digest) into a guest buffer. args: vBDF, buffer GPA.
    G_VDEV_INFO = 0x0210, Guest, args 2, results 0;
    /// Read a portion of the cached interface report. args: vBDF, offset, buffer GPA, length.
    /// results: bytes copied, bytes remaining.
    G_VDEV_REPORT = 0x0211, Guest, args 4, results 2;
    /// Accept the device: echo the nonce and report digest read from G_VDEV_INFO.
    /// args: vBDF, buffer GPA holding the echoed evidence.
    G_VDEV_ACCEPT = 0x0212, Guest, args 2, results 0;
    /// Stop the device (T=1 off, back to UNLOCKED via the host). args: vBDF.
    G_VDEV_STOP = 0x0213, Guest, args 1, results 0;
    /// Attach a stage-1 root for (vdevice, PASID). args: vBDF, PASID, root GPA, flags.
    G_S1_ATTACH = 0x0220, Guest, args 4, results 0;
    /// Detach the stage-1 root for (vdevice, PASID). args: vBDF, PASID.
    G_S1_DETACH = 0x0221, Guest, args 2, results 0;
    /// Invalidate cached translations. args: vBDF, PASID (or ALL_PASIDS), IOVA, size (0 = all).
    G_S1_INVALIDATE = 0x0222, Guest, args 4, results 0;
    /// Pop one full event record of an own vdevice into a guest buffer. args: vBDF, buffer GPA.
    /// results: events left, overflow count.
    G_EVENT_READ = 0x0230, Guest, args 2, results 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_round_trips_through_try_from() {
        for &c in CallId::ALL {
            assert_eq!(CallId::try_from(c.fid() as u64), Ok(c));
            assert!(c.arg_count() <= MAX_ARGS, "{}", c.name());
            assert!(c.result_count() <= MAX_RESULTS, "{}", c.name());
            let num = (c.fid() & 0xFFFF) as u16;
            match c.caller() {
                Caller::Host => assert!((HOST_BASE..GUEST_BASE).contains(&num)),
                Caller::Guest => assert!(num >= GUEST_BASE),
            }
        }
    }

    #[test]
    fn ids_are_unique_and_smccc_shaped() {
        for (i, a) in CallId::ALL.iter().enumerate() {
            assert_eq!(a.fid() & 0xFF00_0000, FID_BASE, "fast, SMC64, owner 6");
            for b in &CallId::ALL[i + 1..] {
                assert_ne!(a.fid(), b.fid());
            }
        }
    }

    #[test]
    fn unknown_ids_are_refused() {
        for raw in [
            0u64,
            0x8400_0000,
            FID_BASE as u64,
            (FID_BASE | 0x01FF) as u64,
            u64::MAX,
            (CallId::VERSION.fid() as u64) | (1 << 32),
        ] {
            assert_eq!(CallId::try_from(raw), Err(UnknownCall(raw)));
        }
    }
}
