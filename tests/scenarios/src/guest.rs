//! The guest scripts: what the guest does in each scenario, over the guest ABI. The guest
//! payload calls [`main`] with its `arg0`; the simulated vCPU does the same in-process.
//!
//! A script returns its G_EXIT code: 0 when every check passed, else the source line of the
//! first failed check. It hands a step to the host by issuing a host call (VERSION): the TSM
//! refuses it with `Denied` and the vCPU exits with `DENIED_CALL`, after which the host does
//! its part and runs the vCPU again.

use sha2::{Digest, Sha256, Sha384};
use tsm_abi::addr::Gpa;
use tsm_abi::api::{Error, guest, host};
use tsm_abi::call::CallId;
use tsm_abi::event::{EventFlags, EventReason, GuestEvent};
use tsm_abi::guest::{AcceptEvidence, EvidenceFlags, VdevInfo};
use tsm_abi::regs::CallRegs;
use tsm_abi::state::VdevState;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::tdisp::InterfaceReport;
use tsm_abi::version::AbiVersion;
use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{
    BENCH_CALLS, BENCH_SUMS_GPA, BenchSums, GPA_BITS, GuestArg, L3_GPA, MMIO_GPA, MMIO_PAGES,
    OTHER_GPA, SAVED_EVIDENCE, SCRATCH_GPA, SHARED_BASE, Script, exit_code,
};
use crate::pci::{Direction, EduRegs};
use crate::scenarios::mmio::{DMA_DST_GPA, DMA_LEN, DMA_SRC_GPA, DMA_ZERO_GPA, guest_data};
use crate::{GuestEnv, GuestFault};

/// A guest script's result: the exit code, or the fault that stopped it.
pub type Verdict = Result<u64, GuestFault>;

/// Fails the script with the current line unless `$cond`.
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Ok(u64::from(line!()));
        }
    };
}

/// Checks a guest call's result against `Ok` or one exact refusal.
fn is(r: tsm_abi::api::Result<()>, want: Option<Status>) -> bool {
    match (r, want) {
        (Ok(()), None) => true,
        (Err(Error::Tsm(s)), Some(w)) => s == w,
        _ => false,
    }
}

fn st(code: StatusCode, index: u8) -> Option<Status> {
    Some(Status::arg(code, index))
}

/// Where G_VDEV_INFO writes.
const INFO_GPA: Gpa = SCRATCH_GPA;
/// Where evidence to echo is written.
const EVIDENCE_GPA: Gpa = Gpa(SCRATCH_GPA.0 + 0x800);
/// Report chunks and event records.
const CHUNK_GPA: Gpa = Gpa(SCRATCH_GPA.0 + 0xC00);
const CHUNK: u64 = 0x400;

/// Runs the script `arg0` selects.
pub fn main<G: GuestEnv>(g: &mut G, arg0: u64) -> Verdict {
    let want = AbiVersion { major: 1, minor: 0 };
    let granted = guest::g_version(g, want).ok().and_then(|v| v.chosen);
    check!(granted == Some(want));
    let Some(arg) = GuestArg::decode(arg0) else {
        return Ok(exit_code::BAD_ARG);
    };
    say!(
        "guest script {=u8} on vBDF {=u16:#x}",
        arg.script as u8,
        arg.vbdf
    );
    match arg.script {
        Script::Lifecycle => lifecycle(g, arg),
        Script::IsoBuffers => iso_buffers(g, arg),
        Script::Touch => touch(g, GuestArg::touch_gpa(arg0)),
        Script::AcceptProbe => accept_probe(g, arg.vbdf),
        Script::OtherTvm => other_tvm(g, arg.vbdf),
        Script::HostileRounds => hostile_rounds(g, arg),
        Script::StartFails => start_fails(g, arg.vbdf),
        Script::DmaAccept => dma_accept(g, arg.vbdf),
        Script::Bench => bench(g),
        Script::DmaDiff => dma_diff(g, arg.vbdf),
        Script::Authenticated => authenticated(g, arg.vbdf),
        Script::Mmio => mmio(g, arg.vbdf, false),
        Script::Story => mmio(g, arg.vbdf, true),
        Script::BreakEntry => break_entry(g),
    }
}

/// Whether the TSM puts this TVM's shared half where the layout does (`SHARED_BASE`). The split
/// is the TSM's to say (§5.2): a guest that took the host's word for it could keep private data
/// where the host maps its own pages. Scripts that use the shared half ask first; the others
/// use only GPAs below 2 GiB, private in every TVM (32 GPA bits at least: FEATURES `MEMORY`).
fn split_is_the_layouts<G: GuestEnv>(g: &mut G) -> bool {
    guest::g_tvm_info(g).is_ok_and(|i| i.gpa_bits == GPA_BITS && i.shared_base == SHARED_BASE)
}

