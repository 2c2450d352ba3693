//! Errors from reading an expression: where (byte offset, line, column) and what was expected.

use std::fmt;

/// A byte range in the expression's source text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// An expression that cannot be read or does not type-check.
///
/// `line` and `column` are 1-based and counted inside the expression; a rules file maps `offset` to
/// its own line and column (see [`crate::custom`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ParseError {
    /// Byte offset of the offending text in the expression.
    pub offset: usize,
    /// 1-based line inside the expression.
    pub line: usize,
    /// 1-based column (in characters) inside the expression.
    pub column: usize,
    /// What the reader expected there, or what is wrong.
    pub message: String,
    /// The offending text (may be empty at the end of the input).
    pub found: String,
}

impl ParseError {
    /// An error at `span` of `src`.
    pub fn new(src: &str, span: Span, message: impl Into<String>) -> Self {
        let offset = span.start.min(src.len());
        let (line, column) = line_col(src, offset);
        let end = span.end.clamp(offset, src.len());
        let found: String = src
            .get(offset..end)
            .unwrap_or("")
            .chars()
            .take(40)
            .collect();
        ParseError {
            offset,
            line,
            column,
            message: message.into(),
            found,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if self.found.is_empty() {
            if !self.message.contains("found") {
                write!(f, ", found the end of the expression")?;
            }
        } else if !self.message.contains("found") {
            write!(f, ", found `{}`", self.found)?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars_and_lines() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc", 2), (1, 3));
        assert_eq!(line_col("a\nbé\nc", 5), (2, 3));
        assert_eq!(line_col("a\nbé\nc", 6), (3, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
