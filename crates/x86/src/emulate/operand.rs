//! Operands: general registers by iced name, effective addresses, segment
//! checks (usable, type, limit) and reads/writes of 8/16/32-bit values in
//! registers, memory and on the stack.

use iced_x86::{Instruction, OpKind, Register};

use crate::descriptor::types;
use crate::interrupt::{vector, Exception, LinearMemory};
use crate::state::{CpuState, Segment};

/// How a memory operand is used, which decides the segment type check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read (data, or readable code).
    Read,
    /// Write (writable data only).
    Write,
}

/// The 32-bit register `reg` (EAX..EDI) lives in.
fn gpr32(cpu: &mut CpuState, reg: Register) -> &mut u32 {
    match reg.full_register32() {
        Register::EAX => &mut cpu.eax,
        Register::ECX => &mut cpu.ecx,
        Register::EDX => &mut cpu.edx,
        Register::EBX => &mut cpu.ebx,
        Register::ESP => &mut cpu.esp,
        Register::EBP => &mut cpu.ebp,
        Register::ESI => &mut cpu.esi,
        Register::EDI => &mut cpu.edi,
        other => unreachable!("{other:?} is not a 32-bit-mode general register"),
    }
}

/// True for AH, CH, DH, BH, which name bits 8-15 of their register.
fn is_high_byte(reg: Register) -> bool {
    matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    )
}

/// The value of general register `reg` (8, 16 or 32 bits), zero-extended.
pub(super) fn read_reg(cpu: &CpuState, reg: Register) -> u32 {
    let full = match reg.full_register32() {
        Register::EAX => cpu.eax,
        Register::ECX => cpu.ecx,
        Register::EDX => cpu.edx,
        Register::EBX => cpu.ebx,
        Register::ESP => cpu.esp,
        Register::EBP => cpu.ebp,
        Register::ESI => cpu.esi,
        Register::EDI => cpu.edi,
        other => unreachable!("{other:?} is not a 32-bit-mode general register"),
    };
    if is_high_byte(reg) {
        (full >> 8) & 0xFF
    } else {
        full & mask(reg.size() as u32)
    }
}

/// Writes general register `reg`; 8 and 16-bit writes keep the other bits.
pub(super) fn write_reg(cpu: &mut CpuState, reg: Register, value: u32) {
    let high = is_high_byte(reg);
    let size = reg.size() as u32;
    let full = gpr32(cpu, reg);
    *full = if high {
        (*full & !0xFF00) | ((value & 0xFF) << 8)
    } else {
        (*full & !mask(size)) | (value & mask(size))
    };
}

/// The all-ones value of `size` bytes.
pub(super) const fn mask(size: u32) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// The segment register iced names `reg`.
pub(super) fn sreg(cpu: &CpuState, reg: Register) -> &Segment {
    match reg {
        Register::ES => &cpu.es,
        Register::CS => &cpu.cs,
        Register::SS => &cpu.ss,
        Register::FS => &cpu.fs,
        Register::GS => &cpu.gs,
        _ => &cpu.ds,
    }
}

/// The segment register iced names `reg`, for loading.
pub(super) fn sreg_mut(cpu: &mut CpuState, reg: Register) -> &mut Segment {
    match reg {
        Register::ES => &mut cpu.es,
        Register::CS => &mut cpu.cs,
        Register::SS => &mut cpu.ss,
        Register::FS => &mut cpu.fs,
        Register::GS => &mut cpu.gs,
        _ => &mut cpu.ds,
    }
}

/// Memory operand `op`'s address from the guest's registers, with the
/// segment base added when `with_base` (iced asks for both).
fn address(cpu: &CpuState, insn: &Instruction, op: u32, with_base: bool) -> u32 {
    insn.virtual_address(op, 0, |reg, _, _| {
        Some(if !reg.is_segment_register() {
            u64::from(read_reg(cpu, reg))
        } else if with_base {
            u64::from(sreg(cpu, reg).base)
        } else {
            0
        })
    })
    .unwrap_or(0) as u32
}

/// The offset (effective address, before the segment base) of memory
/// operand `op`, wrapped to the address size.
pub(super) fn offset(cpu: &CpuState, insn: &Instruction, op: u32) -> u32 {
    address(cpu, insn, op, false)
}

