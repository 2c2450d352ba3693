//! The lexer: source text → tokens with spans.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::error::{ParseError, Span};

/// Longest expression accepted, in bytes: a bound on work for untrusted input.
pub const MAX_EXPRESSION_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A dotted name or keyword: `http.host`, `and`, `lower`.
    Ident(String),
    Str(String),
    Int(i64),
    Ip(IpAddr),
    Cidr(IpNetwork),
    /// `$name`
    List(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Star,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`, `~`, `&&`, `||`, `^^`, `!`
    Sym(&'static str),
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn is_addr_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// Splits `src` into tokens.
pub(crate) fn lex(src: &str) -> Result<Vec<(Tok, Span)>, ParseError> {
    if src.len() > MAX_EXPRESSION_LEN {
        return Err(ParseError::new(
            src,
            Span::new(MAX_EXPRESSION_LEN, MAX_EXPRESSION_LEN),
            format!("expected an expression of at most {MAX_EXPRESSION_LEN} bytes"),
        ));
    }
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        // Addresses and numbers first: `2001:db8::1`, `10.0.0.0/8`, `443`.
        if is_addr_char(c) && (c.is_ascii_digit() || looks_like_ipv6(&bytes[i..])) {
            let (tok, end) = lex_number_or_addr(src, i)?;
            out.push((tok, Span::new(start, end)));
            i = end;
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('\0');
        if ch == 'r' && matches!(bytes.get(i + 1), Some(b'"') | Some(b'#')) {
            let (s, end) = lex_raw_string(src, i)?;
            out.push((Tok::Str(s), Span::new(start, end)));
            i = end;
            continue;
        }
        if is_ident_start(ch) {
            let mut end = i;
            while end < bytes.len() && is_ident_char(bytes[end] as char) {
                end += 1;
            }
            out.push((Tok::Ident(src[i..end].to_string()), Span::new(start, end)));
            i = end;
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let sym2 = match two {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            "^^" => Some("^^"),
            _ => None,
        };
        if let Some(s) = sym2 {
            out.push((Tok::Sym(s), Span::new(start, i + 2)));
            i += 2;
            continue;
        }
        let single = match c {
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            b',' => Some(Tok::Comma),
            b'*' => Some(Tok::Star),
            b'<' => Some(Tok::Sym("<")),
            b'>' => Some(Tok::Sym(">")),
            b'~' => Some(Tok::Sym("~")),
            b'!' => Some(Tok::Sym("!")),
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, Span::new(start, i + 1)));
            i += 1;
            continue;
        }
        if c == b'"' {
            let (s, end) = lex_string(src, i)?;
            out.push((Tok::Str(s), Span::new(start, end)));
            i = end;
            continue;
        }
        if c == b'$' {
            let mut end = i + 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b'-')
            {
                end += 1;
            }
            if end == i + 1 {
                return Err(ParseError::new(
                    src,
                    Span::new(i, i + 1),
                    "expected a list name after `$`",
                ));
            }
            out.push((
                Tok::List(src[i + 1..end].to_string()),
                Span::new(start, end),
            ));
            i = end;
            continue;
        }
        return Err(ParseError::new(
            src,
            Span::new(i, i + ch.len_utf8()),
            "expected a field, a function, an operator or a literal",
        ));
    }
    Ok(out)
}

/// A run of hex digits and colons with at least one colon reads as IPv6 (`::1`, `fe80::1`).
fn looks_like_ipv6(rest: &[u8]) -> bool {
    let run: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(|&b| is_addr_char(b))
        .collect();
    run.contains(&b':')
}

fn lex_number_or_addr(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut end = start;
    while end < bytes.len() && is_addr_char(bytes[end]) {
        end += 1;
    }
    let text = &src[start..end];
    let mut prefix: Option<(u8, usize)> = None;
    if bytes.get(end) == Some(&b'/') {
        let mut pend = end + 1;
        while pend < bytes.len() && bytes[pend].is_ascii_digit() {
            pend += 1;
        }
        let digits = &src[end + 1..pend];
        let bad = || {
            ParseError::new(
                src,
                Span::new(start, pend.max(end + 1)),
                "expected a CIDR prefix length after `/`",
            )
        };
        if digits.is_empty() || digits.len() > 3 {
            return Err(bad());
        }
        let n: u8 = digits.parse().map_err(|_| bad())?;
        prefix = Some((n, pend));
    }
    let ip: Option<IpAddr> = if text.contains(':') {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else if text.bytes().filter(|&b| b == b'.').count() == 3 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        None
    };
    if let Some(ip) = ip {
        return match prefix {
            None => Ok((Tok::Ip(ip), end)),
            Some((len, pend)) => IpNetwork::new(ip, len)
                .map(|net| (Tok::Cidr(net), pend))
                .map_err(|_| {
                    ParseError::new(
                        src,
                        Span::new(start, pend),
                        format!(
                            "expected a prefix length of at most {}",
                            if ip.is_ipv4() { 32 } else { 128 }
                        ),
                    )
                }),
        };
    }
    if prefix.is_none() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map(|n| (Tok::Int(n), end))
            .map_err(|_| {
                ParseError::new(
                    src,
                    Span::new(start, end),
                    "expected an integer that fits in 63 bits",
                )
            });
    }
    let stop = prefix.map(|(_, p)| p).unwrap_or(end);
    Err(ParseError::new(
        src,
        Span::new(start, stop),
        "expected an integer, an IP address or a CIDR range",
    ))
}

fn lex_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        match c {
            '"' => return Ok((out, at + 1)),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((eoff, e)) => {
                    return Err(ParseError::new(
                        src,
                        Span::new(at, start + 1 + eoff + e.len_utf8()),
                        "expected `\\\"` or `\\\\` (the only escapes in a string; use r\"...\" for regexes)",
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(ParseError::new(
        src,
        Span::new(start, src.len()),
        "expected a closing `\"` for this string",
    ))
}

