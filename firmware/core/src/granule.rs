//! Granule ownership: one compact descriptor per 4 KiB granule of DRAM.
//!
//! A descriptor is a `u16` (the same footprint as TF-RMM's):
//!
//! ```text
//!  15    14..11   10..0
//! LOCK   STATE    REFCOUNT
//! ```
//!
//! * `STATE` is a [`GranuleState`]. Only the edges in [`GranuleState::check_transition`] exist;
//!   every other edge is its own [`GranuleError`] (Salus `PageState` style).
//! * `REFCOUNT` counts references *to* this granule from other TSM structures: objects that name
//!   it as their parent (a VDEV refers to its TVM, VIOMMU and PDEV; a VCPU to its TVM) and, for a
//!   translation-table granule, its live entries (at most 512). A granule can only leave its
//!   state when its refcount is 0. Bulk counts that can exceed 11 bits (a TVM's private pages)
//!   live in the object itself.
//! * `LOCK` is a spin lock bit taken by [`GranuleTable::lock`] and released when the [`Locked`]
//!   guard drops. The guard caches the descriptor and writes state and refcount back on drop,
//!   so a failed call that drops its guards without changing them leaves the table as it was.
//!
//! # Lock order
//!
//! A call that holds more than one granule lock takes them in this order, and within one kind in
//! ascending address order; nothing is ever locked while a later kind is held:
//!
//! ```text
//! TVM  →  VCPU  →  VIOMMU  →  PDEV  →  VDEV  →  TABLE (root first, then by level)  →  PRIVATE/NS/DELEGATED/DMA_TABLE
//! ```
//!
//! A call that needs a parent it cannot lock in order (e.g. VDEV_DESTROY, which starts from the
//! VDEV) drops the child, locks the parent in the parent's kind (a granule the host destroyed and
//! reused meanwhile is refused as it is locked, never held: it may be of a later kind than the
//! child's), then re-locks and re-checks the child. The one
//! exception to the order is a lock only *tried* ([`GranuleTable::try_lock`], which never waits):
//! `Tsm::lock_with_parent` tries the parent while it holds the child, and falls back to the
//! order above when someone holds it. A CPU never waits while holding a later kind, so no cycle
//! of waiting CPUs can form.
//!
//! Three spin locks outside the table come after every granule lock, in this order, and no
//! granule lock is ever taken while holding them:
//!
//! ```text
//! granule locks  →  DMA tables (`Tsm::dma`)  →  IOTLB (`Tsm::iotlb`)  →  PDEV registry (`Tsm::pdevs`)
//! ```
//!
//! A translation (TEST_DMA_INJECT) holds the IOTLB lock for the walk, so it reads objects and
//! tables as unlocked snapshots (`viommu_glue::Translator`) instead of locking granules. A DMA
//! table refresh (`crate::dma_tables`) holds `Tsm::dma` for the whole composition and reads the
//! same way; its caller holds the lock of the vdevice's TVM or of its VDEV, the two locks
//! VDEV_DESTROY takes, so the vdevice and its DMA-table granules outlive the refresh.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU16, Ordering};

use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE, Pa};
use tsm_abi::status::{Status, StatusCode};

const LOCK_BIT: u16 = 1 << 15;
const STATE_SHIFT: u16 = 11;
const STATE_MASK: u16 = 0xF << STATE_SHIFT;
const REFCOUNT_MASK: u16 = (1 << STATE_SHIFT) - 1;
/// Largest refcount a descriptor holds.
pub const MAX_REFCOUNT: u16 = REFCOUNT_MASK;

