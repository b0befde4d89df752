//! The apic guest (guests/apic): the local APIC, the I/O APIC and the MSRs
//! a PC guest touches, under both engines and, where it is installed,
//! under QEMU, the reference its checks were written against.

mod common;

use common::{assert_pass, assert_same_console, kvm_available, popek, Run};

/// Checks the guest makes only where CPUID's hypervisor leaf says popek
/// (QEMU 7.2 TCG does not raise these #GPs or move the registers).
const POPEK_ONLY: usize = 19;

fn run(engine: &str) -> Run {
    popek(&["run", "--engine", engine, "--guest", "apic", "--stats"])
}

#[test]
fn apic_under_bt() {
    let run = run("bt");
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("paging off (popek)"), "{}", run.show());
    assert!(
        !run.stdout.contains("checked under popek only"),
        "{}",
        run.show()
    );
    assert!(
        checks >= 100 + POPEK_ONLY,
        "{checks} checks\n{}",
        run.show()
    );
}

#[test]
fn apic_under_kvm_is_the_same_as_under_bt() {
    if !kvm_available() {
        return;
    }
    let kvm = run("kvm");
    assert_pass(&kvm);
    // Every RDMSR and WRMSR but the few KVM keeps went to popek's model.
    let msr_exits = kvm
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("msr"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(msr_exits.is_some_and(|n| n > 30), "{}", kvm.show());
    let bt = run("bt");
    assert_same_console(&bt, &kvm);
}

/// The guest as QEMU boots it: `qemu-system-i386 -kernel apic.elf`, with
/// the isa-debug-exit device popek's port 0xF4 imitates.
#[test]
fn apic_under_qemu_tcg() {
    let run = common::qemu("apic", "");
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("(not popek)"), "{}", run.show());
    // The same checks as under popek, but for the popek-only ones.
    let bt = assert_pass(&self::run("bt"));
    assert_eq!(checks + POPEK_ONLY, bt, "{}", run.show());
}
