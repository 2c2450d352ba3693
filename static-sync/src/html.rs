//! Whether an HTML page parses: the WHATWG tokenizer (html5ever) reports its parse errors
//! with line numbers, and a stack of open elements catches stray and unclosed tags (the
//! mistakes that make a browser silently restructure a page).

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// A problem in an HTML page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtmlProblem {
    /// 1-based line.
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];
/// Elements whose end tag may be left out.
const OPTIONAL_END: &[&str] = &[
    "html", "head", "body", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead",
    "tbody", "tfoot", "colgroup", "caption", "rb", "rt", "rp",
];

struct Sink {
    problems: RefCell<Vec<HtmlProblem>>,
    open: RefCell<Vec<(String, u32)>>,
}

impl Sink {
    fn problem(&self, line: u64, message: String) {
        self.problems.borrow_mut().push(HtmlProblem {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            message,
        });
    }

    fn tag(&self, tag: &Tag, line: u64) -> TokenSinkResult<()> {
        let name = tag.name.to_string();
        let line32 = u32::try_from(line).unwrap_or(u32::MAX);
        match tag.kind {
            TagKind::StartTag => {
                let mut seen: Vec<&str> = Vec::new();
                for a in &tag.attrs {
                    let an: &str = &a.name.local;
                    if seen.contains(&an) {
                        self.problem(line, format!("duplicate attribute `{an}` on <{name}>"));
                    }
                    seen.push(an);
                }
                if !VOID.contains(&name.as_str()) && !tag.self_closing {
                    self.open.borrow_mut().push((name.clone(), line32));
                }
                match name.as_str() {
                    "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                        TokenSinkResult::RawData(RawKind::Rawtext)
                    }
                    "textarea" | "title" => TokenSinkResult::RawData(RawKind::Rcdata),
                    _ => TokenSinkResult::Continue,
                }
            }
            TagKind::EndTag => {
                if VOID.contains(&name.as_str()) {
                    if name != "br" {
                        self.problem(line, format!("end tag </{name}> for a void element"));
                    }
                    return TokenSinkResult::Continue;
                }
                let mut open = self.open.borrow_mut();
                match open.iter().rposition(|(n, _)| *n == name) {
                    Some(at) => {
                        let unclosed: Vec<(String, u32)> = open.drain(at..).skip(1).collect();
                        open.truncate(at);
                        drop(open);
                        for (n, l) in unclosed {
                            if !OPTIONAL_END.contains(&n.as_str()) {
                                self.problem(
                                    line,
                                    format!(
                                        "<{n}> opened at line {l} is not closed before </{name}>"
                                    ),
                                );
                            }
                        }
                    }
                    None => {
                        drop(open);
                        self.problem(line, format!("end tag </{name}> has no open <{name}>"));
                    }
                }
                TokenSinkResult::Continue
            }
        }
    }
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, line_number: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => self.tag(&tag, line_number),
            Token::ParseError(msg) => {
                self.problem(line_number, format!("HTML parse error: {msg}"));
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

/// Parses a page and returns its problems in line order (empty if it is well formed).
pub fn validate(html: &str) -> Vec<HtmlProblem> {
    let sink = Sink {
        problems: RefCell::new(Vec::new()),
        open: RefCell::new(Vec::new()),
    };
    let tok = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    queue.push_back(StrTendril::from(html));
    let _ = tok.feed(&queue);
    tok.end();
    let sink = tok.sink;
    let mut problems = sink.problems.into_inner();
    for (n, l) in sink.open.into_inner() {
        if !OPTIONAL_END.contains(&n.as_str()) {
            problems.push(HtmlProblem {
                line: l,
                message: format!("<{n}> is never closed"),
            });
        }
    }
    problems.sort_by_key(|p| p.line);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_page_has_no_problems() {
        let page = "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>A < B</title>\n<script>if (a < b && c) {}</script><style>a>b{}</style></head>\n<body><p>one<p>two<ul><li>x<li>y</ul><img src=a.png alt=''><br></body></html>\n";
        assert_eq!(validate(page), vec![]);
    }

    #[test]
    fn unclosed_and_stray_tags_are_named_with_lines() {
        let page = "<!doctype html>\n<body>\n<div>\n<section>\n</div>\n</span>\n</body>";
        let problems = validate(page);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].line, 5);
        assert!(problems[0].message.contains("<section> opened at line 4"));
        assert_eq!(problems[1].line, 6);
        assert!(problems[1].message.contains("</span>"));
    }

    #[test]
    fn tokenizer_errors_and_duplicates_are_reported() {
        let problems =
            validate("<div class=a class=b>\n<a href=\"x\"title=y></a></div>\n<!-- open");
        assert!(
            problems
                .iter()
                .any(|p| p.message.to_lowercase().contains("duplicate attribute")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.message.contains("parse error")),
            "{problems:?}"
        );
    }
}
