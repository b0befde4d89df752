//! Far CALL, JMP and RET: direct (ptr16:16/ptr16:32) and indirect
//! (m16:16/m16:32) transfers to code segments at the same privilege, task
//! switches to a TSS or through a task gate ([`crate::task`]), and far RET
//! to the same or an outer level. Call gates are reported as unsupported.

use iced_x86::{Code, Instruction, OpKind};

use super::operand::{linear, offset, push_all, read_mem, set_sp, stack_read, Access};
use super::{protected, unsupported, Effects, Failure};
use crate::classify::Kind;
use crate::descriptor::{types, Descriptor, Gate, Selector};
use crate::interrupt::{
    deliver_event, mark_accessed, null_outer_data_segments, read_descriptor, vector, Event,
    Exception, LinearMemory,
};
use crate::state::{CpuState, Segment};
use crate::task::{self, Source};

/// Carries out one of this module's instructions on the working copy, whose
/// EIP already points past the instruction.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
    kind: Kind,
    eff: &mut Effects,
) -> Result<(), Failure> {
    if kind == Kind::FarRet {
        return far_ret(cpu, mem, insn);
    }
    let (sel, off, size) = target(cpu, mem, insn)?;
    if protected(cpu) && !Selector(sel).is_null() {
        let (d, at) = read_descriptor(cpu, mem, Selector(sel), 0)?;
        if task::is_tss(&d) || (!d.s && d.typ == types::TASK_GATE) {
            let source = if kind == Kind::FarCall {
                Source::Call
            } else {
                Source::Jmp
            };
            eff.delivered = task_transfer(cpu, mem, Selector(sel), d, at, source)?;
            return Ok(());
        }
    }
    let (cs, accessed) = if protected(cpu) {
        let (cs, d, at) = code_target(cpu, mem, Selector(sel), off)?;
        (cs, Some((d, at)))
    } else {
        let cs = Segment {
            selector: sel,
            base: u32::from(sel) << 4,
            ..cpu.cs
        };
        (cs, None)
    };
    if kind == Kind::FarCall {
        let ret = [u32::from(cpu.cs.selector), cpu.eip];
        push_all(cpu, mem, size, &ret)?;
    }
    if let Some((d, at)) = accessed {
        mark_accessed(mem, &d, at)?;
    }
    cpu.cs = cs;
    cpu.eip = off;
    Ok(())
}

/// The selector, offset and operand size of a far CALL/JMP.
fn target(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
) -> Result<(u16, u32, u32), Exception> {
    match insn.op0_kind() {
        OpKind::FarBranch16 => Ok((
            insn.far_branch_selector(),
            u32::from(insn.far_branch16()),
            2,
        )),
        OpKind::FarBranch32 => Ok((insn.far_branch_selector(), insn.far_branch32(), 4)),
        _ => {
            let size = match insn.code() {
                Code::Call_m1616 | Code::Jmp_m1616 => 2,
                _ => 4,
            };
            let seg = insn.memory_segment();
            let off = offset(cpu, insn, 0);
            linear(cpu, seg, off, size + 2, Access::Read)?;
            let target = read_mem(cpu, mem, seg, off, size)?;
            let sel = read_mem(cpu, mem, seg, off.wrapping_add(size), 2)? as u16;
            Ok((sel, target, size))
        }
    }
}

/// Checks a far CALL/JMP target at the same privilege level and returns the
/// CS cache it loads (RPL set to CPL) and the descriptor to mark accessed.
fn code_target(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    off: u32,
) -> Result<(Segment, Descriptor, u32), Failure> {
    if sel.is_null() {
        return Err(Exception::gp(0).into());
    }
    let code = u32::from(sel.0 & !3);
    let (d, at) = read_descriptor(cpu, mem, sel, 0)?;
    if !d.is_code() {
        return Err(match (d.s, d.typ) {
            (false, types::CALL_GATE16 | types::CALL_GATE32) => unsupported("call gates"),
            _ => Exception::gp(code).into(),
        });
    }
    let cpl = cpu.cpl();
    let allowed = if d.is_conforming() {
        d.dpl <= cpl
    } else {
        sel.rpl() <= cpl && d.dpl == cpl
    };
    if !allowed {
        return Err(Exception::gp(code).into());
    }
    if !d.present {
        return Err(Exception::with_code(vector::NP, code).into());
    }
    let cs = d.with_accessed().to_segment(sel.with_rpl(cpl).0);
    if off > cs.limit {
        return Err(Exception::gp(0).into());
    }
    Ok((cs, d, at))
}

