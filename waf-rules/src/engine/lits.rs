//! The prefilter's literal scanner: which of a set of literals occur in a value.
//!
//! An Aho–Corasick automaton over the literals, made into a dense DFA over byte classes. The
//! prefilter only asks whether a literal occurs, never where or how often, so the scan is one
//! table step per byte; a match state is noted the first time the scan enters it, and the
//! slots of the literals it recognises are set once, after the scan. (The `aho-corasick`
//! crate's overlapping search reports every occurrence through an iterator: on legit-dev it
//! took about twice the instructions per scanned byte, with ~720 occurrences per request,
//! half of them one-byte literals such as `"` and `=`.)
//!
//! Literals are lower-case ASCII where they are letters; the class table folds ASCII capitals
//! onto their small letters, so a value is scanned as it is.

/// A compiled literal set. State ids are premultiplied by the number of classes (`stride`).
#[derive(Debug)]
pub(crate) struct LitScan {
    class: [u8; 256],
    stride: u32,
    /// (state id + class) → next state id, with `MATCH` set when that is a match state.
    trans: Vec<u32>,
    /// Per state (id / stride): its index in `out` when it is a match state.
    match_of: Vec<u32>,
    /// Per match state: its range in `slots`.
    out: Vec<(u32, u32)>,
    /// The slots of the literals each match state recognises (its own and those its
    /// failure links reach), without repeats.
    slots: Vec<u32>,
    /// The slots of empty literals: set by every scan.
    always: Vec<u32>,
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

const NONE: u32 = u32::MAX;
/// In `LitScan::trans`: the next state is a match state.
const MATCH: u32 = 1 << 31;

impl LitScan {
    /// Compiles `lits`: each literal (lower-cased) with the slots it serves. `None` when the
    /// table would need ids past `MATCH` (2^31 entries; CRS needs 2 M).
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
        // The trie, row per state; NONE where a state has no child on a class. `own`: the
        // slots of the literals that end at a state.
        let mut trans: Vec<u32> = vec![NONE; stride];
        let mut own: Vec<Vec<u32>> = vec![Vec::new()];
        let mut always = Vec::new();
        for (l, slots) in lits {
            if l.is_empty() {
                always.extend_from_slice(slots);
                continue;
            }
            let mut s = 0usize;
            for &b in l {
                let c = class[b.to_ascii_lowercase() as usize] as usize;
                let next = trans[s * stride + c];
                s = if next == NONE {
                    let n = own.len();
                    trans[s * stride + c] = n as u32;
                    trans.resize(trans.len() + stride, NONE);
                    own.push(Vec::new());
                    n
                } else {
                    next as usize
                };
            }
            own[s].extend_from_slice(slots);
        }
        // Failure links, breadth first: a state's row, and its failure state's match list,
        // are complete before its children's. A state recognises its own literals and its
        // failure state's; one that has none of its own shares its failure state's list.
        let n = own.len();
        let mut fail = vec![0u32; n];
        // Per state: its range in `slots` (empty: not a match state).
        let mut range = vec![(0u32, 0u32); n];
        let mut slots: Vec<u32> = Vec::new();
        let mut queue = std::collections::VecDeque::with_capacity(n);
        for t in &mut trans[..stride] {
            match *t {
                NONE => *t = 0,
                child => queue.push_back(child),
            }
        }
        while let Some(s) = queue.pop_front() {
            let s = s as usize;
            let f = fail[s] as usize;
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
            for c in 0..stride {
                let via_fail = trans[f * stride + c];
                match trans[s * stride + c] {
                    NONE => trans[s * stride + c] = via_fail,
                    child => {
                        fail[child as usize] = via_fail;
                        queue.push_back(child);
                    }
                }
            }
        }
        // Ids premultiplied by the stride, and a flag on every transition into a match
        // state, written over the trie in place: no second table (the edge worker's memory
        // never shrinks, so a build's peak stays).
        if n.checked_mul(stride)? >= MATCH as usize {
            return None;
        }
        let mut match_of = vec![u32::MAX; n];
        let mut ranges = Vec::new();
        for (s, r) in range.iter().enumerate() {
            if r.0 != r.1 {
                match_of[s] = ranges.len() as u32;
                ranges.push(*r);
            }
        }
        for t in trans.iter_mut() {
            let to = *t as usize;
            let flag = if match_of[to] != u32::MAX { MATCH } else { 0 };
            *t = (to * stride) as u32 | flag;
        }
        trans.shrink_to_fit();
        Some(LitScan {
            class,
            stride: stride as u32,
            trans,
            match_of,
            out: ranges,
            slots,
            always,
        })
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
        let mut s = 0u32;
        for &b in v {
            let t = self.trans[(s + u32::from(self.class[b as usize])) as usize];
            s = t & !MATCH;
            if t & MATCH != 0 {
                let m = self.match_of[(s / self.stride) as usize];
                let stamp = &mut seen_in[m as usize];
                if *stamp != *scans {
                    *stamp = *scans;
                    seen.push(m);
                }
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
        self.trans.len() / self.stride as usize
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
    fn an_empty_literal_is_in_every_value() {
        let lits = vec![(Vec::new(), vec![7]), (b"ab".to_vec(), vec![1])];
        let ls = LitScan::new(&lits).expect("builds");
        let mut sc = ScanScratch::default();
        assert_eq!(scanned(&ls, b"", 1, &mut sc), vec![7]);
        assert_eq!(scanned(&ls, b"xaby", 1, &mut sc), vec![1, 7]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Over a small alphabet (so that literals overlap and nest often), the scan finds
        /// exactly the literals a naive search finds, folding ASCII case as it does.
        #[test]
        fn the_scan_finds_what_a_naive_search_finds(
            lits in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'='), Just(0xe2u8)], 1..5), 1..12),
            values in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![Just(b'a'), Just(b'B'), Just(b'b'), Just(b'c'), Just(b'C'), Just(b'='), Just(0xe2u8), Just(b'z')], 0..24), 1..6),
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
