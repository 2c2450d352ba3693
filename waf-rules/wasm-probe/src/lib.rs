//! A wasm export that loads a rule set from text and evaluates one request, so that the
//! module contains the whole engine (parser, compiler, body processors, operators).

/// Loads `rules` (SecLang) and evaluates a request for `uri`; returns the anomaly score, or
/// -1 when the rules do not load. Inputs are passed as lengths into a static buffer to keep
/// the probe free of pointers.
#[no_mangle]
pub extern "C" fn waf_probe(n: u32) -> i64 {
    let rules = format!(
        "SecRule ARGS|REQUEST_HEADERS \"@rx (?i)<script\" \"id:1,phase:2,deny,t:none,t:urlDecodeUni,t:htmlEntityDecode,setvar:tx.s=+{n}\"\nSecRule ARGS \"@detectSQLi\" \"id:2,phase:2,deny\"\nSecRule ARGS \"@detectXSS\" \"id:3,phase:2,deny\"\nSecRule ARGS \"@pm a b c\" \"id:4,phase:2,pass\"\n"
    );
    let Ok(rs) = waf_rules::RuleSet::from_sources(
        &[("probe.conf".into(), rules)],
        &[],
        &waf_rules::WafConfig::default(),
    ) else {
        return -1;
    };
    let req = waf_rules::HttpRequest {
        method: "POST".into(),
        uri: format!("/?q={n}"),
        version: "HTTP/1.1".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: br#"{"a":"<script>"}"#.to_vec(),
        ..Default::default()
    };
    rs.evaluate(&req).score
}
