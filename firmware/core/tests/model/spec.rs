//! The reference model: what docs/abi.md requires of every call, as plain data structures.
//!
//! It says, for a call and the current state, which status (and index) the TSM must return,
//! which results, and how the state changes. It knows nothing of the core's code. When several
//! checks fail, §1 ("Which error wins") lets the TSM return any of them, so the model collects
//! every failing check it can evaluate ([`Fails`]) and accepts any; checks that need an earlier
//! one to pass (a handle before the object's state) are gated on it. Where the spec leaves a
//! choice to the core, the model follows the core and says so (`core:` comments).
//!
//! Device I/O is the environment: the driver tells the model whether the device's answer to
//! the outstanding request was a valid one ([`Env::Comm`]); the model decides what the TSM
//! must do with it.

use std::collections::{BTreeMap, BTreeSet};

use tsm_abi::CallId;
use tsm_abi::addr::GRANULE_SIZE;
use tsm_abi::call::Caller;
use tsm_abi::event::{ALL_PASIDS, MAX_PASID, NO_PASID};
use tsm_abi::guest::{AcceptEvidence, VdevInfo};
use tsm_abi::params::{MapFlags, NO_SOURCE, PdevFlags, PdevParams, TvmParams, VdevParams};
use tsm_abi::state::{DeviceOp, PdevState, VdevState};
use tsm_abi::status::{ObjectKind, Status, StatusCode};
use tsm_abi::version;
use tsm_abi::viommu::{Stage1Format, ViommuType, iommufd};
use tsm_core::granule::GranuleState;

use StatusCode::*;

/// Granule size.
pub const G: u64 = GRANULE_SIZE;
/// Largest framed console record (tsm_platform::log::MAX_PAYLOAD).
const MAX_CONSOLE: u64 = 512;
/// Event ring depth (FEATURES QUEUE_LIMITS).
const QUEUE_DEPTH: u32 = 32;
/// PASIDs with a stage-1 root per vdevice, the NO_PASID root aside.
const PASIDS_PER_VDEV: usize = 32;
/// Report bytes the TSM asks per GET_DEVICE_INTERFACE_REPORT (the core's choice; the spec says
/// "× n").
pub const REPORT_PORTION: u32 = 1024;
/// LOCK flags the TSM accepts (FEATURES TDISP bits 31:16): every defined flag but BIND_P2P (0x8).
const ACCEPTED_LOCK_FLAGS: u16 = 0x17;
/// Bounds from FEATURES DEVICE_LIMITS.
const MAX_PDEVS: usize = 16;
const MAX_VDEVS_PER_PDEV: u64 = 32;
const MAX_VDEVS_PER_TVM: u64 = 32;
const MAX_VIOMMUS_PER_TVM: u64 = 8;
/// Granules of one vdevice's DMA table (FEATURES DMA).
pub const MAX_DMA_TABLES: usize = 16;
/// Private MMIO pages one vdevice may have mapped (FEATURES QUEUE_LIMITS).
const MAX_MMIO_PAGES: usize = 16;

fn st(code: StatusCode, index: u8) -> Status {
    Status::arg(code, index)
}

/// The checks of a call that failed. §1: "When several checks fail, which status is returned
/// is not specified, except that the dispatcher checks come first": any of them is right.
#[derive(Default, Debug)]
pub struct Fails(pub Vec<Status>);

impl From<Status> for Fails {
    fn from(s: Status) -> Self {
        Fails(vec![s])
    }
}

impl Fails {
    /// Records `r`'s failure; its value if it passed.
    fn of<T>(&mut self, r: Result<T, Status>) -> Option<T> {
        r.map_err(|s| self.0.push(s)).ok()
    }

    /// Records `s` if `failed`.
    fn fail(&mut self, failed: bool, s: Status) {
        if failed {
            self.0.push(s);
        }
    }

    /// Stops here if a check failed (the rest needs what it checked).
    fn gate(&mut self) -> Result<(), Fails> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(self))
        }
    }
}

/// What the model expects of one call.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Expect {
    /// A refusal with any of these statuses (several checks fail; results 0).
    OneOf(Vec<Status>),
    /// This status word and these results (results past the call's count are 0).
    Exactly(Status, [u64; 4]),
    /// TEST_DMA_INJECT after its argument checks: the outcome is judged by the rule of
    /// invariants 1–2 ([`Model::dma_allowed`]) by the driver.
    Dma,
    /// Only this status (the results are checked elsewhere).
    StatusOnly(Status),
    /// A VCPU_RUN the TSM must accept: the driver runs the guest (see `Run` in the driver).
    Run,
}

fn fail(s: Status) -> Expect {
    Expect::Exactly(s, [0; 4])
}

fn ok(out: [u64; 4]) -> Expect {
    Expect::Exactly(Status::SUCCESS, out)
}

/// What the caller put where the TSM will read it (the model is told; the driver wrote it).
#[derive(Clone, Copy, Debug)]
pub enum Env {
    /// Nothing to read.
    None,
    /// A parameter block at the buffer argument (if its granule is NS and it fits).
    TvmParams(TvmParams),
    /// As above.
    PdevParams(PdevParams),
    /// As above.
    VdevParams(VdevParams),
    /// COMMUNICATE: what the host wrote in the buffer header, and how the device answered.
    Comm(CommEnv),
    /// G_VDEV_ACCEPT: the evidence the guest echoes.
    Accept(Evidence),
}

/// The header the host wrote before COMMUNICATE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommEnv {
    /// A well-formed response; `valid`: the device's answer answers the outstanding request.
    Response { valid: bool },
    /// `host_status = NO_RESPONSE`.
    NoResponse,
    /// A reserved header field set, `response_len` > 4032 or an unknown `host_status`.
    Malformed,
}

/// The evidence a guest echoes: read from G_VDEV_INFO at `epoch` (or made up), maybe altered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Evidence {
    /// (vdevice uid, bind epoch) the info was read at (`None`: invented bytes).
    pub from: Option<(u64, u64)>,
    /// 1 nonce, 2 digest, 3 counter: that field was altered.
    pub altered: Option<u8>,
    /// A reserved field set.
    pub reserved: bool,
}

/// A model granule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gs {
    Ns,
    Delegated,
    Private,
    Tvm,
    Vcpu,
    Pdev,
    Viommu,
    Vdev,
    Table,
    Reserved,
    DmaTable,
    Evidence,
}

impl Gs {
    pub fn core(self) -> GranuleState {
        match self {
            Gs::Ns => GranuleState::Ns,
            Gs::Delegated => GranuleState::Delegated,
            Gs::Private => GranuleState::Private,
            Gs::Tvm => GranuleState::Tvm,
            Gs::Vcpu => GranuleState::Vcpu,
            Gs::Pdev => GranuleState::Pdev,
            Gs::Viommu => GranuleState::Viommu,
            Gs::Vdev => GranuleState::Vdev,
            Gs::Table => GranuleState::Table,
            Gs::Reserved => GranuleState::Reserved,
            Gs::DmaTable => GranuleState::DmaTable,
            Gs::Evidence => GranuleState::Evidence,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Page {
    pub pa: u64,
    pub private: bool,
    pub write: bool,
}

#[derive(Clone, Debug)]
pub struct Tvm {
    pub active: bool,
    pub gpa_bits: u8,
    pub root: u64,
    pub max_vcpus: u64,
    pub vcpus_created: u64,
    /// (level, GPA base) → table granule (levels 1..=3; the root is `root`).
    pub tables: BTreeMap<(u8, u64), u64>,
    /// GPA → page.
    pub pages: BTreeMap<u64, Page>,
    /// GPA → private MMIO page (§5.7).
    pub mmio: BTreeMap<u64, Mmio>,
    pub vcpus: u64,
    pub viommus: u64,
    pub vdevs: u64,
}

/// A device page mapped as private MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmio {
    /// The vdevice that mapped it.
    pub vdev: u64,
    /// The device page (host PA).
    pub pa: u64,
    /// The guest validated it (G_VDEV_MMIO_VALIDATE).
    pub validated: bool,
}

#[derive(Clone, Debug)]
pub struct Vcpu {
    pub tvm: u64,
    pub entry: u64,
    pub arg0: u64,
    pub exited: bool,
    pub started: bool,
    /// The next entry completes a denied host call with `Denied`.
    pub return_denied: bool,
    /// The guest waits in G_VDEV_ACCEPT / G_VDEV_STOP for this operation (§6).
    pub wait: Option<Wait>,
}

/// A guest call waiting for its device operation: on which incarnation of which vdevice, and
/// which of its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub vdev: u64,
    pub uid: u64,
    pub ticket: u64,
    pub op: DeviceOp,
}

/// What the next VCPU_RUN of a waiting vCPU does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The operation is still pending: the same DEVICE_REQUEST exit, the guest does not run.
    Pending,
    /// The guest's call returns this.
    Done(Status),
}

#[derive(Clone, Debug)]
pub struct Pdev {
    pub state: PdevState,
    pub segment: u16,
    /// Interface IDs carry the segment (`InterfaceIdFormat::RidSegment`).
    pub id_segment: bool,
    pub rid_base: u16,
    pub rid_count: u16,
    /// The pending operation: CONNECT, or with SPDM KEY_UPDATE / DISCONNECT.
    pub op: DeviceOp,
    /// Responses the pending operation still has to take.
    pub left: u8,
    /// `PdevFlags::SPDM`: every TDISP message travels in the PDEV's SPDM session (§7.4).
    pub spdm: bool,
    /// The EVIDENCE granule PDEV_CONNECT took (0: none).
    pub evidence: u64,
    /// SPDM on a certificate slot the device does not serve (it serves slot 0 only): its
    /// connect fails at the DIGESTS answer, which lacks the slot.
    pub unserved_slot: bool,
    /// With [`Pdev::unserved_slot`], the `left` at which the pending connect's answer fails.
    pub fails_at_left: u8,
    /// The object whose request is out in the session (0: the session is free).
    pub owner: u64,
    pub vdevs: u64,
}

