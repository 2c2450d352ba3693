//! The prefilter's literal scanner: which of a set of literals occur in a value.
//!
//! An Aho–Corasick automaton over the literals, over byte classes. The prefilter only asks
//! whether a literal occurs, never where or how often, so the scan is one table step per byte
//! near the root; a match state is noted the first time the scan enters it, and the slots of
//! the literals it recognises are set once, after the scan. (The `aho-corasick` crate's
//! overlapping search reports every occurrence through an iterator: on legit-dev it took about
//! twice the instructions per scanned byte, with ~720 occurrences per request, half of them
//! one-byte literals such as `"` and `=`.)
//!
//! The states near the root are a dense DFA (a row of next states per state); the deeper ones
//! keep only their own children and a failure link. Of CRS's 22,170 states, 3,704 are at most
//! [`DENSE_DEPTH`] bytes deep, and on legit-dev as a stream 91 % of the scan's steps start at
//! one of them. A dense row for every state took 8 MiB (2 M entries) of memory in every process
//! and worker isolate, and building it 7 of the 24 ms of the lazy load the edge worker does
//! (native, 2026-12-07); now the dense part takes 1.3 MiB and the sparse part 0.35 MiB. A step
//! into a sparse state carries a flag, as one into a match state does, so the loop over dense
//! states tests one word per byte; the sparse steps run in a function of their own, which
//! keeps that loop's values in registers. The time per request did not change measurably
//! (a scan step waits on the load before it, wherever the row is).
//!
//! Literals are lower-case ASCII where they are letters; the class table folds ASCII capitals
//! onto their small letters, so a value is scanned as it is.

/// States at most this many bytes deep get a dense row.
const DENSE_DEPTH: u8 = 4;

/// A compiled literal set. Dense states are numbered first, breadth first, by ids premultiplied
/// by the number of classes (`stride`); a sparse state's id is `dense_end` plus its index in
/// `sparse`.
#[derive(Debug)]
pub(crate) struct LitScan {
    class: [u8; 256],
    stride: u32,
    /// (dense state id + class) → next state id, with `MATCH` set when that is a match state
    /// and `SPARSE` when it is a sparse one.
    trans: Vec<u32>,
    /// The first id past the dense states.
    dense_end: u32,
    /// Per sparse state: its children's range in `edges`, and its failure state's id.
    sparse: Vec<Sparse>,
    /// Sparse states' children: (class, state id with flags as in `trans`).
    edges: Vec<(u8, u32)>,
    /// Per state (breadth-first number, see `number`): its index in `out` when it is a match
    /// state.
    match_of: Vec<u32>,
    /// Per match state: its range in `slots`.
    out: Vec<(u32, u32)>,
    /// The slots of the literals each match state recognises (its own and those its
    /// failure links reach), without repeats.
    slots: Vec<u32>,
    /// The slots of empty literals: set by every scan.
    always: Vec<u32>,
}

/// A state deeper than [`DENSE_DEPTH`]: its children and its failure state.
#[derive(Debug, Clone, Copy)]
struct Sparse {
    first: u32,
    end: u32,
    fail: u32,
}

/// Buffers a scan reuses across values.
#[derive(Default)]
pub(crate) struct ScanScratch {
    /// Match states (index in `out`) the current scan entered.
    seen: Vec<u32>,
    /// Per match state: the number of the scan that last entered it.
    seen_in: Vec<u32>,
    scans: u32,
}

/// Notes that scan number `scan` entered match state `m` (an index in `LitScan::out`), once.
#[inline(always)]
fn note(m: u32, seen: &mut Vec<u32>, seen_in: &mut [u32], scan: u32) {
    let stamp = &mut seen_in[m as usize];
    if *stamp != scan {
        *stamp = scan;
        seen.push(m);
    }
}

