//! The translation cache (design.md section 4): where translated guest
//! kernel blocks live, how they are found, chained, invalidated on
//! self-modifying code, evicted when the code buffer is full, and mapped
//! back to guest state.
//!
//! Eviction policy: least recently used, by **chunk**. The code buffer is
//! split into equal chunks ([`code::chunk_size_for`]: 64 KiB for the
//! default 2 MiB buffer, 4 KiB for a 64 KiB one), and blocks are bump
//! allocated inside the chunk being filled. When a block does not fit
//! there, the next chunk comes from the empty ones or, when none is left,
//! from evicting the least recently used chunk with every block in it:
//! each of its blocks is unchained (jumps into it from other chunks go
//! back to their exit stubs), leaves the lookup indexes and the indirect
//! table, and the chunk is refilled with INT3. The order is kept by an
//! `lru::LruCache` of chunk numbers, touched when a block is inserted and
//! when the dispatcher's [`TranslationCache::lookup`] finds one.
//!
//! Why chunks rather than an LRU list of single blocks: evicting one block
//! from a bump-allocated buffer frees a hole that only a free-list
//! allocator could reuse, and blocks of 30 to 2,000 bytes fragment such an
//! allocator until a new block fits nowhere although the sum of the holes
//! would hold it. Chunks free space that is contiguous by construction and
//! cost no allocator at all. The price is coarseness: a chunk also takes
//! its still-hot blocks with it when it is evicted (they are translated
//! again on their next lookup), and a chunk's age is that of its most
//! recently touched block. With 16 or more chunks per buffer that is a
//! small share of the cache per eviction, against the whole cache per
//! flush before.
//!
//! What the LRU order cannot see: a block entered through a chained jump
//! or a hit of the inline indirect-branch probe runs without the monitor
//! knowing, and counting those would cost a store in every block
//! prologue. So "recently used" means "recently found by the dispatcher
//! or translated"; a hot loop that stays chained inside one chunk can
//! look old, be evicted, and come back through one retranslation.
//!
//! [`TranslationCache::flush`] still empties everything at once, for a
//! reset of the machine or a change that invalidates every translation.

pub mod block;
pub mod code;
pub mod lookup;
pub mod stats;

use std::collections::BTreeMap;
use std::{fmt, io};

use lru::LruCache;
use rustc_hash::{FxBuildHasher, FxHashMap};

pub use block::{
    Block, BlockError, BlockId, BlockKey, Context, Exit, GuestPage, InsnMap, NewBlock,
};
pub use code::CodeBuffer;
pub use lookup::IndirectTable;
pub use stats::Stats;

use block::JMP_REL32_LEN;

/// Why [`TranslationCache::insert`] refused a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The current chunk of the code buffer has no room: call
    /// [`TranslationCache::make_room`] and translate again (the code was
    /// emitted for an address that changes).
    Full,
    /// The record does not describe its code.
    Invalid(BlockError),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Full => write!(f, "translation cache full"),
            InsertError::Invalid(e) => write!(f, "invalid block: {e}"),
        }
    }
}

impl std::error::Error for InsertError {}

/// Why [`TranslationCache::chain`] refused a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// One of the blocks is gone.
    NoBlock,
    /// The source block has no such exit.
    NoExit,
    /// The target block does not start at the exit's guest target, or was
    /// translated under another context.
    Mismatch,
}

/// A host PC inside translated code mapped back to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recreated {
    /// The block holding the PC.
    pub block: BlockId,
    /// Guest EIP of the instruction whose translation holds the PC.
    pub guest_eip: u32,
    /// The PC is that translation's first byte, so guest state is exact;
    /// otherwise it is inside a multi-instruction rewrite and delivery must
    /// be deferred to the next boundary.
    pub at_boundary: bool,
}

/// The translation cache: blocks, their indexes, the code buffer and the
/// indirect-branch table, kept consistent with one another.
#[derive(Debug)]
pub struct TranslationCache {
    code: CodeBuffer,
    table: IndirectTable,
    /// Context of the entries now in `table`: emitted probes compare only
    /// the EIP, so the table holds translations of one context at a time.
    table_ctx: Option<Context>,
    next_id: u64,
    // Fx hashing: these are looked up at every exit, and SipHash was 4%
    // of a loop of port I/O callouts. A guest that picks colliding EIPs or
    // pages only slows its own lookups.
    blocks: FxHashMap<BlockId, Block>,
    by_key: FxHashMap<BlockKey, BlockId>,
    by_page: FxHashMap<GuestPage, Vec<BlockId>>,
    /// Block start offset in the code buffer -> block, for recreate and
    /// for finding the blocks of a chunk.
    by_host: BTreeMap<u32, BlockId>,
    /// Chunks holding blocks, least recently used first out.
    lru: LruCache<u32, (), FxBuildHasher>,
    /// Guest pages whose last block was evicted or flushed since the last
    /// [`Self::take_orphaned_pages`].
    orphans: Vec<GuestPage>,
    stats: Stats,
}

