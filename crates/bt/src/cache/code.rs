//! The code buffer: one fixed-size region that translations are carved out
//! of by bump allocation, reset as a whole when the cache is flushed.

use std::io;

use super::region::Region;

/// Default `--tc-size`: 2 MiB.
///
/// The buffer has to fit in the monitor region, which design.md fixes at the
/// top 4 MiB of the 32-bit space (0xFFC00000..) and which also holds the vCPU
/// area, exit stubs and the indirect-branch table, so 16 MiB is not an
/// option there. 2 MiB is still ample: the kernel text Linux executes while
/// booting to a shell is well under 1 MiB of distinct code, translated code
/// grows it by roughly 1.2-2x (copied instructions plus exit stubs), and
/// VMware's monitor worked with a translation cache of a few hundred KiB to a
/// few MiB. If a workload thrashes, the flush counter says so and `--tc-size`
/// can trade the remaining monitor space for it.
pub const DEFAULT_TC_SIZE: u32 = 2 << 20;

/// Every block starts on this boundary: a 16-byte aligned branch target
/// fetches a full decode line, and the padding costs ~8 bytes a block.
pub const BLOCK_ALIGN: u32 = 16;

/// The byte unused space is filled with: INT3, so a stale jump into flushed
/// or padding space traps instead of running leftovers.
pub const FILL: u8 = 0xCC;

/// A bump-allocated buffer of translated code at a 32-bit host address.
#[derive(Debug)]
pub struct CodeBuffer {
    region: Region,
    used: u32,
}

impl CodeBuffer {
    /// Uses `region` (mapped by the monitor, or owned) as the buffer.
    pub fn new(mut region: Region) -> CodeBuffer {
        region.bytes_mut().fill(FILL);
        CodeBuffer { region, used: 0 }
    }

    /// An owned anonymous buffer of `len` bytes below 4 GiB, for tests and
    /// tools that only store translations.
    pub fn anonymous(len: u32) -> io::Result<CodeBuffer> {
        Ok(CodeBuffer::new(Region::anonymous(len, true)?))
    }

    /// Host address of offset 0.
    pub fn base(&self) -> u32 {
        self.region.base()
    }

    /// Total size in bytes.
    pub fn capacity(&self) -> u32 {
        self.region.len()
    }

    /// Bytes handed out so far, padding included.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Where the next block will start: emitters need it before emitting,
    /// because branches out of a block are encoded relative to its address.
    pub fn next_offset(&self) -> u32 {
        self.used.next_multiple_of(BLOCK_ALIGN).min(self.capacity())
    }

    /// Whether a block of `len` bytes still fits.
    pub fn fits(&self, len: u32) -> bool {
        u64::from(self.next_offset()) + u64::from(len) <= u64::from(self.capacity())
    }

    /// Copies `code` in at [`Self::next_offset`] and returns that offset, or
    /// `None` when it does not fit (the caller flushes and retranslates).
    pub fn append(&mut self, code: &[u8]) -> Option<u32> {
        let len = u32::try_from(code.len()).ok()?;
        if !self.fits(len) {
            return None;
        }
        let at = self.next_offset();
        self.region.bytes_mut()[at as usize..(at + len) as usize].copy_from_slice(code);
        self.used = at + len;
        Some(at)
    }

    /// The `len` bytes at `offset`.
    pub fn bytes(&self, offset: u32, len: u32) -> &[u8] {
        assert!(offset + len <= self.used, "read past the used part");
        &self.region.bytes()[offset as usize..(offset + len) as usize]
    }

    /// Overwrites already-emitted bytes, as chaining does to a jump.
    pub fn patch(&mut self, offset: u32, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        assert!(end <= self.used as usize, "patch past the used part");
        self.region.bytes_mut()[offset as usize..end].copy_from_slice(bytes);
    }

    /// Host address of `offset`.
    pub fn addr(&self, offset: u32) -> u32 {
        debug_assert!(offset <= self.capacity());
        self.base() + offset
    }

