//! The build machine's stand-in for QEMU: the host's calls go to the monitor core over its
//! simulated platform, and a simulated vCPU runs the guest script in-process.
//!
//! The core's VCPU_RUN has no world switch yet (it checks its arguments and returns
//! `NotSupported`; the HAL's run path is being written). Where it does, this harness does what
//! the HAL will: it enters the vCPU (a thread running the guest script, one step at a time),
//! sends each guest call to the core as `Origin::Guest`, and turns the guest's exits into the
//! exit record of docs/abi.md §10.4: G_EXIT → GUEST_EXIT; a guest call that starts a device
//! operation → DEVICE_REQUEST until the core reports the operation's result
//! (`Tsm::guest_op_result`), which the guest's call then returns; a host call → DENIED_CALL
//! (the guest got `Denied`); an access outside the TVM's map, found by walking the core's own
//! address map → FAULT.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::Transport;
use tsm_abi::call::{CallId, Caller};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_abi::status::{Status, StatusCode};
use tsm_core::addrmap::{AddressMap, format};
use tsm_core::granule::GranuleState;
use tsm_core::testing::Harness;
use tsm_core::Origin;
use tsm_hal::platform::{AddressMapFormat, PhysMem};
use tsm_scenarios::{GuestEnv, GuestFault, HostEnv, Probe};
use zerocopy::{FromZeros, IntoBytes};

/// Granules of simulated DRAM: the TSM's 4, then room for one scenario's pool.
const DRAM_GRANULES: usize = 64 + tsm_scenarios::pool::MAX_GRANULES as usize;
/// Where the pool starts.
const POOL_FIRST: u64 = 64;
/// A guest that does not exit within this is hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

struct Vcpu {
    tvm: Pa,
    arg0: u64,
    running: Option<Running>,
    finished: bool,
}

struct Running {
    resume: Sender<()>,
    exits: Receiver<VcpuExit>,
}

/// The simulated machine, shared by the host CPUs and the vCPU threads.
pub struct Sim {
    pub h: &'static Harness,
    format: AddressMapFormat,
    roots: Mutex<HashMap<u64, u64>>,
    vcpus: Mutex<HashMap<u64, Vcpu>>,
    image: Vec<u8>,
}

impl Sim {
    pub fn new(format: AddressMapFormat) -> Arc<Sim> {
        let h: &'static Harness = Box::leak(Box::new(Harness::new(DRAM_GRANULES, format)));
        // A stand-in image (the guest script runs in-process): 3 pages and a bit, so loading
        // covers full pages, a partial one and the zero-filled rest.
        let image = (0..3 * GRANULE_SIZE as usize + 100).map(|i| (i % 251) as u8).collect();
        Arc::new(Sim {
            h,
            format,
            roots: Mutex::new(HashMap::new()),
            vcpus: Mutex::new(HashMap::new()),
            image,
        })
    }

    /// A host CPU.
    pub fn host(self: &Arc<Self>) -> SimHost {
        SimHost { sim: self.clone() }
    }

    /// The invariant checker, and every granule of the scenario's pool back in NS.
    pub fn check_clean(&self) {
        self.h.check();
        for (pa, state, refs) in self.h.tsm.granules().snapshot() {
            if pa.0 >= self.h.granule(POOL_FIRST).0 {
                assert_eq!((state, refs), (GranuleState::Ns, 0), "granule {pa:x?} after the scenario");
            }
        }
    }

    fn track(&self, regs: &CallRegs, r: &CallResult) {
        if r.status != 0 {
            return;
        }
        let a = regs.args;
        match CallId::try_from(regs.fid) {
            Ok(CallId::TVM_CREATE) => {
                self.roots.lock().unwrap().insert(a[0], a[2]);
            }
            Ok(CallId::VCPU_CREATE) => {
                let v = Vcpu { tvm: Pa(a[0]), arg0: a[3], running: None, finished: false };
                self.vcpus.lock().unwrap().insert(a[1], v);
            }
            _ => {}
        }
    }

    /// VCPU_RUN as the HAL will do it: enter the vCPU, wait for its next exit, write the
    /// record.
    fn run(self: &Arc<Self>, vcpu: Pa, exit: Pa) -> CallResult {
        let mut vcpus = self.vcpus.lock().unwrap();
        let v = vcpus.get_mut(&vcpu.0).expect("VCPU_RUN of a vCPU the core accepted");
        assert!(!v.finished, "VCPU_RUN of a vCPU that already exited (the core must refuse it)");
        if v.running.is_none() {
            let (resume, resume_rx) = channel();
            let (exit_tx, exits) = channel();
            let root = Pa(*self.roots.lock().unwrap().get(&v.tvm.0).expect("TVM of the vCPU"));
            let mut guest = SimGuest { sim: self.clone(), vcpu, root, resume: resume_rx, exits: exit_tx };
            let arg0 = v.arg0;
            std::thread::spawn(move || {
                if guest.resume.recv().is_err() {
                    return;
                }
                match tsm_scenarios::guest::main(&mut guest, arg0) {
                    Ok(code) => {
                        let _ = tsm_abi::api::guest::g_exit(&mut guest, code);
                    }
                    Err(fault) => {
                        let mut rec = VcpuExit::new_zeroed();
                        rec.reason = ExitReason::Fault.raw();
                        rec.flags = (ExitFlags::GPA_VALID
                            | if fault.write { ExitFlags::WRITE } else { ExitFlags::empty() })
                        .bits();
                        rec.gpa = fault.gpa.granule_base().0;
                        let _ = guest.exits.send(rec);
                    }
                }
            });
            v.running = Some(Running { resume, exits });
        }
        let running = v.running.as_ref().unwrap();
        running.resume.send(()).expect("vCPU thread alive");
        let rec = running.exits.recv_timeout(STEP_TIMEOUT).expect("the guest exits");
        if rec.reason == ExitReason::GuestExit.raw() || rec.reason == ExitReason::Fault.raw() {
            v.finished = true;
        }
        drop(vcpus);
        self.h.sim.host_write(exit, rec.as_bytes()).expect("exit record in host memory");
        CallResult::ok([u64::from(rec.reason), 0, 0, 0])
    }
}