#[derive(Clone, Debug)]
pub struct Viommu {
    pub tvm: u64,
    pub vtype: ViommuType,
    pub vdevs: u64,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Queue {
    pub pending: u32,
    pub overflow: u32,
}

impl Queue {
    fn push(&mut self) {
        if self.pending < QUEUE_DEPTH {
            self.pending += 1;
        } else {
            self.overflow += 1;
        }
    }
}

#[derive(Clone, Debug)]
pub struct Vdev {
    /// Unique over the model's life (evidence of a destroyed vdevice never matches).
    pub uid: u64,
    pub tvm: u64,
    pub pdev: u64,
    pub viommu: u64,
    pub pbdf: u16,
    pub vbdf: u16,
    pub lock_flags: u16,
    pub state: VdevState,
    pub op: DeviceOp,
    /// The operation's first request is out (guest-started ones wait for the host).
    pub sent: bool,
    /// BIND: report portions still to take after the LOCK response.
    pub portions_left: u32,
    /// BIND: the LOCK response was taken.
    pub locked_rsp: bool,
    pub accepted: bool,
    /// Completed binds (the report counter).
    pub binds: u64,
    /// Report length of this TDI (from the device's configuration).
    pub report_len: u32,
    pub s1: BTreeSet<Option<u32>>,
    /// The guest operation whose result the vdevice keeps (0: none), and the result (`None`
    /// while that operation runs).
    pub guest_ticket: u64,
    pub guest_result: Option<StatusCode>,
    pub events: Queue,
    pub host_events: Queue,
    /// The granules of its DMA table (VDEV_DMA_TABLE), the root first.
    pub dma_tables: Vec<u64>,
    /// Its last bind completed in an SPDM session: the guest reads the device's chain and
    /// measurements (cleared when a bind starts and when a stop completes, not by an error).
    pub authenticated: bool,
}

impl Vdev {
    /// The pending operation ended; a guest waiting on it gets `result`.
    fn guest_op_done(&mut self, result: StatusCode) {
        if self.guest_ticket != 0 && self.guest_result.is_none() {
            self.guest_result = Some(result);
        }
    }

    fn has_report(&self) -> bool {
        matches!(
            self.state,
            VdevState::Locked | VdevState::Starting | VdevState::Run
        )
    }
}

/// One call as the driver issues it.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// `None`: from the host; `Some(vcpu)`: from that vCPU.
    pub guest: Option<u64>,
    pub fid: u64,
    pub args: [u64; 6],
    pub env: Env,
}

/// The whole model.
pub struct Model {
    pub base: u64,
    pub gs: Vec<Gs>,
    pub max_gpa_bits: u8,
    pub dma_inject: bool,
    /// A platform IOMMU gates DMA: vdevices have DMA tables.
    pub iommu: bool,
    pub tvms: BTreeMap<u64, Tvm>,
    pub vcpus: BTreeMap<u64, Vcpu>,
    pub pdevs: BTreeMap<u64, Pdev>,
    pub viommus: BTreeMap<u64, Viommu>,
    pub vdevs: BTreeMap<u64, Vdev>,
    pub host_domain: Queue,
    /// CPUs HOST_CPU_START started (none takes its start here: no run loop runs them).
    pub started_cpus: BTreeSet<u64>,
    /// TDI report lengths by pBDF (the device's configuration; the driver fills it).
    pub report_len: BTreeMap<u16, u32>,
    /// The MMIO ranges of each TDI's report by pBDF, in report order: (first page frame,
    /// pages, TEE) (the device's configuration; the driver fills it).
    pub report_ranges: BTreeMap<u16, Vec<(u64, u64, bool)>>,
    /// Where the platform's device BARs are (base, size): the only pages the host can lose to
    /// private MMIO (the driver fills it).
    pub bar_window: (u64, u64),
    /// Responses an SPDM connect takes before its TDISP GET_VERSION (the driver fills it from
    /// the device's chain: §7.4's messages, GET_CERTIFICATE in 1 KiB portions).
    pub spdm_connect: u8,
    /// The device's certificate chain and measurement record lengths (the driver fills them).
    pub chain_len: u32,
    pub measurements_len: u32,
    /// What the SPDM sessions did: connects, key updates and disconnects completed, sessions
    /// that failed, binds completed in a session.
    pub spdm_done: [u64; 5],
    next_uid: u64,
    next_ticket: u64,
}

/// Why a granule lookup failed (the order the core's granule table checks).
fn granule_err(m: &Model, pa: u64, arg: u8) -> Result<usize, Status> {
    if !pa.is_multiple_of(G) {
        return Err(st(Misaligned, arg));
    }
    let idx = pa
        .checked_sub(m.base)
        .map(|o| o / G)
        .filter(|&i| i < m.gs.len() as u64)
        .ok_or(st(OutOfRange, arg))?;
    Ok(idx as usize)
}

/// The table span of a level (level 1: 512 GiB .. level 3: 2 MiB).
pub fn span(level: u8) -> u64 {
    1u64 << (12 + 9 * (4 - u32::from(level)))
}

impl Model {
    pub fn new(
        base: u64,
        granules: usize,
        reserved: usize,
        max_gpa_bits: u8,
        dma_inject: bool,
        iommu: bool,
    ) -> Self {
        let mut gs = vec![Gs::Ns; granules];
        for g in gs.iter_mut().take(reserved) {
            *g = Gs::Reserved;
        }
        Model {
            base,
            gs,
            max_gpa_bits,
            dma_inject,
            iommu,
            tvms: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            pdevs: BTreeMap::new(),
            viommus: BTreeMap::new(),
            vdevs: BTreeMap::new(),
            host_domain: Queue::default(),
            started_cpus: BTreeSet::new(),
            report_len: BTreeMap::new(),
            report_ranges: BTreeMap::new(),
            bar_window: (0, 0),
            spdm_connect: 0,
            chain_len: 0,
            measurements_len: 0,
            spdm_done: [0; 5],
            next_uid: 1,
            next_ticket: 1,
        }
    }

    /// The state of the granule holding `pa`, if tracked.
    pub fn state(&self, pa: u64) -> Option<Gs> {
        let idx = pa.checked_sub(self.base)? / G;
        self.gs.get(usize::try_from(idx).ok()?).copied()
    }

    fn set(&mut self, pa: u64, s: Gs) {
        let idx = ((pa - self.base) / G) as usize;
        self.gs[idx] = s;
    }

    /// Refcount the core must keep for the granule at `pa` (granule.rs: references to it).
    pub fn refcount(&self, pa: u64) -> u16 {
        let n: u64 = match self.state(pa) {
            Some(Gs::Ns) => self
                .tvms
                .values()
                .flat_map(|t| t.pages.values())
                .filter(|p| !p.private && p.pa == pa)
                .count() as u64,
            Some(Gs::Tvm) => {
                let t = &self.tvms[&pa];
                t.vcpus + t.viommus + t.vdevs
            }
            Some(Gs::Viommu) => self.viommus[&pa].vdevs,
            Some(Gs::Pdev) => self.pdevs[&pa].vdevs,
            Some(Gs::Table) => self.table_entries(pa),
            _ => 0,
        };
        n as u16
    }

    /// Live entries of the table granule `pa`.
    fn table_entries(&self, pa: u64) -> u64 {
        for t in self.tvms.values() {
            let (level, base) = if t.root == pa {
                (0u8, 0u64)
            } else if let Some((&(l, b), _)) = t.tables.iter().find(|(_, v)| **v == pa) {
                (l, b)
            } else {
                continue;
            };
            let within = |gpa: u64| gpa >= base && gpa - base < span(level);
            return if level == 3 {
                // Private MMIO entries count too (§5.7: its level-3 table counts it).
                t.pages
                    .keys()
                    .chain(t.mmio.keys())
                    .filter(|&&g| within(g))
                    .count() as u64
            } else {
                t.tables
                    .keys()
                    .filter(|&&(l, b)| l == level + 1 && within(b))
                    .count() as u64
            };
        }
        0
    }

    /// Whether the model holds nothing (every granule NS or reserved).
    pub fn is_empty(&self) -> bool {
        self.tvms.is_empty()
            && self.vcpus.is_empty()
            && self.pdevs.is_empty()
            && self.viommus.is_empty()
            && self.vdevs.is_empty()
            && self.gs.iter().all(|g| matches!(g, Gs::Ns | Gs::Reserved))
    }

    // ---- shorthands of §1 ----

    /// *handle(n)*: a live object of kind `kind`.
    fn handle(&self, pa: u64, kind: Gs, arg: u8) -> Result<(), Status> {
        let idx = granule_err(self, pa, arg)?;
        if self.gs[idx] == kind {
            Ok(())
        } else {
            Err(st(BadHandle, arg))
        }
    }

    /// The lock step of *granule(n)* (address checks only).
    fn lockable(&self, pa: u64, arg: u8) -> Result<Gs, Status> {
        granule_err(self, pa, arg).map(|i| self.gs[i])
    }

    /// *granule(n)* for an object or table: DELEGATED.
    fn delegated(&self, pa: u64, arg: u8) -> Result<(), Status> {
        match self.lockable(pa, arg)? {
            Gs::Delegated => Ok(()),
            _ => Err(st(GranuleState, arg)),
        }
    }

    /// A host structure of `size` bytes at `pa` (8-aligned, in one NS granule).
    fn host_buffer(&self, pa: u64, size: u64, arg: u8) -> Result<(), Status> {
        let bad = st(InvalidBuffer, arg);
        if size == 0 || (pa % G).checked_add(size).is_none_or(|e| e > G) {
            return Err(bad);
        }
        match self.state(pa & !(G - 1)) {
            Some(Gs::Ns) if pa >= self.base => Ok(()),
            _ => Err(bad),
        }
    }

    fn params(&self, pa: u64, size: u64, arg: u8) -> Result<(), Status> {
        if !pa.is_multiple_of(8) {
            return Err(st(InvalidBuffer, arg));
        }
        self.host_buffer(pa, size, arg)
    }

    /// A GPA argument of a TVM: aligned to `align`, inside its space.
    fn gpa(t: &Tvm, gpa: u64, align: u64, arg: u8) -> Result<(), Status> {
        if !gpa.is_multiple_of(align) {
            return Err(st(Misaligned, arg));
        }
        if gpa >> t.gpa_bits != 0 {
            return Err(st(OutOfRange, arg));
        }
        Ok(())
    }

    /// §5.2: whether `gpa` is in the TVM's shared half (bit `gpa_bits - 1` set).
    fn shared_half(t: &Tvm, gpa: u64) -> bool {
        gpa >> (t.gpa_bits - 1) != 0
    }

