//! Algorithm negotiation (DSP0274 1.2, `NEGOTIATE_ALGORITHMS` and `ALGORITHMS`): the bit
//! fields, their sizes, and the body both messages share after their first 4 bytes.
//!
//! Every bit field keeps bits DSP0274 1.2 reserves (`const _ = !0`): a requester offers, and a
//! responder may echo, bits of later versions; checks compare against what the caller wants.

use bitflags::bitflags;

use super::cursor::{Reader, Writer};
use super::{Field, SpdmError};

bitflags! {
    /// `BaseAsymAlgo` / `BaseAsymSel` (and, in 16 bits, `ReqBaseAsymAlg`).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct BaseAsymAlgo: u32 {
        /// RSASSA-PKCS1-v1_5 2048.
        const RSASSA_2048 = 1 << 0;
        /// RSASSA-PSS 2048.
        const RSAPSS_2048 = 1 << 1;
        /// RSASSA-PKCS1-v1_5 3072.
        const RSASSA_3072 = 1 << 2;
        /// RSASSA-PSS 3072.
        const RSAPSS_3072 = 1 << 3;
        /// ECDSA over NIST P-256.
        const ECDSA_P256 = 1 << 4;
        /// RSASSA-PKCS1-v1_5 4096.
        const RSASSA_4096 = 1 << 5;
        /// RSASSA-PSS 4096.
        const RSAPSS_4096 = 1 << 6;
        /// ECDSA over NIST P-384.
        const ECDSA_P384 = 1 << 7;
        /// ECDSA over NIST P-521.
        const ECDSA_P521 = 1 << 8;
        /// SM2 over SM2-P256 (1.2).
        const SM2_P256 = 1 << 9;
        /// EdDSA Ed25519 (1.2).
        const EDDSA_ED25519 = 1 << 10;
        /// EdDSA Ed448 (1.2).
        const EDDSA_ED448 = 1 << 11;
        const _ = !0;
    }
}

bitflags! {
    /// `BaseHashAlgo` / `BaseHashSel`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct BaseHashAlgo: u32 {
        /// SHA-256.
        const SHA_256 = 1 << 0;
        /// SHA-384.
        const SHA_384 = 1 << 1;
        /// SHA-512.
        const SHA_512 = 1 << 2;
        /// SHA3-256.
        const SHA3_256 = 1 << 3;
        /// SHA3-384.
        const SHA3_384 = 1 << 4;
        /// SHA3-512.
        const SHA3_512 = 1 << 5;
        /// SM3-256 (1.2).
        const SM3_256 = 1 << 6;
        const _ = !0;
    }
}

bitflags! {
    /// `MeasurementHashAlgo` (response only).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct MeasurementHashAlgo: u32 {
        /// Raw bit streams only: no digests.
        const RAW_BIT_STREAM = 1 << 0;
        /// SHA-256.
        const SHA_256 = 1 << 1;
        /// SHA-384.
        const SHA_384 = 1 << 2;
        /// SHA-512.
        const SHA_512 = 1 << 3;
        /// SHA3-256.
        const SHA3_256 = 1 << 4;
        /// SHA3-384.
        const SHA3_384 = 1 << 5;
        /// SHA3-512.
        const SHA3_512 = 1 << 6;
        /// SM3-256 (1.2).
        const SM3_256 = 1 << 7;
        const _ = !0;
    }
}

bitflags! {
    /// Algorithm structure `DHE` (`AlgType` 2).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct DheGroup: u16 {
        /// FFDHE 2048.
        const FFDHE_2048 = 1 << 0;
        /// FFDHE 3072.
        const FFDHE_3072 = 1 << 1;
        /// FFDHE 4096.
        const FFDHE_4096 = 1 << 2;
        /// ECDHE secp256r1.
        const SECP256R1 = 1 << 3;
        /// ECDHE secp384r1.
        const SECP384R1 = 1 << 4;
        /// ECDHE secp521r1.
        const SECP521R1 = 1 << 5;
        /// SM2 key exchange (1.2).
        const SM2_P256 = 1 << 6;
        const _ = !0;
    }
}

