//! The custom-rules expression language, close to Cloudflare's rules language.
//!
//! The pipeline follows wirefilter's shape, *scheme → parse → check → compile → execute*:
//!
//! - the **scheme** is fixed: the request fields in [`Field`] (`http.request.uri.path`, `ip.src`, …),
//!   computed once per request by [`RequestView`];
//! - [`parse`] reads text into an [`Expr`] whose nodes carry spans, and [`Expr`]'s `Display` prints
//!   it back (the property tests check `parse(print(e)) == e`);
//! - [`check`] types the tree against the scheme and the file's lists, so every mistake is reported
//!   when the rules load, with the line, column and what was expected;
//! - [`ProgramBuilder`] compiles many expressions into one [`Program`] that shares work between them
//!   (interned atoms, one hash/Aho-Corasick/`RegexSet` pass per field) — see [`program`];
//! - [`Program::start`] runs those passes over a request and evaluates the expressions that can hold.
//!
//! # The language
//!
//! | fields | type | value |
//! |---|---|---|
//! | `http.request.method` | string | as sent, e.g. `POST` |
//! | `http.request.uri` | string | the raw request target (path and query, still encoded) |
//! | `http.request.uri.path` | string | percent-decoded, `.`/`..` resolved, `//` merged, `\` read as `/` |
//! | `http.request.uri.query` | string | the raw query, without `?` |
//! | `http.request.uri.args["name"]` | array of strings | decoded query arguments with that name |
//! | `http.host` | string | the `Host` header |
//! | `http.user_agent` | string | the `User-Agent` header (empty if absent) |
//! | `http.cookie` | string | every `Cookie` header, joined by `; ` |
//! | `http.request.cookies["name"]` | array of strings | cookies with that name |
//! | `http.request.headers["name"]` | array of strings | values of that header (name case-insensitive) |
//! | `ip.src` | IP address | the client address |
//! | `ip.src.country` | string | ISO 3166-1 alpha-2, when the host knows it |
//!
//! An array element is `x[0]` (absent if there is none: every comparison on it is false, `ne`
//! true); `any(x[*] ...)` / `all(x[*] ...)` test every element.
//!
//! | operators | on | notes |
//! |---|---|---|
//! | `eq` `==`, `ne` `!=` | string, integer, IP | |
//! | `lt` `<`, `le` `<=`, `gt` `>`, `ge` `>=` | string (byte order), integer | |
//! | `contains` | string | case-sensitive substring |
//! | `matches` `~` | string | Rust `regex` syntax, linear time, compiled size ≤ 1 MiB |
//! | `wildcard`, `strict wildcard` | string | whole value; `*` any run; case-insensitive / case-sensitive |
//! | `in {a b c}` | string, integer, IP | IP sets take addresses and CIDR ranges |
//! | `in $name` | string, IP | a list from the rules file |
//! | `not` `!`, `and` `&&`, `xor` `^^`, `or` `\|\|` | conditions | binding from tightest to loosest, parentheses as usual |
//!
//! Functions: `lower(s)`, `upper(s)`, `len(s or array)`, `starts_with(s, "lit")`,
//! `ends_with(s, "lit")`, `any(cond)`, `all(cond)`. Strings are `"..."` with `\"` and `\\` as the
//! only escapes, or raw `r"..."` / `r#"..."#` (handy for regexes). Literals: `42`, `192.0.2.1`,
//! `2001:db8::/32`, `true`, `false`.
//!
//! ```
//! # use waf_rules::expr::{parse, check, ListKind};
//! let src = r#"starts_with(http.request.uri.path, "/admin") and not ip.src in $office"#;
//! let ast = parse(src).unwrap();
//! check(src, &ast, &|name| (name == "office").then_some(ListKind::Ip)).unwrap();
//! let err = parse(r#"http.request.uri.path eq"#).unwrap_err();
//! assert_eq!((err.line, err.column), (1, 25));
//! assert_eq!(err.to_string(), "expected a literal (a string, an integer or an IP address), found the end of the expression");
//! ```
//!
//! Regexes go through the `regex` crate (finite automata, linear time) with size limits; the input
//! size and the nesting depth are bounded, so hostile rule text cannot make the parser recurse
//! without end.

mod ast;
mod check;
mod error;
mod lex;
mod parse;
pub mod program;
mod view;

pub use ast::{CmpOp, ElemIndex, Expr, Field, Func, Lit, Literal, LogicOp, Type};
pub use check::{build_regex, check, wildcard_to_regex, ListKind, REGEX_SIZE_LIMIT};
pub use error::{line_col, ParseError, Span};
pub use lex::MAX_EXPRESSION_LEN;
pub use parse::{parse, MAX_DEPTH};
pub use program::{Evaluation, ExprId, ListValues, Program, ProgramBuilder};
pub use view::{normalize_path, percent_decode, RequestView};
