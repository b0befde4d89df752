//! The linear pages translations were made from, and which of them a
//! change of the guest's paging may have made stale.
//!
//! Translations behave like TLB entries: a CR3 switch invalidates the
//! non-global ones, INVLPG the one page (all of a large page), and a
//! paging-mode change everything. So each change only notes what it
//! invalidated, and [`CodeMap::take_stale`] walks the guest's tables for
//! just those pages. Walking every translated page instead (thousands of
//! global kernel text pages) at each INVLPG or context switch made that
//! check ~9% of the monitor's time in Linux's fork+wait.

use std::collections::{BTreeMap, BTreeSet};

/// Pages of the largest guest page (4 MiB, non-PAE): an INVLPG anywhere in
/// one may invalidate translations from all of it.
const LARGE_SPAN: u32 = 1024;

/// What is known of one linear page translations were made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// The physical page it mapped to when translated.
    phys: u32,
    /// 4 KiB pages in the guest page it came from at the last look
    /// ([`LARGE_SPAN`] until looked at).
    span: u32,
}

/// Invalidations noted since the last [`CodeMap::take_stale`].
#[derive(Clone, Debug, Default)]
struct Pending {
    all: bool,
    nonglobal: bool,
    pages: Vec<u32>,
}

/// How a linear page maps now, as a walk of the guest's tables found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Now {
    /// Physical page.
    pub phys: u32,
    /// Mapped global.
    pub global: bool,
    /// 4 KiB pages in the guest page that maps it.
    pub span: u32,
}

/// Linear pages holding the source of translations, by linear page number.
#[derive(Clone, Debug, Default)]
pub(super) struct CodeMap {
    pages: BTreeMap<u32, Entry>,
    /// The pages not seen mapped global at their last look (new pages are
    /// among them until looked at): what a CR3 switch may invalidate.
    nonglobal: BTreeSet<u32>,
    pending: Pending,
}

impl CodeMap {
    /// Linear page `lp`, mapping physical page `phys`, now holds the
    /// source of a translation.
    pub fn insert(&mut self, lp: u32, phys: u32) {
        let e = Entry {
            phys,
            span: LARGE_SPAN,
        };
        if self.pages.insert(lp, e) != Some(e) {
            self.nonglobal.insert(lp);
        }
    }

    /// Forgets every linear page that maps physical page `phys`.
    pub fn remove_phys(&mut self, phys: u32) {
        let nonglobal = &mut self.nonglobal;
        self.pages.retain(|lp, e| {
            let keep = e.phys != phys;
            if !keep {
                nonglobal.remove(lp);
            }
            keep
        });
    }

    /// A paging-mode change: every page may map elsewhere now.
    pub fn note_all(&mut self) {
        self.pending.all = true;
    }

    /// A CR3 switch: the non-global pages may map elsewhere now.
    pub fn note_cr3_switch(&mut self) {
        self.pending.nonglobal = true;
    }

    /// INVLPG of linear page `lp`.
    pub fn note_invlpg(&mut self, lp: u32) {
        if !self.pending.all {
            self.pending.pages.push(lp);
        }
    }

    /// The pages noted invalidated since the last call that map elsewhere
    /// now, by `walk` (None: not mapped); returns their physical pages,
    /// sorted and without repeats, forgotten here.
    pub fn take_stale(&mut self, mut walk: impl FnMut(u32) -> Option<Now>) -> Vec<u32> {
        let pending = std::mem::take(&mut self.pending);
        let mut check: BTreeSet<u32> = BTreeSet::new();
        if pending.all {
            check.extend(self.pages.keys().copied());
        } else {
            if pending.nonglobal {
                check.extend(self.nonglobal.iter().copied());
            }
            for lp in pending.pages {
                let base = lp & !(LARGE_SPAN - 1);
                check.extend(
                    self.pages
                        .range(base..base + LARGE_SPAN)
                        .filter(|(&p, e)| p == lp || e.span > 1)
                        .map(|(&p, _)| p),
                );
            }
        }
        let mut stale = Vec::new();
        for lp in check {
            let e = self.pages[&lp];
            match walk(lp) {
                Some(now) if now.phys == e.phys => {
                    self.pages.insert(
                        lp,
                        Entry {
                            span: now.span,
                            ..e
                        },
                    );
                    if now.global {
                        self.nonglobal.remove(&lp);
                    } else {
                        self.nonglobal.insert(lp);
                    }
                }
                _ => {
                    self.pages.remove(&lp);
                    self.nonglobal.remove(&lp);
                    stale.push(e.phys);
                }
            }
        }
        stale.sort_unstable();
        stale.dedup();
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phys: u32, global: bool, span: u32) -> Option<Now> {
        Some(Now { phys, global, span })
    }

    #[test]
    fn a_cr3_switch_checks_only_pages_not_seen_global() {
        let mut m = CodeMap::default();
        m.insert(0xc1000, 0x1000);
        m.insert(0x08048, 0x2000);
        m.note_all();
        // The first look finds the kernel page global, the user one not.
        let first = m.take_stale(|lp| {
            at(
                if lp == 0xc1000 { 0x1000 } else { 0x2000 },
                lp == 0xc1000,
                1,
            )
        });
        assert!(first.is_empty());
        m.note_cr3_switch();
        let mut walked = Vec::new();
        let stale = m.take_stale(|lp| {
            walked.push(lp);
            at(0x3000, false, 1)
        });
        assert_eq!(walked, vec![0x08048]);
        assert_eq!(stale, vec![0x2000]);
        // Forgotten: nothing left to check at the next switch.
        m.note_cr3_switch();
        assert!(m.take_stale(|_| panic!("no walk")).is_empty());
    }

    #[test]
    fn invlpg_checks_its_page_and_large_pages_around_it() {
        let mut m = CodeMap::default();
        for lp in [0xc1000, 0xc1001, 0xc1400] {
            m.insert(lp, lp);
        }
        m.note_all();
        // 0xc1000 sits in a 4 MiB page, 0xc1001 and 0xc1400 in 4 KiB pages.
        m.take_stale(|lp| at(lp, true, if lp == 0xc1000 { 1024 } else { 1 }));
        m.note_invlpg(0xc1002);
        let mut walked = Vec::new();
        m.take_stale(|lp| {
            walked.push(lp);
            at(lp, true, 1)
        });
        assert_eq!(walked, vec![0xc1000]);
        m.note_invlpg(0xc1001);
        let stale = m.take_stale(|_| None);
        assert_eq!(stale, vec![0xc1001]);
    }

    #[test]
    fn a_new_page_counts_as_large_until_looked_at() {
        let mut m = CodeMap::default();
        m.insert(0xc1000, 0x5000);
        m.note_invlpg(0xc1234 & !0x3ff | 0x3ff);
        assert_eq!(m.take_stale(|_| at(0x6000, true, 1)), vec![0x5000]);
    }

    #[test]
    fn remove_phys_forgets_every_alias() {
        let mut m = CodeMap::default();
        m.insert(0xc1000, 0x5000);
        m.insert(0xd1000, 0x5000);
        m.insert(0xc1001, 0x5001);
        m.remove_phys(0x5000);
        m.note_all();
        let mut walked = Vec::new();
        m.take_stale(|lp| {
            walked.push(lp);
            at(0x5001, false, 1)
        });
        assert_eq!(walked, vec![0xc1001]);
    }
}