/// The state of one granule.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum GranuleState {
    /// Host memory (non-secure). The host's address space maps it.
    Ns = 0,
    /// Secure and free: unmapped from the host, owned by nobody yet.
    Delegated = 1,
    /// A data page of one TVM (private memory).
    Private = 2,
    /// A TVM object.
    Tvm = 3,
    /// A vCPU object.
    Vcpu = 4,
    /// A PDEV object.
    Pdev = 5,
    /// A VIOMMU object.
    Viommu = 6,
    /// A VDEV object.
    Vdev = 7,
    /// A translation table of a TVM's address map.
    Table = 8,
    /// The TSM's own memory (image, stacks, this table). Never changes state.
    Reserved = 9,
    /// A table of one vdevice's DMA table (the platform IOMMU walks it).
    DmaTable = 10,
    /// A PDEV's SPDM evidence: the device's certificate chain and measurement record, kept
    /// from PDEV_CONNECT until the PDEV goes back to NEW or is destroyed.
    Evidence = 11,
}

impl GranuleState {
    fn from_bits(bits: u16) -> Self {
        match bits {
            0 => GranuleState::Ns,
            1 => GranuleState::Delegated,
            2 => GranuleState::Private,
            3 => GranuleState::Tvm,
            4 => GranuleState::Vcpu,
            5 => GranuleState::Pdev,
            6 => GranuleState::Viommu,
            7 => GranuleState::Vdev,
            8 => GranuleState::Table,
            10 => GranuleState::DmaTable,
            11 => GranuleState::Evidence,
            // Only `set_state` writes the field, and it writes only the values above.
            _ => GranuleState::Reserved,
        }
    }

    /// Whether the granule is secure: never reachable by the host or by a T=0 DMA.
    pub fn is_secure(self) -> bool {
        !matches!(self, GranuleState::Ns)
    }

    /// Whether `self → to` is an edge of the state machine. Edges: NS ⇄ DELEGATED (delegate,
    /// undelegate) and DELEGATED ⇄ each owned state (create/destroy an object, map/unmap a private
    /// page, donate/reclaim a table). Everything else is refused with the error naming the edge.
    pub fn check_transition(self, to: GranuleState) -> Result<(), GranuleError> {
        use GranuleState::*;
        match (self, to) {
            (Reserved, _) => Err(GranuleError::Reserved),
            (_, Reserved) => Err(GranuleError::Reserved),
            (Ns, Delegated) | (Delegated, Ns) => Ok(()),
            (Ns, _) => Err(GranuleError::NotDelegated { found: self }),
            (Delegated, Delegated) => Err(GranuleError::AlreadyDelegated),
            (Delegated, _) => Ok(()),
            (_, Delegated) => Ok(()),
            (_, Ns) => Err(GranuleError::StillOwned { found: self }),
            _ => Err(GranuleError::NotDelegated { found: self }),
        }
    }
}

/// Why a granule operation was refused. Each illegal edge has its own variant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GranuleError {
    /// The address is not granule-aligned.
    Misaligned,
    /// The address is outside the tracked DRAM.
    OutOfRange,
    /// The granule is the TSM's own memory.
    Reserved,
    /// DELEGATED → DELEGATED: delegating a granule twice.
    AlreadyDelegated,
    /// The operation needs a DELEGATED granule (or an NS one, for delegate) and found another
    /// state: e.g. NS → TVM (using undelegated memory for an object).
    NotDelegated {
        /// The state found.
        found: GranuleState,
    },
    /// Owned → NS: undelegating memory that still holds an object, a page or a table.
    StillOwned {
        /// The state found.
        found: GranuleState,
    },
    /// The granule is not in the state the operation expects (e.g. a handle naming a VDEV
    /// where a TVM is needed).
    WrongState {
        /// The state expected.
        expected: GranuleState,
        /// The state found.
        found: GranuleState,
    },
    /// The granule is still referenced; it cannot change state.
    Referenced {
        /// Live references.
        refcount: u16,
    },
    /// The refcount would exceed [`MAX_REFCOUNT`] (or go below zero).
    RefcountOverflow,
}