/// Hands a step to the host (see the module documentation); false if the TSM did not refuse
/// the host call as it must.
fn yield_to_host<G: GuestEnv>(g: &mut G) -> bool {
    let r = host::version(g, AbiVersion { major: 1, minor: 0 });
    matches!(r, Err(Error::Tsm(s)) if s == Status::new(StatusCode::Denied))
}

/// G_VDEV_INFO of `vbdf`; a refusal as its raw status word.
fn info<G: GuestEnv>(g: &mut G, vbdf: u16) -> Result<Result<VdevInfo, u64>, GuestFault> {
    if let Err(e) = guest::g_vdev_info(g, vbdf, INFO_GPA) {
        return Ok(Err(crate::driver::raw_error(e)));
    }
    let mut info = VdevInfo::new_zeroed();
    g.read(INFO_GPA, info.as_mut_bytes())?;
    Ok(Ok(info))
}

/// G_VDEV_INFO that must succeed; otherwise the script ends with the line and, in bits 63:32,
/// the status the TSM returned.
macro_rules! must_info {
    ($g:expr, $vbdf:expr) => {
        match info($g, $vbdf)? {
            Ok(i) => i,
            Err(status) => return Ok(u64::from(line!()) | status << 32),
        }
    };
}

/// Writes `ev` where G_VDEV_ACCEPT reads it and accepts `vbdf` with it.
fn accept<G: GuestEnv>(
    g: &mut G,
    vbdf: u16,
    ev: &AcceptEvidence,
) -> Result<tsm_abi::api::Result<()>, GuestFault> {
    g.write(EVIDENCE_GPA, ev.as_bytes())?;
    Ok(guest::g_vdev_accept(g, vbdf, EVIDENCE_GPA))
}

/// Reads the whole cached report through the scratch page and hashes it; `None` if a call
/// failed or the report did not end where G_VDEV_INFO said.
fn report_digest<G: GuestEnv>(
    g: &mut G,
    vbdf: u16,
    len: u32,
) -> Result<Option<[u8; 32]>, GuestFault> {
    let mut hash = Sha256::new();
    let mut offset = 0u64;
    let mut chunk = [0u8; CHUNK as usize];
    // Each chunk moves at least one byte forward, so the report length bounds the loop.
    for _ in 0..=u64::from(len) / CHUNK + 1 {
        let Ok(r) = guest::g_vdev_report(g, vbdf, offset, CHUNK_GPA, CHUNK) else {
            return Ok(None);
        };
        let Some(part) = chunk.get_mut(..r.copied as usize) else {
            return Ok(None);
        };
        g.read(CHUNK_GPA, part)?;
        hash.update(&*part);
        offset += r.copied;
        if r.remaining == 0 {
            return Ok((offset == u64::from(len)).then(|| hash.finalize().into()));
        }
    }
    Ok(None)
}

fn lifecycle<G: GuestEnv>(g: &mut G, arg: GuestArg) -> Verdict {
    for i in 0..u16::from(arg.count) {
        let vbdf = arg.vbdf + i;
        let before = must_info!(g, vbdf);
        check!(before.state == VdevState::Locked.raw());
        check!(before.vbdf == vbdf && before.report_counter >= 1);
        check!(before.nonce != [0; 32] && before.report_len > 0);
        let digest = report_digest(g, vbdf, before.report_len)?;
        check!(digest == Some(before.report_digest));
        say!(
            "guest: vBDF {=u16:#x} report of {=u32} bytes matches its digest",
            vbdf,
            before.report_len
        );
        check!(is(
            accept(g, vbdf, &AcceptEvidence::from_info(&before))?,
            None
        ));
        let after = info(g, vbdf)?;
        check!(after.is_ok_and(|a| a.state == VdevState::Run.raw()));
        say!("guest: accepted vBDF {=u16:#x}, it is RUN", vbdf);
    }
    Ok(0)
}

fn iso_buffers<G: GuestEnv>(g: &mut G, arg: GuestArg) -> Verdict {
    let bad = st(StatusCode::InvalidBuffer, 1);
    // Another TVM's page, the GPA space past this TVM's width, a hole in its map.
    for gpa in [OTHER_GPA, Gpa(1 << GPA_BITS), Gpa(L3_GPA.0 + 0x1F_F000)] {
        check!(is(guest::g_console_write(g, gpa, 8), bad));
    }
    // A vdevice of another TVM does not exist here, whatever buffer is named.
    let none = st(StatusCode::BadHandle, 1);
    check!(is(guest::g_vdev_info(g, arg.vbdf, INFO_GPA), none));
    Ok(0)
}

