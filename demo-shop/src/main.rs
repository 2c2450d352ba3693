//! `demo-shop`: a small stand-in for the commerce backends (catalog, product, cart, checkout).
//!
//! It is NOT part of the product: it takes the place of the user's own services so that the
//! stack runs locally and the end-to-end tests can prove what reached a backend. Every request
//! it serves (except its own `/healthz` and `/__demo/*` endpoints) is counted, with its
//! `X-Request-Id`, and `GET /__demo/stats` reports the counts.
//!
//! ```text
//! demo-shop --listen 127.0.0.1:0 --name shop-a
//! ```
//! prints `demo-shop shop-a listening on 127.0.0.1:PORT` once it accepts connections.
//! `--delay-ms N` and `--fail-status CODE` turn an instance into a slow or failing backend for
//! fault tests.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How many recent request ids the stats endpoint keeps.
const RECENT_IDS: usize = 1_000;
/// Longest artificial delay a request may ask for with `?delay_ms=`.
const MAX_DELAY_MS: u64 = 30_000;

#[derive(Parser, Debug)]
#[command(about = "Demo commerce backend standing in for the user's own services")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Instance name, returned in `X-Served-By`.
    #[arg(long, default_value = "shop")]
    name: String,
    /// Fault injection: delay every counted request by this many milliseconds (a slow backend).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fault injection: answer every counted request with this status (a failing backend).
    #[arg(long)]
    fail_status: Option<u16>,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    by_path: BTreeMap<String, u64>,
    recent_ids: VecDeque<String>,
    next_order: u64,
}

#[derive(Clone)]
struct Shop {
    name: Arc<str>,
    stats: Arc<Mutex<Stats>>,
    delay_ms: u64,
    fail_status: Option<StatusCode>,
}

#[derive(Serialize, Clone)]
struct Product {
    id: u32,
    name: &'static str,
    price_cents: u32,
    stock: u32,
}

const PRODUCTS: [Product; 4] = [
    Product {
        id: 1,
        name: "Trail running shoes",
        price_cents: 8_900,
        stock: 120,
    },
    Product {
        id: 2,
        name: "Insulated jacket",
        price_cents: 15_900,
        stock: 40,
    },
    Product {
        id: 3,
        name: "Merino socks (3 pairs)",
        price_cents: 2_400,
        stock: 500,
    },
    Product {
        id: 4,
        name: "Headlamp 400 lm",
        price_cents: 3_900,
        stock: 75,
    },
];

#[derive(Deserialize)]
struct DelayQuery {
    /// Wait this long before answering (capped at [`MAX_DELAY_MS`]).
    delay_ms: Option<u64>,
    /// `Cache-Control: public, max-age=N` instead of the default 30 s.
    max_age: Option<u32>,
}

impl DelayQuery {
    fn cache_control(&self) -> HeaderValue {
        let secs = self.max_age.unwrap_or(30);
        HeaderValue::from_str(&format!("public, max-age={secs}"))
            .unwrap_or(HeaderValue::from_static("no-store"))
    }
}

#[derive(Deserialize)]
struct CartItem {
    product: u32,
    quantity: u32,
}

impl Shop {
    /// Fault injection from the command line: waits `--delay-ms`, then answers `--fail-status`
    /// instead of the handler when set.
    async fn misbehave(&self, headers: &HeaderMap) -> Option<Response> {
        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms.min(MAX_DELAY_MS))).await;
        }
        self.fail_status
            .map(|status| self.reply(headers, status, json!({ "error": "injected failure" })))
    }

    /// Counts one served request and remembers its id.
    fn count(&self, uri: &Uri, headers: &HeaderMap) {
        let mut s = match self.stats.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.requests += 1;
        *s.by_path.entry(uri.path().to_owned()).or_default() += 1;
        if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            if s.recent_ids.len() == RECENT_IDS {
                s.recent_ids.pop_front();
            }
            s.recent_ids.push_back(id.to_owned());
        }
    }

    /// Stamps the instance name and echoes the request id.
    fn reply(&self, headers: &HeaderMap, status: StatusCode, body: serde_json::Value) -> Response {
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            h.insert("x-served-by", v);
        }
        if let Some(id) = headers.get("x-request-id") {
            h.insert("x-request-id", id.clone());
        }
        resp
    }
}

