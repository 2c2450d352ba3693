//! The admin listener: `GET /metrics` (Prometheus text) and `GET /health` (a JSON summary the
//! edge's waiting room reads to set its admission rate).
//!
//! `/health` answers:
//! ```json
//! {"status": "ok", "generation": 1, "window_secs": 10, "responses": 1200,
//!  "upstream_p99_ms": 25.0, "error_5xx_rate": 0.0, "shed": 0, "shed_total": 0,
//!  "pools": {"shop": {"backends": 2, "healthy": 2, "in_flight": 3, "max_in_flight": 2000}}}
//! ```
//! `status` is `down` (HTTP 503) when some pool has no backend that may get traffic,
//! `degraded` when a backend is out or requests were shed in the window, `ok` otherwise.
//!
//! `HEAD` gets what `GET` would (status and headers, `Content-Length` included) without the
//! body; any other method gets `405` with `Allow: GET, HEAD`. [`respond`] makes that whole
//! decision without I/O; the [`ServeHttp`] impl only hands it the request line.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, HeaderValue, Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::{escape, Metrics, WINDOW_SECS};
use crate::state::{SharedState, State};

/// The admin HTTP app.
pub struct AdminApp {
    state: SharedState,
    metrics: Arc<Metrics>,
}

impl AdminApp {
    /// The app over the proxy's state and metrics.
    pub fn new(state: SharedState, metrics: Arc<Metrics>) -> Self {
        AdminApp { state, metrics }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let state = self.state.load_full();
        respond(
            &req.method,
            req.uri.path(),
            &state,
            &self.metrics,
            crate::monotonic_ms(),
        )
    }
}