fn touch<G: GuestEnv>(g: &mut G, gpa: Gpa) -> Verdict {
    let mut b = [0u8; 8];
    g.read(gpa, &mut b)?;
    Ok(exit_code::TOUCH_REACHED)
}

fn break_entry<G: GuestEnv>(g: &mut G) -> Verdict {
    match g.break_entry_state() {
        None => return Ok(0),
        Some(reserved_dropped) => check!(reserved_dropped),
    }
    // The call cannot reach the TSM: the vCPU faults here, and on every later run.
    let _ = guest::g_version(g, AbiVersion { major: 1, minor: 0 });
    Ok(exit_code::ENTRY_STATE_KEPT)
}

fn accept_probe<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    let old = must_info!(g, vbdf);
    check!(old.state == VdevState::Locked.raw());
    let good = AcceptEvidence::from_info(&old);
    g.write(Gpa(SCRATCH_GPA.0 + SAVED_EVIDENCE), good.as_bytes())?;
    let mismatch = |field| st(StatusCode::EvidenceMismatch, field);
    let mut ev = good;
    ev.nonce[31] ^= 0x80;
    check!(is(accept(g, vbdf, &ev)?, mismatch(1)));
    let mut ev = good;
    ev.report_digest[0] ^= 1;
    check!(is(accept(g, vbdf, &ev)?, mismatch(2)));
    let mut ev = good;
    ev.report_counter += 1;
    check!(is(accept(g, vbdf, &ev)?, mismatch(3)));
    let mut ev = good;
    ev.reserved[0] = 1;
    check!(is(
        accept(g, vbdf, &ev)?,
        st(StatusCode::InvalidArgument, 2)
    ));
    // Evidence the TSM cannot read: misaligned, or outside this TVM.
    let bad = st(StatusCode::InvalidBuffer, 2);
    check!(is(
        guest::g_vdev_accept(g, vbdf, Gpa(EVIDENCE_GPA.0 + 4)),
        bad
    ));
    check!(is(guest::g_vdev_accept(g, vbdf, OTHER_GPA), bad));
    // Still LOCKED after all that.
    check!(info(g, vbdf)?.is_ok_and(|i| i.state == VdevState::Locked.raw()));
    // The host unbinds and binds again.
    check!(yield_to_host(g));
    let mut stale = AcceptEvidence::new_zeroed();
    g.read(Gpa(SCRATCH_GPA.0 + SAVED_EVIDENCE), stale.as_mut_bytes())?;
    g.write(EVIDENCE_GPA, stale.as_bytes())?;
    check!(is(guest::g_vdev_accept(g, vbdf, EVIDENCE_GPA), mismatch(1)));
    let fresh = must_info!(g, vbdf);
    check!(fresh.nonce != old.nonce && fresh.report_counter == old.report_counter + 1);
    check!(is(
        accept(g, vbdf, &AcceptEvidence::from_info(&fresh))?,
        None
    ));
    check!(info(g, vbdf)?.is_ok_and(|i| i.state == VdevState::Run.raw()));
    say!("guest: stale and forged evidence refused, fresh evidence accepted");
    Ok(0)
}

/// `edu`'s registers (QEMU `hw/misc/edu.c`'s specification): identification (0xRRrr00ed),
/// liveness (reads back the inverse of what was written), factorial (computed when written;
/// status bit 0 is set while it runs).
const EDU_ID: u64 = 0x00;
const EDU_LIVENESS: u64 = 0x04;
const EDU_FACTORIAL: u64 = 0x08;
const EDU_STATUS: u64 = 0x20;
const EDU_STATUS_COMPUTING: u32 = 1;
/// Status reads before a factorial counts as lost (QEMU computes it in a thread at once).
const EDU_POLLS: u32 = 1_000_000;

/// Status reads before a guest gives up on an `edu` transfer, which fires after 100 ms of
/// QEMU's virtual clock (the guest has no clock of its own on x86_64): about half a minute of
/// reads under TCG, the host's bound too (`crate::pci`).
const EDU_DMA_POLLS: u64 = 1 << 27;

/// `edu`'s registers through the guest's validated mapping at [`MMIO_GPA`]: the host's DMA
/// driver ([`crate::pci::dma`]) runs on them, with the guest's IOVAs as bus addresses.
struct GuestEdu<'a, G> {
    g: &'a mut G,
}

