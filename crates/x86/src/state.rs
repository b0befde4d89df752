//! The architectural state of one 32-bit x86 CPU, as both engines see it.

use std::fmt;

/// EFLAGS bits the monitor needs by name.
pub mod flags {
    /// Carry flag.
    pub const CF: u32 = 1 << 0;
    /// Reserved bit 1, always reads as one.
    pub const FIXED1: u32 = 1 << 1;
    /// Parity flag.
    pub const PF: u32 = 1 << 2;
    /// Auxiliary carry flag.
    pub const AF: u32 = 1 << 4;
    /// Zero flag.
    pub const ZF: u32 = 1 << 6;
    /// Sign flag.
    pub const SF: u32 = 1 << 7;
    /// Trap flag (single step).
    pub const TF: u32 = 1 << 8;
    /// Interrupt enable flag.
    pub const IF: u32 = 1 << 9;
    /// Direction flag.
    pub const DF: u32 = 1 << 10;
    /// Overflow flag.
    pub const OF: u32 = 1 << 11;
    /// I/O privilege level (two bits).
    pub const IOPL: u32 = 3 << 12;
    /// Nested task.
    pub const NT: u32 = 1 << 14;
    /// Resume flag.
    pub const RF: u32 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u32 = 1 << 17;
    /// Alignment check.
    pub const AC: u32 = 1 << 18;
    /// Virtual interrupt flag (VME/PVI).
    pub const VIF: u32 = 1 << 19;
    /// Virtual interrupt pending (VME/PVI).
    pub const VIP: u32 = 1 << 20;
    /// CPUID-availability flag.
    pub const ID: u32 = 1 << 21;
    /// The flags code at any privilege level may change itself (POPF at
    /// CPL 3 with IOPL 0 changes these and silently keeps the rest): the
    /// arithmetic flags, TF, DF, NT, AC and ID. IF, IOPL, VM, VIF and VIP
    /// are the privileged ones; RF only IRET and task switches load.
    pub const UNPRIVILEGED: u32 = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID;
}

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u32 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u32 = 1 << 1;
    /// FPU emulation.
    pub const EM: u32 = 1 << 2;
    /// Task switched.
    pub const TS: u32 = 1 << 3;
    /// Extension type (always one on 486+).
    pub const ET: u32 = 1 << 4;
    /// Numeric error reporting.
    pub const NE: u32 = 1 << 5;
    /// Supervisor write protection.
    pub const WP: u32 = 1 << 16;
    /// Alignment mask.
    pub const AM: u32 = 1 << 18;
    /// Not write-through.
    pub const NW: u32 = 1 << 29;
    /// Cache disable.
    pub const CD: u32 = 1 << 30;
    /// Paging.
    pub const PG: u32 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u32 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u32 = 1 << 1;
    /// Time stamp disable at CPL > 0.
    pub const TSD: u32 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u32 = 1 << 3;
    /// 4 MiB pages.
    pub const PSE: u32 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u32 = 1 << 5;
    /// Machine check enable.
    pub const MCE: u32 = 1 << 6;
    /// Global pages.
    pub const PGE: u32 = 1 << 7;
    /// Performance counter enable.
    pub const PCE: u32 = 1 << 8;
    /// FXSAVE/FXRSTOR and SSE.
    pub const OSFXSR: u32 = 1 << 9;
    /// Unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u32 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u32 = 1 << 11;
}

/// DR6 after RESET: the bits that always read as one.
pub const DR6_RESET: u32 = 0xFFFF_0FF0;
/// DR7 after RESET: bit 10 always reads as one.
pub const DR7_RESET: u32 = 0x0000_0400;

