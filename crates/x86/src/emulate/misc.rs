//! The rest: CPUID, RDTSC/RDTSCP/RDPID, RDMSR/WRMSR, RDPMC, HLT,
//! SYSENTER/SYSEXIT, SYSCALL/SYSRET, the PKRU, XSAVE, MONITOR/MWAIT and SMAP
//! instructions. Whether an instruction exists is the CPU model's answer, so
//! a feature the guest was not offered raises #UD as on a CPU without it.

use iced_x86::{Instruction, Mnemonic};

use super::{protected, require_cpl0, ud, unsupported, Effects, Failure, Platform};
use crate::classify::Kind;
use crate::cpuid::{ext1_edx, leaf1_ecx, leaf1_edx, CpuidModel, EXTENDED_LEAF};
use crate::interrupt::Exception;
use crate::msr::{MsrError, Uncore, WriteEffect};
use crate::state::{cr4, flags, CpuState, Segment};

/// Leaf 7 subleaf 0 feature bits the instructions below depend on.
mod leaf7 {
    /// EBX: CLAC/STAC.
    pub const SMAP: u32 = 1 << 20;
    /// ECX: RDPKRU/WRPKRU.
    pub const PKU: u32 = 1 << 3;
    /// ECX: RDPID.
    pub const RDPID: u32 = 1 << 22;
    /// EBX: INVPCID.
    pub const INVPCID: u32 = 1 << 10;
}

/// Register index in a CPUID answer.
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;

/// True when CPUID leaf `leaf` exists and has `bit` set in register `reg`.
/// Out-of-range leaves answer with another leaf's data, so the range matters.
fn has(model: &CpuidModel, leaf: u32, reg: usize, bit: u32) -> bool {
    let max = if leaf >= EXTENDED_LEAF {
        model.query(EXTENDED_LEAF, 0)[0]
    } else {
        model.query(0, 0)[0]
    };
    leaf <= max && model.query(leaf, 0)[reg] & bit != 0
}

/// #UD unless the model offers the feature.
fn require(offered: bool) -> Result<(), Failure> {
    if offered {
        Ok(())
    } else {
        Err(ud())
    }
}