    /// The first missing table on the way to `level` (levels 1..level).
    fn missing(t: &Tvm, gpa: u64, level: u8) -> Option<u8> {
        (1..=level).find(|&l| !t.tables.contains_key(&(l, gpa & !(span(l) - 1))))
    }

    /// Where a guest buffer `[gpa, gpa + len)` lands: its page, if usable.
    pub fn guest_page(
        t: &Tvm,
        gpa: u64,
        len: u64,
        write: bool,
        private_only: bool,
    ) -> Option<&Page> {
        if len == 0 || (gpa % G).checked_add(len).is_none_or(|e| e > G) || gpa >> t.gpa_bits != 0 {
            return None;
        }
        let p = t.pages.get(&(gpa & !(G - 1)))?;
        if (write && !p.write) || (private_only && !p.private) {
            return None;
        }
        Some(p)
    }

    fn caller_tvm(&self, vcpu: u64) -> u64 {
        self.vcpus[&vcpu].tvm
    }

    /// The caller's vdevice named by a vBDF argument.
    fn own_vdev(&self, tvm: u64, raw: u64) -> Result<u64, Status> {
        if raw >> 16 != 0 {
            return Err(st(InvalidArgument, 1));
        }
        self.vdevs
            .iter()
            .find(|(_, v)| v.tvm == tvm && u64::from(v.vbdf) == raw)
            .map(|(&pa, _)| pa)
            .ok_or(st(BadHandle, 1))
    }

    // ---- the calls ----

    /// What `call` must do; the model's state moves as the spec says when the call completes.
    pub fn step(&mut self, c: &Call) -> Expect {
        let Ok(call) = CallId::try_from(c.fid) else {
            return fail(Status::new(NotSupported));
        };
        if call == CallId::TEST_DMA_INJECT && !self.dma_inject {
            return fail(Status::new(NotSupported));
        }
        let side = if c.guest.is_some() {
            Caller::Guest
        } else {
            Caller::Host
        };
        if call.caller() != side {
            return fail(Status::new(Denied));
        }
        if let Some(i) = (call.arg_count()..6).find(|&i| c.args[i] != 0) {
            return fail(st(InvalidArgument, i as u8 + 1));
        }
        if let Some(v) = c.guest
            && !self.vcpus.contains_key(&v)
        {
            return fail(Status::new(Denied));
        }
        let r = match c.guest {
            None => self.host(call, &c.args, &c.env),
            Some(vcpu) => self.guest(call, vcpu, &c.args, &c.env),
        };
        match r {
            Ok(e) => e,
            Err(Fails(mut v)) => {
                v.sort_by_key(|s| s.to_raw());
                v.dedup();
                if v.len() == 1 {
                    fail(v[0])
                } else {
                    Expect::OneOf(v)
                }
            }
        }
    }

