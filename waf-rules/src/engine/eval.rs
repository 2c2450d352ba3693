//! Evaluation of a compiled rule set against one request.

mod clean;

pub(super) use clean::Plan as CleanPlan;

/// Which links of `rs` read which entries under its own configuration, after its prefix
/// `prefix` (see `clean`); `None` when entries cannot be remembered as clean.
pub(super) fn clean_plan(rs: &RuleSet, prefix: Option<&Prefix>) -> Option<CleanPlan> {
    match prefix {
        Some(p) => clean::plan(rs, p.resume, &p.fixed),
        None => clean::plan(rs, 0, &[Vec::new(), Vec::new()]),
    }
}

use super::memo;
use super::tx::{Tx, TxRef};
use super::*;
use crate::operator::Found;
use crate::request::{Entry, Request};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Per-request memo of transformed values and what the prefilter found in them.
///
/// Every transformed value lives once in `arena`: a chain step that changes nothing shares its
/// input, and equal outputs of different chains are interned to one entry, so the shared
/// automaton scans each distinct content once however many chains produced it.
#[derive(Default)]
struct Cache {
    /// Content rows: row × node count + node → arena index of the row's raw content through
    /// that transformation node (node 0: the content itself; `u32::MAX` while not computed).
    /// Values with equal contents share a row (a dozen identical cart-line notes, the path
    /// as `REQUEST_FILENAME` and `REQUEST_BASENAME`): each chain runs once per content.
    /// Bounded by the distinct values (the entry limits) times the chain trie's size.
    rows: Vec<u32>,
    /// Arena index of a raw content → its row (`u32::MAX`: none).
    row_of: Vec<u32>,
    /// Per collection (`dense_table`): entry index → its value's row (`u32::MAX`: not seen).
    entry_rows: [Vec<u32>; DENSE_TABLES],
    /// Per scalar variable (`scalar_row`): its value's row (`u32::MAX`: not read yet).
    scalar_rows: Vec<u32>,
    /// Any other key (`scalar_key`, `entry_key`) → its value's row.
    map: FastMap<u64, u32>,
    /// Nodes in the rule set's transformation trie.
    n_nodes: usize,
    arena: Arena,
    /// Per arena entry: its content hash (interning and the cross-request memo key on it).
    hashes: Vec<u64>,
    /// (arena index, transformation) → arena index of the result: chains that reach the same
    /// content run each following step once between them.
    steps: FastMap<(u32, Transform), u32>,
    /// Per arena entry: its byte classes (bit 31: computed).
    byte_flags: Vec<u32>,
    /// Content hash → arena index, for interning.
    by_content: FastMap<u64, u32>,
    /// Arena index → offset in `bits` of its slot bitset (`u32::MAX`: not scanned yet).
    scan_at: Vec<u32>,
    /// Arena index → an entry equal to it but for ASCII case (`u32::MAX`: none known), noted
    /// when `t:lowercase` changed a value: the scan folds case, so whichever of the two is
    /// scanned first serves both.
    fold_twin: Vec<u32>,
    /// Slot bitsets of scanned contents, `Prefilter::words` each.
    bits: Vec<u64>,
    /// Per filter: the union of its slots over every request value it covers, and the phase
    /// it was computed in (0: not yet).
    union: Vec<u64>,
    union_phase: Vec<u64>,
    /// The first phase whose unions still hold (2 once a body brought new values).
    union_from: u64,
    /// Per filter: whether some value it covers holds a marked byte (computed with `union`).
    union_marked: Vec<bool>,
    /// Per collection variable (`Var as usize`): its entries grouped by the byte flags of
    /// their raw values, for the filters' unions (see `Ev::may_match_slow`).
    var_groups: Vec<VarGroups>,
    groups: Vec<Group>,
    /// The content rows of each group, group after group (an entry whose content an earlier
    /// entry of the variable has is left out).
    members: Vec<u32>,
    /// Per group whose raw slots were needed: the union of its members' raw slot bitsets.
    group_bits: Vec<u64>,
    /// (rule, arena index) → what a libinjection detector found in that content: equal values
    /// among a rule's targets (a dozen identical cart-line notes) run the detector once.
    ops: FastMap<(usize, u32), Option<crate::operator::Found>>,
    scratch: Scratch,
}

/// Where a collection variable's groups lie in `Cache::groups`, and the phase they were
/// made in (0: not yet; stale as a filter's union is, see `Cache::union_from`).
#[derive(Default, Clone, Copy)]
struct VarGroups {
    at: u64,
    start: u32,
    end: u32,
}

/// Entries of one collection variable whose raw values have the same byte flags: a chain
/// that keeps one of them keeps them all, so a filter over that chain takes their raw slots
/// in one union instead of looking each entry up.
#[derive(Clone, Copy)]
struct Group {
    flags: u32,
    /// This group's range in `Cache::members`.
    members: (u32, u32),
    /// Offset in `Cache::group_bits` of the members' raw slot union (`u32::MAX`: not yet).
    bits_at: u32,
}

/// Every content a request's evaluation looked at, back to back in one buffer (kept with its
/// capacity for the next request: no allocation per value).
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    /// Per content: its (start, end) in `bytes`.
    spans: Vec<(usize, usize)>,
}

