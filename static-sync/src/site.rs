//! Paths, content types, hashes and reference resolution shared by `check` and `build`.
//!
//! A site is held as a map from site path (`css/app.css`, `/`-separated, relative to the site
//! root, no leading slash) to bytes; the URL path served for it is the site path with a
//! leading `/`.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use ring::digest;

/// A site in memory: site path → content, sorted so that everything built from it is
/// deterministic.
pub type SiteFiles = BTreeMap<String, Vec<u8>>;

/// Per-file size limit of Workers Static Assets (25 MiB), which is also KV's value limit.
pub const MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
/// File count limit of Workers Static Assets per Worker version.
pub const MAX_FILES: usize = 20_000;

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Whether the site path is an HTML page.
pub fn is_html(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm")
}

/// Whether the site path is a stylesheet.
pub fn is_css(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".css")
}

/// Files whose URL other sites and crawlers know, so their name must not change.
pub fn keeps_its_name(path: &str) -> bool {
    const WELL_KNOWN: &[&str] = &[
        "robots.txt",
        "favicon.ico",
        "sitemap.xml",
        "humans.txt",
        "security.txt",
        "manifest.webmanifest",
        "site.webmanifest",
        "apple-touch-icon.png",
        "browserconfig.xml",
    ];
    is_html(path) || path.starts_with(".well-known/") || WELL_KNOWN.contains(&path)
}

/// The content type for a site path, by extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// The fingerprinted name of a site path: `css/app.css` → `css/app.<hash8>.css`
/// (`LICENSE` → `LICENSE.<hash8>`).
pub fn fingerprinted_path(path: &str, sha256_hex: &str) -> String {
    let short = &sha256_hex[..8.min(sha256_hex.len())];
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    let new_name = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{short}.{ext}"),
        _ => format!("{name}.{short}"),
    };
    match dir {
        Some(d) => format!("{d}/{new_name}"),
        None => new_name,
    }
}

/// The same change on a reference as written (`../css/app.css?v=1#x` →
/// `../css/app.<hash8>.css?v=1#x`): the last path segment gets the fingerprint, everything else
/// (directories, query, fragment, percent-encoding) stays as the author wrote it.
pub fn fingerprint_reference(reference: &str, sha256_hex: &str) -> String {
    let end = reference.find(['?', '#']).unwrap_or(reference.len());
    let (path, tail) = reference.split_at(end);
    format!("{}{tail}", fingerprinted_path(path, sha256_hex))
}

/// Whether a reference points outside the site or at nothing to fetch: a URL with a scheme
/// (`https:`, `mailto:`, `data:`, ...), protocol-relative (`//host`), a fragment or empty,
/// or a template placeholder.
pub fn is_external(reference: &str) -> bool {
    let r = reference.trim();
    if r.is_empty() || r.starts_with('#') || r.starts_with("//") || r.contains("{{") {
        return true;
    }
    // A scheme is letters, digits, `+-.`, then `:`, before any `/`, `?` or `#`.
    if let Some(colon) = r.find(':') {
        let before = &r[..colon];
        if !before.is_empty()
            && before
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && before
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return true;
        }
    }
    false
}

