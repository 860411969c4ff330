extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;

/// A tree as QEMU `virt` lays its parts out, built token by token.
struct Builder {
    st: Vec<u8>,
    strings: Vec<u8>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            st: Vec::new(),
            strings: Vec::new(),
        }
    }
    fn word(&mut self, w: u32) -> &mut Self {
        self.st.extend_from_slice(&w.to_be_bytes());
        self
    }
    fn begin(&mut self, name: &str) -> &mut Self {
        self.word(BEGIN_NODE);
        self.st.extend_from_slice(name.as_bytes());
        self.st.push(0);
        while !self.st.len().is_multiple_of(4) {
            self.st.push(0);
        }
        self
    }
    fn end(&mut self) -> &mut Self {
        self.word(END_NODE)
    }
    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.word(PROP).word(value.len() as u32).word(off);
        self.st.extend_from_slice(value);
        while !self.st.len().is_multiple_of(4) {
            self.st.push(0);
        }
        self
    }
    fn blob(&mut self) -> Vec<u8> {
        self.word(END);
        let rsv = [0u8; 16];
        let st_off = HEADER + rsv.len();
        let str_off = st_off + self.st.len();
        let total = str_off + self.strings.len();
        let mut b = Vec::new();
        for w in [
            MAGIC,
            total as u32,
            st_off as u32,
            str_off as u32,
            HEADER as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.st.len() as u32,
        ] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(&rsv);
        b.extend_from_slice(&self.st);
        b.extend_from_slice(&self.strings);
        b
    }
}

fn virt_like(with_chosen: bool) -> Vec<u8> {
    let mut b = Builder::new();
    b.begin("")
        .prop("#address-cells", &2u32.to_be_bytes())
        .prop("#size-cells", &2u32.to_be_bytes());
    b.begin("pl011@9000000")
        .prop(
            "reg",
            &[0, 0, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0],
        )
        .end();
    b.begin("pl011@9040000")
        .prop(
            "reg",
            &[0, 0, 0, 0, 0, 0x90, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0],
        )
        .end();
    b.begin("smmuv3@9050000")
        .begin("inner")
        .prop("x", &[1, 2, 3, 4])
        .end()
        .end();
    b.begin("pcie@10000000")
        .prop("iommu-map", &[0; 16])
        .prop("device_type", b"pci\0")
        .end();
    b.begin("aliases")
        .prop("serial0", b"/pl011@9000000\0")
        .prop("serial1", b"/pl011@9040000\0")
        .end();
    if with_chosen {
        b.begin("chosen")
            .prop("stdout-path", b"/pl011@9000000\0")
            .prop("bootargs", b"old\0")
            .end();
    }
    b.end();
    b.blob()
}

const EDITS: Edits<'static> = Edits {
    drop_units: &[0x900_0000, 0x905_0000],
    reserved: &[(0x4020_0000, 0x60_0000)],
    chosen: &[
        ("bootargs", Value::Str("console=ttyAMA1 rdinit=/init")),
        ("linux,initrd-start", Value::U64(0x4800_0000)),
        ("linux,initrd-end", Value::U64(0x4812_3456)),
    ],
};

fn rewritten(input: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let n = rewrite(input, &EDITS, &mut out).expect("rewrite");
    out.truncate(n);
    out
}

#[test]
fn the_tsm_devices_and_their_references_are_gone() {
    let out = rewritten(&virt_like(true));
    let fdt = fdt::Fdt::new(&out).expect("the output parses");
    assert!(fdt.find_node("/pl011@9000000").is_none());
    assert!(fdt.find_node("/smmuv3@9050000").is_none());
    assert!(fdt.find_node("/pl011@9040000").is_some());
    let pcie = fdt.find_node("/pcie@10000000").unwrap();
    assert!(pcie.property("iommu-map").is_none());
    assert_eq!(pcie.property("device_type").unwrap().as_str(), Some("pci"));
    let aliases = fdt.find_node("/aliases").unwrap();
    assert!(aliases.property("serial0").is_none());
    assert_eq!(
        aliases.property("serial1").unwrap().as_str(),
        Some("/pl011@9040000")
    );
}

#[test]
fn chosen_gets_the_edits_in_place_of_its_own() {
    for with_chosen in [true, false] {
        let out = rewritten(&virt_like(with_chosen));
        let fdt = fdt::Fdt::new(&out).expect("the output parses");
        let chosen = fdt.find_node("/chosen").expect("a /chosen");
        assert!(chosen.property("stdout-path").is_none());
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=ttyAMA1 rdinit=/init")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().as_usize(),
            Some(0x4800_0000)
        );
        assert_eq!(
            chosen.property("linux,initrd-end").unwrap().as_usize(),
            Some(0x4812_3456)
        );
        assert_eq!(chosen.properties().count(), 3);
    }
}

#[test]
fn the_reserved_ranges_are_no_map_children() {
    let out = rewritten(&virt_like(true));
    let fdt = fdt::Fdt::new(&out).expect("the output parses");
    let rm = fdt.find_node("/reserved-memory").expect("reserved-memory");
    assert!(rm.property("ranges").is_some());
    let tsm = rm.children().next().expect("a child");
    assert_eq!(tsm.name, "tsm@40200000");
    assert!(tsm.property("no-map").is_some());
    let reg = tsm.reg().unwrap().next().unwrap();
    assert_eq!(reg.starting_address as u64, 0x4020_0000);
    assert_eq!(reg.size, Some(0x60_0000));
}

#[test]
fn an_existing_reserved_memory_node_is_refused() {
    let mut b = Builder::new();
    b.begin("").begin("reserved-memory").end().end();
    let mut out = vec![0u8; 4096];
    assert_eq!(
        rewrite(&b.blob(), &EDITS, &mut out),
        Err(FdtError::HasReservedMemory)
    );
}

#[test]
fn a_small_buffer_is_refused() {
    let input = virt_like(true);
    let need = rewritten(&input).len();
    let mut out = vec![0u8; need - 1];
    assert_eq!(rewrite(&input, &EDITS, &mut out), Err(FdtError::TooBig));
}

#[test]
fn malformed_trees_are_errors_at_every_cut_and_corruption() {
    let input = virt_like(true);
    let mut out = vec![0u8; 4096];
    assert_eq!(
        rewrite(&input[..39], &EDITS, &mut out),
        Err(FdtError::BadHeader)
    );
    // Every single-byte corruption and every truncation ends as Ok or an error, never a panic.
    for i in 0..input.len() {
        let mut bad = input.clone();
        bad[i] ^= 0xA5;
        let _ = rewrite(&bad, &EDITS, &mut out);
        let _ = rewrite(&input[..i], &EDITS, &mut out);
    }
    // An unbalanced END_NODE is caught.
    let mut b = Builder::new();
    b.begin("").end().end();
    assert_eq!(
        rewrite(&b.blob(), &EDITS, &mut out),
        Err(FdtError::Malformed)
    );
}

#[test]
fn too_many_chosen_properties_are_refused() {
    let chosen = [("a", Value::U64(1)); MAX_CHOSEN + 1];
    let edits = Edits {
        chosen: &chosen,
        ..EDITS
    };
    let mut out = vec![0u8; 4096];
    assert_eq!(
        rewrite(&virt_like(true), &edits, &mut out),
        Err(FdtError::BadEdit)
    );
}