impl Arena {
    fn with_capacity(contents: usize, bytes: usize) -> Arena {
        Arena {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(contents),
        }
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn capacity(&self) -> usize {
        self.spans.capacity()
    }

    fn bytes_capacity(&self) -> usize {
        self.bytes.capacity()
    }

    fn push(&mut self, v: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(v);
        self.spans.push((start, self.bytes.len()));
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

impl std::ops::Index<usize> for Arena {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        &self.bytes[start..end]
    }
}

/// Beyond these sizes (arena entries; table words and map entries together) a used [`Cache`]
/// is dropped rather than kept for the next request, so one large request does not pin its
/// memory to the thread (at most a few MiB stay, per thread that evaluates).
const SPARE_MAX_ARENA: usize = 4096;
/// The arena's bytes kept for the next request at most (a request inspects at most a few MiB).
const SPARE_MAX_ARENA_BYTES: usize = 1 << 20;
const SPARE_MAX_WORDS: usize = 1 << 18;
/// The step memo's capacity kept for the next request at most (a GET's values take a few
/// hundred steps).
const SPARE_STEPS: usize = 1024;

thread_local! {
    /// The last evaluation's cache, emptied, for the next one on this thread: its maps and
    /// tables keep their capacity, so a request does not allocate them again.
    static SPARE_CACHE: std::cell::RefCell<Option<Cache>> = const { std::cell::RefCell::new(None) };
}

impl Cache {
    /// A cache for a rule set with `n_nodes` transformation nodes: this thread's spare one,
    /// emptied, or a new one.
    fn for_request(n_nodes: usize) -> Cache {
        let mut c = SPARE_CACHE
            .with(|s| s.borrow_mut().take())
            .unwrap_or_else(|| Cache {
                arena: Arena::with_capacity(256, 16 << 10),
                hashes: Vec::with_capacity(256),
                by_content: FastMap::with_capacity_and_hasher(256, Default::default()),
                steps: FastMap::with_capacity_and_hasher(128, Default::default()),
                ..Default::default()
            });
        c.n_nodes = n_nodes;
        c.union_from = 1;
        c
    }

    /// Empties the cache (keeping its buffers) and keeps it for this thread's next request,
    /// unless it grew past the `SPARE_MAX_*` sizes.
    fn recycle(mut self) {
        let dense: usize = self.entry_rows.iter().map(Vec::capacity).sum::<usize>()
            + self.rows.capacity()
            + self.row_of.capacity()
            + self.scalar_rows.capacity();
        let maps = self.map.capacity()
            + self.steps.capacity()
            + self.by_content.capacity()
            + self.ops.capacity();
        if self.arena.capacity() > SPARE_MAX_ARENA
            || self.arena.bytes_capacity() > SPARE_MAX_ARENA_BYTES
            || self.bits.capacity() + dense + maps > SPARE_MAX_WORDS
        {
            return;
        }
        // Every field named, so that a new one cannot be left holding the last request's data.
        let Cache {
            rows,
            row_of,
            entry_rows,
            scalar_rows,
            map,
            // Set by `for_request`, as is `union_from`.
            n_nodes: _,
            arena,
            hashes,
            steps,
            byte_flags,
            by_content,
            scan_at,
            fold_twin,
            bits,
            // Keeps its words: a filter's union is recomputed while its phase is 0.
            union: _,
            union_phase,
            union_from: _,
            union_marked: _,
            var_groups,
            groups,
            members,
            group_bits,
            ops,
            // Buffers only; its per-literal stamps stay valid (they only grow).
            scratch: _,
        } = &mut self;
        rows.clear();
        row_of.clear();
        entry_rows.iter_mut().for_each(Vec::clear);
        scalar_rows.clear();
        map.clear();
        arena.clear();
        hashes.clear();
        // (A body's arguments reserve room for their steps; a table that large, cleared for
        // every later request, costs more than growing it again when a large body comes.)
        if steps.capacity() > SPARE_STEPS {
            *steps = FastMap::with_capacity_and_hasher(SPARE_STEPS, Default::default());
        } else {
            steps.clear();
        }
        byte_flags.clear();
        by_content.clear();
        scan_at.clear();
        fold_twin.clear();
        bits.clear();
        union_phase.fill(0);
        var_groups.clear();
        groups.clear();
        members.clear();
        group_bits.clear();
        ops.clear();
        SPARE_CACHE.with(|s| *s.borrow_mut() = Some(self));
    }

    /// Stores a transformed value, or finds an equal one already stored.
    fn intern(&mut self, out: &[u8]) -> u32 {
        let h = memo::value_hash(out);
        if let Some(&i) = self.by_content.get(&h) {
            if self.arena[i as usize] == *out {
                return i;
            }
        }
        let idx = self.arena.len() as u32;
        self.arena.push(out);
        self.hashes.push(h);
        self.by_content.entry(h).or_insert(idx);
        idx
    }

    /// The [`crate::transform::byte_flags`] of arena entry `idx`, computed on first use.
    fn flags(&mut self, idx: u32) -> u32 {
        const KNOWN: u32 = 1 << 31;
        let i = idx as usize;
        if self.byte_flags.len() <= i {
            self.byte_flags.resize(self.arena.len().max(i + 1), 0);
        }
        if self.byte_flags[i] & KNOWN == 0 {
            self.byte_flags[i] = crate::transform::byte_flags(&self.arena[i]) | KNOWN;
        }
        self.byte_flags[i]
    }

    /// Notes that arena entries `a` and `b` are equal but for ASCII case: whichever is
    /// scanned first serves both (`content_bits`).
    fn link_fold_twins(&mut self, a: u32, b: u32) {
        let n = a.max(b) as usize + 1;
        if self.fold_twin.len() < n {
            self.fold_twin.resize(self.arena.len().max(n), u32::MAX);
        }
        self.fold_twin[a as usize] = b;
        self.fold_twin[b as usize] = a;
    }

    /// What filter `fi`'s per-request union says of global slot `slot` (see
    /// `Ev::may_match`), when it was computed in a phase whose values still hold.
    #[inline]
    fn union_says(&self, fi: u32, slot: u32, unmarked_only: bool) -> Option<bool> {
        let at = *self.union_phase.get(fi as usize)?;
        (at != 0 && at >= self.union_from).then(|| {
            self.union[slot as usize / 64] & (1 << (slot % 64)) != 0
                || (unmarked_only && self.union_marked[fi as usize])
        })
    }

    /// ORs content row `r`'s slots through filter `f`'s chain into the filter's union (unless
    /// `length_check` finds its result too short for any of the filter's literals); whether
    /// that result holds a marked byte.
    fn union_row(
        &mut self,
        nodes: &[Node],
        pf: &Prefilter,
        f: &NodeFilter,
        length_check: bool,
        r: u32,
    ) -> bool {
        if length_check && too_short(self, nodes, f, r) {
            // Its result through the chain holds none of the literals.
            return false;
        }
        let ti = row_node(self, nodes, r, f.node);
        let marked = self.is_marked(ti);
        let o = self.content_bits(pf, ti);
        let range = f.base_word..f.base_word + f.words;
        or_into(
            &mut self.union[range.clone()],
            &self.bits[o + range.start..],
        );
        marked
    }

    /// Drops every filter's union and every variable's groups: they are made again when next
    /// asked for.
    fn forget_unions(&mut self) {
        self.union_phase.fill(0);
        self.var_groups.iter_mut().for_each(|g| g.at = 0);
    }

    /// The arena index of content row `r`'s raw content (its node 0).
    #[inline]
    fn raw_of(&self, r: u32) -> u32 {
        self.rows[r as usize * self.n_nodes]
    }

    /// Whether arena entry `idx` holds a [`crate::prefilter::marked_byte`] (one of its byte
    /// classes).
    #[inline]
    fn is_marked(&mut self, idx: u32) -> bool {
        self.flags(idx) & crate::transform::flags::MARKED != 0
    }

    /// Whether arena entry `idx` holds one of the literals of global slot `slot`.
    fn has_literal(&mut self, pf: &Prefilter, idx: u32, slot: u32) -> bool {
        let o = self.content_bits(pf, idx);
        self.bits[o + slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// Whether rule `r` (with literal slot `slot`) may match arena entry `idx`: the entry holds
    /// one of its literals (and one of its second set's, `Rule::pf_also`), or, for literals that
    /// hold only for unmarked values, a marked byte.
    #[inline(always)]
    fn may_hold(&mut self, pf: &Prefilter, idx: u32, slot: u32, r: &Rule) -> bool {
        (self.has_literal(pf, idx, slot) && r.pf_also.is_none_or(|s| self.has_literal(pf, idx, s)))
            || (r.pf_unmarked && self.is_marked(idx))
    }

    /// Offset in `bits` of the slot bitset of arena entry `idx`, scanning it on first use.
    fn content_bits(&mut self, pf: &Prefilter, idx: u32) -> usize {
        let i = idx as usize;
        if self.scan_at.len() <= i {
            self.scan_at.resize(self.arena.len().max(i + 1), u32::MAX);
        }
        if self.scan_at[i] != u32::MAX {
            return self.scan_at[i] as usize;
        }
        if let Some(&twin) = self.fold_twin.get(i) {
            if let Some(&off) = self.scan_at.get(twin as usize).filter(|&&o| o != u32::MAX) {
                self.scan_at[i] = off;
                return off as usize;
            }
        }
        let off = self.bits.len();
        self.bits.resize(off + pf.words, 0);
        pf.lits.scan_into(
            &self.arena[i],
            &mut self.bits[off..],
            &mut self.scratch.lits,
        );
        self.scan_at[i] = off as u32;
        off
    }
}

/// The cache key of entry `i` of collection `base` (its name with `names`).
#[inline]
fn entry_key(base: Var, i: usize, names: bool) -> u64 {
    ((base as u64) << 33) | ((i as u64) << 1) | u64::from(names)
}

/// A collection variable's entries as `entries` gives them, with where their keys start.
#[derive(Clone, Copy)]
struct EntrySlice<'a> {
    es: &'a [Entry],
    off: usize,
    names: bool,
    base: Var,
}

impl<'a> EntrySlice<'a> {
    fn of(req: &'a Request, v: Var) -> Option<EntrySlice<'a>> {
        entries(req, v).map(|(es, off, names, base)| EntrySlice {
            es,
            off,
            names,
            base,
        })
    }

    /// Entry `i`'s raw value (its name with `names`) and cache key.
    #[inline]
    fn raw(&self, i: usize) -> (&'a [u8], u64) {
        let (k, v) = &self.es[i];
        let raw: &[u8] = if self.names { k.as_bytes() } else { v };
        (raw, entry_key(self.base, self.off + i, self.names))
    }
}

impl Cache {
    /// The range in `groups` of variable `v`'s groups (its entries `s`) in phase `phase`,
    /// made on first use.
    /// Entries whose state `skip` knows (see `clean`) are left out: clean ones, and those only
    /// some readers match (`Clean::partial` adds them to the unions that need them).
    fn var_groups(
        &mut self,
        nodes: &[Node],
        v: Var,
        phase: u64,
        s: EntrySlice,
        skip: Option<&[clean::State]>,
    ) -> (usize, usize) {
        let vi = v as usize;
        if self.var_groups.len() <= vi {
            self.var_groups.resize(vi + 1, VarGroups::default());
        }
        let vg = self.var_groups[vi];
        if vg.at != 0 && vg.at >= self.union_from {
            return (vg.start as usize, vg.end as usize);
        }
        let start = self.groups.len();
        // Each distinct content's group, then the members (content rows) laid out group after
        // group, in entry order: an entry whose value an earlier one has adds nothing to a union.
        let mut group_of = std::mem::take(&mut self.scratch.group_of);
        group_of.clear();
        self.scratch.stamp += 1;
        let stamp = self.scratch.stamp;
        for i in 0..s.es.len() {
            if skip.is_some_and(|st| clean::is_known(st, s.off + i, s.names)) {
                continue;
            }
            let (raw, key) = s.raw(i);
            let r = row_of_key(self, nodes, key, raw);
            let seen = &mut self.scratch.row_stamp;
            if seen.len() <= r as usize {
                seen.resize(r as usize + 1, 0);
            }
            if seen[r as usize] == stamp {
                continue;
            }
            seen[r as usize] = stamp;
            let ri = self.raw_of(r);
            let flags = self.flags(ri);
            let g = match self.groups[start..].iter().position(|g| g.flags == flags) {
                Some(g) => g,
                None => {
                    self.groups.push(Group {
                        flags,
                        members: (0, 0),
                        bits_at: u32::MAX,
                    });
                    self.groups.len() - 1 - start
                }
            };
            group_of.push((r, g as u32));
            self.groups[start + g].members.1 += 1;
        }
        let mut next = self.members.len() as u32;
        for g in &mut self.groups[start..] {
            let n = g.members.1;
            g.members = (next, next);
            next += n;
        }
        self.members.resize(next as usize, 0);
        for &(r, g) in group_of.iter() {
            let g = &mut self.groups[start + g as usize];
            self.members[g.members.1 as usize] = r;
            g.members.1 += 1;
        }
        self.scratch.group_of = group_of;
        let end = self.groups.len();
        self.var_groups[vi] = VarGroups {
            at: phase,
            start: start as u32,
            end: end as u32,
        };
        (start, end)
    }

    /// The offset in `group_bits` of group `g`'s raw slot union, and whether its members hold
    /// a marked byte (one of the byte classes they share); computed on first use.
    fn group_bits(&mut self, pf: &Prefilter, g: usize) -> (usize, bool) {
        let gr = self.groups[g];
        let marked = gr.flags & crate::transform::flags::MARKED != 0;
        if gr.bits_at != u32::MAX {
            return (gr.bits_at as usize, marked);
        }
        let at = self.group_bits.len();
        self.group_bits.resize(at + pf.words, 0);
        for m in gr.members.0..gr.members.1 {
            let ri = self.raw_of(self.members[m as usize]);
            let o = self.content_bits(pf, ri);
            or_into(&mut self.group_bits[at..], &self.bits[o..]);
        }
        self.groups[g].bits_at = at as u32;
        (at, marked)
    }
}

/// Buffers reused across values: the grouping of collection entries and the literal scan.
#[derive(Default)]
struct Scratch {
    /// Per distinct content of a collection being grouped: its row and group
    /// (`Cache::var_groups`).
    group_of: Vec<(u32, u32)>,
    /// Per content row: the `stamp` of the last grouping that saw it.
    row_stamp: Vec<u64>,
    stamp: u64,
    lits: super::lits::ScanScratch,
}

#[derive(Default, Clone)]
struct St<'r> {
    tx: Tx<'r>,
    /// MATCHED_VAR and MATCHED_VAR_NAME, unless `matched_ref` is set (read them through
    /// `St::matched`).
    matched_var: Vec<u8>,
    matched_var_name: String,
    /// (name, value) when the last match was a fixed rule's, borrowed from the rule set's
    /// prefix instead of copied: about twenty such rules match on every CRS request.
    matched_ref: Option<(&'r str, &'r [u8])>,
    matched_vars: MatchList,
    spare_matched_vars: MatchList,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(RuleSel, Target)>,
    /// The variables `removed_targets` names (bit `var as u32`).
    removed_vars: u64,
    body_proc: Option<String>,
    force_body: bool,
    mode: Mode,
    stop: bool,
    blocked: bool,
    matches: Vec<RuleMatch>,
    rule_id: u32,
    /// `RULE.msg`: the last matched rule's message, borrowed from the rule set (most
    /// requests match dozens of CRS's bookkeeping rules and never read it).
    rule_msg: &'r str,
}

impl St<'_> {
    /// (MATCHED_VAR_NAME, MATCHED_VAR).
    fn matched(&self) -> (&str, &[u8]) {
        match self.matched_ref {
            Some(m) => m,
            None => (&self.matched_var_name, &self.matched_var),
        }
    }

    /// Sets MATCHED_VAR_NAME and MATCHED_VAR, copying them into the kept buffers.
    fn set_matched(&mut self, name: &str, value: &[u8]) {
        self.matched_ref = None;
        self.matched_var_name.clear();
        self.matched_var_name.push_str(name);
        self.matched_var.clear();
        self.matched_var.extend_from_slice(value);
    }
}

enum Src {
    /// An entry of a request collection: (cache base var, index, names?).
    Entry(Var, usize, bool),
    Scalar(Var),
    /// A value made for the rule (MATCHED_VARS, XML, a run-time TX name): boxed, so that
    /// the common variants stay small.
    Owned(Box<(String, Vec<u8>)>),
    /// How many values a `&VAR` target counts.
    Count(usize),
    /// A TX variable by slot, read when the rule runs (TX does not change while a rule reads
    /// its values).
    Tx(u32),
    /// A run-time TX variable by its index among them, read when the rule runs, as `Tx` (CRS
    /// 920450's chained rule reads one per request header).
    TxExtra(u32),
}

/// A match's capture groups, as a rule link's matches keep them until its actions run.
enum Caps {
    /// The whole matched value is group 0 (CRS 920450's `^.*$` on every header name):
    /// nothing copied.
    Whole,
    /// Groups 0 to 9.
    Groups(Vec<Vec<u8>>),
}

/// The (name, value) pairs of a rule link's matches. Cleared lists keep their buffers: most
/// CRS rules that match (the initialisations, the score additions) match one short value.
#[derive(Debug, Default, Clone)]
struct MatchList {
    items: Vec<Entry>,
    len: usize,
}

impl MatchList {
    fn as_slice(&self) -> &[Entry] {
        &self.items[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Makes this list hold `from`'s entries, in its own buffers.
    fn copy_from(&mut self, from: &MatchList) {
        self.clear();
        for (k, v) in from.as_slice() {
            let e = self.push_empty();
            e.0.push_str(k);
            e.1.extend_from_slice(v);
        }
    }

    /// Appends an entry with empty buffers and returns it.
    fn push_empty(&mut self) -> &mut Entry {
        if self.items.len() == self.len {
            self.items.push(Default::default());
        }
        self.len += 1;
        let e = &mut self.items[self.len - 1];
        e.0.clear();
        e.1.clear();
        e
    }
}

struct Val {
    shown: Var,
    src: Src,
}

/// An evaluation's working lists, kept (emptied) for this thread's next evaluation as the
/// [`Cache`] is: each request otherwise grew them again from nothing (about 100 reallocations
/// per legit-dev request).
#[derive(Default)]
struct Buffers {
    pool: Vec<Vec<Val>>,
    matched_vars: MatchList,
    spare_matched_vars: MatchList,
    chain_buf: Vec<u32>,
    cand_buf: Vec<u32>,
    clean: clean::Clean,
    setvar_bufs: (Vec<u8>, Vec<u8>),
    /// TX's buffers (capped by [`Tx::into_spare`]).
    tx_spare: super::tx::TxSpare,
    /// The last request's model, emptied (capped by [`Request::clear`]).
    req: Request,
}

/// Match lists longer than this, or holding a name or value longer than this many bytes, are
/// not kept for the next request (nor value lists longer than it).
const SPARE_MAX_MATCHES: usize = 256;
const SPARE_MAX_MATCH_BYTES: usize = 4096;

thread_local! {
    static SPARE_BUFFERS: std::cell::RefCell<Option<Buffers>> =
        const { std::cell::RefCell::new(None) };
}

impl Buffers {
    /// This thread's spare buffers, or new ones.
    fn take() -> Buffers {
        SPARE_BUFFERS
            .with(|s| s.borrow_mut().take())
            .unwrap_or_default()
    }

    /// Keeps the buffers for this thread's next evaluation, emptied, unless one grew past the
    /// `SPARE_MAX_MATCH*` sizes.
    fn recycle(mut self) {
        let small = |m: &MatchList| {
            m.items.len() <= SPARE_MAX_MATCHES
                && m.items.iter().all(|(k, v)| {
                    k.capacity() <= SPARE_MAX_MATCH_BYTES && v.capacity() <= SPARE_MAX_MATCH_BYTES
                })
        };
        if !small(&self.matched_vars)
            || !small(&self.spare_matched_vars)
            || self.pool.len() > SPARE_MAX_MATCHES
            || self.pool.iter().any(|v| v.capacity() > SPARE_MAX_MATCHES)
            || self.cand_buf.capacity() > SPARE_MAX_MATCHES
            || self.chain_buf.capacity() > SPARE_MAX_MATCHES
            || self.clean.large()
            || self.setvar_bufs.0.capacity() > SPARE_MAX_MATCH_BYTES
            || self.setvar_bufs.1.capacity() > SPARE_MAX_MATCH_BYTES
        {
            return;
        }
        // Every field named, so that a new one cannot be left holding the last request's data.
        let Buffers {
            pool,
            matched_vars,
            spare_matched_vars,
            chain_buf,
            cand_buf,
            clean,
            // Cleared by each use.
            setvar_bufs: _,
            tx_spare: _,
            req,
        } = &mut self;
        req.clear();
        pool.iter_mut().for_each(Vec::clear);
        clean.clear();
        matched_vars.clear();
        spare_matched_vars.clear();
        chain_buf.clear();
        cand_buf.clear();
        SPARE_BUFFERS.with(|s| *s.borrow_mut() = Some(self));
    }
}

fn entries(req: &Request, var: Var) -> Option<(&[Entry], usize, bool, Var)> {
    let g = req.args_get_len.min(req.args.len());
    Some(match var {
        Var::Args => (&req.args[..], 0, false, Var::Args),
        Var::ArgsGet => (&req.args[..g], 0, false, Var::Args),
        Var::ArgsPost => (&req.args[g..], g, false, Var::Args),
        Var::ArgsNames => (&req.args[..], 0, true, Var::Args),
        Var::ArgsGetNames => (&req.args[..g], 0, true, Var::Args),
        Var::ArgsPostNames => (&req.args[g..], g, true, Var::Args),
        Var::Headers => (&req.headers[..], 0, false, Var::Headers),
        Var::HeadersNames => (&req.headers[..], 0, true, Var::Headers),
        Var::Cookies => (&req.cookies[..], 0, false, Var::Cookies),
        Var::CookiesNames => (&req.cookies[..], 0, true, Var::Cookies),
        Var::Files => (&req.files[..], 0, false, Var::Files),
        Var::FilesNames => (&req.files[..], 0, true, Var::Files),
        Var::FilesSizes => (&req.files_sizes[..], 0, false, Var::FilesSizes),
        Var::MultipartPartHeaders => (
            &req.multipart_part_headers[..],
            0,
            false,
            Var::MultipartPartHeaders,
        ),
        _ => return None,
    })
}

/// `n` in decimal, written into `buf` (20 bytes hold any `i64`).
pub(super) fn int_text(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// A count as text, without allocating for the small ones CRS's `&TX:x "@eq 0"` checks see.
fn count_bytes(n: usize) -> Cow<'static, [u8]> {
    const SMALL: [&[u8]; 10] = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];
    match SMALL.get(n) {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(n.to_string().into_bytes()),
    }
}

fn bool_bytes(b: bool) -> Cow<'static, [u8]> {
    Cow::Borrowed(if b { b"1" } else { b"0" })
}

fn scalar<'a>(req: &'a Request, st: &'a St, var: Var) -> Cow<'a, [u8]> {
    match var {
        Var::RequestUri => Cow::Borrowed(&req.uri),
        Var::RequestUriRaw => Cow::Borrowed(&req.uri_raw),
        Var::RequestFilename => Cow::Borrowed(&req.filename),
        Var::RequestBasename => Cow::Borrowed(&req.basename),
        Var::RequestLine => Cow::Borrowed(&req.request_line),
        Var::RequestMethod => Cow::Borrowed(&req.method),
        Var::RequestProtocol => Cow::Borrowed(&req.protocol),
        Var::QueryString => Cow::Borrowed(&req.query),
        // As ModSecurity: only the URL-encoded processor (or `forceRequestBodyVariable`)
        // exposes the raw body; JSON, XML and multipart bodies are inspected through ARGS/FILES.
        Var::RequestBody if st.force_body || req.body_processor == "URLENCODED" => {
            Cow::Borrowed(&req.body)
        }
        Var::RequestBody => Cow::Borrowed(b""),
        Var::RequestBodyLength => Cow::Owned(req.body.len().to_string().into_bytes()),
        Var::FullRequestLength => Cow::Owned(
            (req.request_line.len()
                + req
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 4)
                    .sum::<usize>()
                + req.body_length)
                .to_string()
                .into_bytes(),
        ),
        Var::RemoteAddr => Cow::Borrowed(&req.remote_addr),
        Var::UniqueId => Cow::Owned(req.unique_id()),
        Var::ReqbodyProcessor => Cow::Borrowed(req.body_processor.as_bytes()),
        Var::ReqbodyError => bool_bytes(req.body_error),
        Var::ReqbodyErrorMsg => Cow::Borrowed(req.body_error_msg.as_bytes()),
        Var::ArgsCombinedSize => Cow::Owned(req.args_combined_size().to_string().into_bytes()),
        Var::FilesCombinedSize => Cow::Owned(req.files_combined_size().to_string().into_bytes()),
        Var::MatchedVar => Cow::Borrowed(st.matched().1),
        Var::MatchedVarName => Cow::Borrowed(st.matched().0.as_bytes()),
        Var::InboundDataError => bool_bytes(req.inbound_data_error),
        Var::MultipartStrictError => bool_bytes(req.multipart_error),
        Var::MultipartUnmatchedBoundary => bool_bytes(false),
        _ => Cow::Borrowed(b""),
    }
}

/// The cache key of a scalar variable's value. Values that body processing can change are
/// keyed by phase; the rest (URI, request line, method...) are computed once per request.
fn scalar_key(v: Var, phase: u64) -> u64 {
    let body_dependent = matches!(
        v,
        Var::RequestBody
            | Var::RequestBodyLength
            | Var::FullRequestLength
            | Var::ReqbodyProcessor
            | Var::ReqbodyError
            | Var::ReqbodyErrorMsg
            | Var::ArgsCombinedSize
            | Var::FilesCombinedSize
            | Var::InboundDataError
            | Var::MultipartStrictError
            | Var::MultipartUnmatchedBoundary
    );
    ((v as u64) << 33) | (1 << 32) | if body_dependent { phase } else { 0 }
}

fn key_matches(sel: &KeySel, key: &str) -> bool {
    match sel {
        KeySel::Name(n) => key.eq_ignore_ascii_case(n),
        KeySel::Regex(re) => re.is_match(key.as_bytes()),
    }
}

/// The TX entries a target picks, in key order: its load-time slots that are set, and the
/// run-time names its key selects.
fn tx_keyed<'a>(tx: &'a Tx<'_>, t: &'a Target) -> impl Iterator<Item = TxRef> + 'a {
    let sel = t.key.as_ref();
    tx.select(&t.tx_slots, move |k| sel.is_none_or(|s| key_matches(s, k)))
}