impl<G: GuestEnv> EduRegs for GuestEdu<'_, G> {
    fn load(&mut self, reg: u64) -> Option<u64> {
        self.g.mmio_read64(Gpa(MMIO_GPA.0 + reg)).ok()
    }

    fn store(&mut self, reg: u64, value: u64) -> bool {
        self.g.mmio_write64(Gpa(MMIO_GPA.0 + reg), value).is_ok()
    }

    fn given_up(&mut self, polls: u64) -> crate::Outcome<bool> {
        Ok(polls >= EDU_DMA_POLLS)
    }
}

/// One `edu` transfer between the guest's IOVA `iova` and offset 0 of edu's buffer; a failure
/// as the exit code [`exit_code::EDU_DMA`] with the driver's line.
fn edu_dma<G: GuestEnv>(g: &mut G, direction: Direction, iova: Gpa) -> Option<u64> {
    let r = crate::pci::dma(&mut GuestEdu { g }, direction, iova.0, 0, DMA_LEN);
    r.err()
        .map(|f| exit_code::EDU_DMA | u64::from(f.line) << 32)
}

/// The next record of `vbdf`'s queue: `Ok(None)` when it is empty, `Err(())` when the call
/// failed.
fn next_event<G: GuestEnv>(
    g: &mut G,
    vbdf: u16,
) -> Result<Result<Option<GuestEvent>, ()>, GuestFault> {
    match guest::g_event_read(g, vbdf, CHUNK_GPA) {
        Ok(Some(_)) => {
            let mut ev = GuestEvent::new_zeroed();
            g.read(CHUNK_GPA, ev.as_mut_bytes())?;
            Ok(Ok(Some(ev)))
        }
        Ok(None) => Ok(Ok(None)),
        Err(_) => Ok(Err(())),
    }
}

/// Whether `ev` is the IOMMU's refusal of a T=0 request of `vbdf` into the private page of
/// `iova` (VT-d records the page of the refused address, the SMMU the address itself).
fn t0_refusal(ev: &GuestEvent, vbdf: u16, iova: Gpa, write: bool) -> bool {
    let page = |a: u64| a & !0xFFF;
    ev.vbdf == vbdf
        && ev.reason == EventReason::T0ToSecure.raw()
        && page(ev.iova) == page(iova.0)
        && page(ev.gpa) == page(iova.0)
        && ev.flags & EventFlags::GPA_VALID.bits() != 0
        && (ev.flags & EventFlags::WRITE.bits() != 0) == write
}

/// Fails the script with `$code` if it is `Some`.
macro_rules! or_exit {
    ($code:expr) => {
        if let Some(code) = $code {
            return Ok(code);
        }
    };
}