/// Carries out one of this module's instructions on the working copy.
pub(super) fn execute(
    cpu: &mut CpuState,
    plat: &mut impl Platform,
    insn: &Instruction,
    kind: Kind,
    eff: &mut Effects,
) -> Result<(), Failure> {
    let model = *plat.cpuid();
    match kind {
        Kind::Cpuid => {
            let [a, b, c, d] = model.query(cpu.eax, cpu.ecx);
            (cpu.eax, cpu.ebx, cpu.ecx, cpu.edx) = (a, b, c, d);
        }
        Kind::Rdtsc => {
            require(model.leaf1_edx() & leaf1_edx::TSC != 0)?;
            if cpu.cr4 & cr4::TSD != 0 {
                require_cpl0(cpu)?;
            }
            let tsc = plat.tsc();
            (cpu.eax, cpu.edx) = (tsc as u32, (tsc >> 32) as u32);
        }
        Kind::Rdtscp => {
            require(has(&model, 0x8000_0001, EDX, ext1_edx::RDTSCP))?;
            return Err(unsupported("RDTSCP (IA32_TSC_AUX)"));
        }
        Kind::Rdpid => {
            require(has(&model, 7, ECX, leaf7::RDPID))?;
            return Err(unsupported("RDPID (IA32_TSC_AUX)"));
        }
        Kind::Rdmsr | Kind::Wrmsr => {
            require(model.leaf1_edx() & leaf1_edx::MSR != 0)?;
            require_cpl0(cpu)?;
            msr(cpu, plat, &model, kind, eff)?;
        }
        Kind::Rdpmc => {
            if cpu.cr4 & cr4::PCE == 0 {
                require_cpl0(cpu)?;
            }
            // The model has no architectural performance counters (no leaf
            // 0xA), so every counter index is invalid.
            return Err(Exception::gp(0).into());
        }
        Kind::Hlt => {
            require_cpl0(cpu)?;
            eff.halted = true;
        }
        Kind::Sysenter | Kind::Sysexit => {
            fast_system_call(cpu, &model, kind == Kind::Sysexit)?;
        }
        Kind::Syscall | Kind::Sysret => {
            require(has(&model, 0x8000_0001, EDX, ext1_edx::SYSCALL))?;
            return Err(unsupported("SYSCALL/SYSRET"));
        }
        Kind::Pkru => {
            require(has(&model, 7, ECX, leaf7::PKU))?;
            return Err(unsupported("protection keys (RDPKRU/WRPKRU)"));
        }
        Kind::Xsave | Kind::Xsetbv => {
            // Without XSAVE, CR4.OSXSAVE cannot be set either: #UD.
            require(model.leaf1_ecx() & leaf1_ecx::XSAVE != 0)?;
            return Err(unsupported("XSAVE state management"));
        }
        Kind::MonitorMwait => {
            let amd = matches!(insn.mnemonic(), Mnemonic::Monitorx | Mnemonic::Mwaitx);
            require(!amd && model.leaf1_ecx() & leaf1_ecx::MONITOR != 0)?;
            return Err(unsupported("MONITOR/MWAIT"));
        }
        Kind::Smap => {
            require(has(&model, 7, EBX, leaf7::SMAP))?;
            return Err(unsupported("SMAP (CLAC/STAC)"));
        }
        Kind::Invpcid => {
            require(has(&model, 7, EBX, leaf7::INVPCID))?;
            return Err(unsupported("INVPCID"));
        }
        // No VMX or SVM is offered; RSM outside SMM is #UD too.
        Kind::Vmx => return Err(ud()),
        Kind::OtherPrivileged if insn.mnemonic() == Mnemonic::Rsm => return Err(ud()),
        // The remaining CPL-0 instructions (XSAVES/XRSTORS, ENCLS, PCONFIG,
        // ...) are all announced in leaf 7 or 0xD: a model whose leaves stop
        // below 7 has none of them.
        Kind::OtherPrivileged if model.query(0, 0)[0] < 7 => return Err(ud()),
        other => return Err(unsupported(other.name())),
    }
    Ok(())
}

/// RDMSR/WRMSR through the MSR model; anything it refuses is #GP(0).
fn msr(
    cpu: &mut CpuState,
    plat: &mut impl Platform,
    model: &CpuidModel,
    kind: Kind,
    eff: &mut Effects,
) -> Result<(), Failure> {
    let index = cpu.ecx;
    if kind == Kind::Rdmsr {
        let v = read_msr(cpu, plat, model, index).map_err(|_| Exception::gp(0))?;
        (cpu.eax, cpu.edx) = (v as u32, (v >> 32) as u32);
        return Ok(());
    }
    let value = (u64::from(cpu.edx) << 32) | u64::from(cpu.eax);
    write_msr(cpu, plat, model, index, value).map_err(|_| Exception::gp(0))?;
    if index == crate::msr::IA32_EFER {
        eff.cr_written = true;
    }
    Ok(())
}

/// The values outside the CPU core that the MSR model reads.
fn uncore(plat: &mut impl Platform) -> Uncore {
    Uncore {
        tsc: plat.tsc(),
        apic_base: plat.apic_base(),
    }
}

/// RDMSR of `index` as the model answers it: the emulator's, and the KVM
/// engine's for the MSRs it answers in user space.
pub fn read_msr(
    cpu: &CpuState,
    plat: &mut impl Platform,
    model: &CpuidModel,
    index: u32,
) -> Result<u64, MsrError> {
    let outside = uncore(plat);
    plat.msrs().read(model, cpu, index, outside)
}

