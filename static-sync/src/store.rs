//! The KV namespace behind a small trait, so the release logic runs the same against wrangler
//! (local or remote), a plain directory, or memory in tests.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::error::StoreError;
use crate::manifest::{manifest_key, Manifest, Release, BLOB_PREFIX, RELEASE_KEY};

/// A key-value namespace with the operations `static-sync` needs.
pub trait Store {
    /// The value of a key, `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes one key.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Writes several keys. On error some may have been written: callers only write
    /// content-addressed or not-yet-referenced keys this way, so a retry is harmless.
    fn put_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    /// Every key starting with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// A stable name for this namespace (used to keep one push journal per target).
    fn identity(&self) -> String;
}

/// Reads and parses `release`; `None` if it was never written.
pub fn read_release(store: &dyn Store) -> Result<Option<Release>, StoreError> {
    match store.get(RELEASE_KEY)? {
        None => Ok(None),
        Some(bytes) => {
            Release::from_json(&bytes)
                .map(Some)
                .map_err(|source| StoreError::BadValue {
                    key: RELEASE_KEY.to_owned(),
                    source,
                })
        }
    }
}

/// Writes `release` (one write).
pub fn write_release(store: &dyn Store, release: &Release) -> Result<(), StoreError> {
    store.put(RELEASE_KEY, release.to_json().as_bytes())
}

/// Reads and parses `manifest/<version>`; `None` if absent.
pub fn read_manifest(store: &dyn Store, version: &str) -> Result<Option<Manifest>, StoreError> {
    let key = manifest_key(version);
    match store.get(&key)? {
        None => Ok(None),
        Some(bytes) => Manifest::from_json(&bytes)
            .map(Some)
            .map_err(|source| StoreError::BadValue { key, source }),
    }
}

/// The hashes of every blob in the store.
pub fn present_blobs(store: &dyn Store) -> Result<HashSet<String>, StoreError> {
    Ok(store
        .list(BLOB_PREFIX)?
        .into_iter()
        .filter_map(|k| k.strip_prefix(BLOB_PREFIX).map(str::to_owned))
        .collect())
}

/// A store in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Fail every `put_many` after this many successful ones (to test resuming).
    pub fail_after_batches: Option<usize>,
    batches: Mutex<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything in the store.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.map.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// How many `put_many` calls succeeded.
    pub fn batches(&self) -> usize {
        self.batches.lock().map(|b| *b).unwrap_or(0)
    }
}

fn poisoned() -> StoreError {
    StoreError::Output {
        args: "memory".into(),
        detail: "lock poisoned".into(),
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().map_err(|_| poisoned())?.get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.map
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn put_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batches = self.batches.lock().map_err(|_| poisoned())?;
        if self.fail_after_batches.is_some_and(|n| *batches >= n) {
            return Err(StoreError::Output {
                args: "memory put_many".into(),
                detail: "simulated interruption".into(),
            });
        }
        let mut map = self.map.lock().map_err(|_| poisoned())?;
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        *batches += 1;
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .map
            .lock()
            .map_err(|_| poisoned())?
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn identity(&self) -> String {
        "memory".into()
    }
}

/// A store in a plain directory, one file per key (`blob/<sha>` is `DIR/blob/<sha>`): for dry
/// runs, CI without wrangler, and the command-line tests.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(StoreError::Output {
                args: "dir store".into(),
                detail: format!("key `{key}` cannot be a file name"),
            });
        }
        Ok(self.root.join(key))
    }

    fn io(&self, e: std::io::Error) -> StoreError {
        StoreError::Output {
            args: format!("dir store {}", self.root.display()),
            detail: e.to_string(),
        }
    }
}

