//! Property tests of `build`: deterministic output, and links that work before work after.

use proptest::prelude::*;
use static_sync::build::{build_site, write_output};
use static_sync::check::{check_site, has_errors, load_site};
use static_sync::site::{sha256_hex, SiteFiles};

#[derive(Debug, Clone)]
struct Asset {
    dir: &'static str,
    stem: String,
    ext: &'static str,
    bytes: Vec<u8>,
}

impl Asset {
    fn path(&self) -> String {
        format!("{}{}.{}", self.dir, self.stem, self.ext)
    }
}

fn asset() -> impl Strategy<Value = Asset> {
    (
        prop::sample::select(vec!["", "assets/", "img/", "assets/deep/", "sp ace/"]),
        "[a-z][a-z0-9_-]{0,7}",
        prop::sample::select(vec!["png", "svg", "js", "txt", "woff2"]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(dir, stem, ext, bytes)| Asset {
            dir,
            stem,
            ext,
            bytes,
        })
}

/// A reference to `target` from a page or stylesheet at `from`, in one of several spellings.
fn spell(from: &str, target: &str, style: u8) -> String {
    let encoded = target.replace(' ', "%20");
    let depth = from.matches('/').count();
    match style % 3 {
        0 => format!("/{encoded}"),
        1 => format!("{}{encoded}", "../".repeat(depth)),
        _ => format!(
            "{}{encoded}?v=1#frag",
            "./".to_owned() + &"../".repeat(depth)
        ),
    }
}

fn site() -> impl Strategy<Value = SiteFiles> {
    (
        prop::collection::vec(asset(), 1..12),
        prop::collection::vec((0usize..100, 0u8..3), 0..6),
        prop::collection::vec((0usize..100, 0u8..3), 0..10),
        prop::bool::ANY,
    )
        .prop_map(|(assets, css_refs, page_refs, import)| {
            let mut files = SiteFiles::new();
            for a in &assets {
                files.insert(a.path(), a.bytes.clone());
            }
            let paths: Vec<String> = files.keys().cloned().collect();
            let mut css = String::from("body{margin:0}\n");
            if import {
                css.push_str("@import \"base.css\";\n");
                files.insert("assets/base.css".into(), b"h1{color:red}".to_vec());
            }
            for (i, style) in &css_refs {
                let t = &paths[i % paths.len()];
                css.push_str(&format!(".c{i}{{background:url(\"{}\")}}\n", spell("assets/app.css", t, *style)));
            }
            files.insert("assets/app.css".into(), css.into_bytes());
            for page in ["index.html", "p/item.html"] {
                let mut html = format!(
                    "<!doctype html>\n<html><head><title>t</title>\n<link rel=stylesheet href=\"{}\">\n</head><body>\n",
                    spell(page, "assets/app.css", 0)
                );
                for (i, style) in &page_refs {
                    let t = &paths[i % paths.len()];
                    html.push_str(&format!("<a href=\"{}\">x</a>\n", spell(page, t, *style)));
                }
                html.push_str("<a href=\"https://example.test/x.png\">ext</a>\n</body></html>\n");
                files.insert(page.into(), html.into_bytes());
            }
            files
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn building_twice_gives_identical_output(s in site()) {
        let a = build_site(&s).unwrap();
        let b = build_site(&s).unwrap();
        prop_assert_eq!(&a, &b);
        // And on disk, byte for byte, into two folders.
        let d = tempfile::tempdir().unwrap();
        write_output(&d.path().join("1"), &a).unwrap();
        write_output(&d.path().join("2"), &b).unwrap();
        let (one, _) = load_site(&d.path().join("1")).unwrap();
        let (two, _) = load_site(&d.path().join("2")).unwrap();
        prop_assert_eq!(one, two);
    }

    #[test]
    fn links_that_work_before_build_work_after(s in site()) {
        prop_assert!(!has_errors(&check_site(&s)), "{:?}", check_site(&s));
        let out = build_site(&s).unwrap();
        let problems = check_site(&out.files);
        prop_assert!(!has_errors(&problems), "{:?}", problems);
        // Every fingerprinted name carries its content's hash; the manifest agrees.
        for (path, bytes) in &out.files {
            let entry = &out.manifest.files[&format!("/{path}")];
            prop_assert_eq!(&entry.sha256, &sha256_hex(bytes));
            if entry.is_immutable() {
                prop_assert!(path.contains(&format!(".{}", &entry.sha256[..8])), "{} {}", path, entry.sha256);
            }
        }
        prop_assert_eq!(out.files.len(), s.len());
    }
}

#[test]
fn the_generated_benchmark_site_has_n_files_and_passes_check() {
    let s = static_sync::site::generate_site(1000);
    assert_eq!(s.len(), 1000);
    assert!(!has_errors(&check_site(&s)), "{:?}", check_site(&s).first());
    assert_eq!(build_site(&s).unwrap().files.len(), 1000);
}
