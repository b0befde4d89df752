//! The instruction classifier: what the binary translator must do with each
//! decoded guest instruction (design sections 1 and 4).
//!
//! Every instruction gets a [`Kind`] naming its family, and each kind has
//! exactly one [`Class`]. Kinds that are both sensitive and a transfer of
//! control (far CALL/JMP/RET, INT n, IRET, SYSENTER) are classed by their
//! sensitivity, because that is what forces a rewrite; [`Kind::transfers_control`]
//! says that they also end a translation block.
//!
//! Decisions are made on iced-x86's `Mnemonic` and operands, then two safety
//! nets catch what the explicit lists miss: anything iced calls privileged is
//! [`Class::Privileged`], and anything that is not straight-line code is
//! [`Class::ControlFlow`]. Nothing that can change EIP or trap at CPL 3 by
//! design is ever reported as innocuous.

use iced_x86::{Code, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// What the translator must do with an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Behaves identically in a deprivileged kernel: copy it verbatim (IDENT).
    Innocuous,
    /// Traps (#GP/#UD) when the guest kernel runs deprivileged: emulate it.
    Privileged,
    /// Does not trap at CPL 3 but behaves differently there, or exposes host
    /// state: the Popek-Goldberg violators (Robin and Irvine's list) plus the
    /// instructions the monitor virtualizes (CPUID, RDTSC, ...).
    SensitiveUnprivileged,
    /// Ordinary near control transfer: rewrite so guest EIPs stay guest EIPs.
    ControlFlow,
}

