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
impl Gpa {
    /// The first GPA of the **shared half** of a TVM whose GPA space is `gpa_bits` wide
    /// (docs/abi.md §5.2): `1 << (gpa_bits - 1)`. GPAs below it are private (only the TVM's
    /// own secure pages are ever mapped there), GPAs from it up to `1 << gpa_bits` are shared
    /// (only host pages). `None` for a width no TVM can have (0, or above 64).
    pub const fn shared_base(gpa_bits: u8) -> Option<Gpa> {
        match gpa_bits.checked_sub(1) {
            Some(top) if top < 64 => match 1u64.checked_shl(top as u32) {
                Some(base) => Some(Gpa(base)),
                None => None,
            },
            _ => None,
        }
    }

    /// Whether the GPA lies in the shared half of a `gpa_bits`-wide GPA space (at or above
    /// [`Gpa::shared_base`]; the GPA's own range check is separate).
    pub const fn is_shared(self, gpa_bits: u8) -> bool {
        match Gpa::shared_base(gpa_bits) {
            Some(base) => self.0 >= base.0,
            None => false,
        }
    }
}

address_type!(
    /// An I/O virtual address as issued by a device (input of the vIOMMU's stage 1).
    Iova
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_half_is_the_top_half() {
        assert_eq!(Gpa::shared_base(39), Some(Gpa(1 << 38)));
        assert_eq!(Gpa::shared_base(1), Some(Gpa(1)));
        assert_eq!(Gpa::shared_base(64), Some(Gpa(1 << 63)));
        assert_eq!(Gpa::shared_base(0), None);
        assert_eq!(Gpa::shared_base(65), None);
        assert!(!Gpa((1 << 38) - 1).is_shared(39));
        assert!(Gpa(1 << 38).is_shared(39));
        assert!(!Gpa(u64::MAX).is_shared(0));
    }
}
