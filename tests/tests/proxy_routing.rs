//! Routing and balancing of the origin proxy, end to end: the read/write split, cart affinity by
//! cookie, passive ejection of a backend that answers 5xx, and the admin listener's methods
//! (HEAD, 405). Real demo shops and the real proxy on loopback; the configs allow 127.0.0.0/8
//! without an edge signature.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e_tests::{http_raw, scratch_dir, test_key, Proxy, Shop};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn served_by(resp: &reqwest::Response) -> Result<String> {
    resp.headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("no x-served-by")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_writes_to_the_primary_and_carts_stick_to_a_backend() -> Result<()> {
    let dir = scratch_dir("proxy_split")?;
    let primary = Shop::start("primary", &dir)?;
    let replica = Shop::start("replica", &dir)?;
    let cart_a = Shop::start("cart-a", &dir)?;
    let cart_b = Shop::start("cart-b", &dir)?;
    let config = format!(
        r#"listen = "{{listen}}"
[admin]
listen = "{{admin}}"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.primary]
backends = ["{}"]
[pools.replicas]
backends = ["{}"]
algorithm = "peak-ewma"
[pools.carts]
backends = ["{}", "{}"]
algorithm = "hash"
hash-key = "cookie:cart"
[[routes]]
path-prefix = "/"
pool = "primary"
read-pool = "replicas"
[[routes]]
path-prefix = "/api/cart"
methods = ["POST"]
pool = "carts"
"#,
        primary.addr, replica.addr, cart_a.addr, cart_b.addr
    );
    let proxy = Proxy::start_with_config(&config, &test_key(), &dir)?;
    let http = client();
    let url = proxy.url();

    for path in ["/api/catalog?page=1", "/api/products/3"] {
        let resp = http.get(format!("{url}{path}")).send().await?;
        ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
        ensure!(
            served_by(&resp)? == "replica",
            "GET {path} not on the replica"
        );
    }
    let resp = http.post(format!("{url}/api/checkout")).send().await?;
    ensure!(resp.status() == 201, "checkout: {}", resp.status());
    ensure!(
        served_by(&resp)? == "primary",
        "checkout not on the primary"
    );

    let mut homes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..3 {
        for cart in 0..16 {
            let resp = http
                .post(format!("{url}/api/cart"))
                .header("cookie", format!("session=s{round}; cart=c{cart}"))
                .header("content-type", "application/json")
                .body(r#"{"product":1,"quantity":1}"#)
                .send()
                .await?;
            ensure!(resp.status() == 200, "cart c{cart}: {}", resp.status());
            homes
                .entry(format!("c{cart}"))
                .or_default()
                .insert(served_by(&resp)?);
        }
    }
    ensure!(
        homes.values().all(|h| h.len() == 1),
        "a cart moved between backends: {homes:?}"
    );
    let used: BTreeSet<_> = homes.values().flatten().collect();
    ensure!(
        used.len() == 2,
        "carts all landed on one backend: {homes:?}"
    );
    ensure!(
        primary.requests()? == 1 && replica.requests()? == 2,
        "primary {} replica {}",
        primary.requests()?,
        replica.requests()?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_5xx_is_ejected_passively() -> Result<()> {
    let dir = scratch_dir("proxy_5xx")?;
    let bad = Shop::start_with("shop-bad", &dir, None, &["--fail-status", "500"])?;
    let good = Shop::start("shop-good", &dir)?;
    let config = format!(
        r#"listen = "{{listen}}"
[admin]
listen = "{{admin}}"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.shop]
backends = ["{}", "{}"]
[pools.shop.passive]
max-failures = 2
eject-ms = 60000
[[routes]]
pool = "shop"
"#,
        bad.addr, good.addr
    );
    let proxy = Proxy::start_with_config(&config, &test_key(), &dir)?;
    let http = client();
    let mut statuses = Vec::new();
    for n in 0..12 {
        let resp = http
            .get(format!("{}/api/products/{}", proxy.url(), n % 4 + 1))
            .send()
            .await?;
        statuses.push(resp.status().as_u16());
    }
    let errors = statuses.iter().filter(|s| **s == 500).count();
    ensure!(
        errors == 2,
        "expected exactly the 2 failures that eject: {statuses:?}"
    );
    ensure!(
        statuses[statuses.len() - 6..].iter().all(|s| *s == 200),
        "the bad backend still gets traffic: {statuses:?}"
    );
    ensure!(bad.requests()? == 2, "bad shop saw {}", bad.requests()?);
    let metrics = proxy.metrics()?;
    ensure!(
        metrics.contains("backend_ejections_total{pool=\"shop\"} 1"),
        "{metrics}"
    );
    ensure!(
        metrics.contains(&format!(
            "backend_up{{pool=\"shop\",backend=\"{}\"}} 0",
            bad.addr
        )),
        "{metrics}"
    );
    ensure!(
        metrics.contains("proxy_requests_total{route=\"*/\",status=\"500\"} 2"),
        "{metrics}"
    );
    let health = proxy.health()?;
    ensure!(health["status"] == "degraded", "{health}");

    // The admin listener: HEAD answers GET's head with no body; other methods get 405.
    let admin = proxy.admin.context("admin listener")?;
    // (/metrics, not /health: nothing here changes it between the two requests.)
    let head = http_raw(admin, "HEAD", "/metrics")?;
    let (head_lines, head_body) = head.split_once("\r\n\r\n").context("HEAD answer")?;
    ensure!(head_lines.starts_with("HTTP/1.1 200"), "{head}");
    let get_len = proxy.metrics()?.len();
    ensure!(
        head_lines
            .to_ascii_lowercase()
            .contains(&format!("content-length: {get_len}")),
        "HEAD /metrics does not carry GET's Content-Length ({get_len}): {head}"
    );
    ensure!(head_body.is_empty(), "HEAD /metrics has a body: {head}");
    let post = http_raw(admin, "POST", "/metrics")?;
    ensure!(post.starts_with("HTTP/1.1 405"), "{post}");
    ensure!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    Ok(())
}