/// `r"..."` or `r#"..."#` (any number of `#`): no escapes at all.
fn lex_raw_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut i = start + 1;
    let mut hashes = 0;
    while bytes.get(i) == Some(&b'#') {
        hashes += 1;
        i += 1;
    }
    if bytes.get(i) != Some(&b'"') {
        return Err(ParseError::new(
            src,
            Span::new(start, i),
            "expected `\"` to open a raw string",
        ));
    }
    let body_start = i + 1;
    let mut closing = String::from("\"");
    closing.push_str(&"#".repeat(hashes));
    match src[body_start..].find(&closing) {
        Some(rel) => {
            let body_end = body_start + rel;
            Ok((
                src[body_start..body_end].to_string(),
                body_end + closing.len(),
            ))
        }
        None => Err(ParseError::new(
            src,
            Span::new(start, src.len()),
            format!("expected a closing `{closing}` for this raw string"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn lexes_addresses_numbers_and_names() {
        assert_eq!(
            toks("ip.src in {10.0.0.0/8 2001:db8::1 ::1} and len(x) > 443"),
            vec![
                Tok::Ident("ip.src".into()),
                Tok::Ident("in".into()),
                Tok::LBrace,
                Tok::Cidr("10.0.0.0/8".parse().unwrap()),
                Tok::Ip("2001:db8::1".parse().unwrap()),
                Tok::Ip("::1".parse().unwrap()),
                Tok::RBrace,
                Tok::Ident("and".into()),
                Tok::Ident("len".into()),
                Tok::LParen,
                Tok::Ident("x".into()),
                Tok::RParen,
                Tok::Sym(">"),
                Tok::Int(443),
            ]
        );
        assert_eq!(toks("ends_with"), vec![Tok::Ident("ends_with".into())]);
        assert_eq!(toks("add"), vec![Tok::Ident("add".into())]);
    }

    #[test]
    fn lexes_strings() {
        assert_eq!(
            toks(r##""a\"b\\c" r"\d+" r#"x"y"#"##),
            vec![
                Tok::Str("a\"b\\c".into()),
                Tok::Str("\\d+".into()),
                Tok::Str("x\"y".into())
            ]
        );
        let e = lex(r#"x eq "abc"#).unwrap_err();
        assert_eq!(e.column, 6);
        assert!(e.message.contains("closing"));
        let e = lex(r#""\n""#).unwrap_err();
        assert!(e.message.contains("escape"), "{e}");
    }

    #[test]
    fn rejects_bad_numbers() {
        assert!(lex("1.2").is_err());
        assert!(lex("10.0.0.0/33").is_err());
        assert!(lex("99999999999999999999").is_err());
        assert!(lex("#").is_err());
    }
}
