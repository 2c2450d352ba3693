//! Custom rules end to end inside the engine: the example ruleset's own cases, verdict semantics,
//! rate limits, and errors that name file, line and column.

use std::net::IpAddr;

use waf_rules::custom::{CustomAction, CustomRules, Error, Mode, OnExceed, RuleAction};
use waf_rules::ratelimit::RateLimiter;
use waf_rules::HttpRequest;

const EXAMPLE: &str = include_str!("../examples/shop-rules.toml");
const NOW: u64 = 1_790_000_000_000; // 2026-09-21

fn req(method: &str, uri: &str, ip: &str, headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        body: Vec::new(),
        client_ip: ip.parse::<IpAddr>().ok(),
        country: None,
    }
}

#[test]
fn example_ruleset_cases_all_pass() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).expect("example loads");
    let report = rules.run_tests(NOW);
    for o in &report.outcomes {
        assert!(o.passed, "{o}");
    }
    assert!(report.passed() >= 20, "{}", report.summary());
    assert_eq!(
        report.summary(),
        format!("{} passed, 0 failed", report.passed())
    );
}

#[test]
fn a_failing_case_is_reported_with_its_location() {
    let text = r#"
[[rule]]
id = "r"
expression = 'http.request.uri.path eq "/x"'
action = "block"

[[rule.test]]
name = "wrong expectation"
uri = "/y"
expect = "block"
"#;
    let report = CustomRules::from_toml("t.toml", text)
        .unwrap()
        .run_tests(NOW);
    assert_eq!(report.summary(), "0 passed, 1 failed");
    let line = report.outcomes[0].to_string();
    assert!(
        line.starts_with("FAIL t.toml:7:1 [r] wrong expectation: expected block by `r`, got pass"),
        "{line}"
    );
}

#[test]
fn login_flood_gets_429_while_another_address_passes() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).unwrap();
    let limiter = RateLimiter::new(1000);
    let attacker = req("POST", "/login", "203.0.113.5", &[]);
    for i in 0..5 {
        let v = rules.evaluate(&attacker, NOW + i * 100, &limiter);
        assert_eq!(v.action, CustomAction::Pass, "attempt {i}");
    }
    let v = rules.evaluate(&attacker, NOW + 600, &limiter);
    match &v.action {
        CustomAction::RateLimited {
            rule_id,
            retry_after_secs,
        } => {
            assert_eq!(&**rule_id, "login-brute-force");
            assert_eq!(*retry_after_secs, 600, "mitigation timeout");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(v.action.status(), Some(429));
    assert_eq!(v.matches.len(), 1);
    assert_eq!(v.matches[0].action, RuleAction::RateLimit);
    // Another address is still welcome.
    let other = req("POST", "/login", "203.0.113.6", &[]);
    assert_eq!(
        rules.evaluate(&other, NOW + 700, &limiter).action,
        CustomAction::Pass
    );
    // Still limited nine minutes later, free after the mitigation timeout.
    assert!(
        rules
            .evaluate(&attacker, NOW + 9 * 60_000, &limiter)
            .action
            .status()
            == Some(429)
    );
    assert_eq!(
        rules
            .evaluate(&attacker, NOW + 600 + 600_000, &limiter)
            .action,
        CustomAction::Pass
    );
}

#[test]
fn shadow_rule_changes_nothing_but_is_recorded() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).unwrap();
    let limiter = RateLimiter::new(100);
    let q = "q".repeat(300);
    let r = req("GET", &format!("/search?q={q}"), "203.0.113.1", &[]);
    let v = rules.evaluate(&r, NOW, &limiter);
    assert_eq!(v.action, CustomAction::Pass);
    assert!(!v.skip_managed);
    assert_eq!(v.matches.len(), 1);
    assert_eq!(&*v.matches[0].rule_id, "search-huge-query");
    assert_eq!(v.matches[0].mode, Mode::Shadow);
    assert_eq!(v.matches[0].action, RuleAction::Block);
    // After its expiry date the shadow rule is gone.
    let later = 1_830_297_600_000; // 2028-01-01
    assert!(rules.evaluate(&r, later, &limiter).matches.is_empty());
}

