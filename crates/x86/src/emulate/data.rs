//! Ordinary data instructions (MOV, MOVZX/MOVSX, the ALU operations, INC,
//! DEC, NOT, NEG, XCHG, CMPXCHG, XADD, the bit tests, SETcc, PUSH/POP of
//! memory, and the string moves) with the guest's flags.
//!
//! These are IDENT instructions: engines run them natively. They come here
//! only when their memory operand is somewhere the engine cannot let the
//! host CPU touch: linear page 0 (which the host cannot map), a device's
//! registers (memory-mapped I/O), or memory the monitor keeps for itself.
//! So the model is complete for what kernels do there (moves, read-modify-
//! writes, bit operations, `rep movs`/`rep stos`), not for every opcode:
//! anything else is reported as unsupported with its name.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::operand::{
    mask, offset, read_mem, read_op, read_reg, set_sp, stack_read, write_mem, write_op, write_reg,
};
use super::{unsupported, Failure};
use crate::interrupt::{Exception, LinearMemory};
use crate::state::{flags as fl, CpuState};

/// The arithmetic flags the ALU writes.
const ARITH: u32 = fl::CF | fl::PF | fl::AF | fl::ZF | fl::SF | fl::OF;

/// Carries out data instruction `insn` on `cpu` (EIP already past it).
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
) -> Result<(), Failure> {
    use Mnemonic as M;
    let size = op_size(insn);
    match insn.mnemonic() {
        M::Mov => {
            let v = source(cpu, mem, insn, 1, size)?;
            write_op(cpu, mem, insn, 0, size, v)?;
        }
        M::Movzx | M::Movsx => {
            let from = insn.memory_size().size() as u32;
            let from = if insn.op1_kind() == OpKind::Register {
                insn.op1_register().size() as u32
            } else {
                from
            };
            let v = read_op(cpu, mem, insn, 1, from)?;
            let v = if insn.mnemonic() == M::Movsx {
                sign_extend(v, from)
            } else {
                v
            };
            write_reg(cpu, insn.op0_register(), v);
        }
        M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            let b = source(cpu, mem, insn, 1, size)?;
            let (r, f) = alu(insn.mnemonic(), a, b, size, cpu.eflags);
            set_flags(cpu, ARITH, f);
            if !matches!(insn.mnemonic(), M::Cmp | M::Test) {
                write_op(cpu, mem, insn, 0, size, r)?;
            }
        }
        M::Inc | M::Dec => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            let op = if insn.mnemonic() == M::Inc {
                M::Add
            } else {
                M::Sub
            };
            let (r, f) = alu(op, a, 1, size, cpu.eflags);
            // INC and DEC leave CF alone.
            set_flags(cpu, ARITH & !fl::CF, f);
            write_op(cpu, mem, insn, 0, size, r)?;
        }
        M::Not => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            write_op(cpu, mem, insn, 0, size, !a & mask(size))?;
        }
        M::Neg => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            let (r, f) = alu(M::Sub, 0, a, size, cpu.eflags);
            set_flags(cpu, ARITH, f);
            write_op(cpu, mem, insn, 0, size, r)?;
        }
        M::Xchg => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            let b = read_op(cpu, mem, insn, 1, size)?;
            // Memory first: if its write faults, no register has changed.
            if insn.op0_kind() == OpKind::Register {
                write_op(cpu, mem, insn, 1, size, a)?;
                write_op(cpu, mem, insn, 0, size, b)?;
            } else {
                write_op(cpu, mem, insn, 0, size, b)?;
                write_op(cpu, mem, insn, 1, size, a)?;
            }
        }
        M::Xadd => {
            let a = read_op(cpu, mem, insn, 0, size)?;
            let b = read_op(cpu, mem, insn, 1, size)?;
            let (r, f) = alu(M::Add, a, b, size, cpu.eflags);
            write_op(cpu, mem, insn, 0, size, r)?;
            write_op(cpu, mem, insn, 1, size, a)?;
            set_flags(cpu, ARITH, f);
        }
        M::Cmpxchg => {
            let acc = accumulator(size);
            let a = read_op(cpu, mem, insn, 0, size)?;
            let expected = read_reg(cpu, acc);
            let (_, f) = alu(M::Sub, expected, a, size, cpu.eflags);
            if a == expected {
                let src = read_op(cpu, mem, insn, 1, size)?;
                write_op(cpu, mem, insn, 0, size, src)?;
            } else {
                // The destination is written back even when unequal.
                write_op(cpu, mem, insn, 0, size, a)?;
                write_reg(cpu, acc, a);
            }
            set_flags(cpu, ARITH, f);
        }
        M::Bt | M::Bts | M::Btr | M::Btc => bit_test(cpu, mem, insn, size)?,
        m if setcc_condition(m).is_some() => {
            let taken = condition(cpu.eflags, setcc_condition(m).unwrap());
            write_op(cpu, mem, insn, 0, 1, u32::from(taken))?;
        }
        M::Push => {
            let v = read_op(cpu, mem, insn, 0, size)?;
            let sp = cpu.esp.wrapping_sub(size);
            write_mem(cpu, mem, Register::SS, sp, size, v)?;
            set_sp(cpu, sp);
        }
        M::Pop => {
            let v = stack_read(cpu, mem, 0, size)?;
            let old = cpu.esp;
            // POP computes a memory destination with ESP already popped.
            set_sp(cpu, old.wrapping_add(size));
            if let Err(e) = write_op(cpu, mem, insn, 0, size, v) {
                cpu.esp = old;
                return Err(e.into());
            }
        }
        M::Movsb
        | M::Movsw
        | M::Movsd
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd => string(cpu, mem, insn)?,
        _ => {
            return Err(unsupported(
                "a data instruction popek does not emulate, on memory it must emulate",
            ))
        }
    }
    Ok(())
}

