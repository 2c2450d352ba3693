//! Collection entries that no rule matches, remembered across requests.
//!
//! A shop's traffic repeats its headers and cookies: in `legit-dev.jsonl` 97 % of the header
//! lines (70 % of their bytes) are one seen earlier, the same browsers sending the same
//! `User-Agent`, `Accept` and session cookies request after request. A header's value decides
//! nothing new the second time: the operators that read it depend on the value alone. So once
//! every rule link that may read an entry has been run on it, the entry is remembered with the
//! links that matched it (its `State`: none for most, at most two, else it is not used; keyed
//! by the rule set, the entry's kind and its name and value, compared in full), and later
//! requests leave it out: the other links skip it, and the prefilter's unions do not scan it
//! but for the filters of the links that matched it (`Clean::partial`), so most rules are
//! ruled out without looking at those values at all.
//!
//! What makes this sound:
//! - **Readers.** At the first evaluation the rule set works out, under its configuration,
//!   which items can run at all: CRS's paranoia gates are fixed rules (see `Fixed`) that always
//!   jump over the rules above the paranoia level. A *reader* is a link of a rule that can run
//!   whose operator is pure (`Operator::pure`: its outcome depends on the value alone). An
//!   entry is clean when no reader whose targets select it (name selectors and the rule's own
//!   exclusions applied) matches it, multiMatch steps and negation included. Only readers skip
//!   clean entries; any other link (`@within %{tx.allowed_methods}`, or a rule the plan
//!   thought could not run) still reads every entry.
//! - **Unions.** The prefilter's unions leave clean entries out, so every link the unions
//!   rule out must be a reader: the plan is only made when every link with prefilter slots
//!   that can run has a pure operator (true of CRS: its prefiltered operators are `@rx` and
//!   `@pm`).
//! - **What can run changes.** A `ctl` that removes one of the fixed rules that jump (or a
//!   TX target, which is what fixed rules read) may let rules run that the plan left out: the
//!   evaluation then stops using clean entries for the rest of the request and computes its
//!   unions again.
//! - **When it is used.** With the memo on (`RuleSet::set_memo`, the default) and the rule
//!   set's own configuration (its prefix); an entry is checked the second time it is seen, at
//!   the end of that request's evaluation (reusing what the evaluation transformed and
//!   scanned), and remembered in a store of its own (`memo::Store::Entries`) with the memo's
//!   bounds (entries up to `memo::MAX_LEN` bytes of name and value).
//!
//! Headers, cookies and arguments (query and body) are remembered, names and values apart.

use super::*;

/// Entry kinds: each collection's values and names, and arguments by where they came from
/// (rules read `ARGS_GET` and `ARGS_POST` apart).
pub(super) const KINDS: usize = 8;
const HEADER_VALUE: u8 = 0;
const HEADER_NAME: u8 = 1;
const COOKIE_VALUE: u8 = 2;
const COOKIE_NAME: u8 = 3;
const GET_VALUE: u8 = 4;
const GET_NAME: u8 = 5;
const POST_VALUE: u8 = 6;
const POST_NAME: u8 = 7;

/// Added to a kind to make the memo key's second word.
const MEMO_TAG: u64 = 0xC1EA_0000;

/// The entry kinds a target variable reads.
fn kinds_of(v: Var) -> &'static [u8] {
    match v {
        Var::Headers => &[HEADER_VALUE],
        Var::HeadersNames => &[HEADER_NAME],
        Var::Cookies => &[COOKIE_VALUE],
        Var::CookiesNames => &[COOKIE_NAME],
        Var::Args => &[GET_VALUE, POST_VALUE],
        Var::ArgsGet => &[GET_VALUE],
        Var::ArgsPost => &[POST_VALUE],
        Var::ArgsNames => &[GET_NAME, POST_NAME],
        Var::ArgsGetNames => &[GET_NAME],
        Var::ArgsPostNames => &[POST_NAME],
        _ => &[],
    }
}

/// A kind's collection (as `entries` names it) and whether it is the names.
fn base_of(kind: u8) -> (Var, bool) {
    let base = match kind {
        HEADER_VALUE | HEADER_NAME => Var::Headers,
        COOKIE_VALUE | COOKIE_NAME => Var::Cookies,
        _ => Var::Args,
    };
    (base, kind % 2 == 1)
}

/// The index of a collection's clean bits in `Clean::bits`.
fn slot_of(base: Var) -> Option<usize> {
    match base {
        Var::Headers => Some(0),
        Var::Cookies => Some(1),
        Var::Args => Some(2),
        _ => None,
    }
}

/// A reader that may read entries of one kind: the link and which of its targets.
#[derive(Debug, Clone, Copy)]
struct Reader {
    phase: u8,
    item: u32,
    /// The link's place in its chain (0: the head).
    depth: u8,
    target: u16,
}

