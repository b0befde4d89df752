//! IN, OUT, INS and OUTS: the IOPL check, the TSS I/O permission bitmap, and
//! REP string I/O run to completion in one call.

use iced_x86::{Instruction, OpKind, Register};

use super::operand::{linear, read_reg, write_reg, Access};
use super::{protected, Failure, Platform};
use crate::descriptor::tss32;
use crate::interrupt::{Exception, LinearMemory};
use crate::state::{flags, CpuState};

/// #GP(0) unless the current privilege may touch ports `port..port+size`:
/// CPL <= IOPL, or every bit for them clear in the TSS I/O bitmap.
fn check_port(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    port: u16,
    size: u32,
) -> Result<(), Exception> {
    let iopl = (cpu.eflags & flags::IOPL) >> 12;
    if !protected(cpu) || u32::from(cpu.cpl()) <= iopl {
        return Ok(());
    }
    let gp = Exception::gp(0);
    // Only a 32-bit TSS has a bitmap; its base field is at 0x66.
    if !cpu.tr.present || cpu.tr.typ & 0x8 == 0 || cpu.tr.limit < 0x67 {
        return Err(gp);
    }
    let mut base = [0u8; 2];
    mem.read(
        cpu.tr.base.wrapping_add(tss32::IOMAP_BASE as u32),
        &mut base,
    )?;
    // Two bytes are read because an access may straddle a byte boundary.
    let at = u32::from(u16::from_le_bytes(base)) + u32::from(port / 8);
    if at + 1 > cpu.tr.limit {
        return Err(gp);
    }
    let mut bits = [0u8; 2];
    mem.read(cpu.tr.base.wrapping_add(at), &mut bits)?;
    let bits = u32::from(u16::from_le_bytes(bits)) >> (port % 8);
    if bits & ((1 << size) - 1) != 0 {
        return Err(gp);
    }
    Ok(())
}

/// The port an I/O instruction names: DX or its immediate.
fn port(cpu: &CpuState, insn: &Instruction, op: u32) -> u16 {
    match insn.op_kind(op) {
        OpKind::Register => cpu.edx as u16,
        _ => u16::from(insn.immediate8()),
    }
}

/// IN AL/AX/EAX, imm8/DX and OUT imm8/DX, AL/AX/EAX.
pub(super) fn in_out(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
) -> Result<(), Failure> {
    let is_in = insn.mnemonic() == iced_x86::Mnemonic::In;
    let (data_op, port_op) = if is_in { (0, 1) } else { (1, 0) };
    let reg = insn.op_register(data_op);
    let size = reg.size() as u32;
    let port = port(cpu, insn, port_op);
    check_port(cpu, mem, port, size)?;
    if is_in {
        let v = plat.io_in(port, size as u8);
        write_reg(cpu, reg, v);
    } else {
        plat.io_out(port, size as u8, read_reg(cpu, reg));
    }
    Ok(())
}

