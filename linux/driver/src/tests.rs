//! The adapter over a fake /dev/tsm: what each HostEnv operation asks the module, and what it
//! makes of the answers.

use std::collections::HashMap;

use tsm_abi::addr::{GRANULE_SIZE, Pa};
use tsm_abi::api::{self, host};
use tsm_abi::call::CallId;
use tsm_abi::status::{Status, StatusCode};
use tsm_abi::version::AbiVersion;
use tsm_scenarios::pci::Edu;
use tsm_scenarios::{HostEnv, Probe};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::device::{Device, Errno, Region, Width};
use crate::host::{LinuxHost, Platform, REFUSED, SetupError};
use crate::uapi::{self, Call, Cfg, DevInfo, Mem, PoolReq};

const POOL: u64 = 0x4800_0000;
const BAR0: u64 = 0x1000_0000;
const BAR0_SIZE: u64 = 0x10_0000;
const ECAM: Pa = Pa(0x3f00_0000);
/// edu at device 2, function 0 of bus 0.
const EDU_RID: u16 = 2 << 3;
const EPERM: Errno = Errno(1);
const ENODEV: Errno = Errno(19);

#[derive(Default, Debug)]
struct Fake {
    /// Every ioctl: request and block as it was passed in.
    seen: Vec<(u32, Vec<u8>)>,
    /// What TSM_IOC_CALL answers: status and results, or a refusal.
    call: Option<Result<(u64, [u64; 4]), Errno>>,
    info: Option<DevInfo>,
    /// edu's configuration space, by dword.
    cfg: HashMap<u32, u32>,
    mapped: Vec<(Region, u64)>,
    bar: HashMap<u64, u64>,
    probes: Vec<(Region, u64, bool)>,
    probe_faults: bool,
    /// No child could be made for a probe (fork or wait failed).
    probe_fails: bool,
    clock: u64,
}

impl Fake {
    fn with_edu() -> Self {
        let mut f = Fake {
            info: Some(DevInfo {
                bar0: BAR0,
                bar0_size: BAR0_SIZE,
                cfg_size: 256,
                rid: EDU_RID,
                segment: 0,
            }),
            ..Fake::default()
        };
        f.cfg.insert(0x00, 0x11e8_1234);
        f.cfg.insert(0x04, 0x0010_0000);
        f.cfg.insert(0x10, BAR0 as u32);
        f
    }

    fn requests(&self) -> Vec<u32> {
        self.seen.iter().map(|(r, _)| *r).collect()
    }

    fn last<T: FromBytes>(&self, request: u32) -> T {
        let (_, bytes) = self
            .seen
            .iter()
            .rev()
            .find(|(r, _)| *r == request)
            .expect("request made");
        T::read_from_bytes(bytes).unwrap()
    }
}

impl Device for Fake {
    fn ioctl<T: IntoBytes + FromBytes + Immutable>(
        &mut self,
        request: u32,
        arg: &mut T,
    ) -> Result<(), Errno> {
        self.seen.push((request, arg.as_bytes().to_vec()));
        let block = arg.as_mut_bytes();
        match request {
            uapi::IOC_CALL => {
                let (status, out) = self.call.expect("a call answer")?;
                let c = Call::mut_from_bytes(block).unwrap();
                c.status = status;
                c.out = out;
                Ok(())
            }
            uapi::IOC_POOL_ALLOC => {
                PoolReq::mut_from_bytes(block).unwrap().base = POOL;
                Ok(())
            }
            uapi::IOC_MEM => Ok(()),
            uapi::IOC_DEV_INFO => {
                *DevInfo::mut_from_bytes(block).unwrap() = self.info.ok_or(ENODEV)?;
                Ok(())
            }
            uapi::IOC_CFG => {
                let c = Cfg::mut_from_bytes(block).unwrap();
                assert_eq!((c.size, c.offset % 4), (4, 0), "dword accesses only");
                // The module's rule: no BAR or ROM writes.
                if c.write == 1 && ((0x10..0x28).contains(&c.offset) || c.offset == 0x30) {
                    return Err(EPERM);
                }
                if c.write == 1 {
                    self.cfg.insert(c.offset, c.value);
                } else {
                    c.value = self.cfg.get(&c.offset).copied().unwrap_or(0);
                }
                Ok(())
            }
            other => panic!("unknown request {other:#x}"),
        }
    }

