//! Model-specific registers of popek's virtual CPU: their indices, which
//! ones exist, and what RDMSR/WRMSR do to them.
//!
//! The set is what a 686 Linux kernel touches on the CPU that [`crate::cpuid`]
//! describes. An MSR that is not listed here does not exist: RDMSR and WRMSR
//! of it raise #GP(0), which Linux's `rdmsr_safe` probes expect. Where the
//! existence of an MSR depends on a CPUID bit, the same bit decides here, so
//! the two models cannot drift apart.
//!
//! The values live in four places: architectural state already in
//! [`CpuState`] (EFER, SYSENTER, PAT), a small [`MsrFile`] for the rest, and
//! two registers outside the CPU core, the engine's virtual TSC and the
//! local APIC's base register, which [`MsrFile::read`]/[`MsrFile::write`]
//! take ([`Uncore`]) and return ([`WriteEffect`]) explicitly so that this
//! module stays free of clocks and devices.
//!
//! Both engines answer from this one table: the BT engine's emulator for
//! every RDMSR/WRMSR, the KVM engine for the MSRs it takes from KVM
//! (crates/kvm/src/msr.rs says which).

use crate::cpuid::{leaf1_edx, CpuidModel};
use crate::state::CpuState;
use std::fmt;

/// Pentium machine-check address (needs CPUID.MCE; absent).
pub const IA32_P5_MC_ADDR: u32 = 0x0;
/// Pentium machine-check type (needs CPUID.MCE; absent).
pub const IA32_P5_MC_TYPE: u32 = 0x1;
/// The time-stamp counter RDTSC reads.
pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
/// Platform ID (read by the microcode loader).
pub const IA32_PLATFORM_ID: u32 = 0x17;
/// Local APIC base address and enables; lives in the local APIC.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// VMX/SMX lock and enables (needs CPUID.VMX or SMX; absent).
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// TSC adjustment (needs CPUID.7.EBX\[1\]; the model's leaves stop at 2, so
/// absent: #GP).
pub const IA32_TSC_ADJUST: u32 = 0x3B;
/// Speculation control (needs CPUID.7 bits; absent).
pub const IA32_SPEC_CTRL: u32 = 0x48;
/// Prediction barrier command (needs CPUID.7 bits; absent).
pub const IA32_PRED_CMD: u32 = 0x49;
/// Microcode update trigger (write-only; nothing to load here).
pub const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
/// Microcode revision in the high half (Linux reads it on family 6).
pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
/// First performance counter (no PMU modelled; absent).
pub const IA32_PMC0: u32 = 0xC1;
/// Platform information (model-specific, Nehalem and later; absent: #GP,
/// which Linux's `rdmsr_safe` probes expect of an Atom).
pub const MSR_PLATFORM_INFO: u32 = 0xCE;
/// MTRR capabilities.
pub const IA32_MTRRCAP: u32 = 0xFE;
/// Speculation-immunity bits (needs CPUID.7.EDX\[29\]; absent).
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
/// SYSENTER target code segment.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// SYSENTER target stack pointer.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// SYSENTER target instruction pointer.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// Machine-check capabilities (needs CPUID.MCA; absent).
pub const IA32_MCG_CAP: u32 = 0x179;
/// Machine-check status (needs CPUID.MCA; absent).
pub const IA32_MCG_STATUS: u32 = 0x17A;
/// Machine-check control (needs CPUID.MCA; absent).
pub const IA32_MCG_CTL: u32 = 0x17B;
/// First performance event select (no PMU modelled; absent).
pub const IA32_PERFEVTSEL0: u32 = 0x186;
/// Miscellaneous feature enables (fast strings, CPUID limit, XD disable).
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
/// Debug control: LBR and single-step-on-branch.
pub const IA32_DEBUGCTL: u32 = 0x1D9;
/// First variable-range MTRR base; pair n is PHYSBASE0 + 2n, PHYSMASK0 + 2n.
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// First variable-range MTRR mask.
pub const IA32_MTRR_PHYSMASK0: u32 = 0x201;
/// Fixed-range MTRR for 0-512 KiB.
pub const IA32_MTRR_FIX64K_00000: u32 = 0x250;
/// Fixed-range MTRR for 512-640 KiB.
pub const IA32_MTRR_FIX16K_80000: u32 = 0x258;
/// Fixed-range MTRR for 640-768 KiB.
pub const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
/// First 4 KiB fixed-range MTRR, 768 KiB.
pub const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
/// Last 4 KiB fixed-range MTRR, 992 KiB.
pub const IA32_MTRR_FIX4K_F8000: u32 = 0x26F;
/// Page attribute table.
pub const IA32_PAT: u32 = 0x277;
/// MTRR default memory type and enables.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
/// First machine-check bank control (absent).
pub const IA32_MC0_CTL: u32 = 0x400;
/// TSC-deadline timer (needs CPUID.1:ECX.TSC_DEADLINE, not offered; absent).
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// Extended feature enables; exists only when NX is offered.
pub const IA32_EFER: u32 = 0xC000_0080;
/// SYSCALL target (long-mode CPUs only; absent).
pub const IA32_STAR: u32 = 0xC000_0081;
/// Auxiliary TSC value for RDTSCP (RDTSCP not offered; absent).
pub const IA32_TSC_AUX: u32 = 0xC000_0103;

