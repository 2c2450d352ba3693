//! `check`: everything that would make a site fail to deploy, leak a secret, or show a shopper
//! a broken page, each named with file and line.

use std::path::Path;

use serde::Serialize;
use walkdir::WalkDir;

use crate::error::SiteError;
use crate::refs::{css_references, html_references, Reference};
use crate::site::{
    is_css, is_external, is_html, line_of, line_starts, resolve_reference, site_path, SiteFiles,
    MAX_FILES, MAX_FILE_BYTES,
};

/// How bad a problem is: errors fail `check` and `build`, warnings are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fails the check.
    Error,
    /// Reported only.
    Warning,
}

/// One problem found in a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Site path of the file (or directory).
    pub file: String,
    /// 1-based line, when the problem is inside the file.
    pub line: Option<u32>,
    /// Error or warning.
    pub severity: Severity,
    /// A stable short name: `broken-link`, `html`, `secret`, `junk`, `too-large`, `too-many-files`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(l) => write!(
                f,
                "{}:{l}: {sev}[{}]: {}",
                self.file, self.code, self.message
            ),
            None => write!(f, "{}: {sev}[{}]: {}", self.file, self.code, self.message),
        }
    }
}

fn problem(
    file: &str,
    line: Option<u32>,
    severity: Severity,
    code: &'static str,
    message: String,
) -> Problem {
    Problem {
        file: file.to_owned(),
        line,
        severity,
        code,
        message,
    }
}

/// Files `build` writes itself, or that Workers Static Assets reads as configuration.
pub fn is_control_file(path: &str) -> bool {
    matches!(
        path,
        "_headers" | "_redirects" | ".assetsignore" | "manifest.json"
    )
}

const JUNK_DIRS: &[&str] = &[
    "node_modules",
    ".git",
    ".svn",
    ".hg",
    "__MACOSX",
    ".static-sync",
];

