//! The C header for C host drivers and guests, rendered from the crate's own definitions.
//!
//! `abi/include/tsm_abi.h` (the header) and `abi/tests/c/check.c` (its layout check) are checked
//! in. `header_is_current` fails when either differs from what the definitions render today;
//! `TSM_BLESS=1 cargo test -p tsm-abi --test c_header` rewrites them. `header_compiles...`
//! compiles `check.c` with `gcc -std=c11 -Wall -Wextra -Werror -pedantic`: its
//! `_Static_assert`s hold only if the C compiler lays out every structure at exactly the sizes
//! and offsets the Rust definitions assert.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bitflags::Flags;
use tsm_abi::addr::{GRANULE_SHIFT, GRANULE_SIZE};
use tsm_abi::call::{CallId, Caller, FID_BASE, GUEST_BASE, HOST_BASE, MAX_ARGS, MAX_RESULTS};
use tsm_abi::comm::{
    COMM_HEADER_SIZE, COMM_PAYLOAD_SIZE, CommBuffer, CommHeader, CommOp, CommProtocol, HostIoStatus,
};
use tsm_abi::event::{
    ALL_PASIDS, DmaInjectFlags, EventFlags, EventReason, GuestEvent, HOST_DOMAIN_EVENTS, HostEvent,
    MAX_PASID, NO_PASID,
};
use tsm_abi::exit::{ExitFlags, ExitReason, VcpuExit};
use tsm_abi::features::{
    BuildFlags, DeviceLimits, DmaFeatures, FeatureReg, MemoryFeatures, QueueLimits, ReportLimits,
    SecurityFeatures, Stage1Formats, TdispFeatures, ViommuTypes,
};
use tsm_abi::guest::{AcceptEvidence, DIGEST_SIZE, EvidenceFlags, NONCE_SIZE, VdevInfo};
use tsm_abi::layout::{Described, NamedValue, StructLayout};
use tsm_abi::params::{
    InterfaceIdFormat, LockFlags, MapFlags, NO_SOURCE, PdevFlags, PdevParams, TvmParams, VdevParams,
};
use tsm_abi::state::{DeviceOp, PdevState, TvmState, VdevState};
use tsm_abi::status::{ObjectKind, StatusCode};
use tsm_abi::version;
use tsm_abi::viommu::{Stage1Format, TSM_TYPE_BASE, ViommuType, iommufd};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every boundary structure, nested ones first.
const STRUCTS: &[StructLayout] = &[
    TvmParams::ABI_LAYOUT,
    PdevParams::ABI_LAYOUT,
    VdevParams::ABI_LAYOUT,
    CommHeader::ABI_LAYOUT,
    CommBuffer::ABI_LAYOUT,
    VcpuExit::ABI_LAYOUT,
    HostEvent::ABI_LAYOUT,
    GuestEvent::ABI_LAYOUT,
    VdevInfo::ABI_LAYOUT,
    AcceptEvidence::ABI_LAYOUT,
];

/// `CamelCase` → `camel_case`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i != 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn c_struct(name: &str) -> String {
    format!("struct tsm_{}", snake(name))
}

/// Rustdoc text → plain comment text: link targets, brackets and backticks dropped.
fn plain(doc: &str) -> String {
    let mut out = String::new();
    let mut rest = doc.trim();
    while let Some(i) = rest.find("](") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        rest = rest.find(')').map_or("", |j| &rest[j + 1..]);
    }
    out.push_str(rest);
    out.replace(['[', ']', '`'], "").replace("*/", "* /")
}

/// A C block comment, wrapped to 100 columns, at `indent`.
fn comment(out: &mut String, indent: &str, doc: &str) {
    let text = plain(doc);
    if text.is_empty() {
        return;
    }
    // Tabs count as 8 columns.
    let width = 100
        - indent
            .chars()
            .map(|c| if c == '\t' { 8 } else { 1 })
            .sum::<usize>()
        - 3;
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    if lines.len() == 1 && lines[0].len() + 6 <= width {
        writeln!(out, "{indent}/* {} */", lines[0]).unwrap();
        return;
    }
    writeln!(out, "{indent}/*").unwrap();
    for l in lines {
        writeln!(out, "{indent} * {l}").unwrap();
    }
    writeln!(out, "{indent} */").unwrap();
}

