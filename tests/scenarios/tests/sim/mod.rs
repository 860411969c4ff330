//! The build machine's stand-in for QEMU: host calls go to the monitor core over its simulated
//! platform through the firmware's own run loop (`tsm_core::run_loop::host_call`, the step the
//! images' loop takes for each host call), and this harness plays the HAL's part of it as the
//! loop's `GuestCpu`: it runs a vCPU, which is a thread executing the guest script in-process,
//! until the vCPU's next trap (a guest call, or an access the TVM's map does not allow, found by
//! walking the core's own address map). It can stand for a host whose interrupts preempt vCPUs
//! too ([`Sim::interrupt_every`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::Transport;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_core::addrmap::{AddressMap, format};
use tsm_core::granule::GranuleState;
use tsm_core::testing::Harness;
use tsm_platform::run::{EntryError, GuestCpu, GuestExit, Handled, Resume};
use tsm_platform::{AddressMapFormat, PhysMem};
use tsm_scenarios::{GuestEnv, GuestFault, HostEnv, Probe};

/// Granules of simulated DRAM: the TSM's 4, then room for one scenario's pool.
const DRAM_GRANULES: usize = 64 + tsm_scenarios::pool::MAX_GRANULES as usize;
/// Where the pool starts.
const POOL_FIRST: u64 = 64;
/// A guest that does not trap within this is hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// The HAL's handle on a vCPU thread: how to resume it, where its traps arrive.
struct VcpuThread {
    resume: Sender<Resume>,
    traps: Receiver<GuestExit>,
    /// The trap an interrupt came just before: the vCPU reaches it again when it continues.
    held: Option<GuestExit>,
}

/// The simulated machine, shared by the host CPUs and the vCPU threads.
pub struct Sim {
    pub h: &'static Harness,
    format: AddressMapFormat,
    vcpus: Mutex<HashMap<u64, VcpuThread>>,
    image: Vec<u8>,
    /// Every this many guest traps, a host interrupt arrives just before the trap (0: never).
    interrupt_every: AtomicU64,
    /// Guest traps so far, and the interrupts reported.
    traps: AtomicU64,
    pub interrupts: AtomicU64,
}