bitflags! {
    /// Algorithm structure `AEADCipherSuite` (`AlgType` 3).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct AeadSuite: u16 {
        /// AES-128-GCM.
        const AES_128_GCM = 1 << 0;
        /// AES-256-GCM.
        const AES_256_GCM = 1 << 1;
        /// ChaCha20-Poly1305.
        const CHACHA20_POLY1305 = 1 << 2;
        /// SM4-GCM (1.2).
        const SM4_GCM = 1 << 3;
        const _ = !0;
    }
}

bitflags! {
    /// Algorithm structure `KeySchedule` (`AlgType` 5).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct KeySchedule: u16 {
        /// The SPDM key schedule (DSP0274 §"Key schedule").
        const SPDM = 1 << 0;
        const _ = !0;
    }
}

bitflags! {
    /// `MeasurementSpecification` / `MeasurementSpecificationSel` (and a measurement block's
    /// `MeasurementSpecification`).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct MeasurementSpec: u8 {
        /// DMTF's measurement block format (DSP0274, "DMTF measurement specification format").
        const DMTF = 1 << 0;
        const _ = !0;
    }
}

bitflags! {
    /// `OtherParamsSupport` / `OtherParamsSelection` (1.2; bits 3:0 name the opaque data
    /// format).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct OtherParams: u8 {
        /// `OpaqueDataFmt0`: a format the vendor defines.
        const OPAQUE_DATA_FMT0 = 1 << 0;
        /// `OpaqueDataFmt1`: DSP0274's general opaque data format (see [`super::opaque`]).
        const OPAQUE_DATA_FMT1 = 1 << 1;
        const _ = !0;
    }
}

impl BaseAsymAlgo {
    /// Signature size of a single selected algorithm (DSP0274 Table "BaseAsymAlgo": ECDSA is
    /// r ‖ s, each the curve's size), `None` for none, several, or an unknown one.
    pub fn signature_len(self) -> Option<usize> {
        Some(match self {
            Self::RSASSA_2048 | Self::RSAPSS_2048 => 256,
            Self::RSASSA_3072 | Self::RSAPSS_3072 => 384,
            Self::RSASSA_4096 | Self::RSAPSS_4096 => 512,
            Self::ECDSA_P256 | Self::SM2_P256 | Self::EDDSA_ED25519 => 64,
            Self::ECDSA_P384 => 96,
            Self::ECDSA_P521 => 132,
            Self::EDDSA_ED448 => 114,
            _ => return None,
        })
    }
}

impl BaseHashAlgo {
    /// Digest size of a single selected algorithm.
    pub fn digest_len(self) -> Option<usize> {
        Some(match self {
            Self::SHA_256 | Self::SHA3_256 | Self::SM3_256 => 32,
            Self::SHA_384 | Self::SHA3_384 => 48,
            Self::SHA_512 | Self::SHA3_512 => 64,
            _ => return None,
        })
    }
}

impl MeasurementHashAlgo {
    /// Digest size of a single selected algorithm (0 for raw bit streams).
    pub fn digest_len(self) -> Option<usize> {
        Some(match self {
            Self::RAW_BIT_STREAM => 0,
            Self::SHA_256 | Self::SHA3_256 | Self::SM3_256 => 32,
            Self::SHA_384 | Self::SHA3_384 => 48,
            Self::SHA_512 | Self::SHA3_512 => 64,
            _ => return None,
        })
    }
}

impl DheGroup {
    /// `ExchangeData` size of a single selected group (DSP0274 Table "DHE structure": the
    /// public value; for ECDHE X ‖ Y, each the curve's size).
    pub fn exchange_len(self) -> Option<usize> {
        Some(match self {
            Self::FFDHE_2048 => 256,
            Self::FFDHE_3072 => 384,
            Self::FFDHE_4096 => 512,
            Self::SECP256R1 | Self::SM2_P256 => 64,
            Self::SECP384R1 => 96,
            Self::SECP521R1 => 132,
            _ => return None,
        })
    }
}

/// `AlgType` of the four algorithm structure tables DSP0274 1.2 defines, in the ascending
/// order the tables must follow.
const DHE: u8 = 2;
const AEAD: u8 = 3;
const REQ_BASE_ASYM: u8 = 4;
const KEY_SCHEDULE: u8 = 5;

