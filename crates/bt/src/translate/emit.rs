//! The emitter: the host code sequences translated blocks are made of,
//! written with dynasmrt for 32-bit (compatibility-mode) execution.
//!
//! Every sequence here runs between two guest instructions whose
//! arithmetic flags live in the host EFLAGS, so none of them may change
//! the flags: only MOV, MOVZX, LEA, PUSH, PUSHFD, POP, JMP, JECXZ and
//! segment loads. The one exception is inline POPF, which defines every
//! flag itself: it computes with AND/OR first and sets the guest's flags
//! last (see [`Emitter::popf`]).
//! Translated code reaches the vCPU area and the indirect-branch table
//! through GS, a segment based at the monitor region.
//!
//! The inline flag instructions work on the virtual CPU's flags in the
//! vCPU area: `vif` (IF as 0 or 0x200), `vsys` (the other system bits:
//! TF, IOPL, NT, AC, VIF, VIP, ID) and `irq_pending` (0x200 when an
//! external interrupt waits for IF). The host EFLAGS only ever hold the
//! arithmetic flags and DF, with the host's IF=1 and nothing else: that is
//! what lets PUSHF build the guest's image with LEA alone.

use dynasmrt::x86::{Rd, X86Relocation};
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi, VecAssembler};
use iced_x86::Register;

use x86::state::flags;

use crate::contract::gs::{
    EXIT_FAR, FROM, GUEST_CR, GUEST_FS, GUEST_GS, GUEST_SEL, INLINED, INLINE_HITS, IRQ_PENDING,
    SAVED_EAX, SAVED_EBX, SAVED_ECX, SAVED_EDX, SEG_CACHE, SEL_LOADED, STI_SHADOW_AT, TABLE,
    TARGET, TC_ARG, TC_REASON, VIF, VSYS,
};
use crate::contract::{
    Inline, TABLE_ENTRY_SIZE, TABLE_WAYS, VECTOR_GATE_OFFSET, VIRTUAL_SYSTEM_FLAGS,
};

/// GS offset where inline POPF keeps the value it popped (`scratch[2]`).
const POPPED: i32 = TARGET;
/// The bytes of [`Emitter::vector_gate`].
pub const VECTOR_GATE: [u8; 6] = {
    let o = VECTOR_GATE_OFFSET.to_le_bytes();
    [0x65, 0xA3, o[0], o[1], o[2], o[3]]
};

/// The system bits a POPF at CPL 0 loads (IF aside, which has its own
/// field); VIF and VIP keep their values, RF and VM are not in `vsys`.
const POPF_SYSTEM: u32 = flags::TF | flags::IOPL | flags::NT | flags::AC | flags::ID;
/// The bits of `vsys` POPF leaves alone.
const POPF_KEEPS: u32 = flags::VIF | flags::VIP;
const _: () = assert!(
    POPF_SYSTEM | POPF_KEEPS == VIRTUAL_SYSTEM_FLAGS,
    "POPF must account for every bit of vsys"
);

/// The dynasm register for a 16- or 32-bit general register of iced's.
fn gpr(reg: Register) -> Rd {
    const ALL: [Rd; 8] = [
        Rd::EAX,
        Rd::ECX,
        Rd::EDX,
        Rd::EBX,
        Rd::ESP,
        Rd::EBP,
        Rd::ESI,
        Rd::EDI,
    ];
    ALL[reg.number()]
}

/// Length of the unconditional `jmp rel32` the cache patches to chain.
pub const JMP_LEN: u32 = 5;

