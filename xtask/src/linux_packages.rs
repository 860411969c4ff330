//! Debian's own Linux kernel for each arch, for the Linux host (issue 18): the kernel image,
//! the headers a module builds against (with the build machine's `linux-kbuild` for the host
//! tools they run), and a static busybox for the initramfs. Fetched through a private apt
//! (`crate::apt`) with the foreign architecture added to its lists only, unpacked with
//! `dpkg-deb`, never installed: the system's package state is left as it is.
//!
//! The version is looked up at run time from the release's `linux-image-<flavour>`
//! metapackage (Debian's mirrors keep only the newest build of a suite), then kept: a folder
//! holds exactly one kernel, and `--refresh` looks again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::PrivateApt;
use crate::arch::Arch;
use crate::workspace::show;

/// The file that records a finished unpack: the kernel ABI name and package version.
const STAMP: &str = "kernel";

/// An unpacked Debian kernel for one arch.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Debian's architecture name (`arm64`, `amd64`); also the kernel flavour.
    pub debian_arch: &'static str,
    /// The ABI name, `6.1.0-57`: the packages' names carry it.
    pub abi: String,
    /// The image package's version, `6.1.192-3`.
    pub version: String,
    root: PathBuf,
}

impl Kernel {
    /// `linux-image-<abi>-<flavour>` (the flavour is the Debian architecture for arm64/amd64).
    fn release(&self) -> String {
        format!("{}-{}", self.abi, self.debian_arch)
    }

    /// The kernel image: an arm64 `Image` (EFI stub, uncompressed) or an x86 bzImage.
    pub fn image(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release()))
    }

    /// The kernel's configuration (what is built in: console drivers, PCI, the module ABI).
    pub fn config(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.release()))
    }

    /// The tree an out-of-tree module builds against (`make -C <this> M=...`).
    pub fn headers(&self) -> PathBuf {
        self.root
            .join("usr/src")
            .join(format!("linux-headers-{}", self.release()))
    }

    /// The static busybox of the kernel's architecture, for the initramfs.
    pub fn busybox(&self) -> PathBuf {
        self.root.join("bin/busybox")
    }
}

fn debian_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "arm64",
        Arch::X86_64 => "amd64",
    }
}

/// The kernel for `arch`, unpacked; fetched first when it is missing or `refresh` is set
/// (about 70 MB, a minute or two).
pub fn ensure(arch: Arch, refresh: bool) -> Result<Kernel, String> {
    let debian_arch = debian_arch(arch);
    let folder = crate::apt::cache_folder(&format!("linux-{debian_arch}"))?;
    if !refresh && let Some(k) = installed(&folder, debian_arch) {
        return Ok(k);
    }
    if let Some(tool) = crate::apt::missing_tool() {
        return Err(format!(
            "the Linux host needs Debian's {debian_arch} kernel, which xtask fetches with \
             apt-get, apt-cache and dpkg-deb, but this machine has no {tool}"
        ));
    }
    crate::apt::fill_in_place(&folder, "kernel", |work| {
        fetch_into(work, debian_arch).map(drop)
    })?;
    installed(&folder, debian_arch)
        .ok_or_else(|| format!("{} is incomplete after the unpack", folder.display()))
        .inspect(|k| {
            eprintln!(
                "Debian kernel {} ({}) for {debian_arch} ready in {}",
                k.abi,
                k.version,
                folder.display()
            )
        })
}

/// The kernel in `folder`, if its stamp and every file the Linux host uses are there.
fn installed(folder: &Path, debian_arch: &'static str) -> Option<Kernel> {
    let stamp = std::fs::read_to_string(folder.join(STAMP)).ok()?;
    let (abi, version) = stamp.trim().split_once(' ')?;
    let k = Kernel {
        debian_arch,
        abi: abi.to_string(),
        version: version.to_string(),
        root: folder.to_path_buf(),
    };
    let complete = [k.image(), k.config(), k.busybox()]
        .iter()
        .all(|p| p.is_file())
        && k.headers().join("Makefile").is_file();
    complete.then_some(k)
}

fn fetch_into(work: &Path, debian_arch: &'static str) -> Result<Kernel, String> {
    let apt_dir = work.join("apt");
    let native = crate::apt::native_arch();
    let foreign: &[&str] = if debian_arch == native {
        &[]
    } else {
        &[debian_arch]
    };
    let apt = PrivateApt::new(&apt_dir, foreign, None, |_| Ok(Vec::new()))?;
    run(&mut apt.get(&["update"]))?;

    let meta = format!("linux-image-{debian_arch}:{debian_arch}");
    let shown = output(&mut apt.cache(&["show", "--no-all-versions", &meta]))?;
    let (abi, version) = image_of_metapackage(&shown, debian_arch).ok_or_else(|| {
        format!("`apt-cache show {meta}` names no linux-image-<abi>-{debian_arch}: {shown}")
    })?;
    let kbuild = kbuild_package(&abi)
        .ok_or_else(|| format!("cannot derive the linux-kbuild package from ABI {abi}"))?;
    let image = format!("linux-image-{abi}-{debian_arch}:{debian_arch}");
    let headers = format!("linux-headers-{abi}-{debian_arch}:{debian_arch}");
    let common = format!("linux-headers-{abi}-common");
    // The headers' scripts are run on the build machine: its own architecture's kbuild.
    let kbuild = format!("{kbuild}:{native}");
    let busybox = format!("busybox-static:{debian_arch}");
    run(&mut apt.get(&["download", &image, &headers, &common, &kbuild, &busybox]))?;

    for deb in apt.debs()? {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("linux-image-") {
            // Only /boot: the modules (some 400 MB unpacked) are not used, the host's drivers
            // the scenario needs are built in.
            unpack_boot(&deb, work)?;
        } else {
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-x").arg(&deb).arg(work);
            run(&mut cmd)?;
        }
    }
    std::fs::remove_dir_all(&apt_dir)
        .map_err(|e| format!("cannot remove {}: {e}", apt_dir.display()))?;
    let stamp = work.join(STAMP);
    std::fs::write(&stamp, format!("{abi} {version}\n"))
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    let kernel = installed(work, debian_arch).ok_or_else(|| {
        format!(
            "the packages of kernel {abi} unpacked into {} without an image, config, headers \
             Makefile or busybox",
            work.display()
        )
    })?;
    check_image(&kernel)?;
    Ok(kernel)
}

