//! Linux system calls without a libc, and /dev/tsm over them: the static binary's only
//! contact with the kernel, and this crate's only `unsafe` code. Built for the bare-metal
//! targets the toolchain already has (docs/design.md "Linux host: module and user-space
//! driver" says why), which Linux runs as a static executable.
#![allow(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::device::{Device, Errno, Region, Width};
use crate::uapi;

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const IOCTL: usize = 29;
    pub const OPENAT: usize = 56;
    pub const CLOSE: usize = 57;
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const CLOCK_GETTIME: usize = 113;
    pub const MUNMAP: usize = 215;
    pub const CLONE: usize = 220;
    pub const MMAP: usize = 222;
    pub const WAIT4: usize = 260;
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const MMAP: usize = 9;
    pub const MUNMAP: usize = 11;
    pub const IOCTL: usize = 16;
    pub const CLONE: usize = 56;
    pub const WAIT4: usize = 61;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
}

/// One system call with up to six arguments; the kernel's return value (a negated error
/// number from -4095 to -1 on failure).
///
/// # Safety
///
/// The arguments must be what system call `n` expects: every pointer valid for what the call
/// does with it, for the call's duration.
#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: `svc #0` enters the kernel, which returns in x0 and preserves every other
    // register (the Linux arm64 system-call convention); the memory it touches is what the
    // caller vouched for.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") n,
            inlateout("x0") a[0] => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack)
        );
    }
    ret
}

/// As the aarch64 one.
///
/// # Safety
///
/// As the aarch64 one.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: `syscall` enters the kernel, which returns in rax, clobbers rcx and r11 and
    // preserves the rest (the Linux x86_64 system-call convention); the memory it touches is
    // what the caller vouched for.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

fn result(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno(ret.unsigned_abs() as u32))
    } else {
        Ok(ret as usize)
    }
}

const AT_FDCWD: isize = -100;
const O_RDONLY: usize = 0;
const O_RDWR: usize = 2;
const O_CLOEXEC: usize = 0o2000000;
const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const MAP_SHARED: usize = 1;
const SIGCHLD: usize = 17;
const CLOCK_MONOTONIC: usize = 1;

/// Opens `path` (NUL-terminated).
fn open(path: &core::ffi::CStr, flags: usize) -> Result<usize, Errno> {
    // SAFETY: openat reads the NUL-terminated path, which lives for the call.
    result(unsafe {
        syscall(
            nr::OPENAT,
            [
                AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags | O_CLOEXEC,
                0,
                0,
                0,
            ],
        )
    })
}

fn close(fd: usize) {
    // SAFETY: close touches no memory of ours.
    let _ = unsafe { syscall(nr::CLOSE, [fd, 0, 0, 0, 0, 0]) };
}

/// Writes all of `data` to file descriptor `fd` (1: standard output); errors are dropped (there
/// is nowhere left to report them).
pub fn write_all(fd: usize, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: write reads `data.len()` bytes of `data`, which lives for the call.
        let ret = unsafe { syscall(nr::WRITE, [fd, data.as_ptr() as usize, data.len(), 0, 0, 0]) };
        match result(ret) {
            Ok(n) if n > 0 => data = data.get(n..).unwrap_or_default(),
            _ => return,
        }
    }
}

/// Reads the file at `path` into `buf`; the bytes read, or `None` when it cannot be read or
/// does not fit.
pub fn read_file<'b>(path: &core::ffi::CStr, buf: &'b mut [u8]) -> Option<&'b mut [u8]> {
    let fd = open(path, O_RDONLY).ok()?;
    let mut len = 0;
    let ok = loop {
        let Some(rest) = buf.get_mut(len..) else {
            break false;
        };
        if rest.is_empty() {
            break false;
        }
        // SAFETY: read writes at most `rest.len()` bytes into `rest`, which lives for the call.
        let ret = unsafe {
            syscall(
                nr::READ,
                [fd, rest.as_mut_ptr() as usize, rest.len(), 0, 0, 0],
            )
        };
        match result(ret) {
            Ok(0) => break true,
            Ok(n) => len += n,
            Err(_) => break false,
        }
    };
    close(fd);
    if ok { buf.get_mut(..len) } else { None }
}

