//! The SecLang front end must return a result (never panic) for any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = waf_rules::RuleSet::from_sources(
        &[("fuzz.conf".into(), text)],
        &[],
        &waf_rules::WafConfig::default(),
    );
});
