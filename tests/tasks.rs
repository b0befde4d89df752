//! The tasks guest (guests/tasks): hardware task switches carried out by
//! popek's emulator, under bt, under kvm as far as this host's KVM can run
//! the guest, and under QEMU TCG, the reference.

mod common;

use common::{assert_pass, kvm_available, kvm_is_pvm, popek, qemu};

/// Checks only popek makes: the T bit's #DB (QEMU 7.2 ignores the bit)
/// and a bad segment raising #TS in the new task (QEMU then faults for
/// ever at the task's first instruction).
const POPEK_ONLY: usize = 4 + 8;

#[test]
fn tasks_under_bt() {
    let run = popek(&["run", "--guest", "tasks", "--stats"]);
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("(popek)"), "{}", run.show());
    for part in ["skipped", "popek only"] {
        assert!(!run.stdout.contains(part), "{part}\n{}", run.show());
    }
    assert!(checks >= 73, "{checks} checks\n{}", run.show());
    // The switches went through the emulator as callouts.
    for kind in ["far-jmp", "far-call", "iret"] {
        assert!(run.stderr.contains(kind), "{kind}\n{}", run.show());
    }
}

#[test]
fn tasks_under_kvm() {
    if !kvm_available() {
        return;
    }
    let append = if kvm_is_pvm() {
        eprintln!(
            "kvm-pvm: the CR3 switch (no paged guests), the ring-3 INT n through a task \
             gate (#UD) and the double fault through a task gate (KVM delivers it itself \
             and shuts down) are skipped"
        );
        "nopaging nouser nodf"
    } else {
        ""
    };
    let run = popek(&[
        "run", "--engine", "kvm", "--guest", "tasks", "--append", append, "--stats",
    ]);
    assert_pass(&run);
    if kvm_is_pvm() {
        // KVM's emulator gave the switches to popek's.
        for kind in ["far jmp", "far call", "iret", "int n"] {
            assert!(
                run.stderr.contains(&format!("emulated by popek: {kind}")),
                "{kind}\n{}",
                run.show()
            );
        }
    }
}

#[test]
fn tasks_under_qemu_tcg() {
    let run = qemu("tasks", "");
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("(not popek)"), "{}", run.show());
    let bt = assert_pass(&popek(&["run", "--guest", "tasks"]));
    assert_eq!(checks + POPEK_ONLY, bt, "{}", run.show());
}