/// The admin listener's answer to `method path` over the running state and metrics at `now_ms`.
///
/// `HEAD` is answered as `GET` and then loses its body, so the two always agree on status and
/// headers, `Content-Length` included. Any other method gets `405` with `Allow: GET, HEAD`.
pub fn respond(
    method: &Method,
    path: &str,
    state: &State,
    metrics: &Metrics,
    now_ms: u64,
) -> Response<Vec<u8>> {
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut resp = reply(
            405,
            "text/plain",
            b"method not allowed: the admin listener answers GET and HEAD only\n".to_vec(),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let mut resp = match path {
        "/metrics" => reply(
            200,
            "text/plain; version=0.0.4",
            metrics.render(&gauges(state, now_ms)).into_bytes(),
        ),
        "/health" => {
            let (down, body) = health(state, metrics, now_ms);
            reply(
                if down { 503 } else { 200 },
                "application/json",
                body.to_string().into_bytes(),
            )
        }
        _ => reply(404, "text/plain", b"try /metrics or /health\n".to_vec()),
    };
    if head {
        // `reply` set Content-Length from the GET body; it stays.
        resp.body_mut().clear();
    }
    resp
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Gauges derived from the state: backend health and in-flight requests.
pub fn gauges(state: &State, now_ms: u64) -> String {
    let mut out = String::new();
    out.push_str("# HELP backend_up Whether a backend may get traffic (healthy and not ejected).\n# TYPE backend_up gauge\n");
    for (name, (pool, _)) in &state.pools {
        for b in &pool.backends {
            let _ = writeln!(
                out,
                "backend_up{{pool=\"{}\",backend=\"{}\"}} {}",
                escape(name),
                b.addr,
                u8::from(b.is_available(now_ms))
            );
        }
    }
    out.push_str("# HELP backend_in_flight Requests in flight to a backend.\n# TYPE backend_in_flight gauge\n");
    for (name, (pool, _)) in &state.pools {
        for b in &pool.backends {
            let _ = writeln!(
                out,
                "backend_in_flight{{pool=\"{}\",backend=\"{}\"}} {}",
                escape(name),
                b.addr,
                b.in_flight()
            );
        }
    }
    out.push_str("# HELP pool_in_flight Requests admitted to a pool and not finished.\n# TYPE pool_in_flight gauge\n");
    for (name, (pool, _)) in &state.pools {
        let _ = writeln!(
            out,
            "pool_in_flight{{pool=\"{}\"}} {}",
            escape(name),
            pool.in_flight()
        );
    }
    let _ = writeln!(
        out,
        "# HELP config_generation The running config's generation.\n# TYPE config_generation gauge\nconfig_generation {}",
        state.generation
    );
    out
}

/// The health summary, and whether the proxy is down (a pool with nothing to send to).
pub fn health(state: &State, metrics: &Metrics, now_ms: u64) -> (bool, serde_json::Value) {
    let window = metrics.window.summary(now_ms / 1_000);
    let mut pools = serde_json::Map::new();
    let mut down = false;
    let mut degraded = window.sheds > 0;
    let mut shed_total = 0;
    for (name, (pool, stats)) in &state.pools {
        let healthy = pool.available_count(now_ms);
        down |= healthy == 0;
        degraded |= healthy < pool.backends.len();
        shed_total += stats.sheds.load(Ordering::Relaxed);
        pools.insert(
            name.clone(),
            serde_json::json!({
                "backends": pool.backends.len(),
                "healthy": healthy,
                "in_flight": pool.in_flight(),
                "max_in_flight": pool.config.max_in_flight,
            }),
        );
    }
    let rate = if window.responses == 0 {
        0.0
    } else {
        window.errors_5xx as f64 / window.responses as f64
    };
    let status = if down {
        "down"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
        "generation": state.generation,
        "window_secs": WINDOW_SECS,
        "responses": window.responses,
        "upstream_p99_ms": window.upstream_p99_seconds.map(|s| s * 1e3),
        "error_5xx_rate": rate,
        "shed": window.sheds,
        "shed_total": shed_total,
        "pools": pools,
    });
    (down, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn state(metrics: &Metrics) -> State {
        let text = r#"
listen = "127.0.0.1:8080"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.shop]
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
max-in-flight = 10
[[routes]]
pool = "shop"
"#;
        let config = Config::from_toml(Path::new("p.toml"), text, &|_| None).expect("valid");
        State::build(config, None, metrics)
    }

    #[test]
    fn head_answers_like_get_without_the_body() {
        let m = Metrics::default();
        let s = state(&m);
        // A backend out makes /health degraded; both out would make it 503: cover both codes.
        s.pools["shop"].0.backends[0].record_failure(1);
        for (path, status) in [("/metrics", 200), ("/health", 200), ("/nope", 404)] {
            let get = respond(&Method::GET, path, &s, &m, 5);
            let head = respond(&Method::HEAD, path, &s, &m, 5);
            assert_eq!(get.status(), status, "{path}");
            assert_eq!(head.status(), get.status(), "{path}");
            assert_eq!(head.headers(), get.headers(), "{path}");
            assert!(!get.body().is_empty(), "{path}");
            assert_eq!(
                get.headers()[header::CONTENT_LENGTH],
                get.body().len().to_string(),
                "{path}"
            );
            assert!(head.body().is_empty(), "{path}: HEAD has a body");
        }
        s.pools["shop"].0.backends[1].record_failure(1);
        let get = respond(&Method::GET, "/health", &s, &m, 5);
        let head = respond(&Method::HEAD, "/health", &s, &m, 5);
        assert_eq!(get.status(), 503);
        assert_eq!(head.status(), 503);
        assert_eq!(head.headers(), get.headers());
        assert!(head.body().is_empty());
    }

    #[test]
    fn other_methods_get_405_naming_get_and_head() {
        let m = Metrics::default();
        let s = state(&m);
        for method in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE",
        ] {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            for path in ["/metrics", "/health", "/nope"] {
                let resp = respond(&method, path, &s, &m, 0);
                assert_eq!(resp.status(), 405, "{method} {path}");
                assert_eq!(
                    resp.headers()[header::ALLOW],
                    "GET, HEAD",
                    "{method} {path}"
                );
                assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain");
                let body = String::from_utf8_lossy(resp.body());
                assert!(body.contains("GET") && body.contains("HEAD"), "{body}");
                assert_eq!(
                    resp.headers()[header::CONTENT_LENGTH],
                    resp.body().len().to_string()
                );
            }
        }
    }

    #[test]
    fn health_goes_from_ok_to_degraded_to_down() {
        let m = Metrics::default();
        let s = state(&m);
        let (down, body) = health(&s, &m, 0);
        assert!(!down);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["pools"]["shop"]["healthy"], 2);
        assert_eq!(body["pools"]["shop"]["max_in_flight"], 10);
        assert!(body["upstream_p99_ms"].is_null());

        let shop = &s.pools["shop"].0;
        shop.backends[0].record_failure(1);
        m.window.latency(0.02, 0);
        m.window.response(502, 0);
        let (down, body) = health(&s, &m, 0);
        assert!(!down);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["pools"]["shop"]["healthy"], 1);
        assert_eq!(body["upstream_p99_ms"], 25.0);
        assert_eq!(body["error_5xx_rate"], 1.0);

        shop.backends[1].record_passive_failure(1, 1_000, 0);
        let (down, body) = health(&s, &m, 10);
        assert!(down);
        assert_eq!(body["status"], "down");
        let text = gauges(&s, 10);
        assert!(
            text.contains("backend_up{pool=\"shop\",backend=\"127.0.0.1:9001\"} 0"),
            "{text}"
        );
        assert!(text.contains("config_generation 1"), "{text}");
    }
}