fn mmio<G: GuestEnv>(g: &mut G, vbdf: u16, authenticated: bool) -> Verdict {
    let before = must_info!(g, vbdf);
    check!(before.state == VdevState::Locked.raw());
    if authenticated {
        let code = trusted_device(g, vbdf, &before)?;
        if code != 0 {
            return Ok(code);
        }
        say!(
            "story: guest: the device's certificate chain and signed measurements match the digests the TSM took, and the chain is the one this guest trusts"
        );
    }
    // The whole report in one chunk (one range, no device-specific bytes), checked against the
    // digest the TSM took at bind before anything in it is believed.
    check!(u64::from(before.report_len) <= CHUNK);
    let Ok(r) = guest::g_vdev_report(g, vbdf, 0, CHUNK_GPA, CHUNK) else {
        return Ok(u64::from(line!()));
    };
    let mut bytes = [0u8; CHUNK as usize];
    let Some(report) = bytes.get_mut(..r.copied as usize) else {
        return Ok(u64::from(line!()));
    };
    g.read(CHUNK_GPA, report)?;
    check!(r.remaining == 0 && <[u8; 32]>::from(Sha256::digest(&*report)) == before.report_digest);
    let Ok(parsed) = InterfaceReport::parse(report) else {
        return Ok(u64::from(line!()));
    };
    let Some(range) = parsed.mmio_ranges().next() else {
        return Ok(u64::from(line!()));
    };
    check!(u64::from(range.number_of_pages) >= MMIO_PAGES);
    // Each page where the host says it put it, named by (range, page): a wrong name is refused.
    let page = |i: u64| Gpa(MMIO_GPA.0 + i * 0x1000);
    check!(is(
        guest::g_vdev_mmio_validate(g, vbdf, page(0), 0, 1),
        st(StatusCode::MmioMismatch, 4)
    ));
    for i in 0..MMIO_PAGES {
        check!(is(
            guest::g_vdev_mmio_validate(g, vbdf, page(i), 0, i),
            None
        ));
    }
    say!(
        "guest: {=u64} pages at {=u64:#x} validated as range 0 of the report (first page {=u64:#x})",
        MMIO_PAGES,
        MMIO_GPA.0,
        range.first_page
    );
    say!(
        "story: guest: the interface report matches the TSM's digest; it validated each of edu's register pages against the report's range before touching it"
    );

    // Before accept, edu's stream has the T=0 view: its write into private memory is refused.
    let zero = [0u8; DMA_LEN as usize];
    g.write(DMA_DST_GPA, &zero)?;
    or_exit!(edu_dma(g, Direction::ToRam, DMA_DST_GPA));
    let mut got = [0u8; DMA_LEN as usize];
    g.read(DMA_DST_GPA, &mut got)?;
    check!(got == zero);
    let Ok(Some(ev)) = next_event(g, vbdf)? else {
        return Ok(u64::from(line!()));
    };
    check!(t0_refusal(&ev, vbdf, DMA_DST_GPA, true));
    check!(matches!(next_event(g, vbdf)?, Ok(None)));
    say!(
        "story: guest: before it accepted, edu's DMA write into its private page was refused by the real IOMMU (T=0 into secure memory); its event queue says so, with the address"
    );

    check!(is(
        accept(g, vbdf, &AcceptEvidence::from_info(&before))?,
        None
    ));
    check!(info(g, vbdf)?.is_ok_and(|i| i.state == VdevState::Run.raw()));
    // The guest drives the device itself.
    let reg = |r: u64| Gpa(MMIO_GPA.0 + r);
    let id = g.mmio_read32(reg(EDU_ID))?;
    check!(id & 0xFFFF == 0x00ed);
    for x in [0x1234_5678u32, 0xA5A5_0F0F] {
        g.mmio_write32(reg(EDU_LIVENESS), x)?;
        check!(g.mmio_read32(reg(EDU_LIVENESS))? == !x);
    }
    g.mmio_write32(reg(EDU_FACTORIAL), 10)?;
    let mut polls = 0;
    while g.mmio_read32(reg(EDU_STATUS))? & EDU_STATUS_COMPUTING != 0 {
        polls += 1;
        check!(polls < EDU_POLLS);
    }
    check!(g.mmio_read32(reg(EDU_FACTORIAL))? == 3_628_800);
    say!(
        "guest: drove edu through its private mapping: id {=u32:#x}, liveness inverted, 10! = 3628800",
        id
    );

    // In RUN (the T=1 view) edu copies the guest's data between its private pages; then the
    // guest scrubs edu's buffer, which a real TDI would do itself on leaving RUN.
    let data = guest_data();
    g.write(DMA_SRC_GPA, &data)?;
    g.write(DMA_ZERO_GPA, &zero)?;
    or_exit!(edu_dma(g, Direction::ToDevice, DMA_SRC_GPA));
    or_exit!(edu_dma(g, Direction::ToRam, DMA_DST_GPA));
    g.read(DMA_DST_GPA, &mut got)?;
    check!(got == data);
    or_exit!(edu_dma(g, Direction::ToDevice, DMA_ZERO_GPA));
    check!(matches!(next_event(g, vbdf)?, Ok(None)));
    say!(
        "story: guest: accepted the device (RUN); programmed edu's DMA through its private mapping: {=u64} bytes of its private memory went through edu into another private page, and it read them back",
        DMA_LEN
    );

    // The host unbinds and aims edu at the guest's pages.
    check!(yield_to_host(g));
    let Ok(Some(ev)) = next_event(g, vbdf)? else {
        return Ok(u64::from(line!()));
    };
    check!(t0_refusal(&ev, vbdf, DMA_DST_GPA, true));
    let Ok(Some(ev)) = next_event(g, vbdf)? else {
        return Ok(u64::from(line!()));
    };
    check!(t0_refusal(&ev, vbdf, DMA_SRC_GPA, false));
    check!(matches!(next_event(g, vbdf)?, Ok(None)));
    g.read(DMA_DST_GPA, &mut got)?;
    check!(got == data);
    say!(
        "story: guest: after unbind its queue shows the host's write and read through edu refused, and its data is intact"
    );
    Ok(0)
}

fn other_tvm<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    let none = st(StatusCode::BadHandle, 1);
    check!(is(guest::g_vdev_info(g, vbdf, INFO_GPA), none));
    check!(is(accept(g, vbdf, &AcceptEvidence::new_zeroed())?, none));
    check!(is(guest::g_vdev_stop(g, vbdf), none));
    check!(
        matches!(guest::g_event_read(g, vbdf, CHUNK_GPA), Err(Error::Tsm(s)) if Some(s) == none)
    );
    Ok(0)
}

