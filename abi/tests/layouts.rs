//! Every boundary structure: its described layout tiles it exactly (no hidden padding, no
//! undescribed bytes), and any byte pattern round-trips through zerocopy unchanged.

use tsm_abi::comm::{CommBuffer, CommHeader};
use tsm_abi::event::{GuestEvent, HostEvent};
use tsm_abi::exit::VcpuExit;
use tsm_abi::guest::{AcceptEvidence, VdevInfo};
use tsm_abi::layout::{CType, Described, StructLayout};
use tsm_abi::params::{PdevParams, TvmParams, VdevParams};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn scalar_size(name: &str) -> usize {
    match name {
        "uint8_t" => 1,
        "uint16_t" => 2,
        "uint32_t" => 4,
        "uint64_t" => 8,
        other => panic!("{other} is not a scalar"),
    }
}

fn size_of_ctype(ty: &CType, all: &[StructLayout]) -> usize {
    let elem = if ty.is_struct {
        all.iter()
            .find(|s| s.name == ty.name)
            .unwrap_or_else(|| panic!("nested {} is not described", ty.name))
            .size
    } else {
        scalar_size(ty.name)
    };
    elem * ty.array_len.max(1)
}

/// A byte pattern with no two equal neighbours, so a shifted field shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn round_trip<T: FromBytes + IntoBytes + Immutable + KnownLayout + Described>() {
    let bytes = pattern(size_of::<T>());
    let value = T::read_from_bytes(&bytes).expect("size matches");
    assert_eq!(value.as_bytes(), &bytes[..], "{}", T::ABI_LAYOUT.name);
}

#[test]
fn every_structure_round_trips_any_bytes() {
    round_trip::<TvmParams>();
    round_trip::<PdevParams>();
    round_trip::<VdevParams>();
    round_trip::<CommHeader>();
    round_trip::<CommBuffer>();
    round_trip::<VcpuExit>();
    round_trip::<HostEvent>();
    round_trip::<GuestEvent>();
    round_trip::<VdevInfo>();
    round_trip::<AcceptEvidence>();
}

#[test]
fn described_fields_tile_each_structure() {
    let all = [
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
    for s in &all {
        let mut next = 0;
        for f in s.fields {
            assert_eq!(
                f.offset, next,
                "{}.{} starts where the previous field ends",
                s.name, f.name
            );
            let size = size_of_ctype(&f.ty, &all);
            assert_eq!(
                f.offset % natural_align(&f.ty),
                0,
                "{}.{} is naturally aligned",
                s.name,
                f.name
            );
            next += size;
            assert!(
                !f.doc.trim().is_empty(),
                "{}.{} is documented",
                s.name,
                f.name
            );
        }
        assert_eq!(next, s.size, "{} has no tail padding", s.name);
        assert!(s.size % 8 == 0, "{} is a multiple of 8 bytes", s.name);
        assert!(!s.doc.trim().is_empty(), "{} is documented", s.name);
    }
}

/// The alignment C gives the field's element type (nested structures here all hold u64s).
fn natural_align(ty: &CType) -> usize {
    if ty.is_struct {
        8
    } else {
        scalar_size(ty.name)
    }
}