async fn delay(q: &DelayQuery) {
    if let Some(ms) = q.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS))).await;
    }
}

async fn catalog(
    State(shop): State<Shop>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<DelayQuery>,
) -> Response {
    shop.count(&uri, &headers);
    if let Some(resp) = shop.misbehave(&headers).await {
        return resp;
    }
    delay(&q).await;
    let mut resp = shop.reply(
        &headers,
        StatusCode::OK,
        json!({ "products": PRODUCTS.to_vec() }),
    );
    resp.headers_mut()
        .insert("cache-control", q.cache_control());
    resp
}

async fn product(
    State(shop): State<Shop>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DelayQuery>,
) -> Response {
    shop.count(&uri, &headers);
    if let Some(resp) = shop.misbehave(&headers).await {
        return resp;
    }
    delay(&q).await;
    match id
        .parse::<u32>()
        .ok()
        .and_then(|id| PRODUCTS.iter().find(|p| p.id == id))
    {
        Some(p) => {
            let mut resp = shop.reply(&headers, StatusCode::OK, json!(p));
            resp.headers_mut()
                .insert("cache-control", q.cache_control());
            resp
        }
        None => shop.reply(
            &headers,
            StatusCode::NOT_FOUND,
            json!({ "error": "no such product" }),
        ),
    }
}

async fn add_to_cart(
    State(shop): State<Shop>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    shop.count(&uri, &headers);
    if let Some(resp) = shop.misbehave(&headers).await {
        return resp;
    }
    match serde_json::from_slice::<CartItem>(&body) {
        Ok(item)
            if PRODUCTS.iter().any(|p| p.id == item.product)
                && (1..=10).contains(&item.quantity) =>
        {
            shop.reply(
                &headers,
                StatusCode::OK,
                json!({ "cart": [{ "product": item.product, "quantity": item.quantity }] }),
            )
        }
        Ok(_) => shop.reply(
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "unknown product or quantity outside 1..=10" }),
        ),
        Err(e) => shop.reply(
            &headers,
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("cart item must be JSON {{product, quantity}}: {e}") }),
        ),
    }
}

async fn checkout(State(shop): State<Shop>, uri: Uri, headers: HeaderMap) -> Response {
    shop.count(&uri, &headers);
    if let Some(resp) = shop.misbehave(&headers).await {
        return resp;
    }
    let order = {
        let mut s = match shop.stats.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.next_order += 1;
        s.next_order
    };
    shop.reply(
        &headers,
        StatusCode::CREATED,
        json!({ "order": format!("{}-{order}", shop.name), "status": "confirmed" }),
    )
}

async fn fallback(
    State(shop): State<Shop>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shop.count(&uri, &headers);
    if let Some(resp) = shop.misbehave(&headers).await {
        return resp;
    }
    shop.reply(
        &headers,
        StatusCode::NOT_FOUND,
        json!({ "error": format!("demo shop has no {method} {}", uri.path()) }),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn stats(State(shop): State<Shop>) -> Response {
    let s = match shop.stats.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    Json(json!({
        "name": &*shop.name,
        "requests": s.requests,
        "by_path": s.by_path,
        "recent_request_ids": s.recent_ids,
    }))
    .into_response()
}

fn router(shop: Shop) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/__demo/stats", get(stats))
        .route("/api/catalog", get(catalog))
        .route("/api/products/{id}", get(product))
        .route("/api/cart", post(add_to_cart))
        .route("/api/checkout", post(checkout))
        .fallback(fallback)
        .with_state(shop)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("listener has no local address")?;
    let fail_status = match args.fail_status {
        None => None,
        Some(code) => Some(
            StatusCode::from_u16(code)
                .with_context(|| format!("--fail-status {code} is not an HTTP status"))?,
        ),
    };
    let shop = Shop {
        name: args.name.as_str().into(),
        stats: Arc::default(),
        delay_ms: args.delay_ms,
        fail_status,
    };
    println!("demo-shop {} listening on {addr}", args.name);
    axum::serve(listener, router(shop))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("server failed")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-shop: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-shop: {e:#}");
            ExitCode::FAILURE
        }
    }
}