fn hostile_rounds<G: GuestEnv>(g: &mut G, arg: GuestArg) -> Verdict {
    for _ in 0..arg.count {
        let i = must_info!(g, arg.vbdf);
        check!(i.state == VdevState::Error.raw());
        check!(i.nonce == [0; 32] && i.report_len == 0 && i.report_digest == [0; 32]);
        check!(is(
            accept(g, arg.vbdf, &AcceptEvidence::new_zeroed())?,
            st(StatusCode::ObjectState, 1)
        ));
        let r = guest::g_vdev_report(g, arg.vbdf, 0, CHUNK_GPA, 16);
        check!(matches!(r, Err(Error::Tsm(s)) if s == Status::arg(StatusCode::ObjectState, 1)));
        check!(yield_to_host(g));
    }
    Ok(0)
}

fn start_fails<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    let i = must_info!(g, vbdf);
    check!(i.state == VdevState::Locked.raw());
    check!(is(
        accept(g, vbdf, &AcceptEvidence::from_info(&i))?,
        Some(Status::new(StatusCode::DeviceError))
    ));
    check!(info(g, vbdf)?.is_ok_and(|i| i.state == VdevState::Error.raw()));
    Ok(0)
}

fn dma_accept<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    check!(split_is_the_layouts(g));
    let i = must_info!(g, vbdf);
    check!(is(accept(g, vbdf, &AcceptEvidence::from_info(&i))?, None));
    // The host checks T=1 in RUN.
    check!(yield_to_host(g));
    check!(is(guest::g_vdev_stop(g, vbdf), None));
    check!(info(g, vbdf)?.is_ok_and(|i| i.state == VdevState::Unlocked.raw()));
    // The full record of the host's refused T=0 request to private memory (the host's own
    // record leaves out the IOVA).
    let mut seen = false;
    for _ in 0..16 {
        match guest::g_event_read(g, vbdf, CHUNK_GPA) {
            Ok(Some(_)) => {
                let mut ev = GuestEvent::new_zeroed();
                g.read(CHUNK_GPA, ev.as_mut_bytes())?;
                let t0 = EventReason::T0ToSecure.raw();
                seen |= ev.reason == t0 && ev.iova == crate::scenarios::dma::T0_PRIVATE_IOVA.0;
                check!(ev.vbdf == vbdf);
            }
            Ok(None) => break,
            Err(_) => return Ok(u64::from(line!())),
        }
    }
    check!(seen);
    Ok(0)
}

/// The guest's part of `dma-diff`: accept, hand the host its RUN rows, then check the first
/// full record of its queue (the IOMMU's refusal of edu's first T=0 write to its private page,
/// which the host's record told without the IOVA and the GPA) and that edu's T=1 write in RUN
/// landed in that page.
fn dma_diff<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    check!(split_is_the_layouts(g));
    let i = must_info!(g, vbdf);
    check!(is(accept(g, vbdf, &AcceptEvidence::from_info(&i))?, None));
    check!(yield_to_host(g));
    check!(matches!(
        guest::g_event_read(g, vbdf, CHUNK_GPA),
        Ok(Some(_))
    ));
    let mut ev = GuestEvent::new_zeroed();
    g.read(CHUNK_GPA, ev.as_mut_bytes())?;
    let iova = crate::scenarios::dma_diff::PRIVATE_IOVA;
    check!(ev.vbdf == vbdf && ev.reason == EventReason::T0ToSecure.raw());
    // VT-d records the page of the refused address, the SMMU the address itself.
    let page = |a: u64| a & !0xFFF;
    check!(page(ev.iova) == page(iova) && page(ev.gpa) == page(iova));
    check!(ev.flags & EventFlags::GPA_VALID.bits() != 0);
    check!(ev.flags & EventFlags::WRITE.bits() != 0);
    // edu's T=1 write in RUN landed in this private page (the host cannot look).
    let mut got = [0u8; 64];
    g.read(Gpa(iova), &mut got)?;
    check!(got == crate::scenarios::dma_diff::pattern());
    Ok(0)
}