/// A segment register: the visible selector and the hidden descriptor cache
/// the CPU loaded with it. Engines run from the cache, never from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment {
    /// The visible selector.
    pub selector: u16,
    /// Linear base address.
    pub base: u32,
    /// Effective limit in bytes (granularity already applied).
    pub limit: u32,
    /// Descriptor type field (4 bits).
    pub typ: u8,
    /// S bit: code/data (true) or system (false).
    pub s: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
    /// D/B bit: 32-bit default operand size / stack size.
    pub db: bool,
    /// Granularity bit (kept for round-trips; `limit` is already scaled).
    pub g: bool,
    /// Available-for-software bit.
    pub avl: bool,
}

impl Segment {
    /// Type of an accessed, readable code segment.
    pub const TYPE_CODE_RX_ACCESSED: u8 = 0xB;
    /// Type of an accessed, writable data segment.
    pub const TYPE_DATA_RW_ACCESSED: u8 = 0x3;
    /// Type of a busy 32-bit TSS.
    pub const TYPE_TSS32_BUSY: u8 = 0xB;
    /// Type of an LDT descriptor.
    pub const TYPE_LDT: u8 = 0x2;

    /// A flat 4 GiB ring-0 32-bit code segment.
    pub fn flat_code32(selector: u16) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            typ: Self::TYPE_CODE_RX_ACCESSED,
            s: true,
            dpl: 0,
            present: true,
            db: true,
            g: true,
            avl: false,
        }
    }

    /// A flat 4 GiB ring-0 32-bit writable data segment.
    pub fn flat_data32(selector: u16) -> Self {
        Segment {
            typ: Self::TYPE_DATA_RW_ACCESSED,
            ..Self::flat_code32(selector)
        }
    }

    /// A real-mode segment as the CPU sets it on a selector load.
    pub fn real_mode(selector: u16) -> Self {
        Segment {
            selector,
            base: u32::from(selector) << 4,
            limit: 0xFFFF,
            typ: Self::TYPE_DATA_RW_ACCESSED,
            s: true,
            dpl: 0,
            present: true,
            db: false,
            g: false,
            avl: false,
        }
    }

    /// The null/unusable segment (selector 0 in protected mode).
    pub fn unusable() -> Self {
        Segment::default()
    }

    /// True for a code segment (S set, type bit 3 set).
    pub fn is_code(&self) -> bool {
        self.s && self.typ & 0x8 != 0
    }

    /// The requested privilege level encoded in the selector.
    pub fn rpl(&self) -> u8 {
        (self.selector & 3) as u8
    }
}

/// GDTR or IDTR: a linear base and a byte limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TableRegister {
    /// Linear base address of the table.
    pub base: u32,
    /// Limit in bytes (size - 1).
    pub limit: u16,
}

/// The complete architectural state of a 32-bit x86 CPU that popek models.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CpuState {
    /// EAX.
    pub eax: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// EBX.
    pub ebx: u32,
    /// ESP.
    pub esp: u32,
    /// EBP.
    pub ebp: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// Instruction pointer (offset within CS).
    pub eip: u32,
    /// EFLAGS.
    pub eflags: u32,
    /// Code segment.
    pub cs: Segment,
    /// Stack segment.
    pub ss: Segment,
    /// Data segment.
    pub ds: Segment,
    /// Extra segment.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// Global descriptor table register.
    pub gdtr: TableRegister,
    /// Interrupt descriptor table register.
    pub idtr: TableRegister,
    /// Local descriptor table register (selector + cache).
    pub ldtr: Segment,
    /// Task register (selector + cache).
    pub tr: Segment,
    /// CR0.
    pub cr0: u32,
    /// CR2 (last page-fault linear address).
    pub cr2: u32,
    /// CR3 (page-directory base).
    pub cr3: u32,
    /// CR4.
    pub cr4: u32,
    /// DR0-DR7 (DR4 and DR5 are never stored: they alias DR6 and DR7).
    pub dr: [u32; 8],
    /// IA32_EFER (only NXE matters to a 32-bit PAE guest).
    pub efer: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u32,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u32,
    /// IA32_PAT.
    pub pat: u64,
}

