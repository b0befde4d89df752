//! CLI, STI, PUSHF and POPF: the instructions whose behaviour depends on
//! CPL and IOPL (POPF silently keeps IF at CPL > IOPL, the classic
//! Popek-Goldberg violation).

use iced_x86::{Instruction, Mnemonic};

use super::operand::{pop, push};
use super::{protected, Effects, Failure};
use crate::classify::Kind;
use crate::interrupt::{Exception, LinearMemory};
use crate::state::{flags, CpuState};

/// Flags POPF may change at any privilege level.
const POPF_ANY_CPL: u32 = flags::UNPRIVILEGED;

/// EFLAGS.IOPL as a number.
fn iopl(cpu: &CpuState) -> u8 {
    ((cpu.eflags & flags::IOPL) >> 12) as u8
}

/// Carries out one of this module's instructions on the working copy.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    kind: Kind,
    eff: &mut Effects,
) -> Result<(), Failure> {
    match kind {
        Kind::Cli | Kind::Sti => {
            // Without VME/PVI (not offered) there is no virtual IF to use.
            if protected(cpu) && cpu.cpl() > iopl(cpu) {
                return Err(Exception::gp(0).into());
            }
            if kind == Kind::Cli {
                cpu.eflags &= !flags::IF;
            } else {
                // Only an STI that sets IF delays interrupts by one instruction.
                eff.interrupt_shadow = !cpu.interrupts_enabled();
                cpu.eflags |= flags::IF;
            }
        }
        Kind::Pushf => {
            let (size, image) = if insn.mnemonic() == Mnemonic::Pushfd {
                // The pushed image never shows VM or RF.
                (4, cpu.eflags & !(flags::VM | flags::RF))
            } else {
                (2, cpu.eflags & 0xFFFF)
            };
            push(cpu, mem, size, image)?;
        }
        _ => {
            let size = if insn.mnemonic() == Mnemonic::Popfd {
                4
            } else {
                2
            };
            let v = pop(cpu, mem, size)?;
            let cpl = cpu.cpl();
            let mut mask = POPF_ANY_CPL;
            if cpl == 0 {
                mask |= flags::IOPL;
            }
            if cpl <= iopl(cpu) {
                mask |= flags::IF;
            }
            if size == 2 {
                mask &= 0xFFFF;
            }
            cpu.eflags = ((cpu.eflags & !mask) | (v & mask) | flags::FIXED1) & !flags::RF;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::state::flags;

    const RESERVED: u32 = 0xFFC0_802A;

    #[test]
    fn cli_sti_at_cpl0_and_the_sti_shadow() {
        let (mut cpu, mut m) = machine();
        let eff = ok(&mut cpu, &mut m, &[0xFA]); // cli
        assert!(!cpu.interrupts_enabled());
        assert!(!eff.interrupt_shadow);
        let eff = ok(&mut cpu, &mut m, &[0xFB]); // sti
        assert!(cpu.interrupts_enabled());
        assert!(eff.interrupt_shadow, "STI that sets IF");
        let eff = ok(&mut cpu, &mut m, &[0xFB]);
        assert!(!eff.interrupt_shadow, "STI with IF already set");
        assert_eq!(cpu.eip, CODE + 3);
    }

    #[test]
    fn cli_at_cpl3_needs_iopl3() {
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0xFA]), gp(0));
        assert_eq!(fault(&mut cpu, &mut m, &[0xFB]), gp(0));
        cpu.eflags |= flags::IOPL;
        ok(&mut cpu, &mut m, &[0xFA]);
        assert!(!cpu.interrupts_enabled());
    }

    #[test]
    fn pushfd_hides_vm_and_rf_and_pushf_pushes_a_word() {
        let (mut cpu, mut m) = machine();
        cpu.eflags = flags::FIXED1 | flags::IF | flags::RF | flags::CF;
        ok(&mut cpu, &mut m, &[0x9C]); // pushfd
        assert_eq!(cpu.esp, STACK - 4);
        assert_eq!(
            read32(&mut m, STACK - 4),
            flags::FIXED1 | flags::IF | flags::CF
        );
        write32(&mut m, STACK - 8, 0xAAAA_AAAA);
        ok(&mut cpu, &mut m, &[0x66, 0x9C]); // pushf
        assert_eq!(cpu.esp, STACK - 6);
        assert_eq!(
            read16(&mut m, STACK - 6),
            (flags::FIXED1 | flags::IF | flags::CF) as u16
        );
        assert_eq!(read16(&mut m, STACK - 8), 0xAAAA, "only two bytes written");
    }

    #[test]
    fn popfd_at_cpl0_changes_if_and_iopl_but_never_vm_rf_or_reserved_bits() {
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 4;
        write32(&mut m, STACK - 4, 0xFFFF_FFFF);
        cpu.eflags = flags::FIXED1;
        ok(&mut cpu, &mut m, &[0x9D]); // popfd
        assert_eq!(cpu.esp, STACK);
        let expected = !RESERVED & !(flags::VM | flags::RF | (3 << 19));
        assert_eq!(cpu.eflags, expected | flags::FIXED1);
        assert_eq!(cpu.eflags & flags::IOPL, flags::IOPL);
        cpu.esp = STACK - 4;
        write32(&mut m, STACK - 4, 0);
        ok(&mut cpu, &mut m, &[0x9D]);
        assert_eq!(cpu.eflags, flags::FIXED1, "bit 1 always set");
    }

    #[test]
    fn popf_at_cpl3_silently_keeps_if_and_iopl() {
        let (mut cpu, mut m) = user_machine();
        cpu.eflags = flags::FIXED1;
        cpu.esp = STACK - 4;
        write32(
            &mut m,
            STACK - 4,
            flags::IF | flags::IOPL | flags::CF | flags::ZF,
        );
        ok(&mut cpu, &mut m, &[0x9D]);
        assert_eq!(cpu.eflags, flags::FIXED1 | flags::CF | flags::ZF);
        // With IOPL 3, CPL 3 may change IF but still not IOPL.
        cpu.eflags = flags::FIXED1 | flags::IOPL;
        cpu.esp = STACK - 4;
        write32(&mut m, STACK - 4, flags::IF);
        ok(&mut cpu, &mut m, &[0x9D]);
        assert_eq!(cpu.eflags, flags::FIXED1 | flags::IOPL | flags::IF);
    }

    #[test]
    fn popf_16bit_leaves_the_upper_half() {
        let (mut cpu, mut m) = machine();
        cpu.eflags = flags::FIXED1 | flags::AC | flags::ID;
        cpu.esp = STACK - 2;
        write16(&mut m, STACK - 2, 0x0001);
        ok(&mut cpu, &mut m, &[0x66, 0x9D]); // popf
        assert_eq!(cpu.esp, STACK);
        assert_eq!(
            cpu.eflags,
            flags::FIXED1 | flags::AC | flags::ID | flags::CF
        );
    }

    #[test]
    fn popf_past_the_stack_limit_is_ss0() {
        let (mut cpu, mut m) = machine();
        cpu.ss.limit = STACK + 1;
        cpu.esp = STACK;
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x9D]),
            crate::interrupt::Exception::with_code(vector::SS, 0)
        );
    }
}
