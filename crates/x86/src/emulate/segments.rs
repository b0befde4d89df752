//! Segment register loads and stores: MOV Sreg, MOV r/m from Sreg, PUSH and
//! POP Sreg, LDS/LES/LFS/LGS/LSS, with the protected-mode descriptor checks.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::operand::{linear, offset, pop, push, read_mem, read_op, sreg, sreg_mut, write_op};
use super::operand::{write_reg, Access};
use super::{protected, ud, Effects, Failure};
use crate::classify::Kind;
use crate::descriptor::Selector;
use crate::interrupt::{mark_accessed, read_descriptor, vector, Exception, LinearMemory};
use crate::state::{CpuState, Segment};

/// The cache a load of `sel` into data or stack segment register `reg`
/// produces, after the checks MOV/POP/LxS make and with the descriptor's
/// accessed bit set in memory. Real mode only sets selector and base.
pub(super) fn load_data_segment(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    reg: Register,
    sel: u16,
) -> Result<Segment, Exception> {
    if !protected(cpu) {
        let mut s = *sreg(cpu, reg);
        s.selector = sel;
        s.base = u32::from(sel) << 4;
        return Ok(s);
    }
    let s = Selector(sel);
    let code = u32::from(sel & !3);
    let cpl = cpu.cpl();
    if reg == Register::SS {
        if s.is_null() {
            return Err(Exception::gp(0));
        }
        let (d, at) = read_descriptor(cpu, mem, s, 0)?;
        if s.rpl() != cpl || !d.is_writable() || d.dpl != cpl {
            return Err(Exception::gp(code));
        }
        if !d.present {
            return Err(Exception::with_code(vector::SS, code));
        }
        mark_accessed(mem, &d, at)?;
        return Ok(d.with_accessed().to_segment(sel));
    }
    if s.is_null() {
        // Loading null is allowed; using the register later faults.
        return Ok(Segment {
            selector: sel,
            ..Segment::unusable()
        });
    }
    let (d, at) = read_descriptor(cpu, mem, s, 0)?;
    if !d.is_readable() {
        return Err(Exception::gp(code));
    }
    // Conforming code is usable from any privilege level.
    if !d.is_conforming() && (s.rpl() > d.dpl || cpl > d.dpl) {
        return Err(Exception::gp(code));
    }
    if !d.present {
        return Err(Exception::with_code(vector::NP, code));
    }
    mark_accessed(mem, &d, at)?;
    Ok(d.with_accessed().to_segment(sel))
}

/// Loads `sel` into `reg` on the working copy and reports what that means.
fn load(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    reg: Register,
    sel: u16,
    eff: &mut Effects,
) -> Result<(), Exception> {
    let seg = load_data_segment(cpu, mem, reg, sel)?;
    *sreg_mut(cpu, reg) = seg;
    eff.segments_changed = true;
    Ok(())
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
        Kind::MovToSreg => {
            let reg = insn.op0_register();
            if reg == Register::CS {
                return Err(ud());
            }
            let sel = read_op(cpu, mem, insn, 1, 2)? as u16;
            load(cpu, mem, reg, sel, eff)?;
            // MOV SS blocks interrupts so that a following MOV ESP completes.
            eff.interrupt_shadow = reg == Register::SS;
        }
        Kind::MovFromSreg => {
            let sel = u32::from(sreg(cpu, insn.op1_register()).selector);
            // A 32-bit register receives the zero-extended selector.
            write_op(cpu, mem, insn, 0, 2, sel)?;
        }
        Kind::PushSreg => {
            let sel = u32::from(sreg(cpu, insn.op0_register()).selector);
            let size = insn.stack_pointer_increment().unsigned_abs();
            push(cpu, mem, size, sel)?;
        }
        Kind::PopSreg => {
            let reg = insn.op0_register();
            if reg == Register::CS {
                return Err(ud());
            }
            let size = insn.stack_pointer_increment().unsigned_abs();
            let sel = pop(cpu, mem, size)? as u16;
            load(cpu, mem, reg, sel, eff)?;
            eff.interrupt_shadow = reg == Register::SS;
        }
        _ => load_far_pointer(cpu, mem, insn, eff)?,
    }
    Ok(())
}

