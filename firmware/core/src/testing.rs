//! A simulated platform: ordinary memory for DRAM, a record of what the host may reach, a
//! deterministic entropy source and a captured console. Used by the core's tests, the
//! model-based test and fuzzers (feature `testing`); never part of a firmware image.

extern crate std;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::vec;
use std::vec::Vec;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_platform::{
    AddressMapFormat, Console, Entropy, EntropyError, ExitCode, GuestMmu, HostIsolation, MemFault,
    MemRange, PhysMem, PowerOff,
};

/// A TLB invalidation the core asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TlbOp {
    /// One page of one address map.
    Page(Pa, Gpa),
    /// A whole address map.
    All(Pa),
}

/// The simulated machine.
pub struct SimPlatform {
    dram: MemRange,
    pub(crate) mem: Mutex<Vec<u8>>,
    /// Granules removed from the host's address space.
    unmapped: Mutex<BTreeSet<u64>>,
    entropy: Mutex<u64>,
    entropy_fails: Mutex<bool>,
    console: Mutex<Vec<(u8, Vec<u8>)>>,
    tlb: Mutex<Vec<TlbOp>>,
    format: AddressMapFormat,
    /// Faults a test says the (absent) IOMMU recorded, handed out by `drain_faults`.
    dma_faults: Mutex<Vec<tsm_platform::DmaFault>>,
}

impl SimPlatform {
    /// A machine with `granules` granules of DRAM from `base`, whose TVM address maps use
    /// `format`.
    pub fn new(base: Pa, granules: usize, format: AddressMapFormat) -> Self {
        let size = granules as u64 * GRANULE_SIZE;
        SimPlatform {
            dram: MemRange { base, size },
            mem: Mutex::new(vec![0; granules * GRANULE_SIZE as usize]),
            unmapped: Mutex::new(BTreeSet::new()),
            entropy: Mutex::new(0x9E37_79B9_7F4A_7C15),
            entropy_fails: Mutex::new(false),
            console: Mutex::new(Vec::new()),
            tlb: Mutex::new(Vec::new()),
            format,
            dma_faults: Mutex::new(Vec::new()),
        }
    }

    /// Records `fault` as if an IOMMU had: the next `drain_faults` hands it out.
    pub fn record_dma_fault(&self, fault: tsm_platform::DmaFault) {
        self.dma_faults.lock().unwrap().push(fault);
    }

    /// The simulated DRAM.
    pub fn dram(&self) -> MemRange {
        self.dram
    }

    fn offset(&self, pa: Pa, len: usize) -> Result<usize, MemFault> {
        if !self.dram.contains(pa, len as u64) {
            return Err(MemFault(pa));
        }
        usize::try_from(pa.0 - self.dram.base.0).map_err(|_| MemFault(pa))
    }

    /// Whether the host's address space maps `pa`'s granule.
    pub fn host_can_reach(&self, pa: Pa) -> bool {
        self.dram.contains(pa, 1) && !self.unmapped.lock().unwrap().contains(&pa.granule_base().0)
    }

    /// Granules the host cannot reach (sorted).
    pub fn unmapped_granules(&self) -> Vec<Pa> {
        self.unmapped
            .lock()
            .unwrap()
            .iter()
            .map(|&p| Pa(p))
            .collect()
    }

    /// A host load: fails like an MMU fault when the granule is not mapped for the host.
    pub fn host_read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        self.host_check(pa, out.len())?;
        self.read(pa, out)
    }

    /// A host store: fails like an MMU fault when the granule is not mapped for the host.
    pub fn host_write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        self.host_check(pa, data.len())?;
        self.write(pa, data)
    }

    fn host_check(&self, pa: Pa, len: usize) -> Result<(), MemFault> {
        let first = pa.granule_base().0;
        let last =
            pa.0.checked_add(len.max(1) as u64 - 1)
                .ok_or(MemFault(pa))?;
        let unmapped = self.unmapped.lock().unwrap();
        let mut g = first;
        while g <= last {
            if unmapped.contains(&g) {
                return Err(MemFault(Pa(g)));
            }
            // The last granule of the address space has no successor.
            let Some(next) = g.checked_add(GRANULE_SIZE) else {
                break;
            };
            g = next;
        }
        Ok(())
    }

    /// Records written to the console, in order.
    pub fn console(&self) -> Vec<(u8, Vec<u8>)> {
        self.console.lock().unwrap().clone()
    }

    /// TLB invalidations requested so far (drained).
    pub fn take_tlb_ops(&self) -> Vec<TlbOp> {
        core::mem::take(&mut *self.tlb.lock().unwrap())
    }

    /// Makes the entropy source fail (or work again).
    pub fn set_entropy_failing(&self, failing: bool) {
        *self.entropy_fails.lock().unwrap() = failing;
    }
}

