//! A simulated platform: ordinary memory for DRAM, a record of what the host may reach, a
//! deterministic entropy source, a captured console and, optionally, a platform IOMMU
//! ([`SimIommu`]) that walks the DMA tables the core composes. Used by the core's tests, the
//! model-based test and fuzzers (feature `testing`); never part of a firmware image.

extern crate std;

mod write_log;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::vec;
use std::vec::Vec;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_platform::{
    AddressMapFormat, Console, DMA_MAX_TAG, DmaDomain, DmaFault, DmaStream, DmaTableFormat,
    Entropy, EntropyError, ExitCode, GuestMmu, HostCpus, HostIsolation, Iommu, IommuError,
    MemFault, MemRange, MmioRefused, PhysMem, PowerOff, UnmapRefused,
};

/// log2 of the block a HAL maps the host's memory with and splits to take a granule (2 MiB).
const SPLIT_BLOCK_SHIFT: u32 = 21;

/// Where the simulated machine's device BARs live: the only MMIO the host may lose to a
/// TVM's private mapping. Above every DRAM the tests simulate, and holding the ranges of the
/// device model's large report (`tsm_device_model::fixtures`), so fuzzers reach a successful
/// VDEV_MMIO_MAP with the device they already use.
pub const BAR_WINDOW: MemRange = MemRange {
    base: Pa(0x8000_0000),
    size: 0x100_0000,
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
    /// While a [`Watch`] is open: each granule's bytes before the first write to it since the
    /// watch began (by granule index), so "did anything change" costs the written granules, not
    /// a copy of all of DRAM per call.
    journal: Mutex<Option<BTreeMap<usize, Vec<u8>>>>,
    /// Granules removed from the host's address space.
    unmapped: Mutex<BTreeSet<u64>>,
    /// Pages of [`BAR_WINDOW`] taken from the host.
    mmio_taken: Mutex<BTreeSet<u64>>,
    /// The most 2 MiB blocks that may hold granules taken from the host at once (the HALs'
    /// bound of split tables), or `None` for no bound.
    split_blocks: Mutex<Option<usize>>,
    entropy: Mutex<u64>,
    entropy_fails: Mutex<bool>,
    console: Mutex<Vec<(u8, Vec<u8>)>>,
    tlb: Mutex<Vec<TlbOp>>,
    format: AddressMapFormat,
    /// Faults a test says the IOMMU recorded, handed out by `drain_faults`.
    dma_faults: Mutex<Vec<DmaFault>>,
    iommu: Option<SimIommu>,
    /// How often a start request woke the CPUs waiting in the TSM.
    wakes: std::sync::atomic::AtomicU64,
    /// What was written since [`SimPlatform::mark_memory`]; `None` until a harness first
    /// marks (the log keeps a copy of DRAM).
    writes: Mutex<Option<write_log::WriteLog>>,
}

/// CPUs of the simulated machine; the host names CPU n by hardware ID n.
pub const SIM_CPUS: usize = 4;

impl SimPlatform {
    /// A machine with `granules` granules of DRAM from `base`, whose TVM address maps use
    /// `format`, and no IOMMU (DMA is not gated by hardware).
    pub fn new(base: Pa, granules: usize, format: AddressMapFormat) -> Self {
        let size = granules as u64 * GRANULE_SIZE;
        SimPlatform {
            dram: MemRange { base, size },
            mem: Mutex::new(vec![0; granules * GRANULE_SIZE as usize]),
            journal: Mutex::new(None),
            unmapped: Mutex::new(BTreeSet::new()),
            mmio_taken: Mutex::new(BTreeSet::new()),
            split_blocks: Mutex::new(None),
            entropy: Mutex::new(0x9E37_79B9_7F4A_7C15),
            entropy_fails: Mutex::new(false),
            console: Mutex::new(Vec::new()),
            tlb: Mutex::new(Vec::new()),
            format,
            dma_faults: Mutex::new(Vec::new()),
            iommu: None,
            wakes: std::sync::atomic::AtomicU64::new(0),
            writes: Mutex::new(None),
        }
    }

    /// [`SimPlatform::new`] with a platform IOMMU whose DMA tables are in `dma`.
    pub fn with_iommu(
        base: Pa,
        granules: usize,
        format: AddressMapFormat,
        dma: DmaTableFormat,
    ) -> Self {
        SimPlatform {
            iommu: Some(SimIommu::new(dma)),
            ..Self::new(base, granules, format)
        }
    }

