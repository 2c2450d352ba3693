//! The stack end to end: the worker in workerd, the Pingora origin proxy, two demo shops.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e_tests::{scratch_dir, sign, test_key, unix_now, Edge, Origin, Proxy, ProxySettings, Shop};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Two shops, the proxy and the worker, with one key.
struct Stack {
    shops: Vec<Shop>,
    proxy: Proxy,
    edge: Edge,
}

fn start_stack(name: &str) -> Result<Stack> {
    let dir = scratch_dir(name)?;
    let key = test_key();
    let shops = vec![Shop::start("shop-a", &dir)?, Shop::start("shop-b", &dir)?];
    let backends: Vec<_> = shops.iter().map(|s| s.addr).collect();
    let proxy = Proxy::start(
        &ProxySettings {
            backends: &backends,
            hc_interval_ms: 500,
        },
        &key,
        &dir,
    )?;
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    Ok(Stack { shops, proxy, edge })
}

impl Stack {
    fn shop_requests(&self) -> Result<u64> {
        self.shops.iter().map(|s| s.requests()).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_static_pages_and_forwards_the_rest_with_one_request_id() -> Result<()> {
    let stack = tokio::task::spawn_blocking(|| start_stack("edge_forwarding")).await??;
    let http = client();

    // A static sale page comes from the edge's assets; no backend sees it.
    let resp = http.get(format!("{}/", stack.edge.url())).send().await?;
    ensure!(resp.status() == 200, "static page status {}", resp.status());
    let body = resp.text().await?;
    ensure!(
        body.contains("<html") || body.contains("<!doctype"),
        "not a page: {body:.200}"
    );
    ensure!(
        stack.shop_requests()? == 0,
        "a static page reached the demo shop"
    );

    // A dynamic GET goes edge → proxy → shop, and the id we send is seen at every hop.
    let id = "e2e-trace-0001";
    let resp = http
        .get(format!("{}/api/products/2?ref=e2e", stack.edge.url()))
        .header("x-request-id", id)
        .send()
        .await?;
    ensure!(resp.status() == 200, "dynamic GET status {}", resp.status());
    let echoed = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ensure!(
        echoed.as_deref() == Some(id),
        "edge response carries {echoed:?}"
    );
    let product: serde_json::Value = resp.json().await?;
    ensure!(product["id"] == 2, "product {product}");
    // The access-log line is written after the response: wait for it.
    e2e_tests::wait_until(
        "the proxy's access-log line",
        Duration::from_secs(5),
        || {
            Ok(stack
                .proxy
                .access_log()
                .iter()
                .any(|l| l["request_id"] == id))
        },
    )?;
    let log = stack.proxy.access_log();
    let line = log
        .iter()
        .find(|l| l["request_id"] == id)
        .context("no proxy access-log line for the id")?;
    ensure!(
        line["status"] == 200 && line["route"] == "*/",
        "proxy log line {line}"
    );
    let seen_by_shops: Vec<_> = stack
        .shops
        .iter()
        .map(|s| s.stats())
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flat_map(|s| {
            s["recent_request_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    ensure!(
        seen_by_shops.iter().any(|v| v == id),
        "shops saw {seen_by_shops:?}"
    );

    // Without an id (or with an invalid one) the edge makes one, and it travels the same way.
    let resp = http
        .get(format!("{}/api/catalog", stack.edge.url()))
        .header("x-request-id", "not valid!")
        .send()
        .await?;
    ensure!(resp.status() == 200, "catalog status {}", resp.status());
    let fresh = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .context("no id")?
        .to_owned();
    ensure!(
        fresh != "not valid!" && fresh.len() == 32,
        "generated id {fresh:?}"
    );
    e2e_tests::wait_until(
        &format!("the proxy logging {fresh}"),
        Duration::from_secs(5),
        || {
            Ok(stack
                .proxy
                .access_log()
                .iter()
                .any(|l| l["request_id"] == fresh.as_str()))
        },
    )?;
    ensure!(
        stack.shop_requests()? == 2,
        "shops counted {}",
        stack.shop_requests()?
    );

    // The edge's own health endpoint answers without the origin.
    let resp = http
        .get(format!("{}/__edge/health", stack.edge.url()))
        .send()
        .await?;
    ensure!(resp.status() == 200);
    ensure!(stack.shop_requests()? == 2, "health reached a shop");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_requests_that_skipped_the_edge() -> Result<()> {
    let Origin {
        key, shop, proxy, ..
    } = Origin::start("proxy_refuses")?;
    let http = client();
    let url = format!("{}/api/catalog", proxy.url());
    let now = unix_now();
    let wrong_key = test_key();
    let cases = [
        ("no signature", None),
        (
            "bad signature",
            Some(sign(&wrong_key, "GET", "/api/catalog", "rid-1", now)),
        ),
        (
            "stale timestamp",
            Some(sign(&key, "GET", "/api/catalog", "rid-1", now - 600)),
        ),
        (
            "signature for another path",
            Some(sign(&key, "GET", "/api/cart", "rid-1", now)),
        ),
    ];
    for (what, sig) in cases {
        let mut req = http.get(&url).header("x-request-id", "rid-1");
        if let Some(sig) = sig {
            req = req.header("x-edge-signature", sig);
        }
        let resp = req.send().await?;
        ensure!(resp.status() == 403, "{what}: status {}", resp.status());
        let body: serde_json::Value = resp.json().await?;
        ensure!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no reason in {body}"
        );
    }
    ensure!(shop.requests()? == 0, "a refused request reached the shop");

    // The same request, correctly signed, goes through: the 403s above were about the signature.
    let resp = http
        .get(&url)
        .header("x-request-id", "rid-2")
        .header(
            "x-edge-signature",
            sign(&key, "GET", "/api/catalog", "rid-2", now),
        )
        .send()
        .await?;
    ensure!(
        resp.status() == 200,
        "signed request status {}",
        resp.status()
    );
    ensure!(shop.requests()? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_get_and_leaves_the_pool() -> Result<()> {
    let dir = scratch_dir("backend_killed")?;
    let key = test_key();
    let mut shops = [Shop::start("shop-a", &dir)?, Shop::start("shop-b", &dir)?];
    let backends: Vec<_> = shops.iter().map(|s| s.addr).collect();
    let proxy = Proxy::start(
        &ProxySettings {
            backends: &backends,
            hc_interval_ms: 200,
        },
        &key,
        &dir,
    )?;
    let http = client();
    let survivor = shops[1].addr.to_string();

    let get = |n: usize| {
        let http = http.clone();
        let url = proxy.url();
        let key = key.clone();
        async move {
            let id = format!("steady-{n}");
            let path = format!("/api/products/{}", n % 4 + 1);
            let resp = http
                .get(format!("{url}{path}"))
                .header("x-request-id", &id)
                .header(
                    "x-edge-signature",
                    sign(&key, "GET", &path, &id, unix_now()),
                )
                .send()
                .await;
            (
                id,
                resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
            )
        }
    };

    // Warm up: both backends serve.
    for n in 0..20 {
        let (_, status) = get(n).await;
        ensure!(status == Ok(200), "warm-up GET {n}: {status:?}");
    }
    ensure!(
        shops[0].requests()? > 0 && shops[1].requests()? > 0,
        "round robin did not use both shops"
    );

    // Kill shop-a while GETs keep flowing (4 at a time), for two seconds after the kill.
    let mut failures = Vec::new();
    let mut n = 20;
    let mut killed_at = None;
    let start = Instant::now();
    while killed_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        if killed_at.is_none() && start.elapsed() > Duration::from_millis(300) {
            shops[0].proc.kill_now();
            killed_at = Some(Instant::now());
        }
        let batch = futures_join(vec![get(n), get(n + 1), get(n + 2), get(n + 3)]).await;
        n += 4;
        failures.extend(batch.into_iter().filter(|(_, s)| *s != Ok(200)));
    }
    ensure!(
        failures.is_empty(),
        "GETs failed after the kill: {failures:?}"
    );

    // The failed connects were retried on the survivor...
    let log = proxy.access_log();
    let retried = log
        .iter()
        .filter(|l| l["attempts"].as_u64() > Some(1))
        .count();
    ensure!(
        retried > 0,
        "no request needed a retry; was the backend really killed?"
    );
    // ...and the health checks took the dead backend out: the last requests went straight to
    // the survivor without a failed attempt first.
    let last: Vec<_> = log.iter().rev().take(20).collect();
    ensure!(
        last.iter()
            .all(|l| l["attempts"] == 1 && l["backend"] == survivor.as_str()),
        "the dead backend is still tried: {last:?}"
    );
    ensure!(
        proxy
            .proc
            .errors()
            .contains("backend taken out of the pool"),
        "no ejection logged"
    );
    Ok(())
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