fn excluded(var: Var, key: Option<&str>, ex: &Target) -> bool {
    if ex.var != var {
        return false;
    }
    match (&ex.key, key) {
        (None, _) => true,
        (Some(sel), Some(k)) => key_matches(sel, k),
        (Some(_), None) => false,
    }
}

fn xml_entries<'a>(req: &'a Request, key: Option<&KeySel>) -> &'a [Entry] {
    match key {
        Some(KeySel::Name(n)) if n.contains('@') => &req.xml_attrs,
        _ => &req.xml_text,
    }
}

/// First value of a variable, for macro expansion.
fn first_value(req: &Request, st: &St, var: Var, key: Option<&str>) -> Vec<u8> {
    if var == Var::Tx {
        let Some(k) = key else {
            return Vec::new();
        };
        let v = if k.bytes().any(|b| b.is_ascii_uppercase()) {
            st.tx.get(&k.to_ascii_lowercase())
        } else {
            st.tx.get(k)
        };
        return v.map(<[u8]>::to_vec).unwrap_or_default();
    }
    if let Some((es, _, names, _)) = entries(req, var) {
        for (n, v) in es {
            if key.is_none_or(|k| n.eq_ignore_ascii_case(k)) {
                return if names {
                    n.as_bytes().to_vec()
                } else {
                    v.clone()
                };
            }
        }
        return Vec::new();
    }
    scalar(req, st, var).into_owned()
}

/// [`resolve`], appending the value to `out` (a TX value without a copy of its own).
fn resolve_into(req: &Request, st: &St, name: &str, key: Option<&str>, out: &mut Vec<u8>) {
    match (name, key) {
        ("TX", Some(k)) if !k.bytes().any(|b| b.is_ascii_uppercase()) => {
            out.extend_from_slice(st.tx.get(k).unwrap_or_default());
        }
        _ => out.extend(resolve(req, st, name, key)),
    }
}

fn resolve(req: &Request, st: &St, name: &str, key: Option<&str>) -> Vec<u8> {
    if name == "TX" {
        return first_value(req, st, Var::Tx, key);
    }
    match name {
        "RULE" => match key.map(str::to_ascii_lowercase).as_deref() {
            Some("id") => st.rule_id.to_string().into_bytes(),
            Some("msg") => st.rule_msg.as_bytes().to_vec(),
            _ => Vec::new(),
        },
        _ => match Var::from_name(name) {
            Some(v) => first_value(req, st, v, key),
            None => Vec::new(),
        },
    }
}

/// The key of a template that is one TX reference written in lower case
/// (`%{tx.critical_anomaly_score}`), whose value can be read in place instead of expanded.
pub(super) fn single_tx_key(m: &Macro) -> Option<&str> {
    match m.single_var() {
        Some(("TX", Some(k))) if !k.bytes().any(|b| b.is_ascii_uppercase()) => Some(k),
        _ => None,
    }
}

/// Link `r`'s operator parameter `m`, expanded. A parameter that is one TX value (CRS's lists
/// of allowed and restricted names) is read in place. (The only macro an operator expands is
/// its parameter: when that is one TX value with a slot, the slot was found at load.)
#[inline]
fn op_param<'a>(req: &'a Request, st: &'a St, r: &Rule, m: &'a Macro) -> Cow<'a, [u8]> {
    if r.param_slot != NO_SLOT {
        return Cow::Borrowed(st.tx.get_slot(r.param_slot).unwrap_or_default());
    }
    match single_tx_key(m) {
        Some(k) => Cow::Borrowed(st.tx.get(k).unwrap_or_default()),
        None => Cow::Owned(m.expand(&|n, k| resolve(req, st, n, k))),
    }
}

fn chain_apply(nodes: &[Node], node: u32, raw: &[u8]) -> Vec<u8> {
    let mut list = Vec::new();
    let mut n = node;
    while n != 0 {
        let Node { parent, step, .. } = nodes[n as usize];
        list.push(step);
        n = parent;
    }
    let mut cur = raw.to_vec();
    for t in list.iter().rev() {
        cur = t.apply(&cur);
    }
    cur
}

/// `Cache::dense`: a values table and a names table for each collection `dense_table` knows.
const DENSE_TABLES: usize = 12;

/// Where an entry key's results live in `Cache::dense`: (table, entry index). `None` for
/// scalar keys (`scalar_key` sets bit 32; entry keys hold the index in bits 1..32).
fn dense_table(key: u64) -> Option<(usize, usize)> {
    if key & (1 << 32) != 0 {
        return None;
    }
    // Collection variable → its table pair (`NONE`: not a dense collection).
    const NONE: u8 = u8::MAX;
    const TABLE_OF: [u8; 64] = {
        let mut t = [NONE; 64];
        t[Var::Args as usize] = 0;
        t[Var::Headers as usize] = 1;
        t[Var::Cookies as usize] = 2;
        t[Var::Files as usize] = 3;
        t[Var::FilesSizes as usize] = 4;
        t[Var::MultipartPartHeaders as usize] = 5;
        t
    };
    let t = match TABLE_OF.get((key >> 33) as usize) {
        Some(&t) if t != NONE => t as usize,
        _ => return None,
    };
    Some((
        t * 2 + (key & 1) as usize,
        ((key >> 1) & 0x7fff_ffff) as usize,
    ))
}

