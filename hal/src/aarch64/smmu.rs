//! The SMMUv3 the TSM owns (docs/design.md "The platform IOMMU").
//!
//! The TSM finds it in the device tree, keeps its stream table, command queue and event queue
//! in its own carve-out, and never maps its registers for the host. Every stream of PCI bus 0
//! (StreamID = requester ID on QEMU `virt`) starts in the host domain: a stage-2-only STE over
//! the host's DMA root (`HostStage2::dma_root`), VMID 0. Streams outside the table (other buses)
//! are refused by the SMMU itself (`C_BAD_STREAMID`).
//!
//! Every change is completed with the SMMU's own sync: commands go into the queue, then
//! CMD_SYNC, and the caller returns only once the SMMU consumed the sync (QEMU consumes the
//! queue when CMDQ_PROD is written, real SMMUs a little later; both are waited for). A global
//! error (GERROR) or a command error ends the run with a clear log line, except an event queue
//! that could not take an event: QEMU reports a full event queue that way, and a device the
//! host drives can fill it, so that is a warning (events lost), never the end of the run.

use core::sync::atomic::{AtomicU64, Ordering};

use tsm_abi::addr::{GRANULE_SHIFT, Pa};

use super::mmu::Table;
use super::timer::now_us;
use crate::fatal::fatal_text;
use crate::platform::{
    DMA_MAX_TAG, DmaDomain, DmaFault, DmaFaultKind, DmaStream, IommuError, MemRange,
};
use crate::text::TextBuf;

// Registers (page 0, but for the event queue's indices, which are in page 1).
const IDR0: u64 = 0x00;
const IDR1: u64 = 0x04;
const IDR5: u64 = 0x14;
const CR0: u64 = 0x20;
const CR0ACK: u64 = 0x24;
const CR1: u64 = 0x28;
const CR2: u64 = 0x2C;
const GBPA: u64 = 0x44;
const IRQ_CTRL: u64 = 0x50;
const IRQ_CTRLACK: u64 = 0x54;
const GERROR: u64 = 0x60;
const GERRORN: u64 = 0x64;
const STRTAB_BASE: u64 = 0x80;
const STRTAB_BASE_CFG: u64 = 0x88;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9C;
const EVENTQ_BASE: u64 = 0xA0;
const EVENTQ_PROD: u64 = 0x1_00A8;
const EVENTQ_CONS: u64 = 0x1_00AC;
/// The register frame: two 64 KiB pages.
const REGS_SIZE: u64 = 0x2_0000;

const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVENTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
/// CR1: queues and tables inner/outer write-back cacheable, inner shareable (the TSM writes
/// them as Normal WB memory; the SMMU is coherent, IDR0.COHACC).
const CR1_WB_ISH: u32 = 0b01 | (0b01 << 2) | (0b11 << 4) | (0b01 << 6) | (0b01 << 8) | (0b11 << 10);
/// CR2: RECINVSID (record a StreamID outside the table), PTM (no broadcast TLB maintenance:
/// the host's TLBIs never reach the SMMU; the TSM's commands do).
const CR2_VALUE: u32 = (1 << 1) | (1 << 2);
const GBPA_ABORT: u32 = 1 << 20;
const GBPA_UPDATE: u32 = 1 << 31;
/// GERROR bits: the event queue could not be written (QEMU: it was full).
const GERROR_EVTQ_ABT: u32 = 1 << 2;
const GERROR_CMDQ: u32 = 1 << 0;
/// Queue base registers: read/write allocate hint.
const Q_ALLOC: u64 = 1 << 62;
/// The overflow flag of EVENTQ_PROD and its acknowledgement in EVENTQ_CONS.
const Q_OVERFLOW: u32 = 1 << 31;

