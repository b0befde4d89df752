//! Tests of the translation cache's indexes, chaining and invalidation.

use super::block::{InsnMap, JMP_REL32};
use super::*;

const CTX: Context = Context {
    cs_base: 0,
    cpl: 0,
    code32: true,
    paging: true,
    step: false,
};

/// Stub displacement every test exit starts with.
const STUB: i32 = 0x1234;

/// A block at `eip` on physical page `page`: `n` one-byte guest NOPs copied
/// as NOPs, then one `jmp rel32` exit per target.
fn block(eip: u32, page: u32, n: u32, targets: &[u32]) -> (NewBlock, Vec<u8>) {
    let mut code = vec![0x90; n as usize];
    let insns = (0..n)
        .map(|i| InsnMap {
            guest_eip: eip + i,
            host_offset: i,
        })
        .collect();
    let mut exits = Vec::new();
    for &t in targets {
        exits.push((t, code.len() as u32));
        code.push(JMP_REL32);
        code.extend_from_slice(&STUB.to_le_bytes());
    }
    let nb = NewBlock {
        key: BlockKey { eip, ctx: CTX },
        page: GuestPage(page),
        spill: None,
        guest_len: n,
        insns,
        exits,
    };
    (nb, code)
}

fn cache() -> TranslationCache {
    TranslationCache::anonymous(4096, 0x4000).unwrap()
}

fn add(tc: &mut TranslationCache, eip: u32, targets: &[u32]) -> BlockId {
    let (nb, code) = block(eip, eip >> 12, 3, targets);
    tc.insert(nb, &code).unwrap()
}

/// The displacement now in exit `exit` of `id`.
fn rel32(tc: &TranslationCache, id: BlockId, exit: usize) -> i32 {
    let b = tc.block(id).unwrap();
    let at = b.host_offset + b.exits()[exit].jump_offset;
    let bytes = tc.code().bytes(at, 5);
    assert_eq!(bytes[0], JMP_REL32);
    i32::from_le_bytes(bytes[1..].try_into().unwrap())
}

#[test]
fn lookup_counts_hits_and_misses_and_separates_contexts() {
    let mut tc = cache();
    assert_eq!(tc.lookup(0x1000, CTX), None);
    let id = add(&mut tc, 0x1000, &[]);
    assert_eq!(tc.lookup(0x1000, CTX), Some(id));
    // Same EIP under other assumptions must miss.
    for other in [
        Context {
            cs_base: 0x10,
            ..CTX
        },
        Context { cpl: 3, ..CTX },
        Context {
            code32: false,
            ..CTX
        },
        Context {
            paging: false,
            ..CTX
        },
    ] {
        assert_eq!(tc.lookup(0x1000, other), None);
    }
    let s = tc.stats();
    assert_eq!((s.lookups, s.hits, s.misses), (6, 1, 5));
    assert_eq!((s.blocks_translated, s.guest_insns_translated), (1, 3));
}

#[test]
fn insert_places_code_and_rejects_bad_records() {
    let mut tc = cache();
    let start = tc.next_host_addr();
    let id = add(&mut tc, 0x1000, &[0x2000]);
    assert_eq!(tc.host_addr(id), Some(start));
    assert_eq!(tc.code().bytes(0, 4), &[0x90, 0x90, 0x90, JMP_REL32]);
    let (mut nb, code) = block(0x3000, 3, 2, &[]);
    nb.insns[1].guest_eip = 0x3000;
    assert_eq!(
        tc.insert(nb, &code),
        Err(InsertError::Invalid(BlockError::NotMonotonic(1)))
    );
    assert_eq!(tc.len(), 1);
}

#[test]
fn chain_patches_the_jump_and_unchain_restores_the_stub() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x2000, 0x3000]);
    let b = add(&mut tc, 0x2000, &[]);
    tc.chain(a, 0, b).unwrap();
    let jump_end = tc.host_addr(a).unwrap() + 3 + 5;
    let expect = tc.host_addr(b).unwrap().wrapping_sub(jump_end) as i32;
    assert_eq!(rel32(&tc, a, 0), expect);
    assert_eq!(rel32(&tc, a, 1), STUB, "the other exit is untouched");
    assert_eq!(tc.block(a).unwrap().exits()[0].chained_to(), Some(b));
    assert_eq!(tc.block(b).unwrap().incoming(), &[(a, 0)]);

    assert!(tc.unchain(a, 0));
    assert!(!tc.unchain(a, 0), "already unchained");
    assert_eq!(rel32(&tc, a, 0), STUB);
    assert!(tc.block(b).unwrap().incoming().is_empty());
    assert_eq!(
        (tc.stats().chained_jumps, tc.stats().unchained_jumps),
        (1, 1)
    );
}