/// A far JMP or CALL to a TSS or through a task gate (SDM vol. 2, JMP and
/// CALL: TASK-GATE and TASK-STATE-SEGMENT): the TSS or gate must be
/// usable at the CPL and the selector's RPL, the TSS available and in the
/// GDT; the offset is ignored. The old task resumes after the
/// instruction. Returns the exception the new task raised before its
/// first instruction, already delivered.
fn task_transfer(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    d: Descriptor,
    at: u32,
    source: Source,
) -> Result<Option<Exception>, Failure> {
    let gp = |s: Selector| Exception::gp(u32::from(s.0 & !3));
    let np = |s: Selector| Exception::with_code(vector::NP, u32::from(s.0 & !3));
    if d.dpl < cpu.cpl() || d.dpl < sel.rpl() {
        return Err(gp(sel).into());
    }
    let (tss_sel, tss, tss_at) = if task::is_tss(&d) {
        (sel, d, at)
    } else {
        if !d.present {
            return Err(np(sel).into());
        }
        let gate = Gate::from_bytes(d.to_bytes()).expect("a task gate decodes as a gate");
        let tss_sel = Selector(gate.selector);
        if tss_sel.ti() {
            return Err(gp(tss_sel).into());
        }
        let (tss, tss_at) = read_descriptor(cpu, mem, tss_sel, 0)?;
        if !task::is_tss(&tss) {
            return Err(gp(tss_sel).into());
        }
        (tss_sel, tss, tss_at)
    };
    if task::is_busy(&tss) {
        return Err(gp(tss_sel).into());
    }
    if !tss.present {
        return Err(np(tss_sel).into());
    }
    let resume = cpu.eip;
    let pending = task::switch(cpu, mem, tss_sel, &tss, tss_at, source, resume)?;
    if let Some(e) = pending {
        deliver_event(cpu, mem, e.vector, Event::Exception(e.error_code))
            .map_err(Failure::Unsupported)?;
    }
    Ok(pending)
}

