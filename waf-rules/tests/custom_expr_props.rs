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
