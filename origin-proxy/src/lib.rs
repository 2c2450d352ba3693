//! `origin-proxy`: the origin tier, a config-driven Pingora proxy in front of the commerce
//! backends.
//!
//! It only lets through requests that came via the edge (a fresh, valid HMAC signature from the
//! edge worker, see the `edge-signature` crate) or from allowlisted networks, routes them by host
//! and path prefix to backend pools, balances round robin over healthy backends, checks health
//! actively, retries idempotent requests on another backend when a connect fails, and writes
//! one JSON access-log line per request.
//!
//! Layout: [`config`] (file format → validated `Config`), [`balance`] (pools and selection),
//! [`health`] (active checks), [`proxy`] (`impl ProxyHttp`, phases a few lines each),
//! [`phases`] (what each phase does), [`access_log`].
#![warn(missing_docs)]

pub mod access_log;
pub mod balance;
pub mod config;
pub mod health;
pub mod phases;
pub mod proxy;

use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// Builds the pingora server for a validated config: the proxy service on `listen` and the
/// health-check background service.
pub fn build_server(config: config::Config) -> Server {
    let mut conf = ServerConf {
        threads: config.threads,
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
    let listen = config.listen.to_string();
    let proxy = proxy::OriginProxy::new(config);
    let checker = health::HealthChecker::new(proxy.pools.clone());
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen);
    server.add_service(service);
    server.add_service(pingora::services::background::background_service(
        "health checks",
        checker,
    ));
    server
}
