//! A map and a set keyed by linear page number. The map is laid out as
//! two-level page tables are: 1,024 leaves of 1,024 pages, a leaf
//! allocated at its first page and kept (at most 16 MiB): freeing a leaf
//! as its last page went made the demo's fork+wait allocate and clear
//! several 16 KiB leaves at each CR3 switch. The set is a flat bitmap. A
//! lookup is an indexing or two where a `BTreeMap` of the tens of
//! thousands of pages Linux keeps mapped made every fill and drop search
//! several nodes of each of its trees (~1 µs a page fault); keys still
//! come out in order, which the shadow's runs need.

use std::ops::{Index, Range};

/// Pages in a leaf.
const FANOUT: usize = 1024;

/// Leaves over 32-bit linear space.
const LEAVES: usize = (1 << 20) / FANOUT;

fn split(lp: u32) -> (usize, usize) {
    debug_assert!(lp < 1 << 20, "linear page {lp:#x} past 4 GiB");
    (lp as usize / FANOUT, lp as usize % FANOUT)
}

struct Leaf<T> {
    slots: [Option<T>; FANOUT],
}

/// Linear page -> `T`.
pub(super) struct PageMap<T> {
    leaves: Vec<Option<Box<Leaf<T>>>>,
}

impl<T: Copy> PageMap<T> {
    /// An empty map.
    pub(super) fn new() -> PageMap<T> {
        PageMap {
            leaves: (0..LEAVES).map(|_| None).collect(),
        }
    }

    /// The value at `lp`.
    pub(super) fn get(&self, lp: &u32) -> Option<&T> {
        let (l, s) = split(*lp);
        self.leaves[l].as_ref()?.slots[s].as_ref()
    }

    /// Whether `lp` has a value.
    pub(super) fn contains_key(&self, lp: &u32) -> bool {
        self.get(lp).is_some()
    }

    /// Sets the value at `lp`; returns the one it replaces.
    pub(super) fn insert(&mut self, lp: u32, v: T) -> Option<T> {
        let (l, s) = split(lp);
        let leaf = self.leaves[l].get_or_insert_with(|| {
            Box::new(Leaf {
                slots: [None; FANOUT],
            })
        });
        leaf.slots[s].replace(v)
    }

    /// Takes the value at `lp` out.
    pub(super) fn remove(&mut self, lp: &u32) -> Option<T> {
        let (l, s) = split(*lp);
        self.leaves[l].as_mut()?.slots[s].take()
    }

    /// The pages with a value, in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.range(0..1 << 20).map(|(lp, _)| lp)
    }

    /// The pages in `range` with their values, in order.
    pub(super) fn range(&self, range: Range<u32>) -> impl Iterator<Item = (u32, &T)> + '_ {
        let end = range.end.min(1 << 20);
        let start = range.start.min(end);
        let leaves = start as usize / FANOUT..(end as usize).div_ceil(FANOUT);
        leaves
            .filter_map(move |l| Some((l, self.leaves[l].as_ref()?)))
            .flat_map(move |(l, leaf)| {
                // Only the part of the leaf inside the range.
                let from = (start as usize).saturating_sub(l * FANOUT).min(FANOUT);
                let to = (end as usize - l * FANOUT).min(FANOUT);
                leaf.slots[from..to]
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, v)| Some(((l * FANOUT + from + i) as u32, v.as_ref()?)))
            })
    }
}

impl<T: Copy> Index<&u32> for PageMap<T> {
    type Output = T;

    fn index(&self, lp: &u32) -> &T {
        self.get(lp).expect("no such page in the map")
    }
}

/// Words of the set's bitmap: one bit per page of 32-bit linear space.
const WORDS: usize = (1 << 20) / 64;

/// A set of linear pages: a flat bitmap (128 KiB), a summary bit for each
/// of its words that is not zero and a top bit for each summary word that
/// is not, so that going through a set of a few pages (a CR3 switch goes
/// through the non-global ones, three in a Linux fork+wait) reads the four
/// top words and the words they lead to: reading all 256 summary words
/// was ~1 k cycles of each switch.
pub(super) struct PageSet {
    words: Box<[u64]>,
    summary: Box<[u64]>,
    top: [u64; WORDS / 64 / 64],
    len: usize,
}

impl PageSet {
    /// An empty set.
    pub(super) fn new() -> PageSet {
        PageSet {
            words: vec![0; WORDS].into_boxed_slice(),
            summary: vec![0; WORDS / 64].into_boxed_slice(),
            top: [0; WORDS / 64 / 64],
            len: 0,
        }
    }

