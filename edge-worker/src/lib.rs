//! `edge-worker`: the edge tier, a Rust worker compiled to WASM for Cloudflare Workers
//! (locally workerd via `wrangler dev`).
//!
//! Every request arrives here first (`run_worker_first = true` in `wrangler.toml`), because the
//! worker decides which version of a sale page is live ([`pages`]: a release scheduled through
//! KV by `static-sync`, else the Workers Static Assets baseline). [`router`] answers the edge's
//! own endpoints, serves pages, and sends the rest through [`forward`] to the origin proxy,
//! signed with the edge signature so that the origin can tell it came through the edge; GETs
//! pass through the edge cache ([`cache`]) with stale-if-error and a maintenance page.
//!
//! The entry point below is deliberately thin: it reads the configuration from the
//! environment and hands the request to the router.
#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod error;
pub mod forward;
pub mod pages;
pub mod router;
pub mod waf;

use worker::{event, Context, Env, Request, Response, Result};

/// The fetch handler: configuration from the environment, then the router.
#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let now_ms = worker::Date::now().as_millis();
    match config::EdgeConfig::from_env(&env) {
        Ok(cfg) => router::handle(req, &env, &ctx, &cfg, now_ms).await,
        Err(e) => error::respond(&e, None),
    }
}
