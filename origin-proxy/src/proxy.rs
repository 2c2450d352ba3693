//! The `ProxyHttp` implementation. Each phase is a few lines that call into [`crate::phases`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::access_log::AccessLog;
use crate::balance::Pool;
use crate::config::Config;
use crate::phases;

/// The origin proxy: config, pools and the access log, shared by all requests.
pub struct OriginProxy {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Pools by the order of their names in the config.
    pub pools: Vec<Arc<Pool>>,
    /// Where request summaries go.
    pub access_log: AccessLog,
}

impl OriginProxy {
    /// Builds the proxy and its pools from a config.
    pub fn new(config: Config) -> Self {
        let pools = config
            .pools
            .iter()
            .map(|(name, p)| Arc::new(Pool::new(name, p.clone())))
            .collect();
        let access_log = AccessLog::new(config.access_log.clone());
        OriginProxy {
            config: Arc::new(config),
            pools,
            access_log,
        }
    }

    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// Per-request state.
pub struct RequestCtx {
    /// When the request arrived.
    pub start: Instant,
    /// The id kept across hops.
    pub request_id: String,
    /// The matched route's name.
    pub route: Option<String>,
    /// The pool serving it.
    pub pool: Option<Arc<Pool>>,
    /// Backends tried so far (indices into the pool).
    pub tried: Vec<usize>,
    /// The backend of the current attempt.
    pub backend: Option<usize>,
    /// When the current upstream attempt started.
    pub upstream_start: Option<Instant>,
    /// Why the request was refused before reaching a backend.
    pub refused: Option<String>,
}

#[async_trait]
impl ProxyHttp for OriginProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            route: None,
            pool: None,
            tried: Vec::new(),
            backend: None,
            upstream_start: None,
            refused: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match phases::admit(self, session.req_header(), session.client_addr(), ctx) {
            Ok(()) => Ok(false),
            Err(refusal) => {
                phases::respond(session, ctx, refusal.status, &refusal.reason, &[]).await?;
                ctx.refused = Some(refusal.reason);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        phases::pick_peer(ctx)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        phases::on_connect_failure(session.req_header(), ctx, e)
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
        phases::on_proxy_error(peer, session.req_header(), truncated, ctx, e, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        phases::prepare_upstream_request(upstream_request, session.client_addr(), ctx)
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
        self.access_log.write(session.req_header(), status, e, ctx);
    }
}

/// A response body for refusals and errors: JSON with the reason and the request id.
pub fn error_body(reason: &str, request_id: &str) -> Bytes {
    let body = serde_json::json!({ "error": reason, "request_id": request_id });
    Bytes::from(body.to_string())
}
