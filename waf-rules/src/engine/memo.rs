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
//! A miss is stored the second time it is noted (a bit per hash says it was noted once), so
//! that values that never repeat cost a lookup and a bit, not an allocation; a libinjection
//! detector's miss is stored the first time (a run costs far more than the allocation).
//!
//! A second store of the same kind keeps, with a payload, what rules match request entries
//! (see `eval::clean`).
//!
//! Bounds: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes of values per generation, and
//! two generations per thread (when the current one fills, it becomes the old one and the old one
//! is dropped; a hit in the old one moves to the current); the noted-once filter is 64 KiB. Values shorter than
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
/// Bits of the filter of misses noted once (64 KiB).
const SEEN_BITS: usize = 1 << 19;

/// An operator: the rule set's id (unique in the process) and the rule link's address in it.
pub(crate) type Op = [u64; 2];

/// Per hash: the (operator, value, payload) entries that share it.
type Buckets = HashMap<u64, Vec<(Op, Box<[u8]>, u64)>, BuildHasherDefault<IntHasher>>;

#[derive(Default)]
struct Generation {
    buckets: Buckets,
    entries: usize,
    bytes: usize,
}

impl Generation {
    /// The payload stored for `op` and `v` (hash `h`), if they are stored.
    fn get(&self, h: u64, op: Op, v: &[u8]) -> Option<u64> {
        self.buckets
            .get(&h)?
            .iter()
            .find(|(o, x, _)| *o == op && **x == *v)
            .map(|e| e.2)
    }
}

struct Memo {
    seed: u64,
    current: Generation,
    old: Generation,
    /// One bit per hash (modulo its size): a miss is stored the second time it is noted, so
    /// that values that never repeat cost a bit, not an allocation. Cleared with each new
    /// generation.
    seen: Box<[u64]>,
}

impl Memo {
    fn new() -> Memo {
        Memo {
            seed: random_seed(),
            current: Generation::default(),
            old: Generation::default(),
            seen: vec![0; SEEN_BITS / 64].into_boxed_slice(),
        }
    }
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::new());
    static ENTRIES: RefCell<Memo> = RefCell::new(Memo::new());
}

/// Which of a thread's two stores (each with the bounds above): operators' misses, or the
/// request entries no rule matches (`eval::clean`). Apart, so that the many misses of values
/// seen once do not push out the entries every request repeats.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Store {
    Misses,
    Entries,
}

fn with<R>(store: Store, f: impl FnOnce(&mut Memo) -> R) -> R {
    let key = match store {
        Store::Misses => &MEMO,
        Store::Entries => &ENTRIES,
    };
    key.with(|m| f(&mut m.borrow_mut()))
}