impl Class {
    /// A short name for logs and census tables.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Innocuous => "innocuous",
            Class::Privileged => "privileged",
            Class::SensitiveUnprivileged => "sensitive-unprivileged",
            Class::ControlFlow => "control-flow",
        }
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident => $class:ident, $name:literal;)*) => {
        /// The instruction family, precise enough to pick a rewrite.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($(#[$doc])* $kind,)*
        }

        impl Kind {
            /// Every kind, in declaration order (`kind as usize` indexes it).
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// The class this kind belongs to.
            pub const fn class(self) -> Class {
                match self {
                    $(Kind::$kind => Class::$class,)*
                }
            }

            /// A short lowercase name for census output.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    /// Anything with no special meaning to the monitor.
    Ident => Innocuous, "ident";

    /// Direct near JMP.
    Jmp => ControlFlow, "jmp";
    /// Indirect near JMP through a register or memory.
    JmpIndirect => ControlFlow, "jmp-indirect";
    /// Conditional near jump.
    Jcc => ControlFlow, "jcc";
    /// Direct near CALL.
    Call => ControlFlow, "call";
    /// Indirect near CALL through a register or memory.
    CallIndirect => ControlFlow, "call-indirect";
    /// Near RET (with or without an immediate).
    Ret => ControlFlow, "ret";
    /// LOOP, LOOPE, LOOPNE.
    Loop => ControlFlow, "loop";
    /// JCXZ, JECXZ.
    Jcxz => ControlFlow, "jcxz";
    /// UD0, UD1, UD2: raise #UD; Linux puts BUG data after them, so the block must end.
    Ud => ControlFlow, "ud";
    /// Bytes that decode to no instruction: raise #UD.
    Invalid => ControlFlow, "invalid";
    /// Any other control transfer (XBEGIN, XABORT, ...).
    OtherBranch => ControlFlow, "other-branch";

    /// POPF/POPFD: silently ignores IF and IOPL at CPL > 0.
    Popf => SensitiveUnprivileged, "popf";
    /// PUSHF/PUSHFD: reveals the real IF and IOPL.
    Pushf => SensitiveUnprivileged, "pushf";
    /// SGDT: reveals the host GDTR.
    Sgdt => SensitiveUnprivileged, "sgdt";
    /// SIDT: reveals the host IDTR.
    Sidt => SensitiveUnprivileged, "sidt";
    /// SLDT: reveals the host LDTR.
    Sldt => SensitiveUnprivileged, "sldt";
    /// SMSW: reveals the host CR0 low bits.
    Smsw => SensitiveUnprivileged, "smsw";
    /// STR: reveals the host task register.
    Str => SensitiveUnprivileged, "str";
    /// LAR: access rights depend on CPL and the host tables.
    Lar => SensitiveUnprivileged, "lar";
    /// LSL: limits depend on CPL and the host tables.
    Lsl => SensitiveUnprivileged, "lsl";
    /// VERR: readability depends on CPL and the host tables.
    Verr => SensitiveUnprivileged, "verr";
    /// VERW: writability depends on CPL and the host tables.
    Verw => SensitiveUnprivileged, "verw";
    /// MOV Sreg, r/m: loads a descriptor with CPL-dependent checks.
    MovToSreg => SensitiveUnprivileged, "mov-to-sreg";
    /// MOV r/m, Sreg: reveals the selector, whose RPL shows the real CPL.
    MovFromSreg => SensitiveUnprivileged, "mov-from-sreg";
    /// PUSH CS/SS/DS/ES/FS/GS: reveals the selector.
    PushSreg => SensitiveUnprivileged, "push-sreg";
    /// POP SS/DS/ES/FS/GS: loads a descriptor with CPL-dependent checks.
    PopSreg => SensitiveUnprivileged, "pop-sreg";
    /// LDS, LES, LFS, LGS, LSS: load a segment register like MOV Sreg.
    LoadFarPointer => SensitiveUnprivileged, "load-far-pointer";
    /// Far CALL (direct or indirect): CPL checks, call gates.
    FarCall => SensitiveUnprivileged, "far-call";
    /// Far JMP (direct or indirect): CPL checks, call and task gates.
    FarJmp => SensitiveUnprivileged, "far-jmp";
    /// Far RET/RETF: privilege checks on the popped CS.
    FarRet => SensitiveUnprivileged, "far-ret";
    /// INT n: goes through the IDT with a DPL check.
    Int => SensitiveUnprivileged, "int";
    /// INT3: breakpoint through the IDT.
    Int3 => SensitiveUnprivileged, "int3";
    /// INTO: overflow trap through the IDT.
    Into => SensitiveUnprivileged, "into";
    /// INT1 (ICEBP): debug trap through the IDT.
    Int1 => SensitiveUnprivileged, "int1";
    /// IRET/IRETD: CPL-dependent restore of IF, IOPL and segments.
    Iret => SensitiveUnprivileged, "iret";
    /// CPUID: the guest must see the virtual CPU's model.
    Cpuid => SensitiveUnprivileged, "cpuid";
    /// RDTSC: the guest must see the virtual TSC.
    Rdtsc => SensitiveUnprivileged, "rdtsc";
    /// RDTSCP: virtual TSC plus IA32_TSC_AUX.
    Rdtscp => SensitiveUnprivileged, "rdtscp";
    /// RDPID: reveals the host's IA32_TSC_AUX.
    Rdpid => SensitiveUnprivileged, "rdpid";
    /// SYSENTER: cannot be intercepted cleanly from 32-bit code on the host.
    Sysenter => SensitiveUnprivileged, "sysenter";
    /// SYSCALL: #UD on the virtual Intel CPU, but may reach the host on AMD.
    Syscall => SensitiveUnprivileged, "syscall";
    /// WRPKRU/RDPKRU: the monitor's protection keys guard its own memory.
    Pkru => SensitiveUnprivileged, "pkru";
    /// XSAVE family and XGETBV: XRSTOR can load PKRU; the virtual CPU has no XSAVE.
    Xsave => SensitiveUnprivileged, "xsave";

    /// CLI: IOPL-sensitive, #GP for a deprivileged kernel.
    Cli => Privileged, "cli";
    /// STI: IOPL-sensitive, #GP for a deprivileged kernel.
    Sti => Privileged, "sti";
    /// HLT.
    Hlt => Privileged, "hlt";
    /// IN/OUT with an immediate or DX port.
    InOut => Privileged, "in-out";
    /// INS/OUTS string I/O, possibly REP-prefixed.
    InsOuts => Privileged, "ins-outs";
    /// MOV to or from CR0-CR4.
    MovCr => Privileged, "mov-cr";
    /// MOV to or from DR0-DR7.
    MovDr => Privileged, "mov-dr";
    /// LGDT.
    Lgdt => Privileged, "lgdt";
    /// LIDT.
    Lidt => Privileged, "lidt";
    /// LLDT.
    Lldt => Privileged, "lldt";
    /// LTR.
    Ltr => Privileged, "ltr";
    /// LMSW.
    Lmsw => Privileged, "lmsw";
    /// CLTS.
    Clts => Privileged, "clts";
    /// INVLPG.
    Invlpg => Privileged, "invlpg";
    /// INVD.
    Invd => Privileged, "invd";
    /// WBINVD, WBNOINVD.
    Wbinvd => Privileged, "wbinvd";
    /// RDMSR.
    Rdmsr => Privileged, "rdmsr";
    /// WRMSR, WRMSRNS.
    Wrmsr => Privileged, "wrmsr";
    /// SYSEXIT.
    Sysexit => Privileged, "sysexit";
    /// SYSRET.
    Sysret => Privileged, "sysret";
    /// RDPMC (privileged unless CR4.PCE).
    Rdpmc => Privileged, "rdpmc";
    /// MONITOR/MWAIT and the AMD X forms.
    MonitorMwait => Privileged, "monitor-mwait";
    /// XSETBV.
    Xsetbv => Privileged, "xsetbv";
    /// CLAC/STAC (#UD at CPL > 0).
    Smap => Privileged, "clac-stac";
    /// INVPCID.
    Invpcid => Privileged, "invpcid";
    /// VMX and SVM instructions (the virtual CPU has neither).
    Vmx => Privileged, "vmx";
    /// Anything else iced-x86 marks as CPL-0 only (RSM, XRSTORS, ...).
    OtherPrivileged => Privileged, "other-privileged";
}

impl Kind {
    /// True when the instruction may continue anywhere but the next
    /// instruction, so a translation block must end after it.
    pub const fn transfers_control(self) -> bool {
        matches!(self.class(), Class::ControlFlow)
            || matches!(
                self,
                Kind::FarCall
                    | Kind::FarJmp
                    | Kind::FarRet
                    | Kind::Int
                    | Kind::Int3
                    | Kind::Into
                    | Kind::Int1
                    | Kind::Iret
                    | Kind::Sysenter
                    | Kind::Syscall
                    | Kind::Sysexit
                    | Kind::Sysret
            )
    }
}

