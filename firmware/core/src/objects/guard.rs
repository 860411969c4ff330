//! Locked objects: a [`Guard`] holds an object's granule lock and its copy, so a handler cannot
//! read an object it has not locked, or write one back to a granule it does not hold. Handlers
//! get guards only from [`Tsm::lock`] and the constructors below, which take locks in the order
//! of [`crate::granule`].

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use tsm_abi::addr::Pa;
use tsm_abi::status::{Status, StatusCode};
use zerocopy::{FromZeros, IntoBytes};

use super::{
    BIND_CLEARED, Child, MAX_VDEVS_PER_PDEV, MAX_VDEVS_PER_TVM, Object, PbdfSlot, PdevHead,
    PdevObj, Stored, TvmHead, TvmObj, VDEV_ZEROED, VbdfSlot, VdevBindHead, VdevHeadStart, VdevObj,
    ViommuObj, debug_check_invariants, decode, internal, load_into, write,
};
use tsm_platform::{PhysMem, ReadBuf, WordOff, WordStore};

use crate::granule::{GranuleError, GranuleState, Locked};
use crate::tsm::Tsm;

/// The handle of an object of kind `O`: its granule's address. A handle the host passes is
/// only a claim; `Tsm::lock` checks the granule holds an `O`.
pub struct Handle<O>(Pa, PhantomData<fn() -> O>);

impl<O> Handle<O> {
    /// The handle naming `pa`.
    pub const fn new(pa: Pa) -> Self {
        Handle(pa, PhantomData)
    }

    /// The granule's address.
    pub const fn pa(self) -> Pa {
        self.0
    }
}

// By hand: derives would bound them on `O`, which never needs them.
impl<O> Clone for Handle<O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O> Copy for Handle<O> {}
impl<O> PartialEq for Handle<O> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<O> Eq for Handle<O> {}
impl<O> core::fmt::Debug for Handle<O> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Handle({:#x})", self.0.0)
    }
}

/// Room in a handler's frame for the copy of one object (or run state): its bytes, read from
/// TSM memory and decoded in place ([`Tsm::lock`]), which the [`Guard`] then borrows as the
/// object. Uninitialised until read ([`ReadBuf`]): no zeroing precedes the copy.
pub struct Room<T: Stored>(ReadBuf<T::Words>);

impl<T: Stored> Room<T> {
    /// Room not yet read into.
    pub fn new() -> Self {
        Room(ReadBuf::new())
    }

    /// Reads the `T` at `pa` into the room and returns its bytes.
    pub(super) fn read(&mut self, mem: &dyn PhysMem, pa: Pa) -> Result<&mut [u8], Status> {
        Ok(self.0.read(mem, pa).map_err(|_| internal())?.as_mut_bytes())
    }

    /// The bytes the last [`Room::read`] filled (a TSM bug if none did: the internal status).
    fn filled(&mut self) -> Result<&mut [u8], Status> {
        Ok(self.0.filled().ok_or_else(internal)?.as_mut_bytes())
    }
}

impl<T: Stored> Default for Room<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A locked object and its copy. Changes go to the copy until [`Guard::save`]; granule state
/// and refcount changes are staged in the granule lock and published when the guard drops.
///
/// The copy lives in the caller's frame (a [`Room`]) and the guard borrows it: a guard that owned
/// it would be moved out of the constructor, a whole-object copy per lock (up to 1.8 KiB, on
/// every call; docs/profile-aarch64.md), which LLVM does not elide into a struct field.
pub struct Guard<'t, 'a, O: Object> {
    t: &'t Tsm<'a>,
    g: Locked<'t, 'a>,
    obj: &'t mut O,
}

impl<'t, 'a, O: Object> Guard<'t, 'a, O> {
    /// The object's handle.
    pub fn handle(&self) -> Handle<O> {
        Handle::new(self.g.pa())
    }

    /// The object's granule address.
    pub fn pa(&self) -> Pa {
        self.g.pa()
    }

    /// The locked granule, for what it holds beside the object (a VCPU's run state, a VDEV's
    /// interface report).
    pub(crate) fn granule(&self) -> &Locked<'t, 'a> {
        &self.g
    }

    /// References to the object's granule.
    pub fn refcount(&self) -> u16 {
        self.g.refcount()
    }

    /// Takes one more reference to the object's granule.
    pub fn get(&mut self) -> Result<(), GranuleError> {
        self.g.get()
    }

    /// Drops one reference to the object's granule.
    pub fn put(&mut self) -> Result<(), GranuleError> {
        self.g.put()
    }

