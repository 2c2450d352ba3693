//! The WAF at the origin proxy (defence in depth), end to end: CRS and the example custom rules
//! in the proxy's `[waf]` section; blocks, shadow matches and rate limits show in the metrics.

use std::time::Duration;

use anyhow::{ensure, Result};
use e2e_tests::{root, scratch_dir, shared_dir, test_key, Proxy, Shop};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_blocks_shadows_and_rate_limits_like_the_edge() -> Result<()> {
    let dir = scratch_dir("origin_waf")?;
    let shop = Shop::start("shop-a", &dir)?;
    let crs = shared_dir()?.join("crs-4.28.0");
    let rules = root().join("waf-rules/examples/shop-rules.toml");
    let config = format!(
        r#"listen = "{{listen}}"
[admin]
listen = "{{admin}}"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.shop]
backends = ["{shop}"]
[[routes]]
path-prefix = "/"
pool = "shop"
[waf]
mode = "block"
paranoia = 1
crs-dir = "{crs}"
rules = ["{rules}"]
"#,
        shop = shop.addr,
        crs = crs.display(),
        rules = rules.display(),
    );
    let proxy = Proxy::start_with_config(&config, &test_key(), &dir)?;
    let http = client();
    let url = proxy.url();

    // A benign JSON POST is inspected and still reaches the shop with its body intact.
    let resp = http
        .post(format!("{url}/api/cart"))
        .header("user-agent", UA)
        .header("content-type", "application/json")
        .body(r#"{"product":2,"quantity":1}"#)
        .send()
        .await?;
    ensure!(resp.status() == 200, "cart POST status {}", resp.status());
    let cart: serde_json::Value = resp.json().await?;
    ensure!(
        cart["cart"][0]["product"] == 2,
        "the body did not reach the shop intact: {cart}"
    );

    // CRS blocks an injection in a JSON body; the shop never sees it.
    let before = shop.requests()?;
    let resp = http
        .post(format!("{url}/api/cart"))
        .header("user-agent", UA)
        .header("content-type", "application/json")
        .body(r#"{"product":"1 UNION SELECT password FROM users--","quantity":1}"#)
        .send()
        .await?;
    ensure!(
        resp.status() == 403,
        "SQLi in JSON status {}",
        resp.status()
    );
    ensure!(
        shop.requests()? == before,
        "the blocked request reached the shop"
    );

    // A shadow rule matches and changes nothing.
    let q = "a".repeat(300);
    let resp = http
        .get(format!("{url}/search?q={q}"))
        .header("user-agent", UA)
        .send()
        .await?;
    ensure!(
        resp.status() == 404,
        "shadowed search status {} (the demo shop has no /search)",
        resp.status()
    );

    // Login flood: the sixth attempt from one address within a minute gets 429; another address
    // still gets through.
    let login = |ip: &'static str| {
        http.post(format!("{url}/login"))
            .header("user-agent", UA)
            .header("x-forwarded-for", ip)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("user=alice&password=hunter2")
            .send()
    };
    for n in 1..=5 {
        ensure!(
            login("203.0.113.5").await?.status() != 429,
            "attempt {n} limited"
        );
    }
    let sixth = login("203.0.113.5").await?;
    ensure!(
        sixth.status() == 429,
        "sixth attempt status {}",
        sixth.status()
    );
    ensure!(
        sixth.headers().contains_key("retry-after"),
        "429 without Retry-After"
    );
    ensure!(
        login("198.51.100.77").await?.status() != 429,
        "another address was limited"
    );

    let metrics = proxy.metrics()?;
    let has = |needle: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("waf_matches_total") && l.contains(needle))
    };
    ensure!(
        has(r#"action="block",mode="enforce""#),
        "no enforced CRS block in the metrics:\n{metrics}"
    );
    ensure!(
        has(r#"rule="search-huge-query",action="block",mode="shadow""#),
        "shadow match not counted:\n{metrics}"
    );
    ensure!(
        has(r#"rule="login-brute-force",action="rate_limit",mode="enforce""#),
        "rate limit not counted:\n{metrics}"
    );
    Ok(())
}
