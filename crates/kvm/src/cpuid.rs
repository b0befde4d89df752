//! The CPUID table handed to KVM: popek's own model (x86::cpuid), so both
//! engines show the guest the same virtual CPU.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use x86::cpuid::CpuidModel;

/// Every leaf the model defines, as KVM_SET_CPUID2 entries.
pub fn kvm_cpuid(model: &CpuidModel) -> CpuId {
    let entries: Vec<kvm_cpuid_entry2> = model
        .leaves()
        .into_iter()
        .map(|(function, [eax, ebx, ecx, edx])| kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&entries).expect("the model has far fewer leaves than KVM allows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_carries_the_model_vendor_and_no_sep() {
        let table = kvm_cpuid(&CpuidModel::default());
        let leaf = |f: u32| {
            *table
                .as_slice()
                .iter()
                .find(|e| e.function == f)
                .expect("leaf present")
        };
        let l0 = leaf(0);
        let vendor: Vec<u8> = [l0.ebx, l0.edx, l0.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&vendor, b"GenuineIntel");
        assert_eq!(leaf(1).edx & (1 << 11), 0, "SEP must stay clear");
        assert_eq!(leaf(0x8000_0000).eax, x86::cpuid::MAX_EXTENDED_LEAF);
    }
}
