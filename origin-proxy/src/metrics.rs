//! Metrics: a small hand-rolled registry of atomics, rendered as Prometheus text on the admin
//! listener, plus a recent window that feeds the JSON health summary the waiting room reads.
//!
//! Per-request cost is a handful of relaxed atomic adds on counters resolved when the config is
//! loaded (a route's status counters, a pool's histogram); no lock and no map lookup on the
//! request path. Label sets that are only known at run time (the WAF's rule ids) go through a
//! read-mostly map.
//!
//! The recent window is a ring of one-second slots; a slot is reset by the first request of a
//! new second. Concurrent requests at the turn of a second may land in the old count; the
//! summary is an estimate, which is all a waiting room needs to set its admission rate.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds covered by the health summary.
pub const WINDOW_SECS: u64 = 10;
const SLOTS: usize = WINDOW_SECS as usize + 2;

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of [`LATENCY_BUCKETS`], plus one for +Inf; not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        self.buckets[bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn bucket_of(seconds: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|le| seconds <= *le)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Responses of one route by status code.
#[derive(Debug)]
pub struct RouteStats {
    /// Index = status code (0 = no response sent); 600 and above are folded into 599.
    by_status: Box<[AtomicU64]>,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            by_status: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RouteStats {
    /// Counts one response.
    pub fn count(&self, status: u16) {
        self.by_status[usize::from(status.min(599))].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Time from the start of an attempt to the backend's response head.
    pub latency: Histogram,
    /// Attempts retried on another backend.
    pub retries: AtomicU64,
    /// Requests shed by the pool's concurrency limit.
    pub sheds: AtomicU64,
    /// Passive ejections of its backends.
    pub ejections: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    responses: AtomicU64,
    errors_5xx: AtomicU64,
    sheds: AtomicU64,
}

/// The last [`WINDOW_SECS`] seconds of responses, latencies and sheds.
#[derive(Debug, Default)]
pub struct RecentWindow {
    slots: [Slot; SLOTS],
}

impl RecentWindow {
    fn slot(&self, now_secs: u64) -> &Slot {
        // Seconds start at 1 so that a fresh slot (second 0) is never taken as current.
        let now = now_secs + 1;
        let slot = &self.slots[(now % SLOTS as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for b in &slot.latency {
                b.store(0, Ordering::Relaxed);
            }
            slot.responses.store(0, Ordering::Relaxed);
            slot.errors_5xx.store(0, Ordering::Relaxed);
            slot.sheds.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Records a response to a client.
    pub fn response(&self, status: u16, now_secs: u64) {
        let slot = self.slot(now_secs);
        slot.responses.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an upstream latency.
    pub fn latency(&self, seconds: f64, now_secs: u64) {
        self.slot(now_secs).latency[bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a shed request.
    pub fn shed(&self, now_secs: u64) {
        self.slot(now_secs).sheds.fetch_add(1, Ordering::Relaxed);
    }

    /// Sums the complete seconds of the window ending before `now_secs`, and the current one.
    pub fn summary(&self, now_secs: u64) -> WindowSummary {
        let now = now_secs + 1;
        let oldest = now.saturating_sub(WINDOW_SECS);
        let mut s = WindowSummary::default();
        let mut latency = [0u64; LATENCY_BUCKETS.len() + 1];
        for slot in &self.slots {
            let sec = slot.second.load(Ordering::Acquire);
            if sec == 0 || sec < oldest || sec > now {
                continue;
            }
            s.responses += slot.responses.load(Ordering::Relaxed);
            s.errors_5xx += slot.errors_5xx.load(Ordering::Relaxed);
            s.sheds += slot.sheds.load(Ordering::Relaxed);
            for (acc, b) in latency.iter_mut().zip(&slot.latency) {
                *acc += b.load(Ordering::Relaxed);
            }
        }
        s.upstream_p99_seconds = quantile(&latency, 0.99);
        s
    }
}

/// Upper bound of the bucket holding quantile `q`; `None` without samples; +Inf counts as the
/// largest finite bound.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil() as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank.max(1) {
            return Some(LATENCY_BUCKETS[i.min(LATENCY_BUCKETS.len() - 1)]);
        }
    }
    LATENCY_BUCKETS.last().copied()
}

/// What the recent window saw.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WindowSummary {
    /// Responses sent.
    pub responses: u64,
    /// Of which with a 5xx status (including sheds).
    pub errors_5xx: u64,
    /// Requests shed.
    pub sheds: u64,
    /// The 99th percentile of upstream latency (a bucket bound), if any request went upstream.
    pub upstream_p99_seconds: Option<f64>,
}

type WafKey = (String, String, String);

/// The registry: created once, kept across config reloads.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteStats>>>,
    pools: Mutex<BTreeMap<String, Arc<PoolStats>>>,
    waf: RwLock<HashMap<WafKey, Arc<AtomicU64>>>,
    /// The recent window behind `/health`.
    pub window: RecentWindow,
    /// Config reloads applied.
    pub reloads: AtomicU64,
    /// Config reloads refused (the running config stayed).
    pub reload_failures: AtomicU64,
    /// Requests the HTTP/1.1 fast path served.
    pub fast_path_requests: AtomicU64,
    /// Client connections handed to Pingora's proxy (see [`crate::fast`]).
    pub pingora_handovers: AtomicU64,
}

impl Metrics {
    /// The counters of a route (created on first use); resolved once per config load.
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.entry(name.to_owned()).or_default().clone()
    }

    /// The counters of a pool (created on first use); resolved once per config load.
    pub fn pool(&self, name: &str) -> Arc<PoolStats> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.entry(name.to_owned()).or_default().clone()
    }

    /// Counts one WAF match: the hook the WAF integration calls for every rule that matched.
    /// `action` is what the rule asks for (`block`, `log`, ...), `mode` whether it was enforced
    /// (`blocking`) or only logged (`log-only`).
    pub fn record_waf_match(&self, rule: &str, action: &str, mode: &str) {
        {
            let map = self.waf.read().unwrap_or_else(|p| p.into_inner());
            let key = (rule.to_owned(), action.to_owned(), mode.to_owned());
            if let Some(c) = map.get(&key) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.waf.write().unwrap_or_else(|p| p.into_inner());
        // Bounded: rule ids come from the loaded rule set, but never let a bug grow it forever.
        if map.len() >= 10_000 {
            return;
        }
        map.entry((rule.to_owned(), action.to_owned(), mode.to_owned()))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for everything counted; `gauges` adds the state-derived families
    /// (backend health, in-flight requests) that the caller knows.
    pub fn render(&self, gauges: &str) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str("# HELP proxy_requests_total Responses sent, by route and status.\n");
        out.push_str("# TYPE proxy_requests_total counter\n");
        for (name, stats) in self.routes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (status, c) in stats.by_status.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "proxy_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                        escape(name)
                    );
                }
            }
        }
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP upstream_latency_seconds Time from an attempt's start to the backend's response head.\n");
        out.push_str("# TYPE upstream_latency_seconds histogram\n");
        for (name, stats) in pools.iter() {
            let labels = format!("pool=\"{}\"", escape(name));
            stats
                .latency
                .render(&mut out, "upstream_latency_seconds", &labels);
        }
        for (family, help, get) in [
            (
                "upstream_retries_total",
                "Attempts retried on another backend.",
                (|s: &PoolStats| s.retries.load(Ordering::Relaxed)) as fn(&PoolStats) -> u64,
            ),
            (
                "proxy_shed_total",
                "Requests answered 503 by the pool's concurrency limit.",
                |s: &PoolStats| s.sheds.load(Ordering::Relaxed),
            ),
            (
                "backend_ejections_total",
                "Passive ejections after consecutive failures.",
                |s: &PoolStats| s.ejections.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for (name, stats) in pools.iter() {
                let _ = writeln!(out, "{family}{{pool=\"{}\"}} {}", escape(name), get(stats));
            }
        }
        drop(pools);
        out.push_str("# HELP waf_matches_total WAF rule matches, by rule, action and mode.\n");
        out.push_str("# TYPE waf_matches_total counter\n");
        let waf = self.waf.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<_> = waf.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for ((rule, action, mode), c) in rows {
            let _ = writeln!(
                out,
                "waf_matches_total{{rule=\"{}\",action=\"{}\",mode=\"{}\"}} {}",
                escape(rule),
                escape(action),
                escape(mode),
                c.load(Ordering::Relaxed)
            );
        }
        drop(waf);
        for (family, help, n) in [
            (
                "config_reloads_total",
                "Config reloads applied.",
                self.reloads.load(Ordering::Relaxed),
            ),
            (
                "config_reload_failures_total",
                "Config reloads refused; the running config stayed.",
                self.reload_failures.load(Ordering::Relaxed),
            ),
            (
                "http1_fast_path_requests_total",
                "Requests served by the HTTP/1.1 fast path.",
                self.fast_path_requests.load(Ordering::Relaxed),
            ),
            (
                "pingora_handovers_total",
                "Client connections handed to Pingora's proxy (requests the fast path does not take).",
                self.pingora_handovers.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {family} {help}\n# TYPE {family} counter\n{family} {n}"
            );
        }
        out.push_str(gauges);
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = Metrics::default();
        let r = m.route("*/api/");
        r.count(200);
        r.count(200);
        r.count(503);
        m.pool("shop").latency.observe(0.003);
        m.pool("shop").sheds.fetch_add(2, Ordering::Relaxed);
        m.record_waf_match("942100", "block", "blocking");
        m.record_waf_match("942100", "block", "blocking");
        let text = m.render("");
        assert!(
            text.contains("proxy_requests_total{route=\"*/api/\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("proxy_requests_total{route=\"*/api/\",status=\"503\"} 1"));
        assert!(text.contains("upstream_latency_seconds_bucket{pool=\"shop\",le=\"0.0025\"} 0"));
        assert!(text.contains("upstream_latency_seconds_bucket{pool=\"shop\",le=\"0.005\"} 1"));
        assert!(text.contains("upstream_latency_seconds_count{pool=\"shop\"} 1"));
        assert!(text.contains("proxy_shed_total{pool=\"shop\"} 2"));
        assert!(text
            .contains("waf_matches_total{rule=\"942100\",action=\"block\",mode=\"blocking\"} 2"));
    }

    #[test]
    fn the_window_forgets_old_seconds_and_finds_the_p99() {
        let w = RecentWindow::default();
        for _ in 0..98 {
            w.latency(0.002, 100);
            w.response(200, 100);
        }
        w.latency(0.4, 101);
        w.latency(0.4, 101);
        w.response(502, 101);
        w.shed(101);
        let s = w.summary(101);
        assert_eq!(s.responses, 99);
        assert_eq!(s.errors_5xx, 1);
        assert_eq!(s.sheds, 1);
        assert_eq!(s.upstream_p99_seconds, Some(0.5));
        let later = w.summary(100 + WINDOW_SECS + 1);
        assert_eq!(later.responses, 1, "second 100 left the window");
        // A slot reused for a new second starts from zero.
        w.response(200, 100 + SLOTS as u64);
        assert_eq!(w.summary(100 + SLOTS as u64).responses, 1);
        assert_eq!(w.summary(5_000), WindowSummary::default());
    }
}
