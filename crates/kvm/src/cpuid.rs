//! The CPUID table handed to KVM: popek's own model, so both engines show the
//! guest the same virtual CPU.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// SEP (SYSENTER/SYSEXIT) in CPUID.1:EDX.
const SEP: u32 = 1 << 11;

/// KVM's supported table with popek's choices applied.
pub fn kvm_cpuid(kvm: &Kvm) -> CpuId {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .unwrap_or_else(|_| CpuId::new(0).expect("an empty CPUID table"));
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.edx &= !SEP;
        }
    }
    cpuid
}
