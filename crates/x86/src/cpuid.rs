//! The CPUID model of popek's virtual CPU: what the guest learns about the
//! processor it runs on. Both engines answer CPUID from here (the BT engine
//! in a callout, the KVM engine through KVM_SET_CPUID2), so a guest sees the
//! same CPU under either.
//!
//! The guiding rule: offer a feature only if the monitor implements it *and*
//! every x86-64 host has it, because guest user code runs directly on the
//! host CPU and will use whatever we promise without asking again.
//!
//! The signature is that of a 45 nm Atom (Bonnell, family 6 model 0x1C,
//! stepping 10). Linux keys its errata and speculation-bug decisions on
//! family/model, and lists Bonnell as `NO_SPECULATION`: the guest then skips
//! page-table isolation, whose CR3 switch on every kernel entry would be
//! paid twice under shadow paging. That is honest for the BT engine, which
//! already unmaps guest-supervisor pages while guest user code runs (design
//! section 4); an engine on a host where that does not hold can override
//! [`CpuidModel::signature`]. Stepping 10 avoids Linux's Bonnell PSE erratum
//! check, which clears PSE for steppings <= 2 with old microcode.

/// The vendor string of leaf 0.
pub const VENDOR: &[u8; 12] = b"GenuineIntel";

/// The processor brand string of leaves 0x80000002-0x80000004.
pub const BRAND: &str = "popek virtual CPU";

/// The hypervisor signature of leaf 0x40000000 (EBX, ECX, EDX).
pub const HYPERVISOR_SIGNATURE: &[u8; 12] = b"PopekPopekVM";

/// Highest basic leaf: 2 keeps us a 686-era CPU whose caches are described
/// by leaf 2 descriptors, and out of leaves (4, 7, 0xB, ...) we do not model.
pub const MAX_BASIC_LEAF: u32 = 2;

/// First leaf of the hypervisor range.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;

/// Highest hypervisor leaf: only the signature leaf exists.
pub const MAX_HYPERVISOR_LEAF: u32 = HYPERVISOR_LEAF;

/// First extended leaf.
pub const EXTENDED_LEAF: u32 = 0x8000_0000;

/// Highest extended leaf. 0x80000008 (address sizes) is deliberately
/// absent: KVM_SET_CPUID2 refuses a linear-address width other than 0, 48 or
/// 57, and a 32-bit CPU's is 32. Without the leaf, Linux assumes 36
/// physical bits when PAE is offered, which is what we would report.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0007;

/// Leaf 1 signature of the default model: family 6, model 0x1C, stepping 10.
pub const DEFAULT_SIGNATURE: u32 = Signature {
    family: 6,
    model: 0x1C,
    stepping: 10,
}
.to_eax();

