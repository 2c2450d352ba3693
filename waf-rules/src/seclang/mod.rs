//! SecLang front end: turns rule file text into directives with their source locations.
//!
//! The lexer follows Apache's configuration syntax as ModSecurity reads it: a trailing `\`
//! continues a directive on the next line, `#` starts a comment line, arguments are bare words or
//! double-quoted strings in which only `\"` is an escape. The parsers for the three argument
//! mini-languages (targets, operator, actions) live here too; compiling them into runnable rules
//! is the engine's job.

use crate::error::{LoadError, Location};

/// One argument of a directive, with the column where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// The argument text after removing quotes and `\"` escapes.
    pub text: String,
    /// Where the argument starts.
    pub location: Location,
}

/// One directive as written, e.g. `SecRule ARGS "@rx x" "id:1,deny"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive name as written (`SecRule`).
    pub name: String,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// Where the directive starts.
    pub location: Location,
}

/// Splits a rule file into directives.
pub fn lex(file: &str, text: &str) -> Result<Vec<Directive>, LoadError> {
    let mut out = Vec::new();
    // The joined logical line, and where each of its raw lines starts in it: (offset, line
    // number). A location is worked out from these when a directive or argument needs one
    // (an edge isolate lexes CRS, mostly comments, on its first request).
    let mut buf = String::new();
    let mut segs: Vec<(usize, usize)> = Vec::new();
    let mut lines = text.split('\n').enumerate();
    while let Some((first, mut line)) = lines.next() {
        // A comment (with the lines it continues onto) or a blank line is passed over
        // without a copy: they are most of CRS's lines.
        let raw = line.strip_suffix('\r').unwrap_or(line);
        let lead = raw.trim_start();
        if lead.starts_with('#') {
            let mut raw = raw;
            while raw.ends_with('\\') {
                let Some((_, l)) = lines.next() else { break };
                raw = l.strip_suffix('\r').unwrap_or(l);
            }
            continue;
        }
        if lead.is_empty() {
            continue;
        }
        buf.clear();
        segs.clear();
        let mut n = first;
        loop {
            let raw = line.strip_suffix('\r').unwrap_or(line);
            let (content, cont) = match raw.strip_suffix('\\') {
                Some(c) => (c, true),
                None => (raw, false),
            };
            segs.push((buf.len(), n + 1));
            buf.push_str(content);
            if !cont {
                break;
            }
            match lines.next() {
                Some((i, l)) => (n, line) = (i, l),
                None => break,
            }
        }
        let start_line = first + 1;
        // Blanks continued onto a comment or onto nothing.
        let trimmed = buf.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let loc_at = |off: usize| -> Location {
            // The raw line holding byte `off` (the last one starting at or before it: lines
            // that added nothing start where the next one does), and the column of the
            // character holding it, in bytes from the start of that line.
            let (line, column) = match segs.partition_point(|&(at, _)| at <= off) {
                k if k > 0 && off < buf.len() => {
                    let (at, line) = segs[k - 1];
                    let start = (at..=off)
                        .rev()
                        .find(|&o| buf.is_char_boundary(o))
                        .unwrap_or(at);
                    (line, start - at + 1)
                }
                _ => (start_line, 1),
            };
            Location {
                file: file.to_string(),
                line,
                column,
            }
        };
        let bytes = buf.as_bytes();
        let mut p = buf.len() - trimmed.len();
        let name_start = p;
        while p < bytes.len() && !bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        let name = buf[name_start..p].to_string();
        let location = loc_at(name_start);
        let mut args = Vec::new();
        loop {
            while p < bytes.len() && bytes[p].is_ascii_whitespace() {
                p += 1;
            }
            if p >= bytes.len() {
                break;
            }
            let arg_start = p;
            let mut text = String::new();
            if bytes[p] == b'"' {
                p += 1;
                let mut closed = false;
                let mut seg = p;
                while p < bytes.len() {
                    // Straight to the next quote or backslash.
                    match memchr::memchr2(b'"', b'\\', &bytes[p..]) {
                        Some(k) => p += k,
                        None => break,
                    }
                    if bytes[p] == b'\\' && p + 1 < bytes.len() && bytes[p + 1] == b'"' {
                        text.push_str(&buf[seg..p]);
                        text.push('"');
                        p += 2;
                        seg = p;
                        continue;
                    }
                    if bytes[p] == b'"' {
                        closed = true;
                        break;
                    }
                    p += 1;
                }
                if !closed {
                    return Err(LoadError::Parse {
                        location: loc_at(arg_start),
                        directive: name,
                        message: "unterminated double-quoted argument".into(),
                    });
                }
                text.push_str(&buf[seg..p]);
                p += 1;
            } else {
                while p < bytes.len() && !bytes[p].is_ascii_whitespace() {
                    p += 1;
                }
                text.push_str(&buf[arg_start..p]);
            }
            args.push(Arg {
                text,
                location: loc_at(arg_start),
            });
        }
        out.push(Directive {
            name,
            args,
            location,
        });
    }
    Ok(out)
}