    /// Stages a state change of the object's granule (published when the guard drops).
    pub fn transition(&mut self, to: GranuleState) -> Result<(), GranuleError> {
        self.g.transition(to)
    }

    /// Destroys the object: scrubs its granule and stages DELEGATED (checked against the
    /// refcount, published when the guard drops).
    pub fn destroy(mut self) -> Result<(), Status> {
        self.t.scrub(self.g.pa())?;
        self.g
            .transition(GranuleState::Delegated)
            .map_err(|_| internal())
    }

    /// Writes the copy back, after checking its invariants ([`Object::invariants`]) in debug
    /// builds.
    pub fn save(&self) -> Result<(), Status> {
        write(self.t.platform, self.g.pa(), self.obj)
    }

    /// Saves a slot added to a packed table ([`PdevObj::invariants`]) and the copy's count of
    /// slots in use, `vdevs` (already raised), in place: `slot` as entry `vdevs - 1` of the
    /// table of `cap` 16-byte entries at byte `table`, and the count at `count`.
    fn save_added_slot(
        &self,
        table: usize,
        cap: usize,
        count: WordOff,
        vdevs: u64,
        slot: [u64; 2],
    ) -> Result<(), Status> {
        debug_check_invariants(self.obj);
        save_added_slot(self.t.platform, self.g.pa(), table, cap, count, vdevs, slot)
    }
}

/// [`Guard::save_added_slot`]: one [`PhysMem::write_words`] call into the locked granule,
/// shared by the PDEV's and the TVM's tables (one copy in the image: x86_64's `.text` has no
/// room for two).
#[inline(never)]
fn save_added_slot(
    mem: &dyn PhysMem,
    granule: Pa,
    table: usize,
    cap: usize,
    count: WordOff,
    vdevs: u64,
    [w0, w1]: [u64; 2],
) -> Result<(), Status> {
    let i = usize::try_from(vdevs)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|&i| i < cap)
        .ok_or_else(internal)?;
    let at = |w: usize| {
        i.checked_mul(16)
            .and_then(|o| o.checked_add(table))
            .and_then(|o| o.checked_add(w))
            .and_then(WordOff::at)
            .ok_or_else(internal)
    };
    let words = [
        WordStore(at(0)?, w0),
        WordStore(at(8)?, w1),
        WordStore(count, vdevs),
    ];
    mem.write_words(granule, &words).map_err(|_| internal())
}

impl<O: Object> Guard<'_, '_, O> {
    /// Where entry `i` of a table of `cap` entries of `T` at byte `table` of the object lies
    /// in its granule (`i < cap`, else a TSM bug: the internal status).
    fn entry_pa<T>(&self, table: usize, i: usize, cap: usize) -> Result<Pa, Status> {
        if i >= cap {
            return Err(internal());
        }
        let off = i
            .checked_mul(size_of::<T>())
            .and_then(|o| o.checked_add(table))
            .ok_or_else(internal)?;
        self.g.pa().checked_add(off as u64).ok_or_else(internal)
    }

    /// Reads entry `i` of the object's table at byte `table` straight from its locked granule.
    fn read_entry<T: FromZeros + IntoBytes + zerocopy::FromBytes>(
        &self,
        table: usize,
        i: usize,
        cap: usize,
    ) -> Result<T, Status> {
        let mut e = T::new_zeroed();
        let at = self.entry_pa::<T>(table, i, cap)?;
        self.t
            .platform
            .read(at, e.as_mut_bytes())
            .map_err(|_| internal())?;
        Ok(e)
    }
}

/// A call that changes one slot of a PDEV's pBDF table locks the PDEV's head and reads or
/// writes that slot in the granule: the table is 512 bytes, the slot 16. The slots in use are
/// the first `vdevs` ([`PdevObj::invariants`]).
impl Guard<'_, '_, PdevHead> {
    /// pBDF slot `i`.
    pub(crate) fn pbdf(&self, i: usize) -> Result<PbdfSlot, Status> {
        self.read_entry(core::mem::offset_of!(PdevObj, pbdfs), i, MAX_VDEVS_PER_PDEV)
    }

    /// Saves a vdevice added to the copy's count (`vdevs`, already raised) as pBDF slot
    /// `vdevs - 1`, in place: the slot's and the count's words alone, not the head.
    #[inline(always)]
    pub(crate) fn save_added_pbdf(&self, s: &PbdfSlot) -> Result<(), Status> {
        self.save_added_slot(
            core::mem::offset_of!(PdevObj, pbdfs),
            MAX_VDEVS_PER_PDEV,
            WordOff::of::<{ core::mem::offset_of!(PdevHead, vdevs) }>(),
            self.vdevs,
            zerocopy::transmute!(*s),
        )
    }
}

