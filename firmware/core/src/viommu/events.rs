//! The per-vdevice fault event queues: bounded rings embedded in the VDEV object, one for the
//! guest and one for the host, and the host domain's queue.
//!
//! When a ring is full a new record is dropped and counted in `overflow` (the oldest records
//! are kept: they explain the first failure). Every fault is also counted, in total and per
//! reason, so nothing is ever lost silently. The owning guest pops full records
//! ([`EventQueue`], [`GuestFault`]). The host sees counts ([`HostFaultSummary`]) and sanitized
//! records: no guest address, no PASID. Its queues ([`HostEventQueue`]) keep only what such a
//! record says ([`HostFault`]: 2 bytes instead of 24), which keeps the VDEV object, copied
//! whole by every call that locks it, 704 bytes smaller.

use tsm_abi::addr::{Gpa, Iova};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Access, Fault, FaultReason, Requester};

/// Records a queue holds (guest queue: 24 bytes each, 768 bytes, 856 with the counters; host
/// queue: 2 bytes each, 152 bytes with the counters).
pub const EVENT_QUEUE_CAPACITY: usize = 32;

const NO_LEVEL: u8 = 0xFF;
const FLAG_PASID: u8 = 1 << 0;
const FLAG_T: u8 = 1 << 1;
const FLAG_GPA: u8 = 1 << 2;
/// [`HostRecord::flags`]: a write.
const HOST_FLAG_WRITE: u8 = 1 << 0;
/// [`HostRecord::flags`]: the request's T bit.
const HOST_FLAG_T: u8 = 1 << 1;

/// One fault as the guest's ring stores it.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventRecord {
    /// The request's IOVA.
    pub iova: u64,
    /// Where translation stopped (valid if `flags` bit 2).
    pub gpa: u64,
    /// The request's PASID (valid if `flags` bit 0).
    pub pasid: u32,
    /// [`FaultReason`] value.
    pub reason: u8,
    /// Stage-1 level, 0xFF if none.
    pub level: u8,
    /// [`Access`] value.
    pub access: u8,
    /// Bit 0: PASID present; bit 1: T bit; bit 2: GPA present.
    pub flags: u8,
}

/// One fault as the host's rings store it: what its sanitized record says.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostRecord {
    /// [`FaultReason`] value.
    pub reason: u8,
    /// Bit 0: a write; bit 1: the T bit.
    pub flags: u8,
}

/// A record a ring holds: written from a fault, decoded when popped.
trait Record: Copy {
    /// What a popped record says.
    type Decoded;
    /// The record of `fault`.
    fn encode(fault: &Fault) -> Self;
    /// `None` for a record the TSM never writes (only in a corrupted VDEV object).
    fn decode(self) -> Option<Self::Decoded>;
}

/// The counters and ring position every queue keeps in front of its records.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Ring {
    /// Index of the oldest record.
    head: u32,
    /// Records pending.
    len: u32,
    /// Faults dropped because the ring was full (saturating).
    overflow: u32,
    /// Faults ever recorded, dropped ones included (saturating).
    total: u32,
    /// Faults per reason (`reason - 1`), saturating.
    per_reason: [u32; FaultReason::COUNT],
    /// Keeps the records that follow 8-byte aligned without implicit padding (zero).
    reserved: u32,
}

impl Ring {
    const fn new() -> Self {
        Ring {
            head: 0,
            len: 0,
            overflow: 0,
            total: 0,
            per_reason: [0; FaultReason::COUNT],
            reserved: 0,
        }
    }

    /// Records `fault` in `records`, returning the slot the record went to (`None`: dropped).
    fn push<R: Record>(
        &mut self,
        records: &mut [R; EVENT_QUEUE_CAPACITY],
        fault: &Fault,
    ) -> Option<usize> {
        self.total = self.total.saturating_add(1);
        if let Some(c) = fault
            .reason
            .index()
            .and_then(|i| self.per_reason.get_mut(i))
        {
            *c = c.saturating_add(1);
        }
        let len = self.len as usize;
        if len >= EVENT_QUEUE_CAPACITY {
            self.overflow = self.overflow.saturating_add(1);
            return None;
        }
        // head % CAPACITY and len are both below CAPACITY (checked above): the sum is exact.
        let tail =
            (self.head as usize % EVENT_QUEUE_CAPACITY).saturating_add(len) % EVENT_QUEUE_CAPACITY;
        *records.get_mut(tail)? = R::encode(fault);
        // len < CAPACITY (checked above).
        self.len = self.len.saturating_add(1);
        Some(tail)
    }

