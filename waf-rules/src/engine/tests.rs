use super::*;
use crate::HttpRequest;

fn rs(text: &str) -> RuleSet {
    RuleSet::from_sources(
        &[("t.conf".into(), text.into())],
        &[],
        &WafConfig::default(),
    )
    .expect("loads")
}

fn get(uri: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: vec![("Host".into(), "x".into())],
        ..Default::default()
    }
}

/// A POST of `body` as JSON to `uri`.
fn post_json(uri: &str, body: &str) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "x".into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[test]
fn rule_msg_names_the_last_matched_rules_message() {
    // Rule 1 matches on every request; rule 2 copies `RULE.msg` into TX; rule 3 blocks on it.
    let r = rs(r#"
SecRule REQUEST_METHOD "@streq GET" "id:1,phase:1,pass,msg:'first message'"
SecAction "id:2,phase:1,pass,nolog,setvar:'tx.m=%{rule.msg}'"
SecRule TX:m "@streq first message" "id:3,phase:1,deny,msg:'saw it'"
"#);
    for _ in 0..2 {
        let v = r.evaluate(&get("/"));
        assert_eq!(v.action, Action::Block, "{v:?}");
        assert!(v.matches.iter().any(|m| m.id == 3));
    }
    // A request rule 1 does not match leaves `RULE.msg` empty for rule 2.
    let mut head = get("/");
    head.method = "HEAD".into();
    assert_eq!(r.evaluate(&head).action, Action::Allow);
}

#[test]
fn simple_rule_blocks_and_reports() {
    let r = rs(
        r#"SecRule ARGS "@rx (?i)<script" "id:1,phase:2,deny,t:urlDecodeUni,msg:'xss %{MATCHED_VAR_NAME}'""#,
    );
    let v = r.evaluate(&get("/?q=%3CScript%3E"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].id, 1);
    assert_eq!(v.matches[0].variable, "ARGS:q");
    assert_eq!(v.matches[0].msg, "xss ARGS:q");
    assert_eq!(r.evaluate(&get("/?q=hello")).action, Action::Allow);
}

#[test]
fn detect_mode_never_blocks() {
    let r = rs(r#"SecRule ARGS "@rx a" "id:1,phase:2,deny""#);
    let cfg = WafConfig {
        mode: Mode::Detect,
        ..WafConfig::default()
    };
    let v = r.evaluate_with(&get("/?q=a"), &cfg);
    assert_eq!(v.action, Action::Allow);
    assert_eq!(v.matches.len(), 1);
}

#[test]
fn chains_setvar_and_skip_after() {
    let r = rs(r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0"
SecRule REQUEST_METHOD "@streq GET" "id:2,phase:1,pass,nolog,skipAfter:END"
SecRule ARGS "@rx x" "id:3,phase:1,deny"
SecMarker END
SecRule ARGS:a "@rx ^(\d+)$" "id:4,phase:2,pass,capture,chain,setvar:tx.score=+%{tx.1}"
    SecRule TX:1 "@gt 5" "setvar:tx.big=1"
SecRule TX:score "@ge 7" "id:5,phase:2,deny,msg:'score %{tx.score}'"
"#);
    let v = r.evaluate(&get("/?a=7&b=x"));
    assert_eq!(v.action, Action::Block);
    let ids: Vec<u32> = v.matches.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![4, 5]);
    assert_eq!(v.matches[1].msg, "score 7");
    assert_eq!(r.evaluate(&get("/?a=3")).action, Action::Allow);
}

#[test]
fn exclusions_and_counts() {
    let r = rs(r#"
SecRule ARGS|!ARGS:safe "@rx bad" "id:1,phase:2,deny"
SecRule &ARGS "@gt 3" "id:2,phase:2,deny"
"#);
    assert_eq!(r.evaluate(&get("/?safe=bad")).action, Action::Allow);
    assert_eq!(r.evaluate(&get("/?other=bad")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?a&b&c&d")).matches[0].id, 2);
}

#[test]
fn ctl_removes_rules_at_runtime() {
    let r = rs(r#"
SecRule REQUEST_FILENAME "@streq /ok" "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=3"
SecRule REQUEST_FILENAME "@streq /ok" "id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetById=4;ARGS:q"
SecRule ARGS "@rx bad" "id:3,phase:2,deny"
SecRule ARGS "@rx evil" "id:4,phase:2,deny"
"#);
    assert_eq!(r.evaluate(&get("/ok?q=bad")).action, Action::Allow);
    assert_eq!(r.evaluate(&get("/ok?q=evil")).action, Action::Allow);
    assert_eq!(r.evaluate(&get("/ok?z=evil")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/no?q=bad")).action, Action::Block);
}

#[test]
fn unsupported_rules_are_reported_not_dropped_silently() {
    let r = rs(r#"
SecRule ARGS "@rbl x" "id:1,phase:2,deny"
SecRule RESPONSE_BODY "@rx x" "id:2,phase:4,deny"
"#);
    let ids: Vec<u32> = r.unsupported().iter().map(|u| u.0).collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn parse_errors_name_location() {
    let e = RuleSet::from_sources(
        &[(
            "a.conf".into(),
            "\nSecRule ARGS \"@rx x\" \"phase:2\"\n".into(),
        )],
        &[],
        &WafConfig::default(),
    )
    .expect_err("no id");
    assert!(e.to_string().starts_with("a.conf:2:"), "{e}");
    let e = RuleSet::from_sources(
        &[("a.conf".into(), "SecBogus On\n".into())],
        &[],
        &WafConfig::default(),
    )
    .expect_err("unknown");
    assert_eq!(e.to_string(), "a.conf:1:1: SecBogus: unknown directive");
    let e = RuleSet::from_sources(
        &[("a.conf".into(), "SecRule ARGS \"@rx (\" \"id:1\"\n".into())],
        &[],
        &WafConfig::default(),
    )
    .expect_err("bad regex");
    assert!(
        e.to_string().starts_with("a.conf:1:14: SecRule: regex"),
        "{e}"
    );
}

#[test]
fn ruleset_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RuleSet>();
}

#[test]
fn multi_match_checks_every_step() {
    let r = rs(
        r#"SecRule ARGS "@rx ^while\(!false\)$" "id:1,phase:2,deny,t:none,t:base64Decode,multiMatch""#,
    );
    assert_eq!(r.evaluate(&get("/?a=while(!false)")).action, Action::Block);
}

#[test]
fn rules_that_read_headers_have_their_own_union() {
    // Rules 1 and 2 share a chain; only rule 2 reads headers. A header holding rule 1's
    // literal must not keep rule 1 from being skipped whole, and rule 2 still sees it.
    let r = rs(r#"
SecRule ARGS|REQUEST_COOKIES "@rx /\*!" "id:1,phase:2,deny,t:none,t:lowercase,msg:'args'"
SecRule ARGS|REQUEST_HEADERS "@rx /\*!" "id:2,phase:2,pass,log,t:none,t:lowercase,msg:'headers'"
"#);
    let pf = r.prefilter.as_ref().expect("a prefilter");
    let filter = |i: usize| match &r.phases[1][i] {
        Item::Rule(rule) => rule.pf.expect("prefiltered").0 as usize,
        Item::Marker(_) => panic!("a rule"),
    };
    let (args, headers) = (filter(0), filter(1));
    assert_ne!(args, headers);
    assert_eq!(pf.filters[args].node, pf.filters[headers].node);
    assert!(!pf.filters[args].vars.contains(&Var::Headers));
    assert!(pf.filters[headers].vars.contains(&Var::Headers));
    let with_header = |uri: &str| HttpRequest {
        headers: vec![("Host".into(), "x".into()), ("X-C".into(), "/*!x".into())],
        ..get(uri)
    };
    let v = r.evaluate(&with_header("/?q=fine"));
    assert_eq!(v.action, Action::Allow);
    assert_eq!(v.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [2]);
    assert_eq!(r.evaluate(&with_header("/?q=/*!1")).action, Action::Block);
    let req = with_header("/?q=/*!1");
    assert_eq!(r.evaluate(&req), r.evaluate_every_rule(&req, r.config()));
}

#[test]
fn a_multi_match_rule_is_skipped_only_when_no_step_holds_its_literal() {
    // The literal `abc` only in the raw value, only after the first step, or nowhere; the
    // final value (hex) never holds it. The rule is gated as a whole on the unions at every
    // node of its chain.
    let r = rs(
        r#"SecRule ARGS|REQUEST_HEADERS "@rx abc" "id:1,phase:2,deny,t:none,t:urlDecodeUni,t:hexEncode,multiMatch""#,
    );
    let pf = r.prefilter.as_ref().expect("a prefilter");
    let Some(Item::Rule(rule)) = r.phases[1].first() else {
        panic!("one phase-2 rule")
    };
    // Raw, after urlDecodeUni, after hexEncode: three unions, each its own filter.
    assert_eq!(rule.pf_steps.len(), 3);
    for &(fi, _) in &rule.pf_steps {
        assert!(pf.filters[fi as usize].vars.contains(&Var::Args));
    }
    assert_eq!(r.evaluate(&get("/?q=xabcx")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?q=a%62c")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?q=a%62d")).action, Action::Allow);
    assert_eq!(r.evaluate(&get("/?q=616263")).action, Action::Allow);
}

#[test]
fn tx_key_regex_reads_the_keys_it_matches() {
    // Keys inside and around the prefix's range, in and out of case.
    let r = rs(r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.hn_a=/a/,setvar:tx.hn_b=/b/,setvar:tx.hm_c=/c/,setvar:tx.HN=/d/,setvar:tx.hn=/e/"
SecRule &TX:/^HN_/ "@eq 2" "id:2,phase:1,pass,log,msg:'two'"
SecRule TX:/^hn_/ "@rx ^/c/$" "id:3,phase:1,pass,log,msg:'hm_c is not hn_'"
SecRule TX:/^hn_[ab]$/ "@rx ^/b/$" "id:4,phase:1,pass,log,msg:'b'"
"#);
    let v = r.evaluate(&get("/"));
    let ids: Vec<u32> = v.matches.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![2, 4], "{:?}", v.matches);
}

#[test]
fn unmarked_only_literals_never_hide_a_marked_match() {
    // No literal in general; `cat` in a value without quotes or backslashes.
    let r = rs(r#"SecRule ARGS "@rx c[\"'\x5c]*a[\"'\x5c]*t" "id:1,phase:2,deny,t:urlDecodeUni""#);
    for (uri, blocked) in [
        ("/?x=cat", true),
        ("/?x=c%27a%22t", true),
        ("/?x=c%5Ca%5Ct&y=dog", true),
        ("/?x=dog&y=c%27a", false),
        ("/?x=caat", false),
        ("/?x=dog", false),
    ] {
        let v = r.evaluate(&get(uri));
        assert_eq!(v.action == Action::Block, blocked, "{uri}: {:?}", v.matches);
    }
}

#[test]
fn integers_as_text_for_setvar() {
    let mut buf = [0u8; 20];
    for n in [0i64, 7, -5, 1234567890, i64::MAX, i64::MIN] {
        assert_eq!(super::eval::int_text(n, &mut buf), n.to_string().as_bytes());
    }
}

#[test]
fn tx_key_regex_selects_load_time_and_run_time_names() {
    // `paramcounter_a` and `xparamcounter_b` are spelled out (slots at load);
    // `paramcounter_get` is made when the rule runs. The regex is unanchored, as CRS's.
    let r = rs(r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.paramcounter_a=1,setvar:tx.xparamcounter_b=1,setvar:'tx.paramcounter_%{REQUEST_METHOD}=1',setvar:tx.other=1"
SecRule &TX:/paramcounter_.*/ "@eq 3" "id:2,phase:1,pass,log,msg:'three'"
SecRule TX:/^paramcounter_/ "@rx ^1$" "id:3,phase:1,pass,log,msg:'%{MATCHED_VAR_NAME}'"
"#);
    let v = r.evaluate(&get("/"));
    let got: Vec<(u32, &str)> = v.matches.iter().map(|m| (m.id, m.msg.as_str())).collect();
    assert_eq!(
        got,
        vec![(2, "three"), (3, "TX:paramcounter_get")],
        "{:?}",
        v.matches
    );
}

#[test]
fn tx_prefix_stops_where_a_rule_would_read_the_request() {
    let text = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.a=1"
SecRule &TX:b "@eq 1" "id:2,phase:1,pass,nolog,setvar:'tx.ua=%{REQUEST_HEADERS.User-Agent}'"
SecRule TX:ua "@rx evil" "id:3,phase:1,deny,log,msg:'ua'"
SecRule TX:a "@eq 1" "id:4,phase:1,pass,log,msg:'a is %{tx.a}'"
"#;
    let with_ua = |ua: &str| HttpRequest {
        headers: vec![
            ("Host".into(), "x".into()),
            ("User-Agent".into(), ua.into()),
        ],
        ..get("/")
    };
    // Without tx.b, rule 2's first link never matches: rules 1 to 3 run once per rule set;
    // rule 4 logs, so the prefix ends before it.
    let plain = rs(text);
    assert_eq!(plain.tx_prefix_len(), 3);
    let v = plain.evaluate(&with_ua("evil"));
    assert_eq!(v.action, Action::Allow, "{:?}", v.matches);
    assert_eq!(v.matches.len(), 1);
    assert_eq!(v.matches[0].msg, "a is 1");
    // With tx.b set by the configuration, rule 2 reads the request: the prefix stops there.
    let cfg = WafConfig {
        tx: [("b".to_string(), "1".to_string())].into(),
        ..WafConfig::default()
    };
    let with_b =
        RuleSet::from_sources(&[("t.conf".into(), text.into())], &[], &cfg).expect("loads");
    assert_eq!(with_b.tx_prefix_len(), 1);
    assert_eq!(with_b.evaluate(&with_ua("evil")).action, Action::Block);
    assert_eq!(with_b.evaluate(&with_ua("fine")).action, Action::Allow);
    // The rule set's own prefix is not used for another configuration's TX values.
    assert_eq!(
        plain.evaluate_with(&with_ua("evil"), &cfg).action,
        Action::Block
    );
}

#[test]
fn a_gate_is_fixed_only_when_nothing_after_the_prefix_writes_what_it_reads() {
    let text = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.gate=1,setvar:tx.level=1"
SecRule REQUEST_HEADERS:X-Gate "@streq off" "id:2,phase:1,pass,nolog,setvar:tx.gate=0"
SecRule TX:gate "@eq 1" "id:3,phase:1,pass,nolog,skipAfter:END-GATE"
SecRule ARGS "@rx a" "id:4,phase:1,deny,log,msg:'gated'"
SecMarker END-GATE
SecRule TX:level "@lt 2" "id:5,phase:1,pass,nolog,skipAfter:END-LEVEL"
SecRule ARGS "@rx b" "id:6,phase:1,deny,log,msg:'level 2'"
SecMarker END-LEVEL
"#;
    let r = rs(text);
    assert_eq!(r.tx_prefix_len(), 1);
    let with_gate = |uri: &str, gate: &str| HttpRequest {
        headers: vec![("Host".into(), "x".into()), ("X-Gate".into(), gate.into())],
        ..get(uri)
    };
    for (req, blocked) in [
        // tx.gate is written by rule 2 (request-dependent): rule 3 must run every time.
        (with_gate("/?q=a", "on"), false),
        (with_gate("/?q=a", "off"), true),
        // tx.level is written in the prefix only: rule 5 always skips rule 6.
        (with_gate("/?q=b", "off"), false),
    ] {
        let v = r.evaluate(&req);
        assert_eq!(
            v.action == Action::Block,
            blocked,
            "{:?}: {:?}",
            req.headers,
            v.matches
        );
        assert_eq!(v, r.evaluate_every_rule(&req, r.config()));
    }
}

#[test]
fn a_fixed_gate_holds_after_a_non_tx_target_removal_and_runs_after_a_tx_one() {
    let text = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
SecRule REQUEST_FILENAME "@streq /t" "id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetById=5;TX:level"
SecRule REQUEST_FILENAME "@streq /f" "id:3,phase:1,pass,nolog,ctl:ruleRemoveTargetById=6;REQUEST_FILENAME"
SecRule TX:level "@lt 2" "id:5,phase:1,pass,nolog,skipAfter:END-LEVEL"
SecRule ARGS|REQUEST_FILENAME "@rx b" "id:6,phase:1,deny,log,msg:'level 2'"
SecMarker END-LEVEL
"#;
    let r = rs(text);
    assert_eq!(r.tx_prefix_len(), 1);
    for (uri, blocked) in [
        // Only the gate's skip keeps rule 6 from blocking.
        ("/?q=b", false),
        // A REQUEST_FILENAME removal cannot change what the gate reads: it still skips.
        ("/f?q=b", false),
        // With TX:level removed the gate reads nothing and does not skip: rule 6 runs.
        ("/t?q=b", true),
    ] {
        let req = get(uri);
        let v = r.evaluate(&req);
        assert_eq!(v.action == Action::Block, blocked, "{uri}: {:?}", v.matches);
        assert_eq!(v, r.evaluate_every_rule(&req, r.config()), "{uri}");
    }
}

#[test]
fn a_fixed_scoring_rule_still_adds_what_the_request_scored() {
    // As CRS 949052/949053: the condition reads a TX value only the prefix writes (fixed per
    // configuration), the setvar adds a score the request's own rules set.
    let text = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1,setvar:tx.total=0"
SecRule ARGS "@rx attack" "id:2,phase:2,pass,nolog,setvar:tx.pl1=+5"
SecRule ARGS "@rx other" "id:3,phase:2,pass,nolog,setvar:tx.pl2=+3"
SecRule TX:level "@ge 1" "id:4,phase:2,pass,nolog,setvar:'tx.total=+%{tx.pl1}',setvar:'tx.seen=%{matched_var_name}=%{matched_var}'"
SecRule MATCHED_VAR_NAME "@streq TX:level" "id:41,phase:2,pass,log,msg:'after %{matched_var_name}'"
SecRule TX:level "@ge 2" "id:5,phase:2,pass,nolog,setvar:'tx.total=+%{tx.pl2}'"
SecRule TX:total "@ge 5" "id:6,phase:2,deny,log,msg:'total %{tx.total}, %{tx.seen}'"
"#;
    let r = rs(text);
    assert_eq!(r.tx_prefix_len(), 1);
    // Rules 4 and 5 (rule 6 reads a value rules 2 to 4 write).
    assert_eq!(r.fixed_rules(), 2);
    for (uri, blocked) in [
        ("/?q=attack", true),
        // Rule 5 never matches at level 1: rule 3's score is not added.
        ("/?q=other", false),
        ("/?q=fine", false),
    ] {
        let req = get(uri);
        let v = r.evaluate(&req);
        assert_eq!(v.action == Action::Block, blocked, "{uri}: {:?}", v.matches);
        // Rule 41 reads MATCHED_VAR_NAME as fixed rule 4 left it.
        assert_eq!(v.matches[0].id, 41, "{uri}: {:?}", v.matches);
        assert_eq!(v.matches[0].msg, "after MATCHED_VAR_NAME");
        if blocked {
            assert_eq!(v.matches[1].msg, "total 5, TX:level=1");
        }
        assert_eq!(v, r.evaluate_every_rule(&req, r.config()), "{uri}");
    }
}

#[test]
fn a_chained_rule_whose_head_never_matches_is_fixed_and_one_whose_head_matches_is_not() {
    // As CRS 920380/920400: the head counts a TX limit the prefix may set; unset, the rule
    // can never match and its chain need not run. Set, the chain decides per request.
    let text = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.max_args=3"
SecRule &TX:arg_length "@eq 1" "id:2,phase:2,deny,log,msg:'long',chain"
    SecRule ARGS "@gt %{tx.arg_length}" "t:none,t:length"
SecRule &TX:max_args "@eq 1" "id:3,phase:2,deny,log,msg:'many',chain"
    SecRule &ARGS "@gt %{tx.max_args}" "t:none"
SecRule TX:max_args "@lt 2" "id:4,phase:2,deny,log,msg:'low',chain"
    SecRule ARGS "@rx ." "t:none"
"#;
    let r = rs(text);
    assert_eq!(r.tx_prefix_len(), 1);
    // Rules 2 and 4; not rule 3, whose head matches.
    assert_eq!(r.fixed_rules(), 2);
    for (uri, blocked) in [
        ("/?a=1&b=2&c=3&d=4", true),
        ("/?a=1&b=2", false),
        ("/", false),
    ] {
        let req = get(uri);
        let v = r.evaluate(&req);
        assert_eq!(v.action == Action::Block, blocked, "{uri}: {:?}", v.matches);
        if blocked {
            assert_eq!(v.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [3]);
        }
        assert_eq!(v, r.evaluate_every_rule(&req, r.config()), "{uri}");
    }
}

#[test]
fn unique_id_is_made_when_read_and_follows_the_request_line() {
    let r = rs(
        r#"SecRule UNIQUE_ID "@rx ^([0-9a-f]{20})$" "id:1,phase:1,pass,log,capture,msg:'%{tx.1}'""#,
    );
    let id = |uri: &str| {
        let v = r.evaluate(&get(uri));
        assert_eq!(v.matches.len(), 1, "{uri}: {:?}", v.matches);
        v.matches[0].msg.clone()
    };
    assert_eq!(id("/a"), id("/a"));
    assert_ne!(id("/a"), id("/b"));
}

#[test]
fn recycled_match_lists_hold_nothing_of_the_last_request() {
    // The chain reads MATCHED_VARS, which the evaluation keeps in lists reused from the
    // thread's last request: a request with fewer matches must not see the earlier ones.
    let r = rs(r#"
SecRule ARGS "@rx a" "id:1,phase:2,pass,log,msg:'%{matched_var_name}',chain"
    SecRule MATCHED_VARS "@rx z" "setvar:tx.n=+1"
SecRule TX:n "@ge 2" "id:2,phase:2,deny,log,msg:'%{tx.n} with z'"
"#);
    let many = get("/?p1=az&p2=az&p3=az&p4=az");
    let few = get("/?p1=a&p2=ab");
    let fresh = |req: &HttpRequest| {
        std::thread::scope(|s| s.spawn(|| r.evaluate(req)).join().expect("evaluates"))
    };
    let (want_many, want_few) = (fresh(&many), fresh(&few));
    assert_eq!(want_many.action, Action::Block);
    assert_eq!(want_few.action, Action::Allow);
    assert!(want_few.matches.is_empty(), "{:?}", want_few.matches);
    for _ in 0..3 {
        assert_eq!(r.evaluate(&many), want_many);
        assert_eq!(r.evaluate(&few), want_few);
    }
}

#[test]
fn a_recycled_cache_decides_as_a_new_one() {
    // Two rule sets of different shapes (transformation nodes, prefilter filters) take turns
    // on one thread, so each evaluation starts from the other's emptied cache; a thread of its
    // own (no spare cache) gives the reference verdicts.
    let a = rs(r#"
SecRule ARGS "@rx (?i)<script" "id:1,phase:2,deny,t:urlDecodeUni,t:lowercase"
SecRule REQUEST_HEADERS|!REQUEST_HEADERS:Host "@contains evil" "id:2,phase:1,deny,t:lowercase"
"#);
    let b = rs(r#"
SecRule ARGS_NAMES "@rx ^admin" "id:3,phase:2,deny,t:none,t:removeWhitespace,t:compressWhitespace,t:lowercase"
SecRule REQUEST_URI "@rx \.\./" "id:4,phase:1,deny,t:normalizePath"
"#);
    let reqs = [
        get("/?q=%3CScRiPt%3E"),
        get("/?q=hello&admin=1"),
        get("/a/b/../../etc?x=1"),
        get("/?Admin%20x=2"),
        get("/plain"),
    ];
    let verdicts = |rs: &RuleSet| -> Vec<(Action, Vec<u32>)> {
        reqs.iter()
            .map(|r| {
                let v = rs.evaluate(r);
                (v.action, v.matches.iter().map(|m| m.id).collect())
            })
            .collect()
    };
    let fresh = |rs: &RuleSet| {
        std::thread::scope(|s| {
            reqs.iter()
                .map(|r| {
                    s.spawn(|| {
                        let v = rs.evaluate(r);
                        (v.action, v.matches.iter().map(|m| m.id).collect::<Vec<_>>())
                    })
                    .join()
                    .expect("evaluates")
                })
                .collect::<Vec<_>>()
        })
    };
    let (want_a, want_b) = (fresh(&a), fresh(&b));
    assert!(want_a.iter().any(|(act, _)| *act == Action::Block));
    assert!(want_b.iter().any(|(act, _)| *act == Action::Block));
    for _ in 0..3 {
        assert_eq!(verdicts(&a), want_a);
        assert_eq!(verdicts(&b), want_b);
    }
}

#[test]
fn values_too_short_for_a_literal_are_skipped_only_when_they_cannot_hold_one() {
    // CRS's 934100 shape: multiMatch through base64Decode. Its filters skip values whose
    // decoded length is under the shortest literal (`eval(`, 5 bytes): `ZXZhbCg` decodes to
    // exactly `eval(` and must still match, in a value and in a name; `ZXZhbC` (4 bytes) and
    // dotted JSON names cannot hold it.
    let r = rs(
        r#"SecRule ARGS|ARGS_NAMES "@rx eval\(" "id:1,phase:2,deny,t:none,t:urlDecodeUni,t:base64Decode,t:urlDecodeUni,multiMatch""#,
    );
    let pf = r.prefilter.as_ref().expect("a prefilter");
    let Some(Item::Rule(rule)) = r.phases[1].first() else {
        panic!("one phase-2 rule")
    };
    let decoded = rule.pf_steps[0].0 as usize;
    assert_eq!(pf.filters[decoded].min_len, 5);
    assert!(matches!(
        r.nodes[pf.filters[decoded].node as usize].bound,
        LenBound::Base64(_)
    ));
    // `eval(` is five bytes: `ZXZhbCg` decodes to exactly that.
    assert_eq!(r.evaluate(&get("/?a=ZXZhbCg")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?ZXZhbCg=1")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?a=ZXZhbC")).action, Action::Allow);
    // Percent-encoded base64 decodes first, then base64: still found.
    assert_eq!(r.evaluate(&get("/?a=ZXZhbCg%3D")).action, Action::Block);
    // Raw `eval(` is caught at the first node of the chain, whatever its decoded length.
    assert_eq!(r.evaluate(&get("/?a=eval(")).action, Action::Block);
    let json = |body: &str| r.evaluate(&post_json("/api/cart", body)).action;
    assert_eq!(
        json(r#"{"items":[{"sku":"a.b","note":"ZXZhbCg="}]}"#),
        Action::Block
    );
    assert_eq!(
        json(r#"{"items":[{"sku":"a.b","note":"fine"}]}"#),
        Action::Allow
    );
}

#[test]
fn a_value_as_long_as_the_rules_shortest_literal_still_runs() {
    // A rule drops values shorter than its shortest literal before their chain runs; one
    // exactly as long, or one that decodes to it, must still match. Two arguments so that
    // the rule runs at all (the union holds the literal) and each value is looked at.
    let r = rs(r#"SecRule ARGS "@rx select" "id:1,phase:2,deny,t:none,t:urlDecodeUni""#);
    let Some(Item::Rule(rule)) = r.phases[1].first() else {
        panic!("one phase-2 rule")
    };
    assert_eq!(rule.pf_min_len, 6);
    let v = r.evaluate(&get("/?a=sel&b=select"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "ARGS:b");
    let v = r.evaluate(&get("/?a=%73elect&b=x"));
    assert_eq!(v.matches[0].variable, "ARGS:a");
    assert_eq!(r.evaluate(&get("/?a=selec&b=elect")).action, Action::Allow);
}

#[test]
fn a_json_key_given_twice_is_inspected_both_times() {
    // A backend that keeps the first of two equal keys must not get a value the rules skipped.
    let r = rs(r#"SecRule ARGS "@contains union select" "id:1,phase:2,deny""#);
    let post = |body: &str| post_json("/api/search", body);
    let v = r.evaluate(&post(r#"{"q":"1 union select pw","q":"shoes"}"#));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "ARGS:json.q");
    assert_eq!(
        r.evaluate(&post(r#"{"q":"shoes","q":"boots"}"#)).action,
        Action::Allow
    );
}

#[test]
fn misses_remembered_across_requests_never_hide_a_match() {
    let detect = rs(r#"SecRule ARGS "@detectSQLi" "id:1,phase:2,deny"
SecRule ARGS "@rx (?i)evil[a-z]{8}" "id:2,phase:2,deny""#);
    let benign = "/?q=a%20perfectly%20ordinary%20search%20for%20winter%20boots";
    for _ in 0..3 {
        assert_eq!(detect.evaluate(&get(benign)).action, Action::Allow);
    }
    // The same parameter with a value the rules catch, in between the benign ones.
    let v = detect.evaluate(&get("/?q=1%27%20or%20%271%27%3D%271"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].id, 1);
    let v = detect.evaluate(&get("/?q=a%20perfectly%20ordinary%20EVILsearchxx"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].id, 2);
    assert_eq!(detect.evaluate(&get(benign)).action, Action::Allow);
    // Another rule set is told nothing by this one's misses, even for the same bytes.
    let other = rs(r#"SecRule ARGS "@rx ordinary search" "id:3,phase:2,deny""#);
    assert_eq!(other.evaluate(&get(benign)).action, Action::Block);
    // Off and on again: the same verdicts.
    let mut again = rs(r#"SecRule ARGS "@rx (?i)evil[a-z]{8}" "id:2,phase:2,deny""#);
    again.set_memo(false);
    assert_eq!(again.evaluate(&get(benign)).action, Action::Allow);
    again.set_memo(true);
    assert_eq!(again.evaluate(&get(benign)).action, Action::Allow);
    assert_eq!(
        again
            .evaluate(&get("/?q=a%20perfectly%20ordinary%20EVILsearchxx"))
            .action,
        Action::Block
    );
}

#[test]
fn equal_values_share_their_results_and_each_is_still_read() {
    // Values with equal contents share one row of results through the chains (and count once
    // in a filter's union): each value must still be matched, excluded and named on its own.
    let r = rs(
        r#"SecRule ARGS|!ARGS:b "@rx evil!" "id:1,phase:2,deny,t:none,t:lowercase,t:urlDecodeUni""#,
    );
    let v = r.evaluate(&get("/?a=fine&b=EVIL%21&c=fine&d=EVIL%21"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "ARGS:d");
    assert_eq!(
        r.evaluate(&get("/?a=fine&b=EVIL%21&c=fine")).action,
        Action::Allow
    );
    // A name equal to a value, and a scalar equal to an argument.
    let r = rs(
        r#"SecRule ARGS_NAMES "@rx evil" "id:2,phase:2,deny,t:lowercase"
SecRule REQUEST_FILENAME "@rx ^/bad$" "id:3,phase:2,deny,t:lowercase""#,
    );
    assert_eq!(r.evaluate(&get("/?a=EVIL")).action, Action::Allow);
    let v = r.evaluate(&get("/?a=EVIL&EVIL=a"));
    assert_eq!(v.matches[0].variable, "ARGS_NAMES:EVIL");
    assert_eq!(r.evaluate(&get("/fine?a=/BAD")).action, Action::Allow);
    let v = r.evaluate(&get("/BAD?a=/BAD"));
    assert_eq!(v.matches[0].id, 3);
}

#[test]
fn values_skipped_by_their_byte_classes_are_only_those_that_cannot_match() {
    // CRS 920270's shape: a NUL after decoding is caught wherever it sits among clean values;
    // the negated form still runs on every value.
    let r = rs(
        r#"SecRule ARGS|ARGS_NAMES "@validateByteRange 1-255" "id:1,phase:2,deny,t:none,t:urlDecodeUni""#,
    );
    assert_eq!(r.evaluate(&get("/?a=1&b=two&c=3")).action, Action::Allow);
    let v = r.evaluate(&get("/?a=1&b=t%00wo&c=3"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "ARGS:b");
    let v = r.evaluate(&get("/?a=1&b%00=two"));
    assert_eq!(v.matches[0].variable, "ARGS_NAMES:b\0");
    let r = rs(r#"SecRule ARGS "!@validateByteRange 97-122" "id:2,phase:2,deny""#);
    assert_eq!(r.evaluate(&get("/?a=1&b=two")).action, Action::Block);
    assert_eq!(r.evaluate(&get("/?a=A&b=B")).action, Action::Allow);
    // libinjection's detectors skip barewords, and XSS values without `<` or `=`.
    let r = rs(r#"SecRule ARGS "@detectSQLi" "id:4,phase:2,deny"
SecRule ARGS "@detectXSS" "id:5,phase:2,deny""#);
    assert_eq!(
        r.evaluate(&get("/?a=shoes&b=12&c=json.x")).action,
        Action::Allow
    );
    let v = r.evaluate(&get("/?a=shoes&b=1%27%20or%20%271%27%3D%271&c=2"));
    assert_eq!(
        (v.matches[0].id, v.matches[0].variable.as_str()),
        (4, "ARGS:b")
    );
    let v = r.evaluate(&get("/?a=shoes&b=%3Cscript%3Ealert(1)%3C/script%3E"));
    assert_eq!(
        (v.matches[0].id, v.matches[0].variable.as_str()),
        (5, "ARGS:b")
    );
    let r = rs(r#"SecRule ARGS "@validateUtf8Encoding" "id:3,phase:2,deny""#);
    assert_eq!(
        r.evaluate(&get("/?a=plain&b=caf%C3%A9")).action,
        Action::Allow
    );
    assert_eq!(r.evaluate(&get("/?a=plain&b=caf%E9")).action, Action::Block);
}

#[test]
fn a_rule_with_two_literal_sets_runs_only_where_a_value_holds_both() {
    // 941120's shape: `on` and `=` in one value. The request holding both in different values
    // passes the union and must still not match; one value with both does.
    let r = rs(
        r#"SecRule ARGS "@rx (?i)[\s;/]on[a-z]{3,25}[\s;]*?=[^=]" "id:1,phase:2,deny,t:none,t:urlDecodeUni""#,
    );
    let Some(Item::Rule(rule)) = r.phases[1].first() else {
        panic!("one phase-2 rule")
    };
    assert!(rule.pf_also.is_some());
    assert_eq!(
        r.evaluate(&get("/?a=%20onload&b=x%3Dy")).action,
        Action::Allow
    );
    assert_eq!(r.evaluate(&get("/?a=lyon")).action, Action::Allow);
    let v = r.evaluate(&get("/?a=lyon&b=%20onload%3Dalert(1)"));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "ARGS:b");
}

/// A GET of `/` with `headers` (and `Host`).
fn get_with(headers: &[(&str, &str)]) -> HttpRequest {
    let mut r = get("/");
    r.headers
        .extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    r
}

#[test]
fn entries_remembered_clean_never_hide_a_match() {
    let r = rs(
        r#"SecRule REQUEST_HEADERS|REQUEST_COOKIES "@rx (?i)evil" "id:1,phase:1,deny,t:none,t:urlDecodeUni"
SecRule REQUEST_COOKIES "@detectSQLi" "id:2,phase:1,deny""#,
    );
    let plan = r.clean_plan().expect("a plan for rules of pure operators");
    assert_eq!(plan.readers(), 2, "both rules read with pure operators");
    let benign = [
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0",
        ),
        ("Cookie", "session=a1b2c3d4e5; consent=yes"),
    ];
    // Seen once, checked the second time, remembered from the third.
    for _ in 0..4 {
        let v = r.evaluate(&get_with(&benign));
        assert_eq!(v.action, Action::Allow);
        assert_eq!(
            v,
            r.evaluate_every_rule(&get_with(&benign), &r.config),
            "the same verdict as with nothing remembered"
        );
    }
    // The same names with other values, and the remembered values beside new ones.
    let v = r.evaluate(&get_with(&[("User-Agent", "EVIL/1.0")]));
    assert_eq!((v.action, v.matches[0].id), (Action::Block, 1));
    let mut both = benign.to_vec();
    both.push(("X-Extra", "%45vil"));
    let v = r.evaluate(&get_with(&both));
    assert_eq!(v.matches[0].variable, "REQUEST_HEADERS:X-Extra");
    let v = r.evaluate(&get_with(&[("Cookie", "session=1' or '1'='1")]));
    assert_eq!((v.action, v.matches[0].id), (Action::Block, 2));
    // A value remembered under one name is not clean under another a rule reads apart.
    let named = rs(r#"SecRule REQUEST_HEADERS:Referer "@rx evil" "id:3,phase:1,deny""#);
    for _ in 0..3 {
        assert_eq!(
            named.evaluate(&get_with(&[("X-Note", "evil")])).action,
            Action::Allow
        );
    }
    assert_eq!(
        named.evaluate(&get_with(&[("Referer", "evil")])).action,
        Action::Block
    );
}

#[test]
fn a_link_that_matches_a_remembered_entry_still_reads_it() {
    // CRS 943110's shape: a rule whose first link matches every Referer that is a URL. The
    // entry is remembered with that link as one that matches it: the link goes on matching
    // (and logging) on every request, while the other rules leave the value out.
    let r = rs(
        r#"SecRule REQUEST_HEADERS:Referer "@rx ^https?://" "id:10,phase:1,pass,log,msg:'referer'"
SecRule REQUEST_HEADERS "@rx evil" "id:11,phase:1,deny""#,
    );
    let req = get_with(&[("Referer", "https://shop.example/cart")]);
    for i in 0..5 {
        let v = r.evaluate(&req);
        assert_eq!(v.action, Action::Allow, "request {i}");
        assert_eq!(v.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [10]);
    }
    let v = r.evaluate(&get_with(&[("Referer", "https://evil.example/")]));
    assert_eq!(v.action, Action::Block);
}

#[test]
fn removing_a_paranoia_gate_lets_the_rules_behind_it_read_remembered_entries() {
    // A fixed gate (it reads only TX nothing writes) jumps over rule 902: 902 is no reader,
    // so `X-Data: evil` is remembered as clean. A request that removes the gate by `ctl` must
    // then run 902 on every value, remembered ones included (its union among them).
    let r = rs(r#"SecAction "id:900,phase:1,pass,nolog,setvar:tx.pl=1"
SecRule REQUEST_HEADERS:X-Remove "@streq yes" "id:5,phase:1,pass,nolog,ctl:ruleRemoveById=901"
SecRule TX:pl "@lt 2" "id:901,phase:1,pass,nolog,skipAfter:END"
SecRule REQUEST_HEADERS "@rx evil" "id:902,phase:1,deny,t:none,t:lowercase"
SecMarker END"#);
    assert_eq!(r.fixed_rules(), 1, "the gate is fixed");
    let req = get_with(&[("X-Data", "EVIL")]);
    for _ in 0..4 {
        assert_eq!(r.evaluate(&req).action, Action::Allow);
    }
    let v = r.evaluate(&get_with(&[("X-Data", "EVIL"), ("X-Remove", "yes")]));
    assert_eq!((v.action, v.matches[0].id), (Action::Block, 902));
    assert_eq!(v.matches[0].variable, "REQUEST_HEADERS:X-Data");
}

#[test]
fn rules_whose_operator_reads_state_keep_every_entry() {
    // `@within %{tx.allowed}` depends on TX, which a rule may change per request: such a link
    // is no reader and reads remembered entries too.
    let r = rs(
        r#"SecAction "id:1,phase:1,pass,nolog,setvar:tx.allowed=a b c"
SecRule REQUEST_HEADERS:X-Mode "@streq wide" "id:2,phase:1,pass,nolog,setvar:tx.allowed=a b c zz"
SecRule REQUEST_HEADERS:X-Tag "!@within %{tx.allowed}" "id:3,phase:1,deny""#,
    );
    let req = get_with(&[("X-Tag", "zz"), ("X-Mode", "wide")]);
    for _ in 0..4 {
        assert_eq!(r.evaluate(&req).action, Action::Allow);
    }
    let v = r.evaluate(&get_with(&[("X-Tag", "zz")]));
    assert_eq!((v.action, v.matches[0].id), (Action::Block, 3));
}

#[test]
fn a_remembered_body_argument_still_counts_for_the_rules_that_match_it() {
    // The body's arguments come after the query's in one list: a body value that one rule
    // matches is remembered with it, and that rule's union (shared with the other rule of
    // the same chain) still holds its literal on every request.
    let r = rs(
        r#"SecRule ARGS_POST "@rx select" "id:20,phase:2,pass,log,msg:'s'"
SecRule ARGS "@rx union" "id:21,phase:2,deny""#,
    );
    let req = post_json("/search?page=2&sort=price", r#"{"q":"select shoes"}"#);
    for i in 0..5 {
        let v = r.evaluate(&req);
        assert_eq!(v.action, Action::Allow, "request {i}");
        assert_eq!(v.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [20]);
        assert_eq!(v.matches[0].variable, "ARGS_POST:json.q");
    }
    let v = r.evaluate(&post_json(
        "/search?page=2&sort=price",
        r#"{"q":"select shoes","n":"union"}"#,
    ));
    assert_eq!(v.action, Action::Block);
}

#[test]
fn run_time_tx_names_read_by_a_key_regex_are_named_and_matched() {
    // CRS 920450's shape: a name made per header, read back by a chained key regex.
    let r = rs(
        r#"SecAction "id:1,phase:1,pass,nolog,setvar:'tx.restricted=/proxy/ /lock-token/'"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:2,phase:1,deny,capture,t:none,t:lowercase,setvar:'tx.hn_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^hn_/ "@within %{tx.restricted}" "setvar:'tx.hits=+1'""#,
    );
    let v = r.evaluate(&get_with(&[("Accept", "*/*"), ("User-Agent", "x")]));
    assert_eq!(v.action, Action::Allow);
    let v = r.evaluate(&get_with(&[
        ("Accept", "*/*"),
        ("Proxy", "evil"),
        ("Zeta", "1"),
    ]));
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.matches[0].variable, "TX:hn_proxy");
    assert_eq!(v.matches[0].value_excerpt, "/proxy/");
}

mod key_regex {
    use super::super::KeyRegex;
    use proptest::prelude::*;

    fn built(pattern: &str) -> KeyRegex {
        KeyRegex::new(pattern).expect("compiles")
    }

    fn literal(k: &KeyRegex) -> bool {
        !matches!(k, KeyRegex::Regex(_))
    }

    #[test]
    fn literal_key_regexes_take_the_literal_path_and_others_do_not() {
        assert!(literal(&built("^header_name_920450_")));
        assert!(literal(&built("__utm")));
        assert!(!literal(&built("^a.b")));
        assert!(!literal(&built("^ab$")));
        assert!(!literal(&built("a|b")));
        assert!(!literal(&built("^")));
        assert!(KeyRegex::new("a(").is_err());
        let r = built("^header_name_920450_");
        assert!(r.is_match(b"header_name_920450_host"));
        assert!(r.is_match(b"HEADER_name_920450_"));
        assert!(!r.is_match(b"x_header_name_920450_host"));
        assert!(!r.is_match(b"header_name_920450"));
        let c = built("__utm");
        assert!(c.is_match(b"__UTMz"));
        assert!(c.is_match(b"x__utm"));
        assert!(!c.is_match(b"_utm"));
        let x = built("^x-.*-id$");
        assert!(x.is_match(b"X-Request-ID"));
        assert!(!x.is_match(b"x-request-idz"));
        // A tail that can match nothing leaves the literal (CRS 922110, 921180, 931130).
        let m = built("MULTIPART_HEADERS_CONTENT_TYPES_*");
        assert!(literal(&m));
        assert!(m.is_match(b"multipart_headers_content_types_0"));
        assert!(m.is_match(b"x_multipart_headers_content_types"));
        assert!(!m.is_match(b"multipart_headers_content_type"));
        assert!(!m.is_match(b"header_name_920450_host"));
        assert!(literal(&built("paramcounter_.*")));
        assert!(literal(&built("^rfi_parameter_.*")));
        assert!(literal(&built("ab.*c*")));
        // But not when something else is left, or nothing is.
        assert!(!literal(&built("a|b*")));
        assert!(!literal(&built("a\\d*")));
        assert!(!literal(&built("a\\.*")));
        assert!(!literal(&built("(ab)*")));
        assert!(!literal(&built("^.*")));
        assert!(!literal(&built("a.*$")));
        assert!(built("a|b*").is_match(b"zzz"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// A literal key regex answers as the regex it stands for.
        #[test]
        fn the_literal_path_answers_as_the_regex(
            anchored in any::<bool>(),
            body in "[a-zA-Z0-9_-]{1,6}",
            tail in "(\\.\\*|[a-cA-C_-]\\*){0,2}",
            keys in proptest::collection::vec("[a-cA-C_\\-.\\x{e9}\\n]{0,10}", 1..8),
            case_flips in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let pattern = format!("{}{body}{tail}", if anchored { "^" } else { "" });
            let fast = built(&pattern);
            prop_assert!(literal(&fast));
            let re = KeyRegex::regex(&pattern).expect("compiles");
            // Keys that hold the literal (case changed, at the start or inside) and others.
            let flipped: String = body
                .chars()
                .zip(case_flips.iter().cycle())
                .map(|(c, &f)| if f { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            let mut all = keys.clone();
            for k in &keys {
                all.push(format!("{flipped}{k}"));
                all.push(format!("{k}{flipped}{k}"));
            }
            for k in &all {
                prop_assert_eq!(
                    fast.is_match(k.as_bytes()),
                    re.is_match(k.as_bytes()),
                    "/{}/ on {:?}", pattern, k
                );
            }
        }
    }
}

mod literal_keys {
    use super::super::{literal_key, literal_of_key, MAX_LITERAL};
    use proptest::prelude::*;

    #[test]
    fn a_literal_sorts_before_itself_with_a_nul_after() {
        assert!(literal_key(b"") < literal_key(b"\0"));
        assert!(literal_key(b"ab") < literal_key(b"ab\0"));
        assert!(literal_key(b"ab\0") < literal_key(b"ab\x01"));
        assert_eq!(literal_of_key(literal_key(b"ab\0")), b"ab\0");
    }

    proptest! {
        /// The prefilter merges literals by these keys: they must sort as the bytes do and
        /// give the bytes back.
        #[test]
        fn keys_sort_as_the_literals_and_give_them_back(
            a in proptest::collection::vec(any::<u8>(), 0..=MAX_LITERAL),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..=MAX_LITERAL),
        ) {
            prop_assert_eq!(literal_key(&a).cmp(&literal_key(&b)), a.cmp(&b));
            prop_assert_eq!(literal_of_key(literal_key(&a)), a);
        }
    }
}

/// CRS 920450's head and its chain run in a form of their own (`Rule::marker`,
/// `Marker::within`): their effects must be those of the general evaluation, which
/// `evaluate_every_rule` uses. The rules after it read what the
/// head leaves: the made TX names (by key regex and one by name), capture 0, MATCHED_VAR,
/// MATCHED_VAR_NAME and, in the chain, MATCHED_VARS.
#[test]
fn a_marking_head_leaves_what_the_general_evaluation_leaves() {
    let r = rs(r#"
SecAction "id:1,phase:1,pass,nolog,setvar:'tx.restricted=/proxy/ /x-bad/'"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:10,phase:1,block,capture,t:none,t:lowercase,msg:'restricted (%{MATCHED_VAR})',logdata:'%{MATCHED_VAR_NAME}=%{TX.0}',setvar:'tx.hn_10_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^hn_10_/ "@within %{tx.restricted}" "setvar:'tx.score=+5'"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:11,phase:1,pass,capture,t:none,t:lowercase,setvar:'tx.hn_11_%{tx.0}=/%{tx.0}/',chain"
    SecRule MATCHED_VARS "@rx ^x-" "t:none"
SecRule TX:hn_10_x-bad "@streq /x-bad/" "id:20,phase:1,pass,msg:'seen %{MATCHED_VAR}'"
SecRule TX:0 "@rx ." "id:21,phase:1,pass,msg:'capture %{TX.0}'"
SecRule TX:score "@ge 10" "id:30,phase:1,deny,msg:'score %{TX.score}'"
"#);
    let marked = r.phases[0]
        .iter()
        .filter(|it| matches!(it, Item::Rule(rule) if rule.marker.is_some()))
        .count();
    assert_eq!(marked, 2, "both heads compile to the marking form");
    let within = r.phases[0]
        .iter()
        .filter(
            |it| matches!(it, Item::Rule(rule) if rule.marker.as_ref().is_some_and(|m| m.within)),
        )
        .count();
    assert_eq!(
        within, 1,
        "rule 10's chain is the plain check (11's reads MATCHED_VARS)"
    );
    // Rule 20 spells out one of rule 10's made names, which so has a slot; rule 11's made
    // names have none and are set without looking for one.
    let slotless = r.phases[0]
        .iter()
        .filter(
            |it| matches!(it, Item::Rule(rule) if rule.marker.as_ref().is_some_and(|m| m.slotless)),
        )
        .count();
    assert_eq!(slotless, 1);
    let with = |headers: &[(&str, &str)]| HttpRequest {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..get("/")
    };
    let requests = [
        with(&[("Host", "x")]),
        with(&[("Host", "x"), ("Proxy", "a")]),
        with(&[("Proxy", "a"), ("X-Bad", "b"), ("Accept", "c")]),
        with(&[
            ("PROXY", "a"),
            ("proxy", "b"),
            ("X-Bad", "c"),
            ("X-Bad", "d"),
        ]),
        with(&[("X-Ok", "a"), ("", "empty name"), ("Ünï", "non-ASCII name")]),
        with(&[]),
    ];
    let mut blocked = 0;
    for _ in 0..2 {
        // (The second time the memo has seen the names.)
        for req in &requests {
            let v = r.evaluate(req);
            assert_eq!(
                v,
                r.evaluate_every_rule(req, r.config()),
                "{:?}",
                req.headers
            );
            blocked += usize::from(v.action == Action::Block);
        }
    }
    // Two restricted names (or one twice) reach the deny; the others do not.
    assert_eq!(blocked, 4);
    let v = r.evaluate(&requests[2]);
    let ids: Vec<u32> = v.matches.iter().map(|m| m.id).collect();
    assert_eq!(ids, [10, 11, 20, 21, 30], "{v:?}");
}
