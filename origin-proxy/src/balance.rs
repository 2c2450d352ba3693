//! Backend pools: round-robin selection over healthy backends, with the state that active
//! health checks and failed connects update.
//!
//! Selection is lock-free: one atomic counter per pool and one health word per backend. A
//! retry passes the backends already tried so that it lands on a different one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::PoolConfig;

/// One backend and its health.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    healthy: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            // Optimistic start: traffic flows before the first check has run.
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// A healthy backend outside any pool, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(addr: SocketAddr) -> Self {
        Backend::new(addr)
    }

    /// Whether selection may pick it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
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

    /// Records a failed check or connect; `fall` in a row take the backend out. Returns whether
    /// the backend's state changed.
    pub fn record_failure(&self, fall: u32) -> bool {
        self.successes.store(0, Ordering::Relaxed);
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        n >= fall && self.healthy.swap(false, Ordering::Relaxed)
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
    next: AtomicUsize,
}

impl Pool {
    /// A pool from its config; every backend starts healthy.
    pub fn new(name: &str, config: PoolConfig) -> Self {
        let backends = config
            .backends
            .iter()
            .map(|a| Arc::new(Backend::new(*a)))
            .collect();
        Pool {
            name: name.to_owned(),
            config,
            backends,
            next: AtomicUsize::new(0),
        }
    }

    /// The next healthy backend in round-robin order that is not in `tried` (indices into
    /// [`Pool::backends`]), or `None` when every healthy backend has been tried.
    pub fn select(&self, tried: &[usize]) -> Option<usize> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i) && self.backends[*i].is_healthy())
    }

    /// How many backends are healthy now.
    pub fn healthy_count(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(n: u16) -> Pool {
        Pool::new(
            "p",
            PoolConfig {
                backends: (0..n)
                    .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
                    .collect(),
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                retries: 2,
                health_check: None,
            },
        )
    }

    #[test]
    fn round_robin_visits_every_backend() {
        let p = pool(3);
        let picks: Vec<_> = (0..6).filter_map(|_| p.select(&[])).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn retries_skip_tried_and_unhealthy_backends() {
        let p = pool(3);
        assert!(p.backends[1].record_failure(1));
        for _ in 0..5 {
            let pick = p.select(&[0]);
            assert_eq!(pick, Some(2));
        }
        assert_eq!(p.select(&[0, 2]), None);
        assert_eq!(p.healthy_count(), 2);
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
}
