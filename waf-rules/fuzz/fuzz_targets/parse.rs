//! The SecLang front end on any text: it loads, or fails naming a place in the file; what
//! loads runs on two requests without panicking.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| waf_rules::fuzzing::check_seclang(data));