    /// Takes the oldest record of `records`, with its slot. A record that does not decode
    /// (only possible if the VDEV object was corrupted) is dropped and counted as overflow.
    fn pop<R: Record>(
        &mut self,
        records: &[R; EVENT_QUEUE_CAPACITY],
    ) -> Option<(usize, R::Decoded)> {
        while self.len != 0 {
            let head = self.head as usize % EVENT_QUEUE_CAPACITY;
            let rec = records.get(head).copied();
            // head < CAPACITY and len != 0 (loop condition): both are exact.
            self.head = (head.saturating_add(1) % EVENT_QUEUE_CAPACITY) as u32;
            self.len = self.len.min(EVENT_QUEUE_CAPACITY as u32).saturating_sub(1);
            match rec.and_then(R::decode) {
                Some(f) => return Some((head, f)),
                None => self.overflow = self.overflow.saturating_add(1),
            }
        }
        None
    }

    fn pending(&self) -> u32 {
        self.len.min(EVENT_QUEUE_CAPACITY as u32)
    }

    fn host_summary(&self) -> HostFaultSummary {
        HostFaultSummary {
            pending: self.pending(),
            overflow: self.overflow,
            total: self.total,
            per_reason: self.per_reason,
        }
    }
}

/// The guest's event queue of one vdevice: full records.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventQueue {
    ring: Ring,
    records: [EventRecord; EVENT_QUEUE_CAPACITY],
}

/// The host's event queue of one vdevice (or of the host domain): what sanitized records say.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostEventQueue {
    ring: Ring,
    records: [HostRecord; EVENT_QUEUE_CAPACITY],
}

/// The full fault record, for the owning guest only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestFault {
    /// The request's IOVA.
    pub iova: Iova,
    /// The request's PASID.
    pub pasid: Option<u32>,
    /// The request's access.
    pub access: Access,
    /// The request's T bit.
    pub t_bit: bool,
    /// Why it faulted.
    pub reason: FaultReason,
    /// Stage-1 level of the descriptor involved.
    pub level: Option<u8>,
    /// Where translation stopped ([`Fault::gpa`]).
    pub gpa: Option<Gpa>,
}

/// A fault as the host may know it: why, and the request's access and T bit; no address, no
/// PASID.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostFault {
    /// Why it faulted.
    pub reason: FaultReason,
    /// The request's access.
    pub access: Access,
    /// The request's T bit.
    pub t_bit: bool,
}

/// What the host may know about a vdevice's faults: counts only, no guest address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostFaultSummary {
    /// Records waiting for the guest.
    pub pending: u32,
    /// Faults dropped because the ring was full.
    pub overflow: u32,
    /// Faults ever recorded.
    pub total: u32,
    /// Faults per reason (index `reason - 1`).
    pub per_reason: [u32; FaultReason::COUNT],
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl EventQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        const EMPTY: EventRecord = EventRecord {
            iova: 0,
            gpa: 0,
            pasid: 0,
            reason: 0,
            level: 0,
            access: 0,
            flags: 0,
        };
        EventQueue {
            ring: Ring::new(),
            records: [EMPTY; EVENT_QUEUE_CAPACITY],
        }
    }

    /// Records `fault` (the core calls this for a fault whose `vdev` is this queue's vdevice).
    pub fn push(&mut self, fault: &Fault) {
        self.ring.push(&mut self.records, fault);
    }

    /// Takes the oldest record (the guest's G_VDEV_FAULT call). A record that does not decode
    /// (only possible if the VDEV object was corrupted) is dropped and counted as overflow.
    pub fn pop(&mut self) -> Option<GuestFault> {
        self.ring.pop(&self.records).map(|(_, f)| f)
    }

    /// Records waiting for the guest.
    pub fn pending(&self) -> u32 {
        self.ring.pending()
    }

    /// Faults dropped because the ring was full.
    pub fn overflow(&self) -> u32 {
        self.ring.overflow
    }

    /// The host's sanitized view.
    pub fn host_summary(&self) -> HostFaultSummary {
        self.ring.host_summary()
    }
}

