//! A host driver for QEMU's `edu` device: PCI configuration through ECAM, BAR0 placed (where
//! no firmware did it) and enabled, and the device's DMA engine. The same code runs on both
//! arches through the host's MMIO accessors ([`HostEnv::mmio_read32`] and friends); where the
//! devices are is the environment's ([`HostEnv::devices`]). The DMA engine's driver ([`dma`])
//! runs on any way to the registers ([`EduRegs`]): a guest drives edu with it through its
//! private MMIO mapping.
//!
//! `edu` (QEMU `hw/misc/edu.c`): vendor 0x1234, device 0x11e8; BAR0 holds the DMA registers —
//! 0x80 source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start / busy, bit 1
//! direction: 1 = from the device's buffer to RAM) — and the device's 4 KiB buffer sits at
//! device address 0x40000. A transfer runs when a 100 ms timer of QEMU's virtual clock fires.

use tsm_abi::addr::Pa;

use crate::{Fail, HostDevices, HostEnv, Outcome};

const EDU_VENDOR: u32 = 0x1234;
const EDU_DEVICE: u32 = 0x11e8;
/// Configuration space: vendor/device ID, command/status, header type, BAR0.
const CFG_ID: u64 = 0x00;
const CFG_COMMAND: u64 = 0x04;
const CFG_HEADER: u64 = 0x0C;
const CFG_BAR0: u64 = 0x10;
/// Command register: memory space and bus mastering.
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// BAR bits: I/O space, 64-bit memory type.
const BAR_IO: u32 = 1 << 0;
const BAR_64: u32 = 0b10 << 1;
const BAR_ADDR: u32 = !0xF;
/// Header type byte: multi-function device.
const HEADER_MULTI: u32 = 1 << 23;

const EDU_DMA_SRC: u64 = 0x80;
const EDU_DMA_DST: u64 = 0x88;
const EDU_DMA_COUNT: u64 = 0x90;
const EDU_DMA_CMD: u64 = 0x98;
const EDU_CMD_START: u64 = 1 << 0;
const EDU_CMD_TO_RAM: u64 = 1 << 1;
/// The device's buffer, as the DMA registers address it.
pub const EDU_BUFFER: u64 = 0x40000;
/// Its size.
pub const EDU_BUFFER_SIZE: u64 = 0x1000;
/// Longest a transfer may take: its 100 ms timer, with room for a loaded machine. Generous
/// because the host's clock is only as good as the TSM's TSC calibration, which under QEMU 10's
/// TCG on a loaded machine has come out 3 to 15 times too fast; a transfer that never
/// completes still ends the run well inside xtask's 90 s.
const DMA_TIMEOUT_US: u64 = 30_000_000;

/// Which way a transfer goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Host memory into the device's buffer (the device reads RAM).
    ToDevice,
    /// The device's buffer into host memory (the device writes RAM).
    ToRam,
}

/// The `edu` device, found and enabled.
#[derive(Clone, Copy, Debug)]
pub struct Edu {
    /// Its requester ID on segment 0: the StreamID / source-id the IOMMU sees.
    pub rid: u16,
    /// Its registers (BAR0).
    pub bar0: Pa,
    /// BAR0's size in bytes.
    pub bar0_size: u64,
}

fn cfg_read<E: HostEnv>(env: &mut E, function: Pa, offset: u64) -> Outcome<u32> {
    env.mmio_read32(Pa(function.0 + offset))
        .ok_or(Fail::new("configuration space unreachable", line!()))
}

fn cfg_write<E: HostEnv>(env: &mut E, function: Pa, offset: u64, value: u32) -> Outcome {
    ensure!(
        env.mmio_write32(Pa(function.0 + offset), value),
        "configuration space unreachable",
        function.0 + offset
    );
    Ok(())
}

/// The first function of bus 0 with `vendor`/`device`, and its requester ID.
fn find<E: HostEnv>(env: &mut E, ecam: Pa, vendor: u32, device: u32) -> Outcome<(u16, Pa)> {
    for dev in 0u16..32 {
        for func in 0u16..8 {
            let rid = (dev << 3) | func;
            let function = Pa(ecam.0 + (u64::from(rid) << 12));
            let id = cfg_read(env, function, CFG_ID)?;
            if id & 0xFFFF == 0xFFFF {
                // No function here; function 0 absent means no device.
                if func == 0 {
                    break;
                }
                continue;
            }
            if id == vendor | (device << 16) {
                return Ok((rid, function));
            }
            if func == 0 && cfg_read(env, function, CFG_HEADER)? & HEADER_MULTI == 0 {
                break;
            }
        }
    }
    Err(Fail::new("no edu device on PCI bus 0", line!()))
}