/// StreamIDs the linear stream table covers: bus 0 (RID = devfn).
const STREAMS_LOG2: u32 = 8;
const STREAMS: usize = 1 << STREAMS_LOG2;
/// Command queue: 256 commands of 16 bytes (one granule).
const CMDQ_LOG2: u32 = 8;
/// Event queue: 256 records of 32 bytes (two granules). A faulting DMA may write one record
/// per access; `drain` folds runs of them into one fault.
const EVTQ_LOG2: u32 = 8;
const STE_WORDS: usize = 8;
const CMD_WORDS: usize = 2;
const EVT_WORDS: usize = 4;
const WORDS_PER_TABLE: usize = 512;
/// Tables (granules) of the stream table, the event queue and the command queue, in that order
/// in [`Smmu::init`]'s memory.
const STRTAB_TABLES: usize = STREAMS * STE_WORDS / WORDS_PER_TABLE;
const EVTQ_TABLES: usize = (1 << EVTQ_LOG2) * EVT_WORDS / WORDS_PER_TABLE;
const CMDQ_TABLES: usize = (1 << CMDQ_LOG2) * CMD_WORDS / WORDS_PER_TABLE;
/// Granules [`Smmu::init`] takes, aligned to [`MEMORY_ALIGN`]: the stream table (16 KiB, so
/// aligned to 16 KiB), then the event queue (8 KiB, at 16 KiB) and the command queue (4 KiB,
/// at 24 KiB): each aligned to its size, as the SMMU requires.
pub const MEMORY_TABLES: usize = STRTAB_TABLES + EVTQ_TABLES + CMDQ_TABLES;
pub const MEMORY_ALIGN: u64 = (STRTAB_TABLES as u64) << GRANULE_SHIFT;

// Stream table entries.
const STE0_V: u64 = 1;
const STE0_CFG_ABORT: u64 = 0b000 << 1;
const STE0_CFG_S2: u64 = 0b110 << 1;
/// STE word 1: SHCFG = use the incoming shareability.
const STE1_SHCFG_INCOMING: u64 = 0b01 << 44;
/// STE word 2, besides the VMID, S2T0SZ, S2SL0 and S2PS: walks inner/outer write-back
/// cacheable, inner shareable, 4 KiB granule (S2TG = 0), AArch64 tables (S2AA64: QEMU 10
/// aborts on an STE without it), record faults (S2R: every stage-2 fault becomes an event).
const STE2_S2: u64 = (0b01 << 40) | (0b01 << 42) | (0b11 << 44) | (1 << 51) | (1 << 58);
const STE3_S2TTB: u64 = 0x000F_FFFF_FFFF_FFF0;
/// The host domain: its own level-1 root for a 39-bit input (DRAM only; the CPU's host stage
/// 2 is 40 bits, for MMIO up to 1 TiB).
const HOST_T0SZ: u64 = 64 - 39;
const SL0_LEVEL1: u64 = 1;
/// [`DmaDomain::Table`]: walked from level 0.
const SL0_LEVEL0: u64 = 2;
const HOST_VMID: u16 = 0;

// Commands.
const CMD_CFGI_STE: u64 = 0x03;
const CMD_CFGI_ALL: u64 = 0x04;
const CMD_TLBI_S12_VMALL: u64 = 0x28;
const CMD_TLBI_S2_IPA: u64 = 0x2A;
const CMD_TLBI_NSNH_ALL: u64 = 0x30;
const CMD_SYNC: u64 = 0x46;
/// CMD_CFGI_ALL's range: every StreamID.
const CFGI_ALL_RANGE: u64 = 31;

// Events.
const EVT_C_BAD_STREAMID: u64 = 0x02;
const EVT_C_BAD_STE: u64 = 0x04;
const EVT_F_TRANSLATION: u64 = 0x10;
const EVT_F_ADDR_SIZE: u64 = 0x11;
const EVT_F_ACCESS: u64 = 0x12;
const EVT_F_PERMISSION: u64 = 0x13;
/// Record word 1: RnW (1 = read).
const EVT1_RNW: u64 = 1 << 35;

/// How long the SMMU may take to acknowledge a register write or consume a CMD_SYNC.
const TIMEOUT_US: u64 = 100_000;

