//! Keyed rate limiting with GCRA on integer time, in bounded memory.
//!
//! **Semantics.** A [`Quota`] allows `requests` per `period`, with a burst of up to `requests`. Each key
//! keeps one *theoretical arrival time* (TAT), the Generic Cell Rate Algorithm: a request at `now`
//! is allowed when `max(TAT, now) + T ≤ now + period` (where `T = period / requests` is the emission
//! interval) and then moves the TAT by `T`. Rejected requests do not move it. When the quota has a
//! mitigation timeout, the first rejection also blocks the key for that long. Time is passed in as
//! Unix milliseconds (`now_ms`); nothing here reads a clock, so the same code runs in WASM, where a
//! Worker's clock does not advance inside one request.
//!
//! **Memory.** A [`RateLimiter`] holds at most `max_keys` keys; a new key beyond that evicts the least
//! recently used one (exact LRU per shard, intrusive list in a slab). A flood from a million rotating
//! addresses therefore cannot grow it past the cap (a test floods it and counts). Evicting a key
//! whose TAT is in the past loses nothing; evicting an active one forgets its count, so size the cap
//! above the number of keys active within one period. Keys are hashed to 64 bits with a per-process
//! random SipHash key (fixed in WASM) and only the hash is stored, so a key's cost does not depend on
//! the length of the header or cookie it came from.
//!
//! Per key: one 32-byte slab entry (hash, TAT, block deadline, LRU links) plus 2–4 four-byte index
//! slots (the index is a power of two at most half full): **40–48 bytes per key**, 45 at the
//! default 100,000 keys (see [`RateLimiter::memory_bytes`]); one million keys cost about 48 MB.
//!
//! **Scope.** A limiter is per process (origin) or per isolate (edge). A rule can ask for a global
//! limit (`scope = "global"`): the verdict then lists it in
//! [`crate::custom::CustomVerdict::global_limits`] and the host forwards it to one place that keeps
//! the count — at the edge a Durable Object that runs a [`RateLimiter`] of its own (the
//! [`LimitStore`] trait is the seam). The local limit still applies first.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// How many requests a key may make per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests allowed per period (and the largest burst). At least 1.
    pub requests: u32,
    /// The period, in milliseconds. At least 1.
    pub period_ms: u64,
    /// After the quota is exceeded, reject the key for this long (0: only until GCRA allows again).
    pub mitigation_ms: u64,
}

impl Quota {
    /// The emission interval and the burst window, in microseconds.
    fn gcra(&self) -> (u64, u64) {
        let period_us = self.period_ms.max(1).saturating_mul(1000);
        let t = (period_us / u64::from(self.requests.max(1))).max(1);
        (t, period_us)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitDecision {
    /// Under the limit; `remaining` more requests would be allowed right now.
    Allowed {
        /// Requests left in the current burst.
        remaining: u32,
    },
    /// Over the limit; try again after this many milliseconds.
    Limited {
        /// Milliseconds until the key may send again.
        retry_after_ms: u64,
    },
}

impl LimitDecision {
    /// Whether the request is over the limit.
    pub fn is_limited(&self) -> bool {
        matches!(self, LimitDecision::Limited { .. })
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1 (0 when allowed).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            LimitDecision::Allowed { .. } => 0,
            LimitDecision::Limited { retry_after_ms } => retry_after_ms.div_ceil(1000).max(1),
        }
    }
}

/// Where counts are kept. [`RateLimiter`] is the in-memory store; a host can put a shared store
/// (a Durable Object, …) behind the same trait.
pub trait LimitStore {
    /// Counts one request for `key` at `now_ms` against `quota`.
    fn check(&self, key: &[u8], quota: &Quota, now_ms: u64) -> LimitDecision;
}

/// GCRA on one key's state: the pure step, shared by every store.
pub fn gcra_step(state: &mut KeyState, quota: &Quota, now_ms: u64) -> LimitDecision {
    if state.blocked_until_ms > now_ms {
        return LimitDecision::Limited {
            retry_after_ms: state.blocked_until_ms - now_ms,
        };
    }
    let (t, window) = quota.gcra();
    let now_us = now_ms.saturating_mul(1000);
    let tat = state.tat_us.max(now_us);
    let new_tat = tat.saturating_add(t);
    let limit = now_us.saturating_add(window);
    if new_tat > limit {
        let retry_after_ms = if quota.mitigation_ms > 0 {
            state.blocked_until_ms = now_ms.saturating_add(quota.mitigation_ms);
            quota.mitigation_ms
        } else {
            (new_tat - limit).div_ceil(1000)
        };
        return LimitDecision::Limited { retry_after_ms };
    }
    state.tat_us = new_tat;
    LimitDecision::Allowed {
        remaining: u32::try_from((limit - new_tat) / t).unwrap_or(u32::MAX),
    }
}

/// What is kept per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Theoretical arrival time, microseconds since the Unix epoch.
    pub tat_us: u64,
    /// Rejected until this time (mitigation timeout), milliseconds since the Unix epoch.
    pub blocked_until_ms: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u64,
    state: KeyState,
    prev: u32,
    next: u32,
}

