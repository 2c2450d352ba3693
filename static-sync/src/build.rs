//! `build`: content-hash names for assets, references rewritten to them, `_headers` and the
//! manifest. [`build_site`] is pure (site in, build out), so building twice gives identical
//! bytes; [`write_output`] puts a build on disk.
//!
//! Fingerprinting: every file except HTML pages and well-known names (`robots.txt`,
//! `favicon.ico`, `.well-known/...`; see [`crate::site::keeps_its_name`]) gets the first 8 hex
//! digits of the SHA-256 of its final content in its name (`css/app.css` →
//! `css/app.3f2a9c1e.css`) and stays in its directory. References in HTML (`href`, `src`,
//! `srcset`, `poster`, `data`, `style` attributes, `<style>`) and in CSS (`url()`, `@import`)
//! are rewritten by changing only the last path segment, so relative links stay relative.
//! A stylesheet's hash is taken after its own references are rewritten, so stylesheets are
//! processed in import order (a cycle is an error). JavaScript is copied unchanged: URLs
//! built in scripts cannot be rewritten safely.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::check::is_control_file;
use crate::error::{BuildError, SiteError};
use crate::manifest::{FileEntry, Manifest, CACHE_IMMUTABLE, CACHE_REVALIDATE};
use crate::refs::{css_references, html_references, splice, Reference};
use crate::site::{
    content_type, fingerprint_reference, fingerprinted_path, is_css, is_external, is_html,
    keeps_its_name, resolve_reference, sha256_hex, SiteFiles,
};

/// The most rules Workers Static Assets reads from `_headers`.
pub const MAX_HEADER_RULES: usize = 100;

/// What `build` produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOutput {
    /// Output site path → bytes (the served files only).
    pub files: SiteFiles,
    /// Original site path → output site path, for every file.
    pub renamed: BTreeMap<String, String>,
    /// The `_headers` file.
    pub headers: String,
    /// `_redirects` from the source, copied as is.
    pub redirects: Option<Vec<u8>>,
    /// The manifest (its `version` is the hash of its files).
    pub manifest: Manifest,
    /// Things the release engineer should know (not errors).
    pub warnings: Vec<String>,
}

/// The version id of a set of files: the first 16 hex digits of the SHA-256 of their canonical
/// JSON.
pub fn version_id(files: &BTreeMap<String, FileEntry>) -> String {
    let canonical = serde_json::to_vec(files).unwrap_or_default();
    sha256_hex(&canonical)[..16].to_owned()
}

fn rewrite(
    source: &SiteFiles,
    path: &str,
    text: &str,
    refs: &[Reference],
    final_hash: &BTreeMap<String, String>,
) -> String {
    let mut edits = Vec::new();
    for r in refs {
        if is_external(&r.url) {
            continue;
        }
        if let Ok(Some(target)) = resolve_reference(source, path, &r.url) {
            if let Some(hash) = final_hash.get(target) {
                edits.push((r.span.clone(), fingerprint_reference(&r.url, hash)));
            }
        }
    }
    edits.sort_by_key(|(s, _)| s.start);
    splice(text, &edits)
}

fn css_order(source: &SiteFiles) -> Result<Vec<String>, BuildError> {
    // Depth-first over @import/url() edges between stylesheets.
    let sheets: Vec<&String> = source.keys().filter(|p| is_css(p)).collect();
    let mut deps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &sheets {
        let text = std::str::from_utf8(&source[p.as_str()])
            .map_err(|_| BuildError::NotUtf8((*p).clone()))?;
        let mut d: Vec<String> = css_references(text)
            .iter()
            .filter(|r| !is_external(&r.url))
            .filter_map(|r| resolve_reference(source, p, &r.url).ok().flatten())
            .filter(|t| is_css(t) && !keeps_its_name(t))
            .map(str::to_owned)
            .collect();
        d.sort();
        d.dedup();
        deps.insert(p.as_str(), d);
    }
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for start in &sheets {
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        let mut on_path: Vec<&str> = vec![start.as_str()];
        if done.contains(start.as_str()) {
            continue;
        }
        while let Some((node, idx)) = stack.pop() {
            let children = deps.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if idx < children.len() {
                stack.push((node, idx + 1));
                let child = children[idx].as_str();
                if done.contains(child) {
                    continue;
                }
                if on_path.contains(&child) {
                    let mut cycle: Vec<&str> = on_path.clone();
                    cycle.push(child);
                    return Err(BuildError::CssCycle(cycle.join(" → ")));
                }
                let child = deps.get_key_value(child).map_or(child, |(k, _)| *k);
                on_path.push(child);
                stack.push((child, 0));
            } else {
                on_path.pop();
                if done.insert(node) {
                    order.push(node.to_owned());
                }
            }
        }
    }
    Ok(order)
}