/// The operand size of `insn` in bytes (1, 2 or 4).
fn op_size(insn: &Instruction) -> u32 {
    let from_op = |op: u32| match insn.op_kind(op) {
        OpKind::Register => Some(insn.op_register(op).size() as u32),
        OpKind::Memory => Some(insn.memory_size().size() as u32),
        _ => None,
    };
    from_op(0).or_else(|| from_op(1)).unwrap_or(4).clamp(1, 4)
}

/// Operand `op` as a source: a register, memory, or an immediate (iced
/// gives sign-extended immediates already extended).
fn source(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    op: u32,
    size: u32,
) -> Result<u32, Exception> {
    match insn.op_kind(op) {
        OpKind::Register | OpKind::Memory => read_op(cpu, mem, insn, op, size),
        _ => Ok(insn.immediate(op) as u32 & mask(size)),
    }
}

fn sign_extend(v: u32, size: u32) -> u32 {
    match size {
        1 => v as u8 as i8 as i32 as u32,
        2 => v as u16 as i16 as i32 as u32,
        _ => v,
    }
}

fn accumulator(size: u32) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        _ => Register::EAX,
    }
}

fn set_flags(cpu: &mut CpuState, which: u32, value: u32) {
    cpu.eflags = (cpu.eflags & !which) | (value & which);
}

/// ZF, SF and PF of result `r` of `size` bytes.
fn result_flags(r: u32, size: u32) -> u32 {
    let msb = 1u32 << (size * 8 - 1);
    let mut f = 0;
    if r & mask(size) == 0 {
        f |= fl::ZF;
    }
    if r & msb != 0 {
        f |= fl::SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= fl::PF;
    }
    f
}

/// `a op b` on `size` bytes: the result and the six arithmetic flags, as
/// the CPU computes them (AF undefined for the logic operations: 0 here,
/// as on the hardware we measured).
pub fn alu(op: Mnemonic, a: u32, b: u32, size: u32, eflags: u32) -> (u32, u32) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let msb = 1u32 << (size * 8 - 1);
    let carry_in = u32::from(eflags & fl::CF != 0);
    let (r, mut f) = match op {
        Mnemonic::Add | Mnemonic::Adc => {
            let c = if op == Mnemonic::Adc { carry_in } else { 0 };
            let wide = u64::from(a) + u64::from(b) + u64::from(c);
            let r = wide as u32 & m;
            let mut f = 0;
            if wide > u64::from(m) {
                f |= fl::CF;
            }
            if (a ^ r) & (b ^ r) & msb != 0 {
                f |= fl::OF;
            }
            if (a ^ b ^ r) & 0x10 != 0 {
                f |= fl::AF;
            }
            (r, f)
        }
        Mnemonic::Sub | Mnemonic::Sbb | Mnemonic::Cmp => {
            let c = if op == Mnemonic::Sbb { carry_in } else { 0 };
            let r = a.wrapping_sub(b).wrapping_sub(c) & m;
            let mut f = 0;
            if u64::from(a) < u64::from(b) + u64::from(c) {
                f |= fl::CF;
            }
            if (a ^ b) & (a ^ r) & msb != 0 {
                f |= fl::OF;
            }
            if (a ^ b ^ r) & 0x10 != 0 {
                f |= fl::AF;
            }
            (r, f)
        }
        Mnemonic::And | Mnemonic::Test => (a & b, 0),
        Mnemonic::Or => (a | b, 0),
        Mnemonic::Xor => (a ^ b, 0),
        other => unreachable!("{other:?} is no ALU operation"),
    };
    f |= result_flags(r, size);
    (r, f)
}

