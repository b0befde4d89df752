//! The translator: decode a basic block of guest kernel code with iced-x86,
//! classify each instruction, copy the innocuous ones byte for byte (IDENT)
//! and rewrite the rest, emitting host code with dynasmrt.
//!
//! What each kind becomes:
//! - innocuous: copied verbatim; it runs on the guest's own shadow DS, ES,
//!   FS and SS, with the guest's arithmetic flags in the host EFLAGS.
//! - direct JMP, Jcc, LOOP, JECXZ, CALL: exits that the cache can chain
//!   straight to the target's translation. CALL pushes the *guest* return
//!   address, so the guest's stack never holds a host address.
//! - RET and indirect JMP/CALL: the target goes through the inline lookup
//!   table ([`crate::cache::lookup`]); a miss exits to the dispatcher.
//! - CLI, STI, POPF (32-bit operand size, CPL 0) and PUSHF (32-bit): a
//!   few inline instructions on the virtual CPU's flags in the vCPU area
//!   ([`Inline`]; the sequences are in [`emit`]). STI and POPF leave
//!   translated code only when they open the window for an interrupt that
//!   is waiting, or set TF.
//! - everything else privileged or sensitive: a callout, i.e. an exit that
//!   makes the monitor carry out that one instruction on the virtual CPU
//!   (`x86::emulate`) and continue after it.
//!
//! A block ends at a control transfer, a callout, the guest page's end,
//! [`MAX_INSNS`] instructions or [`MAX_BLOCK_BYTES`] bytes of host code.

pub mod emit;

use iced_x86::{Code, Decoder, DecoderOptions, Encoder, Instruction, Mnemonic, OpKind, Register};
use x86::classify::{classify, Class, Kind};

use crate::cache::block::GUEST_PAGE_SIZE;
use crate::cache::{BlockKey, Context, GuestPage, InsnMap, NewBlock};
use crate::contract::{ExitReason, Inline};
use emit::Emitter;

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

impl Inline {
    /// The inline rewrite of `insn` under `ctx`, if it has one. 16-bit
    /// PUSHF/POPF and CLI/STI/POPF above CPL 0 (where IOPL decides, and
    /// may raise #GP) stay callouts. So does STI in a one-instruction
    /// (step) block, whose next instruction is in another block: the
    /// callout's interrupt shadow covers it there. Reads of a selector
    /// need no checks at any CPL; reads of a control register are #GP
    /// above CPL 0, and CR1, CR5 and up are #UD, both left to the
    /// emulator.
    pub fn of(insn: &Instruction, ctx: Context) -> Option<Inline> {
        match insn.code() {
            Code::Pushfd => Some(Inline::Pushf),
            Code::Cli if ctx.cpl == 0 => Some(Inline::Cli),
            Code::Sti if ctx.cpl == 0 && !ctx.step => Some(Inline::Sti),
            Code::Popfd if ctx.cpl == 0 => Some(Inline::Popf),
            _ if push_sreg(insn).is_some() => Some(Inline::PushSreg),
            Code::Mov_r32m16_Sreg | Code::Mov_rm16_Sreg
                if insn.op0_kind() == OpKind::Register
                    && sreg_index(insn.op1_register()).is_some() =>
            {
                Some(Inline::MovFromSreg)
            }
            Code::Mov_r32_cr if ctx.cpl == 0 && cr_index(insn.op1_register()).is_some() => {
                Some(Inline::MovFromCr)
            }
            _ => None,
        }
    }
}

/// For PUSH Sreg: the segment register's index in the vCPU area's
/// `guest_sel` and whether the push is a word (16-bit operand size).
fn push_sreg(insn: &Instruction) -> Option<(usize, bool)> {
    if insn.mnemonic() != Mnemonic::Push || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let sreg = sreg_index(insn.op0_register())?;
    Some((sreg, insn.stack_pointer_increment() == -2))
}

/// Index of a segment register in the vCPU area's `guest_sel`.
fn sreg_index(reg: Register) -> Option<usize> {
    [
        Register::CS,
        Register::SS,
        Register::DS,
        Register::ES,
        Register::FS,
        Register::GS,
    ]
    .iter()
    .position(|&r| r == reg)
}