impl GranuleError {
    /// The status a call returns for this error about its argument `arg` (1-based).
    pub fn status(self, arg: u8) -> Status {
        let code = match self {
            GranuleError::Misaligned => StatusCode::Misaligned,
            GranuleError::OutOfRange => StatusCode::OutOfRange,
            GranuleError::Reserved
            | GranuleError::AlreadyDelegated
            | GranuleError::NotDelegated { .. }
            | GranuleError::StillOwned { .. } => StatusCode::GranuleState,
            // A handle that names no object of the expected kind is a bad handle; a plain
            // granule in the wrong state is a granule-state error.
            GranuleError::WrongState { expected, .. } if expected.is_object() => {
                StatusCode::BadHandle
            }
            GranuleError::WrongState { .. } => StatusCode::GranuleState,
            GranuleError::Referenced { .. } => StatusCode::InUse,
            GranuleError::RefcountOverflow => StatusCode::Capacity,
        };
        Status::arg(code, arg)
    }
}

impl GranuleState {
    /// Whether the state holds a TSM object (a handle names such a granule).
    pub fn is_object(self) -> bool {
        use GranuleState::*;
        matches!(self, Tvm | Vcpu | Pdev | Viommu | Vdev)
    }
}

/// The descriptor table over one contiguous DRAM range.
pub struct GranuleTable<'a> {
    base: Pa,
    descs: &'a [AtomicU16],
}

impl<'a> GranuleTable<'a> {
    /// A table covering `descs.len()` granules from `base`, every granule NS except those in
    /// `reserved` (the TSM's own memory, including `descs` itself), which become RESERVED.
    /// `descs` must be all zero, which is NS with no references: the HALs carve them zeroed, so
    /// only the reserved granules are stored here and boot does not pay a store per granule
    /// of DRAM (checked in debug builds).
    /// `base` must be granule-aligned; a misaligned base is rounded down.
    /// Granules that would end past the top of the 64-bit physical space are left out, so
    /// [`Self::granule_pa`] and [`Self::covers`] never overflow.
    pub fn new(base: Pa, descs: &'a [AtomicU16], reserved: core::ops::Range<Pa>) -> Self {
        let base = base.granule_base();
        // `!base` is `u64::MAX - base`: the whole granules from `base` up, less the last one,
        // so that the end of the table is representable.
        let fit = usize::try_from(!base.0 >> GRANULE_SHIFT).unwrap_or(usize::MAX);
        let descs = descs.get(..fit).unwrap_or(descs);
        debug_assert!(
            descs.iter().all(|d| d.load(Ordering::Relaxed) == 0),
            "granule descriptors handed over not zeroed"
        );
        let index = |pa: Pa| {
            let off = pa.0.saturating_sub(base.0) >> GRANULE_SHIFT;
            usize::try_from(off).map_or(descs.len(), |i| i.min(descs.len()))
        };
        let (first, end) = (
            index(reserved.start.granule_base()),
            index(Pa(reserved.end.0.saturating_add(GRANULE_SIZE - 1))),
        );
        for d in descs.get(first..end).unwrap_or(&[]) {
            d.store(
                (GranuleState::Reserved as u16) << STATE_SHIFT,
                Ordering::Relaxed,
            );
        }
        GranuleTable { base, descs }
    }

    /// First byte covered.
    pub fn base(&self) -> Pa {
        self.base
    }

    /// Number of granules covered.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// Whether the table covers nothing.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Index of `pa`'s descriptor.
    fn index(&self, pa: Pa) -> Result<usize, GranuleError> {
        if !pa.is_granule_aligned() {
            return Err(GranuleError::Misaligned);
        }
        let off =
            pa.0.checked_sub(self.base.0)
                .ok_or(GranuleError::OutOfRange)?;
        let idx = usize::try_from(off >> GRANULE_SHIFT).map_err(|_| GranuleError::OutOfRange)?;
        if idx < self.descs.len() {
            Ok(idx)
        } else {
            Err(GranuleError::OutOfRange)
        }
    }

