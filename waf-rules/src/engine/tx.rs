//! The TX collection of one request.
//!
//! CRS reads and writes TX on nearly every rule (`&TX:x "@eq 0"` initialisations, paranoia
//! checks, score additions). Every TX name a rule set spells out literally gets a slot at
//! load, in key order, and compiled rules carry their slot: reading or setting such a variable
//! is an index, not a string search. Names made at run time (`tx.%{...}`) live in a sorted
//! list beside the slots; the two are merged in key order where a rule reads TX by regex.

use super::{IntHasher, NO_SLOT};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::LazyLock;

/// The TX names a rule set knows at load, sorted; a name's slot is its index.
#[derive(Debug, Default)]
pub(crate) struct TxNames {
    names: Vec<String>,
    index: HashMap<String, u32, BuildHasherDefault<IntHasher>>,
    /// The slots of `0`..`9`, where `capture` puts a regex's groups.
    digits: [u32; 10],
}

impl TxNames {
    /// Slots for `names` (lower-cased TX keys), plus the capture names `0`..`9`.
    pub(crate) fn new(mut names: Vec<String>) -> TxNames {
        names.extend((0..10).map(|d| d.to_string()));
        names.sort_unstable();
        names.dedup();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect::<HashMap<_, _, _>>();
        let digits = std::array::from_fn(|d| index[&d.to_string()]);
        TxNames {
            names,
            index,
            digits,
        }
    }

    /// The slot of a lower-cased key, if the rule set names it.
    pub(crate) fn slot(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub(crate) fn name(&self, slot: u32) -> &str {
        &self.names[slot as usize]
    }

    /// The slots whose names `ok` accepts, ascending (for a rule's key regex, at load).
    pub(crate) fn slots_where(&self, ok: impl Fn(&str) -> bool) -> Vec<u32> {
        (0..self.names.len() as u32)
            .filter(|&i| ok(&self.names[i as usize]))
            .collect()
    }
}

/// TX values detached from their names.
#[derive(Debug, Clone)]
pub(crate) struct TxParts {
    slots: Vec<Val<'static>>,
    extra: Extra,
}

/// The run-time names and their values, sorted by name. CRS makes one per request header
/// (920450) and a few more: a sorted list beats a tree at that size, and the pairs it drops
/// are kept (`spare`), with their buffers, for the names set after.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pairs: Pairs,
    spare: Pairs,
}

/// Run-time names and their values.
type Pairs = Vec<(String, Vec<u8>)>;

/// Spare pairs above this many, or with a name or value above this many bytes, are not kept.
const SPARE_PAIRS: usize = 256;
const SPARE_PAIR_BYTES: usize = 4096;

impl Clone for Extra {
    fn clone(&self) -> Extra {
        Extra {
            pairs: self.pairs.clone(),
            spare: Vec::new(),
        }
    }
}

