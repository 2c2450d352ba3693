//! Sale pages end to end: static-sync pushes versions into the worker's local KV, schedules a
//! go-live that the worker performs by itself, rolls back; the edge cache covers an origin outage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use e2e_tests::{bin, root, scratch_dir, Edge, Origin};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `static-sync` against the local KV state of the running edge.
fn static_sync(state: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(bin("static-sync")?)
        .current_dir(root())
        .args(args)
        .env("STATIC_SYNC_PERSIST_TO", state)
        .env(
            "STATIC_SYNC_WRANGLER_CONFIG",
            root().join("edge-worker/wrangler.toml"),
        )
        .env(
            "STATIC_SYNC_WRANGLER",
            root().join("node_modules/.bin/wrangler"),
        )
        .env("WRANGLER_SEND_METRICS", "false")
        .output()
        .context("running static-sync")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn must(state: &Path, args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = static_sync(state, args)?;
    ensure!(ok, "static-sync {args:?} failed:\n{stdout}\n{stderr}");
    Ok(stdout)
}

/// A copy of the sample site whose landing page says `marker`.
fn site_version(dir: &Path, name: &str, marker: &str) -> Result<PathBuf> {
    let out = dir.join(name);
    copy_dir(&root().join("site"), &out)?;
    let index = out.join("index.html");
    let html = std::fs::read_to_string(&index)?;
    let html = html.replacen(
        "<body>",
        &format!("<body><!-- {marker} --><p id=\"version\">{marker}</p>"),
        1,
    );
    std::fs::write(index, html)?;
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Build a site folder and push it; returns the version id.
fn build_and_push(state: &Path, site: &Path, out: &Path, activate: bool) -> Result<String> {
    must(
        state,
        &[
            "build",
            &site.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
    )?;
    let mut args = vec!["push", "--json"];
    let out_s = out.display().to_string();
    args.push(&out_s);
    if activate {
        args.push("--activate");
    }
    let json: serde_json::Value =
        serde_json::from_str(&must(state, &args)?).context("push --json output")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json"))?)?;
    let version = manifest["version"]
        .as_str()
        .context("manifest version")?
        .to_owned();
    ensure!(
        json.to_string().contains(&version),
        "push output does not name {version}: {json}"
    );
    Ok(version)
}

async fn landing(http: &reqwest::Client, edge: &Edge) -> Result<String> {
    let resp = http.get(format!("{}/", edge.url())).send().await?;
    ensure!(
        resp.status() == 200,
        "landing page status {}",
        resp.status()
    );
    Ok(resp.text().await?)
}

/// Polls the landing page until it shows `marker` or the deadline passes.
async fn wait_for(
    http: &reqwest::Client,
    edge: &Edge,
    marker: &str,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if landing(http, edge).await?.contains(marker) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the edge did not serve {marker:?} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_schedule_rollback_without_a_deploy() -> Result<()> {
    let Origin {
        dir,
        key,
        shop,
        proxy,
    } = Origin::start("pages_release")?;
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    let state = dir.join("state");
    let http = reqwest::Client::new();

    // Before any push the deploy's static assets are live.
    let baseline = landing(&http, &edge).await?;
    ensure!(
        !baseline.contains("VERSION-ONE"),
        "baseline already shows v1"
    );

    // Version 1, pushed and activated: the edge serves it.
    let v1 = build_and_push(
        &state,
        &site_version(&dir, "site-v1", "VERSION-ONE")?,
        &dir.join("out-v1"),
        true,
    )?;
    wait_for(&http, &edge, "VERSION-ONE", Duration::from_secs(10)).await?;

    // Version 2, pushed days ahead in spirit: uploaded, not live.
    let v2 = build_and_push(
        &state,
        &site_version(&dir, "site-v2", "VERSION-TWO")?,
        &dir.join("out-v2"),
        false,
    )?;
    ensure!(v1 != v2, "two different sites got the same version id");
    ensure!(
        landing(&http, &edge).await?.contains("VERSION-ONE"),
        "push alone changed the live page"
    );

    // Scheduled a few seconds ahead: v1 until then, v2 from then on, with no deploy between.
    // Each static-sync call runs wrangler (a couple of seconds): leave room before the time.
    let at = now_ms() + 15_000;
    let scheduling = Instant::now();
    must(
        &state,
        &["schedule", "--version", &v2, "--at", &format!("@{at}")],
    )?;
    let took = scheduling.elapsed();
    let mut saw_v1_before = false;
    loop {
        let t = now_ms();
        let page = landing(&http, &edge).await?;
        let t_after = now_ms();
        if page.contains("VERSION-TWO") {
            ensure!(
                t_after >= at,
                "v2 was served {} ms before its time",
                at - t_after
            );
            break;
        }
        ensure!(
            page.contains("VERSION-ONE"),
            "neither version served: {page:.300}"
        );
        if t_after < at {
            saw_v1_before = true;
        }
        ensure!(t < at + 5_000, "v2 not live 5 s after its time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        saw_v1_before,
        "never observed v1 before the scheduled time (scheduling took {took:?})"
    );

    // A fingerprinted asset of the live version is served from KV with immutable caching.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out-v2/manifest.json"))?)?;
    let files = manifest["files"].as_object().context("files")?;
    let (css, _) = files
        .iter()
        .find(|(p, _)| p.ends_with(".css"))
        .context("a css file")?;
    let resp = http.get(format!("{}{css}", edge.url())).send().await?;
    ensure!(resp.status() == 200, "css status {}", resp.status());
    let cc = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(
        cc.contains("immutable"),
        "fingerprinted asset cache-control {cc:?}"
    );

    // Rollback: v1 again, in one command.
    must(&state, &["rollback"])?;
    wait_for(&http, &edge, "VERSION-ONE", Duration::from_secs(10)).await?;
    ensure!(shop.requests()? == 0, "pages reached the demo shop");
    Ok(())
}

#[test]
fn check_names_the_file_and_line_of_a_broken_link() -> Result<()> {
    let dir = scratch_dir("pages_check")?;
    let site = dir.join("site");
    copy_dir(&root().join("site"), &site)?;
    let page = site.join("products/aurora-headphones.html");
    let mut html = std::fs::read_to_string(&page)?;
    html.push_str("\n<a href=\"../no-such-page.html\">gone</a>\n");
    std::fs::write(&page, &html)?;
    let line = html.lines().count();
    let (ok, stdout, stderr) = static_sync(&dir, &["check", &site.display().to_string()])?;
    let text = format!("{stdout}{stderr}");
    ensure!(!ok, "check passed a broken link:\n{text}");
    ensure!(
        text.contains("aurora-headphones.html"),
        "check does not name the file:\n{text}"
    );
    ensure!(
        text.contains(&format!(":{line}")),
        "check does not name line {line}:\n{text}"
    );
    ensure!(
        text.contains("no-such-page.html"),
        "check does not name the link:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_outage_serves_the_cached_copy_or_the_maintenance_page() -> Result<()> {
    let Origin {
        dir,
        key,
        shop,
        mut proxy,
    } = Origin::start("pages_outage")?;
    let edge = Edge::start(&proxy.url(), &key, &dir)?;
    let http = reqwest::Client::new();

    // Fresh for a second, then only good for stale-if-error.
    let product = format!("{}/api/products/2?max_age=1", edge.url());
    let first = http.get(&product).send().await?;
    ensure!(
        first.status() == 200,
        "first product GET {}",
        first.status()
    );
    let first_body = first.text().await?;

    // While fresh, the edge answers without the origin.
    let before = shop.requests()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = http.get(&product).send().await?;
        let how = resp
            .headers()
            .get("x-edge-cache")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        if how.as_deref() == Some("HIT") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the product page was never served from the edge cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = before;

    // The origin goes down.
    proxy.proc.kill_now();
    tokio::time::sleep(Duration::from_millis(1_200)).await; // let the 1 s max-age run out

    let resp = http.get(&product).send().await?;
    ensure!(resp.status() == 200, "stale copy status {}", resp.status());
    let how = resp
        .headers()
        .get("x-edge-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(
        how == "STALE",
        "expected the stale copy, got x-edge-cache {how:?}"
    );
    ensure!(
        resp.text().await? == first_body,
        "stale copy differs from the original"
    );

    // A page never cached gets the maintenance page, not a raw error.
    let resp = http
        .get(format!("{}/api/products/3", edge.url()))
        .send()
        .await?;
    ensure!(
        resp.status() == 503,
        "uncached GET during the outage: {}",
        resp.status()
    );
    ensure!(
        resp.headers().contains_key("retry-after"),
        "maintenance answer without Retry-After"
    );
    let body = resp.text().await?;
    ensure!(
        body.to_lowercase().contains("maintenance") || body.contains("<html"),
        "not the maintenance page: {body:.300}"
    );
    Ok(())
}