/// Times [`BENCH_CALLS`] G_VERSIONs, each between two counter reads, and as many empty samples
/// (two back-to-back reads: what a sample adds to the call it times), and leaves the sums at
/// [`BENCH_SUMS_GPA`]. The host sees only whole VCPU_RUNs; only the guest can time one of its
/// calls. G_VERSION goes through the bare transport, as the host's VERSION figure does, so the
/// two differ by the TSM's work only. Every call must succeed: a refused one is cheaper and
/// would pass for a fast one.
fn bench<G: GuestEnv>(g: &mut G) -> Verdict {
    check!(split_is_the_layouts(g));
    let mut empty = 0u64;
    for _ in 0..BENCH_CALLS {
        let start = g.counter();
        empty = empty.wrapping_add(g.counter().wrapping_sub(start));
    }
    let regs = CallRegs {
        fid: u64::from(CallId::G_VERSION.fid()),
        args: [AbiVersion { major: 1, minor: 0 }.to_raw(), 0, 0, 0, 0, 0],
    };
    let mut calls = 0u64;
    for _ in 0..BENCH_CALLS {
        let start = g.counter();
        let r = g.call(&regs);
        let end = g.counter();
        check!(r.status == Status::SUCCESS.to_raw());
        calls = calls.wrapping_add(end.wrapping_sub(start));
    }
    let sums = BenchSums {
        samples: u64::from(BENCH_CALLS),
        calls,
        empty,
    };
    g.write(BENCH_SUMS_GPA, &sums.encode())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use tsm_abi::api::Transport;
    use tsm_abi::call::MAX_RESULTS;
    use tsm_abi::regs::CallResult;

    use super::*;

    /// Ticks one G_VERSION of [`FakeGuest`] takes.
    const CALL_TICKS: u64 = 10;

    /// A guest whose counter ticks once per read and [`CALL_TICKS`] more per call: G_VERSION
    /// 1.0 succeeds up to its `refuse_after`-th call, then is refused; its only memory is the
    /// sums page.
    struct FakeGuest {
        now: u64,
        calls: u64,
        refuse_after: u64,
        sums: Option<[u8; BenchSums::SIZE]>,
    }

    impl FakeGuest {
        fn new(refuse_after: u64) -> Self {
            FakeGuest {
                now: 0,
                calls: 0,
                refuse_after,
                sums: None,
            }
        }
    }

    impl Transport for FakeGuest {
        fn call(&mut self, regs: &CallRegs) -> CallResult {
            self.now += CALL_TICKS;
            self.calls += 1;
            let v = AbiVersion { major: 1, minor: 0 }.to_raw();
            if regs.fid == u64::from(CallId::G_TVM_INFO.fid()) {
                return CallResult {
                    status: Status::SUCCESS.to_raw(),
                    out: [u64::from(GPA_BITS), SHARED_BASE.0, 0, 0],
                };
            }
            if regs.fid != u64::from(CallId::G_VERSION.fid()) || self.calls > self.refuse_after {
                return CallResult {
                    status: Status::new(StatusCode::NotSupported).to_raw(),
                    out: [0; MAX_RESULTS],
                };
            }
            CallResult {
                status: Status::SUCCESS.to_raw(),
                out: [v, v, v, 0],
            }
        }
    }

    impl GuestEnv for FakeGuest {
        fn read(&mut self, gpa: Gpa, _out: &mut [u8]) -> Result<(), GuestFault> {
            Err(GuestFault { gpa, write: false })
        }

        fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), GuestFault> {
            match <[u8; BenchSums::SIZE]>::try_from(data) {
                Ok(bytes) if gpa == BENCH_SUMS_GPA => {
                    self.sums = Some(bytes);
                    Ok(())
                }
                _ => Err(GuestFault { gpa, write: true }),
            }
        }

        fn counter(&mut self) -> u64 {
            self.now += 1;
            self.now
        }
    }

    fn bench_arg() -> u64 {
        GuestArg {
            script: Script::Bench,
            vbdf: 0,
            count: 0,
        }
        .encode()
    }

    #[test]
    fn bench_leaves_the_sums_of_calls_and_of_empty_samples() {
        let mut g = FakeGuest::new(u64::MAX);
        assert_eq!(main(&mut g, bench_arg()), Ok(0));
        let sums = g.sums.map(|raw| BenchSums::decode(&raw));
        let n = u64::from(BENCH_CALLS);
        assert_eq!(
            sums,
            Some(BenchSums {
                samples: n,
                calls: n * (1 + CALL_TICKS),
                empty: n,
            })
        );
        // The start-up G_VERSION and G_TVM_INFO, and the timed ones.
        assert_eq!(g.calls, 2 + n);
    }

    #[test]
    fn a_refused_g_version_fails_the_bench() {
        // The start-up G_VERSION, G_TVM_INFO and 98 timed ones succeed.
        let mut g = FakeGuest::new(100);
        let code = main(&mut g, bench_arg());
        assert!(code.is_ok_and(|c| c != 0), "{code:?}");
        assert_eq!(g.sums, None, "no sums from a failed bench");
    }

    #[test]
    fn bench_sums_round_trip() {
        let s = BenchSums {
            samples: 256,
            calls: 0x0123_4567_89AB_CDEF,
            empty: u64::MAX,
        };
        assert_eq!(BenchSums::decode(&s.encode()), s);
        assert_eq!(
            GuestArg::decode(bench_arg()).map(|a| a.script),
            Some(Script::Bench)
        );
    }
}

