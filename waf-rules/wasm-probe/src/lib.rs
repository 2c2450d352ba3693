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

/// The engine on the full CRS, for `bench.mjs` to time in V8: the requests `crs_latency` times
/// natively (a bare `GET /`, the `bench/proxy` GET and JSON POST, the first legit-dev requests),
/// so the two runs give the cost of wasm beside native code.
#[cfg(feature = "bench")]
mod bench {
    use std::cell::RefCell;
    use waf_rules::harness::{parse_jsonl, CorpusEntry};
    use waf_rules::{HttpRequest, Mode, RuleSet, WafConfig};

    mod embedded {
        include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
    }

    struct State {
        rules: RuleSet,
        requests: Vec<HttpRequest>,
    }

    thread_local! {
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
        static REQUESTS: RefCell<Option<Vec<HttpRequest>>> = const { RefCell::new(None) };
    }

    fn requests() -> Vec<HttpRequest> {
        let mut all = waf_rules::harness::bench_requests().to_vec();
        // What `bench/edge/run` sends the worker as its benign GET.
        let header = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        all.push(HttpRequest {
            method: "GET".into(),
            uri: "/api/products/2?ref=newsletter&utm_source=mail".into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                header("Host", "shop.example.com"),
                header(
                    "User-Agent",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
                ),
                header(
                    "Accept",
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                ),
                header("Accept-Language", "en-US,en;q=0.9"),
            ],
            ..Default::default()
        });
        let legit: Vec<CorpusEntry> = parse_jsonl(embedded::LEGIT).unwrap_or_default();
        all.extend(legit.iter().map(CorpusEntry::to_request));
        all
    }

    /// Loads CRS at paranoia `pl` (every matcher built; with `lazy` != 0, as the edge worker
    /// does: matchers built on first use, with the `@rx` analyses the build script embedded;
    /// memo on when `memo` != 0); returns the number of requests (0 bare GET, 1 GET, 2 POST,
    /// 3 the edge bench's GET, then legit-dev), or 0 when CRS does not load.
    #[no_mangle]
    pub extern "C" fn bench_load(pl: u32, memo: u32, lazy: u32) -> u32 {
        let own = |fs: &[(&str, &str)]| -> Vec<(String, String)> {
            fs.iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect()
        };
        let cfg = WafConfig {
            mode: Mode::Block,
            paranoia: u8::try_from(pl).unwrap_or(1),
            ..WafConfig::default()
        };
        let (conf, data) = (own(embedded::CONF), own(embedded::DATA));
        let loaded = if lazy != 0 {
            RuleSet::from_sources_hinted(
                &conf,
                &data,
                &cfg,
                waf_rules::operator::Compile::Lazy,
                Some(&waf_rules::prefilter::RxHints::from_rows(
                    embedded::RX_HINTS,
                )),
            )
        } else {
            RuleSet::from_sources(&conf, &data, &cfg)
        };
        let Ok(mut rules) = loaded else { return 0 };
        rules.set_memo(memo != 0);
        let requests = REQUESTS
            .with(|r| r.borrow_mut().take())
            .unwrap_or_else(requests);
        let n = requests.len() as u32;
        STATE.with(|s| *s.borrow_mut() = Some(State { rules, requests }));
        n
    }

    /// Parses the requests ahead of [`bench_load`], so that a caller timing the load times the
    /// rule set's alone; returns how many there are.
    #[no_mangle]
    pub extern "C" fn bench_requests() -> u32 {
        let requests = requests();
        let n = requests.len() as u32;
        REQUESTS.with(|r| *r.borrow_mut() = Some(requests));
        n
    }

    /// Evaluates request `i` `times` times; returns its anomaly score (-1: no such request).
    #[no_mangle]
    pub extern "C" fn bench_eval(i: u32, times: u32) -> i64 {
        STATE.with(|s| {
            let s = s.borrow();
            let Some(st) = s.as_ref() else { return -1 };
            let Some(r) = st.requests.get(i as usize) else {
                return -1;
            };
            let mut score = 0;
            for _ in 0..times {
                score = st.rules.evaluate(r).score;
            }
            score
        })
    }
}