/// A scalar key's row in `Cache::scalar_rows`: variable × 3 + the phase it is keyed by.
fn scalar_row(key: u64) -> Option<usize> {
    let phase = key & 0xffff_ffff;
    (key & (1 << 32) != 0 && phase <= 2).then(|| (key >> 33) as usize * 3 + phase as usize)
}

/// The arena index of `raw` (the value under `key`) through transformation node `node`,
/// computing it on first use (node 0 is the raw value itself); the lookups of a collection
/// entry's row and of a result in it are inlined (most calls).
#[inline(always)]
fn cached(cache: &mut Cache, nodes: &[Node], key: u64, node: u32, raw: &[u8]) -> u32 {
    let r = row_of_key(cache, nodes, key, raw);
    row_node(cache, nodes, r, node)
}

/// The content row of `raw` (the value under `key`), made on first sight of the key.
#[inline(always)]
fn row_of_key(cache: &mut Cache, nodes: &[Node], key: u64, raw: &[u8]) -> u32 {
    if let Some((t, i)) = dense_table(key) {
        if let Some(&r) = cache.entry_rows[t].get(i) {
            if r != u32::MAX {
                return r;
            }
        }
    }
    row_of_key_slow(cache, nodes, key, raw)
}

#[inline(never)]
fn row_of_key_slow(cache: &mut Cache, nodes: &[Node], key: u64, raw: &[u8]) -> u32 {
    /// Slot `i` of `v`, grown to hold it.
    fn slot(v: &mut Vec<u32>, i: usize) -> &mut u32 {
        if v.len() <= i {
            let n = (i + 1).max(v.len() * 2);
            v.resize(n, u32::MAX);
        }
        &mut v[i]
    }
    /// Where a key's row is kept.
    enum Kept {
        Entry(usize, usize),
        Scalar(usize),
        Map,
    }
    let at = match (dense_table(key), scalar_row(key)) {
        (Some((t, i)), _) => Kept::Entry(t, i),
        (None, Some(row)) => Kept::Scalar(row),
        (None, None) => Kept::Map,
    };
    let known = match at {
        Kept::Entry(t, i) => *slot(&mut cache.entry_rows[t], i),
        Kept::Scalar(row) => *slot(&mut cache.scalar_rows, row),
        Kept::Map => cache.map.get(&key).copied().unwrap_or(u32::MAX),
    };
    if known != u32::MAX {
        return known;
    }
    let r = content_row(cache, nodes, raw);
    match at {
        Kept::Entry(t, i) => cache.entry_rows[t][i] = r,
        Kept::Scalar(row) => cache.scalar_rows[row] = r,
        Kept::Map => {
            cache.map.insert(key, r);
        }
    }
    r
}

/// The row of content `raw`, made when the content is new: interned as node 0, the other
/// nodes filled in when first asked for (`row_node_slow`, which tells the chains that leave
/// the content as it is from its byte classes without walking them). Filling every node that
/// keeps it at once cost a pass over the whole trie per content, most of it never read: a
/// header name only CRS 920450 reads went through every node of the trie.
fn content_row(cache: &mut Cache, nodes: &[Node], raw: &[u8]) -> u32 {
    let ri = cache.intern(raw);
    let i = ri as usize;
    if cache.row_of.len() <= i {
        cache.row_of.resize(cache.arena.len().max(i + 1), u32::MAX);
    }
    if cache.row_of[i] != u32::MAX {
        return cache.row_of[i];
    }
    let n = cache.n_nodes;
    debug_assert_eq!(n, nodes.len());
    let start = cache.rows.len();
    let r = (start / n) as u32;
    cache.rows.resize(start + n, u32::MAX);
    cache.rows[start] = ri;
    cache.row_of[i] = r;
    r
}

/// The arena index of row `r`'s content through `node`, computed on first use.
#[inline(always)]
fn row_node(cache: &mut Cache, nodes: &[Node], r: u32, node: u32) -> u32 {
    match cache.rows[r as usize * cache.n_nodes + node as usize] {
        u32::MAX => row_node_slow(cache, nodes, r, node),
        i => i,
    }
}

/// An arena index whose literal scan is that of `raw` (under `key`) through `node`: the
/// transformed value when it is known, else the raw value when the chain changes no more than
/// its case (the scan folds case), else the transformed value, computed now.
#[inline]
fn scan_idx(cache: &mut Cache, nodes: &[Node], key: u64, node: u32, raw: &[u8]) -> u32 {
    let r = row_of_key(cache, nodes, key, raw);
    match cache.rows[r as usize * cache.n_nodes + node as usize] {
        u32::MAX => {
            let ri = cache.raw_of(r);
            if nodes[node as usize].scans_as_raw(cache.flags(ri)) {
                return ri;
            }
            row_node_slow(cache, nodes, r, node)
        }
        i => i,
    }
}

#[inline(never)]
fn row_node_slow(cache: &mut Cache, nodes: &[Node], r: u32, node: u32) -> u32 {
    // Most chains leave most contents as they are: told by the raw content's byte classes.
    let ri = cache.raw_of(r);
    if nodes[node as usize].keeps(cache.flags(ri)) {
        cache.rows[r as usize * cache.n_nodes + node as usize] = ri;
        return ri;
    }
    let Node {
        parent, step: t, ..
    } = nodes[node as usize];
    let pi = row_node(cache, nodes, r, parent);
    // Most steps change nothing in most values: tell from the content's byte classes,
    // computed once per content, before any lookup.
    let by_flags = t.noop_by_flags(cache.flags(pi));
    let idx = match by_flags {
        Some(true) => pi,
        _ => match cache.steps.get(&(pi, t)) {
            Some(&i) => i,
            None => {
                // The byte classes decided it already, except for the path steps.
                let noop = by_flags.unwrap_or_else(|| t.noop_by_bytes(&cache.arena[pi as usize]));
                let i = if noop {
                    // Unchanged: share the parent's result instead of copying it.
                    pi
                } else {
                    let out = t.apply(&cache.arena[pi as usize]);
                    let i = cache.intern(&out);
                    // (ASCII lower-casing: the result equals its input but for case.)
                    if t == Transform::Lowercase && i != pi {
                        cache.link_fold_twins(i, pi);
                    }
                    i
                };
                cache.steps.insert((pi, t), i);
                i
            }
        },
    };
    cache.rows[r as usize * cache.n_nodes + node as usize] = idx;
    idx
}

/// Whether row `r`'s content comes out of filter `f`'s chain shorter than any of its
/// literals, told without running the chain: the chain never lengthens a value, or it ends
/// with a `base64Decode` (which keeps six bits of each leading alphabet byte) and steps that
/// never lengthen one. JSON names (`items.0.sku`) and most values through CRS's multiMatch
/// `base64Decode` chains (934100, 934160) decode to a few bytes. The caller has checked that
/// the filter has literals, that its chain has a bound, and that no rule asks the filter for
/// marked bytes (which a short result may hold).
#[inline]
fn too_short(cache: &mut Cache, nodes: &[Node], f: &NodeFilter, r: u32) -> bool {
    match nodes[f.node as usize].bound {
        LenBound::Raw => cache.arena[cache.raw_of(r) as usize].len() < f.min_len,
        LenBound::Base64(before) => {
            // (Most often a chain the raw value goes through unchanged.)
            let bi = row_node(cache, nodes, r, before);
            // Only whether the run is that short matters: look no further than a run long
            // enough to decode to `min_len` bytes (a long comment is all alphabet).
            let v = &cache.arena[bi as usize];
            let enough = f.min_len * 8 / 6 + 2;
            Transform::base64_decoded_len(&v[..v.len().min(enough)]) < f.min_len
        }
        LenBound::Unbounded => false,
    }
}

/// `acc |= bits`, word by word over `acc`'s length.
fn or_into(acc: &mut [u64], bits: &[u64]) {
    for (a, x) in acc.iter_mut().zip(bits) {
        *a |= x;
    }
}

/// A matched value's name (`ARGS:q`, `REQUEST_URI`), written into `out`.
fn val_name_into(req: &Request, tx: &Tx<'_>, v: &Val, out: &mut String) {
    let key: Option<&str> = match &v.src {
        Src::Entry(base, idx, _) => {
            let es: &[Entry] = match entries(req, *base) {
                Some((es, _, _, _)) => es,
                None => &[],
            };
            es.get(*idx).map(|(k, _)| k.as_str())
        }
        Src::Scalar(_) => None,
        Src::Owned(o) => Some(o.0.as_str()).filter(|k| !k.is_empty()),
        Src::Count(_) => None,
        Src::Tx(s) => Some(tx.names().name(*s)),
        Src::TxExtra(i) => tx.extra_at(*i).map(|(k, _)| k),
    };
    out.push_str(v.shown.name());
    if let Some(k) = key {
        out.push(':');
        out.push_str(k);
    }
}

fn excerpt(v: &[u8], max: usize) -> String {
    let cut = &v[..v.len().min(max)];
    String::from_utf8_lossy(cut).into_owned()
}

struct Ev<'r> {
    rs: &'r RuleSet,
    cfg: &'r WafConfig,
    req: Request,
    st: St<'r>,
    cache: Cache,
    phase: u64,
    /// Emptied value lists, reused by `collect` (rules run nested through chains).
    pool: Vec<Vec<Val>>,
    /// multiMatch's transformation chain and candidate values, reused across values.
    chain_buf: Vec<u32>,
    cand_buf: Vec<u32>,
    /// The rule set's prefix this evaluation started from (its fixed outcomes apply).
    prefix: Option<&'r Prefix>,
    /// Buffers for the made names and values of `setvar`s.
    setvar_bufs: (Vec<u8>, Vec<u8>),
    /// A rule link's captures by match, until its actions run (taken by `run_rule`).
    hit_caps: Vec<(usize, Caps)>,
    /// The prefix's readers, for entries remembered as clean (`clean`).
    plan: Option<&'r clean::Plan>,
    clean: clean::Clean,
    /// Whether heads compiled to a form of their own ([`Rule::marker`]) run so, rather than
    /// through `run_rule` (the reference evaluation runs everything through it).
    idioms: bool,
}

/// The state after phase 1's leading rules that read and write nothing but TX (CRS's
/// initialisation: a few dozen `&TX:x "@eq 0"` defaults). They decide the same for every
/// request under one configuration, so a rule set runs them once and each request starts from
/// a copy of what they left.
#[derive(Debug)]
pub(super) struct Prefix {
    /// The phase 1 index to go on from.
    resume: usize,
    tx: super::tx::TxParts,
    matched_var: Vec<u8>,
    matched_var_name: String,
    matched_vars: MatchList,
    rule_id: u32,
    rule_msg: String,
    /// Per phase and item: the outcome of rules that decide the same for every request after
    /// the prefix (empty when none were found).
    fixed: [Vec<Fixed>; 2],
}

/// A rule whose outcome is the same for every request under one configuration: CRS's paranoia
/// gates (`TX:detection_paranoia_level "@lt 2" ... skipAfter`) and the scoring rules of
/// 949/959 (`TX:blocking_paranoia_level "@ge 2" ... setvar:...score=+%{...}`), which read TX
/// variables that nothing after the prefix writes. A fixed rule's `setvar`s still run on each
/// request it matches (what they add is the request's).
#[derive(Debug)]
pub(super) enum Fixed {
    /// Evaluate it.
    Run,
    /// It never matches.
    Never,
    /// It always matches, leaving these matched variables.
    Always(Box<(Vec<u8>, String, Vec<Entry>)>),
}

/// TX names something after the prefix may write: literal `setvar` names, the literal starts
/// of made names (`header_name_920450_` of `tx.header_name_920450_%{tx.0}`), capture groups.
#[derive(Default)]
struct Written {
    names: std::collections::HashSet<String>,
    prefixes: Vec<String>,
    anything: bool,
}

