//! The CPUID table handed to KVM: popek's own model (x86::cpuid), so both
//! engines show the guest the same virtual CPU.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use x86::cpuid::{self, CpuidModel};

/// Every leaf the model defines, as KVM_SET_CPUID2 entries.
pub fn kvm_cpuid(model: &CpuidModel) -> CpuId {
    let leaves = (0..=cpuid::MAX_BASIC_LEAF)
        .chain(cpuid::HYPERVISOR_LEAF..=cpuid::MAX_HYPERVISOR_LEAF)
        // KVM_SET_CPUID2 refuses leaf 0x80000008 unless its linear-address
        // width is 0, 48 or 57 (KVM assumes 64-bit canonical checks), and
        // a 32-bit CPU's is 32. TODO: drop the leaf from the model itself.
        .chain(cpuid::EXTENDED_LEAF..cpuid::MAX_EXTENDED_LEAF.min(0x8000_0007) + 1);
    let entries: Vec<kvm_cpuid_entry2> = leaves
        .map(|function| {
            let [eax, ebx, ecx, edx] = model.query(function, 0);
            kvm_cpuid_entry2 {
                function,
                eax,
                ebx,
                ecx,
                edx,
                ..Default::default()
            }
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
        assert_eq!(leaf(0x8000_0000).eax, cpuid::MAX_EXTENDED_LEAF);
    }
}
