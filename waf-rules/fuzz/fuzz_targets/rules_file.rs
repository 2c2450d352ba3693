//! Any custom rules file: loading succeeds or returns a located error, never panics; a loaded
//! rule set runs its own test cases and judges a request without panicking.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| waf_rules::fuzzing::check_rules_file(data));
