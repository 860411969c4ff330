//! VMIDs for TVM address maps: the tag the TLBs keep TVM translations apart by.
//!
//! The core names a TVM's address space by its root table (`tsm_core::run`); this table maps
//! roots to 8-bit VMIDs (1..=255; 0 is the host's). A VMID goes to a new root only when no CPU
//! runs the old one, and only after every translation tagged with it was invalidated on every
//! CPU, so two address maps never share cached translations. A root keeps its VMID across runs
//! while no other root needs the slot; `invalidate_guest_all` on TVM destroy drops everything
//! cached under it, so a root granule that a later TVM reuses inherits nothing.

use tsm_abi::addr::Pa;

/// VMIDs for TVMs: 1..=255 (8-bit VMIDs, which every CPU has).
const SLOTS: usize = 255;

#[derive(Clone, Copy)]
struct Slot {
    /// The root the VMID is assigned to (0: none yet).
    root: u64,
    /// CPUs running a vCPU under it now.
    running: u32,
}

/// Root → VMID assignments (behind the platform's lock).
pub struct Vmids {
    slots: [Slot; SLOTS],
    /// Where the search for a slot to reassign starts (round robin).
    next: usize,
}

/// A VMID (1..=255).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Vmid(pub u16);

impl Vmids {
    /// No VMID assigned.
    pub const fn new() -> Self {
        Vmids {
            slots: [Slot {
                root: 0,
                running: 0,
            }; SLOTS],
            next: 0,
        }
    }

    /// The VMID `root` has now, if any (nothing is cached for a root without one).
    pub fn of(&self, root: Pa) -> Option<Vmid> {
        self.slots
            .iter()
            .position(|s| s.root == root.0 && root.0 != 0)
            .map(slot_vmid)
    }

    /// The VMID for one run of a vCPU on `root`, assigning one if needed; `flush` drops every
    /// cached translation tagged with a VMID before it changes hands. `None` only if every VMID
    /// is in use by a running CPU (more CPUs than VMIDs).
    pub fn acquire(&mut self, root: Pa, flush: impl FnOnce(Vmid)) -> Option<Vmid> {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.root == root.0 && root.0 != 0)
        {
            let s = self.slots.get_mut(i)?;
            s.running = s.running.checked_add(1)?;
            return Some(slot_vmid(i));
        }
        let i = (0..SLOTS)
            .map(|k| (self.next + k) % SLOTS)
            .find(|&i| self.slots.get(i).is_some_and(|s| s.running == 0))?;
        self.next = (i + 1) % SLOTS;
        let s = self.slots.get_mut(i)?;
        if s.root != 0 {
            flush(slot_vmid(i));
        }
        *s = Slot {
            root: root.0,
            running: 1,
        };
        Some(slot_vmid(i))
    }

    /// Ends one run under `vmid`.
    pub fn release(&mut self, vmid: Vmid) {
        if let Some(s) = usize::from(vmid.0)
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i))
        {
            s.running = s.running.saturating_sub(1);
        }
    }
}

fn slot_vmid(i: usize) -> Vmid {
    // i < SLOTS = 255, so i + 1 fits.
    Vmid(i as u16 + 1)
}
