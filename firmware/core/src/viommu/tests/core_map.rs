//! Through the core: the TVM address map built by the real MAP_*/UNMAP calls (both of the
//! core's stage-2 formats), the real granule table, the core's IOTLB and its invalidation on
//! UNMAP. Only the vdevice is this test's own (the core's registry needs a connected PDEV; the
//! core's DMA-injection tests cover that path).

use tsm_abi::CallId::{MAP_PRIVATE, MAP_SHARED, UNMAP};
use tsm_platform::PhysMem;

use super::enc::*;
use super::*;
use crate::tests::{FORMATS, build_tvm, harness};
use crate::viommu_glue::Translator;

/// The core's translator with one vdevice of this test's making.
struct WithVdev<'t, 'a> {
    core: Translator<'t, 'a>,
    vdev: VdevView,
}

impl Devices for WithVdev<'_, '_> {
    fn vdevice(&self, requester: Requester, _: Option<u32>) -> Option<VdevView> {
        (requester == RID).then_some(self.vdev)
    }
    fn host_domain(&self, requester: Requester, iova: Iova) -> Option<HostMapping> {
        self.core.host_domain(requester, iova)
    }
}

impl Stage2 for WithVdev<'_, '_> {
    fn stage2(&self, tvm: TvmId, gpa: Gpa) -> Option<S2Entry> {
        self.core.stage2(tvm, gpa)
    }
}

impl SecureMemory for WithVdev<'_, '_> {
    fn is_secure(&self, pa: Pa) -> bool {
        self.core.is_secure(pa)
    }
}

impl<'a> Context for WithVdev<'_, 'a> {
    type Mem = <Translator<'static, 'a> as Context>::Mem;
    fn mem(&self) -> &Self::Mem {
        self.core.mem()
    }
}

/// Level indices 0, 1, 1, 3.
const IOVA: u64 = (1 << 30) | (1 << 21) | (3 << 12);
/// Stage-1 tables of levels 0..3 at these GPAs, the private data page, the shared page.
const TABLES: [u64; 4] = [0x2000, 0x3000, 0x4000, 0x5000];
const PRIVATE: u64 = 0x8000;
const SHARED: u64 = crate::tests::SHARED_GPA + 0x9000;

#[test]
fn two_stage_translation_through_the_core_map_and_its_unmap_invalidation() {
    for format in FORMATS {
        let h = harness(format);
        let t = build_tvm(&h, 10);
        let mut pages = [Pa(0); 5];
        for (i, gpa) in TABLES.iter().chain([PRIVATE].iter()).enumerate() {
            pages[i] = h.delegate(40 + i as u64);
            h.host(MAP_PRIVATE, &[t.tvm.0, *gpa, pages[i].0, u64::MAX, 3])
                .unwrap();
        }
        crate::tests::shared_tables(&h, t.tvm);
        let shared = h.granule(50);
        h.host(MAP_SHARED, &[t.tvm.0, SHARED, shared.0, 3]).unwrap();
        // The guest writes its Arm stage-1 tables (stores to its private pages).
        let put = |table: usize, index: u64, desc: u64| {
            h.sim
                .write(Pa(pages[table].0 + 8 * index), &desc.to_le_bytes())
                .unwrap();
        };
        put(0, 0, TABLES[1] | ARM_VALID | ARM_TABLE_OR_PAGE);
        put(1, 1, TABLES[2] | ARM_VALID | ARM_TABLE_OR_PAGE);
        put(2, 1, TABLES[3] | ARM_VALID | ARM_TABLE_OR_PAGE);
        put(
            3,
            3,
            enc::leaf(Stage1Format::ArmVmsav8_64_4k, 3, PRIVATE, true),
        );
        put(
            3,
            4,
            enc::leaf(Stage1Format::ArmVmsav8_64_4k, 3, SHARED, true),
        );

        let mut table = PasidTable::new();
        table.attach(None, Gpa(TABLES[0]), 48).unwrap();
        let mut ctx = WithVdev {
            core: h.tsm.translator(),
            vdev: VdevView {
                id: VDEV,
                tvm: TvmId(t.tvm.0),
                format: Stage1Format::ArmVmsav8_64_4k,
                tdi_run: false,
                accepted: false,
                stage1: table.lookup(None),
            },
        };
        let go = |ctx: &WithVdev<'_, '_>, r: Request| {
            let cached = translate(ctx, &mut h.tsm.iotlb.lock(), &r);
            assert_eq!(cached, translate_uncached(ctx, &r), "{format:?} {r:?}");
            cached
        };
        // UNLOCKED: T=0 reaches the shared page, not the private one; T=1 nowhere.
        assert_eq!(
            go(&ctx, req(false, IOVA + 0x1010, Access::Write)),
            Ok(Pa(shared.0 + 0x10))
        );
        assert_eq!(
            reason(go(&ctx, req(false, IOVA, Access::Read))),
            (FaultReason::T0ToSecure, None)
        );
        assert_eq!(
            reason(go(&ctx, req(true, IOVA, Access::Read))),
            (FaultReason::T1NotAllowed, None)
        );
        // RUN and accepted: T=1 reaches the private page, twice (the second from the IOTLB).
        ctx.vdev.tdi_run = true;
        ctx.vdev.accepted = true;
        let hits = h.tsm.iotlb.lock().hits();
        for _ in 0..2 {
            assert_eq!(
                go(&ctx, req(true, IOVA + 8, Access::Write)),
                Ok(Pa(pages[4].0 + 8))
            );
        }
        assert!(h.tsm.iotlb.lock().hits() > hits);
        // UNMAP of the level-2 table page: the core's invalidation drops the cached walk.
        h.host(UNMAP, &[t.tvm.0, TABLES[2]]).unwrap();
        assert_eq!(
            reason(go(&ctx, req(true, IOVA, Access::Read))),
            (FaultReason::S1TableNotMapped, Some(2))
        );
        // A table outside the TVM's GPA space faults the same way.
        table.attach(None, Gpa(1 << 45), 48).unwrap();
        ctx.vdev.stage1 = table.lookup(None);
        h.tsm.iotlb.lock().invalidate_pasid(VDEV, None);
        assert_eq!(
            reason(go(&ctx, req(true, IOVA, Access::Read))),
            (FaultReason::S1TableNotMapped, Some(0))
        );
    }
}
