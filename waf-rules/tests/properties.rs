//! Property tests: the SecLang front end, every transformation and request evaluation never
//! panic, and the normalising transformations are idempotent.

use proptest::prelude::*;
use waf_rules::transform::Transform;
use waf_rules::{HttpRequest, RuleSet, WafConfig};

const ALL: &[&str] = &[
    "urlDecodeUni",
    "urlDecode",
    "lowercase",
    "uppercase",
    "jsDecode",
    "htmlEntityDecode",
    "utf8toUnicode",
    "removeNulls",
    "replaceNulls",
    "cssDecode",
    "cmdLine",
    "removeWhitespace",
    "compressWhitespace",
    "replaceComments",
    "removeComments",
    "removeCommentsChar",
    "normalizePath",
    "normalizePathWin",
    "escapeSeqDecode",
    "length",
    "base64Decode",
    "base64DecodeExt",
    "sha1",
    "hexEncode",
    "hexDecode",
    "trim",
    "trimLeft",
    "trimRight",
];

const IDEMPOTENT: &[&str] = &[
    "lowercase",
    "uppercase",
    "removeNulls",
    "removeWhitespace",
    "compressWhitespace",
    "normalizePath",
    "normalizePathWin",
    "trim",
    "trimLeft",
    "trimRight",
    "cmdLine",
];

fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b"%uU+&#;\\/.*-x0123456789abcdefABCDEF \t\n'\"^,(\r".to_vec()),
        ],
        0..64,
    )
}