/// A leading part of a [`TvmObj`] that a call may lock alone: its vBDF table lies after it in
/// the granule.
pub trait TvmPart: Object {}

impl TvmPart for TvmHead {}

/// A TVM locked for a guest's vdevice call, with nothing of it copied but its count of vBDF
/// slots in use: the call finds its vdevice in those slots, each read alone ([`Self::vbdf`]),
/// and needs no other field (the map's root and width are the caller's). One 8-byte load
/// instead of a [`TvmView`](super::TvmView) copy and decode (a `PhysMem::read` call, ~39 instructions on
/// aarch64, profiled). Read-only: it has nothing to save.
pub(crate) struct TvmSlots<'t, 'a> {
    t: &'t Tsm<'a>,
    g: Locked<'t, 'a>,
    vdevs: u64,
}

impl<'t, 'a> TvmSlots<'t, 'a> {
    /// The TVM's granule, locked.
    pub(crate) fn granule(&self) -> &Locked<'t, 'a> {
        &self.g
    }

    /// [`TvmHead::vdevs`]: the vBDF slots in use are the first `vdevs`.
    pub(crate) fn vdevs(&self) -> u64 {
        self.vdevs
    }

    /// vBDF slot `i` (`i < MAX_VDEVS_PER_TVM`, else a TSM bug: the internal status).
    pub(crate) fn vbdf(&self, i: usize) -> Result<VbdfSlot, Status> {
        if i >= MAX_VDEVS_PER_TVM {
            return Err(internal());
        }
        let off = i
            .checked_mul(size_of::<VbdfSlot>())
            .and_then(|o| o.checked_add(core::mem::offset_of!(TvmObj, vbdfs)))
            .ok_or_else(internal)?;
        let at = self.g.pa().checked_add(off as u64).ok_or_else(internal)?;
        let mut e = VbdfSlot::new_zeroed();
        self.t
            .platform
            .read(at, e.as_mut_bytes())
            .map_err(|_| internal())?;
        Ok(e)
    }
}

/// The TVM's vBDF table, as [`Guard<PdevHead>`]'s pBDF table ([`TvmObj::invariants`]).
impl<O: TvmPart> Guard<'_, '_, O> {
    /// vBDF slot `i`.
    pub(crate) fn vbdf(&self, i: usize) -> Result<VbdfSlot, Status> {
        self.read_entry(core::mem::offset_of!(TvmObj, vbdfs), i, MAX_VDEVS_PER_TVM)
    }
}

impl Guard<'_, '_, TvmHead> {
    /// Saves a vdevice added to the copy's count as vBDF slot `vdevs - 1`, in place, as
    /// [`Guard::<PdevHead>::save_added_pbdf`].
    #[inline(always)]
    pub(crate) fn save_added_vbdf(&self, s: &VbdfSlot) -> Result<(), Status> {
        self.save_added_slot(
            core::mem::offset_of!(TvmObj, vbdfs),
            MAX_VDEVS_PER_TVM,
            WordOff::of::<{ core::mem::offset_of!(TvmHead, vdevs) }>(),
            self.vdevs,
            zerocopy::transmute!(*s),
        )
    }
}

/// The zero bytes [`Guard::save_bind`] writes over an earlier bind's results, as words: an
/// aligned copy from them is cheaper than `PhysMem::zero` of the range, whose ends are not
/// whole 64-byte blocks (aarch64: 111 instructions, profiled; docs/benchmarks.md, `vbind5`).
static BIND_ZEROS: [u64; BIND_CLEARED.1 / 8] = [0; BIND_CLEARED.1 / 8];

impl Guard<'_, '_, VdevBindHead> {
    /// Writes the bind head back ([`Guard::save`]) and zeroes the results of an earlier bind
    /// after it ([`BIND_CLEARED`]) in the locked granule: a new bind starts with no evidence,
    /// start nonce or report, and none of those bytes is copied out.
    pub(crate) fn save_bind(&self) -> Result<(), Status> {
        self.save()?;
        let pa = self
            .g
            .pa()
            .checked_add(BIND_CLEARED.0 as u64)
            .ok_or_else(internal)?;
        self.t
            .platform
            .write(pa, BIND_ZEROS.as_bytes())
            .map_err(|_| internal())
    }
}