/// LDS/LES/LFS/LGS/LSS r, m16:16 or m16:32: offset first, selector after.
fn load_far_pointer(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    eff: &mut Effects,
) -> Result<(), Failure> {
    if insn.op1_kind() != OpKind::Memory {
        return Err(ud());
    }
    let reg = match insn.mnemonic() {
        Mnemonic::Lds => Register::DS,
        Mnemonic::Les => Register::ES,
        Mnemonic::Lfs => Register::FS,
        Mnemonic::Lgs => Register::GS,
        _ => Register::SS,
    };
    let dest = insn.op0_register();
    let size = dest.size() as u32;
    let seg = insn.memory_segment();
    let off = offset(cpu, insn, 1);
    linear(cpu, seg, off, size + 2, Access::Read)?;
    let value = read_mem(cpu, mem, seg, off, size)?;
    let sel = read_mem(cpu, mem, seg, off.wrapping_add(size), 2)? as u16;
    load(cpu, mem, reg, sel, eff)?;
    write_reg(cpu, dest, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::interrupt::Exception;
    use crate::state::Segment;

    #[test]
    fn mov_ds_loads_the_descriptor_and_sets_its_accessed_bit() {
        let (mut cpu, mut m) = machine();
        cpu.ds = Segment::unusable();
        cpu.eax = u32::from(KDATA);
        let eff = ok(&mut cpu, &mut m, &[0x8E, 0xD8]); // mov ds, ax
        assert_eq!(cpu.ds, flat(0x3, 0).to_segment(KDATA));
        assert_eq!(gdt_entry(&mut m, KDATA).typ, 0x3, "accessed in memory");
        assert!(eff.segments_changed && !eff.interrupt_shadow && !eff.context_changed);
        assert_eq!(cpu.eip, CODE + 2);
    }

    #[test]
    fn null_selectors_make_data_registers_unusable_but_ss_faults() {
        let (mut cpu, mut m) = machine();
        cpu.eax = 2;
        ok(&mut cpu, &mut m, &[0x8E, 0xE0]); // mov fs, ax
        assert!(!cpu.fs.present);
        assert_eq!(cpu.fs.selector, 2);
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xD0]), gp(0)); // mov ss, ax
    }

    #[test]
    fn data_segment_privilege_checks() {
        let (mut cpu, mut m) = user_machine();
        cpu.eax = u32::from(KDATA);
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD8]),
            gp(KDATA),
            "CPL 3 > DPL 0"
        );
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(KDATA) | 3;
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD8]),
            gp(KDATA),
            "RPL 3 > DPL 0"
        );
        // Conforming readable code is loadable whatever the privilege.
        let (mut cpu, mut m) = user_machine();
        cpu.eax = u32::from(CONFORMING) | 3;
        ok(&mut cpu, &mut m, &[0x8E, 0xD8]);
        assert_eq!(cpu.ds.typ, 0xF);
        // Execute-only code and system descriptors are not data.
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(XONLY);
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xD8]), gp(XONLY));
        cpu.eax = u32::from(TSS_AVAIL);
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xD8]), gp(TSS_AVAIL));
    }

    #[test]
    fn not_present_and_out_of_table_selectors() {
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(NOT_PRESENT);
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xC0]), // mov es, ax
            Exception::with_code(vector::NP, u32::from(NOT_PRESENT))
        );
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD0]), // mov ss, ax
            Exception::with_code(vector::SS, u32::from(NOT_PRESENT))
        );
        cpu.eax = 0x7FFB; // past the GDT limit, RPL 3: code has RPL cleared
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xC0]), gp(0x7FF8));
        cpu.eax = 0x17; // LDT index 2, past the LDT limit
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xC0]), gp(0x14));
    }

    #[test]
    fn ldt_selectors_load_from_the_ldt() {
        let (mut cpu, mut m) = user_machine();
        cpu.eax = u32::from(LDATA3);
        ok(&mut cpu, &mut m, &[0x8E, 0xE8]); // mov gs, ax
        assert_eq!(cpu.gs.selector, LDATA3);
        assert_eq!(cpu.gs.dpl, 3);
        cpu.eax = u32::from(LDATA0) | 3;
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xE8]), gp(LDATA0));
    }

    #[test]
    fn mov_ss_checks_and_sets_the_interrupt_shadow() {
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(RODATA);
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD0]),
            gp(RODATA),
            "not writable"
        );
        cpu.eax = u32::from(KDATA) | 1;
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD0]),
            gp(KDATA),
            "RPL != CPL"
        );
        cpu.eax = u32::from(UDATA);
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x8E, 0xD0]),
            gp(UDATA & !3),
            "DPL != CPL"
        );
        cpu.eax = u32::from(KDATA);
        let eff = ok(&mut cpu, &mut m, &[0x8E, 0xD0]);
        assert!(eff.interrupt_shadow && eff.segments_changed);
    }

    #[test]
    fn mov_cs_is_ud() {
        let (mut cpu, mut m) = machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x8E, 0xC8]), ud());
    }

    #[test]
    fn mov_from_sreg_to_register_and_memory() {
        let (mut cpu, mut m) = user_machine();
        cpu.eax = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x8C, 0xC8]); // mov eax, cs
        assert_eq!(cpu.eax, u32::from(UCODE), "the virtual CPL 3 selector");
        cpu.ebx = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x66, 0x8C, 0xD3]); // mov bx, ss
        assert_eq!(cpu.ebx, 0xFFFF_0000 | u32::from(UDATA));
        write32(&mut m, 0x7000, 0xAAAA_AAAA);
        ok(&mut cpu, &mut m, &[0x8C, 0x1D, 0x00, 0x70, 0, 0]); // mov [0x7000], ds
        assert_eq!(read32(&mut m, 0x7000), 0xAAAA_0000 | u32::from(UDATA));
    }

    #[test]
    fn push_sreg_honours_the_operand_size() {
        let (mut cpu, mut m) = machine();
        write32(&mut m, STACK - 4, 0xAAAA_AAAA);
        ok(&mut cpu, &mut m, &[0x1E]); // push ds
        assert_eq!(cpu.esp, STACK - 4);
        assert_eq!(read32(&mut m, STACK - 4), u32::from(KDATA));
        ok(&mut cpu, &mut m, &[0x66, 0x0E]); // push cs (16-bit)
        assert_eq!(cpu.esp, STACK - 6);
        assert_eq!(read16(&mut m, STACK - 6), KCODE);
    }

    #[test]
    fn pop_sreg_loads_and_pop_ss_sets_the_shadow() {
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 4;
        write32(&mut m, STACK - 4, 0xDEAD_0000 | u32::from(KDATA));
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0xA1]); // pop fs
        assert_eq!(cpu.fs.selector, KDATA);
        assert_eq!(cpu.esp, STACK);
        assert!(!eff.interrupt_shadow);
        cpu.esp = STACK - 4;
        let eff = ok(&mut cpu, &mut m, &[0x17]); // pop ss
        assert!(eff.interrupt_shadow);
        // A failed load leaves ESP where it was.
        cpu.esp = STACK - 4;
        write32(&mut m, STACK - 4, u32::from(NOT_PRESENT));
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x1F]), // pop ds
            Exception::with_code(vector::NP, u32::from(NOT_PRESENT))
        );
    }

    #[test]
    fn lss_and_lds_load_pointer_and_segment() {
        let (mut cpu, mut m) = machine();
        write32(&mut m, 0x7000, 0x0000_9ABC);
        write16(&mut m, 0x7004, KDATA);
        cpu.ebx = 0x7000;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0xB2, 0x23]); // lss esp, [ebx]
        assert_eq!((cpu.esp, cpu.ss.selector), (0x9ABC, KDATA));
        assert!(!eff.interrupt_shadow, "only MOV SS and POP SS inhibit");
        write16(&mut m, 0x7002, KDATA);
        cpu.esi = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x66, 0xC5, 0x33]); // lds si, [ebx]
        assert_eq!(cpu.esi, 0xFFFF_9ABC);
        assert_eq!(cpu.ds.selector, KDATA);
        // A bad selector leaves the offset register alone.
        write16(&mut m, 0x7004, NOT_PRESENT);
        let e = fault(&mut cpu, &mut m, &[0xC4, 0x03]); // les eax, [ebx]
        assert_eq!(e.vector, vector::NP);
    }

    #[test]
    fn real_mode_loads_set_base_from_the_selector() {
        let mut cpu = crate::state::CpuState::reset();
        let mut m = crate::interrupt::testing::Flat(vec![0; 0x10_0000]);
        cpu.cs.base = 0;
        cpu.cs.selector = 0;
        cpu.eip = 0x7C00;
        cpu.eax = 0x1234;
        ok(&mut cpu, &mut m, &[0x8E, 0xC0]); // mov es, ax
        assert_eq!((cpu.es.selector, cpu.es.base), (0x1234, 0x12340));
    }
}
