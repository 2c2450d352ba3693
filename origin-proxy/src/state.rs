//! The running state: a validated config with its pools and per-route counters resolved, held
//! behind an [`ArcSwap`] so that a reload swaps it in one atomic step.
//!
//! A request loads the state once, in its first phase, and keeps that `Arc` (and its pool and
//! backend slots) until it ends: a reload never changes the ground under an in-flight request.
//! A new state takes over the pools of the old one whose settings are unchanged, and the
//! backends (health, ejections, in-flight counts, latency) of changed pools by address.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::balance::Pool;
use crate::config::{Config, Route};
use crate::metrics::{Metrics, PoolStats, RouteStats};

/// The state shared by all requests, swapped on reload.
pub type SharedState = Arc<ArcSwap<State>>;

/// A route with its pools and counters resolved.
#[derive(Debug)]
pub struct ResolvedRoute {
    /// The route as configured.
    pub route: Route,
    /// The primary pool.
    pub pool: Arc<Pool>,
    /// The replica pool for safe methods, if any.
    pub read_pool: Option<Arc<Pool>>,
    /// Its response counters.
    pub stats: Arc<RouteStats>,
}

impl ResolvedRoute {
    /// The pool serving a request with this method.
    pub fn pool_for(&self, method: &str) -> &Arc<Pool> {
        match &self.read_pool {
            Some(read) if crate::config::is_safe(method) => read,
            _ => &self.pool,
        }
    }
}

/// One generation of the running config.
#[derive(Debug)]
pub struct State {
    /// The config it was built from.
    pub config: Config,
    /// Pools by name, with their counters.
    pub pools: BTreeMap<String, (Arc<Pool>, Arc<PoolStats>)>,
    /// Routes in config order.
    pub routes: Vec<ResolvedRoute>,
    /// 1 for the config loaded at start, +1 per applied reload.
    pub generation: u64,
}

impl State {
    /// Builds the state of `config`, taking over what `previous` already knows.
    pub fn build(config: Config, previous: Option<&State>, metrics: &Metrics) -> State {
        let mut pools = BTreeMap::new();
        for (name, pc) in &config.pools {
            let old = previous.and_then(|p| p.pools.get(name)).map(|(p, _)| p);
            let pool = match old {
                Some(old) if old.config == *pc => old.clone(),
                _ => {
                    let known = |addr| {
                        previous?
                            .pools
                            .values()
                            .flat_map(|(p, _)| p.backends.iter())
                            .find(|b| b.addr == addr)
                            .cloned()
                    };
                    Arc::new(Pool::with_backends(name, pc.clone(), known))
                }
            };
            pools.insert(name.clone(), (pool, metrics.pool(name)));
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                // Validation guarantees both pools exist.
                let pool = pools.get(&r.pool)?.0.clone();
                let read_pool = match &r.read_pool {
                    Some(name) => Some(pools.get(name)?.0.clone()),
                    None => None,
                };
                Some(ResolvedRoute {
                    route: r.clone(),
                    pool,
                    read_pool,
                    stats: metrics.route(&r.name),
                })
            })
            .collect();
        State {
            config,
            pools,
            routes,
            generation: previous.map_or(1, |p| p.generation + 1),
        }
    }

    /// The route for a request.
    pub fn route(&self, host: Option<&str>, path: &str, method: &str) -> Option<&ResolvedRoute> {
        self.config
            .route_index(host, path, Some(method))
            .and_then(|i| self.routes.get(i))
    }

    /// The counters of a pool.
    pub fn pool_stats(&self, name: &str) -> Option<&Arc<PoolStats>> {
        self.pools.get(name).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(shop_backends: &str) -> Config {
        let text = format!(
            r#"
listen = "127.0.0.1:8080"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.shop]
backends = [{shop_backends}]
[pools.replicas]
backends = ["127.0.0.1:9101"]
[[routes]]
path-prefix = "/"
pool = "shop"
read-pool = "replicas"
"#
        );
        Config::from_toml(Path::new("p.toml"), &text, &|_| None).expect("valid")
    }

    #[test]
    fn reads_go_to_replicas_and_writes_to_the_primary() {
        let m = Metrics::default();
        let s = State::build(config("\"127.0.0.1:9001\""), None, &m);
        let r = s.route(None, "/api/cart", "POST").expect("route");
        assert_eq!(r.pool_for("POST").name, "shop");
        assert_eq!(r.pool_for("GET").name, "replicas");
        assert_eq!(r.pool_for("HEAD").name, "replicas");
        assert_eq!(r.pool_for("DELETE").name, "shop");
    }

    #[test]
    fn a_rebuild_keeps_unchanged_pools_and_known_backends() {
        let m = Metrics::default();
        let first = State::build(config("\"127.0.0.1:9001\""), None, &m);
        first.pools["shop"].0.backends[0].record_failure(1);
        let second = State::build(
            config("\"127.0.0.1:9001\", \"127.0.0.1:9002\""),
            Some(&first),
            &m,
        );
        assert_eq!(second.generation, 2);
        assert!(Arc::ptr_eq(
            &first.pools["replicas"].0,
            &second.pools["replicas"].0
        ));
        let shop = &second.pools["shop"].0;
        assert_eq!(shop.backends.len(), 2);
        assert!(Arc::ptr_eq(
            &shop.backends[0],
            &first.pools["shop"].0.backends[0]
        ));
        assert!(!shop.backends[0].is_healthy(), "health carried over");
        assert!(shop.backends[1].is_healthy());
        assert!(Arc::ptr_eq(&first.routes[0].stats, &second.routes[0].stats));
    }
}