/// IA32_EFER bits.
pub mod efer {
    /// System-call extensions (64-bit CPUs only).
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable: PAE bit 63 means execute-disable instead of reserved.
    pub const NXE: u64 = 1 << 11;
}

/// Physical-address width the guest assumes (MAXPHYADDR): 36, as Linux
/// does for a PAE CPU without leaf 0x80000008 (see `cpuid`). Address bits
/// above it are reserved in the MTRRs and the APIC base.
pub const PHYS_ADDR_BITS: u32 = 36;

/// Bits of a page-aligned physical address below [`PHYS_ADDR_BITS`].
pub const PHYS_PAGE_MASK: u64 = ((1 << PHYS_ADDR_BITS) - 1) & !0xFFF;

/// IA32_APIC_BASE bits.
pub mod apic_base {
    /// This is the bootstrap processor (read-only).
    pub const BSP: u64 = 1 << 8;
    /// x2APIC mode (no x2APIC is offered: reserved).
    pub const EXTD: u64 = 1 << 10;
    /// The local APIC is enabled (global enable).
    pub const EN: u64 = 1 << 11;
    /// The registers' physical base, 4 KiB aligned.
    pub const BASE: u64 = super::PHYS_PAGE_MASK;
    /// Where the registers are after reset.
    pub const DEFAULT_BASE: u64 = 0xFEE0_0000;
    /// The value after reset on the one (bootstrap) processor.
    pub const RESET: u64 = DEFAULT_BASE | BSP | EN;
}

/// IA32_MISC_ENABLE bits.
pub mod misc_enable {
    /// Fast REP MOVS/STOS; Linux warns when it is off.
    pub const FAST_STRING: u64 = 1 << 0;
    /// Branch trace store unavailable (read-only).
    pub const BTS_UNAVAILABLE: u64 = 1 << 11;
    /// Precise event-based sampling unavailable (read-only).
    pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
    /// Limit CPUID to leaf 2 (Linux clears it).
    pub const LIMIT_CPUID: u64 = 1 << 22;
    /// Execute-disable disable (Linux clears it).
    pub const XD_DISABLE: u64 = 1 << 34;
}

/// IA32_MTRR_DEF_TYPE bits.
pub mod mtrr_def_type {
    /// Default memory type field.
    pub const TYPE: u64 = 0xFF;
    /// Fixed-range MTRRs enabled.
    pub const FE: u64 = 1 << 10;
    /// MTRRs enabled.
    pub const E: u64 = 1 << 11;
}

/// Memory type encodings shared by MTRRs and the PAT.
pub mod memtype {
    /// Uncacheable.
    pub const UC: u8 = 0;
    /// Write combining.
    pub const WC: u8 = 1;
    /// Write through.
    pub const WT: u8 = 4;
    /// Write protected.
    pub const WP: u8 = 5;
    /// Write back.
    pub const WB: u8 = 6;
    /// Uncacheable, overridable by WC MTRRs (PAT only).
    pub const UC_MINUS: u8 = 7;
}

/// IA32_MTRRCAP fields.
pub mod mtrrcap {
    /// Number of variable ranges (bits 7:0).
    pub const VCNT: u64 = 0xFF;
    /// Fixed-range MTRRs supported.
    pub const FIX: u64 = 1 << 8;
    /// Write-combining memory type supported.
    pub const WC: u64 = 1 << 10;
}

/// Variable-range MTRR pairs: 8, as QEMU's and KVM's CPUs have.
pub const MTRR_VAR_COUNT: usize = 8;

/// The fixed-range MTRRs, in the order [`MsrFile::mtrr_fixed`] keeps them.
pub const MTRR_FIXED: [u32; 11] = [
    IA32_MTRR_FIX64K_00000,
    IA32_MTRR_FIX16K_80000,
    IA32_MTRR_FIX16K_A0000,
    IA32_MTRR_FIX4K_C0000,
    IA32_MTRR_FIX4K_C0000 + 1,
    IA32_MTRR_FIX4K_C0000 + 2,
    IA32_MTRR_FIX4K_C0000 + 3,
    IA32_MTRR_FIX4K_C0000 + 4,
    IA32_MTRR_FIX4K_C0000 + 5,
    IA32_MTRR_FIX4K_C0000 + 6,
    IA32_MTRR_FIX4K_F8000,
];