/// The rule set's readers under its configuration (see the module's documentation).
#[derive(Debug)]
pub(in crate::engine) struct Plan {
    /// Per rule link (`Rule::link`): whether it is a reader, and so skips clean entries.
    reader: Vec<bool>,
    /// Per entry kind: the readers whose targets read that kind.
    readers_of: [Vec<Reader>; KINDS],
    /// Per rule link: the prefilter filters whose unions it reads (`Rule::pf`, `pf_steps`).
    filters: Vec<Vec<u32>>,
    /// The fixed rules whose match changes which items run (a jump): removing one by `ctl`
    /// turns clean entries off for the request.
    flow: Vec<(u8, u32)>,
}

impl Plan {
    /// How many links are readers (tests).
    #[cfg(test)]
    pub(in crate::engine) fn readers(&self) -> usize {
        self.reader.iter().filter(|&&r| r).count()
    }

    fn link<'r>(&self, rs: &'r RuleSet, rd: Reader) -> &'r Rule {
        let Item::Rule(head) = &rs.phases[rd.phase as usize][rd.item as usize] else {
            unreachable!("readers are rules");
        };
        let mut r: &Rule = head;
        for _ in 0..rd.depth {
            r = r
                .chain
                .as_deref()
                .expect("a reader's depth is within its chain");
        }
        r
    }
}

/// The index after item `i` (a rule with `skip` N) once it matched: `skipAfter`'s landing, or
/// past the N rules `skip` jumps over, as `Ev::run_phase_from` goes on.
fn after_match(rs: &RuleSet, p: usize, i: usize, skip: usize) -> usize {
    if let Some(to) = rs.skip_to[p][i] {
        return to;
    }
    let items = &rs.phases[p];
    let (mut j, mut skip) = (i + 1, skip);
    while skip > 0 && j < items.len() {
        if matches!(items[j], Item::Rule(_)) {
            skip -= 1;
        }
        j += 1;
    }
    j
}

/// The plan for rule set `rs` after its prefix (`resume` items of phase 1) with the fixed
/// outcomes `fixed`; `None` when a prefiltered link that can run is not pure.
pub(super) fn plan(rs: &RuleSet, resume: usize, fixed: &[Vec<Fixed>; 2]) -> Option<Plan> {
    let mut plan = Plan {
        reader: vec![false; rs.links],
        readers_of: Default::default(),
        filters: vec![Vec::new(); rs.links],
        flow: Vec::new(),
    };
    for (p, (items, fixed)) in rs.phases.iter().zip(fixed).enumerate() {
        let mut can_run = vec![false; items.len()];
        let mut todo = vec![if p == 0 { resume } else { 0 }];
        while let Some(i) = todo.pop() {
            if i >= items.len() || can_run[i] {
                continue;
            }
            can_run[i] = true;
            let Item::Rule(r) = &items[i] else {
                todo.push(i + 1);
                continue;
            };
            let matched = after_match(rs, p, i, r.skip);
            match fixed.get(i) {
                Some(Fixed::Never) => todo.push(i + 1),
                Some(Fixed::Always(_)) => {
                    if matched != i + 1 {
                        plan.flow.push((p as u8, i as u32));
                    }
                    todo.push(matched);
                }
                _ => todo.extend([i + 1, matched]),
            }
        }
        for (i, it) in items.iter().enumerate() {
            let Item::Rule(head) = it else { continue };
            if !can_run[i] {
                continue;
            }
            let mut link = Some(&**head);
            let mut depth = 0u8;
            while let Some(r) = link {
                if !r.is_action {
                    if !r.op.pure() {
                        if r.pf.is_some() || !r.pf_steps.is_empty() {
                            return None;
                        }
                    } else {
                        plan.reader[r.link as usize] = true;
                        let fs = &mut plan.filters[r.link as usize];
                        fs.extend(r.pf.map(|p| p.0));
                        fs.extend(r.pf_steps.iter().map(|p| p.0));
                        fs.sort_unstable();
                        fs.dedup();
                        for (ti, t) in r.targets.iter().enumerate() {
                            if t.count {
                                continue;
                            }
                            for &k in kinds_of(t.var) {
                                plan.readers_of[k as usize].push(Reader {
                                    phase: p as u8,
                                    item: i as u32,
                                    depth,
                                    target: ti as u16,
                                });
                            }
                        }
                    }
                }
                link = r.chain.as_deref();
                depth += 1;
            }
        }
    }
    Some(plan)
}

