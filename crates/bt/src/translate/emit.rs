//! The emitter: the host code sequences translated blocks are made of,
//! written with dynasmrt for 32-bit (compatibility-mode) execution.
//!
//! Every sequence here runs between two guest instructions whose
//! arithmetic flags live in the host EFLAGS, so none of them may change
//! the flags: only MOV, MOVZX, LEA, PUSH, JMP, JECXZ and segment loads.
//! Translated code reaches the vCPU area and the indirect-branch table
//! through GS, a segment based at the monitor region.

use std::mem::offset_of;

use dynasmrt::x86::X86Relocation;
use dynasmrt::{dynasm, DynasmApi, VecAssembler};

use crate::monitor::layout::TABLE_OFFSET;
use crate::monitor::switch::VcpuArea;

/// GS offset of the exit reason.
const REASON: i32 = offset_of!(VcpuArea, tc_reason) as i32;
/// GS offset of the exit argument.
const ARG: i32 = offset_of!(VcpuArea, tc_arg) as i32;
/// GS offset of the far pointer to the TC exit stub.
const EXIT_FAR: i32 = offset_of!(VcpuArea, exit_far) as i32;
/// GS offsets of the scratch slots: saved EAX, saved ECX, jump target.
const SAVED_EAX: i32 = offset_of!(VcpuArea, scratch) as i32;
const SAVED_ECX: i32 = SAVED_EAX + 4;
const TARGET: i32 = SAVED_EAX + 8;
/// GS offset where a direct exit's stub leaves the host address of the
/// `jmp rel32` that reached it, so the dispatcher can chain that jump.
const FROM: i32 = SAVED_EAX + 12;
/// GS offsets of the host selectors of the guest's FS and GS shadows.
const GUEST_FS: i32 = offset_of!(VcpuArea, guest_fs) as i32;
const GUEST_GS: i32 = offset_of!(VcpuArea, guest_gs) as i32;
/// GS offset of the inline-hit counter.
const HITS: i32 = offset_of!(VcpuArea, inline_hits) as i32;
/// GS offset of the indirect-branch table.
const TABLE: i32 = TABLE_OFFSET as i32;

/// Length of the unconditional `jmp rel32` the cache patches to chain.
pub const JMP_LEN: u32 = 5;

/// Builds one block's host code at a known host address.
pub struct Emitter {
    ops: VecAssembler<X86Relocation>,
    base: u32,
}

impl Emitter {
    /// An emitter for code that will live at host address `base`.
    pub fn new(base: u32) -> Emitter {
        Emitter {
            ops: VecAssembler::new(base as usize),
            base,
        }
    }

    /// Offset of the next byte from the block's start.
    pub fn offset(&self) -> u32 {
        self.ops.offset().0 as u32
    }

    /// Host address of the next byte.
    pub fn here(&self) -> u32 {
        self.base + self.offset()
    }

    /// Copies a guest instruction verbatim (IDENT).
    pub fn ident(&mut self, bytes: &[u8]) {
        self.ops.extend(bytes);
    }

    /// `jmp rel32` to host address `target`; returns the jump's offset.
    pub fn jmp_to(&mut self, target: u32) -> u32 {
        let at = self.offset();
        let rel = target.wrapping_sub(self.here() + JMP_LEN) as i32;
        self.ops.push(0xE9);
        self.ops.extend(rel.to_le_bytes());
        at
    }

    /// `jmp rel32` with a displacement to patch later by [`Self::patch_jmp`];
    /// returns the jump's offset.
    pub fn jmp_placeholder(&mut self) -> u32 {
        self.jmp_to(self.here() + JMP_LEN)
    }

