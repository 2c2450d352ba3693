//! Any expression text: parse, print, re-parse, type-check; none of it may panic, and
//! printing is stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| waf_rules::fuzzing::check_expr(data));