fn define(out: &mut String, name: &str, value: &str) {
    writeln!(out, "#define {name:<48} {value}").unwrap();
}

fn hex(v: u64) -> String {
    if v > u64::from(u32::MAX) {
        format!("0x{v:X}ULL")
    } else if v > 0xFFFF {
        format!("0x{v:X}U")
    } else {
        format!("{v}")
    }
}

fn section(out: &mut String, title: &str) {
    writeln!(out, "\n/* ---- {title} ---- */\n").unwrap();
}

fn enum_values(out: &mut String, prefix: &str, doc: &str, values: &[NamedValue]) {
    comment(out, "", doc);
    for v in values {
        comment(out, "", v.doc);
        define(out, &format!("TSM_{prefix}_{}", v.name), &hex(v.value));
    }
    out.push('\n');
}

fn flag_bits<F: Flags>(out: &mut String, prefix: &str, doc: &str)
where
    F::Bits: Into<u64>,
{
    comment(out, "", doc);
    for f in F::FLAGS {
        let bits: u64 = f.value().bits().into();
        define(
            out,
            &format!("TSM_{prefix}_{}", f.name()),
            &format!("0x{bits:X}ULL"),
        );
    }
    out.push('\n');
}

/// A packed register field: its shift and width, found by setting only that field to all ones.
fn packed(out: &mut String, prefix: &str, field: &str, all_ones: u64) {
    let shift = all_ones.trailing_zeros();
    let width = all_ones.count_ones();
    assert_eq!(
        all_ones >> shift,
        (1u128 << width) as u64 - 1,
        "{prefix}.{field} is contiguous"
    );
    let name = format!("TSM_{prefix}_{}", field.to_ascii_uppercase());
    define(out, &format!("{name}_SHIFT"), &shift.to_string());
    define(out, &format!("{name}_WIDTH"), &width.to_string());
}

