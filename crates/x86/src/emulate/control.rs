//! Control and debug registers: MOV to/from CRn and DRn, CLTS, LMSW, and
//! the cache/TLB instructions INVLPG, INVD, WBINVD.

use iced_x86::{Instruction, Mnemonic, Register};

use super::operand::{offset, read_op, read_reg, sreg, write_reg};
use super::{require_cpl0, ud, unsupported, Effects, Failure, Platform};
use crate::cpuid::{leaf1_ecx, leaf1_edx, CpuidModel};
use crate::interrupt::{Exception, LinearMemory};
use crate::state::{cr0, cr4, CpuState};

/// CR0 bits a 486-and-later CPU implements; writes to the others are ignored.
const CR0_DEFINED: u32 = cr0::PE
    | cr0::MP
    | cr0::EM
    | cr0::TS
    | cr0::ET
    | cr0::NE
    | cr0::WP
    | cr0::AM
    | cr0::NW
    | cr0::CD
    | cr0::PG;

/// CR4.OSXSAVE, which `state::cr4` does not name because nothing else uses it.
const CR4_OSXSAVE: u32 = 1 << 18;

/// DR6 bits that always read as one (4-11, 16-31).
pub const DR6_FIXED1: u32 = 0xFFFF_0FF0;
/// DR6 bits software can write: B0-B3, BD, BS, BT.
const DR6_WRITABLE: u32 = 0x0000_E00F;
/// DR7 bit 10 always reads as one.
pub const DR7_FIXED1: u32 = 1 << 10;
/// DR7 bits that are reserved as zero: 11, 12, 14, 15.
const DR7_RESERVED: u32 = (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15);
/// DR7.GD: general detect, #DB on any debug-register access.
const DR7_GD: u32 = 1 << 13;

/// The CR4 bits the modelled CPU lets software set: those whose feature
/// CPUID advertises (PCE exists on every P6); setting any other is #GP(0).
pub fn cr4_writable(model: &CpuidModel) -> u32 {
    let edx = model.leaf1_edx();
    let ecx = model.leaf1_ecx();
    let pairs = [
        (edx & leaf1_edx::VME, cr4::VME | cr4::PVI),
        (edx & leaf1_edx::TSC, cr4::TSD),
        (edx & leaf1_edx::DE, cr4::DE),
        (edx & leaf1_edx::PSE, cr4::PSE),
        (edx & leaf1_edx::PAE, cr4::PAE),
        (edx & leaf1_edx::MCE, cr4::MCE),
        (edx & leaf1_edx::PGE, cr4::PGE),
        (edx & leaf1_edx::FXSR, cr4::OSFXSR),
        (edx & leaf1_edx::SSE, cr4::OSXMMEXCPT),
        (ecx & leaf1_ecx::XSAVE, CR4_OSXSAVE),
    ];
    pairs
        .iter()
        .filter(|(feature, _)| *feature != 0)
        .fold(cr4::PCE, |acc, (_, bits)| acc | bits)
}

/// The number of a CRn or DRn register.
fn number(reg: Register, first: Register) -> u32 {
    reg as u32 - first as u32
}

/// Carries out one of this module's instructions on the working copy.
pub(super) fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
    eff: &mut Effects,
) -> Result<(), Failure> {
    match insn.mnemonic() {
        Mnemonic::Mov if insn.op0_register().is_cr() || insn.op1_register().is_cr() => {
            mov_cr(cpu, plat.cpuid(), insn, eff)
        }
        Mnemonic::Mov => mov_dr(cpu, insn),
        Mnemonic::Clts => {
            require_cpl0(cpu)?;
            cpu.cr0 &= !cr0::TS;
            eff.cr_written = true;
            Ok(())
        }
        Mnemonic::Lmsw => {
            require_cpl0(cpu)?;
            let v = read_op(cpu, mem, insn, 0, 2)?;
            // LMSW loads MP, EM and TS, and can set PE but never clear it.
            let low = cr0::PE | cr0::MP | cr0::EM | cr0::TS;
            cpu.cr0 = (cpu.cr0 & !(low & !cr0::PE)) | (v & low);
            eff.cr_written = true;
            Ok(())
        }
        Mnemonic::Invlpg => {
            require_cpl0(cpu)?;
            // No access is made, so there is no limit or type check.
            let seg = sreg(cpu, insn.memory_segment()).base;
            eff.tlb_flush_page = Some(seg.wrapping_add(offset(cpu, insn, 0)));
            Ok(())
        }
        // The monitor's caches are coherent with guest RAM: nothing to do.
        _ => Ok(require_cpl0(cpu)?),
    }
}

