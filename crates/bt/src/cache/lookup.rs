//! The inline lookup table for indirect branches: a direct-mapped table from
//! guest EIP to host address that emitted 32-bit code probes itself.
//!
//! The probe runs between two guest instructions whose arithmetic flags live
//! in the host EFLAGS, so it must not change them: no CMP, AND, IMUL or SHR.
//! Hence the layout. Entries are indexed by the low 16 bits of the EIP
//! (`movzx` computes that without touching flags) and store the *negated*
//! EIP, so that `lea` adds it to the EIP for a zero exactly on a match and
//! `jecxz` tests that zero:
//!
//! ```text
//!     ; target guest EIP in EAX, guest EAX and ECX saved in the vCPU area
//!     movzx ecx, ax
//!     mov   ecx, gs:[TABLE + ecx*8]       ; -eip of the entry
//!     lea   ecx, [ecx + eax]
//!     jecxz hit
//!     ...                                 ; miss: exit to the dispatcher
//! hit:
//!     movzx ecx, ax
//!     mov   ecx, gs:[TABLE + ecx*8 + 4]   ; host address
//! ```
//!
//! An empty entry holds `-0 = 0` and the address of the miss handler, so
//! a probe for EIP 0 that "matches" an empty slot still lands in the
//! dispatcher.

use std::io;

use crate::monitor::region::Region;

use crate::contract::{TABLE_ENTRIES, TABLE_ENTRY_SIZE, TABLE_SIZE};

/// The slot of `eip`: its low 16 bits.
pub fn slot(eip: u32) -> u32 {
    eip & (TABLE_ENTRIES - 1)
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

    /// What a probe for `eip` would jump to, if it is a translation.
    pub fn get(&self, eip: u32) -> Option<u32> {
        let (neg, h) = self.read(slot(eip));
        (neg.wrapping_add(eip) == 0 && h != self.miss).then_some(h)
    }

    /// Points `eip` at `host`, replacing whatever shared its slot.
    pub fn insert(&mut self, eip: u32, host: u32) {
        self.write(slot(eip), eip.wrapping_neg(), host);
    }

    /// Empties the slot of a dropped block (guest start `eip`, translation
    /// at `host`) if it still names that block, so a newer translation that
    /// took the slot survives. Returns whether an entry was removed.
    pub fn remove_block(&mut self, eip: u32, host: u32) -> bool {
        let s = slot(eip);
        if self.read(s) == (eip.wrapping_neg(), host) && host != self.miss {
            self.write(s, 0, self.miss);
            true
        } else {
            false
        }
    }

    /// Empties every entry.
    pub fn clear(&mut self) {
        for s in 0..TABLE_ENTRIES {
            self.write(s, 0, self.miss);
        }
    }

    /// Entries in use.
    pub fn occupied(&self) -> usize {
        (0..TABLE_ENTRIES)
            .filter(|&s| self.read(s).1 != self.miss)
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
        assert_eq!(s, 0x3456);
        let raw = &t.region.bytes()[s * 8..s * 8 + 8];
        assert_eq!(raw, &[0xAA, 0xCB, 0xED, 0x3F, 0x20, 0x00, 0xC1, 0xFF]);
        assert_eq!(t.get(0xC012_3456), Some(0xFFC1_0020));
        assert_eq!(t.get(0xC013_3456), None, "same slot, other EIP");
        assert_eq!(t.occupied(), 1);
    }

    #[test]
    fn collisions_replace_and_remove_is_precise() {
        let mut t = IndirectTable::anonymous(MISS).unwrap();
        let (a, b) = (0x1_1000u32, 0x2_1000u32);
        assert_eq!(slot(a), slot(b));
        t.insert(a, 0x100);
        t.insert(b, 0x200);
        assert_eq!(t.get(a), None);
        assert_eq!(t.get(b), Some(0x200));
        // Dropping block `a` must not knock out `b`, which took the slot.
        assert!(!t.remove_block(a, 0x100));
        assert_eq!(t.get(b), Some(0x200));
        // Nor does a stale translation of `b` at another address.
        assert!(!t.remove_block(b, 0x300));
        assert!(t.remove_block(b, 0x200));
        assert_eq!(t.get(b), None);
        assert_eq!(t.occupied(), 0);
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