impl<O: Object> Deref for Guard<'_, '_, O> {
    type Target = O;
    fn deref(&self) -> &O {
        self.obj
    }
}

impl<O: Object> DerefMut for Guard<'_, '_, O> {
    fn deref_mut(&mut self) -> &mut O {
        self.obj
    }
}

/// Room for a VDEV and the objects it hangs off ([`Tsm::lock_family`]).
#[derive(Default)]
pub(crate) struct VdevFamilyRooms {
    tvm: Room<TvmObj>,
    viommu: Room<ViommuObj>,
    pdev: Room<PdevObj>,
    vdev: Room<VdevObj>,
}

/// The objects a VDEV hangs off, locked in order (TVM → VIOMMU → PDEV → VDEV), the VDEV
/// checked to still name them.
pub(crate) struct VdevFamily<'t, 'a> {
    pub tvm: Guard<'t, 'a, TvmObj>,
    pub viommu: Guard<'t, 'a, ViommuObj>,
    pub pdev: Guard<'t, 'a, PdevObj>,
    pub vdev: Guard<'t, 'a, VdevObj>,
}

impl<'a> Tsm<'a> {
    /// Locks the object `h` names, copies it into `room` and decodes it there; errors name
    /// argument `arg`.
    pub(crate) fn lock<'t, O: Object>(
        &'t self,
        h: Handle<O>,
        arg: u8,
        room: &'t mut Room<O>,
    ) -> Result<Guard<'t, 'a, O>, Status> {
        let g = self
            .granules
            .lock_in(h.pa(), O::STATE)
            .map_err(|e| e.status(arg))?;
        let obj = load_into(self.platform, &g, room)?;
        Ok(Guard { t: self, g, obj })
    }

    /// Locks the TVM at `pa` and reads its count of vBDF slots in use from the granule
    /// ([`TvmSlots`]); errors name argument `arg`.
    pub(crate) fn lock_tvm_slots<'t>(
        &'t self,
        pa: Pa,
        arg: u8,
    ) -> Result<TvmSlots<'t, 'a>, Status> {
        let g = self
            .granules
            .lock_in(pa, GranuleState::Tvm)
            .map_err(|e| e.status(arg))?;
        // The count is an aligned word of the locked granule: `read_entry` checks the whole
        // granule once and loads word `VDEVS_WORD`, where a general range check of 8 bytes at
        // any address (the former `PhysMem::read_u64`) cost x86_64 12 more instructions
        // (profiled).
        const VDEVS_WORD: usize = core::mem::offset_of!(TvmHead, vdevs) / 8;
        const _: () = assert!(core::mem::offset_of!(TvmHead, vdevs).is_multiple_of(8));
        let vdevs = self
            .platform
            .read_entry(g.pa(), VDEVS_WORD)
            .map_err(|_| internal())?;
        Ok(TvmSlots { t: self, g, vdevs })
    }

    /// The parent links of the child `h` names, read under its lock and nothing else of it:
    /// for a call that starts from a child and must lock its parents first.
    pub(crate) fn links<O: Child>(&self, h: Handle<O>, arg: u8) -> Result<O::Links, Status> {
        let g = self
            .granules
            .lock_in(h.pa(), O::STATE)
            .map_err(|e| e.status(arg))?;
        let mut links = O::Links::new_zeroed();
        self.platform
            .read(g.pa(), links.as_mut_bytes())
            .map_err(|_| internal())?;
        Ok(links)
    }

    /// Locks a child and the parent `parent` picks from its links. A parent that is gone, or a
    /// child that no longer names it, is `BadHandle` (`arg`).
    ///
    /// The lock order is parent first (`crate::granule`), but the parent is known only from
    /// the child. Fast path: the child is locked and read, and its parent only *tried*
    /// ([`GranuleTable::try_lock`](crate::granule::GranuleTable::try_lock)), which never
    /// waits while the child is held, so it cannot deadlock; while the child is locked its
    /// links cannot change, so the parent is the one it names. If another CPU holds the parent,
    /// the child is dropped and the ordered path runs: the parent locked, then the child again,
    /// checked to still name it (it may have been destroyed and re-created in between). Either
    /// way both are held, and the checks are the same, when this returns.
    pub(crate) fn lock_with_parent<'t, P: Object, C: Child>(
        &'t self,
        child: Handle<C>,
        arg: u8,
        parent: impl Fn(&C::Links) -> Handle<P>,
        rooms: (&'t mut Room<P>, &'t mut Room<C>),
    ) -> Result<(Guard<'t, 'a, P>, Guard<'t, 'a, C>), Status> {
        let gone = Status::arg(StatusCode::BadHandle, arg);
        let gc = self
            .granules
            .lock_in(child.pa(), C::STATE)
            .map_err(|e| e.status(arg))?;
        // Decoded here for the links and again below for the guard, from the room: a borrow of
        // the object kept from here would outlive the slow path's re-read.
        let p = parent(&decode::<C>(rooms.1.read(self.platform, gc.pa())?)?.links());
        let (gp, gc) = match self.granules.try_lock(p.pa()) {
            Ok(Some(gp)) => (gp, gc),
            Err(_) => return Err(gone),
            Ok(None) => {
                // Held elsewhere: wait for it in order, never while holding the child; then
                // the child again, which may have been destroyed and re-created meanwhile.
                // The parent's kind is checked as it is locked: a granule the host destroyed
                // and reused meanwhile may now be of a later kind than the child's, and waiting
                // for the child while holding it would break the lock order (deadlock).
                drop(gc);
                let gp = self.granules.lock_in(p.pa(), P::STATE).map_err(|_| gone)?;
                let gc = self
                    .granules
                    .lock_in(child.pa(), C::STATE)
                    .map_err(|e| e.status(arg))?;
                let bytes = rooms.1.read(self.platform, gc.pa())?;
                if parent(&decode::<C>(bytes)?.links()) != p {
                    return Err(gone);
                }
                (gp, gc)
            }
        };
        // Not the parent's state: the child's parent is gone (a child's parent lives as long
        // as the child, so it is not a TSM bug either: the handle was stale).
        if gp.state() != P::STATE {
            return Err(gone);
        }
        let pobj = load_into(self.platform, &gp, rooms.0)?;
        let obj = decode::<C>(rooms.1.filled()?)?;
        Ok((
            Guard {
                t: self,
                g: gp,
                obj: pobj,
            },
            Guard {
                t: self,
                g: gc,
                obj,
            },
        ))
    }

    /// Locks a VDEV and every object it hangs off, in lock order. A parent that is gone, or a
    /// VDEV re-created under other parents meanwhile, is `BadHandle` (`arg`).
    pub(crate) fn lock_family<'t>(
        &'t self,
        vdev: Handle<VdevObj>,
        arg: u8,
        rooms: &'t mut VdevFamilyRooms,
    ) -> Result<VdevFamily<'t, 'a>, Status> {
        let gone = Status::arg(StatusCode::BadHandle, arg);
        let links = self.links(vdev, arg)?;
        let tvm = self
            .lock(links.tvm(), arg, &mut rooms.tvm)
            .map_err(|_| gone)?;
        let viommu = self
            .lock(links.viommu(), arg, &mut rooms.viommu)
            .map_err(|_| gone)?;
        let pdev = self
            .lock(links.pdev(), arg, &mut rooms.pdev)
            .map_err(|_| gone)?;
        let vdev = self.lock(vdev, arg, &mut rooms.vdev)?;
        if vdev.links() != links {
            return Err(gone);
        }
        Ok(VdevFamily {
            tvm,
            viommu,
            pdev,
            vdev,
        })
    }
}

