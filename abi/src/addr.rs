//! Typed addresses. A host-physical address and a guest-physical address are both `u64` on the
//! wire, but mixing them up is a classic monitor bug, so inside Rust they are distinct types.

/// Size of a granule, the unit of ownership tracking (4 KiB on every supported architecture).
pub const GRANULE_SIZE: u64 = 4096;
/// `log2(GRANULE_SIZE)`.
pub const GRANULE_SHIFT: u32 = 12;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// Whether the address is granule-aligned.
            pub const fn is_granule_aligned(self) -> bool {
                self.0 & (GRANULE_SIZE - 1) == 0
            }
            /// The address rounded down to its granule.
            pub const fn granule_base(self) -> Self {
                Self(self.0 & !(GRANULE_SIZE - 1))
            }
            /// Offset within its granule.
            pub const fn granule_offset(self) -> u64 {
                self.0 & (GRANULE_SIZE - 1)
            }
            /// `self + off`, or `None` on overflow.
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }
    };
}

address_type!(
    /// A host-physical address (what the TSM and the host's own memory use).
    Pa
);
address_type!(
    /// A guest-physical address inside one TVM (input of stage 2).
    Gpa
);
address_type!(
    /// An I/O virtual address as issued by a device (input of the vIOMMU's stage 1).
    Iova
);