impl Extra {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.pairs.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        self.find(key).ok().map(|i| self.pairs[i].1.as_slice())
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        match self.find(key) {
            Ok(i) => {
                let v = &mut self.pairs[i].1;
                v.clear();
                v.extend_from_slice(value);
            }
            Err(i) => {
                let pair = filled(&mut self.spare, key, value);
                self.pairs.insert(i, pair);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Ok(i) = self.find(key) {
            let pair = self.pairs.remove(i);
            self.keep(pair);
        }
    }

    fn keep(&mut self, pair: (String, Vec<u8>)) {
        if self.spare.len() < SPARE_PAIRS
            && pair.0.capacity() <= SPARE_PAIR_BYTES
            && pair.1.capacity() <= SPARE_PAIR_BYTES
        {
            self.spare.push(pair);
        }
    }

    /// A copy of `self`'s pairs, made from `spare`'s buffers where it has them (and in its
    /// emptied list, `list`).
    fn copy_with(&self, mut list: Pairs, spare: Pairs) -> Extra {
        list.clear();
        let mut e = Extra { pairs: list, spare };
        for (k, v) in &self.pairs {
            let pair = filled(&mut e.spare, k, v);
            e.pairs.push(pair);
        }
        e
    }

    /// Every pair's buffers, and the emptied list, for the next request's
    /// [`Tx::from_parts_reusing`].
    fn into_spare(mut self) -> (Pairs, Pairs) {
        let mut pairs = std::mem::take(&mut self.pairs);
        for pair in pairs.drain(..) {
            self.keep(pair);
        }
        if pairs.capacity() > SPARE_PAIRS {
            pairs = Vec::new();
        }
        (pairs, self.spare)
    }
}

/// A (`key`, `value`) pair in buffers from `spare` when it has one.
fn filled(spare: &mut Pairs, key: &str, value: &[u8]) -> (String, Vec<u8>) {
    let (mut k, mut v) = spare.pop().unwrap_or_default();
    k.clear();
    k.push_str(key);
    v.clear();
    v.extend_from_slice(value);
    (k, v)
}

/// A finished request's TX buffers, emptied, for the thread's next one: its slot list and
/// run-time names' list (reused whole), and the run-time names' pairs (at most 256, each name
/// and value up to 4 KiB).
#[derive(Debug, Default)]
pub(crate) struct TxSpare {
    slots: Vec<Val<'static>>,
    pairs: Pairs,
    spare: Pairs,
}

/// `v` emptied, as a list of values of another lifetime (the allocation is reused: an
/// in-place collect of an empty list).
fn relabel<'a, 'b>(mut v: Vec<Val<'a>>) -> Vec<Val<'b>> {
    v.clear();
    v.into_iter().map(|_| Val::Unset).collect()
}

static NO_NAMES: LazyLock<TxNames> = LazyLock::new(TxNames::default);

/// A slot's value: short ones (scores, flags, paranoia levels) inline, no allocation; long
/// ones a request has not changed borrowed from the state the rule set's prefix left (CRS's
/// setup leaves several long lists there, such as the restricted extensions and headers).
#[derive(Debug, Clone, Default)]
pub(crate) enum Val<'a> {
    #[default]
    Unset,
    Short(u8, [u8; 22]),
    Long(Vec<u8>),
    Shared(&'a [u8]),
}

impl<'a> Val<'a> {
    fn get(&self) -> Option<&[u8]> {
        match self {
            Val::Unset => None,
            Val::Short(n, b) => Some(&b[..*n as usize]),
            Val::Long(v) => Some(v),
            Val::Shared(v) => Some(v),
        }
    }

    /// This value, borrowing a long one from `self`.
    fn share(&'a self) -> Val<'a> {
        match self {
            Val::Unset => Val::Unset,
            Val::Short(n, b) => Val::Short(*n, *b),
            Val::Long(v) => Val::Shared(v),
            Val::Shared(v) => Val::Shared(v),
        }
    }

    /// This value, owning what it holds.
    fn to_owned(&self) -> Val<'static> {
        match self {
            Val::Unset => Val::Unset,
            Val::Short(n, b) => Val::Short(*n, *b),
            Val::Long(v) => Val::Long(v.clone()),
            Val::Shared(v) => Val::Long(v.to_vec()),
        }
    }

    fn set(&mut self, value: &[u8]) {
        match self {
            Val::Long(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            _ if value.len() <= 22 => {
                let mut b = [0u8; 22];
                b[..value.len()].copy_from_slice(value);
                *self = Val::Short(value.len() as u8, b);
            }
            _ => *self = Val::Long(value.to_vec()),
        }
    }
}

/// One request's TX values. Keys are lower-case.
#[derive(Debug, Clone)]
pub(crate) struct Tx<'n> {
    names: &'n TxNames,
    slots: Vec<Val<'n>>,
    extra: Extra,
}

impl Default for Tx<'_> {
    fn default() -> Self {
        Tx::new(&NO_NAMES)
    }
}

/// Where a TX value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxRef {
    Slot(u32),
    /// A run-time name's index in the sorted list (see [`Tx::extra_at`]).
    Extra(u32),
}

impl<'n> Tx<'n> {
    pub(crate) fn new(names: &'n TxNames) -> Tx<'n> {
        Tx {
            names,
            slots: vec![Val::Unset; names.names.len()],
            extra: Extra::default(),
        }
    }

    /// The values, without the borrowed names (for a rule set to keep).
    pub(crate) fn to_parts(&self) -> TxParts {
        TxParts {
            slots: self.slots.iter().map(Val::to_owned).collect(),
            extra: self.extra.clone(),
        }
    }

    /// Values saved by [`Tx::to_parts`] from a `Tx` over the same names; long values are
    /// borrowed from `parts` until they are set.
    #[cfg(test)]
    pub(crate) fn from_parts(names: &'n TxNames, parts: &'n TxParts) -> Tx<'n> {
        Tx::from_parts_reusing(names, parts, TxSpare::default())
    }

