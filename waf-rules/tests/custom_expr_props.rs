//! Property tests for the expression language: print → parse gives the same tree, and no input
//! (random text, random token soup) makes the parser, the checker or the evaluator panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use proptest::prelude::*;
use waf_rules::expr::{
    check, parse, CmpOp, ElemIndex, Expr, Field, Func, ListKind, ListValues, Lit, Literal, LogicOp,
    ProgramBuilder, RequestView, Span,
};
use waf_rules::HttpRequest;

fn sp() -> Span {
    Span::default()
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<String>().prop_map(Literal::Str),
        (0..i64::MAX).prop_map(Literal::Int),
        any::<Ipv4Addr>().prop_map(|a| Literal::Ip(IpAddr::V4(a))),
        any::<Ipv6Addr>().prop_map(|a| Literal::Ip(IpAddr::V6(a))),
        (any::<Ipv4Addr>(), 0u8..=32)
            .prop_map(|(a, p)| Literal::Cidr(IpNetwork::new(IpAddr::V4(a), p).unwrap())),
        (any::<Ipv6Addr>(), 0u8..=128)
            .prop_map(|(a, p)| Literal::Cidr(IpNetwork::new(IpAddr::V6(a), p).unwrap())),
    ]
}

fn lit() -> impl Strategy<Value = Lit> {
    literal().prop_map(|value| Lit { value, span: sp() })
}

/// Values: what can stand left of an operator (and take `[...]` after it).
fn value() -> impl Strategy<Value = Expr> {
    let leaf = proptest::sample::select(Field::ALL.to_vec()).prop_map(|f| Expr::Field(f, sp()));
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), any::<String>()).prop_map(|(b, key)| Expr::Index {
                base: Box::new(b),
                key,
                span: sp()
            }),
            (
                inner.clone(),
                prop_oneof![any::<u32>().prop_map(ElemIndex::At), Just(ElemIndex::Star)]
            )
                .prop_map(|(b, index)| Expr::Element {
                    base: Box::new(b),
                    index,
                    span: sp()
                }),
            (
                proptest::sample::select(vec![Func::Lower, Func::Upper, Func::Len]),
                inner
            )
                .prop_map(|(func, a)| Expr::Call {
                    func,
                    args: vec![a],
                    span: sp()
                }),
        ]
    })
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    proptest::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Contains,
        CmpOp::Matches,
        CmpOp::Wildcard,
    ])
}

fn condition() -> impl Strategy<Value = Expr> {
    let atom = prop_oneof![
        (value(), cmp_op(), lit()).prop_map(|(l, op, rhs)| Expr::Compare {
            lhs: Box::new(l),
            op,
            rhs,
            span: sp()
        }),
        (value(), proptest::collection::vec(lit(), 1..4)).prop_map(|(l, set)| Expr::InSet {
            lhs: Box::new(l),
            set,
            span: sp()
        }),
        (value(), "[a-z][a-z0-9_-]{0,8}").prop_map(|(l, list)| Expr::InList {
            lhs: Box::new(l),
            list,
            span: sp()
        }),
        (value(), any::<String>(), any::<bool>()).prop_map(|(v, s, starts)| Expr::Call {
            func: if starts {
                Func::StartsWith
            } else {
                Func::EndsWith
            },
            args: vec![v, Expr::Str(s, sp())],
            span: sp()
        }),
        any::<bool>().prop_map(|b| Expr::Bool(b, sp())),
    ];
    atom.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e), sp())),
            (
                proptest::sample::select(vec![LogicOp::And, LogicOp::Or, LogicOp::Xor]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, l, r)| Expr::Logic {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                    span: sp()
                }),
            (any::<bool>(), inner).prop_map(|(all, e)| Expr::Call {
                func: if all { Func::All } else { Func::Any },
                args: vec![e],
                span: sp()
            }),
        ]
    })
}

