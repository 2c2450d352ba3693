//! The engine: compiled rules ([`RuleSet`]) and their evaluation against one request.
//!
//! Loading turns SecLang into a flat, per-phase list of rules whose regexes, phrase sets and
//! transformation chains are compiled once. Evaluation builds a [`Request`] model, runs phase 1,
//! processes the body, runs phase 2, and reads the anomaly score CRS computed in its TX
//! collection. Transformation results are cached per (value, transformation prefix) for the
//! request, so `t:urlDecodeUni,t:lowercase` after `t:urlDecodeUni` costs one step.

mod compile;
mod eval;
mod lits;
mod memo;
mod tx;

use crate::config::{Mode, WafConfig};
use crate::error::LoadError;
use crate::macros::Macro;
use crate::operator::Operator;
use crate::seclang;
use crate::transform::Transform;
use serde::Serialize;

/// A fast hasher for the engine's integer keys and short strings.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// "No TX slot": the name is not known at load (or not a TX name).
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// A rule set id no other rule set in this process has had.
fn new_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Severity as CRS tags its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum Severity {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

/// What the host should do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it (the host answers 403 with a reference id).
    Block,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// The rule id.
    pub id: u32,
    /// The rule's message, macros expanded.
    pub msg: String,
    /// The variable that matched, e.g. `ARGS:q`.
    pub variable: String,
    /// The transformed value that matched, capped at [`crate::Limits::excerpt_bytes`].
    pub value_excerpt: String,
    /// The rule's paranoia level (from its `paranoia-level/N` tag; 1 if untagged).
    pub paranoia: u8,
    /// The rule's severity, if it has one.
    pub severity: Option<Severity>,
}

/// The outcome of evaluating one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allow or block. In [`Mode::Detect`] this is always [`Action::Allow`].
    pub action: Action,
    /// The inbound anomaly score (CRS `tx.blocking_inbound_anomaly_score`).
    pub score: i64,
    /// Every logged rule that matched, in evaluation order.
    pub matches: Vec<RuleMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disruptive {
    Pass,
    Deny,
    Block,
    Allow,
}

/// A variable (or collection) CRS rules read.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Var {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    Headers,
    HeadersNames,
    Cookies,
    CookiesNames,
    Files,
    FilesNames,
    FilesSizes,
    MultipartPartHeaders,
    Xml,
    Tx,
    MatchedVars,
    MatchedVarsNames,
    RequestUri,
    RequestUriRaw,
    RequestFilename,
    RequestBasename,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    QueryString,
    RequestBody,
    RequestBodyLength,
    RemoteAddr,
    UniqueId,
    ReqbodyProcessor,
    ReqbodyError,
    ReqbodyErrorMsg,
    ArgsCombinedSize,
    FilesCombinedSize,
    MatchedVar,
    MatchedVarName,
    InboundDataError,
    MultipartStrictError,
    MultipartUnmatchedBoundary,
    FullRequestLength,
}

// `Var::bit` needs every variable to fit a u64 (the last one is the largest).
const _: () = assert!((Var::FullRequestLength as u32) < 64);

impl Var {
    /// This variable's bit in a set of variables (there are fewer than 64).
    pub(crate) fn bit(self) -> u64 {
        1 << (self as u32)
    }

