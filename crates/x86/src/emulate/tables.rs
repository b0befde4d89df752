//! The descriptor-table registers: LGDT, LIDT, LLDT, LTR (privileged) and
//! SGDT, SIDT, SLDT, STR, SMSW, which reveal the *virtual* values.

use iced_x86::{Code, Instruction, OpKind};

use super::operand::{linear, offset, read_op, write_op, Access};
use super::{protected, require_cpl0, ud, Failure};
use crate::classify::Kind;
use crate::descriptor::{types, Selector};
use crate::interrupt::{read_descriptor, vector, Exception, LinearMemory};
use crate::state::{cr4, CpuState, Segment, TableRegister};

/// Carries out one of this module's instructions on the working copy.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    kind: Kind,
) -> Result<(), Failure> {
    match kind {
        Kind::Lgdt | Kind::Lidt => {
            require_cpl0(cpu)?;
            let t = load_table(cpu, mem, insn)?;
            if kind == Kind::Lgdt {
                cpu.gdtr = t;
            } else {
                cpu.idtr = t;
            }
        }
        Kind::Sgdt | Kind::Sidt => {
            check_umip(cpu)?;
            let t = if kind == Kind::Sgdt {
                cpu.gdtr
            } else {
                cpu.idtr
            };
            store_table(cpu, mem, insn, t)?;
        }
        Kind::Sldt | Kind::Str | Kind::Smsw => {
            if kind != Kind::Smsw && !protected(cpu) {
                return Err(ud());
            }
            check_umip(cpu)?;
            let v = match kind {
                Kind::Sldt => u32::from(cpu.ldtr.selector),
                Kind::Str => u32::from(cpu.tr.selector),
                // A 32-bit register gets all of CR0, as every CPU since the
                // Pentium does; a word gets the machine status word.
                _ => cpu.cr0,
            };
            store_selector_like(cpu, mem, insn, v)?;
        }
        Kind::Lldt => {
            if !protected(cpu) {
                return Err(ud());
            }
            require_cpl0(cpu)?;
            let sel = Selector(read_op(cpu, mem, insn, 0, 2)? as u16);
            cpu.ldtr = load_ldt(cpu, mem, sel)?;
        }
        _ => {
            if !protected(cpu) {
                return Err(ud());
            }
            require_cpl0(cpu)?;
            let sel = Selector(read_op(cpu, mem, insn, 0, 2)? as u16);
            cpu.tr = load_tr(cpu, mem, sel)?;
        }
    }
    Ok(())
}

/// With CR4.UMIP, the store instructions are privileged.
fn check_umip(cpu: &CpuState) -> Result<(), Exception> {
    if cpu.cr4 & cr4::UMIP != 0 && cpu.cpl() > 0 {
        return Err(Exception::gp(0));
    }
    Ok(())
}

/// True for the forms with a 16-bit operand size, which use 24 base bits.
fn is_16bit(insn: &Instruction) -> bool {
    matches!(
        insn.code(),
        Code::Lgdt_m1632_16 | Code::Lidt_m1632_16 | Code::Sgdt_m1632_16 | Code::Sidt_m1632_16
    )
}

/// Reads the 6-byte limit-and-base operand of LGDT/LIDT.
fn load_table(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
) -> Result<TableRegister, Exception> {
    let at = linear(
        cpu,
        insn.memory_segment(),
        offset(cpu, insn, 0),
        6,
        Access::Read,
    )?;
    let mut b = [0u8; 6];
    mem.read(at, &mut b)?;
    let limit = u16::from_le_bytes([b[0], b[1]]);
    let base = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let base = if is_16bit(insn) {
        base & 0x00FF_FFFF
    } else {
        base
    };
    Ok(TableRegister { base, limit })
}

/// Writes the 6-byte operand of SGDT/SIDT (16-bit form: 24-bit base, then 0).
fn store_table(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    t: TableRegister,
) -> Result<(), Exception> {
    let at = linear(
        cpu,
        insn.memory_segment(),
        offset(cpu, insn, 0),
        6,
        Access::Write,
    )?;
    let base = if is_16bit(insn) {
        t.base & 0x00FF_FFFF
    } else {
        t.base
    };
    let mut b = [0u8; 6];
    b[..2].copy_from_slice(&t.limit.to_le_bytes());
    b[2..].copy_from_slice(&base.to_le_bytes());
    mem.write(at, &b)
}

