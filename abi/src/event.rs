//! DMA faults and device events: the records EVENT_READ (host, sanitized) and G_EVENT_READ
//! (guest, full) pop, and the arguments of TEST_DMA_INJECT and the stage-1 calls.
//!
//! Every fault the secure vIOMMU raises for a requester that has a vdevice is queued twice: a
//! [`HostEvent`] on the vdevice's host queue and a [`GuestEvent`] on its guest queue. The host
//! record names the vdevice and the reason but never an address, PASID or anything else the
//! guest programmed; the guest record carries everything. Faults of requesters with no vdevice
//! (host devices) go to the host-domain queue, read with EVENT_READ([`HOST_DOMAIN_EVENTS`]).
//! A full queue drops the new record and counts it (EVENT_READ's second result).

use bitflags::bitflags;

use crate::layout::{abi_enum, boundary_struct};

/// PASID argument meaning "the request carries no PASID" (TEST_DMA_INJECT, G_S1_ATTACH,
/// G_S1_DETACH, G_S1_INVALIDATE).
pub const NO_PASID: u64 = u64::MAX;
/// PASID argument of G_S1_INVALIDATE meaning "every PASID of the vdevice, and no PASID".
pub const ALL_PASIDS: u64 = u64::MAX - 1;
/// The largest PASID (PCIe PASIDs are 20 bits).
pub const MAX_PASID: u64 = (1 << 20) - 1;
/// EVENT_READ's vdevice argument naming the host-domain queue (faults of requesters that
/// belong to no vdevice). Never a handle: handles are granule-aligned.
pub const HOST_DOMAIN_EVENTS: u64 = u64::MAX;

abi_enum! {
    /// Why an event was raised (`reason` of both records; also the index of the `DmaFault`
    /// status of TEST_DMA_INJECT).
    pub enum EventReason ("EVENT") {
        /// A T=0 request whose final physical address is secure memory (invariant 1).
        T0ToSecure = 1 => "T0_TO_SECURE",
        /// A T=1 request from a requester whose vdevice is not RUN-and-accepted by this TVM, or
        /// that has no vdevice (invariant 2).
        T1NotAllowed = 2 => "T1_NOT_ALLOWED",
        /// A request with a PASID for which the guest attached no stage-1 root.
        PasidNotAttached = 3 => "PASID_NOT_ATTACHED",
        /// The IOVA is outside the stage-1 input range.
        AddressSize = 4 => "ADDRESS_SIZE",
        /// Stage 1 has no valid entry for the IOVA.
        Stage1Translation = 5 => "S1_TRANSLATION",
        /// The stage-1 entry forbids the access.
        Stage1Permission = 6 => "S1_PERMISSION",
        /// The GPA (stage-1 output, or a stage-1 table address with
        /// [`EventFlags::S1_WALK`]) is not mapped in the TVM's address map.
        Stage2Translation = 7 => "S2_TRANSLATION",
        /// The TVM's address map forbids the access.
        Stage2Permission = 8 => "S2_PERMISSION",
        /// The device broke the TDISP protocol or reported an error: the vdevice is now ERROR
        /// (T=1 off).
        DeviceError = 9 => "DEVICE_ERROR",
    }
}

bitflags! {
    /// Properties of the faulting request (`flags` of both records).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct EventFlags: u32 {
        /// The request was a write.
        const WRITE = 1 << 0;
        /// The request had the TDISP T bit set.
        const T_BIT = 1 << 1;
        /// The request carried a PASID (guest record: in `pasid`).
        const PASID_VALID = 1 << 2;
        /// The fault happened while reading a stage-1 table (guest record: `gpa` is the
        /// address of the descriptor being read).
        const S1_WALK = 1 << 3;
        /// Guest record: `gpa` holds where translation stopped. Clear when the fault came
        /// before stage 2 was given any address (`gpa` is then 0): PASID_NOT_ATTACHED,
        /// ADDRESS_SIZE, S1_TRANSLATION, DEVICE_ERROR.
        const GPA_VALID = 1 << 4;
    }
}

bitflags! {
    /// TEST_DMA_INJECT `flags` (argument 4).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct DmaInjectFlags: u64 {
        /// The request carries the TDISP T bit (T=1, TEE traffic).
        const T_BIT = 1 << 0;
        /// A write (otherwise a read).
        const WRITE = 1 << 1;
    }
}

