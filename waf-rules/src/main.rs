//! `waf-rules`: check rule files, run CRS regression tests, score corpora, explain verdicts.
fn main() {}