    fn host(&mut self, call: CallId, a: &[u64; 6], env: &Env) -> Result<Expect, Fails> {
        use CallId::*;
        let mut f = Fails::default();
        Ok(match call {
            VERSION => return Ok(version_call(a[0])),
            FEATURES => {
                if a[0] > 9 {
                    return Err(st(InvalidArgument, 1).into());
                }
                // The values are checked against the implementation by the unit tests; here
                // only that it answers.
                Expect::StatusOnly(Status::SUCCESS)
            }
            CONSOLE_WRITE => {
                if a[1] == 0 || a[1] > MAX_CONSOLE {
                    return Err(st(InvalidArgument, 2).into());
                }
                self.host_buffer(a[0], a[1], 1)?;
                ok([0; 4])
            }
            SYSTEM_OFF => unreachable!("the generator never powers off"),
            HOST_CPU_STOP => unreachable!("the generator never stops the CPU"),
            HOST_CPU_START => {
                if a[0] >= tsm_core::testing::SIM_CPUS as u64 {
                    return Err(st(InvalidArgument, 1).into());
                }
                if self.state(a[1] & !(G - 1)) != Some(Gs::Ns) {
                    return Err(st(InvalidArgument, 2).into());
                }
                // CPU 0 runs the host from boot.
                if a[0] == 0 || !self.started_cpus.insert(a[0]) {
                    return Err(st(ObjectState, 1).into());
                }
                ok([0; 4])
            }
            GRANULE_DELEGATE => {
                // Never `Capacity(1)` (no split table left): the model's machines set no bound
                // (`SimPlatform::limit_split_blocks` is for a unit test), and their 48 granules
                // share one 2 MiB block, which the TSM's own granules keep split anyway.
                let s = self.lockable(a[0], 1)?;
                if s != Gs::Ns || self.refcount(a[0]) != 0 {
                    return Err(st(GranuleState, 1).into());
                }
                self.set(a[0], Gs::Delegated);
                ok([0; 4])
            }
            GRANULE_UNDELEGATE => {
                if self.lockable(a[0], 1)? != Gs::Delegated {
                    return Err(st(GranuleState, 1).into());
                }
                self.set(a[0], Gs::Ns);
                ok([0; 4])
            }
            TVM_CREATE => self.tvm_create(a, env)?,
            TVM_ACTIVATE => {
                self.handle(a[0], Gs::Tvm, 1)?;
                let t = self.tvms.get_mut(&a[0]).unwrap();
                if t.active {
                    return Err(st(ObjectState, 1).into());
                }
                t.active = true;
                ok([0; 4])
            }
            TVM_DESTROY => {
                self.handle(a[0], Gs::Tvm, 1)?;
                let t = &self.tvms[&a[0]];
                // Every kind of child the TVM still has is a valid answer.
                f.fail(t.vcpus != 0, st(InUse, ObjectKind::Vcpu as u8));
                f.fail(t.vdevs != 0, st(InUse, ObjectKind::Vdev as u8));
                f.fail(t.viommus != 0, st(InUse, ObjectKind::Viommu as u8));
                f.fail(
                    t.pages.values().any(|p| p.private),
                    st(InUse, ObjectKind::PrivatePage as u8),
                );
                f.fail(
                    !t.tables.is_empty() || t.pages.values().any(|p| !p.private),
                    st(InUse, ObjectKind::Table as u8),
                );
                f.gate()?;
                let t = self.tvms.remove(&a[0]).unwrap();
                self.set(t.root, Gs::Delegated);
                self.set(a[0], Gs::Delegated);
                ok([0; 4])
            }
            TABLE_CREATE => {
                let level = f.of(level_arg(a[2]));
                f.of(self.handle(a[0], Gs::Tvm, 1));
                f.of(self.delegated(a[3], 4));
                let (Some(level), true) = (level, f.0.is_empty() || self.tvms.contains_key(&a[0]))
                else {
                    return Err(f);
                };
                if let Some(t) = self.tvms.get(&a[0])
                    && f.of(Self::gpa(t, a[1], span(level), 2)).is_some()
                {
                    if let Some(l) = Self::missing(t, a[1], level - 1) {
                        f.0.push(st(TableMissing, l));
                    } else if t.tables.contains_key(&(level, a[1])) {
                        f.0.push(st(AlreadyMapped, 2));
                    }
                }
                // The core refuses a granule that is the TVM's own or the parent table's before
                // looking at its address: GranuleState(4) even when it is misaligned.
                let parent = self.tvms.get(&a[0]).and_then(|t| match level {
                    1 => Some(t.root),
                    l => t.tables.get(&(l - 1, a[1] & !(span(l - 1) - 1))).copied(),
                });
                let base = a[3] & !(G - 1);
                f.fail(base == a[0] || Some(base) == parent, st(GranuleState, 4));
                f.gate()?;
                self.tvms
                    .get_mut(&a[0])
                    .unwrap()
                    .tables
                    .insert((level, a[1]), a[3]);
                self.set(a[3], Gs::Table);
                ok([0; 4])
            }
            TABLE_DESTROY => {
                let level = f.of(level_arg(a[2]));
                f.of(self.handle(a[0], Gs::Tvm, 1));
                f.gate()?;
                let level = level.unwrap();
                let t = &self.tvms[&a[0]];
                Self::gpa(t, a[1], span(level), 2)?;
                if let Some(l) = Self::missing(t, a[1], level) {
                    return Err(st(TableMissing, l).into());
                }
                let pa = t.tables[&(level, a[1])];
                if self.table_entries(pa) != 0 {
                    // core: a level-3 table reports PRIVATE_PAGE even when it maps only
                    // shared pages (the spec: "InUse(TABLE) / InUse(PRIVATE_PAGE)").
                    let k = if level == 3 {
                        ObjectKind::PrivatePage
                    } else {
                        ObjectKind::Table
                    };
                    return Err(st(InUse, k as u8).into());
                }
                self.tvms
                    .get_mut(&a[0])
                    .unwrap()
                    .tables
                    .remove(&(level, a[1]));
                self.set(pa, Gs::Delegated);
                ok([pa, 0, 0, 0])
            }
            MAP_PRIVATE => self.map_private(a)?,
            MAP_SHARED => {
                let flags = f.of(MapFlags::from_arg(a[3]).ok_or(st(InvalidArgument, 4)));
                f.of(self.handle(a[0], Gs::Tvm, 1));
                if !a[2].is_multiple_of(G) {
                    f.0.push(st(Misaligned, 3));
                } else if let Some(s) = f.of(self.lockable(a[2], 3)) {
                    f.fail(s != Gs::Ns, st(GranuleState, 3));
                }
                if let Some(t) = self.tvms.get(&a[0])
                    && f.of(Self::gpa(t, a[1], G, 2)).is_some()
                {
                    if Self::shared_half(t, a[1]) {
                        f.of(self.leaf_slot(t, a[1]));
                    } else {
                        f.0.push(st(OutOfRange, 2));
                    }
                }
                f.gate()?;
                self.tvms.get_mut(&a[0]).unwrap().pages.insert(
                    a[1],
                    Page {
                        pa: a[2],
                        private: false,
                        write: flags.unwrap().contains(MapFlags::WRITE),
                    },
                );
                ok([0; 4])
            }
            UNMAP => {
                self.handle(a[0], Gs::Tvm, 1)?;
                let t = &self.tvms[&a[0]];
                Self::gpa(t, a[1], G, 2)?;
                if t.mmio.contains_key(&a[1]) {
                    return Err(st(InUse, ObjectKind::Vdev as u8).into());
                }
                let p = t.pages.get(&a[1]).ok_or(st(NotMapped, 2))?.clone();
                self.tvms.get_mut(&a[0]).unwrap().pages.remove(&a[1]);
                if p.private {
                    self.set(p.pa, Gs::Delegated);
                }
                ok([p.pa, 0, 0, 0])
            }
            VCPU_CREATE => {
                self.handle(a[0], Gs::Tvm, 1)?;
                let t = &self.tvms[&a[0]];
                f.fail(t.active, st(ObjectState, 1));
                f.fail(t.vcpus_created >= t.max_vcpus, st(Capacity, 1));
                f.fail(a[2] >> t.gpa_bits != 0, st(OutOfRange, 3));
                f.of(self.delegated(a[1], 2));
                f.gate()?;
                let t = self.tvms.get_mut(&a[0]).unwrap();
                t.vcpus_created += 1;
                t.vcpus += 1;
                self.vcpus.insert(
                    a[1],
                    Vcpu {
                        tvm: a[0],
                        entry: a[2],
                        arg0: a[3],
                        exited: false,
                        started: false,
                        return_denied: false,
                        wait: None,
                    },
                );
                self.set(a[1], Gs::Vcpu);
                ok([0; 4])
            }
            VCPU_RUN => {
                if !a[1].is_multiple_of(8) {
                    f.0.push(st(InvalidBuffer, 2));
                } else {
                    f.of(self.host_buffer(a[1], 64, 2));
                }
                if f.of(self.handle(a[0], Gs::Vcpu, 1)).is_some() {
                    let v = &self.vcpus[&a[0]];
                    f.fail(!self.tvms[&v.tvm].active || v.exited, st(ObjectState, 1));
                }
                f.gate()?;
                Expect::Run
            }
            VCPU_DESTROY => {
                self.handle(a[0], Gs::Vcpu, 1)?;
                let v = self.vcpus.remove(&a[0]).unwrap();
                self.tvms.get_mut(&v.tvm).unwrap().vcpus -= 1;
                self.set(a[0], Gs::Delegated);
                ok([0; 4])
            }
            PDEV_CREATE => {
                let Env::PdevParams(p) = *env else {
                    panic!("PDEV_CREATE without params")
                };
                let readable = f.of(self.params(a[1], 64, 2)).is_some();
                if readable {
                    f.fail(!pdev_params_valid(&p), st(InvalidArgument, 2));
                    f.fail(p.pdev_flags().contains(PdevFlags::IDE), st(NotSupported, 2));
                    let overlaps = self.pdevs.values().any(|o| {
                        let a0 = u32::from(p.rid_base);
                        let a1 = a0 + u32::from(p.rid_count);
                        let b0 = u32::from(o.rid_base);
                        let b1 = b0 + u32::from(o.rid_count);
                        // The same RIDs on another segment are other devices.
                        o.segment == p.segment && a0 < b1 && b0 < a1
                    });
                    f.fail(overlaps, st(BdfInUse, 2));
                }
                f.of(self.delegated(a[0], 1));
                f.fail(self.pdevs.len() >= MAX_PDEVS, st(Capacity, 1));
                f.gate()?;
                self.pdevs.insert(
                    a[0],
                    Pdev {
                        state: PdevState::New,
                        segment: p.segment,
                        id_segment: p.interface_id_format == 1,
                        rid_base: p.rid_base,
                        rid_count: p.rid_count,
                        op: DeviceOp::None,
                        left: 0,
                        spdm: p.pdev_flags().contains(PdevFlags::SPDM),
                        evidence: 0,
                        unserved_slot: p.pdev_flags().contains(PdevFlags::SPDM) && p.spdm_slot != 0,
                        fails_at_left: 0,
                        owner: 0,
                        vdevs: 0,
                    },
                );
                self.set(a[0], Gs::Pdev);
                ok([0; 4])
            }
            PDEV_CONNECT => {
                self.handle(a[0], Gs::Pdev, 1)?;
                let spdm = self.pdevs[&a[0]].spdm;
                // core: the state first, then the evidence granule, then the buffer.
                if self.pdevs[&a[0]].state != PdevState::New {
                    return Err(st(ObjectState, 1).into());
                }
                if spdm {
                    // §7.4: a DELEGATED granule that is neither the PDEV nor the buffer.
                    f.fail(a[2] == a[0] || a[2] == a[1], st(GranuleState, 3));
                    f.of(self.delegated(a[2], 3));
                } else {
                    f.fail(a[2] != 0, st(InvalidArgument, 3));
                }
                f.of(self.comm_out(a[1]));
                f.gate()?;
                let left = if spdm { self.spdm_connect + 2 } else { 2 };
                if spdm {
                    self.set(a[2], Gs::Evidence);
                }
                let p = self.pdevs.get_mut(&a[0]).unwrap();
                p.state = PdevState::Connecting;
                p.op = DeviceOp::Connect;
                p.left = left;
                // The fourth answer: VERSION, CAPABILITIES, ALGORITHMS, then DIGESTS.
                p.fails_at_left = if p.unserved_slot { left - 3 } else { 0 };
                if spdm {
                    p.evidence = a[2];
                    p.owner = a[0];
                }
                progress(NeedsDeviceIo, DeviceOp::Connect.raw(), p.state.raw())
            }
            PDEV_DISCONNECT | PDEV_KEY_UPDATE => {
                self.handle(a[0], Gs::Pdev, 1)?;
                let p = &self.pdevs[&a[0]];
                if !p.spdm {
                    return Err(st(NotSupported, 1).into());
                }
                // READY, no operation, the session free.
                if p.state != PdevState::Ready || p.op != DeviceOp::None || p.owner != 0 {
                    return Err(st(ObjectState, 1).into());
                }
                if call == PDEV_DISCONNECT {
                    let bound = self.vdevs.values().any(|v| {
                        v.pdev == a[0] && !matches!(v.state, VdevState::Unlocked | VdevState::Error)
                    });
                    if bound {
                        return Err(st(InUse, ObjectKind::Vdev as u8).into());
                    }
                }
                self.comm_out(a[1])?;
                let (op, left) = if call == PDEV_DISCONNECT {
                    (DeviceOp::Disconnect, 1)
                } else {
                    // KEY_UPDATE (UpdateAllKeys), then KEY_UPDATE (VerifyNewKey).
                    (DeviceOp::KeyUpdate, 2)
                };
                let p = self.pdevs.get_mut(&a[0]).unwrap();
                p.op = op;
                p.left = left;
                p.owner = a[0];
                progress(NeedsDeviceIo, op.raw(), p.state.raw())
            }
            PDEV_STOP => {
                self.handle(a[0], Gs::Pdev, 1)?;
                let p = &self.pdevs[&a[0]];
                f.fail(
                    p.op != DeviceOp::None || p.state == PdevState::Stopped,
                    st(ObjectState, 1),
                );
                let bound = self.vdevs.values().any(|v| {
                    v.pdev == a[0] && !matches!(v.state, VdevState::Unlocked | VdevState::Error)
                });
                f.fail(bound, st(InUse, ObjectKind::Vdev as u8));
                f.gate()?;
                self.pdevs.get_mut(&a[0]).unwrap().state = PdevState::Stopped;
                ok([0; 4])
            }
            PDEV_DESTROY => {
                self.handle(a[0], Gs::Pdev, 1)?;
                let p = &self.pdevs[&a[0]];
                f.fail(p.vdevs != 0, st(InUse, ObjectKind::Vdev as u8));
                f.fail(p.op != DeviceOp::None, st(ObjectState, 1));
                f.gate()?;
                let p = self.pdevs.remove(&a[0]).unwrap();
                self.set(a[0], Gs::Delegated);
                // The evidence granule goes back with it, scrubbed.
                if p.evidence != 0 {
                    self.set(p.evidence, Gs::Delegated);
                }
                ok([0; 4])
            }
            VIOMMU_CREATE => {
                let vtype = match ViommuType::from_raw(a[2]) {
                    Some(t) => Some(t),
                    None if iommufd::NON_TSM_TYPES.contains(&a[2]) => {
                        f.0.push(st(ViommuTypeNotTsm, 3));
                        None
                    }
                    None => {
                        f.0.push(st(ViommuTypeUnknown, 3));
                        None
                    }
                };
                f.fail(a[3] != 0, st(InvalidArgument, 4));
                if f.of(self.handle(a[0], Gs::Tvm, 1)).is_some() {
                    f.fail(
                        self.tvms[&a[0]].viommus >= MAX_VIOMMUS_PER_TVM,
                        st(Capacity, 1),
                    );
                }
                f.of(self.delegated(a[1], 2));
                f.gate()?;
                self.tvms.get_mut(&a[0]).unwrap().viommus += 1;
                self.viommus.insert(
                    a[1],
                    Viommu {
                        tvm: a[0],
                        vtype: vtype.unwrap(),
                        vdevs: 0,
                    },
                );
                self.set(a[1], Gs::Viommu);
                ok([0; 4])
            }
            VIOMMU_DESTROY => {
                self.handle(a[0], Gs::Viommu, 1)?;
                if self.viommus[&a[0]].vdevs != 0 {
                    return Err(st(InUse, ObjectKind::Vdev as u8).into());
                }
                let v = self.viommus.remove(&a[0]).unwrap();
                self.tvms.get_mut(&v.tvm).unwrap().viommus -= 1;
                self.set(a[0], Gs::Delegated);
                ok([0; 4])
            }
            VDEV_CREATE => self.vdev_create(a, env)?,
            VDEV_MMIO_MAP => self.vdev_mmio_map(a)?,
            VDEV_MMIO_UNMAP => {
                f.fail(!a[1].is_multiple_of(G), st(Misaligned, 2));
                f.of(self.handle(a[0], Gs::Vdev, 1));
                f.gate()?;
                let tvm = self.vdevs[&a[0]].tvm;
                let t = self.tvms.get_mut(&tvm).unwrap();
                match t.mmio.get(&a[1]) {
                    Some(m) if m.vdev == a[0] => {
                        let pa = m.pa;
                        t.mmio.remove(&a[1]);
                        ok([pa, 0, 0, 0])
                    }
                    _ => return Err(st(NotMapped, 2).into()),
                }
            }
            VDEV_BIND => {
                self.handle(a[0], Gs::Vdev, 1)?;
                let v = &self.vdevs[&a[0]];
                let p = &self.pdevs[&v.pdev];
                f.fail(
                    v.state != VdevState::Unlocked
                        || p.state != PdevState::Ready
                        || p.op != DeviceOp::None,
                    st(ObjectState, 1),
                );
                f.of(self.claim(v.pdev, a[0]));
                f.of(self.comm_out(a[1]));
                f.gate()?;
                self.take_session(a[0]);
                let v = self.vdevs.get_mut(&a[0]).unwrap();
                v.state = VdevState::Locking;
                v.op = DeviceOp::Bind;
                v.sent = true;
                v.locked_rsp = false;
                v.accepted = false;
                v.authenticated = false;
                progress(NeedsDeviceIo, v.op.raw(), v.state.raw())
            }
            VDEV_UNBIND => {
                self.handle(a[0], Gs::Vdev, 1)?;
                let v = &self.vdevs[&a[0]];
                f.fail(
                    !matches!(
                        v.state,
                        VdevState::Locked | VdevState::Run | VdevState::Error
                    ) || v.op != DeviceOp::None,
                    st(ObjectState, 1),
                );
                let p = &self.pdevs[&v.pdev];
                if p.spdm && p.state != PdevState::Ready && v.state != VdevState::Error {
                    f.gate()?;
                    // A failed session cannot carry STOP_INTERFACE: ERROR at once.
                    self.comm_out(a[1])?;
                    self.vdev_error(a[0], DeviceError);
                    let v = self.vdevs.get_mut(&a[0]).unwrap();
                    v.events.push();
                    v.host_events.push();
                    return Ok(progress(DeviceError, 0, VdevState::Error.raw()));
                }
                // ERROR under a failed session (destroy it), or a busy session (retry).
                f.fail(
                    p.spdm && (p.state != PdevState::Ready || p.op != DeviceOp::None),
                    st(ObjectState, 1),
                );
                f.of(self.claim(v.pdev, a[0]));
                f.of(self.comm_out(a[1]));
                f.gate()?;
                self.take_session(a[0]);
                self.drop_mmio(a[0]);
                let v = self.vdevs.get_mut(&a[0]).unwrap();
                v.state = VdevState::Stopping;
                v.op = DeviceOp::Stop;
                v.sent = true;
                v.accepted = false;
                progress(NeedsDeviceIo, v.op.raw(), v.state.raw())
            }
            VDEV_GET_STATE => {
                self.handle(a[0], Gs::Vdev, 1)?;
                let v = &self.vdevs[&a[0]];
                ok([u64::from(v.state.raw()), u64::from(v.op.raw()), 0, 0])
            }
            VDEV_DESTROY => {
                self.handle(a[0], Gs::Vdev, 1)?;
                let v = &self.vdevs[&a[0]];
                if !matches!(v.state, VdevState::Unlocked | VdevState::Error)
                    || v.op != DeviceOp::None
                {
                    return Err(st(ObjectState, 1).into());
                }
                let v = self.vdevs.remove(&a[0]).unwrap();
                self.tvms.get_mut(&v.tvm).unwrap().vdevs -= 1;
                self.viommus.get_mut(&v.viommu).unwrap().vdevs -= 1;
                self.pdevs.get_mut(&v.pdev).unwrap().vdevs -= 1;
                self.set(a[0], Gs::Delegated);
                for t in v.dma_tables {
                    self.set(t, Gs::Delegated);
                }
                ok([0; 4])
            }
            VDEV_DMA_TABLE => {
                if !self.iommu {
                    return Err(Status::new(NotSupported).into());
                }
                // core: the table is compared with the VDEV before either is locked.
                if a[1] & !(G - 1) == a[0] & !(G - 1) {
                    return Err(st(GranuleState, 2).into());
                }
                self.handle(a[0], Gs::Vdev, 1)?;
                if self.vdevs[&a[0]].dma_tables.len() >= MAX_DMA_TABLES {
                    return Err(st(Capacity, 1).into());
                }
                self.delegated(a[1], 2)?;
                self.vdevs.get_mut(&a[0]).unwrap().dma_tables.push(a[1]);
                self.set(a[1], Gs::DmaTable);
                ok([0; 4])
            }
            COMMUNICATE => self.communicate(a, env)?,
            OP_CANCEL => {
                match self.lockable(a[0], 1)? {
                    Gs::Pdev => {
                        let p = self.pdevs.get_mut(&a[0]).unwrap();
                        match p.op {
                            DeviceOp::None => return Err(st(NoOperation, 1).into()),
                            // A connect goes back to NEW, its session and evidence gone.
                            DeviceOp::Connect => {
                                let evidence = std::mem::take(&mut p.evidence);
                                p.op = DeviceOp::None;
                                p.left = 0;
                                p.owner = 0;
                                p.state = PdevState::New;
                                if evidence != 0 {
                                    self.set(evidence, Gs::Delegated);
                                }
                            }
                            // A key update or disconnect whose answer is lost ends the session.
                            _ => self.session_fail(a[0]),
                        }
                    }
                    Gs::Vdev => {
                        if self.vdevs[&a[0]].op == DeviceOp::None {
                            return Err(st(NoOperation, 1).into());
                        }
                        // Its request out in the session is lost: the session ends too.
                        let pdev = self.vdevs[&a[0]].pdev;
                        if self.pdevs[&pdev].owner == a[0] {
                            self.session_fail(pdev);
                        }
                        self.vdev_error(a[0], Cancelled);
                    }
                    _ => return Err(st(BadHandle, 1).into()),
                }
                ok([0; 4])
            }
            EVENT_READ => {
                if !a[1].is_multiple_of(8) {
                    f.0.push(st(InvalidBuffer, 2));
                } else {
                    f.of(self.host_buffer(a[1], 32, 2));
                }
                let domain = a[0] == tsm_abi::event::HOST_DOMAIN_EVENTS;
                if !domain {
                    f.of(self.handle(a[0], Gs::Vdev, 1));
                }
                f.gate()?;
                let q = if domain {
                    &mut self.host_domain
                } else {
                    &mut self.vdevs.get_mut(&a[0]).unwrap().host_events
                };
                if q.pending == 0 {
                    return Err(Status::new(Empty).into());
                }
                q.pending -= 1;
                ok([u64::from(q.pending), u64::from(q.overflow), 0, 0])
            }
            TEST_DMA_INJECT => {
                f.fail(a[0] > 0xFFFF, st(InvalidArgument, 1));
                f.fail(a[1] != NO_PASID && a[1] > MAX_PASID, st(InvalidArgument, 2));
                f.fail(a[3] & !0b11 != 0, st(InvalidArgument, 4));
                f.fail(a[4] > 0xFFFF, st(InvalidArgument, 5));
                f.gate()?;
                Expect::Dma
            }
            _ => unreachable!("guest call {call:?} reached the host table"),
        })
    }

