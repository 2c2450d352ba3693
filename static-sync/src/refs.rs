//! Finds the references (URLs) in HTML and CSS, with the exact byte span of each, so `check`
//! can name the line and `build` can rewrite a reference without touching anything else.
//!
//! This is a small tag scanner, not a tree builder: it knows quoted and unquoted attribute
//! values, comments, and the raw-text elements (`script`, `style`, `textarea`, `title`) whose
//! content is not markup. Whether the HTML is well formed is `crate::html::validate`'s job.

use std::ops::Range;

/// One URL found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The URL as written.
    pub url: String,
    /// Where it is in the file (bytes).
    pub span: Range<usize>,
    /// What referenced it: `href`, `src`, `srcset`, `poster`, `data`, `url()`, `@import`.
    pub kind: &'static str,
}

const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title"];

fn url_attr(tag: &str, attr: &str) -> Option<&'static str> {
    match (attr, tag) {
        ("href", "a" | "link" | "area") => Some("href"),
        (
            "src",
            "img" | "script" | "iframe" | "source" | "audio" | "video" | "track" | "embed"
            | "input",
        ) => Some("src"),
        ("srcset", "img" | "source") => Some("srcset"),
        ("poster", "video") => Some("poster"),
        ("data", "object") => Some("data"),
        _ => None,
    }
}

fn find_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// The references in an HTML document.
pub fn html_references(html: &str) -> Vec<Reference> {
    let b = html.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let Some(lt) = b[i..].iter().position(|&c| c == b'<').map(|p| p + i) else {
            break;
        };
        i = lt + 1;
        if b[lt..].starts_with(b"<!--") {
            i = match find_ci(b, lt + 4, b"-->") {
                Some(e) => e + 3,
                None => n,
            };
            continue;
        }
        if i < n && matches!(b[i], b'!' | b'?' | b'/') {
            i = b[i..]
                .iter()
                .position(|&c| c == b'>')
                .map_or(n, |p| i + p + 1);
            continue;
        }
        if i >= n || !b[i].is_ascii_alphabetic() {
            continue;
        }
        // Tag name.
        let name_start = i;
        while i < n && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let tag = html[name_start..i].to_ascii_lowercase();
        // Attributes.
        loop {
            while i < n && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= n {
                break;
            }
            if b[i] == b'>' {
                i += 1;
                break;
            }
            let an_start = i;
            while i < n && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
                i += 1;
            }
            let attr = html[an_start..i].to_ascii_lowercase();
            while i < n && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= n || b[i] != b'=' {
                continue;
            }
            i += 1;
            while i < n && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= n {
                break;
            }
            let (vs, ve) = if b[i] == b'"' || b[i] == b'\'' {
                let q = b[i];
                let vs = i + 1;
                let ve = b[vs..].iter().position(|&c| c == q).map_or(n, |p| vs + p);
                i = (ve + 1).min(n);
                (vs, ve)
            } else {
                let vs = i;
                while i < n && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                (vs, i)
            };
            let value = &html[vs..ve];
            if attr == "style" {
                out.extend(css_references_at(value, vs));
            } else if let Some(kind) = url_attr(&tag, &attr) {
                if kind == "srcset" {
                    out.extend(srcset_references(value, vs));
                } else {
                    let (s, e) = trim_span(value, vs);
                    out.push(Reference {
                        url: html[s..e].to_owned(),
                        span: s..e,
                        kind,
                    });
                }
            }
        }
        if RAW_TEXT.contains(&tag.as_str()) {
            let close = format!("</{tag}");
            let end = find_ci(b, i, close.as_bytes()).unwrap_or(n);
            if tag == "style" {
                out.extend(css_references_at(&html[i..end], i));
            }
            i = end;
        }
    }
    out
}

fn trim_span(value: &str, offset: usize) -> (usize, usize) {
    if value.trim().is_empty() {
        return (offset, offset);
    }
    let lead = value.len() - value.trim_start().len();
    let trail = value.len() - value.trim_end().len();
    (offset + lead, offset + value.len() - trail)
}

fn srcset_references(value: &str, offset: usize) -> Vec<Reference> {
    // Candidates are separated by commas; each is a URL then an optional descriptor.
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut e = i;
        // A URL may end with a comma when no descriptor follows.
        while e > s && b[e - 1] == b',' {
            e -= 1;
        }
        if e > s {
            out.push(Reference {
                url: value[s..e].to_owned(),
                span: offset + s..offset + e,
                kind: "srcset",
            });
        }
        // Skip the descriptor up to the next comma.
        while i < b.len() && b[i] != b',' {
            i += 1;
        }
    }
    out
}

/// The references in a stylesheet: `url(...)` and `@import "..."`.
pub fn css_references(css: &str) -> Vec<Reference> {
    css_references_at(css, 0)
}

