//! Config reload on SIGHUP.
//!
//! The new file is read and validated in full first; a file that fails to load never replaces
//! the running config (the reason is logged and counted). A good one becomes a new [`State`]
//! swapped in atomically: requests in flight finish on the state they started with, new ones
//! see the new routes and pools. Pools with unchanged settings are kept as they are, and
//! backends keep their health by address. The listen addresses and thread count are fixed at
//! start; changing them needs a restart (or pingora's graceful upgrade), which is logged.
//!
//! SIGHUP is caught from the first line of `main` ([`Hangups::catch`]), before the config, the
//! CRS and pingora's runtimes are loaded: its default action is to terminate the process, and a
//! platform's "reload everything" sweep must never kill a proxy that happens to be starting. A
//! SIGHUP that arrives before the [`Reloader`] runs is kept, not dropped: the reloader does one
//! reload as soon as it starts (several early ones coalesce into that one), because whoever
//! sent it expects the file on disk at that moment to be in effect, and the start-up may have
//! read the file before it changed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};
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

/// SIGHUP, caught since [`Hangups::catch`] and kept until the [`Reloader`] takes it over.
///
/// Tokio installs its handler for the rest of the process when the first SIGHUP listener is
/// made, and delivers a signal to every listener that existed when it arrived, through whichever
/// runtime reads its signal pipe next. So a listener made on a throwaway runtime in `main` and
/// polled later on pingora's reloader runtime sees a SIGHUP that arrived in between. (The first
/// half is tokio's documented behaviour, the second how tokio 1.x works; the end-to-end test
/// `a_sighup_while_the_proxy_loads_its_config_is_not_fatal_and_reloads_once_it_runs` holds
/// both.)
pub struct Hangups(Signal);

impl Hangups {
    /// Catches SIGHUP from now on. Call it first thing in `main`, before anything slow.
    pub fn catch() -> std::io::Result<Hangups> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let _entered = runtime.enter();
        signal(SignalKind::hangup()).map(Hangups)
    }
}

/// Reloads the config file on SIGHUP and tells the health checker.
pub struct Reloader {
    path: PathBuf,
    state: SharedState,
    metrics: Arc<Metrics>,
    notify: watch::Sender<u64>,
    hangups: Mutex<Option<Hangups>>,
}

impl Reloader {
    /// A reloader of the file at `path`. `hangups` are the SIGHUPs caught since `main` started
    /// ([`Hangups::catch`]); without them the reloader listens only once it runs.
    pub fn new(
        path: PathBuf,
        state: SharedState,
        metrics: Arc<Metrics>,
        notify: watch::Sender<u64>,
        hangups: Option<Hangups>,
    ) -> Self {
        Reloader {
            path,
            state,
            metrics,
            notify,
            hangups: Mutex::new(hangups),
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
        let early = self.hangups.lock().ok().and_then(|mut h| h.take());
        let mut hup = match early.map_or_else(|| signal(SignalKind::hangup()), |h| Ok(h.0)) {
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