fn render_header() -> String {
    let mut o = String::new();
    o.push_str(
        "/* SPDX-License-Identifier: Apache-2.0 OR MIT */\n\
         /*\n \
         * tsm_abi.h - the TSM host and guest ABI for C callers.\n \
         *\n \
         * GENERATED from the tsm-abi crate by abi/tests/c_header.rs: do not edit.\n \
         * Regenerate with: TSM_BLESS=1 cargo test -p tsm-abi --test c_header\n \
         * The specification is docs/abi.md.\n \
         */\n\
         #ifndef TSM_ABI_H\n\
         #define TSM_ABI_H\n\n\
         #ifdef __KERNEL__\n\
         #include <linux/types.h>\n\
         #else\n\
         #include <stdint.h>\n\
         #endif\n",
    );

    section(&mut o, "ABI version");
    define(
        &mut o,
        "TSM_ABI_VERSION_MAJOR",
        &version::HIGHEST.major.to_string(),
    );
    define(
        &mut o,
        "TSM_ABI_VERSION_MINOR",
        &version::HIGHEST.minor.to_string(),
    );
    define(
        &mut o,
        "TSM_ABI_VERSION(major, minor)",
        "((uint64_t)(major) << 16 | (uint64_t)(minor))",
    );

    section(
        &mut o,
        "call IDs (SMCCC fast SMC64, owner 6; x86_64: the same value in rax)",
    );
    define(&mut o, "TSM_FID_BASE", &hex(FID_BASE.into()));
    define(&mut o, "TSM_HOST_BASE", &format!("0x{HOST_BASE:04X}"));
    define(&mut o, "TSM_GUEST_BASE", &format!("0x{GUEST_BASE:04X}"));
    define(&mut o, "TSM_MAX_ARGS", &MAX_ARGS.to_string());
    define(&mut o, "TSM_MAX_RESULTS", &MAX_RESULTS.to_string());
    o.push('\n');
    for c in CallId::ALL {
        let side = match c.caller() {
            Caller::Host => "host",
            Caller::Guest => "guest",
        };
        let note = format!(
            "{} /* {side}, {} args, {} results */",
            hex(c.fid().into()),
            c.arg_count(),
            c.result_count()
        );
        define(&mut o, &format!("TSM_CALL_{}", c.name()), &note);
    }
    o.push_str(
        "\n/*\n * Every host call as X(name, function ID, argument count, mask of the arguments that are\n \
         * physical addresses: bit i for argument i), for a host kernel that forwards calls\n \
         * from user space and checks what they name.\n */\n#define TSM_HOST_CALLS(X) \\\n",
    );
    let host: Vec<_> = CallId::ALL
        .iter()
        .filter(|c| c.caller() == Caller::Host)
        .collect();
    for (i, c) in host.iter().enumerate() {
        let more = if i + 1 < host.len() { " \\" } else { "" };
        writeln!(
            o,
            "\tX({}, {}, {}, 0x{:02X}){more}",
            c.name(),
            hex(c.fid().into()),
            c.arg_count(),
            c.pa_args()
        )
        .unwrap();
    }

    section(&mut o, "status word: code in bits 7:0, index in bits 15:8");
    define(
        &mut o,
        "TSM_STATUS_CODE(status)",
        "((uint8_t)((status) & 0xFF))",
    );
    define(
        &mut o,
        "TSM_STATUS_INDEX(status)",
        "((uint8_t)(((status) >> 8) & 0xFF))",
    );
    o.push('\n');
    for s in StatusCode::ALL {
        define(
            &mut o,
            &format!("TSM_STATUS_{}", s.name()),
            &(*s as u8).to_string(),
        );
    }
    o.push('\n');
    comment(&mut o, "", "Object kinds (index of TSM_STATUS_IN_USE).");
    for k in ObjectKind::ALL {
        define(
            &mut o,
            &format!("TSM_OBJ_{}", k.name()),
            &(*k as u8).to_string(),
        );
    }

    section(&mut o, "constants");
    define(&mut o, "TSM_GRANULE_SIZE", &hex(GRANULE_SIZE));
    define(&mut o, "TSM_GRANULE_SHIFT", &GRANULE_SHIFT.to_string());
    define(&mut o, "TSM_NO_SOURCE", &hex(NO_SOURCE));
    define(&mut o, "TSM_NO_PASID", &hex(NO_PASID));
    define(&mut o, "TSM_ALL_PASIDS", &hex(ALL_PASIDS));
    define(&mut o, "TSM_MAX_PASID", &hex(MAX_PASID));
    define(&mut o, "TSM_HOST_DOMAIN_EVENTS", &hex(HOST_DOMAIN_EVENTS));
    define(
        &mut o,
        "TSM_COMM_HEADER_SIZE",
        &COMM_HEADER_SIZE.to_string(),
    );
    define(
        &mut o,
        "TSM_COMM_PAYLOAD_SIZE",
        &COMM_PAYLOAD_SIZE.to_string(),
    );
    define(&mut o, "TSM_NONCE_SIZE", &NONCE_SIZE.to_string());
    define(&mut o, "TSM_DIGEST_SIZE", &DIGEST_SIZE.to_string());

    section(&mut o, "vIOMMU types");
    define(&mut o, "TSM_VIOMMU_TYPE_BASE", &hex(TSM_TYPE_BASE.into()));
    o.push('\n');
    enum_values(
        &mut o,
        ViommuType::C_PREFIX,
        "TSM vIOMMU types (VIOMMU_CREATE argument 3).",
        ViommuType::NAMED,
    );
    comment(
        &mut o,
        "",
        "iommufd types that are not TSM types: refused with TSM_STATUS_VIOMMU_TYPE_NOT_TSM.",
    );
    for (name, v) in [
        ("DEFAULT", iommufd::DEFAULT),
        ("ARM_SMMUV3", iommufd::ARM_SMMUV3),
        ("TEGRA241_CMDQV", iommufd::TEGRA241_CMDQV),
        ("ARM_REALM_SMMUV3", iommufd::ARM_REALM_SMMUV3),
    ] {
        define(&mut o, &format!("TSM_IOMMUFD_VIOMMU_TYPE_{name}"), &hex(v));
    }
    o.push('\n');
    enum_values(
        &mut o,
        Stage1Format::C_PREFIX,
        "Stage-1 formats.",
        Stage1Format::NAMED,
    );

    section(&mut o, "FEATURES registers");
    enum_values(
        &mut o,
        FeatureReg::C_PREFIX,
        "Register indices (FEATURES argument 1).",
        FeatureReg::NAMED,
    );
    flag_bits::<ViommuTypes>(&mut o, "FEAT_VIOMMU", "VIOMMU_TYPES bits.");
    flag_bits::<Stage1Formats>(&mut o, "FEAT_S1", "STAGE1_FORMATS bits.");
    comment(&mut o, "", "DEVICE_LIMITS fields.");
    let d = DeviceLimits::default();
    packed(
        &mut o,
        "DEVICE_LIMITS",
        "vdevs_per_tvm",
        DeviceLimits {
            vdevs_per_tvm: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "DEVICE_LIMITS",
        "vdevs_per_pdev",
        DeviceLimits {
            vdevs_per_pdev: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "DEVICE_LIMITS",
        "pdevs",
        DeviceLimits {
            pdevs: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "DEVICE_LIMITS",
        "viommus_per_tvm",
        DeviceLimits {
            viommus_per_tvm: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    o.push('\n');
    comment(&mut o, "", "QUEUE_LIMITS fields.");
    let q = QueueLimits::default();
    packed(
        &mut o,
        "QUEUE_LIMITS",
        "pasids_per_vdev",
        QueueLimits {
            pasids_per_vdev: u32::MAX,
            ..q
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "QUEUE_LIMITS",
        "event_queue_depth",
        QueueLimits {
            event_queue_depth: u16::MAX,
            ..q
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "QUEUE_LIMITS",
        "mmio_pages_per_vdev",
        QueueLimits {
            mmio_pages_per_vdev: u16::MAX,
            ..q
        }
        .to_raw(),
    );
    o.push('\n');
    comment(&mut o, "", "REPORT_LIMITS fields.");
    let r = ReportLimits::default();
    packed(
        &mut o,
        "REPORT_LIMITS",
        "max_report_len",
        ReportLimits {
            max_report_len: u32::MAX,
            ..r
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "REPORT_LIMITS",
        "max_message_len",
        ReportLimits {
            max_message_len: u32::MAX,
            ..r
        }
        .to_raw(),
    );
    o.push('\n');
    flag_bits::<TdispFeatures>(
        &mut o,
        "FEAT_TDISP",
        "TDISP bits: versions (7:0), accepted LOCK flags (31:16).",
    );
    comment(&mut o, "", "MEMORY fields.");
    let m = MemoryFeatures::default();
    packed(
        &mut o,
        "MEMORY",
        "granule_shift",
        MemoryFeatures {
            granule_shift: u8::MAX,
            ..m
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "MEMORY",
        "min_gpa_bits",
        MemoryFeatures {
            min_gpa_bits: u8::MAX,
            ..m
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "MEMORY",
        "max_gpa_bits",
        MemoryFeatures {
            max_gpa_bits: u8::MAX,
            ..m
        }
        .to_raw(),
    );
    o.push('\n');
    flag_bits::<SecurityFeatures>(
        &mut o,
        "FEAT_SEC",
        "SECURITY bits (all 0 until the function is implemented).",
    );
    flag_bits::<BuildFlags>(&mut o, "FEAT_BUILD", "BUILD bits.");
    comment(&mut o, "", "DMA fields.");
    let d = DmaFeatures::default();
    packed(
        &mut o,
        "DMA",
        "tables_per_vdev",
        DmaFeatures {
            tables_per_vdev: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "DMA",
        "pages_per_vdev",
        DmaFeatures {
            pages_per_vdev: u32::MAX,
            ..d
        }
        .to_raw(),
    );
    packed(
        &mut o,
        "DMA",
        "vdevs",
        DmaFeatures {
            vdevs: u16::MAX,
            ..d
        }
        .to_raw(),
    );
    o.push('\n');

    section(&mut o, "flag words");
    flag_bits::<MapFlags>(&mut o, "MAP", "MAP_PRIVATE / MAP_SHARED flags.");
    flag_bits::<PdevFlags>(&mut o, "PDEV_F", "PdevParams.flags.");
    flag_bits::<LockFlags>(
        &mut o,
        "LOCK",
        "TDISP LOCK_INTERFACE flags (VdevParams.lock_flags).",
    );
    flag_bits::<ExitFlags>(&mut o, "EXIT_F", "VcpuExit.flags.");
    flag_bits::<EvidenceFlags>(&mut o, "EVIDENCE_F", "VdevInfo.evidence_flags.");
    flag_bits::<EventFlags>(&mut o, "EVENT_F", "Event record flags.");
    flag_bits::<DmaInjectFlags>(&mut o, "DMA", "TEST_DMA_INJECT flags.");

    section(&mut o, "value sets");
    enum_values(
        &mut o,
        InterfaceIdFormat::C_PREFIX,
        "PdevParams.interface_id_format.",
        InterfaceIdFormat::NAMED,
    );
    enum_values(&mut o, TvmState::C_PREFIX, "TVM states.", TvmState::NAMED);
    enum_values(
        &mut o,
        PdevState::C_PREFIX,
        "PDEV states.",
        PdevState::NAMED,
    );
    enum_values(
        &mut o,
        VdevState::C_PREFIX,
        "VDEV states.",
        VdevState::NAMED,
    );
    enum_values(
        &mut o,
        DeviceOp::C_PREFIX,
        "Pending device operations.",
        DeviceOp::NAMED,
    );
    enum_values(&mut o, CommOp::C_PREFIX, "CommHeader.op.", CommOp::NAMED);
    enum_values(
        &mut o,
        CommProtocol::C_PREFIX,
        "CommHeader.protocol.",
        CommProtocol::NAMED,
    );
    enum_values(
        &mut o,
        HostIoStatus::C_PREFIX,
        "CommHeader.host_status.",
        HostIoStatus::NAMED,
    );
    enum_values(
        &mut o,
        ExitReason::C_PREFIX,
        "VcpuExit.reason.",
        ExitReason::NAMED,
    );
    enum_values(
        &mut o,
        EventReason::C_PREFIX,
        "Event reasons.",
        EventReason::NAMED,
    );

    section(&mut o, "boundary structures");
    for s in STRUCTS {
        comment(&mut o, "", s.doc);
        writeln!(o, "{} {{", c_struct(s.name)).unwrap();
        for f in s.fields {
            comment(&mut o, "\t", f.doc);
            let ty = if f.ty.is_struct {
                c_struct(f.ty.name)
            } else {
                f.ty.name.to_string()
            };
            let arr = if f.ty.array_len > 0 {
                format!("[{}]", f.ty.array_len)
            } else {
                String::new()
            };
            writeln!(o, "\t{ty} {}{arr}; /* offset {} */", f.name, f.offset).unwrap();
        }
        writeln!(o, "}}; /* {} bytes */\n", s.size).unwrap();
    }
    o.push_str("#endif /* TSM_ABI_H */\n");
    o
}

fn render_check() -> String {
    let mut o = String::from(
        "/* SPDX-License-Identifier: Apache-2.0 OR MIT */\n\
         /*\n \
         * GENERATED by abi/tests/c_header.rs: do not edit.\n \
         * Every size and offset below is the one the Rust definitions assert; this file compiles\n \
         * only if the C compiler lays out tsm_abi.h's structures identically.\n \
         */\n\
         #include <stddef.h>\n\
         #include \"tsm_abi.h\"\n\n",
    );
    for s in STRUCTS {
        let cs = c_struct(s.name);
        writeln!(
            o,
            "_Static_assert(sizeof({cs}) == {0}, \"{cs}: {0} bytes\");",
            s.size
        )
        .unwrap();
        for f in s.fields {
            writeln!(
                o,
                "_Static_assert(offsetof({cs}, {1}) == {0}, \"{cs}.{1} at {0}\");",
                f.offset, f.name
            )
            .unwrap();
        }
        o.push('\n');
    }
    for c in CallId::ALL {
        writeln!(
            o,
            "_Static_assert(TSM_CALL_{} == {}, \"call ID\");",
            c.name(),
            hex(c.fid().into())
        )
        .unwrap();
    }
    o.push_str(
        "\n/* A translation unit must declare something (ISO C). */\nextern int tsm_abi_check;\n",
    );
    o
}

/// The checked-in files and what the definitions render for them.
fn generated() -> [(PathBuf, String); 2] {
    let dir = manifest_dir();
    [
        (dir.join("include/tsm_abi.h"), render_header()),
        (dir.join("tests/c/check.c"), render_check()),
    ]
}

/// Compares a checked-in file with its rendering; with `TSM_BLESS=1` rewrites it instead.
fn sync(path: &Path, want: &str) {
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have == want {
        return;
    }
    if std::env::var_os("TSM_BLESS").is_some_and(|v| v == "1") {
        // Both tests may bless at once: a private temporary name, then an atomic rename.
        let tmp = path.with_extension(format!("tmp{:?}", std::thread::current().id()));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&tmp, want).unwrap();
        std::fs::rename(&tmp, path).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let line = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(have.lines().count().min(want.lines().count()));
    panic!(
        "{} is stale (first difference at line {}); regenerate with \
         TSM_BLESS=1 cargo test -p tsm-abi --test c_header",
        path.display(),
        line + 1
    );
}

#[test]
fn header_is_current() {
    for (path, want) in generated() {
        sync(&path, &want);
    }
}

/// Compiles `file` against the checked-in header; `None` when gcc is not installed.
fn gcc_accepts(file: &Path) -> Option<(bool, String)> {
    let out = match Command::new("gcc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-I",
        ])
        .arg(manifest_dir().join("include"))
        .arg(file)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: gcc is not installed, the C layout check did not run");
            return None;
        }
        Err(e) => panic!("running gcc: {e}"),
    };
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn header_compiles_and_layouts_match() {
    // The compiled files must be the current renderings, or this test would prove nothing.
    for (path, want) in generated() {
        sync(&path, &want);
    }
    if let Some((ok, stderr)) = gcc_accepts(&manifest_dir().join("tests/c/check.c")) {
        assert!(ok, "gcc rejected check.c:\n{stderr}");
    }
}

#[test]
fn layout_check_catches_a_wrong_offset() {
    // The same check with one offset off by one must fail to compile: the asserts bite.
    let wrong = render_check().replacen(
        "offsetof(struct tsm_vdev_params, virt_id) == 40",
        "offsetof(struct tsm_vdev_params, virt_id) == 41",
        1,
    );
    assert_ne!(wrong, render_check(), "the mutation applies");
    let dir = std::env::temp_dir().join(format!("tsm-abi-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wrong.c");
    std::fs::write(&file, wrong).unwrap();
    let result = gcc_accepts(&file);
    std::fs::remove_dir_all(&dir).unwrap();
    if let Some((ok, stderr)) = result {
        assert!(!ok, "gcc accepted a wrong offset");
        assert!(stderr.contains("virt_id at 40"), "{stderr}");
    }
}