/// Builds a site held in memory. References that do not resolve are left as written (`check`
/// reports them).
pub fn build_site(source: &SiteFiles) -> Result<BuildOutput, BuildError> {
    let mut final_hash: BTreeMap<String, String> = BTreeMap::new();
    let mut out_bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // 1. Assets whose content does not depend on other files' names.
    for (path, bytes) in source {
        if is_control_file(path) || keeps_its_name(path) || is_css(path) {
            continue;
        }
        final_hash.insert(path.clone(), sha256_hex(bytes));
        out_bytes.insert(path.clone(), bytes.clone());
    }
    // 2. Stylesheets, each after the ones it references.
    for path in css_order(source)? {
        let text =
            std::str::from_utf8(&source[&path]).map_err(|_| BuildError::NotUtf8(path.clone()))?;
        let new = rewrite(source, &path, text, &css_references(text), &final_hash).into_bytes();
        final_hash.insert(path.clone(), sha256_hex(&new));
        out_bytes.insert(path, new);
    }
    // 3. Pages and other files with stable names.
    let mut stable: BTreeSet<String> = BTreeSet::new();
    for (path, bytes) in source {
        if is_control_file(path) || !keeps_its_name(path) {
            continue;
        }
        let new = match std::str::from_utf8(bytes) {
            Ok(text) if is_html(path) => {
                rewrite(source, path, text, &html_references(text), &final_hash).into_bytes()
            }
            _ => bytes.clone(),
        };
        stable.insert(path.clone());
        out_bytes.insert(path.clone(), new);
    }
    let mut files = SiteFiles::new();
    let mut renamed = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for (path, bytes) in out_bytes {
        let sha = sha256_hex(&bytes);
        let (out_path, cache) = if stable.contains(&path) {
            (path.clone(), CACHE_REVALIDATE)
        } else {
            (
                fingerprinted_path(&path, &final_hash[&path]),
                CACHE_IMMUTABLE,
            )
        };
        entries.insert(
            format!("/{out_path}"),
            FileEntry {
                sha256: sha,
                size: bytes.len() as u64,
                content_type: content_type(&path).to_owned(),
                cache_control: cache.to_owned(),
            },
        );
        renamed.insert(path, out_path.clone());
        files.insert(out_path, bytes);
    }
    let (rules, rule_count) = header_rules(&entries);
    let mut warnings = Vec::new();
    if rule_count > MAX_HEADER_RULES {
        warnings.push(format!(
            "_headers needs {rule_count} rules and Workers Static Assets reads at most {MAX_HEADER_RULES}: \
             keep fingerprinted assets in directories without HTML (e.g. assets/) so one `/assets/*` rule covers them"
        ));
    }
    let mut headers = String::from(
        "# Written by `static-sync build`.\n\
         # Fingerprinted assets never change under their name: cache them for a year.\n\
         # HTML and other stable names keep the Workers Static Assets default,\n\
         # `Cache-Control: public, max-age=0, must-revalidate`, so a go-live is seen at once.\n",
    );
    if let Some(user) = source.get("_headers") {
        headers.push_str("\n# From the site's own _headers:\n");
        headers.push_str(&String::from_utf8_lossy(user));
        if !headers.ends_with('\n') {
            headers.push('\n');
        }
        headers.push('\n');
    }
    headers.push_str(&rules);
    let manifest = Manifest {
        version: version_id(&entries),
        files: entries,
    };
    Ok(BuildOutput {
        files,
        renamed,
        headers,
        redirects: source.get("_redirects").cloned(),
        manifest,
        warnings,
    })
}