/// The linear address (segment base plus offset, no checks) of memory
/// operand `op`: where an access of the instruction lands.
pub fn linear_address(cpu: &CpuState, insn: &Instruction, op: u32) -> u32 {
    address(cpu, insn, op, true)
}

/// The linear address of `size` bytes at `seg`:`off`, after the checks a
/// memory access makes: a usable segment, a type that allows `access`, and
/// every byte within the limit. Faults are #SS(0) for SS, else #GP(0).
pub(super) fn linear(
    cpu: &CpuState,
    seg_reg: Register,
    off: u32,
    size: u32,
    access: Access,
) -> Result<u32, Exception> {
    let seg = sreg(cpu, seg_reg);
    let fault = if seg_reg == Register::SS {
        Exception::with_code(vector::SS, 0)
    } else {
        Exception::gp(0)
    };
    if super::protected(cpu) {
        if !seg.present {
            return Err(fault);
        }
        let allowed = match access {
            Access::Write => !seg.is_code() && seg.typ & types::WRITABLE_OR_READABLE != 0,
            Access::Read => !seg.is_code() || seg.typ & types::WRITABLE_OR_READABLE != 0,
        };
        if !seg.s || !allowed {
            return Err(fault);
        }
    }
    let last = off.checked_add(size - 1).ok_or(fault)?;
    let expand_down = seg.s && !seg.is_code() && seg.typ & types::EXPAND_DOWN_OR_CONFORMING != 0;
    let inside = if expand_down {
        let upper = if seg.db { u32::MAX } else { 0xFFFF };
        off > seg.limit && last <= upper
    } else {
        last <= seg.limit
    };
    if !inside {
        return Err(fault);
    }
    Ok(seg.base.wrapping_add(off))
}

/// Reads a little-endian value of `size` (1, 2 or 4) bytes at `seg`:`off`.
pub(super) fn read_mem(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    seg: Register,
    off: u32,
    size: u32,
) -> Result<u32, Exception> {
    let at = linear(cpu, seg, off, size, Access::Read)?;
    let mut b = [0u8; 4];
    mem.read(at, &mut b[..size as usize])?;
    Ok(u32::from_le_bytes(b))
}

/// Writes the low `size` (1, 2 or 4) bytes of `value` at `seg`:`off`.
pub(super) fn write_mem(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    seg: Register,
    off: u32,
    size: u32,
    value: u32,
) -> Result<(), Exception> {
    let at = linear(cpu, seg, off, size, Access::Write)?;
    mem.write(at, &value.to_le_bytes()[..size as usize])
}

/// Reads operand `op` of `size` bytes: a general register or memory.
pub(super) fn read_op(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    op: u32,
    size: u32,
) -> Result<u32, Exception> {
    match insn.op_kind(op) {
        OpKind::Register => Ok(read_reg(cpu, insn.op_register(op)) & mask(size)),
        _ => read_mem(cpu, mem, insn.memory_segment(), offset(cpu, insn, op), size),
    }
}

/// Writes operand `op`: a general register (all of it, `value` already
/// sized to the register) or `size` bytes of memory.
pub(super) fn write_op(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    op: u32,
    size: u32,
    value: u32,
) -> Result<(), Exception> {
    match insn.op_kind(op) {
        OpKind::Register => {
            write_reg(cpu, insn.op_register(op), value);
            Ok(())
        }
        _ => {
            let off = offset(cpu, insn, op);
            write_mem(cpu, mem, insn.memory_segment(), off, size, value)
        }
    }
}

/// The stack pointer as the stack's address size sees it (SP or ESP).
fn stack_mask(cpu: &CpuState) -> u32 {
    if cpu.ss.db {
        u32::MAX
    } else {
        0xFFFF
    }
}

/// Sets the stack pointer, keeping ESP's upper half on a 16-bit stack.
pub(super) fn set_sp(cpu: &mut CpuState, sp: u32) {
    let m = stack_mask(cpu);
    cpu.esp = (cpu.esp & !m) | (sp & m);
}

/// Reads `size` bytes at SS:(E)SP + `at` without popping.
pub(super) fn stack_read(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    at: u32,
    size: u32,
) -> Result<u32, Exception> {
    let off = cpu.esp.wrapping_add(at) & stack_mask(cpu);
    read_mem(cpu, mem, Register::SS, off, size)
}