impl Sim {
    pub fn new(format: AddressMapFormat) -> Arc<Sim> {
        let h: &'static Harness = Box::leak(Box::new(Harness::new(DRAM_GRANULES, format)));
        // A stand-in image (the guest script runs in-process): 3 pages and a bit, so loading
        // covers full pages, a partial one and the zero-filled rest.
        let image = (0..3 * GRANULE_SIZE as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        Arc::new(Sim {
            h,
            format,
            vcpus: Mutex::new(HashMap::new()),
            image,
            interrupt_every: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
        })
    }

    /// From now on a host interrupt preempts every `n`th guest trap (0: none).
    pub fn interrupt_every(&self, n: u64) {
        self.interrupt_every.store(n, Ordering::Relaxed);
    }

    /// A host CPU.
    pub fn host(self: &Arc<Self>) -> SimHost {
        SimHost {
            sim: self.clone(),
            let_through: false,
        }
    }

    /// The invariant checker, and every granule of the scenario's pool back in NS.
    pub fn check_clean(&self) {
        self.h.check();
        for (pa, state, refs) in self.h.tsm.granules().snapshot() {
            if pa.0 >= self.h.granule(POOL_FIRST).0 {
                assert_eq!(
                    (state, refs),
                    (GranuleState::Ns, 0),
                    "granule {pa:x?} after the scenario"
                );
            }
        }
    }

    /// Runs the vCPU whose context area is at `context` until its next trap (a vCPU is
    /// known by its context area, as the HAL knows it).
    fn run_vcpu(self: &Arc<Self>, context: Pa, root: Pa, resume: Resume) -> GuestExit {
        let mut vcpus = self.vcpus.lock().unwrap();
        if let Resume::Start { arg0, .. } = resume {
            vcpus.insert(context.0, self.spawn(root, arg0));
        }
        let t = vcpus
            .get_mut(&context.0)
            .expect("the core resumes only started vCPUs");
        if let Some(trap) = t.held.take() {
            // As the HALs: an interrupted vCPU is continued, its next trap is the one it was
            // about to take.
            assert_eq!(resume, Resume::Continue, "an interrupted vCPU resumed");
            return trap;
        }
        t.resume.send(resume).expect("vCPU thread alive");
        let trap = t.traps.recv_timeout(STEP_TIMEOUT).expect("the guest traps");
        let every = self.interrupt_every.load(Ordering::Relaxed);
        let n = self.traps.fetch_add(1, Ordering::Relaxed) + 1;
        if every != 0 && n.is_multiple_of(every) {
            t.held = Some(trap);
            self.interrupts.fetch_add(1, Ordering::Relaxed);
            return GuestExit::Interrupt;
        }
        trap
    }

    /// A vCPU: a thread that runs the guest script, one trap at a time.
    fn spawn(self: &Arc<Self>, root: Pa, arg0: u64) -> VcpuThread {
        let (resume, resume_rx) = channel();
        let (trap_tx, traps) = channel();
        let mut guest = SimGuest {
            sim: self.clone(),
            root,
            resume: resume_rx,
            traps: trap_tx,
            clock: 0,
        };
        std::thread::spawn(move || {
            // The first resume is the Start itself.
            if guest.resume.recv().is_err() {
                return;
            }
            let fault = match tsm_scenarios::guest::main(&mut guest, arg0) {
                Ok(code) => {
                    // G_EXIT: the core never resumes this vCPU.
                    let _ = tsm_abi::api::guest::g_exit(&mut guest, code);
                    return;
                }
                Err(fault) => fault,
            };
            // The faulting access is retried whenever the vCPU is resumed.
            loop {
                let trap = GuestExit::Fault {
                    syndrome: 0,
                    gpa: Some(fault.gpa),
                    write: fault.write,
                };
                if guest.traps.send(trap).is_err() || guest.resume.recv().is_err() {
                    return;
                }
            }
        });
        VcpuThread {
            resume,
            traps,
            held: None,
        }
    }
}

/// One host CPU.
pub struct SimHost {
    pub sim: Arc<Sim>,
    /// A broken platform that lets the host's probes through to secure memory (to show the
    /// isolation runs fail then).
    pub let_through: bool,
}

impl Transport for SimHost {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        // The CPU index only names the CPU in the loop's log lines, which are off here.
        let mut result = None;
        tsm_core::run_loop::host_call(&self.sim.h.tsm, 0, self, regs, |r| result = Some(*r));
        result.expect("the loop completes every host call")
    }
}

impl GuestCpu for SimHost {
    fn run_guest<T>(
        &self,
        context: Pa,
        root: Pa,
        resume: Resume,
        mut on_exit: impl FnMut(GuestExit) -> Handled<T>,
    ) -> Result<T, EntryError> {
        let mut resume = resume;
        loop {
            match on_exit(self.sim.run_vcpu(context, root, resume)) {
                Handled::Reply(r) => resume = Resume::Return(r),
                Handled::Leave(t) | Handled::Finish(t) => return Ok(t),
            }
        }
    }
}

impl HostEnv for SimHost {
    fn svm_guests(&self) -> bool {
        false
    }

    fn read(&mut self, pa: Pa, out: &mut [u8]) -> bool {
        self.sim.h.sim.host_read(pa, out).is_ok()
    }

    fn write(&mut self, pa: Pa, data: &[u8]) -> bool {
        self.sim.h.sim.host_write(pa, data).is_ok()
    }

    fn probe(&mut self, pa: Pa, write: bool) -> Probe {
        if self.let_through {
            return Probe::Reached;
        }
        let r = if write {
            self.sim.h.sim.host_write(pa, &[0xAA; 8])
        } else {
            self.sim.h.sim.host_read(pa, &mut [0; 8])
        };
        if r.is_ok() {
            Probe::Reached
        } else {
            Probe::Blocked
        }
    }

    fn pool(&self) -> (Pa, u64) {
        (
            self.sim.h.granule(POOL_FIRST),
            tsm_scenarios::pool::MAX_GRANULES,
        )
    }

    fn tsm_memory(&self) -> Pa {
        self.sim.h.granule(1)
    }

    fn guest_image(&self) -> Option<&[u8]> {
        Some(&self.sim.image)
    }
}