#[test]
fn chain_refuses_wrong_targets() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x2000]);
    let c = add(&mut tc, 0x3000, &[]);
    assert_eq!(tc.chain(a, 0, c), Err(ChainError::Mismatch));
    assert_eq!(tc.chain(a, 1, c), Err(ChainError::NoExit));
    assert_eq!(tc.chain(a, 0, BlockId(99)), Err(ChainError::NoBlock));
    // Same EIP, other context: chaining would mix assumptions.
    let (mut nb, code) = block(0x2000, 2, 1, &[]);
    nb.key.ctx.cpl = 3;
    let user = tc.insert(nb, &code).unwrap();
    assert_eq!(tc.chain(a, 0, user), Err(ChainError::Mismatch));
    assert_eq!(rel32(&tc, a, 0), STUB);
}

#[test]
fn smc_invalidation_drops_the_page_and_unchains_jumps_into_it() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x5000]);
    let b = add(&mut tc, 0x1800, &[0x5000]);
    let t = add(&mut tc, 0x5000, &[0x1000]);
    let other = add(&mut tc, 0x5100, &[]);
    tc.chain(a, 0, t).unwrap();
    tc.chain(b, 0, t).unwrap();
    tc.chain(t, 0, a).unwrap();
    tc.publish_indirect(t);
    assert_eq!(tc.table().get(0x5000), tc.host_addr(t));

    assert_eq!(tc.invalidate_page(GuestPage(5)), 2);
    assert!(tc.block(t).is_none() && tc.block(other).is_none());
    assert_eq!(tc.lookup(0x5000, CTX), None);
    // Jumps into the dropped block go back to their stubs.
    assert_eq!(rel32(&tc, a, 0), STUB);
    assert_eq!(rel32(&tc, b, 0), STUB);
    assert_eq!(tc.block(a).unwrap().exits()[0].chained_to(), None);
    // The dropped block's own link into `a` is forgotten.
    assert!(tc.block(a).unwrap().incoming().is_empty());
    assert_eq!(tc.table().get(0x5000), None);
    assert_eq!(tc.recreate(tc.code().base() + 0x30 + 1), None);
    let s = tc.stats();
    assert_eq!((s.smc_invalidations, s.smc_blocks), (1, 2));
    // A page with nothing on it is not an SMC invalidation.
    assert_eq!(tc.invalidate_page(GuestPage(9)), 0);
    assert_eq!(tc.stats().smc_invalidations, 1);
    // Page 1 still works, and `a` can be chained again to a retranslation.
    let t2 = add(&mut tc, 0x5000, &[]);
    tc.chain(a, 0, t2).unwrap();
    assert_eq!(tc.invalidate_page(GuestPage(1)), 2);
    assert_eq!(tc.len(), 1);
    assert!(tc.block(t2).unwrap().incoming().is_empty());
}

#[test]
fn self_loop_block_can_be_invalidated() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x1000]);
    tc.chain(a, 0, a).unwrap();
    assert_eq!(tc.invalidate_page(GuestPage(1)), 1);
    assert!(tc.is_empty());
}

#[test]
fn flush_drops_everything_and_ids_are_not_reused() {
    let mut tc = TranslationCache::anonymous(64, 0x4000).unwrap();
    let a = add(&mut tc, 0x1000, &[]);
    let b = add(&mut tc, 0x2000, &[]);
    tc.publish_indirect(a);
    tc.flush();
    assert!(tc.is_empty());
    assert_eq!(tc.table().occupied(), 0);
    assert_eq!(tc.next_host_addr(), tc.code().base());
    assert_eq!(tc.take_orphaned_pages(), vec![GuestPage(1), GuestPage(2)]);
    let c = add(&mut tc, 0x3000, &[]);
    assert!(c != a && c != b);
    let s = tc.stats();
    assert_eq!((s.flushes, s.evictions, s.evicted_blocks), (1, 0, 2));
    assert_eq!(tc.lookup(0x1000, CTX), None);
}