impl Written {
    fn of(rs: &RuleSet, resume: usize) -> Written {
        fn link(r: &Rule, w: &mut Written) {
            for sv in &r.setvars {
                match sv.name.literal() {
                    Some(l) => {
                        w.names.insert(String::from_utf8_lossy(l).into_owned());
                    }
                    None => {
                        let start = sv.name.literal_start();
                        if start.is_empty() {
                            w.anything = true;
                        } else {
                            w.prefixes.push(start.to_ascii_lowercase());
                        }
                    }
                }
            }
            if r.capture {
                w.names.extend((0..10).map(|d| d.to_string()));
            }
            if let Some(c) = &r.chain {
                link(c, w);
            }
        }
        let mut w = Written::default();
        let after = rs.phases[0].iter().skip(resume).chain(&rs.phases[1]);
        for it in after {
            if let Item::Rule(r) = it {
                link(r, &mut w);
            }
        }
        w
    }

    fn frozen(&self, name: &str) -> bool {
        !self.anything
            && !self.names.contains(name)
            && !self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether rule `r` reads only TX variables nothing writes after the prefix, and has no
    /// effect but matching and its `setvar`s (no chain, `ctl` or capture).
    fn fixes(&self, r: &Rule) -> bool {
        r.chain.is_none() && r.ctls.is_empty() && !r.capture && self.fixes_link(r)
    }

    /// Whether link `r` alone (its chain aside) matches the same for every request: it reads
    /// only TX variables nothing writes after the prefix. A chained rule whose head is so and
    /// never matches never matches at all (CRS 920360–920410, `&TX:arg_length "@eq 1"` with
    /// the limit unset, and 901350, `TX:enforce_bodyproc_urlencoded "@eq 1"` with it 0, on
    /// the default setup).
    fn fixes_link(&self, r: &Rule) -> bool {
        let tx_frozen = |m: &Macro| {
            m.vars()
                .all(|(n, k)| n == "TX" && k.is_some_and(|k| self.frozen(&k.to_ascii_lowercase())))
        };
        !r.is_action
            && !r.targets.is_empty()
            && r.targets.iter().all(|t| match (t.var, &t.key) {
                (Var::Tx, Some(KeySel::Name(n))) => self.frozen(n),
                _ => false,
            })
            && r.op.param_macro().is_none_or(tx_frozen)
    }
}

/// What of a configuration the leading TX rules can see.
pub(super) fn prefix_key(
    cfg: &WafConfig,
) -> (u8, u32, &std::collections::BTreeMap<String, String>) {
    (cfg.paranoia.clamp(1, 4), cfg.inbound_threshold, &cfg.tx)
}

impl Prefix {
    /// The number of phase 1 items it stands for.
    pub(super) fn len(&self) -> usize {
        self.resume
    }

    #[cfg(test)]
    pub(super) fn fixed_rules(&self) -> usize {
        self.fixed
            .iter()
            .flatten()
            .filter(|f| !matches!(f, Fixed::Run))
            .count()
    }
}

/// Runs the leading TX-only items (`RuleSet::prefix_class`) on an empty request, up to the
/// first whose request-dependent part would run.
pub(super) fn run_prefix(rs: &RuleSet, cfg: &WafConfig) -> Option<Prefix> {
    if rs.prefix_class.is_empty() || cfg.mode == Mode::Off {
        return None;
    }
    let mut ev = new_ev(rs, &crate::HttpRequest::default(), cfg, None);
    // Items run one at a time; the first that leaves anything but TX and the matched
    // variables changed (a logged match, a stop, a `ctl`), or that is TX-only in its first
    // link alone and matched there, is undone and ends the prefix.
    let clean = |st: &St<'_>| {
        st.matches.is_empty()
            && !st.stop
            && !st.blocked
            && st.mode == cfg.mode
            && st.removed_ids.is_empty()
            && st.removed_tags.is_empty()
            && st.removed_targets.is_empty()
            && st.body_proc.is_none()
            && !st.force_body
    };
    let mut i = 0;
    while i < rs.prefix_class.len() {
        let saved = ev.st.clone();
        let next = ev.run_phase_from(0, i, i + 1);
        let first_link_only = match &rs.phases[0][i] {
            Item::Rule(r) => rs.prefix_class[i] == 1 && ev.st.rule_id == r.id,
            Item::Marker(_) => false,
        };
        if first_link_only || !clean(&ev.st) {
            ev.st = saved;
            break;
        }
        i = next;
    }
    if i == 0 {
        return None;
    }
    let resume = i;
    let written = Written::of(rs, resume);
    let at_prefix = ev.st.clone();
    let mut fixed: [Vec<Fixed>; 2] = [Vec::new(), Vec::new()];
    for (p, out) in fixed.iter_mut().enumerate() {
        let items = &rs.phases[p];
        let from = if p == 0 { resume } else { 0 };
        let mut any = false;
        *out = items
            .iter()
            .enumerate()
            .map(|(i, it)| match it {
                Item::Rule(r) if i >= from && written.fixes(r) => {
                    ev.st = at_prefix.clone();
                    ev.st.matched_vars.clear();
                    let matched = ev.run_rule(r, r);
                    any = true;
                    if !matched {
                        Fixed::Never
                    } else if r.log || r.disruptive != Disruptive::Pass {
                        Fixed::Run
                    } else {
                        let st = &ev.st;
                        let (name, var) = st.matched();
                        Fixed::Always(Box::new((
                            var.to_vec(),
                            name.to_string(),
                            st.matched_vars.as_slice().to_vec(),
                        )))
                    }
                }
                Item::Rule(r) if i >= from && r.chain.is_some() && written.fixes_link(r) => {
                    // Only a head that never matches fixes the rule; one that matches leaves
                    // the chain to decide, on each request. (`rule_id` is set to the head's
                    // id once its first link matches.)
                    ev.st = at_prefix.clone();
                    ev.st.matched_vars.clear();
                    ev.st.rule_id = 0;
                    ev.run_rule(r, r);
                    if ev.st.rule_id == r.id {
                        Fixed::Run
                    } else {
                        any = true;
                        Fixed::Never
                    }
                }
                _ => Fixed::Run,
            })
            .collect();
        if !any {
            out.clear();
        }
    }
    ev.st = at_prefix;
    let st = &ev.st;
    Some(Prefix {
        resume,
        tx: st.tx.to_parts(),
        matched_var: st.matched().1.to_vec(),
        matched_var_name: st.matched().0.to_string(),
        matched_vars: st.matched_vars.clone(),
        rule_id: st.rule_id,
        rule_msg: st.rule_msg.to_string(),
        fixed,
    })
}

/// An evaluation of `http`: its TX set from `cfg`, or, given the rule set's prefix, the state
/// the prefix left (its items are then not run again).
fn new_ev<'r>(
    rs: &'r RuleSet,
    http: &crate::HttpRequest,
    cfg: &'r WafConfig,
    prefix: Option<&'r Prefix>,
) -> Ev<'r> {
    let limits = &rs.config.limits;
    let mut bufs = Buffers::take();
    let mut req = std::mem::take(&mut bufs.req);
    req.refill(http, limits);
    let mut st = match prefix {
        Some(p) => St {
            mode: cfg.mode,
            tx: Tx::from_parts_reusing(&rs.tx_names, &p.tx, bufs.tx_spare),
            matched_ref: Some((&p.matched_var_name, &p.matched_var)),
            rule_id: p.rule_id,
            rule_msg: &p.rule_msg,
            ..Default::default()
        },
        None => {
            let mut tx = Tx::new(&rs.tx_names);
            let mut num = [0u8; 20];
            tx.set(
                "blocking_paranoia_level",
                int_text(i64::from(cfg.paranoia.clamp(1, 4)), &mut num),
            );
            tx.set(
                "inbound_anomaly_score_threshold",
                int_text(i64::from(cfg.inbound_threshold), &mut num),
            );
            for (k, v) in &cfg.tx {
                tx.set(&k.to_ascii_lowercase(), v.as_bytes());
            }
            St {
                mode: cfg.mode,
                tx,
                ..Default::default()
            }
        }
    };
    st.matched_vars = bufs.matched_vars;
    st.spare_matched_vars = bufs.spare_matched_vars;
    if let Some(p) = prefix {
        st.matched_vars.copy_from(&p.matched_vars);
    }
    Ev {
        rs,
        cfg,
        req,
        st,
        cache: Cache::for_request(rs.nodes.len()),
        phase: 1,
        pool: bufs.pool,
        chain_buf: bufs.chain_buf,
        cand_buf: bufs.cand_buf,
        prefix,
        plan: None,
        clean: bufs.clean,
        setvar_bufs: bufs.setvar_bufs,
        hit_caps: Vec::new(),
        idioms: true,
    }
}

pub(super) fn evaluate(
    rs: &RuleSet,
    http: &crate::HttpRequest,
    cfg: &WafConfig,
    prefix: Option<&Prefix>,
    plan: Option<&CleanPlan>,
    idioms: bool,
) -> Verdict {
    if cfg.mode == Mode::Off {
        return Verdict {
            action: Action::Allow,
            score: 0,
            matches: Vec::new(),
        };
    }
    let limits = &rs.config.limits;
    let mut ev = new_ev(rs, http, cfg, prefix);
    ev.plan = plan;
    ev.idioms = idioms;
    ev.clean.on = rs.memo && plan.is_some();
    ev.clean_look_up(false);
    ev.run_phase_from(0, prefix.map_or(0, |p| p.resume), usize::MAX);
    if !ev.st.stop {
        let proc_override = ev.st.body_proc.clone();
        // Without a body, phase 2 sees the request values phase 1 saw: the prefilter's
        // per-filter unions stay valid.
        if ev.req.body_length != 0 {
            ev.cache.union_from = 2;
        }
        ev.req.process_body(proc_override.as_deref(), limits);
        ev.clean_look_up(true);
        // A body's arguments (names and values) each go through a few dozen chains: size the
        // step memo for them once rather than rehash it as it grows.
        let body_args = ev.req.args.len() - ev.req.args_get_len;
        ev.cache.steps.reserve(body_args * 16);
        // Cached transformations stay valid: entries keep their indices and the scalars
        // that change with the body are keyed by phase.
        ev.phase = 2;
        if ev.req.body_error {
            // ModSecurity's recommended configuration (rule 200002) refuses bodies it cannot parse.
            ev.st.matches.push(RuleMatch {
                id: 200002,
                msg: format!("Failed to parse request body: {}", ev.req.body_error_msg),
                variable: "REQBODY_ERROR".into(),
                value_excerpt: "1".into(),
                paranoia: 1,
                severity: Some(Severity::Critical),
            });
            if ev.st.mode == Mode::Block {
                ev.st.blocked = true;
                ev.st.stop = true;
            }
        }
        if !ev.st.stop {
            ev.run_phase(1);
        }
    }
    ev.clean_verify();
    let verdict = ev.verdict();
    std::mem::take(&mut ev.cache).recycle();
    Buffers {
        pool: std::mem::take(&mut ev.pool),
        matched_vars: std::mem::take(&mut ev.st.matched_vars),
        spare_matched_vars: std::mem::take(&mut ev.st.spare_matched_vars),
        chain_buf: std::mem::take(&mut ev.chain_buf),
        cand_buf: std::mem::take(&mut ev.cand_buf),
        clean: std::mem::take(&mut ev.clean),
        setvar_bufs: std::mem::take(&mut ev.setvar_bufs),
        tx_spare: std::mem::take(&mut ev.st.tx).into_spare(),
        req: std::mem::take(&mut ev.req),
    }
    .recycle();
    verdict
}

impl<'r> Ev<'r> {
    fn verdict(&mut self) -> Verdict {
        let tx = &self.st.tx;
        let num = |k: &str| tx.get(k).map(crate::operator::to_int);
        let score = num("blocking_inbound_anomaly_score").unwrap_or_else(|| {
            let pl = num("blocking_paranoia_level").unwrap_or(1).clamp(1, 4);
            (1..=pl)
                .map(|p| num(&format!("inbound_anomaly_score_pl{p}")).unwrap_or(0))
                .sum()
        });
        let block = self.st.blocked && self.cfg.mode == Mode::Block;
        Verdict {
            action: if block { Action::Block } else { Action::Allow },
            score,
            matches: std::mem::take(&mut self.st.matches),
        }
    }

