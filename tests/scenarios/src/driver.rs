//! The host driver: what a VMM and its TSM driver do, as reusable steps. A [`World`] records
//! every object it created so teardown can undo all of it in the order the ABI enforces.

use heapless::Vec;
use tsm_abi::addr::{GRANULE_SIZE, Gpa, Pa};
use tsm_abi::api::{self, Transport, host};
use tsm_abi::exit::{ExitReason, VcpuExit};
use tsm_abi::params::{LockFlags, MapFlags, PdevFlags, PdevParams, TvmParams, VdevParams};
use tsm_abi::state::VdevState;
use tsm_abi::status::StatusCode;
use tsm_abi::version::AbiVersion;
use tsm_abi::viommu::ViommuType;
use tsm_device_model::identity::DeviceIdentity;
use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{
    GPA_BITS, ID_FORMAT, IMAGE_GPA, IMAGE_PAGES, L3_GPA, RID_BASE, RID_COUNT, SCRATCH_GPA, SEGMENT,
    SHARED_L3_GPA, VBDF_BASE,
};
use crate::link::Link;
use crate::pool::Pool;
use crate::{Fail, HostEnv, Outcome};

/// The raw form of a wrapper error, for [`Fail::got`]: the status word, or the malformed word
/// with bit 63 set.
pub fn raw_error(e: api::Error) -> u64 {
    match e {
        api::Error::Tsm(s) => s.to_raw(),
        api::Error::Malformed { status, .. } => status | 1 << 63,
    }
}

/// The GPA a level-`level` table on the way to [`L3_GPA`] covers from: aligned to the
/// 2^(12 + 9·(4 − level)) bytes it spans (docs/abi.md §5.2).
pub const fn table_gpa(level: u8) -> Gpa {
    covering(L3_GPA, level)
}

/// The GPA a level-`level` table covering `gpa` starts at.
const fn covering(gpa: Gpa, level: u8) -> Gpa {
    let span = 1u64 << (12 + 9 * (4 - level as u32));
    Gpa(gpa.0 & !(span - 1))
}

/// The tables the shared half needs beyond the private ones: (level, GPA) of those on the
/// way to [`SHARED_L3_GPA`] that the way to [`L3_GPA`] does not share.
fn shared_tables() -> impl Iterator<Item = (u8, Gpa)> {
    (1u8..=3)
        .map(|l| (l, covering(SHARED_L3_GPA, l)))
        .filter(|&(l, g)| g.0 != table_gpa(l).0)
}

/// Most vCPUs of one TVM in the scenarios.
pub const MAX_VCPUS: usize = 12;
/// Most pages a TVM of the scenarios maps.
const MAX_MAPPED: usize = IMAGE_PAGES as usize + 8;
/// Most exits one VCPU_RUN loop handles before the scenario gives up (a guest that never ends).
/// INTERRUPT exits do not count: they are the host's timer, not the guest's doing.
const MAX_EXITS: usize = 64;
/// Most INTERRUPT exits one VCPU_RUN loop takes. A tick of a Linux host's timer while a vCPU
/// runs is one, and a guest step may span many ticks under a loaded TCG, hence the generous
/// figure; it is still a bound, so a TSM that reports nothing but interrupts (or a host that
/// calls VCPU_RUN with its interrupts masked, where the pending one is never taken) fails the
/// story instead of hanging it.
const MAX_INTERRUPTS: usize = 100_000;

/// One TVM and what it holds.
#[derive(Debug)]
pub struct Tvm {
    /// The handle.
    pub tvm: Pa,
    /// Level 1..3 tables covering [`L3_GPA`].
    pub tables: [Pa; 3],
    /// The tables of the shared half ([`shared_tables`]): level, GPA, granule.
    pub shared_tables: Vec<(u8, Gpa, Pa), 3>,
    /// vCPUs, in creation order.
    pub vcpus: Vec<Pa, MAX_VCPUS>,
    /// Pages mapped (private and shared), with the granule behind each.
    pub mapped: Vec<(Gpa, Pa), MAX_MAPPED>,
}