boundary_struct! {
    /// One sanitized event for the host (32 bytes): no guest address, no PASID.
    pub struct HostEvent (size 32) {
        /// Handle of the vdevice (0 in the host-domain queue).
        pub vdev: u64 => 0,
        /// [`EventReason`].
        pub reason: u32 => 8,
        /// [`EventFlags`]: only `WRITE` and `T_BIT` ([`EventFlags::HOST_VISIBLE`]).
        pub flags: u32 => 12,
        /// Physical requester ID of the request.
        pub rid: u16 => 16,
        /// PCI segment of the request (with `rid`, the requester: RIDs repeat across segments).
        pub segment: u16 => 18,
        /// 0.
        pub reserved1: u32 => 20,
        /// Per-queue sequence number from 1; a gap shows dropped records.
        pub sequence: u64 => 24,
    }
}

boundary_struct! {
    /// One full event for the guest (64 bytes).
    pub struct GuestEvent (size 64) {
        /// The vdevice's vBDF.
        pub vbdf: u16 => 0,
        /// 0.
        pub reserved0: u16 => 2,
        /// [`EventReason`].
        pub reason: u32 => 4,
        /// [`EventFlags`].
        pub flags: u32 => 8,
        /// The request's PASID (with [`EventFlags::PASID_VALID`]).
        pub pasid: u32 => 12,
        /// The IOVA the device used.
        pub iova: u64 => 16,
        /// The vdevice's `virt_id` (vSID / vRID), as given at VDEV_CREATE.
        pub virt_id: u64 => 24,
        /// Per-queue sequence number from 1.
        pub sequence: u64 => 32,
        /// With [`EventFlags::GPA_VALID`], the GPA where translation stopped, the last one
        /// stage 2 was given: with [`EventFlags::S1_WALK`] the stage-1 descriptor whose read
        /// failed; otherwise the final GPA, offset included (the stage-1 output, or the IOVA
        /// when no stage 1 applies), for S2_TRANSLATION, S2_PERMISSION, S1_PERMISSION,
        /// T0_TO_SECURE and T1_NOT_ALLOWED. 0 without the flag.
        pub gpa: u64 => 40,
        /// 0.
        pub reserved1: [u64; 2] => 48,
    }
}

impl EventFlags {
    /// The flags a host record may carry.
    pub const HOST_VISIBLE: EventFlags = EventFlags::WRITE.union(EventFlags::T_BIT);
}

/// A PASID argument as the calls use it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PasidArg {
    /// [`NO_PASID`]: requests without a PASID.
    NoPasid,
    /// One PASID (at most [`MAX_PASID`]).
    Pasid(u32),
    /// [`ALL_PASIDS`]: only where a call allows it (G_S1_INVALIDATE).
    All,
}

impl PasidArg {
    /// Decodes the register form; `None` for a value that is none of the above.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            NO_PASID => Some(PasidArg::NoPasid),
            ALL_PASIDS => Some(PasidArg::All),
            p if p <= MAX_PASID => Some(PasidArg::Pasid(p as u32)),
            _ => None,
        }
    }
    /// The register form.
    pub const fn to_raw(self) -> u64 {
        match self {
            PasidArg::NoPasid => NO_PASID,
            PasidArg::All => ALL_PASIDS,
            PasidArg::Pasid(p) => p as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, FromZeros, IntoBytes};

    #[test]
    fn event_records_round_trip() {
        let h = HostEvent {
            vdev: 0x4020_0000,
            reason: EventReason::T0ToSecure.raw(),
            flags: EventFlags::WRITE.bits(),
            rid: 0x0101,
            segment: 3,
            sequence: 7,
            ..HostEvent::new_zeroed()
        };
        assert_eq!(HostEvent::read_from_bytes(h.as_bytes()), Ok(h));
        let g = GuestEvent {
            vbdf: 8,
            reason: EventReason::Stage1Translation.raw(),
            flags: (EventFlags::PASID_VALID | EventFlags::T_BIT).bits(),
            pasid: 5,
            iova: 0xdead_b000,
            virt_id: 0x11,
            sequence: 1,
            ..GuestEvent::new_zeroed()
        };
        assert_eq!(GuestEvent::read_from_bytes(g.as_bytes()), Ok(g));
    }

    #[test]
    fn pasid_arguments() {
        for (raw, arg) in [
            (NO_PASID, Some(PasidArg::NoPasid)),
            (ALL_PASIDS, Some(PasidArg::All)),
            (0, Some(PasidArg::Pasid(0))),
            (MAX_PASID, Some(PasidArg::Pasid((1 << 20) - 1))),
            (MAX_PASID + 1, None),
            (u64::MAX - 2, None),
        ] {
            assert_eq!(PasidArg::from_raw(raw), arg, "{raw:#x}");
            if let Some(a) = arg {
                assert_eq!(a.to_raw(), raw);
            }
        }
    }
}
