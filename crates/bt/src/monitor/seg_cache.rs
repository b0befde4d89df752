//! The segment-descriptor cache behind inline data-segment loads in
//! translated code (`Emitter::load_sreg`, contract.rs `SegCacheEntry`).
//!
//! Linux loads DS, ES and FS six times per system call (`__USER_DS` and
//! `__KERNEL_PERCPU` at entry, the user's values at exit), each a callout
//! of ~2 µs. A load whose selector and descriptor the monitor has seen
//! before can be done by translated code itself: the monitor keeps the
//! kernel-view shadow of each such descriptor in an LDT entry of its own
//! (`FIRST_ENTRY` on), and the table in the monitor region tells
//! translated code which host selector to load for which guest selector,
//! provided the guest's descriptor still holds the bytes it had (checked
//! at every inline load, so a guest that rewrites its GDT gets its new
//! descriptor through a callout).
//!
//! After translated code ran, the monitor takes the segments it loaded
//! over ([`SegCache::segment`]): `guest_sel` names them.

use x86::{Segment, TableRegister};

use super::error::MonitorError;
use super::ldt::{self, Slot, View};
use crate::contract::{Layout, SegCacheEntry, SEG_CACHE_ENTRIES};

/// LDT entries holding cached shadows: below the user view's shadows
/// (8176 on) and the kernel view's (8184 on).
const FIRST_ENTRY: u32 = 8160;
/// How many there are.
const ENTRIES: usize = 16;
/// Table entries 0 to 3 load the null selectors (Linux's exit path pops
/// the user's null FS at every return), whatever the GDT holds.
const NULLS: usize = 4;

/// One cached descriptor.
#[derive(Clone, Copy, Debug)]
struct Cached {
    sel: u16,
    segment: Segment,
    desc_at: u32,
    desc: u64,
}

/// The monitor's side of the cache.
#[derive(Debug)]
pub struct SegCache {
    /// What each of the LDT entries holds.
    slots: [Option<Cached>; ENTRIES],
    /// The slot the next new descriptor takes (round robin).
    next: usize,
    /// The GDT the cached entries came from: another one (LGDT) empties
    /// the cache.
    gdtr: Option<TableRegister>,
}

impl SegCache {
    /// An empty cache (the region's table must be emptied too:
    /// [`SegCache::clear_table`]).
    pub fn new() -> SegCache {
        SegCache {
            slots: [None; ENTRIES],
            next: 0,
            gdtr: None,
        }
    }

    /// Empties the table at the region's `layout` (open).
    ///
    /// # Safety
    /// The monitor region must be mapped read-write and nothing else may
    /// use the table meanwhile.
    pub unsafe fn clear_table(layout: Layout) {
        let table = layout.seg_cache() as usize as *mut SegCacheEntry;
        for i in 0..SEG_CACHE_ENTRIES as usize {
            let entry = if i < NULLS {
                let at = layout.seg_cache() + (i * std::mem::size_of::<SegCacheEntry>()) as u32;
                SegCacheEntry::null(i as u16, at)
            } else {
                SegCacheEntry::EMPTY
            };
            // SAFETY: the caller guarantees the table is ours to write;
            // `i` is within it.
            unsafe { table.add(i).write(entry) };
        }
    }

    /// The GDT the cached descriptors came from, if any are cached.
    pub fn gdt(&self) -> Option<TableRegister> {
        self.gdtr
    }

    /// The segment translated code loaded with guest selector `sel`, if
    /// the cache holds it.
    pub fn segment(&self, sel: u16) -> Option<Segment> {
        if usize::from(sel) < NULLS {
            // As the emulator loads a null selector.
            return Some(Segment {
                selector: sel,
                ..Segment::unusable()
            });
        }
        self.slots
            .iter()
            .flatten()
            .find(|c| c.sel == sel)
            .map(|c| c.segment)
    }

    /// Caches `seg`, just loaded at CPL 0 from the guest's GDT `gdtr`
    /// where its descriptor `desc` sits at linear `desc_at`, so that
    /// translated code loads it inline from now on.
    ///
    /// # Safety
    /// As for [`SegCache::clear_table`].
    pub unsafe fn insert(
        &mut self,
        layout: Layout,
        gdtr: TableRegister,
        seg: &Segment,
        desc_at: u32,
        desc: u64,
    ) -> Result<(), MonitorError> {
        if self.gdtr != Some(gdtr) {
            // SAFETY: as the caller guarantees.
            unsafe { self.clear(layout) };
            self.gdtr = Some(gdtr);
        }
        let table = layout.seg_cache() as usize as *mut SegCacheEntry;
        let index = usize::from(seg.selector & 0xFF);
        if index < NULLS {
            // Those entries are the null selectors' for good.
            return Ok(());
        }
        let same = |c: &Cached| c.sel == seg.selector && c.desc_at == desc_at && c.desc == desc;
        if self.slots.iter().flatten().any(same) {
            // SAFETY: as the caller guarantees; the index is a byte.
            let e = unsafe { table.add(index).read() };
            if e.sel == u32::from(seg.selector) && e.neg_sel != SegCacheEntry::EMPTY.neg_sel {
                // Cached already (a load translated code could not do
                // inline: SS, a memory source, a single-step block).
                return Ok(());
            }
        }
        // The slot: the one holding this selector already, else the next.
        let slot = match self
            .slots
            .iter()
            .position(|c| c.is_some_and(|c| c.sel == seg.selector))
        {
            Some(s) => s,
            None => {
                let s = self.next;
                self.next = (self.next + 1) % ENTRIES;
                s
            }
        };
        if let Some(old) = self.slots[slot] {
            // SAFETY: as the caller guarantees; the index is a byte.
            unsafe {
                table
                    .add(usize::from(old.sel & 0xFF))
                    .write(SegCacheEntry::EMPTY)
            };
        }
        self.slots[slot] = None;
        let entry = FIRST_ENTRY + slot as u32;
        let mut shadow = ldt::shadow_descriptor(Slot::Ds, View::Kernel, seg, layout)?;
        shadow.entry_number = entry;
        ldt::write_entry(&shadow)?;
        let host_sel = ((entry as u16) << 3) | 4 | 3;
        // SAFETY: as above.
        unsafe {
            table
                .add(index)
                .write(SegCacheEntry::new(seg.selector, desc_at, desc, host_sel))
        };
        self.slots[slot] = Some(Cached {
            sel: seg.selector,
            segment: *seg,
            desc_at,
            desc,
        });
        Ok(())
    }

    /// Forgets every cached descriptor.
    ///
    /// # Safety
    /// As for [`SegCache::clear_table`].
    pub unsafe fn clear(&mut self, layout: Layout) {
        // SAFETY: as the caller guarantees.
        unsafe { SegCache::clear_table(layout) };
        self.slots = [None; ENTRIES];
        self.next = 0;
        self.gdtr = None;
    }
}

impl Default for SegCache {
    fn default() -> Self {
        SegCache::new()
    }
}