/// A per-thread seed, so that which values share a hash differs between processes.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// A value's content hash (the engine interns transformed values by it, and the memo keys on
/// it): computed once per value and request, then combined with each operator's key, instead of
/// hashing a long value again for every rule that reads it.
pub(crate) fn value_hash(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    for &x in chunks.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The memo's key hash: the thread's seed, the operator and the value's [`value_hash`]. (The
/// value hash itself is not seeded; values crafted to collide only fill one bucket per
/// operator, which [`BUCKET`] caps.)
fn hash(seed: u64, op: Op, value_hash: u64) -> u64 {
    let mut h = IntHasher::default();
    h.write_u64(seed);
    h.write_u64(op[0]);
    h.write_u64(op[1]);
    h.write_u64(value_hash);
    h.finish()
}

/// A value's hash under an operator, from a lookup that found nothing, for noting the miss.
#[derive(Clone, Copy)]
pub(crate) struct Unknown(u64);

/// Whether operator `op` is known not to match `v`, whose [`value_hash`] is `vh` (`Err`: not
/// known).
pub(crate) fn known_miss(op: Op, v: &[u8], vh: u64) -> Result<(), Unknown> {
    known(Store::Misses, op, v, vh).map(|_| ())
}

/// The payload remembered for key `op` and value `v` (whose [`value_hash`] is `vh`); `Err`:
/// nothing is remembered.
pub(crate) fn known(store: Store, op: Op, v: &[u8], vh: u64) -> Result<u64, Unknown> {
    with(store, |m| {
        let h = hash(m.seed, op, vh);
        if v.len() <= MAX_LEN {
            if let Some(p) = m.current.get(h, op, v) {
                return Ok(p);
            }
            if let Some(p) = m.old.get(h, op, v) {
                insert(m, h, op, v, p);
                return Ok(p);
            }
        }
        Err(Unknown(h))
    })
}

/// Notes that operator `op` did not match `v`; the second time, the miss is remembered, or at
/// once for a `costly` operator (the libinjection detectors: a run costs tens of times the
/// allocation that keeps the value).
pub(crate) fn note_miss(at: Unknown, op: Op, v: &[u8], costly: bool) {
    // (A value too long to keep does not mark the seen-once filter either.)
    if v.len() <= MAX_LEN && (costly || seen_before(Store::Misses, at)) {
        remember(Store::Misses, at, op, v, 0);
    }
}

/// Marks the hash of a lookup that found nothing as seen; whether it had been seen already
/// (since the current generation began).
pub(crate) fn seen_before(store: Store, at: Unknown) -> bool {
    with(store, |m| {
        let bit = (at.0 % SEEN_BITS as u64) as usize;
        let word = &mut m.seen[bit / 64];
        let seen = *word & (1 << (bit % 64)) != 0;
        *word |= 1 << (bit % 64);
        seen
    })
}

/// Remembers `payload` for key `op` and value `v` (found by a lookup that returned `at`);
/// an operator's miss has payload 0.
pub(crate) fn remember(store: Store, at: Unknown, op: Op, v: &[u8], payload: u64) {
    if v.len() > MAX_LEN {
        return;
    }
    with(store, |m| insert(m, at.0, op, v, payload));
}

fn insert(m: &mut Memo, h: u64, op: Op, v: &[u8], payload: u64) {
    if m.current.entries >= MAX_ENTRIES || m.current.bytes + v.len() > MAX_BYTES {
        m.old = std::mem::take(&mut m.current);
        m.seen.fill(0);
    }
    let bucket = m.current.buckets.entry(h).or_default();
    if bucket.len() >= BUCKET || bucket.iter().any(|(o, x, _)| *o == op && **x == *v) {
        return;
    }
    bucket.push((op, v.into(), payload));
    m.current.entries += 1;
    m.current.bytes += v.len();
}

/// Forgets everything this thread remembered (for tests).
#[cfg(test)]
pub(crate) fn clear() {
    MEMO.with(|m| *m.borrow_mut() = Memo::new());
    ENTRIES.with(|m| *m.borrow_mut() = Memo::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks `v` up and notes a miss, as the engine does; whether it was known.
    fn miss(op: Op, v: &[u8]) -> bool {
        match known_miss(op, v, value_hash(v)) {
            Ok(()) => true,
            Err(at) => {
                note_miss(at, op, v, false);
                false
            }
        }
    }

    #[test]
    fn misses_are_kept_from_their_second_sighting_per_operator_and_value() {
        clear();
        let v = b"a value of some length, long enough";
        assert!(!miss([1, 1], v), "first sighting: only seen");
        assert!(!miss([1, 1], v), "second: stored");
        assert!(miss([1, 1], v), "third: known");
        assert!(
            known_miss([1, 2], v, value_hash(v)).is_err(),
            "another operator"
        );
        assert!(
            known_miss([2, 1], v, value_hash(v)).is_err(),
            "another rule set"
        );
        let other = b"a value of some length, long enougH";
        assert!(known_miss([1, 1], other, value_hash(other)).is_err());
        let shorter = &v[..v.len() - 1];
        assert!(known_miss([1, 1], shorter, value_hash(shorter)).is_err());
        // A value whose hash collides with a remembered one is still compared in full.
        assert!(known_miss([1, 1], other, value_hash(v)).is_err());
        let long = [b'z'; MAX_LEN + 1];
        for _ in 0..3 {
            assert!(!miss([1, 7], &long), "too long to keep");
        }
        clear();
    }

    /// Stores `n` distinct one-byte values for operators `[tag, i]`.
    fn fill(tag: u64, n: u64) {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            for i in 0..n {
                insert(&mut m, i, [tag, i], b"x", 0);
            }
        });
    }

    #[test]
    fn a_costly_operators_miss_is_kept_at_once() {
        clear();
        let v = b"x";
        let at = known_miss([1, 3], v, value_hash(v)).expect_err("not known");
        note_miss(at, [1, 3], v, true);
        assert!(known_miss([1, 3], v, value_hash(v)).is_ok(), "kept at once");
        clear();
    }

    #[test]
    fn generations_roll_over_and_a_hit_in_the_old_one_moves_back() {
        clear();
        let v = b"remembered value";
        while !miss([1, 1], v) {}
        fill(2, MAX_ENTRIES as u64);
        assert!(
            miss([1, 1], v),
            "found in the old generation, and moved back"
        );
        fill(3, MAX_ENTRIES as u64 - 1);
        assert!(
            miss([1, 1], v),
            "still there: it moved to the generation now old"
        );
        fill(4, 2 * MAX_ENTRIES as u64);
        assert!(
            known_miss([1, 1], v, value_hash(v)).is_err(),
            "two generations later"
        );
        clear();
    }

    #[test]
    fn a_full_bucket_takes_no_more_values() {
        let mut m = Memo::new();
        for i in 0..10u8 {
            insert(&mut m, 42, [1, 1], &[i], 0);
        }
        assert_eq!(m.current.buckets[&42].len(), BUCKET);
        assert_eq!(m.current.entries, BUCKET);
    }
}
