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

/// A keyed random-access permutation of `0..n`: position `i` of the epoch's shard order is
/// `at(i)`, computed alone in O(1), so a reader deals its own share of 12.5 M shards without a
/// pass over all of them (the Fisher–Yates shuffle this replaces cost 0.33 s and 50 MB per
/// epoch in every reader). A 4-round Feistel network on the smallest even-bit domain that holds
/// `n` (at most 4n), with cycle-walking back into `0..n` (under 4 steps on average); its rounds
/// are SplitMix64's finaliser, keyed by the seed. Written by hand (a few lines, fixed forever).
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    half: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, seed: u64) -> Self {
        let bits = 64 - (n.max(2) - 1).leading_zeros();
        let half = bits.div_ceil(2);
        let mut rng = SplitMix64::new(seed);
        Self { n, half, keys: [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()] }
    }

    fn mask(&self) -> u64 {
        (1u64 << self.half) - 1
    }

    fn round(&self, x: u64, key: u64) -> u64 {
        let mut z = x ^ key;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) & self.mask()
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask());
        for &k in &self.keys {
            (l, r) = (r, l ^ self.round(r, k));
        }
        (l << self.half) | r
    }

    fn decrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask());
        for &k in self.keys.iter().rev() {
            (l, r) = (r ^ self.round(l, k), l);
        }
        (l << self.half) | r
    }

    /// The element at position `i` (`i < n`).
    pub fn at(&self, i: u64) -> u64 {
        let mut x = self.encrypt(i);
        while x >= self.n {
            x = self.encrypt(x);
        }
        x
    }

    /// The position of element `x` (`x < n`): the inverse of [`at`](Self::at).
    pub fn position(&self, x: u64) -> u64 {
        let mut i = self.decrypt(x);
        while i >= self.n {
            i = self.decrypt(i);
        }
        i
    }
}

/// The order `0..n` shuffled with `seed` (see [`Permutation`]): the shard order of an epoch,
/// the same in every process, on every machine and in every release.
pub fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let p = Permutation::new(n as u64, seed);
    (0..n as u64).map(|i| p.at(i) as usize).collect()
}

/// The epoch's order as [`shuffled_order`] gives it (or `0..n` unshuffled), but only the
/// positions `start, start + step, ...` (at most `limit`): the shards reader `start` of `step`
/// reads, in O(its share), never a pass over every shard.
pub fn order_at(n: usize, seed: u64, shuffle: bool, start: usize, step: usize, limit: usize) -> Vec<usize> {
    let step = step.max(1);
    let positions = (start..n).step_by(step).take(limit);
    if !shuffle {
        return positions.collect();
    }
    let p = Permutation::new(n as u64, seed);
    positions.map(|i| p.at(i as u64) as usize).collect()
}

/// Where shard `index` stands in the epoch's order (the inverse of [`order_at`]).
pub fn position_of(n: usize, seed: u64, shuffle: bool, index: usize) -> usize {
    if !shuffle {
        return index;
    }
    Permutation::new(n as u64, seed).position(index as u64) as usize
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
    fn the_permutation_is_a_bijection_with_an_inverse() {
        for n in [0u64, 1, 2, 3, 7, 100, 1000, 4097] {
            for seed in [0u64, 1, 42] {
                let p = Permutation::new(n, seed);
                let mut seen = vec![false; n as usize];
                for i in 0..n {
                    let x = p.at(i);
                    assert!(x < n && !seen[x as usize], "n {n} seed {seed}");
                    seen[x as usize] = true;
                    assert_eq!(p.position(x), i);
                }
            }
        }
        // Seeds give different orders, and an order is not the identity.
        let a = shuffled_order(1000, 1);
        assert_ne!(a, shuffled_order(1000, 2));
        assert!(a.iter().enumerate().filter(|(i, x)| i == *x).count() < 20);
    }

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