/// The classifier's verdict on one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Classification {
    /// What the translator must do.
    pub class: Class,
    /// Which family, to pick the rewrite or callout.
    pub kind: Kind,
}

impl From<Kind> for Classification {
    fn from(kind: Kind) -> Self {
        Classification {
            class: kind.class(),
            kind,
        }
    }
}

/// Classifies an instruction decoded in 32-bit mode.
pub fn classify(instr: &Instruction) -> Classification {
    kind_of(instr).into()
}

fn is_sreg(instr: &Instruction, operand: u32) -> bool {
    instr.op_kind(operand) == OpKind::Register && instr.op_register(operand).is_segment_register()
}

fn has_register(instr: &Instruction, pred: fn(Register) -> bool) -> bool {
    (0..instr.op_count())
        .any(|i| instr.op_kind(i) == OpKind::Register && pred(instr.op_register(i)))
}

/// The family of `instr` (see [`classify`]).
pub fn kind_of(instr: &Instruction) -> Kind {
    use Mnemonic as M;
    if instr.code() == Code::INVALID {
        return Kind::Invalid;
    }
    match instr.mnemonic() {
        M::Popf | M::Popfd => Kind::Popf,
        M::Pushf | M::Pushfd => Kind::Pushf,
        M::Sgdt => Kind::Sgdt,
        M::Sidt => Kind::Sidt,
        M::Sldt => Kind::Sldt,
        M::Smsw => Kind::Smsw,
        M::Str => Kind::Str,
        M::Lar => Kind::Lar,
        M::Lsl => Kind::Lsl,
        M::Verr => Kind::Verr,
        M::Verw => Kind::Verw,
        M::Mov if is_sreg(instr, 0) => Kind::MovToSreg,
        M::Mov if is_sreg(instr, 1) => Kind::MovFromSreg,
        M::Mov if has_register(instr, Register::is_cr) => Kind::MovCr,
        M::Mov if has_register(instr, Register::is_dr) => Kind::MovDr,
        M::Push if is_sreg(instr, 0) => Kind::PushSreg,
        M::Pop if is_sreg(instr, 0) => Kind::PopSreg,
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => Kind::LoadFarPointer,
        M::Call if instr.is_call_far() || instr.is_call_far_indirect() => Kind::FarCall,
        M::Jmp if instr.is_jmp_far() || instr.is_jmp_far_indirect() => Kind::FarJmp,
        M::Call if instr.flow_control() == FlowControl::Call => Kind::Call,
        M::Call => Kind::CallIndirect,
        M::Jmp if instr.flow_control() == FlowControl::UnconditionalBranch => Kind::Jmp,
        M::Jmp => Kind::JmpIndirect,
        M::Ret => Kind::Ret,
        M::Retf => Kind::FarRet,
        M::Int => Kind::Int,
        M::Int3 => Kind::Int3,
        M::Into => Kind::Into,
        M::Int1 => Kind::Int1,
        M::Iret | M::Iretd => Kind::Iret,
        M::Cpuid => Kind::Cpuid,
        M::Rdtsc => Kind::Rdtsc,
        M::Rdtscp => Kind::Rdtscp,
        M::Rdpid => Kind::Rdpid,
        M::Sysenter => Kind::Sysenter,
        M::Syscall => Kind::Syscall,
        M::Wrpkru | M::Rdpkru => Kind::Pkru,
        M::Xsave | M::Xsaveopt | M::Xsavec | M::Xrstor | M::Xgetbv => Kind::Xsave,
        M::Cli => Kind::Cli,
        M::Sti => Kind::Sti,
        M::Hlt => Kind::Hlt,
        M::In | M::Out => Kind::InOut,
        M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => Kind::InsOuts,
        M::Lgdt => Kind::Lgdt,
        M::Lidt => Kind::Lidt,
        M::Lldt => Kind::Lldt,
        M::Ltr => Kind::Ltr,
        M::Lmsw => Kind::Lmsw,
        M::Clts => Kind::Clts,
        M::Invlpg => Kind::Invlpg,
        M::Invd => Kind::Invd,
        M::Wbinvd | M::Wbnoinvd => Kind::Wbinvd,
        M::Rdmsr => Kind::Rdmsr,
        M::Wrmsr | M::Wrmsrns => Kind::Wrmsr,
        M::Sysexit => Kind::Sysexit,
        M::Sysret => Kind::Sysret,
        M::Rdpmc => Kind::Rdpmc,
        M::Monitor | M::Mwait | M::Monitorx | M::Mwaitx => Kind::MonitorMwait,
        M::Xsetbv => Kind::Xsetbv,
        M::Clac | M::Stac => Kind::Smap,
        M::Invpcid => Kind::Invpcid,
        M::Vmcall
        | M::Vmlaunch
        | M::Vmresume
        | M::Vmxoff
        | M::Vmxon
        | M::Vmread
        | M::Vmwrite
        | M::Vmptrld
        | M::Vmptrst
        | M::Vmclear
        | M::Invept
        | M::Invvpid
        | M::Vmfunc
        | M::Vmrun
        | M::Vmload
        | M::Vmsave
        | M::Vmmcall
        | M::Stgi
        | M::Clgi
        | M::Skinit
        | M::Invlpga => Kind::Vmx,
        M::Loop | M::Loope | M::Loopne => Kind::Loop,
        M::Jcxz | M::Jecxz => Kind::Jcxz,
        M::Ud0 | M::Ud1 | M::Ud2 => Kind::Ud,
        _ if instr.is_jcc_short_or_near() => Kind::Jcc,
        // Safety nets: never let a CPL-0 instruction or a branch through as IDENT.
        _ if instr.is_privileged() => Kind::OtherPrivileged,
        _ if instr.flow_control() != FlowControl::Next => Kind::OtherBranch,
        _ => Kind::Ident,
    }
}