/// Decodes `%XX` escapes (invalid escapes are kept as written).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a local reference from `from` (a site path) points: the site path it names,
/// normalised, without query or fragment; `Err` with a reason if it climbs above the root.
/// Directory-like references end with `/`.
pub fn join_reference(from: &str, reference: &str) -> Result<String, String> {
    let r = reference.trim();
    let end = r.find(['?', '#']).unwrap_or(r.len());
    let r = percent_decode(&r[..end]);
    let r = r.replace("&amp;", "&");
    let mut parts: Vec<&str> = if r.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = from.split('/').collect();
        p.pop();
        p.retain(|s| !s.is_empty() && *s != "." && *s != "..");
        p
    };
    let trailing_slash =
        r.ends_with('/') || r.ends_with("/.") || r.ends_with("/..") || r == "." || r == "..";
    for seg in r.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{reference}` points above the site root"));
                }
            }
            s => parts.push(s),
        }
    }
    let mut joined = parts.join("/");
    if trailing_slash && !joined.is_empty() {
        joined.push('/');
    }
    Ok(joined)
}

/// Resolves a local reference to the site file it serves, the way Workers Static Assets'
/// HTML handling does: exact file, then `x.html`, then `x/index.html`.
pub fn resolve_reference<'a>(
    files: &'a SiteFiles,
    from: &str,
    reference: &str,
) -> Result<Option<&'a str>, String> {
    let target = join_reference(from, reference)?;
    let candidates: Vec<String> = if target.is_empty() || target.ends_with('/') {
        vec![format!("{target}index.html")]
    } else {
        vec![
            target.clone(),
            format!("{target}.html"),
            format!("{target}/index.html"),
        ]
    };
    Ok(candidates
        .iter()
        .find_map(|c| files.get_key_value(c.as_str()).map(|(k, _)| k.as_str())))
}

/// A site path from a relative filesystem path, `/`-separated; `None` for anything that is
/// not a plain relative path of UTF-8 names.
pub fn site_path(rel: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_owned()),
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// 1-based line of a byte offset, given the offsets where lines start.
pub fn line_of(line_starts: &[usize], offset: usize) -> u32 {
    let idx = line_starts.partition_point(|&s| s <= offset);
    u32::try_from(idx.max(1)).unwrap_or(u32::MAX)
}

/// Byte offsets where each line of `text` starts.
pub fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// A synthetic storefront of `n` files for benchmarks and load tests: one page per five
/// files, each linking a stylesheet, a script, three images and the next page; ten
/// stylesheets with `url()` references; the rest images with pseudo-random content.
/// Deterministic: the same `n` gives the same site. Passes `check`.
pub fn generate_site(n: usize) -> SiteFiles {
    let mut files = SiteFiles::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sheets = 10.min(n);
    let scripts = 50.min(n.saturating_sub(sheets));
    let pages = (n / 5)
        .max(1)
        .min(n.saturating_sub(sheets + scripts))
        .max(1);
    let images = n.saturating_sub(sheets + scripts + pages).max(1);
    for i in 0..images {
        let len = 1024 + (next() % 3072) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
        files.insert(format!("assets/img/{:02}/p{i}.png", i % 100), bytes);
    }
    for i in 0..sheets {
        let mut css = format!(".s{i} {{ color: #{:06x}; }}\n", next() & 0xff_ffff);
        for k in 0..20 {
            let img = (i * 20 + k) % images;
            css.push_str(&format!(
                ".i{k} {{ background: url(\"img/{:02}/p{img}.png\") no-repeat; }}\n",
                img % 100
            ));
        }
        files.insert(format!("assets/s{i}.css"), css.into_bytes());
    }
    for i in 0..scripts {
        files.insert(
            format!("assets/js/m{i}.js"),
            format!("export const m{i} = {};\n", next() % 1000).into_bytes(),
        );
    }
    for i in 0..pages {
        let img = |k: usize| {
            let j = (i * 3 + k) % images;
            format!("/assets/img/{:02}/p{j}.png", j % 100)
        };
        let mut html = format!(
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>Item {i}</title>\n\
             <link rel=stylesheet href=\"../assets/s{}.css\">\n\
             <script src=\"/assets/js/m{}.js\" defer></script></head>\n<body><main>\n<h1>Item {i}</h1>\n",
            i % sheets.max(1),
            i % scripts.max(1),
        );
        for k in 0..3 {
            html.push_str(&format!(
                "<img src=\"{}\" alt=\"view {k}\" width=300 height=300>\n",
                img(k)
            ));
        }
        html.push_str(&format!(
            "<p>{}</p>\n<a href=\"p{}.html\">next</a>\n</main></body></html>\n",
            "Limited stock. ".repeat(40),
            (i + 1) % pages
        ));
        files.insert(format!("pages/p{i}.html"), html.into_bytes());
    }
    if scripts == 0 || sheets == 0 {
        // Too small for the full shape: keep only what references resolve to.
        files.retain(|p, _| !is_html(p));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_names() {
        let h = "3f2a9c1e0000";
        assert_eq!(fingerprinted_path("css/app.css", h), "css/app.3f2a9c1e.css");
        assert_eq!(fingerprinted_path("app.min.js", h), "app.min.3f2a9c1e.js");
        assert_eq!(fingerprinted_path("LICENSE", h), "LICENSE.3f2a9c1e");
        assert_eq!(fingerprinted_path("a/.hidden", h), "a/.hidden.3f2a9c1e");
        assert_eq!(
            fingerprint_reference("../css/my%20app.css?v=1#top", h),
            "../css/my%20app.3f2a9c1e.css?v=1#top"
        );
    }

    #[test]
    fn external_references() {
        for r in [
            "https://x.test/a.css",
            "mailto:a@b",
            "data:image/png;base64,xx",
            "#top",
            "//cdn/x",
            "tel:+1",
            "javascript:void(0)",
            "",
        ] {
            assert!(is_external(r), "{r}");
        }
        for r in [
            "a.css",
            "/a.css",
            "../a.css",
            "a:b/c.css".trim_start_matches("a:b"),
            "./x?y=a:b",
        ] {
            assert!(!is_external(r), "{r}");
        }
    }

    #[test]
    fn join_and_resolve() {
        assert_eq!(
            join_reference("p/x.html", "../css/a.css").unwrap(),
            "css/a.css"
        );
        assert_eq!(
            join_reference("p/x.html", "/css/a.css?x#y").unwrap(),
            "css/a.css"
        );
        assert_eq!(join_reference("p/x.html", "./").unwrap(), "p/");
        assert_eq!(
            join_reference("x.html", "my%20file.png").unwrap(),
            "my file.png"
        );
        assert!(join_reference("x.html", "../../a").is_err());
        let mut files = SiteFiles::new();
        for p in ["index.html", "sale.html", "p/index.html", "css/a.css"] {
            files.insert(p.into(), vec![]);
        }
        assert_eq!(
            resolve_reference(&files, "p/index.html", "/").unwrap(),
            Some("index.html")
        );
        assert_eq!(
            resolve_reference(&files, "p/index.html", "../sale").unwrap(),
            Some("sale.html")
        );
        assert_eq!(
            resolve_reference(&files, "index.html", "p").unwrap(),
            Some("p/index.html")
        );
        assert_eq!(
            resolve_reference(&files, "index.html", "css/b.css").unwrap(),
            None
        );
    }

    #[test]
    fn lines() {
        let s = "a\nbb\n\nc";
        let ls = line_starts(s);
        assert_eq!(line_of(&ls, 0), 1);
        assert_eq!(line_of(&ls, 2), 2);
        assert_eq!(line_of(&ls, 5), 3);
        assert_eq!(line_of(&ls, 6), 4);
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