/// `_headers` rules for the immutable entries: one `/dir/*` rule for each largest directory
/// that holds only fingerprinted files, one exact rule for every other fingerprinted file.
fn header_rules(entries: &BTreeMap<String, FileEntry>) -> (String, usize) {
    // Directories that hold at least one stable file (at any depth) cannot get a splat rule.
    let mut mixed: BTreeSet<String> = BTreeSet::new();
    for (path, e) in entries {
        if !e.is_immutable() {
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                mixed.insert(parent.to_owned());
                dir = parent;
            }
        }
    }
    let mut rules: BTreeSet<String> = BTreeSet::new();
    for (path, e) in entries {
        if !e.is_immutable() {
            continue;
        }
        // Walk up from the file's directory while the parent is still pure.
        let mut best: Option<&str> = None;
        let mut dir = path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if mixed.contains(parent) {
                break;
            }
            best = Some(parent);
            dir = parent;
        }
        match best {
            Some("") => {
                rules.insert("/*".to_owned());
            }
            Some(d) => {
                rules.insert(format!("{d}/*"));
            }
            None => {
                rules.insert(path.clone());
            }
        }
    }
    let mut text = String::new();
    for r in &rules {
        text.push_str(r);
        text.push_str("\n  Cache-Control: ");
        text.push_str(CACHE_IMMUTABLE);
        text.push('\n');
    }
    (text, rules.len())
}

/// The folder in an output directory where `push` keeps its journal; never published.
pub const STATE_DIR: &str = ".static-sync";