proptest! {
    #[test]
    fn transformations_never_panic(input in interesting_bytes()) {
        for name in ALL {
            let t = Transform::from_name(name).expect("known");
            let _ = t.apply(&input);
        }
    }

    #[test]
    fn normalising_transformations_are_idempotent(input in interesting_bytes()) {
        for name in IDEMPOTENT {
            let t = Transform::from_name(name).expect("known");
            let once = t.apply(&input);
            prop_assert_eq!(t.apply(&once), once.clone(), "{} is not idempotent", name);
        }
    }

    #[test]
    fn removing_bytes_keeps_every_other_byte_in_order(input in interesting_bytes()) {
        // As ModSecurity documents them: removeNulls drops NUL bytes, removeWhitespace the
        // whitespace bytes (space, \t \n \r, vertical tab, form feed, NBSP); nothing else moves.
        let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0);
        let kept = |drop: &dyn Fn(u8) -> bool| -> Vec<u8> {
            input.iter().copied().filter(|&b| !drop(b)).collect()
        };
        prop_assert_eq!(Transform::RemoveNulls.apply(&input), kept(&|b| b == 0));
        prop_assert_eq!(Transform::RemoveWhitespace.apply(&input), kept(&ws));
    }

    #[test]
    fn url_decode_never_grows(input in interesting_bytes()) {
        prop_assert!(Transform::UrlDecodeUni.apply(&input).len() <= input.len());
    }

    /// Standard base64 of any bytes decodes back to them; the decoding stops at the first
    /// byte outside the alphabets (`+/` and `-_`; `base64DecodeExt` skips it instead),
    /// wherever it falls relative to the groups of four.
    #[test]
    fn base64_decode_inverts_encoding_and_stops_at_a_stranger(
        data in prop::collection::vec(any::<u8>(), 0..48),
        cut in any::<prop::sample::Index>(),
        stranger in prop::sample::select(b" .!:\n%@".to_vec()),
    ) {
        use base64::Engine;
        let enc = base64::engine::general_purpose::STANDARD.encode(&data).into_bytes();
        let dec = Transform::Base64Decode;
        prop_assert_eq!(dec.apply(&enc), data.clone());
        let at = cut.index(enc.len() + 1);
        let mut broken = enc[..at].to_vec();
        broken.push(stranger);
        broken.extend_from_slice(&enc[at..]);
        prop_assert_eq!(dec.apply(&broken), dec.apply(&enc[..at]));
        prop_assert_eq!(Transform::Base64DecodeExt.apply(&broken), data);
    }

    #[test]
    fn parser_never_panics(text in "(Sec(Rule|Action|Marker|DefaultAction|RuleEngine|RuleRemoveById|RuleUpdateTargetById) )?[ -~\\n\\\\\"']{0,120}") {
        let _ = RuleSet::from_sources(&[("p.conf".into(), text)], &[], &WafConfig::default());
    }

    #[test]
    fn parser_accepts_generated_rules(
        var in prop::sample::select(vec!["ARGS", "ARGS_NAMES", "REQUEST_HEADERS:User-Agent", "&ARGS", "TX:/^a/", "REQUEST_COOKIES|!REQUEST_COOKIES:x"]),
        op in prop::sample::select(vec!["@rx ^a", "!@pm x y", "@streq a", "@eq 1", "@within %{tx.a}", "@detectSQLi", "@validateByteRange 1-255"]),
        t in prop::sample::select(vec!["t:none", "t:lowercase,t:urlDecodeUni", "t:none,t:cmdLine"]),
        id in 1u32..1_000_000,
    ) {
        let text = format!("SecRule {var} \"{op}\" \"id:{id},phase:2,pass,{t},msg:'m',setvar:tx.a=+1\"\n");
        let rs = RuleSet::from_sources(&[("g.conf".into(), text)], &[], &WafConfig::default());
        prop_assert!(rs.is_ok(), "{:?}", rs.err());
    }

    #[test]
    fn evaluation_never_panics(
        method in "[A-Z]{0,8}",
        uri in "[ -~]{0,60}",
        hname in "[A-Za-z-]{1,12}",
        hval in "[ -~]{0,40}",
        body in interesting_bytes(),
        ct in prop::sample::select(vec!["application/json", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/xml", ""]),
    ) {
        let rules = r#"
SecRule ARGS|ARGS_NAMES|REQUEST_HEADERS|REQUEST_COOKIES|XML:/* "@rx (?i)<script" "id:1,phase:2,deny,capture,t:none,t:urlDecodeUni,t:htmlEntityDecode,t:lowercase,setvar:'tx.score=+%{tx.critical}'"
SecRule REQUEST_BODY|REQUEST_FILENAME "@detectSQLi" "id:2,phase:2,pass,t:cmdLine,multiMatch"
SecRule &ARGS "@gt 2" "id:3,phase:2,pass,chain"
    SecRule MATCHED_VARS "@validateByteRange 32-126" "setvar:tx.x=1"
"#;
        let rs = RuleSet::from_sources(&[("e.conf".into(), rules.into())], &[], &WafConfig::default()).expect("loads");
        let req = HttpRequest {
            method,
            uri,
            version: "HTTP/1.1".into(),
            headers: vec![(hname, hval), ("Content-Type".into(), ct.into())],
            body,
            ..Default::default()
        };
        let _ = rs.evaluate(&req);
    }
}

proptest! {
    #[test]
    fn is_noop_is_never_wrong(input in interesting_bytes()) {
        for name in ALL {
            let t = Transform::from_name(name).expect("known");
            if t.is_noop(&input) {
                prop_assert_eq!(t.apply(&input), input.clone(), "{} claimed no-op", name);
            }
        }
    }
}

/// The steps named by `chain` (those `keep` accepts), and `input` through them.
fn through(
    chain: &[&str],
    keep: impl Fn(Transform) -> bool,
    input: &[u8],
) -> (Vec<Transform>, Vec<u8>) {
    let steps: Vec<Transform> = chain
        .iter()
        .map(|n| Transform::from_name(n).expect("known"))
        .filter(|&t| keep(t))
        .collect();
    let mut cur = input.to_vec();
    for t in &steps {
        cur = t.apply(&cur);
    }
    (steps, cur)
}

proptest! {
    // The engine fills a value's whole row of cached results from its byte flags: a chain
    // none of whose steps' change masks meets the value's flags must leave it as it is.
    #[test]
    fn a_chain_whose_masks_miss_the_flags_keeps_the_value(
        input in "[A-Za-z0-9 ./%&*#\\\\-]{0,12}",
        chain in prop::collection::vec(prop::sample::select(ALL.to_vec()), 1..5),
    ) {
        let input = input.into_bytes();
        // Steps that may change any value never keep one: leave them out.
        let (steps, out) = through(&chain, |t| t.change_mask().is_some(), &input);
        let flags = waf_rules::transform::byte_flags(&input);
        let kept = steps
            .iter()
            .all(|t| t.change_mask().is_some_and(|m| flags & m == 0));
        if kept {
            prop_assert_eq!(out, input, "{:?} changed a value it should keep", chain);
        }
    }
}

proptest! {
    // The prefilter takes a value's raw literal slots for a chain that changes at most its
    // case (the scan folds case): a chain none of whose steps' scan masks meets the value's
    // flags must give the value back equal but for ASCII case.
    #[test]
    fn a_chain_whose_scan_masks_miss_the_flags_changes_only_case(
        input in "[A-Za-z0-9 ./%&*#;'\"\\-]{0,12}",
        chain in prop::collection::vec(prop::sample::select(ALL.to_vec()), 1..6),
    ) {
        let input = input.into_bytes();
        let (steps, out) = through(&chain, |_| true, &input);
        let flags = waf_rules::transform::byte_flags(&input);
        let kept = steps
            .iter()
            .all(|t| t.scan_change_mask().is_some_and(|m| flags & m == 0));
        if kept {
            prop_assert!(out.eq_ignore_ascii_case(&input), "{:?} changed more than case", chain);
        }
    }
}

proptest! {
    // The prefilter skips values shorter than a filter's literals through chains of steps
    // that never lengthen a value, and bounds a `base64Decode` step's output by
    // `base64_decoded_len`: both must hold for any input.
    #[test]
    fn steps_said_never_to_lengthen_do_not(input in interesting_bytes()) {
        for name in ALL {
            let t = Transform::from_name(name).expect("known");
            if t.never_lengthens() {
                let out = t.apply(&input);
                prop_assert!(out.len() <= input.len(), "{} lengthened {:?}", name, input);
            }
        }
        let decoded = Transform::Base64Decode.apply(&input);
        prop_assert_eq!(decoded.len(), Transform::base64_decoded_len(&input));
    }

    #[test]
    fn base64_output_length_is_exact_on_base64_text(
        input in "[A-Za-z0-9+/]{0,40}(=|==|\\.|-| )?[A-Za-z0-9+/=]{0,8}",
    ) {
        let input = input.into_bytes();
        let decoded = Transform::Base64Decode.apply(&input);
        prop_assert_eq!(decoded.len(), Transform::base64_decoded_len(&input));
    }
}

proptest! {
    // Paths made of slashes and dots, where `normalizePath`'s no-op check has most to get wrong.
    #[test]
    fn path_no_op_checks_are_exact(
        input in prop::collection::vec(prop::sample::select(b"/.a\\".to_vec()), 0..12)
    ) {
        for name in ["normalizePath", "normalizePathWin"] {
            let t = Transform::from_name(name).expect("known");
            if t.is_noop(&input) {
                prop_assert_eq!(t.apply(&input), input.clone(), "{} claimed no-op", name);
            }
        }
    }
}

// The detectors' shortcut (`operator::single_token`): values it passes are never flagged by
// libinjection itself, so skipping the detectors for them changes no verdict.
const SQL_AND_HTML_WORDS: &[&str] = &[
    "union",
    "SELECT",
    "or",
    "AND",
    "sleep",
    "benchmark",
    "having",
    "xor",
    "div",
    "null",
    "true",
    "case",
    "exec",
    "waitfor",
    "script",
    "onerror",
    "onload",
    "javascript",
    "alert",
    "iframe",
    "svg",
    "style",
    "doctype",
    "DOCTYPE",
    "x",
    "X",
    "_",
    "u",
    "n",
    "b",
    "e",
    "q",
    "select_1",
    "or1",
    "and1",
    "sp_password",
    "information_schema",
    "version",
    "user",
];

#[test]
fn libinjection_shortcut_words_are_not_injections() {
    for w in SQL_AND_HTML_WORDS {
        let v = w.as_bytes();
        assert!(waf_rules::operator::single_token(v), "{w}");
        assert!(!libinjectionrs::detect_sqli(v).is_injection(), "sqli {w}");
        assert!(!libinjectionrs::detect_xss(v).is_injection(), "xss {w}");
    }
    // Just outside the shortcut: these must still reach the detectors.
    for v in [
        "1 or 1",
        "1union",
        "a'",
        "<script>",
        "x y",
        "0x1",
        "-1",
        "select.x",
        "DBMS_LOCK.SLEEP.x",
        "union.all",
        "1.5",
        ".a",
        "@@version",
    ] {
        assert!(!waf_rules::operator::single_token(v.as_bytes()), "{v}");
    }
    assert!(libinjectionrs::detect_sqli(b"1 union select 1").is_injection());
    // JSON argument names: dotted barewords.
    for w in [
        "json.items.0.product",
        "json.cart",
        "a.b",
        "x.select",
        "json.user.version",
    ] {
        assert!(waf_rules::operator::single_token(w.as_bytes()), "{w}");
        assert!(
            !libinjectionrs::detect_sqli(w.as_bytes()).is_injection(),
            "sqli {w}"
        );
        assert!(
            !libinjectionrs::detect_xss(w.as_bytes()).is_injection(),
            "xss {w}"
        );
    }
}

proptest! {
    #[test]
    fn libinjection_shortcut_words(v in "[A-Za-z_][A-Za-z0-9_]{0,40}") {
        prop_assert!(waf_rules::operator::single_token(v.as_bytes()));
        prop_assert!(!libinjectionrs::detect_sqli(v.as_bytes()).is_injection());
        prop_assert!(!libinjectionrs::detect_xss(v.as_bytes()).is_injection());
    }

    /// Dotted words, their parts drawn from SQL keywords, functions (some with dots of their
    /// own in libinjection's table) and plain words: whatever the shortcut takes, neither
    /// detector flags.
    #[test]
    fn libinjection_shortcut_dotted(
        v in "(json|[A-Za-z_][A-Za-z0-9_]{0,6}|select|union|sys|dbms_lock|user_lock|or|and|sleep|version|null)(\\.([A-Za-z0-9_]{0,6}|select|union|sleep|stragg|database_name|fn_my_permissions|1|0x1|or|null|)){1,4}"
    ) {
        if waf_rules::operator::single_token(v.as_bytes()) {
            prop_assert!(!libinjectionrs::detect_sqli(v.as_bytes()).is_injection());
            prop_assert!(!libinjectionrs::detect_xss(v.as_bytes()).is_injection());
        }
    }

    #[test]
    fn libinjection_shortcut_numbers(v in "[0-9]{1,40}") {
        prop_assert!(waf_rules::operator::single_token(v.as_bytes()));
        prop_assert!(!libinjectionrs::detect_sqli(v.as_bytes()).is_injection());
        prop_assert!(!libinjectionrs::detect_xss(v.as_bytes()).is_injection());
    }
}

/// Pieces of what libinjection's XSS parser reacts to: dangerous attribute and tag names,
/// URL schemes, quotes of every kind, IE's backtick and conditional-comment and import
/// markers, entity-like text, separators and closers.
const XSS_PIECES: &[&str] = &[
    "on",
    "load",
    "onload",
    "onerror",
    "style",
    "src",
    "href",
    "formaction",
    "xmlns",
    "javascript:",
    "vbscript:",
    "data:",
    "script",
    "iframe",
    "svg",
    "`",
    "'",
    "\"",
    " ",
    "\t",
    "\n",
    "\x0c",
    "/",
    ">",
    "!",
    "-",
    "--",
    "?",
    "[if",
    "xml",
    "import",
    "entity",
    "doctype",
    "&#",
    "&lt;",
    "(",
    ")",
    ":",
    ";",
    "alert(1)",
    "x",
    "\0",
    "<",
    "=",
];

#[test]
fn xss_shortcut_cases() {
    // Flagged: each needs `<` or `=`.
    for v in [
        "<script>alert(1)</script>",
        "x onload=alert(1)",
        "\" onerror=alert(1)",
        "<!DOCTYPE html>",
    ] {
        assert!(waf_rules::operator::xss_possible(v.as_bytes()), "{v}");
        assert!(
            libinjectionrs::detect_xss(v.as_bytes()).is_injection(),
            "{v}"
        );
    }
    // Neither byte: never flagged, however hostile it looks.
    for v in [
        "javascript:alert(1)",
        "x onload alert(1)",
        "\" onerror `alert(1)`",
        "style expression(alert(1))",
        "' src javascript:alert(1) '",
        "12 Main St, Springfield",
    ] {
        assert!(!waf_rules::operator::xss_possible(v.as_bytes()), "{v}");
        assert!(
            !libinjectionrs::detect_xss(v.as_bytes()).is_injection(),
            "{v}"
        );
    }
}

proptest! {
    /// Whatever the shortcut skips, the detector does not flag (and what it flags, the
    /// shortcut lets through).
    #[test]
    fn xss_shortcut_is_never_wrong(parts in proptest::collection::vec(0..XSS_PIECES.len(), 0..12)) {
        let v: String = parts.iter().map(|&i| XSS_PIECES[i]).collect();
        if libinjectionrs::detect_xss(v.as_bytes()).is_injection() {
            prop_assert!(waf_rules::operator::xss_possible(v.as_bytes()), "{:?}", v);
        }
    }

    #[test]
    fn xss_shortcut_on_any_bytes(v in proptest::collection::vec(any::<u8>(), 0..64)) {
        if libinjectionrs::detect_xss(&v).is_injection() {
            prop_assert!(waf_rules::operator::xss_possible(&v), "{:?}", v);
        }
    }
}

/// Patterns shaped like CRS's: evasion classes between letters, optional and repeated pieces,
/// separators, alternations of commands, anchors.
const PREFILTER_PATTERNS: &[&str] = &[
    r#"(?i)c["'\\]*a["'\\]*t"#,
    r#"(?i)(?:[;|&]|^)\s*(?:ls|7z[ax]?|d(?:n)?f)[ ,]"#,
    r"(?:^|[/;\\])\.{2,3}[/;\\]",
    r"(?i)on(?:error|load)\s*=",
    r"[;|][a-z]",
    r"(?i)(?:a|b\.)\.{2}c",
    r#"(?i)\b(?:s["\\]*h|b["\\]*a["\\]*s["\\]*h)\b"#,
    r"x{2,3}(?:y|z;)?",
    // Two sets each (`Required::also`): CRS 941120's and 942151's shapes.
    r"(?i)[\s;/]on[a-z]{3,25}[\s;]*?=[^=]",
    r"(?i)\b(?:bash|load|sh)[^0-9a-z]*\(",
    r"(?i)(?:error|;)\s+(?:cat|ls)\s*?\(",
];

/// Pieces the values are made of, so that the patterns above often match.
const PREFILTER_PIECES: &[&str] = &[
    "c", "a", "A", "t", "'", "\"", "\\", ";", "|", "&", " ", ",", "ls", "7z", "7zx", "x", "df",
    "dnf", "..", ".", "/", "on", "error", "load", "=", "sh", "bash", "b.", "y", "z;", "s", "h",
    "\n", "(", "onload",
];

proptest! {
    /// Whatever the prefilter says a match needs, every match has: one of the literals, or,
    /// for literals that hold only for unmarked values, a marked byte.
    #[test]
    fn prefilter_literals_are_in_every_match(
        p in 0..PREFILTER_PATTERNS.len(),
        parts in proptest::collection::vec(proptest::sample::select(PREFILTER_PIECES), 0..7)
    ) {
        let v: Vec<u8> = parts.concat().into_bytes();
        let pattern = PREFILTER_PATTERNS[p];
        let re = regex::bytes::RegexBuilder::new(pattern).unicode(false).build().unwrap();
        let hir = waf_rules::prefilter::parse_bytes(pattern).unwrap();
        if let (Some(req), true) = (waf_rules::prefilter::required_of(&hir), re.is_match(&v)) {
            let lower = v.to_ascii_lowercase();
            let has_literal = req
                .literals
                .iter()
                .any(|l| lower.windows(l.len()).any(|w| w == l.as_slice()));
            let marked = v.iter().any(|&b| waf_rules::prefilter::marked_byte(b));
            prop_assert!(
                has_literal || (req.unmarked_only && marked),
                "{pattern} matched {:?} without {:?}",
                String::from_utf8_lossy(&v),
                req
            );
            let has_also = req.also.is_empty()
                || req
                    .also
                    .iter()
                    .any(|l| lower.windows(l.len()).any(|w| w == l.as_slice()));
            prop_assert!(
                has_also,
                "{pattern} matched {:?} without any of {:?}",
                String::from_utf8_lossy(&v),
                req.also
            );
        }
    }
}

/// The `@validateByteRange` ranges CRS uses at its four paranoia levels and the whole range,
/// each with whether the byte classes decide it (the last of CRS's leaves out punctuation that
/// has no class).
const BYTE_RANGES: &[(&str, bool)] = &[
    ("1-255", true),
    ("9,10,13,32-126,128-255", true),
    ("32-36,38-126", true),
    ("38,44-46,48-58,61,65-90,95,97-122", false),
    ("0-255", true),
];

proptest! {
    /// `Operator::needs_classes` lets the evaluation skip values without running the
    /// operator: a value with none of the classes it names is never matched.
    #[test]
    fn an_operator_never_matches_a_value_without_the_classes_it_needs(
        input in prop::collection::vec(any::<u8>(), 0..48),
        range in prop::sample::select(BYTE_RANGES),
    ) {
        use waf_rules::operator::{byte_range, Operator};
        let flags = waf_rules::transform::byte_flags(&input);
        let (range, decided) = range;
        let ranged = byte_range(range).expect("a range");
        prop_assert_eq!(ranged.needs_classes().is_some(), decided);
        let ops = [ranged, Operator::ValidateUtf8Encoding, Operator::ValidateUrlEncoding];
        for op in &ops {
            let Some(needs) = op.needs_classes() else {
                continue;
            };
            let found = op.run(&input, false, &|_| std::borrow::Cow::Borrowed(&[])).is_some();
            prop_assert!(!found || flags & needs != 0, "{op:?} on {input:?}");
        }
    }
}

proptest! {
    /// `byte_flags` (four bytes a step, `memmem` for two spaces) says what a byte-by-byte
    /// reading says.
    #[test]
    fn byte_flags_are_those_of_the_bytes(input in interesting_bytes()) {
        use waf_rules::transform::{byte_class, byte_flags, flags};
        let mut f = input.iter().fold(0, |f, &b| f | byte_class(b));
        if input.windows(2).any(|w| w == b"  ") {
            f |= flags::DOUBLE_SPACE;
        }
        let edge = |b: &u8| matches!(*b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
        if input.first().is_some_and(edge) || input.last().is_some_and(edge) {
            f |= flags::TRIM_EDGE;
        }
        if input == b"." {
            f |= flags::SLASH;
        }
        prop_assert_eq!(byte_flags(&input), f);
    }
}