    fn map(&mut self, region: Region, len: u64) -> bool {
        self.mapped.push((region, len));
        true
    }

    fn load(&mut self, region: Region, offset: u64, width: Width) -> Option<u64> {
        assert_eq!(region, Region::Bar0);
        assert!(offset.is_multiple_of(width.bytes()) && offset < BAR0_SIZE);
        Some(self.bar.get(&offset).copied().unwrap_or(0))
    }

    fn store(&mut self, region: Region, offset: u64, width: Width, value: u64) -> bool {
        assert_eq!(region, Region::Bar0);
        assert!(offset.is_multiple_of(width.bytes()) && offset < BAR0_SIZE);
        self.bar.insert(offset, value);
        true
    }

    fn probe(&mut self, region: Region, offset: u64, write: bool) -> Option<bool> {
        self.probes.push((region, offset, write));
        (!self.probe_fails).then_some(self.probe_faults)
    }

    fn now_us(&mut self) -> u64 {
        self.clock += 10;
        self.clock
    }
}

static IMAGE: [u8; 16] = [0xAA; 16];

fn platform() -> Platform<'static> {
    Platform {
        ecam: ECAM,
        iommu: Pa(0x0905_0000),
        tsm_memory: Pa(0x4020_0000),
        guest_image: &IMAGE,
    }
}

fn host(fake: Fake) -> LinuxHost<'static, Fake> {
    LinuxHost::new(fake, 64, platform()).unwrap()
}

#[test]
fn setup_allocates_and_maps_the_pool_and_bar0() {
    let mut h = host(Fake::with_edu());
    assert_eq!(h.pool(), (Pa(POOL), 64));
    assert_eq!(h.guest_image(), Some(&IMAGE[..]));
    assert_eq!(h.tsm_memory(), Pa(0x4020_0000));
    let d = h.devices().unwrap();
    assert_eq!((d.ecam, d.bar_window), (ECAM, None));
    let f = h.device();
    assert_eq!(f.requests(), [uapi::IOC_POOL_ALLOC, uapi::IOC_DEV_INFO]);
    let req: PoolReq = f.last(uapi::IOC_POOL_ALLOC);
    assert_eq!(req.granules, 64);
    assert_eq!(
        f.mapped,
        [(Region::Pool, 64 * GRANULE_SIZE), (Region::Bar0, BAR0_SIZE)]
    );
}

#[test]
fn without_edu_nothing_but_the_pool_is_mapped() {
    let mut h = host(Fake::default());
    assert_eq!(h.device().mapped, [(Region::Pool, 64 * GRANULE_SIZE)]);
    // The window holds no function: the scenarios' bus scan finds nothing.
    assert_eq!(h.mmio_read32(ECAM), Some(u32::MAX));
    assert_eq!(h.mmio_read32(Pa(BAR0)), None);
}

#[test]
fn a_refused_pool_fails_the_setup() {
    #[derive(Debug)]
    struct NoPool(Fake);
    impl Device for NoPool {
        fn ioctl<T: IntoBytes + FromBytes + Immutable>(
            &mut self,
            request: u32,
            arg: &mut T,
        ) -> Result<(), Errno> {
            if request == uapi::IOC_POOL_ALLOC {
                return Err(Errno(12));
            }
            self.0.ioctl(request, arg)
        }
        fn map(&mut self, r: Region, l: u64) -> bool {
            self.0.map(r, l)
        }
        fn load(&mut self, r: Region, o: u64, w: Width) -> Option<u64> {
            self.0.load(r, o, w)
        }
        fn store(&mut self, r: Region, o: u64, w: Width, v: u64) -> bool {
            self.0.store(r, o, w, v)
        }
        fn probe(&mut self, r: Region, o: u64, w: bool) -> Option<bool> {
            self.0.probe(r, o, w)
        }
        fn now_us(&mut self) -> u64 {
            self.0.now_us()
        }
    }
    let err = LinuxHost::new(NoPool(Fake::with_edu()), 64, platform()).unwrap_err();
    assert_eq!(err, SetupError::Pool(Errno(12)));
}