    /// Bounds the 2 MiB blocks that may hold granules taken from the host at once, as the
    /// HALs' pools of split tables do: a take in a block without one beyond `blocks` is
    /// refused with [`UnmapRefused::NoSplitTable`].
    pub fn limit_split_blocks(&self, blocks: usize) {
        *self.split_blocks.lock().unwrap() = Some(blocks);
    }

    /// The IOMMU, if the machine has one.
    pub fn iommu(&self) -> Option<&SimIommu> {
        self.iommu.as_ref()
    }

    /// Where a DMA request of `stream` to `iova` goes through the IOMMU (a machine without one
    /// lets every request through: `Some(iova)`), or `None` when the IOMMU faults it. The TSM's
    /// tables are walked as the hardware would: from the IOMMU's TLB if it holds the page,
    /// else from the stream's domain.
    pub fn dma(&self, stream: DmaStream, iova: u64, write: bool) -> Option<Pa> {
        let Some(iommu) = &self.iommu else {
            return Some(Pa(iova));
        };
        match iommu.domain(stream) {
            DmaDomain::Host => (self.dram.contains(Pa(iova), 1) && self.host_can_reach(Pa(iova)))
                .then_some(Pa(iova)),
            DmaDomain::Blocked => None,
            DmaDomain::Table { root, tag } => iommu.translate(self, root, tag, iova, write),
        }
    }

    /// [`SimPlatform::dma`] by a device: a request the IOMMU refuses is recorded as a
    /// translation fault, as the hardware records it, for the next `drain_faults`.
    pub fn device_dma(&self, stream: DmaStream, iova: u64, write: bool) -> Option<Pa> {
        let out = self.dma(stream, iova, write);
        if out.is_none() && self.iommu.is_some() {
            self.record_dma_fault(DmaFault {
                stream,
                iova,
                write,
                kind: tsm_platform::DmaFaultKind::Translation,
            });
        }
        out
    }

