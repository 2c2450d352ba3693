//! The WAF at the edge, end to end on workerd: CRS and the custom rules (waf-rules/examples/
//! shop-rules.toml, compiled into the worker) stop requests before they reach the origin.

use anyhow::{ensure, Context, Result};
use e2e_tests::{Edge, Origin, Proxy, Shop, EDGE_ADMIN_TOKEN};

struct Stack {
    shop: Shop,
    proxy: Proxy,
    edge: Edge,
}

fn start(name: &str) -> Result<Stack> {
    let Origin {
        dir,
        key,
        shop,
        proxy,
    } = Origin::start(name)?;
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    Ok(Stack { shop, proxy, edge })
}

async fn edge_counts(http: &reqwest::Client, edge: &Edge) -> Result<Vec<serde_json::Value>> {
    let resp = http
        .get(format!("{}/__edge/waf", edge.url()))
        .bearer_auth(EDGE_ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(resp.status() == 200, "/__edge/waf status {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    Ok(body["matches"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_at_the_edge_never_reach_the_origin() -> Result<()> {
    let stack = tokio::task::spawn_blocking(|| start("edge_waf_block")).await??;
    let http = reqwest::Client::new();

    // An ordinary shopper's request passes both rule sets.
    let ok = http
        .get(format!(
            "{}/api/products/1?ref=newsletter",
            stack.edge.url()
        ))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header("accept", "application/json")
        .send()
        .await?;
    ensure!(ok.status() == 200, "benign request status {}", ok.status());
    let served = stack.shop.requests()?;

    // CRS: a SQL injection in the query string.
    let resp = http
        .get(format!(
            "{}/api/catalog?id=1%27%20OR%20%271%27%3D%271",
            stack.edge.url()
        ))
        .header("user-agent", "Mozilla/5.0")
        .header("x-request-id", "probe-0001")
        .send()
        .await?;
    ensure!(resp.status() == 403, "SQLi status {}", resp.status());
    let body = resp.text().await?;
    ensure!(
        body.contains("probe-0001"),
        "block page lacks the reference id: {body}"
    );
    ensure!(
        !body.contains("942") && !body.to_lowercase().contains("sql"),
        "block page leaks rule internals: {body}"
    );

    // Custom rule: a scanner's user agent.
    let resp = http
        .get(format!("{}/api/catalog", stack.edge.url()))
        .header("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")
        .header("accept", "application/json")
        .send()
        .await?;
    ensure!(resp.status() == 403, "scanner status {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    ensure!(
        body["reference"].as_str().is_some_and(|r| !r.is_empty()),
        "no reference in {body}"
    );

    ensure!(
        stack.shop.requests()? == served,
        "a blocked request reached the demo shop"
    );
    let refused: Vec<_> = stack
        .proxy
        .access_log()
        .into_iter()
        .filter(|l| l["request_id"] == "probe-0001")
        .collect();
    ensure!(
        refused.is_empty(),
        "the origin proxy saw the blocked request: {refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_rules_change_nothing_and_login_floods_get_429_per_address() -> Result<()> {
    let stack = tokio::task::spawn_blocking(|| start("edge_waf_limits")).await??;
    let http = reqwest::Client::new();
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

    // A shadow rule (search-huge-query) matches: the request still goes through and is counted.
    let q = "a".repeat(300);
    let resp = http
        .get(format!("{}/search?q={q}", stack.edge.url()))
        .header("user-agent", ua)
        .send()
        .await?;
    ensure!(
        resp.status() != 403 && resp.status() != 429,
        "shadow rule acted: {}",
        resp.status()
    );
    ensure!(
        stack.shop.stats()?["by_path"]["/search"] == 1,
        "the shadowed request did not reach the shop"
    );
    let counts = edge_counts(&http, &stack.edge).await?;
    let shadow = counts
        .iter()
        .find(|c| c["rule"] == "search-huge-query")
        .context(format!("shadow match not counted: {counts:?}"))?;
    ensure!(
        shadow["mode"] == "shadow" && shadow["count"] == 1,
        "shadow count {shadow}"
    );

    // Five login attempts a minute per address are fine; the sixth gets 429 with Retry-After.
    let login = |ip: &'static str| {
        http.post(format!("{}/login", stack.edge.url()))
            .header("user-agent", ua)
            .header("cf-connecting-ip", ip)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("user=alice&password=hunter2")
            .send()
    };
    for n in 1..=5 {
        let resp = login("203.0.113.5").await?;
        ensure!(resp.status() != 429, "attempt {n} was limited");
    }
    let sixth = login("203.0.113.5").await?;
    ensure!(
        sixth.status() == 429,
        "sixth attempt status {}",
        sixth.status()
    );
    let retry = sixth
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    ensure!(
        retry.is_some_and(|s| s >= 1),
        "429 without a usable Retry-After: {retry:?}"
    );
    ensure!(
        stack.shop.stats()?["by_path"]["/login"] == 5,
        "the limited attempt reached the shop"
    );

    // Another address is not affected.
    let other = login("198.51.100.77").await?;
    ensure!(other.status() != 429, "another address was limited too");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_limit_is_kept_by_a_durable_object_across_isolates() -> Result<()> {
    let Origin {
        dir,
        key,
        shop,
        proxy,
    } = Origin::start("edge_waf_global")?;
    let http = reqwest::Client::new();
    let check = |edge: &Edge, ip: &'static str| {
        http.post(format!("{}/api/gift-cards/balance", edge.url()))
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            )
            .header("cf-connecting-ip", ip)
            .header("content-type", "application/json")
            .body(r#"{"card":"6006-1234"}"#)
            .send()
    };

    // Ten checks in the first isolate: all under the limit (gift-card-guessing: 10/min/IP,
    // so the Durable Object frees one more check every 6 s after the tenth).
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    for n in 1..=10 {
        let resp = check(&edge, "203.0.113.61").await?;
        ensure!(resp.status() != 429, "check {n} was limited");
    }
    let tenth = std::time::Instant::now();
    drop(edge);

    // A new isolate (wrangler restarted on the same local state) has an empty local limiter,
    // which would let ten more through: only the Durable Object remembers the ten. A restart
    // under load can take longer than 6 s, so the count allows the checks freed since the
    // tenth (each 6 s), and nothing more.
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    let mut passed: u64 = 0;
    let resp = loop {
        let resp = check(&edge, "203.0.113.61").await?;
        if resp.status() == 429 || passed == 10 {
            break resp;
        }
        passed += 1;
    };
    // Measured after the tenth's answer, so a second of slack for the Durable Object's clock.
    let freed = (tenth.elapsed().as_millis() + 1000) / 6000;
    ensure!(
        resp.status() == 429 && u128::from(passed) <= freed,
        "the new isolate let {passed} checks through before {} ({} s after the tenth, so at \
         most {freed} were freed)",
        resp.status(),
        tenth.elapsed().as_secs()
    );
    ensure!(
        resp.headers().contains_key("retry-after"),
        "429 without Retry-After"
    );
    let other = check(&edge, "198.51.100.61").await?;
    ensure!(other.status() != 429, "another address was limited");
    let counts = edge_counts(&http, &edge).await?;
    ensure!(
        counts
            .iter()
            .any(|c| c["rule"] == "gift-card-guessing" && c["mode"] == "enforce"),
        "global limit not counted: {counts:?}"
    );
    ensure!(
        shop.stats()?["by_path"]["/api/gift-cards/balance"] == 11 + passed,
        "shop counts {}",
        shop.stats()?
    );
    Ok(())
}
