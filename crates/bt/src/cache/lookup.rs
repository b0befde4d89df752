//! The inline lookup table for indirect branches: a direct-mapped hash table
//! from guest EIP to host address that emitted 32-bit code probes itself.
//!
//! Layout: `1 << bits` entries of two little-endian u32s, at a 32-bit host
//! address: `[table + 8*i] = guest_eip`, `[table + 8*i + 4] = host_addr`.
//! The emitter replicates [`hash`] as (target guest EIP in EAX, flags
//! already saved, since IMUL and CMP clobber them):
//!
//! ```text
//!     mov   ecx, eax
//!     imul  ecx, ecx, 0x9E3779B1      ; HASH_MULT
//!     shr   ecx, 32 - bits
//!     cmp   eax, [table + ecx*8]
//!     jne   miss                      ; to the dispatcher
//!     jmp   dword [table + ecx*8 + 4]
//! ```

use std::io;

use super::region::Region;

/// Guest EIP of an empty or invalidated entry. No guest code can run from
/// 0xFFFFFFFF: it lies in the monitor region, where guest accesses fault, so
/// a probe for any real target never matches it.
pub const EMPTY_EIP: u32 = 0xFFFF_FFFF;

/// Multiplier of the Fibonacci hash (2^32 / golden ratio, odd). Kernel
/// function entries are 16-byte aligned, so a plain low-bit mask would leave
/// 15 of 16 slots unused for indirect calls; taking the top bits of a
/// multiplicative hash spreads aligned and unaligned EIPs alike.
pub const HASH_MULT: u32 = 0x9E37_79B1;

/// Default table size: 4096 entries (32 KiB of the monitor region), several
/// times the number of distinct indirect-branch targets hot in a booting
/// kernel, so collisions stay rare.
pub const DEFAULT_BITS: u32 = 12;

/// Bytes per entry.
pub const ENTRY_SIZE: u32 = 8;

/// The slot of `eip` in a table of `1 << bits` entries:
/// `(eip * HASH_MULT mod 2^32) >> (32 - bits)`.
pub fn hash(eip: u32, bits: u32) -> u32 {
    debug_assert!((1..=24).contains(&bits));
    eip.wrapping_mul(HASH_MULT) >> (32 - bits)
}

/// The Rust side of the table: fills it on dispatcher misses, empties it on
/// invalidation and flush.
#[derive(Debug)]
pub struct IndirectTable {
    region: Region,
    bits: u32,
}

impl IndirectTable {
    /// Uses `region` for `1 << bits` entries (1 <= bits <= 24).
    pub fn new(region: Region, bits: u32) -> IndirectTable {
        assert!((1..=24).contains(&bits), "table bits out of range");
        assert!(
            u64::from(region.len()) >= u64::from(ENTRY_SIZE) << bits,
            "region too small for the table"
        );
        let mut t = IndirectTable { region, bits };
        t.clear();
        t
    }

    /// An owned table below 4 GiB of `1 << bits` entries.
    pub fn anonymous(bits: u32) -> io::Result<IndirectTable> {
        Ok(IndirectTable::new(
            Region::anonymous(ENTRY_SIZE << bits, false)?,
            bits,
        ))
    }

    /// Host address of entry 0, the constant the emitter embeds.
    pub fn base(&self) -> u32 {
        self.region.base()
    }

