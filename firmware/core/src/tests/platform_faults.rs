//! The platform IOMMU's faults reach the host through the host-domain event queue: EVENT_READ
//! drains them first, each with its requester and the reason the host domain gives it
//! (docs/design.md "The platform IOMMU").

use tsm_abi::CallId::*;
use tsm_abi::event::{EventFlags, EventReason, HOST_DOMAIN_EVENTS, HostEvent};
use tsm_abi::status::Status;
use tsm_abi::status::StatusCode::Empty;
use tsm_platform::{AddressMapFormat, DmaFault, DmaFaultKind, DmaStream};
use zerocopy::FromBytes;

use super::harness;

/// The host's buffer for the records, and a granule it delegates.
const BUF: u64 = 10;
const DELEGATED: u64 = 11;

#[test]
fn iommu_faults_reach_the_host_domain_queue_with_their_reason() {
    let h = harness(AddressMapFormat::ArmStage2);
    let buf = h.granule(BUF);
    let secure = h.delegate(DELEGATED);
    let stream = DmaStream {
        segment: 0,
        rid: 0x10,
    };
    let faults = [
        // A write into a granule the host gave away: T=0 to secure memory.
        (
            secure.0 + 0x40,
            true,
            DmaFaultKind::Translation,
            EventReason::T0ToSecure,
        ),
        // Into the TSM's own memory (granule 0): secure too.
        (
            h.granule(0).0,
            true,
            DmaFaultKind::Translation,
            EventReason::T0ToSecure,
        ),
        // No DRAM there: the host domain maps nothing.
        (
            0x1000,
            false,
            DmaFaultKind::Translation,
            EventReason::Stage2Translation,
        ),
        // A refused right outside DRAM, and anything else the IOMMU refused, is the host
        // domain's refusal too.
        (
            0x2000,
            false,
            DmaFaultKind::Permission,
            EventReason::Stage2Translation,
        ),
        (
            buf.0,
            false,
            DmaFaultKind::Other,
            EventReason::Stage2Translation,
        ),
    ];
    for (iova, write, kind, _) in faults {
        h.sim.record_dma_fault(DmaFault {
            stream,
            iova,
            write,
            kind,
        });
    }
    for (n, (_, write, _, reason)) in faults.iter().enumerate() {
        let left = h.host(EVENT_READ, &[HOST_DOMAIN_EVENTS, buf.0]).unwrap();
        assert_eq!(left[0], (faults.len() - n - 1) as u64);
        let mut b = [0u8; 32];
        h.sim.host_read(buf, &mut b).unwrap();
        let ev = HostEvent::read_from_bytes(&b).unwrap();
        assert_eq!(
            (ev.vdev, ev.segment, ev.rid, ev.reason, ev.sequence),
            (0, 0, 0x10, reason.raw(), n as u64 + 1)
        );
        assert_eq!(ev.flags & EventFlags::WRITE.bits() != 0, *write);
    }
    h.refused(EVENT_READ, &[HOST_DOMAIN_EVENTS, buf.0], Status::new(Empty));
    h.check();
}

/// A fault is read after the request: a granule undelegated by then (another CPU's
/// GRANULE_UNDELEGATE) was still secure when the IOMMU refused the request, and the record must
/// say so, not call it memory the host domain does not have — whether the HAL reports the
/// refusal as a missing translation or (VT-d, classified by a walk of the tables as they are
/// when the fault is read) as a refused right.
#[test]
fn a_fault_on_a_granule_undelegated_before_it_is_read_is_still_t0_to_secure() {
    let h = harness(AddressMapFormat::ArmStage2);
    let buf = h.granule(BUF);
    for kind in [DmaFaultKind::Translation, DmaFaultKind::Permission] {
        let secure = h.delegate(DELEGATED);
        h.sim.record_dma_fault(DmaFault {
            stream: DmaStream {
                segment: 0,
                rid: 0x10,
            },
            iova: secure.0 + 0x80,
            write: false,
            kind,
        });
        h.host(GRANULE_UNDELEGATE, &[secure.0]).unwrap();
        h.host(EVENT_READ, &[HOST_DOMAIN_EVENTS, buf.0]).unwrap();
        let mut b = [0u8; 32];
        h.sim.host_read(buf, &mut b).unwrap();
        let ev = HostEvent::read_from_bytes(&b).unwrap();
        assert_eq!(ev.reason, EventReason::T0ToSecure.raw(), "{kind:?}");
    }
    h.check();
}