fn lists(name: &str) -> Option<ListKind> {
    match name.len() % 3 {
        0 => Some(ListKind::Ip),
        1 => Some(ListKind::Str),
        _ => None,
    }
}

/// Parse, check, compile and run: must never panic, whatever the text.
fn exercise(src: &str) {
    let Ok(e) = parse(src) else { return };
    let printed = e.to_string();
    let again = parse(&printed).expect("a parsed tree prints to parseable text");
    assert_eq!(again.to_string(), printed);
    if check(src, &e, &lists).is_err() {
        return;
    }
    let nets: Vec<IpNetwork> = vec!["10.0.0.0/8".parse().unwrap()];
    let strs: Vec<String> = vec!["a".into()];
    let values = |n: &str| match lists(n) {
        Some(ListKind::Ip) => Some(ListValues::Ip(&nets)),
        Some(ListKind::Str) => Some(ListValues::Str(&strs)),
        None => None,
    };
    let mut b = ProgramBuilder::new();
    b.add(src, &e, &values)
        .expect("a checked expression compiles");
    let program = b.build();
    let req = HttpRequest {
        method: "GET".into(),
        uri: "/a/b?x=1&y=%41".into(),
        headers: vec![
            ("Host".into(), "shop".into()),
            ("Cookie".into(), "a=b".into()),
        ],
        client_ip: Some("10.1.2.3".parse().unwrap()),
        ..Default::default()
    };
    let view = RequestView::new(&req);
    let mut ev = program.start(&view);
    let fast = ev.candidates().contains(&0) && ev.eval(0);
    assert_eq!(fast, program.eval_naive(0, &view), "{src}");
}

const TOKENS: &[&str] = &[
    "http.host",
    "ip.src",
    "http.request.headers",
    "http.request.uri.args",
    "[\"a\"]",
    "[0]",
    "[*]",
    "lower(",
    "len(",
    "any(",
    "starts_with(",
    ")",
    "(",
    ",",
    "eq",
    "ne",
    "contains",
    "matches",
    "wildcard",
    "in",
    "{",
    "}",
    "$a",
    "$bb",
    "and",
    "or",
    "xor",
    "not",
    "!",
    "&&",
    "||",
    "\"x\"",
    "r\"[a-z]+\"",
    "10.0.0.0/8",
    "::1",
    "42",
    "true",
    "<",
    ">=",
    "==",
    "~",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_is_identity(e in condition()) {
        let printed = e.to_string();
        let mut back = parse(&printed).map_err(|err| TestCaseError::fail(format!("{printed}\n{err}")))?;
        back.clear_spans();
        prop_assert_eq!(&back, &e, "{}", printed);
        prop_assert_eq!(back.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        exercise(&s);
    }

    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..24)) {
        exercise(&toks.join(" "));
    }

    #[test]
    fn generated_conditions_run_the_same_shared_and_naive(e in condition()) {
        exercise(&e.to_string());
    }
}

// --- well-typed expressions: the shared passes must agree with naive evaluation -----------------

const WORDS: &[&str] = &[
    "", "a", "/", "/a", "shop", "GET", "POST", "x=1", "A", "b&w", "Mozilla", "/admin",
];
const REGEXES: &[&str] = &["a", "^/a", "[0-9]+", "(?i)shop", "^$", "b.w"];
const WILDCARDS: &[&str] = &["*", "*a*", "/a*", "shop*", "*.example.com"];
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.0/8",
    "192.0.2.0/24",
    "2001:db8::/32",
    "::1",
    "0.0.0.0/0",
    "10.1.2.3",
];

fn word() -> impl Strategy<Value = String> {
    proptest::sample::select(WORDS).prop_map(str::to_string)
}

fn str_lit() -> impl Strategy<Value = Lit> {
    word().prop_map(|w| Lit {
        value: Literal::Str(w),
        span: sp(),
    })
}

fn ip_lit() -> impl Strategy<Value = Lit> {
    proptest::sample::select(IPS).prop_map(|s| {
        let value = match s.parse::<IpAddr>() {
            Ok(a) => Literal::Ip(a),
            Err(_) => Literal::Cidr(s.parse().unwrap()),
        };
        Lit { value, span: sp() }
    })
}