impl Default for HostEventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl HostEventQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        HostEventQueue {
            ring: Ring::new(),
            records: [HostRecord {
                reason: 0,
                flags: 0,
            }; EVENT_QUEUE_CAPACITY],
        }
    }

    /// Records `fault`.
    pub fn push(&mut self, fault: &Fault) {
        self.ring.push(&mut self.records, fault);
    }

    /// Takes the oldest record (EVENT_READ). A record that does not decode (only possible if
    /// the VDEV object was corrupted) is dropped and counted as overflow.
    pub fn pop(&mut self) -> Option<HostFault> {
        self.ring.pop(&self.records).map(|(_, f)| f)
    }

    /// Records waiting for the host.
    pub fn pending(&self) -> u32 {
        self.ring.pending()
    }

    /// Faults dropped because the ring was full.
    pub fn overflow(&self) -> u32 {
        self.ring.overflow
    }

    /// The counts.
    pub fn host_summary(&self) -> HostFaultSummary {
        self.ring.host_summary()
    }
}

/// The host-domain queue: faults of requesters that name no vdevice. A host device has no
/// vdevice to name it, so each record keeps its requester (a slot beside each ring slot of the
/// queue), for the host's sanitized record.
#[derive(Clone, Debug)]
pub struct HostDomainQueue {
    queue: HostEventQueue,
    requesters: [Requester; EVENT_QUEUE_CAPACITY],
}

impl Default for HostDomainQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl HostDomainQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        HostDomainQueue {
            queue: HostEventQueue::new(),
            requesters: [Requester { segment: 0, rid: 0 }; EVENT_QUEUE_CAPACITY],
        }
    }

    /// Records `fault` of a host device, issued by `requester`.
    pub fn push(&mut self, requester: Requester, fault: &Fault) {
        let q = &mut self.queue;
        if let Some(r) = q
            .ring
            .push(&mut q.records, fault)
            .and_then(|slot| self.requesters.get_mut(slot))
        {
            *r = requester;
        }
    }

    /// Takes the oldest record and its requester.
    pub fn pop(&mut self) -> Option<(HostFault, Requester)> {
        let q = &mut self.queue;
        let (slot, f) = q.ring.pop(&q.records)?;
        Some((f, *self.requesters.get(slot)?))
    }

    /// The counts the host may see.
    pub fn host_summary(&self) -> HostFaultSummary {
        self.queue.host_summary()
    }
}

impl Record for EventRecord {
    type Decoded = GuestFault;

    fn encode(fault: &Fault) -> Self {
        let mut flags = 0;
        if fault.pasid.is_some() {
            flags |= FLAG_PASID;
        }
        if fault.t_bit {
            flags |= FLAG_T;
        }
        if fault.gpa.is_some() {
            flags |= FLAG_GPA;
        }
        EventRecord {
            iova: fault.iova.0,
            gpa: fault.gpa.map_or(0, |g| g.0),
            pasid: fault.pasid.unwrap_or(0),
            reason: fault.reason as u8,
            level: fault.level.unwrap_or(NO_LEVEL),
            access: fault.access as u8,
            flags,
        }
    }

    fn decode(self) -> Option<GuestFault> {
        Some(GuestFault {
            iova: Iova(self.iova),
            pasid: (self.flags & FLAG_PASID != 0).then_some(self.pasid),
            access: match self.access {
                0 => Access::Read,
                1 => Access::Write,
                _ => return None,
            },
            t_bit: self.flags & FLAG_T != 0,
            reason: FaultReason::from_raw(self.reason)?,
            level: (self.level != NO_LEVEL).then_some(self.level),
            gpa: (self.flags & FLAG_GPA != 0).then_some(Gpa(self.gpa)),
        })
    }
}

impl Record for HostRecord {
    type Decoded = HostFault;

    fn encode(fault: &Fault) -> Self {
        let mut flags = 0;
        if fault.access == Access::Write {
            flags |= HOST_FLAG_WRITE;
        }
        if fault.t_bit {
            flags |= HOST_FLAG_T;
        }
        HostRecord {
            reason: fault.reason as u8,
            flags,
        }
    }

    fn decode(self) -> Option<HostFault> {
        if self.flags & !(HOST_FLAG_WRITE | HOST_FLAG_T) != 0 {
            return None;
        }
        Some(HostFault {
            reason: FaultReason::from_raw(self.reason)?,
            access: if self.flags & HOST_FLAG_WRITE != 0 {
                Access::Write
            } else {
                Access::Read
            },
            t_bit: self.flags & HOST_FLAG_T != 0,
        })
    }
}
