//! The host memory a scenario works with: NS granules it takes for buffers, and granules it
//! delegates. Every delegated granule is remembered, so teardown can give each back and the
//! final check can prove every one is NS again, scrubbed and reachable.

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::api::host;

use crate::{Fail, HostEnv, Outcome};

/// Most granules one scenario uses.
pub const MAX_GRANULES: u64 = 1024;
const WORDS: usize = (MAX_GRANULES / 64) as usize;

/// A bump allocator over the environment's pool, with a record of what is delegated.
#[derive(Debug)]
pub struct Pool {
    base: Pa,
    count: u64,
    next: u64,
    /// Granules this pool delegated and not yet undelegated.
    secure: [u64; WORDS],
    /// Granules ever delegated (their contents must be zero once back in NS).
    ever: [u64; WORDS],
}

impl Pool {
    /// The environment's pool (at most [`MAX_GRANULES`] of it).
    pub fn new<E: HostEnv>(env: &E) -> Self {
        let (base, count) = env.pool();
        Pool {
            base,
            count: count.min(MAX_GRANULES),
            next: 0,
            secure: [0; WORDS],
            ever: [0; WORDS],
        }
    }

    fn index(&self, pa: Pa) -> Option<usize> {
        let off = pa.0.checked_sub(self.base.0)?;
        let i = off / GRANULE_SIZE;
        (off.is_multiple_of(GRANULE_SIZE) && i < self.next).then_some(i as usize)
    }

    fn set(map: &mut [u64; WORDS], i: usize, on: bool) {
        if let Some(w) = map.get_mut(i / 64) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }

    fn get(map: &[u64; WORDS], i: usize) -> bool {
        map.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// A fresh NS granule, zeroed by the host.
    pub fn ns<E: HostEnv>(&mut self, env: &mut E) -> Outcome<Pa> {
        ensure!(self.next < self.count, "pool exhausted", self.next);
        let pa = Pa(self.base.0 + self.next * GRANULE_SIZE);
        self.next += 1;
        ensure!(
            env.write(pa, &[0u8; GRANULE_SIZE as usize]),
            "host write to its own pool",
            pa.0
        );
        Ok(pa)
    }

    /// A fresh granule, delegated.
    pub fn secure<E: HostEnv>(&mut self, env: &mut E) -> Outcome<Pa> {
        let pa = self.ns(env)?;
        must!(
            host::granule_delegate(env, pa),
            "GRANULE_DELEGATE of a pool granule"
        );
        self.delegated(pa);
        Ok(pa)
    }

    /// Records that `pa` (of this pool) was delegated by a call the scenario made itself.
    pub fn delegated(&mut self, pa: Pa) {
        if let Some(i) = self.index(pa) {
            Self::set(&mut self.secure, i, true);
            Self::set(&mut self.ever, i, true);
        }
    }

    /// Records that `pa` was undelegated.
    pub fn undelegated(&mut self, pa: Pa) {
        if let Some(i) = self.index(pa) {
            Self::set(&mut self.secure, i, false);
        }
    }

    /// Undelegates every granule still delegated (all objects must be gone by now).
    pub fn undelegate_all<E: HostEnv>(&mut self, env: &mut E) -> Outcome {
        for i in 0..self.next as usize {
            if Self::get(&self.secure, i) {
                let pa = Pa(self.base.0 + i as u64 * GRANULE_SIZE);
                must!(
                    host::granule_undelegate(env, pa),
                    "GRANULE_UNDELEGATE after teardown"
                );
                Self::set(&mut self.secure, i, false);
            }
        }
        Ok(())
    }

    /// Every granule the scenario used is NS again: the host reaches it, a granule that was
    /// secure reads as zeros (scrubbed), and it can be delegated and undelegated again.
    pub fn check_all_ns<E: HostEnv>(&self, env: &mut E) -> Outcome {
        let mut page = [0u8; GRANULE_SIZE as usize];
        for i in 0..self.next as usize {
            let pa = Pa(self.base.0 + i as u64 * GRANULE_SIZE);
            ensure!(!Self::get(&self.secure, i), "granule left delegated", pa.0);
            ensure!(
                env.read(pa, &mut page),
                "host cannot read a granule back",
                pa.0
            );
            if Self::get(&self.ever, i) {
                ensure!(page.iter().all(|&b| b == 0), "granule not scrubbed", pa.0);
            }
            must!(
                host::granule_delegate(env, pa),
                "re-delegate probe (granule not NS)"
            );
            must!(host::granule_undelegate(env, pa), "undelegate probe");
        }
        Ok(())
    }

    /// The `i`-th granule of the pool (taken or not).
    pub fn granule(&self, i: u64) -> Pa {
        Pa(self.base.0 + i * GRANULE_SIZE)
    }

    /// Granules used so far.
    pub fn used(&self) -> u64 {
        self.next
    }
}

impl Fail {
    /// A failure with no value.
    pub const fn new(what: &'static str, line: u32) -> Self {
        Fail { what, line, got: 0 }
    }
}
