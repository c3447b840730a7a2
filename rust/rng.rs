//! Deterministic per-sample randomness.
//!
//! Written by hand on purpose: SplitMix64 is ten lines, has no state to share between threads,
//! and its output is fixed forever, so a seed gives the same crops and the same shuffle on every
//! machine and version (a general RNG crate is free to change its streams between releases).

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `[0, n)` (`n > 0`), by Lemire's multiply-shift (bias < 2^-64 · n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The order `0..n` shuffled by Fisher–Yates with `seed`: the shard order of an epoch, the
/// same in every process, on every machine and in every release.
pub fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The epoch's order as [`shuffled_order`] gives it (or `0..n` unshuffled), but only the
/// positions `start, start + step, ...` (at most `limit`): the shards reader `start` of `step`
/// reads, without a list of every shard in the caller. Computed in `u32` when `n` fits, so the
/// one O(n) pass is 4 bytes a shard (50 MB and ~0.1 s at 12.5 M shards), in Rust.
pub fn order_at(n: usize, seed: u64, shuffle: bool, start: usize, step: usize, limit: usize) -> Vec<usize> {
    let step = step.max(1);
    let positions = (start..n).step_by(step).take(limit);
    if !shuffle {
        return positions.collect();
    }
    if n <= u32::MAX as usize {
        let mut order: Vec<u32> = (0..n as u32).collect();
        let mut rng = SplitMix64::new(seed);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        positions.map(|p| order[p] as usize).collect()
    } else {
        let order = shuffled_order(n, seed);
        positions.map(|p| order[p]).collect()
    }
}

/// Per reader slot (position `p` of the epoch's order goes to slot `p % slots`), the sum of
/// `counts` (one per shard, in the shard list's order): what `equal_batches` compares.
pub fn slot_sums(counts: &[u64], seed: u64, shuffle: bool, slots: usize) -> Vec<u64> {
    let slots = slots.max(1);
    let mut sums = vec![0u64; slots];
    for (p, i) in order_at(counts.len(), seed, shuffle, 0, 1, usize::MAX).into_iter().enumerate() {
        sums[p % slots] += counts[i];
    }
    sums
}

/// A 64-bit seed from a base seed and a string (e.g. a sample key), stable across platforms.
pub fn seed_for(seed: u64, key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed)
}

#[cfg(test)]
mod order_tests {
    use super::*;

    #[test]
    fn positions_of_the_order_are_those_of_the_whole_shuffle() {
        for n in [0usize, 1, 7, 100, 1000] {
            let whole = shuffled_order(n, 42);
            for (start, step) in [(0, 1), (3, 4), (0, 5), (9, 10)] {
                let want: Vec<usize> = whole.iter().skip(start).step_by(step).copied().collect();
                assert_eq!(order_at(n, 42, true, start, step, usize::MAX), want);
                assert_eq!(order_at(n, 42, true, start, step, 2), want.into_iter().take(2).collect::<Vec<_>>());
            }
            assert_eq!(order_at(n, 42, false, 1, 3, usize::MAX), (1..n).step_by(3).collect::<Vec<_>>());
        }
        let counts: Vec<u64> = (0..50).collect();
        let sums = slot_sums(&counts, 7, true, 4);
        let order = shuffled_order(50, 7);
        for (slot, sum) in sums.iter().enumerate() {
            assert_eq!(*sum, order.iter().skip(slot).step_by(4).map(|&i| counts[i]).sum::<u64>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.next_f64();
            b.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(7) < 7);
            b.below(7);
        }
        // A known value pins the stream forever.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_ne!(seed_for(1, "a"), seed_for(2, "a"));
    }
}
