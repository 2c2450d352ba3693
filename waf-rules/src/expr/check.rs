//! Type checking against the scheme: every field, function, operator and literal must fit, and
//! every error points at the offending text.

use super::ast::{CmpOp, ElemIndex, Expr, Func, Lit, Literal, Type};
use super::error::{ParseError, Span};

/// What a named list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// IP addresses and CIDR ranges, for `ip.src in $name`.
    Ip,
    /// Strings, for `http.host in $name` and the like.
    Str,
}

/// Largest compiled size of one regex (bytes): bounds memory and build time.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Builds a regex the way the engine runs it: linear time, with size limits.
pub fn build_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(2 * REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
}

/// The regex a `wildcard` pattern stands for: `*` is any run, `\*` and `\\` escape, case-insensitive.
pub fn wildcard_to_regex(pattern: &str) -> String {
    let mut out = String::from("(?is)^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '\\' => match chars.next() {
                Some(n) => out.push_str(&regex::escape(&n.to_string())),
                None => out.push_str(&regex::escape("\\")),
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

/// Checks that `expr` (read from `src`) is a well-typed boolean expression. `lists` says what each
/// `$name` holds, or `None` for an unknown list.
pub fn check(
    src: &str,
    expr: &Expr,
    lists: &dyn Fn(&str) -> Option<ListKind>,
) -> Result<(), ParseError> {
    let mut c = Checker {
        src,
        lists,
        in_any: false,
        stars: 0,
    };
    let ty = c.ty(expr)?;
    if ty != Type::Bool {
        return Err(c.err(expr.span(), not_bool_message(expr, ty)));
    }
    Ok(())
}

fn not_bool_message(expr: &Expr, ty: Type) -> String {
    format!(
        "expected a condition; `{expr}` is {ty}: compare it with an operator such as `eq`, `contains` or `in`"
    )
}

struct Checker<'a> {
    src: &'a str,
    lists: &'a dyn Fn(&str) -> Option<ListKind>,
    in_any: bool,
    stars: usize,
}

impl Checker<'_> {
    fn err(&self, span: Span, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.src, span, msg)
    }

    fn want_bool(&mut self, e: &Expr) -> Result<(), ParseError> {
        let t = self.ty(e)?;
        if t != Type::Bool {
            return Err(self.err(e.span(), not_bool_message(e, t)));
        }
        Ok(())
    }

    /// A value that can be compared: a string, an integer or an address.
    fn scalar(&mut self, e: &Expr) -> Result<Type, ParseError> {
        let t = self.ty(e)?;
        match t {
            Type::Bytes | Type::Int | Type::Ip => Ok(t),
            Type::Array => Err(self.err(
                e.span(),
                format!("expected a single value; `{e}` is an array: write `{e}[0]` for the first value or `any({e}[*] ...)` for any of them"),
            )),
            Type::Map => Err(self.err(
                e.span(),
                format!("expected a single value; `{e}` is a map: pick a name, e.g. `{e}[\"name\"][0]`"),
            )),
            Type::Bool => Err(self.err(
                e.span(),
                "expected a value to compare, found a condition (conditions combine with `and`, `or`, `not`)",
            )),
        }
    }

    fn ty(&mut self, e: &Expr) -> Result<Type, ParseError> {
        match e {
            Expr::Field(f, _) => Ok(f.ty()),
            Expr::Bool(..) => Ok(Type::Bool),
            Expr::Str(_, s) => Err(self.err(
                *s,
                "expected a field or a condition; a string literal goes on the right of an operator",
            )),
            Expr::Index { base, .. } => {
                let t = self.ty(base)?;
                if t != Type::Map {
                    return Err(self.err(
                        e.span(),
                        format!("expected a map before `[\"...\"]`; `{base}` is {t}"),
                    ));
                }
                Ok(Type::Array)
            }
            Expr::Element { base, index, span } => {
                let t = self.ty(base)?;
                if t != Type::Array {
                    return Err(self.err(
                        *span,
                        format!("expected an array before `[{}]`; `{base}` is {t}", match index {
                            ElemIndex::At(n) => n.to_string(),
                            ElemIndex::Star => "*".into(),
                        }),
                    ));
                }
                if *index == ElemIndex::Star {
                    if !self.in_any {
                        return Err(self.err(
                            *span,
                            "expected `[*]` only inside `any(...)` or `all(...)`",
                        ));
                    }
                    self.stars += 1;
                }
                Ok(Type::Bytes)
            }
            Expr::Call { func, args, span } => self.call(*func, args, *span),
            Expr::Compare { lhs, op, rhs, .. } => {
                let t = self.scalar(lhs)?;
                self.compare(t, *op, rhs)?;
                Ok(Type::Bool)
            }
            Expr::InSet { lhs, set, .. } => {
                let t = self.scalar(lhs)?;
                for lit in set {
                    let ok = matches!(
                        (t, &lit.value),
                        (Type::Bytes, Literal::Str(_))
                            | (Type::Int, Literal::Int(_))
                            | (Type::Ip, Literal::Ip(_) | Literal::Cidr(_))
                    );
                    if !ok {
                        return Err(self.err(
                            lit.span,
                            format!("expected {} in this set because `{lhs}` is {t}", lit_kind(t)),
                        ));
                    }
                }
                Ok(Type::Bool)
            }
            Expr::InList { lhs, list, span } => {
                let t = self.scalar(lhs)?;
                let Some(kind) = (self.lists)(list) else {
                    return Err(self.err(*span, format!("expected a list defined in the file; there is no list `${list}`")));
                };
                let ok = matches!((t, kind), (Type::Ip, ListKind::Ip) | (Type::Bytes, ListKind::Str));
                if !ok {
                    let k = match kind {
                        ListKind::Ip => "IP addresses",
                        ListKind::Str => "strings",
                    };
                    return Err(self.err(
                        *span,
                        format!("expected a list of {} because `{lhs}` is {t}; `${list}` holds {k}", lit_kind(t)),
                    ));
                }
                Ok(Type::Bool)
            }
            Expr::Not(inner, _) => {
                self.want_bool(inner)?;
                Ok(Type::Bool)
            }
            Expr::Logic { lhs, rhs, .. } => {
                self.want_bool(lhs)?;
                self.want_bool(rhs)?;
                Ok(Type::Bool)
            }
        }
    }

    fn compare(&mut self, t: Type, op: CmpOp, rhs: &Lit) -> Result<(), ParseError> {
        let fits = matches!(
            (t, op, &rhs.value),
            (Type::Bytes, _, Literal::Str(_))
                | (
                    Type::Int,
                    CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge,
                    Literal::Int(_),
                )
                | (Type::Ip, CmpOp::Eq | CmpOp::Ne, Literal::Ip(_))
        );
        if !fits {
            let msg = match (t, &rhs.value) {
                (Type::Ip, Literal::Cidr(_)) => format!("expected an address after `{}`; for a range write `ip.src in {{{}}}`", op.name(), rhs.value),
                (Type::Ip, _) => format!("expected `eq`, `ne` or `in` with an IP address; `{}` does not apply to addresses", op.name()),
                (Type::Int, Literal::Int(_)) => format!("expected `eq`, `ne`, `lt`, `le`, `gt` or `ge` for an integer; `{}` applies to strings", op.name()),
                _ => format!("expected {} after `{}`", lit_kind(t), op.name()),
            };
            return Err(self.err(rhs.span, msg));
        }
        if let Literal::Str(pattern) = &rhs.value {
            let compiled = match op {
                CmpOp::Matches => Some(build_regex(pattern)),
                CmpOp::Wildcard => Some(build_regex(&wildcard_to_regex(pattern))),
                _ => None,
            };
            if let Some(Err(e)) = compiled {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return Err(self.err(
                    rhs.span,
                    format!("expected a valid regex within the size limit: {first}"),
                ));
            }
        }
        Ok(())
    }

    fn call(&mut self, func: Func, args: &[Expr], span: Span) -> Result<Type, ParseError> {
        let arity = match func {
            Func::StartsWith | Func::EndsWith => 2,
            _ => 1,
        };
        if args.len() != arity {
            return Err(self.err(
                span,
                format!(
                    "expected {arity} argument{} for `{}`, found {}",
                    if arity == 1 { "" } else { "s" },
                    func.name(),
                    args.len()
                ),
            ));
        }
        match func {
            Func::Lower | Func::Upper => {
                let t = self.ty(&args[0])?;
                if t != Type::Bytes {
                    return Err(self.err(
                        args[0].span(),
                        format!(
                            "expected a string for `{}()`; `{}` is {t}",
                            func.name(),
                            args[0]
                        ),
                    ));
                }
                Ok(Type::Bytes)
            }
            Func::Len => {
                let t = self.ty(&args[0])?;
                if t != Type::Bytes && t != Type::Array {
                    return Err(self.err(
                        args[0].span(),
                        format!(
                            "expected a string or an array for `len()`; `{}` is {t}",
                            args[0]
                        ),
                    ));
                }
                Ok(Type::Int)
            }
            Func::StartsWith | Func::EndsWith => {
                let t = self.ty(&args[0])?;
                if t != Type::Bytes {
                    return Err(self.err(
                        args[0].span(),
                        format!(
                            "expected a string for `{}()`; `{}` is {t}",
                            func.name(),
                            args[0]
                        ),
                    ));
                }
                if !matches!(args[1], Expr::Str(..)) {
                    return Err(self.err(
                        args[1].span(),
                        format!(
                            "expected a string literal as the second argument of `{}()`",
                            func.name()
                        ),
                    ));
                }
                Ok(Type::Bool)
            }
            Func::Any | Func::All => {
                if self.in_any {
                    return Err(self.err(
                        span,
                        format!(
                            "expected no `{}()` inside another `any()`/`all()`",
                            func.name()
                        ),
                    ));
                }
                self.in_any = true;
                self.stars = 0;
                let r = self.want_bool(&args[0]);
                self.in_any = false;
                r?;
                if self.stars == 0 {
                    return Err(self.err(span, format!("expected an array element `[*]` inside `{}(...)`, e.g. `{}(http.request.headers[\"x\"][*] eq \"y\")`", func.name(), func.name())));
                }
                Ok(Type::Bool)
            }
        }
    }
}