/// SLDT/STR/SMSW: a register receives the value at its own size (a 32-bit
/// register zero-extended), memory always receives 16 bits.
fn store_selector_like(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    v: u32,
) -> Result<(), Exception> {
    if insn.op0_kind() == OpKind::Register {
        let v = if insn.op0_register().size() == 4 {
            v
        } else {
            v & 0xFFFF
        };
        write_op(cpu, mem, insn, 0, 4, v)
    } else {
        write_op(cpu, mem, insn, 0, 2, v & 0xFFFF)
    }
}

/// The LDTR a LLDT of `sel` loads: null makes it unusable; otherwise a
/// present LDT descriptor in the GDT.
pub(super) fn load_ldt(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
) -> Result<Segment, Exception> {
    if sel.is_null() {
        return Ok(Segment {
            selector: sel.0,
            ..Segment::unusable()
        });
    }
    let code = u32::from(sel.0 & !3);
    if sel.ti() {
        return Err(Exception::gp(code));
    }
    let (d, _) = read_descriptor(cpu, mem, sel, 0)?;
    if !d.is_ldt() {
        return Err(Exception::gp(code));
    }
    if !d.present {
        return Err(Exception::with_code(vector::NP, code));
    }
    Ok(d.to_segment(sel.0))
}

/// The TR a LTR of `sel` loads, after marking the TSS busy in the GDT.
fn load_tr(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
) -> Result<Segment, Exception> {
    if sel.is_null() {
        return Err(Exception::gp(0));
    }
    let code = u32::from(sel.0 & !3);
    if sel.ti() {
        return Err(Exception::gp(code));
    }
    let (d, at) = read_descriptor(cpu, mem, sel, 0)?;
    let available = !d.s && matches!(d.typ, types::TSS16_AVAILABLE | types::TSS32_AVAILABLE);
    if !available {
        return Err(Exception::gp(code));
    }
    if !d.present {
        return Err(Exception::with_code(vector::NP, code));
    }
    let mut busy = d;
    busy.typ |= types::TSS_BUSY_BIT;
    mem.write(at + 5, &busy.to_bytes()[5..6])?;
    Ok(busy.to_segment(sel.0))
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::interrupt::Exception;
    use crate::state::{cr4, Segment, TableRegister};

    #[test]
    fn lgdt_and_lidt_load_limit_and_base() {
        let (mut cpu, mut m) = machine();
        poke(&mut m, 0x7000, &[0xFF, 0x07, 0x78, 0x56, 0x34, 0x12]);
        cpu.ebx = 0x7000;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x01, 0x13]); // lgdt [ebx]
        assert_eq!(
            cpu.gdtr,
            TableRegister {
                base: 0x1234_5678,
                limit: 0x7FF
            }
        );
        assert!(eff.tables_changed);
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0x1B]); // lidt [ebx]
        assert_eq!(cpu.idtr.base, 0x1234_5678);
        // The 16-bit form ignores the top byte of the base.
        ok(&mut cpu, &mut m, &[0x66, 0x0F, 0x01, 0x1B]); // o16 lidt [ebx]
        assert_eq!(cpu.idtr.base, 0x0034_5678);
    }

    #[test]
    fn lgdt_is_privileged_and_checks_the_limit() {
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x01, 0x13]), gp(0));
        let (mut cpu, mut m) = machine();
        cpu.ds.limit = 0x7003;
        cpu.ebx = 0x7000;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x01, 0x13]), gp(0));
    }

    #[test]
    fn sgdt_sidt_store_the_virtual_registers() {
        let (mut cpu, mut m) = user_machine();
        cpu.edi = 0x7000;
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0x07]); // sgdt [edi]
        assert_eq!(read16(&mut m, 0x7000), (GDT_ENTRIES * 8 - 1) as u16);
        assert_eq!(read32(&mut m, 0x7002), GDT);
        cpu.idtr.base = 0xC123_4000;
        ok(&mut cpu, &mut m, &[0x66, 0x0F, 0x01, 0x0F]); // o16 sidt [edi]
        assert_eq!(read16(&mut m, 0x7000), 0x7FF);
        assert_eq!(read32(&mut m, 0x7002), 0x0023_4000, "24-bit base, then 0");
    }

    #[test]
    fn sgdt_to_a_read_only_segment_is_gp() {
        let (mut cpu, mut m) = machine();
        cpu.es.typ = 0x1;
        assert_eq!(fault(&mut cpu, &mut m, &[0x26, 0x0F, 0x01, 0x00]), gp(0));
    }

    #[test]
    fn umip_makes_the_stores_privileged() {
        let (mut cpu, mut m) = user_machine();
        cpu.cr4 = cr4::UMIP;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x01, 0x07]), gp(0));
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x01, 0xE0]), gp(0));
    }

    #[test]
    fn sldt_str_smsw_register_and_memory_forms() {
        let (mut cpu, mut m) = user_machine();
        cpu.eax = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xC0]); // sldt eax
        assert_eq!(cpu.eax, u32::from(LDT_SEL), "32-bit register zero-extended");
        cpu.ebx = 0xFFFF_FFFF;
        ok(&mut cpu, &mut m, &[0x66, 0x0F, 0x00, 0xCB]); // str bx
        assert_eq!(cpu.ebx, 0xFFFF_0000 | u32::from(TSS_BUSY));
        cpu.cr0 |= 0x8000_0000;
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0xE1]); // smsw ecx
        assert_eq!(cpu.ecx, cpu.cr0);
        cpu.edi = 0x7000;
        write32(&mut m, 0x7000, 0xAAAA_AAAA);
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0x27]); // smsw [edi]
        assert_eq!(read32(&mut m, 0x7000), 0xAAAA_0000 | (cpu.cr0 & 0xFFFF));
    }

    #[test]
    fn lldt_loads_ldt_descriptors_and_accepts_null() {
        let (mut cpu, mut m) = machine();
        cpu.ldtr = Segment::unusable();
        cpu.eax = u32::from(LDT_SEL);
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]); // lldt ax
        assert_eq!((cpu.ldtr.base, cpu.ldtr.limit), (LDT, 0xF));
        assert!(eff.tables_changed);
        cpu.eax = 3;
        ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]);
        assert!(!cpu.ldtr.present);
        assert_eq!(cpu.ldtr.selector, 3);
    }

    #[test]
    fn lldt_faults() {
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(KDATA);
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]), gp(KDATA));
        cpu.eax = 0x0C; // LDT selector
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]), gp(0x0C));
        cpu.eax = 0x400; // past the GDT limit
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]), gp(0x400));
        let mut d = system(0x2, LDT, 0xF);
        d.present = false;
        set_gdt(&mut m, LDT_SEL, d);
        cpu.eax = u32::from(LDT_SEL);
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD0]),
            Exception::with_code(vector::NP, u32::from(LDT_SEL))
        );
    }

    #[test]
    fn ltr_marks_the_tss_busy() {
        let (mut cpu, mut m) = machine();
        cpu.eax = u32::from(TSS_AVAIL);
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x00, 0xD8]); // ltr ax
        assert_eq!(cpu.tr.selector, TSS_AVAIL);
        assert_eq!((cpu.tr.base, cpu.tr.typ), (TSS2, 0xB));
        assert_eq!(gdt_entry(&mut m, TSS_AVAIL).typ, 0xB);
        assert!(eff.tables_changed);
        // Loading it again: it is busy now.
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD8]), gp(TSS_AVAIL));
    }

    #[test]
    fn ltr_faults() {
        let (mut cpu, mut m) = machine();
        cpu.eax = 0;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD8]), gp(0));
        cpu.eax = u32::from(KDATA);
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD8]), gp(KDATA));
        let (mut cpu, mut m) = user_machine();
        cpu.eax = u32::from(TSS_AVAIL);
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x00, 0xD8]), gp(0));
        assert_eq!(gdt_entry(&mut m, TSS_AVAIL).typ, 0x9, "still available");
    }
}