impl Store for DirStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.path(key)?) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(e))?;
        }
        // Write then rename, so a reader never sees half a value.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, value).map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.io(e))
    }

    fn put_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        entries.iter().try_for_each(|(k, v)| self.put(k, v))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        if !self.root.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&self.root).sort_by_file_name() {
            let entry = entry.map_err(|e| self.io(e.into()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .unwrap_or(entry.path());
            if let Some(key) = crate::site::site_path(rel) {
                if key.starts_with(prefix) && !key.ends_with(".partial") {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    fn identity(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

/// Where wrangler's KV commands act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--local`, optionally `--persist-to DIR` (the state directory `wrangler dev` uses).
    Local {
        /// `--persist-to`.
        persist_to: Option<PathBuf>,
    },
    /// `--remote` (needs `CLOUDFLARE_API_TOKEN` or `wrangler login`).
    Remote,
}

/// The KV namespace through the `wrangler kv` commands of wrangler 4.
///
/// * get: `wrangler kv key get KEY` (prints the raw value, or `Value not found` with exit 0)
/// * put: `wrangler kv key put KEY --path FILE` (binary-safe)
/// * many: `wrangler kv bulk put FILE` with `[{"key", "value", "base64"}]`. Against `--local`,
///   wrangler 4.86 decodes base64 values to a UTF-8 string before storing them, which corrupts
///   binary content; so locally only UTF-8 values go through `bulk put` (as plain strings) and
///   binary ones through `key put --path`, one call each.
/// * list: `wrangler kv key list --prefix P` (JSON array of `{"name": ...}`)
///
/// Every call adds `--binding NAME` (or `--namespace-id ID`), `--local [--persist-to DIR]` or
/// `--remote`, and `-c CONFIG` / `-e ENV` when given.
#[derive(Debug, Clone)]
pub struct WranglerStore {
    /// The wrangler program.
    pub program: PathBuf,
    /// `-c`: the wrangler config that declares the KV binding.
    pub config: Option<PathBuf>,
    /// `-e`.
    pub env: Option<String>,
    /// `--binding` (default `SITE`) ...
    pub binding: String,
    /// ... or `--namespace-id`, which wins when set.
    pub namespace_id: Option<String>,
    /// Local or remote.
    pub target: Target,
    /// How long one wrangler call may take before it is killed.
    pub timeout: Duration,
}

enum RunError {
    Spawn(std::io::Error),
    Timeout,
}

/// Runs a command with piped output, killing it after `timeout`.
fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(RunError::Spawn(e)),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// How many times a wrangler call that found local state locked is tried again.
const LOCKED_RETRIES: u64 = 5;

/// Whether a failed wrangler call failed because local state's SQLite file was locked.
fn locked(out: &std::process::Output) -> bool {
    [&out.stderr, &out.stdout].iter().any(|b| {
        let t = String::from_utf8_lossy(b);
        t.contains("SQLITE_BUSY") || t.contains("database is locked")
    })
}

impl WranglerStore {
    fn common_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        match &self.namespace_id {
            Some(id) => a.extend(["--namespace-id".to_owned(), id.clone()]),
            None => a.extend(["--binding".to_owned(), self.binding.clone()]),
        }
        match &self.target {
            Target::Local { persist_to } => {
                a.push("--local".into());
                if let Some(p) = persist_to {
                    a.extend(["--persist-to".to_owned(), p.display().to_string()]);
                }
            }
            Target::Remote => a.push("--remote".into()),
        }
        if let Some(c) = &self.config {
            a.extend(["-c".to_owned(), c.display().to_string()]);
        }
        if let Some(e) = &self.env {
            a.extend(["-e".to_owned(), e.clone()]);
        }
        a
    }

    fn run(&self, args: &[String]) -> Result<Vec<u8>, StoreError> {
        let mut all: Vec<String> = vec!["kv".into()];
        all.extend_from_slice(args);
        all.extend(self.common_args());
        let mut attempt = 0;
        let out = loop {
            let out = run_with_timeout(
                Command::new(&self.program)
                    .args(&all)
                    .env("WRANGLER_SEND_METRICS", "false"),
                self.timeout,
            )
            .map_err(|e| match e {
                RunError::Spawn(source) => StoreError::Spawn {
                    program: self.program.display().to_string(),
                    source,
                },
                RunError::Timeout => StoreError::Timeout {
                    args: all.join(" "),
                    seconds: self.timeout.as_secs(),
                },
            })?;
            // Local state is a SQLite file that a running `wrangler dev` holds too: a write of
            // its own can lock it for a moment. Every KV call here is a read or an idempotent
            // put, so it is tried again (up to LOCKED_RETRIES times, 0.25 s apart, then more).
            attempt += 1;
            if out.status.success() || attempt > LOCKED_RETRIES || !locked(&out) {
                break out;
            }
            std::thread::sleep(Duration::from_millis(250 * attempt));
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            let tail: String = text
                .trim()
                .lines()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(StoreError::Wrangler {
                args: all.join(" "),
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        Ok(out.stdout)
    }

    fn temp_file(bytes: &[u8]) -> Result<tempfile::NamedTempFile, StoreError> {
        let mut f = tempfile::NamedTempFile::new().map_err(StoreError::TempFile)?;
        f.write_all(bytes).map_err(StoreError::TempFile)?;
        f.flush().map_err(StoreError::TempFile)?;
        Ok(f)
    }

    fn bulk(&self, entries: &[(String, Vec<u8>)], base64: bool) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|(k, v)| {
                if base64 {
                    serde_json::json!({"key": k, "value": base64::engine::general_purpose::STANDARD.encode(v), "base64": true})
                } else {
                    serde_json::json!({"key": k, "value": String::from_utf8_lossy(v)})
                }
            })
            .collect();
        let json = serde_json::to_vec(&items).map_err(|e| StoreError::TempFile(e.into()))?;
        let f = Self::temp_file(&json)?;
        self.run(&["bulk".into(), "put".into(), path_arg(f.path())])?;
        Ok(())
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

impl Store for WranglerStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let out = self.run(&["key".into(), "get".into(), key.to_owned()])?;
        let trimmed = out.strip_suffix(b"\n").unwrap_or(&out);
        if trimmed == b"Value not found" {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let f = Self::temp_file(value)?;
        self.run(&[
            "key".into(),
            "put".into(),
            key.to_owned(),
            "--path".into(),
            path_arg(f.path()),
        ])?;
        Ok(())
    }

    fn put_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        match self.target {
            Target::Remote => self.bulk(entries, true),
            Target::Local { .. } => {
                let (text, binary): (Vec<_>, Vec<_>) = entries
                    .iter()
                    .cloned()
                    .partition(|(_, v)| std::str::from_utf8(v).is_ok());
                self.bulk(&text, false)?;
                binary.iter().try_for_each(|(k, v)| self.put(k, v))
            }
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let args = vec![
            "key".into(),
            "list".into(),
            "--prefix".into(),
            prefix.to_owned(),
        ];
        let out = self.run(&args)?;
        let text = String::from_utf8_lossy(&out);
        let start = text.find('[').ok_or_else(|| StoreError::Output {
            args: args.join(" "),
            detail: format!(
                "no JSON array in: {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        #[derive(serde::Deserialize)]
        struct Key {
            name: String,
        }
        let keys: Vec<Key> =
            serde_json::from_str(&text[start..]).map_err(|e| StoreError::Output {
                args: args.join(" "),
                detail: e.to_string(),
            })?;
        Ok(keys.into_iter().map(|k| k.name).collect())
    }

    fn identity(&self) -> String {
        let ns = self
            .namespace_id
            .clone()
            .unwrap_or_else(|| format!("binding={}", self.binding));
        let target = match &self.target {
            Target::Local { persist_to } => format!(
                "local:{}",
                persist_to
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Target::Remote => "remote".into(),
        };
        let config = self
            .config
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "wrangler:{target}:{ns}:{config}:{}",
            self.env.clone().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_store_round_trips_and_lists_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::new(dir.path().join("kv"));
        assert_eq!(s.get("release").unwrap(), None);
        assert!(s.list("blob/").unwrap().is_empty());
        s.put_many(&[
            ("blob/aa".into(), vec![0, 255]),
            ("blob/bb".into(), vec![1]),
        ])
        .unwrap();
        s.put("manifest/v", b"{}").unwrap();
        assert_eq!(s.get("blob/aa").unwrap(), Some(vec![0, 255]));
        assert_eq!(s.list("blob/").unwrap(), vec!["blob/aa", "blob/bb"]);
        assert!(s.put("../x", b"").is_err());
        assert_eq!(present_blobs(&s).unwrap().len(), 2);
    }

    #[test]
    fn wrangler_args_name_the_namespace_and_target() {
        let w = WranglerStore {
            program: "wrangler".into(),
            config: Some("edge-worker/wrangler.toml".into()),
            env: None,
            binding: "SITE".into(),
            namespace_id: None,
            target: Target::Local {
                persist_to: Some(".wrangler/state".into()),
            },
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            w.common_args(),
            vec![
                "--binding",
                "SITE",
                "--local",
                "--persist-to",
                ".wrangler/state",
                "-c",
                "edge-worker/wrangler.toml"
            ]
        );
    }

    #[test]
    fn a_missing_wrangler_is_a_clear_error() {
        let w = WranglerStore {
            program: "/nonexistent/wrangler".into(),
            config: None,
            env: None,
            binding: "SITE".into(),
            namespace_id: None,
            target: Target::Remote,
            timeout: Duration::from_secs(1),
        };
        let e = w.get("release").unwrap_err();
        assert!(e.to_string().contains("STATIC_SYNC_WRANGLER"), "{e}");
    }

    #[test]
    fn locked_local_state_is_tried_again_other_failures_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = |name: &str, fail_with: &str| {
            // Fails twice with `fail_with`, then prints the value.
            let script = dir.path().join(name);
            let count = dir.path().join(format!("{name}.count"));
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho x >> '{c}'\nif [ $(wc -l < '{c}') -le 2 ]; then echo '{fail_with}' >&2; exit 1; fi\nprintf v1\n",
                    c = count.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            (
                WranglerStore {
                    program: script,
                    config: None,
                    env: None,
                    binding: "SITE".into(),
                    namespace_id: None,
                    target: Target::Local { persist_to: None },
                    timeout: Duration::from_secs(5),
                },
                count,
            )
        };
        let calls =
            |count: &std::path::Path| std::fs::read_to_string(count).unwrap().lines().count();
        let (busy, busy_count) = fake("busy", "SQLITE_BUSY: database is locked");
        assert_eq!(busy.get("release").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(calls(&busy_count), 3);
        let (broken, broken_count) = fake("broken", "no such namespace");
        assert!(broken.get("release").is_err());
        assert_eq!(calls(&broken_count), 1);
    }

    #[test]
    fn a_hanging_wrangler_is_killed_after_the_timeout() {
        let r = run_with_timeout(Command::new("sleep").arg("5"), Duration::from_millis(200));
        assert!(matches!(r, Err(RunError::Timeout)));
        let ok = run_with_timeout(Command::new("echo").arg("hi"), Duration::from_secs(5))
            .ok()
            .unwrap();
        assert_eq!(ok.stdout, b"hi\n");
    }
}
