//! The initramfs of the `linux` scenario: a newc cpio archive (the format the kernel unpacks,
//! Documentation/driver-api/early-userspace/buffer-format.rst) written here, with Debian's
//! static busybox and an `/init` script; no cpio tool needed.

use std::path::Path;

/// What `/init` prints when the probe of the TSM's memory ended as it must: the process that
/// read it was killed by SIGBUS (the external abort the TSM injected) and the kernel lived on.
pub const PROBE_MARKER: &str = "tsm-linux: probe of TSM memory killed by SIGBUS";
/// What `/init` prints once user space runs, before the probe.
pub const UP_MARKER: &str = "tsm-linux: user space is up";

/// `/init`: mounts the kernel's file systems, says it is up, reads the first word of the TSM's
/// memory (found in the device tree's `/reserved-memory`) through `/dev/mem` in a child
/// process, reports how that process ended, and powers off (PSCI SYSTEM_OFF, through the TSM).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "UP_MARKER (kernel $(/bin/busybox uname -r))"
# The kernel logs the fatal signals of processes without a handler (the probe's SIGBUS).
echo 1 > /proc/sys/debug/exception-trace
for node in /proc/device-tree/reserved-memory/tsm@*; do
    addr=0x${node##*@}
    echo "tsm-linux: reading TSM memory at $addr through /dev/mem"
    /bin/busybox devmem "$addr" 32
    status=$?
    if [ "$status" -eq 135 ]; then
        echo "PROBE_MARKER (status $status)"
    else
        echo "tsm-linux: probe of TSM memory ended with status $status, not SIGBUS"
    fi
done
/bin/busybox poweroff -f
"#;

/// A newc archive being built.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// The archive for `busybox` (a static busybox of the kernel's architecture).
pub fn build(busybox: &Path) -> Result<Vec<u8>, String> {
    let bb =
        std::fs::read(busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    Ok(archive(&bb))
}

fn archive(busybox: &[u8]) -> Vec<u8> {
    let init = INIT
        .replace("UP_MARKER", UP_MARKER)
        .replace("PROBE_MARKER", PROBE_MARKER);
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for dir in ["bin", "dev", "proc", "sys"] {
        c.entry(dir, 0o040755, &[]);
    }
    c.entry("bin/busybox", 0o100755, busybox);
    c.entry("bin/sh", 0o120777, b"busybox");
    c.entry("init", 0o100755, init.as_bytes());
    c.entry("TRAILER!!!", 0, &[]);
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the archive back by the format's rules: every entry's name and data.
    fn entries(mut a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0usize;
        loop {
            assert_eq!(&a[..6], b"070701", "entry at {at}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&a[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(a[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = a[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            at += next;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn the_archive_holds_busybox_its_link_and_an_executable_init() {
        let e = entries(&archive(b"\x7fELF-busybox"));
        let find = |n: &str| e.iter().find(|(name, _, _)| name == n).unwrap();
        assert_eq!(find("bin/busybox").2, b"\x7fELF-busybox");
        assert_eq!(find("bin/sh").1, 0o120777);
        assert_eq!(find("bin/sh").2, b"busybox");
        let init = find("init");
        assert_eq!(init.1, 0o100755);
        let text = String::from_utf8(init.2.clone()).unwrap();
        assert!(text.starts_with("#!/bin/busybox sh\n"));
        assert!(text.contains(PROBE_MARKER) && text.contains(UP_MARKER));
        assert!(text.contains("poweroff -f"));
        assert_eq!(find("proc").1 & 0o170000, 0o040000);
    }
}
