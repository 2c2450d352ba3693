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
