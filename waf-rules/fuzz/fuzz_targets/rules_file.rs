//! Any rules file: loading either succeeds or returns a located error, never panics; a loaded
//! ruleset runs its own test cases without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waf_rules::custom::CustomRules;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match CustomRules::from_toml("fuzz.toml", text) {
        Ok(rules) => {
            let _ = rules.run_tests(1_790_000_000_000);
        }
        Err(e) => {
            let (file, line, column) = e.location();
            assert_eq!(file, "fuzz.toml");
            assert!(line >= 1 && column >= 1);
        }
    }
});
