//! Work CPU 0 hands the host payload's secondary CPUs, for the scenarios that need calls from
//! two CPUs at once (smp, vcpu-smoke). CPU 0 starts a CPU through the TSM
//! (`cpu_start::start`) the first time it posts it a job; the CPU enters the payload at
//! `_start_secondary` and lands in [`secondary`].

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::arch::MAX_CPUS;

/// A job CPU 0 runs on a secondary CPU: its argument in, whether it passed out.
pub type Job = fn(u64) -> bool;

/// Work CPU 0 hands a secondary CPU: `job` = a [`Job`] as an address (0: none) and its `arg`;
/// the CPU answers in `done` (1 = the job passed, 2 = it failed) and clears `job`.
struct Mailbox {
    job: AtomicUsize,
    arg: AtomicU64,
    done: AtomicU64,
    /// Set by CPU 0 to have the CPU leave the host ([`stop`]).
    stop: AtomicBool,
}

static MAILBOXES: [Mailbox; MAX_CPUS as usize] = [const {
    Mailbox {
        job: AtomicUsize::new(0),
        arg: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    }
}; MAX_CPUS as usize];
static ONLINE: [AtomicBool; MAX_CPUS as usize] =
    [const { AtomicBool::new(false) }; MAX_CPUS as usize];

/// A secondary CPU in the host: announces itself, then runs the jobs CPU 0 posts, forever.
pub fn secondary(cpu: u64) -> ! {
    defmt::info!(
        "host payload up on CPU {=u64}: waiting for work from CPU 0",
        cpu
    );
    let (Some(mailbox), Some(online)) = (MAILBOXES.get(cpu as usize), ONLINE.get(cpu as usize))
    else {
        loop {
            core::hint::spin_loop();
        }
    };
    online.store(true, Ordering::Release);
    loop {
        if mailbox.stop.swap(false, Ordering::AcqRel) {
            online.store(false, Ordering::Release);
            crate::arch::stop_self();
            defmt::error!("CPU {=u64}: the TSM did not stop this CPU", cpu);
            online.store(true, Ordering::Release);
        }
        let job = mailbox.job.load(Ordering::Acquire);
        if job == 0 {
            core::hint::spin_loop();
            continue;
        }
        // SAFETY: `post` stored a `Job` function pointer's address here (never anything
        // else, never 0), so turning it back gives the same function pointer.
        let job = unsafe { core::mem::transmute::<usize, Job>(job) };
        let passed = job(mailbox.arg.load(Ordering::Acquire));
        mailbox
            .done
            .store(if passed { 1 } else { 2 }, Ordering::Release);
        mailbox.job.store(0, Ordering::Release);
    }
}

/// Waits (up to a second) for CPU `cpu` to be up in the host.
fn wait_online(cpu: usize) -> bool {
    let deadline = crate::arch::now_us().saturating_add(1_000_000);
    while crate::arch::now_us() < deadline {
        if ONLINE.get(cpu).is_some_and(|o| o.load(Ordering::Acquire)) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Starts `job(arg)` on CPU `cpu` (1..4) once it is up in the host and idle, starting the CPU
/// first if it is not up; false if it does not come up or is still busy. CPU 0 runs the
/// scenario meanwhile; [`wait_job`] collects the result.
pub fn post_job(cpu: usize, job: Job, arg: u64) -> bool {
    let up = |c: usize| ONLINE.get(c).is_some_and(|o| o.load(Ordering::Acquire));
    if cpu != 0 && !up(cpu) && !crate::cpu_start::start(cpu as u64) {
        return false;
    }
    let Some(mailbox) = MAILBOXES.get(cpu).filter(|_| cpu != 0 && wait_online(cpu)) else {
        return false;
    };
    if mailbox.job.load(Ordering::Acquire) != 0 {
        return false;
    }
    mailbox.done.store(0, Ordering::Release);
    mailbox.arg.store(arg, Ordering::Release);
    mailbox.job.store(job as usize, Ordering::Release);
    true
}

/// Has idle CPU `cpu` leave the host through the TSM (`arch::stop_self`); false if it is not
/// up. It is off once the TSM says so (`cpu_start::stop_and_restart`).
pub fn stop(cpu: usize) -> bool {
    let (Some(mailbox), Some(online)) = (MAILBOXES.get(cpu), ONLINE.get(cpu)) else {
        return false;
    };
    if cpu == 0 || !online.load(Ordering::Acquire) || mailbox.job.load(Ordering::Acquire) != 0 {
        return false;
    }
    mailbox.stop.store(true, Ordering::Release);
    true
}

/// Waits up to `timeout_us` for the job posted to CPU `cpu`: `Some(passed)`, or `None` if it
/// did not finish in time.
pub fn wait_job(cpu: usize, timeout_us: u64) -> Option<bool> {
    let mailbox = MAILBOXES.get(cpu)?;
    let deadline = crate::arch::now_us().saturating_add(timeout_us);
    loop {
        match mailbox.done.load(Ordering::Acquire) {
            1 => return Some(true),
            2 => return Some(false),
            _ if crate::arch::now_us() >= deadline => return None,
            _ => core::hint::spin_loop(),
        }
    }
}
