//! The host's CPUs (docs/design.md, "CPU bring-up"): every CPU runs the TSM from boot, but only
//! the boot CPU enters the host; the others wait in the TSM until the host starts them with
//! HOST_CPU_START (or PSCI CPU_ON, [`crate::psci`]), and go back to waiting after HOST_CPU_STOP
//! (CPU_OFF). The host can start a CPU only through here: it never reaches the machine's own
//! CPU start (aarch64: its SMCs and HVCs trap to the TSM; x86_64: it has no local APIC).
//!
//! Each CPU has a state word: OFF (waits in the TSM) → CLAIMED (one start request won the
//! race and is writing its entry) → PENDING (the entry is published; the CPU has not taken it
//! yet) → ON (it runs the host) → OFF again when it stops. A start is one compare-and-swap
//! OFF → CLAIMED, so of two CPUs starting the same CPU exactly one succeeds and the other
//! learns it is already on or pending; only the CPU itself moves PENDING → ON (when it takes
//! its entry) and ON → OFF (when it has left the host).

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tsm_abi::addr::Pa;
use tsm_abi::call::args;
use tsm_abi::regs::CallResult;
use tsm_abi::status::{Status, StatusCode};

use crate::dispatch::Reply;
use crate::granule::GranuleState;
use crate::tsm::Tsm;

/// CPUs the TSM keeps a state for; a CPU whose index the platform reports at or above it
/// cannot be started (both HALs run at most 4).
pub const MAX_HOST_CPUS: usize = 8;

const OFF: u8 = 0;
const CLAIMED: u8 = 1;
const PENDING: u8 = 2;
const ON: u8 = 3;

/// One CPU's state and its published start request.
struct Slot {
    state: AtomicU8,
    entry: AtomicU64,
    arg: AtomicU64,
}

/// Every CPU's state, in the monitor. The boot CPU (index 0) starts ON: boot enters the host
/// on it.
pub(crate) struct CpuStates {
    slots: [Slot; MAX_HOST_CPUS],
}

impl CpuStates {
    pub(crate) fn new() -> Self {
        let slots = core::array::from_fn(|i| Slot {
            state: AtomicU8::new(if i == 0 { ON } else { OFF }),
            entry: AtomicU64::new(0),
            arg: AtomicU64::new(0),
        });
        CpuStates { slots }
    }
}

/// Why a start request was refused; nothing changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StartError {
    /// The host names no CPU that runs the TSM.
    NoSuchCpu,
    /// The entry is not host memory (a secure granule, the TSM's memory, outside DRAM).
    BadEntry,
    /// The CPU runs the host.
    AlreadyOn,
    /// An earlier start request for it has not been taken yet.
    OnPending,
}

/// A CPU's power state, as AFFINITY_INFO reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Power {
    On,
    Off,
    OnPending,
}

impl Tsm<'_> {
    fn slot(&self, hw_id: u64) -> Option<&Slot> {
        self.platform
            .cpu_index(hw_id)
            .and_then(|i| self.cpus.slots.get(i))
    }

    /// Publishes a start request for the CPU the host names `hw_id`: it enters the host at
    /// `entry` with `arg` once it takes the request. `entry` must lie in a host (NS) granule.
    /// That is checked now only: a host that delegates the page afterwards makes its CPU's first
    /// fetch fault behind its stage 2 / nested table. The fetch reads nothing (confidentiality
    /// holds), but the TSM treats a host instruction abort on secure memory as fatal and powers
    /// off — an availability cost the host could cause with SYSTEM_OFF anyway. On x86_64 the
    /// entry state is 32-bit, so an entry at or above 4 GiB fails the CPU's first VMRUN the same
    /// way (QEMU's `q35` DRAM the host gets here is below 4 GiB).
    pub(crate) fn cpu_start(&self, hw_id: u64, entry: u64, arg: u64) -> Result<(), StartError> {
        let slot = self.slot(hw_id).ok_or(StartError::NoSuchCpu)?;
        if !matches!(
            self.granules.peek(Pa(entry).granule_base()),
            Ok((GranuleState::Ns, _))
        ) {
            return Err(StartError::BadEntry);
        }
        match slot
            .state
            .compare_exchange(OFF, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(ON) => return Err(StartError::AlreadyOn),
            Err(_) => return Err(StartError::OnPending),
        }
        slot.entry.store(entry, Ordering::Relaxed);
        slot.arg.store(arg, Ordering::Relaxed);
        slot.state.store(PENDING, Ordering::Release);
        self.platform.wake_cpus();
        Ok(())
    }

    /// The power state of the CPU the host names `hw_id`, `None` if there is no such CPU.
    pub(crate) fn cpu_power(&self, hw_id: u64) -> Option<Power> {
        Some(match self.slot(hw_id)?.state.load(Ordering::Acquire) {
            ON => Power::On,
            OFF => Power::Off,
            _ => Power::OnPending,
        })
    }

    /// For the run loop of CPU `cpu` (the TSM's index) while it waits in the TSM: the entry and
    /// argument of a start request for it, taken once (the CPU is ON from here).
    pub fn take_cpu_start(&self, cpu: u64) -> Option<(u64, u64)> {
        let slot = self.cpus.slots.get(usize::try_from(cpu).ok()?)?;
        if slot.state.load(Ordering::Acquire) != PENDING {
            return None;
        }
        let start = (
            slot.entry.load(Ordering::Relaxed),
            slot.arg.load(Ordering::Relaxed),
        );
        // Only this CPU leaves PENDING.
        slot.state.store(ON, Ordering::Release);
        Some(start)
    }

    /// For the run loop of CPU `cpu`: it has left the host (HOST_CPU_STOP, CPU_OFF) and waits
    /// in the TSM; a start request may name it again.
    pub fn cpu_stopped(&self, cpu: u64) {
        if let Some(slot) = usize::try_from(cpu)
            .ok()
            .and_then(|i| self.cpus.slots.get(i))
        {
            // Only an ON CPU runs the host, so only ON can be left here.
            let _ = slot
                .state
                .compare_exchange(ON, OFF, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// HOST_CPU_START (docs/abi.md): the CPU is checked to exist (argument 1) and the entry to be
/// host memory (argument 2); a CPU that is on or pending is `ObjectState(1)`.
pub fn host_cpu_start(t: &Tsm<'_>, a: args::HostCpuStart) -> Reply {
    match t.cpu_start(a.cpu, a.entry.0, a.arg) {
        Ok(()) => Ok(CallResult::ok([0; 4])),
        Err(StartError::NoSuchCpu) => Err(Status::arg(StatusCode::InvalidArgument, 1)),
        Err(StartError::BadEntry) => Err(Status::arg(StatusCode::InvalidArgument, 2)),
        Err(StartError::AlreadyOn | StartError::OnPending) => {
            Err(Status::arg(StatusCode::ObjectState, 1))
        }
    }
}