#[test]
fn a_call_carries_its_registers_both_ways() {
    let mut fake = Fake::with_edu();
    let v = AbiVersion { major: 1, minor: 0 };
    fake.call = Some(Ok((0, [v.to_raw(), v.to_raw(), v.to_raw(), 0])));
    let mut h = host(fake);
    let got = host::version(&mut h, v).unwrap();
    assert_eq!(got.chosen, Some(v));
    let c: Call = h.device().last(uapi::IOC_CALL);
    assert_eq!(c.fid, u64::from(CallId::VERSION.fid()));
    assert_eq!(c.args, [v.to_raw(), 0, 0, 0, 0, 0]);

    // Six arguments in order (MAP_PRIVATE takes five).
    h.device().call = Some(Ok((0, [0; 4])));
    host::map_private(
        &mut h,
        Pa(POOL),
        tsm_abi::addr::Gpa(0x20_0000),
        Pa(POOL + GRANULE_SIZE),
        None,
        tsm_abi::params::MapFlags::empty(),
    )
    .unwrap();
    let c: Call = h.device().last(uapi::IOC_CALL);
    assert_eq!(c.fid, u64::from(CallId::MAP_PRIVATE.fid()));
    assert_eq!(
        c.args[..4],
        [
            POOL,
            0x20_0000,
            POOL + GRANULE_SIZE,
            tsm_abi::params::NO_SOURCE
        ]
    );

    // The TSM's refusal comes back as its status.
    let denied = Status::new(StatusCode::GranuleState);
    h.device().call = Some(Ok((denied.to_raw(), [0; 4])));
    assert_eq!(
        host::granule_delegate(&mut h, Pa(POOL)),
        Err(api::Error::Tsm(denied))
    );
}