impl Tvm {
    /// The granule mapped at `gpa` (as the host mapped it).
    pub fn page(&self, gpa: Gpa) -> Option<Pa> {
        self.mapped
            .iter()
            .find(|(g, _)| *g == gpa.granule_base())
            .map(|(_, p)| Pa(p.0 + gpa.granule_offset()))
    }
}

/// One vdevice.
#[derive(Clone, Copy, Debug)]
pub struct Vdev {
    /// The handle.
    pub pa: Pa,
    /// Physical requester ID.
    pub pbdf: u16,
    /// The guest's name for it.
    pub vbdf: u16,
    /// Its TVM (index in [`World::tvms`]).
    pub tvm: usize,
}

/// How a vCPU came back to the host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Exit {
    /// G_EXIT with this code.
    Exited(u64),
    /// The guest issued a host call (its way to hand the host a step of the scenario).
    Yielded,
    /// The guest touched a GPA its TVM does not map.
    Fault {
        /// The GPA (granule-aligned), 0 when not valid.
        gpa: u64,
    },
}

/// Everything a scenario built.
#[derive(Debug)]
pub struct World {
    /// Host memory.
    pub pool: Pool,
    /// The TSM's FEATURES.
    pub features: host::Features,
    /// The device and its COMMUNICATE buffer.
    pub link: Link,
    /// The exit-record buffer.
    pub exit: Pa,
    /// A host event-record buffer.
    pub event: Pa,
    /// TVMs.
    pub tvms: Vec<Tvm, 2>,
    /// The PDEV, once created.
    pub pdev: Option<Pa>,
    /// vIOMMUs.
    pub viommus: Vec<Pa, 6>,
    /// vdevices.
    pub vdevs: Vec<Vdev, 8>,
    /// DMA checks were left out (see [`World::dma_checks`]).
    dma_skipped: bool,
}

impl World {
    /// Negotiates ABI 1.0, reads FEATURES, sets up the host buffers and the device.
    pub fn new<E: HostEnv>(env: &mut E) -> Outcome<World> {
        Self::with_tdis(env, &crate::layout::TDIS)
    }