/// INS and OUTS, with or without REP. Works on the committed state: each
/// completed iteration updates (E)CX and (E)SI/(E)DI, so a fault part-way
/// leaves the instruction restartable where it stopped, as on hardware.
pub(super) fn string(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
) -> Result<(), Failure> {
    use iced_x86::Mnemonic as M;
    let (is_in, size) = match insn.mnemonic() {
        M::Insb => (true, 1),
        M::Insw => (true, 2),
        M::Insd => (true, 4),
        M::Outsb => (false, 1),
        M::Outsw => (false, 2),
        _ => (false, 4),
    };
    let mem_op = if is_in { 0 } else { 1 };
    let a32 = matches!(
        insn.op_kind(mem_op),
        OpKind::MemoryESEDI | OpKind::MemorySegESI
    );
    let amask = if a32 { u32::MAX } else { 0xFFFF };
    let port = cpu.edx as u16;
    check_port(cpu, mem, port, size)?;
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let step = if cpu.eflags & flags::DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    // INS always stores through ES; OUTS reads through DS or an override.
    let (seg, index_reg) = if is_in {
        (Register::ES, Register::EDI)
    } else {
        (insn.memory_segment(), Register::ESI)
    };
    let next = cpu.eip.wrapping_add(insn.len() as u32);
    loop {
        if rep && cpu.ecx & amask == 0 {
            break;
        }
        let index = read_reg(cpu, index_reg) & amask;
        let access = if is_in { Access::Write } else { Access::Read };
        let at = linear(cpu, seg, index, size, access)?;
        if is_in {
            let v = plat.io_in(port, size as u8);
            mem.write(at, &v.to_le_bytes()[..size as usize])?;
        } else {
            let mut b = [0u8; 4];
            mem.read(at, &mut b[..size as usize])?;
            plat.io_out(port, size as u8, u32::from_le_bytes(b));
        }
        let moved = index.wrapping_add(step) & amask;
        let full = read_reg(cpu, index_reg);
        write_reg(cpu, index_reg, (full & !amask) | moved);
        if !rep {
            break;
        }
        cpu.ecx = (cpu.ecx & !amask) | (cpu.ecx.wrapping_sub(1) & amask);
    }
    cpu.eip = if cpu.cs.db { next } else { next & 0xFFFF };
    cpu.eflags &= !flags::RF;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::state::flags;

    #[test]
    fn in_and_out_of_every_size_with_imm8_and_dx() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        p.inputs.extend([0x12, 0x3456, 0x789A_BCDE]);
        cpu.eax = 0xFFFF_FFFF;
        cpu.edx = 0x3F8;
        run(&mut cpu, &mut m, &mut p, &[0xE4, 0x60]).unwrap(); // in al, 0x60
        assert_eq!(cpu.eax, 0xFFFF_FF12);
        run(&mut cpu, &mut m, &mut p, &[0x66, 0xED]).unwrap(); // in ax, dx
        assert_eq!(cpu.eax, 0xFFFF_3456);
        run(&mut cpu, &mut m, &mut p, &[0xED]).unwrap(); // in eax, dx
        assert_eq!(cpu.eax, 0x789A_BCDE);
        assert_eq!(p.ins, vec![(0x60, 1), (0x3F8, 2), (0x3F8, 4)]);
        run(&mut cpu, &mut m, &mut p, &[0xE6, 0x80]).unwrap(); // out 0x80, al
        run(&mut cpu, &mut m, &mut p, &[0x66, 0xEF]).unwrap(); // out dx, ax
        run(&mut cpu, &mut m, &mut p, &[0xEF]).unwrap(); // out dx, eax
        assert_eq!(
            p.outs,
            vec![(0x80, 1, 0xDE), (0x3F8, 2, 0xBCDE), (0x3F8, 4, 0x789A_BCDE)]
        );
        assert_eq!(cpu.eip, CODE + 2 + 2 + 1 + 2 + 2 + 1);
    }

    #[test]
    fn user_io_needs_iopl_or_the_bitmap() {
        let (mut cpu, mut m) = user_machine();
        let mut p = TestPlatform::default();
        cpu.edx = 0x60;
        let before = cpu.clone();
        assert_eq!(
            run(&mut cpu, &mut m, &mut p, &[0xEC]),
            Err(crate::interrupt::Failure::Fault(gp(0)))
        );
        assert_eq!(cpu, before);
        assert!(p.ins.is_empty(), "the port is never touched");
        // The bitmap allows 0x3F8-0x3FF...
        cpu.edx = 0x3FC;
        run(&mut cpu, &mut m, &mut p, &[0xED]).unwrap();
        // ...but a dword at 0x3FE straddles into denied 0x400.
        cpu.edx = 0x3FE;
        assert_eq!(fault(&mut cpu, &mut m, &[0xED]), gp(0));
        // IOPL 3 allows everything without looking at the bitmap.
        cpu.eflags |= flags::IOPL;
        cpu.edx = 0x60;
        run(&mut cpu, &mut m, &mut p, &[0xEC]).unwrap();
        assert_eq!(p.ins, vec![(0x3FC, 4), (0x60, 1)]);
    }

    #[test]
    fn user_io_without_a_bitmap_is_gp() {
        let (mut cpu, mut m) = user_machine();
        cpu.tr.limit = 0x67;
        assert_eq!(fault(&mut cpu, &mut m, &[0xE6, 0x80]), gp(0));
    }

    #[test]
    fn rep_insw_fills_es_edi_and_counts_down() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        p.inputs.extend([0x1111, 0x2222, 0x3333]);
        cpu.edx = 0x1F0;
        cpu.edi = 0x7000;
        cpu.ecx = 3;
        // A DS override is ignored: INS always writes ES.
        cpu.ds.base = 0x100;
        run(&mut cpu, &mut m, &mut p, &[0x3E, 0x66, 0xF3, 0x6D]).unwrap();
        assert_eq!(read16(&mut m, 0x7000), 0x1111);
        assert_eq!(read16(&mut m, 0x7002), 0x2222);
        assert_eq!(read16(&mut m, 0x7004), 0x3333);
        assert_eq!((cpu.ecx, cpu.edi), (0, 0x7006));
        assert_eq!(cpu.eip, CODE + 4);
    }

    #[test]
    fn rep_outsb_backwards_with_df_and_fs_override() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        cpu.fs.base = 0x100;
        m.0[0x7100..0x7103].copy_from_slice(b"abc");
        cpu.esi = 0x7002;
        cpu.ecx = 3;
        cpu.edx = 0xE9;
        cpu.eflags |= flags::DF;
        run(&mut cpu, &mut m, &mut p, &[0x64, 0xF3, 0x6E]).unwrap();
        let bytes: Vec<u32> = p.outs.iter().map(|o| o.2).collect();
        assert_eq!(
            bytes,
            vec![u32::from(b'c'), u32::from(b'b'), u32::from(b'a')]
        );
        assert_eq!((cpu.ecx, cpu.esi), (0, 0x6FFF));
    }

    #[test]
    fn rep_with_zero_count_does_nothing_but_advance() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        cpu.ecx = 0;
        run(&mut cpu, &mut m, &mut p, &[0xF3, 0x6C]).unwrap();
        assert!(p.ins.is_empty());
        assert_eq!(cpu.eip, CODE + 2);
    }

    #[test]
    fn rep_ins_16bit_address_uses_cx_and_di() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        cpu.ecx = 0xABCD_0002;
        cpu.edi = 0x1234_7000;
        run(&mut cpu, &mut m, &mut p, &[0x67, 0xF3, 0x6C]).unwrap(); // a16 rep insb
        assert_eq!((cpu.ecx, cpu.edi), (0xABCD_0000, 0x1234_7002));
        assert_eq!(m.0[0x7000], 0xFF);
    }

    #[test]
    fn rep_ins_fault_keeps_completed_iterations() {
        let (mut cpu, mut m) = machine();
        let mut p = TestPlatform::default();
        cpu.es.limit = 0x7001;
        cpu.es.g = false;
        cpu.edi = 0x7000;
        cpu.ecx = 4;
        let r = run(&mut cpu, &mut m, &mut p, &[0xF3, 0x6C]);
        assert_eq!(r, Err(crate::interrupt::Failure::Fault(gp(0))));
        assert_eq!((cpu.ecx, cpu.edi, cpu.eip), (2, 0x7002, CODE));
    }
}