/// Pops `size` bytes from SS:(E)SP.
pub(super) fn pop(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    size: u32,
) -> Result<u32, Exception> {
    let v = stack_read(cpu, mem, 0, size)?;
    set_sp(cpu, cpu.esp.wrapping_add(size));
    Ok(v)
}

/// Pushes `values` (first pushed first), each `size` bytes, after checking
/// that all of them fit, so a stack fault writes nothing.
pub(super) fn push_all(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    size: u32,
    values: &[u32],
) -> Result<(), Exception> {
    let m = stack_mask(cpu);
    let n = values.len() as u32;
    let lowest = cpu.esp.wrapping_sub(size * n) & m;
    let mut addrs = Vec::with_capacity(values.len());
    for i in 1..=n {
        let off = cpu.esp.wrapping_sub(size * i) & m;
        addrs.push(linear(cpu, Register::SS, off, size, Access::Write)?);
    }
    for (at, v) in addrs.into_iter().zip(values) {
        mem.write(at, &v.to_le_bytes()[..size as usize])?;
    }
    set_sp(cpu, lowest);
    Ok(())
}

/// Pushes one value of `size` bytes.
pub(super) fn push(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    size: u32,
    value: u32,
) -> Result<(), Exception> {
    push_all(cpu, mem, size, &[value])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::testing::*;

    #[test]
    fn byte_and_word_registers_keep_the_other_bits() {
        let (mut cpu, _) = machine();
        cpu.eax = 0x1122_3344;
        write_reg(&mut cpu, Register::AH, 0xAB);
        assert_eq!(cpu.eax, 0x1122_AB44);
        write_reg(&mut cpu, Register::AX, 0xBEEF);
        assert_eq!(cpu.eax, 0x1122_BEEF);
        assert_eq!(read_reg(&cpu, Register::AH), 0xBE);
        assert_eq!(read_reg(&cpu, Register::AL), 0xEF);
    }

    #[test]
    fn limit_and_type_checks() {
        let (mut cpu, _) = machine();
        cpu.ds.limit = 0xFFF;
        assert_eq!(
            linear(&cpu, Register::DS, 0xFFC, 4, Access::Read),
            Ok(0xFFC)
        );
        assert_eq!(
            linear(&cpu, Register::DS, 0xFFD, 4, Access::Read),
            Err(Exception::gp(0))
        );
        cpu.ss.limit = 0xFFF;
        assert_eq!(
            linear(&cpu, Register::SS, 0x1000, 1, Access::Read),
            Err(Exception::with_code(vector::SS, 0))
        );
        // Writes through CS (code) or a read-only data segment fault.
        assert_eq!(
            linear(&cpu, Register::CS, 0, 1, Access::Write),
            Err(Exception::gp(0))
        );
        cpu.es.typ = 0x1;
        assert_eq!(
            linear(&cpu, Register::ES, 0, 1, Access::Write),
            Err(Exception::gp(0))
        );
        cpu.fs = Segment::unusable();
        assert_eq!(
            linear(&cpu, Register::FS, 0, 1, Access::Read),
            Err(Exception::gp(0))
        );
    }

    #[test]
    fn expand_down_segments_allow_only_above_the_limit() {
        let (mut cpu, _) = machine();
        cpu.ds.typ = 0x7; // expand-down, writable, accessed
        cpu.ds.limit = 0x0FFF;
        cpu.ds.db = false;
        assert!(linear(&cpu, Register::DS, 0x0FFF, 1, Access::Write).is_err());
        assert_eq!(
            linear(&cpu, Register::DS, 0x1000, 2, Access::Write),
            Ok(0x1000)
        );
        assert!(linear(&cpu, Register::DS, 0xFFFF, 2, Access::Read).is_err());
    }

    #[test]
    fn push_that_does_not_fit_writes_nothing() {
        let (mut cpu, mut m) = machine();
        cpu.ss.limit = 0x7FFF;
        cpu.esp = 0x8004;
        let before = cpu.clone();
        assert_eq!(
            push_all(&mut cpu, &mut m, 4, &[1, 2]),
            Err(Exception::with_code(vector::SS, 0))
        );
        assert_eq!(cpu, before);
        assert_eq!(read32(&mut m, 0x8000), 0);
    }
}
