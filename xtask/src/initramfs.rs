//! A `newc` cpio archive (the format Linux unpacks as an initramfs,
//! Documentation/driver-api/early-userspace/buffer-format.rst): directories, files and
//! symbolic links, owned by root, with the trailer.

/// One entry.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(String),
    /// Path, mode bits (0o755, 0o644), contents.
    File(String, u32, Vec<u8>),
    /// Path, target.
    Symlink(String, String),
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// The archive holding `entries`, in order (a directory before what it holds).
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, e) in entries.iter().enumerate() {
        let (name, mode, data): (&str, u32, &[u8]) = match e {
            Entry::Dir(p) => (p, S_IFDIR | 0o755, &[]),
            Entry::File(p, m, d) => (p, S_IFREG | (m & 0o7777), d),
            Entry::Symlink(p, t) => (p, S_IFLNK | 0o777, t.as_bytes()),
        };
        let links = if matches!(e, Entry::Dir(_)) { 2 } else { 1 };
        record(&mut out, ino as u32 + 1, mode, links, name, data);
    }
    record(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
    out
}

fn record(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a newc archive back: (name, mode, data) per record, the trailer included.
    fn parse(mut a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut at = 0usize;
        let mut records = Vec::new();
        loop {
            assert_eq!(&a[..6], b"070701", "magic at {at}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&a[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(a[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = a[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            records.push((name.clone(), mode as u32, data));
            at += next;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty());
                return records;
            }
        }
    }

    #[test]
    fn entries_round_trip_with_their_padding() {
        let a = archive(&[
            Entry::Dir("bin".into()),
            Entry::File("bin/busybox".into(), 0o755, vec![1, 2, 3]),
            Entry::Symlink("bin/sh".into(), "busybox".into()),
            Entry::File("init".into(), 0o755, b"#!/bin/sh\n".to_vec()),
        ]);
        assert!(a.len().is_multiple_of(4));
        let r = parse(&a);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(r[1], ("bin/busybox".into(), 0o100755, vec![1, 2, 3]));
        assert_eq!(r[2], ("bin/sh".into(), 0o120777, b"busybox".to_vec()));
        assert_eq!(r[3].2, b"#!/bin/sh\n");
        assert_eq!(r[4].0, "TRAILER!!!");
    }
}
