//! Shadow mappings of guest linear memory: the host's page tables for the
//! low 4 GiB of this process are the shadow page tables (design.md
//! section 4, docs/mmu.md).
//!
//! With paging off, all of RAM is mapped once at linear = physical. With
//! paging on, nothing is mapped until the guest touches it: a host fault
//! walks the guest's tables ([`x86::paging::walk`], which sets the guest's
//! accessed and dirty bits as the CPU would) and either maps the page, or
//! reports the #PF the guest must see. Shadows behave like a TLB: they are
//! dropped on INVLPG, on CR3 writes (global pages survive with CR4.PGE), on
//! paging-mode changes and whenever a #PF is delivered for an address.
//!
//! Every mapped page has two host protections, one for each guest privilege
//! view: in the user view a supervisor page is PROT_NONE, so directly
//! executed guest user code cannot touch it even after loading the host's
//! flat selectors (this host has no protection keys, see docs/host-facts.md).
//! Switching views re-protects only the pages whose two protections differ,
//! in runs, and with a large kernel working set only those the kernel is
//! using (a hot set, and lazily on a fault the rest: [`Shadow::set_view`]).
//!
//! A page is writable in the shadow only once the guest's dirty bit is set
//! (the first write faults and sets it) and only if its physical page holds
//! no translations: translated code is protected against writes through
//! every alias, which is how self-modifying code is caught by physical page.

mod code_map;
mod copies;
mod page_map;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};

use page_map::{PageMap, PageSet};

use rustc_hash::{FxHashMap, FxHashSet};

use machine::GuestMemory;
use x86::paging::{self, Access, PagingRegs, Translation, PAGE_4K};
use x86::state::cr0;

use crate::contract::Layout;
use crate::monitor::{Monitor, MonitorError, Prot, PAGE_SIZE};
pub use stats::MmuStats;

/// Pages mapped at most by one fill beyond the faulting page.
const FILL_AROUND: u32 = 16;

/// Kernel entries after which the hot set starts empty again, so pages the
/// guest kernel stopped using leave it (see [`Shadow::set_view`]). The hot
/// set only grows in between (a restored page stays hot whether touched or
/// not), so this bounds it to roughly what 32 kernel paths use; with
/// Debian's kernel 32 beat 256, 64 and 16 (a getppid 0.30-0.44 M cycles
/// against 0.46-0.48 M at 256), and 8 or fewer made fork+wait slower.
const HOT_REBUILD: u32 = 32;

/// Up to this many pages whose protections differ, the switch to the
/// kernel view restores them all, as a small kernel's working set (the
/// demo OS keeps ~150) costs less to restore than the faults a hot set
/// would take; above it, only the hot set.
const RESTORE_ALL: usize = 256;

/// The most non-global shadows a CR3 switch checks against the new page
/// tables one by one ([`Shadow::flush_changed`]); more are dropped.
const REVALIDATE_MAX: usize = 512;

/// A page the user-code process kept over a CR3 switch: how it was
/// mapped, and its protection there.
type StaleUser = (Mapping, Prot);

/// The longest run of dropped pages that is hidden rather than unmapped
/// (see [`Shadow::take_away`]): longer ones are a munmap or a fork's end,
/// whose pages rarely come back with the same frames.
const HIDE_RUN: u32 = 4;

/// The same for a run of pages the guest maps read-only: program text and
/// read-only data of the page cache, which the next run of the same
/// program maps at the same addresses with the same frames (a shell loop
/// runs one binary again and again). Showing them again is an `mprotect`,
/// against an `mmap` of each run and the `munmap` of its dozens of small
/// mappings at the exit (docs/perf.md, tenth round).
const HIDE_RUN_READ_ONLY: u32 = 64;

/// The most pages kept hidden in each process (each is a mapping of its
/// own there, and the host allows ~65,000).
const HIDDEN_MAX: usize = 4096;

/// The most hidden pages a restoring run is extended across to join the
/// next (see [`Shadow::across_restorable_gaps`]).
const RESTORE_GAP: u32 = 16;

/// One mapped linear page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    /// Physical page number.
    phys: u32,
    /// Pages in the guest page this came from (1, 512 or 1024): INVLPG
    /// anywhere in a large page drops all of it.
    span: u32,
    user: bool,
    writable: bool,
    executable: bool,
    dirty: bool,
    global: bool,
}

impl Mapping {
    fn of(t: &Translation, linear: u32) -> Mapping {
        let phys = (t.frame + u64::from(linear & (t.size - 1))) >> 12;
        Mapping {
            phys: phys as u32,
            span: t.size / PAGE_4K,
            user: t.user,
            writable: t.writable,
            executable: t.executable,
            dirty: t.dirty,
            global: t.global,
        }
    }

    /// Whether two mappings can share one host call (same guest rights).
    fn same_rights(&self, o: &Mapping) -> bool {
        (
            self.user,
            self.writable,
            self.executable,
            self.dirty,
            self.global,
        ) == (o.user, o.writable, o.executable, o.dirty, o.global)
    }
}

/// The outcome of a host page fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The page is mapped now: retry the access.
    Mapped,
    /// The guest's tables refuse the access: deliver #PF with this error
    /// code (CR2 = the address).
    GuestFault(u32),
    /// A write to a physical page holding translations.
    CodeWrite(u32),
    /// The guest maps the address to physical memory that does not exist.
    NoRam(u64),
    /// A linear page the host cannot map (page 0, the monitor region).
    Unmappable,
    /// The page is already mapped as the access needs: the host fault was
    /// not about this mapping.
    Stuck,
    /// Translated code touched a user page that this process keeps hidden
    /// with another frame behind it: the emulator carries the access out
    /// and the page stays unmapped (see `EMULATE_MAX`).
    Emulate,
}

/// Accesses of translated code to one churning user page (one hidden here
/// with another frame) that the emulator carries out before the page is
/// mapped, per return to user code. A fork's copy-on-write gives the
/// parent's stack a new frame every round, and Linux's `wait4` stores the
/// status there: mapping the new frame was ~40 k cycles (the `mmap` in
/// this process, over the hidden one), an emulated store a tenth of that.
/// A path that touches the page more often gets it mapped.
const EMULATE_MAX: u32 = 2;