/// What is known of an entry: the readers (`Rule::link`) that match it, at most two, the
/// others `NONE`. `CLEAN`: no reader matches it; `UNKNOWN`: not known, or more than two
/// readers match it (every link reads it).
pub(super) type State = [u32; 2];
const NONE: u32 = u32::MAX;
const DIRTY: u32 = u32::MAX - 1;
const CLEAN: State = [NONE, NONE];
const UNKNOWN: State = [DIRTY, DIRTY];

/// Whether link `link` leaves out entry `i` (its name with `names`) of a collection whose
/// states are `states`.
#[inline]
pub(super) fn skips(states: &[State], i: usize, names: bool, link: u32) -> bool {
    states
        .get(2 * i + usize::from(names))
        .is_some_and(|s| s[0] != DIRTY && s[0] != link && s[1] != link)
}

/// Whether the state of entry `i` (its name with `names`) is known: the prefilter's unions
/// leave it out, but for the filters of the readers that match it (`Clean::partial`).
#[inline]
pub(super) fn is_known(states: &[State], i: usize, names: bool) -> bool {
    states
        .get(2 * i + usize::from(names))
        .is_some_and(|s| s[0] != DIRTY)
}

/// An evaluation's entry states, and the entries to check when it ends. Kept with its buffers
/// for the thread's next evaluation (in `Buffers`).
#[derive(Default)]
pub(super) struct Clean {
    /// Whether entry states are used in this evaluation.
    pub(super) on: bool,
    /// Per collection (`slot_of`): entry `i`'s value's state at `2 i`, its name's at `2 i + 1`.
    states: [Vec<State>; 3],
    /// Per entry kind: (filter, entry index) for each entry that only some readers match and
    /// each filter those readers use.
    partial: [Vec<(u32, u32)>; KINDS],
    /// Entries seen before whose state is not remembered: (kind, entry index, the lookup).
    verify: Vec<(u8, u32, memo::Unknown)>,
    /// The memo key being built.
    key: Vec<u8>,
}

impl Clean {
    /// Empties it for the next evaluation.
    pub(super) fn clear(&mut self) {
        self.on = false;
        self.states.iter_mut().for_each(Vec::clear);
        self.partial.iter_mut().for_each(Vec::clear);
        self.verify.clear();
        self.key.clear();
    }

    /// Whether it holds more than a request's worth of entries (then it is not kept).
    pub(super) fn large(&self) -> bool {
        self.states.iter().any(|b| b.capacity() > 4096)
            || self.partial.iter().any(|p| p.capacity() > 4096)
            || self.verify.capacity() > 4096
            || self.key.capacity() > memo::MAX_LEN * 2
    }

    /// The (filter, entry index) pairs of collection `base`'s values or names (`names`) that
    /// only some readers match, when entry states are used.
    #[inline]
    pub(super) fn partial(&self, base: Var, names: bool) -> &[(u32, u32)] {
        let kind = match (self.on, base) {
            (false, _) => return &[],
            (true, Var::Headers) => HEADER_VALUE,
            (true, Var::Cookies) => COOKIE_VALUE,
            // Query and body arguments: the index tells them apart.
            (true, Var::Args) => GET_VALUE,
            _ => return &[],
        };
        &self.partial[usize::from(kind + u8::from(names))]
    }

    /// The entry states of collection `base`, when they are used.
    #[inline]
    pub(super) fn states(&self, base: Var) -> Option<&[State]> {
        if !self.on {
            return None;
        }
        Some(&self.states[slot_of(base)?])
    }
}

fn pack(s: State) -> u64 {
    u64::from(s[0]) << 32 | u64::from(s[1])
}

fn unpack(p: u64) -> State {
    [(p >> 32) as u32, p as u32]
}

/// Writes the memo key of an entry: the name alone for a name, else its length, the name and
/// the value.
fn key_into(out: &mut Vec<u8>, names: bool, name: &str, value: &[u8]) {
    out.clear();
    if names {
        out.extend_from_slice(name.as_bytes());
    } else {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value);
    }
}

