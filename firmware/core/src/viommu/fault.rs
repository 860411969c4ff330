//! Why a translation failed.

use tsm_abi::addr::{Gpa, Iova};

use super::{Access, VdevId};

/// The reason of a fault. The values are the `reason` byte of event records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum FaultReason {
    /// The request's PASID is above 20 bits or has no stage-1 root attached, or the root's
    /// input size is not one its format has (only in a corrupted VDEV object: G_S1_ATTACH
    /// refuses those).
    PasidNotConfigured = 1,
    /// The IOVA is outside the stage-1 input range (Arm: a bit at or above the root's input
    /// size is set, TTB1 is not supported; x86-64: not canonical).
    S1InputRange = 2,
    /// An invalid (not present) stage-1 descriptor.
    S1Translation = 3,
    /// A malformed stage-1 descriptor: reserved bits set or a reserved encoding (Arm: block at
    /// level 0, `0b01` at level 3; x86-64: PS in a PML4E, reserved bits of a large page).
    S1Reserved = 4,
    /// Arm: an output address above 48 bits in a descriptor.
    S1AddressSize = 5,
    /// Arm: Access flag clear in the leaf descriptor (hardware A/D updates are not supported).
    S1AccessFlag = 6,
    /// Stage-1 permissions deny the access.
    S1Permission = 7,
    /// A stage-1 table page is not mapped readable in the TVM's map (outside the TVM).
    S1TableNotMapped = 8,
    /// A stage-1 table page is TVM *shared* memory, which the host can write.
    S1TableShared = 9,
    /// The platform could not read a stage-1 table page (external abort).
    S1TableRead = 10,
    /// The final GPA is not mapped in the TVM's map.
    S2Translation = 11,
    /// The TVM's map denies the access.
    S2Permission = 12,
    /// A host device's IOVA is unmapped or not permitted in the host's domain.
    HostDomain = 13,
    /// T=0 request whose final physical address is secure memory.
    T0ToSecure = 14,
    /// T=1 request from a host device or from a vdevice that is not RUN and accepted.
    T1NotAllowed = 15,
    /// T=1 request whose final page is not the TVM's own (a private mapping of a non-secure
    /// page or a shared mapping of a secure one).
    T1NotTvmMemory = 16,
    /// Not a translation fault: the device broke the TDISP protocol and the vdevice went to
    /// ERROR (docs/abi.md §8.3). Queued so host and guest learn it from the same queues.
    DeviceError = 17,
}

impl FaultReason {
    /// Number of reasons (the host's per-reason counters).
    pub const COUNT: usize = 17;

    /// Every reason, in value order.
    pub const ALL: [FaultReason; Self::COUNT] = [
        FaultReason::PasidNotConfigured,
        FaultReason::S1InputRange,
        FaultReason::S1Translation,
        FaultReason::S1Reserved,
        FaultReason::S1AddressSize,
        FaultReason::S1AccessFlag,
        FaultReason::S1Permission,
        FaultReason::S1TableNotMapped,
        FaultReason::S1TableShared,
        FaultReason::S1TableRead,
        FaultReason::S2Translation,
        FaultReason::S2Permission,
        FaultReason::HostDomain,
        FaultReason::T0ToSecure,
        FaultReason::T1NotAllowed,
        FaultReason::T1NotTvmMemory,
        FaultReason::DeviceError,
    ];

    /// The reason with value `raw`.
    pub fn from_raw(raw: u8) -> Option<FaultReason> {
        Self::ALL.iter().copied().find(|r| *r as u8 == raw)
    }

    /// Index into per-reason counters (`value - 1`; values start at 1).
    pub(crate) fn index(self) -> Option<usize> {
        usize::from(self as u8).checked_sub(1)
    }
}

/// A failed translation, as recorded for the owning guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fault {
    /// The vdevice that issued the request (`None`: a host device; the core queues the fault
    /// for the host domain, with the request's requester).
    pub vdev: Option<VdevId>,
    /// Why.
    pub reason: FaultReason,
    /// Stage-1 level of the descriptor involved (0–3), if the fault is about one.
    pub level: Option<u8>,
    /// The GPA stage 2 was given last, where translation stopped: the stage-1 descriptor whose
    /// table read failed, or, for a fault after the final stage-2 lookup (stage-2 faults,
    /// stage-1 permission, the final check), the final GPA with the IOVA's page offset (the
    /// IOVA itself without a stage 1). `None` before any stage-2 lookup: PASID, input-range
    /// and stage-1 descriptor faults, host devices, device errors.
    pub gpa: Option<Gpa>,
    /// The request's IOVA.
    pub iova: Iova,
    /// The request's PASID.
    pub pasid: Option<u32>,
    /// The request's access.
    pub access: Access,
    /// The request's T bit.
    pub t_bit: bool,
}