/// True when the instruction accesses memory through GS by an explicit
/// segment override. GS is the monitor's segment in translated code, so
/// such instructions must be rewritten (Linux's stack protector reads
/// `%gs:0x14` in every function epilogue). LEA and hint NOPs carry a memory
/// operand but do not access it, and ES:\[EDI\] string destinations ignore
/// overrides. Loads of GS itself (MOV/POP/LGS) are sensitive kinds already.
pub fn uses_gs_override(instr: &Instruction) -> bool {
    if instr.segment_prefix() != Register::GS
        || matches!(instr.mnemonic(), Mnemonic::Lea | Mnemonic::Nop)
    {
        return false;
    }
    (0..instr.op_count()).any(|i| {
        matches!(
            instr.op_kind(i),
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
        )
    })
}

/// Whether `instr` may read or write x87, MMX, SSE, AVX or AVX-512 state:
/// vector, x87 or mask registers, MXCSR, the x87 environment, XSAVE
/// images. Translated code without the guest's vector state loaded holds
/// the monitor's registers, so this errs towards yes: anything not in
/// the legacy encoding, any such register operand, and any instruction
/// whose CPUID features are not all of the general-purpose ones below
/// (crc32 and the VEX-encoded BMI instructions come out as yes, for
/// instance). The fences, prefetches and non-temporal store that carry
/// SSE's or SSE2's CPUID bit touch none of that state; Linux runs LFENCE
/// before every RDTSC.
pub fn uses_vector_state(instr: &Instruction) -> bool {
    use iced_x86::{CpuidFeature as F, EncodingKind};
    use Mnemonic as M;
    if matches!(
        instr.mnemonic(),
        M::Lfence
            | M::Mfence
            | M::Sfence
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Movnti
    ) {
        return false;
    }
    if instr.encoding() != EncodingKind::Legacy
        || matches!(instr.mnemonic(), M::Wait)
        || has_register(instr, |r| {
            r.is_xmm()
                || r.is_ymm()
                || r.is_zmm()
                || r.is_k()
                || r.is_mm()
                || r.is_st()
                || r.is_tmm()
        })
    {
        return true;
    }
    !instr.cpuid_features().iter().all(|f| {
        matches!(
            f,
            F::INTEL8086
                | F::INTEL8086_ONLY
                | F::INTEL186
                | F::INTEL286
                | F::INTEL286_ONLY
                | F::INTEL386
                | F::INTEL386_ONLY
                | F::INTEL386_A0_ONLY
                | F::INTEL486
                | F::INTEL486_A_ONLY
                | F::ADX
                | F::BMI1
                | F::BMI2
                | F::CLFLUSHOPT
                | F::CLFSH
                | F::CLWB
                | F::CMOV
                | F::CPUID
                | F::CX8
                | F::FSGSBASE
                | F::INVPCID
                | F::LZCNT
                | F::MONITOR
                | F::MOVBE
                | F::MSR
                | F::MULTIBYTENOP
                | F::PAUSE
                | F::POPCNT
                | F::PREFETCHW
                | F::RDPID
                | F::RDPMC
                | F::RDRAND
                | F::RDSEED
                | F::RDTSCP
                | F::SEP
                | F::SERIALIZE
                | F::SMAP
                | F::SYSCALL
                | F::TSC
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    /// Decodes exactly one 32-bit instruction occupying all of `bytes`.
    fn dec(bytes: &[u8]) -> Instruction {
        let mut d = Decoder::with_ip(32, bytes, 0x1000, DecoderOptions::NONE);
        let i = d.decode();
        assert_eq!(
            i.len(),
            bytes.len(),
            "{bytes:02x?} decoded as {:?}",
            i.code()
        );
        i
    }

    #[test]
    fn vector_state_users_are_found_and_general_instructions_are_not() {
        for bytes in [
            &[0x0F, 0x28, 0xC1][..],         // movaps xmm0, xmm1
            &[0x66, 0x0F, 0x6F, 0x00],       // movdqa xmm0, [eax]
            &[0x0F, 0x6F, 0xC1],             // movq mm0, mm1
            &[0x0F, 0x77],                   // emms
            &[0xD9, 0xC0],                   // fld st(0)
            &[0xDB, 0xE3],                   // fninit
            &[0x9B],                         // fwait
            &[0xD9, 0x38],                   // fnstcw [eax]
            &[0x0F, 0xAE, 0x00],             // fxsave [eax]
            &[0x0F, 0xAE, 0x08],             // fxrstor [eax]
            &[0x0F, 0xAE, 0x10],             // ldmxcsr [eax]
            &[0x0F, 0xAE, 0x18],             // stmxcsr [eax]
            &[0x0F, 0xAE, 0x20],             // xsave [eax]
            &[0x0F, 0xAE, 0x28],             // xrstor [eax]
            &[0x0F, 0xAE, 0x30],             // xsaveopt [eax]
            &[0xC5, 0xF8, 0x77],             // vzeroupper
            &[0xC5, 0xFC, 0x28, 0xC1],       // vmovaps ymm0, ymm1
            &[0xF2, 0x0F, 0x38, 0xF1, 0xC1], // crc32 eax, ecx (SSE4.2: yes, conservatively)
        ] {
            let i = dec(bytes);
            assert!(uses_vector_state(&i), "{bytes:02x?} = {:?}", i.code());
        }
        for bytes in [
            &[0x8B, 0x03][..],   // mov eax, [ebx]
            &[0x0F, 0xAE, 0xE8], // lfence
            &[0x0F, 0xAE, 0xF0], // mfence
            &[0x0F, 0xAE, 0xF8], // sfence
            &[0x0F, 0x18, 0x08], // prefetcht0 [eax]
            &[0x0F, 0xC3, 0x18], // movnti [eax], ebx
            &[0xF3, 0xA4],       // rep movsb
            &[0x0F, 0x31],       // rdtsc
            &[0x0F, 0xA2],       // cpuid
            &[0xF3, 0x90],       // pause
            &[0x0F, 0x44, 0xC1], // cmove eax, ecx
            &[0x0F, 0xC7, 0x0E], // cmpxchg8b [esi]
            &[0x0F, 0xAE, 0x38], // clflush [eax]
        ] {
            let i = dec(bytes);
            assert!(!uses_vector_state(&i), "{bytes:02x?} = {:?}", i.code());
        }
    }

    #[track_caller]
    fn check(bytes: &[u8], class: Class, kind: Kind) {
        let i = dec(bytes);
        assert_ne!(i.code(), Code::INVALID, "{bytes:02x?} did not decode");
        assert_eq!(
            classify(&i),
            Classification { class, kind },
            "{bytes:02x?} = {:?}",
            i.code()
        );
    }

    #[track_caller]
    fn sensitive(bytes: &[u8], kind: Kind) {
        check(bytes, Class::SensitiveUnprivileged, kind);
    }

    #[track_caller]
    fn privileged(bytes: &[u8], kind: Kind) {
        check(bytes, Class::Privileged, kind);
    }

    #[track_caller]
    fn flow(bytes: &[u8], kind: Kind) {
        check(bytes, Class::ControlFlow, kind);
        assert!(kind.transfers_control());
    }

    #[track_caller]
    fn ident(bytes: &[u8]) {
        check(bytes, Class::Innocuous, Kind::Ident);
        assert!(!uses_gs_override(&dec(bytes)));
    }

    // --- the sensitive-unprivileged set, one test per member ---

    #[test]
    fn popf() {
        sensitive(&[0x9D], Kind::Popf); // popfd
        sensitive(&[0x66, 0x9D], Kind::Popf); // popf (16-bit)
    }

    #[test]
    fn pushf() {
        sensitive(&[0x9C], Kind::Pushf); // pushfd
        sensitive(&[0x66, 0x9C], Kind::Pushf); // pushf
    }

    #[test]
    fn sgdt() {
        sensitive(&[0x0F, 0x01, 0x00], Kind::Sgdt); // sgdt [eax]
    }

    #[test]
    fn sidt() {
        sensitive(&[0x0F, 0x01, 0x08], Kind::Sidt); // sidt [eax]
    }

    #[test]
    fn sldt() {
        sensitive(&[0x0F, 0x00, 0xC0], Kind::Sldt); // sldt eax
    }

    #[test]
    fn smsw() {
        sensitive(&[0x0F, 0x01, 0xE0], Kind::Smsw); // smsw eax
        sensitive(&[0x0F, 0x01, 0x20], Kind::Smsw); // smsw [eax]
    }

    #[test]
    fn str() {
        sensitive(&[0x0F, 0x00, 0xC8], Kind::Str); // str eax
    }

    #[test]
    fn lar() {
        sensitive(&[0x0F, 0x02, 0xC1], Kind::Lar); // lar eax, ecx
    }

    #[test]
    fn lsl() {
        sensitive(&[0x0F, 0x03, 0xC1], Kind::Lsl); // lsl eax, ecx
    }

    #[test]
    fn verr() {
        sensitive(&[0x0F, 0x00, 0xE0], Kind::Verr); // verr ax
    }

    #[test]
    fn verw() {
        sensitive(&[0x0F, 0x00, 0xE8], Kind::Verw); // verw ax
    }

    #[test]
    fn mov_to_sreg() {
        sensitive(&[0x8E, 0xD8], Kind::MovToSreg); // mov ds, ax
        sensitive(&[0x8E, 0xD0], Kind::MovToSreg); // mov ss, ax
        sensitive(&[0x8E, 0xE8], Kind::MovToSreg); // mov gs, ax
        sensitive(&[0x8E, 0x18], Kind::MovToSreg); // mov ds, [eax]
    }

    #[test]
    fn mov_from_sreg() {
        sensitive(&[0x8C, 0xD8], Kind::MovFromSreg); // mov eax, ds
        sensitive(&[0x8C, 0xC8], Kind::MovFromSreg); // mov eax, cs
        sensitive(&[0x8C, 0x18], Kind::MovFromSreg); // mov [eax], ds
    }

    #[test]
    fn push_sreg() {
        for bytes in [
            &[0x0E][..],
            &[0x16],
            &[0x1E],
            &[0x06],
            &[0x0F, 0xA0],
            &[0x0F, 0xA8],
        ] {
            sensitive(bytes, Kind::PushSreg); // push cs/ss/ds/es/fs/gs
        }
    }

    #[test]
    fn pop_sreg() {
        for bytes in [&[0x17][..], &[0x1F], &[0x07], &[0x0F, 0xA1], &[0x0F, 0xA9]] {
            sensitive(bytes, Kind::PopSreg); // pop ss/ds/es/fs/gs
        }
    }

    #[test]
    fn load_far_pointer() {
        sensitive(&[0xC5, 0x01], Kind::LoadFarPointer); // lds eax, [ecx]
        sensitive(&[0xC4, 0x01], Kind::LoadFarPointer); // les eax, [ecx]
        sensitive(&[0x0F, 0xB2, 0x01], Kind::LoadFarPointer); // lss eax, [ecx]
        sensitive(&[0x0F, 0xB4, 0x01], Kind::LoadFarPointer); // lfs eax, [ecx]
        sensitive(&[0x0F, 0xB5, 0x01], Kind::LoadFarPointer); // lgs eax, [ecx]
    }

    #[test]
    fn far_call() {
        sensitive(&[0x9A, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], Kind::FarCall); // call 0x10:0x12345678
        sensitive(&[0xFF, 0x18], Kind::FarCall); // call far [eax]
        assert!(Kind::FarCall.transfers_control());
    }

    #[test]
    fn far_jmp() {
        sensitive(&[0xEA, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], Kind::FarJmp); // jmp 0x10:0x12345678
        sensitive(&[0xFF, 0x28], Kind::FarJmp); // jmp far [eax]
        assert!(Kind::FarJmp.transfers_control());
    }

    #[test]
    fn far_ret() {
        sensitive(&[0xCB], Kind::FarRet); // retf
        sensitive(&[0xCA, 0x08, 0x00], Kind::FarRet); // retf 8
        assert!(Kind::FarRet.transfers_control());
    }

    #[test]
    fn int_n() {
        sensitive(&[0xCD, 0x80], Kind::Int); // int 0x80
        assert!(Kind::Int.transfers_control());
    }

    #[test]
    fn int3() {
        sensitive(&[0xCC], Kind::Int3);
    }

    #[test]
    fn into() {
        sensitive(&[0xCE], Kind::Into);
    }

    #[test]
    fn int1() {
        sensitive(&[0xF1], Kind::Int1);
    }

    #[test]
    fn iret() {
        sensitive(&[0xCF], Kind::Iret); // iretd
        sensitive(&[0x66, 0xCF], Kind::Iret); // iret (16-bit)
        assert!(Kind::Iret.transfers_control());
    }

    #[test]
    fn cpuid() {
        sensitive(&[0x0F, 0xA2], Kind::Cpuid);
        assert!(!Kind::Cpuid.transfers_control());
    }

    #[test]
    fn rdtsc() {
        sensitive(&[0x0F, 0x31], Kind::Rdtsc);
    }

    #[test]
    fn rdtscp_and_rdpid() {
        sensitive(&[0x0F, 0x01, 0xF9], Kind::Rdtscp);
        sensitive(&[0xF3, 0x0F, 0xC7, 0xF8], Kind::Rdpid); // rdpid eax
    }

    #[test]
    fn sysenter_and_syscall() {
        sensitive(&[0x0F, 0x34], Kind::Sysenter);
        sensitive(&[0x0F, 0x05], Kind::Syscall);
        assert!(Kind::Sysenter.transfers_control());
    }

    #[test]
    fn pkru_and_xsave_family() {
        sensitive(&[0x0F, 0x01, 0xEF], Kind::Pkru); // wrpkru
        sensitive(&[0x0F, 0x01, 0xEE], Kind::Pkru); // rdpkru
        sensitive(&[0x0F, 0xAE, 0x28], Kind::Xsave); // xrstor [eax]
        sensitive(&[0x0F, 0xAE, 0x20], Kind::Xsave); // xsave [eax]
        sensitive(&[0x0F, 0x01, 0xD0], Kind::Xsave); // xgetbv
    }

    // --- privileged families ---

    #[test]
    fn cli_sti_hlt() {
        privileged(&[0xFA], Kind::Cli);
        privileged(&[0xFB], Kind::Sti);
        privileged(&[0xF4], Kind::Hlt);
    }

    #[test]
    fn in_out() {
        privileged(&[0xEC], Kind::InOut); // in al, dx
        privileged(&[0xED], Kind::InOut); // in eax, dx
        privileged(&[0xE4, 0x60], Kind::InOut); // in al, 0x60
        privileged(&[0xEE], Kind::InOut); // out dx, al
        privileged(&[0xE6, 0x80], Kind::InOut); // out 0x80, al
    }

    #[test]
    fn ins_outs() {
        privileged(&[0x6C], Kind::InsOuts); // insb
        privileged(&[0x6D], Kind::InsOuts); // insd
        privileged(&[0x6E], Kind::InsOuts); // outsb
        privileged(&[0xF3, 0x6F], Kind::InsOuts); // rep outsd
    }

    #[test]
    fn mov_cr() {
        privileged(&[0x0F, 0x22, 0xC0], Kind::MovCr); // mov cr0, eax
        privileged(&[0x0F, 0x20, 0xD8], Kind::MovCr); // mov eax, cr3
        privileged(&[0x0F, 0x22, 0xE0], Kind::MovCr); // mov cr4, eax
        privileged(&[0x0F, 0x20, 0xD0], Kind::MovCr); // mov eax, cr2
    }

    #[test]
    fn mov_dr() {
        privileged(&[0x0F, 0x23, 0xF8], Kind::MovDr); // mov dr7, eax
        privileged(&[0x0F, 0x21, 0xF0], Kind::MovDr); // mov eax, dr6
    }

    #[test]
    fn descriptor_table_loads() {
        privileged(&[0x0F, 0x01, 0x10], Kind::Lgdt); // lgdt [eax]
        privileged(&[0x0F, 0x01, 0x18], Kind::Lidt); // lidt [eax]
        privileged(&[0x0F, 0x00, 0xD0], Kind::Lldt); // lldt ax
        privileged(&[0x0F, 0x00, 0xD8], Kind::Ltr); // ltr ax
    }

    #[test]
    fn lmsw_clts() {
        privileged(&[0x0F, 0x01, 0xF0], Kind::Lmsw); // lmsw ax
        privileged(&[0x0F, 0x06], Kind::Clts);
    }

    #[test]
    fn invlpg() {
        privileged(&[0x0F, 0x01, 0x38], Kind::Invlpg); // invlpg [eax]
    }

    #[test]
    fn cache_invalidation() {
        privileged(&[0x0F, 0x08], Kind::Invd);
        privileged(&[0x0F, 0x09], Kind::Wbinvd);
    }

    #[test]
    fn msr_access() {
        privileged(&[0x0F, 0x32], Kind::Rdmsr);
        privileged(&[0x0F, 0x30], Kind::Wrmsr);
    }

    #[test]
    fn sysexit_sysret() {
        privileged(&[0x0F, 0x35], Kind::Sysexit);
        privileged(&[0x0F, 0x07], Kind::Sysret);
        assert!(Kind::Sysexit.transfers_control());
    }

    #[test]
    fn rdpmc() {
        privileged(&[0x0F, 0x33], Kind::Rdpmc);
    }

    #[test]
    fn monitor_mwait_xsetbv_smap_invpcid() {
        privileged(&[0x0F, 0x01, 0xC8], Kind::MonitorMwait);
        privileged(&[0x0F, 0x01, 0xC9], Kind::MonitorMwait);
        privileged(&[0x0F, 0x01, 0xD1], Kind::Xsetbv);
        privileged(&[0x0F, 0x01, 0xCA], Kind::Smap); // clac
        privileged(&[0x0F, 0x01, 0xCB], Kind::Smap); // stac
        privileged(&[0x66, 0x0F, 0x38, 0x82, 0x01], Kind::Invpcid); // invpcid eax, [ecx]
    }

    #[test]
    fn vmx() {
        privileged(&[0x0F, 0x01, 0xC1], Kind::Vmx); // vmcall (iced: not privileged, a call)
        privileged(&[0x0F, 0x01, 0xC4], Kind::Vmx); // vmxoff
    }

    #[test]
    fn other_privileged_safety_net() {
        privileged(&[0x0F, 0xC7, 0x18], Kind::OtherPrivileged); // xrstors [eax]
        privileged(&[0x0F, 0xAA], Kind::OtherPrivileged); // rsm
    }

    // --- control flow ---

    #[test]
    fn near_jumps() {
        flow(&[0xEB, 0x10], Kind::Jmp); // jmp short
        flow(&[0xE9, 0x00, 0x01, 0x00, 0x00], Kind::Jmp); // jmp near
        flow(&[0xFF, 0xE0], Kind::JmpIndirect); // jmp eax
        flow(&[0xFF, 0x20], Kind::JmpIndirect); // jmp [eax]
    }

    #[test]
    fn near_calls_and_returns() {
        flow(&[0xE8, 0x00, 0x00, 0x00, 0x00], Kind::Call);
        flow(&[0xFF, 0xD0], Kind::CallIndirect); // call eax
        flow(&[0xFF, 0x10], Kind::CallIndirect); // call [eax]
        flow(&[0xC3], Kind::Ret);
        flow(&[0xC2, 0x04, 0x00], Kind::Ret); // ret 4
    }

    #[test]
    fn conditional_jumps() {
        flow(&[0x74, 0x05], Kind::Jcc); // je short
        flow(&[0x0F, 0x85, 0x00, 0x01, 0x00, 0x00], Kind::Jcc); // jne near
        flow(&[0x7F, 0xFE], Kind::Jcc); // jg short
    }

    #[test]
    fn loop_and_jcxz() {
        flow(&[0xE2, 0xFE], Kind::Loop);
        flow(&[0xE1, 0xFE], Kind::Loop); // loope
        flow(&[0xE0, 0xFE], Kind::Loop); // loopne
        flow(&[0xE3, 0xFE], Kind::Jcxz); // jecxz
        flow(&[0x67, 0xE3, 0xFE], Kind::Jcxz); // jcxz
    }

    #[test]
    fn undefined_opcodes_end_the_block() {
        flow(&[0x0F, 0x0B], Kind::Ud); // ud2
        flow(&[0x0F, 0xB9, 0xC0], Kind::Ud); // ud1 eax, eax
        let bad = dec(&[0x0F, 0x04]);
        assert_eq!(classify(&bad).kind, Kind::Invalid);
        assert_eq!(classify(&bad).class, Class::ControlFlow);
    }

    #[test]
    fn other_branch_safety_net() {
        flow(&[0xC7, 0xF8, 0x00, 0x00, 0x00, 0x00], Kind::OtherBranch); // xbegin
    }

    // --- innocuous ---

    #[test]
    fn arithmetic_and_moves_are_innocuous() {
        ident(&[0x01, 0xD8]); // add eax, ebx
        ident(&[0x83, 0x00, 0x05]); // add dword [eax], 5
        ident(&[0x8B, 0x43, 0x04]); // mov eax, [ebx+4]
        ident(&[0x89, 0x08]); // mov [eax], ecx
        ident(&[0xB8, 0x78, 0x56, 0x34, 0x12]); // mov eax, imm32
        ident(&[0x8D, 0x44, 0x8B, 0x08]); // lea eax, [ebx+ecx*4+8]
        ident(&[0x0F, 0xC7, 0x08]); // cmpxchg8b [eax]
        ident(&[0x63, 0xC8]); // arpl ax, cx: pure computation on its operands
        ident(&[0x64, 0xA1, 0x10, 0x00, 0x00, 0x00]); // mov eax, fs:[0x10]
    }

    #[test]
    fn stack_and_flag_ops_are_innocuous() {
        ident(&[0x50]); // push eax
        ident(&[0x5B]); // pop ebx
        ident(&[0x60]); // pushad
        ident(&[0xC9]); // leave
        ident(&[0xC8, 0x08, 0x00, 0x00]); // enter 8, 0
        ident(&[0xFC]); // cld
        ident(&[0xF9]); // stc
        ident(&[0x9E]); // sahf: arithmetic flags only
    }

    #[test]
    fn fpu_and_sse_are_innocuous() {
        ident(&[0xD8, 0xC1]); // fadd st, st(1)
        ident(&[0xD9, 0x00]); // fld dword [eax]
        ident(&[0x0F, 0x58, 0xC1]); // addps xmm0, xmm1
        ident(&[0x66, 0x0F, 0x6F, 0x00]); // movdqa xmm0, [eax]
        ident(&[0x0F, 0xAE, 0x00]); // fxsave [eax]
    }

    #[test]
    fn nops_and_string_ops_are_innocuous() {
        ident(&[0x90]);
        ident(&[0x0F, 0x1F, 0x44, 0x00, 0x00]); // nopl 0(eax,eax,1)
        ident(&[0xF3, 0xA5]); // rep movsd
        ident(&[0xF3, 0xAB]); // rep stosd
    }

    // --- GS overrides ---

    #[test]
    fn gs_override_detection() {
        let uses = |b: &[u8]| uses_gs_override(&dec(b));
        assert!(uses(&[0x65, 0xA1, 0x14, 0x00, 0x00, 0x00])); // mov eax, gs:[0x14]
        assert!(uses(&[0x65, 0x33, 0x15, 0x14, 0x00, 0x00, 0x00])); // xor edx, gs:[0x14]
        assert!(uses(&[0x65, 0x89, 0x03])); // mov gs:[ebx], eax
        assert!(uses(&[0x65, 0xA4])); // movsb es:[edi], gs:[esi]
        assert!(!uses(&[0x65, 0xAA])); // stosb ignores the override
        assert!(!uses(&[0x65, 0x8D, 0x03])); // lea eax, gs:[ebx]
        assert!(!uses(&[0x65, 0x90])); // gs nop: no memory operand
        assert!(!uses(&[0x64, 0xA1, 0x14, 0x00, 0x00, 0x00])); // fs, not gs
        assert!(!uses(&[0x8B, 0x03])); // no prefix
        assert!(!uses(&[0x8E, 0xE8])); // mov gs, ax: a load of GS, caught as MovToSreg
                                       // A GS override does not change the class of an otherwise innocuous instruction.
        assert_eq!(
            classify(&dec(&[0x65, 0xA1, 0x14, 0x00, 0x00, 0x00])).kind,
            Kind::Ident
        );
    }

    // --- the Kind table itself ---

    #[test]
    fn kind_names_are_unique_and_all_is_complete() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        assert_eq!(Kind::Popf.name(), "popf");
        assert_eq!(Kind::MovToSreg.name(), "mov-to-sreg");
        assert_eq!(
            Class::SensitiveUnprivileged.name(),
            "sensitive-unprivileged"
        );
    }

    #[test]
    fn every_class_is_populated() {
        for class in [
            Class::Innocuous,
            Class::Privileged,
            Class::SensitiveUnprivileged,
            Class::ControlFlow,
        ] {
            assert!(Kind::ALL.iter().any(|k| k.class() == class), "{class:?}");
        }
        // Robin and Irvine's control-transferring sensitive instructions stay
        // sensitive but are marked as block enders.
        for k in [
            Kind::FarCall,
            Kind::FarJmp,
            Kind::FarRet,
            Kind::Int,
            Kind::Iret,
        ] {
            assert_eq!(k.class(), Class::SensitiveUnprivileged);
            assert!(k.transfers_control());
        }
        assert!(!Kind::Ident.transfers_control());
        assert!(!Kind::Popf.transfers_control());
        assert!(!Kind::Hlt.transfers_control());
    }
}