/// In `LitScan::trans` and `LitScan::edges`: the next state is a match state.
const MATCH: u32 = 1 << 31;
/// In `LitScan::trans` and `LitScan::edges`: the next state is a sparse one.
const SPARSE: u32 = 1 << 30;
/// Both flags: a scan step that has neither stays in the dense loop.
const FLAGS: u32 = MATCH | SPARSE;
/// No state (the end of a trie state's child list while the scanner is built).
const NONE: u32 = u32::MAX;

/// The literals' trie while the scanner is built: per state its first child, next sibling and
/// the class of the byte that leads to it. (Lists through arrays: a `Vec` of children per state
/// was a third of `LitScan::new`'s instructions, in allocations.)
struct Trie {
    first_child: Vec<u32>,
    sibling: Vec<u32>,
    label: Vec<u8>,
}

impl Default for Trie {
    /// The root alone.
    fn default() -> Trie {
        Trie {
            first_child: vec![NONE],
            sibling: vec![NONE],
            label: vec![0],
        }
    }
}

impl Trie {
    /// State `s`'s child on class `c`.
    fn child(&self, s: usize, c: u8) -> Option<usize> {
        let mut t = self.first_child[s];
        while t != NONE && self.label[t as usize] != c {
            t = self.sibling[t as usize];
        }
        (t != NONE).then_some(t as usize)
    }

    /// Adds a child of `s` on class `c`; returns the new state.
    fn add(&mut self, s: usize, c: u8) -> usize {
        let n = self.label.len();
        self.sibling.push(self.first_child[s]);
        self.first_child[s] = n as u32;
        self.first_child.push(NONE);
        self.label.push(c);
        n
    }

    /// State `s`'s children: (class, state).
    fn children(&self, s: usize) -> impl Iterator<Item = (u8, u32)> + '_ {
        std::iter::successors(Some(self.first_child[s]).filter(|&t| t != NONE), |&t| {
            Some(self.sibling[t as usize]).filter(|&t| t != NONE)
        })
        .map(|t| (self.label[t as usize], t))
    }
}