fn map_elem(star: bool) -> impl Strategy<Value = Expr> {
    (
        proptest::sample::select(vec![Field::UriArgs, Field::Cookies, Field::Headers]),
        proptest::sample::select(vec!["q", "x", "a", "user-agent", "session"]),
        0u32..2,
    )
        .prop_map(move |(f, key, n)| Expr::Element {
            base: Box::new(Expr::Index {
                base: Box::new(Expr::Field(f, sp())),
                key: key.to_string(),
                span: sp(),
            }),
            index: if star {
                ElemIndex::Star
            } else {
                ElemIndex::At(n)
            },
            span: sp(),
        })
}

fn str_value(star: bool) -> BoxedStrategy<Expr> {
    let scalar = proptest::sample::select(vec![
        Field::Method,
        Field::Uri,
        Field::UriPath,
        Field::UriQuery,
        Field::Host,
        Field::UserAgent,
        Field::Cookie,
        Field::IpSrcCountry,
    ])
    .prop_map(|f| Expr::Field(f, sp()));
    let base = if star {
        map_elem(true).boxed()
    } else {
        prop_oneof![scalar, map_elem(false)].boxed()
    };
    (base, 0u8..3)
        .prop_map(|(b, wrap)| match wrap {
            0 => b,
            1 => Expr::Call {
                func: Func::Lower,
                args: vec![b],
                span: sp(),
            },
            _ => Expr::Call {
                func: Func::Upper,
                args: vec![b],
                span: sp(),
            },
        })
        .boxed()
}

fn str_condition(star: bool) -> BoxedStrategy<Expr> {
    let v = move || str_value(star);
    prop_oneof![
        (
            v(),
            proptest::sample::select(vec![
                CmpOp::Eq,
                CmpOp::Ne,
                CmpOp::Lt,
                CmpOp::Ge,
                CmpOp::Contains
            ]),
            str_lit()
        )
            .prop_map(|(l, op, rhs)| Expr::Compare {
                lhs: Box::new(l),
                op,
                rhs,
                span: sp()
            }),
        (v(), proptest::sample::select(REGEXES)).prop_map(|(l, r)| Expr::Compare {
            lhs: Box::new(l),
            op: CmpOp::Matches,
            rhs: Lit {
                value: Literal::Str(r.to_string()),
                span: sp()
            },
            span: sp()
        }),
        (v(), proptest::sample::select(WILDCARDS)).prop_map(|(l, r)| Expr::Compare {
            lhs: Box::new(l),
            op: CmpOp::Wildcard,
            rhs: Lit {
                value: Literal::Str(r.to_string()),
                span: sp()
            },
            span: sp()
        }),
        (v(), proptest::collection::vec(str_lit(), 1..4)).prop_map(|(l, set)| Expr::InSet {
            lhs: Box::new(l),
            set,
            span: sp()
        }),
        v().prop_map(|l| Expr::InList {
            lhs: Box::new(l),
            list: "s".into(),
            span: sp()
        }),
        (v(), word(), any::<bool>()).prop_map(|(l, w, starts)| Expr::Call {
            func: if starts {
                Func::StartsWith
            } else {
                Func::EndsWith
            },
            args: vec![l, Expr::Str(w, sp())],
            span: sp()
        }),
        (
            v(),
            proptest::sample::select(vec![CmpOp::Eq, CmpOp::Lt, CmpOp::Gt]),
            0i64..12
        )
            .prop_map(|(l, op, n)| Expr::Compare {
                lhs: Box::new(Expr::Call {
                    func: Func::Len,
                    args: vec![l],
                    span: sp()
                }),
                op,
                rhs: Lit {
                    value: Literal::Int(n),
                    span: sp()
                },
                span: sp()
            }),
    ]
    .boxed()
}

