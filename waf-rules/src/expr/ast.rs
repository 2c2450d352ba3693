//! The syntax tree of an expression, the fields of the scheme, and the printer (AST → text).
//!
//! The printer writes the canonical spelling (`and`, `eq`, …) with the fewest parentheses that keep
//! the tree: `parse(print(e)) == e` (spans aside), checked by property tests.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::error::Span;

/// The type of a value in the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// A string (Cloudflare calls it `Bytes`).
    Bytes,
    /// A non-negative integer.
    Int,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A boolean: what a rule's expression must be.
    Bool,
    /// An array of strings, e.g. every value of one header.
    Array,
    /// A map from a name to an array of strings, e.g. `http.request.headers`.
    Map,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Bytes => "a string",
            Type::Int => "an integer",
            Type::Ip => "an IP address",
            Type::Bool => "a boolean",
            Type::Array => "an array of strings",
            Type::Map => "a map of string arrays",
        })
    }
}

/// A field of the request that expressions can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Field {
    /// `http.request.method`
    Method,
    /// `http.request.uri`: the raw request target (path and query).
    Uri,
    /// `http.request.uri.path`: percent-decoded, dot segments resolved, repeated slashes merged.
    UriPath,
    /// `http.request.uri.query`: the raw query without `?`.
    UriQuery,
    /// `http.request.uri.args`: decoded query arguments by name.
    UriArgs,
    /// `http.host`
    Host,
    /// `http.user_agent`
    UserAgent,
    /// `http.cookie`: every `Cookie` header joined by `; `.
    Cookie,
    /// `http.request.cookies`: cookies by name.
    Cookies,
    /// `http.request.headers`: header values by lower-cased name.
    Headers,
    /// `ip.src`
    IpSrc,
    /// `ip.src.country`
    IpSrcCountry,
}

impl Field {
    /// Every field, for error messages and generators.
    pub const ALL: [Field; 12] = [
        Field::Method,
        Field::Uri,
        Field::UriPath,
        Field::UriQuery,
        Field::UriArgs,
        Field::Host,
        Field::UserAgent,
        Field::Cookie,
        Field::Cookies,
        Field::Headers,
        Field::IpSrc,
        Field::IpSrcCountry,
    ];

    /// The name used in expressions.
    pub fn name(self) -> &'static str {
        match self {
            Field::Method => "http.request.method",
            Field::Uri => "http.request.uri",
            Field::UriPath => "http.request.uri.path",
            Field::UriQuery => "http.request.uri.query",
            Field::UriArgs => "http.request.uri.args",
            Field::Host => "http.host",
            Field::UserAgent => "http.user_agent",
            Field::Cookie => "http.cookie",
            Field::Cookies => "http.request.cookies",
            Field::Headers => "http.request.headers",
            Field::IpSrc => "ip.src",
            Field::IpSrcCountry => "ip.src.country",
        }
    }

    /// The field with this name.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field's type.
    pub fn ty(self) -> Type {
        match self {
            Field::UriArgs | Field::Cookies | Field::Headers => Type::Map,
            Field::IpSrc => Type::Ip,
            _ => Type::Bytes,
        }
    }
}

/// A function callable in expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// `lower(string) -> string`
    Lower,
    /// `upper(string) -> string`
    Upper,
    /// `len(string | array) -> int`
    Len,
    /// `starts_with(string, "literal") -> bool`
    StartsWith,
    /// `ends_with(string, "literal") -> bool`
    EndsWith,
    /// `any(condition over x[*]) -> bool`: true when the condition holds for some element.
    Any,
    /// `all(condition over x[*]) -> bool`: true when the condition holds for every element.
    All,
}

impl Func {
    /// Every function.
    pub const ALL: [Func; 7] = [
        Func::Lower,
        Func::Upper,
        Func::Len,
        Func::StartsWith,
        Func::EndsWith,
        Func::Any,
        Func::All,
    ];

