//! How much of each CPU's TSM stack was ever used: stacks are painted with [`PAINT`] at boot,
//! and at power-off the deepest word that no longer holds it gives the high-water mark, which
//! the TSM logs (`stack high-water`), so stack sizes rest on measurements of the scenarios and
//! the bench (docs/benchmarks.md).

use core::sync::atomic::{AtomicU64, Ordering};

/// What an unused stack word holds: unlikely as data (not a small number, not an address the
/// TSM uses, not a repeated byte).
pub(crate) const PAINT: u64 = 0x5354_4b5f_554e_5553;

/// Words per step of [`paint`] and [`high_water`]: boot paints and scans every stack, and four
/// words a loop iteration take about half the instructions of one (docs/benchmarks.md, "Boot,
/// memory and image").
const STEP: usize = 4;

/// Paints every word of `stack` (lowest address first).
pub(crate) fn paint(stack: &[AtomicU64]) {
    let mut steps = stack.chunks_exact(STEP);
    for step in &mut steps {
        for w in step {
            w.store(PAINT, Ordering::Relaxed);
        }
    }
    for w in steps.remainder() {
        w.store(PAINT, Ordering::Relaxed);
    }
}

/// Bytes of `stack` (lowest address first; it grows down from its end) used so far: from the
/// lowest word that no longer holds [`PAINT`] to the end.
pub(crate) fn high_water(stack: &[AtomicU64]) -> usize {
    let painted = |w: &AtomicU64| w.load(Ordering::Relaxed) == PAINT;
    // Whole steps of paint first, then the first word that is not paint from there.
    let clean = stack
        .chunks_exact(STEP)
        .take_while(|step| step.iter().all(painted))
        .count()
        * STEP;
    let unused = stack
        .get(clean..)
        .unwrap_or_default()
        .iter()
        .position(|w| !painted(w))
        .map_or(stack.len(), |i| clean + i);
    (stack.len() - unused) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_overwritten_word_sets_the_mark() {
        let stack: [AtomicU64; 8] = Default::default();
        paint(&stack);
        assert_eq!(high_water(&stack), 0);
        stack[7].store(0, Ordering::Relaxed);
        assert_eq!(high_water(&stack), 8);
        // A word further down that was written and happens to hold the paint again does not
        // hide a deeper one.
        stack[2].store(1, Ordering::Relaxed);
        stack[5].store(PAINT, Ordering::Relaxed);
        assert_eq!(high_water(&stack), 48);
        stack[0].store(1, Ordering::Relaxed);
        assert_eq!(high_water(&stack), 64);
    }

    #[test]
    fn stacks_of_any_length_are_painted_and_measured_to_the_word() {
        let words: [AtomicU64; 9] = Default::default();
        for len in [0, 1, 3, 4, 5, 7, 9] {
            let stack = &words[..len];
            paint(stack);
            assert!(stack.iter().all(|w| w.load(Ordering::Relaxed) == PAINT));
            assert_eq!(high_water(stack), 0, "{len}");
            for used in (0..len).rev() {
                stack[used].store(0, Ordering::Relaxed);
                assert_eq!(high_water(stack), (len - used) * 8, "{len} {used}");
            }
        }
    }
}