    fn tvm_create(&mut self, a: &[u64; 6], env: &Env) -> Result<Expect, Fails> {
        let mut f = Fails::default();
        let Env::TvmParams(p) = *env else {
            panic!("TVM_CREATE without params")
        };
        if f.of(self.params(a[1], 64, 2)).is_some() {
            let valid = p.flags == 0
                && p.gpa_bits != 0
                && p.reserved0 == [0; 3]
                && p.max_vcpus != 0
                && p.reserved1 == [0; 6];
            f.fail(
                !valid || p.gpa_bits < 32 || p.gpa_bits > self.max_gpa_bits,
                st(InvalidArgument, 2),
            );
        }
        if a[0] & !(G - 1) == a[2] & !(G - 1) {
            f.0.push(st(GranuleState, 3));
        }
        f.of(self.delegated(a[0], 1));
        f.of(self.delegated(a[2], 3));
        f.gate()?;
        self.tvms.insert(
            a[0],
            Tvm {
                active: false,
                gpa_bits: p.gpa_bits,
                root: a[2],
                max_vcpus: u64::from(p.max_vcpus),
                vcpus_created: 0,
                tables: BTreeMap::new(),
                pages: BTreeMap::new(),
                mmio: BTreeMap::new(),
                vcpus: 0,
                viommus: 0,
                vdevs: 0,
            },
        );
        self.set(a[0], Gs::Tvm);
        self.set(a[2], Gs::Table);
        Ok(ok([0; 4]))
    }

    /// The level-3 slot for a page at `gpa`: its table exists, the slot is empty.
    fn leaf_slot(&self, t: &Tvm, gpa: u64) -> Result<u64, Status> {
        if let Some(l) = Self::missing(t, gpa, 3) {
            return Err(st(TableMissing, l));
        }
        if t.pages.contains_key(&gpa) || t.mmio.contains_key(&gpa) {
            return Err(st(AlreadyMapped, 2));
        }
        Ok(t.tables[&(3, gpa & !(span(3) - 1))])
    }

    fn map_private(&mut self, a: &[u64; 6]) -> Result<Expect, Fails> {
        let mut f = Fails::default();
        let flags = f.of(MapFlags::from_arg(a[4]).ok_or(st(InvalidArgument, 5)));
        f.of(self.handle(a[0], Gs::Tvm, 1));
        let page = a[2];
        if !page.is_multiple_of(G) {
            f.0.push(st(Misaligned, 3));
        } else if let Some(s) = f.of(self.lockable(page, 3)) {
            f.fail(s != Gs::Delegated, st(GranuleState, 3));
        }
        let src = (a[3] != NO_SOURCE).then_some(a[3]);
        if let Some(s) = src {
            if !s.is_multiple_of(G) {
                f.0.push(st(Misaligned, 4));
            } else {
                // §10.2: a source that is not NS host memory (outside DRAM, the TSM's, secure,
                // the page itself) is "not usable": InvalidBuffer(4).
                let ns = self.state(s) == Some(Gs::Ns) && s >= self.base;
                f.fail(!ns || s == page & !(G - 1), st(InvalidBuffer, 4));
            }
        }
        // As TABLE_CREATE: a page inside the TVM's or the leaf table's granule is
        // GranuleState(3) first.
        let leaf_table = self
            .tvms
            .get(&a[0])
            .and_then(|t| t.tables.get(&(3, a[1] & !(span(3) - 1))).copied());
        f.fail(
            page & !(G - 1) == a[0] || Some(page & !(G - 1)) == leaf_table,
            st(GranuleState, 3),
        );
        if let Some(t) = self.tvms.get(&a[0]) {
            f.fail(src.is_some() && t.active, st(ObjectState, 1));
            if f.of(Self::gpa(t, a[1], G, 2)).is_some() {
                if Self::shared_half(t, a[1]) {
                    f.0.push(st(OutOfRange, 2));
                } else {
                    f.of(self.leaf_slot(t, a[1]));
                }
            }
        }
        f.gate()?;
        self.tvms.get_mut(&a[0]).unwrap().pages.insert(
            a[1],
            Page {
                pa: page,
                private: true,
                write: flags.unwrap().contains(MapFlags::WRITE),
            },
        );
        self.set(page, Gs::Private);
        Ok(ok([0; 4]))
    }