impl TranslationCache {
    /// A cache over `code` with indirect-branch table `table`.
    pub fn new(mut code: CodeBuffer, mut table: IndirectTable) -> TranslationCache {
        code.reset();
        table.clear();
        TranslationCache {
            code,
            table,
            table_ctx: None,
            next_id: 0,
            blocks: FxHashMap::default(),
            by_key: FxHashMap::default(),
            by_page: FxHashMap::default(),
            by_host: BTreeMap::new(),
            lru: LruCache::unbounded_with_hasher(FxBuildHasher),
            orphans: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// A cache over owned anonymous memory, for tests and tools; probes of
    /// empty table entries go to host address `miss`.
    pub fn anonymous(tc_size: u32, miss: u32) -> io::Result<TranslationCache> {
        Ok(TranslationCache::new(
            CodeBuffer::anonymous(tc_size)?,
            IndirectTable::anonymous(miss)?,
        ))
    }

    /// The code buffer.
    pub fn code(&self) -> &CodeBuffer {
        &self.code
    }

    /// The indirect-branch table.
    pub fn table(&self) -> &IndirectTable {
        &self.table
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is live.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The block named `id`, if still live.
    pub fn block(&self, id: BlockId) -> Option<&Block> {
        self.blocks.get(&id)
    }

    /// Host address of block `id`'s first translated byte.
    pub fn host_addr(&self, id: BlockId) -> Option<u32> {
        self.blocks.get(&id).map(|b| self.code.addr(b.host_offset))
    }

    /// Host address where the next inserted block will start; the emitter
    /// encodes its relative branches against it.
    pub fn next_host_addr(&self) -> u32 {
        self.code.addr(self.code.next_offset())
    }

    /// Finds the translation of guest linear `eip` made under `ctx`, and
    /// marks its chunk as recently used.
    pub fn lookup(&mut self, eip: u32, ctx: Context) -> Option<BlockId> {
        self.stats.lookups += 1;
        let found = self.by_key.get(&BlockKey { eip, ctx }).copied();
        if let Some(id) = found {
            self.stats.hits += 1;
            let chunk = self.code.chunk_of(self.blocks[&id].host_offset);
            self.lru.promote(&chunk);
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// Makes room for a block of `len` translated bytes: if it does not fit
    /// in the current chunk, moves on to an empty chunk or, when there is
    /// none, evicts the least recently used one. Returns whether
    /// [`Self::next_host_addr`] changed (then emit the block again for it).
    /// A block larger than a chunk never fits; [`Self::insert`] refuses it.
    pub fn make_room(&mut self, len: u32) -> bool {
        if self.code.fits(len) || !self.code.fits_any_chunk(len) {
            return false;
        }
        let chunk = match self.code.empty_chunk() {
            Some(c) => c,
            None => match self.lru.pop_lru() {
                Some((c, ())) => {
                    self.evict_chunk(c);
                    c
                }
                // Every chunk but the current one is empty yet none was
                // found: only the current chunk exists. Start it afresh.
                None => {
                    let c = self.code.current();
                    self.evict_chunk(c);
                    c
                }
            },
        };
        self.code.open(chunk);
        true
    }

    /// Drops every block of code-buffer chunk `chunk` (unchaining jumps
    /// into them) and empties it.
    fn evict_chunk(&mut self, chunk: u32) {
        let (start, end) = self.code.chunk_range(chunk);
        let ids: Vec<BlockId> = self.by_host.range(start..end).map(|(_, &id)| id).collect();
        for &id in &ids {
            self.drop_block(id, true);
        }
        self.lru.pop(&chunk);
        self.code.clear_chunk(chunk);
        self.stats.evictions += 1;
        self.stats.evicted_blocks += ids.len() as u64;
    }

    /// Guest pages that lost their last block to an eviction or a flush
    /// since the last call: a write there is no self-modifying code any
    /// more, so the engine may stop write-protecting them.
    pub fn take_orphaned_pages(&mut self) -> Vec<GuestPage> {
        let mut pages = std::mem::take(&mut self.orphans);
        pages.retain(|p| !self.by_page.contains_key(p));
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Stores `code`, emitted for [`Self::next_host_addr`], with its record.
    /// A live block with the same key is replaced.
    pub fn insert(&mut self, nb: NewBlock, code: &[u8]) -> Result<BlockId, InsertError> {
        let exits = nb.validate(code).map_err(InsertError::Invalid)?;
        let len = u32::try_from(code.len()).map_err(|_| InsertError::Full)?;
        if !self.code.fits(len) {
            return Err(InsertError::Full);
        }
        if let Some(&old) = self.by_key.get(&nb.key) {
            self.drop_block(old, false);
        }
        let at = self.code.append(code).ok_or(InsertError::Full)?;
        self.lru.put(self.code.chunk_of(at), ());
        let id = BlockId(self.next_id);
        self.next_id += 1;
        self.stats.blocks_translated += 1;
        self.stats.guest_insns_translated += nb.insns.len() as u64;
        let block = Block::place(nb, exits, at, len);
        self.by_key.insert(block.key, id);
        self.by_page.entry(block.page).or_default().push(id);
        if let Some(spill) = block.spill {
            self.by_page.entry(spill).or_default().push(id);
        }
        self.by_host.insert(at, id);
        self.blocks.insert(id, block);
        Ok(id)
    }

    /// Patches exit `exit` of `from` to jump straight into `to`.
    pub fn chain(&mut self, from: BlockId, exit: usize, to: BlockId) -> Result<(), ChainError> {
        let target = self.blocks.get(&to).ok_or(ChainError::NoBlock)?;
        let (to_key, to_off) = (target.key, target.host_offset);
        let src = self.blocks.get(&from).ok_or(ChainError::NoBlock)?;
        let e = *src.exits.get(exit).ok_or(ChainError::NoExit)?;
        if e.target_eip != to_key.eip || src.key.ctx != to_key.ctx {
            return Err(ChainError::Mismatch);
        }
        if e.chained_to == Some(to) {
            return Ok(());
        }
        let jump_at = src.host_offset + e.jump_offset;
        if e.chained_to.is_some() {
            self.unchain(from, exit);
        }
        let rel = to_off.wrapping_sub(jump_at + JMP_REL32_LEN) as i32;
        self.code.patch(jump_at + 1, &rel.to_le_bytes());
        self.blocks.get_mut(&from).expect("checked").exits[exit].chained_to = Some(to);
        self.blocks
            .get_mut(&to)
            .expect("checked")
            .incoming
            .push((from, exit));
        self.stats.chained_jumps += 1;
        Ok(())
    }

    /// Points exit `exit` of `from` back at its exit stub; returns whether
    /// it was chained.
    pub fn unchain(&mut self, from: BlockId, exit: usize) -> bool {
        let Some(src) = self.blocks.get_mut(&from) else {
            return false;
        };
        let Some(e) = src.exits.get_mut(exit) else {
            return false;
        };
        let Some(to) = e.chained_to.take() else {
            return false;
        };
        let jump_at = src.host_offset + e.jump_offset;
        let stub = e.stub_rel32;
        self.code.patch(jump_at + 1, &stub.to_le_bytes());
        if let Some(t) = self.blocks.get_mut(&to) {
            t.incoming.retain(|&link| link != (from, exit));
        }
        self.stats.unchained_jumps += 1;
        true
    }

    /// Drops every block translated from guest physical page `page` (the
    /// guest wrote to it) and unchains jumps into them; returns how many.
    pub fn invalidate_page(&mut self, page: GuestPage) -> usize {
        let ids = self.by_page.remove(&page).unwrap_or_default();
        for &id in &ids {
            self.drop_block(id, false);
        }
        if !ids.is_empty() {
            self.stats.smc_invalidations += 1;
            self.stats.smc_blocks += ids.len() as u64;
        }
        ids.len()
    }

    /// Readies the indirect-branch table for translated code of `ctx`
    /// about to run: probes compare only EIPs, so entries of another
    /// context (another CPL, CS base, code size or paging mode) must go
    /// first, or a RET at CPL 1 could land in a translation made for
    /// CPL 0. Single-step code never probes the table and keeps it.
    pub fn enter(&mut self, ctx: Context) {
        if !ctx.step && self.table_ctx.is_some_and(|t| t != ctx) {
            self.table.clear();
            self.table_ctx = None;
        }
    }

    /// Publishes block `id` in the indirect-branch table, after the
    /// dispatcher resolved an indirect-branch miss to it. Entries of another
    /// context are dropped first, since probes cannot tell contexts apart.
    pub fn publish_indirect(&mut self, id: BlockId) -> bool {
        let Some(b) = self.blocks.get(&id) else {
            return false;
        };
        let (key, addr) = (b.key, self.code.addr(b.host_offset));
        if self.table_ctx != Some(key.ctx) {
            self.table.clear();
            self.table_ctx = Some(key.ctx);
        }
        self.table.insert(key.eip, addr);
        true
    }

    /// Drops every block and empties the code buffer and the table (for a
    /// machine reset, or anything that invalidates every translation).
    pub fn flush(&mut self) {
        self.stats.flushes += 1;
        self.stats.evicted_blocks += self.blocks.len() as u64;
        self.orphans.extend(self.by_page.keys().copied());
        self.blocks.clear();
        self.by_key.clear();
        self.by_page.clear();
        self.by_host.clear();
        self.lru.clear();
        self.code.reset();
        self.table.clear();
        self.table_ctx = None;
    }

    /// Maps host PC `host_pc` inside translated code to its block and guest
    /// instruction; `None` outside every live block (padding, stubs, dropped
    /// code). The cache's part of recreating guest state after a signal;
    /// the engine's exits room (`engine::exits::recreate`) does the rest.
    pub fn recreate(&self, host_pc: u32) -> Option<Recreated> {
        let off = self.code.offset_of(host_pc)?;
        let (_, &id) = self.by_host.range(..=off).next_back()?;
        let (guest_eip, at_boundary) = self.blocks[&id].guest_at(off)?;
        Some(Recreated {
            block: id,
            guest_eip,
            at_boundary,
        })
    }

    /// Whether host PC `host_pc` is a vector gate of live translated code
    /// ([`crate::translate::emit::Emitter::vector_gate`]).
    pub fn is_vector_gate(&self, host_pc: u32) -> bool {
        use crate::translate::emit::VECTOR_GATE;
        self.code.offset_of(host_pc).is_some_and(|off| {
            self.code.get(off, VECTOR_GATE.len() as u32) == Some(&VECTOR_GATE[..])
        })
    }

    /// The context block `id` was translated under, if it is live.
    pub fn context_of(&self, id: BlockId) -> Option<Context> {
        self.blocks.get(&id).map(|b| b.key.ctx)
    }

    /// The live block and exit whose `jmp rel32` starts at host address
    /// `jump` (where a chainable exit's stub says it came from); `None` if
    /// no live block holds that jump any more.
    pub fn exit_at(&self, jump: u32) -> Option<(BlockId, usize)> {
        let off = self.code.offset_of(jump)?;
        let (_, &id) = self.by_host.range(..=off).next_back()?;
        let b = &self.blocks[&id];
        if !b.contains_host(off) {
            return None;
        }
        let rel = off - b.host_offset;
        let exit = b.exits.iter().position(|e| e.jump_offset == rel)?;
        Some((id, exit))
    }

    /// Drops block `id` (a one-off translation, such as a single-step
    /// block, that must not be found again).
    pub fn discard(&mut self, id: BlockId) {
        self.drop_block(id, false);
    }

    /// Whether any live block was translated from guest page `page`.
    pub fn has_page(&self, page: GuestPage) -> bool {
        self.by_page.contains_key(&page)
    }

    /// Removes `id` from every index and undoes links in both directions.
    /// Its bytes stay in the buffer until its chunk is evicted (the vCPU
    /// may be returning through them to the monitor); nothing reaches them
    /// any more. `evicted` records pages left without blocks as orphans.
    fn drop_block(&mut self, id: BlockId, evicted: bool) {
        let incoming = match self.blocks.get(&id) {
            Some(b) => b.incoming.clone(),
            None => return,
        };
        for (from, exit) in incoming {
            self.unchain(from, exit);
        }
        let b = self.blocks.remove(&id).expect("checked");
        for e in &b.exits {
            if let Some(t) = e.chained_to.and_then(|to| self.blocks.get_mut(&to)) {
                t.incoming.retain(|&(from, _)| from != id);
            }
        }
        if self.by_key.get(&b.key) == Some(&id) {
            self.by_key.remove(&b.key);
        }
        for page in std::iter::once(b.page).chain(b.spill) {
            if let Some(list) = self.by_page.get_mut(&page) {
                list.retain(|&x| x != id);
                if list.is_empty() {
                    self.by_page.remove(&page);
                    if evicted {
                        self.orphans.push(page);
                    }
                }
            }
        }
        self.by_host.remove(&b.host_offset);
        if self.table_ctx == Some(b.key.ctx) {
            self.table
                .remove_block(b.key.eip, self.code.addr(b.host_offset));
        }
    }
}

#[cfg(test)]
mod tests;