/// Writes a new object into a granule the caller holds and is about to move to `O::STATE`,
/// after checking its invariants ([`Object::invariants`]).
pub(crate) fn save_new<O: Object>(t: &Tsm<'_>, g: &Locked<'_, '_>, obj: &O) -> Result<(), Status> {
    write(t.platform, g.pa(), obj)
}

/// Writes a new VDEV into the granule `g`, which the caller holds and is about to move to
/// VDEV: the object's bytes ([`VDEV_ZEROED`]) zeroed, then `start` over them, which makes every
/// byte of the new object ([`VdevHeadStart`]). Debug builds read the head back and check its
/// invariants, as every other save does.
pub(crate) fn save_new_vdev(
    t: &Tsm<'_>,
    g: &Locked<'_, '_>,
    start: &VdevHeadStart,
) -> Result<(), Status> {
    t.platform
        .zero(g.pa(), VDEV_ZEROED)
        .map_err(|_| internal())?;
    t.platform
        .write(g.pa(), start.as_bytes())
        .map_err(|_| internal())?;
    #[cfg(debug_assertions)]
    {
        let mut room = Room::<super::VdevHead>::new();
        let head = super::read_decoded(t.platform, g.pa(), &mut room)?;
        debug_assert!(head.invariants().is_ok(), "{:?}", head.invariants());
    }
    Ok(())
}
