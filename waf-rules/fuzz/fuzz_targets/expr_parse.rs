//! Any text: parse, print, re-parse, type-check; none of it may panic, and printing is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waf_rules::expr::{check, parse, ListKind};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = parse(src) else {
        return;
    };
    let printed = e.to_string();
    let again = parse(&printed).expect("printed expressions parse");
    assert_eq!(again.to_string(), printed);
    let _ = check(src, &e, &|name: &str| {
        if name.starts_with('i') {
            Some(ListKind::Ip)
        } else {
            Some(ListKind::Str)
        }
    });
});