/// IA32_MTRRCAP: 8 variable ranges, fixed ranges and WC, no SMRR (the
/// value QEMU and KVM report). The registers store what the guest writes
/// and check it as the CPU would; memory types do not change how popek
/// maps guest RAM (it is all ordinary host memory).
pub const MTRRCAP_VALUE: u64 = mtrrcap::FIX | mtrrcap::WC | MTRR_VAR_COUNT as u64;

/// IA32_MTRR_PHYSBASEn: bits 11:8 and those above the physical width are reserved.
const MTRR_PHYSBASE_RESERVED: u64 = !(PHYS_PAGE_MASK | 0xFF);
/// IA32_MTRR_PHYSMASKn: bit 11 is the valid bit, bits 10:0 and those above
/// the physical width are reserved.
const MTRR_PHYSMASK_RESERVED: u64 = !(PHYS_PAGE_MASK | 1 << 11);

/// IA32_MTRR_DEF_TYPE as firmware would leave it: MTRRs on, all memory
/// write-back. A loader that boots a kernel without firmware should install
/// it; with the reset value 0 Linux 6.1 declares MTRRs disabled and skips PAT.
pub const MTRR_DEF_TYPE_BOOT: u64 = mtrr_def_type::E | memtype::WB as u64;

/// IA32_MISC_ENABLE after reset: fast strings on, BTS and PEBS unavailable.
pub const MISC_ENABLE_RESET: u64 =
    misc_enable::FAST_STRING | misc_enable::BTS_UNAVAILABLE | misc_enable::PEBS_UNAVAILABLE;

/// IA32_PAT after reset (WB WT UC- UC, twice).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// The microcode revision IA32_BIOS_SIGN_ID reports; non-zero so tools do
/// not conclude the CPU is missing an update.
pub const MICROCODE_REVISION: u32 = 1;

/// Where an MSR's value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A field of [`CpuState`].
    State,
    /// A field of [`MsrFile`].
    File,
    /// A fixed value; writes, where allowed, are ignored.
    Constant,
    /// The engine's virtual time-stamp counter.
    Tsc,
    /// The local APIC's base register, which the engine's platform holds.
    Apic,
}

/// How the modelled CPU treats one implemented MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrInfo {
    /// The MSR index (ECX of RDMSR/WRMSR).
    pub index: u32,
    /// The SDM name, for logs and census output.
    pub name: &'static str,
    /// Value after RESET (for `Constant`, the value every read returns).
    pub reset: u64,
    /// Whether WRMSR is accepted at all (#GP(0) if not).
    pub writable: bool,
    /// Bits a WRMSR must leave clear (#GP(0) otherwise).
    pub reserved: u64,
    /// Bits a WRMSR cannot change (kept from the current value).
    pub read_only: u64,
    /// Where the value lives.
    pub backing: Backing,
}

/// Why an RDMSR or WRMSR raises #GP(0); the reason is for logs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrError {
    /// The modelled CPU has no MSR with this index.
    Unimplemented(u32),
    /// The MSR cannot be written.
    ReadOnly(u32),
    /// The value sets reserved bits or encodes an invalid field.
    InvalidValue(u32, u64),
}

impl fmt::Display for MsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MsrError::Unimplemented(i) => write!(f, "#GP(0): MSR {i:#x} not implemented"),
            MsrError::ReadOnly(i) => write!(f, "#GP(0): MSR {i:#x} is read-only"),
            MsrError::InvalidValue(i, v) => {
                write!(f, "#GP(0): value {v:#x} invalid for MSR {i:#x}")
            }
        }
    }
}

impl std::error::Error for MsrError {}

const HIGH_HALF: u64 = 0xFFFF_FFFF_0000_0000;

const fn rw(
    index: u32,
    name: &'static str,
    reset: u64,
    reserved: u64,
    backing: Backing,
) -> MsrInfo {
    MsrInfo {
        index,
        name,
        reset,
        writable: true,
        reserved,
        read_only: 0,
        backing,
    }
}

const fn constant(index: u32, name: &'static str, value: u64, writable: bool) -> MsrInfo {
    MsrInfo {
        index,
        name,
        reset: value,
        writable,
        reserved: 0,
        read_only: u64::MAX,
        backing: Backing::Constant,
    }
}

