//! Operator runs that did not match, remembered across requests on one thread.
//!
//! Real traffic repeats its values: in `legit-dev.jsonl` 108,530 cookie pairs hold 3,125
//! distinct ones, and 149,890 header lines 4,356 distinct ones (the same browsers, sessions and
//! consent flags, request after request). The libinjection detectors and the regexes are
//! functions of the value alone, so once a value has passed one of them, it passes it again.
//! This memo keeps such "no match" outcomes, keyed by the rule set, the rule link and the value's
//! bytes (compared in full, never by hash alone). Only outcomes without a match are kept: a
//! match is recomputed, with its captures, every time.
//!
//! Bounds: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes of values per generation, and
//! two generations per thread (when the current one fills, it becomes the old one and the old one
//! is dropped; a hit in the old one moves to the current). Values shorter than
//! [`MIN_LEN`] are not kept for the regex operators (running the regex costs less than the
//! lookup), nor longer than [`MAX_LEN`]. At most [`BUCKET`] values share a hash: a value
//! crafted to collide is simply not remembered, so lookups stay bounded.

use super::IntHasher;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Entries per generation.
pub(crate) const MAX_ENTRIES: usize = 16_384;
/// Bytes of remembered values per generation.
pub(crate) const MAX_BYTES: usize = 1 << 20;
/// The shortest value kept for `@rx` and `@pm` (the detectors keep every length).
pub(crate) const MIN_LEN: usize = 16;
/// The longest value kept.
pub(crate) const MAX_LEN: usize = 4096;
/// Values per hash.
const BUCKET: usize = 4;

/// An operator: the rule set's id (unique in the process) and the rule link's address in it.
pub(crate) type Op = [u64; 2];

type Buckets = HashMap<u64, Vec<(Op, Box<[u8]>)>, BuildHasherDefault<IntHasher>>;

#[derive(Default)]
struct Generation {
    buckets: Buckets,
    entries: usize,
    bytes: usize,
}

impl Generation {
    fn holds(&self, h: u64, op: Op, v: &[u8]) -> bool {
        self.buckets
            .get(&h)
            .is_some_and(|b| b.iter().any(|(o, x)| *o == op && **x == *v))
    }
}

struct Memo {
    seed: u64,
    current: Generation,
    old: Generation,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        seed: random_seed(),
        current: Generation::default(),
        old: Generation::default(),
    });
}

/// A per-thread seed, so that which values share a hash differs between processes.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

fn hash(seed: u64, op: Op, v: &[u8]) -> u64 {
    let mut h = IntHasher::default();
    h.write_u64(seed);
    h.write_u64(op[0]);
    h.write_u64(op[1]);
    h.write(v);
    h.write_u64(v.len() as u64);
    h.finish()
}

/// Whether operator `op` is known not to match `v`.
pub(crate) fn known_miss(op: Op, v: &[u8]) -> bool {
    if v.len() > MAX_LEN {
        return false;
    }
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let h = hash(m.seed, op, v);
        if m.current.holds(h, op, v) {
            return true;
        }
        if m.old.holds(h, op, v) {
            insert(&mut m, h, op, v);
            return true;
        }
        false
    })
}

/// Remembers that operator `op` did not match `v`.
pub(crate) fn note_miss(op: Op, v: &[u8]) {
    if v.len() > MAX_LEN {
        return;
    }
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let h = hash(m.seed, op, v);
        insert(&mut m, h, op, v);
    });
}

fn insert(m: &mut Memo, h: u64, op: Op, v: &[u8]) {
    if m.current.entries >= MAX_ENTRIES || m.current.bytes + v.len() > MAX_BYTES {
        m.old = std::mem::take(&mut m.current);
    }
    let bucket = m.current.buckets.entry(h).or_default();
    if bucket.len() >= BUCKET || bucket.iter().any(|(o, x)| *o == op && **x == *v) {
        return;
    }
    bucket.push((op, v.into()));
    m.current.entries += 1;
    m.current.bytes += v.len();
}

/// Forgets everything this thread remembered (for tests).
#[cfg(test)]
pub(crate) fn clear() {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        m.current = Generation::default();
        m.old = Generation::default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_kept_per_operator_and_value_and_generations_roll_over() {
        clear();
        let v = b"a value of some length, long enough";
        assert!(!known_miss([1, 1], v));
        note_miss([1, 1], v);
        assert!(known_miss([1, 1], v));
        assert!(!known_miss([1, 2], v), "another operator");
        assert!(!known_miss([1, 1], b"a value of some length, long enougH"));
        assert!(!known_miss([1, 1], &v[..v.len() - 1]));
        // Fill a generation: the first value moves to the old one and is still known; the
        // generation after that forgets it unless it was used meanwhile.
        for i in 0..MAX_ENTRIES as u64 {
            note_miss([2, 100 + i], b"x");
        }
        assert!(
            known_miss([1, 1], v),
            "found in the old generation, moved back"
        );
        for i in 0..2 * MAX_ENTRIES as u64 {
            note_miss([3, i], b"y");
        }
        assert!(!known_miss([1, 1], v), "two generations later");
        assert!(!known_miss([1, 7], &[b'z'; MAX_LEN + 1]));
        note_miss([1, 7], &[b'z'; MAX_LEN + 1]);
        assert!(
            !known_miss([1, 7], &[b'z'; MAX_LEN + 1]),
            "too long to keep"
        );
        clear();
    }

    #[test]
    fn a_full_bucket_takes_no_more_values() {
        clear();
        let mut m = Memo {
            seed: 0,
            current: Generation::default(),
            old: Generation::default(),
        };
        for i in 0..10u8 {
            insert(&mut m, 42, [1, 1], &[i]);
        }
        assert_eq!(m.current.buckets[&42].len(), BUCKET);
        assert_eq!(m.current.entries, BUCKET);
    }
}