/// `dpkg-deb --fsys-tarfile <deb> | tar -x ./boot`.
fn unpack_boot(deb: &Path, into: &Path) -> Result<(), String> {
    let mut dpkg = Command::new("dpkg-deb");
    dpkg.arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped());
    let mut child = dpkg
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&dpkg)))?;
    let tar_in = child.stdout.take().ok_or("dpkg-deb has no stdout")?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(into)
        .args(["--wildcards", "./boot/*"])
        .stdin(tar_in);
    let tar_ok = tar
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&tar)))?
        .success();
    let dpkg_ok = child
        .wait()
        .map_err(|e| format!("`{}` failed: {e}", show(&dpkg)))?
        .success();
    if tar_ok && dpkg_ok {
        Ok(())
    } else {
        Err(format!("cannot unpack /boot of {}", deb.display()))
    }
}

/// The image is what the boot path will treat it as: arm64's `Image` header (magic `ARM\x64`
/// at 0x38, Documentation/arch/arm64/booting.rst) or x86's boot protocol header (`HdrS` at
/// 0x202, Documentation/arch/x86/boot.rst).
fn check_image(k: &Kernel) -> Result<(), String> {
    let path = k.image();
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (at, magic): (usize, &[u8]) = match k.debian_arch {
        "arm64" => (0x38, b"ARM\x64"),
        _ => (0x202, b"HdrS"),
    };
    if bytes.get(at..at + magic.len()) == Some(magic) {
        Ok(())
    } else {
        Err(format!(
            "{} has no {} boot header (is Debian's image compressed now?)",
            path.display(),
            k.debian_arch
        ))
    }
}

/// The ABI name and version of the image a `linux-image-<flavour>` metapackage depends on,
/// from its `apt-cache show` record: `Depends: linux-image-6.1.0-57-arm64 (= 6.1.192-3)`.
fn image_of_metapackage(record: &str, flavour: &str) -> Option<(String, String)> {
    let depends = record.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    let suffix = format!("-{flavour}");
    depends.split(',').find_map(|dep| {
        let mut words = dep.split_whitespace();
        let name = words.next()?.split(':').next()?;
        let abi = name.strip_prefix("linux-image-")?.strip_suffix(&suffix)?;
        let rest: String = words.collect::<Vec<_>>().join(" ");
        let version = rest.strip_prefix("(=")?.strip_suffix(')')?.trim();
        (!abi.is_empty() && abi.chars().next()?.is_ascii_digit())
            .then(|| (abi.to_string(), version.to_string()))
    })
}

/// `linux-kbuild-6.1` for ABI `6.1.0-57`: the kbuild package is named by major.minor.
fn kbuild_package(abi: &str) -> Option<String> {
    let mut parts = abi.split(['.', '-']);
    let (major, minor) = (parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| format!("linux-kbuild-{major}.{minor}"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    crate::prereq::run_install(cmd)
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_from_the_metapackage_record() {
        let record = "Package: linux-image-arm64\nSource: linux-signed-arm64 (6.1.192+3)\n\
                      Version: 6.1.192-3\nArchitecture: arm64\n\
                      Depends: linux-image-6.1.0-57-arm64 (= 6.1.192-3)\n\
                      Description: Linux for 64-bit ARMv8 machines (meta-package)\n";
        assert_eq!(
            image_of_metapackage(record, "arm64"),
            Some(("6.1.0-57".to_string(), "6.1.192-3".to_string()))
        );
        // Another flavour's image, an unversioned dependency, no Depends: nothing.
        assert_eq!(image_of_metapackage(record, "amd64"), None);
        assert_eq!(
            image_of_metapackage("Depends: linux-image-6.1.0-57-arm64\n", "arm64"),
            None
        );
        assert_eq!(image_of_metapackage("Package: x\n", "arm64"), None);
        let two = "Depends: kmod, linux-image-6.12.9-amd64:amd64 (= 6.12.9-1)\n";
        assert_eq!(
            image_of_metapackage(two, "amd64"),
            Some(("6.12.9".to_string(), "6.12.9-1".to_string()))
        );
    }

    #[test]
    fn kbuild_is_named_by_major_minor() {
        assert_eq!(
            kbuild_package("6.1.0-57").as_deref(),
            Some("linux-kbuild-6.1")
        );
        assert_eq!(
            kbuild_package("6.12.9").as_deref(),
            Some("linux-kbuild-6.12")
        );
        assert_eq!(kbuild_package("x.1"), None);
        assert_eq!(kbuild_package("6"), None);
    }
}
