//! The scenarios' host environment ([`HostEnv`]) over /dev/tsm: calls through the module's
//! call ioctl, host memory in the module's pool, the devices through its configuration-space
//! ioctl and the BAR0 mapping.

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::api::Transport;
use tsm_abi::regs::{CallRegs, CallResult};
use tsm_scenarios::{HostDevices, HostEnv, Probe};

use crate::config::ConfigSpace;
use crate::device::{Device, Errno, Region, Width};
use crate::uapi;

/// What a call the module refused returns in place of a status: bit 63 and the error number,
/// a word no TSM returns, which the ABI wrappers report as `Malformed`.
pub const REFUSED: u64 = 1 << 63;

/// Where the platform puts what the host learns from firmware tables, the TSM's own memory
/// and the guest payload: what the bare-metal host payload knows from the same places.
#[derive(Clone, Copy, Debug)]
pub struct Platform<'a> {
    /// Where the virtual ECAM window presents configuration space.
    pub ecam: Pa,
    /// The platform IOMMU's registers.
    pub iommu: Pa,
    /// A granule of the TSM's memory.
    pub tsm_memory: Pa,
    /// The guest payload, a flat binary.
    pub guest_image: &'a [u8],
}

/// Why the environment could not be set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SetupError {
    /// The pool could not be allocated.
    Pool(Errno),
    /// The pool could not be mapped.
    PoolMap,
    /// edu's BAR0 could not be mapped.
    Bar0Map,
}

/// The host under Linux.
#[derive(Debug)]
pub struct LinuxHost<'a, D> {
    dev: D,
    platform: Platform<'a>,
    pool: (Pa, u64),
    config: ConfigSpace,
    /// edu's BAR0 (PA, size), once mapped.
    bar0: Option<(Pa, u64)>,
}

impl<'a, D: Device> LinuxHost<'a, D> {
    /// Allocates a pool of `granules` and maps it; finds edu and maps its BAR0 when the
    /// module has it.
    pub fn new(mut dev: D, granules: u64, platform: Platform<'a>) -> Result<Self, SetupError> {
        let mut req = uapi::PoolReq { granules, base: 0 };
        dev.ioctl(uapi::IOC_POOL_ALLOC, &mut req)
            .map_err(SetupError::Pool)?;
        if !dev.map(Region::Pool, granules.saturating_mul(GRANULE_SIZE)) {
            return Err(SetupError::PoolMap);
        }
        let mut info = uapi::DevInfo::default();
        let info = dev.ioctl(uapi::IOC_DEV_INFO, &mut info).ok().map(|()| info);
        let mut bar0 = None;
        if let Some(i) = info.filter(|i| i.bar0_size != 0) {
            if !dev.map(Region::Bar0, i.bar0_size) {
                return Err(SetupError::Bar0Map);
            }
            bar0 = Some((Pa(i.bar0), i.bar0_size));
        }
        Ok(LinuxHost {
            dev,
            config: ConfigSpace::new(platform.ecam, info.as_ref()),
            platform,
            pool: (Pa(req.base), granules),
            bar0,
        })
    }

    /// The device underneath (the tests' fake records what it was asked).
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// The offset of `[pa, pa + len)` in the pool, if it lies inside.
    fn in_pool(&self, pa: Pa, len: u64) -> Option<u64> {
        let (base, granules) = self.pool;
        let off = pa.0.checked_sub(base.0)?;
        let end = off.checked_add(len)?;
        (end <= granules.saturating_mul(GRANULE_SIZE)).then_some(off)
    }

    /// The offset of an aligned access of `width` at `pa` in BAR0, if it lies inside.
    fn in_bar0(&self, pa: Pa, width: Width) -> Option<u64> {
        let (base, size) = self.bar0?;
        let off = pa.0.checked_sub(base.0)?;
        (off.is_multiple_of(width.bytes()) && off.checked_add(width.bytes())? <= size)
            .then_some(off)
    }