/// A cache of four 64-byte chunks; [`big`] blocks take a chunk each.
fn chunked() -> TranslationCache {
    TranslationCache::new(
        CodeBuffer::anonymous_chunked(256, 64).unwrap(),
        IndirectTable::anonymous(0x4000).unwrap(),
    )
}

/// Inserts a 40-byte block at `eip` (a chunk of its own in [`chunked`]),
/// making room first.
fn big(tc: &mut TranslationCache, eip: u32, targets: &[u32]) -> BlockId {
    let (nb, code) = block(eip, eip >> 12, 40 - 5 * targets.len() as u32, targets);
    tc.make_room(code.len() as u32);
    tc.insert(nb, &code).unwrap()
}

#[test]
fn a_full_chunk_moves_on_to_an_empty_one_without_evicting() {
    let mut tc = chunked();
    assert_eq!(tc.code().chunks(), 4);
    let a = big(&mut tc, 0x1000, &[]);
    let (nb, code) = block(0x2000, 2, 40, &[]);
    assert_eq!(tc.insert(nb.clone(), &code), Err(InsertError::Full));
    assert_eq!(tc.len(), 1, "a refused insert changes nothing");
    assert!(tc.make_room(40), "the next block starts in another chunk");
    assert!(!tc.make_room(40), "and fits there");
    assert_eq!(tc.next_host_addr(), tc.code().base() + 64);
    tc.insert(nb, &code).unwrap();
    assert_eq!(tc.host_addr(a), Some(tc.code().base()));
    assert_eq!(tc.stats().evictions, 0);
}

#[test]
fn eviction_frees_the_least_recently_used_chunk() {
    let mut tc = chunked();
    let a = big(&mut tc, 0x1000, &[]);
    let b = big(&mut tc, 0x2000, &[]);
    let c = big(&mut tc, 0x3000, &[]);
    let d = big(&mut tc, 0x4000, &[]);
    // Oldest is a's chunk, but a dispatcher lookup makes it the newest.
    assert_eq!(tc.lookup(0x1000, CTX), Some(a));
    let b_addr = tc.host_addr(b).unwrap();
    // No chunk is empty: the next block evicts b's, the least recent.
    let e = big(&mut tc, 0x5000, &[]);
    assert_eq!(tc.host_addr(e), Some(b_addr), "e reuses b's space");
    assert!(tc.block(b).is_none());
    assert_eq!(tc.lookup(0x2000, CTX), None, "evicted blocks miss");
    for (id, eip) in [(a, 0x1000), (c, 0x3000), (d, 0x4000), (e, 0x5000)] {
        assert_eq!(tc.lookup(eip, CTX), Some(id));
    }
    // Lookups just touched a, c, d, e in that order: a goes next.
    let f = big(&mut tc, 0x6000, &[]);
    assert!(tc.block(a).is_none());
    assert_eq!(tc.host_addr(f), Some(tc.code().base()));
    let s = tc.stats();
    assert_eq!((s.evictions, s.evicted_blocks, s.flushes), (2, 2, 0));
    assert_eq!(tc.len(), 4);
}

#[test]
fn evicted_blocks_are_unchained_and_leave_the_table() {
    let mut tc = chunked();
    // Chunk 0: a, jumping to t. Chunk 1: t and u (u chains into t too).
    let a = big(&mut tc, 0x1000, &[0x5000]);
    tc.make_room(64);
    let (nb, code) = block(0x5000, 5, 3, &[0x1000]);
    let t = tc.insert(nb, &code).unwrap();
    let (nb, code) = block(0x5100, 5, 3, &[0x5000]);
    let u = tc.insert(nb, &code).unwrap();
    assert_eq!(tc.code().chunk_of(tc.block(u).unwrap().host_offset), 1);
    tc.chain(a, 0, t).unwrap();
    tc.chain(u, 0, t).unwrap();
    tc.chain(t, 0, a).unwrap();
    tc.publish_indirect(t);
    let t_addr = tc.host_addr(t).unwrap();
    // Fill chunks 2 and 3, keep a's chunk recent: chunk 1 is the oldest.
    big(&mut tc, 0x2000, &[]);
    big(&mut tc, 0x3000, &[]);
    tc.lookup(0x1000, CTX);
    big(&mut tc, 0x6000, &[]);
    assert!(tc.block(t).is_none() && tc.block(u).is_none());
    // The jump into the evicted block goes back to its exit stub ...
    assert_eq!(rel32(&tc, a, 0), STUB);
    assert_eq!(tc.block(a).unwrap().exits()[0].chained_to(), None);
    // ... and the evicted block's own link into `a` is forgotten.
    assert!(tc.block(a).unwrap().incoming().is_empty());
    assert_eq!(tc.table().get(0x5000), None);
    assert_eq!(tc.lookup(0x5000, CTX), None);
    // Its old address is now someone else's or padding, never t's.
    assert_ne!(tc.recreate(t_addr).map(|r| r.guest_eip), Some(0x5000));
    assert_eq!(tc.stats().evicted_blocks, 2);
    // Page 5 has no block left: its write protection may go.
    assert_eq!(tc.take_orphaned_pages(), vec![GuestPage(5)]);
    assert!(tc.take_orphaned_pages().is_empty());
}