/// Why the SMMU could not be taken over at boot.
#[derive(Clone, Copy, Debug)]
pub enum SmmuError {
    /// The register frame in the device tree is smaller than the architecture's two pages.
    SmallFrame,
    /// IDR0: no stage 2, no AArch64 tables or no coherent access.
    Unsupported,
    /// IDR1/IDR5: StreamIDs, queues, 4 KiB granule or output size too small for the layout.
    TooSmall,
    /// A register write was not acknowledged in time.
    NoAck,
}

impl SmmuError {
    pub fn describe(self) -> &'static str {
        match self {
            SmmuError::SmallFrame => "the SMMU's register frame is smaller than 128 KiB",
            SmmuError::Unsupported => {
                "the SMMU has no stage 2, no AArch64 tables or no coherent access (QEMU 10 needed)"
            }
            SmmuError::TooSmall => {
                "the SMMU's StreamIDs, queues, granules or output size are too small"
            }
            SmmuError::NoAck => "the SMMU did not acknowledge a register write",
        }
    }
}

/// The producer and consumer indices the TSM keeps (index + wrap bit).
struct Queues {
    cmd_prod: u32,
    evt_cons: u32,
}

/// The SMMU, owned by the TSM.
pub struct Smmu {
    /// The register frame (identity-mapped as device memory in the TSM's stage 1).
    regs: u64,
    strtab: &'static [Table],
    evtq: &'static [Table],
    /// The command queue: one table, so a slot's words are found without a division and their
    /// bounds checks fold away (the index is masked to the queue).
    cmdq: &'static Table,
    /// The host domain's level-1 root.
    host_root: Pa,
    /// STE.S2PS: the SMMU's output size (IDR5.OAS, at most 48 bits).
    s2ps: u64,
    /// STE.S2T0SZ of [`DmaDomain::Table`] streams: a 48-bit input where the SMMU has it, else
    /// its input size (QEMU 10: 44 bits; the table is walked from level 0 either way).
    table_t0sz: u64,
    /// Command submission and event consumption, one CPU at a time.
    queues: spin::Mutex<Queues>,
}

/// A command, encoded when it is queued; every submission ends with its own CMD_SYNC
/// ([`Smmu::submit`]).
#[derive(Clone, Copy)]
enum Cmd {
    CfgiSte(u32),
    CfgiAll,
    TlbiS2Ipa { vmid: u16, ipa: u64 },
    TlbiS12Vmall(u16),
    TlbiNsnhAll,
}

impl Cmd {
    fn encode(self) -> [u64; CMD_WORDS] {
        match self {
            Cmd::CfgiSte(sid) => [CMD_CFGI_STE | (u64::from(sid) << 32), 1],
            Cmd::CfgiAll => [CMD_CFGI_ALL, CFGI_ALL_RANGE],
            // Leaf only (the TSM changes level-3 descriptors), no range: one address.
            Cmd::TlbiS2Ipa { vmid, ipa } => [
                CMD_TLBI_S2_IPA | (u64::from(vmid) << 32),
                (ipa & 0x000F_FFFF_FFFF_F000) | 1,
            ],
            Cmd::TlbiS12Vmall(vmid) => [CMD_TLBI_S12_VMALL | (u64::from(vmid) << 32), 0],
            Cmd::TlbiNsnhAll => [CMD_TLBI_NSNH_ALL, 0],
        }
    }
}

/// Word `i` of a queue or table laid out over consecutive carve-out tables.
fn word(tables: &[Table], i: usize) -> Option<&AtomicU64> {
    tables.get(i / WORDS_PER_TABLE)?.0.get(i % WORDS_PER_TABLE)
}

/// The next queue index (index bits + one wrap bit).
fn next_index(i: u32, log2: u32) -> u32 {
    i.wrapping_add(1) & ((1 << (log2 + 1)) - 1)
}

/// The slot of a queue index.
fn slot(i: u32, log2: u32) -> usize {
    (i & ((1 << log2) - 1)) as usize
}