impl LitScan {
    /// Compiles `lits`: each literal (lower-cased) with the slots it serves. `None` when the
    /// ids would reach `SPARSE` (2^30; CRS needs 180 k).
    pub(crate) fn new(lits: &[(Vec<u8>, Vec<u32>)]) -> Option<LitScan> {
        // Byte classes: 0 for bytes no literal holds, one class per byte some literal holds
        // (at most the 230 bytes that are not capitals, so a `u8` numbers them).
        let mut class = [0u8; 256];
        let mut n_classes: usize = 1;
        for (l, _) in lits {
            for &b in l {
                let b = b.to_ascii_lowercase();
                if class[b as usize] == 0 {
                    class[b as usize] = n_classes as u8;
                    n_classes += 1;
                }
            }
        }
        for b in b'A'..=b'Z' {
            class[b as usize] = class[b.to_ascii_lowercase() as usize];
        }
        let stride = n_classes;
        // The trie, and `own`: the slots of the literals that end at a state.
        let mut trie = Trie::default();
        let mut own: Vec<Vec<u32>> = vec![Vec::new()];
        let mut always = Vec::new();
        for (l, slots) in lits {
            if l.is_empty() {
                always.extend_from_slice(slots);
                continue;
            }
            let mut s = 0usize;
            for &b in l {
                let c = class[b.to_ascii_lowercase() as usize];
                s = match trie.child(s, c) {
                    Some(child) => child,
                    None => {
                        own.push(Vec::new());
                        trie.add(s, c)
                    }
                };
            }
            own[s].extend_from_slice(slots);
        }
        let n = own.len();
        // Breadth first: each state's depth and failure state (the longest proper suffix of
        // its path that is a path too), and its match list: its own literals and its failure
        // state's, which comes earlier in that order. A state with none of its own shares its
        // failure state's list.
        let mut order = Vec::with_capacity(n);
        order.push(0usize);
        let mut depth = vec![0u8; n];
        let mut fail = vec![0usize; n];
        let mut range = vec![(0u32, 0u32); n];
        let mut slots: Vec<u32> = Vec::new();
        let mut head = 0;
        while let Some(&s) = order.get(head) {
            head += 1;
            let f = fail[s];
            range[s] = if own[s].is_empty() {
                range[f]
            } else {
                let mut list = std::mem::take(&mut own[s]);
                list.extend_from_slice(&slots[range[f].0 as usize..range[f].1 as usize]);
                list.sort_unstable();
                list.dedup();
                let start = slots.len() as u32;
                slots.extend_from_slice(&list);
                (start, slots.len() as u32)
            };
            for (c, child) in trie.children(s) {
                let child = child as usize;
                depth[child] = depth[s].saturating_add(1);
                fail[child] = if s == 0 {
                    0
                } else {
                    let mut f = f;
                    loop {
                        if let Some(t) = trie.child(f, c) {
                            break t;
                        }
                        if f == 0 {
                            break 0;
                        }
                        f = fail[f];
                    }
                };
                order.push(child);
            }
        }
        // Ids: the dense states (a prefix of the breadth-first order), then the sparse ones.
        let n_dense = order
            .iter()
            .take_while(|&&s| depth[s] <= DENSE_DEPTH)
            .count();
        let dense_end = n_dense.checked_mul(stride)?;
        if dense_end + (n - n_dense) >= SPARSE as usize {
            return None;
        }
        let mut id = vec![0u32; n];
        let mut match_of = vec![u32::MAX; n];
        let mut ranges = Vec::new();
        for (k, &s) in order.iter().enumerate() {
            id[s] = if k < n_dense {
                (k * stride) as u32
            } else {
                (dense_end + k - n_dense) as u32
            };
            if range[s].0 != range[s].1 {
                match_of[k] = ranges.len() as u32;
                ranges.push(range[s]);
            }
        }
        let to = |t: usize| {
            let m = if range[t].0 != range[t].1 { MATCH } else { 0 };
            let sp = if id[t] as usize >= dense_end {
                SPARSE
            } else {
                0
            };
            id[t] | m | sp
        };
        // Dense rows in order: a state's row is its failure state's (made already: a dense
        // state fails to a shallower one; the root's moves lead back to it) with its own
        // children written over.
        let mut trans = vec![0u32; dense_end];
        for (k, &s) in order[..n_dense].iter().enumerate() {
            let row = k * stride;
            if s != 0 {
                let f = id[fail[s]] as usize;
                trans.copy_within(f..f + stride, row);
            }
            for (c, t) in trie.children(s) {
                trans[row + c as usize] = to(t as usize);
            }
        }
        let mut sparse = Vec::with_capacity(n - n_dense);
        let mut edges = Vec::new();
        for &s in &order[n_dense..] {
            let first = edges.len() as u32;
            edges.extend(trie.children(s).map(|(c, t)| (c, to(t as usize))));
            sparse.push(Sparse {
                first,
                end: edges.len() as u32,
                fail: id[fail[s]],
            });
        }
        Some(LitScan {
            class,
            stride: stride as u32,
            trans,
            dense_end: dense_end as u32,
            sparse,
            edges,
            match_of,
            out: ranges,
            slots,
            always,
        })
    }

    /// A scan's step into sparse state `t` (with its flags) before `v[i]`: notes a match
    /// state, and steps through sparse states until a dense one. Returns that state and the
    /// next byte's index (past the end when the value ended first). Kept out of the scan's
    /// loop, which then holds all it reads in registers.
    #[inline(never)]
    fn through_sparse(
        &self,
        mut t: u32,
        v: &[u8],
        mut i: usize,
        seen: &mut Vec<u32>,
        seen_in: &mut [u32],
        scan: u32,
    ) -> (u32, usize) {
        loop {
            let id = t & !FLAGS;
            if t & MATCH != 0 {
                note(self.match_of[self.number(id)], seen, seen_in, scan);
            }
            if t & SPARSE == 0 {
                return (id, i);
            }
            let Some(&b) = v.get(i) else {
                return (0, i);
            };
            i += 1;
            t = self.sparse_next(id, self.class[b as usize]);
        }
    }

