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
    /// Slots ever assigned: the round robin hands them out from slot 0 up, so every slot from
    /// here on still has no root and a root's lookup stops here. Before, every TVM_DESTROY and
    /// every VCPU_RUN scanned all 255 slots (~1 000 instructions; docs/benchmarks.md,
    /// "Handlers").
    high: usize,
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
            high: 0,
        }
    }

    /// The slot `root` has, if any.
    fn slot_of(&self, root: Pa) -> Option<usize> {
        debug_assert!(
            self.slots.iter().skip(self.high).all(|s| s.root == 0),
            "a slot above the assigned ones has a root"
        );
        self.slots
            .get(..self.high)?
            .iter()
            .position(|s| s.root == root.0 && root.0 != 0)
    }

    /// The VMID `root` has now, if any (nothing is cached for a root without one).
    pub fn of(&self, root: Pa) -> Option<Vmid> {
        self.slot_of(root).map(slot_vmid)
    }

    /// The VMID for one run of a vCPU on `root`, assigning one if needed; `flush` drops every
    /// cached translation tagged with a VMID before it changes hands. `None` only if every VMID
    /// is in use by a running CPU (more CPUs than VMIDs).
    pub fn acquire(&mut self, root: Pa, flush: impl FnOnce(Vmid)) -> Option<Vmid> {
        if let Some(i) = self.slot_of(root) {
            let s = self.slots.get_mut(i)?;
            s.running = s.running.checked_add(1)?;
            return Some(slot_vmid(i));
        }
        let i = (0..SLOTS)
            .map(|k| (self.next + k) % SLOTS)
            .find(|&i| self.slots.get(i).is_some_and(|s| s.running == 0))?;
        self.next = (i + 1) % SLOTS;
        self.high = self.high.max(i + 1);
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