    fn removed(&self, r: &Rule) -> bool {
        self.st
            .removed_ids
            .iter()
            .any(|&(lo, hi)| r.id >= lo && r.id <= hi)
            || (!self.st.removed_tags.is_empty()
                && r.tags.iter().any(|t| self.st.removed_tags.contains(t)))
    }

    fn run_phase(&mut self, p: usize) {
        self.run_phase_from(p, 0, usize::MAX);
    }

    /// Runs phase `p`'s items from index `start` until one at or past `limit` is next;
    /// returns that index.
    fn run_phase_from(&mut self, p: usize, start: usize, limit: usize) -> usize {
        let rs = self.rs;
        let items = &rs.phases[p];
        let mut i = start;
        while i < items.len() && i < limit && !self.st.stop {
            // Most rules are ruled out by the prefilter: decided from the dense gate array,
            // without loading the rule (a removed rule is skipped either way). A rule that
            // passes its gate runs without `run_link`'s check of the same slots.
            let gated = match rs.gates[p].get(i) {
                Some(&Some(g)) => {
                    if !self.literals_may_occur(g.filter, g.slot, g.also, g.unmarked) {
                        i += 1;
                        continue;
                    }
                    true
                }
                _ => false,
            };
            let Item::Rule(r) = &items[i] else {
                i += 1;
                continue;
            };
            if self.removed(r) {
                i += 1;
                continue;
            }
            self.st.matched_vars.clear();
            // A `ctl` that removed TX targets may change what a fixed rule reads (fixed rules
            // read only TX): run them then. Other removals leave them as they are (CRS's 941010
            // removes REQUEST_FILENAME from the XSS rules on most requests).
            let fixed = match self.prefix {
                Some(pr) if self.st.removed_vars & Var::Tx.bit() == 0 => pr.fixed[p].get(i),
                _ => None,
            };
            let matched = match fixed {
                Some(Fixed::Never) => false,
                Some(Fixed::Always(m)) => {
                    let (var, name, vars) = &**m;
                    self.st.rule_id = r.id;
                    if !r.setvars.is_empty() {
                        // As `run_rule`: once per matched value, that value as MATCHED_VAR
                        // (MATCHED_VARS still the previous link's: none).
                        for (k, v) in vars {
                            self.st.matched_ref = Some((k, v));
                            for sv in &r.setvars {
                                self.setvar(sv);
                            }
                        }
                    }
                    self.st.matched_ref = Some((name, var));
                    for (k, v) in vars {
                        let e = self.st.matched_vars.push_empty();
                        e.0.push_str(k);
                        e.1.extend_from_slice(v);
                    }
                    true
                }
                _ => match r.marker.as_deref() {
                    Some(m)
                        if self.idioms && self.st.removed_vars & r.targets[0].var.bit() == 0 =>
                    {
                        self.run_marker(r, m)
                    }
                    _ if gated => self.run_rule(r, r),
                    _ => self.run_link(r, r),
                },
            };
            if !matched {
                i += 1;
                continue;
            }
            self.actions(r);
            if self.st.stop {
                break;
            }
            if let Some(to) = rs.skip_to[p][i] {
                i = to;
                continue;
            }
            i += 1;
            let mut skip = r.skip;
            while skip > 0 && i < items.len() {
                if matches!(items[i], Item::Rule(_)) {
                    skip -= 1;
                }
                i += 1;
            }
        }
        i
    }

    fn actions(&mut self, head: &'r Rule) {
        self.st.rule_id = head.id;
        self.st.rule_msg = &head.msg_raw;
        if head.log {
            let (req, st) = (&self.req, &self.st);
            let res = |n: &str, k: Option<&str>| resolve(req, st, n, k);
            let msg = head
                .msg
                .as_ref()
                .map(|m| String::from_utf8_lossy(&m.expand(&res)).into_owned())
                .unwrap_or_default();
            let m = RuleMatch {
                id: head.id,
                msg,
                variable: st.matched().0.to_string(),
                value_excerpt: excerpt(st.matched().1, self.rs.config.limits.excerpt_bytes),
                paranoia: head.paranoia,
                severity: head.severity,
            };
            self.st.matches.push(m);
        }
        match head.disruptive {
            Disruptive::Deny | Disruptive::Block if self.st.mode == Mode::Block => {
                self.st.blocked = true;
                self.st.stop = true;
            }
            Disruptive::Allow if self.st.mode == Mode::Block => self.st.stop = true,
            _ => {}
        }
    }

    fn setvar(&mut self, sv: &SetVar) {
        // Made names and values are expanded into buffers kept for the evaluation (CRS 920450
        // sets `tx.header_name_920450_%{tx.0}` for every header name of every request).
        let (mut name_buf, mut val_buf) = std::mem::take(&mut self.setvar_bufs);
        self.setvar_with(sv, &mut name_buf, &mut val_buf);
        self.setvar_bufs = (name_buf, val_buf);
    }

    fn setvar_with(&mut self, sv: &SetVar, name_buf: &mut Vec<u8>, val_buf: &mut Vec<u8>) {
        let (req, st) = (&self.req, &self.st);
        let res = |n: &str, k: Option<&str>| resolve(req, st, n, k);
        let res_into =
            |n: &str, k: Option<&str>, out: &mut Vec<u8>| resolve_into(req, st, n, k, out);
        // A literal name was lower-cased at load and given a slot; most of CRS's are literal.
        let name: Cow<str> = match sv.name.literal() {
            Some(_) if sv.slot != NO_SLOT => Cow::Borrowed(""),
            Some(l) => String::from_utf8_lossy(l),
            None => {
                name_buf.clear();
                sv.name.expand_into(name_buf, &res_into);
                name_buf.make_ascii_lowercase();
                // (`from_utf8` first: it checks an ASCII name several bytes at a time.)
                match std::str::from_utf8(name_buf) {
                    Ok(n) => Cow::Borrowed(n),
                    Err(_) => String::from_utf8_lossy(name_buf),
                }
            }
        };
        let int = |m: &Macro| {
            // A score increment by another TX value (`+%{tx.critical_anomaly_score}`), through
            // the slot found at load when it has one (CRS's every increment).
            let by_key = match sv.arg_slot {
                NO_SLOT => match (m.literal(), single_tx_key(m)) {
                    (Some(l), _) => return crate::operator::to_int(l),
                    (None, Some(k)) => st.tx.get(k),
                    (None, None) => return crate::operator::to_int(&m.expand(&res)),
                },
                s => st.tx.get_slot(s),
            };
            by_key.map(crate::operator::to_int).unwrap_or(0)
        };
        let cur = || {
            st.tx
                .get_at(sv.slot, &name)
                .map(crate::operator::to_int)
                .unwrap_or(0)
        };
        let mut num = [0u8; 20];
        let new: Cow<[u8]> = match &sv.op {
            SetOp::Delete => {
                self.st.tx.remove_at(sv.slot, &name);
                return;
            }
            SetOp::Set(m) => match m.literal() {
                Some(l) => Cow::Borrowed(l),
                None => {
                    val_buf.clear();
                    m.expand_into(val_buf, &res_into);
                    Cow::Borrowed(val_buf.as_slice())
                }
            },
            SetOp::Add(m) => Cow::Borrowed(int_text(cur().saturating_add(int(m)), &mut num)),
            SetOp::Sub(m) => Cow::Borrowed(int_text(cur().saturating_sub(int(m)), &mut num)),
        };
        // An existing variable (the scores, updated by every match) keeps its buffer.
        self.st.tx.set_at(sv.slot, &name, &new);
    }

