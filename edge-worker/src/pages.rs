//! Sale pages: the version `static-sync` released through KV (binding `SITE`), else the Workers
//! Static Assets baseline shipped with the deploy (binding `ASSETS`).
//!
//! Per request the worker reads the `release` pointer (cached per isolate for
//! [`RELEASE_TTL_MS`]), picks the live version with [`Release::live_version`] — so a scheduled
//! go-live is a time comparison, not a deploy — resolves the path in that version's manifest
//! (immutable, cached per isolate) and serves the blob. The formats are documented in
//! `static_sync::manifest`.
//!
//! Consistency across edge locations: a go-live happens at `next.at` everywhere, because each
//! location compares its own clock to the same time; what can lag is a *new* pointer written
//! after the fact (a rollback, or a schedule written less than the KV propagation time ahead):
//! KV propagates within about 60 s, plus [`RELEASE_TTL_MS`] here. Schedules written well ahead
//! (the intended use) switch within clock skew.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use static_sync::manifest::{manifest_key, FileEntry, Manifest, Release, RELEASE_KEY};
use worker::{Env, Method, Request, Response, Result};

/// How long an isolate trusts the `release` pointer it read.
pub const RELEASE_TTL_MS: u64 = 2_000;
/// Manifests kept per isolate (they are immutable; this caps memory).
const MAX_CACHED_MANIFESTS: usize = 4;
/// Largest blob served from KV (the Workers Static Assets per-file limit).
const MAX_BLOB_BYTES: usize = 25 * 1024 * 1024;

thread_local! {
    static RELEASE: RefCell<Option<(u64, Option<Rc<Release>>)>> = const { RefCell::new(None) };
    static MANIFESTS: RefCell<HashMap<String, Rc<Manifest>>> = RefCell::new(HashMap::new());
}

/// The release pointer, from the isolate cache or KV. `None` when nothing was released through
/// KV (or the binding is absent): the Static Assets baseline is live.
async fn release(env: &Env, now_ms: u64) -> Option<Rc<Release>> {
    let cached = RELEASE.with(|r| r.borrow().clone());
    if let Some((fetched, rel)) = &cached {
        if now_ms.saturating_sub(*fetched) < RELEASE_TTL_MS {
            return rel.clone();
        }
    }
    let kv = env.kv("SITE").ok()?;
    let rel = match kv.get(RELEASE_KEY).bytes().await {
        Ok(Some(bytes)) => match Release::from_json(&bytes) {
            Ok(r) => Some(Rc::new(r)),
            Err(e) => {
                worker::console_error!(
                    "release pointer in KV is not valid JSON, serving the baseline: {e}"
                );
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            worker::console_error!("reading the release pointer failed: {e}");
            // Keep serving what we served before rather than flapping to the baseline.
            return cached.and_then(|(_, r)| r);
        }
    };
    RELEASE.with(|r| *r.borrow_mut() = Some((now_ms, rel.clone())));
    rel
}

async fn manifest(env: &Env, version: &str) -> Option<Rc<Manifest>> {
    if let Some(m) = MANIFESTS.with(|m| m.borrow().get(version).cloned()) {
        return Some(m);
    }
    let kv = env.kv("SITE").ok()?;
    let bytes = kv.get(&manifest_key(version)).bytes().await.ok()??;
    let m = Rc::new(Manifest::from_json(&bytes).ok()?);
    MANIFESTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= MAX_CACHED_MANIFESTS {
            cache.clear();
        }
        cache.insert(version.to_owned(), m.clone());
    });
    Some(m)
}

/// The file for `path` in the live version, or an immutable asset of an earlier/later version
/// a page loaded before a switch may still ask for.
async fn find(env: &Env, rel: &Release, path: &str, now_ms: u64) -> Option<FileEntry> {
    let live = rel.live_version(now_ms)?;
    if let Some((_, entry)) = manifest(env, live).await?.resolve(path) {
        return Some(entry.clone());
    }
    for other in rel.fallback_versions(now_ms) {
        if let Some(m) = manifest(env, other).await {
            if let Some(entry) = m.resolve_immutable(path) {
                return Some(entry.clone());
            }
        }
    }
    None
}

fn blob_response(req: &Request, entry: &FileEntry, body: Vec<u8>) -> Result<Response> {
    let not_modified = req
        .headers()
        .get("if-none-match")?
        .is_some_and(|inm| inm.split(',').any(|t| t.trim() == entry.etag()));
    let resp = if not_modified {
        Response::empty()?.with_status(304)
    } else if req.method() == Method::Head {
        Response::empty()?
    } else {
        Response::from_bytes(body)?
    };
    let h = resp.headers();
    h.set("content-type", &entry.content_type)?;
    h.set("cache-control", &entry.cache_control)?;
    h.set("etag", &entry.etag())?;
    h.set("x-edge-page-version", "kv")?;
    Ok(resp)
}

/// Serves a GET/HEAD from the released version or the static assets. `None` when neither has
/// the path (the request then goes to the origin).
pub async fn serve(req: &Request, env: &Env, now_ms: u64) -> Result<Option<Response>> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Ok(None);
    }
    let path = req.path();
    if let Some(rel) = release(env, now_ms).await {
        if let Some(entry) = find(env, &rel, &path, now_ms).await {
            if let Ok(kv) = env.kv("SITE") {
                match kv.get(&entry.blob_key()).bytes().await {
                    Ok(Some(body)) if body.len() <= MAX_BLOB_BYTES => {
                        return blob_response(req, &entry, body).map(Some)
                    }
                    Ok(_) => worker::console_error!(
                        "blob {} for {path} is missing or too large",
                        entry.sha256
                    ),
                    Err(e) => worker::console_error!("reading blob {} failed: {e}", entry.sha256),
                }
            }
        }
    }
    from_assets(req, env).await
}

/// The baseline static asset for this request, if there is one.
pub async fn from_assets(req: &Request, env: &Env) -> Result<Option<Response>> {
    let Ok(assets) = env.assets("ASSETS") else {
        return Ok(None);
    };
    let resp = assets.fetch_request(req.clone()?).await?;
    Ok((resp.status_code() != 404).then_some(resp))
}

/// The maintenance page (503, `Retry-After`), from the live version or the baseline; a plain
/// text answer if neither has one.
pub async fn maintenance(env: &Env, now_ms: u64, request_id: &str) -> Result<Response> {
    let mut body = None;
    if let Some(rel) = release(env, now_ms).await {
        if let Some(entry) = find(env, &rel, "/maintenance.html", now_ms).await {
            if let Ok(kv) = env.kv("SITE") {
                body = kv.get(&entry.blob_key()).bytes().await.ok().flatten();
            }
        }
    }
    if body.is_none() {
        if let Ok(assets) = env.assets("ASSETS") {
            if let Ok(mut resp) = assets
                .fetch("https://assets.local/maintenance.html", None)
                .await
            {
                if resp.status_code() == 200 {
                    body = resp.bytes().await.ok();
                }
            }
        }
    }
    let (resp, content_type) = match body {
        Some(b) => (Response::from_bytes(b)?, "text/html; charset=utf-8"),
        None => (
            Response::ok("The shop is busy. Please retry in a minute.")?,
            "text/plain; charset=utf-8",
        ),
    };
    let h = resp.headers();
    h.set("content-type", content_type)?;
    h.set("cache-control", "no-store")?;
    h.set("retry-after", "30")?;
    h.set(edge_signature::REQUEST_ID_HEADER, request_id)?;
    Ok(resp.with_status(503))
}