/// The largest `NEGOTIATE_ALGORITHMS` (DSP0274 1.2: "Length ... shall be less than or equal to
/// 128 bytes").
pub const MAX_NEGOTIATE_ALGORITHMS: usize = 128;

/// The algorithms a `NEGOTIATE_ALGORITHMS` offers or an `ALGORITHMS` selects. Structure tables
/// the message omits are `None`. Extended (`ExtAsym`, `ExtHash`, `AlgExternal`) algorithms are
/// counted and skipped: this codec supports none of them, and a selection of one shows as a
/// non-zero `ext_*_count` with an empty base selection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Algorithms {
    /// `MeasurementSpecification(Sel)`.
    pub measurement_spec: MeasurementSpec,
    /// `OtherParamsSupport` / `OtherParamsSelection`.
    pub other_params: OtherParams,
    /// `MeasurementHashAlgo` (`ALGORITHMS` only; empty in a request).
    pub measurement_hash: MeasurementHashAlgo,
    /// `BaseAsymAlgo` / `BaseAsymSel`.
    pub base_asym: BaseAsymAlgo,
    /// `BaseHashAlgo` / `BaseHashSel`.
    pub base_hash: BaseHashAlgo,
    /// `ExtAsymCount` / `ExtAsymSelCount`.
    pub ext_asym_count: u8,
    /// `ExtHashCount` / `ExtHashSelCount`.
    pub ext_hash_count: u8,
    /// The `DHE` table.
    pub dhe: Option<DheGroup>,
    /// The `AEADCipherSuite` table.
    pub aead: Option<AeadSuite>,
    /// The `ReqBaseAsymAlg` table.
    pub req_base_asym: Option<BaseAsymAlgo>,
    /// The `KeySchedule` table.
    pub key_schedule: Option<KeySchedule>,
}

/// Which message an [`Algorithms`] body belongs to: the two differ in the fixed part
/// (`MeasurementHashAlgo`, reserved sizes) and in what a selection may hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Request,
    Response,
}

impl Algorithms {
    fn tables(&self) -> [(u8, Option<u16>); 4] {
        // `ReqBaseAsymAlg` is a 16-bit field: the asymmetric bits DSP0274 defines all fit.
        let req_asym = self.req_base_asym.map(|a| a.bits() as u16);
        [
            (DHE, self.dhe.map(|d| d.bits())),
            (AEAD, self.aead.map(|a| a.bits())),
            (REQ_BASE_ASYM, req_asym),
            (KEY_SCHEDULE, self.key_schedule.map(|k| k.bits())),
        ]
    }

    /// Number of structure tables (the message's `Param1`).
    pub(crate) fn table_count(&self) -> u8 {
        let present = self.tables().iter().filter(|(_, v)| v.is_some()).count();
        // At most 4.
        present as u8
    }

    /// The message length this body makes (4-byte header included).
    fn encoded_len(&self, side: Side) -> usize {
        let fixed: usize = match side {
            Side::Request => 32,
            Side::Response => 36,
        };
        fixed.saturating_add(usize::from(self.table_count()).saturating_mul(4))
    }

    /// Writes the body after the 4-byte header (`Length` first). Extended algorithms are never
    /// written: `ext_*_count` must be 0.
    pub(crate) fn encode(&self, w: &mut Writer<'_>, side: Side) -> Result<(), SpdmError> {
        if self.ext_asym_count != 0 || self.ext_hash_count != 0 {
            return Err(SpdmError::BadLength);
        }
        w.len16(self.encoded_len(side))?;
        w.u8(self.measurement_spec.bits())?;
        w.u8(self.other_params.bits())?;
        if side == Side::Response {
            w.u32(self.measurement_hash.bits())?;
        } else if !self.measurement_hash.is_empty() {
            return Err(SpdmError::BadLength);
        }
        w.u32(self.base_asym.bits())?;
        w.u32(self.base_hash.bits())?;
        w.zeros(12)?;
        w.u8(0)?;
        w.u8(0)?;
        w.zeros(2)?;
        for (alg_type, value) in self.tables() {
            if let Some(v) = value {
                w.u8(alg_type)?;
                // FixedAlgCount = 2 (bits 7:4), no external algorithms.
                w.u8(0x20)?;
                w.u16(v)?;
            }
        }
        Ok(())
    }