fn css_references_at(css: &str, offset: usize) -> Vec<Reference> {
    let b = css.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if b[i..].starts_with(b"/*") {
            i = find_ci(b, i + 2, b"*/").map_or(n, |e| e + 2);
            continue;
        }
        if b[i] == b'"' || b[i] == b'\'' {
            // A string not in url() or @import: skip it whole.
            let q = b[i];
            i = b[i + 1..]
                .iter()
                .position(|&c| c == q)
                .map_or(n, |p| i + 1 + p + 1);
            continue;
        }
        if b[i..].len() >= 4 && b[i..i + 4].eq_ignore_ascii_case(b"url(") {
            let mut j = i + 4;
            while j < n && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let (s, e, after) = if j < n && (b[j] == b'"' || b[j] == b'\'') {
                let q = b[j];
                let s = j + 1;
                let e = b[s..].iter().position(|&c| c == q).map_or(n, |p| s + p);
                (s, e, e + 1)
            } else {
                let s = j;
                let e = b[s..].iter().position(|&c| c == b')').map_or(n, |p| s + p);
                let (ts, te) = trim_span(&css[s..e], s);
                (ts, te, e)
            };
            out.push(Reference {
                url: css[s..e].to_owned(),
                span: offset + s..offset + e,
                kind: "url()",
            });
            i = after.min(n).max(i + 1);
            continue;
        }
        if b[i..].len() >= 7 && b[i..i + 7].eq_ignore_ascii_case(b"@import") {
            let mut j = i + 7;
            while j < n && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < n && (b[j] == b'"' || b[j] == b'\'') {
                let q = b[j];
                let s = j + 1;
                let e = b[s..].iter().position(|&c| c == q).map_or(n, |p| s + p);
                out.push(Reference {
                    url: css[s..e].to_owned(),
                    span: offset + s..offset + e,
                    kind: "@import",
                });
                i = (e + 1).min(n);
                continue;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Replaces spans of `text` (sorted, not overlapping) with new strings.
pub fn splice(text: &str, edits: &[(Range<usize>, String)]) -> String {
    let mut out = String::with_capacity(text.len() + edits.len() * 9);
    let mut at = 0;
    for (span, new) in edits {
        if span.start < at || span.end > text.len() {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(new);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(refs: &[Reference]) -> Vec<(&str, &str)> {
        refs.iter().map(|r| (r.kind, r.url.as_str())).collect()
    }

    #[test]
    fn finds_links_scripts_styles_images_and_srcset() {
        let html = r#"<!doctype html><html><head>
<link rel="stylesheet" href="css/app.css">
<script src='js/app.js'></script>
<style>body{background:url( "img/bg.png" )}</style>
</head><body>
<!-- <img src="commented.png"> -->
<a href=/sale.html>Sale</a>
<img src="a.png" srcset="a-1x.png 1x, a-2x.png 2x" alt="">
<div style="background-image:url(img/d.svg)"></div>
<script>var s = "<img src='not-a-ref.png'>";</script>
<video poster="p.jpg"></video>
</body></html>"#;
        let refs = html_references(html);
        assert_eq!(
            urls(&refs),
            vec![
                ("href", "css/app.css"),
                ("src", "js/app.js"),
                ("url()", "img/bg.png"),
                ("href", "/sale.html"),
                ("src", "a.png"),
                ("srcset", "a-1x.png"),
                ("srcset", "a-2x.png"),
                ("url()", "img/d.svg"),
                ("poster", "p.jpg"),
            ]
        );
        for r in &refs {
            assert_eq!(&html[r.span.clone()], r.url);
        }
    }

    #[test]
    fn css_imports_and_urls_skip_comments() {
        let css = "@import \"base.css\";\n/* url(no.png) */\na{b:url('x.woff2') format('woff2'), url(y.svg#i)}";
        assert_eq!(
            urls(&css_references(css)),
            vec![
                ("@import", "base.css"),
                ("url()", "x.woff2"),
                ("url()", "y.svg#i")
            ]
        );
    }

    #[test]
    fn splice_replaces_spans_only() {
        let s = "<a href=\"x.css\">x.css</a>";
        let r = html_references(s);
        assert_eq!(
            splice(s, &[(r[0].span.clone(), "x.1.css".into())]),
            "<a href=\"x.1.css\">x.css</a>"
        );
    }

    #[test]
    fn truncated_input_does_not_panic() {
        for s in [
            "<a href=\"x",
            "<img src=",
            "<style>url(",
            "<",
            "<a",
            "<!--",
            "<a href='é",
        ] {
            let _ = html_references(s);
        }
        let _ = css_references("url(\"x");
    }
}