    /// The name used in expressions.
    pub fn name(self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Len => "len",
            Func::StartsWith => "starts_with",
            Func::EndsWith => "ends_with",
            Func::Any => "any",
            Func::All => "all",
        }
    }

    /// The function with this name.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `eq`, `==`
    Eq,
    /// `ne`, `!=`
    Ne,
    /// `lt`, `<`
    Lt,
    /// `le`, `<=`
    Le,
    /// `gt`, `>`
    Gt,
    /// `ge`, `>=`
    Ge,
    /// `contains`
    Contains,
    /// `matches`, `~`: a Rust `regex` (linear time).
    Matches,
    /// `wildcard`: `*` matches any run of characters, case-insensitive, whole value.
    Wildcard,
}

impl CmpOp {
    /// Canonical spelling.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Contains => "contains",
            CmpOp::Matches => "matches",
            CmpOp::Wildcard => "wildcard",
        }
    }
}

/// A boolean connective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicOp {
    /// `and`, `&&`
    And,
    /// `xor`, `^^`
    Xor,
    /// `or`, `||`
    Or,
}

impl LogicOp {
    fn name(self) -> &'static str {
        match self {
            LogicOp::And => "and",
            LogicOp::Xor => "xor",
            LogicOp::Or => "or",
        }
    }

    /// Binding strength: `and` binds tighter than `xor`, which binds tighter than `or`.
    fn precedence(self) -> u8 {
        match self {
            LogicOp::Or => 1,
            LogicOp::Xor => 2,
            LogicOp::And => 3,
        }
    }
}

/// A literal on the right of a comparison or in a set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Literal {
    /// `"text"` or `r"text"`
    Str(String),
    /// `42`
    Int(i64),
    /// `192.0.2.1`, `2001:db8::1`
    Ip(IpAddr),
    /// `192.0.2.0/24`
    Cidr(IpNetwork),
}

impl Literal {
    /// The type of the literal (a CIDR is a set of [`Type::Ip`]).
    pub fn ty(&self) -> Type {
        match self {
            Literal::Str(_) => Type::Bytes,
            Literal::Int(_) => Type::Int,
            Literal::Ip(_) | Literal::Cidr(_) => Type::Ip,
        }
    }
}

/// A literal and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lit {
    /// The value.
    pub value: Literal,
    /// Where.
    pub span: Span,
}

/// An element index: `[0]` or `[*]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemIndex {
    /// `[n]`
    At(u32),
    /// `[*]`, only inside `any()` / `all()`.
    Star,
}

/// An expression node. Every node carries its span in the source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A field, e.g. `http.host`.
    Field(Field, Span),
    /// `map["key"]`
    Index {
        /// The map.
        base: Box<Expr>,
        /// The key.
        key: String,
        /// Where.
        span: Span,
    },
    /// `array[0]` or `array[*]`
    Element {
        /// The array.
        base: Box<Expr>,
        /// Which element.
        index: ElemIndex,
        /// Where.
        span: Span,
    },
    /// `func(args...)`
    Call {
        /// The function.
        func: Func,
        /// Arguments.
        args: Vec<Expr>,
        /// Where.
        span: Span,
    },
    /// A string literal used as a function argument.
    Str(String, Span),
    /// `true` / `false`
    Bool(bool, Span),
    /// `lhs op literal`
    Compare {
        /// The value compared.
        lhs: Box<Expr>,
        /// The operator.
        op: CmpOp,
        /// The literal.
        rhs: Lit,
        /// Where.
        span: Span,
    },
    /// `lhs in { literals }`
    InSet {
        /// The value tested.
        lhs: Box<Expr>,
        /// The set.
        set: Vec<Lit>,
        /// Where.
        span: Span,
    },
    /// `lhs in $list`
    InList {
        /// The value tested.
        lhs: Box<Expr>,
        /// The list's name, without `$`.
        list: String,
        /// Where.
        span: Span,
    },
    /// `not e`
    Not(Box<Expr>, Span),
    /// `lhs and|xor|or rhs`
    Logic {
        /// The connective.
        op: LogicOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
        /// Where.
        span: Span,
    },
}