impl PhysMem for SimPlatform {
    fn read(&self, pa: Pa, out: &mut [u8]) -> Result<(), MemFault> {
        let off = self.offset(pa, out.len())?;
        let mem = self.mem.lock().unwrap();
        out.copy_from_slice(&mem[off..off + out.len()]);
        Ok(())
    }

    fn write(&self, pa: Pa, data: &[u8]) -> Result<(), MemFault> {
        let off = self.offset(pa, data.len())?;
        let mut mem = self.mem.lock().unwrap();
        mem[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

impl Console for SimPlatform {
    fn relay(&self, stream: u8, frame: &[u8]) {
        self.console.lock().unwrap().push((stream, frame.to_vec()));
    }
}

impl PowerOff for SimPlatform {
    fn power_off(&self, code: ExitCode) -> ! {
        std::panic::panic_any(code)
    }
}

impl HostIsolation for SimPlatform {
    fn unmap_from_host(&self, pa: Pa) -> Result<(), MemFault> {
        self.offset(pa, GRANULE_SIZE as usize)?;
        self.unmapped.lock().unwrap().insert(pa.granule_base().0);
        Ok(())
    }

    fn map_to_host(&self, pa: Pa) -> Result<(), MemFault> {
        self.offset(pa, GRANULE_SIZE as usize)?;
        self.unmapped.lock().unwrap().remove(&pa.granule_base().0);
        Ok(())
    }
}

impl Entropy for SimPlatform {
    fn fill(&self, out: &mut [u8]) -> Result<(), EntropyError> {
        if *self.entropy_fails.lock().unwrap() {
            return Err(EntropyError);
        }
        let mut s = self.entropy.lock().unwrap();
        for b in out {
            // xorshift64*: deterministic, so test runs repeat exactly.
            *s ^= *s >> 12;
            *s ^= *s << 25;
            *s ^= *s >> 27;
            *b = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        Ok(())
    }
}

impl GuestMmu for SimPlatform {
    fn address_map_format(&self) -> AddressMapFormat {
        self.format
    }

    fn invalidate_guest_page(&self, root: Pa, gpa: Gpa) {
        self.tlb.lock().unwrap().push(TlbOp::Page(root, gpa));
    }

    fn invalidate_guest_all(&self, root: Pa) {
        self.tlb.lock().unwrap().push(TlbOp::All(root));
    }
}

/// A monitor over a [`SimPlatform`], with helpers to issue calls and compare states. The
/// platform and descriptor table are leaked: a harness lives for the rest of the test process.
pub struct Harness {
    /// The simulated machine.
    pub sim: &'static SimPlatform,
    /// The monitor.
    pub tsm: crate::Tsm<'static>,
    /// First granule of the TSM's own memory (reserved).
    pub tsm_mem: MemRange,
    /// The last state [`Harness::check`] found sound. The invariants are a function of a
    /// [`Snapshot`]'s contents alone, so an equal state needs no second walk: runs of refused
    /// calls (each checked) cost one walk, which is what keeps the suite usable under Miri.
    checked: Mutex<Option<Snapshot>>,
}

/// Everything a failed call must leave unchanged.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    granules: Vec<(Pa, crate::granule::GranuleState, u16)>,
    mem: Vec<u8>,
    unmapped: Vec<Pa>,
    pdevs: Vec<crate::tsm::PdevRange>,
}

/// Base of the simulated DRAM.
pub const SIM_BASE: u64 = 0x4000_0000;

impl Harness {
    /// A machine with `granules` granules of DRAM whose first 4 granules are the TSM's.
    pub fn new(granules: usize, format: AddressMapFormat) -> Self {
        use core::sync::atomic::AtomicU16;
        let sim: &'static SimPlatform = std::boxed::Box::leak(std::boxed::Box::new(
            SimPlatform::new(Pa(SIM_BASE), granules, format),
        ));
        let descs: &'static [AtomicU16] = std::boxed::Box::leak(
            (0..granules)
                .map(|_| AtomicU16::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let tsm_mem = MemRange {
            base: Pa(SIM_BASE),
            size: 4 * GRANULE_SIZE,
        };
        for g in 0..4 {
            let _ = sim.unmap_from_host(Pa(SIM_BASE + g * GRANULE_SIZE));
        }
        let tsm =
            crate::Tsm::new(sim, sim.dram(), tsm_mem, descs).expect("harness sizes are consistent");
        Harness {
            sim,
            tsm,
            tsm_mem,
            checked: Mutex::new(None),
        }
    }

    /// The address of granule `i` (0..4 are the TSM's).
    pub fn granule(&self, i: u64) -> Pa {
        Pa(SIM_BASE + i * GRANULE_SIZE)
    }

    /// Issues a call as `origin`; `Ok(results)` on success, `Err((status, results))` otherwise.
    pub fn call_as(
        &self,
        origin: crate::Origin,
        call: tsm_abi::CallId,
        args: &[u64],
    ) -> Result<[u64; 4], (tsm_abi::Status, [u64; 4])> {
        let mut regs = tsm_abi::regs::CallRegs {
            fid: u64::from(call.fid()),
            args: [0; 6],
        };
        for (r, a) in regs.args.iter_mut().zip(args) {
            *r = *a;
        }
        let r = self.tsm.handle(origin, &regs);
        let status =
            tsm_abi::Status::from_raw(r.status).expect("the TSM returns only defined status words");
        if status.is_success() {
            Ok(r.out)
        } else {
            Err((status, r.out))
        }
    }

    /// A host call.
    pub fn host(&self, call: tsm_abi::CallId, args: &[u64]) -> Result<[u64; 4], tsm_abi::Status> {
        self.call_as(crate::Origin::Host, call, args)
            .map_err(|e| e.0)
    }

    /// Everything a failed call must leave as it was.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            granules: self.tsm.granules().snapshot().collect(),
            mem: self.sim.mem.lock().unwrap().clone(),
            unmapped: self.sim.unmapped_granules(),
            pdevs: self.tsm.pdev_ranges().into_iter().collect(),
        }
    }