    /// As [`Tx::from_parts`], in the buffers of `spare` (from [`Tx::into_spare`]).
    pub(crate) fn from_parts_reusing(
        names: &'n TxNames,
        parts: &'n TxParts,
        spare: TxSpare,
    ) -> Tx<'n> {
        let mut slots = relabel(spare.slots);
        slots.extend(parts.slots.iter().map(Val::share));
        Tx {
            names,
            slots,
            extra: parts.extra.copy_with(spare.pairs, spare.spare),
        }
    }

    /// This request's buffers, emptied, for the next one.
    pub(crate) fn into_spare(self) -> TxSpare {
        let (pairs, spare) = self.extra.into_spare();
        TxSpare {
            slots: relabel(self.slots),
            pairs,
            spare,
        }
    }

    pub(crate) fn names(&self) -> &'n TxNames {
        self.names
    }

    /// The value of a lower-cased key.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.get_at(NO_SLOT, key)
    }

    /// The value in a slot (`NO_SLOT`: none).
    pub(crate) fn get_slot(&self, slot: u32) -> Option<&[u8]> {
        self.slots.get(slot as usize)?.get()
    }

    /// `slot`, or when it is `NO_SLOT` the slot of `key` if it has one.
    fn slot_of(&self, slot: u32, key: &str) -> Option<u32> {
        match (slot, key.as_bytes()) {
            // A capture group (`%{tx.0}` in CRS's made names), without hashing its name.
            (NO_SLOT, &[d @ b'0'..=b'9']) => Some(self.names.digits[usize::from(d - b'0')]),
            (NO_SLOT, _) => self.names.slot(key),
            _ => Some(slot),
        }
    }

    /// The value of `key`, through its slot when the caller has it.
    pub(crate) fn get_at(&self, slot: u32, key: &str) -> Option<&[u8]> {
        match self.slot_of(slot, key) {
            Some(s) => self.get_slot(s),
            None => self.extra.get(key),
        }
    }

    /// Sets `key` (through `slot` when not `NO_SLOT`), keeping the old value's buffer.
    pub(crate) fn set_at(&mut self, slot: u32, key: &str, value: &[u8]) {
        match self.slot_of(slot, key) {
            Some(s) => self.slots[s as usize].set(value),
            None => self.extra.set(key, value),
        }
    }

    pub(crate) fn set(&mut self, key: &str, value: &[u8]) {
        self.set_at(NO_SLOT, key, value);
    }

    /// Sets `key`, known to have no slot (not a capture group, and no TX name the rules spell
    /// out): as [`Tx::set`] without looking for one.
    pub(crate) fn set_unslotted(&mut self, key: &str, value: &[u8]) {
        debug_assert!(self.slot_of(NO_SLOT, key).is_none());
        self.extra.set(key, value);
    }

    /// Sets capture group `d` (0..=9).
    pub(crate) fn set_capture(&mut self, d: usize, value: &[u8]) {
        let s = self.names.digits[d];
        self.set_at(s, "", value);
    }

    pub(crate) fn remove_at(&mut self, slot: u32, key: &str) {
        match self.slot_of(slot, key) {
            Some(s) => self.slots[s as usize] = Val::Unset,
            None => self.extra.remove(key),
        }
    }

    /// The key a reference names.
    pub(crate) fn key(&self, r: TxRef) -> &str {
        match r {
            TxRef::Slot(s) => self.names.name(s),
            TxRef::Extra(i) => &self.extra.pairs[i as usize].0,
        }
    }

    /// The run-time name and value at `i` (from a `TxRef::Extra`), if it is still set: TX
    /// does not change while one rule link reads its values, so an index taken by
    /// [`Tx::select`] names the same variable until the link's actions run.
    pub(crate) fn extra_at(&self, i: u32) -> Option<(&str, &[u8])> {
        self.extra
            .pairs
            .get(i as usize)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The value a reference names (empty if it was removed since).
    #[cfg(test)]
    pub(crate) fn value(&self, r: TxRef) -> &[u8] {
        match r {
            TxRef::Slot(s) => self.get_slot(s),
            TxRef::Extra(i) => self.extra_at(i).map(|(_, v)| v),
        }
        .unwrap_or_default()
    }

    /// The set keys among `slots` (ascending) and the run-time keys `extra_ok` accepts, in
    /// key order.
    pub(crate) fn select<'a>(
        &'a self,
        slots: &'a [u32],
        extra_ok: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = TxRef> + 'a {
        let names = &self.names.names;
        let mut slots = slots
            .iter()
            .copied()
            .filter(move |&i| !matches!(self.slots[i as usize], Val::Unset))
            .peekable();
        let mut extra = self
            .extra
            .pairs
            .iter()
            .enumerate()
            .filter(move |(_, (k, _))| extra_ok(k))
            .map(|(i, (k, _))| (i as u32, k.as_str()))
            .peekable();
        std::iter::from_fn(move || match (slots.peek(), extra.peek()) {
            (Some(&s), Some(&(_, e))) => {
                if names[s as usize].as_str() < e {
                    slots.next().map(TxRef::Slot)
                } else {
                    extra.next().map(|(i, _)| TxRef::Extra(i))
                }
            }
            (Some(_), None) => slots.next().map(TxRef::Slot),
            (None, Some(_)) => extra.next().map(|(i, _)| TxRef::Extra(i)),
            (None, None) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_extra_keys_merge_in_key_order() {
        let names = TxNames::new(vec!["b_1".into(), "b_3".into(), "c".into()]);
        let mut tx = Tx::new(&names);
        tx.set("b_3", b"3");
        tx.set("b_2", b"2"); // not named at load: kept beside the slots
        tx.set("b_1", b"1");
        tx.set("c", b"c");
        let b_slots = names.slots_where(|k| k.starts_with("b_"));
        let got: Vec<(String, Vec<u8>)> = tx
            .select(&b_slots, |k| k.starts_with("b_"))
            .map(|r| (tx.key(r).to_string(), tx.value(r).to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b_1".into(), b"1".to_vec()),
                ("b_2".into(), b"2".to_vec()),
                ("b_3".into(), b"3".to_vec())
            ]
        );
        tx.remove_at(NO_SLOT, "b_1");
        tx.remove_at(NO_SLOT, "b_2");
        assert_eq!(tx.get("b_1"), None);
        assert_eq!(tx.get("b_2"), None);
        let all = names.slots_where(|_| true);
        assert_eq!(tx.select(&all, |_| true).count(), 2);
        tx.set_capture(0, b"grp");
        assert_eq!(tx.get("0"), Some(&b"grp"[..]));
        tx.set("c", b"a value longer than twenty-two bytes");
        assert_eq!(
            tx.get("c"),
            Some(&b"a value longer than twenty-two bytes"[..])
        );
        tx.set("c", b"short");
        assert_eq!(tx.get("c"), Some(&b"short"[..]));
    }

    #[test]
    fn a_tx_made_from_spare_buffers_holds_nothing_of_the_last_request() {
        let names = TxNames::new(vec!["slot".into()]);
        let mut setup = Tx::new(&names);
        setup.set("from_setup", b"kept");
        let parts = setup.to_parts();
        let mut first = Tx::from_parts(&names, &parts);
        for h in ["host", "accept", "user-agent", "cookie"] {
            first.set(
                &format!("header_name_920450_{h}"),
                format!("/{h}/").as_bytes(),
            );
        }
        first.remove_at(NO_SLOT, "header_name_920450_accept");
        first.set("from_setup", b"changed by the first request");
        let spare = first.into_spare();
        // Every pair it held, the removed one and the copy of the setup's included.
        assert_eq!(spare.spare.len(), 5);
        assert!(spare.pairs.is_empty() && spare.slots.is_empty());
        let mut second = Tx::from_parts_reusing(&names, &parts, spare);
        let all = names.slots_where(|_| true);
        let keys = |tx: &Tx| -> Vec<String> {
            tx.select(&all, |_| true)
                .map(|r| tx.key(r).to_string())
                .collect()
        };
        assert_eq!(keys(&second), vec!["from_setup".to_string()]);
        assert_eq!(second.get("from_setup"), Some(&b"kept"[..]));
        second.set("b", b"2");
        second.set("a", b"1");
        second.set("c", b"3");
        assert_eq!(keys(&second), ["a", "b", "c", "from_setup"]);
        let refs: Vec<TxRef> = second.select(&all, |k| k != "b").collect();
        let got: Vec<(&str, &[u8])> = refs
            .iter()
            .map(|&r| match r {
                TxRef::Extra(i) => second.extra_at(i).expect("set"),
                TxRef::Slot(_) => unreachable!("no slot is set"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", &b"1"[..]),
                ("c", &b"3"[..]),
                ("from_setup", &b"kept"[..])
            ]
        );
    }

    #[test]
    fn a_tx_from_parts_reads_the_saved_values_and_sets_its_own() {
        let names = TxNames::new(vec!["long".into(), "short".into()]);
        let mut saved = Tx::new(&names);
        let long = b"/.bak/ /.config/ /.conf/ /.db/ /.ini/ /.log/".to_vec();
        saved.set("long", &long);
        saved.set("short", b"5");
        saved.set("run-time", &long);
        let parts = saved.to_parts();
        let mut a = Tx::from_parts(&names, &parts);
        let b = Tx::from_parts(&names, &parts);
        assert_eq!(a.get("long"), Some(&long[..]));
        assert_eq!(a.get("run-time"), Some(&long[..]));
        a.set("long", b"changed, and longer than twenty-two bytes");
        a.set("short", b"6");
        assert_eq!(
            a.get("long"),
            Some(&b"changed, and longer than twenty-two bytes"[..])
        );
        assert_eq!(a.get("short"), Some(&b"6"[..]));
        // The other request and the saved parts keep their values.
        assert_eq!(b.get("long"), Some(&long[..]));
        assert_eq!(b.get("short"), Some(&b"5"[..]));
        let again = a.to_parts();
        assert_eq!(Tx::from_parts(&names, &again).get("short"), Some(&b"6"[..]));
        assert_eq!(Tx::from_parts(&names, &parts).get("long"), Some(&long[..]));
    }
}
