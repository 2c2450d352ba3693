//! Backend pools and how a backend is picked.
//!
//! Everything here is plain Rust over atomics: no I/O, no clock (callers pass `now_ms`, the
//! milliseconds of a monotonic clock). Selection is lock-free: a per-pool cursor for round
//! robin, and per-backend words for health, passive ejection, in-flight requests and the
//! peak-EWMA latency.
//!
//! A backend is *eligible* when it is healthy (active checks), not ejected (passive failures),
//! below its connection cap, and not already tried by this request. Every algorithm honours
//! weights:
//! - round robin walks a smooth weighted schedule (nginx's algorithm, computed once per pool);
//! - least connections takes the lowest `in_flight / weight`;
//! - peak EWMA takes the lowest `ewma_latency * (in_flight + 1) / weight`, where the EWMA jumps
//!   up to a slower sample at once and decays towards faster ones (Finagle's peak EWMA);
//! - hash takes the highest weighted rendezvous score of the request's key, so a cart keeps
//!   its backend while it is eligible, and only the carts of a lost backend move.
//!
//! In-flight counts are held by [`BackendLease`] and [`PoolPermit`], RAII guards that live in
//! the request context: a request that ends in any way gives its slots back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;

use crate::config::{Algorithm, BackendConfig, PoolConfig};

/// How fast the peak-EWMA latency forgets, in milliseconds.
const EWMA_DECAY_MS: f64 = 10_000.0;

/// One backend and its state. Kept across config reloads while its address stays in its pool.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The peer handed to pingora, built once.
    pub peer: HttpPeer,
    healthy: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
    passive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Peak-EWMA latency in microseconds, as f64 bits.
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicU64,
}

