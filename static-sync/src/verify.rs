//! `verify`: fetch every file of a version from the edge and compare its SHA-256 with the
//! manifest. The comparison is pure over a `fetch` function; [`http_fetcher`] is the real one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::manifest::Manifest;
use crate::site::sha256_hex;

/// One file the edge does not serve as the manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// URL path.
    pub path: String,
    /// What was wrong: a status, a transport error, or the hash that came back.
    pub problem: String,
}

/// The result of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The version verified.
    pub version: String,
    /// Files fetched.
    pub checked: usize,
    /// Files that matched.
    pub ok: usize,
    /// The others, sorted by path.
    pub mismatches: Vec<Mismatch>,
}

/// Fetches `paths` of `manifest` with `fetch` (URL path → body or a reason), `concurrency`
/// at a time, and compares hashes. `on_done` is called once per file (for a progress bar).
pub fn verify(
    manifest: &Manifest,
    paths: &[String],
    fetch: &(dyn Fn(&str) -> Result<Vec<u8>, String> + Sync),
    concurrency: usize,
    on_done: &(dyn Fn() + Sync),
) -> VerifyReport {
    let next = AtomicUsize::new(0);
    let mismatches = Mutex::new(Vec::new());
    let ok = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.clamp(1, 64) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let Some(entry) = manifest.files.get(path) else {
                    continue;
                };
                let result = match fetch(path) {
                    Ok(body) => {
                        let got = sha256_hex(&body);
                        if got == entry.sha256 {
                            Ok(())
                        } else {
                            Err(format!(
                                "sha256 {got} ({} bytes), manifest says {} ({} bytes)",
                                body.len(),
                                entry.sha256,
                                entry.size
                            ))
                        }
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(problem) => {
                        if let Ok(mut m) = mismatches.lock() {
                            m.push(Mismatch {
                                path: path.clone(),
                                problem,
                            });
                        }
                    }
                }
                on_done();
            });
        }
    });
    let mut mismatches = mismatches.into_inner().unwrap_or_default();
    mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    VerifyReport {
        version: manifest.version.clone(),
        checked: paths.len(),
        ok: ok.into_inner(),
        mismatches,
    }
}

/// A blocking HTTP(S) fetcher for `base_url` (`http://127.0.0.1:8787`): 200 and a body of at
/// most 26 MiB, else a reason. Asks caches in between to revalidate.
pub fn http_fetcher(
    base_url: &str,
    timeout: Duration,
) -> impl Fn(&str) -> Result<Vec<u8>, String> + Sync {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let base = base_url.trim_end_matches('/').to_owned();
    move |path: &str| {
        let url = format!("{base}{}", encode_path(path));
        let mut resp = agent
            .get(&url)
            .header("Cache-Control", "no-cache")
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("GET {url}: status {status}"));
        }
        resp.body_mut()
            .with_config()
            .limit(26 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: reading body: {e}"))
    }
}

/// Percent-encodes what must not appear raw in a URL path.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, CACHE_REVALIDATE};

    #[test]
    fn verify_lists_mismatches_and_errors() {
        let mut m = Manifest {
            version: "v".into(),
            files: Default::default(),
        };
        for (p, body) in [("/a", "A"), ("/b", "B"), ("/c", "C")] {
            m.files.insert(
                p.into(),
                FileEntry {
                    sha256: sha256_hex(body.as_bytes()),
                    size: 1,
                    content_type: "text/plain".into(),
                    cache_control: CACHE_REVALIDATE.into(),
                },
            );
        }
        let fetch = |p: &str| match p {
            "/a" => Ok(b"A".to_vec()),
            "/b" => Ok(b"old B".to_vec()),
            _ => Err("status 404".to_owned()),
        };
        let paths: Vec<String> = m.files.keys().cloned().collect();
        let r = verify(&m, &paths, &fetch, 2, &|| {});
        assert_eq!((r.checked, r.ok), (3, 1));
        assert_eq!(
            r.mismatches
                .iter()
                .map(|x| x.path.as_str())
                .collect::<Vec<_>>(),
            vec!["/b", "/c"]
        );
        assert!(r.mismatches[0].problem.contains("5 bytes"));
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("/a b/ü.html"), "/a%20b/%C3%BC.html");
    }
}