/// Index of a control register in the vCPU area's `guest_cr`, for the ones
/// that exist in 32-bit mode.
fn cr_index(reg: Register) -> Option<usize> {
    match reg {
        Register::CR0 => Some(0),
        Register::CR2 => Some(2),
        Register::CR3 => Some(3),
        Register::CR4 => Some(4),
        _ => None,
    }
}

/// Why a block could not be translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The translator has no rewrite for this instruction in this context.
    Unsupported {
        /// Linear address of the instruction.
        eip: u32,
        /// Its bytes.
        bytes: Vec<u8>,
        /// What is missing.
        why: &'static str,
    },
    /// The guest bytes end inside the first instruction.
    Truncated {
        /// Linear address of the instruction.
        eip: u32,
    },
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslateError::Unsupported { eip, bytes, why } => {
                write!(f, "cannot translate the instruction at {eip:#010x} (")?;
                for (i, b) in bytes.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(f, "{sep}{b:02x}")?;
                }
                write!(f, "): {why}")
            }
            TranslateError::Truncated { eip } => {
                write!(f, "guest code at {eip:#010x} runs past the end of memory")
            }
        }
    }
}

impl std::error::Error for TranslateError {}

/// A translated block, ready for [`crate::cache::TranslationCache::insert`].
#[derive(Clone, Debug)]
pub struct Translation {
    /// The record: key, pages, precise-state table, chainable exits.
    pub block: NewBlock,
    /// Host code, emitted for the host address it was asked for.
    pub code: Vec<u8>,
}

/// Emits the translations of guest blocks.
#[derive(Clone, Copy, Debug)]
pub struct Translator {
    /// Host address of the shared indirect-branch miss handler.
    miss: u32,
}

/// The shared miss handler's code, to install once below 4 GiB at `at`.
pub fn miss_handler(at: u32) -> Vec<u8> {
    let mut em = Emitter::new(at);
    em.miss_handler(ExitReason::IndirectMiss as u32);
    em.finish()
}

/// One chainable exit being emitted: where its `jmp rel32` sits and where
/// it goes in the guest.
struct PendingExit {
    jump_at: u32,
    target: u32,
}

impl Translator {
    /// A translator whose indirect-branch misses go to `miss` (the address
    /// [`miss_handler`] was installed at).
    pub fn new(miss: u32) -> Translator {
        Translator { miss }
    }