    /// [`World::new`] with a device whose functions are `tdis` (PF0 first).
    pub fn with_tdis<E: HostEnv>(
        env: &mut E,
        tdis: &'static [tsm_device_model::TdiConfig<'static>],
    ) -> Outcome<World> {
        let want = AbiVersion { major: 1, minor: 0 };
        let v = must!(host::version(env, want), "VERSION");
        ensure!(v.chosen == Some(want), "VERSION 1.0 not granted");
        let features = must!(host::read_features(env), "FEATURES");
        let mut pool = Pool::new(env);
        let comm = pool.ns(env)?;
        let exit = pool.ns(env)?;
        let event = pool.ns(env)?;
        Ok(World {
            pool,
            features,
            link: Link::with_tdis(comm, tdis)?,
            exit,
            event,
            tvms: Vec::new(),
            pdev: None,
            viommus: Vec::new(),
            vdevs: Vec::new(),
            dma_skipped: false,
        })
    }

    /// The TVM at `t`.
    pub fn tvm(&self, t: usize) -> Outcome<&Tvm> {
        self.tvms.get(t).ok_or(Fail::new("no such TVM", line!()))
    }

    /// The vdevice at `v`.
    pub fn vdev(&self, v: usize) -> Outcome<Vdev> {
        self.vdevs
            .get(v)
            .copied()
            .ok_or(Fail::new("no such vdevice", line!()))
    }

    /// A fresh NS page holding the TVM_CREATE parameters of every TVM here, with room for
    /// `max_vcpus` vCPUs.
    pub fn tvm_params<E: HostEnv>(&mut self, env: &mut E, max_vcpus: u32) -> Outcome<Pa> {
        let params = TvmParams {
            gpa_bits: GPA_BITS,
            max_vcpus,
            ..TvmParams::new_zeroed()
        };
        let p = self.pool.ns(env)?;
        ensure!(env.write(p, params.as_bytes()), "write TvmParams");
        Ok(p)
    }

    /// A new TVM (still NEW) with its tables, the guest image, two private scratch pages, and
    /// one vCPU per entry of `vcpu_args` (entered at [`IMAGE_GPA`]); returns its index.
    pub fn add_tvm<E: HostEnv>(&mut self, env: &mut E, vcpu_args: &[u64]) -> Outcome<usize> {
        // One slot spare, for scenarios that add a vCPU later.
        let index = self.add_empty_tvm(env, vcpu_args.len() as u32 + 1)?;
        self.load_image(env, index)?;
        for i in 0..2 {
            self.map_private(env, index, Gpa(SCRATCH_GPA.0 + i * GRANULE_SIZE), None)?;
        }
        for &arg in vcpu_args {
            self.add_vcpu(env, index, arg)?;
        }
        Ok(index)
    }

    /// A new TVM (still NEW) whose only private page is `program` at [`IMAGE_GPA`], with one
    /// vCPU per entry of `vcpu_args` entered there: for a guest program that runs on several
    /// vCPUs at once (the guest payload has one stack) and needs no memory of its own.
    pub fn add_program_tvm<E: HostEnv>(
        &mut self,
        env: &mut E,
        program: &[u8; GRANULE_SIZE as usize],
        vcpu_args: &[u64],
    ) -> Outcome<usize> {
        let index = self.add_empty_tvm(env, vcpu_args.len() as u32)?;
        self.map_private(env, index, IMAGE_GPA, Some(program))?;
        for &arg in vcpu_args {
            self.add_vcpu(env, index, arg)?;
        }
        Ok(index)
    }

    /// A new TVM (still NEW) with its tables and nothing mapped; returns its index.
    fn add_empty_tvm<E: HostEnv>(&mut self, env: &mut E, max_vcpus: u32) -> Outcome<usize> {
        let p = self.tvm_params(env, max_vcpus)?;
        let tvm = self.pool.secure(env)?;
        let root = self.pool.secure(env)?;
        must!(host::tvm_create(env, tvm, p, root), "TVM_CREATE");
        let mut tables = [Pa(0); 3];
        for (level, slot) in (1u8..=3).zip(tables.iter_mut()) {
            *slot = self.pool.secure(env)?;
            must!(
                host::table_create(env, tvm, table_gpa(level), level, *slot),
                "TABLE_CREATE"
            );
        }
        let mut shared = Vec::new();
        for (level, gpa) in shared_tables() {
            let g = self.pool.secure(env)?;
            must!(
                host::table_create(env, tvm, gpa, level, g),
                "TABLE_CREATE (shared half)"
            );
            shared
                .push((level, gpa, g))
                .map_err(|_| Fail::new("shared tables", line!()))?;
        }
        let t = Tvm {
            tvm,
            tables,
            shared_tables: shared,
            vcpus: Vec::new(),
            mapped: Vec::new(),
        };
        self.tvms
            .push(t)
            .map_err(|_| Fail::new("too many TVMs", line!()))?;
        Ok(self.tvms.len() - 1)
    }

    /// A vCPU of TVM `t` (still NEW) entered at [`IMAGE_GPA`] with `arg0`.
    pub fn add_vcpu<E: HostEnv>(&mut self, env: &mut E, t: usize, arg0: u64) -> Outcome<Pa> {
        let vcpu = self.pool.secure(env)?;
        let tvm = self.tvm(t)?.tvm;
        must!(
            host::vcpu_create(env, tvm, vcpu, IMAGE_GPA, arg0),
            "VCPU_CREATE"
        );
        let t = self.tvms.get_mut(t).ok_or(Fail::new("TVM", line!()))?;
        t.vcpus
            .push(vcpu)
            .map_err(|_| Fail::new("too many vCPUs", line!()))?;
        Ok(vcpu)
    }

    /// Copies the guest image into private memory, page by page, from NS source pages (as a
    /// VMM loads a guest); the rest of [`IMAGE_PAGES`] (BSS, stack) is zero-filled.
    fn load_image<E: HostEnv>(&mut self, env: &mut E, t: usize) -> Outcome {
        let mut page = [0u8; GRANULE_SIZE as usize];
        let len = match env.guest_image() {
            Some(image) => image.len() as u64,
            None => {
                return Err(Fail::new(
                    "no guest image in this host payload (xtask builds it with TSM_GUEST_BIN)",
                    line!(),
                ));
            }
        };
        ensure!(
            len <= IMAGE_PAGES * GRANULE_SIZE,
            "guest image too large",
            len
        );
        for i in 0..IMAGE_PAGES {
            let gpa = Gpa(IMAGE_GPA.0 + i * GRANULE_SIZE);
            let start = i * GRANULE_SIZE;
            if start >= len {
                self.map_private(env, t, gpa, None)?;
                continue;
            }
            page.fill(0);
            let end = (start + GRANULE_SIZE).min(len);
            let src = env
                .guest_image()
                .and_then(|img| img.get(start as usize..end as usize))
                .ok_or(Fail::new("guest image slice", line!()))?;
            let dst = page
                .get_mut(..src.len())
                .ok_or(Fail::new("guest image page", line!()))?;
            dst.copy_from_slice(src);
            self.map_private(env, t, gpa, Some(&page))?;
        }
        Ok(())
    }

    /// Maps a private page at `gpa` of TVM `t`, filled from `source` (through an NS source
    /// page, only while the TVM is NEW) or zeroed; returns its granule.
    pub fn map_private<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        gpa: Gpa,
        source: Option<&[u8; GRANULE_SIZE as usize]>,
    ) -> Outcome<Pa> {
        let src = self.source_page(env, source)?;
        let g = self.pool.secure(env)?;
        self.map_private_granule_from(env, t, gpa, g, src)?;
        Ok(g)
    }

    /// Maps delegated granule `g` (of the pool) as a private page at `gpa` of TVM `t`, filled
    /// as [`World::map_private`] does.
    pub fn map_private_granule<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        gpa: Gpa,
        g: Pa,
        source: Option<&[u8; GRANULE_SIZE as usize]>,
    ) -> Outcome {
        let src = self.source_page(env, source)?;
        self.map_private_granule_from(env, t, gpa, g, src)
    }

    /// An NS source page holding `source`, if any.
    fn source_page<E: HostEnv>(
        &mut self,
        env: &mut E,
        source: Option<&[u8; GRANULE_SIZE as usize]>,
    ) -> Outcome<Option<Pa>> {
        let Some(data) = source else {
            return Ok(None);
        };
        let s = self.pool.ns(env)?;
        ensure!(env.write(s, data), "write source page");
        Ok(Some(s))
    }

    fn map_private_granule_from<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        gpa: Gpa,
        g: Pa,
        src: Option<Pa>,
    ) -> Outcome {
        let tvm = self.tvm(t)?.tvm;
        let rwx = MapFlags::READ | MapFlags::WRITE | MapFlags::EXEC;
        must!(host::map_private(env, tvm, gpa, g, src, rwx), "MAP_PRIVATE");
        self.record_map(t, gpa, g)
    }

    /// Maps a fresh NS page shared at `gpa` of TVM `t`; returns it.
    pub fn map_shared<E: HostEnv>(&mut self, env: &mut E, t: usize, gpa: Gpa) -> Outcome<Pa> {
        let ns = self.pool.ns(env)?;
        let tvm = self.tvm(t)?.tvm;
        must!(
            host::map_shared(env, tvm, gpa, ns, MapFlags::READ | MapFlags::WRITE),
            "MAP_SHARED"
        );
        self.record_map(t, gpa, ns)?;
        Ok(ns)
    }

    fn record_map(&mut self, t: usize, gpa: Gpa, pa: Pa) -> Outcome {
        let tvm = self.tvms.get_mut(t).ok_or(Fail::new("TVM", line!()))?;
        tvm.mapped
            .push((gpa, pa))
            .map_err(|_| Fail::new("too many mappings", line!()))
    }

    /// TVM_ACTIVATE.
    pub fn activate<E: HostEnv>(&mut self, env: &mut E, t: usize) -> Outcome {
        let tvm = self.tvm(t)?.tvm;
        must!(host::tvm_activate(env, tvm), "TVM_ACTIVATE");
        Ok(())
    }

    /// Creates the PDEV for the device's requester-ID range on [`SEGMENT`] and connects it.
    pub fn connect_pdev<E: HostEnv>(&mut self, env: &mut E) -> Outcome<Pa> {
        self.connect_pdev_at(env, SEGMENT, RID_BASE, RID_COUNT)
    }

    /// Creates a PDEV for `rid_count` requester IDs from `rid_base` on `segment` (the first is
    /// the DSM the link's device answers for) and connects it.
    pub fn connect_pdev_at<E: HostEnv>(
        &mut self,
        env: &mut E,
        segment: u16,
        rid_base: u16,
        rid_count: u16,
    ) -> Outcome<Pa> {
        let pdev = self.create_pdev(env, PdevFlags::empty(), segment, rid_base, rid_count)?;
        let first = host::pdev_connect(env, pdev, self.link.comm, Pa(0));
        must!(self.link.drive(env, pdev, first)?, "PDEV_CONNECT");
        Ok(pdev)
    }

    /// Creates the PDEV with `PdevFlags::SPDM` (slot 0), puts an SPDM responder with
    /// `identity` on the link and connects; the TSM's verdict.
    pub fn connect_pdev_spdm<E: HostEnv>(
        &mut self,
        env: &mut E,
        identity: DeviceIdentity,
    ) -> Outcome<api::Result<()>> {
        self.link.use_spdm(identity)?;
        self.connect_pdev_spdm_on_link(env)
    }

    /// [`World::connect_pdev_spdm`] to the responder already on the link.
    pub fn connect_pdev_spdm_on_link<E: HostEnv>(
        &mut self,
        env: &mut E,
    ) -> Outcome<api::Result<()>> {
        self.connect_pdev_spdm_at(env, SEGMENT, RID_BASE, RID_COUNT)
    }

    /// [`World::connect_pdev_spdm_on_link`] for a PDEV of `rid_count` requester IDs from
    /// `rid_base` on `segment`.
    pub fn connect_pdev_spdm_at<E: HostEnv>(
        &mut self,
        env: &mut E,
        segment: u16,
        rid_base: u16,
        rid_count: u16,
    ) -> Outcome<api::Result<()>> {
        let (pdev, evidence) = self.create_pdev_spdm_at(env, segment, rid_base, rid_count)?;
        let first = host::pdev_connect(env, pdev, self.link.comm, evidence);
        self.link.drive(env, pdev, first)
    }

    /// Creates the PDEV with `PdevFlags::SPDM` (slot 0) and a granule for its evidence, not yet
    /// connected (the bench drives the connect itself, to time each call): (PDEV, evidence).
    pub fn create_pdev_spdm<E: HostEnv>(&mut self, env: &mut E) -> Outcome<(Pa, Pa)> {
        self.create_pdev_spdm_at(env, SEGMENT, RID_BASE, RID_COUNT)
    }

    /// [`World::create_pdev_spdm`] for a PDEV of `rid_count` requester IDs from `rid_base` on
    /// `segment`.
    fn create_pdev_spdm_at<E: HostEnv>(
        &mut self,
        env: &mut E,
        segment: u16,
        rid_base: u16,
        rid_count: u16,
    ) -> Outcome<(Pa, Pa)> {
        let pdev = self.create_pdev(env, PdevFlags::SPDM, segment, rid_base, rid_count)?;
        let evidence = self.pool.secure(env)?;
        Ok((pdev, evidence))
    }

    /// Destroys the PDEV (stopping it first), so another can be created over the same range.
    pub fn drop_pdev<E: HostEnv>(&mut self, env: &mut E) -> Outcome {
        let pdev = self.pdev.take().ok_or(Fail::new("no PDEV", line!()))?;
        must!(host::pdev_stop(env, pdev), "PDEV_STOP");
        must!(host::pdev_destroy(env, pdev), "PDEV_DESTROY");
        Ok(())
    }

    fn create_pdev<E: HostEnv>(
        &mut self,
        env: &mut E,
        flags: PdevFlags,
        segment: u16,
        rid_base: u16,
        rid_count: u16,
    ) -> Outcome<Pa> {
        let params = PdevParams {
            flags: flags.bits(),
            segment,
            rid_base,
            rid_count,
            interface_id_format: ID_FORMAT.raw(),
            ..PdevParams::new_zeroed()
        };
        let p = self.pool.ns(env)?;
        ensure!(env.write(p, params.as_bytes()), "write PdevParams");
        let pdev = self.pool.secure(env)?;
        must!(host::pdev_create(env, pdev, p), "PDEV_CREATE");
        self.pdev = Some(pdev);
        Ok(pdev)
    }

    /// A vIOMMU of type `ty` for TVM `t`.
    pub fn add_viommu<E: HostEnv>(&mut self, env: &mut E, t: usize, ty: ViommuType) -> Outcome<Pa> {
        let g = self.pool.secure(env)?;
        let tvm = self.tvm(t)?.tvm;
        must!(host::viommu_create(env, tvm, g, ty), "VIOMMU_CREATE");
        self.viommus
            .push(g)
            .map_err(|_| Fail::new("too many vIOMMUs", line!()))?;
        Ok(g)
    }

    /// The parameters of function `f` (pBDF `RID_BASE + 1 + f`) as vBDF `VBDF_BASE + f`.
    pub fn vdev_params(f: u16) -> VdevParams {
        let pbdf = RID_BASE + 1 + f;
        VdevParams {
            pbdf,
            vbdf: VBDF_BASE + f,
            function_id: u32::from(pbdf),
            lock_flags: LockFlags::NO_FW_UPDATE.bits(),
            ..VdevParams::new_zeroed()
        }
    }

    /// A vdevice of TVM `t` for function `f` under `viommu`; returns its index.
    pub fn add_vdev<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        viommu: Pa,
        f: u16,
    ) -> Outcome<usize> {
        self.add_vdev_with(env, t, viommu, Self::vdev_params(f))
    }

    /// A vdevice of TVM `t` with `params` under `viommu`; returns its index.
    pub fn add_vdev_with<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        viommu: Pa,
        params: VdevParams,
    ) -> Outcome<usize> {
        let p = self.pool.ns(env)?;
        ensure!(env.write(p, params.as_bytes()), "write VdevParams");
        let g = self.pool.secure(env)?;
        let pdev = self.pdev.ok_or(Fail::new("no PDEV", line!()))?;
        must!(host::vdev_create(env, g, pdev, viommu, p), "VDEV_CREATE");
        self.vdevs
            .push(Vdev {
                pa: g,
                pbdf: params.pbdf,
                vbdf: params.vbdf,
                tvm: t,
            })
            .map_err(|_| Fail::new("too many vdevices", line!()))?;
        Ok(self.vdevs.len() - 1)
    }

    /// VDEV_BIND carried to the end; the TSM's verdict.
    pub fn bind<E: HostEnv>(&mut self, env: &mut E, v: usize) -> Outcome<api::Result<()>> {
        let vdev = self.vdev(v)?.pa;
        let first = host::vdev_bind(env, vdev, self.link.comm);
        self.link.drive(env, vdev, first)
    }

    /// VDEV_UNBIND carried to the end; the TSM's verdict.
    pub fn unbind<E: HostEnv>(&mut self, env: &mut E, v: usize) -> Outcome<api::Result<()>> {
        let vdev = self.vdev(v)?.pa;
        let first = host::vdev_unbind(env, vdev, self.link.comm);
        self.link.drive(env, vdev, first)
    }

    /// VDEV_GET_STATE (must succeed).
    pub fn state<E: HostEnv>(&self, env: &mut E, v: usize) -> Outcome<VdevState> {
        let vdev = self.vdev(v)?.pa;
        Ok(must!(host::vdev_get_state(env, vdev), "VDEV_GET_STATE").0)
    }

    /// Runs vCPU `i` of TVM `t` until it exits, yields or faults, carrying the device
    /// operations its calls need on the way.
    pub fn run<E: HostEnv>(&mut self, env: &mut E, t: usize, i: usize) -> Outcome<Exit> {
        let vcpu = *self
            .tvm(t)?
            .vcpus
            .get(i)
            .ok_or(Fail::new("no such vCPU", line!()))?;
        let mut exits = 0;
        let mut interrupts = 0;
        loop {
            let reason = match host::vcpu_run(env, vcpu, self.exit) {
                Ok(r) => r,
                Err(e) if e.code() == Some(StatusCode::NotSupported) => {
                    return Err(Fail {
                        what: "VCPU_RUN is NotSupported: this TSM has no world switch yet",
                        line: line!(),
                        got: raw_error(e),
                    });
                }
                Err(e) => {
                    return Err(Fail {
                        what: "VCPU_RUN",
                        line: line!(),
                        got: raw_error(e),
                    });
                }
            };
            let mut rec = VcpuExit::new_zeroed();
            ensure!(env.read(self.exit, rec.as_mut_bytes()), "read exit record");
            ensure!(
                rec.reason == reason.raw(),
                "exit record disagrees with VCPU_RUN",
                rec.reason
            );
            match reason {
                // The host's interrupt was taken on the way back here; the vCPU goes on.
                ExitReason::Interrupt => {
                    ensure!(
                        rec == VcpuExit {
                            reason: reason.raw(),
                            ..VcpuExit::new_zeroed()
                        },
                        "INTERRUPT exit record with a field set",
                        rec.flags
                    );
                    interrupts += 1;
                    ensure!(
                        interrupts < MAX_INTERRUPTS,
                        "vCPU kept exiting for interrupts",
                        interrupts
                    );
                }
                ExitReason::DeviceRequest => {
                    let vdev = Pa(rec.vdev);
                    // The first COMMUNICATE of a guest-started operation carries no response.
                    let first = host::communicate(env, vdev, self.link.comm);
                    // The verdict goes to the guest's call; the guest script checks it.
                    let _verdict = self.link.drive(env, vdev, first)?;
                    exits += 1;
                    ensure!(exits < MAX_EXITS, "vCPU kept exiting", exits);
                }
                ExitReason::GuestExit => return Ok(Exit::Exited(rec.code)),
                ExitReason::DeniedCall => return Ok(Exit::Yielded),
                ExitReason::Fault => return Ok(Exit::Fault { gpa: rec.gpa }),
            }
        }
    }

    /// Runs vCPU `i` of TVM `t` and requires `want`.
    pub fn run_expect<E: HostEnv>(
        &mut self,
        env: &mut E,
        t: usize,
        i: usize,
        want: Exit,
    ) -> Outcome {
        let got = self.run(env, t, i)?;
        let code = match got {
            Exit::Exited(c) => c,
            Exit::Yielded => 0xE1,
            Exit::Fault { gpa } => gpa | 0xFA,
        };
        ensure!(
            got == want,
            "vCPU exit (guest exit code = failed guest check line)",
            code
        );
        Ok(())
    }

    /// A TEST_DMA_INJECT the scenario needs: fails loudly if this TSM build lacks the call.
    pub fn require_dma_inject(&self) -> Outcome {
        ensure!(
            self.has_dma_inject(),
            "this TSM build has no TEST_DMA_INJECT (build tsm-core with feature dma-inject)"
        );
        Ok(())
    }

    /// Whether this TSM build has TEST_DMA_INJECT. When it has not, the DMA checks of a
    /// scenario that also checks other things are left out, the rest runs, and
    /// [`World::finish`] fails the scenario saying so: it never passes without them.
    pub fn dma_checks(&mut self) -> bool {
        let has = self.has_dma_inject();
        self.dma_skipped |= !has;
        has
    }

    fn has_dma_inject(&self) -> bool {
        self.features
            .build
            .contains(tsm_abi::features::BuildFlags::TEST_DMA_INJECT)
    }

    /// Tears everything down in the order the ABI enforces (vdevices after unbind, vIOMMUs,
    /// vCPUs, pages, tables level 3 up, TVMs, the PDEV), gives every granule back, and checks
    /// that every granule the scenario touched is NS, scrubbed and reusable.
    pub fn finish<E: HostEnv>(mut self, env: &mut E) -> Outcome {
        self.link.dev.clear_misbehaviour();
        self.link.mitm = crate::link::Mitm::Honest;
        for v in 0..self.vdevs.len() {
            let vdev = self.vdev(v)?.pa;
            let state = self.state(env, v)?;
            if matches!(state, VdevState::Locked | VdevState::Run | VdevState::Error) {
                // From ERROR the device may still refuse STOP; destroy works either way.
                let _ = self.unbind(env, v)?;
            }
            must!(host::vdev_destroy(env, vdev), "VDEV_DESTROY");
        }
        for &viommu in &self.viommus {
            must!(host::viommu_destroy(env, viommu), "VIOMMU_DESTROY");
        }
        for t in &self.tvms {
            for &vcpu in &t.vcpus {
                must!(host::vcpu_destroy(env, vcpu), "VCPU_DESTROY");
            }
            for &(gpa, pa) in &t.mapped {
                let back = must!(host::unmap(env, t.tvm, gpa), "UNMAP");
                ensure!(back == pa, "UNMAP returned another granule", back.0);
            }
            for &(level, gpa, table) in t.shared_tables.iter().rev() {
                let back = must!(
                    host::table_destroy(env, t.tvm, gpa, level),
                    "TABLE_DESTROY (shared half)"
                );
                ensure!(
                    back == table,
                    "TABLE_DESTROY returned another granule",
                    back.0
                );
            }
            for (level, &table) in (1u8..=3).zip(t.tables.iter()).rev() {
                let back = must!(
                    host::table_destroy(env, t.tvm, table_gpa(level), level),
                    "TABLE_DESTROY"
                );
                ensure!(
                    back == table,
                    "TABLE_DESTROY returned another granule",
                    back.0
                );
            }
            must!(host::tvm_destroy(env, t.tvm), "TVM_DESTROY");
        }
        if let Some(pdev) = self.pdev {
            must!(host::pdev_stop(env, pdev), "PDEV_STOP");
            must!(host::pdev_destroy(env, pdev), "PDEV_DESTROY");
        }
        self.pool.undelegate_all(env)?;
        self.pool.check_all_ns(env)?;
        say!(
            "teardown: {=u64} granules back to NS, {=u64} device round trips",
            self.pool.used(),
            self.link.round_trips
        );
        ensure!(
            !self.dma_skipped,
            "everything else passed, but the DMA checks did not run: this TSM build has no TEST_DMA_INJECT (build tsm-core with feature dma-inject)"
        );
        Ok(())
    }
}

/// Issues a call with raw arguments (for values the typed wrappers cannot express) and returns
/// its status as a wrapper would.
pub fn raw_call<T: Transport + ?Sized>(
    t: &mut T,
    call: tsm_abi::CallId,
    args: &[u64],
) -> api::Result<[u64; 4]> {
    let mut regs = tsm_abi::regs::CallRegs {
        fid: u64::from(call.fid()),
        args: [0; 6],
    };
    for (slot, a) in regs.args.iter_mut().zip(args) {
        *slot = *a;
    }
    let r = t.call(&regs);
    match tsm_abi::Status::from_raw(r.status) {
        Some(s) if s.is_success() => Ok(r.out),
        Some(s) => Err(api::Error::Tsm(s)),
        None => Err(api::Error::Malformed {
            call,
            status: r.status,
        }),
    }
}
