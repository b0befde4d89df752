//! The decode loop's half of translation: where a block's guest
//! instructions come from and where the block ends for reasons that have
//! nothing to do with what an instruction becomes (the page end, an
//! instruction straddling it, the end of guest memory, the size caps).
//! What each instruction becomes is [`super::rules`]' business.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};

use super::translation::TranslateError;
use crate::cache::block::GUEST_PAGE_SIZE;
use crate::cache::{BlockKey, GuestPage};

/// Longest block, in guest instructions: long enough that straight-line
/// kernel code exits rarely, short enough that a block's precise-state
/// table stays small.
pub const MAX_INSNS: usize = 64;

/// Host code after which a block ends at the next instruction boundary.
/// With the longest rewrites (well under 256 bytes each; two of them when
/// the last is the instruction after an STI, which stays in the block) and
/// the exit stubs on top, a block stays below
/// [`crate::cache::code::MIN_CHUNK`], so it always fits in one chunk of
/// the code buffer.
pub const MAX_BLOCK_BYTES: u32 = 2048;

const _: () = assert!(MAX_BLOCK_BYTES + 1024 <= crate::cache::code::MIN_CHUNK);

/// One decoded guest instruction of the block.
pub(super) struct Decoded<'a> {
    /// The instruction (its IP is CS-relative).
    pub insn: &'a Instruction,
    /// Its linear address.
    pub linear: u32,
    /// The linear address after it.
    pub next: u32,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// It runs into the next guest page: the block ends after it.
    pub straddles: bool,
    /// The block's guest bytes, where it ends in them, and the page's end.
    code: &'a [u8],
    end: usize,
    in_page: usize,
}

impl Decoded<'_> {
    /// Whether the instruction after this one can be decoded and ends in
    /// the same page (so that it is translated in the same block).
    pub fn next_in_page(&self) -> bool {
        if self.end >= self.in_page {
            return false;
        }
        let next = Decoder::new(32, &self.code[self.end..], DecoderOptions::NONE).decode();
        let truncated = next.code() == Code::INVALID && self.end + 15 > self.code.len();
        !truncated && self.end + next.len() <= self.in_page
    }
}

/// What comes next in the block.
pub(super) enum Step<'a> {
    /// The next guest instruction.
    Insn(Decoded<'a>),
    /// The block ends before the guest instruction at this linear address.
    End(u32),
}

/// Walks a block's guest bytes one instruction at a time.
pub(super) struct BlockDecoder<'a> {
    key: BlockKey,
    code: &'a [u8],
    page: GuestPage,
    decoder: Decoder<'a>,
    /// Bytes of the guest page from `key.eip` on.
    in_page: usize,
    /// Guest bytes decoded so far.
    pos: usize,
    /// Instructions handed out so far.
    count: usize,
    spill: Option<GuestPage>,
    /// The instruction last decoded, in place: handing out a reference
    /// rather than the 40-byte value keeps the per-instruction cost of
    /// the split loop down.
    insn: Instruction,
}

impl<'a> BlockDecoder<'a> {
    /// A decoder for the block at `key` whose guest bytes, from `key.eip`
    /// on, are `code` (the page's rest plus up to 15 bytes), on physical
    /// page `page`.
    pub fn new(key: BlockKey, code: &'a [u8], page: GuestPage) -> BlockDecoder<'a> {
        let decoder = Decoder::with_ip(
            32,
            code,
            u64::from(key.eip.wrapping_sub(key.ctx.cs_base)),
            DecoderOptions::NONE,
        );
        BlockDecoder {
            key,
            code,
            page,
            decoder,
            in_page: (GUEST_PAGE_SIZE - (key.eip & (GUEST_PAGE_SIZE - 1))) as usize,
            pos: 0,
            count: 0,
            spill: None,
            insn: Instruction::default(),
        }
    }

    /// The next instruction, or where the block ends. `host_len` is the
    /// host code emitted so far; with `hold`, the instruction is decoded
    /// even past the size caps (it is in the interrupt shadow of the
    /// inline STI before it).
    // Called once per guest instruction from another module (so maybe
    // another codegen unit): not inlined, the split loop translated ~25%
    // slower (`cargo bench -p popek-bt --bench translate`).
    #[inline]
    pub fn next(&mut self, host_len: u32, hold: bool) -> Result<Step<'_>, TranslateError> {
        let linear = self.key.eip.wrapping_add(self.pos as u32);
        let cap = if self.key.ctx.step { 1 } else { MAX_INSNS };
        let full = self.count >= cap || host_len >= MAX_BLOCK_BYTES;
        if (full && !hold) || self.pos >= self.in_page {
            return Ok(Step::End(linear));
        }
        self.decoder.decode_out(&mut self.insn);
        let len = self.insn.len();
        if self.insn.code() == Code::INVALID && self.pos + 15 > self.code.len() {
            // The decoder ran out of bytes: the instruction continues past
            // what we were given (the end of guest memory).
            if self.count == 0 {
                return Err(TranslateError::Truncated { eip: linear });
            }
            return Ok(Step::End(linear));
        }
        if self.pos + len > self.in_page {
            if self.count > 0 {
                // Give the straddling instruction a block of its own.
                return Ok(Step::End(linear));
            }
            self.spill = Some(GuestPage(self.page.0 + 1));
        }
        let bytes = &self.code[self.pos..self.pos + len];
        self.pos += len;
        self.count += 1;
        Ok(Step::Insn(Decoded {
            insn: &self.insn,
            linear,
            next: self.key.eip.wrapping_add(self.pos as u32),
            bytes,
            straddles: self.spill.is_some(),
            code: self.code,
            end: self.pos,
            in_page: self.in_page,
        }))
    }

    /// Guest bytes the block covers.
    pub fn guest_len(&self) -> u32 {
        self.pos as u32
    }

    /// The page after the block's, if its last instruction runs into it
    /// (numbered as if pages were linear; the engine puts the physical
    /// page there).
    pub fn spill(&self) -> Option<GuestPage> {
        self.spill
    }
}
