//! From directives to runnable rules: the load half of the engine.

use super::*;
use crate::error::{LoadError, Location};
use crate::macros::Macro;
use crate::operator::{self, Operator};
use crate::seclang::{self, ActionSpec, Directive, KeySpec, TargetSpec};
use crate::transform::Transform;
use std::collections::HashMap;

/// Directives that do not change how requests are judged here (logging, storage, response
/// handling, component metadata). They are accepted and ignored.
const IGNORED_DIRECTIVES: &[&str] = &[
    "seccomponentsignature",
    "seccollectiontimeout",
    "secresponsebodyaccess",
    "secresponsebodymimetype",
    "secresponsebodylimit",
    "secresponsebodylimitaction",
    "secauditengine",
    "secauditlog",
    "secauditlogparts",
    "secauditlogtype",
    "secauditlogformat",
    "secauditlogrelevantstatus",
    "secauditlogstoragedir",
    "secdebuglog",
    "secdebugloglevel",
    "sectmpdir",
    "secdatadir",
    "secuploaddir",
    "secuploadkeepfiles",
    "secuploadfilemode",
    "secpcrematchlimit",
    "secpcrematchlimitrecursion",
    "secargumentseparator",
    "seccookieformat",
    "secunicodemapfile",
    "secstatusengine",
    "sectmpsaveuploadedfiles",
    "secrequestbodyinmemorylimit",
    "secrequestbodynofileslimit",
    "secrequestbodylimitaction",
    "secrequestbodyjsondepthlimit",
    "secxmlexternalentity",
    "secserversignature",
    "secwebappid",
    "secsensorid",
    "sechttpblkey",
    "secgeolookupdb",
    "secconnengine",
];

#[derive(Clone)]
struct Defaults {
    disruptive: Disruptive,
    transforms: Vec<Transform>,
    log: bool,
}

pub(super) struct Builder<'a> {
    data_files: &'a [(String, String)],
    compile: operator::Compile,
    /// Analyses recorded by an earlier load, used instead of parsing the pattern again.
    hints_in: Option<&'a crate::prefilter::RxHints>,
    /// Analyses made by this load.
    pub(super) hints_out: crate::prefilter::RxHints,
    defaults: HashMap<u8, Defaults>,
    chain_stack: Vec<(Rule, Option<String>)>,
    pub(super) items: Vec<Item>,
    pub(super) unsupported: Vec<(u32, String)>,
    pub(super) nodes: Vec<super::Node>,
    node_map: HashMap<(u32, Transform), u32>,
    pub(super) engine: Option<Mode>,
    pub(super) body_limit: Option<usize>,
    pub(super) args_limit: Option<usize>,
    pub(super) body_access: bool,
    /// Key regexes built so far, by pattern: CRS names `/^pbjs-\w+$/` in nine rules.
    key_regexes: HashMap<String, super::KeyRegex>,
}