/// One target of a rule, e.g. `!REQUEST_COOKIES:/^_ga/` or `&ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The collection or variable name, upper-cased.
    pub name: String,
    /// The key selector, if any.
    pub key: Option<KeySpec>,
    /// `!`: removes matching entries from the targets.
    pub exclude: bool,
    /// `&`: counts entries instead of reading them.
    pub count: bool,
}

/// How a target selects entries of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// An exact (case-insensitive) key.
    Name(String),
    /// A regular expression over the key (`/.../`).
    Regex(String),
}

/// Parses the target list of a `SecRule`.
pub fn parse_targets(text: &str) -> Result<Vec<TargetSpec>, String> {
    let b = text.as_bytes();
    let mut p = 0;
    let mut out = Vec::new();
    while p < b.len() {
        while p < b.len() && (b[p] == b'|' || b[p].is_ascii_whitespace()) {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        let mut exclude = false;
        let mut count = false;
        if b[p] == b'!' {
            exclude = true;
            p += 1;
        } else if b[p] == b'&' {
            count = true;
            p += 1;
        }
        let start = p;
        while p < b.len() && (b[p].is_ascii_alphanumeric() || b[p] == b'_') {
            p += 1;
        }
        if p == start {
            return Err(format!("expected a variable name at `{}`", &text[start..]));
        }
        let name = text[start..p].to_ascii_uppercase();
        let mut key = None;
        if p < b.len() && (b[p] == b':' || b[p] == b'.') {
            p += 1;
            if name == "XML" {
                // An XPath expression, e.g. `XML:/*` or `XML://@*`.
                let ks = p;
                while p < b.len() && b[p] != b'|' {
                    p += 1;
                }
                key = Some(KeySpec::Name(text[ks..p].to_string()));
            } else if p < b.len() && b[p] == b'/' {
                p += 1;
                let ks = p;
                let mut closed = false;
                while p < b.len() {
                    if b[p] == b'\\' {
                        p += 2;
                        continue;
                    }
                    if b[p] == b'/' {
                        closed = true;
                        break;
                    }
                    p += 1;
                }
                if !closed {
                    return Err(format!("unterminated regex key in `{text}`"));
                }
                let re = text[ks..p].to_string();
                p += 1;
                // An XPath such as `XML:/*` ends with the slash: keep it as a name.
                key = Some(KeySpec::Regex(re));
            } else {
                let ks = p;
                if p < b.len() && b[p] == b'\'' {
                    p += 1;
                    let qs = p;
                    while p < b.len() && b[p] != b'\'' {
                        p += 1;
                    }
                    key = Some(KeySpec::Name(text[qs..p.min(b.len())].to_string()));
                    p = (p + 1).min(b.len());
                } else {
                    while p < b.len() && b[p] != b'|' {
                        p += 1;
                    }
                    key = Some(KeySpec::Name(text[ks..p].trim().to_string()));
                }
            }
        }
        if p < b.len() && b[p] != b'|' {
            // XPath expressions like `XML://@*` end here.
            let rest_start = p;
            while p < b.len() && b[p] != b'|' {
                p += 1;
            }
            let extra = &text[rest_start..p];
            key = Some(KeySpec::Name(match key {
                Some(KeySpec::Regex(r)) => format!("/{r}/{extra}"),
                Some(KeySpec::Name(n)) => format!("{n}{extra}"),
                None => extra.to_string(),
            }));
        }
        out.push(TargetSpec {
            name,
            key,
            exclude,
            count,
        });
    }
    Ok(out)
}

/// An operator as written: `!@rx foo` → negated, `rx`, `foo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSpec {
    /// `!` before the operator.
    pub negated: bool,
    /// Operator name without `@`, lower-cased (`rx` when none was written).
    pub name: String,
    /// The parameter text.
    pub param: String,
}

/// Parses an operator argument.
pub fn parse_operator(text: &str) -> OperatorSpec {
    let mut t = text.trim_start();
    let mut negated = false;
    if let Some(r) = t.strip_prefix('!') {
        negated = true;
        t = r.trim_start();
    }
    if let Some(r) = t.strip_prefix('@') {
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let name = r[..end].to_ascii_lowercase();
        let param = r[end..].trim_start().to_string();
        OperatorSpec {
            negated,
            name,
            param,
        }
    } else {
        OperatorSpec {
            negated,
            name: "rx".into(),
            param: t.to_string(),
        }
    }
}

/// One action as written: `setvar:'tx.a=1'` → (`setvar`, `tx.a=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// The action name, lower-cased.
    pub name: String,
    /// Its value with quotes removed, if any.
    pub value: Option<String>,
}