    /// The next state (with its flags) from sparse state `s` on class `c`: a child, else the
    /// failure state's move (depth shrinks at each failure, so this ends).
    #[inline(never)]
    fn sparse_next(&self, mut s: u32, c: u8) -> u32 {
        while s >= self.dense_end {
            let st = self.sparse[(s - self.dense_end) as usize];
            if let Some(&(_, t)) = self.edges[st.first as usize..st.end as usize]
                .iter()
                .find(|e| e.0 == c)
            {
                return t;
            }
            s = st.fail;
        }
        self.trans[(s + u32::from(c)) as usize]
    }

    /// State id `s`'s breadth-first number (its index in `match_of`).
    #[inline]
    fn number(&self, s: u32) -> usize {
        if s < self.dense_end {
            (s / self.stride) as usize
        } else {
            (s - self.dense_end) as usize + (self.dense_end / self.stride) as usize
        }
    }

    /// Sets in `bits` the slot of every literal that occurs in `v`.
    pub(crate) fn scan_into(&self, v: &[u8], bits: &mut [u64], scratch: &mut ScanScratch) {
        let ScanScratch {
            seen,
            seen_in,
            scans,
        } = scratch;
        if seen_in.len() != self.out.len() || *scans == u32::MAX {
            seen_in.clear();
            seen_in.resize(self.out.len(), 0);
            *scans = 0;
        }
        *scans += 1;
        seen.clear();
        let (trans, class) = (&self.trans[..], &self.class);
        // The current state, a dense one, and the next byte.
        let (mut s, mut i) = (0u32, 0usize);
        while let Some(&b) = v.get(i) {
            i += 1;
            let t = trans[(s + u32::from(class[b as usize])) as usize];
            if t & FLAGS == 0 {
                s = t;
            } else if t & SPARSE == 0 {
                s = t & !MATCH;
                note(
                    self.match_of[(s / self.stride) as usize],
                    seen,
                    seen_in,
                    *scans,
                );
            } else {
                (s, i) = self.through_sparse(t, v, i, seen, seen_in, *scans);
            }
        }
        let mut set = |slot: u32| {
            let slot = slot as usize;
            bits[slot / 64] |= 1 << (slot % 64);
        };
        self.always.iter().copied().for_each(&mut set);
        for &m in seen.iter() {
            let (a, b) = self.out[m as usize];
            self.slots[a as usize..b as usize]
                .iter()
                .copied()
                .for_each(&mut set);
        }
    }

    /// How many distinct slots the literals serve.
    pub(crate) fn slot_count(&self) -> usize {
        let mut all: Vec<u32> = self.slots.iter().chain(&self.always).copied().collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }

    /// The number of states (for tests).
    #[cfg(test)]
    pub(crate) fn states(&self) -> usize {
        self.match_of.len()
    }