impl Backend {
    /// A healthy backend with no history.
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            peer: HttpPeer::new(addr, false, String::new()),
            // Optimistic start: traffic flows before the first check has run.
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_at_ms: AtomicU64::new(0),
        }
    }

    /// Whether active health checks consider it up.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether passive ejection keeps it out at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Whether it may get traffic at `now_ms` (healthy and not ejected).
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now_ms)
    }

    /// Requests in flight to it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current peak-EWMA latency in microseconds (0 before the first sample).
    pub fn ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Ordering::Relaxed))
    }

    /// Records a successful check; `rise` in a row bring the backend back. Returns whether the
    /// backend's state changed.
    pub fn record_success(&self, rise: u32) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        let n = self
            .successes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        n >= rise && !self.healthy.swap(true, Ordering::Relaxed)
    }

    /// Records a failed check; `fall` in a row take the backend out. Returns whether the
    /// backend's state changed.
    pub fn record_failure(&self, fall: u32) -> bool {
        self.successes.store(0, Ordering::Relaxed);
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        n >= fall && self.healthy.swap(false, Ordering::Relaxed)
    }

    /// A request to it failed (connect failure, timeout or 5xx). After `max_failures` in a row
    /// it is ejected until `now_ms + eject_ms`. Returns whether this failure ejected it.
    pub fn record_passive_failure(&self, max_failures: u32, eject_ms: u64, now_ms: u64) -> bool {
        let n = self
            .passive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= max_failures {
            self.passive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms
                .store(now_ms.saturating_add(eject_ms), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A request to it succeeded: the run of passive failures is over.
    pub fn record_passive_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Feeds one latency sample into the peak EWMA.
    pub fn record_latency(&self, latency_us: f64, now_ms: u64) {
        let prev = self.ewma_us();
        let last = self.ewma_at_ms.swap(now_ms, Ordering::Relaxed);
        let next = if prev == 0.0 || latency_us > prev {
            latency_us
        } else {
            let dt = now_ms.saturating_sub(last) as f64;
            let w = (-dt / EWMA_DECAY_MS).exp();
            prev * w + latency_us * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// A request's slot on a backend; dropping it gives the slot back.
#[derive(Debug)]
pub struct BackendLease {
    backend: Arc<Backend>,
}

impl BackendLease {
    /// The leased backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for BackendLease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's slot in a pool's concurrency limit; dropping it gives the slot back.
#[derive(Debug)]
pub struct PoolPermit {
    pool: Arc<Pool>,
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        self.pool.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool of backends with its settings.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name in the config.
    pub name: String,
    /// Settings from the config.
    pub config: PoolConfig,
    /// Backends in config order.
    pub backends: Vec<Arc<Backend>>,
    weights: Vec<u32>,
    schedule: Vec<usize>,
    next: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Pool {
    /// A pool from its config; every backend starts healthy.
    pub fn new(name: &str, config: PoolConfig) -> Self {
        Pool::with_backends(name, config, |_| None)
    }

    /// A pool from its config that takes over the state of backends `existing` knows (by
    /// address), so that a reload keeps health, ejections and in-flight counts.
    pub fn with_backends(
        name: &str,
        config: PoolConfig,
        existing: impl Fn(SocketAddr) -> Option<Arc<Backend>>,
    ) -> Self {
        let backends = config
            .backends
            .iter()
            .map(|b| existing(b.addr).unwrap_or_else(|| Arc::new(Backend::new(b.addr))))
            .collect();
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        let schedule = smooth_weighted_schedule(&config.backends);
        Pool {
            name: name.to_owned(),
            config,
            backends,
            weights,
            schedule,
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests admitted to the pool and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits a request under the pool's concurrency limit, or `None` when it is full (shed).
    pub fn try_admit(self: &Arc<Self>) -> Option<PoolPermit> {
        let limit = self.config.max_in_flight.unwrap_or(usize::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| PoolPermit { pool: self.clone() })
    }

    /// Picks an eligible backend and takes a slot on it. `key` is the hash key of the request
    /// (for [`Algorithm::Hash`]); `tried` are indices into [`Pool::backends`] to skip. `None`
    /// when no backend is eligible.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        tried: &[usize],
        now_ms: u64,
    ) -> Option<(usize, BackendLease)> {
        let cap = self
            .config
            .max_connections_per_backend
            .unwrap_or(usize::MAX);
        let mut skip: Vec<usize> = tried.to_vec();
        // A lost race for a backend's last slot skips it and picks again; each loop skips one.
        for _ in 0..self.backends.len() {
            let idx = self.select(key, &skip, now_ms)?;
            let backend = &self.backends[idx];
            let got = backend
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < cap).then_some(n + 1)
                });
            if got.is_ok() {
                return Some((
                    idx,
                    BackendLease {
                        backend: backend.clone(),
                    },
                ));
            }
            skip.push(idx);
        }
        None
    }

    /// The eligible backend the pool's algorithm prefers, without taking a slot.
    pub fn select(&self, key: Option<&[u8]>, tried: &[usize], now_ms: u64) -> Option<usize> {
        let cap = self
            .config
            .max_connections_per_backend
            .unwrap_or(usize::MAX);
        let eligible = |i: usize| {
            let b = &self.backends[i];
            !tried.contains(&i) && b.is_available(now_ms) && b.in_flight() < cap
        };
        match (self.config.algorithm, key) {
            (Algorithm::Hash, Some(key)) => self.by_rendezvous(key, eligible),
            (Algorithm::LeastConnections, _) => {
                self.by_min_cost(eligible, |b, w| (b.in_flight() as f64 + 1.0) / w)
            }
            (Algorithm::PeakEwma, _) => self.by_min_cost(eligible, |b, w| {
                b.ewma_us() * (b.in_flight() as f64 + 1.0) / w
            }),
            (Algorithm::RoundRobin | Algorithm::Hash, _) => self.by_schedule(eligible),
        }
    }

    fn by_schedule(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| self.schedule[(start + i) % n])
            .find(|i| eligible(*i))
    }

    fn by_min_cost(
        &self,
        eligible: impl Fn(usize) -> bool,
        cost: impl Fn(&Backend, f64) -> f64,
    ) -> Option<usize> {
        // Start at a rotating offset so that ties spread instead of piling on backend 0.
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, f64)> = None;
        for i in (0..n).map(|i| (start + i) % n).filter(|i| eligible(*i)) {
            let c = cost(&self.backends[i], f64::from(self.weights[i]));
            if best.is_none_or(|(_, b)| c < b) {
                best = Some((i, c));
            }
        }
        best.map(|(i, _)| i)
    }

    fn by_rendezvous(&self, key: &[u8], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for i in (0..self.backends.len()).filter(|i| eligible(*i)) {
            let score = rendezvous_score(key, self.backends[i].addr, self.weights[i]);
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    /// How many backends may get traffic now.
    pub fn available_count(&self, now_ms: u64) -> usize {
        self.backends
            .iter()
            .filter(|b| b.is_available(now_ms))
            .count()
    }
}

/// nginx's smooth weighted round robin, unrolled into one cycle of picks: weights 5,1,1 give
/// `0 0 1 0 2 0 0` rather than `0 0 0 0 0 1 2`.
fn smooth_weighted_schedule(backends: &[BackendConfig]) -> Vec<usize> {
    let total: i64 = backends.iter().map(|b| i64::from(b.weight)).sum();
    let mut current = vec![0i64; backends.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, b) in current.iter_mut().zip(backends) {
            *c += i64::from(b.weight);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

/// Weighted rendezvous score: `-weight / ln(u)` with `u` in (0, 1) a hash of key and backend.
fn rendezvous_score(key: &[u8], addr: SocketAddr, weight: u32) -> f64 {
    let mut h = fnv1a(0xcbf2_9ce4_8422_2325, key);
    h = fnv1a(h, addr.to_string().as_bytes());
    let h = splitmix64(h);
    // 53 bits into (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PassiveConfig;
    use std::time::Duration;

    fn config(weights: &[u32], algorithm: Algorithm) -> PoolConfig {
        PoolConfig {
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, w)| BackendConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                    weight: *w,
                })
                .collect(),
            algorithm,
            hash_key: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            total_timeout: None,
            retries: 2,
            max_connections_per_backend: None,
            max_in_flight: None,
            retry_after_secs: 1,
            health_check: None,
            passive: PassiveConfig {
                max_failures: 2,
                eject: Duration::from_secs(5),
            },
        }
    }

    fn pool(n: usize) -> Pool {
        Pool::new("p", config(&vec![1; n], Algorithm::RoundRobin))
    }

    #[test]
    fn round_robin_visits_every_backend() {
        let p = pool(3);
        let picks: Vec<_> = (0..6).filter_map(|_| p.select(None, &[], 0)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let p = Pool::new("p", config(&[5, 1, 1], Algorithm::RoundRobin));
        let picks: Vec<_> = (0..7).filter_map(|_| p.select(None, &[], 0)).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let many: Vec<_> = (0..700).filter_map(|_| p.select(None, &[], 0)).collect();
        assert_eq!(many.iter().filter(|i| **i == 0).count(), 500);
    }

    #[test]
    fn retries_skip_tried_and_unhealthy_backends() {
        let p = pool(3);
        assert!(p.backends[1].record_failure(1));
        for _ in 0..5 {
            let pick = p.select(None, &[0], 0);
            assert_eq!(pick, Some(2));
        }
        assert_eq!(p.select(None, &[0, 2], 0), None);
        assert_eq!(p.available_count(0), 2);
    }

    #[test]
    fn rise_and_fall_thresholds() {
        let b = Backend::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert!(!b.record_failure(2));
        assert!(b.is_healthy());
        assert!(b.record_failure(2));
        assert!(!b.is_healthy());
        assert!(!b.record_success(2));
        assert!(!b.is_healthy());
        assert!(b.record_success(2));
        assert!(b.is_healthy());
    }

    #[test]
    fn passive_failures_eject_for_a_while() {
        let p = pool(2);
        let b = &p.backends[0];
        assert!(!b.record_passive_failure(2, 1_000, 100));
        b.record_passive_success();
        assert!(!b.record_passive_failure(2, 1_000, 100));
        assert!(b.record_passive_failure(2, 1_000, 100));
        assert!(b.is_ejected(500));
        assert_eq!(p.select(None, &[], 500), Some(1));
        assert_eq!(p.select(None, &[], 500), Some(1));
        assert!(!b.is_ejected(1_100));
        assert_eq!(p.available_count(1_100), 2);
    }

    #[test]
    fn least_connections_prefers_the_idle_backend_per_weight() {
        let p = Pool::new("p", config(&[1, 1, 3], Algorithm::LeastConnections));
        let (first, _l1) = p.pick(None, &[], 0).expect("pick");
        let (second, _l2) = p.pick(None, &[], 0).expect("pick");
        assert_eq!(
            first, 2,
            "the heaviest backend is the cheapest when all are idle"
        );
        assert_eq!(
            second, 2,
            "weight 3 with one in flight still costs less than 1/1"
        );
        let held: Vec<_> = (0..3).filter_map(|_| p.pick(None, &[], 0)).collect();
        assert_eq!(p.backends.iter().map(|b| b.in_flight()).sum::<usize>(), 5);
        drop(held);
        assert_eq!(p.backends.iter().map(|b| b.in_flight()).sum::<usize>(), 2);
    }

    #[test]
    fn peak_ewma_avoids_the_slow_backend_and_forgives_it() {
        let p = Pool::new("p", config(&[1, 1], Algorithm::PeakEwma));
        p.backends[0].record_latency(50_000.0, 0);
        p.backends[1].record_latency(1_000.0, 0);
        for _ in 0..4 {
            assert_eq!(p.select(None, &[], 0), Some(1));
        }
        // A fast sample long after decays the peak towards it.
        p.backends[0].record_latency(500.0, 60_000);
        assert!(p.backends[0].ewma_us() < 1_000.0);
        assert_eq!(p.select(None, &[], 60_000), Some(0));
    }

    #[test]
    fn hashing_is_sticky_and_moves_only_the_lost_backends_keys() {
        let p = Pool::new("p", config(&[1, 1, 1, 1], Algorithm::Hash));
        let keys: Vec<String> = (0..200).map(|i| format!("cart-{i}")).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| p.select(Some(k.as_bytes()), &[], 0))
            .collect();
        let again: Vec<_> = keys
            .iter()
            .map(|k| p.select(Some(k.as_bytes()), &[], 0))
            .collect();
        assert_eq!(before, again);
        for b in 0..4 {
            assert!(before.contains(&Some(b)), "backend {b} gets some keys");
        }
        assert!(p.backends[2].record_failure(1));
        for (k, was) in keys.iter().zip(&before) {
            let now = p.select(Some(k.as_bytes()), &[], 0);
            if *was == Some(2) {
                assert_ne!(now, Some(2));
            } else {
                assert_eq!(now, *was, "{k} moved although its backend is up");
            }
        }
    }

    #[test]
    fn the_connection_cap_and_the_pool_limit_hold() {
        let mut c = config(&[1, 1], Algorithm::RoundRobin);
        c.max_connections_per_backend = Some(1);
        c.max_in_flight = Some(2);
        let p = Arc::new(Pool::new("p", c));
        let a = p.pick(None, &[], 0).expect("first");
        let b = p.pick(None, &[], 0).expect("second");
        assert_ne!(a.0, b.0);
        assert!(p.pick(None, &[], 0).is_none(), "both backends at their cap");
        drop(a);
        assert!(p.pick(None, &[], 0).is_some());
        let p1 = p.try_admit().expect("1");
        let _p2 = p.try_admit().expect("2");
        assert!(p.try_admit().is_none(), "shed past the limit");
        drop(p1);
        assert!(p.try_admit().is_some());
    }
}