/// Where an inline load of a data segment register takes its selector.
pub enum SelectorFrom {
    /// MOV Sreg, r16/r32.
    Register(Register),
    /// POP Sreg, of this operand size (2 or 4).
    Pop(u8),
    /// MOV Sreg, m16: `movzx eax, WORD <the guest's operand>`, encoded.
    Memory(Vec<u8>),
}

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

    /// `jmp rel32` with a displacement to patch later by [`Self::patch_jmp_here`];
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
            ; gs mov DWORD [TC_ARG], arg
            ; gs mov DWORD [TC_REASON], reason
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

    /// The vector gate, `mov gs:[VECTOR_GATE_OFFSET], eax` (A3 moffs32,
    /// with GS): a store to scratch when the guest's vector state is
    /// loaded, a #GP past the limit of GS when it is not, which the engine
    /// turns into a run with it (`engine::exits`). It changes no register
    /// and no flag; the engine recognises it by its bytes ([`VECTOR_GATE`]).
    pub fn vector_gate(&mut self) {
        self.ops.extend(VECTOR_GATE);
    }

    /// Appends raw, already encoded bytes (an operand load made by iced).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.ops.extend(bytes);
    }

    /// ECX = the table slot of the EIP in EAX (`cache::lookup::slot`):
    /// the low 16 bits of EIP plus its byte-swapped self, so that targets
    /// 64 KiB apart do not share a slot. MOV, BSWAP, LEA and MOVZX leave
    /// the flags alone.
    fn slot_of_eax(&mut self) {
        dynasm!(self.ops
            ; .arch x86
            ; mov ecx, eax
            ; bswap ecx
            ; lea ecx, [ecx + eax]
            ; movzx ecx, cx
        );
    }

    /// The inline probe of the indirect-branch table for the linear target
    /// in EAX (guest EAX and ECX already saved): on a hit, restores both and
    /// jumps to the translation; on a miss, jumps to the shared handler at
    /// `miss` with EAX still holding the target, which probes the other
    /// entries ([`Emitter::miss_handler`]). With `always_miss` (single-step
    /// blocks, which must return to the monitor after one instruction) it
    /// only jumps to the handler's part that leaves.
    pub fn probe(&mut self, miss: u32, always_miss: bool) {
        if always_miss {
            self.jmp_to(miss + plain_miss_offset());
            return;
        }
        self.slot_of_eax();
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, [ecx * 8 + TABLE]
            ; lea ecx, [ecx + eax]
        );
        // `jecxz` over the 5-byte miss jump, in bytes: dynasm 5.1 adds a 67
        // prefix, which in 32-bit code makes it JCXZ, testing only CX (a
        // slot that holds an EIP 64 KiB away would then "match").
        self.ops.extend([0xE3, JMP_LEN as u8]);
        self.jmp_to(miss);
        self.probe_hit(0);
    }

    /// A probe's hit in entry `way` (0 to `TABLE_WAYS - 1`) past the slot
    /// of the EIP in EAX: the host address becomes the jump target, the hit
    /// is counted, guest EAX and ECX come back.
    fn probe_hit(&mut self, way: i32) {
        let host = TABLE + 4 + way * TABLE_ENTRY_SIZE as i32;
        self.slot_of_eax();
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, [ecx * 8 + host]
            ; gs mov DWORD [TARGET], ecx
            // Count the hit; LEA, unlike INC, leaves the guest's flags alone.
            ; gs mov ecx, DWORD [INLINE_HITS]
            ; lea ecx, [ecx + 1]
            ; gs mov DWORD [INLINE_HITS], ecx
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
            ; gs jmp DWORD [TARGET]
        );
    }

    /// The shared miss handler, for a probe of the EIP in EAX that missed
    /// its slot's entry: it probes the next entries (the table is a
    /// window of `TABLE_WAYS` entries per slot, see `cache::lookup`) and
    /// jumps to the one that holds it; otherwise, from
    /// [`plain_miss_offset`] on, the target becomes the exit argument,
    /// guest EAX and ECX come back, and translated code leaves with
    /// `reason`.
    pub fn miss_handler(&mut self, reason: u32) {
        self.other_ways();
        debug_assert_eq!(self.offset(), plain_miss_offset());
        self.plain_miss(reason);
    }

    /// The miss handler's probes of the entries past the slot's first,
    /// each jumping to the translation on a hit.
    fn other_ways(&mut self) {
        for way in 1..TABLE_WAYS as i32 {
            let next = self.ops.new_dynamic_label();
            self.entry_compare(way);
            self.jecxz_else(next);
            self.probe_hit(way);
            dynasm!(self.ops ; .arch x86 ; =>next);
        }
    }

    /// ECX = 0 exactly if entry `way` past the slot of the EIP in EAX
    /// holds that EIP.
    fn entry_compare(&mut self, way: i32) {
        self.slot_of_eax();
        let at = TABLE + way * TABLE_ENTRY_SIZE as i32;
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, [ecx * 8 + at]
            ; lea ecx, [ecx + eax]
        );
    }

    fn plain_miss(&mut self, reason: u32) {
        let reason = reason as i32;
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [TC_ARG], eax
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
            ; gs mov DWORD [TC_REASON], reason
        );
        self.far_exit();
    }

    /// Adds one to the vCPU area's counter of `kind` (ECX already saved):
    /// MOV and LEA, unlike INC, leave the guest's flags alone.
    fn count(&mut self, kind: Inline) {
        let at = INLINED + 4 * kind as i32;
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, DWORD [at]
            ; lea ecx, [ecx + 1]
            ; gs mov DWORD [at], ecx
        );
    }

    /// Leaves translated code with `reason` and argument `arg` (a guest
    /// EIP) if ECX is zero (`when_zero`) or non-zero (otherwise), guest ECX
    /// saved in `scratch[1]` and restored on both paths. JECXZ is the only
    /// flag-free conditional branch; the exit path is inline, since it has
    /// no relative addresses and costs no extra jump on the common path.
    fn exit_on_ecx(&mut self, when_zero: bool, reason: u32, arg: u32) {
        let mut leave = Emitter::new(0);
        dynasm!(leave.ops ; .arch x86 ; gs mov ecx, DWORD [SAVED_ECX]);
        leave.exit(reason, arg);
        let leave = leave.finish();
        let restore_len = 7u8;
        let len = u8::try_from(leave.len()).expect("a short exit");
        // `jecxz` in bytes: dynasm 5.1 adds a 67 prefix (see `probe`).
        if when_zero {
            // jecxz leave; restore; jmp short over; leave: ...
            self.ops.extend([0xE3, restore_len + 2]);
            dynasm!(self.ops ; .arch x86 ; gs mov ecx, DWORD [SAVED_ECX]);
            self.ops.extend([0xEB, len]);
            self.ops.extend(leave);
        } else {
            // jecxz stay; leave: ...; stay: restore
            self.ops.extend([0xE3, len]);
            self.ops.extend(leave);
            dynasm!(self.ops ; .arch x86 ; gs mov ecx, DWORD [SAVED_ECX]);
        }
    }

    /// Counts `kind` with guest ECX saved around the count.
    fn count_saving_ecx(&mut self, kind: Inline) {
        dynasm!(self.ops ; .arch x86 ; gs mov DWORD [SAVED_ECX], ecx);
        self.count(kind);
        dynasm!(self.ops ; .arch x86 ; gs mov ecx, DWORD [SAVED_ECX]);
    }

    /// Inline CLI (CPL 0): clears the virtual IF. The first instruction
    /// does the work; the rest only counts it.
    pub fn cli(&mut self) {
        dynasm!(self.ops ; .arch x86 ; gs mov WORD [VIF], 0);
        self.count_saving_ecx(Inline::Cli);
    }

    /// Inline PUSH Sreg: pushes the guest's selector (`guest_sel[sreg]`)
    /// as a dword, zero-extended, or as a word. The push is the first
    /// instruction and the only access to guest memory, so a fault is at
    /// the guest instruction's first byte with nothing changed.
    pub fn push_sreg(&mut self, sreg: usize, word: bool) {
        let at = GUEST_SEL + 4 * sreg as i32;
        if word {
            dynasm!(self.ops ; .arch x86 ; gs push WORD [at]);
        } else {
            dynasm!(self.ops ; .arch x86 ; gs push DWORD [at]);
        }
        self.count_saving_ecx(Inline::PushSreg);
    }

    /// Inline MOV r, Sreg with a register destination: a 32-bit register
    /// gets the zero-extended selector, a 16-bit one only its low word.
    pub fn mov_from_sreg(&mut self, dest: Register, sreg: usize) {
        self.count_saving_ecx(Inline::MovFromSreg);
        let at = GUEST_SEL + 4 * sreg as i32;
        let n = gpr(dest);
        if dest.is_gpr16() {
            dynasm!(self.ops ; .arch x86 ; gs mov Rw(n), WORD [at]);
        } else {
            dynasm!(self.ops ; .arch x86 ; gs mov Rd(n), DWORD [at]);
        }
    }

    /// Inline MOV DS/ES/FS/GS, r16/r32/m16 or POP DS/ES/FS/GS at CPL 0,
    /// for sreg index 2 to 5, the selector taken as `from` says.
    ///
    /// The selector indexes the segment-descriptor cache
    /// (`contract::SegCacheEntry`) by its low byte. The load is inline only
    /// if the entry names that selector and the guest's descriptor, read
    /// through the monitor's flat CS at its linear address, still holds
    /// the bytes cached with it: then the entry's host selector (an LDT
    /// entry with the kernel-view shadow) is loaded (for GS, which is the
    /// monitor's here, only stored in `guest_gs`), `guest_sel` (and
    /// `guest_fs`) updated, and the monitor takes the new segment over at
    /// the next exit (`Monitor::run_translated`). Otherwise the
    /// instruction leaves as a callout (`reason`, its linear address
    /// `eip`), whose emulation refills the entry. EAX, ECX, EDX and EBX are
    /// borrowed, saved in the scratch slots first: the two reads that may
    /// fault (the selector's read from the stack or memory, the descriptor
    /// read) come after that
    /// and before anything changes, and state recreation puts the four
    /// back (exits.rs).
    pub fn load_sreg(&mut self, sreg: usize, from: &SelectorFrom, reason: u32, eip: u32) {
        let slow = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [SAVED_EAX], eax
            ; gs mov DWORD [SAVED_ECX], ecx
            ; gs mov DWORD [SAVED_EDX], edx
            ; gs mov DWORD [SAVED_EBX], ebx
        );
        match from {
            SelectorFrom::Register(r) => {
                let n = gpr(*r);
                dynasm!(self.ops ; .arch x86 ; movzx eax, Rw(n));
            }
            SelectorFrom::Pop(_) => dynasm!(self.ops ; .arch x86 ; movzx eax, WORD [esp]),
            // The guest's own operand, its registers not yet changed.
            SelectorFrom::Memory(load) => self.ops.extend(load.iter().copied()),
        }
        dynasm!(self.ops
            ; .arch x86
            ; movzx edx, al
            ; lea edx, [edx * 8]
            ; lea edx, [edx * 4]
            ; gs mov ecx, [edx + SEG_CACHE]
            ; lea ecx, [ecx + eax]
        );
        self.jecxz_else(slow);
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, [edx + SEG_CACHE + 4]
            ; cs mov eax, [ecx]
            ; cs mov ecx, [ecx + 4]
            ; gs mov ebx, [edx + SEG_CACHE + 8]
            ; lea eax, [eax + ebx]
            ; gs mov ebx, [edx + SEG_CACHE + 12]
            ; lea ecx, [ecx + ebx]
        );
        self.jecxz_else(slow);
        dynasm!(self.ops ; .arch x86 ; mov ecx, eax);
        self.jecxz_else(slow);
        dynasm!(self.ops ; .arch x86 ; gs mov ecx, [edx + SEG_CACHE + 16]);
        // `mov sreg, ecx` (8E /r, reg = the segment register) in bytes:
        // dynasm 5.1 encodes it as 8C, the store the other way (see
        // `load_fs`).
        match sreg {
            2 => self.ops.extend([0x8E, 0xD9]),
            3 => self.ops.extend([0x8E, 0xC1]),
            4 => {
                self.ops.extend([0x8E, 0xE1]);
                dynasm!(self.ops ; .arch x86 ; gs mov WORD [GUEST_FS], cx);
            }
            // GS is the monitor's here: the guest's lives in `guest_gs`,
            // where GS-override accesses take it from.
            5 => dynasm!(self.ops ; .arch x86 ; gs mov WORD [GUEST_GS], cx),
            _ => unreachable!("only DS, ES, FS and GS load inline"),
        }
        let at = GUEST_SEL + 4 * sreg as i32;
        let loaded = SEL_LOADED + sreg as i32;
        dynasm!(self.ops
            ; .arch x86
            ; gs mov ecx, [edx + SEG_CACHE + 20]
            ; gs mov DWORD [at], ecx
            ; gs mov BYTE [loaded], 1
        );
        self.restore_four();
        if let SelectorFrom::Pop(size) = *from {
            let size = i32::from(size);
            dynasm!(self.ops ; .arch x86 ; lea esp, [esp + size]);
        }
        dynasm!(self.ops ; .arch x86 ; jmp =>done ; =>slow);
        self.restore_four();
        self.exit(reason, eip);
        dynasm!(self.ops ; .arch x86 ; =>done);
    }

    /// `jecxz` over a `jmp` to `label`: goes on when ECX is zero.
    fn jecxz_else(&mut self, label: dynasmrt::DynamicLabel) {
        // In bytes: dynasm adds a 67 prefix to JECXZ (see `probe`).
        self.ops.extend([0xE3, JMP_LEN as u8]);
        let before = self.offset();
        dynasm!(self.ops ; .arch x86 ; jmp =>label);
        debug_assert_eq!(self.offset() - before, JMP_LEN);
    }

    fn restore_four(&mut self) {
        dynasm!(self.ops
            ; .arch x86
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
            ; gs mov edx, DWORD [SAVED_EDX]
            ; gs mov ebx, DWORD [SAVED_EBX]
        );
    }

    /// Inline MOV r32, CRn (CPL 0; n is 0, 2, 3 or 4).
    pub fn mov_from_cr(&mut self, dest: Register, cr: usize) {
        self.count_saving_ecx(Inline::MovFromCr);
        let at = GUEST_CR + 4 * cr as i32;
        let n = gpr(dest);
        dynasm!(self.ops ; .arch x86 ; gs mov Rd(n), DWORD [at]);
    }

    /// Inline STI (CPL 0): sets the virtual IF, and if that opens the
    /// window for an interrupt that waits (IF was clear, `irq_pending` set)
    /// leaves with `reason` and the next instruction's linear EIP `next`,
    /// so that the monitor delivers it after that instruction (STI's
    /// shadow). Its last store names the host address of that instruction
    /// in `sti_shadow_at`, so that a kick landing right there is known to
    /// be inside the shadow too; the translator keeps that instruction in
    /// the same block.
    pub fn sti(&mut self, reason: u32, next: u32) {
        dynasm!(self.ops ; .arch x86 ; gs mov DWORD [SAVED_ECX], ecx);
        self.count(Inline::Sti);
        let window = (flags::IF << 16) as i32;
        dynasm!(self.ops
            ; .arch x86
            // IF | pending << 16: exactly `window` when IF was clear and an
            // interrupt waits.
            ; gs mov ecx, DWORD [VIF]
            ; gs mov WORD [VIF], flags::IF as i16
            ; lea ecx, [ecx - window]
        );
        self.exit_on_ecx(true, reason, next);
        // `mov dword gs:[sti_shadow_at], imm32` is 11 bytes long.
        let shadow = self.here().wrapping_add(11) as i32;
        dynasm!(self.ops ; .arch x86 ; gs mov DWORD [STI_SHADOW_AT], shadow);
    }

    /// Inline PUSHFD: pushes the guest's EFLAGS image. PUSHFD itself does
    /// the push (so a fault happens at the guest instruction's first byte,
    /// with nothing changed) and supplies the arithmetic flags; the host
    /// image is exactly those | FIXED1 | IF, so LEA can swap the host's IF
    /// for the virtual system bits without touching the flags:
    /// `image - IF + vsys + vif`.
    pub fn pushf(&mut self) {
        self.ops.push(0x9C); // pushfd
        dynasm!(self.ops
            ; .arch x86
            ; gs mov DWORD [SAVED_EAX], eax
            ; gs mov DWORD [SAVED_ECX], ecx
            ; mov eax, [esp]
            ; gs mov ecx, DWORD [VSYS]
            ; lea eax, [eax + ecx - flags::IF as i32]
            ; gs movzx ecx, WORD [VIF]
            ; lea eax, [eax + ecx]
            ; mov [esp], eax
        );
        self.count(Inline::Pushf);
        dynasm!(self.ops
            ; .arch x86
            ; gs mov eax, DWORD [SAVED_EAX]
            ; gs mov ecx, DWORD [SAVED_ECX]
        );
    }

    /// Inline POPFD (CPL 0). `pop gs:[popped]` is the guest's pop (its only
    /// access to guest memory, so a fault is at the first byte with nothing
    /// changed); then the system bits go to `vsys` and `vif`, and the
    /// arithmetic flags and DF to the host EFLAGS without a POPFD, which
    /// would let the guest's TF, NT or AC reach the host and needs a stack
    /// slot: DF through STD/CLD, OF through `add al, 0x78` on the OF bit
    /// alone (0x80 overflows, 0x78 does not), SF ZF AF PF CF through SAHF.
    /// POPF defines all of them, so the AND/OR before that may clobber the
    /// flags. If the popped value sets TF, or sets IF while an interrupt
    /// waits, it leaves with `reason` and the next instruction's linear
    /// EIP `next`.
    pub fn popf(&mut self, reason: u32, next: u32) {
        dynasm!(self.ops
            ; .arch x86
            ; gs pop DWORD [POPPED]
            ; gs mov DWORD [SAVED_EAX], eax
            ; gs mov DWORD [SAVED_ECX], ecx
        );
        self.count(Inline::Popf);
        dynasm!(self.ops
            ; .arch x86
            // vsys = (popped & POPF_SYSTEM) | (vsys & POPF_KEEPS)
            ; gs mov eax, DWORD [POPPED]
            ; and eax, POPF_SYSTEM as i32
            ; gs mov ecx, DWORD [VSYS]
            ; and ecx, POPF_KEEPS as i32
            ; or ecx, eax
            ; gs mov DWORD [VSYS], ecx
            // vif = popped & IF
            ; gs mov eax, DWORD [POPPED]
            ; and eax, flags::IF as i32
            ; gs mov WORD [VIF], ax
            // ECX = popped & (TF | pending): non-zero means leave.
            ; gs movzx ecx, WORD [IRQ_PENDING]
            ; or ecx, flags::TF as i32
            ; gs and ecx, DWORD [POPPED]
            // The guest's DF, OF, then SF ZF AF PF CF, from the popped value.
            ; gs mov eax, DWORD [POPPED]
            ; test ah, (flags::DF >> 8) as i8
        );
        // jz +3; std; jmp +1; cld
        self.ops.extend([0x74, 0x03, 0xFD, 0xEB, 0x01, 0xFC]);
        dynasm!(self.ops
            ; .arch x86
            ; mov al, ah
            ; and al, (flags::OF >> 8) as i8
            ; add al, 0x78
            ; gs mov ah, BYTE [POPPED]
            ; sahf
            ; gs mov eax, DWORD [SAVED_EAX]
        );
        self.exit_on_ecx(false, reason, next);
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

/// Where the shared miss handler's part that only leaves begins: the
/// probes of the other entries before it are a fixed sequence.
pub fn plain_miss_offset() -> u32 {
    let mut em = Emitter::new(0);
    em.other_ways();
    em.offset()
}