/// MOV to or from CR0, CR2, CR3, CR4.
fn mov_cr(
    cpu: &mut CpuState,
    model: &CpuidModel,
    insn: &Instruction,
    eff: &mut Effects,
) -> Result<(), Failure> {
    let to_cr = insn.op0_register().is_cr();
    let (cr, gpr) = if to_cr {
        (insn.op0_register(), insn.op1_register())
    } else {
        (insn.op1_register(), insn.op0_register())
    };
    let n = number(cr, Register::CR0);
    // CR1, CR5-CR7 (and CR8, 64-bit only) do not exist: #UD beats #GP.
    if !matches!(n, 0 | 2 | 3 | 4) {
        return Err(ud());
    }
    require_cpl0(cpu)?;
    if !to_cr {
        let v = match n {
            0 => cpu.cr0,
            2 => cpu.cr2,
            3 => cpu.cr3,
            _ => cpu.cr4,
        };
        write_reg(cpu, gpr, v);
        return Ok(());
    }
    let v = read_reg(cpu, gpr);
    match n {
        0 => {
            let v = (v & CR0_DEFINED) | cr0::ET;
            if (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0) {
                return Err(Exception::gp(0).into());
            }
            cpu.cr0 = v;
        }
        2 => cpu.cr2 = v,
        3 => {
            cpu.cr3 = v;
            eff.cr3_written = true;
        }
        _ => {
            if v & !cr4_writable(model) != 0 {
                return Err(Exception::gp(0).into());
            }
            cpu.cr4 = v;
        }
    }
    eff.cr_written = true;
    Ok(())
}

