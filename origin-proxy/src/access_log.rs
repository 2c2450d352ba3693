//! One JSON line per request on standard output: request id, route, backend, status and
//! durations. Never bodies, cookies, query strings or secrets.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::AccessLogTarget;
use crate::proxy::RequestCtx;

/// The access log sink; its target comes from the config the request ran on, so a reload can
/// turn it on or off.
#[derive(Debug, Default)]
pub struct AccessLog;

impl AccessLog {
    /// Writes the line for one finished request.
    pub fn write(
        &self,
        method: &str,
        path: &str,
        status: u16,
        error: Option<&str>,
        ctx: &RequestCtx,
    ) {
        let target = ctx.state.as_ref().map(|s| &s.config.access_log);
        if target == Some(&AccessLogTarget::Off) {
            return;
        }
        let line = entry(method, path, status, error, ctx);
        let mut out = std::io::stdout().lock();
        // A full or closed stdout must not fail the request; the line is lost.
        let _ = writeln!(out, "{line}");
    }
}

/// The JSON object for one request.
pub fn entry(
    method: &str,
    path: &str,
    status: u16,
    error: Option<&str>,
    ctx: &RequestCtx,
) -> serde_json::Value {
    let backend = ctx
        .pool
        .as_ref()
        .zip(ctx.backend)
        .and_then(|(p, i)| p.backends.get(i))
        .map(|b| b.addr.to_string());
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    serde_json::json!({
        "ts_ms": ts,
        "request_id": ctx.request_id,
        "method": method,
        "path": path,
        "route": ctx.route_name(),
        "pool": ctx.pool.as_ref().map(|p| p.name.as_str()),
        "backend": backend,
        "status": status,
        "attempts": ctx.attempts,
        "retries": ctx.retries,
        "upstream_status": ctx.upstream_status,
        "duration_ms": ctx.start.elapsed().as_secs_f64() * 1e3,
        "upstream_ms": ctx.upstream_start.map(|t| t.elapsed().as_secs_f64() * 1e3),
        "refused": ctx.refused,
        "error": error,
    })
}