    /// Pool bytes through the module, which refuses delegated granules.
    fn mem(&mut self, pa: Pa, buf: u64, len: usize, write: bool) -> bool {
        if len == 0 {
            return true;
        }
        if self.in_pool(pa, len as u64).is_none() {
            return false;
        }
        let mut m = uapi::Mem {
            pa: pa.0,
            len: len as u64,
            buf,
            write: u32::from(write),
            reserved: 0,
        };
        self.dev.ioctl(uapi::IOC_MEM, &mut m).is_ok()
    }
}

impl<D: Device> Transport for LinuxHost<'_, D> {
    fn call(&mut self, regs: &CallRegs) -> CallResult {
        let mut c = uapi::Call {
            fid: regs.fid,
            args: regs.args,
            status: 0,
            out: [0; 4],
        };
        match self.dev.ioctl(uapi::IOC_CALL, &mut c) {
            Ok(()) => CallResult {
                status: c.status,
                out: c.out,
            },
            Err(Errno(e)) => CallResult {
                status: REFUSED | u64::from(e),
                out: [0; 4],
            },
        }
    }
}

impl<D: Device> HostEnv for LinuxHost<'_, D> {
    fn read(&mut self, pa: Pa, out: &mut [u8]) -> bool {
        let buf = out.as_mut_ptr() as u64;
        self.mem(pa, buf, out.len(), false)
    }

    fn write(&mut self, pa: Pa, data: &[u8]) -> bool {
        let buf = data.as_ptr() as u64;
        self.mem(pa, buf, data.len(), true)
    }

    /// A pool page or a BAR0 page, touched by a child process: its fault is the TSM's
    /// block. Anything else (the TSM's memory, the IOMMU's registers) user space cannot map,
    /// and a probe the module or the kernel would not let it make shows nothing either: both
    /// are `Unavailable`, so a scenario that needs that probe fails rather than passes
    /// unchecked.
    fn probe(&mut self, pa: Pa, write: bool) -> Probe {
        let at = match (self.in_pool(pa, 8), self.in_bar0(pa, Width::W64)) {
            (Some(off), _) => Some((Region::Pool, off)),
            (None, Some(off)) => Some((Region::Bar0, off)),
            (None, None) => None,
        };
        match at.and_then(|(region, off)| self.dev.probe(region, off, write)) {
            Some(true) => Probe::Blocked,
            Some(false) => Probe::Reached,
            None => Probe::Unavailable,
        }
    }

    fn pool(&self) -> (Pa, u64) {
        self.pool
    }

    fn tsm_memory(&self) -> Pa {
        self.platform.tsm_memory
    }

    fn guest_image(&self) -> Option<&[u8]> {
        Some(self.platform.guest_image)
    }

    fn devices(&self) -> Option<HostDevices> {
        Some(HostDevices {
            ecam: self.platform.ecam,
            // Linux assigned every BAR.
            bar_window: None,
            iommu: self.platform.iommu,
        })
    }

    fn mmio_read32(&mut self, pa: Pa) -> Option<u32> {
        if self.config.contains(pa) {
            return self.config.read32(&mut self.dev, pa);
        }
        let off = self.in_bar0(pa, Width::W32)?;
        self.dev
            .load(Region::Bar0, off, Width::W32)
            .map(|v| v as u32)
    }

    fn mmio_write32(&mut self, pa: Pa, value: u32) -> bool {
        if self.config.contains(pa) {
            return self.config.write32(&mut self.dev, pa, value);
        }
        self.in_bar0(pa, Width::W32).is_some_and(|off| {
            self.dev
                .store(Region::Bar0, off, Width::W32, u64::from(value))
        })
    }

    fn mmio_read64(&mut self, pa: Pa) -> Option<u64> {
        let off = self.in_bar0(pa, Width::W64)?;
        self.dev.load(Region::Bar0, off, Width::W64)
    }

    fn mmio_write64(&mut self, pa: Pa, value: u64) -> bool {
        self.in_bar0(pa, Width::W64)
            .is_some_and(|off| self.dev.store(Region::Bar0, off, Width::W64, value))
    }

    fn now_us(&mut self) -> Option<u64> {
        Some(self.dev.now_us())
    }
}