#[test]
fn allow_is_an_exception_for_everything_after_it() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).unwrap();
    let limiter = RateLimiter::new(100);
    let cb = req(
        "POST",
        "/payments/callback",
        "198.51.100.9",
        &[("User-Agent", "sqlmap")],
    );
    let v = rules.evaluate(&cb, NOW, &limiter);
    assert_eq!(
        v.action,
        CustomAction::Allow {
            rule_id: "payment-callback".into()
        }
    );
    assert!(v.skip_managed);
    assert_eq!(v.action.status(), None);
    // The same request from elsewhere meets the scanner rule.
    let cb = req(
        "POST",
        "/payments/callback",
        "203.0.113.9",
        &[("User-Agent", "sqlmap")],
    );
    let v = rules.evaluate(&cb, NOW, &limiter);
    assert_eq!(
        v.action,
        CustomAction::Block {
            rule_id: "scanner-user-agents".into()
        }
    );
    assert_eq!(v.action.status(), Some(403));
    assert!(!v.skip_managed);
}

#[test]
fn rate_limits_run_after_plain_rules_and_can_block() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).unwrap();
    let ids: Vec<&str> = rules.rules().iter().map(|r| &*r.id).collect();
    let first_limit = ids.iter().position(|i| *i == "login-brute-force").unwrap();
    assert!(rules.rules()[..first_limit]
        .iter()
        .all(|r| r.action != RuleAction::RateLimit));
    let card = rules
        .rules()
        .iter()
        .find(|r| &*r.id == "card-testing-rate")
        .unwrap();
    assert_eq!(card.rate_limit.as_ref().unwrap().on_exceed, OnExceed::Block);
}

#[test]
fn global_scope_is_handed_to_the_host() {
    let text = r#"
[[rule]]
id = "global-login"
expression = 'http.request.uri.path eq "/login"'
action = "rate_limit"
[rule.rate-limit]
key = ["ip", "header:X-Api-Key"]
requests = 100
period = 60
scope = "global"
"#;
    let rules = CustomRules::from_toml("g.toml", text).unwrap();
    let limiter = RateLimiter::new(10);
    let v = rules.evaluate(
        &req("GET", "/login", "192.0.2.1", &[("x-api-key", "k1")]),
        NOW,
        &limiter,
    );
    assert_eq!(v.action, CustomAction::Pass);
    assert_eq!(v.global_limits.len(), 1);
    let g = &v.global_limits[0];
    assert_eq!(&*g.rule_id, "global-login");
    assert_eq!(g.key, b"global-login\x00192.0.2.1\x00k1".to_vec());
    assert_eq!(g.quota.requests, 100);
}

#[test]
fn several_files_form_one_ruleset() {
    let lists = "[lists.office]\nkind = \"ip\"\nitems = [\"192.0.2.0/24\"]\n";
    let rules = "[[rule]]\nid = \"a\"\nexpression = 'not ip.src in $office'\naction = \"block\"\n";
    let set = CustomRules::from_files(&[("lists.toml", lists), ("rules.toml", rules)]).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.rules()[0].location.to_string(), "rules.toml:1:1");
    let dup =
        CustomRules::from_files(&[("lists.toml", lists), ("a.toml", rules), ("b.toml", rules)]);
    let err = dup.unwrap_err().to_string();
    assert!(
        err.contains("b.toml:2:6") && err.contains("first at a.toml:1:1"),
        "{err}"
    );
}

fn load_err(text: &str) -> Error {
    CustomRules::from_toml("bad.toml", text).expect_err("should not load")
}

