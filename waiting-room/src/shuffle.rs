//! A keyed permutation of `[0, n)` computable one element at a time, in O(1) memory.
//!
//! The pre-queue shuffle must give every pre-queued shopper a place in a uniformly drawn order
//! without storing an array of a million places. [`Shuffle`] is a balanced Feistel network over
//! the smallest even bit width `2h` with `4^h >= n`, with round keys derived from the room's
//! recorded seed; values that land outside `[0, n)` are fed back in ("cycle walking"), which
//! stays a bijection on `[0, n)` because each cycle of the outer permutation that contains a
//! point of `[0, n)` returns to `[0, n)`. Since `4^h < 4n`, the expected number of walks per
//! element is below 4.
//!
//! The round function is a 64-bit mixer (SplitMix64's finaliser over the key and input), not a
//! cryptographic PRF: the order is unpredictable to shoppers because the seed is drawn by the
//! host (e.g. `crypto.getRandomValues` in the Durable Object) and kept in the room's storage,
//! and it is reproducible by anyone given the seed from the room's log.

use serde::{Deserialize, Serialize};

const ROUNDS: usize = 8;

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A permutation of `[0, n)` drawn from a 64-bit seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shuffle {
    n: u64,
    half_bits: u32,
    keys: [u64; ROUNDS],
}

impl Shuffle {
    /// The permutation of `[0, n)` for `seed`. The same `(seed, n)` always gives the same
    /// permutation.
    pub fn new(seed: u64, n: u64) -> Shuffle {
        let mut bits: u32 = 0;
        while bits < 64 && (1u128 << bits) < u128::from(n) {
            bits += 1;
        }
        let half_bits = bits.div_ceil(2).max(1);
        let mut state = seed ^ n.rotate_left(17) ^ 0x5741_4954_494e_4721;
        let keys = std::array::from_fn(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(state)
        });
        Shuffle { n, half_bits, keys }
    }

    /// The size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether the domain is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn mask(&self) -> u64 {
        if self.half_bits >= 32 {
            u32::MAX.into()
        } else {
            (1u64 << self.half_bits) - 1
        }
    }

    fn encrypt(&self, x: u64) -> u64 {
        let m = self.mask();
        let (mut l, mut r) = (x >> self.half_bits & m, x & m);
        for k in self.keys {
            let f = mix64(r ^ k) & m;
            (l, r) = (r, l ^ f);
        }
        l << self.half_bits | r
    }

    fn decrypt(&self, y: u64) -> u64 {
        let m = self.mask();
        let (mut l, mut r) = (y >> self.half_bits & m, y & m);
        for k in self.keys.iter().rev() {
            let f = mix64(l ^ k) & m;
            (l, r) = (r ^ f, l);
        }
        l << self.half_bits | r
    }

    /// The image of `i` (`i < n`); `None` when `i >= n`.
    pub fn apply(&self, i: u64) -> Option<u64> {
        if i >= self.n {
            return None;
        }
        let mut x = self.encrypt(i);
        while x >= self.n {
            x = self.encrypt(x);
        }
        Some(x)
    }

    /// The preimage of `j` (`j < n`): `apply(invert(j)) == Some(j)`.
    pub fn invert(&self, j: u64) -> Option<u64> {
        if j >= self.n {
            return None;
        }
        let mut x = self.decrypt(j);
        while x >= self.n {
            x = self.decrypt(x);
        }
        Some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_permutation(s: &Shuffle) -> bool {
        let n = s.len() as usize;
        let mut seen = vec![false; n];
        for i in 0..s.len() {
            let j = s.apply(i).unwrap() as usize;
            if seen[j] {
                return false;
            }
            seen[j] = true;
        }
        true
    }

    #[test]
    fn small_domains_are_permutations() {
        for n in 0..300 {
            for seed in [0, 1, 0xdead_beef] {
                assert!(is_permutation(&Shuffle::new(seed, n)), "n={n} seed={seed}");
            }
        }
        assert_eq!(Shuffle::new(7, 1).apply(0), Some(0));
        assert_eq!(Shuffle::new(7, 10).apply(10), None);
    }

    #[test]
    fn seeds_give_different_orders() {
        let a: Vec<_> = (0..100).map(|i| Shuffle::new(1, 100).apply(i)).collect();
        let b: Vec<_> = (0..100).map(|i| Shuffle::new(2, 100).apply(i)).collect();
        assert_ne!(a, b);
        // Not the identity, and roughly uniform: first place is spread over the domain.
        let firsts: Vec<u64> = (0..2000)
            .map(|seed| Shuffle::new(seed, 10).invert(0).unwrap())
            .collect();
        for v in 0..10 {
            let c = firsts.iter().filter(|&&x| x == v).count();
            assert!(
                (120..=280).contains(&c),
                "value {v} first {c} times of 2000"
            );
        }
    }

    #[test]
    fn huge_domains_work() {
        let s = Shuffle::new(42, u64::MAX);
        let x = s.apply(123_456_789).unwrap();
        assert_eq!(s.invert(x), Some(123_456_789));
    }

    proptest! {
        #[test]
        fn invert_undoes_apply(seed: u64, n in 1u64..1_000_000_000, i: u64) {
            let s = Shuffle::new(seed, n);
            let i = i % n;
            let j = s.apply(i).unwrap();
            prop_assert!(j < n);
            prop_assert_eq!(s.invert(j), Some(i));
        }
    }
}