    fn ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RemoveById(r) => {
                self.st.removed_ids.extend(r.iter().copied());
                self.clean_after_removal(false);
            }
            Ctl::RemoveByTag(t) => {
                self.st.removed_tags.push(t.clone());
                self.clean_after_removal(false);
            }
            Ctl::RemoveTarget(sel, ts) => {
                for t in ts {
                    self.st.removed_targets.push((sel.clone(), t.clone()));
                    self.st.removed_vars |= t.var.bit();
                }
                self.clean_after_removal(ts.iter().any(|t| t.var == Var::Tx));
            }
            Ctl::BodyProcessor(p) => self.st.body_proc = Some(p.clone()),
            Ctl::ForceBodyVariable(on) => self.st.force_body = *on,
            Ctl::RuleEngine(m) => {
                self.st.mode = *m;
                if *m == Mode::Off {
                    self.st.stop = true;
                }
            }
        }
    }

    #[inline]
    fn is_excluded(&self, head: &Rule, r: &Rule, var: Var, key: Option<&str>) -> bool {
        if (r.excluded_vars | self.st.removed_vars) & var.bit() == 0 {
            return false;
        }
        self.is_excluded_by_rule(head, r, var, key)
    }

    fn is_excluded_by_rule(&self, head: &Rule, r: &Rule, var: Var, key: Option<&str>) -> bool {
        if r.excludes.iter().any(|ex| excluded(var, key, ex)) {
            return true;
        }
        self.st.removed_targets.iter().any(|(sel, ex)| {
            let applies = match sel {
                RuleSel::Ids(lo, hi) => head.id >= *lo && head.id <= *hi,
                RuleSel::Tag(t) => head.tags.iter().any(|x| x == t),
            };
            applies && excluded(var, key, ex)
        })
    }

    fn collect(&mut self, head: &Rule, r: &Rule, out: &mut Vec<Val>) {
        // (A multiMatch rule tries every step of its chain: it needs every value.)
        let literal_check = match (self.rs.prefilter.as_ref(), r.pf) {
            (Some(pf), Some((_, slot))) if !r.multi_match => Some((pf, slot)),
            _ => None,
        };
        // Entries too short for any of the rule's literals through a chain that never
        // lengthens a value are dropped before their chain runs (most JSON values are a few
        // bytes; CRS's literals are mostly words).
        let min_len = match self.rs.nodes[r.tnode as usize].bound {
            LenBound::Raw if literal_check.is_some() && !r.pf_unmarked => r.pf_min_len,
            _ => 0,
        };
        // An operator with a cheap check that it cannot match a value (`@validateByteRange`
        // on values without the bytes it looks for, libinjection on barewords; CRS 920270,
        // 942100 and 941100 read every argument and name) drops those entries here.
        let gated =
            !(r.negated || r.multi_match) && literal_check.is_none() && r.op.can_skip_values();
        let skip_clean = self.skips_clean(r);
        let (req, st) = (&self.req, &self.st);
        for t in &r.targets {
            if t.count {
                let n = match (t.var, &t.key) {
                    // TX keys are stored lower-cased, as the selector's name is.
                    (Var::Tx, Some(KeySel::Name(n))) => {
                        usize::from(st.tx.get_at(t.tx_slot, n).is_some())
                    }
                    (v, _) => match v {
                        Var::Tx => tx_keyed(&st.tx, t).count(),
                        Var::Xml => xml_entries(req, t.key.as_ref()).len(),
                        Var::MatchedVars | Var::MatchedVarsNames => st.matched_vars.len,
                        v => match entries(req, v) {
                            Some((es, _, _, _)) => es
                                .iter()
                                .filter(|(n, _)| t.key.as_ref().is_none_or(|s| key_matches(s, n)))
                                .count(),
                            None => usize::from(!scalar(req, st, v).is_empty()),
                        },
                    },
                };
                out.push(Val {
                    shown: t.var,
                    src: Src::Count(n),
                });
                continue;
            }
            match t.var {
                Var::Tx if matches!(t.key, Some(KeySel::Name(_))) => {
                    if let Some(KeySel::Name(n)) = &t.key {
                        if let Some(v) = st.tx.get_at(t.tx_slot, n) {
                            if !self.is_excluded(head, r, Var::Tx, Some(n)) {
                                out.push(Val {
                                    shown: Var::Tx,
                                    src: match t.tx_slot {
                                        NO_SLOT => Src::Owned(Box::new((n.clone(), v.to_vec()))),
                                        s => Src::Tx(s),
                                    },
                                });
                            }
                        }
                    }
                }
                Var::Tx => {
                    for tr in tx_keyed(&st.tx, t) {
                        let k = st.tx.key(tr);
                        if !self.is_excluded(head, r, Var::Tx, Some(k)) {
                            out.push(Val {
                                shown: Var::Tx,
                                src: match tr {
                                    TxRef::Slot(s) => Src::Tx(s),
                                    TxRef::Extra(i) => Src::TxExtra(i),
                                },
                            });
                        }
                    }
                }
                Var::MatchedVars | Var::MatchedVarsNames => {
                    for (k, v) in st.matched_vars.as_slice() {
                        let val = if t.var == Var::MatchedVars {
                            v.clone()
                        } else {
                            k.as_bytes().to_vec()
                        };
                        out.push(Val {
                            shown: t.var,
                            src: Src::Owned(Box::new((k.clone(), val))),
                        });
                    }
                }
                Var::Xml => {
                    for (k, v) in xml_entries(req, t.key.as_ref()) {
                        out.push(Val {
                            shown: Var::Xml,
                            src: Src::Owned(Box::new((k.clone(), v.clone()))),
                        });
                    }
                }
                v => match entries(req, v) {
                    Some((es, off, names, base)) => {
                        // The collection's table of results through the chain, looked at
                        // directly: most entries' results are there, scanned already.
                        let table = dense_table(entry_key(base, off, names)).map(|(t, _)| t);
                        // Entries no reader matches, when this link is one (`clean`).
                        let states = skip_clean.then(|| self.clean.states(base)).flatten();
                        for (idx, (k, val)) in es.iter().enumerate() {
                            if states.is_some_and(|s| clean::skips(s, off + idx, names, r.link)) {
                                continue;
                            }
                            // Values without the rule's literals are dropped here, before the
                            // name checks (most values of most prefiltered rules).
                            if let Some((pf, slot)) = literal_check {
                                let raw: &[u8] = if names { k.as_bytes() } else { val };
                                if raw.len() < min_len {
                                    continue;
                                }
                                let cache = &mut self.cache;
                                let known = table.and_then(|t| {
                                    let row = *cache.entry_rows[t].get(off + idx)?;
                                    if row == u32::MAX {
                                        return None;
                                    }
                                    let at = row as usize * cache.n_nodes + r.tnode as usize;
                                    let ti = cache.rows[at];
                                    let o = *cache.scan_at.get(ti as usize)?;
                                    (ti != u32::MAX && o != u32::MAX).then_some((ti, o))
                                });
                                let may = match known {
                                    Some((ti, o)) => {
                                        let has = |s: u32| {
                                            let word = cache.bits[o as usize + s as usize / 64];
                                            word & (1 << (s % 64)) != 0
                                        };
                                        (has(slot) && r.pf_also.is_none_or(has))
                                            || (r.pf_unmarked && cache.is_marked(ti))
                                    }
                                    None => {
                                        let key = entry_key(base, off + idx, names);
                                        let nodes = &self.rs.nodes;
                                        let ti = scan_idx(cache, nodes, key, r.tnode, raw);
                                        cache.may_hold(pf, ti, slot, r)
                                    }
                                };
                                if !may {
                                    continue;
                                }
                            }
                            if gated {
                                let raw: &[u8] = if names { k.as_bytes() } else { val };
                                let key = entry_key(base, off + idx, names);
                                let cache = &mut self.cache;
                                let ti = cached(cache, &self.rs.nodes, key, r.tnode, raw);
                                let flags = cache.flags(ti);
                                if r.op.skips_value(flags, &cache.arena[ti as usize]) {
                                    continue;
                                }
                            }
                            if t.key.as_ref().is_none_or(|s| key_matches(s, k))
                                && !self.is_excluded(head, r, v, Some(k))
                            {
                                out.push(Val {
                                    shown: v,
                                    src: Src::Entry(base, off + idx, names),
                                });
                            }
                        }
                    }
                    None => {
                        if !self.is_excluded(head, r, v, None) {
                            out.push(Val {
                                shown: v,
                                src: Src::Scalar(v),
                            });
                        }
                    }
                },
            }
        }
    }

    /// Whether any request value the filter covers contains a literal of global slot
    /// `slot` (after the filter's transformations). Computed once per filter and phase.
    /// With `unmarked_only` (the slot's literals hold only for unmarked values), a marked
    /// value anywhere in the filter's variables also means the rule may match.
    #[inline]
    fn may_match(&mut self, fi: u32, slot: u32, unmarked_only: bool) -> bool {
        // Most calls find the filter's union computed already (rules of one chain share it).
        match self.cache.union_says(fi, slot, unmarked_only) {
            Some(answer) => answer,
            None => self.may_match_slow(fi, slot, unmarked_only),
        }
    }

    /// (Not inlined: `may_match`'s fast path then inlines where it is asked, without this
    /// function's prologue; a bare `GET /` asks about 150 times.)
    #[inline(never)]
    fn may_match_slow(&mut self, fi: u32, slot: u32, unmarked_only: bool) -> bool {
        let Some(pf) = self.rs.prefilter.as_ref() else {
            return true;
        };
        let f = &pf.filters[fi as usize];
        let range = f.base_word..f.base_word + f.words;
        let Ev {
            rs,
            req,
            st,
            cache,
            phase,
            clean,
            ..
        } = self;
        // (A recycled cache may come from another rule set: size by this one's filter.)
        if cache.union.len() != pf.words || cache.union_phase.len() != pf.filters.len() {
            cache.union = vec![0; pf.words];
            cache.union_phase = vec![0; pf.filters.len()];
            cache.union_marked = vec![false; pf.filters.len()];
        }
        let nodes = &rs.nodes;
        cache.union[range.clone()].fill(0);
        let mut marked = false;
        let node = &nodes[f.node as usize];
        let length_check = f.min_len > 0 && !f.needs_marked && node.bound != LenBound::Unbounded;
        for &v in &f.vars {
            if let Some(s) = EntrySlice::of(req, v) {
                if s.es.is_empty() {
                    // (Most requests have no cookies, no body arguments, no files.)
                    continue;
                }
                // A group the chain keeps (but for case, which the scan folds) adds its raw
                // union at once; the others, entry by entry through the chain.
                let skip = clean.states(s.base);
                let (gs, ge) = cache.var_groups(nodes, v, *phase, s, skip);
                for g in gs..ge {
                    let gr = cache.groups[g];
                    if node.scans_as_raw(gr.flags) {
                        let (at, m) = cache.group_bits(pf, g);
                        marked = marked || m;
                        or_into(
                            &mut cache.union[range.clone()],
                            &cache.group_bits[at + range.start..],
                        );
                        continue;
                    }
                    // (`Cache::union_row` written out: called here, even inlined, it cost a
                    // bare `GET /` 2 % more instructions.)
                    for m in gr.members.0..gr.members.1 {
                        let r = cache.members[m as usize];
                        if length_check && too_short(cache, nodes, f, r) {
                            // Its result through the chain holds none of the literals.
                            continue;
                        }
                        let ti = row_node(cache, nodes, r, f.node);
                        marked = marked || cache.is_marked(ti);
                        let o = cache.content_bits(pf, ti);
                        or_into(
                            &mut cache.union[range.clone()],
                            &cache.bits[o + range.start..],
                        );
                    }
                }
                // Entries that only some readers match (left out of the groups) count for
                // the filters those readers use.
                for &(fj, idx) in clean.partial(s.base, s.names) {
                    let Some(i) = (idx as usize).checked_sub(s.off) else {
                        continue;
                    };
                    if fj != fi || i >= s.es.len() {
                        continue;
                    }
                    let (raw, key) = s.raw(i);
                    let r = row_of_key(cache, nodes, key, raw);
                    marked |= cache.union_row(nodes, pf, f, length_check, r);
                }
            } else if v == Var::Xml {
                if req.xml_text.is_empty() && req.xml_attrs.is_empty() {
                    continue;
                }
                let mut tmp = vec![0u64; pf.words];
                for (_, val) in req.xml_text.iter().chain(&req.xml_attrs) {
                    let tv = chain_apply(nodes, f.node, val);
                    marked = marked || tv.iter().any(|&b| crate::prefilter::marked_byte(b));
                    pf.lits.scan_into(&tv, &mut tmp, &mut cache.scratch.lits);
                }
                or_into(&mut cache.union[range.clone()], &tmp[range.clone()]);
            } else {
                let raw = scalar(req, st, v);
                let key = scalar_key(v, *phase);
                let ti = cached(cache, nodes, key, f.node, &raw);
                marked = marked || cache.is_marked(ti);
                let o = cache.content_bits(pf, ti);
                or_into(
                    &mut cache.union[range.clone()],
                    &cache.bits[o + range.start..],
                );
            }
        }
        cache.union_phase[fi as usize] = *phase;
        cache.union_marked[fi as usize] = marked;
        cache.union_says(fi, slot, unmarked_only).unwrap_or(true)
    }

    /// Whether some value filter `fi` covers may hold a literal of slot `slot` (and one of
    /// second slot `also`): else a rule with those slots cannot match (see `may_match`).
    #[inline]
    fn literals_may_occur(
        &mut self,
        fi: u32,
        slot: u32,
        also: Option<u32>,
        unmarked: bool,
    ) -> bool {
        self.may_match(fi, slot, unmarked) && also.is_none_or(|s| self.may_match(fi, s, false))
    }

    /// Runs one rule link (and the chain after it) unless the prefilter rules it out: most
    /// links stop here, so this small part is inlined. Returns whether the chain matched.
    #[inline(always)]
    fn run_link(&mut self, head: &Rule, r: &Rule) -> bool {
        if let (Some((fi, slot)), true) = (r.pf, r.pf_skip) {
            if !self.literals_may_occur(fi, slot, r.pf_also, r.pf_unmarked) {
                // No value the rule could read contains a literal its regex needs (of each
                // set it needs one of).
                return false;
            }
        }
        if !r.pf_steps.is_empty()
            && !r
                .pf_steps
                .iter()
                .any(|&(fi, slot)| self.may_match(fi, slot, r.pf_unmarked))
        {
            // A multiMatch rule: no step of its chain gives any value one of its literals.
            return false;
        }
        self.run_rule(head, r)
    }

    /// Runs a head marked [`Rule::marker`] (CRS 920450) and its chain, with the effects
    /// `run_rule` has on such a head: for every name of the collection (but those remembered
    /// as clean for it) in order, `tx.<start><name>` set to `/<name>/`, the name lower-cased;
    /// the last one as capture 0 and MATCHED_VAR; all of them as MATCHED_VARS. Without
    /// `run_rule`'s per-value machinery (the transformation cache, the operator, the macro
    /// expansions), which cost this one rule about a fifth of a typical request.
    fn run_marker(&mut self, head: &'r Rule, marker: &Marker) -> bool {
        let start = &*marker.start;
        let var = head.targets[0].var;
        let skip_clean = self.skips_clean(head);
        let mut mv = std::mem::take(&mut self.st.spare_matched_vars);
        mv.clear();
        let (mut name, mut value) = std::mem::take(&mut self.setvar_bufs);
        // The made names are built as a `String` in the name buffer (empty, so taking it as
        // one checks nothing): a header name is one, and lower-casing keeps it one.
        name.clear();
        let mut made = String::from_utf8(name).unwrap_or_default();
        let Ev { req, st, clean, .. } = self;
        if let Some((es, off, names, base)) = entries(req, var) {
            let states = skip_clean.then(|| clean.states(base)).flatten();
            for (idx, (k, _)) in es.iter().enumerate() {
                if states.is_some_and(|s| clean::skips(s, off + idx, names, head.link)) {
                    continue;
                }
                let e = mv.push_empty();
                // (`val_name_into` spelled out: through it, looking the entry up again, the
                // steady state cost 0.4 % more instructions.)
                e.0.push_str(var.name());
                e.0.push(':');
                e.0.push_str(k);
                // The name lower-cased once, in the made name; the match and the value copy it.
                made.clear();
                made.push_str(start);
                made.push_str(k);
                let lower = &mut made[start.len()..];
                lower.make_ascii_lowercase();
                e.1.extend_from_slice(lower.as_bytes());
                value.clear();
                value.push(b'/');
                value.extend_from_slice(lower.as_bytes());
                value.push(b'/');
                if marker.slotless {
                    st.tx.set_unslotted(&made, &value);
                } else {
                    st.tx.set_at(NO_SLOT, &made, &value);
                }
            }
        }
        self.setvar_bufs = (made.into_bytes(), value);
        let Some((n, v)) = mv.as_slice().last() else {
            self.st.spare_matched_vars = mv;
            return false;
        };
        self.st.rule_id = head.id;
        self.st.tx.set_capture(0, v);
        self.st.set_matched(n, v);
        self.st.spare_matched_vars = std::mem::replace(&mut self.st.matched_vars, mv);
        match &head.chain {
            Some(next) if marker.within && self.st.removed_vars & Var::Tx.bit() == 0 => {
                self.run_marked_within(head, next)
            }
            Some(next) => self.run_link(head, next),
            None => true,
        }
    }

    /// Runs the chain link `r` of a [`Rule::marker`] head when it is the plain `@within` check
    /// of the marked names ([`Marker::within`]), with `run_rule`'s effects: each TX value
    /// its key selects, in key order, the operator run on it with the parameter expanded once
    /// (nothing it reads changes before the matches' `setvar`s), the matches as MATCHED_VARS,
    /// each as MATCHED_VAR in turn for the link's `setvar`s.
    fn run_marked_within(&mut self, head: &'r Rule, r: &'r Rule) -> bool {
        let mut mv = std::mem::take(&mut self.st.spare_matched_vars);
        mv.clear();
        {
            let (req, st) = (&self.req, &self.st);
            let param = match r.op.param_macro() {
                Some(m) => op_param(req, st, r, m),
                None => Cow::Borrowed(&[][..]),
            };
            let expand = |_: &Macro| Cow::Borrowed(param.as_ref());
            for tr in tx_keyed(&st.tx, &r.targets[0]) {
                let (v, src) = match tr {
                    TxRef::Slot(s) => (st.tx.get_slot(s), Src::Tx(s)),
                    TxRef::Extra(i) => (st.tx.extra_at(i).map(|(_, v)| v), Src::TxExtra(i)),
                };
                let v = v.unwrap_or_default();
                if r.op.run(v, false, &expand).is_some() {
                    let e = mv.push_empty();
                    val_name_into(
                        req,
                        &st.tx,
                        &Val {
                            shown: Var::Tx,
                            src,
                        },
                        &mut e.0,
                    );
                    e.1.extend_from_slice(v);
                }
            }
        }
        if mv.len == 0 {
            self.st.spare_matched_vars = mv;
            return false;
        }
        self.st.rule_id = head.id;
        for (name, v) in mv.as_slice() {
            self.st.set_matched(name, v);
            for sv in &r.setvars {
                self.setvar(sv);
            }
        }
        self.st.spare_matched_vars = std::mem::replace(&mut self.st.matched_vars, mv);
        true
    }

    /// Runs one rule link past the prefilter (and its chain, through `run_link`). Returns
    /// whether the whole chain matched.
    fn run_rule(&mut self, head: &Rule, r: &Rule) -> bool {
        if r.is_action {
            for sv in &r.setvars {
                self.setvar(sv);
            }
            for c in &r.ctls {
                self.ctl(c);
            }
            return match &r.chain {
                Some(next) => self.run_link(head, next),
                None => true,
            };
        }
        let mut vals = self.pool.pop().unwrap_or_default();
        self.collect(head, r, &mut vals);
        // This link's matches go into a spare list (MATCHED_VARS keeps the previous link's
        // values until this one's replace them); captures by match index.
        let mut mv = std::mem::take(&mut self.st.spare_matched_vars);
        mv.clear();
        let mut hit_caps = std::mem::take(&mut self.hit_caps);
        hit_caps.clear();
        for v in vals.iter() {
            self.run_on(r, v, &mut mv, &mut hit_caps, true);
        }
        if mv.len == 0 {
            self.st.spare_matched_vars = mv;
            vals.clear();
            self.pool.push(vals);
            self.hit_caps = hit_caps;
            return false;
        }
        // Non-disruptive actions run as soon as this link matches, before the next link is
        // evaluated (CRS chains read TX values their head just set); logging and the
        // disruptive action wait for the whole chain. As in ModSecurity, setvars run once per
        // matched value (CRS 920450 and 921170 count headers and parameters that way).
        self.st.rule_id = head.id;
        let mut caps = hit_caps.drain(..).peekable();
        for (k, (name, tv)) in mv.as_slice().iter().enumerate() {
            match caps.next_if(|(i, _)| *i == k) {
                // The whole value matched: it is group 0.
                Some((_, Caps::Whole)) => self.st.tx.set_capture(0, tv),
                Some((_, Caps::Groups(c))) => {
                    // As ModSecurity: groups 0 to 9.
                    for (i, c) in c.iter().enumerate().take(10) {
                        self.st.tx.set_capture(i, c);
                    }
                }
                None => {}
            }
            self.st.set_matched(name, tv);
            for sv in &r.setvars {
                self.setvar(sv);
            }
        }
        drop(caps);
        self.hit_caps = hit_caps;
        vals.clear();
        self.pool.push(vals);
        self.st.spare_matched_vars = std::mem::replace(&mut self.st.matched_vars, mv);
        for c in &r.ctls {
            self.ctl(c);
        }
        match &r.chain {
            Some(next) => self.run_link(head, next),
            None => true,
        }
    }

    /// Runs link `r`'s operator on value `v` (through the link's chain; for multiMatch, also on
    /// each step's value). On a hit, appends the value to `mv` (and its captures, by their
    /// index in `mv`, to `hit_caps`). Returns whether it hit. With `prechecked`, a collection
    /// entry is known to hold the link's literals (`collect` kept only those).
    #[inline(always)]
    fn run_on(
        &mut self,
        r: &Rule,
        v: &Val,
        mv: &mut MatchList,
        hit_caps: &mut Vec<(usize, Caps)>,
        prechecked: bool,
    ) -> bool {
        let rs_ro: &RuleSet = self.rs;
        let nodes = &rs_ro.nodes;
        let prefilter = rs_ro.prefilter.as_ref();
        let Ev {
            req,
            st,
            cache,
            phase,
            chain_buf,
            cand_buf,
            ..
        } = self;
        let (raw, key): (Cow<[u8]>, Option<u64>) = match &v.src {
            Src::Entry(base, idx, names) => {
                let es = entries(req, *base).map(|e| e.0).unwrap_or(&[]);
                let Some((k, val)) = es.get(*idx) else {
                    return false;
                };
                let b: &[u8] = if *names { k.as_bytes() } else { val };
                (Cow::Borrowed(b), Some(entry_key(*base, *idx, *names)))
            }
            Src::Scalar(s) => {
                let cacheable = !matches!(s, Var::MatchedVar | Var::MatchedVarName);
                (
                    scalar(req, st, *s),
                    cacheable.then_some(scalar_key(*s, *phase)),
                )
            }
            Src::Owned(o) => (Cow::Borrowed(o.1.as_slice()), None),
            Src::Count(n) => (count_bytes(*n), None),
            Src::Tx(s) => (Cow::Borrowed(st.tx.get_slot(*s).unwrap_or_default()), None),
            Src::TxExtra(i) => (
                Cow::Borrowed(st.tx.extra_at(*i).map(|(_, v)| v).unwrap_or_default()),
                None,
            ),
        };
        let pfr = prefilter.zip(r.pf.map(|p| p.1));
        // The value through the rule's chain: an arena index when it can be cached.
        let (tv_idx, owned): (Option<u32>, Option<Vec<u8>>) = match key {
            Some(k) if r.tnode != 0 || pfr.is_some() => {
                (Some(cached(cache, nodes, k, r.tnode, &raw)), None)
            }
            _ if r.tnode == 0 => (None, None),
            _ => (None, Some(chain_apply(nodes, r.tnode, &raw))),
        };
        let mut run_final = true;
        // (`collect` already kept only the entries that may hold a literal, but for
        // multiMatch rules.)
        let checked = prechecked && !r.multi_match && matches!(v.src, Src::Entry(..));
        if let (Some(i), Some((pf, slot)), false) = (tv_idx, pfr, checked) {
            // An unmarked-only rule runs on a marked value whatever its literals.
            let may = cache.may_hold(pf, i, slot, r);
            if !may {
                // None of the literals any match needs is in the value.
                if !r.multi_match {
                    return false;
                }
                run_final = false;
            }
        }
        // multiMatch: the operator also runs on the raw value and after every step that
        // changes it. With a cache key those are the chain's ancestors in the trie, each
        // interned once; the prefilter drops the ones holding none of the literals.
        let candidates = &mut *cand_buf;
        candidates.clear();
        if let (true, Some(k), Some(ti)) = (r.multi_match && r.tnode != 0, key, tv_idx) {
            let chain = &mut *chain_buf;
            chain.clear();
            let mut n = r.tnode;
            while n != 0 {
                n = nodes[n as usize].parent;
                chain.push(n);
            }
            let mut prev = None;
            for &a in chain.iter().rev() {
                let i = cached(cache, nodes, k, a, &raw);
                if Some(i) != prev
                    && i != ti
                    && !candidates.contains(&i)
                    && pfr.is_none_or(|(pf, slot)| cache.may_hold(pf, i, slot, r))
                {
                    candidates.push(i);
                }
                prev = Some(i);
            }
        }
        let tv: &[u8] = match (tv_idx, &owned) {
            (Some(i), _) => &cache.arena[i as usize],
            (None, Some(o)) => o,
            (None, None) => &raw,
        };
        let st_ro: &St = st;
        let req_ro: &Request = req;
        let expand = |m| op_param(req_ro, st_ro, r, m);
        // Misses of operators that read nothing but the value are remembered across
        // requests (`memo`).
        // (The detectors are worth it at any length, and keep a miss the first time.)
        let value_only = r.op.value_only();
        let costly = value_only == Some(true);
        let remember = rs_ro.memo && value_only.is_some() && (costly || tv.len() >= memo::MIN_LEN);
        let op_key = [rs_ro.id, std::ptr::from_ref(r) as u64];
        let vh = match (remember, tv_idx) {
            (false, _) => 0,
            (true, Some(i)) => cache.hashes[i as usize],
            (true, None) => memo::value_hash(tv),
        };
        let run = |tv: &[u8]| -> Option<Found> {
            if !remember {
                return r.op.run(tv, r.capture, &expand);
            }
            let Err(at) = memo::known_miss(op_key, tv, vh) else {
                return None;
            };
            let f = r.op.run(tv, r.capture, &expand);
            if f.is_none() {
                memo::note_miss(at, op_key, tv, costly);
            }
            f
        };
        let mut found = match (run_final, tv_idx) {
            (false, _) => None,
            (true, Some(i)) if costly => {
                let k = (std::ptr::from_ref(r) as usize, i);
                match cache.ops.get(&k) {
                    Some(f) => f.clone(),
                    None => {
                        let f = run(tv);
                        cache.ops.insert(k, f.clone());
                        f
                    }
                }
            }
            (true, _) => run(tv),
        };
        let mut hit = found.is_some() != r.negated;
        let mut multi_hit: Option<Vec<u8>> = None;
        if !hit && r.multi_match && r.tnode != 0 {
            if tv_idx.is_some() && key.is_some() {
                for &c in candidates.iter() {
                    let c = &cache.arena[c as usize];
                    let f = r.op.run(c, r.capture, &expand);
                    if f.is_some() != r.negated {
                        found = f;
                        hit = true;
                        multi_hit = Some(c.to_vec());
                        break;
                    }
                }
            } else {
                // An uncached value (TX, matched vars): apply the steps here.
                let mut steps = Vec::new();
                let mut n = r.tnode;
                while n != 0 {
                    let Node { parent, step, .. } = nodes[n as usize];
                    steps.push(step);
                    n = parent;
                }
                let mut cur = raw.to_vec();
                let mut cands: Vec<Vec<u8>> = Vec::new();
                if cur.as_slice() != tv {
                    cands.push(cur.clone());
                }
                for t in steps.iter().rev() {
                    let next = t.apply(&cur);
                    if next != cur && next.as_slice() != tv {
                        cands.push(next.clone());
                    }
                    cur = next;
                }
                for c in cands {
                    let f = r.op.run(&c, r.capture, &expand);
                    if f.is_some() != r.negated {
                        found = f;
                        hit = true;
                        multi_hit = Some(c);
                        break;
                    }
                }
            }
        }
        if hit {
            if r.capture {
                match found {
                    Some(f) if f.whole => hit_caps.push((mv.len, Caps::Whole)),
                    Some(f) if !f.captures.is_empty() => {
                        hit_caps.push((mv.len, Caps::Groups(f.captures)));
                    }
                    _ => {}
                }
            }
            let e = mv.push_empty();
            e.1.extend_from_slice(multi_hit.as_deref().unwrap_or(tv));
            val_name_into(req_ro, &st_ro.tx, v, &mut e.0);
        }
        hit
    }
}
