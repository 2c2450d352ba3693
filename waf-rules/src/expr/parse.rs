//! The parser: tokens → [`Expr`]. Recursive descent; precedence from loosest to tightest is
//! `or` < `xor` < `and` < `not` < comparison.

use super::ast::{CmpOp, ElemIndex, Expr, Field, Func, Lit, Literal, LogicOp};
use super::error::{ParseError, Span};
use super::lex::{lex, Tok};

/// Deepest nesting of parentheses, `not` and function calls: a bound on stack use for untrusted input.
pub const MAX_DEPTH: usize = 64;

/// Parses an expression (syntax only; [`super::check`] checks types).
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(p.error_here("expected `and`, `or`, `xor` or the end of the expression"));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_span(&self) -> Span {
        match self.toks.get(self.pos) {
            Some((_, s)) => *s,
            None => Span::new(self.src.len(), self.src.len()),
        }
    }

    fn prev_span(&self) -> Span {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    fn bump(&mut self) -> Option<(Tok, Span)> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.src, self.peek_span(), msg)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Span, ParseError> {
        if self.peek() == Some(&tok) {
            let s = self.peek_span();
            self.pos += 1;
            Ok(s)
        } else {
            Err(self.error_here(format!("expected {what}")))
        }
    }

    fn is_keyword(&self, words: &[&str], syms: &[&str]) -> bool {
        match self.peek() {
            Some(Tok::Ident(w)) => words.contains(&w.as_str()),
            Some(Tok::Sym(s)) => syms.contains(s),
            _ => false,
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!("expected at most {MAX_DEPTH} levels of nesting")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let e = self.logic(LogicOp::Or);
        self.depth -= 1;
        e
    }

    fn logic(&mut self, op: LogicOp) -> Result<Expr, ParseError> {
        let (words, syms, next): (&[&str], &[&str], Option<LogicOp>) = match op {
            LogicOp::Or => (&["or"], &["||"], Some(LogicOp::Xor)),
            LogicOp::Xor => (&["xor"], &["^^"], Some(LogicOp::And)),
            LogicOp::And => (&["and"], &["&&"], None),
        };
        let operand = |p: &mut Self| match next {
            Some(n) => p.logic(n),
            None => p.unary(),
        };
        let mut lhs = operand(self)?;
        while self.is_keyword(words, syms) {
            self.pos += 1;
            let rhs = operand(self)?;
            let span = lhs.span().to(rhs.span());
            lhs = Expr::Logic {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                span,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_keyword(&["not"], &["!"]) {
            let start = self.peek_span();
            self.pos += 1;
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            let span = start.to(inner.span());
            return Ok(Expr::Not(Box::new(inner), span));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Ident(w)) => match w.as_str() {
                "eq" => Some(CmpOp::Eq),
                "ne" => Some(CmpOp::Ne),
                "lt" => Some(CmpOp::Lt),
                "le" => Some(CmpOp::Le),
                "gt" => Some(CmpOp::Gt),
                "ge" => Some(CmpOp::Ge),
                "contains" => Some(CmpOp::Contains),
                "matches" => Some(CmpOp::Matches),
                "wildcard" => Some(CmpOp::Wildcard),
                "in" => {
                    self.pos += 1;
                    return self.in_rest(lhs);
                }
                _ => None,
            },
            Some(Tok::Sym(s)) => match *s {
                "==" => Some(CmpOp::Eq),
                "!=" => Some(CmpOp::Ne),
                "<" => Some(CmpOp::Lt),
                "<=" => Some(CmpOp::Le),
                ">" => Some(CmpOp::Gt),
                ">=" => Some(CmpOp::Ge),
                "~" => Some(CmpOp::Matches),
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return Ok(lhs);
        };
        self.pos += 1;
        let rhs = self.literal("a literal (a string, an integer or an IP address)")?;
        let span = lhs.span().to(rhs.span);
        Ok(Expr::Compare {
            lhs: Box::new(lhs),
            op,
            rhs,
            span,
        })
    }

    fn in_rest(&mut self, lhs: Expr) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Tok::List(name)) => {
                let name = name.clone();
                let s = self.peek_span();
                self.pos += 1;
                let span = lhs.span().to(s);
                Ok(Expr::InList {
                    lhs: Box::new(lhs),
                    list: name,
                    span,
                })
            }
            Some(Tok::LBrace) => {
                self.pos += 1;
                let mut set = Vec::new();
                loop {
                    if let Some(Tok::RBrace) = self.peek() {
                        if set.is_empty() {
                            return Err(self.error_here("expected at least one value in the set"));
                        }
                        let end = self.peek_span();
                        self.pos += 1;
                        let span = lhs.span().to(end);
                        return Ok(Expr::InSet {
                            lhs: Box::new(lhs),
                            set,
                            span,
                        });
                    }
                    if !set.is_empty() {
                        self.eat(&Tok::Comma);
                    }
                    set.push(self.literal("a value of the set or `}`")?);
                }
            }
            _ => {
                Err(self.error_here("expected `{` to open a set or a list name such as `$office`"))
            }
        }
    }

    fn literal(&mut self, what: &str) -> Result<Lit, ParseError> {
        let span = self.peek_span();
        let value = match self.peek() {
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Int(n)) => Literal::Int(*n),
            Some(Tok::Ip(ip)) => Literal::Ip(*ip),
            Some(Tok::Cidr(net)) => Literal::Cidr(*net),
            _ => return Err(self.error_here(format!("expected {what}"))),
        };
        self.pos += 1;
        Ok(Lit { value, span })
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some((tok, span)) = self.bump() else {
            return Err(self.error_here("expected a field, a function call, `not` or `(`"));
        };
        let base = match tok {
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(Tok::RParen, "`)` to close the parenthesis")?;
                return Ok(inner);
            }
            Tok::Str(s) => Expr::Str(s, span),
            Tok::Ident(name) => match name.as_str() {
                "true" => Expr::Bool(true, span),
                "false" => Expr::Bool(false, span),
                _ => {
                    if let Some(func) = Func::from_name(&name) {
                        self.call(func, span)?
                    } else if let Some(field) = Field::from_name(&name) {
                        Expr::Field(field, span)
                    } else {
                        return Err(ParseError::new(
                            self.src,
                            span,
                            format!(
                                "expected a field ({}) or a function ({})",
                                Field::ALL.map(Field::name).join(", "),
                                Func::ALL.map(Func::name).join(", ")
                            ),
                        ));
                    }
                }
            },
            _ => {
                self.pos -= 1;
                return Err(self.error_here("expected a field, a function call, `not` or `(`"));
            }
        };
        self.postfix(base)
    }

    fn call(&mut self, func: Func, name_span: Span) -> Result<Expr, ParseError> {
        self.expect(Tok::LParen, &format!("`(` after `{}`", func.name()))?;
        let mut args = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                args.push(self.expr()?);
                if self.eat(&Tok::Comma) {
                    continue;
                }
                self.expect(Tok::RParen, "`,` or `)` to close the call")?;
                break;
            }
        }
        Ok(Expr::Call {
            func,
            args,
            span: name_span.to(self.prev_span()),
        })
    }

    fn postfix(&mut self, mut base: Expr) -> Result<Expr, ParseError> {
        while self.eat(&Tok::LBracket) {
            let start = base.span();
            match self.bump() {
                Some((Tok::Str(key), _)) => {
                    let end = self.expect(Tok::RBracket, "`]`")?;
                    base = Expr::Index {
                        base: Box::new(base),
                        key,
                        span: start.to(end),
                    };
                }
                Some((Tok::Int(n), s)) => {
                    let n = u32::try_from(n).map_err(|_| {
                        ParseError::new(self.src, s, "expected an index below 2^32")
                    })?;
                    let end = self.expect(Tok::RBracket, "`]`")?;
                    base = Expr::Element {
                        base: Box::new(base),
                        index: ElemIndex::At(n),
                        span: start.to(end),
                    };
                }
                Some((Tok::Star, _)) => {
                    let end = self.expect(Tok::RBracket, "`]`")?;
                    base = Expr::Element {
                        base: Box::new(base),
                        index: ElemIndex::Star,
                        span: start.to(end),
                    };
                }
                _ => {
                    self.pos -= 1;
                    return Err(self.error_here(
                        "expected a key such as `[\"name\"]`, an index such as `[0]`, or `[*]`",
                    ));
                }
            }
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(src: &str) -> String {
        parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .to_string()
    }

    #[test]
    fn precedence_and_aliases() {
        assert_eq!(
            roundtrip(r#"http.host == "a" || http.host eq "b" && not http.host ne "c""#),
            r#"http.host eq "a" or http.host eq "b" and not http.host ne "c""#
        );
        assert_eq!(
            roundtrip(
                r#"(http.host eq "a" or http.host eq "b") and ip.src in {10.0.0.0/8, 192.0.2.1}"#
            ),
            r#"(http.host eq "a" or http.host eq "b") and ip.src in {10.0.0.0/8 192.0.2.1}"#
        );
        assert_eq!(
            roundtrip(
                r#"any(lower(http.request.headers["x"][*]) contains "y") ^^ !(len(http.request.uri.args["q"][0]) > 5)"#
            ),
            r#"any(lower(http.request.headers["x"][*]) contains "y") xor not len(http.request.uri.args["q"][0]) gt 5"#
        );
        assert_eq!(roundtrip("ip.src in $office"), "ip.src in $office");
        assert_eq!(
            roundtrip(r#"http.user_agent ~ r"(?i)sqlmap\d""#),
            r#"http.user_agent matches "(?i)sqlmap\\d""#
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse(r#"http.host eq"#).unwrap_err();
        assert_eq!((e.line, e.column), (1, 13));
        assert!(e.message.contains("expected a literal"), "{e}");
        let e = parse("http.hots eq \"x\"").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.to_string().contains("http.hots"), "{e}");
        let e = parse("http.host eq \"x\" and\n  (ip.src in 10").unwrap_err();
        assert_eq!((e.line, e.column), (2, 14));
        assert!(e.message.contains("`{`"), "{e}");
        let e = parse("(http.host eq \"x\"").unwrap_err();
        assert!(e.message.contains("`)`"), "{e}");
        let e = parse("http.host eq \"x\" http.host").unwrap_err();
        assert_eq!(e.column, 18);
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        let deep = format!("{}true", "not ".repeat(200));
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