/// Writes a build to `out`: the files, `_headers`, `_redirects`, `.assetsignore` (so `wrangler
/// deploy` does not publish `manifest.json` and the push journal) and `manifest.json` last.
/// An existing `out` must be empty or a previous build; its files are replaced, the push
/// journal in `.static-sync/` is kept.
pub fn write_output(out: &Path, build: &BuildOutput) -> Result<(), SiteError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SiteError::Write { path, source }
    };
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(write_err(out))?.peekable();
        if entries.peek().is_some() && !out.join("manifest.json").is_file() {
            return Err(SiteError::OutputNotABuild(out.to_owned()));
        }
        for entry in entries {
            let entry = entry.map_err(write_err(out))?;
            if entry.file_name() == STATE_DIR {
                continue;
            }
            let p = entry.path();
            let r = if entry.file_type().map_err(write_err(&p))?.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(write_err(&p))?;
        }
    }
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let put = |rel: &str, bytes: &[u8]| -> Result<(), SiteError> {
        let p = out.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&p, bytes).map_err(write_err(&p))
    };
    for (path, bytes) in &build.files {
        put(path, bytes)?;
    }
    put("_headers", build.headers.as_bytes())?;
    if let Some(r) = &build.redirects {
        put("_redirects", r)?;
    }
    put(
        ".assetsignore",
        format!("/manifest.json\n/{STATE_DIR}\n").as_bytes(),
    )?;
    put("manifest.json", build.manifest.to_json().as_bytes())
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

    fn sample() -> SiteFiles {
        site(&[
            ("index.html", "<link href=\"assets/app.css\" rel=stylesheet><img src='logo.svg' srcset=\"logo.svg 1x, assets/big.png 2x\"><a href=\"p/item.html\">i</a><a href=https://x.test/a.css>x</a>"),
            ("p/item.html", "<link href=\"../assets/app.css?v=2#x\" rel=stylesheet><script src=\"/assets/app.js\"></script>"),
            ("assets/app.css", "@import 'base.css';\nbody{background:url(\"big.png\")}"),
            ("assets/base.css", "h1{background:url(../logo.svg)}"),
            ("assets/big.png", "PNG"),
            ("assets/app.js", "console.log('hi')"),
            ("logo.svg", "<svg/>"),
            ("robots.txt", "User-agent: *"),
        ])
    }

    #[test]
    fn assets_get_hashes_and_references_follow() {
        let out = build_site(&sample()).unwrap();
        let r = &out.renamed;
        assert_eq!(r["index.html"], "index.html");
        assert_eq!(r["robots.txt"], "robots.txt");
        let png = &r["assets/big.png"];
        assert_eq!(png, &format!("assets/big.{}.png", &sha256_hex(b"PNG")[..8]));
        let logo = r["logo.svg"].clone();
        let base = r["assets/base.css"].clone();
        let app = r["assets/app.css"].clone();
        // CSS referencing CSS: the importer's name depends on the imported one's new name.
        let base_text = String::from_utf8(out.files[&base].clone()).unwrap();
        assert_eq!(base_text, format!("h1{{background:url(../{logo})}}"));
        let app_text = String::from_utf8(out.files[&app].clone()).unwrap();
        let base_name = base.rsplit('/').next().unwrap();
        let png_name = png.rsplit('/').next().unwrap();
        assert_eq!(
            app_text,
            format!("@import '{base_name}';\nbody{{background:url(\"{png_name}\")}}")
        );
        assert_eq!(
            app,
            fingerprinted_path("assets/app.css", &sha256_hex(app_text.as_bytes()))
        );
        let index = String::from_utf8(out.files["index.html"].clone()).unwrap();
        assert!(index.contains(&format!("href=\"{app}\"")));
        assert!(index.contains(&format!("src='{logo}' srcset=\"{logo} 1x, {png} 2x\"")));
        assert!(index.contains("href=\"p/item.html\""));
        assert!(index.contains("href=https://x.test/a.css"));
        let item = String::from_utf8(out.files["p/item.html"].clone()).unwrap();
        assert!(item.contains(&format!("href=\"../{app}?v=2#x\"")));
        assert!(item.contains(&format!("src=\"/{}\"", r["assets/app.js"])));
    }

    #[test]
    fn manifest_and_headers() {
        let out = build_site(&sample()).unwrap();
        let m = &out.manifest;
        assert_eq!(m.files.len(), 8);
        assert_eq!(m.files["/index.html"].cache_control, CACHE_REVALIDATE);
        assert_eq!(
            m.files["/index.html"].content_type,
            "text/html; charset=utf-8"
        );
        let app = format!("/{}", out.renamed["assets/app.css"]);
        assert_eq!(m.files[&app].cache_control, CACHE_IMMUTABLE);
        assert_eq!(m.files[&app].sha256, sha256_hex(&out.files[&app[1..]]));
        assert_eq!(m.version, version_id(&m.files));
        assert_eq!(m.version.len(), 16);
        // assets/ holds only fingerprinted files: one rule. logo sits next to HTML: exact rule.
        assert!(out
            .headers
            .contains("\n/assets/*\n  Cache-Control: public, max-age=31536000, immutable\n"));
        assert!(out
            .headers
            .contains(&format!("\n/{}\n  Cache-Control", out.renamed["logo.svg"])));
        assert!(!out.headers.contains("/index.html"));
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn a_changed_image_changes_the_css_and_page_names_and_the_version() {
        let a = build_site(&sample()).unwrap();
        let mut s = sample();
        s.insert("assets/big.png".into(), b"PNG2".to_vec());
        let b = build_site(&s).unwrap();
        assert_ne!(a.renamed["assets/app.css"], b.renamed["assets/app.css"]);
        assert_eq!(a.renamed["assets/base.css"], b.renamed["assets/base.css"]);
        assert_ne!(a.manifest.version, b.manifest.version);
        assert_ne!(a.files["index.html"], b.files["index.html"]);
    }

    #[test]
    fn css_cycles_are_errors() {
        let s = site(&[("a.css", "@import 'b.css';"), ("b.css", "@import 'a.css';")]);
        assert!(matches!(build_site(&s), Err(BuildError::CssCycle(_))));
    }

    #[test]
    fn write_output_refuses_a_foreign_directory_and_replaces_a_build() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "x").unwrap();
        let out = build_site(&sample()).unwrap();
        assert!(matches!(
            write_output(dir.path(), &out),
            Err(SiteError::OutputNotABuild(_))
        ));
        let o = dir.path().join("out");
        write_output(&o, &out).unwrap();
        std::fs::create_dir_all(o.join(STATE_DIR)).unwrap();
        std::fs::write(o.join(STATE_DIR).join("journal"), "j").unwrap();
        std::fs::write(o.join("stale.txt"), "old").unwrap();
        write_output(&o, &out).unwrap();
        assert!(!o.join("stale.txt").exists());
        assert!(o.join(STATE_DIR).join("journal").exists());
        assert!(o.join("manifest.json").is_file() && o.join("_headers").is_file());
    }
}
