//! The code buffer: one fixed-size region split into equal chunks. Blocks
//! are bump-allocated inside the chunk being filled; the cache evicts a
//! whole chunk at a time (see the [`super`] module doc for why), after
//! which the chunk is refilled from its start.

use std::io;

use crate::monitor::region::Region;

/// Default `--tc-size`: 2 MiB.
///
/// The buffer has to fit in the monitor region, which design.md fixes at the
/// top 4 MiB of the 32-bit space (0xFFC00000..) and which also holds the vCPU
/// area, exit stubs and the indirect-branch table, so 16 MiB is not an
/// option there. 2 MiB is still ample: the kernel text Linux executes while
/// booting to a shell is well under 1 MiB of distinct code, translated code
/// grows it by roughly 1.2-2x (copied instructions plus exit stubs), and
/// VMware's monitor worked with a translation cache of a few hundred KiB to a
/// few MiB. If a workload thrashes, the eviction counters say so and
/// `--tc-size` can trade the remaining monitor space for it.
pub const DEFAULT_TC_SIZE: u32 = 2 << 20;

/// Every block starts on this boundary: a 16-byte aligned branch target
/// fetches a full decode line, and the padding costs ~8 bytes a block.
pub const BLOCK_ALIGN: u32 = 16;

/// The byte unused space is filled with: INT3, so a stale jump into evicted
/// or padding space traps instead of running leftovers.
pub const FILL: u8 = 0xCC;

/// Largest chunk: 64 KiB holds a few hundred typical blocks, so one
/// eviction throws away little of a 2 MiB cache (1/32).
pub const MAX_CHUNK: u32 = 64 << 10;

/// Smallest chunk (unless the whole buffer is smaller): it must hold the
/// largest block the translator emits ([`crate::translate::MAX_BLOCK_BYTES`]
/// plus its exit stubs).
pub const MIN_CHUNK: u32 = 4 << 10;

/// Chunks a buffer is split into when that keeps them within
/// [`MIN_CHUNK`]..=[`MAX_CHUNK`]: enough that evicting one keeps most of a
/// small cache.
pub const TARGET_CHUNKS: u32 = 16;

/// The chunk size [`CodeBuffer::new`] picks for a buffer of `capacity`
/// bytes: a power of two near `capacity / TARGET_CHUNKS`, clamped to
/// [`MIN_CHUNK`]..=[`MAX_CHUNK`], and never more than the buffer.
pub fn chunk_size_for(capacity: u32) -> u32 {
    let want = (capacity / TARGET_CHUNKS).max(1);
    let pow2 = 1u32 << (31 - want.leading_zeros());
    pow2.clamp(MIN_CHUNK, MAX_CHUNK).min(capacity)
}

/// A buffer of translated code at a 32-bit host address, allocated chunk by
/// chunk.
#[derive(Debug)]
pub struct CodeBuffer {
    region: Region,
    chunk_size: u32,
    /// Bytes handed out in each chunk, padding included.
    used: Vec<u32>,
    /// The chunk new blocks go into.
    current: u32,
}

impl CodeBuffer {
    /// Uses `region` (mapped by the monitor, or owned) as the buffer, in
    /// chunks of [`chunk_size_for`] its length.
    pub fn new(region: Region) -> CodeBuffer {
        let chunk = chunk_size_for(region.len());
        CodeBuffer::with_chunk_size(region, chunk)
    }

    /// Uses `region` as the buffer, in chunks of `chunk_size` bytes (a
    /// multiple of [`BLOCK_ALIGN`]; the last chunk may be shorter).
    pub fn with_chunk_size(mut region: Region, chunk_size: u32) -> CodeBuffer {
        assert!(
            chunk_size > 0 && chunk_size.is_multiple_of(BLOCK_ALIGN) || chunk_size == region.len(),
            "chunk size {chunk_size} is not a multiple of {BLOCK_ALIGN}"
        );
        region.bytes_mut().fill(FILL);
        let chunks = region.len().div_ceil(chunk_size);
        CodeBuffer {
            region,
            chunk_size,
            used: vec![0; chunks as usize],
            current: 0,
        }
    }