impl Expr {
    /// Where this node was written.
    pub fn span(&self) -> Span {
        match self {
            Expr::Field(_, s) | Expr::Str(_, s) | Expr::Bool(_, s) | Expr::Not(_, s) => *s,
            Expr::Index { span, .. }
            | Expr::Element { span, .. }
            | Expr::Call { span, .. }
            | Expr::Compare { span, .. }
            | Expr::InSet { span, .. }
            | Expr::InList { span, .. }
            | Expr::Logic { span, .. } => *span,
        }
    }

    /// Sets every span to the empty default, so two trees compare by structure alone.
    pub fn clear_spans(&mut self) {
        match self {
            Expr::Field(_, s) | Expr::Str(_, s) | Expr::Bool(_, s) => *s = Span::default(),
            Expr::Not(e, s) => {
                *s = Span::default();
                e.clear_spans();
            }
            Expr::Index { base, span, .. } | Expr::Element { base, span, .. } => {
                *span = Span::default();
                base.clear_spans();
            }
            Expr::Call { args, span, .. } => {
                *span = Span::default();
                args.iter_mut().for_each(Expr::clear_spans);
            }
            Expr::Compare { lhs, rhs, span, .. } => {
                *span = Span::default();
                rhs.span = Span::default();
                lhs.clear_spans();
            }
            Expr::InSet { lhs, set, span } => {
                *span = Span::default();
                set.iter_mut().for_each(|l| l.span = Span::default());
                lhs.clear_spans();
            }
            Expr::InList { lhs, span, .. } => {
                *span = Span::default();
                lhs.clear_spans();
            }
            Expr::Logic { lhs, rhs, span, .. } => {
                *span = Span::default();
                lhs.clear_spans();
                rhs.clear_spans();
            }
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Logic { op, .. } => op.precedence(),
            Expr::Not(..) => 4,
            _ => 5,
        }
    }
}

/// Writes a string literal with `"` and `\` escaped.
pub(crate) fn write_str_lit(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_str_lit(f, s),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Ip(ip) => write!(f, "{ip}"),
            Literal::Cidr(net) => write!(f, "{}/{}", net.ip(), net.prefix()),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Field(field, _) => f.write_str(field.name()),
            Expr::Index { base, key, .. } => {
                write!(f, "{base}[")?;
                write_str_lit(f, key)?;
                f.write_str("]")
            }
            Expr::Element { base, index, .. } => match index {
                ElemIndex::At(n) => write!(f, "{base}[{n}]"),
                ElemIndex::Star => write!(f, "{base}[*]"),
            },
            Expr::Call { func, args, .. } => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Str(s, _) => write_str_lit(f, s),
            Expr::Bool(b, _) => write!(f, "{b}"),
            Expr::Compare { lhs, op, rhs, .. } => {
                write_operand(f, lhs)?;
                write!(f, " {} {}", op.name(), rhs.value)
            }
            Expr::InSet { lhs, set, .. } => {
                write_operand(f, lhs)?;
                f.write_str(" in {")?;
                for (i, l) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{}", l.value)?;
                }
                f.write_str("}")
            }
            Expr::InList { lhs, list, .. } => {
                write_operand(f, lhs)?;
                write!(f, " in ${list}")
            }
            Expr::Not(e, _) => {
                f.write_str("not ")?;
                if e.precedence() < 4 {
                    write!(f, "({e})")
                } else {
                    write!(f, "{e}")
                }
            }
            Expr::Logic { op, lhs, rhs, .. } => {
                let p = op.precedence();
                if lhs.precedence() < p {
                    write!(f, "({lhs})")?;
                } else {
                    write!(f, "{lhs}")?;
                }
                write!(f, " {} ", op.name())?;
                if rhs.precedence() <= p {
                    write!(f, "({rhs})")
                } else {
                    write!(f, "{rhs}")
                }
            }
        }
    }
}

/// The left side of a comparison is a value; a boolean there needs parentheses to read back.
fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    match e {
        Expr::Compare { .. }
        | Expr::InSet { .. }
        | Expr::InList { .. }
        | Expr::Not(..)
        | Expr::Logic { .. } => write!(f, "({e})"),
        _ => write!(f, "{e}"),
    }
}