    /// The address of granule `i`, for `i <= self.len()` (`self.len()`: the end of the table).
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "new() keeps len <= (u64::MAX - base) / GRANULE_SIZE, so base + i * GRANULE_SIZE fits for every i <= len"
    )]
    fn granule_pa(&self, i: usize) -> Pa {
        Pa(self.base.0 + ((i as u64) << GRANULE_SHIFT))
    }

    /// Whether `[pa, pa + len)` lies in tracked DRAM.
    pub fn covers(&self, pa: Pa, len: u64) -> bool {
        let end = self.granule_pa(self.descs.len()).0;
        pa.0 >= self.base.0 && pa.0.checked_add(len).is_some_and(|e| e <= end)
    }

    /// The state of `pa`'s granule, read without locking (a snapshot: it may change right after;
    /// use it for checks that a later locked step repeats, and for invariant checks).
    pub fn peek(&self, pa: Pa) -> Result<(GranuleState, u16), GranuleError> {
        let d = self
            .descs
            .get(self.index(pa)?)
            .ok_or(GranuleError::OutOfRange)?
            .load(Ordering::Acquire);
        Ok((
            GranuleState::from_bits((d & STATE_MASK) >> STATE_SHIFT),
            d & REFCOUNT_MASK,
        ))
    }

    /// Locks `pa`'s granule (spinning while another CPU holds it).
    pub fn lock(&self, pa: Pa) -> Result<Locked<'_, 'a>, GranuleError> {
        let idx = self.index(pa)?;
        let d = self.descs.get(idx).ok_or(GranuleError::OutOfRange)?;
        loop {
            let cur = d.load(Ordering::Relaxed);
            if cur & LOCK_BIT == 0
                && d.compare_exchange_weak(
                    cur,
                    cur | LOCK_BIT,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(Locked {
                    slot: d,
                    pa,
                    desc: cur,
                    table: PhantomData,
                });
            }
            core::hint::spin_loop();
        }
    }

    /// Locks `pa`'s granule if no one holds it (`Ok(None)` if someone does): never waits, so a
    /// caller may try it out of the lock order ([`crate::objects`]'s parent-after-child fast
    /// path) without risking a deadlock.
    pub fn try_lock(&self, pa: Pa) -> Result<Option<Locked<'_, 'a>>, GranuleError> {
        let idx = self.index(pa)?;
        let d = self.descs.get(idx).ok_or(GranuleError::OutOfRange)?;
        loop {
            let cur = d.load(Ordering::Relaxed);
            if cur & LOCK_BIT != 0 {
                return Ok(None);
            }
            // Weak: a spurious failure only goes round again, and the lock bit is looked at
            // anew each time, so this never waits on a holder.
            if d.compare_exchange_weak(cur, cur | LOCK_BIT, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Some(Locked {
                    slot: d,
                    pa,
                    desc: cur,
                    table: PhantomData,
                }));
            }
        }
    }

    /// Locks `pa`'s granule and checks it is in `expected`.
    pub fn lock_in(&self, pa: Pa, expected: GranuleState) -> Result<Locked<'_, 'a>, GranuleError> {
        let g = self.lock(pa)?;
        let found = g.state();
        if found == expected {
            Ok(g)
        } else {
            Err(GranuleError::WrongState { expected, found })
        }
    }

    /// Iterates over every granule's address and (unlocked) state: for invariant checks.
    pub fn snapshot(&self) -> impl Iterator<Item = (Pa, GranuleState, u16)> + '_ {
        self.descs.iter().enumerate().map(move |(i, d)| {
            let v = d.load(Ordering::Acquire);
            (
                self.granule_pa(i),
                GranuleState::from_bits((v & STATE_MASK) >> STATE_SHIFT),
                v & REFCOUNT_MASK,
            )
        })
    }
}

/// A locked granule. State and refcount changes are staged in the guard and published, together
/// with the unlock, when it drops.
pub struct Locked<'t, 'a> {
    /// The descriptor itself rather than its table and index: the unlock on drop is then one
    /// store, with no bounds check, at each of the hundreds of places a guard drops (every
    /// early return of a call drops its guards; the code is inlined at each).
    slot: &'t AtomicU16,
    pa: Pa,
    desc: u16,
    table: PhantomData<&'t GranuleTable<'a>>,
}