/// The description of MSR `index` on the CPU `cpuid` describes, or `None`
/// when that CPU has no such MSR.
pub fn info(cpuid: &CpuidModel, index: u32) -> Option<MsrInfo> {
    let edx = cpuid.leaf1_edx();
    let has = |bit: u32| edx & bit != 0;
    let mtrr = has(leaf1_edx::MTRR);
    let var_mtrrs = IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * MTRR_VAR_COUNT as u32;
    let info = match index {
        // Every P6 or later CPU has the register, whether its APIC is
        // enabled (CPUID.APIC set) or not: a guest re-enables it here.
        IA32_APIC_BASE => MsrInfo {
            read_only: apic_base::BSP,
            ..rw(
                index,
                "IA32_APIC_BASE",
                apic_base::RESET,
                !(apic_base::BASE | apic_base::BSP | apic_base::EN),
                Backing::Apic,
            )
        },
        IA32_TIME_STAMP_COUNTER if has(leaf1_edx::TSC) => {
            rw(index, "IA32_TIME_STAMP_COUNTER", 0, 0, Backing::Tsc)
        }
        IA32_PLATFORM_ID => constant(index, "IA32_PLATFORM_ID", 0, false),
        // Writes would start a microcode update; there is none to apply.
        IA32_BIOS_UPDT_TRIG => constant(index, "IA32_BIOS_UPDT_TRIG", 0, true),
        // Linux writes 0 and then executes CPUID to latch the revision.
        IA32_BIOS_SIGN_ID => constant(
            index,
            "IA32_BIOS_SIGN_ID",
            u64::from(MICROCODE_REVISION) << 32,
            true,
        ),
        IA32_MTRRCAP if has(leaf1_edx::MTRR) => {
            constant(index, "IA32_MTRRCAP", MTRRCAP_VALUE, false)
        }
        // Kept even while SEP is hidden, so that offering SEP (KVM runs
        // SYSENTER natively) is a CPUID-only change; CpuState stores 32 bits.
        IA32_SYSENTER_CS => rw(index, "IA32_SYSENTER_CS", 0, HIGH_HALF, Backing::State),
        IA32_SYSENTER_ESP => rw(index, "IA32_SYSENTER_ESP", 0, HIGH_HALF, Backing::State),
        IA32_SYSENTER_EIP => rw(index, "IA32_SYSENTER_EIP", 0, HIGH_HALF, Backing::State),
        IA32_MISC_ENABLE => MsrInfo {
            read_only: misc_enable::BTS_UNAVAILABLE | misc_enable::PEBS_UNAVAILABLE,
            ..rw(
                index,
                "IA32_MISC_ENABLE",
                MISC_ENABLE_RESET,
                !(MISC_ENABLE_RESET | misc_enable::LIMIT_CPUID | misc_enable::XD_DISABLE),
                Backing::File,
            )
        },
        // LBR and BTF are stored but not acted on: a ptrace single-block
        // request must not oops the guest with #GP.
        IA32_DEBUGCTL => rw(index, "IA32_DEBUGCTL", 0, !0b11, Backing::File),
        IA32_PAT if has(leaf1_edx::PAT) => rw(
            index,
            "IA32_PAT",
            PAT_RESET,
            0xF8F8_F8F8_F8F8_F8F8,
            Backing::State,
        ),
        i if mtrr && var_mtrrs.contains(&i) && i % 2 == 0 => rw(
            index,
            "IA32_MTRR_PHYSBASEn",
            0,
            MTRR_PHYSBASE_RESERVED,
            Backing::File,
        ),
        i if mtrr && var_mtrrs.contains(&i) => rw(
            index,
            "IA32_MTRR_PHYSMASKn",
            0,
            MTRR_PHYSMASK_RESERVED,
            Backing::File,
        ),
        i if mtrr && MTRR_FIXED.contains(&i) => rw(index, "IA32_MTRR_FIXn", 0, 0, Backing::File),
        IA32_MTRR_DEF_TYPE if mtrr => rw(
            index,
            "IA32_MTRR_DEF_TYPE",
            0,
            !(mtrr_def_type::TYPE | mtrr_def_type::FE | mtrr_def_type::E),
            Backing::File,
        ),
        IA32_EFER if cpuid.has_nx() => rw(index, "IA32_EFER", 0, !efer::NXE, Backing::State),
        _ => return None,
    };
    Some(info)
}

/// True when the modelled CPU has MSR `index`; engines raise #GP(0) otherwise.
pub fn is_implemented(cpuid: &CpuidModel, index: u32) -> bool {
    info(cpuid, index).is_some()
}

/// True for a valid PAT entry (types 2 and 3 are reserved).
const fn valid_pat_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

/// True for a valid MTRR memory type (UC- exists only in the PAT).
const fn valid_mtrr_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// Whether the memory-type fields of `value` are valid for MSR `index`
/// (reserved bits aside): every byte of the PAT and of a fixed-range MTRR,
/// the type byte of the default type and of a variable range's base.
fn valid_types(index: u32, value: u64) -> bool {
    let var_base = index
        .checked_sub(IA32_MTRR_PHYSBASE0)
        .is_some_and(|i| i < 2 * MTRR_VAR_COUNT as u32 && i % 2 == 0);
    match index {
        IA32_PAT => value.to_le_bytes().into_iter().all(valid_pat_type),
        IA32_MTRR_DEF_TYPE => valid_mtrr_type(value as u8),
        _ if var_base => valid_mtrr_type(value as u8),
        _ if MTRR_FIXED.contains(&index) => value.to_le_bytes().into_iter().all(valid_mtrr_type),
        _ => true,
    }
}