/// RETF [imm16] to the same or an outer privilege level.
fn far_ret(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    insn: &Instruction,
) -> Result<(), Failure> {
    let size = match insn.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        _ => 4,
    };
    let imm = if insn.op_count() > 0 {
        u32::from(insn.immediate16())
    } else {
        0
    };
    let eip = stack_read(cpu, mem, 0, size)?;
    let sel = Selector(stack_read(cpu, mem, size, size)? as u16);
    let popped = 2 * size;
    if !protected(cpu) {
        cpu.cs.selector = sel.0;
        cpu.cs.base = u32::from(sel.0) << 4;
        cpu.eip = eip;
        set_sp(cpu, cpu.esp.wrapping_add(popped + imm));
        return Ok(());
    }
    if sel.is_null() {
        return Err(Exception::gp(0).into());
    }
    let code = u32::from(sel.0 & !3);
    let (d, at) = read_descriptor(cpu, mem, sel, 0)?;
    let cpl = cpu.cpl();
    let rpl = sel.rpl();
    if !d.is_code() || rpl < cpl {
        return Err(Exception::gp(code).into());
    }
    let dpl_ok = if d.is_conforming() {
        d.dpl <= rpl
    } else {
        d.dpl == rpl
    };
    if !dpl_ok {
        return Err(Exception::gp(code).into());
    }
    if !d.present {
        return Err(Exception::with_code(vector::NP, code).into());
    }
    let cs = d.with_accessed().to_segment(sel.0);
    if eip > cs.limit {
        return Err(Exception::gp(0).into());
    }
    if rpl == cpl {
        set_sp(cpu, cpu.esp.wrapping_add(popped + imm));
    } else {
        // The outer stack pointer sits above the parameters the immediate skips.
        let esp = stack_read(cpu, mem, popped + imm, size)?;
        let ss_sel = Selector(stack_read(cpu, mem, popped + imm + size, size)? as u16);
        if ss_sel.is_null() {
            return Err(Exception::gp(0).into());
        }
        let ss_code = u32::from(ss_sel.0 & !3);
        let (sd, sat) = read_descriptor(cpu, mem, ss_sel, 0)?;
        if ss_sel.rpl() != rpl || !sd.is_writable() || sd.dpl != rpl {
            return Err(Exception::gp(ss_code).into());
        }
        if !sd.present {
            return Err(Exception::with_code(vector::SS, ss_code).into());
        }
        mark_accessed(mem, &sd, sat)?;
        cpu.ss = sd.with_accessed().to_segment(ss_sel.0);
        cpu.esp = if size == 4 {
            esp
        } else {
            (cpu.esp & 0xFFFF_0000) | esp
        };
        set_sp(cpu, cpu.esp.wrapping_add(imm));
        null_outer_data_segments(cpu, rpl);
    }
    mark_accessed(mem, &d, at)?;
    cpu.cs = cs;
    cpu.eip = eip;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::emulate::{Failure, Unsupported};
    use crate::interrupt::Exception;
    use crate::state::Segment;

    #[test]
    fn direct_far_jmp_to_a_kernel_code_segment() {
        let (mut cpu, mut m) = machine();
        cpu.cs.selector = 0; // not the GDT's KCODE, so the reload is visible
        let eff = ok(
            &mut cpu,
            &mut m,
            &[0xEA, 0x78, 0x56, 0x34, 0x12, 0x08, 0x00],
        );
        assert_eq!((cpu.cs.selector, cpu.eip), (KCODE, 0x1234_5678));
        assert_eq!(cpu.cs, flat(0xB, 0).to_segment(KCODE));
        assert_eq!(gdt_entry(&mut m, KCODE).typ, 0xB, "accessed bit set");
        assert!(eff.branched && eff.context_changed && eff.segments_changed);
    }

    #[test]
    fn far_jmp_to_16bit_code_and_back_changes_the_context() {
        let (mut cpu, mut m) = machine();
        ok(&mut cpu, &mut m, &[0xEA, 0x00, 0x10, 0, 0, 0x58, 0x00]); // jmp 0x58:0x1000
        assert!(!cpu.cs.db);
        assert_eq!(cpu.linear_ip(), 0x11000);
        // 16-bit code: jmp 0x08:0x6000 is ptr16:16.
        let eff = ok(&mut cpu, &mut m, &[0xEA, 0x00, 0x60, 0x08, 0x00]);
        assert!(cpu.cs.db && eff.context_changed);
        assert_eq!(cpu.eip, 0x6000);
    }

    #[test]
    fn far_call_pushes_cs_and_return_eip() {
        let (mut cpu, mut m) = machine();
        write32(&mut m, 0x7000, 0x0000_4000);
        write16(&mut m, 0x7004, KCODE);
        cpu.ebx = 0x7000;
        ok(&mut cpu, &mut m, &[0xFF, 0x1B]); // call far [ebx]
        assert_eq!(cpu.eip, 0x4000);
        assert_eq!(cpu.esp, STACK - 8);
        assert_eq!(read32(&mut m, STACK - 4), u32::from(KCODE));
        assert_eq!(read32(&mut m, STACK - 8), CODE + 2);
    }

    #[test]
    fn far_call_16bit_indirect_pushes_words() {
        let (mut cpu, mut m) = machine();
        write16(&mut m, 0x7000, 0x4000);
        write16(&mut m, 0x7002, KCODE);
        cpu.ebx = 0x7000;
        ok(&mut cpu, &mut m, &[0x66, 0xFF, 0x1B]); // call far word [ebx]
        assert_eq!(cpu.eip, 0x4000);
        assert_eq!(cpu.esp, STACK - 4);
        assert_eq!(read16(&mut m, STACK - 2), KCODE);
        assert_eq!(read16(&mut m, STACK - 4), (CODE + 3) as u16);
    }

    #[test]
    fn far_jmp_privilege_rules() {
        // CPL 3 cannot jump to DPL-0 non-conforming code...
        let (mut cpu, mut m) = user_machine();
        assert_eq!(
            fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x08, 0x00]),
            gp(KCODE)
        );
        // ...but can jump to conforming DPL-0 code, staying at CPL 3.
        ok(&mut cpu, &mut m, &[0xEA, 0, 0x40, 0, 0, 0x50, 0x00]);
        assert_eq!(cpu.cs.selector, CONFORMING | 3);
        assert_eq!(cpu.cpl(), 3);
        // CPL 0 with RPL 3 to a DPL-0 segment is refused.
        let (mut cpu, mut m) = machine();
        assert_eq!(
            fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x0B, 0x00]),
            gp(KCODE)
        );
        // Data segments are not jump targets; null is #GP(0).
        assert_eq!(
            fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x10, 0x00]),
            gp(KDATA)
        );
        assert_eq!(fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0, 0]), gp(0));
    }

    #[test]
    fn far_jmp_past_the_limit_or_not_present() {
        let (mut cpu, mut m) = machine();
        assert_eq!(
            fault(&mut cpu, &mut m, &[0xEA, 0, 0, 1, 0, 0x58, 0x00]), // 0x58:0x10000
            gp(0)
        );
        let (mut cpu, mut m) = user_machine();
        assert_eq!(
            fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, UCODE_NP as u8, 0x00]),
            Exception::with_code(vector::NP, 0x70)
        );
    }

    #[test]
    fn call_gates_are_unsupported() {
        let (mut cpu, mut m) = machine();
        let r = run1(&mut cpu, &mut m, &[0x9A, 0, 0, 0, 0, CALL_GATE as u8, 0x00]);
        assert_eq!(
            r,
            Err(Failure::Unsupported(Unsupported::Feature("call gates")))
        );
    }

    #[test]
    fn far_call_stack_fault_is_ss0_and_changes_nothing() {
        let (mut cpu, mut m) = machine();
        cpu.ss.limit = 0xFFFF;
        cpu.esp = 4;
        assert_eq!(
            fault(&mut cpu, &mut m, &[0x9A, 0, 0x40, 0, 0, 0x08, 0x00]),
            Exception::with_code(vector::SS, 0)
        );
    }

    #[test]
    fn retf_same_level_with_immediate() {
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 8;
        write32(&mut m, STACK - 8, 0x4321);
        write32(&mut m, STACK - 4, u32::from(KCODE));
        ok(&mut cpu, &mut m, &[0xCA, 0x08, 0x00]); // retf 8
        assert_eq!(
            (cpu.cs.selector, cpu.eip, cpu.esp),
            (KCODE, 0x4321, STACK + 8)
        );
    }

    #[test]
    fn retf_to_user_mode_switches_stacks_and_nulls_kernel_segments() {
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 24;
        let frame = [
            0x0800_0000,
            u32::from(UCODE),
            0x11,
            0x22,
            0xB000,
            u32::from(UDATA),
        ];
        for (i, v) in frame.iter().enumerate() {
            write32(&mut m, cpu.esp + 4 * i as u32, *v);
        }
        cpu.gs = flat(0x3, 3).to_segment(UDATA);
        let eff = ok(&mut cpu, &mut m, &[0xCA, 0x08, 0x00]); // retf 8
        assert_eq!(cpu.cpl(), 3);
        assert_eq!(
            (cpu.eip, cpu.ss.selector, cpu.esp),
            (0x0800_0000, UDATA, 0xB008)
        );
        assert_eq!(cpu.ds, Segment::unusable());
        assert_eq!(cpu.es, Segment::unusable());
        assert_eq!(cpu.gs.selector, UDATA, "a DPL-3 segment survives");
        assert!(eff.context_changed && eff.segments_changed && eff.branched);
    }

    #[test]
    fn retf_to_inner_level_or_bad_outer_stack_is_gp() {
        let (mut cpu, mut m) = user_machine();
        cpu.esp = STACK - 8;
        write32(&mut m, STACK - 8, 0x4000);
        write32(&mut m, STACK - 4, u32::from(KCODE));
        assert_eq!(fault(&mut cpu, &mut m, &[0xCB]), gp(KCODE));
        let (mut cpu, mut m) = machine();
        cpu.esp = STACK - 16;
        let frame = [0x0800_0000, u32::from(UCODE), 0xB000, u32::from(KDATA)];
        for (i, v) in frame.iter().enumerate() {
            write32(&mut m, cpu.esp + 4 * i as u32, *v);
        }
        assert_eq!(fault(&mut cpu, &mut m, &[0xCB]), gp(KDATA));
    }

    #[test]
    fn real_mode_far_jmp_and_retf() {
        let mut cpu = crate::state::CpuState::reset();
        let mut m = crate::interrupt::testing::Flat(vec![0; 0x10_0000]);
        cpu.cs.base = 0;
        cpu.cs.selector = 0;
        cpu.eip = 0x7C00;
        ok(&mut cpu, &mut m, &[0xEA, 0x34, 0x12, 0x00, 0x10]); // jmp 0x1000:0x1234
        assert_eq!(
            (cpu.cs.selector, cpu.cs.base, cpu.eip),
            (0x1000, 0x10000, 0x1234)
        );
        cpu.esp = 0x500;
        write16(&mut m, 0x500, 0x7C05);
        write16(&mut m, 0x502, 0);
        ok(&mut cpu, &mut m, &[0xCB]); // retf
        assert_eq!((cpu.cs.base, cpu.eip, cpu.esp), (0, 0x7C05, 0x504));
    }
}
