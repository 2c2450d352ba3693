//! Property tests of the scanners `check` and `build` run on untrusted pages: never panic, and
//! every span found is exactly the URL it reports.

use proptest::prelude::*;
use static_sync::html::validate;
use static_sync::refs::{css_references, html_references};
use static_sync::site::{join_reference, SiteFiles};

fn htmlish() -> impl Strategy<Value = String> {
    // Fragments that exercise tags, quotes, comments and raw text, glued at random.
    let parts = prop::sample::select(vec![
        "<",
        ">",
        "<a href=",
        "\"",
        "'",
        "x.css",
        "<img src=a.png srcset=\"b.png 2x, c.png\">",
        "<!--",
        "-->",
        "<style>",
        "</style>",
        "url(",
        ")",
        "@import '",
        "<script>",
        "</script>",
        "</div>",
        "<div>",
        " ",
        "\n",
        "é",
        "<p",
        "=",
        "/>",
        "<!doctype html>",
        "&amp;",
    ]);
    prop::collection::vec(parts, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn scanners_never_panic_and_spans_match(s in htmlish()) {
        for r in html_references(&s).into_iter().chain(css_references(&s)) {
            prop_assert_eq!(&s[r.span.clone()], r.url.as_str());
        }
        let _ = validate(&s);
    }

    #[test]
    fn scanners_never_panic_on_any_text(s in ".{0,200}") {
        for r in html_references(&s).into_iter().chain(css_references(&s)) {
            prop_assert_eq!(&s[r.span.clone()], r.url.as_str());
        }
        let _ = validate(&s);
    }

    #[test]
    fn joined_references_never_climb_above_the_root(from in "[a-z/]{0,12}", r in "[a-z./%]{0,16}") {
        if let Ok(p) = join_reference(&from, &r) {
            prop_assert!(!p.starts_with('/') && !p.split('/').any(|s| s == ".."));
        }
        let _ = static_sync::site::resolve_reference(&SiteFiles::new(), &from, &r);
    }
}