/// A vCPU: the guest script's transport, memory and counter.
struct SimGuest {
    sim: Arc<Sim>,
    root: Pa,
    resume: Receiver<Resume>,
    traps: Sender<GuestExit>,
    /// The fake counter: [`CLOCK_READ_TICKS`] per read, [`CLOCK_CALL_TICKS`] per call, so what
    /// a guest times is the same on every run.
    clock: u64,
}

/// Ticks a read of [`SimGuest`]'s counter takes.
pub const CLOCK_READ_TICKS: u64 = 1;
/// Ticks a call of [`SimGuest`] takes.
pub const CLOCK_CALL_TICKS: u64 = 100;

impl SimGuest {
    /// An x86-64 CPU's walk of the TVM's tables for one access: it ignores the Accessed and
    /// Dirty bits when it reads an entry and sets Accessed on every entry it uses (the TVM's
    /// nested walk of these very tables does), Dirty on the page for a write.
    fn x86_walk(&self, map: &AddressMap<'_>, gpa: Gpa, write: bool) -> Option<Pa> {
        const PRESENT: u64 = 1;
        const RW: u64 = 1 << 1;
        const ACCESSED: u64 = 1 << 5;
        const DIRTY: u64 = 1 << 6;
        const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
        let mut table = self.root;
        for level in 0..=3u32 {
            let idx = ((gpa.0 >> (12 + 9 * (3 - level))) & 511) as usize;
            let raw = map.read_raw(table, idx).ok()?;
            if raw & PRESENT == 0 || (write && raw & RW == 0) {
                return None;
            }
            let dirty = if level == 3 && write { DIRTY } else { 0 };
            map.write_raw(table, idx, raw | ACCESSED | dirty).ok()?;
            table = Pa(raw & ADDR);
        }
        Some(Pa(table.0 + gpa.granule_offset()))
    }

    /// The PA behind `gpa`: the x86-64 walk above, or (Arm stage 2, whose Access flag the core
    /// sets and the CPU leaves alone) the core's own lookup of the TVM's map.
    fn translate(&self, gpa: Gpa, write: bool) -> Result<Pa, GuestFault> {
        let fault = GuestFault { gpa, write };
        let map = AddressMap::new(
            self.sim.h.sim,
            format::for_platform(self.sim.format),
            self.root,
        );
        if self.sim.format == AddressMapFormat::X86_64FourLevel {
            return self.x86_walk(&map, gpa, write).ok_or(fault);
        }
        let leaf = map.lookup(gpa.granule_base()).map_err(|_| fault)?;
        if write && !leaf.perms.write {
            return Err(fault);
        }
        Ok(Pa(leaf.pa.0 + gpa.granule_offset()))
    }
}

impl Transport for SimGuest {
    /// A trap to the HAL; the call completes with what the core returns when it resumes us.
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        self.clock = self.clock.wrapping_add(CLOCK_CALL_TICKS);
        self.traps
            .send(GuestExit::Call(*regs))
            .expect("HAL waits for the trap");
        loop {
            match self.resume.recv() {
                Ok(Resume::Return(r)) => return r,
                // Resumed without a result (after an interrupt-like exit): still in the call.
                Ok(Resume::Continue) => self.traps.send(GuestExit::Call(*regs)).expect("HAL"),
                Ok(Resume::Start { .. }) => panic!("a started vCPU restarted"),
                // The machine is gone (the test ended, or the vCPU exited): never return.
                Err(_) => loop {
                    std::thread::park();
                },
            }
        }
    }
}

impl GuestEnv for SimGuest {
    fn read(&mut self, gpa: Gpa, out: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in out.iter_mut().enumerate() {
            let pa = self.translate(Gpa(gpa.0 + i as u64), false)?;
            let mut one = [0u8];
            self.sim
                .h
                .sim
                .read(pa, &mut one)
                .expect("mapped page in DRAM");
            *b = one[0];
        }
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), GuestFault> {
        for (i, b) in data.iter().enumerate() {
            let pa = self.translate(Gpa(gpa.0 + i as u64), true)?;
            self.sim
                .h
                .sim
                .write(pa, &[*b])
                .expect("mapped page in DRAM");
        }
        Ok(())
    }
    fn counter(&mut self) -> u64 {
        self.clock = self.clock.wrapping_add(CLOCK_READ_TICKS);
        self.clock
    }
}