fn typed_condition() -> impl Strategy<Value = Expr> {
    let ip = prop_oneof![
        (proptest::collection::vec(ip_lit(), 1..3)).prop_map(|set| Expr::InSet {
            lhs: Box::new(Expr::Field(Field::IpSrc, sp())),
            set,
            span: sp()
        }),
        Just(Expr::InList {
            lhs: Box::new(Expr::Field(Field::IpSrc, sp())),
            list: "i".into(),
            span: sp()
        }),
        (
            proptest::sample::select(vec!["10.0.0.1", "::1", "10.1.2.3"]),
            any::<bool>()
        )
            .prop_map(|(a, ne)| {
                Expr::Compare {
                    lhs: Box::new(Expr::Field(Field::IpSrc, sp())),
                    op: if ne { CmpOp::Ne } else { CmpOp::Eq },
                    rhs: Lit {
                        value: Literal::Ip(a.parse().unwrap()),
                        span: sp(),
                    },
                    span: sp(),
                }
            }),
    ];
    let any_call = (str_condition(true), any::<bool>()).prop_map(|(c, all)| Expr::Call {
        func: if all { Func::All } else { Func::Any },
        args: vec![c],
        span: sp(),
    });
    let atom = prop_oneof![3 => str_condition(false), 1 => ip, 1 => any_call];
    atom.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e), sp())),
            (
                proptest::sample::select(vec![LogicOp::And, LogicOp::Or, LogicOp::Xor]),
                inner.clone(),
                inner
            )
                .prop_map(|(op, l, r)| Expr::Logic {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                    span: sp()
                }),
        ]
    })
}

fn typed_requests() -> Vec<HttpRequest> {
    let mk = |m: &str, uri: &str, ip: Option<&str>, h: &[(&str, &str)]| HttpRequest {
        method: m.into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: h
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        body: Vec::new(),
        client_ip: ip.map(|i| i.parse().unwrap()),
        country: None,
    };
    vec![
        mk(
            "GET",
            "/a?q=a&x=1",
            Some("10.0.0.1"),
            &[("Host", "shop.example.com"), ("User-Agent", "Mozilla")],
        ),
        mk(
            "POST",
            "/admin",
            Some("2001:db8::5"),
            &[("Cookie", "session=a; q=b&w"), ("X", "A")],
        ),
        mk("GET", "/", None, &[]),
        mk(
            "PUT",
            "/%61/b.w?q=&q=shop",
            Some("192.0.2.9"),
            &[("x", "a"), ("x", "shop"), ("Host", "SHOP")],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn typed_conditions_check_and_agree(exprs in proptest::collection::vec(typed_condition(), 1..6)) {
        let nets: Vec<IpNetwork> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let strs: Vec<String> = vec!["a".into(), "GET".into(), "/admin".into()];
        let kinds = |n: &str| match n { "i" => Some(ListKind::Ip), "s" => Some(ListKind::Str), _ => None };
        let values = |n: &str| match n {
            "i" => Some(ListValues::Ip(&nets)),
            "s" => Some(ListValues::Str(&strs)),
            _ => None,
        };
        let mut b = ProgramBuilder::new();
        let srcs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
        for src in &srcs {
            let e = parse(src).map_err(|err| TestCaseError::fail(format!("{src}: {err}")))?;
            check(src, &e, &kinds).map_err(|err| TestCaseError::fail(format!("{src}: {err}")))?;
            b.add(src, &e, &values).map_err(|err| TestCaseError::fail(format!("{src}: {err}")))?;
        }
        let program = b.build();
        for req in typed_requests() {
            let view = RequestView::new(&req);
            let mut ev = program.start(&view);
            let cands = ev.candidates().to_vec();
            for (i, src) in srcs.iter().enumerate() {
                let fast = cands.contains(&(i as u32)) && ev.eval(i);
                prop_assert_eq!(fast, program.eval_naive(i, &view), "{} on {:?}", src, req.uri);
            }
        }
    }
}
