//! Scenario `dma-hw`: a real device's DMA, gated by the platform IOMMU the TSM owns
//! (docs/design.md "The platform IOMMU"). The host drives QEMU's `edu` device
//! ([`crate::pci::Edu`]), whose stream is in the host domain:
//!
//! 1. RAM → device → RAM through host pages: the data arrives, and nothing faults;
//! 2. a transfer into a host page (which the IOMMU then has cached), then the same page
//!    delegated and written again: the IOMMU refuses the second write (the host-domain queue
//!    gets a T0_TO_SECURE write fault naming edu's requester ID; the data cannot be checked,
//!    since undelegate scrubs the granule anyway); and a read of a TVM's private page holding a
//!    secret leaves the device's buffer without it (a T0_TO_SECURE read fault);
//! 3. a transfer into the TSM's own memory faults.
//!
//! Each faulting transfer is 64 bytes, and the SMMU records one event per access: the TSM folds
//! them into one fault, so each step expects exactly one record.

use tsm_abi::addr::GRANULE_SIZE;
use tsm_abi::api::host::{self, EventQueue};
use tsm_abi::event::{EventFlags, EventReason, HostEvent};
use zerocopy::{FromZeros, IntoBytes};

use crate::driver::World;
use crate::layout::OTHER_GPA;
use crate::pci::{Direction, Edu};
use crate::{HostEnv, Outcome};

/// Bytes per transfer.
const LEN: u64 = 64;
/// What the TVM's private page holds; never seen in the device's buffer.
const SECRET: u8 = 0x5E;
/// What the device's buffer holds before it is told to read the secret.
const FILL: u8 = 0xA5;

/// The bytes of step 1: every one different, none the secret.
fn pattern() -> [u8; LEN as usize] {
    core::array::from_fn(|i| (i as u8).wrapping_mul(3).wrapping_add(1) | 0x80)
}

/// Runs the scenario.
pub fn run<E: HostEnv>(env: &mut E) -> Outcome {
    let mut w = World::new(env)?;
    let edu = Edu::probe(env)?;
    no_events(env, &w)?;

    // 1. Through the host domain, both ways.
    let src = w.pool.ns(env)?;
    ensure!(env.write(src, &pattern()), "write the source page");
    edu.dma(env, Direction::ToDevice, src.0, 0, LEN)?;
    let dst = w.pool.ns(env)?;
    edu.dma(env, Direction::ToRam, dst.0, 0, LEN)?;
    let mut got = [0u8; LEN as usize];
    ensure!(env.read(dst, &mut got), "read the destination page");
    ensure!(got == pattern(), "edu's DMA did not arrive", got[0]);
    no_events(env, &w)?;
    say!("dma-hw: edu copied host memory to its buffer and back through the host domain");

    // 2. A page the IOMMU has translated before, then delegated: the stale translation must
    // be gone by the time GRANULE_DELEGATE returned.
    let target = w.pool.ns(env)?;
    edu.dma(env, Direction::ToRam, target.0, 0, LEN)?;
    ensure!(env.read(target, &mut got), "read the target page");
    ensure!(
        got == pattern(),
        "edu's DMA to the target page did not arrive"
    );
    must!(host::granule_delegate(env, target), "GRANULE_DELEGATE");
    w.pool.delegated(target);
    edu.dma(env, Direction::ToRam, target.0 + 0x100, 0, LEN)?;
    one_fault(env, &w, &edu, EventReason::T0ToSecure, true)?;
    say!(
        "dma-hw: edu's write into the just delegated granule {=u64:#x} was refused by the IOMMU",
        target.0
    );

    // A TVM's private page with a secret: edu reads it into a buffer holding FILL.
    let t = w.add_tvm(env, &[])?;
    let secret = w.map_private(env, t, OTHER_GPA, Some(&[SECRET; GRANULE_SIZE as usize]))?;
    let fill = w.pool.ns(env)?;
    ensure!(
        env.write(fill, &[FILL; LEN as usize]),
        "write the fill page"
    );
    edu.dma(env, Direction::ToDevice, fill.0, 0, LEN)?;
    edu.dma(env, Direction::ToDevice, secret.0, 0, LEN)?;
    one_fault(env, &w, &edu, EventReason::T0ToSecure, false)?;
    let out = w.pool.ns(env)?;
    edu.dma(env, Direction::ToRam, out.0, 0, LEN)?;
    ensure!(env.read(out, &mut got), "read the device's buffer back");
    ensure!(
        got.iter().all(|&b| b != SECRET),
        "the TVM's secret reached the device",
        secret.0
    );
    say!(
        "dma-hw: edu's read of a TVM's private page {=u64:#x} was refused; its buffer holds no secret",
        secret.0
    );

    // 3. The TSM's own memory.
    let tsm = env.tsm_memory();
    edu.dma(env, Direction::ToRam, tsm.0, 0, LEN)?;
    one_fault(env, &w, &edu, EventReason::T0ToSecure, true)?;
    say!(
        "dma-hw: edu's write into the TSM's memory at {=u64:#x} was refused",
        tsm.0
    );
    w.finish(env)
}

/// The host-domain queue is empty.
fn no_events<E: HostEnv>(env: &mut E, w: &World) -> Outcome {
    let left = must!(
        host::event_read(env, EventQueue::HostDomain, w.event),
        "EVENT_READ host domain"
    );
    ensure!(left.is_none(), "a DMA fault where none was expected");
    Ok(())
}

/// The host-domain queue holds exactly one fault: edu's, for `reason`, a write or a read.
fn one_fault<E: HostEnv>(
    env: &mut E,
    w: &World,
    edu: &Edu,
    reason: EventReason,
    write: bool,
) -> Outcome {
    let left = must!(
        host::event_read(env, EventQueue::HostDomain, w.event),
        "EVENT_READ host domain"
    );
    let left = left.ok_or(crate::Fail::new(
        "no DMA fault recorded: the IOMMU let the transfer through",
        line!(),
    ))?;
    let mut ev = HostEvent::new_zeroed();
    ensure!(env.read(w.event, ev.as_mut_bytes()), "read the event");
    ensure!(
        ev.vdev == 0 && ev.segment == 0 && ev.rid == edu.rid,
        "the fault names another requester",
        ev.rid
    );
    ensure!(ev.reason == reason.raw(), "the fault's reason", ev.reason);
    ensure!(
        (ev.flags & EventFlags::WRITE.bits() != 0) == write,
        "the fault's direction",
        ev.flags
    );
    ensure!(
        left.left == 0,
        "more than one fault for one transfer",
        left.left
    );
    Ok(())
}