    /// The number of dense states (for tests).
    #[cfg(test)]
    fn dense_states(&self) -> usize {
        (self.dense_end / self.stride) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slots a naive search finds: every literal that is a substring of the value, both
    /// lower-cased.
    fn naive(lits: &[(Vec<u8>, Vec<u32>)], v: &[u8]) -> Vec<u32> {
        let v = v.to_ascii_lowercase();
        let mut out: Vec<u32> = lits
            .iter()
            .filter(|(l, _)| l.is_empty() || v.windows(l.len()).any(|w| w == l.as_slice()))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn scanned(ls: &LitScan, v: &[u8], words: usize, scratch: &mut ScanScratch) -> Vec<u32> {
        let mut bits = vec![0u64; words];
        ls.scan_into(v, &mut bits, scratch);
        (0..words as u32 * 64)
            .filter(|&s| bits[s as usize / 64] & (1 << (s % 64)) != 0)
            .collect()
    }

    #[test]
    fn overlapping_and_nested_literals_are_all_found() {
        let lits = vec![
            (b"he".to_vec(), vec![0]),
            (b"she".to_vec(), vec![1]),
            (b"his".to_vec(), vec![2]),
            (b"hers".to_vec(), vec![3, 0]),
            (b"=".to_vec(), vec![4]),
            (b"union select".to_vec(), vec![5]),
        ];
        let ls = LitScan::new(&lits).expect("builds");
        let mut sc = ScanScratch::default();
        assert_eq!(scanned(&ls, b"ushers", 1, &mut sc), vec![0, 1, 3]);
        assert_eq!(scanned(&ls, b"a=b", 1, &mut sc), vec![4]);
        assert_eq!(scanned(&ls, b"1 UNION Select 2", 1, &mut sc), vec![5]);
        assert_eq!(scanned(&ls, b"nothing", 1, &mut sc), Vec::<u32>::new());
        assert_eq!(scanned(&ls, b"", 1, &mut sc), Vec::<u32>::new());
        // A state per distinct prefix: the root, h he, s sh she, hi his, her hers, =, and
        // the twelve of "union select".
        assert_eq!(ls.states(), 1 + 2 + 3 + 2 + 2 + 1 + 12);
    }

    #[test]
    fn deep_states_fail_to_deep_states() {
        // Past `DENSE_DEPTH` bytes the states are sparse; "abcdefg" fails on `h` to
        // "bcdefg", sparse too, whose child ends "bcdefgh".
        let lits = vec![
            (b"abcdefg".to_vec(), vec![0]),
            (b"bcdefgh".to_vec(), vec![1]),
            (b"cdx".to_vec(), vec![2]),
            (b"fgh".to_vec(), vec![3]),
        ];
        let ls = LitScan::new(&lits).expect("builds");
        assert!(ls.dense_states() < ls.states());
        let mut sc = ScanScratch::default();
        assert_eq!(scanned(&ls, b"abcdefgh", 1, &mut sc), vec![0, 1, 3]);
        assert_eq!(scanned(&ls, b"xABCDEFGH", 1, &mut sc), vec![0, 1, 3]);
        assert_eq!(scanned(&ls, b"abcdefcdx", 1, &mut sc), vec![2]);
        assert_eq!(scanned(&ls, b"abcdef", 1, &mut sc), Vec::<u32>::new());
    }

    #[test]
    fn an_empty_literal_is_in_every_value() {
        let lits = vec![(Vec::new(), vec![7]), (b"ab".to_vec(), vec![1])];
        let ls = LitScan::new(&lits).expect("builds");
        let mut sc = ScanScratch::default();
        assert_eq!(scanned(&ls, b"", 1, &mut sc), vec![7]);
        assert_eq!(scanned(&ls, b"xaby", 1, &mut sc), vec![1, 7]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Over a small alphabet (so that literals overlap and nest often, and fail from deep
        /// states to deep states), the scan finds exactly the literals a naive search finds,
        /// folding ASCII case as it does.
        #[test]
        fn the_scan_finds_what_a_naive_search_finds(
            lits in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'='), Just(0xe2u8)], 1..9), 1..12),
            values in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![Just(b'a'), Just(b'B'), Just(b'b'), Just(b'c'), Just(b'C'), Just(b'='), Just(0xe2u8), Just(b'z')], 0..40), 1..6),
        ) {
            let lits: Vec<(Vec<u8>, Vec<u32>)> = lits
                .into_iter()
                .enumerate()
                .map(|(i, l)| (l, vec![i as u32, (i as u32 * 7) % 13]))
                .collect();
            let ls = LitScan::new(&lits).expect("builds");
            let mut sc = ScanScratch::default();
            // One scratch over several values: stamps of one scan must not leak into the next.
            for v in &values {
                prop_assert_eq!(scanned(&ls, v, 1, &mut sc), naive(&lits, v));
            }
        }
    }
}