/// Leaf 1 EDX feature bits.
pub mod leaf1_edx {
    /// Set: x87 FPU on chip; the monitor saves x87 state with FXSAVE.
    pub const FPU: u32 = 1 << 0;
    /// Clear: no virtual-8086 extensions; the BT engine does not run vm86 tasks.
    pub const VME: u32 = 1 << 1;
    /// Clear: debugging extensions (CR4.DE, I/O breakpoints) are not modelled.
    pub const DE: u32 = 1 << 2;
    /// Set: 4 MiB pages; the page walker and shadow MMU handle PDE.PS.
    pub const PSE: u32 = 1 << 3;
    /// Set: RDTSC; virtualized (constant rate, never stops) by both engines.
    pub const TSC: u32 = 1 << 4;
    /// Set: RDMSR/WRMSR, answered from the model in `msr`.
    pub const MSR: u32 = 1 << 5;
    /// Set: PAE paging, required by Debian's 686-pae kernel and by NX.
    pub const PAE: u32 = 1 << 6;
    /// Clear: virtual hardware never raises #MC, so there is nothing to report.
    pub const MCE: u32 = 1 << 7;
    /// Set: CMPXCHG8B, required by every 686 Linux kernel.
    pub const CX8: u32 = 1 << 8;
    /// Set while the local APIC is enabled (IA32_APIC_BASE.EN): the xAPIC
    /// at 0xFEE00000 (crates/machine/src/devices/lapic.rs). A guest that
    /// disables it through the MSR sees the bit clear, as on hardware (SDM
    /// vol. 3 10.4.3); `CpuidModel::apic` carries that state.
    pub const APIC: u32 = 1 << 9;
    /// Clear by default: `CpuidModel::sep` sets it per engine (bt where the
    /// host's own SYSENTER path hands the instruction over, docs/bt.md).
    pub const SEP: u32 = 1 << 11;
    /// Set: MTRRs, with MTRRcap reporting no variable and no fixed ranges;
    /// Linux 6.1 initialises PAT only when MTRRs are present and enabled
    /// (see `msr::MTRR_DEF_TYPE_BOOT`).
    pub const MTRR: u32 = 1 << 12;
    /// Set: global pages; shadows keep global mappings across CR3 writes.
    pub const PGE: u32 = 1 << 13;
    /// Clear: no machine-check architecture banks (see MCE).
    pub const MCA: u32 = 1 << 14;
    /// Set: CMOV, required by every 686 Linux kernel.
    pub const CMOV: u32 = 1 << 15;
    /// Set: page attribute table; its MSR lives in `CpuState::pat`.
    pub const PAT: u32 = 1 << 16;
    /// Clear: guest RAM lies below 4 GiB, 36-bit 4 MiB pages buy nothing.
    pub const PSE36: u32 = 1 << 17;
    /// Clear: processor serial numbers were withdrawn after the Pentium III.
    pub const PSN: u32 = 1 << 18;
    /// Set: CLFLUSH with a 64-byte line; it is innocuous to translate and
    /// lets Linux flush ranges instead of trapping on WBINVD.
    pub const CLFSH: u32 = 1 << 19;
    /// Clear: no debug store (BTS/PEBS) facility is modelled.
    pub const DS: u32 = 1 << 21;
    /// Clear: no thermal monitor or software clock control MSRs.
    pub const ACPI: u32 = 1 << 22;
    /// Set: MMX; state is part of the FXSAVE image the monitor switches.
    pub const MMX: u32 = 1 << 23;
    /// Set: FXSAVE/FXRSTOR and CR4.OSFXSR, the save format the monitor uses.
    pub const FXSR: u32 = 1 << 24;
    /// Set: SSE, part of the x86-64 baseline every host has.
    pub const SSE: u32 = 1 << 25;
    /// Set: SSE2, part of the x86-64 baseline every host has.
    pub const SSE2: u32 = 1 << 26;
    /// Clear: self-snoop is a cache-coherency promise about real hardware.
    pub const SS: u32 = 1 << 27;
    /// Clear: one logical processor per package.
    pub const HTT: u32 = 1 << 28;
    /// Clear: no thermal monitor.
    pub const TM: u32 = 1 << 29;
    /// Clear: no pending-break enable (needs the thermal monitor).
    pub const PBE: u32 = 1 << 31;
}