impl Smmu {
    /// Takes over the SMMU at `frame`: its tables and queues in `memory` ([`MEMORY_TABLES`]
    /// zeroed granules aligned to [`MEMORY_ALIGN`] in the TSM's carve-out), every stream in the
    /// host domain over `host_root`, then translation on. Boot only, on the boot CPU, before the
    /// host runs (no device has been given bus mastering by then).
    pub(crate) fn init(
        frame: MemRange,
        memory: &'static [Table],
        host_root: Pa,
    ) -> Result<Smmu, SmmuError> {
        // The register offsets are below REGS_SIZE, so with `base + REGS_SIZE` in range no
        // register address overflows (`read`, `write`).
        if frame.size < REGS_SIZE || frame.base.0.checked_add(REGS_SIZE).is_none() {
            return Err(SmmuError::SmallFrame);
        }
        let (strtab, rest) = memory
            .split_at_checked(STRTAB_TABLES)
            .ok_or(SmmuError::TooSmall)?;
        let (evtq, cmdq) = rest
            .split_at_checked(EVTQ_TABLES)
            .ok_or(SmmuError::TooSmall)?;
        const { assert!(CMDQ_TABLES == 1) };
        let [cmdq] = cmdq else {
            return Err(SmmuError::TooSmall);
        };
        let mut smmu = Smmu {
            regs: frame.base.0,
            strtab,
            evtq,
            cmdq,
            host_root,
            s2ps: 0,
            table_t0sz: 0,
            queues: spin::Mutex::new(Queues {
                cmd_prod: 0,
                evt_cons: 0,
            }),
        };
        let idr0 = smmu.read(IDR0);
        let (s2p, ttf, cohacc) = (idr0 & 1, (idr0 >> 2) & 0b11, (idr0 >> 4) & 1);
        if s2p == 0 || ttf & 0b10 == 0 || cohacc == 0 {
            return Err(SmmuError::Unsupported);
        }
        let idr1 = smmu.read(IDR1);
        let (sidsize, evtqs, cmdqs) = (idr1 & 0x3F, (idr1 >> 16) & 0x1F, (idr1 >> 21) & 0x1F);
        let idr5 = smmu.read(IDR5);
        let (oas, gran4k) = (u64::from(idr5 & 0b111), (idr5 >> 4) & 1);
        let oas_bits = match oas {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            _ => 48,
        };
        // The host domain's 39-bit input needs at least 40 bits (DRAM lies below 2^39).
        if sidsize < STREAMS_LOG2
            || evtqs < EVTQ_LOG2
            || cmdqs < CMDQ_LOG2
            || gran4k == 0
            || oas_bits < 40
        {
            return Err(SmmuError::TooSmall);
        }
        smmu.s2ps = oas.min(0b101);
        smmu.table_t0sz = 64 - oas_bits;

        // Off, and aborting rather than bypassing while off, before anything is pointed anew.
        smmu.write(CR0, 0);
        smmu.wait_for(CR0ACK, 0)?;
        smmu.write(GBPA, GBPA_ABORT | GBPA_UPDATE);
        smmu.wait_until(|s| s.read(GBPA) & GBPA_UPDATE == 0)?;
        // The TSM polls: no interrupts.
        smmu.write(IRQ_CTRL, 0);
        smmu.wait_for(IRQ_CTRLACK, 0)?;
        smmu.write(GERRORN, smmu.read(GERROR));

        let host = smmu.host_ste();
        for sid in 0..STREAMS {
            smmu.write_ste(sid, &host);
        }
        let base = |t: &[Table]| t.first().map_or(0, Table::addr) & 0x000F_FFFF_FFFF_FFE0;
        smmu.write64(STRTAB_BASE, Q_ALLOC | base(strtab));
        // Linear format (FMT 0).
        smmu.write(STRTAB_BASE_CFG, STREAMS_LOG2);
        smmu.write64(
            CMDQ_BASE,
            Q_ALLOC | base(core::slice::from_ref(cmdq)) | u64::from(CMDQ_LOG2),
        );
        smmu.write(CMDQ_PROD, 0);
        smmu.write(CMDQ_CONS, 0);
        smmu.write64(EVENTQ_BASE, Q_ALLOC | base(evtq) | u64::from(EVTQ_LOG2));
        smmu.write(EVENTQ_PROD, 0);
        smmu.write(EVENTQ_CONS, 0);
        smmu.write(CR1, CR1_WB_ISH);
        smmu.write(CR2, CR2_VALUE);
        smmu.write(CR0, CR0_CMDQEN | CR0_EVENTQEN);
        smmu.wait_for(CR0ACK, CR0_CMDQEN | CR0_EVENTQEN)?;
        // Nothing the SMMU may have cached before the TSM came survives.
        smmu.submit(Cmd::CfgiAll);
        smmu.submit(Cmd::TlbiNsnhAll);
        smmu.write(CR0, CR0_CMDQEN | CR0_EVENTQEN | CR0_SMMUEN);
        smmu.wait_for(CR0ACK, CR0_CMDQEN | CR0_EVENTQEN | CR0_SMMUEN)?;
        smmu.check_errors();
        Ok(smmu)
    }