    /// Leaves translated code: stores `reason` and `arg` in the vCPU area
    /// and jumps through the far pointer to the TC exit stub.
    pub fn exit(&mut self, reason: u32, arg: u32) {
        let (reason, arg) = (reason as i32, arg as i32);
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [ARG], arg
            ; gs mov DWORD [REASON], reason
        );
        self.far_exit();
    }

    /// The stub of a chainable exit whose `jmp rel32` sits at host address
    /// `from`: like [`Self::exit`], and records `from` for chaining.
    pub fn branch_exit(&mut self, reason: u32, target: u32, from: u32) {
        let from = from as i32;
        dynasm!(self.ops ; .arch x86 ; gs mov DWORD [FROM], from);
        self.exit(reason, target);
    }

    /// `jmp far gs:[exit_far]` (FF /5, m16:32), which dynasm does not spell.
    fn far_exit(&mut self) {
        self.ops.extend([0x65, 0xFF, 0x2D]);
        self.ops.extend(EXIT_FAR.to_le_bytes());
    }

    /// Saves guest EAX and ECX, the two registers an indirect branch uses.
    pub fn save_scratch(&mut self) {
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [SAVED_EAX], eax
            ; gs mov DWORD [SAVED_ECX], ecx
        );
    }

    /// `push imm32`: a CALL's guest return address.
    pub fn push_imm(&mut self, value: u32) {
        let v = value as i32;
        dynasm!(self.ops ; .arch x86 ; push DWORD v);
    }

    /// `mov eax, [esp]; lea esp, [esp + 4 + pop]`: a RET's target into EAX.
    pub fn pop_return_address(&mut self, pop: u16) {
        let adj = 4 + i32::from(pop);
        dynasm!(self.ops
            ; .arch x86
            ; mov eax, [esp]
            ; lea esp, [esp + adj]
        );
    }

    /// `lea eax, [eax + delta]`: a CS-relative EIP to a linear address.
    pub fn add_eax(&mut self, delta: u32) {
        if delta != 0 {
            let d = delta as i32;
            dynasm!(self.ops ; .arch x86 ; lea eax, [eax + d]);
        }
    }

    /// Runs `insn` (a guest instruction whose GS override was rewritten to
    /// FS) with FS loaded from the guest's GS shadow, then puts the guest's
    /// FS shadow back. MOV to a segment register leaves the flags alone.
    pub fn with_guest_gs(&mut self, insn: &[u8]) {
        self.load_fs(GUEST_GS);
        self.ops.extend(insn);
        self.load_fs(GUEST_FS);
    }

    /// `mov fs, gs:[at]` (8E /4). Spelled in bytes: dynasm 5.1 encodes
    /// `mov fs, WORD [m]` as 8C, the store in the other direction.
    fn load_fs(&mut self, at: i32) {
        self.ops.extend([0x65, 0x8E, 0x25]);
        self.ops.extend(at.to_le_bytes());
    }

    /// Appends raw, already encoded bytes (an operand load made by iced).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.ops.extend(bytes);
    }

    /// The inline probe of the indirect-branch table for the linear target
    /// in EAX (guest EAX and ECX already saved): on a hit, restores both and
    /// jumps to the translation; on a miss, jumps to `miss` with EAX still
    /// holding the target. With `always_miss` (single-step blocks, which
    /// must return to the monitor after one instruction) it only jumps to
    /// `miss`.
    pub fn probe(&mut self, miss: u32, always_miss: bool) {
        if always_miss {
            self.jmp_to(miss);
            return;
        }
        dynasm!(self.ops
            ; .arch x86
            ; movzx ecx, ax
            ; gs mov ecx, [ecx * 8 + TABLE]
            ; lea ecx, [ecx + eax]
        );
        // `jecxz` over the 5-byte miss jump, in bytes: dynasm 5.1 adds a 67
        // prefix, which in 32-bit code makes it JCXZ, testing only CX (a
        // slot that holds an EIP 64 KiB away would then "match").
        self.ops.extend([0xE3, JMP_LEN as u8]);
        self.jmp_to(miss);
        dynasm!(self.ops
            ; .arch x86
            ; movzx ecx, ax
            ; gs mov ecx, [ecx * 8 + TABLE + 4]
            ; gs mov DWORD [TARGET], ecx
            // Count the hit; LEA, unlike INC, leaves the guest's flags alone.
            ; gs mov ecx, DWORD [HITS]
            ; lea ecx, [ecx + 1]
            ; gs mov DWORD [HITS], ecx
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
            ; gs jmp DWORD [TARGET]
        );
    }

    /// The shared miss handler: the target in EAX becomes the exit
    /// argument, guest EAX and ECX come back, and translated code leaves
    /// with `reason`.
    pub fn miss_handler(&mut self, reason: u32) {
        let reason = reason as i32;
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [ARG], eax
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
            ; gs mov DWORD [REASON], reason
        );
        self.far_exit();
    }

    /// Points the `jmp rel32` at offset `at` to the current position.
    pub fn patch_jmp_here(&mut self, at: u32) {
        let rel = self.offset().wrapping_sub(at + JMP_LEN) as i32;
        let mut m = self.ops.alter();
        m.goto(dynasmrt::AssemblyOffset(at as usize + 1));
        m.extend(rel.to_le_bytes());
    }

    /// The finished bytes.
    pub fn finish(self) -> Vec<u8> {
        self.ops
            .finalize()
            .expect("no unresolved labels in emitted code")
    }
}