/// The shadow mappings of one guest.
pub struct Shadow {
    ram_size: u64,
    regs: PagingRegs,
    /// The user view's protections are applied (else the kernel view's).
    user_view: bool,
    /// Guest user code runs in a process of its own
    /// ([`Monitor::with_user_process`]): this process always has the
    /// kernel view and that one the user view, so there is nothing to
    /// switch, expose or hide.
    split: bool,
    /// Mapped linear pages (paging on only).
    pages: PageMap<Mapping>,
    /// The non-global ones among them: what a CR3 switch drops, without
    /// walking the thousands of global kernel pages Linux keeps mapped.
    nonglobal: PageSet,
    /// The ones mapped from a large guest page: what INVLPG of another
    /// page may drop with it.
    large: PageSet,
    /// With `split`: pages of `pages` mapped in the user-code process only,
    /// because guest user code faulted on them. Translated kernel code
    /// gets them mapped here at its first touch; most it never touches
    /// (fork+wait mapped ~8 pages a round here for nothing, each an
    /// `mmap` at ~4 µs, and unmapped them at the next CR3 switch).
    absent_here: FxHashSet<u32>,
    /// With `split`: 4 KiB user pages the user-code process still maps
    /// as it did before a CR3 switch dropped them here, with the
    /// protection they have there. Guest user code runs only after
    /// [`Self::sync_user`] has checked them against the tables then
    /// current: a fork+wait goes through the child's tables and the
    /// kernel's own before the parent's user code runs again, and
    /// dropping at each switch made the parent fault its pages back.
    stale_user: BTreeMap<u32, StaleUser>,
    /// With `split`: dropped pages that this process (`hidden_here`) or
    /// the user-code process (`hidden_there`) still maps, inaccessible,
    /// to the physical page given: mapping one to that same page again is
    /// an `mprotect` rather than an `mmap`. A copy-on-write fault drops
    /// the page (a #PF drops its TLB entry) and the guest's handler most
    /// often leaves the frame in place and only allows the write; the
    /// kernel's user pages dropped at each CR3 switch come back the same.
    hidden_here: FxHashMap<u32, u32>,
    hidden_there: FxHashMap<u32, u32>,
    /// Accesses emulated per churning page since user code last ran
    /// ([`Fill::Emulate`]).
    emulated: FxHashMap<u32, u32>,
    /// (physical page, linear page) for every mapped page: the linear
    /// pages of a physical one, in one ordered set (a map of sets made an
    /// allocation at each new physical page).
    aliases: BTreeSet<(u32, u32)>,
    /// Linear pages whose kernel and user protections differ.
    differs: BTreeSet<u32>,
    /// Supervisor pages (in `differs`) a fill mapped beside the faulting
    /// one and not faulted on since (the guest may never use them).
    prefetched: BTreeSet<u32>,
    /// Pages of `differs` that carry their kernel-view protection now.
    /// In the user view it is empty; in the kernel view the other pages of
    /// `differs` still carry the user view's until translated code touches
    /// them (a lazy restore) or they are hot.
    exposed: BTreeSet<u32>,
    /// The pages exposed during the last kernel-view stay: restored
    /// eagerly at the next switch to the kernel view, since a guest kernel
    /// path tends to touch what it touched last time.
    hot: BTreeSet<u32>,
    /// Kernel-view entries since `hot` was last emptied.
    entries: u32,
    /// Physical pages holding translations.
    code: FxHashSet<u32>,
    /// With `split`: frames the user-code process maps from a copy, with
    /// `int3` where the frame has a hot `int $0x80`
    /// ([`Self::patch_int80`]). Write-protected in every alias, as
    /// translated code is, so that a write drops the copy before guest
    /// code can run it stale.
    copies: copies::Copies,
    /// The linear pages translated from while paging was on, to find
    /// translations a remapping makes stale.
    code_linear: code_map::CodeMap,
    stats: MmuStats,
}

impl Shadow {
    /// The shadow of a guest whose RAM the monitor mapped at linear =
    /// physical, with paging off.
    pub fn new(ram_size: u64, regs: PagingRegs) -> Shadow {
        Shadow {
            ram_size,
            regs: PagingRegs {
                cr0: regs.cr0 & !cr0::PG,
                ..regs
            },
            user_view: false,
            split: false,
            pages: PageMap::new(),
            nonglobal: PageSet::new(),
            large: PageSet::new(),
            absent_here: FxHashSet::default(),
            stale_user: BTreeMap::new(),
            hidden_here: FxHashMap::default(),
            hidden_there: FxHashMap::default(),
            emulated: FxHashMap::default(),
            aliases: BTreeSet::new(),
            differs: BTreeSet::new(),
            prefetched: BTreeSet::new(),
            exposed: BTreeSet::new(),
            hot: BTreeSet::new(),
            entries: 0,
            code: FxHashSet::default(),
            copies: copies::Copies::default(),
            code_linear: code_map::CodeMap::default(),
            stats: MmuStats::default(),
        }
    }