fn junk_or_secret_name(path: &str) -> Option<(Severity, &'static str, String)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let lower = name.to_ascii_lowercase();
    let secret = lower == ".env"
        || lower.starts_with(".env.")
        || [".pem", ".key", ".p12", ".pfx", ".keystore", ".jks"]
            .iter()
            .any(|e| lower.ends_with(e))
        || [
            "id_rsa",
            "id_dsa",
            "id_ecdsa",
            "id_ed25519",
            ".npmrc",
            ".htpasswd",
            ".netrc",
            ".pgpass",
        ]
        .contains(&lower.as_str());
    if secret {
        return Some((
            Severity::Error,
            "secret",
            format!("`{name}` looks like a secret (keys, credentials): never publish it"),
        ));
    }
    if [
        "ds_store",
        ".ds_store",
        "thumbs.db",
        "desktop.ini",
        "ehthumbs.db",
    ]
    .contains(&lower.as_str())
        || lower.ends_with('~')
        || lower.ends_with(".swp")
        || lower.ends_with(".bak")
        || lower.ends_with(".orig")
    {
        return Some((
            Severity::Error,
            "junk",
            format!("`{name}` is build or editor junk"),
        ));
    }
    if lower.ends_with(".map") {
        return Some((
            Severity::Warning,
            "source-map",
            format!("`{name}` is a source map: it publishes your unminified sources"),
        ));
    }
    None
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn secret_content(bytes: &[u8]) -> Option<(usize, &'static str)> {
    if let Some(at) = find_bytes(bytes, b"PRIVATE KEY-----") {
        return Some((
            at,
            "contains a private key (`-----BEGIN ... PRIVATE KEY-----`)",
        ));
    }
    // AWS access key ids: AKIA followed by 16 upper-case letters or digits.
    let mut from = 0;
    while let Some(p) = find_bytes(&bytes[from..], b"AKIA") {
        let at = from + p;
        let id = bytes.get(at + 4..at + 20);
        let boundary = bytes
            .get(at + 20)
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        if id.is_some_and(|id| {
            id.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        }) && boundary
        {
            return Some((at, "contains what looks like an AWS access key id"));
        }
        from = at + 4;
    }
    None
}

fn check_references(
    files: &SiteFiles,
    path: &str,
    refs: &[Reference],
    lines: &[usize],
    out: &mut Vec<Problem>,
) {
    for r in refs {
        if is_external(&r.url) {
            continue;
        }
        let line = Some(line_of(lines, r.span.start));
        match resolve_reference(files, path, &r.url) {
            Ok(Some(_)) => {}
            Ok(None) => out.push(problem(
                path,
                line,
                Severity::Error,
                "broken-link",
                format!(
                    "{} `{}` does not resolve to a file in the site",
                    r.kind, r.url
                ),
            )),
            Err(reason) => out.push(problem(path, line, Severity::Error, "broken-link", reason)),
        }
    }
}

/// Checks a site held in memory. Problems come sorted by file, then line.
pub fn check_site(files: &SiteFiles) -> Vec<Problem> {
    let mut out = Vec::new();
    let served = files.keys().filter(|p| !is_control_file(p)).count();
    if served > MAX_FILES {
        out.push(problem(
            ".",
            None,
            Severity::Error,
            "too-many-files",
            format!("{served} files: Workers Static Assets takes at most {MAX_FILES} per version"),
        ));
    }
    for (path, bytes) in files {
        if path == "manifest.json" || path == ".assetsignore" {
            out.push(problem(
                path,
                None,
                Severity::Error,
                "reserved",
                format!("`{path}` is written by `static-sync build`: rename yours (a web app manifest can be `manifest.webmanifest`)"),
            ));
        }
        if let Some((sev, code, msg)) = junk_or_secret_name(path) {
            out.push(problem(path, None, sev, code, msg));
        }
        let size = bytes.len() as u64;
        if size > MAX_FILE_BYTES {
            out.push(problem(
                path,
                None,
                Severity::Error,
                "too-large",
                format!("{size} bytes: Workers Static Assets and KV take at most 25 MiB per file"),
            ));
        }
        let text = std::str::from_utf8(bytes).ok();
        let lines = text.map(line_starts).unwrap_or_default();
        if let Some((at, msg)) = secret_content(bytes) {
            let line = text.map(|_| line_of(&lines, at));
            out.push(problem(
                path,
                line,
                Severity::Error,
                "secret",
                msg.to_owned(),
            ));
        }
        if is_html(path) {
            let Some(text) = text else {
                out.push(problem(
                    path,
                    None,
                    Severity::Error,
                    "html",
                    "not valid UTF-8".into(),
                ));
                continue;
            };
            for p in crate::html::validate(text) {
                out.push(problem(
                    path,
                    Some(p.line),
                    Severity::Error,
                    "html",
                    p.message,
                ));
            }
            check_references(files, path, &html_references(text), &lines, &mut out);
        } else if is_css(path) {
            let Some(text) = text else {
                out.push(problem(
                    path,
                    None,
                    Severity::Error,
                    "css",
                    "not valid UTF-8".into(),
                ));
                continue;
            };
            check_references(files, path, &css_references(text), &lines, &mut out);
        }
    }
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}

/// Reads a site from a directory: every regular file, in path order. Directories that are
/// never part of a site (`node_modules`, `.git`, ...) are not read but reported as problems,
/// and so are symbolic links and names that are not UTF-8.
pub fn load_site(dir: &Path) -> Result<(SiteFiles, Vec<Problem>), SiteError> {
    let mut files = SiteFiles::new();
    let mut problems = Vec::new();
    if !dir.is_dir() {
        return Err(SiteError::NotADirectory(dir.to_owned()));
    }
    let mut walk = WalkDir::new(dir).sort_by_file_name().into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| SiteError::Walk {
            path: e
                .path()
                .map(Path::to_owned)
                .unwrap_or_else(|| dir.to_owned()),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(path) = site_path(rel) else {
            problems.push(problem(
                &rel.to_string_lossy(),
                None,
                Severity::Error,
                "name",
                "file name is not UTF-8".into(),
            ));
            continue;
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            let name = path.rsplit('/').next().unwrap_or(&path);
            if JUNK_DIRS.contains(&name) {
                walk.skip_current_dir();
                if name != ".static-sync" {
                    problems.push(problem(
                        &path,
                        None,
                        Severity::Error,
                        "junk",
                        format!("`{name}/` must not be published (not read)"),
                    ));
                }
            }
            continue;
        }
        if ft.is_symlink() {
            problems.push(problem(
                &path,
                None,
                Severity::Warning,
                "symlink",
                "symbolic link not followed (not published)".into(),
            ));
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(|source| SiteError::Read {
            path: entry.path().to_owned(),
            source,
        })?;
        files.insert(path, bytes);
    }
    Ok((files, problems))
}

/// Loads and checks a directory: [`load_site`] then [`check_site`].
pub fn check_dir(dir: &Path) -> Result<(SiteFiles, Vec<Problem>), SiteError> {
    let (files, mut problems) = load_site(dir)?;
    problems.extend(check_site(&files));
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok((files, problems))
}

/// Whether any problem is an error.
pub fn has_errors(problems: &[Problem]) -> bool {
    problems.iter().any(|p| p.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(files: &[(&str, &str)]) -> SiteFiles {
        files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn broken_link_is_named_with_file_and_line() {
        let s = site(&[
            ("index.html", "<!doctype html>\n<title>x</title>\n<link rel=stylesheet href=\"css/a.css\">\n<img src=\"img/missing.png\" alt=\"\">\n<a href=\"https://x.test/\">x</a><a href=\"#top\">t</a>\n"),
            ("css/a.css", "body{background:url(../img/bg.png)}\n\n.x{background:url(../img/gone.png)}"),
            ("img/bg.png", "png"),
        ]);
        let problems = check_site(&s);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            (problems[0].file.as_str(), problems[0].line),
            ("css/a.css", Some(3))
        );
        assert!(problems[0].message.contains("../img/gone.png"));
        assert_eq!(
            (problems[1].file.as_str(), problems[1].line),
            ("index.html", Some(4))
        );
        assert!(problems[1].message.contains("img/missing.png"));
        assert_eq!(problems[1].to_string(), "index.html:4: error[broken-link]: src `img/missing.png` does not resolve to a file in the site");
    }

    #[test]
    fn secrets_and_junk_are_errors_source_maps_warnings() {
        let s = site(&[
            (".env", "X=1"),
            ("keys/server.pem", "x"),
            ("notes.txt", "hello\n-----BEGIN RSA PRIVATE KEY-----\n"),
            (".DS_Store", ""),
            ("app.js.map", "{}"),
            ("aws.txt", "key AKIAABCDEFGHIJKLMNOP here"),
        ]);
        let problems = check_site(&s);
        let codes: Vec<(&str, &str, Option<u32>)> = problems
            .iter()
            .map(|p| (p.file.as_str(), p.code, p.line))
            .collect();
        assert!(codes.contains(&(".env", "secret", None)));
        assert!(codes.contains(&("keys/server.pem", "secret", None)));
        assert!(codes.contains(&("notes.txt", "secret", Some(2))));
        assert!(codes.contains(&(".DS_Store", "junk", None)));
        assert!(codes.contains(&("aws.txt", "secret", Some(1))));
        let map = problems.iter().find(|p| p.file == "app.js.map").unwrap();
        assert_eq!(map.severity, Severity::Warning);
    }

    #[test]
    fn file_count_and_size_limits() {
        let mut s = SiteFiles::new();
        for i in 0..=MAX_FILES {
            s.insert(format!("f{i}.txt"), Vec::new());
        }
        s.insert("big.bin".into(), vec![0; (MAX_FILE_BYTES + 1) as usize]);
        let problems = check_site(&s);
        assert!(problems.iter().any(|p| p.code == "too-many-files"));
        assert!(problems
            .iter()
            .any(|p| p.code == "too-large" && p.file == "big.bin"));
    }

    #[test]
    fn check_dir_finds_a_broken_link_on_disk_and_skips_node_modules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p/node_modules/x")).unwrap();
        std::fs::write(dir.path().join("p/node_modules/x/a.js"), "x").unwrap();
        std::fs::write(
            dir.path().join("p/item.html"),
            "<!doctype html>\n<title>t</title>\n\n<a href=\"../nope.html\">x</a>\n",
        )
        .unwrap();
        let (files, problems) = check_dir(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert!(problems
            .iter()
            .any(|p| p.file == "p/node_modules" && p.code == "junk"));
        let broken = problems.iter().find(|p| p.code == "broken-link").unwrap();
        assert_eq!(
            (broken.file.as_str(), broken.line),
            ("p/item.html", Some(4))
        );
        assert!(has_errors(&problems));
    }

    #[test]
    fn files_build_writes_are_reserved() {
        let problems = check_site(&site(&[("manifest.json", "{}"), ("a/manifest.json", "{}")]));
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].file.as_str(), problems[0].code),
            ("manifest.json", "reserved")
        );
    }
}