/// WRMSR of `value` to `index` as the model carries it out, with its
/// effects on the platform (TSC, local APIC); what it means for paging
/// (EFER.NXE) the caller finds in `cpu`.
pub fn write_msr(
    cpu: &mut CpuState,
    plat: &mut impl Platform,
    model: &CpuidModel,
    index: u32,
    value: u64,
) -> Result<(), MsrError> {
    let outside = uncore(plat);
    match plat.msrs().write(model, cpu, index, value, outside)? {
        WriteEffect::None => {}
        WriteEffect::SetTsc(v) => plat.set_tsc(v),
        WriteEffect::SetApicBase(v) => plat.set_apic_base(v),
        // EFER.NXE: `diff` reports the paging change from the state.
        WriteEffect::PagingChanged => {}
    }
    Ok(())
}

/// The flat 4 GiB segment SYSENTER/SYSEXIT load, at privilege `dpl`.
fn flat(selector: u16, code: bool, dpl: u8) -> Segment {
    let mut s = if code {
        Segment::flat_code32(selector)
    } else {
        Segment::flat_data32(selector)
    };
    s.dpl = dpl;
    s
}

/// SYSENTER: to CPL 0 at IA32_SYSENTER_CS:EIP with the stack it names.
/// SYSENTER, or SYSEXIT with `exit`, carried out on `cpu` as
/// [`execute`](super::execute) does it, for a caller that knows which
/// without decoding it (the engine's fast paths): #UD where `model` lacks
/// SEP, else the instruction's own checks. `cpu` is unchanged when it
/// faults; both jump, so no instruction length is needed.
pub fn fast_system_call(
    cpu: &mut CpuState,
    model: &CpuidModel,
    exit: bool,
) -> Result<(), Exception> {
    if model.leaf1_edx() & leaf1_edx::SEP == 0 {
        return Err(Exception::plain(crate::interrupt::vector::UD));
    }
    if exit {
        sysexit(cpu)
    } else {
        sysenter(cpu)
    }
}

fn sysenter(cpu: &mut CpuState) -> Result<(), Exception> {
    let cs = (cpu.sysenter_cs & 0xFFFC) as u16;
    if !protected(cpu) || cs == 0 {
        return Err(Exception::gp(0));
    }
    cpu.eflags &= !(flags::VM | flags::IF | flags::RF);
    cpu.cs = flat(cs, true, 0);
    cpu.ss = flat(cs + 8, false, 0);
    cpu.esp = cpu.sysenter_esp;
    cpu.eip = cpu.sysenter_eip;
    Ok(())
}