/// One host CPU.
pub struct SimHost {
    pub sim: Arc<Sim>,
}

impl Transport for SimHost {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        let r = self.sim.h.tsm.handle(Origin::Host, regs);
        if regs.fid == u64::from(CallId::VCPU_RUN.fid())
            && r.status == Status::new(StatusCode::NotSupported).to_raw()
        {
            return self.sim.run(Pa(regs.args[0]), Pa(regs.args[1]));
        }
        self.sim.track(regs, &r);
        r
    }
}

impl HostEnv for SimHost {
    fn read(&mut self, pa: Pa, out: &mut [u8]) -> bool {
        self.sim.h.sim.host_read(pa, out).is_ok()
    }

    fn write(&mut self, pa: Pa, data: &[u8]) -> bool {
        self.sim.h.sim.host_write(pa, data).is_ok()
    }

    fn probe(&mut self, pa: Pa, write: bool) -> Probe {
        let r = if write {
            self.sim.h.sim.host_write(pa, &[0xAA; 8])
        } else {
            self.sim.h.sim.host_read(pa, &mut [0; 8])
        };
        if r.is_ok() { Probe::Reached } else { Probe::Blocked }
    }

    fn pool(&self) -> (Pa, u64) {
        (self.sim.h.granule(POOL_FIRST), tsm_scenarios::pool::MAX_GRANULES)
    }

    fn tsm_memory(&self) -> Pa {
        self.sim.h.granule(1)
    }

    fn guest_image(&self) -> Option<&[u8]> {
        Some(&self.sim.image)
    }
}

/// A vCPU: the guest script's transport and memory.
struct SimGuest {
    sim: Arc<Sim>,
    vcpu: Pa,
    root: Pa,
    resume: Receiver<()>,
    exits: Sender<VcpuExit>,
}

impl SimGuest {
    /// Exits to the host with `rec` and waits to be run again.
    fn exit(&mut self, rec: VcpuExit) {
        self.exits.send(rec).expect("host waits in VCPU_RUN");
        self.resume.recv().expect("host runs the vCPU again");
    }

    /// The PA behind `gpa` through the core's own address map of the TVM.
    fn translate(&self, gpa: Gpa, write: bool) -> Result<Pa, GuestFault> {
        let fault = GuestFault { gpa, write };
        let map = AddressMap::new(self.sim.h.sim, format::for_platform(self.sim.format), self.root);
        let leaf = map.lookup(gpa.granule_base()).map_err(|_| fault)?;
        if write && !leaf.perms.write {
            return Err(fault);
        }
        Ok(Pa(leaf.pa.0 + gpa.granule_offset()))
    }
}

impl Transport for SimGuest {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        let r = self.sim.h.tsm.handle(Origin::Guest { vcpu: self.vcpu }, regs);
        let status = Status::from_raw(r.status).expect("defined status");
        let call = CallId::try_from(regs.fid).ok();
        let mut rec = VcpuExit::new_zeroed();
        if status == Status::new(StatusCode::Denied) && call.is_some_and(|c| c.caller() == Caller::Host) {
            rec.reason = ExitReason::DeniedCall.raw();
            rec.fid = regs.fid;
            self.exit(rec);
            return r;
        }
        if call == Some(CallId::G_EXIT) && status.is_success() {
            rec.reason = ExitReason::GuestExit.raw();
            rec.code = regs.args[0];
            // The vCPU never runs again: no wait.
            let _ = self.exits.send(rec);
            return r;
        }
        if status.code == StatusCode::NeedsDeviceIo {
            let vdev = Pa(r.out[0]);
            rec.reason = ExitReason::DeviceRequest.raw();
            rec.vdev = vdev.0;
            rec.vdev_op = r.out[1] as u32;
            loop {
                self.exit(rec);
                if let Some(s) = self.sim.h.tsm.guest_op_result(vdev) {
                    return if s.is_success() { CallResult::ok([0; 4]) } else { CallResult::status(s) };
                }
            }
        }
        r
    }
}

impl GuestEnv for SimGuest {
    fn read(&mut self, gpa: Gpa, out: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in out.iter_mut().enumerate() {
            let pa = self.translate(Gpa(gpa.0 + i as u64), false)?;
            let mut one = [0u8];
            self.sim.h.sim.read(pa, &mut one).expect("mapped page in DRAM");
            *b = one[0];
        }
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), GuestFault> {
        for (i, b) in data.iter().enumerate() {
            let pa = self.translate(Gpa(gpa.0 + i as u64), true)?;
            self.sim.h.sim.write(pa, &[*b]).expect("mapped page in DRAM");
        }
        Ok(())
    }
}
