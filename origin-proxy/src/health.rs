//! Active HTTP health checks: a background service that asks every backend of every pool for
//! its health path at the configured interval and flips backends in and out of selection.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balance::{Backend, Pool};
use crate::config::HealthCheckConfig;

/// Runs the checks of all pools that configure one.
pub struct HealthChecker {
    pools: Vec<Arc<Pool>>,
}

impl HealthChecker {
    /// A checker over these pools.
    pub fn new(pools: Vec<Arc<Pool>>) -> Self {
        HealthChecker { pools }
    }
}

/// One check: `GET path` over a fresh connection; healthy when the status is 2xx.
pub async fn check(backend: &Backend, hc: &HealthCheckConfig) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(backend.addr).await?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: origin-proxy-health\r\nConnection: close\r\n\r\n",
            hc.path, backend.addr
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 32];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut buf[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Ok::<_, std::io::Error>(buf[..read].starts_with(b"HTTP/1.") && read >= 12 && buf[9] == b'2')
    };
    matches!(
        tokio::time::timeout(hc.timeout, attempt).await,
        Ok(Ok(true))
    )
}

async fn run_pool(pool: Arc<Pool>, hc: HealthCheckConfig, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for backend in &pool.backends {
            let ok = check(backend, &hc).await;
            let changed = if ok {
                backend.record_success(hc.rise)
            } else {
                backend.record_failure(hc.fall)
            };
            if changed {
                tracing::warn!(
                    pool = %pool.name,
                    backend = %backend.addr,
                    healthy = ok,
                    "backend health changed"
                );
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .pools
            .iter()
            .filter_map(|p| p.config.health_check.clone().map(|hc| (p.clone(), hc)))
            .map(|(p, hc)| tokio::spawn(run_pool(p, hc, shutdown.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