impl Ev<'_> {
    /// Looks the request's entries up in the memo: in phase 1 its headers, cookies and query
    /// arguments; with `body`, the arguments its body added. Entries seen before and not
    /// known clean are noted for `clean_verify`.
    pub(super) fn clean_look_up(&mut self, body: bool) {
        if !self.clean.on {
            return;
        }
        let id = self.rs.id;
        let plan = self.plan;
        let req = &self.req;
        let c = &mut self.clean;
        let g = req.args_get_len.min(req.args.len());
        let lists: [(&[Entry], usize, u8); 3] = if body {
            [(&req.args[g..], g, POST_VALUE), (&[], 0, 0), (&[], 0, 0)]
        } else {
            [
                (&req.headers[..], 0, HEADER_VALUE),
                (&req.cookies[..], 0, COOKIE_VALUE),
                (&req.args[..g], 0, GET_VALUE),
            ]
        };
        for (es, off, kind) in lists {
            if es.is_empty() {
                continue;
            }
            let (base, _) = base_of(kind);
            let states = &mut c.states[slot_of(base).expect("a remembered collection")];
            states.resize(2 * (off + es.len()), UNKNOWN);
            for (i, (name, value)) in es.iter().enumerate() {
                for names in [false, true] {
                    let kind = kind + u8::from(names);
                    key_into(&mut c.key, names, name, value);
                    if c.key.len() > memo::MAX_LEN {
                        continue;
                    }
                    let op = [id, MEMO_TAG + u64::from(kind)];
                    match memo::known(memo::Store::Entries, op, &c.key, memo::value_hash(&c.key)) {
                        Ok(p) => {
                            let st = unpack(p);
                            states[2 * (off + i) + usize::from(names)] = st;
                            // Query and body arguments share one list (by index).
                            let list = usize::from(match kind {
                                POST_VALUE | POST_NAME => kind - 2,
                                _ => kind,
                            });
                            for l in st.into_iter().filter(|&l| l != NONE && l != DIRTY) {
                                for &f in plan.map_or(&[][..], |p| &p.filters[l as usize]) {
                                    c.partial[list].push((f, (off + i) as u32));
                                }
                            }
                        }
                        Err(at) => {
                            if memo::seen_before(memo::Store::Entries, at) {
                                c.verify.push((kind, (off + i) as u32, at));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks the entries `clean_look_up` noted against every reader, and remembers which
    /// readers match each. Run when the evaluation ends: most of what the readers need, the
    /// evaluation transformed and scanned already.
    pub(super) fn clean_verify(&mut self) {
        let Some(plan) = self.plan else { return };
        if self.clean.verify.is_empty() {
            return;
        }
        let verify = std::mem::take(&mut self.clean.verify);
        let mut mv = MatchList::default();
        let mut caps = Vec::new();
        for &(kind, idx, at) in &verify {
            let (base, names) = base_of(kind);
            let Some((name, value)) = entries(&self.req, base)
                .and_then(|(es, ..)| es.get(idx as usize))
                .cloned()
            else {
                continue;
            };
            let state = self.readers_matching(plan, kind, idx as usize, &name, &mut mv, &mut caps);
            let c = &mut self.clean;
            key_into(&mut c.key, names, &name, &value);
            let op = [self.rs.id, MEMO_TAG + u64::from(kind)];
            memo::remember(memo::Store::Entries, at, op, &c.key, pack(state));
        }
        self.clean.verify = verify;
        self.clean.verify.clear();
    }

    /// The state of entry `idx` (named `name`, of kind `kind`): which readers that select it
    /// match it.
    fn readers_matching(
        &mut self,
        plan: &Plan,
        kind: u8,
        idx: usize,
        name: &str,
        mv: &mut MatchList,
        caps: &mut Vec<(usize, Caps)>,
    ) -> State {
        let (base, names) = base_of(kind);
        let mut state = CLEAN;
        let mut n = 0;
        let rs = self.rs;
        for &rd in &plan.readers_of[kind as usize] {
            let r = plan.link(rs, rd);
            let t = &r.targets[rd.target as usize];
            if t.key.as_ref().is_some_and(|s| !key_matches(s, name))
                || r.excludes.iter().any(|ex| excluded(t.var, Some(name), ex))
            {
                continue;
            }
            let v = Val {
                shown: t.var,
                src: Src::Entry(base, idx, names),
            };
            mv.clear();
            caps.clear();
            if state.contains(&r.link) {
                continue;
            }
            if self.run_on(r, &v, mv, caps, false) {
                if n == state.len() {
                    return UNKNOWN;
                }
                state[n] = r.link;
                n += 1;
            }
        }
        state
    }

    /// Whether link `r` leaves clean entries out.
    #[inline]
    pub(super) fn skips_clean(&self, r: &Rule) -> bool {
        self.clean.on && self.plan.is_some_and(|p| p.reader[r.link as usize])
    }

    /// After a `ctl` removed rules or targets: when that may let rules run that the plan left
    /// out, stops skipping clean entries and drops the unions made without them.
    pub(super) fn clean_after_removal(&mut self, tx_target: bool) {
        let Some(plan) = self.plan else { return };
        if !self.clean.on {
            return;
        }
        let rs = self.rs;
        let flow_removed =
            plan.flow
                .iter()
                .any(|&(p, i)| match &rs.phases[p as usize][i as usize] {
                    Item::Rule(r) => self.removed(r),
                    Item::Marker(_) => false,
                });
        if tx_target || flow_removed {
            self.clean.on = false;
            self.cache.forget_unions();
        }
    }
}