    fn vdev_create(&mut self, a: &[u64; 6], env: &Env) -> Result<Expect, Fails> {
        let mut f = Fails::default();
        let Env::VdevParams(p) = *env else {
            panic!("VDEV_CREATE without params")
        };
        let (vdev, pdev, viommu) = (a[0], a[1], a[2]);
        let readable = f.of(self.params(a[3], 64, 4)).is_some();
        if readable {
            let lock_ok = tsm_abi::params::LockFlags::from_bits(p.lock_flags).is_some();
            let valid = p.flags == 0
                && p.function_id >> 25 == 0
                && lock_ok
                && p.reserved0 == 0
                && p.reserved1 == 0
                && p.reserved2 == [0; 2]
                && p.bind_p2p_address_mask == 0
                && p.lock_flags & !ACCEPTED_LOCK_FLAGS == 0;
            f.fail(!valid, st(InvalidArgument, 4));
        }
        let vi = f
            .of(self.handle(viommu, Gs::Viommu, 3))
            .map(|()| &self.viommus[&viommu]);
        let pd = f
            .of(self.handle(pdev, Gs::Pdev, 2))
            .map(|()| &self.pdevs[&pdev]);
        f.of(self.delegated(vdev, 1));
        // The core compares the handles before any lock: naming one object twice is
        // GranuleState(1) / BadHandle(2) whatever the addresses.
        let tvm_of = self.viommus.get(&viommu).map(|v| v.tvm);
        f.fail(
            Some(vdev) == tvm_of || vdev == viommu || vdev == pdev,
            st(GranuleState, 1),
        );
        f.fail(Some(pdev) == tvm_of || pdev == viommu, st(BadHandle, 2));
        if let Some(pd) = pd {
            f.fail(pd.state != PdevState::Ready, st(ObjectState, 2));
            f.fail(pd.vdevs >= MAX_VDEVS_PER_PDEV, st(Capacity, 2));
            if readable {
                // §10.5: the function ID is the PDEV's interface ID of the pBDF.
                let interface_id = if pd.id_segment {
                    u32::from(p.pbdf) | u32::from(pd.segment & 0xFF) << 16 | 1 << 24
                } else {
                    u32::from(p.pbdf)
                };
                f.fail(p.function_id != interface_id, st(InvalidArgument, 4));
                let in_range = u32::from(p.pbdf) >= u32::from(pd.rid_base)
                    && u32::from(p.pbdf) < u32::from(pd.rid_base) + u32::from(pd.rid_count);
                f.fail(!in_range, st(BdfOutOfRange, 4));
                let used = self
                    .vdevs
                    .values()
                    .any(|v| v.pdev == pdev && v.pbdf == p.pbdf);
                f.fail(used, st(BdfInUse, 4));
            }
        }
        if let Some(vi) = vi {
            f.fail(
                self.tvms[&vi.tvm].vdevs >= MAX_VDEVS_PER_TVM,
                st(Capacity, 3),
            );
            if readable {
                f.fail(
                    vi.vtype == ViommuType::TsmNoViommu && p.virt_id != 0,
                    st(InvalidArgument, 4),
                );
                let used = self
                    .vdevs
                    .values()
                    .any(|v| v.tvm == vi.tvm && v.vbdf == p.vbdf);
                f.fail(used, st(BdfInUse, 4));
            }
        }
        f.gate()?;
        let tvm = self.viommus[&viommu].tvm;
        self.tvms.get_mut(&tvm).unwrap().vdevs += 1;
        self.viommus.get_mut(&viommu).unwrap().vdevs += 1;
        self.pdevs.get_mut(&pdev).unwrap().vdevs += 1;
        let report_len = self.report_len.get(&p.pbdf).copied().unwrap_or(0);
        self.next_uid += 1;
        self.vdevs.insert(
            vdev,
            Vdev {
                uid: self.next_uid,
                tvm,
                pdev,
                viommu,
                pbdf: p.pbdf,
                vbdf: p.vbdf,
                lock_flags: p.lock_flags,
                state: VdevState::Unlocked,
                op: DeviceOp::None,
                sent: false,
                portions_left: 0,
                locked_rsp: false,
                accepted: false,
                binds: 0,
                report_len,
                s1: BTreeSet::new(),
                guest_ticket: 0,
                guest_result: None,
                events: Queue::default(),
                host_events: Queue::default(),
                dma_tables: Vec::new(),
                authenticated: false,
            },
        );
        self.set(vdev, Gs::Vdev);
        Ok(ok([0; 4]))
    }

    /// A COMMUNICATE buffer the TSM writes a request into.
    fn comm_out(&self, pa: u64) -> Result<(), Status> {
        if !pa.is_multiple_of(G) {
            return Err(st(InvalidBuffer, 2));
        }
        self.host_buffer(pa, 64, 2)
    }

    /// §7.4: the session carries one request at a time; another object's is refused.
    fn claim(&self, pdev: u64, object: u64) -> Result<(), Status> {
        let p = &self.pdevs[&pdev];
        if p.spdm && p.owner != 0 && p.owner != object {
            return Err(st(ObjectState, 1));
        }
        Ok(())
    }

    /// Vdevice `vdev`'s request is out: in its PDEV's session if it has one.
    fn take_session(&mut self, vdev: u64) {
        let pdev = self.vdevs[&vdev].pdev;
        let p = self.pdevs.get_mut(&pdev).unwrap();
        if p.spdm {
            p.owner = vdev;
        }
    }

    /// The session is over for good (keys erased): the PDEV in ERROR with nothing out; its
    /// evidence granule stays until the PDEV is destroyed.
    fn session_fail(&mut self, pdev: u64) {
        let p = self.pdevs.get_mut(&pdev).unwrap();
        if p.spdm {
            self.spdm_done[3] += 1;
        }
        p.state = PdevState::Error;
        p.op = DeviceOp::None;
        p.left = 0;
        p.owner = 0;
    }

    /// Puts a vdevice in ERROR (device error or cancel).
    fn vdev_error(&mut self, pa: u64, result: StatusCode) {
        self.drop_mmio(pa);
        let v = self.vdevs.get_mut(&pa).unwrap();
        v.state = VdevState::Error;
        v.op = DeviceOp::None;
        v.accepted = false;
        v.sent = false;
        v.guest_op_done(result);
    }

    /// Every exit from LOCKED, STARTING and RUN takes the vdevice's private MMIO away (§5.7).
    fn drop_mmio(&mut self, vdev: u64) {
        let tvm = self.vdevs[&vdev].tvm;
        self.tvms
            .get_mut(&tvm)
            .unwrap()
            .mmio
            .retain(|_, m| m.vdev != vdev);
    }

    /// Where host page `pa` lies in the TEE ranges of `pbdf`'s report (the TSM locks with a
    /// reporting offset of 0 here): (range index in report order, page index in the range).
    fn locate(&self, pbdf: u16, pa: u64) -> Option<(u64, u64)> {
        let frame = pa / G;
        let ranges = self.report_ranges.get(&pbdf)?;
        ranges
            .iter()
            .enumerate()
            .find(|&(_, &(first, n, tee))| tee && first <= frame && frame - first < n)
            .map(|(i, &(first, _, _))| (i as u64, frame - first))
    }

    /// VDEV_MMIO_MAP (§5.7).
    fn vdev_mmio_map(&mut self, a: &[u64; 6]) -> Result<Expect, Fails> {
        let mut f = Fails::default();
        self.handle(a[0], Gs::Vdev, 1)?;
        let v = &self.vdevs[&a[0]];
        let t = &self.tvms[&v.tvm];
        let (gpa, pa) = (a[1], a[2]);
        let bound = matches!(v.state, VdevState::Locked | VdevState::Run);
        f.fail(!bound, st(ObjectState, 1));
        let gpa_ok = f.of(Self::gpa(t, gpa, G, 2)).is_some();
        f.fail(gpa_ok && Self::shared_half(t, gpa), st(OutOfRange, 2));
        let mine: Vec<&Mmio> = t.mmio.values().filter(|m| m.vdev == a[0]).collect();
        if !pa.is_multiple_of(G) {
            f.0.push(st(Misaligned, 3));
        } else {
            let (base, size) = self.bar_window;
            let taken = self
                .tvms
                .values()
                .any(|t| t.mmio.values().any(|m| m.pa == pa));
            f.fail(taken, st(AlreadyMapped, 3));
            f.fail(
                bound && self.locate(v.pbdf, pa).is_none(),
                st(OutOfRange, 3),
            );
            f.fail(pa < base || pa - base >= size, st(OutOfRange, 3));
        }
        f.fail(mine.len() >= MAX_MMIO_PAGES, st(Capacity, 1));
        if gpa_ok && !Self::shared_half(t, gpa) {
            f.of(self.leaf_slot(t, gpa));
        }
        f.gate()?;
        let tvm = v.tvm;
        self.tvms.get_mut(&tvm).unwrap().mmio.insert(
            gpa,
            Mmio {
                vdev: a[0],
                pa,
                validated: false,
            },
        );
        Ok(ok([0; 4]))
    }

