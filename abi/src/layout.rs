//! Machine-readable descriptions of the ABI's value sets and structure layouts.
//!
//! Every boundary structure and every enumerated value set of the ABI describes itself here, so
//! the C header (`abi/include/tsm_abi.h`) is rendered from the same definitions the firmware and
//! the Rust callers compile against, and cannot drift from them. The structures are defined with
//! `boundary_struct!`, which also asserts every size and offset at
//! compile time.

/// The C-side type of one structure field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CType {
    /// The C element type: `uint8_t`, `uint16_t`, `uint32_t`, `uint64_t`, or the Rust name of a
    /// nested boundary structure (the header renders it as `struct tsm_<snake_case>`).
    pub name: &'static str,
    /// Whether `name` is a nested boundary structure.
    pub is_struct: bool,
    /// Array length; 0 for a scalar.
    pub array_len: usize,
}

/// Types a boundary structure may hold.
pub trait CField {
    /// The C-side type.
    const C_TYPE: CType;
}

macro_rules! scalar_cfield {
    ($($t:ty => $c:literal),*) => {
        $(impl CField for $t {
            const C_TYPE: CType = CType { name: $c, is_struct: false, array_len: 0 };
        })*
    };
}
scalar_cfield!(u8 => "uint8_t", u16 => "uint16_t", u32 => "uint32_t", u64 => "uint64_t");

impl<T: CField, const N: usize> CField for [T; N] {
    const C_TYPE: CType = CType {
        name: T::C_TYPE.name,
        is_struct: T::C_TYPE.is_struct,
        array_len: N,
    };
}

/// One field of a boundary structure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FieldLayout {
    /// The field name (same in Rust and C).
    pub name: &'static str,
    /// Its documentation, lines joined.
    pub doc: &'static str,
    /// Byte offset from the start of the structure.
    pub offset: usize,
    /// Its C type.
    pub ty: CType,
}

/// The layout of a boundary structure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StructLayout {
    /// The Rust name (`CamelCase`).
    pub name: &'static str,
    /// Its documentation, lines joined.
    pub doc: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// Fields in declaration (= offset) order.
    pub fields: &'static [FieldLayout],
}

/// A boundary structure that can describe its own layout.
pub trait Described {
    /// Its layout.
    const ABI_LAYOUT: StructLayout;
}

/// One named value of an enumerated set or one bit of a flag word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NamedValue {
    /// The upper-case name used in the spec and the C header.
    pub name: &'static str,
    /// The value.
    pub value: u64,
    /// Its documentation, lines joined.
    pub doc: &'static str,
}

/// A structure field that breaks a rule of the ABI (a reserved field that is not zero, a value
/// out of its range, an inconsistent combination). The TSM reports it to the caller as
/// `InvalidArgument` with the index of the argument that pointed at the structure, and logs the
/// field name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidField {
    /// The structure's Rust name.
    pub structure: &'static str,
    /// The offending field.
    pub field: &'static str,
}

/// Defines a `#[repr(C)]` boundary structure with its zerocopy derives, asserts its size and the
/// offset of every field at compile time, and describes it for the C header generator.
///
/// Every field lists its expected byte offset after `=>`; a wrong number fails the build.
macro_rules! boundary_struct {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident (size $size:literal) {
            $( $(#[doc = $fdoc:literal])* pub $field:ident : $ty:ty => $off:literal, )*
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(
            Clone, Copy, PartialEq, Eq, Debug,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }

        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        $( const _: () = assert!(core::mem::offset_of!($name, $field) == $off); )*

        impl $crate::layout::CField for $name {
            const C_TYPE: $crate::layout::CType = $crate::layout::CType {
                name: stringify!($name),
                is_struct: true,
                array_len: 0,
            };
        }

        impl $crate::layout::Described for $name {
            const ABI_LAYOUT: $crate::layout::StructLayout = $crate::layout::StructLayout {
                name: stringify!($name),
                doc: concat!($($doc,)*),
                size: $size,
                fields: &[ $( $crate::layout::FieldLayout {
                    name: stringify!($field),
                    doc: concat!($($fdoc,)*),
                    offset: $off,
                    ty: <$ty as $crate::layout::CField>::C_TYPE,
                }, )* ],
            };
        }
    };
}

/// Defines a `#[repr(u32)]` enumerated value set with conversions from the wire and a
/// description for the C header. Unknown wire values are refused, never mapped to a default.
macro_rules! abi_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident ($prefix:literal) {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $value:literal => $cname:literal, )*
        }
    ) => {
        // Laid out as its wire value (`repr(u32)`), so a TSM object can hold one: the object is
        // decoded once when it is loaded (`TryFromBytes`) and its holder `match`es on the enum.
        $(#[doc = $doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Debug, Hash,
            zerocopy::TryFromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        #[repr(u32)]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant = $value, )*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];
            /// Prefix of the C names of the values (`TSM_<PREFIX>_<NAME>`).
            pub const C_PREFIX: &'static str = $prefix;
            /// The names and values, for the C header and the spec.
            pub const NAMED: &'static [$crate::layout::NamedValue] = &[
                $( $crate::layout::NamedValue {
                    name: $cname,
                    value: $value,
                    doc: concat!($($vdoc,)*),
                }, )*
            ];
            /// The spec's upper-case name of this value.
            pub const fn name(self) -> &'static str {
                match self { $( $name::$variant => $cname, )* }
            }
            /// The wire value.
            pub const fn raw(self) -> u32 {
                self as u32
            }
            /// Decodes a wire value (a register or a structure field); `None` for a value this
            /// ABI version does not define.
            pub const fn from_raw(raw: u64) -> Option<Self> {
                $( if raw == $value { return Some($name::$variant); } )*
                None
            }
        }
    };
}

pub(crate) use {abi_enum, boundary_struct};