    /// Reads the body after the 4-byte header; `tables` is the header's `Param1`. The caller
    /// checks the message ends where `Length` says (returned).
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        tables: u8,
        side: Side,
    ) -> Result<(Self, usize), SpdmError> {
        let length = usize::from(r.u16()?);
        let measurement_spec = MeasurementSpec::from_bits_retain(r.u8()?);
        let other_params = OtherParams::from_bits_retain(r.u8()?);
        let measurement_hash = match side {
            Side::Response => MeasurementHashAlgo::from_bits_retain(r.u32()?),
            Side::Request => MeasurementHashAlgo::empty(),
        };
        let base_asym = BaseAsymAlgo::from_bits_retain(r.u32()?);
        let base_hash = BaseHashAlgo::from_bits_retain(r.u32()?);
        r.bytes(12)?;
        let ext_asym_count = r.u8()?;
        let ext_hash_count = r.u8()?;
        r.bytes(2)?;
        if side == Side::Response && (ext_asym_count > 1 || ext_hash_count > 1) {
            return Err(SpdmError::InvalidField(Field::ExtSelectionCount));
        }
        let ext = usize::from(ext_asym_count)
            .saturating_add(usize::from(ext_hash_count))
            .saturating_mul(4);
        r.bytes(ext)?;
        let mut algs = Self {
            measurement_spec,
            other_params,
            measurement_hash,
            base_asym,
            base_hash,
            ext_asym_count,
            ext_hash_count,
            dhe: None,
            aead: None,
            req_base_asym: None,
            key_schedule: None,
        };
        let mut last_type = 0u8;
        for _ in 0..tables {
            let alg_type = r.u8()?;
            let alg_count = r.u8()?;
            // Bits 7:4: bytes of `AlgSupported`, 2 in every table DSP0274 1.2 defines.
            if alg_count >> 4 != 2 {
                return Err(SpdmError::InvalidField(Field::AlgCount));
            }
            let supported = r.u16()?;
            let external = alg_count & 0xF;
            if side == Side::Response && external > 1 {
                return Err(SpdmError::InvalidField(Field::ExtSelectionCount));
            }
            r.bytes(usize::from(external).saturating_mul(4))?;
            if alg_type <= last_type {
                return Err(SpdmError::InvalidField(Field::AlgStructType));
            }
            last_type = alg_type;
            match alg_type {
                DHE => algs.dhe = Some(DheGroup::from_bits_retain(supported)),
                AEAD => algs.aead = Some(AeadSuite::from_bits_retain(supported)),
                REQ_BASE_ASYM => {
                    algs.req_base_asym = Some(BaseAsymAlgo::from_bits_retain(supported.into()))
                }
                KEY_SCHEDULE => algs.key_schedule = Some(KeySchedule::from_bits_retain(supported)),
                _ => return Err(SpdmError::InvalidField(Field::AlgStructType)),
            }
        }
        if side == Side::Response {
            algs.check_selection()?;
        }
        Ok((algs, length))
    }

    /// A responder selects at most one algorithm of each kind (DSP0274 1.2 Table "ALGORITHMS
    /// response": "shall select at most one").
    fn check_selection(&self) -> Result<(), SpdmError> {
        let single = |bits: u32| bits.count_ones() <= 1;
        // `OtherParamsSelection` bits 3:0 are the opaque data format; later versions add
        // independent bits above them.
        let ok = single(self.measurement_spec.bits().into())
            && single((self.other_params.bits() & 0x0F).into())
            && single(self.measurement_hash.bits())
            && single(self.base_asym.bits())
            && single(self.base_hash.bits())
            && self
                .tables()
                .iter()
                .all(|(_, v)| single(v.unwrap_or(0).into()));
        if ok {
            Ok(())
        } else {
            Err(SpdmError::InvalidField(Field::Selection))
        }
    }
}