fn perr(loc: &Location, directive: &str, message: String) -> LoadError {
    LoadError::Parse {
        location: loc.clone(),
        directive: directive.to_string(),
        message,
    }
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        data_files: &'a [(String, String)],
        compile: operator::Compile,
        hints_in: Option<&'a crate::prefilter::RxHints>,
    ) -> Self {
        Builder {
            data_files,
            compile,
            hints_in,
            hints_out: Default::default(),
            defaults: HashMap::new(),
            chain_stack: Vec::new(),
            items: Vec::new(),
            unsupported: Vec::new(),
            // (Node 0 stands for the value as it is; its step is never applied.)
            nodes: vec![super::Node {
                parent: 0,
                step: Transform::Lowercase,
                change: 0,
                scan_change: 0,
                bound: super::LenBound::Raw,
            }],
            node_map: HashMap::new(),
            engine: None,
            body_limit: None,
            args_limit: None,
            body_access: true,
            key_regexes: HashMap::new(),
        }
    }

    fn node_for(&mut self, ts: &[Transform]) -> u32 {
        let mut cur = 0u32;
        for &t in ts {
            cur = match self.node_map.get(&(cur, t)) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len() as u32;
                    let change = self.nodes[cur as usize].change
                        | t.change_mask().unwrap_or(super::Node::ALWAYS);
                    let scan_change = self.nodes[cur as usize].scan_change
                        | t.scan_change_mask().unwrap_or(super::Node::ALWAYS);
                    let bound = match (t, self.nodes[cur as usize].bound) {
                        (Transform::Base64Decode, _) => super::LenBound::Base64(cur),
                        (t, b) if t.never_lengthens() => b,
                        _ => super::LenBound::Unbounded,
                    };
                    self.nodes.push(super::Node {
                        parent: cur,
                        step: t,
                        change,
                        scan_change,
                        bound,
                    });
                    self.node_map.insert((cur, t), n);
                    n
                }
            };
        }
        cur
    }

    fn defaults(&self, phase: u8) -> Defaults {
        self.defaults.get(&phase).cloned().unwrap_or(Defaults {
            disruptive: Disruptive::Pass,
            transforms: Vec::new(),
            log: true,
        })
    }

    pub(super) fn finish(&mut self, file: &str) -> Result<(), LoadError> {
        if let Some((r, _)) = self.chain_stack.first() {
            return Err(LoadError::Parse {
                location: Location {
                    file: file.to_string(),
                    line: r.line,
                    column: 1,
                },
                directive: "SecRule".into(),
                message: format!("rule {} ends with `chain` but no rule follows", r.id),
            });
        }
        Ok(())
    }

    pub(super) fn directive(&mut self, d: &Directive) -> Result<(), LoadError> {
        let name = d.name.to_ascii_lowercase();
        let arg = |i: usize| -> Result<&seclang::Arg, LoadError> {
            d.args.get(i).ok_or_else(|| {
                perr(
                    &d.location,
                    &d.name,
                    format!("expected at least {} argument(s)", i + 1),
                )
            })
        };
        if !self.chain_stack.is_empty() && name != "secrule" {
            return Err(perr(
                &d.location,
                &d.name,
                "a chained rule must be followed by SecRule".into(),
            ));
        }
        match name.as_str() {
            "secrule" => {
                let targets = arg(0)?;
                let op = arg(1)?;
                let actions = d.args.get(2);
                if d.args.len() > 3 {
                    return Err(perr(
                        &d.args[3].location,
                        &d.name,
                        format!("unexpected argument `{}`", d.args[3].text),
                    ));
                }
                self.rule(d, Some(targets), Some(op), actions)
            }
            "secaction" => {
                let actions = arg(0)?;
                self.rule(d, None, None, Some(actions))
            }
            "secmarker" => {
                let a = arg(0)?;
                self.items.push(Item::Marker(a.text.clone()));
                Ok(())
            }
            "secdefaultaction" => {
                let a = arg(0)?;
                let acts =
                    seclang::parse_actions(&a.text).map_err(|m| perr(&a.location, &d.name, m))?;
                let mut phase = 2u8;
                let mut def = Defaults {
                    disruptive: Disruptive::Pass,
                    transforms: Vec::new(),
                    log: true,
                };
                for ac in &acts {
                    match ac.name.as_str() {
                        "phase" => {
                            phase = parse_phase(ac.value.as_deref().unwrap_or(""))
                                .ok_or_else(|| perr(&a.location, &d.name, "bad phase".into()))?
                        }
                        "t" => {
                            let v = ac.value.as_deref().unwrap_or("");
                            if v.eq_ignore_ascii_case("none") {
                                def.transforms.clear();
                            } else if let Some(t) = Transform::from_name(v) {
                                def.transforms.push(t);
                            } else {
                                return Err(perr(
                                    &a.location,
                                    &d.name,
                                    format!("unknown transformation `{v}`"),
                                ));
                            }
                        }
                        "nolog" => def.log = false,
                        "log" => def.log = true,
                        n => {
                            if let Some(dis) = disruptive_from(n) {
                                def.disruptive = dis;
                            }
                        }
                    }
                }
                self.defaults.insert(phase, def);
                Ok(())
            }
            "secruleremovebyid" => {
                for a in &d.args {
                    for part in a.text.split([' ', ',']).filter(|s| !s.is_empty()) {
                        let (lo, hi) = parse_id_range(part).ok_or_else(|| {
                            perr(&a.location, &d.name, format!("bad rule id `{part}`"))
                        })?;
                        self.items.retain(|it| match it {
                            Item::Rule(r) => !(r.id >= lo && r.id <= hi),
                            Item::Marker(_) => true,
                        });
                    }
                }
                Ok(())
            }
            "secruleremovebytag" | "secruleremovebymsg" => {
                let a = arg(0)?;
                let by_tag = name == "secruleremovebytag";
                self.items.retain(|it| match it {
                    Item::Rule(r) if by_tag => !r.tags.iter().any(|t| t == &a.text),
                    Item::Rule(r) => r.msg_raw != a.text,
                    Item::Marker(_) => true,
                });
                Ok(())
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => {
                let sel = arg(0)?;
                let t = arg(1)?;
                let specs =
                    seclang::parse_targets(&t.text).map_err(|m| perr(&t.location, &d.name, m))?;
                let mut compiled = Vec::new();
                for s in &specs {
                    compiled.push((
                        s.exclude,
                        compile_target(s, &mut self.key_regexes)
                            .map_err(|m| perr(&t.location, &d.name, m))?,
                    ));
                }
                let by_id = name == "secruleupdatetargetbyid";
                let range = if by_id {
                    Some(parse_id_range(&sel.text).ok_or_else(|| {
                        perr(
                            &sel.location,
                            &d.name,
                            format!("bad rule id `{}`", sel.text),
                        )
                    })?)
                } else {
                    None
                };
                for it in &mut self.items {
                    if let Item::Rule(r) = it {
                        let hit = match range {
                            Some((lo, hi)) => r.id >= lo && r.id <= hi,
                            None => r.tags.iter().any(|x| x == &sel.text),
                        };
                        if hit {
                            for (ex, tg) in &compiled {
                                if *ex {
                                    r.excludes.push(tg.clone());
                                } else {
                                    r.targets.push(tg.clone());
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            "secruleupdateactionbyid" => {
                // Only the fields that change the verdict are updated.
                let sel = arg(0)?;
                let a = arg(1)?;
                let (lo, hi) = parse_id_range(&sel.text).ok_or_else(|| {
                    perr(
                        &sel.location,
                        &d.name,
                        format!("bad rule id `{}`", sel.text),
                    )
                })?;
                let acts =
                    seclang::parse_actions(&a.text).map_err(|m| perr(&a.location, &d.name, m))?;
                for it in &mut self.items {
                    if let Item::Rule(r) = it {
                        if r.id >= lo && r.id <= hi {
                            for ac in &acts {
                                if let Some(dis) = disruptive_from(&ac.name) {
                                    r.disruptive = dis;
                                }
                                if ac.name == "nolog" {
                                    r.log = false;
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            "secruleengine" => {
                let a = arg(0)?;
                self.engine = Some(match a.text.to_ascii_lowercase().as_str() {
                    "on" => Mode::Block,
                    "detectiononly" => Mode::Detect,
                    "off" => Mode::Off,
                    other => {
                        return Err(perr(
                            &a.location,
                            &d.name,
                            format!("expected On, DetectionOnly or Off, found `{other}`"),
                        ))
                    }
                });
                Ok(())
            }
            "secrequestbodyaccess" => {
                let a = arg(0)?;
                self.body_access = a.text.eq_ignore_ascii_case("on");
                Ok(())
            }
            "secrequestbodylimit" => {
                let a = arg(0)?;
                self.body_limit = Some(a.text.parse().map_err(|_| {
                    perr(
                        &a.location,
                        &d.name,
                        format!("expected a number, found `{}`", a.text),
                    )
                })?);
                Ok(())
            }
            "secargumentslimit" => {
                let a = arg(0)?;
                self.args_limit = Some(a.text.parse().map_err(|_| {
                    perr(
                        &a.location,
                        &d.name,
                        format!("expected a number, found `{}`", a.text),
                    )
                })?);
                Ok(())
            }
            n if IGNORED_DIRECTIVES.contains(&n) => Ok(()),
            _ => Err(perr(&d.location, &d.name, "unknown directive".to_string())),
        }
    }

    fn rule(
        &mut self,
        d: &Directive,
        targets: Option<&seclang::Arg>,
        op: Option<&seclang::Arg>,
        actions: Option<&seclang::Arg>,
    ) -> Result<(), LoadError> {
        let is_link = !self.chain_stack.is_empty();
        let acts = match actions {
            Some(a) => {
                seclang::parse_actions(&a.text).map_err(|m| perr(&a.location, &d.name, m))?
            }
            None => Vec::new(),
        };
        let act_loc = actions
            .map(|a| a.location.clone())
            .unwrap_or(d.location.clone());
        let mut unsupported: Option<String> = None;
        let mut note = |s: String| {
            if unsupported.is_none() {
                unsupported = Some(s);
            }
        };
        // Targets.
        let mut tlist = Vec::new();
        let mut excludes = Vec::new();
        if let Some(t) = targets {
            let specs =
                seclang::parse_targets(&t.text).map_err(|m| perr(&t.location, &d.name, m))?;
            for s in &specs {
                match compile_target(s, &mut self.key_regexes) {
                    Ok(tg) if s.exclude => excludes.push(tg),
                    Ok(tg) => tlist.push(tg),
                    Err(m) => note(m),
                }
            }
        }
        // Operator.
        let mut literals = None;
        let (operator, negated) = match op {
            Some(o) => {
                let spec = seclang::parse_operator(&o.text);
                let mut parsed = false;
                if spec.name == "rx" {
                    match self.hints_in.and_then(|h| h.get(&spec.param)) {
                        // An earlier load parsed this pattern: take what it found.
                        Some(l) => {
                            parsed = true;
                            literals = l.clone();
                        }
                        None => {
                            // One parse serves the prefilter's literals and the lazy check.
                            let hir =
                                crate::prefilter::parse_bytes(&operator::byte_pattern(&spec.param));
                            parsed = hir.is_some();
                            literals = hir.as_ref().and_then(crate::prefilter::required_of);
                            if parsed {
                                self.hints_out.insert(
                                    crate::prefilter::RxHints::key(&spec.param),
                                    literals.clone(),
                                );
                            }
                        }
                    }
                }
                match self.operator(&spec.name, &spec.param, parsed) {
                    Ok(Some(x)) => (x, spec.negated),
                    Ok(None) => {
                        note(format!("operator @{} is not supported", spec.name));
                        (Operator::NoMatch, spec.negated)
                    }
                    Err(LoadErrorOrMsg::Msg(m)) => return Err(perr(&o.location, &d.name, m)),
                    Err(LoadErrorOrMsg::Missing(n)) => {
                        return Err(LoadError::MissingDataFile {
                            location: o.location.clone(),
                            directive: d.name.clone(),
                            name: n,
                        })
                    }
                }
            }
            None => (Operator::Unconditional, false),
        };
        // Actions.
        let mut id = 0u32;
        let mut phase: Option<u8> = None;
        let mut chain = false;
        let mut transforms: Option<Vec<Transform>> = None;
        let mut r = Rule::empty();
        let mut disruptive = None;
        let mut log = None;
        for ac in &acts {
            let v = ac.value.clone().unwrap_or_default();
            match ac.name.as_str() {
                "id" => {
                    id = v
                        .parse()
                        .map_err(|_| perr(&act_loc, &d.name, format!("bad rule id `{v}`")))?
                }
                "phase" => {
                    phase = Some(
                        parse_phase(&v)
                            .ok_or_else(|| perr(&act_loc, &d.name, format!("bad phase `{v}`")))?,
                    )
                }
                "chain" => chain = true,
                "t" => {
                    let list = transforms.get_or_insert_with(Vec::new);
                    if v.eq_ignore_ascii_case("none") {
                        list.clear();
                    } else if let Some(t) = Transform::from_name(&v) {
                        list.push(t);
                    } else {
                        note(format!("transformation t:{v} is not supported"));
                    }
                }
                "msg" => {
                    r.msg_raw = v.clone();
                    r.msg = Some(Macro::parse(&v));
                }
                "logdata" => r.logdata = Some(Macro::parse(&v)),
                "tag" => {
                    if let Some(pl) = v.strip_prefix("paranoia-level/") {
                        r.paranoia = pl.parse().unwrap_or(1);
                    }
                    r.tags.push(v);
                }
                "severity" => r.severity = Severity::parse(&v),
                "capture" => r.capture = true,
                "log" => log = Some(true),
                "nolog" => log = Some(false),
                "skipafter" => r.skip_after = Some(v),
                "skip" => r.skip = v.parse().unwrap_or(0),
                "setvar" => match parse_setvar(&v) {
                    Ok(Some(s)) => r.setvars.push(s),
                    Ok(None) => {}
                    Err(m) => return Err(perr(&act_loc, &d.name, m)),
                },
                "ctl" => match parse_ctl(&v, &mut self.key_regexes) {
                    Ok(Some(c)) => r.ctls.push(c),
                    Ok(None) => {}
                    Err(m) => note(m),
                },
                "deny" | "drop" | "block" | "pass" | "allow" | "redirect" | "proxy" => {
                    disruptive = disruptive_from(&ac.name)
                }
                "multimatch" => r.multi_match = true,
                "auditlog" | "noauditlog" | "ver" | "rev" | "maturity" | "accuracy" | "status"
                | "initcol" | "expirevar" | "setuid" | "setsid" | "sanitisematched"
                | "sanitizematched" | "sanitisearg" | "sanitizearg" | "xmlns" | "deprecatevar"
                | "setrsc" | "setenv" => {}
                other => note(format!("action `{other}` is not supported")),
            }
        }
        let (head_id, head_phase) = match self.chain_stack.first() {
            Some((h, _)) => (h.id, h.phase),
            None => (id, phase.unwrap_or(2)),
        };
        if !is_link && id == 0 {
            return Err(perr(&act_loc, &d.name, "rule has no `id` action".into()));
        }
        let defaults = self.defaults(head_phase);
        let mut ts = defaults.transforms.clone();
        if let Some(t) = transforms {
            // t:none in the rule clears the defaults; otherwise the rule's list is appended.
            let has_none = acts.iter().any(|a| {
                a.name == "t"
                    && a.value
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case("none"))
            });
            if has_none {
                ts = t;
            } else {
                ts.extend(t);
            }
        }
        r.tnode = self.node_for(&ts);
        if let Operator::Pm(phrases) = &operator {
            // A phrase match is exactly "one of these literals occurs": the prefilter's answer
            // for the rule is the operator's answer, found in the shared scan.
            literals = Some(crate::prefilter::Required {
                literals: phrases.literals().to_vec(),
                unmarked_only: false,
                also: Vec::new(),
            });
        }
        r.literals = literals;
        r.id = head_id;
        r.phase = head_phase;
        r.targets = tlist;
        r.excludes = excludes;
        r.op = operator;
        r.negated = negated;
        r.is_action = targets.is_none();
        r.line = d.location.line;
        r.log = log.unwrap_or(defaults.log);
        r.disruptive = match disruptive {
            Some(Disruptive::Block) | None => defaults.disruptive,
            Some(x) => x,
        };
        if chain {
            self.chain_stack.push((r, unsupported));
            return Ok(());
        }
        let mut link = r;
        let mut reason = unsupported;
        while let Some((mut parent, preason)) = self.chain_stack.pop() {
            parent.chain = Some(Box::new(link));
            if reason.is_none() {
                reason = preason;
            }
            link = parent;
        }
        if link.phase > 2 {
            reason.get_or_insert_with(|| {
                format!("phase {} (response) rules are not evaluated", link.phase)
            });
        }
        match reason {
            Some(why) => self.unsupported.push((link.id, why)),
            None => self.items.push(Item::Rule(Box::new(link))),
        }
        Ok(())
    }

    fn operator(
        &self,
        name: &str,
        param: &str,
        parsed: bool,
    ) -> Result<Option<Operator>, LoadErrorOrMsg> {
        let m = || Macro::parse(param);
        Ok(Some(match name {
            "rx" => Operator::Rx(
                operator::Rx::new(param, self.compile, parsed).map_err(LoadErrorOrMsg::Msg)?,
            ),
            "pm" => operator::pm(param, self.compile).map_err(LoadErrorOrMsg::Msg)?,
            "pmfromfile" | "pmf" => {
                let mut text = String::new();
                for f in param.split_whitespace() {
                    let base = f.rsplit(['/', '\\']).next().unwrap_or(f);
                    let found = self
                        .data_files
                        .iter()
                        .find(|(n, _)| n.rsplit(['/', '\\']).next() == Some(base));
                    match found {
                        Some((_, t)) => {
                            text.push_str(t);
                            text.push('\n');
                        }
                        None => return Err(LoadErrorOrMsg::Missing(f.to_string())),
                    }
                }
                operator::pm_from_lines(text.lines(), self.compile).map_err(LoadErrorOrMsg::Msg)?
            }
            "detectsqli" => Operator::DetectSqli,
            "detectxss" => Operator::DetectXss,
            "within" => Operator::Within(m()),
            "streq" => Operator::Streq(m()),
            "contains" => Operator::Contains(m()),
            "beginswith" => Operator::BeginsWith(m()),
            "endswith" => Operator::EndsWith(m()),
            "eq" => Operator::Eq(m()),
            "ge" => Operator::Ge(m()),
            "gt" => Operator::Gt(m()),
            "lt" => Operator::Lt(m()),
            "le" => Operator::Le(m()),
            "ipmatch" => operator::ip_match(param).map_err(LoadErrorOrMsg::Msg)?,
            "validatebyterange" => operator::byte_range(param).map_err(LoadErrorOrMsg::Msg)?,
            "validateurlencoding" => Operator::ValidateUrlEncoding,
            "validateutf8encoding" => Operator::ValidateUtf8Encoding,
            "unconditionalmatch" => Operator::Unconditional,
            "nomatch" => Operator::NoMatch,
            _ => return Ok(None),
        }))
    }
}

enum LoadErrorOrMsg {
    Msg(String),
    Missing(String),
}

fn parse_phase(v: &str) -> Option<u8> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" => Some(1),
        "2" | "request" => Some(2),
        "3" => Some(3),
        "4" | "response" => Some(4),
        "5" | "logging" => Some(5),
        _ => None,
    }
}

fn disruptive_from(name: &str) -> Option<Disruptive> {
    Some(match name {
        "deny" | "drop" | "redirect" | "proxy" => Disruptive::Deny,
        "block" => Disruptive::Block,
        "pass" => Disruptive::Pass,
        "allow" => Disruptive::Allow,
        _ => return None,
    })
}

/// `123` or `100-200`.
pub(super) fn parse_id_range(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let v = s.parse().ok()?;
            Some((v, v))
        }
    }
}

/// Compiles one target; `keys` holds the key regexes built so far, by pattern.
pub(super) fn compile_target(
    s: &TargetSpec,
    keys: &mut HashMap<String, super::KeyRegex>,
) -> Result<Target, String> {
    let var =
        Var::from_name(&s.name).ok_or_else(|| format!("variable {} is not supported", s.name))?;
    let key = match &s.key {
        None => None,
        Some(KeySpec::Name(n)) => Some(KeySel::Name(n.to_ascii_lowercase())),
        Some(KeySpec::Regex(r)) => {
            if var == Var::Xml {
                Some(KeySel::Name(format!("/{r}/")))
            } else {
                let re = match keys.get(r) {
                    Some(k) => k.clone(),
                    None => {
                        let k = super::KeyRegex::new(r)?;
                        keys.insert(r.clone(), k.clone());
                        k
                    }
                };
                Some(KeySel::Regex(re))
            }
        }
    };
    Ok(Target {
        var,
        key,
        count: s.count,
        tx_slot: NO_SLOT,
        tx_slots: Vec::new(),
    })
}

fn parse_setvar(v: &str) -> Result<Option<SetVar>, String> {
    let v = v.trim();
    let (delete, body) = match v.strip_prefix('!') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let (lhs, rhs) = match body.split_once('=') {
        Some((l, r)) => (l.trim(), Some(r)),
        None => (body.trim(), None),
    };
    let Some((coll, name)) = lhs.split_once('.') else {
        return Err(format!("setvar `{v}` has no collection"));
    };
    if !coll.eq_ignore_ascii_case("tx") {
        // Persistent collections (ip, session, ...) are not kept by this engine.
        return Ok(None);
    }
    let op = if delete {
        SetOp::Delete
    } else {
        match rhs {
            None => SetOp::Set(Macro::lit("1")),
            Some(r) => {
                if let Some(x) = r.strip_prefix('+') {
                    SetOp::Add(Macro::parse(x))
                } else if let Some(x) = r.strip_prefix('-') {
                    SetOp::Sub(Macro::parse(x))
                } else {
                    SetOp::Set(Macro::parse(r))
                }
            }
        }
    };
    Ok(Some(SetVar {
        name: Macro::parse(&name.to_ascii_lowercase()),
        op,
        slot: NO_SLOT,
        arg_slot: NO_SLOT,
    }))
}

fn parse_ctl(v: &str, keys: &mut HashMap<String, super::KeyRegex>) -> Result<Option<Ctl>, String> {
    let (k, val) = v
        .split_once('=')
        .ok_or_else(|| format!("ctl `{v}` has no value"))?;
    let val = val.trim();
    Ok(Some(match k.trim().to_ascii_lowercase().as_str() {
        "ruleremovebyid" => {
            let mut ranges = Vec::new();
            for p in val.split([' ', ',']).filter(|s| !s.is_empty()) {
                ranges.push(parse_id_range(p).ok_or_else(|| format!("bad id in ctl `{v}`"))?);
            }
            Ctl::RemoveById(ranges)
        }
        "ruleremovebytag" => Ctl::RemoveByTag(val.to_string()),
        "ruleremovetargetbyid" | "ruleremovetargetbytag" => {
            let (sel, t) = val
                .split_once(';')
                .ok_or_else(|| format!("ctl `{v}` needs `selector;TARGET`"))?;
            let specs = seclang::parse_targets(t)?;
            let mut targets = Vec::new();
            for s in &specs {
                targets.push(compile_target(s, keys)?);
            }
            let rs = if k.trim().eq_ignore_ascii_case("ruleremovetargetbyid") {
                let (lo, hi) = parse_id_range(sel).ok_or_else(|| format!("bad id in `{v}`"))?;
                RuleSel::Ids(lo, hi)
            } else {
                RuleSel::Tag(sel.to_string())
            };
            Ctl::RemoveTarget(rs, targets)
        }
        "requestbodyprocessor" => Ctl::BodyProcessor(val.to_ascii_uppercase()),
        "forcerequestbodyvariable" => Ctl::ForceBodyVariable(val.eq_ignore_ascii_case("on")),
        "ruleengine" => Ctl::RuleEngine(match val.to_ascii_lowercase().as_str() {
            "on" => Mode::Block,
            "off" => Mode::Off,
            _ => Mode::Detect,
        }),
        "auditengine" | "auditlogparts" | "requestbodyaccess" | "debugloglevel" => return Ok(None),
        other => return Err(format!("ctl:{other} is not supported")),
    }))
}

impl Severity {
    fn parse(v: &str) -> Option<Severity> {
        Some(match v.trim().to_ascii_uppercase().as_str() {
            "0" | "EMERGENCY" => Severity::Emergency,
            "1" | "ALERT" => Severity::Alert,
            "2" | "CRITICAL" => Severity::Critical,
            "3" | "ERROR" => Severity::Error,
            "4" | "WARNING" => Severity::Warning,
            "5" | "NOTICE" => Severity::Notice,
            "6" | "INFO" => Severity::Info,
            "7" | "DEBUG" => Severity::Debug,
            _ => return None,
        })
    }
}

impl Rule {
    fn empty() -> Rule {
        Rule {
            id: 0,
            phase: 2,
            targets: Vec::new(),
            excludes: Vec::new(),
            excluded_vars: 0,
            op: Operator::NoMatch,
            negated: false,
            tnode: 0,
            msg: None,
            msg_raw: String::new(),
            logdata: None,
            tags: Vec::new(),
            severity: None,
            paranoia: 1,
            setvars: Vec::new(),
            ctls: Vec::new(),
            capture: false,
            multi_match: false,
            log: true,
            disruptive: Disruptive::Pass,
            skip_after: None,
            skip: 0,
            chain: None,
            is_action: false,
            line: 0,
            literals: None,
            pf: None,
            pf_skip: false,
            pf_unmarked: false,
            pf_min_len: 0,
            pf_also: None,
            pf_steps: Vec::new(),
            link: 0,
            param_slot: super::NO_SLOT,
            marker: None,
        }
    }
}

/// Used by `SecRuleUpdateTargetBy*` through the public [`ActionSpec`] type in tests.
#[allow(dead_code)]
fn _uses(_: &ActionSpec) {}
