//! `edge-worker`: the edge tier, a Rust worker compiled to WASM for Cloudflare Workers
//! (locally workerd via `wrangler dev`).
//!
//! Sale pages are Workers Static Assets and never reach this code unless a path is listed in
//! `run_worker_first` (see `wrangler.toml`). Everything else arrives here: [`router`] answers the
//! edge's own endpoints and sends the rest through [`forward`] to the origin proxy, signed with
//! the edge signature so that the origin can tell it came through the edge.
//!
//! The entry point below is deliberately thin: it reads the configuration from the
//! environment and hands the request to the router.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod forward;
pub mod router;

use worker::{event, Context, Env, Request, Response, Result};

/// The fetch handler: configuration from the environment, then the router.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let now_ms = worker::Date::now().as_millis();
    match config::EdgeConfig::from_env(&env) {
        Ok(cfg) => router::handle(req, &env, &cfg, now_ms).await,
        Err(e) => error::respond(&e, None),
    }
}