/// One shard: an exact LRU over a slab, found through an open-addressing index of slab positions
/// (linear probing, at most half full, backward-shift deletion: no tombstones, so churn under a
/// flood never grows it).
#[derive(Debug)]
struct Table {
    slots: Vec<u32>,
    entries: Vec<Entry>,
    head: u32,
    tail: u32,
    cap: usize,
}

impl Table {
    fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, (u32::MAX / 4) as usize);
        Table {
            slots: vec![NIL; (cap * 2).next_power_of_two()],
            entries: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, key: u64) -> usize {
        (key as usize) & self.mask()
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> (usize, Option<u32>) {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                NIL => return (i, None),
                e if self.entries[e as usize].key == key => return (i, Some(e)),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn remove_slot(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.slots[j];
            if e == NIL {
                self.slots[hole] = NIL;
                return;
            }
            let k = self.home(self.entries[e as usize].key);
            // The entry at j may move back into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                self.slots[hole] = e;
                hole = j;
            }
        }
    }

    fn unlink(&mut self, i: u32) {
        let Entry { prev, next, .. } = self.entries[i as usize];
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.entries[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old != NIL {
            self.entries[old as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    #[cfg(test)]
    fn contains(&self, key: u64) -> bool {
        self.find(key).1.is_some()
    }

    /// The entry for `key`, now the most recent; created (evicting the least recent) if absent.
    fn entry(&mut self, key: u64) -> &mut KeyState {
        let i = match self.find(key) {
            (_, Some(i)) => {
                if self.head != i {
                    self.unlink(i);
                    self.push_front(i);
                }
                i
            }
            (_, None) => {
                let fresh = Entry {
                    key,
                    state: KeyState::default(),
                    prev: NIL,
                    next: NIL,
                };
                let i = if self.entries.len() < self.cap {
                    if self.entries.len() == self.entries.capacity() {
                        // Grow by doubling, but never past the cap: the slab ends exactly full.
                        let want = (self.entries.len() * 2).max(16).min(self.cap);
                        self.entries.reserve_exact(want - self.entries.len());
                    }
                    self.entries.push(fresh);
                    (self.entries.len() - 1) as u32
                } else {
                    let victim = self.tail;
                    self.unlink(victim);
                    let old_key = self.entries[victim as usize].key;
                    if let (slot, Some(_)) = self.find(old_key) {
                        self.remove_slot(slot);
                    }
                    self.entries[victim as usize] = fresh;
                    victim
                };
                self.push_front(i);
                let (slot, _) = self.find(key);
                self.slots[slot] = i;
                i
            }
        };
        &mut self.entries[i as usize].state
    }
}

/// An in-memory keyed GCRA limiter with a hard cap on keys. `Send + Sync`: share one per process
/// (behind an `Arc`) across Pingora's threads; the shards keep lock contention low.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<Table>>,
    hasher: RandomState,
    max_keys: usize,
}

impl RateLimiter {
    /// A limiter holding at most `max_keys` keys (at least 1).
    pub fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let n = if max_keys >= 1024 { 16 } else { 1 };
        let shards = (0..n)
            .map(|s| Mutex::new(Table::new(max_keys / n + usize::from(s < max_keys % n))))
            .collect();
        RateLimiter {
            shards,
            hasher: RandomState::new(),
            max_keys,
        }
    }

    /// The configured cap.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys held now (never more than [`Self::max_keys`]).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes used by the tables now: slab entries plus hash-table buckets (an estimate of the
    /// allocator's view; excludes the fixed-size struct).
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = lock(s);
                t.entries.capacity() * std::mem::size_of::<Entry>()
                    + t.slots.capacity() * std::mem::size_of::<u32>()
            })
            .sum()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        h.finish()
    }
}

