//! The fwcfg guest (guests/fwcfg): QEMU's firmware configuration device
//! as popek offers it under both engines, and as QEMU TCG has it.

mod common;

use common::{assert_pass, assert_same_console, kvm_available, popek, qemu};

const CMDLINE: &str = "console=ttyS0 fw_cfg=check";

fn run(engine: &str) -> common::Run {
    popek(&[
        "run", "--engine", engine, "--guest", "fwcfg", "--append", CMDLINE,
    ])
}

#[test]
fn fwcfg_under_bt() {
    let run = run("bt");
    assert_pass(&run);
    assert!(
        run.stdout
            .contains("ok   command line is the multiboot one"),
        "{}",
        run.show()
    );
    assert!(!run.stdout.contains("popek only"), "{}", run.show());
}

#[test]
fn fwcfg_under_kvm_is_the_same_as_under_bt() {
    if !kvm_available() {
        return;
    }
    let kvm = run("kvm");
    assert_pass(&kvm);
    let bt = run("bt");
    assert_same_console(&bt, &kvm);
}

#[test]
fn fwcfg_under_qemu_tcg() {
    let run = qemu("fwcfg", CMDLINE);
    assert_pass(&run);
    assert!(run.stdout.contains("(not popek)"), "{}", run.show());
}

#[test]
fn fwcfg_ram_size_follows_memory() {
    let run = popek(&["run", "--guest", "fwcfg", "--memory", "64"]);
    assert_pass(&run);
    assert!(
        run.stdout.contains("fw_cfg RAM size 64 MiB"),
        "{}",
        run.show()
    );
}
