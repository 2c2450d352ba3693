//! Evaluation must never panic on any request: the bytes are split into method, target,
//! one header, a content type and a body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const RULES: &str = r#"
SecRule ARGS|ARGS_NAMES|REQUEST_HEADERS|REQUEST_COOKIES|XML:/*|FILES_NAMES|MULTIPART_PART_HEADERS "@rx (?i)<script" "id:1,phase:2,deny,capture,t:none,t:urlDecodeUni,t:htmlEntityDecode,t:jsDecode,t:cssDecode,t:lowercase,setvar:'tx.s=+%{tx.critical}'"
SecRule REQUEST_BODY|REQUEST_FILENAME|REQUEST_BASENAME "@detectSQLi" "id:2,phase:2,pass,t:cmdLine,t:normalizePathWin,multiMatch"
SecRule ARGS "@detectXSS" "id:3,phase:2,pass,t:utf8toUnicode,t:base64Decode"
SecRule &ARGS "@gt 2" "id:4,phase:2,pass,chain"
    SecRule MATCHED_VARS "@validateByteRange 32-126" "setvar:tx.x=1"
"#;

fn rules() -> &'static waf_rules::RuleSet {
    static RS: OnceLock<waf_rules::RuleSet> = OnceLock::new();
    RS.get_or_init(|| {
        waf_rules::RuleSet::from_sources(
            &[("f.conf".into(), RULES.into())],
            &[],
            &waf_rules::WafConfig::default(),
        )
        .expect("fuzz rules load")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |&b| b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let method = next();
    let uri = next();
    let header = next();
    let ct = next();
    let body = parts.next().unwrap_or_default().to_vec();
    let req = waf_rules::HttpRequest {
        method,
        uri,
        version: "HTTP/1.1".into(),
        headers: vec![("X-Fuzz".into(), header), ("Content-Type".into(), ct)],
        body,
        ..Default::default()
    };
    let _ = rules().evaluate(&req);
});