fn lock(m: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // A panic while holding the lock cannot leave a table inconsistent in a way that matters for
    // counting; keep serving rather than propagate the poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LimitStore for RateLimiter {
    fn check(&self, key: &[u8], quota: &Quota, now_ms: u64) -> LimitDecision {
        let h = self.hash(key);
        let shard = &self.shards[(h >> 59) as usize % self.shards.len()];
        let mut t = lock(shard);
        gcra_step(t.entry(h), quota, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn quota(requests: u32, period_ms: u64, mitigation_ms: u64) -> Quota {
        Quota {
            requests,
            period_ms,
            mitigation_ms,
        }
    }

    #[test]
    fn entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn five_per_minute_then_429_then_recovers() {
        let l = RateLimiter::new(100);
        let q = quota(5, MIN, 0);
        let t0 = 1_700_000_000_000;
        for i in 0..5 {
            assert_eq!(
                l.check(b"ip", &q, t0),
                LimitDecision::Allowed { remaining: 4 - i }
            );
        }
        let d = l.check(b"ip", &q, t0);
        assert_eq!(
            d,
            LimitDecision::Limited {
                retry_after_ms: 12_000
            }
        );
        assert_eq!(d.retry_after_secs(), 12);
        // Another key is unaffected.
        assert!(!l.check(b"other", &q, t0).is_limited());
        // One emission interval later one more request fits.
        assert!(!l.check(b"ip", &q, t0 + 12_000).is_limited());
        assert!(l.check(b"ip", &q, t0 + 12_000).is_limited());
        // A full period later the whole burst is back.
        for _ in 0..5 {
            assert!(!l.check(b"ip", &q, t0 + 12_000 + MIN).is_limited());
        }
    }

    #[test]
    fn mitigation_timeout_blocks_for_its_duration() {
        let l = RateLimiter::new(10);
        let q = quota(2, 1000, 10 * MIN);
        let t0 = 1_000_000;
        assert!(!l.check(b"k", &q, t0).is_limited());
        assert!(!l.check(b"k", &q, t0).is_limited());
        assert_eq!(
            l.check(b"k", &q, t0 + 1),
            LimitDecision::Limited {
                retry_after_ms: 10 * MIN
            }
        );
        // Well after the GCRA window, but still inside the mitigation timeout.
        assert_eq!(l.check(b"k", &q, t0 + 1 + MIN).retry_after_secs(), 9 * 60);
        assert!(!l.check(b"k", &q, t0 + 1 + 10 * MIN).is_limited());
    }

    #[test]
    fn lru_evicts_least_recent() {
        let mut t = Table::new(2);
        t.entry(1).tat_us = 11;
        t.entry(2).tat_us = 22;
        assert_eq!(t.entry(1).tat_us, 11); // 1 is now the most recent
        t.entry(3).tat_us = 33; // evicts 2
        assert_eq!(t.len(), 2);
        assert!(t.contains(1) && t.contains(3));
        assert_eq!(t.entry(2).tat_us, 0, "2 starts afresh");
        assert!(!t.contains(1), "1 was least recent");
        assert!(t.contains(2) && t.contains(3));
    }

    #[test]
    fn table_matches_a_reference_lru_under_churn() {
        // Keys share low bits so probes collide and deletions shift entries back.
        let mut t = Table::new(8);
        let mut model: Vec<u64> = Vec::new(); // most recent last
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 24) << 3 | (x % 3);
            t.entry(key).tat_us = step;
            model.retain(|&k| k != key);
            model.push(key);
            if model.len() > 8 {
                model.remove(0);
            }
            assert_eq!(t.len(), model.len());
            for &k in &model {
                assert!(t.contains(k), "step {step}: lost {k}");
            }
        }
    }

    #[test]
    fn flood_of_a_million_addresses_stays_under_the_cap() {
        let cap = 10_000;
        let l = RateLimiter::new(cap);
        let q = quota(5, MIN, 0);
        let t0 = 1_700_000_000_000u64;
        let mut attacker_limited = 0;
        for i in 0u32..1_000_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i));
            l.check(ip.to_string().as_bytes(), &q, t0 + u64::from(i / 1000));
            if i % 100 == 0 {
                // The attacker keeps hammering from one address in the middle of the flood.
                if l.check(b"203.0.113.66", &q, t0 + u64::from(i / 1000))
                    .is_limited()
                {
                    attacker_limited += 1;
                }
            }
            if i % 1000 == 0 {
                assert!(l.len() <= cap, "{} keys after {i}", l.len());
            }
        }
        assert_eq!(l.len(), cap);
        // The busy key stayed recent, so it was never evicted and stayed limited.
        assert!(attacker_limited >= 9_990, "{attacker_limited}");
        let per_key = l.memory_bytes() as f64 / cap as f64;
        assert!(per_key <= 48.0, "{per_key} bytes per key");
        eprintln!("{per_key:.1} bytes per key at {cap} keys");
    }
}