impl Edu {
    /// Finds `edu` on bus 0, gives BAR0 an address unless the firmware did, and turns on
    /// memory decoding and bus mastering.
    pub fn probe<E: HostEnv>(env: &mut E) -> Outcome<Edu> {
        let HostDevices {
            ecam, bar_window, ..
        } = env
            .devices()
            .ok_or(Fail::new("this environment has no PCI devices", line!()))?;
        let (rid, function) = find(env, ecam, EDU_VENDOR, EDU_DEVICE)?;
        let bar = cfg_read(env, function, CFG_BAR0)?;
        ensure!(
            bar & (BAR_IO | BAR_64) == 0,
            "edu's BAR0 is not a 32-bit memory BAR",
            bar
        );
        let mut base = bar & BAR_ADDR;
        // Sizing with decoding off, as the PCI specification asks; the address is put back.
        let command = cfg_read(env, function, CFG_COMMAND)?;
        cfg_write(
            env,
            function,
            CFG_COMMAND,
            command & 0xFFFF & !COMMAND_MEMORY,
        )?;
        cfg_write(env, function, CFG_BAR0, u32::MAX)?;
        let size = (!(cfg_read(env, function, CFG_BAR0)? & BAR_ADDR)).wrapping_add(1);
        cfg_write(env, function, CFG_BAR0, base)?;
        ensure!(size.is_power_of_two(), "edu's BAR0 size", size);
        if base == 0 {
            // Unassigned (no firmware on `virt` does it): size it, place it at the start of the
            // window, aligned to its size.
            let (window, window_size) = bar_window.ok_or(Fail::new(
                "edu's BAR0 is unassigned and the firmware left no window",
                line!(),
            ))?;
            let at = window.0.next_multiple_of(u64::from(size));
            ensure!(
                at + u64::from(size) <= window.0 + window_size && at <= u64::from(u32::MAX),
                "edu's BAR0 does not fit the window",
                at
            );
            base = at as u32;
            cfg_write(env, function, CFG_BAR0, base)?;
            ensure!(
                cfg_read(env, function, CFG_BAR0)? & BAR_ADDR == base,
                "edu's BAR0 did not take its address",
                base
            );
        }
        let command = cfg_read(env, function, CFG_COMMAND)?;
        cfg_write(
            env,
            function,
            CFG_COMMAND,
            (command & 0xFFFF) | COMMAND_MEMORY | COMMAND_BUS_MASTER,
        )?;
        say!(
            "edu at RID {=u16:#x}: BAR0 {=u32:#x}, memory and bus mastering on",
            rid,
            base
        );
        Ok(Edu {
            rid,
            bar0: Pa(u64::from(base)),
            bar0_size: u64::from(size),
        })
    }

    /// The identification register (0xRRrr00ed), read through the host's own mapping of BAR0.
    pub fn id<E: HostEnv>(&self, env: &mut E) -> Outcome<u32> {
        env.mmio_read32(self.bar0)
            .ok_or(Fail::new("edu register unreachable", line!()))
    }

    /// One transfer of `len` bytes between host memory at `ram` and the device's buffer at
    /// `offset`, waited for. Whether the IOMMU let it through is not visible here: the device
    /// finishes either way (a refused read leaves zeros, a refused write lands nowhere).
    pub fn dma<E: HostEnv>(
        &self,
        env: &mut E,
        direction: Direction,
        ram: u64,
        offset: u64,
        len: u64,
    ) -> Outcome {
        let mut regs = HostBar {
            env,
            bar0: self.bar0,
            start: None,
        };
        dma(&mut regs, direction, ram, offset, len)
    }

    /// Starts a transfer as [`Edu::dma`] does and returns at once, for a caller that keeps
    /// working while the device moves the data ([`Edu::busy`] says when it is done). The `smp4`
    /// scenario uses it to have the IOMMU translate while other CPUs change what it translates.
    pub fn start_dma<E: HostEnv>(
        &self,
        env: &mut E,
        direction: Direction,
        ram: u64,
        offset: u64,
        len: u64,
    ) -> Outcome {
        let mut regs = HostBar {
            env,
            bar0: self.bar0,
            start: None,
        };
        start(&mut regs, direction, ram, offset, len)
    }