    /// The offset of host address `addr`, if it lies in the used part.
    pub fn offset_of(&self, addr: u32) -> Option<u32> {
        let off = addr.checked_sub(self.base())?;
        (off < self.used).then_some(off)
    }

    /// Forgets every block and refills the used part with INT3.
    pub fn reset(&mut self) {
        let used = self.used as usize;
        self.region.bytes_mut()[..used].fill(FILL);
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_size_fits_the_monitor_region_with_room_to_spare() {
        let monitor_region = 4u32 << 20;
        assert!(DEFAULT_TC_SIZE <= monitor_region / 2);
    }

    #[test]
    fn appends_are_aligned_and_contiguous() {
        let mut cb = CodeBuffer::anonymous(4096).unwrap();
        assert_eq!(cb.append(&[1, 2, 3]), Some(0));
        assert_eq!(cb.used(), 3);
        assert_eq!(cb.next_offset(), 16);
        assert_eq!(cb.append(&[4; 20]), Some(16));
        assert_eq!(cb.append(&[5]), Some(48));
        assert_eq!(cb.bytes(0, 3), &[1, 2, 3]);
        assert_eq!(cb.bytes(16, 20), &[4; 20]);
        // Padding between blocks traps.
        assert_eq!(cb.bytes(3, 13), &[FILL; 13]);
        assert_eq!(cb.addr(48), cb.base() + 48);
    }

    #[test]
    fn full_buffer_refuses_and_keeps_its_contents() {
        let mut cb = CodeBuffer::anonymous(64).unwrap();
        assert_eq!(cb.append(&[7; 40]), Some(0));
        assert!(!cb.fits(17));
        assert_eq!(cb.append(&[8; 17]), None);
        assert_eq!(cb.used(), 40);
        assert_eq!(cb.append(&[9; 16]), Some(48));
        assert_eq!(cb.next_offset(), 64);
        assert_eq!(cb.append(&[1]), None);
        assert_eq!(cb.append(&[]), Some(64));
    }

    #[test]
    fn reset_empties_and_refills_with_int3() {
        let mut cb = CodeBuffer::anonymous(128).unwrap();
        cb.append(&[0x90; 100]).unwrap();
        cb.reset();
        assert_eq!(cb.used(), 0);
        assert_eq!(cb.next_offset(), 0);
        assert_eq!(cb.append(&[0xC3]), Some(0));
        assert_eq!(cb.bytes(0, 1), &[0xC3]);
        assert!(cb.region.bytes()[1..].iter().all(|&b| b == FILL));
    }

    #[test]
    fn patch_and_offset_of() {
        let mut cb = CodeBuffer::anonymous(128).unwrap();
        cb.append(&[0xE9, 0, 0, 0, 0]).unwrap();
        cb.patch(1, &[1, 2, 3, 4]);
        assert_eq!(cb.bytes(0, 5), &[0xE9, 1, 2, 3, 4]);
        assert_eq!(cb.offset_of(cb.base() + 4), Some(4));
        assert_eq!(cb.offset_of(cb.base() + 5), None);
        assert_eq!(cb.offset_of(cb.base().wrapping_sub(1)), None);
    }

    #[test]
    #[should_panic(expected = "patch past")]
    fn patch_outside_used_part_panics() {
        let mut cb = CodeBuffer::anonymous(128).unwrap();
        cb.append(&[0; 4]).unwrap();
        cb.patch(2, &[0; 4]);
    }

    #[test]
    fn borrowed_region_works_as_a_buffer() {
        let owner = Region::anonymous(4096, false).unwrap();
        // SAFETY: `owner` outlives the buffer and nothing else views it.
        let mut cb = CodeBuffer::new(unsafe { Region::from_raw(owner.base(), 4096) });
        assert_eq!(cb.base(), owner.base());
        cb.append(&[0x90]).unwrap();
        drop(cb);
        assert_eq!(owner.bytes()[0], 0x90);
        assert_eq!(owner.bytes()[1], FILL);
    }
}