/// MOV to or from DR0-DR7 (DR4/DR5 alias DR6/DR7 unless CR4.DE).
fn mov_dr(cpu: &mut CpuState, insn: &Instruction) -> Result<(), Failure> {
    let to_dr = insn.op0_register().is_dr();
    let (dr, gpr) = if to_dr {
        (insn.op0_register(), insn.op1_register())
    } else {
        (insn.op1_register(), insn.op0_register())
    };
    let mut n = number(dr, Register::DR0) as usize;
    if n > 7 {
        return Err(ud());
    }
    if n == 4 || n == 5 {
        if cpu.cr4 & cr4::DE != 0 {
            return Err(ud());
        }
        n += 2;
    }
    require_cpl0(cpu)?;
    if cpu.dr[7] & DR7_GD != 0 {
        return Err(unsupported("DR7.GD (debug-register access detection)"));
    }
    if !to_dr {
        write_reg(cpu, gpr, cpu.dr[n]);
        return Ok(());
    }
    let v = read_reg(cpu, gpr);
    cpu.dr[n] = match n {
        6 => (v & DR6_WRITABLE) | DR6_FIXED1,
        7 => (v & !DR7_RESERVED) | DR7_FIXED1,
        _ => v,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{CR4_OSXSAVE, DR6_FIXED1, DR7_FIXED1, DR7_GD, DR7_RESERVED};
    use crate::emulate::testing::*;
    use crate::interrupt::Failure;
    use crate::state::{cr0, cr4, CpuState};

    #[test]
    fn mov_cr0_keeps_et_and_reports_paging_changes() {
        let (mut cpu, mut m) = machine();
        cpu.eax = cr0::PE | cr0::PG | cr0::WP | 0x0000_0F00;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x22, 0xC0]); // mov cr0, eax
        assert_eq!(cpu.cr0, cr0::PE | cr0::PG | cr0::WP | cr0::ET);
        assert!(eff.cr_written && eff.paging_changed && eff.context_changed);
        assert_eq!(cpu.eip, CODE + 3);
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x20, 0xC3]); // mov ebx, cr0
        assert_eq!(cpu.ebx, cpu.cr0);
        assert!(!eff.paging_changed && !eff.cr_written);
    }

    #[test]
    fn mov_cr0_with_pg_without_pe_or_nw_without_cd_is_gp() {
        let (mut cpu, mut m) = machine();
        cpu.eax = cr0::PG;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x22, 0xC0]), gp(0));
        cpu.eax = cr0::PE | cr0::NW;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x22, 0xC0]), gp(0));
    }

    #[test]
    fn mov_cr3_always_flushes_and_cr2_is_plain_storage() {
        let (mut cpu, mut m) = machine();
        cpu.ecx = 0x0012_3000;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x22, 0xD9]); // mov cr3, ecx
        assert_eq!(cpu.cr3, 0x0012_3000);
        assert!(eff.cr3_written && !eff.paging_changed);
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x22, 0xD9]);
        assert!(eff.cr3_written, "a write of the same value still flushes");
        cpu.edx = 0xC000_1234;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x22, 0xD2]); // mov cr2, edx
        assert_eq!(cpu.cr2, 0xC000_1234);
        assert!(!eff.cr3_written);
    }

    #[test]
    fn mov_cr4_refuses_bits_the_model_does_not_offer() {
        let (mut cpu, mut m) = machine();
        cpu.eax = cr4::PSE | cr4::PAE | cr4::PGE | cr4::OSFXSR;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x22, 0xE0]); // mov cr4, eax
        assert_eq!(cpu.cr4, cr4::PSE | cr4::PAE | cr4::PGE | cr4::OSFXSR);
        assert!(eff.paging_changed);
        for bad in [cr4::VME, cr4::DE, cr4::MCE, cr4::UMIP, CR4_OSXSAVE, 1 << 20] {
            cpu.eax = bad;
            assert_eq!(
                fault(&mut cpu, &mut m, &[0x0F, 0x22, 0xE0]),
                gp(0),
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn nonexistent_control_registers_are_ud_even_at_cpl3() {
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x22, 0xC8]), ud()); // cr1
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x20, 0xE8]), ud()); // cr5
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x20, 0xC0]), gp(0)); // cr0
    }

    #[test]
    fn debug_registers_keep_their_fixed_bits_and_dr4_aliases_dr6() {
        let (mut cpu, mut m) = machine();
        assert_eq!(cpu.dr[6], DR6_FIXED1);
        assert_eq!(cpu.dr[7], DR7_FIXED1);
        cpu.eax = 0xC010_0000;
        ok(&mut cpu, &mut m, &[0x0F, 0x23, 0xC0]); // mov dr0, eax
        assert_eq!(cpu.dr[0], 0xC010_0000);
        cpu.eax = 0;
        ok(&mut cpu, &mut m, &[0x0F, 0x23, 0xF0]); // mov dr6, eax
        assert_eq!(cpu.dr[6], DR6_FIXED1);
        cpu.eax = !DR7_GD;
        ok(&mut cpu, &mut m, &[0x0F, 0x23, 0xF8]); // mov dr7, eax
        assert_eq!(cpu.dr[7], !DR7_GD & !DR7_RESERVED);
        ok(&mut cpu, &mut m, &[0x0F, 0x21, 0xE3]); // mov ebx, dr4 (= dr6)
        assert_eq!(cpu.ebx, DR6_FIXED1);
        cpu.cr4 = cr4::DE;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x21, 0xE3]), ud());
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x21, 0xC0]), gp(0));
    }

    #[test]
    fn clts_lmsw_and_the_privilege_check() {
        let (mut cpu, mut m) = machine();
        cpu.cr0 |= cr0::TS;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x06]); // clts
        assert_eq!(cpu.cr0 & cr0::TS, 0);
        assert!(eff.cr_written);
        // lmsw ax with 0: PE stays set, MP/EM/TS cleared.
        cpu.cr0 |= cr0::MP | cr0::TS;
        cpu.eax = 0xFFF0;
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0xF0]);
        assert_eq!(cpu.cr0, cr0::PE | cr0::ET);
        cpu.eax = cr0::EM | cr0::TS;
        ok(&mut cpu, &mut m, &[0x0F, 0x01, 0xF0]);
        assert_eq!(cpu.cr0, cr0::PE | cr0::ET | cr0::EM | cr0::TS);
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x06]), gp(0));
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x09]), gp(0)); // wbinvd
    }

    #[test]
    fn lmsw_can_enter_protected_mode_from_real_mode() {
        let mut cpu = CpuState::reset();
        let mut m = crate::interrupt::testing::Flat(vec![0; 0x10_0000]);
        cpu.cs.base = 0;
        cpu.cs.selector = 0;
        cpu.eip = 0x7C00;
        cpu.eax = 1;
        let eff = ok(&mut cpu, &mut m, &[0x0F, 0x01, 0xF0]);
        assert_eq!(cpu.cr0 & cr0::PE, cr0::PE);
        assert!(eff.context_changed && eff.paging_changed);
    }

    #[test]
    fn invlpg_reports_the_linear_address_with_the_segment_base() {
        let (mut cpu, mut m) = machine();
        cpu.fs.base = 0x1000;
        cpu.ebx = 0xC000_0000;
        let eff = ok(&mut cpu, &mut m, &[0x64, 0x0F, 0x01, 0x7B, 0x10]); // invlpg fs:[ebx+0x10]
        assert_eq!(eff.tlb_flush_page, Some(0xC000_1010));
        let (mut cpu, mut m) = user_machine();
        assert_eq!(
            run1(&mut cpu, &mut m, &[0x0F, 0x01, 0x38]),
            Err(Failure::Fault(gp(0)))
        );
    }
}
