//! The inline lookup table for indirect branches: a direct-mapped table from
//! guest EIP to host address that emitted 32-bit code probes itself.
//!
//! The probe runs between two guest instructions whose arithmetic flags live
//! in the host EFLAGS, so it must not change them: no CMP, AND, XOR, IMUL
//! or SHR. Hence the layout. Entries are indexed by [`slot`], the low 16
//! bits of the EIP plus its byte-swapped self (MOV, BSWAP, LEA and MOVZX
//! compute that without touching flags), and store the *negated* EIP, so
//! that `lea` adds it to the EIP for a zero exactly on a match and `jecxz`
//! tests that zero:
//!
//! ```text
//!     ; target guest EIP in EAX, guest EAX and ECX saved in the vCPU area
//!     mov   ecx, eax
//!     bswap ecx
//!     lea   ecx, [ecx + eax]
//!     movzx ecx, cx                       ; the slot
//!     mov   ecx, gs:[TABLE + ecx*8]       ; -eip of the entry
//!     lea   ecx, [ecx + eax]
//!     jecxz hit
//!     ...                                 ; miss: exit to the dispatcher
//! hit:
//!     ...                                 ; the slot again
//!     mov   ecx, gs:[TABLE + ecx*8 + 4]   ; host address
//! ```
//!
//! The slot was the low 16 bits alone until Linux's fork+wait showed ~18
//! misses a round from pairs of return addresses 64 KiB apart (0xc6282df9
//! and 0xc60b2df9) evicting each other at every call; adding the swapped
//! bytes mixes bits 16-31 in, which left ~11, now from pairs whose sums
//! meet (a few thousand hot targets in 65,536 slots always collide
//! somewhere). So a slot has a window of [`TABLE_WAYS`] entries: its own
//! and the next ones. The inline probe tries the first; the shared miss
//! handler tries the others before it leaves (`Emitter::miss_handler`),
//! and [`IndirectTable::insert`] puts a target in the first free one.
//! Two entries still left ~4 misses a round of fork+wait: pairs of hot
//! targets sharing a slot (mt_find+0xd9 and cgroup_post_fork+0xd9) whose
//! second entry a third hot target held, evicting each other every round.
//!
//! An empty entry holds `-0 = 0` and the address of the miss handler, so
//! a probe for EIP 0 that "matches" an empty slot still lands in the
//! dispatcher.

use std::io;

use crate::monitor::region::Region;

use crate::contract::{TABLE_ENTRIES, TABLE_ENTRY_SIZE, TABLE_SIZE, TABLE_WAYS};

/// The slot of `eip`: the low 16 bits of `eip + bswap(eip)`, what the
/// emitted probe computes (see the module's text).
pub fn slot(eip: u32) -> u32 {
    eip.swap_bytes().wrapping_add(eip) & (TABLE_ENTRIES - 1)
}

/// The Rust side of the table: fills it on dispatcher misses, empties it on
/// invalidation and flush.
#[derive(Debug)]
pub struct IndirectTable {
    region: Region,
    miss: u32,
}

impl IndirectTable {
    /// Uses `region` for the table; empty entries send probes to host
    /// address `miss`.
    pub fn new(region: Region, miss: u32) -> IndirectTable {
        assert!(region.len() >= TABLE_SIZE, "region too small for the table");
        let mut t = IndirectTable { region, miss };
        t.clear();
        t
    }

    /// An owned table below 4 GiB whose empty entries point at `miss`.
    pub fn anonymous(miss: u32) -> io::Result<IndirectTable> {
        Ok(IndirectTable::new(
            Region::anonymous(TABLE_SIZE, false)?,
            miss,
        ))
    }

    /// Host address of entry 0, the constant the emitter embeds.
    pub fn base(&self) -> u32 {
        self.region.base()
    }

    /// Host address probes of empty entries go to.
    pub fn miss_addr(&self) -> u32 {
        self.miss
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        TABLE_ENTRIES as usize
    }

    /// Always false: the table has a fixed, non-zero size.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// (negated EIP, host address) of a slot, as stored.
    fn read(&self, slot: u32) -> (u32, u32) {
        let at = (slot * TABLE_ENTRY_SIZE) as usize;
        let b = &self.region.bytes()[at..at + 8];
        (
            u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
        )
    }

    fn write(&mut self, slot: u32, neg_eip: u32, host: u32) {
        let at = (slot * TABLE_ENTRY_SIZE) as usize;
        let b = &mut self.region.bytes_mut()[at..at + 8];
        b[..4].copy_from_slice(&neg_eip.to_le_bytes());
        b[4..].copy_from_slice(&host.to_le_bytes());
    }

    /// The entries a probe for `eip` reads, in order.
    fn entries(eip: u32) -> [u32; TABLE_WAYS as usize] {
        let s = slot(eip);
        std::array::from_fn(|i| s + i as u32)
    }

    /// The translation entry `e` holds for `eip`, if it holds one.
    fn held(&self, e: u32, eip: u32) -> Option<u32> {
        let (neg, h) = self.read(e);
        (neg.wrapping_add(eip) == 0 && h != self.miss).then_some(h)
    }

    /// What a probe for `eip` would jump to, if it is a translation.
    pub fn get(&self, eip: u32) -> Option<u32> {
        Self::entries(eip)
            .into_iter()
            .find_map(|e| self.held(e, eip))
    }

    /// Points `eip` at `host`: in the entry that already names `eip`, else
    /// in the first free one of its window, else in the first, replacing
    /// what was there.
    pub fn insert(&mut self, eip: u32, host: u32) {
        let entries = Self::entries(eip);
        let e = entries
            .into_iter()
            .find(|&e| self.held(e, eip).is_some())
            .or_else(|| entries.into_iter().find(|&e| self.read(e).1 == self.miss))
            .unwrap_or(entries[0]);
        self.write(e, eip.wrapping_neg(), host);
    }