    fn communicate(&mut self, a: &[u64; 6], env: &Env) -> Result<Expect, Fails> {
        let mut f = Fails::default();
        let Env::Comm(comm) = *env else {
            panic!("COMMUNICATE without a header")
        };
        let obj = a[0];
        let kind = self.lockable(obj, 1)?;
        match kind {
            Gs::Pdev => {
                // core: the operation before the buffer.
                if self.pdevs[&obj].op == DeviceOp::None {
                    return Err(st(NoOperation, 1).into());
                }
                self.comm_in(a[1], comm)?;
                let p = &self.pdevs[&obj];
                let unserved =
                    p.op == DeviceOp::Connect && p.unserved_slot && p.left == p.fails_at_left;
                if comm != (CommEnv::Response { valid: true }) || unserved {
                    // Without SPDM the connect fails; with it the session ends with it.
                    self.session_fail(obj);
                    return Ok(progress(DeviceError, 0, PdevState::Error.raw()));
                }
                let p = self.pdevs.get_mut(&obj).unwrap();
                p.left -= 1;
                if p.left != 0 {
                    return Ok(progress(NeedsDeviceIo, p.op.raw(), p.state.raw()));
                }
                match p.op {
                    DeviceOp::Connect => {
                        p.state = PdevState::Ready;
                        self.spdm_done[0] += u64::from(p.spdm);
                    }
                    DeviceOp::Disconnect => {
                        p.state = PdevState::New;
                        let evidence = std::mem::take(&mut p.evidence);
                        self.set(evidence, Gs::Delegated);
                        self.spdm_done[2] += 1;
                    }
                    _ => self.spdm_done[1] += 1,
                }
                let p = self.pdevs.get_mut(&obj).unwrap();
                p.op = DeviceOp::None;
                p.owner = 0;
                Ok(progress(Success, 0, p.state.raw()))
            }
            Gs::Vdev => {
                let v = &self.vdevs[&obj];
                if v.op == DeviceOp::None {
                    f.0.push(st(NoOperation, 1));
                    f.of(self.comm_in(a[1], comm));
                    return Err(f);
                }
                let p = &self.pdevs[&v.pdev];
                let (pdev, spdm) = (v.pdev, p.spdm);
                if !v.sent {
                    // The session failed (or is being ended) before the guest's request went
                    // out: the operation fails at once.
                    if spdm && (p.state != PdevState::Ready || p.op != DeviceOp::None) {
                        self.vdev_error(obj, DeviceError);
                        let v = self.vdevs.get_mut(&obj).unwrap();
                        v.events.push();
                        v.host_events.push();
                        return Ok(progress(DeviceError, 0, VdevState::Error.raw()));
                    }
                    f.of(self.claim(pdev, obj));
                    f.of(self.comm_out(a[1]));
                    f.gate()?;
                    self.take_session(obj);
                    let v = self.vdevs.get_mut(&obj).unwrap();
                    v.sent = true;
                    return Ok(progress(NeedsDeviceIo, v.op.raw(), v.state.raw()));
                }
                self.comm_in(a[1], comm)?;
                // In a session the answer opens only while this vdevice's request is the one
                // out.
                let owns = p.owner == obj;
                if comm != (CommEnv::Response { valid: true }) || (spdm && !owns) {
                    if spdm && owns {
                        self.session_fail(pdev);
                    }
                    self.vdev_error(obj, DeviceError);
                    // §8.3: a device error is queued on both event queues.
                    let v = self.vdevs.get_mut(&obj).unwrap();
                    v.events.push();
                    v.host_events.push();
                    return Ok(progress(DeviceError, 0, VdevState::Error.raw()));
                }
                let v = self.vdevs.get_mut(&obj).unwrap();
                let done = match v.op {
                    DeviceOp::Bind if !v.locked_rsp => {
                        v.locked_rsp = true;
                        v.portions_left = v.report_len.div_ceil(REPORT_PORTION);
                        false
                    }
                    DeviceOp::Bind => {
                        v.portions_left -= 1;
                        if v.portions_left == 0 {
                            v.state = VdevState::Locked;
                            v.binds += 1;
                            v.authenticated = spdm;
                            self.spdm_done[4] += u64::from(spdm);
                            true
                        } else {
                            false
                        }
                    }
                    DeviceOp::Start => {
                        v.state = VdevState::Run;
                        v.accepted = true;
                        true
                    }
                    DeviceOp::Stop => {
                        v.state = VdevState::Unlocked;
                        v.authenticated = false;
                        true
                    }
                    DeviceOp::None
                    | DeviceOp::Connect
                    | DeviceOp::KeyUpdate
                    | DeviceOp::Disconnect => {
                        unreachable!()
                    }
                };
                if done {
                    if v.op != DeviceOp::Bind {
                        v.guest_op_done(Success);
                    }
                    v.op = DeviceOp::None;
                    v.sent = false;
                    let state = v.state;
                    if spdm {
                        self.pdevs.get_mut(&pdev).unwrap().owner = 0;
                    }
                    Ok(progress(Success, 0, state.raw()))
                } else {
                    Ok(progress(NeedsDeviceIo, v.op.raw(), v.state.raw()))
                }
            }
            _ => Err(st(BadHandle, 1).into()),
        }
    }

    /// The buffer a response is read from: a whole NS granule with a well-formed header.
    fn comm_in(&self, pa: u64, comm: CommEnv) -> Result<(), Status> {
        if !pa.is_multiple_of(G) {
            return Err(st(InvalidBuffer, 2));
        }
        self.host_buffer(pa, G, 2)?;
        if comm == CommEnv::Malformed {
            return Err(st(InvalidBuffer, 2));
        }
        Ok(())
    }

    fn guest(&mut self, call: CallId, vcpu: u64, a: &[u64; 6], env: &Env) -> Result<Expect, Fails> {
        use CallId::*;
        let mut f = Fails::default();
        let tvm = self.caller_tvm(vcpu);
        let page = |m: &Self, gpa: u64, len: u64, write: bool, private: bool, arg: u8| {
            Self::guest_page(&m.tvms[&tvm], gpa, len, write, private)
                .map(|_| ())
                .ok_or(st(InvalidBuffer, arg))
        };
        Ok(match call {
            G_VERSION => version_call(a[0]),
            G_CONSOLE_WRITE => {
                if a[1] == 0 || a[1] > MAX_CONSOLE {
                    return Err(st(InvalidArgument, 2).into());
                }
                page(self, a[0], a[1], false, false, 1)?;
                ok([0; 4])
            }
            G_EXIT => unreachable!("G_EXIT goes through VCPU_RUN"),
            G_TVM_INFO => {
                let bits = self.tvms[&tvm].gpa_bits;
                ok([u64::from(bits), 1 << (bits - 1), 0, 0])
            }
            G_VDEV_INFO => {
                f.of(self.own_vdev(tvm, a[0]));
                if !a[1].is_multiple_of(8) {
                    f.0.push(st(InvalidBuffer, 2));
                } else {
                    f.of(page(
                        self,
                        a[1],
                        size_of::<VdevInfo>() as u64,
                        true,
                        false,
                        2,
                    ));
                }
                f.gate()?;
                ok([0; 4])
            }
            G_VDEV_REPORT => {
                let pa = self.own_vdev(tvm, a[0])?;
                let v = &self.vdevs[&pa];
                f.fail(!v.has_report(), st(ObjectState, 1));
                f.fail(a[3] == 0, st(InvalidArgument, 4));
                let total = u64::from(v.report_len);
                if v.has_report() {
                    f.fail(a[1] > total, st(InvalidArgument, 2));
                }
                // §11: the whole buffer `[buffer, buffer + length)`, whatever is copied.
                if a[3] != 0 {
                    f.of(page(self, a[2], a[3], true, true, 3));
                }
                f.gate()?;
                let n = a[3].min(total - a[1]);
                ok([n, total - a[1] - n, 0, 0])
            }
            // As G_VDEV_REPORT, over the evidence of a bind completed in a session.
            G_VDEV_CERT_CHAIN | G_VDEV_MEASUREMENTS => {
                let pa = self.own_vdev(tvm, a[0])?;
                let v = &self.vdevs[&pa];
                if !v.has_report() || !v.authenticated {
                    return Err(st(ObjectState, 1).into());
                }
                let total = u64::from(if call == G_VDEV_CERT_CHAIN {
                    self.chain_len
                } else {
                    self.measurements_len
                });
                // core: the offset, then the length, then the buffer.
                if a[1] > total {
                    return Err(st(InvalidArgument, 2).into());
                }
                if a[3] == 0 {
                    return Err(st(InvalidArgument, 4).into());
                }
                page(self, a[2], a[3], true, true, 3)?;
                let n = a[3].min(total - a[1]);
                ok([n, total - a[1] - n, 0, 0])
            }
            G_VDEV_ACCEPT => {
                let pa = self.own_vdev(tvm, a[0])?;
                let v = &self.vdevs[&pa];
                f.fail(
                    v.state != VdevState::Locked || v.op != DeviceOp::None,
                    st(ObjectState, 1),
                );
                let readable = if !a[1].is_multiple_of(8) {
                    f.0.push(st(InvalidBuffer, 2));
                    false
                } else {
                    f.of(page(
                        self,
                        a[1],
                        size_of::<AcceptEvidence>() as u64,
                        false,
                        false,
                        2,
                    ))
                    .is_some()
                };
                let Env::Accept(e) = *env else {
                    panic!("G_VDEV_ACCEPT without evidence")
                };
                if readable {
                    if e.reserved {
                        f.0.push(st(InvalidArgument, 2));
                    } else if e.from != Some((v.uid, v.binds)) {
                        f.0.push(st(EvidenceMismatch, 1));
                    } else if let Some(i) = e.altered {
                        f.0.push(st(EvidenceMismatch, i));
                    }
                }
                f.gate()?;
                self.next_ticket += 1;
                let v = self.vdevs.get_mut(&pa).unwrap();
                v.state = VdevState::Starting;
                v.op = DeviceOp::Start;
                v.sent = false;
                v.guest_ticket = self.next_ticket;
                v.guest_result = None;
                Expect::Exactly(
                    Status::new(NeedsDeviceIo),
                    [pa, u64::from(DeviceOp::Start.raw()), 0, 0],
                )
            }
            G_VDEV_STOP => {
                let pa = self.own_vdev(tvm, a[0])?;
                let v = &self.vdevs[&pa];
                if !matches!(v.state, VdevState::Run | VdevState::Locked) || v.op != DeviceOp::None
                {
                    return Err(st(ObjectState, 1).into());
                }
                self.next_ticket += 1;
                self.drop_mmio(pa);
                let v = self.vdevs.get_mut(&pa).unwrap();
                v.state = VdevState::Stopping;
                v.accepted = false;
                v.op = DeviceOp::Stop;
                v.sent = false;
                v.guest_ticket = self.next_ticket;
                v.guest_result = None;
                Expect::Exactly(
                    Status::new(NeedsDeviceIo),
                    [pa, u64::from(DeviceOp::Stop.raw()), 0, 0],
                )
            }
            G_S1_ATTACH => {
                let pa = self.own_vdev(tvm, a[0])?;
                let pasid = f.of(one_pasid(a[1]));
                if let Some(min) = f.of(self.stage1_min(pa)) {
                    let bits = if a[3] == 0 { 48 } else { a[3] };
                    f.fail(bits < min || bits > 48, st(InvalidArgument, 4));
                }
                f.fail(!a[2].is_multiple_of(G), st(Misaligned, 3));
                f.fail(a[2] >> self.tvms[&tvm].gpa_bits != 0, st(OutOfRange, 3));
                if let Some(pasid) = pasid {
                    let v = &self.vdevs[&pa];
                    let full = pasid.is_some()
                        && !v.s1.contains(&pasid)
                        && v.s1.iter().filter(|p| p.is_some()).count() >= PASIDS_PER_VDEV;
                    f.fail(full, st(Capacity, 2));
                }
                f.gate()?;
                self.vdevs.get_mut(&pa).unwrap().s1.insert(pasid.unwrap());
                ok([0; 4])
            }
            G_S1_DETACH => {
                let pa = self.own_vdev(tvm, a[0])?;
                let pasid = f.of(one_pasid(a[1]));
                f.of(self.stage1_min(pa));
                if let Some(p) = pasid {
                    f.fail(!self.vdevs[&pa].s1.contains(&p), st(NotMapped, 2));
                }
                f.gate()?;
                self.vdevs.get_mut(&pa).unwrap().s1.remove(&pasid.unwrap());
                ok([0; 4])
            }
            G_S1_INVALIDATE => {
                self.own_vdev(tvm, a[0])?;
                if a[1] != NO_PASID && a[1] != ALL_PASIDS && a[1] > MAX_PASID {
                    return Err(st(InvalidArgument, 2).into());
                }
                ok([0; 4])
            }
            G_EVENT_READ => {
                let pa = f.of(self.own_vdev(tvm, a[0]));
                if !a[1].is_multiple_of(8) {
                    f.0.push(st(InvalidBuffer, 2));
                } else {
                    f.of(page(self, a[1], 64, true, false, 2));
                }
                f.gate()?;
                let q = &mut self.vdevs.get_mut(&pa.unwrap()).unwrap().events;
                if q.pending == 0 {
                    return Err(Status::new(Empty).into());
                }
                q.pending -= 1;
                ok([u64::from(q.pending), u64::from(q.overflow), 0, 0])
            }
            G_VDEV_MMIO_VALIDATE => {
                let pa = self.own_vdev(tvm, a[0])?;
                let v = &self.vdevs[&pa];
                f.fail(
                    !matches!(v.state, VdevState::Locked | VdevState::Run),
                    st(ObjectState, 1),
                );
                if !a[1].is_multiple_of(G) {
                    f.0.push(st(Misaligned, 2));
                } else {
                    match self.tvms[&tvm].mmio.get(&a[1]) {
                        Some(m) if m.vdev == pa => {
                            if m.validated {
                                f.0.push(st(AlreadyMapped, 2));
                            } else {
                                let (range, index) = self.locate(v.pbdf, m.pa).unwrap();
                                f.fail(a[2] != range, st(MmioMismatch, 3));
                                f.fail(a[2] == range && a[3] != index, st(MmioMismatch, 4));
                            }
                        }
                        _ => f.0.push(st(MmioMismatch, 2)),
                    }
                }
                f.gate()?;
                let m = self
                    .tvms
                    .get_mut(&tvm)
                    .unwrap()
                    .mmio
                    .get_mut(&a[1])
                    .unwrap();
                m.validated = true;
                ok([0; 4])
            }
            _ => unreachable!("host call {call:?} reached the guest table"),
        })
    }

