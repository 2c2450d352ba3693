//! `origin-proxy`: the origin tier, a config-driven Pingora proxy in front of the commerce
//! backends.
//!
//! It only lets through requests that came via the edge (a fresh, valid HMAC signature from the
//! edge worker, see the `edge-signature` crate) or from allowlisted networks, routes them by
//! host, path prefix and method to backend pools (reads to replicas, writes to the primary when
//! a route splits them), balances with the pool's algorithm over eligible backends, checks
//! health actively and ejects failing backends passively, retries idempotent requests on
//! another backend, sheds load past a pool's concurrency limit with 503 + `Retry-After`,
//! exports Prometheus metrics and a health summary on an admin listener, reloads its config on
//! SIGHUP, and writes one JSON access-log line per request.
//!
//! Layout: [`config`] (file format → validated `Config`), [`state`] (the running config with
//! pools resolved, swapped on reload), [`balance`] (pools and selection), [`health`] (active
//! checks), [`fast`] (the HTTP/1.1 fast path on Pingora's listener), [`proxy`] (`impl ProxyHttp`
//! for everything else, phases a few lines each), [`phases`] (what each phase does), [`metrics`], [`admin`], [`reload`], [`access_log`].
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod balance;
pub mod config;
pub mod fast;
pub mod health;
pub mod metrics;
pub mod phases;
pub mod proxy;
pub mod reload;
pub mod state;
pub mod waf;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// Milliseconds of a monotonic clock that starts with the process.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Builds the pingora server for a validated config: the proxy service on `listen`, the admin
/// listener, the health checks, and (when `config_path` is given) reload on SIGHUP, starting
/// with the SIGHUPs in `hangups` (caught since `main` began, see [`reload`]).
pub fn build_server(
    config: config::Config,
    config_path: Option<PathBuf>,
    hangups: Option<reload::Hangups>,
) -> Server {
    let mut conf = ServerConf {
        threads: config.threads,
        // One thread has nobody to steal work from: a current-thread runtime per thread is
        // cheaper (no cross-thread queues; bench/proxy runs the proxy on one core).
        work_stealing: config.threads > 1,
        grace_period_seconds: Some(config.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout_secs),
        ..ServerConf::default()
    };
    conf.pid_file = std::env::temp_dir()
        .join(format!("origin-proxy-{}.pid", std::process::id()))
        .display()
        .to_string();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    monotonic_ms();
    let listen = config.listen.to_string();
    let admin_listen = config.admin_listen;
    let metrics = Arc::new(metrics::Metrics::default());
    let state: state::SharedState = Arc::new(ArcSwap::from_pointee(state::State::build(
        config, None, &metrics,
    )));
    let (notify, reloads) = tokio::sync::watch::channel(1);
    let proxy = proxy::OriginProxy {
        state: state.clone(),
        metrics: metrics.clone(),
        access_log: access_log::AccessLog,
    };
    let fallback = pingora::proxy::http_proxy(&server.configuration, proxy);
    let app = fast::OriginApp::new(fallback, state.clone(), metrics.clone());
    let mut service = pingora::services::listening::Service::new("origin proxy".to_owned(), app);
    service.add_tcp(&listen);
    server.add_service(service);
    if let Some(addr) = admin_listen {
        let mut admin = pingora::services::listening::Service::new(
            "admin".to_owned(),
            admin::AdminApp::new(state.clone(), metrics.clone()),
        );
        admin.threads = Some(1);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    server.add_service(pingora::services::background::background_service(
        "health checks",
        health::HealthChecker::new(state.clone(), reloads),
    ));
    if let Some(path) = config_path {
        server.add_service(pingora::services::background::background_service(
            "config reload",
            reload::Reloader::new(path, state, metrics, notify, hangups),
        ));
    }
    server
}