#[test]
fn a_block_larger_than_a_chunk_is_refused() {
    let mut tc = chunked();
    let (nb, code) = block(0x1000, 1, 65, &[]);
    assert!(!tc.make_room(65));
    assert_eq!(tc.insert(nb, &code), Err(InsertError::Full));
    assert_eq!(tc.stats().evictions, 0);
}

#[test]
fn reinserting_a_key_replaces_the_old_block() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x2000]);
    let old = add(&mut tc, 0x2000, &[]);
    tc.chain(a, 0, old).unwrap();
    let new = add(&mut tc, 0x2000, &[]);
    assert_eq!(tc.lookup(0x2000, CTX), Some(new));
    assert!(tc.block(old).is_none());
    assert_eq!(rel32(&tc, a, 0), STUB);
    assert_eq!(tc.len(), 2);
}

#[test]
fn recreate_maps_host_pcs_to_guest_instructions() {
    let mut tc = cache();
    let a = add(&mut tc, 0x1000, &[0x2000]);
    let b = add(&mut tc, 0x2000, &[]);
    let base_a = tc.host_addr(a).unwrap();
    let r = tc.recreate(base_a + 1).unwrap();
    assert_eq!((r.block, r.guest_eip, r.at_boundary), (a, 0x1001, true));
    // Inside the exit jump, which belongs to the last guest instruction.
    let r = tc.recreate(base_a + 5).unwrap();
    assert_eq!((r.guest_eip, r.at_boundary), (0x1002, false));
    // Padding after a block and addresses outside the buffer.
    assert_eq!(tc.recreate(base_a + 8), None);
    assert_eq!(tc.recreate(base_a.wrapping_sub(1)), None);
    let r = tc.recreate(tc.host_addr(b).unwrap() + 2).unwrap();
    assert_eq!((r.block, r.guest_eip), (b, 0x2002));
    assert_eq!(tc.recreate(tc.host_addr(b).unwrap() + 3), None);
}

#[test]
fn indirect_table_holds_one_context_at_a_time() {
    let mut tc = cache();
    let k = add(&mut tc, 0x1000, &[]);
    let (mut nb, code) = block(0x2000, 2, 1, &[]);
    nb.key.ctx.cpl = 3;
    let u = tc.insert(nb, &code).unwrap();
    assert!(tc.publish_indirect(k));
    assert_eq!(tc.table().get(0x1000), tc.host_addr(k));
    assert!(tc.publish_indirect(u));
    assert_eq!(tc.table().get(0x1000), None, "other context dropped");
    assert_eq!(tc.table().get(0x2000), tc.host_addr(u));
    assert!(!tc.publish_indirect(BlockId(77)));
}

#[test]
fn entering_another_context_empties_the_table() {
    // Code at CPL 1 whose RET probed a table of CPL 0 entries would run
    // translations made for CPL 0 (inline CLI, MOV from CR) at CPL 1.
    let mut tc = cache();
    let k = add(&mut tc, 0x1000, &[]);
    assert!(tc.publish_indirect(k));
    tc.enter(CTX);
    tc.enter(Context { step: true, ..CTX });
    assert_eq!(tc.table().get(0x1000), tc.host_addr(k), "same context kept");
    tc.enter(Context { cpl: 1, ..CTX });
    assert_eq!(tc.table().get(0x1000), None, "other context dropped");
    // Back in the first context, a miss publishes the block again.
    tc.enter(CTX);
    assert!(tc.publish_indirect(k));
    assert_eq!(tc.table().get(0x1000), tc.host_addr(k));
}