    fn from_name(n: &str) -> Option<Var> {
        Some(match n {
            "ARGS" => Var::Args,
            "ARGS_GET" => Var::ArgsGet,
            "ARGS_POST" => Var::ArgsPost,
            "ARGS_NAMES" => Var::ArgsNames,
            "ARGS_GET_NAMES" => Var::ArgsGetNames,
            "ARGS_POST_NAMES" => Var::ArgsPostNames,
            "REQUEST_HEADERS" => Var::Headers,
            "REQUEST_HEADERS_NAMES" => Var::HeadersNames,
            "REQUEST_COOKIES" => Var::Cookies,
            "REQUEST_COOKIES_NAMES" => Var::CookiesNames,
            "FILES" => Var::Files,
            "FILES_NAMES" => Var::FilesNames,
            "FILES_SIZES" => Var::FilesSizes,
            "MULTIPART_PART_HEADERS" => Var::MultipartPartHeaders,
            "XML" => Var::Xml,
            "TX" => Var::Tx,
            "MATCHED_VARS" => Var::MatchedVars,
            "MATCHED_VARS_NAMES" => Var::MatchedVarsNames,
            "REQUEST_URI" => Var::RequestUri,
            "REQUEST_URI_RAW" => Var::RequestUriRaw,
            "REQUEST_FILENAME" => Var::RequestFilename,
            "REQUEST_BASENAME" => Var::RequestBasename,
            "REQUEST_LINE" => Var::RequestLine,
            "REQUEST_METHOD" => Var::RequestMethod,
            "REQUEST_PROTOCOL" => Var::RequestProtocol,
            "QUERY_STRING" => Var::QueryString,
            "REQUEST_BODY" => Var::RequestBody,
            "REQUEST_BODY_LENGTH" => Var::RequestBodyLength,
            "REMOTE_ADDR" => Var::RemoteAddr,
            "UNIQUE_ID" => Var::UniqueId,
            "REQBODY_PROCESSOR" => Var::ReqbodyProcessor,
            "REQBODY_ERROR" => Var::ReqbodyError,
            "REQBODY_ERROR_MSG" => Var::ReqbodyErrorMsg,
            "ARGS_COMBINED_SIZE" => Var::ArgsCombinedSize,
            "FILES_COMBINED_SIZE" => Var::FilesCombinedSize,
            "MATCHED_VAR" => Var::MatchedVar,
            "MATCHED_VAR_NAME" => Var::MatchedVarName,
            "INBOUND_DATA_ERROR" => Var::InboundDataError,
            "MULTIPART_STRICT_ERROR" => Var::MultipartStrictError,
            "MULTIPART_UNMATCHED_BOUNDARY" => Var::MultipartUnmatchedBoundary,
            "FULL_REQUEST_LENGTH" => Var::FullRequestLength,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Var::Args => "ARGS",
            Var::ArgsGet => "ARGS_GET",
            Var::ArgsPost => "ARGS_POST",
            Var::ArgsNames => "ARGS_NAMES",
            Var::ArgsGetNames => "ARGS_GET_NAMES",
            Var::ArgsPostNames => "ARGS_POST_NAMES",
            Var::Headers => "REQUEST_HEADERS",
            Var::HeadersNames => "REQUEST_HEADERS_NAMES",
            Var::Cookies => "REQUEST_COOKIES",
            Var::CookiesNames => "REQUEST_COOKIES_NAMES",
            Var::Files => "FILES",
            Var::FilesNames => "FILES_NAMES",
            Var::FilesSizes => "FILES_SIZES",
            Var::MultipartPartHeaders => "MULTIPART_PART_HEADERS",
            Var::Xml => "XML",
            Var::Tx => "TX",
            Var::MatchedVars => "MATCHED_VARS",
            Var::MatchedVarsNames => "MATCHED_VARS_NAMES",
            Var::RequestUri => "REQUEST_URI",
            Var::RequestUriRaw => "REQUEST_URI_RAW",
            Var::RequestFilename => "REQUEST_FILENAME",
            Var::RequestBasename => "REQUEST_BASENAME",
            Var::RequestLine => "REQUEST_LINE",
            Var::RequestMethod => "REQUEST_METHOD",
            Var::RequestProtocol => "REQUEST_PROTOCOL",
            Var::QueryString => "QUERY_STRING",
            Var::RequestBody => "REQUEST_BODY",
            Var::RequestBodyLength => "REQUEST_BODY_LENGTH",
            Var::RemoteAddr => "REMOTE_ADDR",
            Var::UniqueId => "UNIQUE_ID",
            Var::ReqbodyProcessor => "REQBODY_PROCESSOR",
            Var::ReqbodyError => "REQBODY_ERROR",
            Var::ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
            Var::ArgsCombinedSize => "ARGS_COMBINED_SIZE",
            Var::FilesCombinedSize => "FILES_COMBINED_SIZE",
            Var::MatchedVar => "MATCHED_VAR",
            Var::MatchedVarName => "MATCHED_VAR_NAME",
            Var::InboundDataError => "INBOUND_DATA_ERROR",
            Var::MultipartStrictError => "MULTIPART_STRICT_ERROR",
            Var::MultipartUnmatchedBoundary => "MULTIPART_UNMATCHED_BOUNDARY",
            Var::FullRequestLength => "FULL_REQUEST_LENGTH",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum KeySel {
    /// Lower-cased exact key.
    Name(String),
    /// A key regex (case-insensitive). On TX, the load-time names it selects are listed
    /// once (`Target::tx_slots`): TX holds hundreds of names and CRS's
    /// `TX:/^header_name_920450_/` reads a handful of them.
    Regex(KeyRegex),
}

/// A key regex. A literal one (`/^_pk_ref/`, `/^header_name_920450_/`) is matched as its text
/// and builds no regex: the regex crate takes several hundred instructions to try a short key,
/// a literal compare a few dozen, and CRS tries such regexes on every cookie and run-time TX
/// name. Not building them (and building each other pattern once, see `compile_target`)
/// matters most at an edge isolate's cold start, where the rule set loads on a request.
#[derive(Debug, Clone)]
pub(crate) enum KeyRegex {
    /// `^` and a literal of ASCII letters, digits, `_` and `-`: the key starts with it.
    Prefix(Box<[u8]>),
    /// Such a literal without `^`: the key holds it.
    Inside(Box<[u8]>),
    /// Any other pattern.
    Regex(regex::bytes::Regex),
}

impl KeyRegex {
    /// `pattern` compiled case-insensitively, with ASCII case folding only. A tail that can
    /// match nothing (`.*`, or a letter, digit, `_` or `-` with `*`) is dropped first: the
    /// pattern matches where the rest does, so `MULTIPART_HEADERS_CONTENT_TYPES_*` (CRS 922110,
    /// tried on every run-time TX name of every request) is matched as its literal too.
    pub(crate) fn new(pattern: &str) -> Result<KeyRegex, String> {
        let (anchored, mut body) = match pattern.strip_prefix('^') {
            Some(b) => (true, b),
            None => (false, pattern),
        };
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        // A trailing `.*` or `c*` (can match nothing, and nothing follows it).
        while let [rest @ .., c, b'*'] = body.as_bytes() {
            if !(*c == b'.' || word(*c)) {
                break;
            }
            body = &body[..rest.len()];
        }
        let literal = !body.is_empty() && body.bytes().all(word);
        Ok(match (literal, anchored) {
            (true, true) => KeyRegex::Prefix(body.as_bytes().into()),
            (true, false) => KeyRegex::Inside(body.as_bytes().into()),
            (false, _) => KeyRegex::Regex(
                Self::regex(pattern).map_err(|e| format!("bad key regex /{pattern}/: {e}"))?,
            ),
        })
    }

    /// The regex `pattern` stands for (ASCII case folding over the key's bytes, as PCRE
    /// without UTF mode; it also compiles in a fraction of the time Unicode case classes take).
    pub(crate) fn regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
        regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .case_insensitive(true)
            .build()
    }

    pub(crate) fn is_match(&self, key: &[u8]) -> bool {
        match self {
            KeyRegex::Prefix(l) => key.len() >= l.len() && key[..l.len()].eq_ignore_ascii_case(l),
            KeyRegex::Inside(l) => key.windows(l.len()).any(|w| w.eq_ignore_ascii_case(l)),
            KeyRegex::Regex(re) => re.is_match(key),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Target {
    var: Var,
    key: Option<KeySel>,
    count: bool,
    /// For `TX:name`: the name's TX slot (`NO_SLOT` until the rule set is assembled).
    tx_slot: u32,
    /// For `TX`, `TX:/regex/`: the slots of the load-time names it selects, ascending (names
    /// made at run time are matched when the rule runs).
    tx_slots: Vec<u32>,
}

#[derive(Debug)]
pub(crate) enum SetOp {
    Set(Macro),
    Add(Macro),
    Sub(Macro),
    Delete,
}

#[derive(Debug)]
pub(crate) struct SetVar {
    /// Lower-cased TX variable name (may hold macros).
    name: Macro,
    op: SetOp,
    /// The literal name's TX slot (`NO_SLOT` for a name made by macros).
    slot: u32,
    /// For `+` and `-` by one TX value (`=+%{tx.critical_anomaly_score}`, every CRS score
    /// increment): that value's slot, found at load (`NO_SLOT`: none, or a capture group).
    arg_slot: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum RuleSel {
    Ids(u32, u32),
    Tag(String),
}

#[derive(Debug)]
pub(crate) enum Ctl {
    RemoveById(Vec<(u32, u32)>),
    RemoveByTag(String),
    RemoveTarget(RuleSel, Vec<Target>),
    BodyProcessor(String),
    ForceBodyVariable(bool),
    RuleEngine(Mode),
}

#[derive(Debug)]
pub(crate) struct Rule {
    id: u32,
    phase: u8,
    targets: Vec<Target>,
    excludes: Vec<Target>,
    /// Bit `var as u32` set for each variable some entry of `excludes` names: most values a
    /// rule reads belong to a collection none of its exclusions touches.
    excluded_vars: u64,
    op: Operator,
    negated: bool,
    tnode: u32,
    msg: Option<Macro>,
    msg_raw: String,
    logdata: Option<Macro>,
    tags: Vec<String>,
    severity: Option<Severity>,
    paranoia: u8,
    setvars: Vec<SetVar>,
    ctls: Vec<Ctl>,
    capture: bool,
    multi_match: bool,
    log: bool,
    disruptive: Disruptive,
    skip_after: Option<String>,
    skip: usize,
    chain: Option<Box<Rule>>,
    is_action: bool,
    line: usize,
    /// Literals one of which any match contains (for the prefilter).
    literals: Option<crate::prefilter::Required>,
    /// (filter index, global slot) when the prefilter covers this rule.
    pf: Option<(u32, u32)>,
    /// Every target is a request variable the filter's per-request union covers, so the whole
    /// rule can be skipped when none of its literals occurs anywhere in the request.
    pf_skip: bool,
    /// The literals hold only for values without a marked byte
    /// ([`crate::prefilter::marked_byte`]); a marked value always runs the operator.
    pf_unmarked: bool,
    /// The length of this rule's shortest literal (cut as the automaton holds it; 0 when it
    /// has none): a value that comes out of its chain shorter cannot match.
    pf_min_len: usize,
    /// The global slot of the second literal set a match also holds one of
    /// ([`crate::prefilter::Required::also`]), in the same filter as `pf`: a value (and the
    /// request, for `pf_skip`) must hold a literal of each.
    pf_also: Option<u32>,
    /// A multiMatch rule's (filter index, global slot) at every node of its chain, the raw
    /// value's included: the operator runs on each step's value, so the rule can be skipped
    /// as a whole only when none of those unions holds a literal. Empty for other rules.
    pf_steps: Vec<(u32, u32)>,
    /// This link's index among every rule link of the rule set (heads and chained links, in
    /// order): per-link tables of an evaluation index by it.
    link: u32,
    /// The TX slot of an operator parameter that is one TX value
    /// (`@within %{tx.restricted_headers_basic}`), `NO_SLOT` otherwise.
    param_slot: u32,
    /// For a head that marks every name of a collection in TX, CRS 920450's idiom
    /// (`REQUEST_HEADERS_NAMES "@rx ^.*$" "capture,t:none,t:lowercase,
    /// setvar:'tx.header_name_920450_%{tx.0}=/%{tx.0}/',chain"`), compiled: such a head runs
    /// without the per-value machinery (`Ev::run_marker`).
    marker: Option<Box<Marker>>,
}

/// A head of CRS 920450's idiom, compiled (see [`Rule::marker`] and `mark_markers`).
#[derive(Debug)]
pub(crate) struct Marker {
    /// The made TX names' literal start (`header_name_920450_`).
    start: Box<str>,
    /// The chain is the plain check of the marked names, as CRS 920450's
    /// (`TX:/^header_name_920450_/ "@within %{tx.restricted_headers_basic}"`): one target,
    /// every TX name with the made names' start; `@within`; no transformation, capture, `ctl`,
    /// exclusion or further chain. It then runs without the per-value machinery too
    /// (`Ev::run_marked_within`).
    within: bool,
    /// No TX name the rules spell out starts with `start`, so no made name has a slot: it goes
    /// straight to the run-time names.
    slotless: bool,
}

/// The rules whose values pass through one transformation chain, as the prefilter sees them
/// (those that read headers and those that do not in two filters, see `Groups`).
#[derive(Debug)]
pub(crate) struct NodeFilter {
    /// The length of the shortest literal of any of its slots (each cut as the automaton
    /// holds it; 0 when a slot has none): a value shorter than this holds none of them.
    min_len: usize,
    /// Whether a rule that reads this filter's union asks whether a value holds a marked
    /// byte (`Rule::pf_unmarked`): then no value may be skipped by its length.
    needs_marked: bool,
    /// First word of this filter's slots in the shared slot bitset.
    base_word: usize,
    /// Number of 64-bit words this filter's slots take.
    words: usize,
    /// The transformation node the filter reads values through.
    node: u32,
    /// The request variables whose values form the per-request union (targets of the rules
    /// marked `pf_skip`).
    vars: Vec<Var>,
}

/// One Aho-Corasick automaton over the literals of every prefiltered rule. A value is scanned
/// once per distinct transformed content, whichever chains produced it; each literal sets the
/// slot of the rule it belongs to (slots of one chain's rules are contiguous, word-aligned).
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// Over the distinct literals, each with the global slots of the rules it serves.
    lits: lits::LitScan,
    /// Number of 64-bit words in a slot bitset.
    words: usize,
    filters: Vec<NodeFilter>,
}

impl Var {
    /// Variables read straight from the request (no TX, no match state), which the
    /// per-request prefilter union covers.
    fn is_request_value(self) -> bool {
        matches!(
            self,
            Var::Args
                | Var::ArgsGet
                | Var::ArgsPost
                | Var::ArgsNames
                | Var::ArgsGetNames
                | Var::ArgsPostNames
                | Var::Headers
                | Var::HeadersNames
                | Var::Cookies
                | Var::CookiesNames
                | Var::Files
                | Var::FilesNames
                | Var::MultipartPartHeaders
                | Var::Xml
                | Var::RequestUri
                | Var::RequestUriRaw
                | Var::RequestFilename
                | Var::RequestBasename
                | Var::RequestLine
                | Var::RequestMethod
                | Var::RequestProtocol
                | Var::QueryString
                | Var::RequestBody
        )
    }
}

#[derive(Debug)]
pub(crate) enum Item {
    Rule(Box<Rule>),
    Marker(String),
}

/// A node of the transformation trie: a chain of steps, as its last step after its parent's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    pub(crate) parent: u32,
    pub(crate) step: Transform,
    /// The byte flags ([`crate::transform::flags`]) of which a value needs one for some step
    /// of the chain to change it, or [`Node::ALWAYS`] when a step may change any value. A
    /// value with none of them comes out of the whole chain as it went in.
    pub(crate) change: u32,
    /// As `change`, but for what the literal scan sees: the scan folds ASCII case, so the
    /// steps that only change case (`lowercase`, and `cmdLine` on a value without the bytes it
    /// deletes or folds) count for nothing. A value with none of these flags comes out of the
    /// chain equal to what went in but for ASCII case, and scans the same.
    pub(crate) scan_change: u32,
    /// What bounds the length of the chain's output, for the prefilter's length check.
    pub(crate) bound: LenBound,
}

/// A bound on the length of a chain's output that is cheap to work out from a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LenBound {
    /// No step lengthens a value: the output is at most as long as the raw value.
    Raw,
    /// A `base64Decode` step, after the chain of the node given and before steps that do not
    /// lengthen a value: the output is at most `Transform::base64_decoded_len` of that
    /// node's result.
    Base64(u32),
    /// A step may lengthen the value (`utf8toUnicode`, `hexEncode`, `length`, `sha1`).
    Unbounded,
}

impl Node {
    /// In [`Node::change`]: a step of the chain may change any value.
    pub(crate) const ALWAYS: u32 = 1 << 30;

    /// Whether the chain leaves a value with byte flags `flags` as it is.
    #[inline]
    pub(crate) fn keeps(&self, flags: u32) -> bool {
        self.change & Node::ALWAYS == 0 && flags & self.change == 0
    }

    /// Whether the chain leaves a value with byte flags `flags` as it is but for ASCII case:
    /// its literal slots (and marked bytes) are the raw value's.
    #[inline]
    pub(crate) fn scans_as_raw(&self, flags: u32) -> bool {
        self.scan_change & Node::ALWAYS == 0 && flags & self.scan_change == 0
    }
}

/// A loaded, compiled rule set. Immutable and `Send + Sync`: share one across threads.
#[derive(Debug)]
pub struct RuleSet {
    /// What this load's analysis of each `@rx` pattern found (for embedding).
    rx_hints: crate::prefilter::RxHints,
    /// Phase 1 and phase 2 items in order (markers appear in both).
    phases: [Vec<Item>; 2],
    /// For each item, where `skipAfter` lands (index after the marker), per phase.
    skip_to: [Vec<Option<usize>>; 2],
    /// For each item, its prefilter check when the rule can be skipped as a whole, per phase.
    gates: [Vec<Option<Gate>>; 2],
    /// Transformation trie. Node 0 is "no transformation".
    nodes: Vec<Node>,
    unsupported: Vec<(u32, String)>,
    prefilter: Option<Prefilter>,
    /// The TX names the rules spell out, each with a slot.
    tx_names: tx::TxNames,
    /// Phase 1's leading items that only read and write TX ([`prefix_classes`]), and what
    /// they leave under this rule set's configuration (computed at the first evaluation).
    prefix_class: Vec<u8>,
    prefix: std::sync::OnceLock<Option<eval::Prefix>>,
    /// Which links read which request entries under this configuration, for entries
    /// remembered as clean across requests (computed with the prefix).
    clean: std::sync::OnceLock<Option<eval::CleanPlan>>,
    config: WafConfig,
    file_engine: Option<Mode>,
    rule_count: usize,
    /// How many rule links there are (`Rule::link` is below it).
    links: usize,
    /// Unique in the process: names this rule set's operators in the cross-request memo.
    id: u64,
    /// Whether operator misses are remembered across requests ([`memo`]).
    memo: bool,
}

impl RuleSet {
    /// Loads rule files (in order) with their data files. Pure: no I/O.
    ///
    /// Each file is `(name, text)`; names are used in error messages. Data files are looked up
    /// by base name from `@pmFromFile`. Rules the engine cannot run are not an error: they are
    /// listed by [`RuleSet::unsupported`].
    pub fn from_sources(
        files: &[(String, String)],
        data_files: &[(String, String)],
        config: &WafConfig,
    ) -> Result<RuleSet, LoadError> {
        Self::from_sources_with(files, data_files, config, crate::operator::Compile::Eager)
    }

    /// [`RuleSet::from_sources`], choosing when regexes and phrase automata are built: the
    /// edge worker loads with [`Compile::Lazy`](crate::operator::Compile::Lazy) so its first
    /// request does not build matchers the prefilter never lets run.
    pub fn from_sources_with(
        files: &[(String, String)],
        data_files: &[(String, String)],
        config: &WafConfig,
        compile: crate::operator::Compile,
    ) -> Result<RuleSet, LoadError> {
        Self::from_sources_hinted(files, data_files, config, compile, None)
    }

    /// [`RuleSet::from_sources_with`], taking the `@rx` analyses an earlier load of the same
    /// rules recorded ([`RuleSet::rx_hints`]) instead of parsing those patterns again. With
    /// [`Compile::Lazy`](crate::operator::Compile::Lazy) a hinted pattern is not parsed at all
    /// at load; the hints must come from a load of the same rule text (they are keyed by the
    /// pattern, so a pattern that changed is parsed as usual).
    pub fn from_sources_hinted(
        files: &[(String, String)],
        data_files: &[(String, String)],
        config: &WafConfig,
        compile: crate::operator::Compile,
        hints: Option<&crate::prefilter::RxHints>,
    ) -> Result<RuleSet, LoadError> {
        let mut b = compile::Builder::new(data_files, compile, hints);
        for (name, text) in files {
            for d in seclang::lex(name, text)? {
                b.directive(&d)?;
            }
            b.finish(name)?;
        }
        let mut phases: [Vec<Item>; 2] = [Vec::new(), Vec::new()];
        let mut rule_count = 0;
        for it in b.items.drain(..) {
            match it {
                Item::Marker(m) => {
                    phases[0].push(Item::Marker(m.clone()));
                    phases[1].push(Item::Marker(m));
                }
                Item::Rule(r) => {
                    rule_count += 1;
                    let p = if r.phase == 1 { 0 } else { 1 };
                    phases[p].push(Item::Rule(r));
                }
            }
        }
        let skip_to = [resolve_skips(&phases[0]), resolve_skips(&phases[1])];
        let prefilter = build_prefilter(&mut phases, &b.nodes);
        mark_excluded_vars(&mut phases);
        mark_markers(&mut phases, &b.nodes);
        let links = number_links(&mut phases);
        let gates = [gates_of(&phases[0]), gates_of(&phases[1])];
        let tx_names = assign_tx_slots(&mut phases, config);
        let prefix_class = prefix_classes(&phases[0]);
        let mut config = config.clone();
        if let Some(l) = b.body_limit {
            config.limits.max_body_bytes = config.limits.max_body_bytes.min(l);
        }
        if let Some(l) = b.args_limit {
            config.limits.max_args = config.limits.max_args.min(l);
        }
        Ok(RuleSet {
            rx_hints: std::mem::take(&mut b.hints_out),
            phases,
            skip_to,
            gates,
            nodes: b.nodes,
            unsupported: b.unsupported,
            prefilter,
            tx_names,
            prefix_class,
            prefix: std::sync::OnceLock::new(),
            clean: std::sync::OnceLock::new(),
            config,
            file_engine: b.engine,
            rule_count,
            links,
            id: new_id(),
            memo: true,
        })
    }

    /// Rules that were loaded but cannot run here, with the reason (response-phase rules,
    /// unsupported operators, actions or variables).
    pub fn unsupported(&self) -> &[(u32, String)] {
        &self.unsupported
    }

    /// The `@rx` analyses this load made (empty for patterns it took from hints), for
    /// [`RuleSet::from_sources_hinted`].
    pub fn rx_hints(&self) -> &crate::prefilter::RxHints {
        &self.rx_hints
    }

    /// How many rules (chains count once) will run.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The paranoia level of a loaded rule (from its `paranoia-level/N` tag).
    pub fn rule_paranoia(&self, id: u32) -> Option<u8> {
        self.phases.iter().flatten().find_map(|it| match it {
            Item::Rule(r) if r.id == id => Some(r.paranoia),
            _ => None,
        })
    }

    /// How many `@rx` rules the literal prefilter covers, and in how many filters (one per
    /// transformation chain).
    pub fn prefilter_stats(&self) -> (usize, usize) {
        match &self.prefilter {
            Some(p) => (p.lits.slot_count(), p.filters.len()),
            None => (0, 0),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &WafConfig {
        &self.config
    }

    /// `SecRuleEngine` as the rule files set it, if they did. The host's [`WafConfig::mode`]
    /// decides; this is for diagnostics.
    pub fn file_engine_mode(&self) -> Option<Mode> {
        self.file_engine
    }

    /// Evaluates one request. Never panics; cost grows with the request size.
    pub fn evaluate(&self, req: &crate::HttpRequest) -> Verdict {
        eval::evaluate(
            self,
            req,
            &self.config,
            self.prefix(),
            self.clean_plan(),
            true,
        )
    }

    /// Evaluates with another configuration's mode, paranoia and TX overrides (same rules).
    pub fn evaluate_with(&self, req: &crate::HttpRequest, config: &WafConfig) -> Verdict {
        let (prefix, plan) = if eval::prefix_key(config) == eval::prefix_key(&self.config) {
            (self.prefix(), self.clean_plan())
        } else {
            (None, None)
        };
        eval::evaluate(self, req, config, prefix, plan, true)
    }

    /// [`RuleSet::evaluate_with`] running every rule, including the leading TX-only ones whose
    /// outcome the rule set otherwise keeps, and every rule through the general evaluation
    /// (none in a form of its own, see `Rule::marker`): for tests that compare the two.
    #[doc(hidden)]
    pub fn evaluate_every_rule(&self, req: &crate::HttpRequest, config: &WafConfig) -> Verdict {
        eval::evaluate(self, req, config, None, None, false)
    }

    /// Drops the literal prefilter: every rule then runs on every value it reads. For tests
    /// and fuzzers that check the prefilter never changes a verdict.
    #[doc(hidden)]
    pub fn drop_prefilter(&mut self) {
        self.prefilter = None;
        self.gates = [Vec::new(), Vec::new()];
    }

    /// Turns the cross-request memo of operator misses ([`memo`]) off (every operator then runs
    /// on every value it is given) or on again, empty: the rule set takes a new id, so what was
    /// remembered under the old one is never looked at. For tests, fuzzers and benchmarks.
    #[doc(hidden)]
    pub fn set_memo(&mut self, on: bool) {
        self.memo = on;
        if on {
            self.id = new_id();
        }
    }

    /// How many leading phase 1 items decide the same for every request and are run once per
    /// rule set (0 when none, or when they did not run silently).
    pub fn tx_prefix_len(&self) -> usize {
        self.prefix().map_or(0, eval::Prefix::len)
    }

    /// How many rules after the prefix have an outcome fixed for this configuration (tests).
    #[cfg(test)]
    pub(crate) fn fixed_rules(&self) -> usize {
        self.prefix().map_or(0, eval::Prefix::fixed_rules)
    }

    pub(in crate::engine) fn clean_plan(&self) -> Option<&eval::CleanPlan> {
        self.clean
            .get_or_init(|| eval::clean_plan(self, self.prefix()))
            .as_ref()
    }

    fn prefix(&self) -> Option<&eval::Prefix> {
        self.prefix
            .get_or_init(|| eval::run_prefix(self, &self.config))
            .as_ref()
    }
}

/// The prefilter's view of one transformation node while it is built.
#[derive(Default)]
struct Group {
    /// (literal, rule slot) pairs; the literal (lower-cased, cut to `MAX_LITERAL` bytes) as
    /// its [`literal_key`]: CRS has 15 k of them, and the edge worker builds this on an
    /// isolate's first request, so none is a `Vec` of its own.
    lits: Vec<(u128, u32)>,
    /// The next free slot.
    slots: u32,
    /// The request variables of the rules that can be skipped as a whole.
    vars: Vec<Var>,
    /// The slots of second literal sets (`Rule::pf_also`): a value without them may still
    /// hold a rule's first set, so they do not count for the filter's shortest literal.
    second: Vec<u32>,
}

/// How each leading item of phase 1 depends on the request, up to the first that reads it:
/// `2` decides the same for every request under one configuration (its targets, operator
/// parameter and `setvar`s involve only TX; markers too), `1` only its first link does (so it
/// is request-independent as long as that link does not match). Whether they then run silently,
/// without stopping or a `ctl`, is checked when they run: see `eval::run_prefix`.
fn prefix_classes(items: &[Item]) -> Vec<u8> {
    fn tx_only(m: &Macro) -> bool {
        m.vars().all(|(n, _)| n == "TX")
    }
    fn link_safe(r: &Rule) -> bool {
        !r.is_action
            && r.targets.iter().all(|t| t.var == Var::Tx)
            && r.op.param_macro().is_none_or(tx_only)
    }
    fn safe(r: &Rule) -> bool {
        (r.is_action || link_safe(r))
            && r.setvars.iter().all(|sv| {
                tx_only(&sv.name)
                    && match &sv.op {
                        SetOp::Set(m) | SetOp::Add(m) | SetOp::Sub(m) => tx_only(m),
                        SetOp::Delete => true,
                    }
            })
            && r.chain.as_deref().is_none_or(safe)
    }
    items
        .iter()
        .map(|it| match it {
            Item::Marker(_) => 2,
            Item::Rule(r) if safe(r) => 2,
            Item::Rule(r) if link_safe(r) => 1,
            Item::Rule(_) => 0,
        })
        .take_while(|&c| c != 0)
        .collect()
}

/// Gives every TX name the rules (or the configuration) spell out a slot, and writes the slots
/// into the rules that read or set those names.
fn assign_tx_slots(phases: &mut [Vec<Item>; 2], config: &WafConfig) -> tx::TxNames {
    fn macro_names(m: &Macro, out: &mut Vec<String>) {
        for (n, k) in m.vars() {
            if let ("TX", Some(k)) = (n, k) {
                out.push(k.to_ascii_lowercase());
            }
        }
    }
    fn names_of(r: &Rule, out: &mut Vec<String>) {
        for t in &r.targets {
            if let (Var::Tx, Some(KeySel::Name(n))) = (t.var, &t.key) {
                out.push(n.clone());
            }
        }
        for sv in &r.setvars {
            if let Some(l) = sv.name.literal() {
                out.push(String::from_utf8_lossy(l).into_owned());
            }
            if let SetOp::Set(m) | SetOp::Add(m) | SetOp::Sub(m) = &sv.op {
                macro_names(m, out);
            }
        }
        for m in r.msg.iter().chain(&r.logdata) {
            macro_names(m, out);
        }
        if let Some(c) = &r.chain {
            names_of(c, out);
        }
    }
    fn fix(r: &mut Rule, names: &tx::TxNames) {
        for t in &mut r.targets {
            match (t.var, &t.key) {
                (Var::Tx, Some(KeySel::Name(n))) => t.tx_slot = names.slot(n).unwrap_or(NO_SLOT),
                (Var::Tx, Some(KeySel::Regex(re))) => {
                    t.tx_slots = names.slots_where(|k| re.is_match(k.as_bytes()));
                }
                (Var::Tx, None) => t.tx_slots = names.slots_where(|_| true),
                _ => {}
            }
        }
        if let Some(k) = r.op.param_macro().and_then(eval::single_tx_key) {
            r.param_slot = names.slot(k).unwrap_or(NO_SLOT);
        }
        if let Some(m) = &mut r.marker {
            m.slotless = names.slots_where(|k| k.starts_with(&*m.start)).is_empty();
        }
        for sv in &mut r.setvars {
            if let Some(l) = sv.name.literal() {
                sv.slot = names.slot(&String::from_utf8_lossy(l)).unwrap_or(NO_SLOT);
            }
            if let SetOp::Add(m) | SetOp::Sub(m) = &sv.op {
                // (A one-digit key is a capture group, which has a slot of its own.)
                if let Some(k) = eval::single_tx_key(m).filter(|k| k.len() > 1) {
                    sv.arg_slot = names.slot(k).unwrap_or(NO_SLOT);
                }
            }
        }
        if let Some(c) = &mut r.chain {
            fix(c, names);
        }
    }
    let mut list: Vec<String> = [
        "blocking_paranoia_level",
        "inbound_anomaly_score_threshold",
        "blocking_inbound_anomaly_score",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((1..=4).map(|p| format!("inbound_anomaly_score_pl{p}")))
    .chain(config.tx.keys().map(|k| k.to_ascii_lowercase()))
    .collect();
    for it in phases.iter().flatten() {
        if let Item::Rule(r) = it {
            names_of(r, &mut list);
        }
    }
    let names = tx::TxNames::new(list);
    for it in phases.iter_mut().flatten() {
        if let Item::Rule(r) = it {
            fix(r, &names);
        }
    }
    names
}

/// Fills in every rule's [`Rule::excluded_vars`] once its exclusions are final.
fn mark_excluded_vars(phases: &mut [Vec<Item>; 2]) {
    fn mark(r: &mut Rule) {
        r.excluded_vars = r.excludes.iter().fold(0, |m, ex| m | ex.var.bit());
        if let Some(c) = r.chain.as_deref_mut() {
            mark(c);
        }
    }
    for it in phases.iter_mut().flatten() {
        if let Item::Rule(r) = it {
            mark(r);
        }
    }
}

/// Fills in [`Rule::marker`] for the heads that mark every name of a collection in TX and do
/// nothing else per value: one target (a collection's names, whole, without exclusions),
/// `@rx ^.*$` with `capture`, `t:lowercase` alone, one `setvar` `tx.<start>%{tx.0}=/%{tx.0}/`,
/// no `ctl`, no multiMatch, no prefilter. What follows the head (its chain, its actions) is
/// left as it is.
fn mark_markers(phases: &mut [Vec<Item>; 2], nodes: &[Node]) {
    use crate::macros::Part;
    fn tx0(p: &Part) -> bool {
        matches!(p, Part::Var(n, Some(k)) if n == "TX" && k == "0")
    }
    fn start(r: &Rule, nodes: &[Node]) -> Option<Box<str>> {
        let [t] = r.targets.as_slice() else {
            return None;
        };
        let names = matches!(
            t.var,
            Var::HeadersNames
                | Var::ArgsNames
                | Var::ArgsGetNames
                | Var::ArgsPostNames
                | Var::CookiesNames
                | Var::FilesNames
        );
        let node = nodes.get(r.tnode as usize)?;
        let plain = names
            && t.key.is_none()
            && !t.count
            && r.excludes.is_empty()
            && !r.is_action
            && r.op.matches_every_value()
            && !r.negated
            && r.capture
            && !r.multi_match
            && r.ctls.is_empty()
            && r.pf.is_none()
            && r.pf_steps.is_empty()
            && r.tnode != 0
            && node.parent == 0
            && node.step == crate::transform::Transform::Lowercase;
        let [sv] = r.setvars.as_slice() else {
            return None;
        };
        let (true, SetOp::Set(value)) = (plain, &sv.op) else {
            return None;
        };
        let start = match sv.name.parts.as_slice() {
            [Part::Lit(l), v] if tx0(v) && !l.is_empty() => l,
            _ => return None,
        };
        let slashed = match value.parts.as_slice() {
            [Part::Lit(a), v, Part::Lit(b)] => a == "/" && tx0(v) && b == "/",
            _ => false,
        };
        // (Names are lower-cased at load; a made name is lower-cased again when it is set.)
        (slashed && !start.bytes().any(|b| b.is_ascii_uppercase())).then(|| start.as_str().into())
    }
    fn within(c: &Rule, start: &str) -> bool {
        let [t] = c.targets.as_slice() else {
            return false;
        };
        let selects = matches!(
            (&t.var, &t.key),
            (Var::Tx, Some(KeySel::Regex(KeyRegex::Prefix(p))))
                if p.eq_ignore_ascii_case(start.as_bytes())
        );
        selects
            && !t.count
            && c.excludes.is_empty()
            && matches!(c.op, Operator::Within(_))
            && !c.negated
            && c.tnode == 0
            && !c.capture
            && !c.multi_match
            && c.ctls.is_empty()
            && c.chain.is_none()
            && !c.is_action
            && c.pf.is_none()
            && c.pf_steps.is_empty()
    }
    for it in phases.iter_mut().flatten() {
        if let Item::Rule(r) = it {
            r.marker = start(r, nodes).map(|start| {
                let within = r.chain.as_deref().is_some_and(|c| within(c, &start));
                Box::new(Marker {
                    start,
                    within,
                    // (Known once TX names have slots: `assign_tx_slots`.)
                    slotless: false,
                })
            });
        }
    }
}

/// Numbers every rule link (`Rule::link`), heads and chained links in order; returns the count.
fn number_links(phases: &mut [Vec<Item>; 2]) -> usize {
    let mut n = 0u32;
    for it in phases.iter_mut().flatten() {
        let mut link = match it {
            Item::Rule(r) => Some(&mut **r),
            Item::Marker(_) => None,
        };
        while let Some(r) = link {
            r.link = n;
            n += 1;
            link = r.chain.as_deref_mut();
        }
    }
    n as usize
}

/// The longest literal prefix the prefilter's automaton holds (see `build_prefilter`). At 12
/// bytes, CRS 4.28.0's 5,067 distinct literals make 4,729 prefixes and 21 k states (7.6 MB
/// when every state had a dense row, built in ~15 ms natively); the whole literals made 31 k
/// states (12 MB, ~30 ms) for 0.4 % fewer instructions per legit-dev request. (Since
/// 2026-12-07 only states near the root have dense rows, see `lits`: 1.7 MiB in all.)
const MAX_LITERAL: usize = 12;

/// The prefilter's groups while they are made: per transformation node, one for the rules
/// that read request headers and one for the others. Every request has headers, and a
/// browser's hold many common literals (`Accept: */*` holds both of CRS 942500's, `/*` and
/// `*/`): sharing one union with them, the rules that read only arguments and cookies were
/// rarely skipped whole. (One group per distinct set of variables cost more in unions than
/// it saved: bare `GET /` +8 %, legit-dev −4.5 %, against +3 % and −6 % for this split.)
#[derive(Default)]
struct Groups {
    /// (node, whether its rules read headers) → index in `list`.
    of: std::collections::HashMap<(u32, bool), u32>,
    /// Per group: its node and what it holds so far.
    list: Vec<(u32, Group)>,
}

/// A literal of at most `MAX_LITERAL` bytes as a number that sorts as the bytes do: the bytes
/// from the top, then the length (`ab` before `ab\0`).
fn literal_key(l: &[u8]) -> u128 {
    const _: () = assert!(MAX_LITERAL <= 15);
    let mut k = 0u128;
    for (i, &b) in l.iter().enumerate() {
        k |= u128::from(b) << (120 - 8 * i);
    }
    k | l.len() as u128
}

/// The length of the literal [`literal_key`] made `k` from.
fn key_len(k: u128) -> usize {
    (k & 0xff) as usize
}

/// The literal [`literal_key`] made `k` from.
fn literal_of_key(k: u128) -> Vec<u8> {
    (0..key_len(k))
        .map(|i| (k >> (120 - 8 * i)) as u8)
        .collect()
}

fn build_prefilter(phases: &mut [Vec<Item>; 2], nodes: &[Node]) -> Option<Prefilter> {
    let mut groups = Groups::default();
    /// A slot for `literals` in a group of node `node`, the one for rules reading headers when
    /// `vars` holds some (a rule's `second` set with that flag); with `vars`, the group's
    /// union also covers those variables. Returns (group, slot).
    fn add(
        groups: &mut Groups,
        node: u32,
        literals: &[Vec<u8>],
        vars: Option<&[Target]>,
        second: bool,
    ) -> (u32, u32) {
        let headers = vars
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t.var, Var::Headers | Var::HeadersNames));
        let next = groups.list.len() as u32;
        let gi = *groups.of.entry((node, headers)).or_insert(next);
        if gi == next {
            groups.list.push((node, Group::default()));
        }
        let g = &mut groups.list[gi as usize].1;
        let slot = g.slots;
        g.slots += 1;
        for l in literals {
            // A literal's first `MAX_LITERAL` bytes stand for it (a value holding the literal
            // holds them): the `@pmFromFile` lists' long phrases would otherwise triple the
            // automaton's states for almost no rule skipped more.
            let mut lower = [0u8; MAX_LITERAL];
            let n = l.len().min(MAX_LITERAL);
            for (d, b) in lower.iter_mut().zip(l) {
                *d = b.to_ascii_lowercase();
            }
            g.lits.push((literal_key(&lower[..n]), slot));
        }
        for t in vars.unwrap_or_default() {
            if !g.vars.contains(&t.var) {
                g.vars.push(t.var);
            }
        }
        if second {
            g.second.push(slot);
        }
        (gi, slot)
    }
    fn visit(r: &mut Rule, groups: &mut Groups, nodes: &[Node]) {
        if let (Some(req), false) = (&r.literals, r.negated) {
            r.pf_unmarked = req.unmarked_only;
            r.pf_min_len = req
                .literals
                .iter()
                .map(|l| l.len().min(MAX_LITERAL))
                .min()
                .unwrap_or(0);
            let coverable = !r.targets.is_empty()
                && r.targets
                    .iter()
                    .all(|t| !t.count && t.var.is_request_value());
            r.pf_skip = !r.multi_match && coverable;
            let vars = coverable.then_some(r.targets.as_slice());
            // Filter index and global slot are filled in below, once the node order is known.
            let (gi, slot) = add(groups, r.tnode, &req.literals, vars, false);
            r.pf = Some((gi, slot));
            r.pf_also = (!req.also.is_empty() && !req.unmarked_only && !r.multi_match)
                .then(|| add(groups, r.tnode, &req.also, vars, true).1);
            // multiMatch: every value is checked for the literals after every step that
            // changes it; the rule as a whole is skipped when no node of its chain has them.
            if r.multi_match && coverable {
                let mut n = r.tnode;
                let mut steps = vec![(gi, slot)];
                while n != 0 {
                    n = nodes[n as usize].parent;
                    steps.push(add(groups, n, &req.literals, vars, false));
                }
                r.pf_steps = steps;
            }
        }
        if let Some(c) = r.chain.as_deref_mut() {
            visit(c, groups, nodes);
        }
    }
    for items in phases.iter_mut() {
        for it in items.iter_mut() {
            if let Item::Rule(r) = it {
                visit(r, &mut groups, nodes);
            }
        }
    }
    // Each group becomes the filter of the same index.
    let mut filters = Vec::new();
    // (literal key, global slot) pairs of every group.
    let mut pairs: Vec<(u128, u32)> = Vec::new();
    let mut word = 0usize;
    for (
        node,
        Group {
            lits,
            slots,
            vars,
            second,
        },
    ) in groups.list
    {
        let base = (word * 64) as u32;
        // The shortest literal bounds every slot; a slot without literals (none is made
        // today: a rule without any is not prefiltered) would leave no bound.
        let mut min_len = lits
            .iter()
            .filter(|(_, s)| !second.contains(s))
            .map(|&(k, _)| key_len(k))
            .min()
            .unwrap_or(0);
        if (0..slots).any(|s| !second.contains(&s) && !lits.iter().any(|&(_, ls)| ls == s)) {
            min_len = 0;
        }
        pairs.extend(lits.iter().map(|&(k, s)| (k, base + s)));
        let words = (slots as usize).div_ceil(64);
        filters.push(NodeFilter {
            min_len,
            needs_marked: false,
            base_word: word,
            words,
            node,
            vars,
        });
        word += words;
    }
    // Distinct literal → the global slots of the rules it serves, in the literals' order.
    pairs.sort_unstable();
    pairs.dedup();
    let mut lits: Vec<(Vec<u8>, Vec<u32>)> = Vec::new();
    let mut last = None;
    for &(k, slot) in &pairs {
        match lits.last_mut() {
            Some((_, slots)) if last == Some(k) => slots.push(slot),
            _ => lits.push((literal_of_key(k), vec![slot])),
        }
        last = Some(k);
    }
    let scan = lits::LitScan::new(&lits);
    /// A rule's (group, slot in the group) pairs made (filter, global slot): the slot offset
    /// by its filter's first word. Without a scanner (`filters` None), no rule is prefiltered.
    fn fix(r: &mut Rule, filters: Option<&[NodeFilter]>) {
        let global = |(fi, slot): (u32, u32)| {
            let base = filters?[fi as usize].base_word as u32 * 64;
            Some((fi, base + slot))
        };
        r.pf_also =
            r.pf.zip(r.pf_also)
                .and_then(|((fi, _), s)| global((fi, s)))
                .map(|(_, s)| s);
        if let Some(p) = r.pf {
            r.pf = global(p);
            r.pf_skip &= r.pf.is_some();
        }
        let steps = std::mem::take(&mut r.pf_steps);
        r.pf_steps = steps.into_iter().filter_map(global).collect();
        if let Some(c) = r.chain.as_deref_mut() {
            fix(c, filters);
        }
    }
    let index = scan.as_ref().map(|_| filters.as_slice());
    for items in phases.iter_mut() {
        for it in items.iter_mut() {
            if let Item::Rule(r) = it {
                fix(r, index);
            }
        }
    }
    // The filters whose unions some rule reads for marked bytes.
    fn note_marked(r: &Rule, filters: &mut [NodeFilter]) {
        if r.pf_unmarked {
            for &(fi, _) in r.pf.iter().chain(&r.pf_steps) {
                filters[fi as usize].needs_marked = true;
            }
        }
        if let Some(c) = r.chain.as_deref() {
            note_marked(c, filters);
        }
    }
    for items in phases.iter() {
        for it in items {
            if let Item::Rule(r) = it {
                note_marked(r, &mut filters);
            }
        }
    }
    Some(Prefilter {
        lits: scan?,
        words: word,
        filters,
    })
}

/// What the evaluation reads of a rule to skip it when no value it reads holds a literal it
/// needs (`Rule::pf`, `pf_also`, `pf_unmarked`), for the rules that can be skipped whole
/// (`pf_skip`). Kept in one dense array per phase: a request walks hundreds of items and skips
/// most, and the boxed rules' fields lie cache lines apart (on cold caches, as between two
/// requests of a proxy, those loads were a sizeable part of the evaluation's memory misses).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate {
    pub(crate) filter: u32,
    pub(crate) slot: u32,
    pub(crate) also: Option<u32>,
    pub(crate) unmarked: bool,
}

fn gates_of(items: &[Item]) -> Vec<Option<Gate>> {
    items
        .iter()
        .map(|it| match it {
            Item::Rule(r) if r.pf_skip => r.pf.map(|(filter, slot)| Gate {
                filter,
                slot,
                also: r.pf_also,
                unmarked: r.pf_unmarked,
            }),
            _ => None,
        })
        .collect()
}

fn resolve_skips(items: &[Item]) -> Vec<Option<usize>> {
    let mut out = vec![None; items.len()];
    for (i, it) in items.iter().enumerate() {
        if let Item::Rule(r) = it {
            if let Some(m) = &r.skip_after {
                out[i] = items[i + 1..]
                    .iter()
                    .position(|x| matches!(x, Item::Marker(n) if n == m))
                    .map(|p| i + 1 + p + 1)
                    // ModSecurity skips to the end of the phase when the marker is missing.
                    .or(Some(items.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