#[test]
fn errors_name_file_line_column_and_what_was_expected() {
    let e = load_err("[[rule]]\nid = \"x\"\nexpression = '''\nhttp.host eq \"a\" and\n  ip.src in 10.0.0.1'''\naction = \"block\"\n");
    assert_eq!(e.location(), ("bad.toml", 5, 13));
    assert!(e.to_string().contains("expected `{`"), "{e}");

    // Escapes in a basic string are followed to the right column.
    let e = load_err("[[rule]]\nid = \"x\"\nexpression = \"http.host eq \\\"a\\\" and http.hots eq \\\"b\\\"\"\naction = \"block\"\n");
    assert_eq!(e.location(), ("bad.toml", 3, 38), "{e}");

    let e = load_err("[[rule]]\nid = \"x\"\nexpresion = \"true\"\naction = \"block\"\n");
    assert_eq!(e.location(), ("bad.toml", 3, 1));
    assert!(e.to_string().contains("unknown field `expresion`"), "{e}");

    let e = load_err("[[rule]]\nid = \"x\"\nexpression = \"true\"\naction = \"challenge\"\n");
    assert_eq!(e.location(), ("bad.toml", 4, 10));
    assert!(
        e.to_string().contains("`challenge` is not supported"),
        "{e}"
    );

    let e = load_err("[lists.o]\nkind = \"ip\"\nitems = [\"1.2.3.4\", \"10.0.0.0/33\"]\n");
    assert_eq!(e.location(), ("bad.toml", 3, 21));

    let e = load_err("[[rule]]\nid = \"x\"\nexpression = \"true\"\naction = \"rate_limit\"\n");
    assert!(e.to_string().contains("[rule.rate-limit]"), "{e}");

    let e = load_err("[[rule]]\nid = \"x\"\nexpression = \"true\"\naction = \"rate_limit\"\n[rule.rate-limit]\nkey = [\"ip\", \"hdr:x\"]\nrequests = 5\nperiod = 60\n");
    assert_eq!(e.location(), ("bad.toml", 6, 14));

    let e = load_err("[[rule]]\nid = \"x\"\nexpression = 'http.request.headers[\"a\"] eq \"b\"'\naction = \"block\"\n");
    assert!(e.to_string().contains("is an array"), "{e}");
    assert_eq!(e.location(), ("bad.toml", 3, 15));

    let e = load_err("[[rule]]\nid = \"x\"\nexpression = \"true\"\naction = \"block\"\n[[rule.test]]\nname = \"t\"\nip = \"nope\"\nexpect = \"block\"\n");
    assert_eq!(e.location(), ("bad.toml", 7, 6));

    let e = load_err("[[test]]\nname = \"t\"\nexpect = \"block\"\nrule = \"ghost\"\n");
    assert!(e.to_string().contains("no file defines"), "{e}");

    let e = load_err("this is not toml");
    assert_eq!(e.location().0, "bad.toml");
}

#[test]
fn shared_passes_agree_with_naive_evaluation_on_the_example() {
    let rules = CustomRules::from_toml("shop-rules.toml", EXAMPLE).unwrap();
    let uas = ["", "Mozilla/5.0", "sqlmap/1.0", "Nikto", "curl/8"];
    let paths = [
        "/",
        "/admin",
        "/ADMIN/x",
        "/login",
        "/search?q=x",
        "/.env",
        "/a/.git/HEAD",
        "/checkout/payment",
        "/payments/callback",
        "/x/wp-config.php.bak",
    ];
    let ips = [
        "192.0.2.4",
        "198.51.100.200",
        "203.0.113.1",
        "2001:db8:100::1",
        "",
    ];
    for ua in uas {
        for p in paths {
            for ip in ips {
                for m in ["GET", "POST"] {
                    let r = req(
                        m,
                        p,
                        ip,
                        &[("User-Agent", ua), ("X-Forwarded-For", "127.0.0.1")],
                    );
                    assert_eq!(
                        rules.matching_rules(&r),
                        rules.matching_rules_naive(&r),
                        "{m} {p} {ip} {ua}"
                    );
                }
            }
        }
    }
}
