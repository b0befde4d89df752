//! The MSRs under KVM. KVM keeps those it runs the guest with (the TSC,
//! SYSENTER, EFER); every other RDMSR and WRMSR an MSR filter hands to user
//! space, where popek's MSR model (x86::msr, through
//! `x86::emulate::read_msr`/`write_msr`) answers it exactly as it does for
//! the BT engine's emulator. So the guest sees one table under both
//! engines: the local APIC's base register (whose device lives in popek,
//! not in KVM), MISC_ENABLE's read-only and reserved bits, the MTRRs, the
//! PAT's reserved types (kvm-pvm accepts them), and a #GP for what the
//! model lacks (KVM itself would answer MSR_PLATFORM_INFO, TSC_ADJUST or
//! TSC_DEADLINE). KVM's own copies of these go unused: they would matter
//! for the memory types of assigned devices, and popek assigns none.
//!
//! A host without KVM_CAP_X86_USER_SPACE_MSR or KVM_CAP_X86_MSR_FILTER
//! (Linux before 5.10) answers every MSR itself; the run goes on, with
//! the local APIC fixed at its reset base.

use kvm_bindings::{kvm_enable_cap, kvm_msr_entry, Msrs, KVM_CAP_X86_USER_SPACE_MSR};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd,
    VmFd,
};
use machine::platform::CpuExtras;
use machine::Machine;
use x86::emulate;
use x86::msr::{self, MsrError};
use x86::CpuState;

/// The MSRs KVM answers itself: it runs the guest with their values
/// (SYSENTER, paging's NXE, the TSC offset).
pub const NATIVE: [u32; 5] = [
    msr::IA32_TIME_STAMP_COUNTER,
    msr::IA32_SYSENTER_CS,
    msr::IA32_SYSENTER_ESP,
    msr::IA32_SYSENTER_EIP,
    msr::IA32_EFER,
];

/// Hands every MSR but the [`NATIVE`] ones to user space; false if this
/// host's KVM cannot.
pub fn take_msrs(kvm: &Kvm, vm: &VmFd) -> Result<bool, String> {
    if !kvm.check_extension(Cap::X86UserSpaceMsr) || !kvm.check_extension(Cap::X86MsrFilter) {
        return Ok(false);
    }
    let cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        args: [u64::from(MsrExitReason::Filter.bits()), 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(|e| format!("KVM_ENABLE_CAP(X86_USER_SPACE_MSR): {e}"))?;
    // One range per native MSR, its one bitmap bit set: allowed.
    let allow = [1u8];
    let ranges: Vec<MsrFilterRange> = NATIVE
        .iter()
        .map(|&base| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: 1,
            bitmap: &allow,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::DENY, &ranges)
        .map_err(|e| format!("KVM_X86_SET_MSR_FILTER: {e}"))?;
    Ok(true)
}

/// The MSRs popek answers under KVM: the model's file and CPU model, and
/// the one MSR of `CpuState` that is not [`NATIVE`] (the PAT), in a state
/// of its own that only that MSR of reads or writes.
pub struct UserMsrs {
    /// CPUID model and MSR file.
    pub extras: CpuExtras,
    /// Holds the PAT.
    state: CpuState,
}

impl UserMsrs {
    /// The MSRs as firmware leaves them (`entry`: the loader's CPU state).
    pub fn new(entry: &CpuState) -> Self {
        UserMsrs {
            extras: CpuExtras::new(),
            state: entry.clone(),
        }
    }

    /// RDMSR of `index`, which KVM handed over, as the model answers it.
    pub fn read(&mut self, machine: &mut Machine, index: u32) -> Result<u64, MsrError> {
        let model = self.extras.cpuid;
        let (_, mut plat) = machine.emulation(&self.state, &mut self.extras);
        emulate::read_msr(&self.state, &mut plat, &model, index)
    }

    /// WRMSR of `value` to `index`, which KVM handed over, as the model
    /// carries it out; true if it turned the local APIC on or off (KVM
    /// must then hear of it: [`sync_apic_base`]).
    pub fn write(
        &mut self,
        machine: &mut Machine,
        index: u32,
        value: u64,
    ) -> Result<bool, MsrError> {
        let enabled = |m: &Machine| m.apic_base() & msr::apic_base::EN != 0;
        let before = enabled(machine);
        let model = self.extras.cpuid;
        let view = self.state.clone();
        let (_, mut plat) = machine.emulation(&view, &mut self.extras);
        emulate::write_msr(&mut self.state, &mut plat, &model, index, value)?;
        Ok(enabled(machine) != before)
    }
}

/// Tells KVM the local APIC's base register, whose enable bit KVM shows in
/// CPUID.1:EDX.APIC (the register itself is popek's: the guest's accesses
/// never reach KVM's copy).
pub fn sync_apic_base(vcpu: &VcpuFd, value: u64) -> Result<(), String> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: msr::IA32_APIC_BASE,
        data: value,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    match vcpu.set_msrs(&msrs) {
        Ok(1) => Ok(()),
        Ok(_) => Err("KVM_SET_MSRS refused IA32_APIC_BASE".into()),
        Err(e) => Err(format!("KVM_SET_MSRS: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_msrs_are_kept_in_the_vcpu_state() {
        let model = x86::cpuid::CpuidModel::default();
        for index in NATIVE {
            let info = msr::info(&model, index).expect("implemented");
            assert!(
                matches!(info.backing, msr::Backing::State | msr::Backing::Tsc),
                "{}",
                info.name
            );
        }
        // And the APIC base is not among them: its device is popek's.
        assert!(!NATIVE.contains(&msr::IA32_APIC_BASE));
    }

    #[test]
    fn every_msr_kept_in_the_vcpu_state_is_native() {
        let model = x86::cpuid::CpuidModel::default();
        for index in (0..0x1000).chain(0xC000_0000..0xC000_1000) {
            let Some(info) = msr::info(&model, index) else {
                continue;
            };
            let in_state = matches!(info.backing, msr::Backing::State | msr::Backing::Tsc);
            if in_state && index != msr::IA32_PAT {
                assert!(NATIVE.contains(&index), "{}", info.name);
            }
        }
    }
}
