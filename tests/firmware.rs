//! The firmware guest (guests/firmware): the ACPI and MP tables, the HPET
//! and the ACPI PM timer, under both engines and, where it is installed,
//! under QEMU. A passing run ends with the guest's ACPI S5 power-off, so
//! its status is 0, not the debug port's 1.

mod common;

use common::{assert_checks_pass, kvm_available, popek, Run};

/// Checks the guest makes only where CPUID's hypervisor leaf says popek:
/// popek's own choices (FADT revision, boot flags and X_ fields, the
/// HPET's exact capabilities), which QEMU's SeaBIOS tables and HPET do
/// not share.
const POPEK_ONLY: usize = 7;

/// Asserts every check passed, the last line is `PASS n/n` and the guest
/// powered the machine off (status 0); returns n.
fn assert_pass_and_power_off(run: &Run) -> usize {
    let checks = assert_checks_pass(run);
    assert!(
        run.stdout.contains("then power-off: SLP_TYP"),
        "{}",
        run.show()
    );
    assert_eq!(
        run.status,
        0,
        "the guest powers off through ACPI S5\n{}",
        run.show()
    );
    checks
}

fn run(engine: &str) -> Run {
    popek(&["run", "--engine", engine, "--guest", "firmware"])
}

/// The check lines alone: measured rates (info lines) differ run to run.
fn verdicts(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn firmware_under_bt() {
    let run = run("bt");
    let checks = assert_pass_and_power_off(&run);
    assert!(run.stdout.contains("paging off (popek)"), "{}", run.show());
    assert!(
        !run.stdout.contains("checked under popek only"),
        "{}",
        run.show()
    );
    assert!(checks >= 54 + POPEK_ONLY, "{checks} checks\n{}", run.show());
    assert!(
        run.stderr
            .contains("the guest powered the machine off (ACPI S5)"),
        "{}",
        run.show()
    );
}

#[test]
fn firmware_under_kvm_is_the_same_as_under_bt() {
    if !kvm_available() {
        return;
    }
    let kvm = run("kvm");
    assert_pass_and_power_off(&kvm);
    let bt = run("bt");
    assert_eq!(
        verdicts(&bt),
        verdicts(&kvm),
        "bt\n{}\nkvm\n{}",
        bt.show(),
        kvm.show()
    );
}

/// The guest as QEMU boots it: `qemu-system-i386 -kernel firmware.elf`,
/// SeaBIOS's tables, QEMU's HPET and PIIX4 PM block, and the
/// isa-debug-exit device popek's port 0xF4 imitates (used only if the
/// power-off fails).
#[test]
fn firmware_under_qemu_tcg() {
    let run = common::qemu("firmware", "");
    let checks = assert_pass_and_power_off(&run);
    assert!(run.stdout.contains("(not popek)"), "{}", run.show());
    // The same checks as under popek, but for the popek-only ones.
    let bt = assert_pass_and_power_off(&self::run("bt"));
    assert_eq!(checks + POPEK_ONLY, bt, "{}", run.show());
}