/// The value MSR `index` holds after a WRMSR of `value` when it held
/// `current`, or the reason the CPU raises #GP(0) instead.
pub fn apply_write(
    cpuid: &CpuidModel,
    index: u32,
    current: u64,
    value: u64,
) -> Result<u64, MsrError> {
    let info = info(cpuid, index).ok_or(MsrError::Unimplemented(index))?;
    if !info.writable {
        return Err(MsrError::ReadOnly(index));
    }
    if value & info.reserved != 0 || !valid_types(index, value) {
        return Err(MsrError::InvalidValue(index, value));
    }
    Ok((value & !info.read_only) | (current & info.read_only))
}

/// What a successful WRMSR asks of the engine beyond storing the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing further.
    None,
    /// Set the virtual TSC to this value (adjust the engine's TSC offset).
    SetTsc(u64),
    /// The page-table format changed (EFER.NXE): drop shadow mappings.
    PagingChanged,
    /// Give the local APIC this base register value (relocation, enables).
    SetApicBase(u64),
}

/// The MSR values that live outside the CPU core, which RDMSR and the
/// read-only bits of WRMSR need: the engine supplies them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uncore {
    /// The virtual time-stamp counter now.
    pub tsc: u64,
    /// The local APIC's base register.
    pub apic_base: u64,
}

/// The MSRs that have no home in [`CpuState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFile {
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_MTRR_PHYSBASEn and IA32_MTRR_PHYSMASKn, in index order.
    pub mtrr_var: [u64; 2 * MTRR_VAR_COUNT],
    /// The fixed-range MTRRs, in [`MTRR_FIXED`] order.
    pub mtrr_fixed: [u64; MTRR_FIXED.len()],
}

impl Default for MsrFile {
    /// The RESET values.
    fn default() -> Self {
        MsrFile {
            misc_enable: MISC_ENABLE_RESET,
            mtrr_def_type: 0,
            debugctl: 0,
            mtrr_var: [0; 2 * MTRR_VAR_COUNT],
            mtrr_fixed: [0; MTRR_FIXED.len()],
        }
    }
}

impl MsrFile {
    /// The state firmware leaves behind (MTRRs enabled, all write-back), for
    /// loaders that start a kernel directly.
    pub fn after_firmware() -> Self {
        MsrFile {
            mtrr_def_type: MTRR_DEF_TYPE_BOOT,
            ..Self::default()
        }
    }

    fn slot(&mut self, index: u32) -> Option<&mut u64> {
        let var = index.wrapping_sub(IA32_MTRR_PHYSBASE0) as usize;
        match index {
            IA32_MISC_ENABLE => Some(&mut self.misc_enable),
            IA32_MTRR_DEF_TYPE => Some(&mut self.mtrr_def_type),
            IA32_DEBUGCTL => Some(&mut self.debugctl),
            _ if var < self.mtrr_var.len() => Some(&mut self.mtrr_var[var]),
            _ => {
                let fixed = MTRR_FIXED.iter().position(|&i| i == index)?;
                Some(&mut self.mtrr_fixed[fixed])
            }
        }
    }

    /// RDMSR: the value of `index`, given the values outside the core.
    pub fn read(
        &self,
        cpuid: &CpuidModel,
        state: &CpuState,
        index: u32,
        uncore: Uncore,
    ) -> Result<u64, MsrError> {
        let info = info(cpuid, index).ok_or(MsrError::Unimplemented(index))?;
        Ok(match info.backing {
            Backing::Constant => info.reset,
            Backing::Tsc => uncore.tsc,
            Backing::Apic => uncore.apic_base,
            // `slot` takes &mut to serve `write` too; a copy costs little.
            Backing::File => {
                let mut file = *self;
                file.slot(index).map_or(0, |v| *v)
            }
            Backing::State => match index {
                IA32_SYSENTER_CS => u64::from(state.sysenter_cs),
                IA32_SYSENTER_ESP => u64::from(state.sysenter_esp),
                IA32_SYSENTER_EIP => u64::from(state.sysenter_eip),
                IA32_PAT => state.pat,
                _ => state.efer,
            },
        })
    }

