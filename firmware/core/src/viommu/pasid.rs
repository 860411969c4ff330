//! Per-vdevice stage-1 roots: one default root (requests without PASID) and up to
//! [`PASID_CAPACITY`] PASIDs, each with the input size the guest configured for it. Embedded
//! in the core's VDEV object, so it is a plain zerocopy struct: any byte pattern is a valid
//! table (a non-zero `valid` byte means valid; the walk faults on an input size its format does
//! not have, which only a corrupted object can hold).

use tsm_abi::addr::Gpa;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::PASID_MAX;

/// PASIDs a vdevice can have stage-1 roots for at once (16 bytes each: 512 bytes). Enough for
/// the shared-virtual-addressing users of one function; a 33rd attach is refused with
/// [`PasidError::Full`].
pub const PASID_CAPACITY: usize = 32;

/// One stage-1 root slot of a [`PasidTable`] (opaque; public only for the zerocopy derives).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RootSlot {
    /// GPA of the top-level table (4 KiB aligned).
    root: u64,
    /// The PASID (ignored for the default root).
    pasid: u32,
    /// Non-zero: the slot is in use.
    valid: u8,
    /// Stage-1 input size in bits.
    ia_bits: u8,
    /// Zero.
    reserved: u16,
}

/// The stage-1 roots of one vdevice.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PasidTable {
    default: RootSlot,
    slots: [RootSlot; PASID_CAPACITY],
}

/// Stage-1 configuration for one request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage1Root {
    /// No PASID and no default root: stage 2 only.
    Bypass,
    /// Walk the stage-1 table rooted at `table`, for an `ia_bits`-bit input (the size also
    /// sets the level `table` is at).
    Root {
        /// GPA of the top-level table.
        table: Gpa,
        /// Input size in bits, as attached.
        ia_bits: u8,
    },
    /// A PASID above 20 bits or without an attached root: the request faults.
    NotConfigured,
}

/// Why an attach or detach was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PasidError {
    /// The root GPA is not 4 KiB aligned.
    Misaligned,
    /// The PASID is above 20 bits.
    PasidOutOfRange,
    /// [`PASID_CAPACITY`] PASIDs already have roots.
    Full,
    /// Nothing is attached there.
    NotAttached,
}

impl Default for PasidTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PasidTable {
    /// A table with no roots.
    pub const fn new() -> Self {
        const EMPTY: RootSlot = RootSlot {
            root: 0,
            pasid: 0,
            valid: 0,
            ia_bits: 0,
            reserved: 0,
        };
        PasidTable {
            default: EMPTY,
            slots: [EMPTY; PASID_CAPACITY],
        }
    }

    fn slot(&self, pasid: u32) -> Option<&RootSlot> {
        self.slots.iter().find(|s| s.valid != 0 && s.pasid == pasid)
    }

    /// The stage-1 configuration of a request with `pasid`.
    pub fn lookup(&self, pasid: Option<u32>) -> Stage1Root {
        let root = |s: &RootSlot| Stage1Root::Root {
            table: Gpa(s.root),
            ia_bits: s.ia_bits,
        };
        match pasid {
            None if self.default.valid != 0 => root(&self.default),
            None => Stage1Root::Bypass,
            Some(p) => match self.slot(p) {
                Some(s) if p <= PASID_MAX => root(s),
                _ => Stage1Root::NotConfigured,
            },
        }
    }

    /// Attaches (or replaces) the stage-1 root of `pasid` (`None`: the default root), a walk
    /// of `ia_bits` input bits (the caller checked the vIOMMU's format has that size). The
    /// core then calls [`Iotlb::invalidate_pasid`](super::Iotlb::invalidate_pasid), which also
    /// drops what was cached under the old size.
    pub fn attach(&mut self, pasid: Option<u32>, root: Gpa, ia_bits: u8) -> Result<(), PasidError> {
        if !root.is_granule_aligned() {
            return Err(PasidError::Misaligned);
        }
        let Some(p) = pasid else {
            self.default = RootSlot {
                root: root.0,
                pasid: 0,
                valid: 1,
                ia_bits,
                reserved: 0,
            };
            return Ok(());
        };
        if p > PASID_MAX {
            return Err(PasidError::PasidOutOfRange);
        }
        let slot = match self.slots.iter().position(|s| s.valid != 0 && s.pasid == p) {
            Some(i) => self.slots.get_mut(i),
            None => self.slots.iter_mut().find(|s| s.valid == 0),
        };
        let slot = slot.ok_or(PasidError::Full)?;
        *slot = RootSlot {
            root: root.0,
            pasid: p,
            valid: 1,
            ia_bits,
            reserved: 0,
        };
        Ok(())
    }

    /// Detaches the root of `pasid` (`None`: the default root) and returns it.
    /// The core then calls [`Iotlb::invalidate_pasid`](super::Iotlb::invalidate_pasid).
    pub fn detach(&mut self, pasid: Option<u32>) -> Result<Gpa, PasidError> {
        let slot = match pasid {
            None => Some(&mut self.default).filter(|s| s.valid != 0),
            Some(p) => self.slots.iter_mut().find(|s| s.valid != 0 && s.pasid == p),
        };
        let slot = slot.ok_or(PasidError::NotAttached)?;
        let root = Gpa(slot.root);
        *slot = RootSlot::default();
        Ok(root)
    }

    /// Number of PASIDs with a root (the default root not counted).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.valid != 0).count()
    }

    /// Whether no PASID has a root (the default root not counted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
