//! Dispatch: the edge's own endpoints, sale pages, then the WAF and the origin.

use worker::{Context, Env, Request, Response, Result};

use crate::config::EdgeConfig;
use crate::waf::{self, Decision, WafSettings};
use crate::{error, forward, gate, limits, pages};

/// Prefix of the edge's own endpoints; never forwarded.
pub const EDGE_PREFIX: &str = "/__edge/";

/// Handles one request: the edge's endpoints, then sale pages (released version or static
/// assets), then the WAF, then the origin.
pub async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    cfg: &EdgeConfig,
    now_ms: u64,
) -> Result<Response> {
    let path = req.path();
    if let Some(endpoint) = path.strip_prefix(EDGE_PREFIX) {
        return edge_endpoint(endpoint, &req, env).await;
    }
    if let Some(queued) = gate::handle(&req, env, now_ms).await? {
        return Ok(queued);
    }
    if let Some(page) = pages::serve(&req, env, now_ms).await? {
        return Ok(page);
    }
    let sent_id = req.headers().get(edge_signature::REQUEST_ID_HEADER)?;
    let id = forward::request_id(sent_id.as_deref(), forward::fresh_request_id);
    let body = match forward::read_body(&mut req, &id).await? {
        Ok(body) => body,
        Err(too_large) => return Ok(too_large),
    };
    let engine = match WafSettings::from_env(env).and_then(|s| waf::engine(&s)) {
        Ok(engine) => engine,
        Err(e) => return error::respond(&e, Some(&id)),
    };
    let url = req.url()?;
    let view = waf::http_request(
        req.method().as_ref(),
        &forward::path_and_query(&url),
        req.headers().entries().collect(),
        body.as_deref().unwrap_or_default(),
        forward::client_ip(&req),
        req.cf().and_then(|cf| cf.country()),
    );
    let (decision, global) = engine.inspect(&view, now_ms, &id);
    let stop = match decision {
        Decision::Stop {
            status,
            retry_after,
        } => Some((status, retry_after)),
        Decision::Pass if global.is_empty() => None,
        Decision::Pass => {
            let (stop, exceeded) = limits::check_all(env, &global, now_ms).await;
            for (rule, mode) in &exceeded {
                engine.count_global(rule, mode);
                worker::console_log!(
                    "{}",
                    serde_json::json!({ "waf": "global_limit", "request_id": id, "rule": rule, "mode": mode })
                );
            }
            stop.map(|s| (s.status, s.retry_after))
        }
    };
    if let Some((status, retry_after)) = stop {
        let wants_json = req
            .headers()
            .get("accept")?
            .is_some_and(|a| a.contains("application/json"));
        return waf::stop_response(status, retry_after, &id, wants_json);
    }
    forward::to_origin(req, body, &id, env, ctx, cfg, now_ms).await
}

async fn edge_endpoint(endpoint: &str, req: &Request, env: &Env) -> Result<Response> {
    let resp = match endpoint {
        "health" => {
            let waf = WafSettings::from_env(env).and_then(|s| waf::engine(&s));
            Response::from_json(&serde_json::json!({
                "status": if waf.is_ok() { "ok" } else { "misconfigured" },
                "service": "edge-worker",
                "version": env!("CARGO_PKG_VERSION"),
                "waf": match &waf {
                    Ok(engine) => engine.describe(),
                    Err(e) => serde_json::json!({ "error": e.reason() }),
                },
            }))?
        }
        // The waiting room's counters (rate, admitted, waiting, ...); needs the admin token.
        "room" if authorized(req, env)? => return gate::stats(env).await,
        // Per-isolate WAF match counts, for the security team; needs the admin token.
        "waf" if authorized(req, env)? => {
            match WafSettings::from_env(env).and_then(|s| waf::engine(&s)) {
                Ok(engine) => {
                    Response::from_json(&serde_json::json!({ "matches": engine.counts() }))?
                }
                Err(e) => return error::respond(&e, None),
            }
        }
        _ => Response::from_json(&serde_json::json!({ "error": "no such edge endpoint" }))?
            .with_status(404),
    };
    resp.headers().set("cache-control", "no-store")?;
    Ok(resp)
}

/// Whether the request carries `Authorization: Bearer <EDGE_ADMIN_TOKEN>`. Without that secret
/// (at least 16 characters) the admin endpoints are off.
fn authorized(req: &Request, env: &Env) -> Result<bool> {
    let Ok(token) = env.secret("EDGE_ADMIN_TOKEN").map(|t| t.to_string()) else {
        return Ok(false);
    };
    if token.len() < 16 {
        return Ok(false);
    }
    let expected = format!("Bearer {token}");
    let sent = req.headers().get("authorization")?.unwrap_or_default();
    // Comparing digests leaks nothing about the token through timing.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    Ok(digest(&sent).as_ref() == digest(&expected).as_ref())
}