    /// Translates the block at `key`. `code` holds the guest bytes from
    /// `key.eip` on (to the page end plus up to 15 bytes, so that a last
    /// instruction may straddle); `page` is the guest physical page of
    /// `key.eip`; the host code is emitted for host address `host`.
    pub fn translate(
        &self,
        key: BlockKey,
        code: &[u8],
        page: GuestPage,
        host: u32,
    ) -> Result<Translation, TranslateError> {
        let ctx = key.ctx;
        if !ctx.code32 {
            return Err(TranslateError::Unsupported {
                eip: key.eip,
                bytes: code.iter().take(8).copied().collect(),
                why: "16-bit code segments are not translated yet",
            });
        }
        let cs_base = ctx.cs_base;
        let in_page = (GUEST_PAGE_SIZE - (key.eip & (GUEST_PAGE_SIZE - 1))) as usize;
        let mut decoder = Decoder::with_ip(
            32,
            code,
            u64::from(key.eip.wrapping_sub(cs_base)),
            DecoderOptions::NONE,
        );
        let mut em = Emitter::new(host);
        let mut insns = Vec::new();
        let mut exits: Vec<PendingExit> = Vec::new();
        let mut pos = 0usize;
        let mut spill = None;
        // The previous instruction was an inline STI: the one in its
        // interrupt shadow stays in this block (see `Emitter::sti`).
        let mut after_sti = false;
        loop {
            let linear = key.eip.wrapping_add(pos as u32);
            let cap = if ctx.step { 1 } else { MAX_INSNS };
            let in_shadow = std::mem::take(&mut after_sti);
            let full = insns.len() >= cap || em.offset() >= MAX_BLOCK_BYTES;
            if (full && !in_shadow) || pos >= in_page {
                exits.push(PendingExit {
                    jump_at: em.jmp_placeholder(),
                    target: linear,
                });
                break;
            }
            let insn = decoder.decode();
            let len = insn.len();
            if insn.code() == Code::INVALID && pos + 15 > code.len() {
                // The decoder ran out of bytes: the instruction continues
                // past what we were given (the end of guest memory).
                if insns.is_empty() {
                    return Err(TranslateError::Truncated { eip: linear });
                }
                exits.push(PendingExit {
                    jump_at: em.jmp_placeholder(),
                    target: linear,
                });
                break;
            }
            if pos + len > in_page {
                if !insns.is_empty() {
                    // Give the straddling instruction a block of its own.
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target: linear,
                    });
                    break;
                }
                spill = Some(GuestPage(page.0 + 1));
            }
            let bytes = &code[pos..pos + len];
            insns.push(InsnMap {
                guest_eip: linear,
                host_offset: em.offset(),
            });
            pos += len;
            let next = key.eip.wrapping_add(pos as u32);
            let kind = classify(&insn).kind;
            let unsupported = |why| TranslateError::Unsupported {
                eip: linear,
                bytes: bytes.to_vec(),
                why,
            };
            if kind.class() == Class::Innocuous {
                if insn.segment_prefix() == Register::CS && cs_base != 0 {
                    return Err(unsupported("CS override with a non-zero CS base"));
                }
                if x86::classify::uses_gs_override(&insn) {
                    // GS is the monitor's in translated code: borrow FS for
                    // the guest's GS around the instruction.
                    let at = gs_prefix_at(bytes).ok_or_else(|| unsupported("GS override"))?;
                    let mut copy = bytes.to_vec();
                    copy[at] = 0x64;
                    em.with_guest_gs(&copy);
                } else {
                    em.ident(bytes);
                }
                if spill.is_some() {
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target: next,
                    });
                    break;
                }
                continue;
            }
            let inline = Inline::of(&insn, ctx).filter(|&i| {
                // An STI whose next instruction would start another block
                // (page end) stays a callout.
                i != Inline::Sti || next_in_page(code, pos, in_page)
            });
            if let Some(inline) = inline {
                after_sti = inline == Inline::Sti;
                match inline {
                    Inline::Cli => em.cli(),
                    Inline::Sti => em.sti(ExitReason::StiShadow as u32, next),
                    Inline::Pushf => em.pushf(),
                    Inline::Popf => em.popf(ExitReason::IrqWindow as u32, next),
                    Inline::PushSreg => {
                        let (sreg, word) = push_sreg(&insn).expect("classified as PUSH Sreg");
                        em.push_sreg(sreg, word);
                    }
                    Inline::MovFromSreg => {
                        let sreg = sreg_index(insn.op1_register()).expect("classified");
                        em.mov_from_sreg(insn.op0_register(), sreg);
                    }
                    Inline::MovFromCr => {
                        let cr = cr_index(insn.op1_register()).expect("classified");
                        em.mov_from_cr(insn.op0_register(), cr);
                    }
                }
                if spill.is_some() {
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target: next,
                    });
                    break;
                }
                continue;
            }
            let target = insn.near_branch32().wrapping_add(cs_base);
            match kind {
                Kind::Jmp if insn.op0_kind() == OpKind::NearBranch16 => {
                    return Err(unsupported("16-bit JMP"));
                }
                Kind::Jmp => {
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target,
                    });
                }
                Kind::Jcc | Kind::Loop | Kind::Jcxz => {
                    // The guest's own condition, aimed at the taken exit
                    // right behind the not-taken one.
                    em.raw(&conditional_skip(&insn, bytes).ok_or_else(|| {
                        unsupported("conditional branch with an operand-size prefix")
                    })?);
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target: next,
                    });
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target,
                    });
                }
                Kind::Call => {
                    if insn.code() != Code::Call_rel32_32 {
                        return Err(unsupported("16-bit CALL"));
                    }
                    em.push_imm(next.wrapping_sub(cs_base));
                    exits.push(PendingExit {
                        jump_at: em.jmp_placeholder(),
                        target,
                    });
                }
                Kind::Ret => {
                    if !matches!(insn.code(), Code::Retnd | Code::Retnd_imm16) {
                        return Err(unsupported("16-bit RET"));
                    }
                    let pop = if insn.code() == Code::Retnd_imm16 {
                        insn.immediate16()
                    } else {
                        0
                    };
                    em.save_scratch();
                    em.pop_return_address(pop);
                    em.add_eax(cs_base);
                    em.probe(self.miss, ctx.step);
                }
                Kind::JmpIndirect | Kind::CallIndirect => {
                    let load =
                        load_target(&insn).ok_or_else(|| unsupported("16-bit indirect branch"))?;
                    em.save_scratch();
                    em.raw(&load);
                    if kind == Kind::CallIndirect {
                        em.push_imm(next.wrapping_sub(cs_base));
                    }
                    em.add_eax(cs_base);
                    em.probe(self.miss, ctx.step);
                }
                _ => {
                    em.exit(ExitReason::Callout as u32, linear);
                }
            }
            break;
        }
        // The exit stubs: each unchained exit jumps to one.
        let mut records = Vec::with_capacity(exits.len());
        for e in &exits {
            em.patch_jmp_here(e.jump_at);
            em.branch_exit(ExitReason::Branch as u32, e.target, host + e.jump_at);
            records.push((e.target, e.jump_at));
        }
        Ok(Translation {
            block: NewBlock {
                key,
                page,
                spill,
                guest_len: pos as u32,
                insns,
                exits: records,
            },
            code: em.finish(),
        })
    }
}