impl CpuState {
    /// The state after RESET/INIT, as the SDM table 9-1 gives it (CS base
    /// 0xFFFF0000, EIP 0xFFF0, real mode).
    pub fn reset() -> Self {
        let mut cs = Segment::real_mode(0xF000);
        cs.base = 0xFFFF_0000;
        cs.typ = Segment::TYPE_CODE_RX_ACCESSED;
        CpuState {
            eip: 0xFFF0,
            eflags: flags::FIXED1,
            cs,
            ss: Segment::real_mode(0),
            ds: Segment::real_mode(0),
            es: Segment::real_mode(0),
            fs: Segment::real_mode(0),
            gs: Segment::real_mode(0),
            idtr: TableRegister {
                base: 0,
                limit: 0xFFFF,
            },
            gdtr: TableRegister {
                base: 0,
                limit: 0xFFFF,
            },
            ldtr: Segment {
                typ: Segment::TYPE_LDT,
                s: false,
                limit: 0xFFFF,
                present: true,
                ..Segment::default()
            },
            tr: Segment {
                typ: Segment::TYPE_TSS32_BUSY,
                s: false,
                limit: 0xFFFF,
                present: true,
                ..Segment::default()
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            dr: [0, 0, 0, 0, 0, 0, DR6_RESET, DR7_RESET],
            pat: 0x0007_0406_0007_0406,
            ..Default::default()
        }
    }

    /// Current privilege level: the DPL of the CS cache in protected mode.
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr0::PE == 0 {
            0
        } else {
            self.cs.selector as u8 & 3
        }
    }

    /// True when EFLAGS.IF is set.
    pub fn interrupts_enabled(&self) -> bool {
        self.eflags & flags::IF != 0
    }

    /// The linear address of CS:EIP.
    pub fn linear_ip(&self) -> u32 {
        self.cs.base.wrapping_add(self.eip)
    }
}

fn fmt_segment(f: &mut fmt::Formatter<'_>, name: &str, s: &Segment) -> fmt::Result {
    writeln!(
        f,
        "{name:<4}={:04x} base={:08x} limit={:08x} type={:x} s={} dpl={} p={} db={} g={}",
        s.selector,
        s.base,
        s.limit,
        s.typ,
        s.s as u8,
        s.dpl,
        s.present as u8,
        s.db as u8,
        s.g as u8
    )
}

impl fmt::Display for CpuState {
    /// A register dump in the layout QEMU's `info registers` made familiar.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}",
            self.eax, self.ebx, self.ecx, self.edx
        )?;
        writeln!(
            f,
            "ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}",
            self.esi, self.edi, self.ebp, self.esp
        )?;
        writeln!(
            f,
            "EIP={:08x} EFL={:08x} CPL={}",
            self.eip,
            self.eflags,
            self.cpl()
        )?;
        for (name, seg) in [
            ("ES", &self.es),
            ("CS", &self.cs),
            ("SS", &self.ss),
            ("DS", &self.ds),
            ("FS", &self.fs),
            ("GS", &self.gs),
            ("LDT", &self.ldtr),
            ("TR", &self.tr),
        ] {
            fmt_segment(f, name, seg)?;
        }
        writeln!(f, "GDT= {:08x} {:04x}", self.gdtr.base, self.gdtr.limit)?;
        writeln!(f, "IDT= {:08x} {:04x}", self.idtr.base, self.idtr.limit)?;
        write!(
            f,
            "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x} EFER={:x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state_fetches_from_the_reset_vector() {
        let s = CpuState::reset();
        assert_eq!(s.linear_ip(), 0xFFFF_FFF0);
        assert_eq!(s.cpl(), 0);
        assert!(!s.interrupts_enabled());
    }

    #[test]
    fn cpl_follows_cs_selector_in_protected_mode() {
        let mut s = CpuState::reset();
        s.cr0 |= cr0::PE;
        s.cs = Segment::flat_code32(0x1B);
        assert_eq!(s.cpl(), 3);
    }
}
