//! The engine: compiled rules ([`RuleSet`]) and their evaluation against one request.
//!
//! Loading turns SecLang into a flat, per-phase list of rules whose regexes, phrase sets and
//! transformation chains are compiled once. Evaluation builds a [`Request`] model, runs phase 1,
//! processes the body, runs phase 2, and reads the anomaly score CRS computed in its TX
//! collection. Transformation results are cached per (value, transformation prefix) for the
//! request, so `t:urlDecodeUni,t:lowercase` after `t:urlDecodeUni` costs one step.

mod compile;
mod eval;

use crate::config::{Mode, WafConfig};
use crate::error::LoadError;
use crate::macros::Macro;
use crate::operator::Operator;
use crate::seclang;
use crate::transform::Transform;
use serde::Serialize;

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

impl Var {
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
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub(crate) struct Target {
    var: Var,
    key: Option<KeySel>,
    count: bool,
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
}

#[derive(Debug)]
pub(crate) enum Item {
    Rule(Box<Rule>),
    Marker(String),
}

/// A loaded, compiled rule set. Immutable and `Send + Sync`: share one across threads.
#[derive(Debug)]
pub struct RuleSet {
    /// Phase 1 and phase 2 items in order (markers appear in both).
    phases: [Vec<Item>; 2],
    /// For each item, where `skipAfter` lands (index after the marker), per phase.
    skip_to: [Vec<Option<usize>>; 2],
    /// Transformation trie: node → (parent, transformation). Node 0 is "no transformation".
    nodes: Vec<(u32, Transform)>,
    unsupported: Vec<(u32, String)>,
    config: WafConfig,
    file_engine: Option<Mode>,
    rule_count: usize,
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
        let mut b = compile::Builder::new(data_files);
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
        let mut config = config.clone();
        if let Some(l) = b.body_limit {
            config.limits.max_body_bytes = config.limits.max_body_bytes.min(l);
        }
        if let Some(l) = b.args_limit {
            config.limits.max_args = config.limits.max_args.min(l);
        }
        Ok(RuleSet {
            phases,
            skip_to,
            nodes: b.nodes,
            unsupported: b.unsupported,
            config,
            file_engine: b.engine,
            rule_count,
        })
    }

    /// Rules that were loaded but cannot run here, with the reason (response-phase rules,
    /// unsupported operators, actions or variables).
    pub fn unsupported(&self) -> &[(u32, String)] {
        &self.unsupported
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
        eval::evaluate(self, req, &self.config)
    }

    /// Evaluates with another configuration's mode, paranoia and TX overrides (same rules).
    pub fn evaluate_with(&self, req: &crate::HttpRequest, config: &WafConfig) -> Verdict {
        eval::evaluate(self, req, config)
    }
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
