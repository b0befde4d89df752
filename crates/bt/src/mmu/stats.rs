//! The shadow MMU's counters (`popek run --stats`).

/// What the shadow MMU did in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuStats {
    /// Host faults the shadow absorbed by mapping (the guest never saw them).
    pub hidden_faults: u64,
    /// Page faults delivered to the guest (its tables refused the access).
    pub guest_faults: u64,
    /// Host mapping calls (each maps a run of pages).
    pub maps: u64,
    /// Pages mapped by those calls.
    pub pages_mapped: u64,
    /// Host unmapping calls (each drops a run).
    pub unmaps: u64,
    /// Runs of dropped pages hidden instead (`mprotect` to no access,
    /// their frames left behind them).
    pub hides: u64,
    /// Hidden pages shown again, mapped to the same frame, by an
    /// `mprotect` instead of an `mmap`.
    pub shown: u64,
    /// Host protection changes (view switches, code protection).
    pub protects: u64,
    /// Pages those protection changes covered (what their cost grows with:
    /// the host kernel rewrites one page-table entry per present page).
    pub pages_protected: u64,
    /// CR3 writes that dropped the non-global shadows the new tables map
    /// otherwise.
    pub cr3_switches: u64,
    /// Non-global shadows a CR3 write kept, here or (until user code ran)
    /// in the user-code process: the new page tables map them the same
    /// way.
    pub kept_at_cr3: u64,
    /// User pages the user-code process kept over CR3 switches and then
    /// mapped to the (accessed) frame the guest's tables gave them when
    /// user code next ran, instead of unmapping them.
    pub remapped_at_cr3: u64,
    /// Pages mapped ahead of user code's retry of a faulting access.
    pub prefills: u64,
    /// Paging-mode changes that dropped every shadow.
    pub full_flushes: u64,
    /// INVLPGs (and delivered #PFs) that dropped a mapped page.
    pub invlpgs: u64,
    /// Switches between the kernel and the user view that changed pages.
    pub view_switches: u64,
    /// Pages given their kernel-view protection by a fault in the kernel
    /// view (not hot, so not restored at the switch).
    pub lazy_restores: u64,
    /// Supervisor pages mapped ahead by a fill and unmapped unfaulted at a
    /// switch to the user view.
    pub prefetch_drops: u64,
    /// Guest `int $0x80` sites guest user code now runs as `int3` from a
    /// frame copy ([`super::Shadow::patch_int80`]).
    pub int80_patched: u64,
    /// Frame copies dropped: their frame was written, or no page mapped
    /// it when a slot was needed.
    pub copies_dropped: u64,
}

impl MmuStats {
    /// The counts from `earlier` to `self`.
    pub fn since(&self, earlier: &MmuStats) -> MmuStats {
        MmuStats {
            hidden_faults: self.hidden_faults - earlier.hidden_faults,
            guest_faults: self.guest_faults - earlier.guest_faults,
            maps: self.maps - earlier.maps,
            pages_mapped: self.pages_mapped - earlier.pages_mapped,
            unmaps: self.unmaps - earlier.unmaps,
            hides: self.hides - earlier.hides,
            shown: self.shown - earlier.shown,
            protects: self.protects - earlier.protects,
            pages_protected: self.pages_protected - earlier.pages_protected,
            cr3_switches: self.cr3_switches - earlier.cr3_switches,
            kept_at_cr3: self.kept_at_cr3 - earlier.kept_at_cr3,
            remapped_at_cr3: self.remapped_at_cr3 - earlier.remapped_at_cr3,
            prefills: self.prefills - earlier.prefills,
            full_flushes: self.full_flushes - earlier.full_flushes,
            invlpgs: self.invlpgs - earlier.invlpgs,
            view_switches: self.view_switches - earlier.view_switches,
            prefetch_drops: self.prefetch_drops - earlier.prefetch_drops,
            lazy_restores: self.lazy_restores - earlier.lazy_restores,
            int80_patched: self.int80_patched - earlier.int80_patched,
            copies_dropped: self.copies_dropped - earlier.copies_dropped,
        }
    }

    /// Name and value of every counter, in display order.
    pub fn fields(&self) -> [(&'static str, u64); 20] {
        [
            ("shadow faults hidden", self.hidden_faults),
            ("page faults delivered", self.guest_faults),
            ("mapping calls", self.maps),
            ("pages mapped", self.pages_mapped),
            ("unmapping calls", self.unmaps),
            ("hiding calls", self.hides),
            ("hidden pages shown again", self.shown),
            ("protection calls", self.protects),
            ("pages protected", self.pages_protected),
            ("cr3 switches", self.cr3_switches),
            ("kept at cr3 switches", self.kept_at_cr3),
            ("remapped at cr3 switches", self.remapped_at_cr3),
            ("prefills", self.prefills),
            ("full flushes", self.full_flushes),
            ("invlpg drops", self.invlpgs),
            ("view switches", self.view_switches),
            ("unused prefetches dropped", self.prefetch_drops),
            ("lazy restores", self.lazy_restores),
            ("int 0x80 sites run as int3", self.int80_patched),
            ("frame copies dropped", self.copies_dropped),
        ]
    }
}