/// Parses an action list (`id:1,phase:2,t:none,msg:'a, b'`).
pub fn parse_actions(text: &str) -> Result<Vec<ActionSpec>, String> {
    let b = text.as_bytes();
    let mut p = 0;
    let mut out = Vec::new();
    while p < b.len() {
        while p < b.len() && (b[p] == b',' || b[p].is_ascii_whitespace()) {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        let ns = p;
        while p < b.len() && b[p] != b':' && b[p] != b',' {
            p += 1;
        }
        let name = text[ns..p].trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("empty action name in `{text}`"));
        }
        let mut value = None;
        if p < b.len() && b[p] == b':' {
            p += 1;
            while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
                p += 1;
            }
            if p < b.len() && b[p] == b'\'' {
                p += 1;
                let mut v = String::new();
                let mut seg = p;
                let mut closed = false;
                while p < b.len() {
                    if b[p] == b'\\' && p + 1 < b.len() && (b[p + 1] == b'\'' || b[p + 1] == b'\\')
                    {
                        v.push_str(&text[seg..p]);
                        v.push(b[p + 1] as char);
                        p += 2;
                        seg = p;
                        continue;
                    }
                    if b[p] == b'\'' {
                        closed = true;
                        break;
                    }
                    p += 1;
                }
                if !closed {
                    return Err(format!("unterminated quote in action `{name}`"));
                }
                v.push_str(&text[seg..p]);
                p += 1;
                value = Some(v);
            } else {
                let vs = p;
                while p < b.len() && b[p] != b',' {
                    p += 1;
                }
                value = Some(text[vs..p].trim().to_string());
            }
        }
        out.push(ActionSpec { name, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_continuations_comments_and_quotes() {
        let text =
            "# c\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    deny\"\n\nSecMarker END\n";
        let d = lex("f.conf", text).expect("lexes");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "SecRule");
        assert_eq!(d[0].args[1].text, "@rx a\"b");
        assert_eq!(d[0].args[2].location.line, 3);
        assert_eq!(d[0].location.line, 2);
        assert_eq!(d[1].args[0].text, "END");
    }

    proptest::proptest! {
        /// Every directive's and argument's location points at where it starts in the text
        /// (line and byte column), across continuation lines, CRLF and multibyte characters.
        #[test]
        fn locations_point_at_the_source(text in "[ a#\\\\\"\r\n\t\u{e9}\u{20ac}x]{0,80}") {
            let lines: Vec<&str> = text.split('\n').collect();
            let at = |l: &Location| {
                lines[l.line - 1].get(l.column - 1..).expect("a column on a character")
            };
            for d in lex("f", &text).unwrap_or_default() {
                let first = d.name.chars().next().expect("a directive has a name");
                proptest::prop_assert!(at(&d.location).starts_with(first), "{d:?}");
                for a in &d.args {
                    let src = at(&a.location);
                    match a.text.chars().next() {
                        _ if src.starts_with('"') => {}
                        Some(c) => proptest::prop_assert!(src.starts_with(c), "{a:?}"),
                        None => proptest::prop_assert!(false, "an empty bare argument: {a:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn locations_on_continued_lines() {
        // Line 2 ends in `\` and line 3 adds nothing: the argument after it is on line 4.
        let text = "SecRule \u{e9}X \\\n \u{20ac}\"q\" \\\n\\\n  last";
        let d = lex("f", text).expect("lexes");
        let locs: Vec<(usize, usize)> = d[0]
            .args
            .iter()
            .map(|a| (a.location.line, a.location.column))
            .collect();
        assert_eq!(locs, [(1, 9), (2, 2), (4, 3)]);
        assert_eq!(d[0].args[1].text, "\u{20ac}\"q\"");
    }

    #[test]
    fn a_comment_continues_onto_the_next_line_as_in_apache() {
        // A trailing `\` joins the next line to a comment too (CRLF or not); a blank line
        // ends nothing, and a line of blanks ending in `\` joins the next one to them.
        let text = "# a \\\r\nSecRule ARGS x\n  #\\\n\\\nSecRule ARGS y\n\n \\\nSecMarker END\n";
        let d = lex("f", text).expect("lexes");
        let names: Vec<(&str, usize)> = d
            .iter()
            .map(|d| (d.name.as_str(), d.location.line))
            .collect();
        assert_eq!(names, [("SecMarker", 8)]);
    }

    #[test]
    fn unterminated_quote_names_line_and_column() {
        let err = lex("x.conf", "\n  SecRule ARGS \"@rx a").expect_err("fails");
        let s = err.to_string();
        assert!(s.starts_with("x.conf:2:16: SecRule"), "{s}");
    }

    #[test]
    fn parses_targets() {
        let t = parse_targets("ARGS|!REQUEST_COOKIES:/^_ga(?:_\\w+)?$/|&ARGS:foo|XML:/*|TX:/^a|b/")
            .expect("targets");
        assert_eq!(t.len(), 5);
        assert!(t[1].exclude);
        assert_eq!(t[1].key, Some(KeySpec::Regex("^_ga(?:_\\w+)?$".into())));
        assert!(t[2].count);
        assert_eq!(t[4].key, Some(KeySpec::Regex("^a|b".into())));
    }

    #[test]
    fn parses_actions_and_operator() {
        let a = parse_actions("id:1, phase:2,msg:'a, \\'b\\'',t:none,deny").expect("actions");
        assert_eq!(a[2].value.as_deref(), Some("a, 'b'"));
        assert_eq!(a[4].name, "deny");
        let o = parse_operator("!@within GET POST");
        assert!(o.negated);
        assert_eq!(o.name, "within");
        assert_eq!(o.param, "GET POST");
        assert_eq!(parse_operator("^a").name, "rx");
    }
}
