//! The Linux host's kernel module (linux/module, issue 18): built out of tree against the
//! headers of Debian's kernel (`crate::linux_packages`), with the compiler the headers name
//! (`.kernelvariables`: `$(CROSS_COMPILE)gcc-12`). For arm64 that is Debian's cross compiler,
//! amd64 packages fetched through the private apt and unpacked with `dpkg-deb` into the cache
//! folder, never installed; for amd64 it is the build machine's own compiler, Debian's package of
//! that name installed with `apt-get` when it is missing (as `make` is for both).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::PrivateApt;
use crate::arch::Arch;
use crate::linux_packages::Kernel;
use crate::workspace::{Workspace, show};

/// The record of a finished unpack of the cross compiler.
const STAMP: &str = "complete";

/// A built module.
#[derive(Debug)]
pub struct Module {
    pub ko: PathBuf,
    /// Its `vermagic`, checked to name the kernel it was built for.
    pub vermagic: String,
}

/// Builds `tsm_host.ko` for `arch` in the xtask folder; returns it once its vermagic names the
/// kernel of `kernel`.
pub fn build(ws: &Workspace, arch: Arch, kernel: &Kernel) -> Result<Module, String> {
    let headers = kernel.headers();
    let top = top_makefile(&headers)?;
    let vars = read(&headers.join(".kernelvariables"))?;
    let gcc = compiler_of(&vars).ok_or_else(|| {
        format!(
            "{} names no `gcc-<version>` compiler",
            headers.join(".kernelvariables").display()
        )
    })?;
    let (karch, cross, path, libs) = match arch {
        Arch::Aarch64 => {
            let root = cross_compiler(&gcc, "aarch64-linux-gnu")?;
            let libs = root.join("usr/lib").join(native_triple());
            (
                "arm64",
                "aarch64-linux-gnu-",
                Some(root.join("usr/bin")),
                Some(libs),
            )
        }
        Arch::X86_64 => {
            // The build machine's own compiler (amd64 Debian, as the project's machines are):
            // Debian's package of the name the headers give, installed if it is missing.
            if crate::prereq::find_in_path(&gcc).is_none() {
                crate::prereq::apt_install(&[&[gcc.as_str()]])?;
            }
            if crate::prereq::find_in_path(&gcc).is_none() {
                return Err(format!(
                    "Debian's amd64 headers build modules with {gcc}, still not on PATH after \
                     installing Debian's {gcc} package"
                ));
            }
            ("x86", "", None, None)
        }
    };
    if crate::prereq::find_in_path("make").is_none() {
        crate::prereq::apt_install(&[&["make"]])?;
    }

    // Kbuild writes its objects beside the sources: build a copy, keep the tree clean.
    let src = ws.root.join("linux/module");
    let dir = ws.xtask_dir().join("linux-module").join(arch.name());
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for name in ["Kbuild", "tsm_host.c", "tsm_host_uapi.h"] {
        std::fs::copy(src.join(name), dir.join(name))
            .map_err(|e| format!("cannot copy {name} to {}: {e}", dir.display()))?;
    }

    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&headers)
        .arg("-f")
        .arg(&top)
        .arg(format!("M={}", dir.display()))
        .arg(format!("ARCH={karch}"))
        .arg(format!("CROSS_COMPILE={cross}"))
        .arg(format!(
            "TSM_ABI_INCLUDE={}",
            ws.root.join("abi/include").display()
        ))
        // Every warning of the kernel's W=1 set is an error for this module.
        .arg("W=1")
        .arg("KCFLAGS=-Werror")
        .arg("modules")
        .stdin(std::process::Stdio::null());
    if let Some(bin) = &path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let joined =
            std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&old)))
                .map_err(|e| format!("cannot put {} on PATH: {e}", bin.display()))?;
        make.env("PATH", joined);
    }
    if let Some(libs) = &libs {
        // The unpacked binutils find their private libraries (libbfd, libopcodes) there.
        make.env("LD_LIBRARY_PATH", libs);
    }
    eprintln!("$ {}", show(&make));
    let status = make
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&make)))?;
    if !status.success() {
        return Err(format!(
            "building the {} module failed ({status})",
            arch.name()
        ));
    }
    let ko = dir.join("tsm_host.ko");
    let bytes = std::fs::read(&ko).map_err(|e| format!("cannot read {}: {e}", ko.display()))?;
    let vermagic =
        modinfo(&bytes, "vermagic").ok_or_else(|| format!("{} has no vermagic", ko.display()))?;
    let release = format!("{}-{}", kernel.abi, kernel.debian_arch);
    if !vermagic_names(&vermagic, &release) {
        return Err(format!(
            "{} has vermagic `{vermagic}`, not one of kernel {release}",
            ko.display()
        ));
    }
    Ok(Module { ko, vermagic })
}

/// The common tree's Makefile the headers' one includes by absolute path (Debian's
/// `include /usr/src/linux-headers-<abi>-common/Makefile`), found beside the unpacked headers.
/// Passed with `-f`, it sees the headers folder as its object tree, as the include would.
fn top_makefile(headers: &Path) -> Result<PathBuf, String> {
    let text = read(&headers.join("Makefile"))?;
    let included = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("include "))
        .ok_or_else(|| format!("{} includes no top Makefile", headers.display()))?;
    let common = Path::new(included.trim())
        .parent()
        .and_then(Path::file_name)
        .ok_or_else(|| format!("cannot read the common tree out of `include {included}`"))?;
    let parent = headers
        .parent()
        .ok_or_else(|| format!("{} has no parent", headers.display()))?;
    let top = parent.join(common).join("Makefile");
    if top.is_file() {
        Ok(top)
    } else {
        Err(format!(
            "{} missing (the headers' common package)",
            top.display()
        ))
    }
}

