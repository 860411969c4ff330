//! The blocks and request numbers of /dev/tsm, as linux/module/tsm_host_uapi.h declares them;
//! the test at the end compiles that header against these values.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `TSM_IOC_CALL`: one host call, registers in, status and results out.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Call {
    pub fid: u64,
    pub args: [u64; 6],
    pub status: u64,
    pub out: [u64; 4],
}

/// `TSM_IOC_POOL_ALLOC`: granules in, the pool's first PA out.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PoolReq {
    pub granules: u64,
    pub base: u64,
}

/// `TSM_IOC_MEM`: bytes between the pool and a buffer of the caller.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Mem {
    pub pa: u64,
    pub len: u64,
    /// The caller's buffer, by address.
    pub buf: u64,
    /// 1: from the buffer into the pool.
    pub write: u32,
    pub reserved: u32,
}

/// `TSM_IOC_DEV_INFO`: the bound edu device.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DevInfo {
    pub bar0: u64,
    pub bar0_size: u64,
    pub cfg_size: u32,
    /// bus << 8 | device << 3 | function.
    pub rid: u16,
    pub segment: u16,
}

/// `TSM_IOC_CFG`: one configuration-space access.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Cfg {
    pub offset: u32,
    pub size: u32,
    pub write: u32,
    pub value: u32,
}

const MAGIC: u32 = 0xB7;
const WRITE: u32 = 1;
const READ: u32 = 2;

/// `_IOC(dir, MAGIC, nr, size)` of the asm-generic encoding (arm64 and x86_64 both use it).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr
}

pub const IOC_CALL: u32 = ioc(READ | WRITE, 0, size_of::<Call>());
pub const IOC_POOL_ALLOC: u32 = ioc(READ | WRITE, 1, size_of::<PoolReq>());
pub const IOC_MEM: u32 = ioc(WRITE, 2, size_of::<Mem>());
pub const IOC_DEV_INFO: u32 = ioc(READ, 3, size_of::<DevInfo>());
pub const IOC_CFG: u32 = ioc(READ | WRITE, 4, size_of::<Cfg>());

/// mmap offsets: the pool, and edu's BAR0.
pub const MMAP_POOL: u64 = 0;
pub const MMAP_BAR0: u64 = 1 << 40;

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;
    use std::path::Path;
    use std::process::Command;

    /// The C header compiled with this file's values as static assertions: a block, a field or
    /// a request number that differs fails the build.
    #[test]
    fn the_module_header_agrees() {
        let mut c = String::from("#include <stddef.h>\n#include \"tsm_host_uapi.h\"\n");
        let mut check = |expr: String, want: u64| {
            writeln!(c, "_Static_assert({expr} == {want}ULL, \"{expr}\");").unwrap();
        };
        check("TSM_IOC_CALL".into(), IOC_CALL.into());
        check("TSM_IOC_POOL_ALLOC".into(), IOC_POOL_ALLOC.into());
        check("TSM_IOC_MEM".into(), IOC_MEM.into());
        check("TSM_IOC_DEV_INFO".into(), IOC_DEV_INFO.into());
        check("TSM_IOC_CFG".into(), IOC_CFG.into());
        check("TSM_MMAP_POOL".into(), MMAP_POOL);
        check("TSM_MMAP_BAR0".into(), MMAP_BAR0);
        for (ty, size) in [
            ("tsm_ioc_call", size_of::<Call>()),
            ("tsm_ioc_pool", size_of::<PoolReq>()),
            ("tsm_ioc_mem", size_of::<Mem>()),
            ("tsm_ioc_dev_info", size_of::<DevInfo>()),
            ("tsm_ioc_cfg", size_of::<Cfg>()),
        ] {
            check(format!("sizeof(struct {ty})"), size as u64);
        }
        let offsets = [
            (
                "tsm_ioc_call",
                "status",
                core::mem::offset_of!(Call, status),
            ),
            ("tsm_ioc_call", "out", core::mem::offset_of!(Call, out)),
            ("tsm_ioc_mem", "buf", core::mem::offset_of!(Mem, buf)),
            ("tsm_ioc_mem", "write", core::mem::offset_of!(Mem, write)),
            (
                "tsm_ioc_dev_info",
                "cfg_size",
                core::mem::offset_of!(DevInfo, cfg_size),
            ),
            (
                "tsm_ioc_dev_info",
                "rid",
                core::mem::offset_of!(DevInfo, rid),
            ),
            (
                "tsm_ioc_dev_info",
                "segment",
                core::mem::offset_of!(DevInfo, segment),
            ),
            ("tsm_ioc_cfg", "write", core::mem::offset_of!(Cfg, write)),
            ("tsm_ioc_cfg", "value", core::mem::offset_of!(Cfg, value)),
        ];
        for (ty, field, at) in offsets {
            check(format!("offsetof(struct {ty}, {field})"), at as u64);
        }
        c.push_str("extern int tsm_uapi_check;\n");

        let dir = std::env::temp_dir().join(format!("tsm-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("check.c");
        std::fs::write(&file, &c).unwrap();
        let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../module");
        let out = match Command::new("gcc")
            .args(["-std=gnu11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
            .arg(&module)
            .arg(&file)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: gcc is not installed, the uapi check did not run");
                return;
            }
            Err(e) => panic!("running gcc: {e}"),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