    /// Records `fault` as if an IOMMU had: the next `drain_faults` hands it out.
    pub fn record_dma_fault(&self, fault: DmaFault) {
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

    /// This machine with its writes logged from now on and memory marked
    /// ([`SimPlatform::mark_memory`]). No copy of DRAM is made, here or at any mark: the log
    /// keeps a granule's bytes when it is first written after a mark, so a harness that
    /// builds a machine per run (the dispatcher fuzzer) pays only for the granules it writes.
    pub fn with_write_log(self) -> Self {
        let len = self.mem.lock().unwrap().len();
        *self.writes.lock().unwrap() = Some(write_log::WriteLog::new(len));
        self
    }

    /// Remembers DRAM as it is now, for [`SimPlatform::changed_since_mark`] (the log starts,
    /// or forgets what was written before).
    pub fn mark_memory(&self) {
        let len = self.mem.lock().unwrap().len();
        let mut writes = self.writes.lock().unwrap();
        match writes.as_mut() {
            Some(log) => log.mark(),
            None => *writes = Some(write_log::WriteLog::new(len)),
        }
    }

    /// The granules whose contents differ from the last [`SimPlatform::mark_memory`]
    /// (ascending): exactly what comparing all of DRAM with a copy taken at the mark finds,
    /// at the cost of the granules written since (every store goes through
    /// [`PhysMem::write`]). Panics when memory was never marked.
    pub fn changed_since_mark(&self) -> Vec<Pa> {
        let mem = self.mem.lock().unwrap();
        let writes = self.writes.lock().unwrap();
        let log = writes
            .as_ref()
            .expect("mark_memory before changed_since_mark");
        log.changed(&mem)
            .into_iter()
            .map(|off| Pa(self.dram.base.0 + off as u64))
            .collect()
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
        if let Some(journal) = self.journal.lock().unwrap().as_mut()
            && !data.is_empty()
        {
            let g = GRANULE_SIZE as usize;
            for i in off / g..=(off + data.len() - 1) / g {
                journal
                    .entry(i)
                    .or_insert_with(|| mem[i * g..(i + 1) * g].to_vec());
            }
        }
        if let Some(log) = self.writes.lock().unwrap().as_mut() {
            log.before_write(&mem, off, data.len());
        }
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

/// The simulated machine has [`SIM_CPUS`] CPUs, and PSCI when its maps are Arm's (as on
/// aarch64).
impl HostCpus for SimPlatform {
    fn cpu_index(&self, hw_id: u64) -> Option<usize> {
        usize::try_from(hw_id).ok().filter(|&i| i < SIM_CPUS)
    }

    fn wake_cpus(&self) {
        self.wakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn has_psci(&self) -> bool {
        self.format == AddressMapFormat::ArmStage2
    }
}

impl SimPlatform {
    /// How often a start request woke the CPUs waiting in the TSM.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl HostIsolation for SimPlatform {
    fn unmap_from_host(&self, pa: Pa) -> Result<(), UnmapRefused> {
        self.offset(pa, GRANULE_SIZE as usize)
            .map_err(|_| UnmapRefused::NotHostMemory)?;
        let mut unmapped = self.unmapped.lock().unwrap();
        if let Some(limit) = *self.split_blocks.lock().unwrap() {
            let block = |g: u64| g >> SPLIT_BLOCK_SHIFT;
            let mut blocks: Vec<u64> = unmapped.iter().map(|&g| block(g)).collect();
            blocks.dedup();
            if !blocks.contains(&block(pa.0)) && blocks.len() >= limit {
                return Err(UnmapRefused::NoSplitTable);
            }
        }
        unmapped.insert(pa.granule_base().0);
        Ok(())
    }

    fn map_to_host(&self, pa: Pa) -> Result<(), MemFault> {
        self.offset(pa, GRANULE_SIZE as usize)?;
        self.unmapped.lock().unwrap().remove(&pa.granule_base().0);
        Ok(())
    }

    fn take_mmio_from_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        if !pa.is_granule_aligned() || !BAR_WINDOW.contains(pa, GRANULE_SIZE) {
            return Err(MmioRefused::NotDeviceMemory);
        }
        if !self.mmio_taken.lock().unwrap().insert(pa.0) {
            return Err(MmioRefused::Taken);
        }
        Ok(())
    }

    fn give_mmio_to_host(&self, pa: Pa) -> Result<(), MmioRefused> {
        if !BAR_WINDOW.contains(pa, GRANULE_SIZE) {
            return Err(MmioRefused::NotDeviceMemory);
        }
        if !self.mmio_taken.lock().unwrap().remove(&pa.0) {
            return Err(MmioRefused::NotTaken);
        }
        Ok(())
    }
}

impl SimPlatform {
    /// The pages of [`BAR_WINDOW`] taken from the host (ascending).
    pub fn taken_mmio(&self) -> Vec<Pa> {
        self.mmio_taken
            .lock()
            .unwrap()
            .iter()
            .map(|&p| Pa(p))
            .collect()
    }

    /// Whether the host can reach the device page at `pa` (a page of [`BAR_WINDOW`] no private
    /// MMIO mapping holds).
    pub fn host_has_mmio(&self, pa: Pa) -> bool {
        BAR_WINDOW.contains(pa, GRANULE_SIZE) && !self.mmio_taken.lock().unwrap().contains(&pa.0)
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
    mmio_taken: Vec<u64>,
    pdevs: Vec<crate::tsm::PdevRange>,
}

/// A [`Snapshot`] without the memory: the memory's old bytes are journaled as they are
/// overwritten (see [`Harness::watch`]).
pub struct Watch {
    granules: Vec<(Pa, crate::granule::GranuleState, u16)>,
    unmapped: Vec<Pa>,
    mmio_taken: Vec<u64>,
    pdevs: Vec<crate::tsm::PdevRange>,
}

/// Base of the simulated DRAM.
pub const SIM_BASE: u64 = 0x4000_0000;

impl Harness {
    /// A machine with `granules` granules of DRAM whose first 4 granules are the TSM's, and no
    /// IOMMU.
    pub fn new(granules: usize, format: AddressMapFormat) -> Self {
        Self::on(SimPlatform::new(Pa(SIM_BASE), granules, format))
    }

    /// [`Harness::new`] on a machine whose IOMMU walks DMA tables in `dma`.
    pub fn with_iommu(granules: usize, format: AddressMapFormat, dma: DmaTableFormat) -> Self {
        Self::on(SimPlatform::with_iommu(Pa(SIM_BASE), granules, format, dma))
    }

    fn on(sim: SimPlatform) -> Self {
        use core::sync::atomic::AtomicU16;
        let granules = (sim.dram().size / GRANULE_SIZE) as usize;
        let sim: &'static SimPlatform = std::boxed::Box::leak(std::boxed::Box::new(sim));
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
        let iotlb = std::boxed::Box::leak(std::boxed::Box::new(spin::Mutex::new(
            crate::viommu::Iotlb::new(),
        )));
        let tsm = crate::Tsm::new(sim, sim.dram(), tsm_mem, descs, iotlb)
            .expect("harness sizes are consistent");
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
            mmio_taken: self
                .sim
                .mmio_taken
                .lock()
                .unwrap()
                .iter()
                .copied()
                .collect(),
            pdevs: self.tsm.pdev_ranges().into_iter().collect(),
        }
    }

    /// Starts watching for changes: [`Harness::changed_since`] then says whether anything a
    /// [`Snapshot`] holds differs, as comparing two snapshots would, at the cost of the granules
    /// written in between. One watch at a time per machine.
    pub fn watch(&self) -> Watch {
        *self.sim.journal.lock().unwrap() = Some(BTreeMap::new());
        Watch {
            granules: self.tsm.granules().snapshot().collect(),
            unmapped: self.sim.unmapped_granules(),
            mmio_taken: self
                .sim
                .mmio_taken
                .lock()
                .unwrap()
                .iter()
                .copied()
                .collect(),
            pdevs: self.tsm.pdev_ranges().into_iter().collect(),
        }
    }

    /// Whether anything a [`Snapshot`] holds changed since `w` began (a granule rewritten with
    /// its old bytes is no change); ends the watch.
    pub fn changed_since(&self, w: Watch) -> bool {
        let journal = self.sim.journal.lock().unwrap().take().unwrap_or_default();
        let g = GRANULE_SIZE as usize;
        let mem_changed = {
            let mem = self.sim.mem.lock().unwrap();
            journal
                .iter()
                .any(|(&i, old)| mem[i * g..(i + 1) * g] != old[..])
        };
        mem_changed
            || self.tsm.granules().snapshot().ne(w.granules)
            || self.sim.unmapped_granules() != w.unmapped
            || self
                .sim
                .mmio_taken
                .lock()
                .unwrap()
                .iter()
                .ne(w.mmio_taken.iter())
            || self.tsm.pdev_ranges().iter().ne(w.pdevs.iter())
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

/// What the core asked of the simulated IOMMU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IommuOp {
    /// A stream was pointed at a domain.
    Attach(DmaStream, DmaDomain),
    /// Every cached translation under a tag was dropped.
    Invalidate(u16),
}

/// A platform IOMMU as [`Iommu`] describes it: a domain per stream (the host domain until the
/// core attaches another), single-stage tables walked from their root in the format the
/// platform has, and a TLB per tag that keeps every translation it walked until
/// [`Iommu::invalidate`] of that tag, so a missing invalidation shows as a stale translation.
/// Its walker decodes entries from the architecture documents, not with the core's
/// [`PteFormat`](crate::addrmap::format::PteFormat), so an encoding error in the core is not
/// reproduced here.
pub struct SimIommu {
    format: DmaTableFormat,
    streams: Mutex<BTreeMap<(u16, u16), DmaDomain>>,
    /// (tag, IOVA page) → (PA page, writable).
    tlb: Mutex<BTreeMap<(u16, u64), (u64, bool)>>,
    ops: Mutex<Vec<IommuOp>>,
    /// Streams on segments above this are outside the IOMMU's tables.
    max_segment: Mutex<u16>,
}

impl SimIommu {
    fn new(format: DmaTableFormat) -> Self {
        SimIommu {
            format,
            streams: Mutex::new(BTreeMap::new()),
            tlb: Mutex::new(BTreeMap::new()),
            ops: Mutex::new(Vec::new()),
            max_segment: Mutex::new(u16::MAX),
        }
    }

    /// The domain `stream` is attached to.
    pub fn domain(&self, stream: DmaStream) -> DmaDomain {
        self.streams
            .lock()
            .unwrap()
            .get(&(stream.segment, stream.rid))
            .copied()
            .unwrap_or(DmaDomain::Host)
    }

    /// The requests the core made so far (drained).
    pub fn take_ops(&self) -> Vec<IommuOp> {
        core::mem::take(&mut *self.ops.lock().unwrap())
    }

    /// Makes streams on segments above `max` unknown to the IOMMU (attach: `NoSuchStream`).
    pub fn set_max_segment(&self, max: u16) {
        *self.max_segment.lock().unwrap() = max;
    }

    fn translate(
        &self,
        mem: &SimPlatform,
        root: Pa,
        tag: u16,
        iova: u64,
        write: bool,
    ) -> Option<Pa> {
        let page = iova & !(GRANULE_SIZE - 1);
        let offset = iova & (GRANULE_SIZE - 1);
        let cached = self.tlb.lock().unwrap().get(&(tag, page)).copied();
        let (pa, writable) = match cached {
            Some(c) => c,
            None => {
                let walked = self.walk(mem, root, iova)?;
                self.tlb.lock().unwrap().insert((tag, page), walked);
                walked
            }
        };
        (!write || writable).then_some(Pa(pa | offset))
    }

    /// A 4-level walk of a 48-bit IOVA: the page and whether it is writable.
    fn walk(&self, mem: &SimPlatform, root: Pa, iova: u64) -> Option<(u64, bool)> {
        if iova >> 48 != 0 {
            return None;
        }
        let mut table = root.0;
        let (mut read, mut write) = (true, true);
        for level in 0..4u32 {
            let shift = 39 - 9 * level;
            let mut b = [0u8; 8];
            mem.read(Pa(table + ((iova >> shift) & 0x1FF) * 8), &mut b)
                .ok()?;
            let d = u64::from_le_bytes(b);
            let low = (1u64 << shift) - 1;
            match self.format {
                // VMSAv8-64 stage 2 (ARM ARM D8.3): bits 1:0 = 11 a table (levels 0-2) or a
                // page (level 3), 01 a block (levels 1-2); AF (10) must be set in a leaf (no
                // hardware AF update); S2AP (7:6): bit 6 read, bit 7 write.
                DmaTableFormat::ArmStage2 => match (d & 0b11, level) {
                    (0b11, 0..=2) => table = d & 0x0000_FFFF_FFFF_F000,
                    (0b11, 3) | (0b01, 1..=2) => {
                        if d & (1 << 10) == 0 {
                            return None;
                        }
                        let pa = (d & 0x0000_FFFF_FFFF_F000 & !low) | (iova & low);
                        return (d & (1 << 6) != 0)
                            .then_some((pa & !(GRANULE_SIZE - 1), d & (1 << 7) != 0));
                    }
                    _ => return None,
                },
                // VT-d second level (VT-d spec 9.8): R (0) and W (1) at every level, ANDed;
                // neither set: not present; PS (7) a 1 GiB / 2 MiB page at levels 1 / 2; the
                // address in bits 51:12.
                DmaTableFormat::VtdSecondLevel => {
                    if d & 0b11 == 0 {
                        return None;
                    }
                    read &= d & 1 != 0;
                    write &= d & 2 != 0;
                    let addr = d & 0x000F_FFFF_FFFF_F000;
                    if level == 3 || (matches!(level, 1 | 2) && d & (1 << 7) != 0) {
                        let pa = (addr & !low) | (iova & low);
                        return read.then_some((pa & !(GRANULE_SIZE - 1), write));
                    }
                    table = addr;
                }
            }
        }
        None
    }
}

impl Iommu for SimPlatform {
    fn present(&self) -> bool {
        self.iommu.is_some()
    }

    fn table_format(&self) -> Option<DmaTableFormat> {
        self.iommu.as_ref().map(|i| i.format)
    }

    fn attach(&self, stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError> {
        let iommu = self.iommu.as_ref().ok_or(IommuError::Absent)?;
        if stream.segment > *iommu.max_segment.lock().unwrap() {
            return Err(IommuError::NoSuchStream);
        }
        if let DmaDomain::Table { root, tag } = domain
            && (tag == 0 || tag > DMA_MAX_TAG || !root.is_granule_aligned())
        {
            return Err(IommuError::BadDomain);
        }
        iommu
            .ops
            .lock()
            .unwrap()
            .push(IommuOp::Attach(stream, domain));
        iommu
            .streams
            .lock()
            .unwrap()
            .insert((stream.segment, stream.rid), domain);
        Ok(())
    }

    fn invalidate(&self, tag: u16) {
        if let Some(iommu) = &self.iommu {
            iommu.ops.lock().unwrap().push(IommuOp::Invalidate(tag));
            iommu.tlb.lock().unwrap().retain(|k, _| k.0 != tag);
        }
    }

    /// The faults [`SimPlatform::record_dma_fault`] recorded ([`SimPlatform::dma`] answers each
    /// request and records none).
    fn drain_faults(&self, sink: &mut dyn FnMut(DmaFault)) {
        let faults = core::mem::take(&mut *self.dma_faults.lock().unwrap());
        faults.into_iter().for_each(sink);
    }
}