/// `gcc-12` from `.kernelvariables`' `CC = ... $(CROSS_COMPILE)gcc-12`.
fn compiler_of(vars: &str) -> Option<String> {
    let cc = vars.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "CC").then_some(value)
    })?;
    let word = cc.split_whitespace().last()?;
    let gcc = word.rsplit(')').next()?;
    let version = gcc.strip_prefix("gcc-")?;
    (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())).then(|| gcc.to_string())
}

/// The value of `key` in a module's `.modinfo` (NUL-separated `key=value` strings).
fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    ko.split(|&b| b == 0).find_map(|s| {
        let s = std::str::from_utf8(s).ok()?;
        s.strip_prefix(&prefix).map(str::to_string)
    })
}

/// Whether `vermagic` is that of kernel `release` (its first word).
fn vermagic_names(vermagic: &str, release: &str) -> bool {
    vermagic.split_whitespace().next() == Some(release)
}

fn native_triple() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    }
}

/// Debian's cross `gcc` (`gcc-12` → `gcc-12-<target>`, its `cpp`, its base package and the
/// target's binutils), unpacked into the cache folder; returns the unpack root.
fn cross_compiler(gcc: &str, target: &str) -> Result<PathBuf, String> {
    let folder = crate::apt::cache_folder(&format!("{gcc}-{target}"))?;
    if folder.join(STAMP).is_file() {
        return Ok(folder);
    }
    if let Some(tool) = crate::apt::missing_tool() {
        return Err(format!(
            "the module for {target} builds with Debian's {gcc}-{target}, which xtask fetches \
             with apt-get, apt-cache and dpkg-deb, but this machine has no {tool}"
        ));
    }
    crate::apt::fill_in_place(&folder, "compiler", |work| {
        fetch_compiler(work, gcc, target)
    })?;
    eprintln!("Debian's {gcc}-{target} ready in {}", folder.display());
    Ok(folder)
}

fn fetch_compiler(work: &Path, gcc: &str, target: &str) -> Result<(), String> {
    let apt_dir = work.join("apt");
    let apt = PrivateApt::new(&apt_dir, &[], None, |_| Ok(Vec::new()))?;
    crate::prereq::run_install(&mut apt.get(&["update"]))?;
    let cpp = gcc.replacen("gcc", "cpp", 1);
    let packages = [
        format!("{gcc}-{target}"),
        format!("{cpp}-{target}"),
        format!("{gcc}-{target}-base"),
        format!("binutils-{target}"),
    ];
    let mut args = vec!["download"];
    args.extend(packages.iter().map(String::as_str));
    crate::prereq::run_install(&mut apt.get(&args))?;
    for deb in apt.debs()? {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(&deb).arg(work);
        crate::prereq::run_install(&mut cmd)?;
    }
    std::fs::remove_dir_all(&apt_dir)
        .map_err(|e| format!("cannot remove {}: {e}", apt_dir.display()))?;
    let driver = work.join("usr/bin").join(format!("{target}-{gcc}"));
    if !driver.is_file() {
        return Err(format!(
            "the unpacked packages hold no {}",
            driver.display()
        ));
    }
    std::fs::write(work.join(STAMP), format!("{}\n", packages.join(" ")))
        .map_err(|e| format!("cannot write the stamp in {}: {e}", work.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiler_comes_from_the_kernel_variables() {
        let vars = "override ARCH = arm64\nCCACHE = ccache\n\
                    CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n";
        assert_eq!(compiler_of(vars).as_deref(), Some("gcc-12"));
        assert_eq!(compiler_of("CC = gcc-14\n").as_deref(), Some("gcc-14"));
        assert_eq!(compiler_of("CC = clang\n"), None);
        assert_eq!(compiler_of("CC = gcc-\n"), None);
        assert_eq!(compiler_of("CCACHE = gcc-12\n"), None);
    }

    #[test]
    fn modinfo_and_vermagic() {
        let ko = b"\x7fELF\0license=GPL\0vermagic=6.1.0-57-arm64 SMP mod_unload aarch64\0x";
        let v = modinfo(ko, "vermagic").unwrap();
        assert!(vermagic_names(&v, "6.1.0-57-arm64"));
        assert!(!vermagic_names(&v, "6.1.0-57-amd64"));
        assert!(!vermagic_names(&v, "6.1.0-5"));
        assert_eq!(modinfo(ko, "license").as_deref(), Some("GPL"));
        assert_eq!(modinfo(ko, "author"), None);
    }

    #[test]
    fn the_top_makefile_is_found_beside_the_headers() {
        let dir = std::env::temp_dir().join(format!("tsm-xtask-top-{}", std::process::id()));
        let headers = dir.join("linux-headers-6.1.0-57-arm64");
        let common = dir.join("linux-headers-6.1.0-57-common");
        std::fs::create_dir_all(&headers).unwrap();
        std::fs::create_dir_all(&common).unwrap();
        std::fs::write(
            headers.join("Makefile"),
            "include /usr/src/linux-headers-6.1.0-57-common/Makefile\n",
        )
        .unwrap();
        assert!(
            top_makefile(&headers).is_err(),
            "common Makefile still missing"
        );
        std::fs::write(common.join("Makefile"), "VERSION = 6\n").unwrap();
        assert_eq!(top_makefile(&headers).unwrap(), common.join("Makefile"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