    fn stage1_min(&self, vdev: u64) -> Result<u64, Status> {
        match self.viommus[&self.vdevs[&vdev].viommu]
            .vtype
            .stage1_format()
        {
            Stage1Format::ArmVmsav8_64_4k => Ok(25),
            Stage1Format::X86_64FirstStage4Level => Ok(48),
            Stage1Format::None => Err(st(NotSupported, 1)),
        }
    }

    // ---- the run path ----

    /// A VCPU_RUN the model accepted ran the guest until `exit`; the model's view of the vCPU
    /// moves on.
    pub fn ran(&mut self, vcpu: u64, exit: RunExit) {
        let v = self.vcpus.get_mut(&vcpu).unwrap();
        v.started = true;
        v.return_denied = false;
        match exit {
            RunExit::Fault | RunExit::Interrupt => {}
            RunExit::GuestExit => v.exited = true,
            RunExit::DeniedCall => v.return_denied = true,
        }
    }

    /// The guest of `vcpu` called G_VDEV_ACCEPT / G_VDEV_STOP inside a run and the vCPU exited
    /// with DEVICE_REQUEST for `vdev`'s operation: it waits for it.
    pub fn waits(&mut self, vcpu: u64, vdev: u64) {
        let v = &self.vdevs[&vdev];
        let wait = Wait {
            vdev,
            uid: v.uid,
            ticket: v.guest_ticket,
            op: v.op,
        };
        self.vcpus.get_mut(&vcpu).unwrap().wait = Some(wait);
    }

    /// The next VCPU_RUN of a waiting vCPU (§6): the same exit while its operation is pending,
    /// else its call returns the operation's result — only if the vdevice is the incarnation
    /// it started the operation on and still keeps that operation's result; `Cancelled`
    /// otherwise (destroyed, re-created, or superseded by another guest's operation).
    pub fn resume_wait(&mut self, w: Wait) -> WaitOutcome {
        let Some(v) = self
            .vdevs
            .get_mut(&w.vdev)
            .filter(|v| v.uid == w.uid && v.guest_ticket == w.ticket)
        else {
            return WaitOutcome::Done(Status::new(Cancelled));
        };
        match v.guest_result {
            None => WaitOutcome::Pending,
            Some(r) => {
                v.guest_ticket = 0;
                WaitOutcome::Done(Status::new(r))
            }
        }
    }

    /// The waiting vCPU's call completed.
    pub fn wait_over(&mut self, vcpu: u64) {
        self.vcpus.get_mut(&vcpu).unwrap().wait = None;
    }

    // ---- DMA ----

    /// The vdevice a requester (segment, RID) names, if any: the one at that pBDF of the PDEV
    /// on that segment (§8.2).
    pub fn vdev_of(&self, (segment, rid): (u16, u16)) -> Option<u64> {
        self.vdevs
            .iter()
            .find(|(_, v)| {
                v.pbdf == rid && {
                    let p = &self.pdevs[&v.pdev];
                    p.segment == segment
                        && rid >= p.rid_base
                        && u32::from(rid) < u32::from(p.rid_base) + u32::from(p.rid_count)
                }
            })
            .map(|(&pa, _)| pa)
    }

    /// Invariants 1–2 and §8.2: may a request of `requester` with T bit `t` end at `pa`?
    pub fn dma_allowed(&self, requester: (u16, u16), t: bool, pa: u64) -> Result<(), String> {
        let g = pa & !(G - 1);
        let secure = !matches!(self.state(g), Some(Gs::Ns) | None);
        if !t && secure {
            return Err(format!("T=0 DMA of {requester:x?} reached secure {pa:#x}"));
        }
        let Some(vdev) = self.vdev_of(requester) else {
            return if t {
                Err(format!("T=1 DMA of host device {requester:x?} succeeded"))
            } else {
                Ok(())
            };
        };
        let v = &self.vdevs[&vdev];
        if t && (v.state != VdevState::Run || !v.accepted) {
            return Err(format!(
                "T=1 DMA of vdev {vdev:#x} in {:?} succeeded",
                v.state
            ));
        }
        // Stage 2 is the vdevice's TVM's map, after stage 1 or without it: whatever a request
        // reaches, T=0 or T=1, is a page that TVM maps.
        if !self.tvms[&v.tvm].pages.values().any(|p| p.pa == g) {
            return Err(format!(
                "DMA of vdev {vdev:#x} ({requester:x?}, T={}) reached {pa:#x}, not its TVM's",
                u8::from(t)
            ));
        }
        Ok(())
    }

    /// A DMA fault was reported: queue it where §8.3 says.
    pub fn dma_fault(&mut self, requester: (u16, u16)) {
        match self.vdev_of(requester) {
            Some(v) => {
                let v = self.vdevs.get_mut(&v).unwrap();
                v.events.push();
                v.host_events.push();
            }
            None => self.host_domain.push(),
        }
    }
}

/// How a guest run ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunExit {
    Fault,
    /// A host interrupt: the vCPU continues where it was on its next run.
    Interrupt,
    GuestExit,
    DeniedCall,
}

fn progress(code: StatusCode, op: u32, state: u32) -> Expect {
    Expect::Exactly(Status::new(code), [u64::from(op), u64::from(state), 0, 0])
}

fn level_arg(raw: u64) -> Result<u8, Status> {
    match raw {
        1..=3 => Ok(raw as u8),
        _ => Err(st(InvalidArgument, 3)),
    }
}

fn one_pasid(raw: u64) -> Result<Option<u32>, Status> {
    match raw {
        NO_PASID => Ok(None),
        p if p <= MAX_PASID => Ok(Some(p as u32)),
        _ => Err(st(InvalidArgument, 2)),
    }
}

fn version_call(raw: u64) -> Expect {
    let (lo, hi) = (version::LOWEST.to_raw(), version::HIGHEST.to_raw());
    if raw >> 32 != 0 {
        return Expect::Exactly(Status::arg(InvalidArgument, 1), [0, lo, hi, 0]);
    }
    if raw < lo || raw > hi {
        return Expect::Exactly(Status::new(VersionMismatch), [0, lo, hi, 0]);
    }
    ok([raw, lo, hi, 0])
}

/// §9 PdevParams rules.
fn pdev_params_valid(p: &PdevParams) -> bool {
    PdevFlags::from_bits(p.flags).is_some()
        && p.rid_count != 0
        && u32::from(p.rid_base) + u32::from(p.rid_count) <= 0x1_0000
        && p.reserved0 == 0
        && p.interface_id_format <= 1
        && (p.interface_id_format == 0 || p.segment <= 0xFF)
        && p.spdm_slot < 8
        && (p.spdm_slot == 0 || p.pdev_flags().contains(PdevFlags::SPDM))
        && p.reserved2 == [0; 5]
}
