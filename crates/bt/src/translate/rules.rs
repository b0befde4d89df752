//! The rewriting rules: what each guest instruction of a block becomes in
//! host code, given the context it was translated under. The decode loop
//! ([`super::decode`]) hands instructions over one at a time; the
//! [`Rewriter`] emits them and says whether the block goes on.

use iced_x86::{Code, Encoder, Instruction, Mnemonic, OpKind, Register};
use x86::classify::{classify, Class, Kind};

use super::decode::Decoded;
use super::emit::{Emitter, SelectorFrom};
use super::translation::{TranslateError, Translation};
use crate::cache::{BlockKey, Context, GuestPage, InsnMap, NewBlock};
use crate::contract::{ExitReason, Inline};

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

/// For a load of DS, ES, FS or GS that translated code may do inline
/// (`Emitter::load_sreg`): MOV Sreg, r16/r32/m16 or POP Sreg at CPL 0,
/// outside single-step blocks. Its sreg index and where the selector comes
/// from. SS (whose load opens an interrupt shadow) and other privilege
/// levels stay callouts.
pub(super) fn inline_sreg_load(insn: &Instruction, ctx: Context) -> Option<(usize, SelectorFrom)> {
    if ctx.cpl != 0 || ctx.step {
        return None;
    }
    let sreg = sreg_index(insn.op0_register()).filter(|s| (2..=5).contains(s))?;
    match insn.code() {
        Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_rm16 if insn.op1_kind() == OpKind::Register => {
            Some((sreg, SelectorFrom::Register(insn.op1_register())))
        }
        // Linux's SYSEXIT path restores FS with `mov fs, [esp + PT_FS]`.
        // GS is the monitor's in translated code: a GS operand stays a
        // callout.
        Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_rm16 if insn.memory_segment() != Register::GS => {
            let mut load = *insn;
            load.set_code(Code::Movzx_r32_rm16);
            load.set_op0_kind(OpKind::Register);
            load.set_op0_register(Register::EAX);
            let mut enc = Encoder::new(32);
            enc.encode(&load, 0).ok()?;
            Some((sreg, SelectorFrom::Memory(enc.take_buffer())))
        }
        Code::Popd_DS | Code::Popd_ES | Code::Popd_FS | Code::Popd_GS => {
            Some((sreg, SelectorFrom::Pop(4)))
        }
        Code::Popw_DS | Code::Popw_ES | Code::Popw_FS | Code::Popw_GS => {
            Some((sreg, SelectorFrom::Pop(2)))
        }
        _ => None,
    }
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

/// Whether the block goes on after an instruction.
pub(super) enum Flow {
    /// Decode the next instruction; with `hold`, even past the size caps
    /// (it is in the interrupt shadow of an inline STI).
    Next {
        /// Keep the next instruction in this block.
        hold: bool,
    },
    /// The instruction ended the block (a branch or a callout).
    End,
}

/// One chainable exit being emitted: where its `jmp rel32` sits and where
/// it goes in the guest.
struct PendingExit {
    jump_at: u32,
    target: u32,
}

/// Emits one block's host code, instruction by instruction.
pub(super) struct Rewriter {
    em: Emitter,
    ctx: Context,
    /// Host address of the block.
    host: u32,
    /// Host address of the shared indirect-branch miss handler.
    miss: u32,
    /// RDTSC at CPL 0 is copied as it is (see `Translator::native_tsc`).
    native_tsc: bool,
    insns: Vec<InsnMap>,
    exits: Vec<PendingExit>,
    /// The block has passed its vector gate: the guest's vector state is
    /// loaded for the rest of it.
    vector_gated: bool,
}

impl Rewriter {
    /// A block under `ctx` emitted for host address `host`, whose
    /// indirect-branch misses go to `miss`.
    pub fn new(ctx: Context, host: u32, miss: u32, native_tsc: bool) -> Rewriter {
        Rewriter {
            em: Emitter::new(host),
            ctx,
            host,
            miss,
            native_tsc,
            insns: Vec::new(),
            exits: Vec::new(),
            vector_gated: false,
        }
    }

    /// Host code emitted so far.
    #[inline]
    pub fn host_len(&self) -> u32 {
        self.em.offset()
    }

    /// Ends the block with a chainable exit to guest linear `target`.
    pub fn fall_through(&mut self, target: u32) {
        self.exits.push(PendingExit {
            jump_at: self.em.jmp_placeholder(),
            target,
        });
    }

    /// Emits guest instruction `d` and records where its host code starts
    /// (for precise state); a data instruction becomes a callout if
    /// `callout` says so (it reached a device before).
    // Inlined into the translate loop, as `BlockDecoder::next` is.
    #[inline]
    pub fn rewrite(&mut self, d: &Decoded<'_>, callout: bool) -> Result<Flow, TranslateError> {
        let (insn, bytes, linear, next) = (d.insn, d.bytes, d.linear, d.next);
        let (ctx, cs_base) = (self.ctx, self.ctx.cs_base);
        let em = &mut self.em;
        self.insns.push(InsnMap {
            guest_eip: linear,
            host_offset: em.offset(),
        });
        let kind = classify(insn).kind;
        let unsupported = |why| TranslateError::Unsupported {
            eip: linear,
            bytes: bytes.to_vec(),
            why,
        };
        if kind.class() == Class::Innocuous && callout {
            em.exit(ExitReason::Callout as u32, linear);
            return Ok(Flow::End);
        }
        if kind.class() == Class::Innocuous {
            if !self.vector_gated && x86::classify::uses_vector_state(insn) {
                // The gate opens the instruction's translation, so that a
                // fault there leaves the guest state exact.
                em.vector_gate();
                self.vector_gated = true;
            }
            if insn.segment_prefix() == Register::CS && cs_base != 0 {
                return Err(unsupported("CS override with a non-zero CS base"));
            }
            if x86::classify::uses_gs_override(insn) {
                // GS is the monitor's in translated code: borrow FS for
                // the guest's GS around the instruction.
                let at = gs_prefix_at(bytes).ok_or_else(|| unsupported("GS override"))?;
                let mut copy = bytes.to_vec();
                copy[at] = 0x64;
                em.with_guest_gs(&copy);
            } else {
                em.ident(bytes);
            }
            return Ok(Flow::Next { hold: false });
        }
        if kind == Kind::Rdtsc && self.native_tsc && ctx.cpl == 0 {
            // The guest's TSC is the host's, and CR4.TSD cannot fault at
            // CPL 0: the host's RDTSC gives exactly the guest's answer
            // (Linux reads the TSC hundreds of thousands of times a boot).
            em.ident(bytes);
            return Ok(Flow::Next { hold: false });
        }
        let inline = Inline::of(insn, ctx).filter(|&i| {
            // An STI whose next instruction would start another block
            // (page end) stays a callout.
            i != Inline::Sti || d.next_in_page()
        });
        if let Some(inline) = inline {
            match inline {
                Inline::Cli => em.cli(),
                Inline::Sti => em.sti(ExitReason::StiShadow as u32, next),
                Inline::Pushf => em.pushf(),
                Inline::Popf => em.popf(ExitReason::IrqWindow as u32, next),
                Inline::PushSreg => {
                    let (sreg, word) = push_sreg(insn).expect("classified as PUSH Sreg");
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
            return Ok(Flow::Next {
                hold: inline == Inline::Sti,
            });
        }
        if let Some((sreg, from)) = inline_sreg_load(insn, ctx) {
            em.load_sreg(sreg, &from, ExitReason::Callout as u32, linear);
            return Ok(Flow::Next { hold: false });
        }
        let target = insn.near_branch32().wrapping_add(cs_base);
        match kind {
            Kind::Jmp if insn.op0_kind() == OpKind::NearBranch16 => {
                return Err(unsupported("16-bit JMP"));
            }
            Kind::Jmp => self.fall_through(target),
            Kind::Jcc | Kind::Loop | Kind::Jcxz => {
                // The guest's own condition, aimed at the taken exit right
                // behind the not-taken one.
                em.raw(&conditional_skip(insn, bytes).ok_or_else(|| {
                    unsupported("conditional branch with an operand-size prefix")
                })?);
                self.fall_through(next);
                self.fall_through(target);
            }
            Kind::Call => {
                if insn.code() != Code::Call_rel32_32 {
                    return Err(unsupported("16-bit CALL"));
                }
                em.push_imm(next.wrapping_sub(cs_base));
                self.fall_through(target);
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
                    load_target(insn).ok_or_else(|| unsupported("16-bit indirect branch"))?;
                em.save_scratch();
                em.raw(&load);
                if kind == Kind::CallIndirect {
                    em.push_imm(next.wrapping_sub(cs_base));
                }
                em.add_eax(cs_base);
                em.probe(self.miss, ctx.step);
            }
            // Every system call through Linux's vDSO leaves by one.
            Kind::Sysexit => em.exit(ExitReason::Sysexit as u32, linear),
            // Every return to user code after `int $0x80`, an exception or
            // an interrupt, and to a forked child.
            Kind::Iret if insn.mnemonic() == Mnemonic::Iretd => {
                em.exit(ExitReason::Iret as u32, linear)
            }
            _ => em.exit(ExitReason::Callout as u32, linear),
        }
        Ok(Flow::End)
    }

    /// Emits the exit stubs (each unchained exit jumps to one) and the
    /// block's record.
    pub fn finish(
        mut self,
        key: BlockKey,
        page: GuestPage,
        spill: Option<GuestPage>,
        guest_len: u32,
    ) -> Translation {
        let mut records = Vec::with_capacity(self.exits.len());
        for e in &self.exits {
            self.em.patch_jmp_here(e.jump_at);
            self.em
                .branch_exit(ExitReason::Branch as u32, e.target, self.host + e.jump_at);
            records.push((e.target, e.jump_at));
        }
        Translation {
            block: NewBlock {
                key,
                page,
                spill,
                guest_len,
                insns: self.insns,
                exits: records,
            },
            code: self.em.finish(),
        }
    }
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