    /// Keeps the two views in two processes: `monitor` has a user-code
    /// process ([`Monitor::has_user_process`]). Before any mapping.
    pub fn split_views(mut self, split: bool) -> Shadow {
        self.split = split;
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> &MmuStats {
        &self.stats
    }

    /// The paging registers last taken.
    pub fn regs(&self) -> PagingRegs {
        self.regs
    }

    /// Counts a #PF delivered to the guest (the engine delivers them all).
    pub fn count_guest_fault(&mut self) {
        self.stats.guest_faults += 1;
    }

    /// Whether the guest has paging on (as last told).
    pub fn paging(&self) -> bool {
        self.regs.enabled()
    }

    fn wp(&self) -> bool {
        self.regs.cr0 & cr0::WP != 0
    }

    /// Host protections of `m` in the kernel and the user view.
    fn prots(&self, m: &Mapping) -> (Prot, Prot) {
        let code = self.is_write_protected(m.phys);
        let write_user = m.writable && m.dirty && !code;
        let write_kernel = (m.writable || !self.wp()) && m.dirty && !code;
        // Translated kernel code never runs from guest pages, so only user
        // pages are executable, the same in both views.
        let exec = m.user && m.executable;
        let kernel = Prot {
            read: true,
            write: write_kernel,
            exec,
        };
        let user = if m.user {
            Prot {
                read: true,
                write: write_user,
                exec,
            }
        } else {
            Prot::NONE
        };
        (kernel, user)
    }

    /// The protection a new mapping of `m` gets in the current view (in
    /// the kernel view it is exposed at once: the guest is touching it).
    fn applied(&self, m: &Mapping) -> Prot {
        let (k, u) = self.prots(m);
        if self.user_view && !self.split {
            u
        } else {
            k
        }
    }

    /// The protection linear page `lp`, mapped as `m`, carries now.
    fn applied_at(&self, lp: u32, m: &Mapping) -> Prot {
        let (k, u) = self.prots(m);
        if self.split {
            k
        } else if self.user_view || (k != u && !self.exposed.contains(&lp)) {
            u
        } else {
            k
        }
    }

    /// Records `m` at linear page `lp` (the host mapping is made by the
    /// caller).
    fn record(&mut self, lp: u32, m: Mapping) {
        if let Some(old) = self.pages.insert(lp, m) {
            self.forget_alias(lp, old.phys);
        }
        if m.global {
            self.nonglobal.remove(&lp);
        } else {
            self.nonglobal.insert(lp);
        }
        if m.span > 1 {
            self.large.insert(lp);
        } else {
            self.large.remove(&lp);
        }
        self.aliases.insert((m.phys, lp));
        if self.split {
            // Nothing switches views: `differs` is the one-process mode's.
            return;
        }
        let (k, u) = self.prots(&m);
        if k != u {
            self.differs.insert(lp);
        } else {
            self.differs.remove(&lp);
            self.exposed.remove(&lp);
        }
    }

    fn forget_alias(&mut self, lp: u32, phys: u32) {
        self.aliases.remove(&(phys, lp));
    }

    /// Handles a host page fault at `linear` for `access` while paging is
    /// on: maps the page (and the run around it the guest has already
    /// used) or says what the guest must see.
    pub fn fill(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
        linear: u32,
        access: Access,
    ) -> Result<Fill, MonitorError> {
        let t = match paging::walk(mem, &self.regs, linear, access, true) {
            Ok(t) => t,
            Err(code) => {
                // A #PF drops the TLB entry for the address (it remaps
                // nothing: translations stay).
                self.drop_entry(monitor, linear)?;
                return Ok(Fill::GuestFault(code));
            }
        };
        let lp = linear / PAGE_SIZE;
        if t.phys >= self.ram_size {
            return Ok(Fill::NoRam(t.phys));
        }
        let layout = monitor.layout();
        if lp == 0 || layout.contains(linear) {
            return Ok(Fill::Unmappable);
        }
        let m = Mapping::of(&t, linear);
        if access.write && self.is_write_protected(m.phys) {
            return Ok(Fill::CodeWrite(m.phys));
        }
        let churns = self.split
            && !access.user
            && m.user
            && m.span == 1
            && self.hidden_here.get(&lp).is_some_and(|&f| f != m.phys);
        if churns {
            let n = self.emulated.entry(lp).or_default();
            if *n < EMULATE_MAX {
                *n += 1;
                return Ok(Fill::Emulate);
            }
        }
        if self.pages.get(&lp) == Some(&m) {
            if self.split && !access.user && self.absent_here.remove(&lp) {
                // Translated code touched a page only the user-code
                // process had.
                let prot = self.applied_at(lp, &m);
                self.give(monitor, lp, m.phys, 1, Some(prot), None)?;
                self.stats.hidden_faults += 1;
                return Ok(Fill::Mapped);
            }
            if !self.split
                && !self.user_view
                && self.differs.contains(&lp)
                && !self.exposed.contains(&lp)
            {
                // Translated code touched a page that still carries the
                // user view's protection: give it the kernel view's.
                monitor.protect(lp * PAGE_SIZE, PAGE_SIZE, self.prots(&m).0)?;
                self.exposed.insert(lp);
                self.stats.lazy_restores += 1;
                self.stats.protects += 1;
                self.stats.pages_protected += 1;
                return Ok(Fill::Mapped);
            }
            // Mapped with these rights already: a fault the shadow cannot
            // explain (the walk would not have changed anything).
            return Ok(Fill::Stuck);
        }
        let (first, n) = self.run_around(mem, layout, lp, &m, &t);
        let prot = self.applied(&m);
        let user = self.prots(&m).1;
        let phys0 = m.phys - (lp - first);
        // A fault of guest user code maps the run in its process only.
        let here = !(self.split && access.user);
        if !here && self.pages.contains_key(&lp) && !self.absent_here.contains(&lp) {
            // The old mapping of the page stays here otherwise.
            self.take_away(monitor, lp, 1, true)?;
        }
        self.give(monitor, first, phys0, n, here.then_some(prot), Some(user))?;
        self.stats.hidden_faults += 1;
        for i in 0..n {
            let page = Mapping {
                phys: phys0 + i,
                ..m
            };
            // The map replaced whatever the user-code process kept there.
            self.stale_user.remove(&(first + i));
            self.record(first + i, page);
            if here {
                self.absent_here.remove(&(first + i));
            } else {
                self.absent_here.insert(first + i);
            }
            if !self.split && !self.user_view && self.differs.contains(&(first + i)) {
                self.exposed.insert(first + i);
            }
            if first + i == lp {
                self.prefetched.remove(&lp);
            } else if !self.split && self.differs.contains(&(first + i)) {
                self.prefetched.insert(first + i);
            }
            // The run was mapped with the faulting page's protection; a page
            // of it that holds translations (or sits beside one that does)
            // needs its own.
            let p = self.applied_at(first + i, &page);
            let u = self.prots(&page).1;
            if (here && p != prot) || (self.split && u != user) {
                monitor.protect_views(
                    (first + i) * PAGE_SIZE,
                    PAGE_SIZE,
                    here.then_some(p),
                    Some(u),
                )?;
            }
        }
        Ok(Fill::Mapped)
    }

    /// Maps the page at `linear` ahead of an `access` the guest is about
    /// to make, if its tables allow it and it is not mapped already (else
    /// nothing: the access will fault and the guest see it then). Returns
    /// whether it mapped. The walk sets the accessed bit, which a CPU may
    /// set for a translation it caches ahead of any access (Intel SDM 3A
    /// 4.10.1.3): the dispatcher maps the page a guest #PF was about at the
    /// return to user code, and the pages of the user's EIP and ESP before
    /// every run of it (a child Linux has just forked has every entry
    /// unaccessed, and its first read of its stack was a host fault, a
    /// hand-off each way and a fill).
    pub fn prefill(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
        linear: u32,
        access: Access,
    ) -> Result<bool, MonitorError> {
        if self.pages.contains_key(&(linear / PAGE_SIZE))
            || paging::walk(mem, &self.regs, linear, access, false).is_err()
        {
            return Ok(false);
        }
        let fill = self.fill(monitor, mem, linear, access)?;
        if fill == Fill::Mapped {
            // Counted apart: no host fault was hidden.
            self.stats.hidden_faults -= 1;
            self.stats.prefills += 1;
        }
        Ok(fill == Fill::Mapped)
    }

    /// Makes the next fill of `linear`'s page map it rather than
    /// answer [`Fill::Emulate`] (the emulator declined the access).
    pub fn stop_emulating(&mut self, linear: u32) {
        self.emulated.insert(linear / PAGE_SIZE, EMULATE_MAX);
    }

    /// The run of linear pages around `lp` to map with it: pages the guest
    /// maps with the same rights to consecutive physical pages and has
    /// already accessed (a large page counts as one accessed entry), not yet
    /// mapped, within one page table, on the side of the monitor region
    /// (`layout`) that `lp` is on.
    fn run_around(
        &mut self,
        mem: &mut GuestMemory,
        layout: Layout,
        lp: u32,
        m: &Mapping,
        t: &Translation,
    ) -> (u32, u32) {
        // A large page is one entry: its pages share rights and are
        // physically consecutive. Small pages are looked at within their
        // page table.
        let span = if t.size > PAGE_4K {
            t.size / PAGE_4K
        } else if self.regs.pae() {
            512
        } else {
            1024
        };
        let window = lp & !(span - 1);
        let (region_first, region_end) = (
            layout.base() / PAGE_SIZE,
            (layout.end() / u64::from(PAGE_SIZE)) as u32,
        );
        let (lowest, highest) = if lp < region_first {
            (window.max(1), (window + span).min(region_first))
        } else {
            (window.max(region_end), window + span)
        };
        let large = t.size > PAGE_4K;
        let mut fits = |s: &mut Self, p: u32| -> bool {
            let phys = i64::from(m.phys) + i64::from(p) - i64::from(lp);
            if s.pages.contains_key(&p) || (phys + 1) * i64::from(PAGE_SIZE) > s.ram_size as i64 {
                return false;
            }
            if large {
                return true;
            }
            match paging::walk(mem, &s.regs, p * PAGE_SIZE, Access::READ, false) {
                Ok(n) => {
                    let nm = Mapping::of(&n, p * PAGE_SIZE);
                    n.accessed && i64::from(nm.phys) == phys && nm.same_rights(m)
                }
                Err(_) => false,
            }
        };
        let (mut first, mut end) = (lp, lp + 1);
        while end < highest && end - lp <= FILL_AROUND && fits(self, end) {
            end += 1;
        }
        while first > lowest && lp - first < FILL_AROUND / 2 && fits(self, first - 1) {
            first -= 1;
        }
        (first, end - first)
    }

    /// Drops the shadow of the page holding `linear` (all of it, for a
    /// large page), as INVLPG drops the TLB entry.
    pub fn invlpg(&mut self, monitor: &mut Monitor, linear: u32) -> Result<(), MonitorError> {
        if !self.paging() {
            return Ok(());
        }
        // The guest may have remapped it, global or not, and even with no
        // shadow of it a translation may come from it.
        self.code_linear.note_invlpg(linear / PAGE_SIZE);
        self.drop_entry(monitor, linear)
    }

    /// What INVLPG does to the shadows, without its meaning for
    /// translations.
    fn drop_entry(&mut self, monitor: &mut Monitor, linear: u32) -> Result<(), MonitorError> {
        if !self.paging() {
            return Ok(());
        }
        let lp = linear / PAGE_SIZE;
        // The page itself may be unmapped while others of its large page
        // are mapped (a fill maps a window of a large page, not all of it).
        let large = if self.regs.pae() { 512 } else { 1024 };
        let mapped = self.pages.get(&lp).map(|m| m.span);
        let span = mapped.unwrap_or(large);
        let first = lp & !(span - 1);
        let mut doomed: Vec<u32> = if span == 1 {
            Vec::new()
        } else {
            // Only the large set: a user region of a few hundred 4 KiB
            // pages made this a walk of all of them at every #PF.
            self.large
                .range(first..first + span)
                .filter(|&p| self.pages[&p].span == span && p != lp)
                .collect()
        };
        if mapped.is_some() {
            let at = doomed.partition_point(|&p| p < lp);
            doomed.insert(at, lp);
        }
        if doomed.is_empty() {
            return Ok(());
        }
        self.stats.invlpgs += 1;
        self.drop_pages(monitor, &doomed)
    }

    /// Unmaps `doomed` (sorted linear pages), one call per run.
    fn drop_pages(&mut self, monitor: &mut Monitor, doomed: &[u32]) -> Result<(), MonitorError> {
        if self.split {
            // The user-code process maps every page of `pages`; this one
            // all but those absent here.
            for (first, n, ()) in runs(doomed.iter().map(|&p| (p, ()))) {
                self.take_away(monitor, first, n, false)?;
            }
            self.take_away_here(monitor, doomed)?;
        } else if self.absent_here.is_empty() {
            self.unmap_runs(monitor, doomed.iter().copied(), true, true)?;
        } else {
            // Each process unmaps only what it has: a run that spans
            // pages absent here is split here, whole there.
            self.unmap_runs(monitor, doomed.iter().copied(), false, true)?;
            let here = doomed.iter().filter(|p| !self.absent_here.contains(p));
            for (first, n, ()) in runs(here.map(|&p| (p, ()))) {
                monitor.unmap_views(first * PAGE_SIZE, n * PAGE_SIZE, true, false)?;
            }
        }
        for &p in doomed {
            self.forget(p);
        }
        Ok(())
    }

    /// Unmaps `pages` (sorted) here (`here`) and in the user-code process
    /// (`user`), one call per run, each counted.
    fn unmap_runs(
        &mut self,
        monitor: &mut Monitor,
        pages: impl IntoIterator<Item = u32>,
        here: bool,
        user: bool,
    ) -> Result<(), MonitorError> {
        for (first, n, ()) in runs(pages.into_iter().map(|p| (p, ()))) {
            monitor.unmap_views(first * PAGE_SIZE, n * PAGE_SIZE, here, user)?;
            self.stats.unmaps += 1;
        }
        Ok(())
    }

    /// Forgets the mapped page `p` (the caller unmaps it).
    fn forget(&mut self, p: u32) -> Option<Mapping> {
        self.absent_here.remove(&p);
        let m = self.pages.remove(&p)?;
        self.nonglobal.remove(&p);
        self.large.remove(&p);
        self.forget_alias(p, m.phys);
        self.differs.remove(&p);
        self.prefetched.remove(&p);
        self.exposed.remove(&p);
        self.hot.remove(&p);
        Some(m)
    }

    /// Takes the mapped pages `first..first + n` away from this process
    /// (`here`) or the user-code process (see [`Self::take_frames_away`]).
    /// The pages must still be in `pages` (it reads their frames).
    fn take_away(
        &mut self,
        monitor: &mut Monitor,
        first: u32,
        n: u32,
        here: bool,
    ) -> Result<(), MonitorError> {
        let frames: Vec<(u32, u32)> = (first..first + n)
            .filter_map(|p| self.pages.get(&p).map(|m| (p, m.phys)))
            .collect();
        let read_only = (first..first + n).all(|p| self.pages.get(&p).is_some_and(|m| !m.writable));
        self.take_frames_away(monitor, first, n, &frames, read_only, here)
    }

    /// Takes the pages `first..first + n`, mapped to `frames` ((linear,
    /// physical) of each page known), away from this process (`here`) or
    /// the user-code process: hidden, their frames kept behind them,
    /// while the run is short (or, all `read_only` in the guest's tables,
    /// not long), every frame is known and few are hidden; else unmapped.
    fn take_frames_away(
        &mut self,
        monitor: &mut Monitor,
        first: u32,
        n: u32,
        frames: &[(u32, u32)],
        read_only: bool,
        here: bool,
    ) -> Result<(), MonitorError> {
        let hidden = if here {
            &mut self.hidden_here
        } else {
            &mut self.hidden_there
        };
        let longest = if read_only {
            HIDE_RUN_READ_ONLY
        } else {
            HIDE_RUN
        };
        if n <= longest && frames.len() == n as usize && hidden.len() + frames.len() <= HIDDEN_MAX {
            monitor.hide_views(first * PAGE_SIZE, n * PAGE_SIZE, here, !here)?;
            hidden.extend(frames.iter().copied());
            self.stats.hides += 1;
        } else {
            monitor.unmap_views(first * PAGE_SIZE, n * PAGE_SIZE, here, !here)?;
            for p in first..first + n {
                hidden.remove(&p);
            }
            self.stats.unmaps += 1;
        }
        Ok(())
    }

    /// [`Self::take_away`] from this process, by runs, of the pages of
    /// `pages` (sorted) it maps (those not absent here).
    fn take_away_here(&mut self, monitor: &mut Monitor, pages: &[u32]) -> Result<(), MonitorError> {
        let here: Vec<u32> = pages
            .iter()
            .filter(|p| !self.absent_here.contains(p))
            .copied()
            .collect();
        for (first, n, ()) in runs(here.into_iter().map(|p| (p, ()))) {
            self.take_away(monitor, first, n, true)?;
        }
        Ok(())
    }

    /// Maps `first..first + n` to the physical pages from `phys0` here
    /// (with `here`'s protection) and in the user-code process (`user`'s):
    /// a run a process keeps hidden with the same frames is shown again
    /// with an `mprotect`; anything else is an `mmap` (populated).
    fn give(
        &mut self,
        monitor: &mut Monitor,
        first: u32,
        phys0: u32,
        n: u32,
        here: Option<Prot>,
        user: Option<Prot>,
    ) -> Result<(), MonitorError> {
        let (mut map_here, mut map_user) = (here, user);
        let hidden_as_asked = |hidden: &FxHashMap<u32, u32>| {
            (0..n).all(|i| hidden.get(&(first + i)) == Some(&(phys0 + i)))
        };
        if self.split {
            if here.is_some() && hidden_as_asked(&self.hidden_here) {
                monitor.protect_views(first * PAGE_SIZE, n * PAGE_SIZE, here, None)?;
                map_here = None;
                self.stats.shown += u64::from(n);
            }
            if user.is_some() && hidden_as_asked(&self.hidden_there) {
                monitor.protect_views(first * PAGE_SIZE, n * PAGE_SIZE, None, user)?;
                map_user = None;
                self.stats.shown += u64::from(n);
            }
        }
        let copied = |i: u32| self.copies.slot(phys0 + i);
        if let Some(user) =
            map_user.filter(|_| !self.copies.is_empty() && (0..n).any(|i| copied(i).is_some()))
        {
            // The user-code process maps the copies from their slots.
            for (at, len, slot) in runs((0..n).map(|i| (first + i, copied(i)))) {
                match slot {
                    Some(slot) => monitor.map_copy_for_user(at * PAGE_SIZE, slot, user)?,
                    None => monitor.map_views(
                        at * PAGE_SIZE,
                        u64::from(phys0 + at - first) * u64::from(PAGE_SIZE),
                        len * PAGE_SIZE,
                        None,
                        Some(user),
                        true,
                    )?,
                }
                self.stats.maps += 1;
                self.stats.pages_mapped += u64::from(len);
            }
            map_user = None;
        }
        if map_here.is_some() || map_user.is_some() {
            monitor.map_views(
                first * PAGE_SIZE,
                u64::from(phys0) * u64::from(PAGE_SIZE),
                n * PAGE_SIZE,
                map_here,
                map_user,
                true,
            )?;
            self.stats.maps += 1;
            self.stats.pages_mapped += u64::from(n);
        }
        for p in first..first + n {
            if here.is_some() {
                self.hidden_here.remove(&p);
            }
            if user.is_some() {
                self.hidden_there.remove(&p);
            }
        }
        Ok(())
    }

    /// Unmaps every hidden page in both processes (before something else
    /// is mapped over them, as the identity map is when paging goes off).
    fn drop_hidden(&mut self, monitor: &mut Monitor) -> Result<(), MonitorError> {
        for here in [true, false] {
            let hidden = if here {
                std::mem::take(&mut self.hidden_here)
            } else {
                std::mem::take(&mut self.hidden_there)
            };
            let mut pages: Vec<u32> = hidden.into_keys().collect();
            pages.sort_unstable();
            self.unmap_runs(monitor, pages, here, !here)?;
        }
        Ok(())
    }

    /// Drops `doomed` (sorted) here at a CR3 switch but leaves the 4 KiB
    /// user pages among them mapped in the user-code process, for
    /// [`Self::sync_user`] to check before user code runs.
    fn defer_user_drops(
        &mut self,
        monitor: &mut Monitor,
        doomed: &[u32],
    ) -> Result<(), MonitorError> {
        let (mut now, mut later) = (Vec::new(), Vec::new());
        for &p in doomed {
            match self.pages.get(&p) {
                Some(m) if m.user && m.span == 1 => later.push(p),
                _ => now.push(p),
            }
        }
        self.drop_pages(monitor, &now)?;
        self.take_away_here(monitor, &later)?;
        for p in later {
            if let Some(m) = self.forget(p) {
                let prot = self.prots(&m).1;
                self.stale_user.insert(p, (m, prot));
            }
        }
        Ok(())
    }

    /// Unmaps every page [`Self::stale_user`] holds in the user-code
    /// process.
    fn drop_stale_user(&mut self, monitor: &mut Monitor) -> Result<(), MonitorError> {
        let stale = std::mem::take(&mut self.stale_user);
        self.unmap_runs(monitor, stale.keys().copied(), false, true)?;
        for p in stale.keys() {
            self.hidden_there.remove(p);
        }
        Ok(())
    }

    /// Before guest user code runs: checks the pages the user-code process
    /// kept over CR3 switches against the guest's tables now. A page mapped
    /// the same way, accessed, stays (with its protection brought up to
    /// date); one mapped, accessed, to another frame is mapped to that
    /// frame (a parent and the child it forked take turns at the same
    /// addresses with different frames, their stacks after copy-on-write);
    /// the rest are unmapped. Past `REVALIDATE_MAX` pages all go.
    pub fn sync_user(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
    ) -> Result<(), MonitorError> {
        self.emulated.clear();
        if self.stale_user.is_empty() {
            return Ok(());
        }
        if self.stale_user.len() > REVALIDATE_MAX || !self.paging() {
            return self.drop_stale_user(monitor);
        }
        let doomed = self.revalidate_stale_user(monitor, mem)?;
        self.take_stale_away(monitor, &doomed)
    }

    /// Takes `doomed` (in page order) away from the user-code process.
    /// Hidden rather than unmapped where few: a forked child runs code its
    /// parent never touches (its exit path), whose entries the parent's
    /// tables keep unaccessed, and maps it again each round.
    fn take_stale_away(
        &mut self,
        monitor: &mut Monitor,
        doomed: &[(u32, StaleUser)],
    ) -> Result<(), MonitorError> {
        let frames: Vec<(u32, u32)> = doomed.iter().map(|&(lp, (m, _))| (lp, m.phys)).collect();
        // Each run is the next `n` of `frames`.
        let mut at = 0;
        for (first, n, ()) in runs(frames.iter().map(|&(p, _)| (p, ()))) {
            let run = &frames[at..at + n as usize];
            let read_only = doomed[at..at + n as usize]
                .iter()
                .all(|(_, (m, _))| !m.writable);
            at += n as usize;
            self.take_frames_away(monitor, first, n, run, read_only, false)?;
        }
        Ok(())
    }

    /// At a CR3 switch: what [`Self::sync_user`] will do for the stale
    /// pages the new tables map to user RAM, done now, so that the
    /// user-code process changes them while the guest kernel goes on to
    /// user mode (its ops overlap that path, user_space.rs). Where some
    /// page was mapped, the tables are a process's, and the others go now
    /// too; where none was, they stay stale: Linux switches through
    /// `swapper_pg_dir`, which maps no user page, on its way from an
    /// exiting process to its parent, and a child it just forked has its
    /// entries unaccessed.
    fn sync_user_early(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
    ) -> Result<(), MonitorError> {
        let before = self.stale_user.len();
        if before == 0 || before > REVALIDATE_MAX {
            return Ok(());
        }
        let unmapped = self.revalidate_stale_user(monitor, mem)?;
        if unmapped.len() < before {
            self.take_stale_away(monitor, &unmapped)
        } else {
            self.stale_user.extend(unmapped);
            Ok(())
        }
    }

    /// Takes from [`Self::stale_user`] each page the guest's tables map,
    /// accessed, to a 4 KiB user page of RAM: keeps it (its protection
    /// brought up to date) or maps it to its new frame. Returns the others
    /// as `stale_user` held them, in page order.
    fn revalidate_stale_user(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
    ) -> Result<Vec<(u32, StaleUser)>, MonitorError> {
        let regs = self.regs;
        let mut doomed = Vec::new();
        for (lp, (m, prot)) in std::mem::take(&mut self.stale_user) {
            let n = match paging::walk(mem, &regs, lp * PAGE_SIZE, Access::READ, false) {
                Ok(t) if t.accessed => Mapping::of(&t, lp * PAGE_SIZE),
                _ => {
                    doomed.push((lp, (m, prot)));
                    continue;
                }
            };
            let ram = u64::from(n.phys) < self.ram_size / u64::from(PAGE_SIZE);
            if !n.user || n.span != 1 || !ram {
                doomed.push((lp, (m, prot)));
                continue;
            }
            let user = self.prots(&n).1;
            if n.phys == m.phys {
                self.stats.kept_at_cr3 += 1;
                if user != prot {
                    monitor.protect_views(lp * PAGE_SIZE, PAGE_SIZE, None, Some(user))?;
                    self.stats.protects += 1;
                    self.stats.pages_protected += 1;
                }
            } else {
                self.give(monitor, lp, n.phys, 1, None, Some(user))?;
                self.stats.remapped_at_cr3 += 1;
            }
            self.record(lp, n);
            self.absent_here.insert(lp);
        }
        Ok(doomed)
    }

    /// Drops every shadow, or every non-global one.
    fn flush(&mut self, monitor: &mut Monitor, global_too: bool) -> Result<(), MonitorError> {
        let doomed: Vec<u32> = if global_too {
            self.pages.keys().collect()
        } else {
            self.nonglobal.iter().collect()
        };
        self.drop_stale_user(monitor)?;
        self.drop_pages(monitor, &doomed)?;
        if global_too {
            self.drop_hidden(monitor)?;
        }
        Ok(())
    }

    /// What a CR3 switch does to the non-global shadows: drops those the
    /// new tables map otherwise, keeps a page the new tables map to the
    /// same physical page with the same rights, accessed (and dirty, if
    /// the shadow let writes through) already, as a TLB refill would find
    /// it, and re-protects in place one whose rights alone changed.
    /// Processes forked from one another share their text, and every
    /// context switch dropped it and faulted it back a page at a time (~4
    /// fills a round of Linux's ctxsw). A fork write-protects the parent's
    /// pages for copy-on-write and reloads CR3: dropping the stack made
    /// the parent's next read fault (a host signal and an `mmap` ~10 µs)
    /// before the write that takes the copy. Past [`REVALIDATE_MAX`]
    /// pages the walks would cost more than the fills, and all go.
    fn flush_changed(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
    ) -> Result<(), MonitorError> {
        if self.nonglobal.len() > REVALIDATE_MAX {
            return self.flush(monitor, false);
        }
        let regs = self.regs;
        let mut doomed = Vec::new();
        let mut reprotect = Vec::new();
        for lp in self.nonglobal.iter() {
            let m = self.pages[&lp];
            match paging::walk(mem, &regs, lp * PAGE_SIZE, Access::READ, false) {
                Ok(t) if t.accessed => {
                    let n = Mapping::of(&t, lp * PAGE_SIZE);
                    if n == m {
                        continue;
                    }
                    let same_page = Mapping {
                        writable: m.writable,
                        executable: m.executable,
                        dirty: m.dirty,
                        ..n
                    } == m;
                    if same_page {
                        reprotect.push((lp, n));
                    } else {
                        doomed.push(lp);
                    }
                }
                _ => doomed.push(lp),
            }
        }
        self.stats.kept_at_cr3 += (self.nonglobal.len() - doomed.len()) as u64;
        for (lp, n) in reprotect {
            self.remap_rights(monitor, lp, n)?;
        }
        if self.split {
            self.defer_user_drops(monitor, &doomed)?;
            self.sync_user_early(monitor, mem)
        } else {
            self.drop_pages(monitor, &doomed)
        }
    }

    /// Records `m` at the mapped linear page `lp` (same physical page,
    /// other rights or code state) and gives both views its protections.
    fn remap_rights(
        &mut self,
        monitor: &mut Monitor,
        lp: u32,
        m: Mapping,
    ) -> Result<(), MonitorError> {
        self.record(lp, m);
        let user = self.prots(&m).1;
        let here = (!self.absent_here.contains(&lp)).then(|| self.applied_at(lp, &m));
        monitor.protect_views(lp * PAGE_SIZE, PAGE_SIZE, here, Some(user))?;
        self.stats.protects += 1;
        self.stats.pages_protected += 1;
        Ok(())
    }

    /// Takes the guest's new paging registers after a control-register
    /// write, dropping the shadows they invalidate. `cr3_written`: CR3 was
    /// written, even with its old value.
    pub fn set_regs(
        &mut self,
        monitor: &mut Monitor,
        mem: &mut GuestMemory,
        new: PagingRegs,
        cr3_written: bool,
    ) -> Result<(), MonitorError> {
        let old = std::mem::replace(&mut self.regs, new);
        let cr3_switch = old.enabled()
            && new.enabled()
            && !old.flushes_all(&new)
            && (cr3_written || old.cr3 != new.cr3);
        if cr3_switch {
            self.code_linear.note_cr3_switch();
        } else {
            self.code_linear.note_all();
        }
        match (old.enabled(), new.enabled()) {
            (false, false) => {}
            (false, true) => {
                monitor.unmap_identity()?;
                self.stats.full_flushes += 1;
            }
            (true, false) => {
                self.flush(monitor, true)?;
                // The identity map protects only translated code: a copy
                // would go stale unnoticed.
                self.copies.clear();
                monitor.map_identity()?;
                let top = monitor.identity_top() / PAGE_SIZE;
                for &p in &self.code {
                    if p != 0 && p < top {
                        monitor.protect(p * PAGE_SIZE, PAGE_SIZE, Prot::RX)?;
                    }
                }
                self.stats.full_flushes += 1;
            }
            (true, true) => {
                if old.flushes_all(&new) {
                    self.flush(monitor, true)?;
                    self.stats.full_flushes += 1;
                } else if cr3_written || old.cr3 != new.cr3 {
                    self.flush_changed(monitor, mem)?;
                    self.stats.cr3_switches += 1;
                }
            }
        }
        Ok(())
    }

    /// Applies the user view (guest CPL 3 runs directly) or the kernel view.
    ///
    /// Only pages whose two protections differ change. The switch to the
    /// user view hides the pages exposed during the kernel-view stay; the
    /// switch to the kernel view exposes only the hot ones (those exposed
    /// during the last stay; all of them while there are at most
    /// `RESTORE_ALL`), and translated code touching any other gets it
    /// exposed by a fault ([`Self::fill`]). Restoring every mapped
    /// supervisor page at each entry cost Debian's kernel ~120 `mprotect`s
    /// of ~500 pages per system call (docs/perf.md).
    pub fn set_view(&mut self, monitor: &mut Monitor, user: bool) -> Result<(), MonitorError> {
        if self.split || self.user_view == user {
            return Ok(());
        }
        self.user_view = user;
        if user {
            self.drop_unused_supervisor_pages(monitor)?;
        }
        let targets: Vec<(u32, Prot)> = if user {
            let exposed = std::mem::take(&mut self.exposed);
            let t = exposed
                .iter()
                .filter(|p| self.differs.contains(p))
                .map(|&p| (p, self.prots(&self.pages[&p]).1))
                .collect();
            self.hot = exposed;
            t
        } else {
            self.entries += 1;
            if self.entries >= HOT_REBUILD {
                self.entries = 0;
                self.hot.clear();
            }
            let hot: Vec<u32> = if self.differs.len() <= RESTORE_ALL {
                self.differs.iter().copied().collect()
            } else {
                self.hot
                    .iter()
                    .copied()
                    .filter(|p| self.differs.contains(p))
                    .collect()
            };
            self.exposed.extend(hot.iter().copied());
            hot.into_iter()
                .map(|p| (p, self.prots(&self.pages[&p]).0))
                .collect()
        };
        if targets.is_empty() {
            return Ok(());
        }
        self.stats.view_switches += 1;
        let mapped = targets.len() as u64;
        let mut runs = runs(targets);
        if user {
            runs = self.across_hidden_gaps(runs);
        } else {
            runs = self.across_restorable_gaps(runs);
        }
        for (first, n, prot) in runs {
            monitor.protect(first * PAGE_SIZE, n * PAGE_SIZE, prot)?;
            self.stats.protects += 1;
        }
        self.stats.pages_protected += mapped;
        Ok(())
    }

    /// Joins restoring runs of the same protection across short gaps of
    /// mapped, hidden pages whose kernel-view protection is that one too:
    /// those get exposed with the runs (the kernel view may touch any
    /// supervisor page), for ~70 ns a page instead of ~1.5 µs a call. An
    /// unmapped page breaks a run: its PROT_NONE reservation must stay so.
    fn across_restorable_gaps(&mut self, runs: Vec<(u32, u32, Prot)>) -> Vec<(u32, u32, Prot)> {
        let mut out: Vec<(u32, u32, Prot)> = Vec::with_capacity(runs.len());
        for (first, n, prot) in runs {
            if let Some((f, m, p)) = out.last_mut() {
                let end = *f + *m;
                let gap = first - end;
                if *p == prot
                    && gap <= RESTORE_GAP
                    && (end..first).all(|lp| {
                        self.pages
                            .get(&lp)
                            .is_some_and(|x| self.differs.contains(&lp) && self.prots(x).0 == prot)
                    })
                {
                    self.exposed.extend(end..first);
                    *m = first + n - *f;
                    continue;
                }
            }
            out.push((first, n, prot));
        }
        out
    }

    /// Unmaps the supervisor pages a fill mapped beside the faulting one
    /// that the guest has not faulted on since. Every mapped supervisor
    /// page costs a page-table rewrite at each view switch for the rest of
    /// its life; unmapping costs one, and a page the guest did use without
    /// faulting is mapped again at its next use. In the demo OS, fills in
    /// the kernel's 4 MiB pages mapped 149 supervisor pages, half of them
    /// never faulted on; dropping those at the switch cut the page-table
    /// rewrites from 1.85 M to 0.40 M a run. The survivors are scattered,
    /// which [`Self::across_hidden_gaps`] makes cheap for this direction.
    fn drop_unused_supervisor_pages(&mut self, monitor: &mut Monitor) -> Result<(), MonitorError> {
        // Kept to the set that is dropped, so the switch never walks the
        // user pages fills mapped ahead.
        let unused: Vec<u32> = std::mem::take(&mut self.prefetched)
            .into_iter()
            .filter(|p| self.differs.contains(p))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        self.stats.prefetch_drops += unused.len() as u64;
        self.drop_pages(monitor, &unused)
    }

    /// Joins runs that take away all access when only pages without any
    /// access lie between them: unmapped pages (`Monitor::unmap` leaves a
    /// PROT_NONE reservation) and supervisor pages hidden already. One
    /// call covers the lot at no extra page-table work: a call costs
    /// ~1.5 µs before its ~70 ns a page. Called when `exposed` is already
    /// empty, so every mapped supervisor page between runs is hidden.
    fn across_hidden_gaps(&self, runs: Vec<(u32, u32, Prot)>) -> Vec<(u32, u32, Prot)> {
        let mut out: Vec<(u32, u32, Prot)> = Vec::with_capacity(runs.len());
        for (first, n, prot) in runs {
            if let Some((f, m, p)) = out.last_mut() {
                let end = *f + *m;
                if *p == Prot::NONE
                    && prot == Prot::NONE
                    && self
                        .pages
                        .range(end..first)
                        .all(|(lp, x)| !x.user && self.differs.contains(&lp))
                {
                    *m = first + n - *f;
                    continue;
                }
            }
            out.push((first, n, prot));
        }
        out
    }

    /// Physical page `phys` now holds translations: take write access away
    /// from every alias. `linear` is the page translated from.
    pub fn protect_code(
        &mut self,
        monitor: &mut Monitor,
        phys: u32,
        linear: u32,
    ) -> Result<(), MonitorError> {
        if self.paging() {
            self.code_linear.insert(linear, phys);
        }
        if !self.code.insert(phys) {
            return Ok(());
        }
        self.reprotect_phys(monitor, phys)
    }

    /// Physical page `phys` holds no translations any more.
    pub fn unprotect_code(&mut self, monitor: &mut Monitor, phys: u32) -> Result<(), MonitorError> {
        if !self.code.remove(&phys) {
            return Ok(());
        }
        self.code_linear.remove_phys(phys);
        self.reprotect_phys(monitor, phys)
    }

    /// No physical page holds translations (the cache was flushed).
    pub fn unprotect_all_code(&mut self, monitor: &mut Monitor) -> Result<(), MonitorError> {
        for p in self.code.clone() {
            self.unprotect_code(monitor, p)?;
        }
        Ok(())
    }

    /// Whether physical page `phys` holds translations.
    pub fn is_code(&self, phys: u32) -> bool {
        self.code.contains(&phys)
    }

    /// Whether writes to physical page `phys` fault in every alias: it
    /// holds translations or has a copy.
    pub fn is_write_protected(&self, phys: u32) -> bool {
        self.code.contains(&phys) || self.copies.slot(phys).is_some()
    }

    /// The frame at user linear `linear`, mapped now, and the offset of
    /// `linear` in it, where that page is user code the guest cannot
    /// write through this mapping (user, executable, read-only).
    fn user_code_at(&self, linear: u32) -> Option<(u32, u16)> {
        let m = self.pages.get(&(linear / PAGE_SIZE))?;
        (m.user && m.executable && !m.writable).then_some((m.phys, (linear % PAGE_SIZE) as u16))
    }

    /// Guest user code trapped on `int $0x80` at `linear`: from now on the
    /// user-code process runs that page's frame from a copy with `int3`
    /// (0xCC) in place of its first byte, which the host delivers for a
    /// fraction of the cost of its own `int 0x80` path (docs/bt.md). Only
    /// with a user-code process, for a read-only user code page whose
    /// frame holds `CD 80` there within the page, while a slot is free.
    /// Says whether the site is patched now. The guest's frame is not
    /// changed: the kernel view, and every emulated access, see it as
    /// it is.
    pub fn patch_int80(
        &mut self,
        monitor: &mut Monitor,
        mem: &GuestMemory,
        linear: u32,
    ) -> Result<bool, MonitorError> {
        if !self.split || !self.paging() {
            return Ok(false);
        }
        let Some((phys, off)) = self.user_code_at(linear) else {
            return Ok(false);
        };
        let at = u64::from(phys) * u64::from(PAGE_SIZE);
        let frame = match mem.slice(at, PAGE_SIZE as usize) {
            Ok(f) if u32::from(off) < PAGE_SIZE - 1 => f,
            _ => return Ok(false),
        };
        if frame[usize::from(off)..usize::from(off) + 2] != [0xCD, 0x80] {
            return Ok(false);
        }
        let added = match self.copies.add_site(phys, off) {
            None if self.evict_unmapped_copy(monitor)? => self.copies.add_site(phys, off),
            added => added,
        };
        let Some((slot, new)) = added else {
            return Ok(false);
        };
        let Some(page) = monitor.frame_copy(slot) else {
            self.copies.remove(phys);
            return Ok(false);
        };
        if new {
            page.copy_from_slice(frame);
        }
        // The user-code process shares the page: it runs this byte next.
        page[usize::from(off)] = 0xCC;
        self.stats.int80_patched += 1;
        if new {
            self.remap_for_user(monitor, phys)?;
        }
        Ok(true)
    }

    /// Whether the `int3` guest user code trapped on at `linear` is one
    /// [`Self::patch_int80`] put there in place of `int $0x80`.
    pub fn is_patched_int80(&self, linear: u32) -> bool {
        self.user_code_at(linear)
            .is_some_and(|(phys, off)| self.copies.has_site(phys, off))
    }

    /// Every slot is taken: gives up the copy of a frame no user page
    /// maps now (its program exited, or its page went; the kernel's own
    /// mapping of the frame does not count), if there is one. Says whether
    /// a slot is free now.
    fn evict_unmapped_copy(&mut self, monitor: &mut Monitor) -> Result<bool, MonitorError> {
        let Some(idle) = self
            .copies
            .frames()
            .find(|&p| self.aliases_of(p).iter().all(|lp| !self.pages[lp].user))
        else {
            return Ok(false);
        };
        self.copies.remove(idle);
        self.stats.copies_dropped += 1;
        // Hidden or kept-stale mappings of it go.
        self.remap_for_user(monitor, idle)?;
        Ok(true)
    }

    /// Physical page `phys` is being written: the user-code process maps
    /// the frame itself again (the caller lets the write through).
    pub fn drop_copy(&mut self, monitor: &mut Monitor, phys: u32) -> Result<(), MonitorError> {
        if !self.copies.remove(phys) {
            return Ok(());
        }
        self.stats.copies_dropped += 1;
        self.remap_for_user(monitor, phys)
    }

    /// After `phys` got or lost its copy: every mapping of it the user-code
    /// process has is made again (hidden or kept-stale ones are unmapped,
    /// so that no `mprotect` shows the old backing again), and its
    /// aliases' protections are brought up to date.
    fn remap_for_user(&mut self, monitor: &mut Monitor, phys: u32) -> Result<(), MonitorError> {
        let hidden: Vec<u32> = self
            .hidden_there
            .iter()
            .filter(|&(_, &f)| f == phys)
            .map(|(&lp, _)| lp)
            .collect();
        let stale: Vec<u32> = self
            .stale_user
            .iter()
            .filter(|(_, (m, _))| m.phys == phys)
            .map(|(&lp, _)| lp)
            .collect();
        for lp in hidden.into_iter().chain(stale) {
            self.hidden_there.remove(&lp);
            self.stale_user.remove(&lp);
            monitor.unmap_views(lp * PAGE_SIZE, PAGE_SIZE, false, true)?;
            self.stats.unmaps += 1;
        }
        for lp in self.aliases_of(phys) {
            let user = self.prots(&self.pages[&lp]).1;
            self.give(monitor, lp, phys, 1, None, Some(user))?;
        }
        self.reprotect_phys(monitor, phys)
    }

    /// The linear pages mapped to physical page `phys` now.
    fn aliases_of(&self, phys: u32) -> Vec<u32> {
        self.aliases
            .range((phys, 0)..=(phys, u32::MAX))
            .map(|&(_, lp)| lp)
            .collect()
    }

    fn reprotect_phys(&mut self, monitor: &mut Monitor, phys: u32) -> Result<(), MonitorError> {
        if !self.paging() {
            let top = monitor.identity_top() / PAGE_SIZE;
            if phys != 0 && phys < top {
                let prot = if self.code.contains(&phys) {
                    Prot::RX
                } else {
                    Prot::RWX
                };
                monitor.protect(phys * PAGE_SIZE, PAGE_SIZE, prot)?;
            }
            return Ok(());
        }
        for lp in self.aliases_of(phys) {
            let m = self.pages[&lp];
            self.remap_rights(monitor, lp, m)?;
        }
        Ok(())
    }

    /// Physical pages of translations whose linear page no longer maps to
    /// the physical page they were made from (after a CR3 write, INVLPG or
    /// a paging-mode change). They are forgotten here; the caller drops
    /// their translations and calls [`Shadow::unprotect_code`].
    pub fn stale_code(&mut self, mem: &mut GuestMemory) -> Vec<u32> {
        let regs = self.regs;
        self.code_linear.take_stale(|lp| {
            if !regs.enabled() {
                return Some(code_map::Now {
                    phys: lp,
                    global: false,
                    span: 1,
                });
            }
            paging::walk(mem, &regs, lp * PAGE_SIZE, Access::FETCH, false)
                .ok()
                .map(|t| code_map::Now {
                    phys: (t.phys >> 12) as u32,
                    global: t.global,
                    span: t.size / PAGE_4K,
                })
        })
    }
}

/// Groups sorted pages into runs of consecutive pages with equal values:
/// (first page, count).
fn runs<T: PartialEq + Copy>(pages: impl IntoIterator<Item = (u32, T)>) -> Vec<(u32, u32, T)> {
    let mut out: Vec<(u32, u32, T)> = Vec::new();
    for (p, v) in pages {
        match out.last_mut() {
            Some((first, n, pv)) if *first + *n == p && *pv == v => *n += 1,
            _ => out.push((p, 1, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_consecutive_equal_pages() {
        let r = runs([(1, 'a'), (2, 'a'), (3, 'b'), (5, 'b'), (6, 'b')]);
        assert_eq!(r, vec![(1, 2, 'a'), (3, 1, 'b'), (5, 2, 'b')]);
        assert!(runs(Vec::<(u32, ())>::new()).is_empty());
    }

    #[test]
    fn hiding_runs_join_across_unmapped_and_hidden_pages_only() {
        let regs = PagingRegs {
            cr0: 0,
            cr3: 0,
            cr4: 0,
            nxe: false,
        };
        let mut s = Shadow::new(1 << 20, regs);
        let sup = Mapping {
            phys: 1,
            span: 1,
            user: false,
            writable: true,
            executable: true,
            dirty: true,
            global: false,
        };
        for p in [10, 11, 20, 30, 33, 36, 40] {
            s.pages.insert(p, sup);
            s.differs.insert(p);
        }
        // A user page: it keeps its access in the user view.
        s.pages.insert(25, Mapping { user: true, ..sup });
        let none = Prot::NONE;
        let joined = s.across_hidden_gaps(vec![
            (10, 2, none),
            (20, 1, none),
            // 25 is a user page: no joining across it.
            (30, 1, none),
            // 33 is a supervisor page hidden already: joined across.
            (36, 1, none),
            (40, 1, Prot::R),
        ]);
        assert_eq!(
            joined,
            vec![(10, 11, none), (30, 7, none), (40, 1, Prot::R)]
        );
    }
}