/// SYSEXIT: to CPL 3 at EDX with ESP = ECX, segments 16 and 24 above
/// IA32_SYSENTER_CS.
fn sysexit(cpu: &mut CpuState) -> Result<(), Exception> {
    let base = (cpu.sysenter_cs & 0xFFFC) as u16;
    if !protected(cpu) || base == 0 || cpu.cpl() != 0 {
        return Err(Exception::gp(0));
    }
    cpu.cs = flat((base + 16) | 3, true, 3);
    cpu.ss = flat((base + 24) | 3, false, 3);
    cpu.esp = cpu.ecx;
    cpu.eip = cpu.edx;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::emulate::testing::*;
    use crate::emulate::{Failure, Unsupported};
    use crate::msr::{self, efer};
    use crate::state::cr4;

    fn unsupported(what: &'static str) -> Result<crate::emulate::Effects, Failure> {
        Err(Failure::Unsupported(Unsupported::Feature(what)))
    }

    #[test]
    fn cpuid_answers_from_the_model() {
        let (mut cpu, mut m) = user_machine();
        let p = &mut TestPlatform::default();
        cpu.eax = 0;
        run(&mut cpu, &mut m, p, &[0x0F, 0xA2]).unwrap();
        assert_eq!(cpu.eax, crate::cpuid::MAX_BASIC_LEAF);
        assert_eq!(cpu.ebx.to_le_bytes(), *b"Genu");
        cpu.eax = 1;
        run(&mut cpu, &mut m, p, &[0x0F, 0xA2]).unwrap();
        assert_eq!(cpu.edx, p.model.leaf1_edx());
        assert_eq!(cpu.eip, CODE + 4);
    }

    #[test]
    fn rdtsc_and_the_tsd_bit() {
        let (mut cpu, mut m) = user_machine();
        let p = &mut TestPlatform::default();
        run(&mut cpu, &mut m, p, &[0x0F, 0x31]).unwrap();
        assert_eq!((cpu.edx, cpu.eax), (0x0123_4567, 0x89AB_CDEF));
        cpu.cr4 = cr4::TSD;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x31]), gp(0));
        let (mut cpu, mut m) = machine();
        cpu.cr4 = cr4::TSD;
        ok(&mut cpu, &mut m, &[0x0F, 0x31]);
    }

    #[test]
    fn rdtscp_rdpid_are_ud_on_the_model() {
        let (mut cpu, mut m) = machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x01, 0xF9]), ud());
        assert_eq!(fault(&mut cpu, &mut m, &[0xF3, 0x0F, 0xC7, 0xF8]), ud());
    }

    #[test]
    fn rdmsr_wrmsr_through_the_msr_model() {
        let (mut cpu, mut m) = machine();
        let p = &mut TestPlatform::default();
        cpu.ecx = msr::IA32_SYSENTER_EIP;
        cpu.eax = 0xC100_1234;
        cpu.edx = 0;
        run(&mut cpu, &mut m, p, &[0x0F, 0x30]).unwrap();
        assert_eq!(cpu.sysenter_eip, 0xC100_1234);
        cpu.eax = 0;
        run(&mut cpu, &mut m, p, &[0x0F, 0x32]).unwrap();
        assert_eq!((cpu.eax, cpu.edx), (0xC100_1234, 0));
        cpu.ecx = msr::IA32_TIME_STAMP_COUNTER;
        run(&mut cpu, &mut m, p, &[0x0F, 0x32]).unwrap();
        assert_eq!((cpu.edx, cpu.eax), (0x0123_4567, 0x89AB_CDEF));
        cpu.eax = 5;
        cpu.edx = 1;
        run(&mut cpu, &mut m, p, &[0x0F, 0x30]).unwrap();
        assert_eq!(p.tsc_set, Some(0x1_0000_0005));
        cpu.ecx = msr::IA32_EFER;
        cpu.eax = efer::NXE as u32;
        cpu.edx = 0;
        let eff = run(&mut cpu, &mut m, p, &[0x0F, 0x30]).unwrap();
        assert!(eff.paging_changed && eff.cr_written);
        assert_eq!(cpu.efer, efer::NXE);
    }

    #[test]
    fn the_apic_base_msr_reaches_the_platform() {
        let (mut cpu, mut m) = machine();
        let p = &mut TestPlatform::default();
        cpu.ecx = msr::IA32_APIC_BASE;
        run(&mut cpu, &mut m, p, &[0x0F, 0x32]).unwrap();
        assert_eq!((cpu.edx, cpu.eax), (0, 0xFEE0_0900));
        // Disable it: the platform hears of it and CPUID.APIC goes.
        cpu.eax = 0xFEE0_0000;
        run(&mut cpu, &mut m, p, &[0x0F, 0x30]).unwrap();
        assert_eq!(p.apic_base, 0xFEE0_0100, "BSP is read-only");
        assert!(!p.model.apic);
        cpu.eax = 1;
        run(&mut cpu, &mut m, p, &[0x0F, 0xA2]).unwrap();
        assert_eq!(cpu.edx & crate::cpuid::leaf1_edx::APIC, 0);
        cpu.ecx = msr::IA32_APIC_BASE;
        cpu.eax = 0xFEE0_0401; // reserved bits
        cpu.edx = 0;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x30]), gp(0));
        assert_eq!(p.apic_base, 0xFEE0_0100);
    }

    #[test]
    fn msr_faults() {
        let (mut cpu, mut m) = machine();
        cpu.ecx = 0xDEAD;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x32]), gp(0));
        cpu.ecx = msr::IA32_EFER;
        cpu.eax = efer::LME as u32;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x30]), gp(0));
        let (mut cpu, mut m) = user_machine();
        cpu.ecx = msr::IA32_SYSENTER_CS;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x32]), gp(0));
    }

    #[test]
    fn rdpmc_is_gp_without_counters_and_privileged_without_pce() {
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x33]), gp(0));
        cpu.cr4 = cr4::PCE;
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x33]), gp(0));
    }

    #[test]
    fn hlt_halts_at_cpl0_only() {
        let (mut cpu, mut m) = machine();
        let eff = ok(&mut cpu, &mut m, &[0xF4]);
        assert!(eff.halted);
        assert_eq!(cpu.eip, CODE + 1);
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0xF4]), gp(0));
    }

    #[test]
    fn sysenter_sysexit_follow_the_sep_bit() {
        let (mut cpu, mut m) = user_machine();
        assert_eq!(fault(&mut cpu, &mut m, &[0x0F, 0x34]), ud());
        let mut p = TestPlatform::default();
        p.model.sep = true;
        cpu.sysenter_cs = u32::from(KCODE);
        cpu.sysenter_esp = 0x9000;
        cpu.sysenter_eip = 0x6200;
        let eff = run(&mut cpu, &mut m, &mut p, &[0x0F, 0x34]).unwrap();
        assert_eq!((cpu.cs.selector, cpu.ss.selector), (KCODE, KDATA));
        assert_eq!((cpu.eip, cpu.esp, cpu.cpl()), (0x6200, 0x9000, 0));
        assert!(!cpu.interrupts_enabled());
        assert!(eff.context_changed);
        cpu.ecx = 0xB000;
        cpu.edx = 0x6100;
        run(&mut cpu, &mut m, &mut p, &[0x0F, 0x35]).unwrap();
        assert_eq!((cpu.cs.selector, cpu.ss.selector), (0x1B, 0x23));
        assert_eq!((cpu.eip, cpu.esp, cpu.cpl()), (0x6100, 0xB000, 3));
        cpu.sysenter_cs = 0;
        let r = run(&mut cpu, &mut m, &mut p, &[0x0F, 0x34]);
        assert_eq!(r, Err(Failure::Fault(gp(0))));
    }

    #[test]
    fn features_the_model_lacks_are_ud() {
        let (mut cpu, mut m) = machine();
        for code in [
            &[0x0F, 0x05][..],               // syscall
            &[0x0F, 0x07],                   // sysret
            &[0x0F, 0x01, 0xEF],             // wrpkru
            &[0x0F, 0x01, 0xEE],             // rdpkru
            &[0x0F, 0xAE, 0x20],             // xsave [eax]
            &[0x0F, 0xAE, 0x28],             // xrstor [eax]
            &[0x0F, 0x01, 0xD0],             // xgetbv
            &[0x0F, 0x01, 0xD1],             // xsetbv
            &[0x0F, 0x01, 0xC8],             // monitor
            &[0x0F, 0x01, 0xC9],             // mwait
            &[0x0F, 0x01, 0xCA],             // clac
            &[0x0F, 0x01, 0xCB],             // stac
            &[0x0F, 0x0B],                   // ud2
            &[0x0F, 0xB9, 0xC0],             // ud1 eax, eax
            &[0x0F, 0x01, 0xC1],             // vmcall
            &[0x0F, 0xAA],                   // rsm
            &[0x0F, 0xC7, 0x18],             // xrstors [eax]
            &[0x66, 0x0F, 0x38, 0x82, 0x00], // invpcid eax, [eax]
        ] {
            assert_eq!(fault(&mut cpu, &mut m, code), ud(), "{code:x?}");
        }
    }

    #[test]
    fn offered_but_unmodelled_features_are_unsupported() {
        let (mut cpu, mut m) = machine();
        let r = run1(&mut cpu, &mut m, &[0xF0, 0x0F, 0x31]); // lock rdtsc
        assert_eq!(r, Err(Failure::Fault(ud())));
        // A data instruction the data model does not carry out.
        let r = run1(&mut cpu, &mut m, &[0x0F, 0xAF, 0x00]); // imul eax, [eax]
        assert_eq!(
            r,
            unsupported("a data instruction popek does not emulate, on memory it must emulate")
        );
    }
}