impl Locked<'_, '_> {
    /// The granule's address.
    pub fn pa(&self) -> Pa {
        self.pa
    }

    /// Current (staged) state.
    pub fn state(&self) -> GranuleState {
        GranuleState::from_bits((self.desc & STATE_MASK) >> STATE_SHIFT)
    }

    /// Current (staged) refcount.
    pub fn refcount(&self) -> u16 {
        self.desc & REFCOUNT_MASK
    }

    /// Moves the granule to `to`, if that edge exists and nothing references the granule.
    pub fn transition(&mut self, to: GranuleState) -> Result<(), GranuleError> {
        self.state().check_transition(to)?;
        if self.refcount() != 0 {
            return Err(GranuleError::Referenced {
                refcount: self.refcount(),
            });
        }
        self.desc = (self.desc & !STATE_MASK) | ((to as u16) << STATE_SHIFT);
        Ok(())
    }

    /// Takes one more reference.
    pub fn get(&mut self) -> Result<(), GranuleError> {
        if self.refcount() >= MAX_REFCOUNT {
            return Err(GranuleError::RefcountOverflow);
        }
        self.desc = self
            .desc
            .checked_add(1)
            .ok_or(GranuleError::RefcountOverflow)?;
        Ok(())
    }

    /// Drops one reference.
    pub fn put(&mut self) -> Result<(), GranuleError> {
        if self.refcount() == 0 {
            return Err(GranuleError::RefcountOverflow);
        }
        self.desc = self
            .desc
            .checked_sub(1)
            .ok_or(GranuleError::RefcountOverflow)?;
        Ok(())
    }
}