    /// Empties the entry of a dropped block (guest start `eip`,
    /// translation at `host`) if it still names that block, so a newer
    /// translation that took it survives. Returns whether an entry was
    /// removed.
    pub fn remove_block(&mut self, eip: u32, host: u32) -> bool {
        let Some(e) = Self::entries(eip)
            .into_iter()
            .find(|&e| self.held(e, eip) == Some(host))
        else {
            return false;
        };
        self.write(e, 0, self.miss);
        true
    }

    /// Empties every entry.
    pub fn clear(&mut self) {
        for e in 0..TABLE_ENTRIES + TABLE_WAYS - 1 {
            self.write(e, 0, self.miss);
        }
    }

    /// Entries in use.
    pub fn occupied(&self) -> usize {
        (0..TABLE_ENTRIES + TABLE_WAYS - 1)
            .filter(|&e| self.read(e).1 != self.miss)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISS: u32 = 0x4000;

    #[test]
    fn memory_layout_is_negated_eip_then_host() {
        let mut t = IndirectTable::anonymous(MISS).unwrap();
        assert_eq!(t.len(), 65536);
        assert_eq!(t.occupied(), 0);
        // EIP 0 "matches" an empty slot's -0 but finds the miss handler.
        assert_eq!(t.get(0), None);
        t.insert(0xC012_3456, 0xFFC1_0020);
        let s = slot(0xC012_3456) as usize;
        // 0x3456 + 0x12C0 (the swapped bytes' low half).
        assert_eq!(s, 0x4716);
        let raw = &t.region.bytes()[s * 8..s * 8 + 8];
        assert_eq!(raw, &[0xAA, 0xCB, 0xED, 0x3F, 0x20, 0x00, 0xC1, 0xFF]);
        assert_eq!(t.get(0xC012_3456), Some(0xFFC1_0020));
        // Another EIP in the slot.
        let other = (1..)
            .map(|i| 0xC012_3456 + (i << 8))
            .find(|&e| slot(e) as usize == s)
            .unwrap();
        assert_eq!(t.get(other), None, "same slot, other EIP");
        assert_eq!(t.occupied(), 1);
    }

    #[test]
    fn a_slot_holds_four_and_a_fifth_replaces_the_first() {
        let mut t = IndirectTable::anonymous(MISS).unwrap();
        let a = 0x1_1000u32;
        let same: Vec<u32> = (1..)
            .map(|i| a + (i << 8))
            .filter(|&e| slot(e) == slot(a))
            .take(4)
            .collect();
        let (b, c, d, e) = (same[0], same[1], same[2], same[3]);
        for (i, x) in [a, b, c, d].into_iter().enumerate() {
            t.insert(x, 0x100 * (i as u32 + 1));
        }
        // All four fit, in the slot's window.
        assert_eq!(
            [a, b, c, d].map(|x| t.get(x)),
            [Some(0x100), Some(0x200), Some(0x300), Some(0x400)]
        );
        // A retranslation of `b` stays where `b` is.
        t.insert(b, 0x280);
        assert_eq!((t.get(a), t.get(b)), (Some(0x100), Some(0x280)));
        // A fifth takes the first entry.
        t.insert(e, 0x500);
        assert_eq!(
            [a, b, c, d, e].map(|x| t.get(x)),
            [None, Some(0x280), Some(0x300), Some(0x400), Some(0x500)]
        );
        // Dropping block `a` must not knock out `e`, which took its entry.
        assert!(!t.remove_block(a, 0x100));
        assert_eq!(t.get(e), Some(0x500));
        // Nor does a stale translation of `b` at another address.
        assert!(!t.remove_block(b, 0x200));
        assert!(t.remove_block(b, 0x280));
        assert!(t.remove_block(e, 0x500));
        assert_eq!(t.occupied(), 2);
    }

    #[test]
    fn the_last_slot_spills_into_the_extra_entries() {
        let mut t = IndirectTable::anonymous(MISS).unwrap();
        let last: Vec<u32> = (0u32..)
            .filter(|&e| slot(e) == TABLE_ENTRIES - 1)
            .take(TABLE_WAYS as usize)
            .collect();
        for (i, &x) in last.iter().enumerate() {
            t.insert(x, 0x100 * (i as u32 + 1));
        }
        for (i, &x) in last.iter().enumerate() {
            assert_eq!(t.get(x), Some(0x100 * (i as u32 + 1)));
        }
        assert_eq!(t.occupied(), TABLE_WAYS as usize);
    }

    #[test]
    fn targets_64k_apart_get_different_slots() {
        // Return addresses from Linux's fork+wait that shared a slot when
        // it was the low 16 bits alone.
        assert_ne!(slot(0xC628_2DF9), slot(0xC60B_2DF9));
        assert_ne!(slot(0xC60D_23C3), slot(0xC60B_23C3));
        // Neighbours within 64 KiB still get neighbouring slots.
        assert_eq!(slot(0xC012_3457), slot(0xC012_3456) + 1);
    }

    #[test]
    fn clear_empties_everything() {
        let mut t = IndirectTable::anonymous(MISS).unwrap();
        for i in 0..40 {
            t.insert(0xC000_0000 + i * 7, 0x10_0000 + i);
        }
        assert_eq!(t.occupied(), 40);
        t.clear();
        assert_eq!(t.occupied(), 0);
        assert_eq!(t.get(0xC000_0000), None);
    }

    #[test]
    #[should_panic(expected = "too small")]
    fn undersized_region_is_refused() {
        IndirectTable::new(Region::anonymous(64, false).unwrap(), MISS);
    }
}
