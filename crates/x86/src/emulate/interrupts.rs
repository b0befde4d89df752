//! INT n, INT3, INTO, INT1 and IRET through [`crate::interrupt`]'s
//! protected-mode delivery and return.

use iced_x86::{Instruction, Mnemonic};

use super::{protected, unsupported, Failure};
use crate::classify::Kind;
use crate::interrupt::{self, vector, Event, LinearMemory};
use crate::state::{flags, CpuState};

/// Carries out one of this module's instructions on the working copy, whose
/// EIP already points past the instruction (the return address an INT
/// pushes). A fault during delivery is the instruction's fault: the caller
/// discards the working copy, so it is reported at the INT itself.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    kind: Kind,
) -> Result<(), Failure> {
    if !protected(cpu) {
        return Err(unsupported("real-mode interrupts and IRET"));
    }
    match kind {
        Kind::Iret => {
            let size = if insn.mnemonic() == Mnemonic::Iretd {
                4
            } else {
                2
            };
            interrupt::iret(cpu, mem, size)
        }
        Kind::Int => interrupt::deliver(cpu, mem, insn.immediate8(), Event::Software),
        Kind::Int3 => interrupt::deliver(cpu, mem, vector::BP, Event::Software),
        Kind::Into if cpu.eflags & flags::OF != 0 => {
            interrupt::deliver(cpu, mem, vector::OF, Event::Software)
        }
        Kind::Into => Ok(()),
        // INT1 (ICEBP) raises #DB as a trap the way the hardware raises it:
        // no gate DPL check and EXT set in error codes, unlike INT n.
        _ => interrupt::deliver(cpu, mem, vector::DB, Event::Exception(None)),
    }
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::emulate::{Failure, Unsupported};
    use crate::interrupt::Exception;
    use crate::state::flags;

    #[test]
    fn int_n_from_kernel_pushes_the_return_address_after_it() {
        let (mut cpu, mut m) = machine();
        let eff = ok(&mut cpu, &mut m, &[0xCD, 0x30]);
        assert_eq!(cpu.eip, HANDLERS + 0x30 * 16);
        assert_eq!(cpu.esp, STACK - 12);
        assert_eq!(read32(&mut m, cpu.esp), CODE + 2);
        assert!(!cpu.interrupts_enabled(), "interrupt gate");
        assert!(eff.branched);
        assert!(!eff.context_changed, "same CS, same translation context");
    }

    #[test]
    fn int_0x80_from_user_switches_to_the_kernel_stack() {
        let (mut cpu, mut m) = user_machine();
        cpu.esp = 0xB000;
        ok(&mut cpu, &mut m, &[0xCD, 0x80]);
        assert_eq!(cpu.cpl(), 0);
        assert_eq!((cpu.ss.selector, cpu.esp), (KDATA, 0x9000 - 20));
        assert_eq!(read32(&mut m, cpu.esp), CODE + 2);
        assert_eq!(read32(&mut m, cpu.esp + 12), 0xB000);
        assert_eq!(read32(&mut m, cpu.esp + 16), u32::from(UDATA));
    }

    #[test]
    fn int_through_a_dpl0_gate_from_user_is_gp_at_the_int() {
        let (mut cpu, mut m) = user_machine();
        let e = fault(&mut cpu, &mut m, &[0xCD, 0x30]);
        assert_eq!(e, Exception::gp(0x30 * 8 + 2));
        assert_eq!(cpu.eip, CODE);
    }

    #[test]
    fn int3_and_into() {
        let (mut cpu, mut m) = user_machine();
        ok(&mut cpu, &mut m, &[0xCC]);
        assert_eq!(cpu.eip, HANDLERS + 3 * 16);
        assert_eq!(read32(&mut m, cpu.esp), CODE + 1, "trap: after the INT3");
        let (mut cpu, mut m) = machine();
        let eff = ok(&mut cpu, &mut m, &[0xCE]);
        assert_eq!(cpu.eip, CODE + 1, "INTO without OF does nothing");
        assert!(!eff.branched);
        cpu.eflags |= flags::OF;
        ok(&mut cpu, &mut m, &[0xCE]);
        assert_eq!(cpu.eip, HANDLERS + 4 * 16);
    }

    #[test]
    fn int1_ignores_the_gate_dpl() {
        let (mut cpu, mut m) = user_machine();
        ok(&mut cpu, &mut m, &[0xF1]);
        assert_eq!(cpu.eip, HANDLERS + 16);
        assert_eq!(cpu.cpl(), 0);
        assert_eq!(read32(&mut m, cpu.esp), CODE + 1);
    }

    #[test]
    fn iret_returns_to_user_mode() {
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 20;
        let frame = [
            0x0800_0000,
            u32::from(UCODE),
            flags::FIXED1 | flags::IF,
            0xB000,
            u32::from(UDATA),
        ];
        for (i, v) in frame.iter().enumerate() {
            write32(&mut m, cpu.esp + 4 * i as u32, *v);
        }
        cpu.eflags = flags::FIXED1;
        let eff = ok(&mut cpu, &mut m, &[0xCF]);
        assert_eq!(cpu.cpl(), 3);
        assert_eq!((cpu.eip, cpu.esp), (0x0800_0000, 0xB000));
        assert!(cpu.interrupts_enabled());
        assert!(eff.context_changed && eff.segments_changed && eff.branched);
    }

    #[test]
    fn real_mode_interrupts_are_unsupported() {
        let mut cpu = crate::state::CpuState::reset();
        let mut m = crate::interrupt::testing::Flat(vec![0; 0x10_0000]);
        cpu.cs.base = 0;
        cpu.eip = 0x7C00;
        assert_eq!(
            run1(&mut cpu, &mut m, &[0xCD, 0x10]),
            Err(Failure::Unsupported(Unsupported::Feature(
                "real-mode interrupts and IRET"
            )))
        );
    }
}
