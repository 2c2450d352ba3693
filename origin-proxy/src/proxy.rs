//! The `ProxyHttp` implementation. Each phase is a few lines that call into [`crate::phases`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::access_log::AccessLog;
use crate::balance::{BackendLease, Pool, PoolPermit};
use crate::metrics::{Metrics, PoolStats};
use crate::phases;
use crate::state::{SharedState, State};

/// The origin proxy: the swappable state, the metrics registry and the access log.
pub struct OriginProxy {
    /// The running config and its pools, swapped on reload.
    pub state: SharedState,
    /// Counters, kept across reloads.
    pub metrics: Arc<Metrics>,
    /// Where request summaries go.
    pub access_log: AccessLog,
}

/// Per-request state. The pool permit and backend lease inside give their slots back when the
/// request ends, however it ends.
pub struct RequestCtx {
    /// When the request arrived.
    pub start: Instant,
    /// The id kept across hops.
    pub request_id: String,
    /// The state generation this request runs on, loaded once.
    pub state: Option<Arc<State>>,
    /// The matched route (index into the state's routes).
    pub route: Option<usize>,
    /// The pool serving it.
    pub pool: Option<Arc<Pool>>,
    /// That pool's counters.
    pub pool_stats: Option<Arc<PoolStats>>,
    /// The request's slot in the pool's concurrency limit.
    pub permit: Option<PoolPermit>,
    /// The slot on the backend of the current attempt.
    pub lease: Option<BackendLease>,
    /// The request's hash key, for pools that hash.
    pub hash_key: Option<Vec<u8>>,
    /// Backends tried and failed so far (indices into the pool).
    pub tried: Vec<usize>,
    /// The backend of the current attempt.
    pub backend: Option<usize>,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts retried.
    pub retries: u32,
    /// When the current upstream attempt started.
    pub upstream_start: Option<Instant>,
    /// The backend's status, when one answered.
    pub upstream_status: Option<u16>,
    /// Why the request was refused before reaching a backend.
    pub refused: Option<String>,
    /// The request's span: request id and route.
    pub span: tracing::Span,
}

impl RequestCtx {
    /// The context of a request that just arrived.
    pub fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            state: None,
            route: None,
            pool: None,
            pool_stats: None,
            permit: None,
            lease: None,
            hash_key: None,
            tried: Vec::new(),
            backend: None,
            attempts: 0,
            retries: 0,
            upstream_start: None,
            upstream_status: None,
            refused: None,
            span: tracing::Span::none(),
        }
    }

    /// The matched route's name.
    pub fn route_name(&self) -> Option<&str> {
        let state = self.state.as_ref()?;
        state.routes.get(self.route?).map(|r| r.route.name.as_str())
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

#[async_trait]
impl ProxyHttp for OriginProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let gated = phases::admit(state, &self.metrics, req, client_ip, ctx)
            .and_then(|()| phases::check_admission(ctx, req));
        let refusal = match gated {
            Err(refusal) => refusal,
            Ok(()) => {
                let waf = ctx.state.as_ref().and_then(|s| s.config.waf.clone());
                let Some(waf) = waf else { return Ok(false) };
                match crate::waf::check(session, &waf, &self.metrics, &ctx.request_id).await? {
                    None => return Ok(false),
                    Some(refusal) => refusal,
                }
            }
        };
        let retry_after = refusal.retry_after.map(|s| s.to_string());
        let extra: Vec<(&str, &str)> = retry_after
            .iter()
            .map(|s| ("retry-after", s.as_str()))
            .collect();
        phases::respond(session, ctx, refusal.status, &refusal.reason, &extra).await?;
        ctx.refused = Some(refusal.reason);
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        phases::pick_peer(ctx, crate::monotonic_ms())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        let idempotent = phases::is_idempotent(session.req_header().method.as_str());
        phases::on_connect_failure(idempotent, ctx, e, crate::monotonic_ms())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let truncated = session.as_ref().retry_buffer_truncated();
        let started = session.response_written().is_some();
        phases::on_proxy_error(
            peer,
            phases::is_idempotent(session.req_header().method.as_str()),
            truncated,
            started,
            ctx,
            e,
            client_reused,
            crate::monotonic_ms(),
        )
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        phases::prepare_upstream_request(upstream_request, session.client_addr(), ctx)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        phases::on_upstream_response(&self.metrics, status, ctx, crate::monotonic_ms());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(edge_signature::REQUEST_ID_HEADER, &ctx.request_id)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        phases::fail_to_proxy(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        phases::count_response(&self.metrics, status, ctx, crate::monotonic_ms());
        let req = session.req_header();
        let error = e.map(|e| e.etype().as_str());
        self.access_log
            .write(req.method.as_str(), req.uri.path(), status, error, ctx);
    }
}

/// A response body for refusals and errors: JSON with the reason and the request id.
pub fn error_body(reason: &str, request_id: &str) -> Bytes {
    let body = serde_json::json!({ "error": reason, "request_id": request_id });
    Bytes::from(body.to_string())
}