impl Drop for Locked<'_, '_> {
    fn drop(&mut self) {
        // `desc` never holds LOCK_BIT: it is the unlocked value the lock was taken from, and
        // only `transition` (the state field), `get` and `put` (the refcount, kept within its
        // field by their bounds checks) change it. So this store is the unlock.
        debug_assert_eq!(self.desc & LOCK_BIT, 0);
        self.slot.store(self.desc, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use tsm_abi::addr::GRANULE_SIZE;

    const BASE: u64 = 0x4000_0000;

    fn table(descs: &[AtomicU16]) -> GranuleTable<'_> {
        GranuleTable::new(Pa(BASE), descs, Pa(BASE)..Pa(BASE + 2 * GRANULE_SIZE))
    }

    fn descs(n: usize) -> Vec<AtomicU16> {
        (0..n).map(|_| AtomicU16::new(0)).collect()
    }

    #[test]
    fn try_lock_never_waits_on_a_holder() {
        let d = descs(8);
        let t = table(&d);
        let pa = Pa(BASE + GRANULE_SIZE);
        let held = t.lock(pa).unwrap();
        assert!(t.try_lock(pa).unwrap().is_none());
        drop(held);
        let g = t.try_lock(pa).unwrap().expect("free");
        assert!(t.try_lock(pa).unwrap().is_none());
        drop(g);
        assert!(t.try_lock(pa).unwrap().is_some());
        assert_eq!(
            t.try_lock(Pa(BASE + 1)).err(),
            Some(GranuleError::Misaligned)
        );
    }

    #[test]
    fn reserved_granules_never_move() {
        let d = descs(8);
        let t = table(&d);
        let mut g = t.lock(Pa(BASE)).unwrap();
        assert_eq!(g.state(), GranuleState::Reserved);
        assert_eq!(
            g.transition(GranuleState::Delegated),
            Err(GranuleError::Reserved)
        );
        drop(g);
        assert_eq!(
            t.peek(Pa(BASE + 2 * GRANULE_SIZE)).unwrap().0,
            GranuleState::Ns
        );
    }

    #[test]
    fn address_checks() {
        let d = descs(8);
        let t = table(&d);
        assert_eq!(t.lock(Pa(BASE + 1)).err(), Some(GranuleError::Misaligned));
        assert_eq!(
            t.lock(Pa(BASE - GRANULE_SIZE)).err(),
            Some(GranuleError::OutOfRange)
        );
        assert_eq!(
            t.lock(Pa(BASE + 8 * GRANULE_SIZE)).err(),
            Some(GranuleError::OutOfRange)
        );
        assert_eq!(t.lock(Pa(!0xFFF)).err(), Some(GranuleError::OutOfRange));
        assert!(t.covers(Pa(BASE), 8 * GRANULE_SIZE));
        assert!(!t.covers(Pa(BASE), 8 * GRANULE_SIZE + 1));
        assert!(!t.covers(Pa(u64::MAX), 2));
    }

    #[test]
    fn every_edge_is_checked() {
        use GranuleState::*;
        let all = [
            Ns, Delegated, Private, Tvm, Vcpu, Pdev, Viommu, Vdev, Table, Reserved, DmaTable,
            Evidence,
        ];
        for from in all {
            for to in all {
                let r = from.check_transition(to);
                let legal = match (from, to) {
                    (Reserved, _) | (_, Reserved) => false,
                    (Ns, Delegated) | (Delegated, Ns) => true,
                    (Delegated, Delegated) => false,
                    (Delegated, _) => !matches!(to, Ns),
                    (Ns, _) => false,
                    (_, Delegated) => true,
                    _ => false,
                };
                assert_eq!(r.is_ok(), legal, "{from:?} -> {to:?}: {r:?}");
            }
        }
        assert_eq!(
            Ns.check_transition(Tvm),
            Err(GranuleError::NotDelegated { found: Ns })
        );
        assert_eq!(
            Tvm.check_transition(Ns),
            Err(GranuleError::StillOwned { found: Tvm })
        );
        assert_eq!(
            Delegated.check_transition(Delegated),
            Err(GranuleError::AlreadyDelegated)
        );
        assert_eq!(
            Tvm.check_transition(Vdev),
            Err(GranuleError::NotDelegated { found: Tvm })
        );
    }

    #[test]
    fn referenced_granules_cannot_move_and_refcounts_are_bounded() {
        let d = descs(8);
        let t = table(&d);
        let pa = Pa(BASE + 4 * GRANULE_SIZE);
        {
            let mut g = t.lock(pa).unwrap();
            g.transition(GranuleState::Delegated).unwrap();
            g.transition(GranuleState::Tvm).unwrap();
            g.get().unwrap();
            assert_eq!(
                g.transition(GranuleState::Delegated),
                Err(GranuleError::Referenced { refcount: 1 })
            );
            g.put().unwrap();
            assert_eq!(g.put(), Err(GranuleError::RefcountOverflow));
            for _ in 0..MAX_REFCOUNT {
                g.get().unwrap();
            }
            assert_eq!(g.get(), Err(GranuleError::RefcountOverflow));
            assert_eq!(g.state(), GranuleState::Tvm);
        }
        assert_eq!(t.peek(pa).unwrap(), (GranuleState::Tvm, MAX_REFCOUNT));
        assert_eq!(
            t.lock_in(pa, GranuleState::Vdev).err(),
            Some(GranuleError::WrongState {
                expected: GranuleState::Vdev,
                found: GranuleState::Tvm
            })
        );
    }

    #[test]
    fn locks_exclude_other_threads() {
        let d = descs(4);
        let t = table(&d);
        let pa = Pa(BASE + 3 * GRANULE_SIZE);
        t.lock(pa)
            .unwrap()
            .transition(GranuleState::Delegated)
            .unwrap();
        t.lock(pa).unwrap().transition(GranuleState::Table).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let mut g = t.lock(pa).unwrap();
                        let before = g.refcount();
                        g.get().unwrap();
                        assert_eq!(g.refcount(), before + 1);
                    }
                });
            }
        });
        assert_eq!(t.peek(pa).unwrap(), (GranuleState::Table, 800));
    }
}