    /// Issues a host call that must fail with `expected` and change nothing.
    pub fn refused(&self, call: tsm_abi::CallId, args: &[u64], expected: tsm_abi::Status) {
        let before = self.snapshot();
        let got = self.host(call, args);
        assert_eq!(got, Err(expected), "{} {:x?}", call.name(), args);
        assert!(
            self.snapshot() == before,
            "{} {:x?} changed state while failing",
            call.name(),
            args
        );
        self.check();
    }

    /// Asserts the invariants of ARCHITECTURE.md §2 (3–6).
    pub fn check(&self) {
        let now = self.snapshot();
        let mut checked = self.checked.lock().unwrap();
        if checked.as_ref() == Some(&now) {
            return;
        }
        if let Err(e) = crate::invariants::check(&self.tsm, self.sim) {
            panic!("invariant violated: {e}");
        }
        *checked = Some(now);
    }

    /// Issues a guest call from `vcpu` that must fail with `expected` and change nothing.
    pub fn guest_refused(
        &self,
        vcpu: Pa,
        call: tsm_abi::CallId,
        args: &[u64],
        expected: tsm_abi::Status,
    ) {
        let before = self.snapshot();
        let got = self
            .call_as(crate::Origin::Guest { vcpu }, call, args)
            .map_err(|e| e.0);
        assert_eq!(got, Err(expected), "{} {:x?}", call.name(), args);
        assert!(
            self.snapshot() == before,
            "{} {:x?} changed state while failing",
            call.name(),
            args
        );
        self.check();
    }

    /// The granule states and the host-isolation record (what teardown must restore).
    pub fn ownership(&self) -> (Vec<(Pa, crate::granule::GranuleState, u16)>, Vec<Pa>) {
        (
            self.tsm.granules().snapshot().collect(),
            self.sim.unmapped_granules(),
        )
    }

    /// Delegates granule `i`.
    pub fn delegate(&self, i: u64) -> Pa {
        let pa = self.granule(i);
        self.host(tsm_abi::CallId::GRANULE_DELEGATE, &[pa.0])
            .expect("delegate");
        pa
    }

    /// Writes `data` to host memory at granule `i` (as the host would).
    pub fn host_put(&self, i: u64, data: &[u8]) -> Pa {
        let pa = self.granule(i);
        self.sim.host_write(pa, data).expect("host memory");
        pa
    }
}

/// No IOMMU is driven here yet: DMA is not gated by hardware (FEATURES and docs/design.md say so).
/// The faults a test records with `record_dma_fault` are drained as a real IOMMU's would be.
impl tsm_platform::Iommu for SimPlatform {
    fn present(&self) -> bool {
        false
    }
    fn table_format(&self) -> Option<tsm_platform::DmaTableFormat> {
        None
    }
    fn attach(
        &self,
        _stream: tsm_platform::DmaStream,
        _domain: tsm_platform::DmaDomain,
    ) -> Result<(), tsm_platform::IommuError> {
        Err(tsm_platform::IommuError::Absent)
    }
    fn invalidate(&self, _tag: u16) {}
    fn drain_faults(&self, sink: &mut dyn FnMut(tsm_platform::DmaFault)) {
        let faults = core::mem::take(&mut *self.dma_faults.lock().unwrap());
        faults.into_iter().for_each(sink);
    }
}