fn lit_kind(t: Type) -> &'static str {
    match t {
        Type::Bytes => "a string",
        Type::Int => "an integer",
        Type::Ip => "an IP address or CIDR range",
        _ => "a literal",
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn lists(name: &str) -> Option<ListKind> {
        match name {
            "office" => Some(ListKind::Ip),
            "bots" => Some(ListKind::Str),
            _ => None,
        }
    }

    fn ok(src: &str) {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        check(src, &e, &lists).unwrap_or_else(|e| panic!("{src}: {e}"));
    }

    fn bad(src: &str, needle: &str) -> ParseError {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let err = check(src, &e, &lists).expect_err(src);
        assert!(err.to_string().contains(needle), "{src}: {err}");
        err
    }

    #[test]
    fn accepts_well_typed() {
        ok(r#"http.request.method eq "POST" and http.request.uri.path eq "/login""#);
        ok(r#"not ip.src in $office and starts_with(http.request.uri.path, "/admin")"#);
        ok(r#"lower(http.user_agent) in $bots or http.user_agent matches "(?i)nikto|sqlmap""#);
        ok(r#"any(lower(http.request.headers["x-forwarded-for"][*]) contains "127.")"#);
        ok(r#"len(http.request.uri.args["card"]) gt 3 and len(http.request.uri.query) < 100"#);
        ok(r#"ip.src in {10.0.0.0/8 2001:db8::/32 192.0.2.1} or ip.src eq 198.51.100.1"#);
        ok(r#"http.host wildcard "*.example.com" xor ip.src.country in {"KP" "IR"}"#);
        ok("true");
    }

    #[test]
    fn rejects_ill_typed_with_hints() {
        bad(r#"http.request.headers["x"] eq "y""#, "is an array");
        bad(r#"http.request.headers eq "y""#, "is a map");
        bad("http.host", "expected a condition");
        bad("ip.src eq 10.0.0.0/8", "ip.src in {10.0.0.0/8}");
        bad(r#"ip.src contains "1""#, "does not apply to addresses");
        bad(r#"http.host eq 1"#, "expected a string after `eq`");
        bad(r#"ip.src in $bots"#, "holds strings");
        bad(r#"ip.src in $nope"#, "no list `$nope`");
        bad(r#"http.host matches "(""#, "valid regex");
        bad(
            r#"http.host matches r"\w{10000}\w{10000}\w{10000}""#,
            "valid regex",
        );
        bad(
            r#"http.request.headers["x"][*] eq "y""#,
            "only inside `any(...)`",
        );
        bad(r#"any(http.host eq "y")"#, "`[*]`");
        bad(r#"starts_with(http.host)"#, "2 arguments");
        bad(r#"starts_with(http.host, http.host)"#, "string literal");
        bad(r#"len(ip.src) gt 1"#, "string or an array");
        let e = bad(
            r#"http.host eq "a" and ip.src in {10.0.0.1 "x"}"#,
            "IP address",
        );
        assert_eq!(e.column, 42);
    }

    #[test]
    fn wildcard_translation() {
        let re = build_regex(&wildcard_to_regex(r"*.Example.com/\*x")).unwrap();
        assert!(re.is_match("shop.example.COM/*x"));
        assert!(!re.is_match("shop.example.com/ax"));
        assert!(!re.is_match("shop.example.com.evil/*x"));
    }
}