/// Whether the instruction at `code[pos..]` can be decoded and ends within
/// the first `in_page` bytes (so that it is translated in the same block).
fn next_in_page(code: &[u8], pos: usize, in_page: usize) -> bool {
    if pos >= in_page {
        return false;
    }
    let next = Decoder::new(32, &code[pos..], DecoderOptions::NONE).decode();
    let truncated = next.code() == Code::INVALID && pos + 15 > code.len();
    !truncated && pos + next.len() <= in_page
}

/// Index of the GS override (0x65) among the instruction's legacy
/// prefixes, if it is one of them.
fn gs_prefix_at(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
            )
        })
        .position(|&b| b == 0x65)
}

/// The guest's conditional branch re-encoded to jump 5 bytes ahead (over
/// the not-taken exit's `jmp rel32`). Jcc becomes its rel32 form; LOOP and
/// JECXZ only have rel8, which is the instruction's last byte.
fn conditional_skip(insn: &Instruction, bytes: &[u8]) -> Option<Vec<u8>> {
    if insn.is_jcc_short_or_near() {
        if insn.op0_kind() == OpKind::NearBranch16 {
            return None;
        }
        let cc = insn.condition_code() as u8 - 1;
        let mut v = vec![0x0F, 0x80 + cc];
        v.extend(5i32.to_le_bytes());
        return Some(v);
    }
    // LOOP/LOOPE/LOOPNE/JECXZ/JCXZ rel8, maybe with a 67 prefix (CX).
    if bytes.first() == Some(&0x66) {
        return None;
    }
    let mut v = bytes.to_vec();
    *v.last_mut()? = 5;
    Some(v)
}

/// `mov eax, <operand>` for the target of `jmp/call r/m32`, with the
/// guest's own addressing (evaluated before anything else changes).
fn load_target(insn: &Instruction) -> Option<Vec<u8>> {
    if !matches!(insn.code(), Code::Jmp_rm32 | Code::Call_rm32) {
        return None;
    }
    let mut mov = *insn;
    mov.set_code(Code::Mov_r32_rm32);
    mov.set_op0_kind(OpKind::Register);
    mov.set_op0_register(Register::EAX);
    match insn.op0_kind() {
        OpKind::Register => {
            mov.set_op1_kind(OpKind::Register);
            mov.set_op1_register(insn.op0_register());
        }
        _ => mov.set_op1_kind(OpKind::Memory),
    }
    let mut enc = Encoder::new(32);
    enc.encode(&mov, 0).ok()?;
    Some(enc.take_buffer())
}

#[cfg(test)]
mod tests;