/// BT, BTS, BTR, BTC. A register bit offset on a memory operand reaches
/// beyond the operand (signed, in operand-sized steps); an immediate one is
/// taken modulo the operand size.
fn bit_test(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    size: u32,
) -> Result<(), Failure> {
    let bits = size * 8;
    let (bit, step) = match insn.op1_kind() {
        OpKind::Register => {
            let raw = read_reg(cpu, insn.op1_register());
            let signed = sign_extend(raw, size) as i32;
            if insn.op0_kind() == OpKind::Memory {
                (
                    signed.rem_euclid(bits as i32) as u32,
                    signed.div_euclid(bits as i32) * size as i32,
                )
            } else {
                (raw % bits, 0)
            }
        }
        _ => (insn.immediate(1) as u32 % bits, 0),
    };
    let read = |cpu: &CpuState, mem: &mut _| -> Result<u32, Exception> {
        if insn.op0_kind() == OpKind::Memory {
            let off = offset(cpu, insn, 0).wrapping_add(step as u32);
            read_mem(cpu, mem, insn.memory_segment(), off, size)
        } else {
            read_op(cpu, mem, insn, 0, size)
        }
    };
    let v = read(cpu, mem)?;
    let was = v >> bit & 1 != 0;
    let new = match insn.mnemonic() {
        Mnemonic::Bts => Some(v | 1 << bit),
        Mnemonic::Btr => Some(v & !(1 << bit)),
        Mnemonic::Btc => Some(v ^ 1 << bit),
        _ => None,
    };
    if let Some(new) = new {
        if insn.op0_kind() == OpKind::Memory {
            let off = offset(cpu, insn, 0).wrapping_add(step as u32);
            write_mem(cpu, mem, insn.memory_segment(), off, size, new)?;
        } else {
            write_op(cpu, mem, insn, 0, size, new)?;
        }
    }
    set_flags(cpu, fl::CF, if was { fl::CF } else { 0 });
    Ok(())
}

/// The condition codes of Jcc/SETcc/CMOVcc, by their encoding (0 = O .. 15 = G).
fn condition(eflags: u32, cc: u8) -> bool {
    let f = |b: u32| eflags & b != 0;
    let r = match cc >> 1 {
        0 => f(fl::OF),
        1 => f(fl::CF),
        2 => f(fl::ZF),
        3 => f(fl::CF) || f(fl::ZF),
        4 => f(fl::SF),
        5 => f(fl::PF),
        6 => f(fl::SF) != f(fl::OF),
        _ => f(fl::ZF) || f(fl::SF) != f(fl::OF),
    };
    r != (cc & 1 != 0)
}

fn setcc_condition(m: Mnemonic) -> Option<u8> {
    use Mnemonic as M;
    Some(match m {
        M::Seto => 0,
        M::Setno => 1,
        M::Setb => 2,
        M::Setae => 3,
        M::Sete => 4,
        M::Setne => 5,
        M::Setbe => 6,
        M::Seta => 7,
        M::Sets => 8,
        M::Setns => 9,
        M::Setp => 10,
        M::Setnp => 11,
        M::Setl => 12,
        M::Setge => 13,
        M::Setle => 14,
        M::Setg => 15,
        _ => return None,
    })
}

/// True for the string instructions [`string`] carries out.
pub(super) fn is_string(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
        M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
    )
}

