//! Per-TDI runtime state and the report a locked TDI serves.

use tsm_abi::tdisp::{
    InterfaceReport, LockFlags, LockInterfaceParams, MMIO_PAGE_SIZE, MmioRange, Nonce,
    RangeAttributes, ReportFields, TdiState, TdispError,
};

use crate::config::{MAX_RANGES, TdiConfig};

/// What the DSM keeps for one TDI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tdi {
    pub state: TdiState,
    /// Generated at lock, destroyed by START, STOP or a move to ERROR.
    pub nonce: Option<Nonce>,
    /// The lock parameters while CONFIG_LOCKED or RUN.
    pub lock: Option<LockInterfaceParams>,
    /// Where the next report portion must start (0 always restarts a fetch).
    pub next_report_offset: u16,
    /// Bit i: current `IS_NON_TEE_MEM` of configured range i (changed by SET_MMIO_ATTRIBUTE).
    pub non_tee: u64,
    /// Bound P2P stream IDs (bit per ID).
    pub p2p_streams: [u64; 4],
}

impl Tdi {
    pub(crate) const UNLOCKED: Self = Self {
        state: TdiState::ConfigUnlocked,
        nonce: None,
        lock: None,
        next_report_offset: 0,
        non_tee: 0,
        p2p_streams: [0; 4],
    };

    /// STOP, from any state.
    pub(crate) fn stop(&mut self) {
        *self = Self::UNLOCKED;
    }

    /// A security-relevant event: LOCKED/RUN go to ERROR and the nonce is destroyed.
    pub(crate) fn fail(&mut self) {
        self.state = TdiState::Error;
        self.nonce = None;
    }

    pub(crate) fn lock(&mut self, params: LockInterfaceParams, nonce: Nonce, cfg: &TdiConfig<'_>) {
        let non_tee = cfg
            .mmio_ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.attributes.contains(RangeAttributes::IS_NON_TEE_MEM))
            .fold(0u64, |bits, (i, _)| {
                bits | 1u64.checked_shl(i as u32).unwrap_or(0)
            });
        *self = Self {
            state: TdiState::ConfigLocked,
            nonce: Some(nonce),
            lock: Some(params),
            non_tee,
            ..Self::UNLOCKED
        };
    }

    pub(crate) fn stream_bound(&self, id: u8) -> bool {
        self.p2p_streams
            .get(usize::from(id / 64))
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub(crate) fn set_stream(&mut self, id: u8, bound: bool) {
        if let Some(w) = self.p2p_streams.get_mut(usize::from(id / 64)) {
            if bound {
                *w |= 1 << (id % 64);
            } else {
                *w &= !(1 << (id % 64));
            }
        }
    }
}

/// The ranges as a TDI locked with `lock` reports them: reporting offset added, MSI-X ranges
/// only under `LOCK_MSIX`, current non-TEE attribute. Each item is (config index, range).
pub(crate) fn reported_ranges<'a>(
    cfg: &'a TdiConfig<'_>,
    tdi: &'a Tdi,
    lock: &'a LockInterfaceParams,
) -> impl Iterator<Item = Result<(usize, MmioRange), TdispError>> + 'a {
    let msix = RangeAttributes::MSIX_TABLE | RangeAttributes::MSIX_PBA;
    // The offset is a signed byte offset; page alignment was checked at lock.
    let offset_pages = (lock.mmio_reporting_offset as i64) / (MMIO_PAGE_SIZE as i64);
    cfg.mmio_ranges
        .iter()
        .enumerate()
        .filter(move |(_, r)| {
            lock.flags.contains(LockFlags::LOCK_MSIX) || !r.attributes.intersects(msix)
        })
        .map(move |(i, r)| {
            let first_page =
                r.first_page
                    .checked_add_signed(offset_pages)
                    .ok_or(TdispError::Inconsistent(
                        tsm_abi::tdisp::Field::RangeOverflow,
                    ))?;
            let non_tee = u32::try_from(i)
                .ok()
                .and_then(|i| tdi.non_tee.checked_shr(i))
                .is_some_and(|bits| bits & 1 != 0);
            let mut attributes = r.attributes;
            attributes.set(RangeAttributes::IS_NON_TEE_MEM, non_tee);
            Ok((
                i,
                MmioRange {
                    first_page,
                    attributes,
                    ..*r
                },
            ))
        })
}

/// Encodes the report of a locked TDI into `out`; with `extra_range` an additional one-page
/// range after the highest one is appended (the changing-report misbehaviour).
pub(crate) fn build_report(
    cfg: &TdiConfig<'_>,
    tdi: &Tdi,
    lock: &LockInterfaceParams,
    extra_range: bool,
    out: &mut [u8],
) -> Result<usize, TdispError> {
    let mut ranges = [MmioRange {
        first_page: 0,
        number_of_pages: 1,
        attributes: RangeAttributes::empty(),
        range_id: 0,
    }; MAX_RANGES + 1];
    let mut count = 0usize;
    for (slot, item) in ranges.iter_mut().zip(reported_ranges(cfg, tdi, lock)) {
        *slot = item?.1;
        count = count.saturating_add(1);
    }
    if extra_range {
        let end = ranges
            .get(..count)
            .unwrap_or_default()
            .iter()
            .map(MmioRange::end_page)
            .max()
            .unwrap_or(0);
        if let Some(slot) = ranges.get_mut(count) {
            *slot = MmioRange {
                first_page: end,
                number_of_pages: 1,
                attributes: RangeAttributes::empty(),
                range_id: 0x7FFF,
            };
            count = count.saturating_add(1);
        }
    }
    let locked_msix = lock.flags.contains(LockFlags::LOCK_MSIX);
    let fields = ReportFields {
        msi_x_message_control: if locked_msix {
            cfg.report.msi_x_message_control
        } else {
            0
        },
        tph_control: if locked_msix {
            cfg.report.tph_control
        } else {
            0
        },
        ..cfg.report
    };
    InterfaceReport::encode(
        &fields,
        ranges.get(..count).unwrap_or_default(),
        cfg.device_specific_info,
        out,
    )
}
