//! LAR, LSL, VERR and VERW: the descriptor checks of [`crate::protection`]
//! applied to the instructions' operands, with ZF as the answer.

use iced_x86::Instruction;

use super::operand::{read_op, write_reg};
use super::{protected, ud, Failure};
use crate::classify::Kind;
use crate::interrupt::LinearMemory;
use crate::protection;
use crate::state::{flags, CpuState};

/// Carries out one of this module's instructions on the working copy.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    kind: Kind,
) -> Result<(), Failure> {
    if !protected(cpu) {
        return Err(ud());
    }
    let src = if matches!(kind, Kind::Lar | Kind::Lsl) {
        1
    } else {
        0
    };
    let sel = read_op(cpu, mem, insn, src, 2)? as u16;
    let result = match kind {
        Kind::Lar => protection::lar(cpu, mem, sel)?,
        Kind::Lsl => protection::lsl(cpu, mem, sel)?,
        Kind::Verr => protection::verr(cpu, mem, sel)?.then_some(0),
        _ => protection::verw(cpu, mem, sel)?.then_some(0),
    };
    match result {
        Some(v) => {
            if src == 1 {
                // A 16-bit destination keeps its upper half, as a word write does.
                write_reg(cpu, insn.op0_register(), v);
            }
            cpu.eflags |= flags::ZF;
        }
        None => cpu.eflags &= !flags::ZF,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::state::flags;

    #[test]
    fn lar_register_and_memory_forms() {
        let (mut cpu, mut m) = machine();
        cpu.ecx = u32::from(KCODE);
        ok(&mut cpu, &mut m, &[0x0F, 0x02, 0xC1]); // lar eax, ecx
        assert_eq!(cpu.eax, 0x00CF_9A00);
        assert_ne!(cpu.eflags & flags::ZF, 0);
        write16(&mut m, 0x7000, NOT_PRESENT); // not present data: still visible
        cpu.ebx = 0x7000;
        cpu.edx = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x66, 0x0F, 0x02, 0x13]); // lar dx, [ebx]
        assert_eq!(cpu.edx, 0xFFFF_1200);
    }

    #[test]
    fn lar_of_an_invisible_selector_clears_zf_and_keeps_the_register() {
        let (mut cpu, mut m) = user_machine();
        cpu.eflags |= flags::ZF;
        cpu.ecx = u32::from(KDATA);
        cpu.eax = 0x5555;
        ok(&mut cpu, &mut m, &[0x0F, 0x02, 0xC1]);
        assert_eq!(cpu.eflags & flags::ZF, 0);
        assert_eq!(cpu.eax, 0x5555);
    }

    #[test]
    fn lsl_and_verr_verw() {
        let (mut cpu, mut m) = machine();
        cpu.ecx = u32::from(CODE16);
        ok(&mut cpu, &mut m, &[0x0F, 0x03, 0xC1]); // lsl eax, ecx
        assert_eq!(cpu.eax, 0xFFFF);
        cpu.eax = u32::from(RODATA);
        ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xE0]); // verr ax
        assert_ne!(cpu.eflags & flags::ZF, 0);
        ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xE8]); // verw ax
        assert_eq!(cpu.eflags & flags::ZF, 0);
        assert_eq!(cpu.eip, CODE + 9);
    }

    #[test]
    fn lar_with_a_memory_operand_past_the_segment_limit_is_gp() {
        let (mut cpu, mut m) = machine();
        cpu.ds.limit = 0x6FFF;
        cpu.ebx = 0x7000;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x02, 0x03]), gp(0));
    }
}