/// Which device evidence a guest reads.
#[derive(Clone, Copy)]
enum DeviceEvidence {
    Chain,
    Measurements,
}

/// Reads the whole chain or measurement record in chunks and hashes it (SHA-384); `None` if a
/// call failed or it did not end at `len`.
fn evidence_digest<G: GuestEnv>(
    g: &mut G,
    vbdf: u16,
    which: DeviceEvidence,
    len: u32,
) -> Result<Option<[u8; 48]>, GuestFault> {
    let mut hash = Sha384::new();
    let mut offset = 0u64;
    let mut chunk = [0u8; CHUNK as usize];
    for _ in 0..=u64::from(len) / CHUNK + 1 {
        let r = match which {
            DeviceEvidence::Chain => guest::g_vdev_cert_chain(g, vbdf, offset, CHUNK_GPA, CHUNK),
            DeviceEvidence::Measurements => {
                guest::g_vdev_measurements(g, vbdf, offset, CHUNK_GPA, CHUNK)
            }
        };
        let Ok(r) = r else {
            return Ok(None);
        };
        let Some(part) = chunk.get_mut(..r.copied as usize) else {
            return Ok(None);
        };
        g.read(CHUNK_GPA, part)?;
        hash.update(&*part);
        offset += r.copied;
        if r.remaining == 0 {
            return Ok((offset == u64::from(len)).then(|| hash.finalize().into()));
        }
    }
    Ok(None)
}

/// Checks an authenticated device's evidence in `i` as the guest's policy wants: flags, the
/// chain and measurements against their digests, the report against its digest, and the chain
/// against the one device the guest trusts. 0 when all holds, else the exit code.
fn trusted_device<G: GuestEnv>(g: &mut G, vbdf: u16, i: &VdevInfo) -> Verdict {
    check!(
        EvidenceFlags::from_bits_truncate(i.evidence_flags)
            .contains(EvidenceFlags::DEVICE_AUTHENTICATED)
    );
    check!(i.chain_len > 0 && i.measurements_len > 0);
    let chain = evidence_digest(g, vbdf, DeviceEvidence::Chain, i.chain_len)?;
    check!(chain == Some(i.chain_digest));
    let measurements = evidence_digest(g, vbdf, DeviceEvidence::Measurements, i.measurements_len)?;
    check!(measurements == Some(i.measurements_digest));
    let report = report_digest(g, vbdf, i.report_len)?;
    check!(report == Some(i.report_digest));
    // The guest's own policy: it trusts one device, by its chain.
    let trusted: [u8; 48] = Sha384::digest(tsm_device_model::identity::DEVICE.chain).into();
    if i.chain_digest != trusted {
        say!(
            "guest: vBDF {=u16:#x} presents another device's chain: not accepted",
            vbdf
        );
        return Ok(exit_code::UNTRUSTED_DEVICE);
    }
    Ok(0)
}

fn authenticated<G: GuestEnv>(g: &mut G, vbdf: u16) -> Verdict {
    let i = must_info!(g, vbdf);
    check!(i.state == VdevState::Locked.raw());
    let code = trusted_device(g, vbdf, &i)?;
    if code != 0 {
        return Ok(code);
    }
    say!(
        "guest: vBDF {=u16:#x} chain ({=u32} bytes) and measurements ({=u32} bytes) match their digests",
        vbdf,
        i.chain_len,
        i.measurements_len
    );
    let good = AcceptEvidence::from_info(&i);
    let mut ev = good;
    ev.chain_digest[0] ^= 1;
    check!(is(
        accept(g, vbdf, &ev)?,
        st(StatusCode::EvidenceMismatch, 4)
    ));
    let mut ev = good;
    ev.measurements_digest[47] ^= 0x80;
    check!(is(
        accept(g, vbdf, &ev)?,
        st(StatusCode::EvidenceMismatch, 5)
    ));
    check!(is(accept(g, vbdf, &good)?, None));
    let after = info(g, vbdf)?;
    check!(after.is_ok_and(|a| a.state == VdevState::Run.raw()));
    say!(
        "guest: accepted authenticated vBDF {=u16:#x}, it is RUN",
        vbdf
    );
    Ok(0)
}