#[test]
fn a_call_the_module_refused_is_malformed_with_its_errno() {
    let mut fake = Fake::with_edu();
    fake.call = Some(Err(EPERM));
    let mut h = host(fake);
    match host::granule_delegate(&mut h, Pa(0x1000)) {
        Err(api::Error::Malformed { call, status }) => {
            assert_eq!(call, CallId::GRANULE_DELEGATE);
            assert_eq!(status, REFUSED | 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pool_bytes_go_through_the_module_inside_the_pool_only() {
    let mut h = host(Fake::with_edu());
    let mut buf = [0u8; 24];
    assert!(h.read(Pa(POOL + 8), &mut buf));
    let m: Mem = h.device().last(uapi::IOC_MEM);
    assert_eq!((m.pa, m.len, m.write), (POOL + 8, 24, 0));
    assert_eq!(m.buf, buf.as_ptr() as u64);

    let data = [7u8; 4];
    assert!(h.write(Pa(POOL + 64 * GRANULE_SIZE - 4), &data));
    let m: Mem = h.device().last(uapi::IOC_MEM);
    assert_eq!((m.pa, m.len, m.write), (POOL + 64 * GRANULE_SIZE - 4, 4, 1));
    assert_eq!(m.buf, data.as_ptr() as u64);

    let before = h.device().seen.len();
    // Past the end, before the start, across the end, wrapping: refused here.
    assert!(!h.write(Pa(POOL + 64 * GRANULE_SIZE), &data));
    assert!(!h.read(Pa(POOL - 4), &mut buf));
    assert!(!h.write(Pa(POOL + 64 * GRANULE_SIZE - 2), &data));
    assert!(!h.read(Pa(u64::MAX - 2), &mut buf));
    // Nothing to move: done without the module.
    assert!(h.read(Pa(0), &mut []));
    assert_eq!(h.device().seen.len(), before);
}

#[test]
fn configuration_space_is_edus_alone() {
    let mut h = host(Fake::with_edu());
    let edu = Pa(ECAM.0 + (u64::from(EDU_RID) << 12));
    assert_eq!(h.mmio_read32(edu), Some(0x11e8_1234));
    let c: Cfg = h.device().last(uapi::IOC_CFG);
    assert_eq!((c.offset, c.size, c.write), (0, 4, 0));
    // Another function of bus 0, another bus: no function there, and no ioctl for it.
    let before = h.device().seen.len();
    assert_eq!(h.mmio_read32(ECAM), Some(u32::MAX));
    assert_eq!(h.mmio_read32(Pa(ECAM.0 + (1 << 20))), None);
    assert!(!h.mmio_write32(ECAM, 0));
    // Misaligned, 64-bit: refused.
    assert_eq!(h.mmio_read32(Pa(edu.0 + 2)), None);
    assert_eq!(h.mmio_read64(edu), None);
    assert_eq!(h.device().seen.len(), before);
    // The command register goes to the device.
    assert!(h.mmio_write32(Pa(edu.0 + 4), 0x6));
    let c: Cfg = h.device().last(uapi::IOC_CFG);
    assert_eq!((c.offset, c.write, c.value), (4, 1, 0x6));
}

#[test]
fn bar0_sizing_is_answered_without_moving_it() {
    let mut h = host(Fake::with_edu());
    let bar = Pa(ECAM.0 + (u64::from(EDU_RID) << 12) + 0x10);
    assert!(h.mmio_write32(bar, u32::MAX));
    assert_eq!(h.mmio_read32(bar), Some(!(BAR0_SIZE as u32 - 1)));
    assert!(h.mmio_write32(bar, BAR0 as u32));
    assert_eq!(h.mmio_read32(bar), Some(BAR0 as u32));
    // Moving it, or touching another BAR or the ROM: refused, and the device never sees it.
    assert!(!h.mmio_write32(bar, 0x2000_0000));
    assert!(!h.mmio_write32(Pa(bar.0 + 4), 0));
    assert!(!h.mmio_write32(Pa(bar.0 + 0x20), 0));
    let cfg_writes = h
        .device()
        .seen
        .iter()
        .filter(|(r, b)| *r == uapi::IOC_CFG && Cfg::read_from_bytes(b).unwrap().write == 1)
        .count();
    assert_eq!(cfg_writes, 0);
}

#[test]
fn the_scenarios_pci_code_finds_and_enables_edu() {
    let mut h = host(Fake::with_edu());
    let edu = Edu::probe(&mut h).unwrap();
    assert_eq!(edu.rid, EDU_RID);
    assert_eq!((edu.bar0, edu.bar0_size), (Pa(BAR0), BAR0_SIZE));
    // Memory decoding and bus mastering on.
    assert_eq!(h.device().cfg[&4] & 0x6, 0x6);
}

#[test]
fn bar0_registers_through_the_mapping() {
    let mut h = host(Fake::with_edu());
    assert!(h.mmio_write64(Pa(BAR0 + 0x80), 0x4800_0000));
    assert_eq!(h.device().bar[&0x80], 0x4800_0000);
    assert_eq!(h.mmio_read64(Pa(BAR0 + 0x80)), Some(0x4800_0000));
    assert!(h.mmio_write32(Pa(BAR0 + 0x4), 0x1234));
    assert_eq!(h.mmio_read32(Pa(BAR0 + 0x4)), Some(0x1234));
    // Misaligned, past the end, below the start: refused.
    assert_eq!(h.mmio_read64(Pa(BAR0 + 4)), None);
    assert!(!h.mmio_write32(Pa(BAR0 + BAR0_SIZE), 0));
    assert_eq!(h.mmio_read32(Pa(BAR0 - 4)), None);
    assert!(!h.mmio_write64(Pa(BAR0 + BAR0_SIZE - 4), 0));
}

#[test]
fn probes_run_in_a_mapping_or_report_unavailable() {
    let mut fake = Fake::with_edu();
    fake.probe_faults = true;
    let mut h = host(fake);
    assert_eq!(h.probe(Pa(POOL + 3 * GRANULE_SIZE), false), Probe::Blocked);
    assert_eq!(h.probe(Pa(BAR0 + GRANULE_SIZE), true), Probe::Blocked);
    assert_eq!(
        h.device().probes,
        [
            (Region::Pool, 3 * GRANULE_SIZE, false),
            (Region::Bar0, GRANULE_SIZE, true)
        ]
    );
    // Not mappable from user space: neither blocked nor reached.
    assert_eq!(h.probe(Pa(0x4020_0000), false), Probe::Unavailable);
    assert_eq!(h.probe(Pa(BAR0 + BAR0_SIZE), false), Probe::Unavailable);
    assert_eq!(h.device().probes.len(), 2);
    // A probe in a mapping that could not be made shows nothing either.
    h.device().probe_fails = true;
    assert_eq!(h.probe(Pa(POOL), false), Probe::Unavailable);
    h.device().probe_fails = false;
    h.device().probe_faults = false;
    assert_eq!(h.probe(Pa(POOL), false), Probe::Reached);
}

#[test]
fn the_clock_is_the_devices() {
    let mut h = host(Fake::with_edu());
    let a = h.now_us().unwrap();
    assert!(h.now_us().unwrap() > a);
}