/// Leaf 1 ECX feature bits.
pub mod leaf1_ecx {
    /// Clear: SSE3 is not in the x86-64 baseline, so a host may lack it.
    pub const SSE3: u32 = 1 << 0;
    /// Clear: MONITOR/MWAIT would let the guest idle without an exit.
    pub const MONITOR: u32 = 1 << 3;
    /// Clear: no nested virtualization.
    pub const VMX: u32 = 1 << 5;
    /// Clear: SSSE3 is not in the x86-64 baseline.
    pub const SSSE3: u32 = 1 << 9;
    /// Clear: CMPXCHG16B is only useful to 64-bit code.
    pub const CX16: u32 = 1 << 13;
    /// Clear: SSE4.1 is not in the x86-64 baseline.
    pub const SSE4_1: u32 = 1 << 19;
    /// Clear: SSE4.2 is not in the x86-64 baseline.
    pub const SSE4_2: u32 = 1 << 20;
    /// Clear: the local APIC is an xAPIC only; the x2APIC MSRs are not modelled.
    pub const X2APIC: u32 = 1 << 21;
    /// Clear: MOVBE is not in the x86-64 baseline.
    pub const MOVBE: u32 = 1 << 22;
    /// Clear: POPCNT is not in the x86-64 baseline.
    pub const POPCNT: u32 = 1 << 23;
    /// Clear: the local APIC timer has its one-shot and periodic modes only,
    /// so IA32_TSC_DEADLINE does not exist.
    pub const TSC_DEADLINE: u32 = 1 << 24;
    /// Clear: the monitor switches only FXSAVE state, not XSAVE components.
    pub const XSAVE: u32 = 1 << 26;
    /// Clear: reflects CR4.OSXSAVE, which cannot be set without XSAVE.
    pub const OSXSAVE: u32 = 1 << 27;
    /// Clear: AVX state needs XSAVE.
    pub const AVX: u32 = 1 << 28;
    /// Clear: RDRAND is not in the x86-64 baseline.
    pub const RDRAND: u32 = 1 << 30;
    /// Set: the guest does run under a hypervisor; saying so is the truth,
    /// and Linux then skips the early microcode loader.
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// Leaf 0x80000001 EDX feature bits.
pub mod ext1_edx {
    /// Clear: Intel CPUs report SYSCALL only in 64-bit mode; from 32-bit code it raises #UD.
    pub const SYSCALL: u32 = 1 << 11;
    /// Set (by default): execute-disable; PAE is offered, and both engines can
    /// enforce it (KVM natively, BT by omitting PROT_EXEC and by refusing to
    /// translate from NX pages). `CpuidModel::nx` can turn it off.
    pub const NX: u32 = 1 << 20;
    /// Clear: 1 GiB pages exist only in long mode.
    pub const PDPE1GB: u32 = 1 << 26;
    /// Clear: RDTSCP reads IA32_TSC_AUX, which direct-executed user code would get from the host.
    pub const RDTSCP: u32 = 1 << 27;
    /// Clear: guests are 32-bit; long mode is not modelled.
    pub const LM: u32 = 1 << 29;
}

/// Leaf 0x80000001 ECX feature bits.
pub mod ext1_ecx {
    /// Clear: Intel sets LAHF/SAHF-in-64-bit-mode only on 64-bit CPUs.
    pub const LAHF_LM: u32 = 1 << 0;
}

/// Leaf 0x80000007 EDX bits.
pub mod ext7_edx {
    /// Set: invariant TSC; engines must keep the guest TSC at a constant
    /// rate that does not stop in HLT (it is the host's TSC plus an offset).
    pub const INVARIANT_TSC: u32 = 1 << 8;
}

/// A family/model/stepping triple in the display form Intel defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Display family (base family plus extended family when base is 0xF).
    pub family: u32,
    /// Display model (extended model prepended for families 6 and 0xF).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

impl Signature {
    /// Decodes leaf 1 EAX with the SDM's display-family/model rules.
    pub const fn from_eax(eax: u32) -> Self {
        let base_family = (eax >> 8) & 0xF;
        let base_model = (eax >> 4) & 0xF;
        let family = if base_family == 0xF {
            base_family + ((eax >> 20) & 0xFF)
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xF {
            base_model | (((eax >> 16) & 0xF) << 4)
        } else {
            base_model
        };
        Signature {
            family,
            model,
            stepping: eax & 0xF,
        }
    }

    /// Encodes into leaf 1 EAX (processor type 0, original OEM).
    pub const fn to_eax(self) -> u32 {
        let (base_family, ext_family) = if self.family >= 0xF {
            (0xF, self.family - 0xF)
        } else {
            (self.family, 0)
        };
        (ext_family << 20)
            | (((self.model >> 4) & 0xF) << 16)
            | (base_family << 8)
            | ((self.model & 0xF) << 4)
            | (self.stepping & 0xF)
    }
}

/// CLFLUSH line size reported in leaf 1 EBX, in bytes.
pub const CLFLUSH_LINE: u32 = 64;

/// Leaf 2 cache descriptors: 0x2C L1d 32 KiB 8-way, 0x30 L1i 32 KiB 8-way,
/// 0x86 L2 512 KiB 4-way, all with 64-byte lines; AL = 1 says "call once".
const LEAF2: [u32; 4] = [0x0030_2C01, 0, 0, 0x0000_0086];

/// Leaf 0x80000006 ECX: the same L2 as leaf 2 (512 KiB, 4-way, 64-byte lines).
const L2_INFO: u32 = (512 << 16) | (0x4 << 12) | 64;

/// The virtual CPU's CPUID answers. The public fields are the deliberate
/// knobs an engine may turn; everything else is fixed by this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidModel {
    /// Leaf 1 EAX (see [`Signature`]).
    pub signature: u32,
    /// Advertise SYSENTER/SYSEXIT (the bt engine's `BtOptions::sep`).
    pub sep: bool,
    /// Advertise NX in leaf 0x80000001 (only meaningful with PAE, which is on).
    pub nx: bool,
    /// The local APIC is enabled (IA32_APIC_BASE.EN), which leaf 1 EDX.APIC
    /// reports; the engine clears it when the guest disables the APIC.
    pub apic: bool,
}

impl Default for CpuidModel {
    fn default() -> Self {
        CpuidModel {
            signature: DEFAULT_SIGNATURE,
            sep: false,
            nx: true,
            apic: true,
        }
    }
}

/// Packs twelve ASCII bytes into three little-endian registers.
const fn regs12(s: &[u8; 12]) -> [u32; 3] {
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

/// The 48-byte, NUL-padded brand string.
pub const fn brand_bytes() -> [u8; 48] {
    let mut out = [0u8; 48];
    let b = BRAND.as_bytes();
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out
}

impl CpuidModel {
    /// The decoded family/model/stepping.
    pub const fn decoded_signature(&self) -> Signature {
        Signature::from_eax(self.signature)
    }

    /// Leaf 1 EDX.
    pub const fn leaf1_edx(&self) -> u32 {
        use leaf1_edx::*;
        let base = FPU
            | PSE
            | TSC
            | MSR
            | PAE
            | CX8
            | MTRR
            | PGE
            | CMOV
            | PAT
            | CLFSH
            | MMX
            | FXSR
            | SSE
            | SSE2;
        let base = if self.apic { base | APIC } else { base };
        if self.sep {
            base | SEP
        } else {
            base
        }
    }

    /// Leaf 1 ECX.
    pub const fn leaf1_ecx(&self) -> u32 {
        leaf1_ecx::HYPERVISOR
    }

    /// Leaf 0x80000001 EDX.
    pub const fn ext1_edx(&self) -> u32 {
        // NX without PAE would describe a page-table bit no paging mode has.
        if self.nx && self.leaf1_edx() & leaf1_edx::PAE != 0 {
            ext1_edx::NX
        } else {
            0
        }
    }

    /// True when the guest may set IA32_EFER.NXE (EFER exists only then).
    pub const fn has_nx(&self) -> bool {
        self.ext1_edx() & ext1_edx::NX != 0
    }

    /// Every leaf the model defines with its answer, for engines that hand
    /// the whole table over up front (KVM_SET_CPUID2). Other leaves follow
    /// Intel's out-of-range rule, which KVM applies itself to a GenuineIntel guest.
    pub fn leaves(&self) -> Vec<(u32, [u32; 4])> {
        (0..=MAX_BASIC_LEAF)
            .chain(HYPERVISOR_LEAF..=MAX_HYPERVISOR_LEAF)
            .chain(EXTENDED_LEAF..=MAX_EXTENDED_LEAF)
            .map(|leaf| (leaf, self.query(leaf, 0)))
            .collect()
    }

    /// The CPUID answer as [EAX, EBX, ECX, EDX]. No leaf has subleaves,
    /// so the subleaf (ECX on input) is ignored.
    pub fn query(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            0 => {
                let [b, d, c] = regs12(VENDOR);
                [MAX_BASIC_LEAF, b, c, d]
            }
            1 => {
                // Brand index 0, CLFLUSH line in 8-byte units, one logical
                // processor, initial APIC ID 0.
                let ebx = ((CLFLUSH_LINE / 8) << 8) | (1 << 16);
                [self.signature, ebx, self.leaf1_ecx(), self.leaf1_edx()]
            }
            2 => LEAF2,
            HYPERVISOR_LEAF => {
                let [b, c, d] = regs12(HYPERVISOR_SIGNATURE);
                [MAX_HYPERVISOR_LEAF, b, c, d]
            }
            EXTENDED_LEAF => [MAX_EXTENDED_LEAF, 0, 0, 0],
            0x8000_0001 => [0, 0, 0, self.ext1_edx()],
            0x8000_0002..=0x8000_0004 => {
                let brand = brand_bytes();
                let at = (leaf - 0x8000_0002) as usize * 16;
                let word = |i: usize| {
                    let o = at + i * 4;
                    u32::from_le_bytes([brand[o], brand[o + 1], brand[o + 2], brand[o + 3]])
                };
                [word(0), word(1), word(2), word(3)]
            }
            0x8000_0005 => [0; 4],
            0x8000_0006 => [0, 0, L2_INFO, 0],
            0x8000_0007 => [0, 0, 0, ext7_edx::INVARIANT_TSC],
            // Intel: any leaf above the maximum of its range returns the
            // highest basic leaf's data (SDM vol. 2A, CPUID).
            _ => self.query(MAX_BASIC_LEAF, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(regs: &[u32]) -> Vec<u8> {
        regs.iter().flat_map(|r| r.to_le_bytes()).collect()
    }

    #[test]
    fn leaf0_names_genuine_intel_in_ebx_edx_ecx_order() {
        let [max, b, c, d] = CpuidModel::default().query(0, 0);
        assert_eq!(max, MAX_BASIC_LEAF);
        assert_eq!(b, 0x756E_6547); // "Genu"
        assert_eq!(d, 0x4965_6E69); // "ineI"
        assert_eq!(c, 0x6C65_746E); // "ntel"
        assert_eq!(bytes(&[b, d, c]), b"GenuineIntel");
    }

    #[test]
    fn leaf1_signature_decodes_as_family6_model_1c() {
        let m = CpuidModel::default();
        let eax = m.query(1, 0)[0];
        assert_eq!(eax, 0x0001_06CA);
        let s = Signature::from_eax(eax);
        assert_eq!((s.family, s.model, s.stepping), (6, 0x1C, 10));
        assert_eq!(m.decoded_signature(), s);
        assert_eq!(s.to_eax(), eax);
    }

    #[test]
    fn signature_rules_for_other_families() {
        // Pentium 4 Prescott: family 0xF, model 3, stepping 4.
        let p4 = Signature::from_eax(0x0000_0F34);
        assert_eq!((p4.family, p4.model, p4.stepping), (0xF, 3, 4));
        // Extended family only counts when the base family is 0xF.
        let k8 = Signature::from_eax(0x0010_0F42);
        assert_eq!((k8.family, k8.model), (0x10, 4));
        assert_eq!(k8.to_eax(), 0x0010_0F42);
        // Extended model is ignored for family 5.
        let p5 = Signature::from_eax(0x0001_0543);
        assert_eq!((p5.family, p5.model), (5, 4));
    }

    #[test]
    fn sep_is_clear_by_default_and_only_the_knob_sets_it() {
        let m = CpuidModel::default();
        assert_eq!(m.query(1, 0)[3] & leaf1_edx::SEP, 0);
        let kvm = CpuidModel { sep: true, ..m };
        assert_ne!(kvm.query(1, 0)[3] & leaf1_edx::SEP, 0);
    }

    #[test]
    fn leaf1_feature_set_is_exactly_the_intended_one() {
        use leaf1_edx::*;
        let [_, ebx, ecx, edx] = CpuidModel::default().query(1, 0);
        for bit in [
            FPU, TSC, CX8, CMOV, PSE, PAE, PGE, PAT, MSR, MMX, FXSR, SSE, SSE2, MTRR, CLFSH, APIC,
        ] {
            assert_ne!(edx & bit, 0, "missing {bit:#x}");
        }
        for bit in [
            VME, DE, MCE, SEP, MCA, PSE36, PSN, DS, ACPI, SS, HTT, TM, PBE,
        ] {
            assert_eq!(edx & bit, 0, "unexpected {bit:#x}");
        }
        assert_eq!(ecx, leaf1_ecx::HYPERVISOR);
        assert_eq!(ecx & leaf1_ecx::VMX, 0);
        assert_eq!((ebx >> 8) & 0xFF, 8, "CLFLUSH line in 8-byte units");
        assert_eq!(ebx >> 24, 0, "APIC ID");
    }

    #[test]
    fn the_apic_bit_follows_the_apic_enable() {
        let m = CpuidModel::default();
        assert_ne!(m.query(1, 0)[3] & leaf1_edx::APIC, 0);
        let off = CpuidModel { apic: false, ..m };
        assert_eq!(off.query(1, 0)[3] & leaf1_edx::APIC, 0);
        assert_eq!(off.query(1, 0)[3] | leaf1_edx::APIC, m.query(1, 0)[3]);
        let [_, _, ecx, _] = m.query(1, 0);
        assert_eq!(ecx & (leaf1_ecx::X2APIC | leaf1_ecx::TSC_DEADLINE), 0);
    }

    #[test]
    fn no_long_mode_and_nx_follows_knob_and_pae() {
        let m = CpuidModel::default();
        let [_, _, ecx, edx] = m.query(0x8000_0001, 0);
        assert_eq!(edx & ext1_edx::LM, 0);
        assert_eq!(edx & ext1_edx::SYSCALL, 0);
        assert_eq!(ecx & ext1_ecx::LAHF_LM, 0);
        assert_ne!(edx & ext1_edx::NX, 0);
        assert_ne!(m.query(1, 0)[3] & leaf1_edx::PAE, 0, "NX needs PAE");
        assert!(m.has_nx());
        let no_nx = CpuidModel { nx: false, ..m };
        assert_eq!(no_nx.query(0x8000_0001, 0)[3], 0);
        assert!(!no_nx.has_nx());
    }

    #[test]
    fn brand_string_names_popek() {
        let m = CpuidModel::default();
        assert_eq!(m.query(0x8000_0000, 0)[0], MAX_EXTENDED_LEAF);
        let mut regs = Vec::new();
        for leaf in 0x8000_0002..=0x8000_0004 {
            regs.extend(m.query(leaf, 0));
        }
        let b = bytes(&regs);
        assert_eq!(b.len(), 48);
        let text = b.split(|&c| c == 0).next().unwrap();
        assert_eq!(text, b"popek virtual CPU");
        assert!(b[BRAND.len()..].iter().all(|&c| c == 0));
    }

    #[test]
    fn hypervisor_leaf_signature() {
        let [max, b, c, d] = CpuidModel::default().query(HYPERVISOR_LEAF, 0);
        assert_eq!(max, HYPERVISOR_LEAF);
        assert_eq!(bytes(&[b, c, d]), b"PopekPopekVM");
    }

    #[test]
    fn out_of_range_leaves_return_highest_basic_leaf() {
        let m = CpuidModel::default();
        let top = m.query(MAX_BASIC_LEAF, 0);
        assert_eq!(top, LEAF2);
        for leaf in [3, 4, 7, 0xB, 0x15, 0x4000_0001, 0x8000_0008, 0xC000_0000] {
            assert_eq!(m.query(leaf, 0), top, "leaf {leaf:#x}");
        }
        // In-range leaves do not fall through.
        assert_ne!(m.query(0x8000_0007, 0), top);
    }

    #[test]
    fn cache_and_power_leaves_agree() {
        let m = CpuidModel::default();
        assert_eq!(m.query(0x8000_0006, 0)[2] >> 16, 512);
        assert_eq!(m.query(0x8000_0006, 0)[2] & 0xFF, CLFLUSH_LINE);
        assert_ne!(m.query(0x8000_0007, 0)[3] & ext7_edx::INVARIANT_TSC, 0);
        // Leaf 2 registers with bit 31 set would be invalid.
        assert!(LEAF2.iter().all(|r| r & (1 << 31) == 0));
        assert_eq!(LEAF2[0] & 0xFF, 1);
    }

    #[test]
    fn leaf_table_lists_every_defined_leaf() {
        let m = CpuidModel::default();
        let table = m.leaves();
        let ids: Vec<u32> = table.iter().map(|&(l, _)| l).collect();
        assert_eq!(ids.len(), 3 + 1 + 8);
        assert!(ids.contains(&1) && ids.contains(&HYPERVISOR_LEAF) && ids.contains(&0x8000_0004));
        for (leaf, regs) in table {
            assert_eq!(regs, m.query(leaf, 0));
        }
    }

    #[test]
    fn subleaf_is_ignored() {
        let m = CpuidModel::default();
        assert_eq!(m.query(1, 0), m.query(1, 7));
    }
}