/// Ends the process with `code`.
pub fn exit(code: u8) -> ! {
    // SAFETY: exit_group touches no memory and does not return.
    unsafe { syscall(nr::EXIT_GROUP, [usize::from(code), 0, 0, 0, 0, 0]) };
    unreachable!("exit_group returned")
}

/// One mapping of the file.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    addr: usize,
    len: u64,
}

/// /dev/tsm, open, with its mappings.
#[derive(Debug)]
pub struct TsmFile {
    fd: usize,
    pool: Option<Mapping>,
    bar0: Option<Mapping>,
}

impl TsmFile {
    /// Opens /dev/tsm.
    pub fn open() -> Result<Self, Errno> {
        Ok(TsmFile {
            fd: open(c"/dev/tsm", O_RDWR)?,
            pool: None,
            bar0: None,
        })
    }

    fn mapping(&self, region: Region) -> Option<Mapping> {
        match region {
            Region::Pool => self.pool,
            Region::Bar0 => self.bar0,
        }
    }

    /// The address of an aligned access of `width` at `offset` of `region`, if inside it.
    fn at(&self, region: Region, offset: u64, width: Width) -> Option<usize> {
        let m = self.mapping(region)?;
        let inside = offset.is_multiple_of(width.bytes())
            && offset
                .checked_add(width.bytes())
                .is_some_and(|end| end <= m.len);
        inside.then(|| m.addr + offset as usize)
    }
}

impl Drop for TsmFile {
    fn drop(&mut self) {
        for m in [self.pool.take(), self.bar0.take()].into_iter().flatten() {
            // SAFETY: the mapping was made by `map` and nothing refers to it any more (the
            // file is going away with it).
            let _ = unsafe { syscall(nr::MUNMAP, [m.addr, m.len as usize, 0, 0, 0, 0]) };
        }
        close(self.fd);
    }
}