    // `wrapping_add`: `init` refused a frame whose `base + REGS_SIZE` overflows, so it equals
    // the sum, without the overflow check on every register access (four per submission).
    fn read(&self, offset: u64) -> u32 {
        // SAFETY: `regs` is the SMMU's register frame from the device tree, at least
        // `REGS_SIZE` bytes (checked in `init`) inside the first GiB, which the TSM's stage 1
        // maps as device memory; every offset used is a 4-byte-aligned register below that
        // size. Reading these registers has no side effect.
        unsafe { core::ptr::read_volatile(self.regs.wrapping_add(offset) as *const u32) }
    }

    fn write(&self, offset: u64, value: u32) {
        // SAFETY: as in `read`; the TSM is the only writer of the SMMU's registers (the host's
        // stage 2 never maps them), and each value written is one the architecture defines.
        unsafe { core::ptr::write_volatile(self.regs.wrapping_add(offset) as *mut u32, value) }
    }

    fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as in `write`, for the 8-byte-aligned 64-bit base registers.
        unsafe { core::ptr::write_volatile(self.regs.wrapping_add(offset) as *mut u64, value) }
    }

    /// Polls until `done` holds, for at most [`TIMEOUT_US`].
    fn wait_until(&self, done: impl Fn(&Self) -> bool) -> Result<(), SmmuError> {
        let deadline = now_us().saturating_add(TIMEOUT_US);
        while !done(self) {
            if now_us() > deadline {
                return Err(SmmuError::NoAck);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn wait_for(&self, ack: u64, value: u32) -> Result<(), SmmuError> {
        self.wait_until(|s| s.read(ack) == value)
    }

    /// The STE of a host-domain stream.
    fn host_ste(&self) -> [u64; STE_WORDS] {
        self.s2_ste(HOST_VMID, HOST_T0SZ, SL0_LEVEL1, self.host_root)
    }

    /// A stage-2-only STE: `vmid`, an input of 64 − `t0sz` bits walked from `sl0`, `root`.
    fn s2_ste(&self, vmid: u16, t0sz: u64, sl0: u64, root: Pa) -> [u64; STE_WORDS] {
        let mut ste = [0; STE_WORDS];
        ste[0] = STE0_V | STE0_CFG_S2;
        ste[1] = STE1_SHCFG_INCOMING;
        ste[2] = u64::from(vmid) | (t0sz << 32) | (sl0 << 38) | (self.s2ps << 48) | STE2_S2;
        ste[3] = root.0 & STE3_S2TTB;
        ste
    }

    /// Writes the STE of `sid`, word 0 (valid, config) last, so the SMMU never fetches a valid
    /// entry with some words from the old configuration and some from the new. Callers make
    /// the SMMU drop its cached copy afterwards (CMD_CFGI_*).
    fn write_ste(&self, sid: usize, ste: &[u64; STE_WORDS]) {
        for (i, w) in ste.iter().enumerate().rev() {
            if let Some(slot) = sid
                .checked_mul(STE_WORDS)
                .and_then(|b| word(self.strtab, b + i))
            {
                slot.store(*w, Ordering::Release);
            }
        }
    }

    /// Queues `cmd` and a CMD_SYNC and waits until the SMMU consumed both. A command the SMMU
    /// refuses, a global error or a queue that stops moving ends the run.
    // Inline: the commands are constants where they are made, so each encodes to two words at
    // compile time, which reach `submit_synced` in registers (a slice of commands on the stack
    // cost ~15 instructions of every (un)delegate's ~70 here, profiled).
    #[inline(always)]
    fn submit(&self, cmd: Cmd) {
        let [w0, w1] = cmd.encode();
        self.submit_synced(w0, w1);
    }

    /// [`Smmu::submit`] of a command already encoded as `w0`, `w1`.
    fn submit_synced(&self, w0: u64, w1: u64) {
        let mut q = self.queues.lock();
        // The index and the queue in registers: through `q` and `self` the compiler reloaded
        // both after every word stored (an atomic store may alias them).
        let (queue, prod) = (&self.cmdq.0, q.cmd_prod);
        let sync = next_index(prod, CMDQ_LOG2);
        // No interrupt, no MSI: the sync's completion is seen in CMDQ_CONS.
        for (at, w) in [
            (slot(prod, CMDQ_LOG2) * CMD_WORDS, [w0, w1]),
            (slot(sync, CMDQ_LOG2) * CMD_WORDS, [CMD_SYNC, 0]),
        ] {
            for (i, w) in w.into_iter().enumerate() {
                if let Some(slot) = queue.get(at + i) {
                    slot.store(w, Ordering::Relaxed);
                }
            }
        }
        let prod = next_index(sync, CMDQ_LOG2);
        q.cmd_prod = prod;
        // SAFETY: a barrier: the commands (and any table or STE store before them) reach the
        // point the SMMU reads from before it learns of them.
        unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
        self.write(CMDQ_PROD, prod);
        if !self.consumed(prod) {
            self.wait_consumed(prod);
        }
        self.check_errors();
    }

    /// Whether the SMMU consumed the command queue up to `prod` (index and wrap bit).
    #[inline(always)]
    fn consumed(&self, prod: u32) -> bool {
        self.read(CMDQ_CONS) & ((1 << (CMDQ_LOG2 + 1)) - 1) == prod
    }

    /// Waits until [`Smmu::consumed`]`(prod)`; a command the SMMU refuses or a queue that stops
    /// moving ends the run.
    // Cold, out of line: QEMU's SMMU consumes the queue within the PROD write, and inline this
    // loop's registers made every submission save and restore three more (profiled).
    #[cold]
    #[inline(never)]
    fn wait_consumed(&self, prod: u32) {
        // The clock is read only once the queue is seen busy: an SMMU that has already consumed
        // the commands costs no time conversion (a u128 division, ~40 instructions).
        let deadline = now_us().saturating_add(TIMEOUT_US);
        loop {
            if self.consumed(prod) {
                return;
            }
            if (self.read(GERROR) ^ self.read(GERRORN)) & GERROR_CMDQ != 0 {
                self.command_error(self.read(CMDQ_CONS));
            }
            if now_us() > deadline {
                fatal_text("SMMU: the command queue stopped moving (no CMD_SYNC completion)");
            }
            core::hint::spin_loop();
        }
    }

    /// Ends the run on a command the SMMU refused, naming the error and the command.
    fn command_error(&self, cons: u32) -> ! {
        let err = (cons >> 24) & 0x7F;
        let opcode = (self.cmdq.0)
            .get(slot(cons, CMDQ_LOG2) * CMD_WORDS)
            .map_or(0, |w| w.load(Ordering::Relaxed) & 0xFF);
        let what = match err {
            1 => "illegal command",
            2 => "abort reading the command",
            3 => "ATC invalidation timeout",
            _ => "unknown error",
        };
        let mut t = TextBuf::new();
        t.push("SMMU command queue error ")
            .dec(err.into())
            .push(" (")
            .push(what)
            .push(") at command ")
            .hex(opcode);
        fatal_text(t.as_str())
    }

    /// Acts on the global errors the SMMU raised: an event queue that could not take an event
    /// is logged and acknowledged; anything else ends the run.
    // Inline, the test only: every command submission ends here, and out of line its frame
    // cost more than the two reads (the error path below is cold).
    #[inline(always)]
    fn check_errors(&self) {
        let active = self.read(GERROR) ^ self.read(GERRORN);
        if active != 0 {
            self.global_error(active);
        }
    }

    /// [`Smmu::check_errors`] with errors `active` (GERROR ^ GERRORN, not 0).
    #[cold]
    #[inline(never)]
    fn global_error(&self, active: u32) {
        if active & !GERROR_EVTQ_ABT != 0 {
            let mut t = TextBuf::new();
            t.push("SMMU global error: GERROR ")
                .hex(self.read(GERROR).into())
                .push(", GERRORN ")
                .hex(self.read(GERRORN).into())
                .push(" (bit 0: command queue, 2: event queue abort, 8: service failure mode)");
            fatal_text(t.as_str());
        }
        defmt::warn!("SMMU: the event queue was full or could not be written: DMA faults lost");
        self.write(GERRORN, self.read(GERRORN) ^ GERROR_EVTQ_ABT);
    }

    /// The input size of [`DmaDomain::Table`] streams, in bits.
    pub(crate) fn table_input_bits(&self) -> u64 {
        64 - self.table_t0sz
    }

    /// Drops the host domain's cached translations of the granule at `pa` (after the host's
    /// stage 2 lost it) and waits until the SMMU no longer uses them.
    pub(crate) fn invalidate_host(&self, pa: Pa) {
        self.submit(Cmd::TlbiS2Ipa {
            vmid: HOST_VMID,
            ipa: pa.0,
        });
    }

    /// Drops every cached translation of the host domain (after a block of the host's stage 2
    /// became a table or the reverse) and waits until the SMMU no longer uses them.
    pub(crate) fn invalidate_host_all(&self) {
        self.invalidate(HOST_VMID);
    }

    /// Points `stream` at `domain`. A stream outside the stream table (segment ≠ 0, or a
    /// StreamID past [`STREAMS`]: bus 1 up) has no hardware behind it that the SMMU would let
    /// through: the SMMU aborts its requests as C_BAD_STREAMID whatever the domain, which
    /// is what [`DmaDomain::Blocked`] does and never more than the others allow, so it is
    /// accepted and nothing is written (docs/design.md "The platform IOMMU", streams).
    pub(crate) fn attach(&self, stream: DmaStream, domain: DmaDomain) -> Result<(), IommuError> {
        if let DmaDomain::Table { root, tag } = domain
            && (tag == 0 || tag > DMA_MAX_TAG || !root.is_granule_aligned())
        {
            return Err(IommuError::BadDomain);
        }
        let sid = usize::from(stream.rid);
        if stream.segment != 0 || sid >= STREAMS {
            return Ok(());
        }
        let ste = match domain {
            DmaDomain::Host => self.host_ste(),
            DmaDomain::Blocked => {
                let mut ste = [0; STE_WORDS];
                ste[0] = STE0_V | STE0_CFG_ABORT;
                ste
            }
            DmaDomain::Table { root, tag } => self.s2_ste(tag, self.table_t0sz, SL0_LEVEL0, root),
        };
        let cfgi = Cmd::CfgiSte(u32::from(stream.rid));
        // Abort first, so no fetch between the word writes sees a mix of configurations.
        let mut abort = [0; STE_WORDS];
        abort[0] = STE0_V | STE0_CFG_ABORT;
        self.write_ste(sid, &abort);
        self.submit(cfgi);
        self.write_ste(sid, &ste);
        self.submit(cfgi);
        Ok(())
    }

    /// Drops every cached translation tagged `tag` (VMID).
    pub(crate) fn invalidate(&self, tag: u16) {
        self.submit(Cmd::TlbiS12Vmall(tag));
    }

    /// Hands every recorded fault to `sink`, oldest first; runs of records of one stream, page,
    /// direction and kind (a faulting transfer writes one per access) become one fault. `sink`
    /// runs outside the SMMU's lock.
    pub(crate) fn drain(&self, sink: &mut dyn FnMut(DmaFault)) {
        const BATCH: usize = 16;
        loop {
            let mut batch: [Option<DmaFault>; BATCH] = [None; BATCH];
            let mut n = 0usize;
            {
                let mut q = self.queues.lock();
                self.check_errors();
                let prod = self.read(EVENTQ_PROD);
                let index = |i: u32| i & ((1 << (EVTQ_LOG2 + 1)) - 1);
                while index(q.evt_cons) != index(prod) {
                    let at = slot(q.evt_cons, EVTQ_LOG2) * EVT_WORDS;
                    let rec: [u64; EVT_WORDS] = core::array::from_fn(|i| {
                        word(self.evtq, at + i).map_or(0, |w| w.load(Ordering::Acquire))
                    });
                    let last = n
                        .checked_sub(1)
                        .and_then(|l| batch.get(l))
                        .copied()
                        .flatten();
                    match decode(&rec) {
                        // Logged by `decode`: nothing the core could report.
                        None => {}
                        Some(f) if last.is_some_and(|l| same_run(&l, &f)) => {}
                        Some(f) => {
                            // A full batch: this record stays queued for the next round.
                            let Some(slot) = batch.get_mut(n) else { break };
                            *slot = Some(f);
                            n += 1;
                        }
                    }
                    q.evt_cons = next_index(q.evt_cons, EVTQ_LOG2);
                }
                if (prod ^ self.read(EVENTQ_CONS)) & Q_OVERFLOW != 0 {
                    defmt::warn!("SMMU: the event queue overflowed: DMA faults lost");
                }
                self.write(EVENTQ_CONS, q.evt_cons | (prod & Q_OVERFLOW));
            }
            batch.iter().flatten().for_each(|f| sink(*f));
            if n < BATCH {
                return;
            }
        }
    }
}

/// Whether `f` continues the run `last` started (same requester, page, direction, kind).
fn same_run(last: &DmaFault, f: &DmaFault) -> bool {
    last.stream == f.stream
        && last.write == f.write
        && last.kind == f.kind
        && last.iova >> GRANULE_SHIFT == f.iova >> GRANULE_SHIFT
}

/// One event record as a fault; `None` (logged) for a record that names no requester the
/// core could report.
fn decode(rec: &[u64; EVT_WORDS]) -> Option<DmaFault> {
    let ty = rec[0] & 0xFF;
    let sid = rec[0] >> 32;
    let kind = match ty {
        EVT_F_TRANSLATION | EVT_F_ACCESS | EVT_C_BAD_STE | EVT_C_BAD_STREAMID => {
            DmaFaultKind::Translation
        }
        EVT_F_PERMISSION => DmaFaultKind::Permission,
        EVT_F_ADDR_SIZE => DmaFaultKind::AddressSize,
        _ => {
            defmt::warn!(
                "SMMU event {=u64:#x} for StreamID {=u64:#x}: {:#x}",
                ty,
                sid,
                rec
            );
            DmaFaultKind::Other
        }
    };
    let Ok(rid) = u16::try_from(sid) else {
        defmt::warn!(
            "SMMU event {=u64:#x} for StreamID {=u64:#x}, not a requester ID",
            ty,
            sid
        );
        return None;
    };
    // Configuration events carry no address or direction.
    let translation = matches!(
        ty,
        EVT_F_TRANSLATION | EVT_F_ADDR_SIZE | EVT_F_ACCESS | EVT_F_PERMISSION
    );
    Some(DmaFault {
        stream: DmaStream { segment: 0, rid },
        iova: if translation { rec[2] } else { 0 },
        write: translation && rec[1] & EVT1_RNW == 0,
        kind,
    })
}