/// MOVS, STOS and LODS, with REP. Each iteration commits before the next,
/// as on hardware: a fault part-way leaves ECX/ESI/EDI counting what was
/// done, and the caller leaves EIP at the instruction.
pub(super) fn string(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
) -> Result<(), Failure> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    let size: u32 = match m {
        M::Movsb | M::Stosb | M::Lodsb => 1,
        M::Movsw | M::Stosw | M::Lodsw => 2,
        _ => 4,
    };
    let a32 = (0..insn.op_count())
        .any(|op| matches!(insn.op_kind(op), OpKind::MemorySegESI | OpKind::MemoryESEDI));
    let amask = if a32 { u32::MAX } else { 0xFFFF };
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let step = if cpu.eflags & fl::DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    let src_seg = insn.memory_segment();
    loop {
        if rep && cpu.ecx & amask == 0 {
            break;
        }
        let advance = |r: u32| (r & !amask) | (r.wrapping_add(step) & amask);
        match m {
            M::Movsb | M::Movsw | M::Movsd => {
                let v = read_mem(cpu, mem, src_seg, cpu.esi & amask, size)?;
                write_mem(cpu, mem, Register::ES, cpu.edi & amask, size, v)?;
                cpu.esi = advance(cpu.esi);
                cpu.edi = advance(cpu.edi);
            }
            M::Stosb | M::Stosw | M::Stosd => {
                let v = read_reg(cpu, accumulator(size));
                write_mem(cpu, mem, Register::ES, cpu.edi & amask, size, v)?;
                cpu.edi = advance(cpu.edi);
            }
            _ => {
                let v = read_mem(cpu, mem, src_seg, cpu.esi & amask, size)?;
                write_reg(cpu, accumulator(size), v);
                cpu.esi = advance(cpu.esi);
            }
        }
        if !rep {
            break;
        }
        cpu.ecx = (cpu.ecx & !amask) | (cpu.ecx.wrapping_sub(1) & amask);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const AT: u32 = 0x9000;

    #[test]
    fn moves_between_memory_and_registers() {
        let (mut cpu, mut m) = machine();
        write32(&mut m, AT, 0x8899_AABB);
        cpu.ebx = AT;
        ok(&mut cpu, &mut m, &[0x8B, 0x03]); // mov eax, [ebx]
        assert_eq!(cpu.eax, 0x8899_AABB);
        ok(&mut cpu, &mut m, &[0x0F, 0xB7, 0x0B]); // movzx ecx, word [ebx]
        assert_eq!(cpu.ecx, 0xAABB);
        ok(&mut cpu, &mut m, &[0x0F, 0xBE, 0x13]); // movsx edx, byte [ebx]
        assert_eq!(cpu.edx, 0xFFFF_FFBB);
        ok(&mut cpu, &mut m, &[0x66, 0xC7, 0x43, 0x02, 0x34, 0x12]); // mov word [ebx+2], 0x1234
        assert_eq!(read32(&mut m, AT), 0x1234_AABB);
        cpu.eax = 0x0000_0077;
        let at = cpu.eip;
        ok(&mut cpu, &mut m, &[0xA2, 0x00, 0x90, 0x00, 0x00]); // mov [0x9000], al
        assert_eq!(read32(&mut m, AT), 0x1234_AA77);
        assert_eq!(cpu.eip, at + 5);
    }

    #[test]
    fn read_modify_writes_set_flags() {
        let (mut cpu, mut m) = machine();
        write32(&mut m, AT, 0xFFFF_FFFF);
        cpu.ebx = AT;
        ok(&mut cpu, &mut m, &[0x83, 0x03, 0x01]); // add dword [ebx], 1
        assert_eq!(read32(&mut m, AT), 0);
        assert_ne!(cpu.eflags & fl::CF, 0);
        assert_ne!(cpu.eflags & fl::ZF, 0);
        ok(&mut cpu, &mut m, &[0xFF, 0x0B]); // dec dword [ebx]
        assert_eq!(read32(&mut m, AT), 0xFFFF_FFFF);
        assert_ne!(cpu.eflags & fl::CF, 0, "DEC keeps CF");
        assert_ne!(cpu.eflags & fl::SF, 0);
        ok(&mut cpu, &mut m, &[0x81, 0x23, 0x0F, 0, 0, 0]); // and dword [ebx], 15
        assert_eq!(read32(&mut m, AT), 15);
        assert_eq!(cpu.eflags & (fl::CF | fl::OF | fl::ZF), 0);
        ok(&mut cpu, &mut m, &[0x83, 0x3B, 0x0F]); // cmp dword [ebx], 15
        assert_ne!(cpu.eflags & fl::ZF, 0);
        ok(&mut cpu, &mut m, &[0xF6, 0x03, 0x10]); // test byte [ebx], 0x10
        assert_ne!(cpu.eflags & fl::ZF, 0);
        cpu.eax = 15;
        cpu.ecx = 99;
        ok(&mut cpu, &mut m, &[0xF0, 0x0F, 0xB1, 0x0B]); // lock cmpxchg [ebx], ecx
        assert_eq!(read32(&mut m, AT), 99);
        assert_ne!(cpu.eflags & fl::ZF, 0);
        ok(&mut cpu, &mut m, &[0x0F, 0xB1, 0x0B]); // cmpxchg [ebx], ecx: unequal now
        assert_eq!(cpu.eax, 99);
        assert_eq!(cpu.eflags & fl::ZF, 0);
    }

    #[test]
    fn bit_tests_reach_past_the_operand_with_a_register_offset() {
        let (mut cpu, mut m) = machine();
        cpu.ebx = AT;
        cpu.ecx = 35; // bit 3 of the next dword
        ok(&mut cpu, &mut m, &[0x0F, 0xAB, 0x0B]); // bts [ebx], ecx
        assert_eq!(read32(&mut m, AT + 4), 8);
        assert_eq!(cpu.eflags & fl::CF, 0);
        ok(&mut cpu, &mut m, &[0x0F, 0xA3, 0x0B]); // bt [ebx], ecx
        assert_ne!(cpu.eflags & fl::CF, 0);
        cpu.ecx = (-1i32) as u32; // bit 31 of the dword before
        ok(&mut cpu, &mut m, &[0x0F, 0xAB, 0x0B]);
        assert_eq!(read32(&mut m, AT - 4), 0x8000_0000);
        ok(&mut cpu, &mut m, &[0x0F, 0xBA, 0x33, 0x23]); // btr dword [ebx+0], 35 % 32
        assert_eq!(read32(&mut m, AT), 0);
    }

    #[test]
    fn rep_stos_and_movs_count_down_and_commit() {
        let (mut cpu, mut m) = machine();
        cpu.edi = AT;
        cpu.ecx = 4;
        cpu.eax = 0xAB;
        cpu.es = cpu.ds;
        ok(&mut cpu, &mut m, &[0xF3, 0xAA]); // rep stosb
        assert_eq!(read32(&mut m, AT), 0xABAB_ABAB);
        assert_eq!((cpu.ecx, cpu.edi), (0, AT + 4));
        cpu.esi = AT;
        cpu.edi = AT + 0x10;
        cpu.ecx = 1;
        let at = cpu.eip;
        ok(&mut cpu, &mut m, &[0xF3, 0xA5]); // rep movsd
        assert_eq!(read32(&mut m, AT + 0x10), 0xABAB_ABAB);
        assert_eq!(cpu.eip, at + 2);
    }

    #[test]
    fn a_write_past_the_segment_limit_is_gp_and_changes_nothing() {
        let (mut cpu, mut m) = machine();
        cpu.ds.limit = 0xFFF;
        cpu.ebx = 0x1000;
        assert_eq!(fault(&mut cpu, &mut m, &[0x89, 0x03]), gp(0)); // mov [ebx], eax
    }

    #[test]
    fn add_and_sub_flags_at_the_edges() {
        let (r, f) = alu(Mnemonic::Add, 0x7FFF_FFFF, 1, 4, 0);
        assert_eq!(r, 0x8000_0000);
        assert_eq!(
            f & (fl::OF | fl::SF | fl::CF | fl::ZF | fl::AF),
            fl::OF | fl::SF | fl::AF
        );
        let (r, f) = alu(Mnemonic::Add, 0xFF, 1, 1, 0);
        assert_eq!(r, 0);
        assert_eq!(
            f & (fl::CF | fl::ZF | fl::PF | fl::OF),
            fl::CF | fl::ZF | fl::PF
        );
        let (r, f) = alu(Mnemonic::Sub, 0, 1, 2, 0);
        assert_eq!(r, 0xFFFF);
        assert_eq!(
            f & (fl::CF | fl::SF | fl::AF | fl::OF),
            fl::CF | fl::SF | fl::AF
        );
        let (_, f) = alu(Mnemonic::Cmp, 0x80, 1, 1, 0);
        assert_eq!(f & fl::OF, fl::OF, "-128 - 1 overflows");
        let (r, f) = alu(Mnemonic::Adc, 0xFFFF_FFFF, 0, 4, fl::CF);
        assert_eq!((r, f & fl::CF), (0, fl::CF));
        let (r, f) = alu(Mnemonic::Sbb, 0, 0, 4, fl::CF);
        assert_eq!((r, f & fl::CF), (0xFFFF_FFFF, fl::CF));
    }

    #[test]
    fn conditions_follow_the_encoding() {
        assert!(condition(fl::ZF, 4)); // e
        assert!(!condition(fl::ZF, 5)); // ne
        assert!(condition(fl::SF, 12)); // l: SF != OF
        assert!(condition(fl::SF | fl::OF, 13)); // ge
        assert!(condition(fl::CF, 6)); // be
        assert!(condition(0, 7)); // a
    }
}