    /// log2 of the number of entries, for the emitter's shift.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        1 << self.bits
    }

    /// Always false: a table has at least two entries.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn read(&self, slot: u32) -> (u32, u32) {
        let at = (slot * ENTRY_SIZE) as usize;
        let b = &self.region.bytes()[at..at + 8];
        (
            u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
        )
    }

    fn write(&mut self, slot: u32, eip: u32, host: u32) {
        let at = (slot * ENTRY_SIZE) as usize;
        let b = &mut self.region.bytes_mut()[at..at + 8];
        b[..4].copy_from_slice(&eip.to_le_bytes());
        b[4..].copy_from_slice(&host.to_le_bytes());
    }

    /// What a probe for `eip` would find, as the emitted code sees it.
    pub fn get(&self, eip: u32) -> Option<u32> {
        let (e, h) = self.read(hash(eip, self.bits));
        (e == eip && e != EMPTY_EIP).then_some(h)
    }

    /// Points `eip` at `host`, replacing whatever shared its slot.
    pub fn insert(&mut self, eip: u32, host: u32) {
        assert_ne!(eip, EMPTY_EIP, "the sentinel is not a guest EIP");
        self.write(hash(eip, self.bits), eip, host);
    }

    /// Empties the slot of a dropped block (guest start `eip`, translation
    /// at `host`) if it still names that block, so a newer translation that
    /// took the slot survives. Returns whether an entry was removed.
    pub fn remove_block(&mut self, eip: u32, host: u32) -> bool {
        let slot = hash(eip, self.bits);
        if self.read(slot) == (eip, host) && eip != EMPTY_EIP {
            self.write(slot, EMPTY_EIP, 0);
            true
        } else {
            false
        }
    }

    /// Empties every entry.
    pub fn clear(&mut self) {
        for slot in 0..self.len() as u32 {
            self.write(slot, EMPTY_EIP, 0);
        }
    }

    /// Entries in use.
    pub fn occupied(&self) -> usize {
        (0..self.len() as u32)
            .filter(|&s| self.read(s).0 != EMPTY_EIP)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_documented_formula() {
        // Values the emitted IMUL/SHR pair must reproduce.
        assert_eq!(hash(0, 12), 0);
        assert_eq!(hash(1, 12), 0x9E3);
        assert_eq!(
            hash(0xC010_0000, 12),
            (0xC010_0000u32.wrapping_mul(0x9E37_79B1)) >> 20
        );
        assert_eq!(hash(0xFFFF_FFFF, 1), 0);
        for eip in [0u32, 1, 0xC000_1234, 0xFFFF_FFFE] {
            assert!(hash(eip, 5) < 32);
        }
    }

    #[test]
    fn aligned_targets_spread_over_the_table() {
        // 1024 16-byte-aligned function entries into 4096 slots: a low-bit
        // mask would use only 256 slots; the multiplicative hash uses most.
        let mut used = std::collections::HashSet::new();
        for i in 0..1024u32 {
            used.insert(hash(0xC010_0000 + i * 16, DEFAULT_BITS));
        }
        assert!(used.len() > 900, "only {} slots used", used.len());
    }

    #[test]
    fn memory_layout_is_u32_pairs() {
        let mut t = IndirectTable::anonymous(4).unwrap();
        assert_eq!(t.len(), 16);
        assert_eq!(t.occupied(), 0);
        // A fresh table holds the sentinel everywhere, not zeros: EIP 0 is a
        // real-mode target and must miss.
        assert_eq!(t.get(0), None);
        t.insert(0xC012_3456, 0xFFC1_0020);
        let slot = hash(0xC012_3456, 4) as usize;
        let raw = &t.region.bytes()[slot * 8..slot * 8 + 8];
        assert_eq!(raw, &[0x56, 0x34, 0x12, 0xC0, 0x20, 0x00, 0xC1, 0xFF]);
        assert_eq!(t.get(0xC012_3456), Some(0xFFC1_0020));
        assert_eq!(t.occupied(), 1);
    }

    #[test]
    fn collisions_replace_and_remove_is_precise() {
        let mut t = IndirectTable::anonymous(4).unwrap();
        let a = 0x1000u32;
        let b = (a + 1..)
            .find(|&e| hash(e, 4) == hash(a, 4))
            .expect("some EIP collides");
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
        let mut t = IndirectTable::anonymous(6).unwrap();
        for i in 0..40 {
            t.insert(0xC000_0000 + i * 7, i);
        }
        assert!(t.occupied() > 0);
        t.clear();
        assert_eq!(t.occupied(), 0);
        assert_eq!(t.get(0xC000_0000), None);
    }

    #[test]
    #[should_panic(expected = "too small")]
    fn undersized_region_is_refused() {
        IndirectTable::new(Region::anonymous(64, false).unwrap(), 4);
    }
}