    /// An owned anonymous buffer of `len` bytes below 4 GiB, for tests and
    /// tools that only store translations.
    pub fn anonymous(len: u32) -> io::Result<CodeBuffer> {
        Ok(CodeBuffer::new(Region::anonymous(len, true)?))
    }

    /// Like [`Self::anonymous`], with chunks of `chunk_size` bytes.
    pub fn anonymous_chunked(len: u32, chunk_size: u32) -> io::Result<CodeBuffer> {
        Ok(CodeBuffer::with_chunk_size(
            Region::anonymous(len, true)?,
            chunk_size,
        ))
    }

    /// Host address of offset 0.
    pub fn base(&self) -> u32 {
        self.region.base()
    }

    /// Total size in bytes.
    pub fn capacity(&self) -> u32 {
        self.region.len()
    }

    /// Size of a chunk (the last one may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        self.used.len() as u32
    }

    /// The chunk holding buffer offset `offset`.
    pub fn chunk_of(&self, offset: u32) -> u32 {
        offset / self.chunk_size
    }

    /// Buffer offsets `[start, end)` of chunk `chunk`.
    pub fn chunk_range(&self, chunk: u32) -> (u32, u32) {
        let start = chunk * self.chunk_size;
        (start, (start + self.chunk_size).min(self.capacity()))
    }

    /// The chunk new blocks go into.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Bytes handed out so far over all chunks, padding included.
    pub fn used(&self) -> u32 {
        self.used.iter().sum()
    }

    /// Where the next block will start: emitters need it before emitting,
    /// because branches out of a block are encoded relative to its address.
    pub fn next_offset(&self) -> u32 {
        let (start, end) = self.chunk_range(self.current);
        let used = self.used[self.current as usize];
        (start + used.next_multiple_of(BLOCK_ALIGN)).min(end)
    }

    /// Whether a block of `len` bytes still fits in the current chunk.
    pub fn fits(&self, len: u32) -> bool {
        let (_, end) = self.chunk_range(self.current);
        u64::from(self.next_offset()) + u64::from(len) <= u64::from(end)
    }

    /// Whether a block of `len` bytes fits in an empty chunk (else it can
    /// never be stored).
    pub fn fits_any_chunk(&self, len: u32) -> bool {
        len <= self.chunk_size.min(self.capacity())
    }

    /// A chunk other than the current one that holds nothing.
    pub fn empty_chunk(&self) -> Option<u32> {
        (0..self.chunks()).find(|&c| c != self.current && self.used[c as usize] == 0)
    }

    /// Makes chunk `chunk` the one new blocks go into.
    pub fn open(&mut self, chunk: u32) {
        assert!(chunk < self.chunks(), "no chunk {chunk}");
        self.current = chunk;
    }

    /// Copies `code` in at [`Self::next_offset`] and returns that offset, or
    /// `None` when it does not fit in the current chunk (the caller makes
    /// room and retranslates).
    pub fn append(&mut self, code: &[u8]) -> Option<u32> {
        let len = u32::try_from(code.len()).ok()?;
        if !self.fits(len) {
            return None;
        }
        let at = self.next_offset();
        self.region.bytes_mut()[at as usize..(at + len) as usize].copy_from_slice(code);
        let (start, _) = self.chunk_range(self.current);
        self.used[self.current as usize] = at + len - start;
        Some(at)
    }

    /// Whether `[offset, offset+len)` lies in the used part of one chunk.
    fn in_used(&self, offset: u32, len: u32) -> bool {
        let chunk = self.chunk_of(offset);
        if chunk >= self.chunks() {
            return false;
        }
        let (start, _) = self.chunk_range(chunk);
        u64::from(offset) + u64::from(len) <= u64::from(start + self.used[chunk as usize])
    }

    /// The `len` bytes at `offset`, if they are in the used part of a
    /// chunk.
    pub fn get(&self, offset: u32, len: u32) -> Option<&[u8]> {
        self.in_used(offset, len)
            .then(|| &self.region.bytes()[offset as usize..(offset + len) as usize])
    }

    /// The `len` bytes at `offset`.
    pub fn bytes(&self, offset: u32, len: u32) -> &[u8] {
        assert!(self.in_used(offset, len), "read past the used part");
        &self.region.bytes()[offset as usize..(offset + len) as usize]
    }

    /// Overwrites already-emitted bytes, as chaining does to a jump.
    pub fn patch(&mut self, offset: u32, bytes: &[u8]) {
        assert!(
            self.in_used(offset, bytes.len() as u32),
            "patch past the used part"
        );
        let end = offset as usize + bytes.len();
        self.region.bytes_mut()[offset as usize..end].copy_from_slice(bytes);
    }

    /// Host address of `offset`.
    pub fn addr(&self, offset: u32) -> u32 {
        debug_assert!(offset <= self.capacity());
        self.base() + offset
    }

    /// The offset of host address `addr`, if it lies in the used part of
    /// a chunk.
    pub fn offset_of(&self, addr: u32) -> Option<u32> {
        let off = addr.checked_sub(self.base())?;
        (off < self.capacity() && self.in_used(off, 1)).then_some(off)
    }

    /// Empties chunk `chunk` and refills it with INT3, so a jump that still
    /// led there would trap rather than run what a newer block left.
    pub fn clear_chunk(&mut self, chunk: u32) {
        let (start, _) = self.chunk_range(chunk);
        let used = self.used[chunk as usize];
        self.region.bytes_mut()[start as usize..(start + used) as usize].fill(FILL);
        self.used[chunk as usize] = 0;
    }

    /// Forgets every block, refills the used parts with INT3 and starts
    /// again at chunk 0.
    pub fn reset(&mut self) {
        for c in 0..self.chunks() {
            self.clear_chunk(c);
        }
        self.current = 0;
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
    fn chunk_sizes_scale_with_the_buffer() {
        assert_eq!(chunk_size_for(DEFAULT_TC_SIZE), MAX_CHUNK);
        assert_eq!(chunk_size_for(3 << 20), MAX_CHUNK);
        assert_eq!(chunk_size_for(64 << 10), MIN_CHUNK);
        assert_eq!(chunk_size_for(512 << 10), 32 << 10);
        assert_eq!(chunk_size_for(4096), 4096);
        assert_eq!(chunk_size_for(64), 64, "never larger than the buffer");
        let cb = CodeBuffer::anonymous(64 << 10).unwrap();
        assert_eq!((cb.chunk_size(), cb.chunks()), (4096, 16));
    }

    #[test]
    fn blocks_stay_inside_their_chunk() {
        let mut cb = CodeBuffer::anonymous_chunked(4096, 1024).unwrap();
        assert_eq!(cb.chunks(), 4);
        assert_eq!(cb.append(&[1; 1000]), Some(0));
        // 1008 + 32 would run into chunk 1.
        assert!(!cb.fits(32));
        assert_eq!(cb.append(&[2; 32]), None);
        assert!(cb.fits_any_chunk(1024) && !cb.fits_any_chunk(1025));
        assert_eq!(cb.empty_chunk(), Some(1));
        cb.open(1);
        assert_eq!(cb.next_offset(), 1024);
        assert_eq!(cb.append(&[2; 32]), Some(1024));
        assert_eq!(cb.used(), 1032);
        assert_eq!(cb.chunk_of(1055), 1);
        assert_eq!(cb.chunk_range(3), (3072, 4096));
        // Only the used part of each chunk is "in" the buffer.
        assert_eq!(cb.offset_of(cb.base() + 999), Some(999));
        assert_eq!(cb.offset_of(cb.base() + 1000), None);
        assert_eq!(cb.offset_of(cb.base() + 1055), Some(1055));
        assert_eq!(cb.offset_of(cb.base() + 1056), None);
        // Clearing a chunk frees it and leaves INT3 behind.
        cb.clear_chunk(0);
        assert_eq!(cb.empty_chunk(), Some(0));
        assert!(cb.region.bytes()[..1024].iter().all(|&b| b == FILL));
        assert_eq!(cb.bytes(1024, 4), &[2; 4]);
        cb.reset();
        assert_eq!((cb.used(), cb.current(), cb.next_offset()), (0, 0, 0));
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
