//! One JSON line per request on standard output: request id, route, backend, status and
//! durations. Never bodies, cookies, query strings or secrets.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use pingora::http::RequestHeader;
use pingora::Error;

use crate::config::AccessLogTarget;
use crate::proxy::RequestCtx;

/// The access log sink.
pub struct AccessLog {
    target: AccessLogTarget,
}

impl AccessLog {
    /// A sink writing to `target`.
    pub fn new(target: AccessLogTarget) -> Self {
        AccessLog { target }
    }

    /// Writes the line for one finished request.
    pub fn write(&self, req: &RequestHeader, status: u16, error: Option<&Error>, ctx: &RequestCtx) {
        if self.target == AccessLogTarget::Off {
            return;
        }
        let line = entry(req, status, error, ctx);
        let mut out = std::io::stdout().lock();
        // A full or closed stdout must not fail the request; the line is lost.
        let _ = writeln!(out, "{line}");
    }
}

/// The JSON object for one request.
pub fn entry(
    req: &RequestHeader,
    status: u16,
    error: Option<&Error>,
    ctx: &RequestCtx,
) -> serde_json::Value {
    let backend = ctx
        .pool
        .as_ref()
        .zip(ctx.backend)
        .map(|(p, i)| p.backends[i].addr.to_string());
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    serde_json::json!({
        "ts_ms": ts,
        "request_id": ctx.request_id,
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "route": ctx.route,
        "pool": ctx.pool.as_ref().map(|p| p.name.as_str()),
        "backend": backend,
        "status": status,
        "attempts": ctx.tried.len() + usize::from(ctx.backend.is_some() && !ctx.backend.is_some_and(|b| ctx.tried.contains(&b))),
        "duration_ms": ctx.start.elapsed().as_secs_f64() * 1e3,
        "upstream_ms": ctx.upstream_start.map(|t| t.elapsed().as_secs_f64() * 1e3),
        "refused": ctx.refused,
        "error": error.map(|e| e.etype().as_str()),
    })
}