    /// Pages in the set.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn at(lp: u32) -> (usize, u64) {
        debug_assert!(lp < 1 << 20, "linear page {lp:#x} past 4 GiB");
        (lp as usize / 64, 1 << (lp % 64))
    }

    /// Adds `lp`; returns whether it was new.
    pub(super) fn insert(&mut self, lp: u32) -> bool {
        let (w, b) = Self::at(lp);
        if self.words[w] & b != 0 {
            return false;
        }
        self.words[w] |= b;
        self.summary[w / 64] |= 1 << (w % 64);
        self.top[w / 64 / 64] |= 1 << (w / 64 % 64);
        self.len += 1;
        true
    }

    /// Takes `lp` out; returns whether it was there.
    pub(super) fn remove(&mut self, lp: &u32) -> bool {
        let (w, b) = Self::at(*lp);
        if self.words[w] & b == 0 {
            return false;
        }
        self.words[w] &= !b;
        if self.words[w] == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
            if self.summary[w / 64] == 0 {
                self.top[w / 64 / 64] &= !(1 << (w / 64 % 64));
            }
        }
        self.len -= 1;
        true
    }

    /// The pages of the set in `range`, in order.
    pub(super) fn range(&self, range: Range<u32>) -> impl Iterator<Item = u32> + '_ {
        let end = range.end.min(1 << 20);
        let start = range.start.min(end);
        let (first, last) = (start as usize / 64, (end as usize).div_ceil(64));
        let (first_s, last_s) = (first / 64, last.div_ceil(64));
        let tops = first_s / 64..last_s.div_ceil(64);
        tops.flat_map(move |t| BitIter(self.top[t]).map(move |b| t * 64 + b as usize))
            .filter(move |&s| s >= first_s && s < last_s)
            .flat_map(move |s| BitIter(self.summary[s]).map(move |b| s * 64 + b as usize))
            .filter(move |&w| w >= first && w < last)
            .flat_map(move |w| BitIter(self.words[w]).map(move |b| (w * 64) as u32 + b))
            .filter(move |&p| p >= start && p < end)
    }

    /// Every page of the set, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.range(0..1 << 20)
    }
}

/// The set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A little generator, so the test needs no crate.
    fn pages(seed: &mut u64, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Clustered, as mappings are: a few leaves, the last page too.
                let leaf = [0u32, 1, 0x300, 0x3ff][(*seed >> 60) as usize % 4];
                leaf * 1024 + (*seed >> 20) as u32 % 1024
            })
            .collect()
    }

    /// Ranges at the edges of leaves and words, across leaves, and at the
    /// end of linear space.
    fn ranges() -> [Range<u32>; 5] {
        [
            0..1,
            5..1030,
            1023..1025,
            0x300 * 1024 + 3..0x3ff * 1024 + 1000,
            0xfffff..1 << 20,
        ]
    }

    #[test]
    fn the_map_agrees_with_an_ordered_map() {
        let mut seed = 7;
        let mut ours = PageMap::new();
        let mut theirs = BTreeMap::new();
        for (i, p) in pages(&mut seed, 5000).into_iter().enumerate() {
            if i % 3 == 2 {
                assert_eq!(ours.remove(&p), theirs.remove(&p));
            } else {
                assert_eq!(ours.insert(p, i), theirs.insert(p, i));
            }
            assert_eq!(ours.get(&p), theirs.get(&p));
        }
        assert_eq!(ours.keys().count(), theirs.len());
        assert!(ours.keys().eq(theirs.keys().copied()));
        for r in ranges() {
            assert!(
                ours.range(r.clone())
                    .eq(theirs.range(r.clone()).map(|(&k, v)| (k, v))),
                "range {r:?}"
            );
        }
        for p in theirs.keys().copied().collect::<Vec<_>>() {
            assert_eq!(ours.remove(&p), theirs.remove(&p));
        }
        assert_eq!(ours.keys().count(), 0);
    }

    #[test]
    fn the_set_agrees_with_an_ordered_set() {
        let mut seed = 11;
        let mut ours = PageSet::new();
        let mut theirs = BTreeSet::new();
        for (i, p) in pages(&mut seed, 5000).into_iter().enumerate() {
            if i % 3 == 2 {
                assert_eq!(ours.remove(&p), theirs.remove(&p));
            } else {
                assert_eq!(ours.insert(p), theirs.insert(p));
            }
        }
        assert_eq!(ours.len(), theirs.len());
        assert!(ours.iter().eq(theirs.iter().copied()));
        for r in ranges() {
            assert!(
                ours.range(r.clone()).eq(theirs.range(r.clone()).copied()),
                "range {r:?}"
            );
        }
        for p in theirs.iter().copied().collect::<Vec<_>>() {
            assert!(ours.remove(&p));
        }
        assert_eq!(ours.len(), 0);
        assert_eq!(ours.iter().count(), 0);
    }
}