impl Device for TsmFile {
    fn ioctl<T: IntoBytes + FromBytes + Immutable>(
        &mut self,
        request: u32,
        arg: &mut T,
    ) -> Result<(), Errno> {
        let block = arg.as_mut_bytes();
        // SAFETY: every request of the module reads and writes exactly its block, whose size
        // the request number encodes and `T` is (uapi.rs, checked against the C header);
        // `block` lives for the call. A block may name a buffer (TSM_IOC_MEM): the caller
        // made it point at memory that lives for the call.
        let ret = unsafe {
            syscall(
                nr::IOCTL,
                [
                    self.fd,
                    request as usize,
                    block.as_mut_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )
        };
        result(ret).map(drop)
    }

    fn map(&mut self, region: Region, len: u64) -> bool {
        if self.mapping(region).is_some() || len == 0 {
            return false;
        }
        let offset = match region {
            Region::Pool => uapi::MMAP_POOL,
            Region::Bar0 => uapi::MMAP_BAR0,
        };
        // SAFETY: a new shared mapping the kernel places (address hint 0): it overlaps no
        // memory of this program.
        let ret = unsafe {
            syscall(
                nr::MMAP,
                [
                    0,
                    len as usize,
                    PROT_READ | PROT_WRITE,
                    MAP_SHARED,
                    self.fd,
                    offset as usize,
                ],
            )
        };
        let Ok(addr) = result(ret) else {
            return false;
        };
        let m = Some(Mapping { addr, len });
        match region {
            Region::Pool => self.pool = m,
            Region::Bar0 => self.bar0 = m,
        }
        true
    }

    fn load(&mut self, region: Region, offset: u64, width: Width) -> Option<u64> {
        let addr = self.at(region, offset, width)?;
        // SAFETY: `addr` is inside a live mapping of the file and aligned to the width (`at`);
        // no Rust object lives there. Volatile: device registers, or memory the TSM and
        // devices change.
        Some(unsafe {
            match width {
                Width::W32 => u64::from(core::ptr::read_volatile(addr as *const u32)),
                Width::W64 => core::ptr::read_volatile(addr as *const u64),
            }
        })
    }

    fn store(&mut self, region: Region, offset: u64, width: Width, value: u64) -> bool {
        let Some(addr) = self.at(region, offset, width) else {
            return false;
        };
        // SAFETY: as in `load`.
        unsafe {
            match width {
                Width::W32 => core::ptr::write_volatile(addr as *mut u32, value as u32),
                Width::W64 => core::ptr::write_volatile(addr as *mut u64, value),
            }
        }
        true
    }

    fn probe(&mut self, region: Region, offset: u64, write: bool) -> Option<bool> {
        let addr = self.at(region, offset, Width::W64)?;
        // SAFETY: clone with only SIGCHLD (a fork): the child gets a copy of this address
        // space and the same shared mappings, and runs only the access and exit_group below.
        let pid = result(unsafe { syscall(nr::CLONE, [SIGCHLD, 0, 0, 0, 0, 0]) }).ok()?;
        if pid == 0 {
            // SAFETY: as in `load`/`store`; a fault here ends this child only.
            unsafe {
                if write {
                    core::ptr::write_volatile(addr as *mut u64, 0xBAD0_BAD0_BAD0_BAD0);
                } else {
                    let _ = core::ptr::read_volatile(addr as *const u64);
                }
            }
            exit(0);
        }
        let mut status = 0i32;
        // SAFETY: wait4 writes the child's status into `status`, which lives for the call.
        let ret = unsafe { syscall(nr::WAIT4, [pid, &raw mut status as usize, 0, 0, 0, 0]) };
        result(ret).ok()?;
        // Killed by a signal (the fault) or exited (the access completed).
        let signalled = status & 0x7F != 0 && status & 0x7F != 0x7F;
        Some(signalled)
    }

    fn now_us(&mut self) -> u64 {
        let mut ts = [0i64; 2];
        // SAFETY: clock_gettime writes a struct timespec (two 64-bit words) into `ts`.
        let ret = unsafe {
            syscall(
                nr::CLOCK_GETTIME,
                [CLOCK_MONOTONIC, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
            )
        };
        if result(ret).is_err() {
            return 0;
        }
        let [s, ns] = ts;
        (s as u64)
            .saturating_mul(1_000_000)
            .saturating_add(ns as u64 / 1000)
    }
}

/// The process's arguments, from the stack Linux set up for `_start`.
#[derive(Clone, Copy, Debug)]
pub struct Args {
    argv: usize,
    argc: usize,
}

impl Args {
    /// The arguments at `sp`, the stack pointer `_start` received.
    ///
    /// # Safety
    ///
    /// `sp` must be the initial stack pointer of the process: Linux put argc there, then argc
    /// pointers to NUL-terminated strings that live as long as the process.
    pub unsafe fn from_initial_stack(sp: usize) -> Self {
        // SAFETY: argc is the first word of the initial stack (the caller's promise).
        let argc = unsafe { core::ptr::read(sp as *const usize) };
        Args {
            argv: sp + size_of::<usize>(),
            argc,
        }
    }

    /// Argument `i` (0: the program).
    pub fn get(&self, i: usize) -> Option<&'static core::ffi::CStr> {
        if i >= self.argc {
            return None;
        }
        // SAFETY: argv[i] for i < argc is a pointer to a NUL-terminated string that lives as
        // long as the process (`from_initial_stack`).
        Some(unsafe {
            let p = core::ptr::read(
                (self.argv + i * size_of::<usize>()) as *const *const core::ffi::c_char,
            );
            core::ffi::CStr::from_ptr(p)
        })
    }
}