    /// WRMSR: validates `value`, stores it, and says what else the engine
    /// must do; `uncore` supplies the current values outside the core.
    pub fn write(
        &mut self,
        cpuid: &CpuidModel,
        state: &mut CpuState,
        index: u32,
        value: u64,
        uncore: Uncore,
    ) -> Result<WriteEffect, MsrError> {
        let current = self.read(cpuid, state, index, uncore)?;
        let new = apply_write(cpuid, index, current, value)?;
        let info = info(cpuid, index).ok_or(MsrError::Unimplemented(index))?;
        match info.backing {
            Backing::Constant => {}
            Backing::Tsc => return Ok(WriteEffect::SetTsc(new)),
            Backing::Apic => return Ok(WriteEffect::SetApicBase(new)),
            Backing::File => {
                if let Some(slot) = self.slot(index) {
                    *slot = new;
                }
            }
            Backing::State => match index {
                IA32_SYSENTER_CS => state.sysenter_cs = new as u32,
                IA32_SYSENTER_ESP => state.sysenter_esp = new as u32,
                IA32_SYSENTER_EIP => state.sysenter_eip = new as u32,
                IA32_PAT => state.pat = new,
                _ => {
                    let changed = (state.efer ^ new) & efer::NXE != 0;
                    state.efer = new;
                    if changed {
                        return Ok(WriteEffect::PagingChanged);
                    }
                }
            },
        }
        Ok(WriteEffect::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::ext1_edx;

    /// No TSC and no APIC base: what tests of other MSRs pass.
    const U: Uncore = Uncore {
        tsc: 0,
        apic_base: 0,
    };

    fn cpu() -> CpuidModel {
        CpuidModel::default()
    }

    #[test]
    fn msrs_a_686_linux_needs_are_implemented() {
        for index in [
            IA32_TIME_STAMP_COUNTER,
            IA32_PLATFORM_ID,
            IA32_BIOS_SIGN_ID,
            IA32_MTRRCAP,
            IA32_SYSENTER_CS,
            IA32_SYSENTER_ESP,
            IA32_SYSENTER_EIP,
            IA32_MISC_ENABLE,
            IA32_PAT,
            IA32_MTRR_DEF_TYPE,
            IA32_EFER,
            IA32_APIC_BASE,
            IA32_MTRR_PHYSBASE0,
            IA32_MTRR_PHYSMASK0 + 14,
            IA32_MTRR_FIX64K_00000,
            IA32_MTRR_FIX4K_F8000,
        ] {
            assert!(is_implemented(&cpu(), index), "{index:#x}");
        }
    }

    #[test]
    fn msrs_behind_absent_features_are_not_implemented() {
        for index in [
            IA32_P5_MC_ADDR,
            IA32_TSC_ADJUST,
            MSR_PLATFORM_INFO,
            IA32_FEATURE_CONTROL,
            IA32_SPEC_CTRL,
            IA32_ARCH_CAPABILITIES,
            IA32_MCG_CAP,
            IA32_MC0_CTL,
            IA32_PMC0,
            IA32_PERFEVTSEL0,
            IA32_MTRR_PHYSBASE0 + 2 * MTRR_VAR_COUNT as u32,
            IA32_MTRR_FIX4K_F8000 + 1,
            IA32_TSC_DEADLINE,
            IA32_STAR,
            IA32_TSC_AUX,
            0xDEAD_BEEF,
        ] {
            assert!(!is_implemented(&cpu(), index), "{index:#x}");
            assert_eq!(
                MsrFile::default().read(&cpu(), &CpuState::default(), index, U),
                Err(MsrError::Unimplemented(index))
            );
        }
    }

    #[test]
    fn efer_exists_exactly_when_nx_is_offered() {
        assert_ne!(cpu().query(0x8000_0001, 0)[3] & ext1_edx::NX, 0);
        assert!(is_implemented(&cpu(), IA32_EFER));
        let no_nx = CpuidModel { nx: false, ..cpu() };
        assert!(!is_implemented(&no_nx, IA32_EFER));
    }

    #[test]
    fn efer_accepts_only_nxe_and_reports_paging_change() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_EFER, efer::LME, U),
            Err(MsrError::InvalidValue(IA32_EFER, efer::LME))
        );
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_EFER, efer::NXE, U),
            Ok(WriteEffect::PagingChanged)
        );
        assert_eq!(s.efer, efer::NXE);
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_EFER, efer::NXE, U),
            Ok(WriteEffect::None)
        );
        assert_eq!(f.read(&cpu(), &s, IA32_EFER, U), Ok(efer::NXE));
    }

    #[test]
    fn sysenter_msrs_live_in_cpu_state() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        f.write(&cpu(), &mut s, IA32_SYSENTER_CS, 0x60, U).unwrap();
        f.write(&cpu(), &mut s, IA32_SYSENTER_ESP, 0xC180_0000, U)
            .unwrap();
        f.write(&cpu(), &mut s, IA32_SYSENTER_EIP, 0xC100_1234, U)
            .unwrap();
        assert_eq!(
            (s.sysenter_cs, s.sysenter_esp, s.sysenter_eip),
            (0x60, 0xC180_0000, 0xC100_1234)
        );
        assert_eq!(f.read(&cpu(), &s, IA32_SYSENTER_EIP, U), Ok(0xC100_1234));
        assert!(f
            .write(&cpu(), &mut s, IA32_SYSENTER_EIP, 1 << 32, U)
            .is_err());
    }

    #[test]
    fn pat_validates_every_entry() {
        let mut s = CpuState::reset();
        let mut f = MsrFile::default();
        assert_eq!(f.read(&cpu(), &s, IA32_PAT, U), Ok(PAT_RESET));
        // Linux's PAT: WB WC UC- UC WB WP UC- WT.
        let linux = 0x0407_0506_0007_0106;
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_PAT, linux, U),
            Ok(WriteEffect::None)
        );
        assert_eq!(s.pat, linux);
        // Type 2 is reserved, even though no reserved bit is set.
        assert!(f
            .write(&cpu(), &mut s, IA32_PAT, 0x0000_0000_0002_0000, U)
            .is_err());
        assert!(f
            .write(&cpu(), &mut s, IA32_PAT, 0x0000_0000_0000_0008, U)
            .is_err());
        assert_eq!(s.pat, linux);
    }

    #[test]
    fn mtrr_def_type_checks_its_type_and_reserved_bits() {
        let s = CpuState::default();
        let mut st = CpuState::default();
        let mut f = MsrFile::default();
        assert_eq!(
            f.write(&cpu(), &mut st, IA32_MTRRCAP, 0, U),
            Err(MsrError::ReadOnly(IA32_MTRRCAP))
        );
        assert_eq!(f.read(&cpu(), &s, IA32_MTRR_DEF_TYPE, U), Ok(0));
        f.write(&cpu(), &mut st, IA32_MTRR_DEF_TYPE, MTRR_DEF_TYPE_BOOT, U)
            .unwrap();
        assert_eq!(f, MsrFile::after_firmware());
        // UC- (7) is a PAT-only type.
        assert!(f
            .write(&cpu(), &mut st, IA32_MTRR_DEF_TYPE, 0x807, U)
            .is_err());
        assert!(f
            .write(&cpu(), &mut st, IA32_MTRR_DEF_TYPE, 1 << 12, U)
            .is_err());
        assert_eq!(f.mtrr_def_type, MTRR_DEF_TYPE_BOOT);
    }

    #[test]
    fn mtrrcap_offers_eight_variable_ranges_fixed_ranges_and_wc() {
        let f = MsrFile::default();
        let cap = f.read(&cpu(), &CpuState::default(), IA32_MTRRCAP, U);
        assert_eq!(cap, Ok(0x508), "what QEMU and KVM report");
    }

    #[test]
    fn variable_mtrrs_store_what_the_guest_writes_and_check_it() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        let last_mask = IA32_MTRR_PHYSMASK0 + 2 * (MTRR_VAR_COUNT as u32 - 1);
        // 3 GiB and up uncacheable: what firmware sets for the PCI hole.
        f.write(&cpu(), &mut s, IA32_MTRR_PHYSBASE0, 0xC000_0000, U)
            .unwrap();
        f.write(&cpu(), &mut s, last_mask, 0xF_C000_0800, U)
            .unwrap();
        assert_eq!(f.read(&cpu(), &s, IA32_MTRR_PHYSBASE0, U), Ok(0xC000_0000));
        assert_eq!(f.read(&cpu(), &s, last_mask, U), Ok(0xF_C000_0800));
        assert_eq!(f.mtrr_var[2 * MTRR_VAR_COUNT - 1], 0xF_C000_0800);
        for (index, bad) in [
            (IA32_MTRR_PHYSBASE0, 0x1000_0002),   // type 2 is reserved
            (IA32_MTRR_PHYSBASE0, 0x1000_0106),   // bits 11:8 are reserved
            (IA32_MTRR_PHYSBASE0, 1 << 36),       // past MAXPHYADDR
            (IA32_MTRR_PHYSMASK0, 0xF_F000_0001), // bits 10:0 are reserved
            (IA32_MTRR_PHYSMASK0, 1 << 40),
        ] {
            assert_eq!(
                f.write(&cpu(), &mut s, index, bad, U),
                Err(MsrError::InvalidValue(index, bad)),
                "{index:#x} <- {bad:#x}"
            );
        }
        assert_eq!(f.mtrr_var[0], 0xC000_0000, "refused writes change nothing");
    }

    #[test]
    fn fixed_mtrrs_check_every_byte() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        let wb = 0x0606_0606_0606_0606;
        // Each register's low byte a different valid type: UC WC WT WP WB.
        let value = |i: usize| (wb & !0xFF) | [0, 1, 4, 5, 6][i % 5];
        for (i, &index) in MTRR_FIXED.iter().enumerate() {
            f.write(&cpu(), &mut s, index, value(i), U).unwrap();
        }
        assert_eq!(f.read(&cpu(), &s, IA32_MTRR_FIX16K_A0000, U), Ok(value(2)));
        assert_eq!(f.mtrr_fixed[10], value(10));
        let bad = 0x0606_0606_0606_0306;
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_MTRR_FIX4K_C0000, bad, U),
            Err(MsrError::InvalidValue(IA32_MTRR_FIX4K_C0000, bad))
        );
    }

    #[test]
    fn mtrrs_exist_only_with_the_mtrr_feature_bit() {
        // The MTRR bit is fixed in the model; the rule is still the
        // table's: no MTRR bit, no MTRR registers.
        assert_ne!(cpu().leaf1_edx() & leaf1_edx::MTRR, 0);
        for index in [IA32_MTRRCAP, IA32_MTRR_PHYSBASE0, IA32_MTRR_FIX64K_00000] {
            assert!(info(&cpu(), index).is_some());
        }
    }

    #[test]
    fn apic_base_goes_to_the_apic_and_keeps_the_bsp_bit() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        let now = Uncore {
            tsc: 0,
            apic_base: apic_base::RESET,
        };
        assert_eq!(
            f.read(&cpu(), &s, IA32_APIC_BASE, now),
            Ok(0xFEE0_0900),
            "enabled BSP at 0xFEE00000"
        );
        // Relocation with the BSP bit cleared: the bit is read-only.
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_APIC_BASE, 0xFEF0_0800, now),
            Ok(WriteEffect::SetApicBase(0xFEF0_0900))
        );
        // Disabled, it still exists.
        let off = CpuidModel {
            apic: false,
            ..cpu()
        };
        assert_eq!(
            f.write(&off, &mut s, IA32_APIC_BASE, 0xFEE0_0000, now),
            Ok(WriteEffect::SetApicBase(0xFEE0_0100))
        );
        for bad in [
            0xFEE0_0901,        // bits 7:0
            0xFEE0_0D00,        // EXTD: no x2APIC
            0xFEE0_0B00,        // bit 9
            0xF_0000_0000_0900, // past MAXPHYADDR
        ] {
            assert_eq!(
                f.write(&cpu(), &mut s, IA32_APIC_BASE, bad, now),
                Err(MsrError::InvalidValue(IA32_APIC_BASE, bad)),
                "{bad:#x}"
            );
        }
        assert_eq!(f, MsrFile::default(), "the file holds no copy");
    }

    #[test]
    fn misc_enable_keeps_read_only_bits_and_accepts_linux_writes() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        let v = f.read(&cpu(), &s, IA32_MISC_ENABLE, U).unwrap();
        assert_eq!(v, MISC_ENABLE_RESET);
        assert_ne!(v & misc_enable::FAST_STRING, 0);
        // Linux's msr_clear_bit writes back what it read minus one bit.
        f.write(
            &cpu(),
            &mut s,
            IA32_MISC_ENABLE,
            v & !misc_enable::FAST_STRING,
            U,
        )
        .unwrap();
        assert_eq!(f.misc_enable, v & !misc_enable::FAST_STRING);
        // Read-only bits survive a write that clears them.
        f.write(&cpu(), &mut s, IA32_MISC_ENABLE, 0, U).unwrap();
        assert_eq!(
            f.misc_enable,
            misc_enable::BTS_UNAVAILABLE | misc_enable::PEBS_UNAVAILABLE
        );
        assert!(f
            .write(&cpu(), &mut s, IA32_MISC_ENABLE, 1 << 40, U)
            .is_err());
    }

    #[test]
    fn tsc_reads_and_writes_go_to_the_engine() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        assert_eq!(
            f.read(
                &cpu(),
                &s,
                IA32_TIME_STAMP_COUNTER,
                Uncore { tsc: 12345, ..U }
            ),
            Ok(12345)
        );
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_TIME_STAMP_COUNTER, 777, U),
            Ok(WriteEffect::SetTsc(777))
        );
    }

    #[test]
    fn microcode_msrs_are_constant() {
        let mut s = CpuState::default();
        let mut f = MsrFile::default();
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_BIOS_SIGN_ID, 0, U),
            Ok(WriteEffect::None)
        );
        assert_eq!(
            f.read(&cpu(), &s, IA32_BIOS_SIGN_ID, U),
            Ok(u64::from(MICROCODE_REVISION) << 32)
        );
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_BIOS_UPDT_TRIG, 0x1000, U),
            Ok(WriteEffect::None)
        );
        assert_eq!(
            f.write(&cpu(), &mut s, IA32_PLATFORM_ID, 0, U),
            Err(MsrError::ReadOnly(IA32_PLATFORM_ID))
        );
        assert_eq!(f, MsrFile::default());
    }

    #[test]
    fn reset_values_match_cpu_state_reset() {
        assert_eq!(info(&cpu(), IA32_PAT).unwrap().reset, CpuState::reset().pat);
        assert_eq!(
            info(&cpu(), IA32_EFER).unwrap().reset,
            CpuState::reset().efer
        );
    }

    #[test]
    fn error_messages_name_the_msr() {
        assert_eq!(
            MsrError::Unimplemented(IA32_APIC_BASE).to_string(),
            "#GP(0): MSR 0x1b not implemented"
        );
    }
}
