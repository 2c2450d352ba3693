//! Active HTTP health checks: a background service that asks every backend of every pool for
//! its health path at the configured interval and flips backends in and out of selection.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::watch;

use crate::balance::{Backend, Pool};
use crate::config::HealthCheckConfig;
use crate::state::SharedState;

/// Runs the checks of all pools that configure one, restarting them when a reload swaps the
/// state (backends carried over keep their health).
pub struct HealthChecker {
    state: SharedState,
    reloads: watch::Receiver<u64>,
}

impl HealthChecker {
    /// A checker over the pools of `state`, told of reloads by `reloads`.
    pub fn new(state: SharedState, reloads: watch::Receiver<u64>) -> Self {
        HealthChecker { state, reloads }
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
            match (changed, ok) {
                (true, true) => {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, by = "health check", "backend back in the pool")
                }
                (true, false) => {
                    tracing::warn!(pool = %pool.name, backend = %backend.addr, by = "health check", "backend taken out of the pool")
                }
                _ => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.reloads.clone();
        loop {
            let state = self.state.load_full();
            let tasks: Vec<_> = state
                .pools
                .values()
                .filter_map(|(p, _)| p.config.health_check.clone().map(|hc| (p.clone(), hc)))
                .map(|(p, hc)| tokio::spawn(run_pool(p, hc, shutdown.clone())))
                .collect();
            let reloaded = tokio::select! {
                r = reloads.changed() => r.is_ok(),
                _ = shutdown.changed() => false,
            };
            for t in &tasks {
                t.abort();
            }
            if !reloaded {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn hc() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        }
    }

    async fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_2xx_answer_is_healthy_anything_else_is_not() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert!(check(&Backend::new(ok), &hc()).await);
        let bad = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(!check(&Backend::new(bad), &hc()).await);
        let junk = serve_once(b"SSH-2.0-OpenSSH\r\n").await;
        assert!(!check(&Backend::new(junk), &hc()).await);
        // Nothing listens on a port we just released.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert!(!check(&Backend::new(closed), &hc()).await);
    }

    #[tokio::test]
    async fn a_silent_backend_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let _keep = tokio::spawn(async move {
            let (_s, _) = l.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let start = std::time::Instant::now();
        assert!(!check(&Backend::new(addr), &hc()).await);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