    /// Whether the transfer [`Edu::start_dma`] started is still running.
    pub fn busy<E: HostEnv>(&self, env: &mut E) -> Outcome<bool> {
        let mut regs = HostBar {
            env,
            bar0: self.bar0,
            start: None,
        };
        Ok(command(&mut regs)? & EDU_CMD_START != 0)
    }
}

/// Starts a transfer as [`dma`] does, without waiting for it.
fn start<R: EduRegs>(
    regs: &mut R,
    direction: Direction,
    ram: u64,
    offset: u64,
    len: u64,
) -> Outcome {
    ensure!(
        offset + len <= EDU_BUFFER_SIZE && len > 0,
        "transfer outside edu's buffer",
        offset + len
    );
    ensure!(
        command(regs)? & EDU_CMD_START == 0,
        "edu busy before a transfer"
    );
    let device = EDU_BUFFER + offset;
    let (src, dst, dir) = match direction {
        Direction::ToDevice => (ram, device, 0),
        Direction::ToRam => (device, ram, EDU_CMD_TO_RAM),
    };
    store(regs, EDU_DMA_SRC, src)?;
    store(regs, EDU_DMA_DST, dst)?;
    store(regs, EDU_DMA_COUNT, len)?;
    store(regs, EDU_DMA_CMD, EDU_CMD_START | dir)
}

/// What a driver of edu's DMA engine needs: its registers and a bound on how long it waits.
/// The host reaches them through its own mapping of BAR0 ([`Edu::dma`]); a guest through the
/// private mapping it validated (docs/abi.md §5.7), with addresses that are its IOVAs.
pub trait EduRegs {
    /// One 64-bit load of the register at `reg` (offset in BAR0); `None` if unreachable.
    fn load(&mut self, reg: u64) -> Option<u64>;
    /// One 64-bit store to the register at `reg`; `false` if unreachable.
    fn store(&mut self, reg: u64, value: u64) -> bool;
    /// Whether a wait for a transfer that has read the command register `polls` times (0 when
    /// it starts) has gone on too long.
    fn given_up(&mut self, polls: u64) -> Outcome<bool>;
}

/// The host's way to edu's registers: its own mapping of BAR0, waits bounded by its clock.
struct HostBar<'a, E> {
    env: &'a mut E,
    bar0: Pa,
    start: Option<u64>,
}

impl<E: HostEnv> EduRegs for HostBar<'_, E> {
    fn load(&mut self, reg: u64) -> Option<u64> {
        self.env.mmio_read64(Pa(self.bar0.0 + reg))
    }

    fn store(&mut self, reg: u64, value: u64) -> bool {
        self.env.mmio_write64(Pa(self.bar0.0 + reg), value)
    }

    fn given_up(&mut self, _polls: u64) -> Outcome<bool> {
        let now = self
            .env
            .now_us()
            .ok_or(Fail::new("no clock to wait for the device", line!()))?;
        let start = *self.start.get_or_insert(now);
        Ok(now.saturating_sub(start) >= DMA_TIMEOUT_US)
    }
}

fn store<R: EduRegs>(regs: &mut R, reg: u64, value: u64) -> Outcome {
    ensure!(regs.store(reg, value), "edu register unreachable", reg);
    Ok(())
}

fn command<R: EduRegs>(regs: &mut R) -> Outcome<u64> {
    regs.load(EDU_DMA_CMD)
        .ok_or(Fail::new("edu register unreachable", line!()))
}

/// One transfer of `len` bytes between `ram` (a bus address: a host PA, or a guest's IOVA) and
/// the device's buffer at `offset`, waited for (as [`Edu::dma`]).
pub fn dma<R: EduRegs>(
    regs: &mut R,
    direction: Direction,
    ram: u64,
    offset: u64,
    len: u64,
) -> Outcome {
    start(regs, direction, ram, offset, len)?;
    let mut polls = 0u64;
    loop {
        if command(regs)? & EDU_CMD_START == 0 {
            return Ok(());
        }
        ensure!(!regs.given_up(polls)?, "edu transfer did not finish", ram);
        polls += 1;
    }
}
