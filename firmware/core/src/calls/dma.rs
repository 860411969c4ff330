//! VDEV_DMA_TABLE: a granule for the DMA table of a vdevice, the single-stage table the
//! platform IOMMU walks for its stream ([`crate::dma_tables`]).

use tsm_abi::call::args;
use tsm_abi::regs::CallResult;
use tsm_abi::status::{Status, StatusCode};
use tsm_platform::DmaDomain;

use crate::dispatch::Reply;
use crate::dma_tables::{MAX_DMA_TABLES, stream};
use crate::granule::GranuleState;
use crate::objects::{Room, VdevHandle, internal};
use crate::tsm::Tsm;

/// VDEV_DMA_TABLE: a delegated granule becomes one more table of the vdevice's DMA table
/// (zeroed), and the table is composed again with it. The first one is the root: the vdevice's
/// stream leaves the blocked domain for it. How many the host gives decides how much of what
/// the vIOMMU translates the hardware does too; too few only makes DMA fault.
pub fn vdev_dma_table(t: &Tsm<'_>, a: args::VdevDmaTable) -> Reply {
    if t.iommu.is_none() {
        return Err(Status::new(StatusCode::NotSupported));
    }
    // Before locking the table: a table naming the VDEV itself would wait for its own lock.
    if a.table.granule_base() == a.vdev.granule_base() {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    let mut vdev_room = Room::new();
    let v = t.lock(VdevHandle::new(a.vdev), 1, &mut vdev_room)?;
    let mut d = t.dma_record(a.vdev)?;
    let n = usize::from(d.count);
    if n >= MAX_DMA_TABLES {
        return Err(Status::arg(StatusCode::Capacity, 1));
    }
    // Refused on the published state before locking: a granule of another kind may be held by
    // a call that waits for this VDEV (a host naming a TVM's table here and this VDEV as the
    // page of a MAP_PRIVATE would otherwise make two CPUs wait for each other). A DELEGATED
    // granule's holder waits for nothing; the state is checked again under the lock.
    let state = t.granules.peek(a.table).map_err(|e| e.status(2))?.0;
    if state != GranuleState::Delegated {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    let mut g = t.granules.lock(a.table).map_err(|e| e.status(2))?;
    if g.state() != GranuleState::Delegated {
        return Err(Status::arg(StatusCode::GranuleState, 2));
    }
    if d.tag == 0 {
        return Err(internal());
    }
    let requester = t.requester_of(&v).ok_or_else(internal)?;
    // A delegated granule still holds what the host wrote before delegating it.
    t.scrub(a.table)?;
    if n == 0 {
        // An empty root maps nothing, as the blocked domain did; the refresh below fills it.
        let root = DmaDomain::Table {
            root: a.table,
            tag: d.tag,
        };
        t.platform
            .attach(stream(requester), root)
            .map_err(|_| internal())?;
    }
    let slot = d.tables.get_mut(n).ok_or_else(internal)?;
    *slot = a.table.0;
    d.count = d.count.checked_add(1).ok_or_else(internal)?;
    t.set_dma_record(a.vdev, &d)?;
    g.transition(GranuleState::DmaTable)
        .map_err(|e| e.status(2))?;
    // Published before the refresh, which writes only granules already in DMA_TABLE.
    drop(g);
    t.dma_refresh(a.vdev);
    Ok(CallResult::ok([0; 4]))
}
