//! Config reload on SIGHUP.
//!
//! The new file is read and validated in full first; a file that fails to load never replaces
//! the running config (the reason is logged and counted). A good one becomes a new [`State`]
//! swapped in atomically: requests in flight finish on the state they started with, new ones
//! see the new routes and pools. Pools with unchanged settings are kept as they are, and
//! backends keep their health by address. The listen addresses and thread count are fixed at
//! start; changing them needs a restart (or pingora's graceful upgrade), which is logged.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::state::{SharedState, State};

/// Swaps `config` in as the running state; returns the new generation.
pub fn apply(state: &SharedState, config: Config, metrics: &Metrics) -> u64 {
    let old = state.load_full();
    for (what, changed) in [
        ("listen", old.config.listen != config.listen),
        ("threads", old.config.threads != config.threads),
        (
            "admin.listen",
            old.config.admin_listen != config.admin_listen,
        ),
    ] {
        if changed {
            tracing::warn!(
                key = what,
                "changed in the config file; it takes effect only after a restart"
            );
        }
    }
    let new = State::build(config, Some(&old), metrics);
    let generation = new.generation;
    state.store(Arc::new(new));
    metrics.reloads.fetch_add(1, Ordering::Relaxed);
    generation
}

/// Reloads the config file on SIGHUP and tells the health checker.
pub struct Reloader {
    path: PathBuf,
    state: SharedState,
    metrics: Arc<Metrics>,
    notify: watch::Sender<u64>,
}

impl Reloader {
    /// A reloader of the file at `path`.
    pub fn new(
        path: PathBuf,
        state: SharedState,
        metrics: Arc<Metrics>,
        notify: watch::Sender<u64>,
    ) -> Self {
        Reloader {
            path,
            state,
            metrics,
            notify,
        }
    }

    /// Loads the file and applies it, or keeps the running config and says why.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        match Config::load(&self.path) {
            Ok(config) => {
                let generation = apply(&self.state, config, &self.metrics);
                self.notify.send_replace(generation);
                tracing::info!(generation, file = %self.path.display(), "config reloaded");
                Ok(generation)
            }
            Err(e) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "config reload refused; the running config stays");
                Err(e)
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; config reload is off");
                return;
            }
        };
        tracing::info!(file = %self.path.display(), "ready to reload the config on SIGHUP");
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let _ = self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
