//! Dispatch: the edge's own endpoints, then everything else to the origin.

use worker::{Context, Env, Request, Response, Result};

use crate::config::EdgeConfig;
use crate::{forward, pages};

/// Prefix of the edge's own endpoints; never forwarded.
pub const EDGE_PREFIX: &str = "/__edge/";

/// Handles one request: the edge's endpoints, then sale pages (released version or static
/// assets), then the origin.
pub async fn handle(
    req: Request,
    env: &Env,
    ctx: &Context,
    cfg: &EdgeConfig,
    now_ms: u64,
) -> Result<Response> {
    let path = req.path();
    if let Some(endpoint) = path.strip_prefix(EDGE_PREFIX) {
        return edge_endpoint(endpoint);
    }
    if let Some(page) = pages::serve(&req, env, now_ms).await? {
        return Ok(page);
    }
    forward::to_origin(req, env, ctx, cfg, now_ms).await
}

fn edge_endpoint(endpoint: &str) -> Result<Response> {
    match endpoint {
        "health" => {
            let resp = Response::from_json(&serde_json::json!({
                "status": "ok",
                "service": "edge-worker",
                "version": env!("CARGO_PKG_VERSION"),
            }))?;
            resp.headers().set("cache-control", "no-store")?;
            Ok(resp)
        }
        _ => Ok(
            Response::from_json(&serde_json::json!({ "error": "no such edge endpoint" }))?
                .with_status(404),
        ),
    }
}
